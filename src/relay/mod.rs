//! The relay of one stream (`neustream relay KEY`, in `neustream-relay@KEY.service`): a
//! small supervisor that owns every destination.
//!
//! ```text
//! ingest ──RTMP play──▶ hub (GOP cache, per-destination queues, one timeline)
//!                        ├──RTMP──▶ destination 0
//!                        └──RTMPS─▶ destination 1 ...
//! ```
//! The native engine ([`crate::rtmp`]) does all of it in this one process; the fallback engine
//! (`NEUSTREAM_RTMP_ENGINE=ffmpeg`) reads the ingest with one ffmpeg and gives each destination
//! an ffmpeg of its own, fed FLV from its queue ([`ingest`], [`push_ffmpeg`]). Either way each
//! destination has its own queue and backoff ([`output`]); the relay keeps its state current
//! for `systemctl status` and a state file ([`state`]).

pub mod backoff;
mod cache;
mod codec;
pub mod control;
pub mod ffmpeg;
mod filler;
pub mod flv;
mod hub;
mod ingest;
mod notify;
mod output;
mod process;
mod push_ffmpeg;
mod push_native;
mod queue;
pub mod shape;
mod silence;
mod source;
pub mod state;
mod tcpinfo;
mod tracks;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use crate::destination::{Destination, Redactor};
use crate::envfile::StreamSpec;
use crate::platforms;
use crate::rtmp;
use ffmpeg::Tls;
use hub::Hub;
use output::Output;
use process::LineLog;
use state::{Board, SourcePhase};

/// How often the state is published when nothing changes (bitrates move).
const STATE_EVERY: Duration = Duration::from_secs(2);

/// The RTMP client of the relay (`NEUSTREAM_RTMP_ENGINE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// [`crate::rtmp`]: the ingest and every destination in this process.
    Native,
    /// One ffmpeg reads the ingest, one per destination publishes.
    Ffmpeg,
}

pub struct Settings {
    pub engine: Engine,
    /// What platforms take, where the operator says otherwise than the built-in table.
    pub platform_codecs: Vec<(String, platforms::Accepts)>,
    pub ffmpeg: PathBuf,
    pub stop_timeout: Duration,
    pub tls: Tls,
    /// Where `state.json` and `control.sock` are kept (the unit's runtime directory); none:
    /// no state file, no reload.
    pub state_dir: Option<PathBuf>,
    /// How long destinations are kept (frozen picture, silence) after the publisher is gone;
    /// zero: the relay ends with its source.
    pub grace: Duration,
}

/// What the source, the destinations and the state publisher share.
pub struct Shared {
    key: String,
    engine: Engine,
    ffmpeg: PathBuf,
    hub: Hub,
    board: Board,
    tls: Tls,
    /// The native engine's TLS: verified as `tls` says (an error: the CA bundle is unusable,
    /// so no rtmps:// destination can be verified), and one for plain connections.
    native_tls: Result<rtmp::TlsConfig, String>,
    plain_tls: rtmp::TlsConfig,
    /// `NEUSTREAM_PLATFORM_CODECS`: the operator's word on what a platform takes.
    platform_codecs: Vec<(String, platforms::Accepts)>,
    stop_timeout: Duration,
    /// Turns true once the first source has a picture to show (a video keyframe, or audio for
    /// a stream without video): destinations start then, not before.
    picture: watch::Sender<bool>,
    /// What the source tells the main loop.
    events: mpsc::UnboundedSender<SourceEvent>,
    /// The grace's silence, made once per audio format.
    silence: filler::SilenceCache,
}

impl Shared {
    /// The TLS configuration for a connection, `secure` or not.
    fn native_tls(&self, secure: bool) -> Result<rtmp::TlsConfig, String> {
        match (&self.native_tls, secure) {
            (Ok(tls), _) => Ok(tls.clone()),
            (Err(e), true) => Err(e.clone()),
            (Err(_), false) => Ok(self.plain_tls.clone()),
        }
    }

    /// What `dest` takes: its own list (streams file), else the operator's for its platform
    /// (`NEUSTREAM_PLATFORM_CODECS`), else the built-in table.
    fn accepts(&self, dest: &Destination) -> platforms::Accepts {
        if let Some(own) = dest.codecs() {
            return own.clone();
        }
        self.platform_codecs
            .iter()
            .find(|(p, _)| p == dest.platform())
            .map_or_else(
                || platforms::Accepts::of_platform(dest.platform()),
                |(_, a)| a.clone(),
            )
    }

