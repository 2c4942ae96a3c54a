//! `neustream reconcile`: ends every recorded session whose publisher is gone and sends every
//! pending stream-end until the Control Plane confirms it.
//!
//! Run by neustream-reconcile.timer (every minute), by every relay unit that ends
//! (OnSuccess=: a relay whose reconnect grace ran out ends its session at once), and by
//! mediamtx.service when MediaMTX stops or fails (ExecStopPost=) and before it starts
//! (ExecStartPre=, so at boot too), both with `--mediamtx-stopped`. Idempotent and safe at any
//! time: every key is examined and its stream-end sent under the same per-key lock as the
//! hooks, after re-reading its record.
//!
//! A MediaMTX that fails (kill -9, OOM, a crash) is a publisher drop like any other: a relay
//! inside its reconnect grace (its state file tells) keeps its destinations and its session,
//! for the publisher to come back once MediaMTX is back; the session ends when the grace runs
//! out (the relay ends, and its OnSuccess= runs this). A MediaMTX stopped on purpose
//! (`systemctl stop` or `restart`, shutdown) ends every session at once.
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
use crate::operator::relays;
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

/// Whether MediaMTX runs, as far as this run can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ingest {
    /// Running, or cannot tell: its API's answer (if any) decides.
    Running,
    /// Not running after a failure, or not started yet: no publisher is live, but one may be
    /// back within a relay's grace.
    Down,
    /// Stopped on purpose (its ExecStopPost= with SERVICE_RESULT=success): every stream ends.
    Stopped,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// The session goes on.
    Keep,
    /// No publisher, but its relay is inside its reconnect grace: the session goes on until
    /// the grace runs out.
    Grace,
    /// The session is over: stop its relay, make its stream-end pending, send it.
    End(&'static str),
    /// Its stream-end is pending already: send it.
    Send,
}

