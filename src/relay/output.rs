//! One destination's supervisor: runs its ffmpeg (FLV from our queue on stdin, published to
//! the destination), tells how a session ended, and starts the next one after a backoff. A
//! destination fails and recovers alone; the source and the others never wait for it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::ChildStdin;
use tokio::sync::{mpsc, watch};
use tracing::{error, info, warn};

use super::backoff::{self, Backoff};
use super::ffmpeg::{self, Signal};
use super::flv::{Tag, FILE_HEADER};
use super::process::{self, LineLog};
use super::queue::Queue;
use super::state::{Board, DestinationState, ErrorClass};
use super::Shared;
use crate::destination::{Destination, Redactor};

/// A session that ends this soon after the server accepted the publish was refused (servers
/// that check a key after `publish` close the connection at once).
const REFUSED_WITHIN: Duration = Duration::from_secs(3);
/// No publish within this long: the attempt fails (a server that accepts TCP and never
/// answers RTMP).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// After this many consecutive failures, ffmpeg's own lines go to debug level: one line per
/// attempt says what happened.
const LOUD_FAILURES: u32 = 3;
/// While a failed destination's port is closed, how often it is tried (a TCP connect, no RTMP,
/// no key) during the backoff wait, so that it is back within a fraction of a second of
/// accepting connections again.
const PROBE_EVERY: Duration = Duration::from_millis(100);
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// How one session ended.
struct Ended {
    /// None when the relay stopped it.
    class: Option<ErrorClass>,
    /// How long the server had accepted the publish.
    live_for: Duration,
}

/// One destination: its queue, its state, and the switch that stops it.
pub struct Output {
    pub dest: Destination,
    pub queue: Queue,
    state: Mutex<DestinationState>,
    stop: watch::Sender<bool>,
    /// Its own key is all its ffmpeg could print.
    redactor: Arc<Redactor>,
}

