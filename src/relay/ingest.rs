//! Reading the stream from the ingest, two ways: the native engine plays it with the relay's
//! own RTMP client (announcing every codec it passes through, so MediaMTX gives it HEVC, AV1,
//! VP9, Opus... too); the ffmpeg engine runs one ffmpeg that copies it to FLV on a pipe. Both
//! give FLV tags; [`super::source`] does the rest.

use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, ChildStdout};
use tokio::task::JoinHandle;
use tracing::info;

use super::flv::{FlvError, Parser, Tag};
use super::process::{self, LineLog};
use super::{ffmpeg, Engine, Shared};
use crate::rtmp::{self, Endpoint, Player};

const READ_CHUNK: usize = 64 * 1024;

/// Why reading stopped, short of the stream's clean end.
#[derive(Debug)]
pub enum Failure {
    /// The source ffmpeg failed.
    Exited(ExitStatus),
    /// Its output was not FLV.
    Garbled(FlvError),
    /// The RTMP client could not play the stream, or lost it.
    Rtmp(rtmp::Error),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Exited(status) => write!(f, "the source ffmpeg exited ({status})"),
            Failure::Garbled(e) => write!(f, "the source ffmpeg's output is not FLV: {e}"),
            Failure::Rtmp(e) => write!(f, "reading the ingest failed: {e}"),
        }
    }
}

pub enum Ingest {
    Native(Box<Player>),
    Ffmpeg(Box<Piped>),
}

/// The ffmpeg engine's source: ffmpeg's FLV on a pipe, and its log lines.
pub struct Piped {
    child: Child,
    stdout: ChildStdout,
    parser: Parser,
    buf: Vec<u8>,
    log_task: JoinHandle<()>,
}

/// The ingest URL (`rtmp://host:port/app/name`, as `ready` writes it) as an RTMP endpoint: the
/// last path segment is the stream name (with any query: MediaMTX reads credentials there).
pub fn endpoint(url: &str) -> anyhow::Result<Endpoint> {
    let (tls, rest) = if let Some(rest) = url.strip_prefix("rtmp://") {
        (false, rest)
    } else if let Some(rest) = url.strip_prefix("rtmps://") {
        (true, rest)
    } else {
        anyhow::bail!("the source URL must be rtmp:// or rtmps://");
    };
    let (authority, path) = rest
        .split_once('/')
        .context("the source URL has no path (expected rtmp://host:port/app/name)")?;
    let parsed = url::Url::parse(&format!("rtmp://{authority}"))
        .context("the source URL has an invalid host or port")?;
    let host = parsed
        .host_str()
        .context("the source URL has no host")?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let (app, stream) = path
        .rsplit_once('/')
        .context("the source URL has no stream name (expected rtmp://host:port/app/name)")?;
    anyhow::ensure!(
        !app.is_empty() && !stream.is_empty(),
        "the source URL needs an application and a stream name"
    );
    Ok(Endpoint {
        host,
        port: parsed.port().unwrap_or(if tls { 443 } else { 1935 }),
        tls,
        app: app.to_owned(),
        stream: stream.to_owned(),
    })
}

impl Ingest {
    /// Starts reading `url`; for the native engine, returns once the ingest plays the stream.
    pub async fn open(shared: &Shared, url: &str, log: &Arc<LineLog>) -> Result<Self, OpenError> {
        match shared.engine {
            Engine::Native => {
                let ep = endpoint(url).map_err(OpenError::Setup)?;
                let tls = shared
                    .native_tls(ep.tls)
                    .map_err(|e| OpenError::Setup(anyhow::anyhow!("no TLS for the ingest: {e}")))?;
                let player = Player::connect(&ep, &tls, &shared.rtmp_options())
                    .await
                    .map_err(|e| OpenError::Failed(Failure::Rtmp(e)))?;
                Ok(Ingest::Native(Box::new(player)))
            }
            Engine::Ffmpeg => {
                let args = ffmpeg::source_args(url);
                let mut child = process::spawn(process::Spec {
                    ffmpeg: &shared.ffmpeg,
                    args: &args,
                    preset: None,
                    stdin: false,
                    stdout: true,
                })
                .with_context(|| format!("failed to run ffmpeg ({})", shared.ffmpeg.display()))
                .map_err(OpenError::Setup)?;
                let pid = child.id().unwrap_or(0);
                let line = format!("{}: source: ffmpeg started (pid {pid})", log.key());
                if log.is_quiet() {
                    tracing::debug!(stream_key = log.key(), "{line}");
                } else {
                    info!(stream_key = log.key(), "{line}");
                }
                let stdout = child.stdout.take().expect("stdout is piped");
                let stderr = child.stderr.take().expect("stderr is piped");
                let log_task = {
                    let log = log.clone();
                    tokio::spawn(async move {
                        let mut lines = BufReader::new(stderr).lines();
                        while let Ok(Some(line)) = lines.next_line().await {
                            log.line(&line);
                        }
                    })
                };
                Ok(Ingest::Ffmpeg(Box::new(Piped {
                    child,
                    stdout,
                    parser: Parser::new(),
                    buf: vec![0u8; READ_CHUNK],
                    log_task,
                })))
            }
        }
    }