    fn rtmp_options(&self) -> rtmp::Options {
        rtmp::Options {
            publish_timeout: output::CONNECT_TIMEOUT,
            ..rtmp::Options::default()
        }
    }
}

/// The native engine's TLS configurations from the relay's setting.
fn native_tls(tls: &Tls) -> (Result<rtmp::TlsConfig, String>, rtmp::TlsConfig) {
    let unverified = std::path::Path::new("/dev/null");
    let plain = rtmp::TlsConfig::new(false, unverified).expect("no CA bundle is read");
    let verified = match tls {
        Tls::Verify(ca) => rtmp::TlsConfig::new(true, std::path::Path::new(ca))
            .map_err(|e| format!("the CA bundle {ca} cannot be used: {e}")),
        Tls::Off => Ok(plain.clone()),
    };
    (verified, plain)
}

/// From the source to the relay's main loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SourceEvent {
    /// A source reached its first picture: spliced in (the end of a grace).
    Spliced,
    /// The source has been silent for [`source::SILENCE`]: destinations need the filler.
    Gap,
}

/// How the relay ended without an error.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The source stream ended (the publisher is gone) and no grace was configured.
    SourceEnded,
    /// No publisher came back within the grace.
    GraceExpired,
    /// SIGTERM or SIGINT.
    Stopped(&'static str),
}

type SourceTask = (JoinHandle<anyhow::Result<source::End>>, watch::Sender<bool>);

/// With a grace, a stalled source is given up (see [`source::STALL`]). `quiet`: its ffmpeg's
/// complaints go to debug level (a retry during a grace, which fails until a publisher is
/// back).
fn start_source(
    shared: &Arc<Shared>,
    url: &str,
    tracks: &[String],
    grace: Duration,
    quiet: bool,
) -> SourceTask {
    let (stop, stop_rx) = watch::channel(false);
    let shared = shared.clone();
    let url = url.to_owned();
    let tracks = tracks.to_vec();
    let stall = (!grace.is_zero()).then_some(source::STALL);
    let task = tokio::spawn(async move {
        let log = LineLog::new(&shared.key, None, Arc::new(Redactor::default()));
        log.set_quiet(quiet);
        source::run(&shared, &url, log, stop_rx, stall, &tracks).await
    });
    (task, stop)
}

/// During a grace, how often the ingest is read again for the publisher (it may be back
/// before any new `ready`: a stall that ends, MediaMTX back after a restart).
const SOURCE_RETRY: Duration = Duration::from_secs(1);

fn start_filler(shared: &Arc<Shared>) -> JoinHandle<()> {
    let shared = shared.clone();
    tokio::spawn(async move { filler::run(&shared).await })
}

fn start_output(shared: &Arc<Shared>, output: &Arc<Output>) -> JoinHandle<()> {
    tokio::spawn(output::supervise(shared.clone(), output.clone()))
}

