//! ffmpeg as the relay's fan-out: its arguments, the per-destination option files that keep
//! stream keys off its command line, and the parsing of its log lines.
//!
//! One ffmpeg per stream reads the source once and writes one `fifo` output per destination.
//! The fifo muxer runs each destination's RTMP connection in a thread of its own with a packet
//! queue: a destination that refuses, stalls or drops fails alone and is reconnected (at the
//! next keyframe) every `retry_wait`, while the others go on.
//!
//! Keys never appear in ffmpeg's argv (visible in `ps`, `systemctl status` and journald's
//! `_CMDLINE`): the URL on the command line is `scheme://host[:port]/app`, and the RTMP app and
//! play path (the key) come from an option file (`-fpre /dev/fd/N`), read from a pipe.

use std::time::Duration;

use crate::destination::Destination;

/// Packets a destination may fall behind before its queue is dropped (about 10 s of a 30 fps
/// stream with audio), so a slow destination never holds back the others.
const QUEUE_PACKETS: u32 = 600;
/// First file descriptor of the option files; destination i reads fd `FIRST_PRESET_FD + i`.
pub const FIRST_PRESET_FD: i32 = 3;
/// ffmpeg reads option files line by line into a 1000-byte buffer.
const MAX_PRESET_LINE: usize = 999;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FfmpegError {
    #[error("destination {index} ({platform}): its app and key take {len} bytes of options; ffmpeg reads at most {MAX_PRESET_LINE}")]
    PresetTooLong {
        index: usize,
        platform: String,
        len: usize,
    },
}

/// ffmpeg's command line and, for each destination in order, its option file.
#[derive(Debug)]
pub struct Plan {
    pub args: Vec<String>,
    pub presets: Vec<String>,
}

/// Escapes a value for ffmpeg's `key=value:key=value` option lists (av_get_token): quoted,
/// with quotes written as `'\''`.
fn quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

/// The option file of one destination: the fifo's options for the RTMP connection (app and
/// play path) and the FLV muxer.
pub fn preset(dest: &Destination) -> String {
    format!(
        "format_opts=rtmp_app={}:rtmp_playpath={}:flvflags=no_duration_filesize\n",
        quote(dest.app()),
        quote(dest.key())
    )
}

/// Whether ffmpeg can take this destination's options (see [`FfmpegError::PresetTooLong`]).
pub fn check(dest: &Destination) -> Result<(), FfmpegError> {
    let len = preset(dest).len();
    if len > MAX_PRESET_LINE {
        return Err(FfmpegError::PresetTooLong {
            index: 0,
            platform: dest.platform().into(),
            len,
        });
    }
    Ok(())
}

pub fn plan(
    source_url: &str,
    dests: &[Destination],
    retry_wait: Duration,
) -> Result<Plan, FfmpegError> {
    let mut args: Vec<String> = [
        "-hide_banner",
        "-nostdin",
        "-nostats",
        "-loglevel",
        "level+info",
        // Fast start: skip frame-rate probing (~1.3 s); -c copy needs no decoding.
        "-fpsprobesize",
        "0",
        // Copy timestamps in the input's time base (FLV: 1 ms). Otherwise the fifo outputs get
        // ffmpeg's 1/framerate codec time base, and the 1 ms DTS steps MediaMTX writes between
        // B-frames collide when rounded: ffmpeg then shifts every later frame and warns
        // ("Non-monotonous DTS") once per frame and destination, ~90 log lines/s per stream.
        "-copytb",
        "1",
        "-tcp_nodelay",
        "1",
        "-i",
        source_url,
    ]
    .map(String::from)
    .to_vec();
    let wait = format!("{:.3}", retry_wait.as_secs_f64());
    let mut presets = Vec::with_capacity(dests.len());
    for (index, dest) in dests.iter().enumerate() {
        check(dest).map_err(|e| match e {
            FfmpegError::PresetTooLong { platform, len, .. } => FfmpegError::PresetTooLong {
                index,
                platform,
                len,
            },
        })?;
        presets.push(preset(dest));
        let fd = format!("/dev/fd/{}", FIRST_PRESET_FD + index as i32);
        args.extend(
            [
                "-map",
                "0:v?",
                "-map",
                "0:a?",
                "-c",
                "copy",
                "-f",
                "fifo",
                "-fifo_format",
                "flv",
                "-fpre",
                &fd,
                "-queue_size",
                &QUEUE_PACKETS.to_string(),
                "-drop_pkts_on_overflow",
                "1",
                "-attempt_recovery",
                "1",
                "-recover_any_error",
                "1",
                "-recovery_wait_time",
                &wait,
                "-restart_with_keyframe",
                "1",
                dest.public_url(),
            ]
            .map(String::from),
        );
    }
    Ok(Plan { args, presets })
}

