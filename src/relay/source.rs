//! The source: one ffmpeg reads the stream from the ingest (`-c copy`) and writes FLV to a
//! pipe; the relay parses its tags and hands each to the hub.

use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::sync::watch;
use tracing::info;

use super::flv::{FlvError, Parser};
use super::process::{self, LineLog};
use super::state::SourcePhase;
use super::{ffmpeg, notify, Shared, SourceEvent};

/// How a source ended.
#[derive(Debug)]
pub enum End {
    /// ffmpeg read the stream to its end and exited 0: the publisher is gone.
    Finished,
    /// ffmpeg failed.
    Failed(ExitStatus),
    /// Its output was not FLV.
    Garbled(FlvError),
    /// The relay asked it to stop.
    Stopped,
    /// It had read the stream, then nothing came for [`STALL`] (the publisher is silent, or
    /// gone without the ingest closing the read): stopped, so that the grace can begin.
    Stalled,
}

/// With a reconnect grace, a source that delivers nothing this long is given up.
pub const STALL: Duration = Duration::from_secs(2);
/// With a reconnect grace, after this long without a tag the destinations get the last
/// picture (the source may still resume: it is then spliced in at its next keyframe).
pub const SILENCE: Duration = Duration::from_millis(400);

const READ_CHUNK: usize = 64 * 1024;

/// Reads `url` until it ends or `stop` turns true: READY=1 to systemd at the first tag,
/// `shared.picture` once the stream can be shown.
pub async fn run(
    shared: &Shared,
    url: &str,
    log: LineLog,
    mut stop: watch::Receiver<bool>,
    stall: Option<Duration>,
) -> anyhow::Result<End> {
    let (ffmpeg_bin, stop_timeout, hub) = (&shared.ffmpeg, shared.stop_timeout, &shared.hub);
    let args = ffmpeg::source_args(url);
    let mut child = process::spawn(process::Spec {
        ffmpeg: ffmpeg_bin,
        args: &args,
        preset: None,
        stdin: false,
        stdout: true,
    })
    .with_context(|| format!("failed to run ffmpeg ({})", ffmpeg_bin.display()))?;
    let pid = child.id().unwrap_or(0);
    if log.is_quiet() {
        tracing::debug!(
            stream_key = log.key(),
            "{}: source: ffmpeg started (pid {pid})",
            log.key()
        );
    } else {
        info!(
            stream_key = log.key(),
            "{}: source: ffmpeg started (pid {pid})",
            log.key()
        );
    }
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    let log = Arc::new(log);
    let log_task = {
        let log = log.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                log.line(&line);
            }
        })
    };

    let mut parser = Parser::new();
    let mut buf = vec![0u8; READ_CHUNK];
    let mut read_any = false;
    let far = Duration::from_secs(86_400);
    // Silent since (no tag read), while a grace is configured.
    let mut silent = false;
    let mut last_read = tokio::time::Instant::now();
    let end = loop {
        let watching = stall.filter(|_| read_any).is_some();
        let next_check = if !watching {
            last_read + far
        } else if silent {
            last_read + stall.unwrap_or(far)
        } else {
            last_read + SILENCE
        };
        tokio::select! {
            _ = tokio::time::sleep_until(next_check) => {
                if !silent {
                    // Between two tags of a live stream there are milliseconds: the
                    // publisher is gone or stuck. Splice whatever comes next at a keyframe.
                    silent = true;
                    hub.new_source();
                    let _ = shared.events.send(SourceEvent::Gap);
                    continue;
                }
                log.set_quiet(true);
                process::terminate(&mut child, stop_timeout).await?;
                break End::Stalled;
            }
            n = stdout.read(&mut buf) => {
                let n = n.context("failed to read the source ffmpeg's output")?;
                if n == 0 {
                    let status = process::wait_or_kill(&mut child, stop_timeout).await?;
                    break if status.success() { End::Finished } else { End::Failed(status) };
                }
                last_read = tokio::time::Instant::now();
                parser.push(&buf[..n]);
                let garbled = loop {
                    match parser.next_tag() {
                        Ok(Some(tag)) => {
                            if !read_any {
                                // The stream is being read: the relay is up.
                                read_any = true;
                                notify::ready();
                            }
                            if hub.publish(tag) {
                                // This source's first picture: destinations can start, the
                                // grace (if any) is over.
                                shared.picture.send_if_modified(|p| !std::mem::replace(p, true));
                                shared.board.source(SourcePhase::Live);
                                let _ = shared.events.send(SourceEvent::Spliced);
                                silent = false;
                            }
                        }
                        Ok(None) => break None,
                        Err(e) => break Some(e),
                    }
                };
                if let Some(e) = garbled {
                    process::terminate(&mut child, stop_timeout).await?;
                    break End::Garbled(e);
                }
            }
            _ = async { let _ = stop.wait_for(|s| *s).await; } => {
                log.set_quiet(true); // its complaints about being stopped
                process::terminate(&mut child, stop_timeout).await?;
                break End::Stopped;
            }
        }
    };
    let _ = log_task.await;
    Ok(end)
}
