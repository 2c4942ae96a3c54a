//! ffmpeg as the relay's network end: the source's and each destination's arguments, the
//! option file that keeps a destination's key off its command line, and the reading of its
//! log lines (severity, and what a failure says about the destination).
//!
//! Keys never appear in ffmpeg's argv (visible in `ps`, `systemctl status` and journald's
//! `_CMDLINE`): the URL on the command line is `scheme://host[:port]/app`, and the RTMP app,
//! the play path (the key) and the TLS options come from an option file (`-fpre /dev/fd/3`)
//! that ffmpeg reads from a pipe.

use std::path::Path;

use crate::destination::Destination;

/// The descriptor a destination's ffmpeg reads its option file from.
pub const PRESET_FD: i32 = 3;
/// ffmpeg reads option files line by line into a 1000-byte buffer: an app and a key within
/// what [`Destination`] accepts always fit, and so must the CA file's path.
pub const MAX_PRESET_LINE: usize = 999;
/// A destination whose network stalls this long fails (ffmpeg's `rw_timeout`, microseconds).
const RW_TIMEOUT_US: &str = "10000000";

/// How a destination's TLS (`rtmps://`) is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tls {
    /// Against the CA bundle at this path; the certificate must name the host.
    Verify(String),
    /// Not at all (an operator's explicit choice).
    Off,
}

/// The option file of one destination: RTMP app and play path, and for `rtmps://` the TLS
/// verification. One `name=value` per line, read verbatim up to the end of the line.
pub fn preset(dest: &Destination, tls: &Tls) -> String {
    let mut text = format!("rtmp_app={}\nrtmp_playpath={}\n", dest.app(), dest.key());
    if dest.public_url().starts_with("rtmps://") {
        match tls {
            Tls::Verify(ca_file) => {
                text.push_str("tls_verify=1\n");
                text.push_str(&format!("ca_file={ca_file}\n"));
            }
            Tls::Off => text.push_str("tls_verify=0\n"),
        }
    }
    text
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// Every ffmpeg of the relay: quiet but for its log lines, each with its level.
const QUIET: [&str; 5] = [
    "-hide_banner",
    "-nostdin",
    "-nostats",
    "-loglevel",
    "level+info",
];

/// Audio and video as they are, in the input's time base (FLV: 1 ms): with ffmpeg's
/// 1/framerate codec time base, the 1 ms DTS steps MediaMTX writes between B-frames collide
/// when rounded ("Non-monotonous DTS", once per frame).
const COPY: [&str; 8] = ["-map", "0:v?", "-map", "0:a?", "-c", "copy", "-copytb", "1"];

/// The source: reads the stream from the ingest and writes it as FLV to stdout, without the
/// end-of-sequence tag (a source's end is not the stream's end at the destinations).
pub fn source_args(source_url: &str) -> Vec<String> {
    let mut args = strings(&QUIET);
    args.extend(strings(&[
        // Fast start: skip frame-rate probing (~1.3 s); -c copy needs no decoding.
        "-fpsprobesize",
        "0",
        "-tcp_nodelay",
        "1",
        "-rw_timeout",
        RW_TIMEOUT_US,
        "-i",
        source_url,
    ]));
    args.extend(strings(&COPY));
    args.extend(strings(&[
        "-flush_packets",
        "1",
        "-f",
        "flv",
        "-flvflags",
        "no_sequence_end+no_duration_filesize",
        "pipe:1",
    ]));
    args.shrink_to_fit();
    args
}

/// One destination: reads FLV from stdin (the relay's queue for it) and publishes it.
pub fn destination_args(dest: &Destination) -> Vec<String> {
    let preset = format!("/dev/fd/{PRESET_FD}");
    let mut args = strings(&QUIET);
    args.extend(strings(&[
        // The relay sends the codec configuration and a keyframe first: no probing needed.
        "-probesize",
        "32",
        "-analyzeduration",
        "1",
        "-fpsprobesize",
        "0",
        "-f",
        "flv",
        "-i",
        "pipe:0",
    ]));
    args.extend(strings(&COPY));
    args.extend(strings(&[
        "-f",
        "flv",
        "-flvflags",
        "no_duration_filesize",
        "-tcp_nodelay",
        "1",
        "-rw_timeout",
        RW_TIMEOUT_US,
        "-fpre",
    ]));
    args.push(preset);
    args.push(dest.public_url().to_owned());
    args
}

/// Whether the CA bundle can be read (checked once at start, to say so before any publish).
pub fn ca_file_readable(path: &str) -> bool {
    std::fs::File::open(Path::new(path)).is_ok()
}

/// The severity ffmpeg gave a line (`-loglevel level+...`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Error,
    Warning,
    Info,
    Verbose,
}

/// One line of ffmpeg's log: `[tls @ 0x55..] [error] message` or `[info] message`.
#[derive(Debug, PartialEq, Eq)]
pub struct LogLine<'a> {
    pub level: Level,
    /// The component that logged it (`tls @ 0x55..`, `tcp @ 0x..`), if any.
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

