//! Running one ffmpeg: its pipes, its option file on descriptor 3, its stop, and its log
//! lines into the journal (redacted, tied to a destination).

use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::process::{Child, Command};
use tracing::{debug, error, info, warn};

use super::ffmpeg::{self, Level, LogLine, PRESET_FD};
use crate::destination::Redactor;

/// The option-file pipe is moved to a descriptor at or above this before the fork, so that
/// placing it at 3 in the child never overwrites another.
const PRESET_FD_FLOOR: RawFd = 100;

pub struct Spec<'a> {
    pub ffmpeg: &'a Path,
    pub args: &'a [String],
    /// Text ffmpeg reads from `/dev/fd/3` (`-fpre`).
    pub preset: Option<&'a str>,
    pub stdin: bool,
    pub stdout: bool,
}

/// Starts ffmpeg with stderr piped to us (were it connected to the journal, journald would
/// store ffmpeg's command line in `_CMDLINE` of every line).
pub fn spawn(spec: Spec<'_>) -> io::Result<Child> {
    let preset = spec.preset.map(preset_pipe).transpose()?;
    let raw = preset.as_ref().map(AsRawFd::as_raw_fd);
    let mut command = Command::new(spec.ffmpeg);
    command
        .args(spec.args)
        .stdin(if spec.stdin {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(if spec.stdout {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stderr(Stdio::piped())
        // Only the relay talks to systemd.
        .env_remove("NOTIFY_SOCKET")
        .kill_on_drop(true);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        command.pre_exec(move || {
            if let Some(fd) = raw {
                if libc::dup2(fd, PRESET_FD) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            // Outside systemd, ffmpeg must not outlive the relay.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    let child = command.spawn();
    drop(preset);
    child
}

/// A pipe holding `text`, closed for writing; its read end at a descriptor >=
/// [`PRESET_FD_FLOOR`], closed on exec (the child gets a copy at [`PRESET_FD`]).
fn preset_pipe(text: &str) -> io::Result<OwnedFd> {
    let (reader, mut writer) = io::pipe()?;
    writer.write_all(text.as_bytes())?; // far below the pipe's 64 KiB: never blocks
    drop(writer);
    let fd = unsafe { libc::fcntl(reader.as_raw_fd(), libc::F_DUPFD_CLOEXEC, PRESET_FD_FLOOR) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// SIGTERM (ffmpeg then writes its trailer: an RTMP output sends FCUnpublish and
/// deleteStream), then SIGKILL if it is still running after `timeout`.
pub async fn terminate(child: &mut Child, timeout: Duration) -> io::Result<ExitStatus> {
    if let Some(pid) = child.id() {
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
    }
    wait_or_kill(child, timeout).await
}

/// Waits for ffmpeg to exit by itself for up to `timeout`, then kills it.
pub async fn wait_or_kill(child: &mut Child, timeout: Duration) -> io::Result<ExitStatus> {
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(status) => status,
        Err(_) => {
            warn!(
                "ffmpeg (pid {}) still running {timeout:?} after it was asked to stop; killing it",
                child.id().unwrap_or(0)
            );
            child.kill().await?;
            child.wait().await
        }
    }
}

/// Turns one ffmpeg's stderr into journal lines: redacted, tagged with the stream and (for a
/// destination's ffmpeg) the destination.
#[derive(Clone)]
pub struct LineLog {
    key: String,
    destination: Option<(usize, String)>,
    redactor: Arc<Redactor>,
    /// Errors are logged at debug level (a destination failing again and again, a source
    /// being stopped).
    quiet: Arc<AtomicBool>,
}

impl LineLog {
    pub fn new(key: &str, destination: Option<(usize, &str)>, redactor: Arc<Redactor>) -> Self {
        LineLog {
            key: key.to_owned(),
            destination: destination.map(|(i, p)| (i, p.to_owned())),
            redactor,
            quiet: Arc::default(),
        }
    }

    pub fn is_quiet(&self) -> bool {
        self.quiet.load(Ordering::Relaxed)
    }

    pub fn set_quiet(&self, quiet: bool) {
        self.quiet.store(quiet, Ordering::Relaxed);
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    /// Logs one line; returns what it says about the connection.
    pub fn line(&self, raw: &str) -> Option<ffmpeg::Signal> {
        let redacted = self.redactor.redact(raw);
        let parsed = ffmpeg::parse_line(&redacted);
        let signal = ffmpeg::signal(&parsed);
        let mut level = parsed.level;
        // A failed connection is logged thrice (tcp, rtmp, the output): keep the last.
        if parsed
            .context
            .is_some_and(|c| c.starts_with("tcp @") || c.starts_with("rtmp"))
            && parsed.message.starts_with("Cannot open connection")
        {
            level = Level::Verbose;
        }
        // Probing a pipe that starts with the codec configuration and a keyframe: ffmpeg's
        // advice to probe longer is moot with -c copy.
        const PROBE_NOISE: [&str; 3] = [
            "not enough frames to estimate rate",
            "Could not find codec parameters",
            "Consider increasing the value for the 'analyzeduration'",
        ];
        if self.quiet.load(Ordering::Relaxed)
            || PROBE_NOISE.iter().any(|n| parsed.message.contains(n))
        {
            level = Level::Verbose;
        }
        self.emit(level, &parsed);
        signal
    }

    fn emit(&self, level: Level, line: &LogLine<'_>) {
        let key = self.key.as_str();
        let message = line.message;
        macro_rules! at {
            ($mac:ident) => {
                match &self.destination {
                    Some((i, platform)) => $mac!(
                        stream_key = key,
                        destination_index = i,
                        destination_platform = platform.as_str(),
                        "ffmpeg: destination {i} ({platform}): {message}"
                    ),
                    None => $mac!(stream_key = key, "ffmpeg: source: {message}"),
                }
            };
        }
        match level {
            Level::Error => at!(error),
            Level::Warning => at!(warn),
            Level::Info => at!(info),
            Level::Verbose => at!(debug),
        }
    }
}
