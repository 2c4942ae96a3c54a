//! One destination's supervisor: runs its sessions (the native RTMP client, [`super::push_native`],
//! or an ffmpeg, [`super::push_ffmpeg`], as the engine says), tells how each ended, and starts
//! the next one after a backoff. A destination fails and recovers alone; the source and the
//! others never wait for it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tracing::{info, warn};

use super::backoff::{self, Backoff};
use super::process::LineLog;
use super::queue::Queue;
use super::state::{Board, DestinationState, ErrorClass};
use super::tcpinfo::Counter;
use super::{push_ffmpeg, push_native, Engine, Shared};
use crate::destination::{Destination, Redactor};
use crate::platforms;

/// A session that ends this soon after the server accepted the publish was refused (servers
/// that check a key after `publish` close the connection at once).
pub const REFUSED_WITHIN: Duration = Duration::from_secs(3);
/// No publish within this long: the attempt fails (a server that accepts TCP and never
/// answers RTMP).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// After this many consecutive failures, ffmpeg's own lines go to debug level: one line per
/// attempt says what happened.
const LOUD_FAILURES: u32 = 3;
/// While a failed destination's port is closed, how often it is tried (a TCP connect, no RTMP,
/// no key) during the backoff wait, so that it is back within a fraction of a second of
/// accepting connections again.
const PROBE_EVERY: Duration = Duration::from_millis(100);
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// How one session ended.
pub struct Ended {
    /// None when the relay stopped it.
    pub class: Option<ErrorClass>,
    /// How long the server had accepted the publish.
    pub live_for: Duration,
    /// What the server or the connection said, when the engine knows (never a key).
    pub detail: Option<String>,
}

/// One destination: its queue, its state, and the switch that stops it.
pub struct Output {
    pub dest: Destination,
    pub queue: Queue,
    pub(super) state: Mutex<DestinationState>,
    /// Its connections' TCP counters, all sessions (native engine).
    pub(super) tcp: Mutex<Counter>,
    stop: watch::Sender<bool>,
    /// Its own key is all its ffmpeg could print.
    redactor: Arc<Redactor>,
}

impl Output {
    pub fn new(index: usize, dest: Destination) -> Arc<Self> {
        Arc::new(Output {
            state: Mutex::new(DestinationState::new(index, dest.platform())),
            tcp: Mutex::new(Counter::default()),
            redactor: Arc::new(Redactor::new([&dest])),
            queue: Queue::new(),
            stop: watch::channel(false).0,
            dest,
        })
    }

    /// Its position in the stream's current list of destinations.
    pub fn index(&self) -> usize {
        self.state.lock().unwrap().index
    }

    pub fn set_index(&self, index: usize) {
        self.state.lock().unwrap().index = index;
    }

    pub fn state(&self) -> DestinationState {
        let mut state = self.state.lock().unwrap().clone();
        state.queue_overflows = self.queue.overflows();
        state.tcp = self.tcp.lock().unwrap().totals();
        state
    }

    /// Applies `f` to the state; a visible change wakes the state publisher.
    pub(super) fn update(&self, board: &Board, f: impl FnOnce(&mut DestinationState)) {
        let mut state = self.state.lock().unwrap();
        let before = state.visible();
        f(&mut state);
        let changed = state.visible() != before;
        drop(state);
        if changed {
            board.touch();
        }
    }

    /// Keeps the rate measurement in the published copy: the copy renders, this one counts.
    pub fn merge_rate(&self, rendered: &DestinationState) {
        let mut state = self.state.lock().unwrap();
        state.bitrate = rendered.bitrate;
        state.rate_mark = rendered.rate_mark;
    }

    /// Ends this destination: its ffmpeg closes the publish cleanly.
    pub fn stop(&self) {
        self.stop.send_replace(true);
    }
}

