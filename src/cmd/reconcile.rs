//! `neustream reconcile`: ends every recorded session whose publisher is gone and sends every
//! pending stream-end until the Control Plane confirms it.
//!
//! Run by neustream-reconcile.timer (every minute), and by mediamtx.service when MediaMTX
//! stops or fails (ExecStopPost=) and before it starts (ExecStartPre=, so at boot too), both
//! with `--mediamtx-stopped`. Idempotent and safe at any time: every key is examined and its
//! stream-end sent under the same per-key lock as the hooks, after re-reading its record.
//!
//! The rule that keeps stream-ends exactly once per session, although the Control Plane's
//! stream-end is per key: under the key's lock, every publish the Control Plane accepted has
//! replaced the key's record with a `live` one (`ready` saves it right after the 200). So an
//! `ending` record read under the lock is the end of the session the Control Plane holds,
//! never of a newer one, and a `live` record is ended only when MediaMTX shows no publisher on
//! the key at all (or is known to be stopped). The record goes only once the end is confirmed.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use tokio::time::Instant;
use tracing::{error, info, warn};

use super::hook::{self, send_end};
use crate::authority::Authority;
use crate::cli::ReconcileArgs;
use crate::envfile::{self, StreamSpec};
use crate::sessions::{Session, SessionDir, State};
use crate::stream_key::StreamKey;
use crate::streamdir::{KeyLock, StreamDir};
use crate::systemd::{self, Systemd};

/// Longest wait for a key's lock (a hook holds it for a few seconds at most).
const LOCK_WAIT: Duration = Duration::from_secs(5);
/// Budget of one stream-end attempt (the client retries inside it with doubling waits).
const ATTEMPT: Duration = Duration::from_secs(5);
/// Waits between delivery rounds double from the first to the last.
const FIRST_ROUND_WAIT: Duration = Duration::from_secs(1);
const MAX_ROUND_WAIT: Duration = Duration::from_secs(8);

/// Whether the key's publisher is live, as MediaMTX's API tells.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Publisher {
    /// The recorded publisher (or any publisher, when the record does not know which).
    Recorded,
    /// Another publisher: a reconnect whose `ready` will take the record over.
    Newer(String),
    /// Nobody publishes the key.
    Gone,
    /// MediaMTX's API could not be asked.
    Unknown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// The session goes on.
    Keep,
    /// The session is over: stop its relay, make its stream-end pending, send it.
    End(&'static str),
    /// Its stream-end is pending already: send it.
    Send,
}

