//! `neustream reconcile`: ends every recorded session whose publisher is surely gone and sends
//! every pending stream-end until the Control Plane confirms it.
//!
//! Run by neustream-reconcile.timer (every minute), by every relay unit that ends
//! (OnSuccess=: a relay whose reconnect grace ran out has its session ended at once), and by
//! mediamtx.service when MediaMTX stops or fails (ExecStopPost=) and before it starts
//! (ExecStartPre=, so at boot too), both with `--mediamtx-stopped`. Idempotent and safe at any
//! time: every key is examined and its stream-end sent under the same per-key lock as the
//! hooks, after re-reading its record.
//!
//! A live session is ended only when this run is sure its publisher is gone:
//! - its relay does not run (a running relay owns its session: it knows whether its source is
//!   gone and whether it keeps the destinations for a grace, and it ends when the grace runs
//!   out; its OnSuccess= then runs this again). A relay that is `activating` (starting, or
//!   waiting in `auto-restart` after a crash), `active`, `reloading` or `deactivating` runs,
//!   and is never stopped by this; and
//! - MediaMTX's API shows no publisher on the key, or the MediaMTX that carried it is gone:
//!   the systemd service `ready` found it in (the hook's own cgroup) is no longer active, or
//!   runs another invocation (it restarted). When neither can tell (no API, MediaMTX not a
//!   systemd service), the session goes on: an unpublish hook or a new publish settles it.
//!
//! MediaMTX stopped on purpose (its ExecStopPost= with SERVICE_RESULT=success: `systemctl
//! stop`, a restart, shutdown) ends every session it carried at once, and stops their relays.
//!
//! The rule that keeps stream-ends exactly once per session, although the Control Plane's
//! stream-end is per key: under the key's lock, every publish the Control Plane accepted has
//! replaced the key's record with a `live` one (`ready` saves it right after the 200). So an
//! `ending` record read under the lock is the end of the session the Control Plane holds,
//! never of a newer one. The record goes only once the end is confirmed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use tokio::time::Instant;
use tracing::{error, info, warn};

use super::hook::{self, send_end};
use crate::authority::Authority;
use crate::cli::ReconcileArgs;
use crate::envfile::{self, StreamSpec};
use crate::sessions::{MediaMtx, Session, SessionDir, State};
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
/// Longest wait for one answer of systemd about a unit.
const ASK: Duration = Duration::from_secs(5);

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

/// The MediaMTX that carried the session, as systemd tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ingest {
    /// Its unit runs the recorded invocation.
    Runs,
    /// Its unit is no longer active, or runs another invocation: the publisher is gone.
    Gone(&'static str),
    /// It was stopped on purpose (this run is its ExecStopPost= with SERVICE_RESULT=success).
    Stopped,
    /// Cannot tell: not a systemd service, not recorded, or systemd does not answer.
    Unknown,
}

/// The session's relay unit, as systemd tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Relay {
    /// `activating` (auto-restart included), `active`, `reloading`, `deactivating`: its relay
    /// decides (systemd could not be asked counts as this).
    Runs,
    /// `inactive`, `failed`, or not loaded.
    Down,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// The session goes on.
    Keep,
    /// Its relay runs and owns the session's fate: it ends when its source is gone for good.
    RelayRuns,
    /// The session is over: make its stream-end pending, send it (stopping its relay first
    /// when MediaMTX was stopped on purpose).
    End(&'static str),
    /// Its stream-end is pending already: send it.
    Send,
}

