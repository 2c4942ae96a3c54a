//! The only reader of the settings file and of the process environment outside clap.

use anyhow::{anyhow, Context};
use std::path::PathBuf;
use std::time::Duration;

pub const DEFAULT_SETTINGS_FILE: &str = "/etc/neustream/neustream.env";

/// Prefix of the variables that describe one stream to its relay (see `envfile`).
pub const STREAM_VAR_PREFIX: &str = "NEUSTREAM_";

/// Loads the settings file (KEY=VALUE lines, dotenv syntax) into the environment without
/// overriding variables that are already set. Called before clap parses, since clap reads the
/// variables; so the file's path is taken from `--config` or `NEUSTREAM_CONFIG` by hand.
///
/// The relay does not read it: its unit gives it all it needs, and as a transient user it
/// cannot read the file (which holds the Control Plane token).
pub fn load_settings_file() -> anyhow::Result<()> {
    // Nor do `status` and `metrics`: any local user runs them, and they read only what the
    // relays publish.
    if matches!(
        subcommand(std::env::args().skip(1)).as_deref(),
        Some("relay" | "relay-reload" | "status" | "metrics")
    ) {
        return Ok(());
    }
    let (path, explicit) = settings_file_path(std::env::args().skip(1));
    match dotenvy::from_path(&path) {
        Ok(()) => Ok(()),
        Err(dotenvy::Error::Io(err)) if err.kind() == std::io::ErrorKind::NotFound && !explicit => {
            Ok(())
        }
        Err(dotenvy::Error::Io(err)) => Err(anyhow!(
            "failed to read settings file {}: {err}",
            path.display()
        )),
        // A parse error's text quotes the offending line, which may hold a token: name the
        // line number only.
        Err(dotenvy::Error::LineParse(_, index)) => Err(anyhow!(
            "failed to read settings file {}: line {} is not KEY=VALUE",
            path.display(),
            line_number(&path, index)
        )),
        Err(err) => Err(anyhow!(err))
            .with_context(|| format!("failed to read settings file {}", path.display())),
    }
}

fn line_number(path: &std::path::Path, byte_index: usize) -> String {
    std::fs::read(path)
        .ok()
        .map(|text| {
            let upto = byte_index.min(text.len());
            (text[..upto].iter().filter(|&&b| b == b'\n').count() + 1).to_string()
        })
        .unwrap_or_else(|| "?".into())
}

/// The first argument that is not an option or an option's value.
fn subcommand(mut args: impl Iterator<Item = String>) -> Option<String> {
    while let Some(arg) = args.next() {
        if arg == "--config" || arg == "--log-level" {
            args.next();
        } else if !arg.starts_with('-') {
            return Some(arg);
        }
    }
    None
}

/// The settings file named by `--config FILE`, `--config=FILE` or `NEUSTREAM_CONFIG`, and
/// whether it was named (a missing default file is not an error).
fn settings_file_path(mut args: impl Iterator<Item = String>) -> (PathBuf, bool) {
    while let Some(arg) = args.next() {
        if arg == "--" {
            break;
        }
        if arg == "--config" {
            if let Some(value) = args.next() {
                return (PathBuf::from(value), true);
            }
        } else if let Some(value) = arg.strip_prefix("--config=") {
            return (PathBuf::from(value), true);
        }
    }
    match std::env::var_os("NEUSTREAM_CONFIG") {
        Some(value) if !value.is_empty() => (PathBuf::from(value), true),
        _ => (PathBuf::from(DEFAULT_SETTINGS_FILE), false),
    }
}

/// The variables that describe a stream to its relay, as systemd's `EnvironmentFile=` set them.
pub fn stream_vars() -> Vec<(String, String)> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .filter(|(k, _)| k.starts_with(STREAM_VAR_PREFIX))
        .collect()
}

/// The unit's runtime directory (`RuntimeDirectory=`), as systemd tells it: the first of
/// `$RUNTIME_DIRECTORY`'s colon-separated paths.
pub fn runtime_directory() -> Option<PathBuf> {
    let value = std::env::var_os("RUNTIME_DIRECTORY")?;
    let first = value.to_str()?.split(':').next()?.to_owned();
    (!first.is_empty()).then(|| PathBuf::from(first))
}