/// The severity ffmpeg gave a line (`-loglevel level+...`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Error,
    Warning,
    Info,
    Verbose,
}

/// One line of ffmpeg's log: `[fifo @ 0x55..] [error] message` or `[info] message`.
#[derive(Debug, PartialEq, Eq)]
pub struct LogLine<'a> {
    pub level: Level,
    /// The component that logged it (`fifo @ 0x55..`, `tcp @ 0x..`), if any.
    pub context: Option<&'a str>,
    pub message: &'a str,
}

pub fn parse_line(line: &str) -> LogLine<'_> {
    let mut rest = line.trim_end();
    let mut context = None;
    let mut level = Level::Info;
    while let Some(tail) = rest.strip_prefix('[') {
        let Some(end) = tail.find(']') else { break };
        let tag = &tail[..end];
        match tag {
            "panic" | "fatal" | "error" => level = Level::Error,
            "warning" => level = Level::Warning,
            "info" => level = Level::Info,
            "verbose" | "debug" | "trace" => level = Level::Verbose,
            _ if tag.contains(" @ ") => context = Some(tag),
            _ => break,
        }
        rest = tail[end + 1..].trim_start();
    }
    // The stream dump after "Input #0"/"Output #0" is indented: detail, not news.
    if level == Level::Info && line.contains("]   ") {
        level = Level::Verbose;
    }
    LogLine {
        level,
        context,
        message: rest,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dests() -> Vec<Destination> {
        vec![
            Destination::from_parts("youtube", "rtmp://a.rtmp.youtube.com/live2", "xxxx-yyyy")
                .unwrap(),
            Destination::from_parts("facebook", "rtmps://fb.com:443/rtmp/", "FB-1?s=1&a='q'")
                .unwrap(),
        ]
    }

    #[test]
    fn keys_stay_off_the_command_line() {
        let plan = plan(
            "rtmp://127.0.0.1:1935/live/k",
            &dests(),
            Duration::from_secs(1),
        )
        .unwrap();
        let argv = plan.args.join(" ");
        assert!(
            !argv.contains("xxxx-yyyy") && !argv.contains("FB-1"),
            "{argv}"
        );
        assert!(argv.contains("-fpre /dev/fd/3") && argv.contains("-fpre /dev/fd/4"));
        assert!(argv.ends_with("rtmps://fb.com:443/rtmp"), "{argv}");
        assert!(argv.contains("-c copy"));
        assert!(argv.contains("-copytb 1"), "{argv}");
        assert!(argv.contains("-recovery_wait_time 1.000"));
        assert_eq!(
            plan.presets[1],
            "format_opts=rtmp_app='rtmp':rtmp_playpath='FB-1?s=1&a='\\''q'\\''':\
             flvflags=no_duration_filesize\n"
        );
        assert_eq!(plan.args.iter().filter(|a| *a == "fifo").count(), 2);
    }

    #[test]
    fn overlong_presets_are_refused() {
        let d = Destination::from_parts(
            "custom",
            &format!("rtmp://h/{}", "a".repeat(500)),
            &"k".repeat(500),
        )
        .unwrap();
        let err = plan("rtmp://127.0.0.1/live/k", &[d], Duration::from_secs(1)).unwrap_err();
        assert!(matches!(err, FfmpegError::PresetTooLong { index: 0, .. }));
    }

    #[test]
    fn parses_log_lines() {
        let l = parse_line(
            "[fifo @ 0x55f6b8fd4e40] [error] Error opening rtmp://h:1/x: Connection refused",
        );
        assert_eq!(l.level, Level::Error);
        assert_eq!(l.context, Some("fifo @ 0x55f6b8fd4e40"));
        assert_eq!(l.message, "Error opening rtmp://h:1/x: Connection refused");
        let l = parse_line("[info] Input #0, flv, from 'rtmp://127.0.0.1:1935/live/k':");
        assert_eq!((l.level, l.context), (Level::Info, None));
        assert_eq!(parse_line("[info]   Metadata:").level, Level::Verbose);
        assert_eq!(parse_line("[flv @ 0x1] [warning] x").level, Level::Warning);
        assert_eq!(parse_line("plain").message, "plain");
    }
}
