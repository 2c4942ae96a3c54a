//! The source: one ffmpeg reads the stream from the ingest (`-c copy`) and writes FLV to a
//! pipe; the relay parses its tags and hands each to the hub.

use std::process::ExitStatus;
use std::sync::Arc;

use anyhow::Context;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::sync::watch;
use tracing::info;

use super::flv::{FlvError, Parser};
use super::process::{self, LineLog};
use super::state::SourcePhase;
use super::{ffmpeg, notify, Shared};

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
}

const READ_CHUNK: usize = 64 * 1024;

/// Reads `url` until it ends or `stop` turns true: READY=1 to systemd at the first tag,
/// `shared.picture` once the stream can be shown.
pub async fn run(
    shared: &Shared,
    url: &str,
    log: LineLog,
    mut stop: watch::Receiver<bool>,
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
    info!(
        stream_key = log.key(),
        "{}: source: ffmpeg started (pid {})",
        log.key(),
        child.id().unwrap_or(0)
    );
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
    let end = loop {
        tokio::select! {
            n = stdout.read(&mut buf) => {
                let n = n.context("failed to read the source ffmpeg's output")?;
                if n == 0 {
                    let status = process::wait_or_kill(&mut child, stop_timeout).await?;
                    break if status.success() { End::Finished } else { End::Failed(status) };
                }
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
                                shared.spliced.notify_one();
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
