//! The relay of one stream (`neustream relay KEY`, in `neustream-relay@KEY.service`): a
//! small supervisor that owns every destination.
//!
//! ```text
//! ingest ──▶ source ffmpeg ──FLV──▶ hub (GOP cache, per-destination queues, one timeline)
//!                                    ├──FLV──▶ ffmpeg ──▶ destination 0
//!                                    └──FLV──▶ ffmpeg ──▶ destination 1 ...
//! ```
//! Each destination has its own ffmpeg, queue and backoff ([`output`]); the relay keeps its
//! state current for `systemctl status` and a state file ([`state`]).

pub mod backoff;
mod cache;
pub mod ffmpeg;
pub mod flv;
mod hub;
mod notify;
mod output;
mod process;
mod queue;
mod source;
pub mod state;
mod tcpinfo;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tracing::{info, warn};

use crate::destination::{Destination, Redactor};
use crate::envfile::StreamSpec;
use ffmpeg::Tls;
use hub::Hub;
use process::LineLog;
use queue::Queue;
use state::{Board, SourcePhase};

/// How often the state is published when nothing changes (bitrates move).
const STATE_EVERY: Duration = Duration::from_secs(2);

pub struct Settings {
    pub ffmpeg: PathBuf,
    pub stop_timeout: Duration,
    pub tls: Tls,
    /// Where `state.json` is kept (the unit's runtime directory); none: not written.
    pub state_dir: Option<PathBuf>,
}

/// What the source, the destinations and the state publisher share.
pub struct Shared {
    key: String,
    ffmpeg: PathBuf,
    destinations: Vec<Destination>,
    queues: Vec<Arc<Queue>>,
    hub: Hub,
    board: Board,
    redactor: Arc<Redactor>,
    tls: Tls,
    stop_timeout: Duration,
    /// Turns true once the source has a picture to show (a video keyframe, or audio for a
    /// stream without video): destinations start then, not before.
    picture: watch::Sender<bool>,
}

/// How the relay ended without an error.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The source stream ended (the publisher is gone).
    SourceEnded,
    /// SIGTERM or SIGINT.
    Stopped(&'static str),
}

pub async fn run(spec: StreamSpec, settings: Settings) -> anyhow::Result<Outcome> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;

    let key = spec.key.to_string();
    let platforms: Vec<&str> = spec
        .destinations
        .iter()
        .map(Destination::platform)
        .collect();
    let queues: Vec<Arc<Queue>> = spec
        .destinations
        .iter()
        .map(|_| Arc::new(Queue::new()))
        .collect();
    let shared = Arc::new(Shared {
        hub: Hub::new(&key, queues.clone()),
        board: Board::new(&key, &spec.source_id, &platforms),
        redactor: Arc::new(Redactor::new(&spec.destinations)),
        key: key.clone(),
        ffmpeg: settings.ffmpeg.clone(),
        destinations: spec.destinations.clone(),
        queues,
        tls: settings.tls.clone(),
        stop_timeout: settings.stop_timeout,
        picture: watch::channel(false).0,
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let outputs: Vec<_> = (0..spec.destinations.len())
        .map(|i| tokio::spawn(output::supervise(shared.clone(), i, stop_rx.clone())))
        .collect();
    let publisher = tokio::spawn(publish_state(shared.clone(), settings.state_dir.clone()));

    let source = source::run(
        &shared,
        &spec.source_url,
        LineLog::new(&key, None, shared.redactor.clone()),
        stop_rx.clone(),
    );
    tokio::pin!(source);
    let mut signal_name = None;
    let end = tokio::select! {
        end = &mut source => end,
        _ = term.recv() => { signal_name = Some("SIGTERM"); stop_tx.send_replace(true); source.await }
        _ = int.recv() => { signal_name = Some("SIGINT"); stop_tx.send_replace(true); source.await }
    };
    notify::stopping();
    shared.board.source(SourcePhase::Ended);
    if let Some(name) = signal_name {
        info!(stream_key = %key, "{key}: {name} received; ending every destination");
    }
    stop_tx.send_replace(true);
    // Each session kills its ffmpeg after stop_timeout; this bounds the whole.
    let all = futures_util::future::join_all(outputs);
    if tokio::time::timeout(settings.stop_timeout + Duration::from_secs(2), all)
        .await
        .is_err()
    {
        warn!(stream_key = %key, "{key}: destinations still stopping after {:?}", settings.stop_timeout);
    }
    publisher.abort();
    publish_once(&shared, settings.state_dir.as_deref());

    match end? {
        source::End::Stopped => Ok(Outcome::Stopped(signal_name.unwrap_or("stop"))),
        source::End::Finished => Ok(Outcome::SourceEnded),
        source::End::Failed(status) => {
            anyhow::bail!("{key}: the source ffmpeg exited ({status}); systemd restarts the relay")
        }
        source::End::Garbled(e) => {
            anyhow::bail!("{key}: the source ffmpeg's output is not FLV: {e}")
        }
    }
}

async fn publish_state(shared: Arc<Shared>, dir: Option<PathBuf>) {
    let mut tcp = tcpinfo::Sampler::default();
    loop {
        tokio::select! {
            _ = shared.board.changed() => {
                // Let a burst of changes (several destinations at once) settle into one line.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            _ = tokio::time::sleep(STATE_EVERY) => {}
        }
        shared.board.sample_tcp(&mut tcp);
        publish_once(&shared, dir.as_deref());
    }
}

fn publish_once(shared: &Shared, dir: Option<&std::path::Path>) {
    for (index, queue) in shared.queues.iter().enumerate() {
        shared.board.overflowed(index, queue.overflows());
    }
    let (status, json) = shared.board.render();
    notify::status(&status);
    if let Some(dir) = dir {
        if let Err(e) = state::write_file(dir, &json) {
            warn!(stream_key = %shared.key, "{}: failed to write the state file in {}: {e}",
                  shared.key, dir.display());
        }
    }
}