pub async fn run(spec: StreamSpec, settings: Settings) -> anyhow::Result<Outcome> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;

    let key = spec.key.to_string();
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let (verified_tls, plain_tls) = native_tls(&settings.tls);
    if let (Engine::Native, Err(e)) = (settings.engine, &verified_tls) {
        if spec
            .destinations
            .iter()
            .any(|d| d.public_url().starts_with("rtmps://"))
        {
            warn!(stream_key = %key, "{key}: {e}: rtmps:// destinations will not be relayed");
        }
    }
    let shared = Arc::new(Shared {
        hub: Hub::new(&key),
        board: Board::new(&key, &spec.source_id),
        key: key.clone(),
        engine: settings.engine,
        ffmpeg: settings.ffmpeg.clone(),
        tls: settings.tls.clone(),
        native_tls: verified_tls,
        plain_tls,
        platform_codecs: settings.platform_codecs.clone(),
        stop_timeout: settings.stop_timeout,
        picture: watch::channel(false).0,
        events: events_tx,
        silence: Default::default(),
    });
    let outputs: Vec<Arc<Output>> = spec
        .destinations
        .iter()
        .enumerate()
        .map(|(i, d)| Output::new(i, d.clone()))
        .collect();
    shared.hub.set_outputs(outputs.clone());
    let mut supervisors: Vec<JoinHandle<()>> =
        outputs.iter().map(|o| start_output(&shared, o)).collect();
    let publisher = tokio::spawn(publish_state(shared.clone(), settings.state_dir.clone()));
    let (reload_tx, mut reloads) = mpsc::channel::<control::Reload>(4);
    let control = match &settings.state_dir {
        Some(dir) => match control::listen(dir) {
            Ok(listener) => Some(tokio::spawn(control::serve(listener, reload_tx))),
            Err(e) => {
                warn!(stream_key = %key, "{key}: no control socket in {} ({e}): `systemctl reload` will restart destinations", dir.display());
                None
            }
        },
        None => None,
    };

    let mut publisher_id = spec.source_id.clone();
    let mut source_url = spec.source_url.clone();
    // The publisher's tracks (MediaMTX's names), to say why the ingest gives nothing.
    let mut tracks = spec.tracks.clone();
    let mut source = Some(start_source(
        &shared,
        &source_url,
        &tracks,
        settings.grace,
        false,
    ));
    // The ingest will not give this publisher's stream: nothing is read until a new one.
    let mut unreadable = false;
    // The running source was started by a grace's retry, after the previous publisher was
    // gone: once it reads a stream, that stream is the new publisher's.
    let mut source_is_retry = false;
    // During a grace: when the ingest is read again.
    let mut retry: Option<tokio::time::Instant> = None;
    // The source to start when the running one has stopped (a new publisher).
    let mut next_source: Option<String> = None;
    let mut grace: Option<tokio::time::Instant> = None;
    let mut filler: Option<JoinHandle<()>> = None;
    let outcome: anyhow::Result<Outcome> = loop {
        let grace_at = grace.unwrap_or_else(tokio::time::Instant::now);
        let retry_at = retry.unwrap_or_else(tokio::time::Instant::now);
        tokio::select! {
            end = async { (&mut source.as_mut().expect("guarded").0).await }, if source.is_some() => {
                source = None;
                // Whatever comes next is spliced onto the timeline; between sources the
                // grace's filler may inject.
                shared.hub.new_source();
                let end = match end {
                    Ok(end) => end,
                    Err(e) => Err(anyhow::anyhow!("the source task failed: {e}")),
                };
                if let Some(url) = next_source.take() {
                    source = Some(start_source(&shared, &url, &tracks, settings.grace, false));
                    source_is_retry = false;
                    continue;
                }
                let end = match end {
                    Ok(end) => end,
                    Err(e) => break Err(e),
                };
                if let source::End::Unreadable(problem) = &end {
                    // Reading again would fail again: say so once, and wait for a publisher
                    // that sends something else (or for the unpublish hook's stop). The
                    // relay is up and says why it relays nothing.
                    error!(stream_key = %key, "{key}: publisher {publisher_id}: {problem}; nothing is relayed until the streamer publishes again with that changed");
                    unreadable = true;
                    shared.board.unreadable(problem);
                    notify::ready();
                    (retry, grace) = (None, None);
                    if let Some(filler) = filler.take() {
                        filler.abort();
                    }
                    continue;
                }
                if settings.grace.is_zero() || matches!(end, source::End::Stopped) {
                    break source_outcome(&key, end);
                }
                retry = Some(tokio::time::Instant::now() + SOURCE_RETRY);
                if grace.is_some() {
                    continue; // a retry that found no publisher yet
                }
                let until = tokio::time::Instant::now() + settings.grace;
                grace = Some(until);
                shared.board.grace(state::unix_now() + settings.grace.as_secs());
                info!(stream_key = %key, "{key}: the publisher is gone ({}); keeping every destination for {:?} for it to come back",
                      describe_end(&end), settings.grace);
                if filler.as_ref().is_none_or(|f| f.is_finished()) {
                    filler = Some(start_filler(&shared));
                }
            }
            Some(event) = events.recv() => match event {
                SourceEvent::Gap if !settings.grace.is_zero() => {
                    if filler.as_ref().is_none_or(|f| f.is_finished()) {
                        info!(stream_key = %key, "{key}: nothing from the publisher for {:?}; destinations get the last picture meanwhile", source::SILENCE);
                        filler = Some(start_filler(&shared));
                    }
                }
                SourceEvent::Gap => {}
                SourceEvent::Spliced => {
                    if !settings.grace.is_zero() {
                        // Made now, so that a drop gets silence at once.
                        filler::prepare(&shared);
                    }
                    if grace.take().is_some() {
                        retry = None;
                        info!(stream_key = %key, "{key}: publisher {publisher_id} is live: the grace is over");
                    }
                }
            },
            _ = tokio::time::sleep_until(retry_at), if retry.is_some() && source.is_none() => {
                retry = None;
                source = Some(start_source(&shared, &source_url, &tracks, settings.grace, true));
                source_is_retry = true;
            }
            Some(reload) = reloads.recv() => {
                let result = apply(&shared, &mut supervisors, &reload.spec);
                if result.is_ok() && reload.spec.source_id != publisher_id {
                    let previous = std::mem::take(&mut publisher_id);
                    publisher_id = reload.spec.source_id.clone();
                    let same_url = source_url == reload.spec.source_url;
                    source_url = reload.spec.source_url.clone();
                    tracks = reload.spec.tracks.clone();
                    shared.board.publisher(&publisher_id);
                    if std::mem::take(&mut unreadable) {
                        shared.board.source(SourcePhase::Starting);
                    }
                    let reading_new = source_is_retry && grace.is_none() && !shared.hub.splicing();
                    match &source {
                        // A grace's retry that found a publisher reads the new one already:
                        // switching would only freeze the picture until its next keyframe.
                        Some(_) if reading_new && same_url => {
                            info!(stream_key = %key, "{key}: new publisher {publisher_id} (was {previous}): the source reads it already, destinations stay connected");
                        }
                        Some((_, stop)) => {
                            info!(stream_key = %key, "{key}: new publisher {publisher_id} (was {previous}): switching the source, destinations stay connected");
                            stop.send_replace(true);
                            next_source = Some(source_url.clone());
                            // Until the next source's first keyframe, the last picture.
                            if !settings.grace.is_zero() {
                                shared.hub.new_source();
                                if filler.as_ref().is_none_or(|f| f.is_finished()) {
                                    filler = Some(start_filler(&shared));
                                }
                            }
                        }
                        None => {
                            info!(stream_key = %key, "{key}: new publisher {publisher_id} (was {previous}): reading it, destinations stay connected");
                            retry = None;
                            source = Some(start_source(&shared, &source_url, &tracks, settings.grace, false));
                            source_is_retry = false;
                        }
                    }
                }
                let _ = reload.done.send(result);
            }
            _ = tokio::time::sleep_until(grace_at), if grace.is_some() => {
                info!(stream_key = %key, "{key}: no publisher within {:?}; ending every destination", settings.grace);
                break Ok(Outcome::GraceExpired);
            }
            _ = term.recv() => break Ok(Outcome::Stopped("SIGTERM")),
            _ = int.recv() => break Ok(Outcome::Stopped("SIGINT")),
        }
    };

    notify::stopping();
    if let Ok(Outcome::Stopped(name)) = &outcome {
        info!(stream_key = %key, "{key}: {name} received; ending every destination");
    }
    if let Some(control) = control {
        control.abort();
    }
    if let Some(filler) = filler {
        filler.abort();
    }
    if let Some((task, stop)) = source.take() {
        stop.send_replace(true);
        let _ = tokio::time::timeout(settings.stop_timeout + Duration::from_secs(1), task).await;
    }
    shared.board.source(SourcePhase::Ended);
    for o in shared.hub.outputs() {
        o.stop();
    }
    // Each session kills its ffmpeg after stop_timeout; this bounds the whole.
    let all = futures_util::future::join_all(supervisors);
    if tokio::time::timeout(settings.stop_timeout + Duration::from_secs(2), all)
        .await
        .is_err()
    {
        warn!(stream_key = %key, "{key}: destinations still stopping after {:?}", settings.stop_timeout);
    }
    publisher.abort();
    publish_once(&shared, settings.state_dir.as_deref());
    if let Some(dir) = &settings.state_dir {
        let _ = std::fs::remove_file(dir.join(control::SOCKET));
    }
    outcome
}