/// What becomes of a recorded session. Pure, so that every case is tested below.
///
/// Issue 10 (reconnect grace) fits here: a `Live` session whose publisher is `Gone` but whose
/// relay is still inside its grace must be kept (the relay ends itself when the grace runs out,
/// and the next run then finds it `Gone` with no grace left); that needs the relay's grace as a
/// further input of this function, and nothing else here changes.
fn verdict(state: State, publisher: &Publisher, mediamtx_stopped: bool) -> Verdict {
    match (state, publisher) {
        (State::Ending, _) => Verdict::Send,
        (State::Live, _) if mediamtx_stopped => Verdict::End("MediaMTX is not running"),
        (State::Live, Publisher::Gone) => Verdict::End("no publisher left in MediaMTX"),
        (State::Live, Publisher::Recorded | Publisher::Newer(_) | Publisher::Unknown) => {
            Verdict::Keep
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Live,
    Confirmed,
    Pending,
    /// Nothing (left) to do for this key.
    None,
    /// A hook held the key's lock all along: the next run looks again.
    Busy,
}

struct Reconciler {
    authority: Authority,
    dir: StreamDir,
    sessions: SessionDir,
    systemd: Option<Systemd>,
    unit_timeout: Duration,
    deadline: Instant,
}

pub fn run(args: ReconcileArgs) -> anyhow::Result<()> {
    super::runtime()?.block_on(async {
        // A safety net above the bounds of every step: a timer run never piles up.
        let limit = args.timeout + args.settings.unit_timeout + Duration::from_secs(5);
        match tokio::time::timeout(limit, reconcile(&args)).await {
            Ok(result) => result,
            Err(_) => anyhow::bail!(
                "reconcile stopped after {limit:?}; what is left stays queued for the next run"
            ),
        }
    })
}

async fn reconcile(args: &ReconcileArgs) -> anyhow::Result<()> {
    let s = &args.settings;
    let authority = super::hook::authority(s)?;
    let systemd = match Systemd::connect(s.unit_timeout).await {
        Ok(systemd) => Some(systemd),
        Err(e) => {
            error!("{e}; relays of ended sessions cannot be stopped by this run");
            None
        }
    };
    let r = Reconciler {
        authority,
        dir: StreamDir::open(&s.runtime_dir)?,
        sessions: hook::open_sessions(s)?,
        systemd,
        unit_timeout: s.unit_timeout,
        deadline: Instant::now() + args.timeout,
    };
    let live = live_publishers(args).await;

    // Every key with a record, and every key with an env file (a stream the runtime directory
    // remembers that has no record: one started before records existed).
    let mut keys: BTreeMap<String, StreamKey> = BTreeMap::new();
    for key in r.sessions.keys()?.into_iter().chain(r.dir.keys()?) {
        keys.insert(key.to_string(), key);
    }
    let mut outcomes: Vec<(StreamKey, Outcome)> = Vec::new();
    for key in keys.into_values() {
        let outcome = match r.examine(&key, live.as_ref(), args).await {
            Ok(outcome) => outcome,
            Err(e) => {
                error!(stream_key = %key, "{key}: {e:#}");
                Outcome::Pending
            }
        };
        outcomes.push((key, outcome));
    }
    if args.mediamtx_stopped {
        r.stop_every_relay().await;
    }

    // Pending stream-ends, in rounds with doubling waits, while the run's time lasts.
    let mut pending: Vec<StreamKey> = outcomes
        .iter()
        .filter(|(_, o)| *o == Outcome::Pending)
        .map(|(k, _)| k.clone())
        .collect();
    let mut wait = FIRST_ROUND_WAIT;
    while !pending.is_empty() && r.left() > wait + Duration::from_secs(1) {
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(MAX_ROUND_WAIT);
        let mut still = Vec::new();
        for key in pending {
            match r.retry(&key).await {
                Ok(Outcome::Pending) | Err(_) => still.push(key),
                Ok(_) => {}
            }
        }
        pending = still;
    }

    let count = |o| outcomes.iter().filter(|(_, x)| *x == o).count();
    let first_pending = count(Outcome::Pending);
    info!(
        "reconcile: {} live session(s) kept, {} stream end(s) confirmed, {} pending, {} key(s) \
         busy",
        count(Outcome::Live),
        count(Outcome::Confirmed) + first_pending - pending.len(),
        pending.len(),
        count(Outcome::Busy)
    );
    if !pending.is_empty() {
        let list: Vec<String> = pending.iter().map(|k| k.to_string()).collect();
        anyhow::bail!(
            "{} stream end(s) still unconfirmed by the Control Plane after {:?} ({}); they stay \
             queued in {} for the next run",
            pending.len(),
            args.timeout,
            list.join(", "),
            s.state_dir.join("sessions").display()
        );
    }
    Ok(())
}

/// MediaMTX's publishers by stream key (the last segment of their path), or None when it
/// cannot be asked (then no live session is ended: only pending stream-ends are sent).
async fn live_publishers(args: &ReconcileArgs) -> Option<HashMap<String, String>> {
    if args.mediamtx_stopped {
        return Some(HashMap::new());
    }
    let Some(api) = &args.settings.mediamtx_api_url else {
        warn!(
            "NEUSTREAM_MEDIAMTX_API_URL is not set: cannot tell which streams are live; only \
             pending stream ends are sent"
        );
        return None;
    };
    match crate::mediamtx::publishers(api).await {
        Ok(paths) => Some(
            paths
                .into_iter()
                .map(|(path, id)| (path.rsplit('/').next().unwrap_or("").to_string(), id))
                .collect(),
        ),
        Err(e) => {
            warn!(
                "cannot tell which streams are live ({e}); live sessions are left alone, only \
                 pending stream ends are sent"
            );
            None
        }
    }
}

/// The key's publisher in MediaMTX's answer, compared with the recorded one.
fn publisher_of(
    key: &StreamKey,
    session: &Session,
    live: Option<&HashMap<String, String>>,
) -> Publisher {
    match live {
        None => Publisher::Unknown,
        Some(live) => match live.get(key.as_str()) {
            None => Publisher::Gone,
            Some(id) if session.source_id.is_empty() || *id == session.source_id => {
                Publisher::Recorded
            }
            Some(id) => Publisher::Newer(id.clone()),
        },
    }
}

impl Reconciler {
    fn left(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    async fn lock(&self, key: &StreamKey) -> anyhow::Result<Option<KeyLock>> {
        let lock = self.dir.lock_within(key, LOCK_WAIT.min(self.left()))?;
        if lock.is_none() {
            warn!(stream_key = %key, "{key}: busy (a hook holds its lock); next run");
        }
        Ok(lock)
    }

    /// Decides and acts on one key, under its lock.
    async fn examine(
        &self,
        key: &StreamKey,
        live: Option<&HashMap<String, String>>,
        args: &ReconcileArgs,
    ) -> anyhow::Result<Outcome> {
        let mediamtx_stopped = args.mediamtx_stopped;
        let Some(lock) = self.lock(key).await? else {
            return Ok(Outcome::Busy);
        };
        let env_owner = self.dir.read(key)?.map(|text| {
            envfile::parse(&text)
                .and_then(|v| StreamSpec::from_vars(&v))
                .map(|spec| spec.source_id)
                .unwrap_or_default()
        });
        let (session, corrupt) = self.sessions.load_or_recover(key)?;
        if let Some(e) = corrupt {
            warn!(stream_key = %key, "{key}: {e}");
        }
        let mut session = match (session, &env_owner) {
            (Some(session), _) => session,
            (None, Some(owner)) => Session::unknown(key, owner),
            (None, None) => {
                self.dir.unlock(key, lock)?;
                return Ok(Outcome::None);
            }
        };
        let mut publisher = publisher_of(key, &session, live);
        let mut decision = verdict(session.state, &publisher, mediamtx_stopped);
        if matches!(decision, Verdict::End(_)) && !mediamtx_stopped {
            // MediaMTX was asked before this key's lock was taken: a publisher may have come
            // (and its `ready` been accepted) since. Ask again, under the lock, before ending.
            let now = live_publishers(args).await;
            publisher = publisher_of(key, &session, now.as_ref());
            decision = verdict(session.state, &publisher, mediamtx_stopped);
        }
        if decision == Verdict::Keep {
            if let Publisher::Newer(id) = &publisher {
                info!(
                    stream_key = %key,
                    "{key}: newer publisher {id} is live; its session continues {}",
                    session.id
                );
            }
            self.dir.unlock(key, lock)?;
            return Ok(Outcome::Live);
        }
        if let Verdict::End(reason) = decision {
            session.end(reason);
            self.sessions.save(&session)?;
            info!(stream_key = %key, "{key}: session {} ended: {reason}", session.id);
        }
        if decision != Verdict::Send || env_owner.is_some() {
            self.stop_relay(key).await;
        }
        let outcome = self.send(&mut session).await;
        // The env file goes with the session (and the lock file with it: last, since other
        // holders may take a fresh lock file from then on).
        self.dir.remove(key, &lock)?;
        drop(lock);
        Ok(outcome)
    }

    /// Another attempt at a pending stream-end: re-read under the lock, since a new publish
    /// of the key may have taken the record over (then nothing is sent) or another run may
    /// have delivered it.
    async fn retry(&self, key: &StreamKey) -> anyhow::Result<Outcome> {
        let Some(lock) = self.lock(key).await? else {
            return Ok(Outcome::Pending);
        };
        let outcome = match self.sessions.load(key) {
            Ok(Some(mut session)) if session.state == State::Ending => {
                self.send(&mut session).await
            }
            Ok(_) => Outcome::None,
            Err(e) => {
                error!(stream_key = %key, "{key}: {e}");
                Outcome::Pending
            }
        };
        self.dir.unlock(key, lock)?;
        Ok(outcome)
    }

    async fn send(&self, session: &mut Session) -> Outcome {
        let key = session.key.clone();
        let budget = ATTEMPT.min(self.left()).max(Duration::from_millis(500));
        match send_end(&self.authority, &self.sessions, session, budget).await {
            Ok(()) => {
                info!(stream_key = %key, "{key}: stream end of session {} reported", session.id);
                Outcome::Confirmed
            }
            Err(e) => {
                warn!(
                    stream_key = %key,
                    "{key}: stream end of session {} not confirmed (attempt {}): {e}",
                    session.id,
                    session.attempts
                );
                Outcome::Pending
            }
        }
    }

    async fn stop_relay(&self, key: &StreamKey) {
        let Some(systemd) = &self.systemd else { return };
        let unit = match systemd::relay_unit(key) {
            Ok(unit) => unit,
            Err(e) => {
                error!(stream_key = %key, "{key}: {e}");
                return;
            }
        };
        if let Err(e) = systemd.stop_and_wait(&unit, self.unit_timeout).await {
            error!(stream_key = %key, "{key}: {e}");
        }
    }

    /// MediaMTX is not running, so no relay has a source: stop every relay unit systemd has
    /// loaded, also one that no record or env file names any more (its ffmpeg would only notice
    /// the missing source when its input times out).
    async fn stop_every_relay(&self) {
        let Some(systemd) = &self.systemd else { return };
        let units = match systemd.relay_units().await {
            Ok(units) => units,
            Err(e) => {
                error!("{e}");
                return;
            }
        };
        for (unit, state) in units {
            if state == "failed" {
                continue;
            }
            if let Err(e) = systemd.stop_and_wait(&unit, self.unit_timeout).await {
                error!("{e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_session_ends_only_when_no_publisher_is_left() {
        let newer = Publisher::Newer("n".into());
        for (publisher, expected) in [
            (Publisher::Recorded, Verdict::Keep),
            (newer.clone(), Verdict::Keep),
            (Publisher::Unknown, Verdict::Keep),
            (
                Publisher::Gone,
                Verdict::End("no publisher left in MediaMTX"),
            ),
        ] {
            assert_eq!(verdict(State::Live, &publisher, false), expected);
        }
        for publisher in [
            Publisher::Recorded,
            newer,
            Publisher::Unknown,
            Publisher::Gone,
        ] {
            assert_eq!(
                verdict(State::Live, &publisher, true),
                Verdict::End("MediaMTX is not running")
            );
            // A pending end is always sent: under the lock no newer session has begun.
            assert_eq!(verdict(State::Ending, &publisher, false), Verdict::Send);
            assert_eq!(verdict(State::Ending, &publisher, true), Verdict::Send);
        }
    }
}