/// What becomes of a recorded session. Pure, so that every case is tested below.
fn verdict(state: State, publisher: &Publisher, ingest: Ingest, relay: Relay) -> Verdict {
    match (state, publisher, ingest, relay) {
        (State::Ending, ..) => Verdict::Send,
        (State::Live, _, Ingest::Stopped, _) => Verdict::End("MediaMTX was stopped"),
        (State::Live, _, _, Relay::Runs) => Verdict::RelayRuns,
        (State::Live, Publisher::Gone, _, Relay::Down) => {
            Verdict::End("no publisher left in MediaMTX")
        }
        (State::Live, Publisher::Unknown, Ingest::Gone(reason), Relay::Down) => {
            Verdict::End(reason)
        }
        (State::Live, _, _, Relay::Down) => Verdict::Keep,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Live,
    /// Kept for its running relay: looked at again before the run ends.
    RelayRuns,
    Confirmed,
    Pending,
    /// Nothing (left) to do for this key.
    None,
    /// A hook held the key's lock all along: the next run looks again.
    Busy,
}

/// `--mediamtx-stopped`: this run belongs to a MediaMTX unit that is not running.
struct Stopping {
    /// That unit (this process's own); None when systemd could not say.
    unit: Option<String>,
    /// SERVICE_RESULT=success: stopped on purpose.
    on_purpose: bool,
}

impl Stopping {
    /// Whether the session's MediaMTX is the one stopped on purpose. A record that does not
    /// say where MediaMTX ran (written before this was recorded) counts as this unit's.
    fn stopped_on_purpose(&self, mediamtx: Option<&MediaMtx>) -> bool {
        self.on_purpose
            && match (mediamtx, &self.unit) {
                (Some(MediaMtx::Unit { unit, .. }), Some(own)) => unit == own,
                (Some(MediaMtx::NotAUnit { .. }), _) => false,
                (Some(MediaMtx::Unit { .. }), None) | (None, _) => true,
            }
    }
}

struct Reconciler<'a> {
    args: &'a ReconcileArgs,
    authority: Authority,
    dir: StreamDir,
    sessions: SessionDir,
    systemd: Option<Systemd>,
    stopping: Option<Stopping>,
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
            error!(
                "{e}; this run cannot tell which relays run, so it ends no live session and \
                 only sends pending stream ends"
            );
            None
        }
    };
    let stopping = match args.mediamtx_stopped {
        false => None,
        true => Some(Stopping {
            unit: own_unit(systemd.as_ref()).await,
            on_purpose: args.service_result.as_deref() == Some("success"),
        }),
    };
    if let Some(stopping) = &stopping {
        info!(
            "MediaMTX ({}) {}",
            stopping.unit.as_deref().unwrap_or("its unit"),
            match (stopping.on_purpose, args.service_result.as_deref()) {
                (true, _) => "was stopped on purpose: every session it carried ends".to_string(),
                (false, Some(result)) => format!(
                    "failed ({result}): a publisher drop; running relays keep their sessions"
                ),
                (false, None) => "is starting: sessions it carried before end, unless their \
                                  relay runs"
                    .to_string(),
            }
        );
    }
    let r = Reconciler {
        args,
        authority,
        dir: StreamDir::open(&s.runtime_dir)?,
        sessions: hook::open_sessions(s)?,
        systemd,
        stopping,
        unit_timeout: s.unit_timeout,
        deadline: Instant::now() + args.timeout,
    };
    let publishers = live_publishers(args, false).await;

    // Every key with a record, and every key with an env file (a stream the runtime directory
    // remembers that has no record: one started before records existed).
    let mut keys: BTreeMap<String, StreamKey> = BTreeMap::new();
    for key in r.sessions.keys()?.into_iter().chain(r.dir.keys()?) {
        keys.insert(key.to_string(), key);
    }
    let mut outcomes: Vec<(StreamKey, Outcome)> = Vec::new();
    for key in keys.values() {
        let outcome = r.examine_or_log(key, publishers.as_ref()).await;
        outcomes.push((key.clone(), outcome));
    }
    if r.stopping.as_ref().is_some_and(|s| s.on_purpose) {
        r.stop_orphan_relays(&keys).await;
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
    r.after_relays(&mut outcomes).await;

    let count = |o| outcomes.iter().filter(|(_, x)| *x == o).count();
    let first_pending = count(Outcome::Pending);
    info!(
        "reconcile: {} live session(s) kept, {} kept by their running relay, {} stream end(s) \
         confirmed, {} pending, {} key(s) busy",
        count(Outcome::Live),
        count(Outcome::RelayRuns),
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

/// The unit this process runs in (`--mediamtx-stopped`: MediaMTX's, as its ExecStopPost= or
/// ExecStartPre=), or None.
async fn own_unit(systemd: Option<&Systemd>) -> Option<String> {
    let systemd = systemd?;
    match tokio::time::timeout(ASK, systemd.unit_of_pid(std::process::id())).await {
        Ok(Ok(Some(unit))) if unit.ends_with(".service") => Some(unit),
        Ok(Ok(_)) => None,
        Ok(Err(e)) => {
            warn!("{e}");
            None
        }
        Err(_) => None,
    }
}

/// MediaMTX's publishers by stream key (the last segment of their path), or None when it
/// cannot be asked (said once a run: `again` is false the first time).
async fn live_publishers(args: &ReconcileArgs, again: bool) -> Option<HashMap<String, String>> {
    let Some(api) = &args.settings.mediamtx_api_url else {
        if again {
            return None;
        }
        info!(
            "NEUSTREAM_MEDIAMTX_API_URL is not set: live sessions end only when the MediaMTX \
             service that carried them is gone"
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
            if !again {
                warn!("MediaMTX's API does not answer: {e}");
            }
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

/// Whether a relay unit in `state` runs (see [`Relay`]).
fn relay_runs(state: &str) -> bool {
    matches!(
        state,
        "activating" | "active" | "reloading" | "deactivating"
    )
}

/// The recorded MediaMTX's fate from its unit's state now (None: not loaded).
fn ingest_of(recorded_invocation: &str, now: Option<&systemd::UnitRun>) -> Ingest {
    match now {
        None => Ingest::Gone("MediaMTX is not running"),
        Some(run) if !matches!(run.active_state.as_str(), "active" | "reloading") => {
            Ingest::Gone("MediaMTX is not running")
        }
        Some(run) if run.invocation != recorded_invocation => Ingest::Gone("MediaMTX restarted"),
        Some(_) => Ingest::Runs,
    }
}

impl Reconciler<'_> {
    fn left(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// The relay unit of `key`: whether it runs. Asked under the key's lock, so that no hook
    /// starts or stops it meanwhile; systemd not answering counts as running.
    async fn relay(&self, key: &StreamKey) -> Relay {
        let Some(systemd) = &self.systemd else {
            return Relay::Runs;
        };
        let Ok(unit) = systemd::relay_unit(key) else {
            return Relay::Down; // no such unit can exist
        };
        match tokio::time::timeout(ASK, systemd.loaded_state(&unit)).await {
            Ok(Ok(None)) => Relay::Down,
            Ok(Ok(Some(state))) if !relay_runs(&state) => Relay::Down,
            Ok(Ok(Some(_))) => Relay::Runs,
            Ok(Err(e)) => {
                warn!(stream_key = %key, "{key}: {e}");
                Relay::Runs
            }
            Err(_) => Relay::Runs,
        }
    }

    /// The MediaMTX that carried `session`, now.
    async fn ingest(&self, session: &Session) -> Ingest {
        if let Some(stopping) = &self.stopping {
            if stopping.stopped_on_purpose(session.mediamtx.as_ref()) {
                return Ingest::Stopped;
            }
        }
        let Some(MediaMtx::Unit { unit, invocation }) = &session.mediamtx else {
            return Ingest::Unknown;
        };
        let Some(systemd) = &self.systemd else {
            return Ingest::Unknown;
        };
        match tokio::time::timeout(ASK, systemd.unit_run(unit)).await {
            Ok(Ok(now)) => ingest_of(invocation, now.as_ref()),
            Ok(Err(e)) => {
                warn!("{e}");
                Ingest::Unknown
            }
            Err(_) => Ingest::Unknown,
        }
    }

    /// Sessions kept for their running relay are looked at once more, until none changed: a
    /// relay that ended while this run went on has asked for a run (OnSuccess=) that systemd
    /// merged into this one.
    async fn after_relays(&self, outcomes: &mut [(StreamKey, Outcome)]) {
        loop {
            let mut changed = false;
            for (key, outcome) in outcomes.iter_mut() {
                if *outcome != Outcome::RelayRuns || self.left() < Duration::from_secs(1) {
                    continue;
                }
                if self.relay(key).await == Relay::Runs {
                    continue;
                }
                // Asked again: MediaMTX may have changed meanwhile too.
                let publishers = live_publishers(self.args, true).await;
                *outcome = self.examine_or_log(key, publishers.as_ref()).await;
                changed |= *outcome != Outcome::RelayRuns;
            }
            if !changed {
                return;
            }
        }
    }

    async fn examine_or_log(
        &self,
        key: &StreamKey,
        publishers: Option<&HashMap<String, String>>,
    ) -> Outcome {
        match self.examine(key, publishers).await {
            Ok(outcome) => outcome,
            Err(e) => {
                error!(stream_key = %key, "{key}: {e:#}");
                Outcome::Pending
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
    async fn examine(
        &self,
        key: &StreamKey,
        publishers: Option<&HashMap<String, String>>,
    ) -> anyhow::Result<Outcome> {
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
        if session.state == State::Live {
            let relay = self.relay(key).await;
            let ingest = self.ingest(&session).await;
            let mut publisher = publisher_of(key, &session, publishers);
            let mut decision = verdict(session.state, &publisher, ingest, relay);
            if matches!(decision, Verdict::End(_)) && publisher != Publisher::Unknown {
                // MediaMTX was asked before this key's lock was taken: a publisher may have
                // come (and its `ready` been accepted) since. Ask again, under the lock.
                let now = live_publishers(self.args, true).await;
                publisher = publisher_of(key, &session, now.as_ref());
                decision = verdict(session.state, &publisher, ingest, relay);
            }
            match decision {
                Verdict::RelayRuns | Verdict::Keep => {
                    if let Publisher::Newer(id) = &publisher {
                        info!(
                            stream_key = %key,
                            "{key}: newer publisher {id} is live; its session continues {}",
                            session.id
                        );
                    } else if decision == Verdict::RelayRuns && publisher != Publisher::Recorded {
                        info!(
                            stream_key = %key,
                            "{key}: its relay runs and decides: session {} continues",
                            session.id
                        );
                    }
                    self.dir.unlock(key, lock)?;
                    return Ok(match decision {
                        Verdict::RelayRuns => Outcome::RelayRuns,
                        _ => Outcome::Live,
                    });
                }
                Verdict::End(reason) => {
                    session.end(reason);
                    self.sessions.save(&session)?;
                    info!(stream_key = %key, "{key}: session {} ended: {reason}", session.id);
                    if ingest == Ingest::Stopped && relay == Relay::Runs {
                        self.stop_relay(key).await;
                    }
                }
                Verdict::Send => {}
            }
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

    /// Stops the relay of a session MediaMTX's stop on purpose ended.
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

    /// MediaMTX was stopped on purpose: a relay unit that runs although no record and no env
    /// file names its stream (its session long gone) has no source either; it is stopped,
    /// under its key's lock. Relays of recorded sessions were dealt with key by key, and a
    /// failed relay is left as it is, for the operator to see.
    async fn stop_orphan_relays(&self, known: &BTreeMap<String, StreamKey>) {
        let Some(systemd) = &self.systemd else { return };
        let units = match systemd.relay_units().await {
            Ok(units) => units,
            Err(e) => {
                error!("{e}");
                return;
            }
        };
        let named: HashSet<String> = known
            .values()
            .filter_map(|k| systemd::relay_unit(k).ok())
            .collect();
        for (unit, state) in units {
            if !relay_runs(&state) || named.contains(&unit) {
                continue;
            }
            let Some(key) = unit
                .strip_prefix("neustream-relay@")
                .and_then(|u| u.strip_suffix(".service"))
                .and_then(|instance| StreamKey::parse(&systemd::unescape(instance)).ok())
            else {
                continue;
            };
            let Ok(Some(lock)) = self.lock(&key).await else {
                continue;
            };
            let known_now = matches!(self.dir.read(&key), Ok(Some(_)))
                || matches!(self.sessions.load(&key), Ok(Some(_)));
            if !known_now {
                info!(stream_key = %key, "{key}: {unit} runs without a session; stopping it");
                if let Err(e) = systemd.stop_and_wait(&unit, self.unit_timeout).await {
                    error!("{e}");
                }
            }
            if let Err(e) = self.dir.unlock(&key, lock) {
                warn!(stream_key = %key, "{key}: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PUBLISHERS: [Publisher; 4] = [
        Publisher::Recorded,
        Publisher::Gone,
        Publisher::Unknown,
        Publisher::Newer(String::new()),
    ];
    const INGESTS: [Ingest; 5] = [
        Ingest::Runs,
        Ingest::Gone("MediaMTX is not running"),
        Ingest::Gone("MediaMTX restarted"),
        Ingest::Stopped,
        Ingest::Unknown,
    ];

    #[test]
    fn a_running_relay_keeps_its_session_unless_mediamtx_was_stopped_on_purpose() {
        for publisher in &PUBLISHERS {
            for ingest in INGESTS {
                let expected = match ingest {
                    Ingest::Stopped => Verdict::End("MediaMTX was stopped"),
                    _ => Verdict::RelayRuns,
                };
                assert_eq!(
                    verdict(State::Live, publisher, ingest, Relay::Runs),
                    expected,
                    "{publisher:?} {ingest:?}"
                );
            }
        }
    }

    #[test]
    fn without_its_relay_a_live_session_ends_only_when_its_publisher_is_surely_gone() {
        let down =
            |publisher: &Publisher, ingest| verdict(State::Live, publisher, ingest, Relay::Down);
        for ingest in INGESTS {
            // MediaMTX's API decides when it answers (unless MediaMTX was stopped on purpose).
            if ingest != Ingest::Stopped {
                assert_eq!(
                    down(&Publisher::Gone, ingest),
                    Verdict::End("no publisher left in MediaMTX")
                );
                assert_eq!(down(&Publisher::Recorded, ingest), Verdict::Keep);
                assert_eq!(down(&Publisher::Newer("n".into()), ingest), Verdict::Keep);
            }
        }
        // Without it, the recorded MediaMTX service.
        assert_eq!(
            down(&Publisher::Unknown, Ingest::Gone("MediaMTX restarted")),
            Verdict::End("MediaMTX restarted")
        );
        assert_eq!(
            down(&Publisher::Unknown, Ingest::Gone("MediaMTX is not running")),
            Verdict::End("MediaMTX is not running")
        );
        assert_eq!(down(&Publisher::Unknown, Ingest::Runs), Verdict::Keep);
        // Cannot tell: never ended.
        assert_eq!(down(&Publisher::Unknown, Ingest::Unknown), Verdict::Keep);
    }

    #[test]
    fn a_pending_end_is_always_sent() {
        // Under the lock no newer session has begun.
        for publisher in &PUBLISHERS {
            for ingest in INGESTS {
                for relay in [Relay::Runs, Relay::Down] {
                    assert_eq!(
                        verdict(State::Ending, publisher, ingest, relay),
                        Verdict::Send
                    );
                }
            }
        }
    }

    #[test]
    fn the_recorded_mediamtx_is_gone_when_not_active_or_restarted() {
        let run = |state: &str, invocation: &str| systemd::UnitRun {
            unit: "mediamtx.service".into(),
            active_state: state.into(),
            invocation: invocation.into(),
        };
        assert_eq!(ingest_of("a1", Some(&run("active", "a1"))), Ingest::Runs);
        assert_eq!(ingest_of("a1", Some(&run("reloading", "a1"))), Ingest::Runs);
        assert_eq!(
            ingest_of("a1", Some(&run("active", "b2"))),
            Ingest::Gone("MediaMTX restarted")
        );
        for state in ["activating", "deactivating", "inactive", "failed"] {
            assert_eq!(
                ingest_of("a1", Some(&run(state, "a1"))),
                Ingest::Gone("MediaMTX is not running"),
                "{state}"
            );
        }
        assert_eq!(
            ingest_of("a1", None),
            Ingest::Gone("MediaMTX is not running")
        );
    }

    #[test]
    fn relays_that_start_restart_or_stop_run() {
        for state in ["activating", "active", "reloading", "deactivating"] {
            assert!(relay_runs(state), "{state}");
        }
        for state in ["inactive", "failed", "maintenance", ""] {
            assert!(!relay_runs(state), "{state}");
        }
    }

    #[test]
    fn a_stop_on_purpose_ends_the_sessions_of_that_unit_only() {
        let unit = |u: &str| MediaMtx::Unit {
            unit: u.into(),
            invocation: "i".into(),
        };
        let elsewhere = MediaMtx::NotAUnit { why: "x".into() };
        let stopping = |unit: Option<&str>, on_purpose| Stopping {
            unit: unit.map(String::from),
            on_purpose,
        };
        let own = stopping(Some("mediamtx.service"), true);
        assert!(own.stopped_on_purpose(Some(&unit("mediamtx.service"))));
        assert!(!own.stopped_on_purpose(Some(&unit("mediamtx-b.service"))));
        assert!(!own.stopped_on_purpose(Some(&elsewhere)));
        // A record written before MediaMTX's unit was recorded.
        assert!(own.stopped_on_purpose(None));
        // Its own unit unknown: every recorded unit's.
        assert!(stopping(None, true).stopped_on_purpose(Some(&unit("x.service"))));
        assert!(!stopping(None, true).stopped_on_purpose(Some(&elsewhere)));
        // A failure is no stop on purpose.
        assert!(!stopping(Some("mediamtx.service"), false)
            .stopped_on_purpose(Some(&unit("mediamtx.service"))));
    }
}