fn describe_end(end: &source::End) -> String {
    match end {
        source::End::Finished => "its stream ended".into(),
        source::End::Failed(failure) => failure.to_string(),
        source::End::Stopped => "stopped".into(),
        source::End::Stalled => format!("nothing read for {:?}", source::STALL),
        source::End::Unreadable(problem) => problem.clone(),
    }
}

fn source_outcome(key: &str, end: source::End) -> anyhow::Result<Outcome> {
    match end {
        source::End::Stopped => Ok(Outcome::Stopped("stop")),
        source::End::Finished | source::End::Stalled => Ok(Outcome::SourceEnded),
        source::End::Failed(failure) => {
            anyhow::bail!("{key}: {failure}; systemd restarts the relay")
        }
        source::End::Unreadable(problem) => anyhow::bail!("{key}: {problem}"),
    }
}

/// Applies a new list of destinations: unchanged ones are left alone, removed ones closed
/// cleanly, added (or changed: a changed URL or key is a new destination) ones started.
fn apply(
    shared: &Arc<Shared>,
    supervisors: &mut Vec<JoinHandle<()>>,
    spec: &StreamSpec,
) -> Result<String, String> {
    if spec.key.as_str() != shared.key {
        return Err(format!(
            "the description is for stream {}, this relay is for {}",
            spec.key, shared.key
        ));
    }
    if spec.destinations.is_empty() {
        return Err("no destinations: stop the relay instead".into());
    }
    let Diff {
        kept,
        added,
        removed,
        next,
    } = diff(&shared.hub.outputs(), &spec.destinations);
    for o in &removed {
        info!(stream_key = %shared.key, destination_index = o.index(), destination_platform = o.dest.platform(),
              "{}: destination {} ({}) removed", shared.key, o.index(), o.dest.platform());
        o.stop();
    }
    shared.hub.set_outputs(next.clone());
    for o in &added {
        info!(stream_key = %shared.key, destination_index = o.index(), destination_platform = o.dest.platform(),
              "{}: destination {} ({}) added: {}", shared.key, o.index(), o.dest.platform(), o.dest.redacted());
        supervisors.push(start_output(shared, o));
    }
    supervisors.retain(|s| !s.is_finished());
    shared.board.touch();
    Ok(format!(
        "{kept} kept, {} added, {} removed",
        added.len(),
        removed.len()
    ))
}

