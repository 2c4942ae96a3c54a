//! `neustream relay KEY`: ExecStart of neustream-relay@.service. Runs the stream's ffmpeg,
//! passes its option files through pipes, logs its lines (redacted, per destination) and stops
//! it on SIGTERM.

use std::collections::HashMap;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::process::{ExitStatus, Stdio};

use anyhow::Context;
use tokio::io::{AsyncBufReadExt, BufReader};
use tracing::{debug, error, info, warn};

use super::ConfigError;
use crate::cli::RelayArgs;
use crate::config;
use crate::destination::{Destination, Redactor};
use crate::envfile::StreamSpec;
use crate::ffmpeg::{self, Level, FIRST_PRESET_FD};

/// Option-file pipes are moved to descriptors at or above this before the fork, so that
/// placing them at 3, 4, ... in the child never overwrites one not yet placed.
const PRESET_FD_FLOOR: RawFd = 100;
/// A failing destination's lines: the first few, then one in this many.
const FAILURE_LOG_EVERY: u32 = 30;

pub fn run(args: RelayArgs) -> anyhow::Result<()> {
    let spec = StreamSpec::from_vars(&config::stream_vars()).map_err(|e| {
        ConfigError(format!(
            "no usable stream description in the environment: {e} (the unit reads it from \
             /run/neustream/streams/{}.env, written by `neustream ready`)",
            args.key
        ))
    })?;
    if spec.key.as_str() != args.key {
        return Err(ConfigError(format!(
            "the environment describes stream {} but this relay is for {}",
            spec.key, args.key
        ))
        .into());
    }
    if spec.destinations.is_empty() {
        return Err(ConfigError(format!("stream {} has no destinations", spec.key)).into());
    }
    let plan = ffmpeg::plan(&spec.source_url, &spec.destinations, args.retry_wait)
        .map_err(|e| ConfigError(e.to_string()))?;
    for (index, d) in spec.destinations.iter().enumerate() {
        info!(
            stream_key = %spec.key,
            destination_index = index,
            destination_platform = d.platform(),
            "{}: relaying to destination {index} ({}) {}",
            spec.key,
            d.platform(),
            d.redacted()
        );
    }
    super::runtime()?.block_on(supervise(&args, &spec, plan))
}