/// What a destination's ffmpeg said about the connection, as far as a line tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// `Output #0, flv, to ...`: the server accepted the publish (ffmpeg's RTMP client waits
    /// for NetStream.Publish.Start before it writes the header).
    Publishing,
    /// The TCP connection or name resolution failed.
    Unreachable,
    /// The server's certificate was not accepted.
    Certificate,
    /// The TLS handshake failed otherwise.
    Tls,
}

pub fn signal(line: &LogLine<'_>) -> Option<Signal> {
    let m = line.message;
    if m.starts_with("Output #0, flv, to") {
        return Some(Signal::Publishing);
    }
    if line.level != Level::Error {
        return None;
    }
    let tls = line.context.is_some_and(|c| c.starts_with("tls @"));
    if tls && (m.contains("certificate") || m.contains("Certificate")) {
        return Some(Signal::Certificate);
    }
    if tls {
        return Some(Signal::Tls);
    }
    const UNREACHABLE: [&str; 7] = [
        "Connection refused",
        "Connection timed out",
        "No route to host",
        "Network is unreachable",
        "Failed to resolve hostname",
        "Name or service not known",
        "Temporary failure in name resolution",
    ];
    if UNREACHABLE.iter().any(|u| m.contains(u)) {
        return Some(Signal::Unreachable);
    }
    None
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
        for d in dests() {
            let argv = destination_args(&d).join(" ");
            assert!(!argv.contains("xxxx") && !argv.contains("FB-1"), "{argv}");
            assert!(argv.contains("-fpre /dev/fd/3"), "{argv}");
            assert!(argv.ends_with(d.public_url()), "{argv}");
            assert!(argv.contains("-c copy") && argv.contains("-i pipe:0"));
        }
        let argv = source_args("rtmp://127.0.0.1:1935/live/k").join(" ");
        assert!(argv.contains("-flvflags no_sequence_end"), "{argv}");
        assert!(argv.ends_with("-f flv -flvflags no_sequence_end+no_duration_filesize pipe:1"));
    }

    #[test]
    fn option_files_carry_the_key_and_the_tls_checks() {
        let d = dests();
        let ca = Tls::Verify("/etc/ssl/certs/ca-certificates.crt".into());
        assert_eq!(
            preset(&d[0], &ca),
            "rtmp_app=live2\nrtmp_playpath=xxxx-yyyy\n",
            "plain RTMP has no TLS options"
        );
        assert_eq!(
            preset(&d[1], &ca),
            "rtmp_app=rtmp\nrtmp_playpath=FB-1?s=1&a='q'\ntls_verify=1\n\
             ca_file=/etc/ssl/certs/ca-certificates.crt\n"
        );
        assert!(preset(&d[1], &Tls::Off).ends_with("tls_verify=0\n"));
    }

    #[test]
    fn the_longest_destination_fits_ffmpegs_option_lines() {
        let d = Destination::from_parts(
            "custom",
            &format!("rtmps://h/{}", "a".repeat(500)),
            &"k".repeat(500),
        )
        .unwrap();
        let ca = Tls::Verify("/x".repeat(MAX_PRESET_LINE / 2 - 4));
        let text = preset(&d, &ca);
        assert!(text.lines().all(|l| l.len() <= MAX_PRESET_LINE), "{text}");
    }

    #[test]
    fn parses_log_lines() {
        let l = parse_line(
            "[tcp @ 0x55f6b8fd4e40] [error] Connection to tcp://h:1 failed: Connection refused",
        );
        assert_eq!(l.level, Level::Error);
        assert_eq!(l.context, Some("tcp @ 0x55f6b8fd4e40"));
        assert_eq!(signal(&l), Some(Signal::Unreachable));
        let l = parse_line("[info] Input #0, flv, from 'pipe:0':");
        assert_eq!((l.level, l.context), (Level::Info, None));
        assert_eq!(parse_line("[info]   Metadata:").level, Level::Verbose);
        assert_eq!(parse_line("[flv @ 0x1] [warning] x").level, Level::Warning);
        assert_eq!(parse_line("plain").message, "plain");
    }

    #[test]
    fn tells_failures_apart() {
        // Lines as ffmpeg 5.1 (GnuTLS) prints them.
        let sig = |l: &str| signal(&parse_line(l));
        assert_eq!(
            sig("[tls @ 0x1] [error] Peer certificate failed verification"),
            Some(Signal::Certificate)
        );
        assert_eq!(
            sig("[tls @ 0x1] [error] The certificate's owner does not match hostname 127.0.0.1"),
            Some(Signal::Certificate)
        );
        assert_eq!(
            sig("[tls @ 0x1] [error] Error in the push function."),
            Some(Signal::Tls)
        );
        assert_eq!(
            sig("[info] Output #0, flv, to 'rtmp://127.0.0.1:1935/live':"),
            Some(Signal::Publishing)
        );
        assert_eq!(
            sig("[rtmp @ 0x1] [error] Server error: Already publishing"),
            None
        );
    }
}