pub async fn supervise(shared: Arc<Shared>, output: Arc<Output>) {
    let mut stop = output.stop.subscribe();
    let dest = &output.dest;
    let platform = dest.platform();
    let key = shared.key.as_str();
    let board = &shared.board;
    let mut picture = shared.picture.subscribe();
    tokio::select! {
        _ = picture.wait_for(|p| *p) => {}
        _ = stop.wait_for(|s| *s) => {
            output.update(board, DestinationState::stopped);
            return;
        }
    }
    let seed =
        (u64::from(std::process::id()) << 16) ^ (output.index() as u64) ^ super::state::unix_now();
    let mut backoff = Backoff::new(backoff::FIRST, backoff::CAP, backoff::RESET_AFTER, seed);
    let log = LineLog::new(
        key,
        Some((output.index(), platform)),
        output.redactor.clone(),
    );
    let accepts = shared.accepts(dest);
    let mut codecs = shared.hub.codecs();
    let mut told: Option<String> = None;
    loop {
        if *stop.borrow() {
            break;
        }
        // Never a broadcast with a track missing: a destination that cannot take the
        // stream's codecs gets nothing until they change (a new publisher).
        let stream = codecs.borrow_and_update().clone();
        if let Err(mismatch) = platforms::check(platform, &accepts, &stream) {
            if told.as_deref() != Some(mismatch.0.as_str()) {
                let index = output.index();
                warn!(
                    stream_key = key,
                    destination_index = index,
                    destination_platform = platform,
                    "{key}: destination {index} ({platform}) is not sent the stream: {mismatch} \
                     (no transcoding)"
                );
                told = Some(mismatch.0.clone());
            }
            output.update(board, |s| s.incompatible(mismatch.0));
            tokio::select! {
                _ = codecs.changed() => continue,
                _ = stop.wait_for(|s| *s) => break,
            }
        }
        told = None;
        output.update(board, DestinationState::connecting);
        log.set_quiet(backoff.failures() >= LOUD_FAILURES);
        let ended = match shared.engine {
            Engine::Native => {
                push_native::session(&shared, &output, &log, stop.clone(), &accepts).await
            }
            Engine::Ffmpeg => push_ffmpeg::session(&shared, &output, &log, stop.clone()).await,
        };
        // Ended on purpose: a stop, or codecs the destination cannot take (checked above).
        let Some(class) = ended.class else { continue };
        if ended.live_for >= backoff::RESET_AFTER {
            output.update(board, DestinationState::healthy);
        }
        let wait = backoff.next(ended.live_for);
        output.update(board, |s| s.failed(class, wait));
        let (index, attempt) = {
            let s = output.state.lock().unwrap();
            (s.index, s.attempts)
        };
        warn!(
            stream_key = key,
            destination_index = index,
            destination_platform = platform,
            error_class = class.as_str(),
            "{key}: destination {index} ({platform}) {}{} (attempt {attempt}, {} in a row); \
             next attempt in {:.1} s",
            describe(class, ended.live_for),
            ended.detail.map(|d| format!(": {d}")).unwrap_or_default(),
            backoff.failures(),
            wait.as_secs_f64()
        );
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = reopened(dest) => {
                info!(
                    stream_key = key, destination_index = index, destination_platform = platform,
                    "{key}: destination {index} ({platform}) accepts connections again"
                );
            }
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    output.update(board, DestinationState::stopped);
}

fn describe(class: ErrorClass, live_for: Duration) -> String {
    match class {
        ErrorClass::Refused => "refused the publish (connection accepted, then closed: check \
                                the destination's stream key)"
            .into(),
        ErrorClass::Unreachable => "is unreachable (no TCP connection)".into(),
        ErrorClass::Certificate => "presented a TLS certificate that is not trusted or does \
                                    not name its host; the key was not sent"
            .into(),
        ErrorClass::Tls => "failed the TLS handshake; the key was not sent".into(),
        ErrorClass::Dropped => format!(
            "dropped the connection after {:.0} s of streaming",
            live_for.as_secs_f64()
        ),
        ErrorClass::Timeout if live_for.is_zero() => format!(
            "did not accept the publish within {} s",
            CONNECT_TIMEOUT.as_secs()
        ),
        ErrorClass::Timeout => format!(
            "stopped taking data after {:.0} s of streaming",
            live_for.as_secs_f64()
        ),
        ErrorClass::Protocol => "broke the RTMP protocol or the relay's limits".into(),
    }
}

/// Resolves when the destination's port, closed now (its server is down or restarting),
/// accepts TCP connections again; never when it accepts now (a server that refused the
/// publish: that one waits out its backoff).
async fn reopened(dest: &Destination) {
    let (host, port) = dest.host_port();
    let accepts = || async {
        matches!(
            tokio::time::timeout(
                PROBE_TIMEOUT,
                tokio::net::TcpStream::connect((host.as_str(), port))
            )
            .await,
            Ok(Ok(_))
        )
    };
    if accepts().await {
        return std::future::pending().await;
    }
    loop {
        tokio::time::sleep(PROBE_EVERY).await;
        if accepts().await {
            return;
        }
    }
}