/// What becomes of a recorded session. Pure, so that every case is tested below.
/// `in_grace`: its relay is inside its reconnect grace.
fn verdict(state: State, publisher: &Publisher, ingest: Ingest, in_grace: bool) -> Verdict {
    match (state, publisher, ingest) {
        (State::Ending, _, _) => Verdict::Send,
        (State::Live, _, Ingest::Stopped) => Verdict::End("MediaMTX was stopped"),
        (State::Live, _, Ingest::Down) | (State::Live, Publisher::Gone, _) if in_grace => {
            Verdict::Grace
        }
        (State::Live, _, Ingest::Down) => Verdict::End("MediaMTX is not running"),
        (State::Live, Publisher::Gone, Ingest::Running) => {
            Verdict::End("no publisher left in MediaMTX")
        }
        (State::Live, Publisher::Recorded | Publisher::Newer(_) | Publisher::Unknown, _) => {
            Verdict::Keep
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Live,
    /// Kept for its relay's grace: looked at again before the run ends.
    Grace,
    Confirmed,
    Pending,
    /// Nothing (left) to do for this key.
    None,
    /// A hook held the key's lock all along: the next run looks again.
    Busy,
}

struct Reconciler<'a> {
    args: &'a ReconcileArgs,
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
        args,
        authority,
        dir: StreamDir::open(&s.runtime_dir)?,
        sessions: hook::open_sessions(s)?,
        systemd,
        unit_timeout: s.unit_timeout,
        deadline: Instant::now() + args.timeout,
    };
    let view = r.look().await;

    // Every key with a record, and every key with an env file (a stream the runtime directory
    // remembers that has no record: one started before records existed).
    let mut keys: BTreeMap<String, StreamKey> = BTreeMap::new();
    for key in r.sessions.keys()?.into_iter().chain(r.dir.keys()?) {
        keys.insert(key.to_string(), key);
    }
    let mut outcomes: Vec<(StreamKey, Outcome)> = Vec::new();
    for key in keys.into_values() {
        let outcome = match r.examine(&key, &view).await {
            Ok(outcome) => outcome,
            Err(e) => {
                error!(stream_key = %key, "{key}: {e:#}");
                Outcome::Pending
            }
        };
        outcomes.push((key, outcome));
    }
    if view.ingest != Ingest::Running {
        r.stop_every_relay(view.ingest).await;
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
    r.after_graces(&mut outcomes, &view).await;

    let count = |o| outcomes.iter().filter(|(_, x)| *x == o).count();
    let first_pending = count(Outcome::Pending);
    info!(
        "reconcile: {} live session(s) kept, {} in a reconnect grace, {} stream end(s) \
         confirmed, {} pending, {} key(s) busy",
        count(Outcome::Live),
        count(Outcome::Grace),
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

/// What this run knows of MediaMTX.
struct View {
    /// Its publishers by stream key; none when it cannot be asked (then no live session is
    /// ended unless MediaMTX is known not to run).
    publishers: Option<HashMap<String, String>>,
    ingest: Ingest,
}

/// MediaMTX's publishers by stream key (the last segment of their path), or None when it
/// cannot be asked.
async fn live_publishers(args: &ReconcileArgs) -> Option<HashMap<String, String>> {
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
            warn!("MediaMTX's API does not answer: {e}");
            None
        }
    }
}

/// Until when (unix time) the relay of unit instance `instance` keeps its destinations for a
/// publisher to come back: `Some` while inside its reconnect grace, by its state file in
/// `relays_dir` (one it has not updated lately is not believed: the relay is gone or hung).
fn relay_grace(relays_dir: &std::path::Path, instance: &str, now: u64) -> Option<u64> {
    let state = relays::read_file(&relays_dir.join(instance).join("state.json")).ok()?;
    let until = state.source.grace_until?;
    (state.source.state == "grace" && state.age(now) <= relays::STALE_AFTER && until > now)
        .then_some(until)
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

impl Reconciler<'_> {
    fn left(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// Asks MediaMTX (or, when its API does not answer, systemd) whether it runs and who
    /// publishes.
    async fn look(&self) -> View {
        let args = self.args;
        if args.mediamtx_stopped {
            let on_purpose = args.service_result.as_deref() == Some("success");
            return View {
                publishers: Some(HashMap::new()),
                ingest: if on_purpose {
                    Ingest::Stopped
                } else {
                    Ingest::Down
                },
            };
        }
        if let Some(publishers) = live_publishers(args).await {
            return View {
                publishers: Some(publishers),
                ingest: Ingest::Running,
            };
        }
        let unit = &args.settings.mediamtx_unit;
        let running = match &self.systemd {
            Some(systemd) => systemd.running(unit).await,
            None => Ok(None),
        };
        match running {
            Ok(Some(false)) => {
                info!("{unit} is not running: no publisher is live");
                View {
                    publishers: Some(HashMap::new()),
                    ingest: Ingest::Down,
                }
            }
            other => {
                if let Err(e) = other {
                    warn!("{e}");
                }
                warn!(
                    "cannot tell which streams are live ({unit} runs, or is not how MediaMTX \
                     runs here); live sessions are left alone, only pending stream ends are sent"
                );
                View {
                    publishers: None,
                    ingest: Ingest::Running,
                }
            }
        }
    }

    fn relay_grace(&self, instance: &str) -> Option<u64> {
        let now = crate::relay::state::unix_now();
        relay_grace(&self.args.relays.relays_dir, instance, now)
    }

    fn key_grace(&self, key: &StreamKey) -> Option<u64> {
        self.relay_grace(&systemd::escape(key.as_str()))
    }

    /// Sessions kept for their relay's grace are looked at once more, until none changed: a
    /// relay whose grace ran out while this run went on has asked for a run (OnSuccess=) that
    /// systemd merged into this one.
    async fn after_graces(&self, outcomes: &mut [(StreamKey, Outcome)], view: &View) {
        loop {
            let mut changed = false;
            for (key, outcome) in outcomes.iter_mut() {
                if *outcome != Outcome::Grace || self.key_grace(key).is_some() {
                    continue;
                }
                if self.left() < Duration::from_secs(1) {
                    return;
                }
                *outcome = match self.examine(key, view).await {
                    Ok(outcome) => outcome,
                    Err(e) => {
                        error!(stream_key = %key, "{key}: {e:#}");
                        Outcome::Pending
                    }
                };
                changed |= *outcome != Outcome::Grace;
            }
            if !changed {
                return;
            }
        }
    }

    async fn lock(&self, key: &StreamKey) -> anyhow::Result<Option<KeyLock>> {
        let lock = self.dir.lock_within(key, LOCK_WAIT.min(self.left()))?;
        if lock.is_none() {
            warn!(stream_key = %key, "{key}: busy (a hook holds its lock); next run");
        }
        Ok(lock)
    }

    /// Decides and acts on one key, under its lock.
    async fn examine(&self, key: &StreamKey, view: &View) -> anyhow::Result<Outcome> {
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
        let grace = self.key_grace(key);
        let mut publisher = publisher_of(key, &session, view.publishers.as_ref());
        let mut decision = verdict(session.state, &publisher, view.ingest, grace.is_some());
        if matches!(decision, Verdict::End(_)) && !self.args.mediamtx_stopped {
            // MediaMTX was asked before this key's lock was taken: a publisher may have come
            // (and its `ready` been accepted) since. Ask again, under the lock, before ending.
            let now = self.look().await;
            publisher = publisher_of(key, &session, now.publishers.as_ref());
            decision = verdict(session.state, &publisher, now.ingest, grace.is_some());
        }
        if decision == Verdict::Grace {
            info!(
                stream_key = %key,
                "{key}: no publisher, but its relay keeps the destinations for one to come back \
                 ({} s of reconnect grace left); its session continues {}",
                grace.unwrap_or(0).saturating_sub(crate::relay::state::unix_now()),
                session.id
            );
            self.dir.unlock(key, lock)?;
            return Ok(Outcome::Grace);
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
    /// the missing source when its input times out); except, unless MediaMTX was stopped on
    /// purpose, a relay inside its reconnect grace.
    async fn stop_every_relay(&self, ingest: Ingest) {
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
            let instance = unit
                .strip_prefix("neustream-relay@")
                .and_then(|u| u.strip_suffix(".service"))
                .unwrap_or_default();
            if ingest != Ingest::Stopped && self.relay_grace(instance).is_some() {
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
            assert_eq!(
                verdict(State::Live, &publisher, Ingest::Running, false),
                expected
            );
        }
        for publisher in [
            Publisher::Recorded,
            newer,
            Publisher::Unknown,
            Publisher::Gone,
        ] {
            assert_eq!(
                verdict(State::Live, &publisher, Ingest::Down, false),
                Verdict::End("MediaMTX is not running")
            );
            for grace in [false, true] {
                assert_eq!(
                    verdict(State::Live, &publisher, Ingest::Stopped, grace),
                    Verdict::End("MediaMTX was stopped")
                );
                // A pending end is always sent: under the lock no newer session has begun.
                for ingest in [Ingest::Running, Ingest::Down, Ingest::Stopped] {
                    assert_eq!(
                        verdict(State::Ending, &publisher, ingest, grace),
                        Verdict::Send
                    );
                }
            }
        }
    }

    #[test]
    fn a_relay_in_its_grace_keeps_its_session_unless_mediamtx_was_stopped() {
        // The publisher dropped (or MediaMTX failed): it may come back within the grace.
        assert_eq!(
            verdict(State::Live, &Publisher::Gone, Ingest::Running, true),
            Verdict::Grace
        );
        for publisher in [Publisher::Gone, Publisher::Unknown, Publisher::Recorded] {
            assert_eq!(
                verdict(State::Live, &publisher, Ingest::Down, true),
                Verdict::Grace
            );
        }
        // A publisher is live: nothing to wait for, the session goes on.
        for publisher in [Publisher::Recorded, Publisher::Newer("n".into())] {
            assert_eq!(
                verdict(State::Live, &publisher, Ingest::Running, true),
                Verdict::Keep
            );
        }
        assert_eq!(
            verdict(State::Live, &Publisher::Gone, Ingest::Stopped, true),
            Verdict::End("MediaMTX was stopped")
        );
    }

    #[test]
    fn the_grace_is_read_from_a_fresh_state_file_only() {
        let dir = std::env::temp_dir().join(format!("neustream-grace-{}", std::process::id()));
        let relay = dir.join("k1");
        std::fs::create_dir_all(&relay).unwrap();
        let write = |state: &str, updated: u64, until: Option<u64>| {
            let json = serde_json::json!({
                "version": relays::VERSION, "stream": "k1", "pid": 1, "started": 0,
                "updated": updated, "destinations": [],
                "source": {"state": state, "since": 0, "publisher": "p", "grace_until": until},
            });
            std::fs::write(relay.join("state.json"), json.to_string()).unwrap();
        };
        let now = 1_000_000;
        write("grace", now - 1, Some(now + 20));
        assert_eq!(relay_grace(&dir, "k1", now), Some(now + 20));
        // Ran out, not updated for a while (a hung or killed relay), or not in a grace.
        write("grace", now - 1, Some(now));
        assert_eq!(relay_grace(&dir, "k1", now), None);
        write("grace", now - 60, Some(now + 20));
        assert_eq!(relay_grace(&dir, "k1", now), None);
        write("live", now - 1, None);
        assert_eq!(relay_grace(&dir, "k1", now), None);
        assert_eq!(relay_grace(&dir, "no-such-relay", now), None);
        std::fs::write(relay.join("state.json"), "{not json").unwrap();
        assert_eq!(relay_grace(&dir, "k1", now), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