impl Output {
    pub fn new(index: usize, dest: Destination) -> Arc<Self> {
        Arc::new(Output {
            state: Mutex::new(DestinationState::new(index, dest.platform())),
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
        state
    }

    /// Applies `f` to the state; a visible change wakes the state publisher.
    fn update(&self, board: &Board, f: impl FnOnce(&mut DestinationState)) {
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
    loop {
        if *stop.borrow() {
            break;
        }
        output.update(board, DestinationState::connecting);
        log.set_quiet(backoff.failures() >= LOUD_FAILURES);
        let ended = session(&shared, &output, &log, stop.clone()).await;
        let Some(class) = ended.class else { break };
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
            "{key}: destination {index} ({platform}) {} (attempt {attempt}, {} in a row); \
             next attempt in {:.1} s",
            describe(class, ended.live_for),
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
        ErrorClass::Timeout => format!(
            "did not accept the publish within {} s",
            CONNECT_TIMEOUT.as_secs()
        ),
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

async fn session(
    shared: &Shared,
    output: &Output,
    log: &LineLog,
    mut stop: watch::Receiver<bool>,
) -> Ended {
    let dest = &output.dest;
    let queue = &output.queue;
    let index = output.index();
    let key = shared.key.as_str();
    let preset = ffmpeg::preset(dest, &shared.tls);
    let args = ffmpeg::destination_args(dest);
    let mut child = match process::spawn(process::Spec {
        ffmpeg: &shared.ffmpeg,
        args: &args,
        preset: Some(&preset),
        stdin: true,
        stdout: false,
    }) {
        Ok(child) => child,
        Err(e) => {
            error!(
                stream_key = key,
                destination_index = index,
                "{key}: destination {index}: failed to run ffmpeg ({}): {e}",
                shared.ffmpeg.display()
            );
            return Ended {
                class: Some(ErrorClass::Unreachable),
                live_for: Duration::ZERO,
            };
        }
    };
    output.state.lock().unwrap().pid = child.id();
    let stdin = child.stdin.take().expect("stdin is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    let (signals, mut signal_rx) = mpsc::unbounded_channel();
    let lines = {
        let log = log.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(s) = log.line(&line) {
                    let _ = signals.send(s);
                }
            }
        })
    };

    shared.hub.attach(output);
    let writer = write_queue(output, stdin);
    tokio::pin!(writer);
    let started = Instant::now();
    let mut published: Option<Instant> = None;
    let mut failure: Option<Signal> = None;
    let mut writer_done = false;
    let mut stopping = false;
    let mut timed_out = false;
    // When ffmpeg is killed: it has not published in time, or not stopped in time.
    let mut kill_at = Some(tokio::time::Instant::from_std(started + CONNECT_TIMEOUT));
    let status = loop {
        tokio::select! {
            status = child.wait() => break status,
            Some(signal) = signal_rx.recv() => match signal {
                Signal::Publishing => {
                    published = Some(Instant::now());
                    output.update(&shared.board, DestinationState::live);
                    if !stopping {
                        kill_at = None;
                    }
                }
                other => failure = Some(other),
            },
            _ = &mut writer, if !writer_done => writer_done = true,
            _ = stop.wait_for(|s| *s), if !stopping => {
                // Closing the queue ends the writer and so ffmpeg's input: ffmpeg writes its
                // trailer and closes the publish cleanly (FCUnpublish, deleteStream).
                stopping = true;
                queue.close();
                kill_at = Some(tokio::time::Instant::now() + shared.stop_timeout);
            }
            _ = tokio::time::sleep_until(kill_at.unwrap_or_else(tokio::time::Instant::now)),
                if kill_at.is_some() => {
                if !stopping {
                    timed_out = true;
                }
                let _ = child.start_kill();
                kill_at = None;
            }
        }
    };
    queue.close();
    output.state.lock().unwrap().pid = None;
    // The last lines (the reason of a failure) come after the exit: read them all.
    let _ = tokio::time::timeout(Duration::from_secs(1), lines).await;
    while let Ok(signal) = signal_rx.try_recv() {
        if signal != Signal::Publishing {
            failure = Some(signal);
        }
    }
    let live_for = published.map_or(Duration::ZERO, |at| at.elapsed());
    if stopping {
        let how = match &status {
            Ok(s) if s.success() => "closed cleanly".to_string(),
            Ok(s) => format!("ended ({s})"),
            Err(e) => format!("ended ({e})"),
        };
        info!(
            stream_key = key,
            destination_index = index,
            destination_platform = dest.platform(),
            "{key}: destination {index} ({}) {how}",
            dest.platform()
        );
        return Ended {
            class: None,
            live_for,
        };
    }
    let class = match failure {
        Some(Signal::Unreachable) => ErrorClass::Unreachable,
        Some(Signal::Certificate) => ErrorClass::Certificate,
        Some(Signal::Tls) => ErrorClass::Tls,
        _ if timed_out => ErrorClass::Timeout,
        _ if published.is_none() || live_for < REFUSED_WITHIN => ErrorClass::Refused,
        _ => ErrorClass::Dropped,
    };
    Ended {
        class: Some(class),
        live_for,
    }
}

/// Feeds ffmpeg: the FLV header, then the queue's tags as they come, in one write per batch.
/// Ends (closing ffmpeg's input) when the queue is closed, or when ffmpeg stops reading.
async fn write_queue(output: &Output, mut stdin: ChildStdin) {
    let queue = &output.queue;
    if stdin.write_all(&FILE_HEADER).await.is_err() {
        return;
    }
    let mut tags: Vec<Tag> = Vec::new();
    let mut buf: Vec<u8> = Vec::with_capacity(256 * 1024);
    while queue.take(&mut tags).await {
        buf.clear();
        for tag in tags.drain(..) {
            tag.write_to(&mut buf);
        }
        if stdin.write_all(&buf).await.is_err() {
            return; // ffmpeg exited: its exit status tells why
        }
        output.state.lock().unwrap().bytes += buf.len() as u64;
    }
}
