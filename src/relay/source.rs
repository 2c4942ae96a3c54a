//! The source: reads the stream from the ingest ([`super::ingest`], with the relay's engine)
//! and hands each tag to the hub; notices a publisher that went silent.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::flv::{Kind, Tag};
use super::ingest::{Failure, Ingest, OpenError};
use super::process::LineLog;
use super::state::SourcePhase;
use super::tracks::{self, Read};
use super::{notify, Shared, SourceEvent};

/// How a source ended.
#[derive(Debug)]
pub enum End {
    /// The stream ended: the publisher is gone.
    Finished,
    /// Reading failed (the ingest gave no stream, lost it, or ffmpeg failed).
    Failed(Failure),
    /// The relay asked it to stop.
    Stopped,
    /// It had read the stream, then nothing came for [`STALL`] (the publisher is silent, or
    /// gone without the ingest closing the read): stopped, so that the grace can begin.
    Stalled,
    /// The ingest will not give this publisher's stream to an RTMP reader (MP2 audio...): what
    /// the streamer should change. Reading again would only fail again.
    Unreadable(String),
}

/// With a reconnect grace, a source that delivers nothing this long is given up.
pub const STALL: Duration = Duration::from_secs(2);
/// With a reconnect grace, after this long without a tag the destinations get the last
/// picture (the source may still resume: it is then spliced in at its next keyframe).
pub const SILENCE: Duration = Duration::from_millis(400);

/// Reads `url` until it ends or `stop` turns true: READY=1 to systemd at the first tag,
/// `shared.picture` once the stream can be shown. `tracks`: the publisher's, as MediaMTX names
/// them (may be empty), to tell a stream the ingest will not give from a publisher gone.
pub async fn run(
    shared: &Shared,
    url: &str,
    log: LineLog,
    mut stop: watch::Receiver<bool>,
    stall: Option<Duration>,
    tracks: &[String],
) -> anyhow::Result<End> {
    let (stop_timeout, hub) = (shared.stop_timeout, &shared.hub);
    let log = Arc::new(log);
    let mut ingest = tokio::select! {
        opened = Ingest::open(shared, url, &log) => match opened {
            Ok(ingest) => ingest,
            Err(OpenError::Setup(e)) => return Err(e),
            Err(OpenError::Failed(f)) => {
                return Ok(tracks::after_refusal(tracks).map_or(End::Failed(f), End::Unreadable))
            }
        },
        _ = stop.wait_for(|s| *s) => return Ok(End::Stopped),
    };
    let mut tags: Vec<Tag> = Vec::new();
    let mut read_any = false;
    let mut got = Read::default();
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
                break End::Stalled;
            }
            read = ingest.read(&mut tags) => {
                match read {
                    Ok(true) => {}
                    Ok(false) => break End::Finished,
                    // The ingest's connection lost once the stream was read (MediaMTX killed or
                    // restarted): the stream ended, as a reader sees it; the grace (if any)
                    // decides what comes next. Before any media, it is a failure to read.
                    Err(Failure::Rtmp(e)) if read_any && ingest_lost(&e) => break End::Finished,
                    Err(f) => break End::Failed(f),
                }
                last_read = tokio::time::Instant::now();
                for tag in tags.drain(..) {
                    match tag.kind {
                        Kind::Audio => got.audio = true,
                        Kind::Video => got.video = true,
                        Kind::Script => {}
                    }
                    read_any = true;
                    if hub.publish(tag) {
                        // This source's first picture: destinations can start, the grace (if
                        // any) is over, and the relay is up (READY=1: the start job, and so the
                        // `ready` hook, completes once the destinations have something to
                        // show; the headers alone come up to a GOP earlier).
                        notify::ready();
                        shared.picture.send_if_modified(|p| !std::mem::replace(p, true));
                        shared.board.source(SourcePhase::Live);
                        let _ = shared.events.send(SourceEvent::Spliced);
                        silent = false;
                    }
                }
            }
            _ = async { let _ = stop.wait_for(|s| *s).await; } => {
                log.set_quiet(true); // ffmpeg's complaints about being stopped
                break End::Stopped;
            }
        }
    };
    let finished = matches!(end, End::Finished);
    let end = match ingest.close(stop_timeout, finished).await? {
        Some(failure) => End::Failed(failure),
        None => end,
    };
    // Ended by the ingest (not stopped, not stalled): was it ever going to give the stream?
    if matches!(end, End::Finished | End::Failed(_)) {
        if let Some(problem) = tracks::after_read(tracks, got) {
            return Ok(End::Unreadable(problem));
        }
    }
    Ok(end)
}

/// A connection to the ingest that ended without the ingest saying why (a close, a reset, no
/// data for long), rather than a refusal or garbage.
fn ingest_lost(e: &crate::rtmp::Error) -> bool {
    matches!(
        e.class,
        crate::rtmp::Class::Dropped | crate::rtmp::Class::Timeout
    )
}