async fn supervise(args: &RelayArgs, spec: &StreamSpec, plan: ffmpeg::Plan) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;

    let presets = preset_pipes(&plan.presets).context("failed to pass options to ffmpeg")?;
    let raw: Vec<RawFd> = presets.iter().map(AsRawFd::as_raw_fd).collect();
    let mut command = tokio::process::Command::new(&args.ffmpeg);
    command
        .args(&plan.args)
        .stdin(Stdio::null())
        // Both streams through us: were either connected to the journal, journald would store
        // ffmpeg's command line in _CMDLINE of every line.
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        command.pre_exec(move || {
            for (i, fd) in raw.iter().enumerate() {
                if libc::dup2(*fd, FIRST_PRESET_FD + i as RawFd) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            // Outside systemd, ffmpeg must not outlive the relay.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    let mut child = command
        .spawn()
        .with_context(|| format!("failed to run ffmpeg ({})", args.ffmpeg.display()))?;
    drop(presets);
    let pid = child.id();
    info!(stream_key = %spec.key, "{}: ffmpeg started (pid {})", spec.key, pid.unwrap_or(0));

    let stderr = child.stderr.take().expect("stderr is piped");
    let mut lines = BufReader::new(stderr).lines();
    let mut log = LineLog::new(spec);
    let mut stop_signal = None;
    let status: ExitStatus = loop {
        tokio::select! {
            line = lines.next_line() => match line {
                Ok(Some(line)) => log.line(&line),
                // ffmpeg closed its stderr: it is exiting.
                _ => break child.wait().await?,
            },
            _ = term.recv(), if stop_signal.is_none() => stop_signal = Some("SIGTERM"),
            _ = int.recv(), if stop_signal.is_none() => stop_signal = Some("SIGINT"),
        }
        if let Some(signal) = stop_signal.filter(|_| pid.is_some()) {
            info!(stream_key = %spec.key, "{}: {signal} received; stopping ffmpeg", spec.key);
            break stop(&mut child, &mut lines, &mut log, args.stop_timeout).await?;
        }
    };
    if let Some(signal) = stop_signal {
        info!(stream_key = %spec.key, "{}: relay stopped on {signal} ({status})", spec.key);
        return Ok(());
    }
    if status.success() {
        info!(stream_key = %spec.key, "{}: the source stream ended; relay done", spec.key);
        Ok(())
    } else {
        anyhow::bail!(
            "{}: ffmpeg exited ({status}); systemd restarts the relay",
            spec.key
        )
    }
}

/// SIGTERM to ffmpeg, then SIGKILL if it is still running after `timeout`.
async fn stop(
    child: &mut tokio::process::Child,
    lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStderr>>,
    log: &mut LineLog,
    timeout: std::time::Duration,
) -> io::Result<ExitStatus> {
    if let Some(pid) = child.id() {
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
    }
    let drain = async {
        while let Ok(Some(line)) = lines.next_line().await {
            log.line(&line);
        }
        child.wait().await
    };
    match tokio::time::timeout(timeout, drain).await {
        Ok(status) => status,
        Err(_) => {
            warn!("ffmpeg still running {timeout:?} after SIGTERM; killing it");
            child.kill().await?;
            child.wait().await
        }
    }
}

/// One pipe per option file, already filled and closed for writing; the read ends are moved
/// to descriptors >= [`PRESET_FD_FLOOR`] and closed on exec (the child gets copies).
fn preset_pipes(presets: &[String]) -> io::Result<Vec<OwnedFd>> {
    presets
        .iter()
        .map(|text| {
            let (reader, mut writer) = io::pipe()?;
            writer.write_all(text.as_bytes())?; // far below the pipe's 64 KiB: never blocks
            drop(writer);
            let fd =
                unsafe { libc::fcntl(reader.as_raw_fd(), libc::F_DUPFD_CLOEXEC, PRESET_FD_FLOOR) };
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(unsafe { OwnedFd::from_raw_fd(fd) })
        })
        .collect()
}

/// Turns ffmpeg's stderr into journal lines: redacted, tied to a destination where the line
/// says which, and with a failing destination's repeats thinned out.
struct LineLog {
    key: String,
    destinations: Vec<(String, String)>,
    redactor: Redactor,
    /// `fifo @ 0x..` contexts, learnt from lines that name a destination's URL.
    contexts: HashMap<String, usize>,
    failures: Vec<u32>,
}

impl LineLog {
    fn new(spec: &StreamSpec) -> Self {
        LineLog {
            key: spec.key.to_string(),
            destinations: spec
                .destinations
                .iter()
                .map(|d: &Destination| (d.platform().to_owned(), d.public_url().to_owned()))
                .collect(),
            redactor: Redactor::new(&spec.destinations),
            contexts: HashMap::new(),
            failures: vec![0; spec.destinations.len()],
        }
    }

    /// The destination a line is about: by its fifo context, or by the one URL it names.
    fn destination(&mut self, context: Option<&str>, message: &str) -> Option<usize> {
        if let Some(&i) = context.and_then(|c| self.contexts.get(c)) {
            return Some(i);
        }
        let mut named = self
            .destinations
            .iter()
            .enumerate()
            .filter(|(_, (_, url))| {
                message.contains(&format!("{url}'")) || message.contains(&format!("{url}:"))
            });
        let (index, _) = named.next()?;
        if named.next().is_some() {
            return None; // two destinations share this URL
        }
        if let Some(c) = context.filter(|c| c.starts_with("fifo @")) {
            self.contexts.insert(c.to_owned(), index);
        }
        Some(index)
    }

    fn line(&mut self, raw: &str) {
        let redacted = self.redactor.redact(raw);
        let parsed = ffmpeg::parse_line(&redacted);
        let mut level = parsed.level;
        // A failed connection attempt is logged thrice (tcp, rtmp, fifo): keep the fifo's.
        if parsed
            .context
            .is_some_and(|c| c.starts_with("tcp @") || c.starts_with("rtmp @"))
            && (parsed.message.starts_with("Connection to")
                || parsed.message.starts_with("Cannot open connection"))
        {
            level = Level::Verbose;
        }
        let index = self.destination(parsed.context, parsed.message);
        let message = parsed.message;
        if let Some(i) = index {
            if message.starts_with("Recovery successful") {
                if self.failures[i] > 0 {
                    info!(
                        stream_key = %self.key, destination_index = i,
                        destination_platform = %self.destinations[i].0,
                        "{}: destination {i} ({}) reconnected after {} failed attempt(s)",
                        self.key, self.destinations[i].0, self.failures[i]
                    );
                }
                self.failures[i] = 0;
                return;
            }
            if level == Level::Error || message.starts_with("Recovery failed") {
                self.failures[i] += 1;
                let n = self.failures[i];
                if n > 3 && !n.is_multiple_of(FAILURE_LOG_EVERY) {
                    return;
                }
                if n > 3 {
                    level = Level::Error;
                }
            }
        }
        emit(
            level,
            &self.key,
            index.map(|i| (i, self.destinations[i].0.as_str())),
            message,
        );
    }
}

fn emit(level: Level, key: &str, dest: Option<(usize, &str)>, message: &str) {
    macro_rules! at {
        ($mac:ident) => {
            match dest {
                Some((i, platform)) => $mac!(
                    stream_key = key,
                    destination_index = i,
                    destination_platform = platform,
                    "ffmpeg: destination {i} ({platform}): {message}"
                ),
                None => $mac!(stream_key = key, "ffmpeg: {message}"),
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