    /// Appends what was read next to `out`. `Ok(false)`: the stream ended cleanly (the
    /// publisher is gone). Cancel-safe: nothing read is lost when the future is dropped.
    pub async fn read(&mut self, out: &mut Vec<Tag>) -> Result<bool, Failure> {
        match self {
            Ingest::Native(player) => match player.next().await {
                Ok(Some(m)) => {
                    out.push(Tag::from(m).with_frame_type());
                    Ok(true)
                }
                Ok(None) => Ok(false),
                Err(e) => Err(Failure::Rtmp(e)),
            },
            Ingest::Ffmpeg(piped) => loop {
                let Piped {
                    stdout,
                    parser,
                    buf,
                    ..
                } = &mut **piped;
                // Tags already parsed first (none are left behind by a cancelled read).
                match parser.next_tag() {
                    Ok(Some(tag)) => {
                        out.push(tag);
                        while let Ok(Some(tag)) = parser.next_tag() {
                            out.push(tag);
                        }
                        return Ok(true);
                    }
                    Ok(None) => {}
                    Err(e) => return Err(Failure::Garbled(e)),
                }
                // A read error ends the stream too: ffmpeg's exit status then says why.
                let n = stdout.read(buf).await.unwrap_or_default();
                if n == 0 {
                    return Ok(false);
                }
                parser.push(&buf[..n]);
            },
        }
    }

    /// Stops reading: the RTMP connection is closed; ffmpeg is stopped (SIGTERM, then killed
    /// after `timeout`). For ffmpeg, after a clean end (`read` gave `Ok(false)`), its exit
    /// status says whether the stream really ended or ffmpeg failed.
    pub async fn close(self, timeout: Duration, ended: bool) -> anyhow::Result<Option<Failure>> {
        match self {
            Ingest::Native(player) => {
                player.close(timeout).await;
                Ok(None)
            }
            Ingest::Ffmpeg(piped) => {
                let Piped {
                    mut child,
                    log_task,
                    ..
                } = *piped;
                let status = if ended {
                    process::wait_or_kill(&mut child, timeout).await?
                } else {
                    process::terminate(&mut child, timeout).await?
                };
                let _ = log_task.await;
                Ok((ended && !status.success()).then_some(Failure::Exited(status)))
            }
        }
    }
}

/// Why the ingest could not be read at all.
#[derive(Debug)]
pub enum OpenError {
    /// The relay's own setup (a bad source URL, no ffmpeg): not retried within a grace.
    Setup(anyhow::Error),
    /// The ingest did not give the stream (no publisher, MediaMTX down...).
    Failed(Failure),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ingest_url_splits_into_app_and_stream() {
        let ep = endpoint("rtmp://127.0.0.1:1935/live/abc-123").unwrap();
        assert_eq!(
            (
                ep.host.as_str(),
                ep.port,
                ep.tls,
                ep.app.as_str(),
                ep.stream.as_str()
            ),
            ("127.0.0.1", 1935, false, "live", "abc-123")
        );
        let ep = endpoint("rtmp://[::1]/a/b/key?user=u&pass=p").unwrap();
        assert_eq!(
            (
                ep.host.as_str(),
                ep.port,
                ep.app.as_str(),
                ep.stream.as_str()
            ),
            ("::1", 1935, "a/b", "key?user=u&pass=p")
        );
        assert_eq!(endpoint("rtmps://h/live/k").unwrap().port, 443);
        for bad in [
            "http://h/live/k",
            "rtmp://h",
            "rtmp://h/k",
            "rtmp://h/live/",
            "rtmp://:99999/a/b",
        ] {
            assert!(endpoint(bad).is_err(), "{bad}");
        }
    }
}