/// How a new list of destinations compares with the running one.
struct Diff {
    kept: usize,
    added: Vec<Arc<Output>>,
    removed: Vec<Arc<Output>>,
    /// The new list, in order: kept and added outputs.
    next: Vec<Arc<Output>>,
}

/// Matches the running outputs with a new list, destination by destination.
fn diff(running: &[Arc<Output>], wanted: &[Destination]) -> Diff {
    let mut left: Vec<Arc<Output>> = running.to_vec();
    let mut next = Vec::with_capacity(wanted.len());
    let mut added = Vec::new();
    let mut kept = 0;
    for (i, d) in wanted.iter().enumerate() {
        match left.iter().position(|o| o.dest == *d) {
            Some(pos) => {
                next.push(left.remove(pos));
                kept += 1;
            }
            None => {
                let o = Output::new(i, d.clone());
                added.push(o.clone());
                next.push(o);
            }
        }
    }
    Diff {
        kept,
        added,
        removed: left,
        next,
    }
}

async fn publish_state(shared: Arc<Shared>, dir: Option<PathBuf>) {
    loop {
        tokio::select! {
            _ = shared.board.changed() => {
                // Let a burst of changes (several destinations at once) settle into one line.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            _ = tokio::time::sleep(STATE_EVERY) => {}
        }
        publish_once(&shared, dir.as_deref());
    }
}

fn publish_once(shared: &Shared, dir: Option<&std::path::Path>) {
    let outputs = shared.hub.outputs();
    let mut states: Vec<_> = outputs.iter().map(|o| o.state()).collect();
    let (status, json) = shared.board.render(&mut states, &shared.hub.shape());
    for (o, s) in outputs.iter().zip(&states) {
        o.merge_rate(s);
    }
    notify::status(&status);
    if let Some(dir) = dir {
        if let Err(e) = state::write_file(dir, &json) {
            warn!(stream_key = %shared.key, "{}: failed to write the state file in {}: {e}",
                  shared.key, dir.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(key: &str) -> Destination {
        Destination::from_parts("custom", "rtmp://h/live", key).unwrap()
    }

    #[test]
    fn a_new_list_keeps_what_is_unchanged() {
        let running: Vec<Arc<Output>> = ["a", "b", "c"]
            .iter()
            .enumerate()
            .map(|(i, k)| Output::new(i, d(k)))
            .collect();
        let Diff {
            kept,
            added,
            removed,
            next,
        } = diff(&running, &[d("c"), d("a"), d("x")]);
        assert_eq!(kept, 2);
        assert!(Arc::ptr_eq(&next[0], &running[2]) && Arc::ptr_eq(&next[1], &running[0]));
        assert_eq!(added.len(), 1);
        assert!(Arc::ptr_eq(&next[2], &added[0]));
        assert_eq!(removed.len(), 1);
        assert!(Arc::ptr_eq(&removed[0], &running[1]));
        // A changed key is a new destination.
        let changed = diff(&running, &[d("a"), d("b"), d("c2")]);
        assert_eq!(
            (changed.kept, changed.added.len(), changed.removed.len()),
            (2, 1, 1)
        );
    }
}