/// The sockets systemd passed (socket activation, sd_listen_fds(3)), when `LISTEN_PID` is this
/// process: a listening stream socket (the scrapes) and a datagram socket (the hooks'
/// reports), told apart by their type, whatever their order. The variables are removed, so
/// that no child takes the sockets for its own.
#[derive(Default)]
pub struct Passed {
    pub listener: Option<std::net::TcpListener>,
    pub datagram: Option<std::os::unix::net::UnixDatagram>,
}

pub fn passed_sockets() -> Passed {
    use std::os::fd::FromRawFd;
    let mut passed = Passed::default();
    let var = |name| std::env::var(name).ok().and_then(|v| v.parse::<u32>().ok());
    let (Some(pid), Some(fds)) = (var("LISTEN_PID"), var("LISTEN_FDS")) else {
        return passed;
    };
    if pid != std::process::id() {
        return passed;
    }
    std::env::remove_var("LISTEN_PID");
    std::env::remove_var("LISTEN_FDS");
    std::env::remove_var("LISTEN_FDNAMES");
    // SD_LISTEN_FDS_START: systemd hands us descriptors 3.., open and ours alone.
    for fd in 3..3 + fds.min(16) as i32 {
        let mut kind: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into `kind`.
        let ok = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_TYPE,
                (&mut kind as *mut libc::c_int).cast(),
                &mut len,
            )
        } == 0;
        match kind {
            // SAFETY: a socket systemd passed, owned by nothing else in this process.
            libc::SOCK_STREAM if ok && passed.listener.is_none() => {
                passed.listener = Some(unsafe { std::net::TcpListener::from_raw_fd(fd) })
            }
            libc::SOCK_DGRAM if ok && passed.datagram.is_none() => {
                passed.datagram = Some(unsafe { std::os::unix::net::UnixDatagram::from_raw_fd(fd) })
            }
            _ => {}
        }
    }
    passed
}

/// `JOURNAL_STREAM` (device:inode of the journal stream systemd connected us to), if set.
pub fn journal_stream() -> Option<String> {
    std::env::var("JOURNAL_STREAM").ok()
}

/// Parses "5s", "1500ms", "2m", "0.5s" or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not a duration (e.g. 5s, 1500ms, 2m)"))?;
    let seconds = match unit.trim() {
        "ms" => value / 1000.0,
        "s" | "sec" => value,
        "m" | "min" => value * 60.0,
        other => {
            return Err(format!(
                "unknown unit '{other}' in '{text}' (use ms, s or m)"
            ))
        }
    };
    if !seconds.is_finite() || seconds <= 0.0 || seconds > 86_400.0 {
        return Err(format!(
            "'{text}' is out of range (more than 0, at most a day)"
        ));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// A duration that may be zero ("0", "0s": off), else as [`parse_duration`].
pub fn parse_grace(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if t.trim_end_matches(['s', 'm']).trim_end_matches('m') == "0" || t == "0ms" {
        return Ok(Duration::ZERO);
    }
    parse_duration(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> impl Iterator<Item = String> {
        list.iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .into_iter()
    }

    #[test]
    fn graces_may_be_off() {
        assert_eq!(parse_grace("0"), Ok(Duration::ZERO));
        assert_eq!(parse_grace("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_grace("0ms"), Ok(Duration::ZERO));
        assert_eq!(parse_grace("30s"), Ok(Duration::from_secs(30)));
        assert!(parse_grace("-1s").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("0.25s"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5h").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("fast")
            .unwrap_err()
            .contains("not a duration"));
    }

    #[test]
    fn finds_the_subcommand() {
        assert_eq!(
            subcommand(args(&["--config", "relay", "ready"])).as_deref(),
            Some("ready")
        );
        assert_eq!(
            subcommand(args(&["--log-level=debug", "relay", "k"])).as_deref(),
            Some("relay")
        );
        assert_eq!(subcommand(args(&["--help"])), None);
    }

    #[test]
    fn settings_file_from_flag() {
        assert_eq!(
            settings_file_path(args(&["ready", "--config", "/x.env"])),
            (PathBuf::from("/x.env"), true)
        );
        assert_eq!(
            settings_file_path(args(&["--config=/y.env", "relay", "k"])),
            (PathBuf::from("/y.env"), true)
        );
    }
}
