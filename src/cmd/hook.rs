//! What `ready` and `unpublish` share: their settings, and ending a stream's session.

use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use tracing::{error, info, warn};

use super::ConfigError;
use crate::authority::Authority;
use crate::cli::{HookArgs, HookSettings};
use crate::envfile::{self, StreamSpec};
use crate::sessions::{MediaMtx, Session, SessionDir, State};
use crate::stream_key::StreamKey;
use crate::streamdir::StreamDir;
use crate::systemd::{self, Systemd, SystemdError};

/// A hook's view of one publisher: who it is, and the clients it talks through.
pub struct Hook {
    pub key: StreamKey,
    pub path: String,
    pub source_id: String,
    pub source_type: String,
    pub settings: HookSettings,
    pub unit: String,
    /// The Control Plane, or the streams file in standalone mode.
    pub authority: Authority,
    pub dir: StreamDir,
    pub sessions: SessionDir,
    /// Set once the Control Plane accepted the key: from then on it holds an active stream
    /// that must be reported ended if this publish is abandoned.
    pub accepted: AtomicBool,
}

impl Hook {
    pub fn new(args: HookArgs) -> anyhow::Result<Self> {
        let key = StreamKey::from_path(&args.path)
            .with_context(|| format!("refusing stream path '{}'", printable(&args.path)))?;
        let s = &args.settings;
        let authority = authority(s)?;
        let dir = StreamDir::open(&s.runtime_dir)?;
        let sessions = open_sessions(s)?;
        Ok(Hook {
            unit: systemd::relay_unit(&key)?,
            key,
            path: args.path,
            source_id: args.source_id,
            source_type: args.source_type,
            settings: args.settings,
            authority,
            dir,
            sessions,
            accepted: AtomicBool::new(false),
        })
    }

    pub fn accepted(&self) -> bool {
        self.accepted.load(Ordering::SeqCst)
    }

    /// The publisher that owns the stream now, by the env file (`MTX_SOURCE_ID`): `None`
    /// when there is none (no env file: not relayed, or already ended).
    pub fn owner(&self) -> anyhow::Result<Option<String>> {
        Ok(self.dir.read(&self.key)?.map(|text| {
            envfile::parse(&text)
                .and_then(|v| StreamSpec::from_vars(&v))
                .map(|spec| spec.source_id)
                .unwrap_or_default()
        }))
    }

    fn newer_owner(&self, owner: &str) -> bool {
        !owner.is_empty() && !self.source_id.is_empty() && owner != self.source_id
    }

    /// `unpublish`: with a reconnect grace, waits for a new publisher of the same key (OBS
    /// reconnecting) before it ends the session; the relay keeps the destinations meanwhile.
    /// A new publisher's `ready` takes the stream over (the env file names it): then nothing
    /// is stopped and no end is reported. SIGINT/SIGTERM (MediaMTX stopping) ends it at once.
    pub async fn unpublish(&self) -> anyhow::Result<()> {
        // From the start: a signal must cut the grace short, never kill the hook unheard.
        let interrupted = interrupted();
        let key = &self.key;
        let grace = self.settings.reconnect_grace;
        let relayed = match self.owner()? {
            Some(owner) if self.newer_owner(&owner) => {
                info!(
                    stream_key = %key,
                    "{key}: publisher {} is gone but newer publisher {owner} is live; \
                     leaving its relay running",
                    self.source_id
                );
                return Ok(());
            }
            Some(_) => true,
            None => false,
        };
        if grace.is_zero() || !relayed {
            return self.end_session(false, "unpublish").await;
        }
        info!(
            stream_key = %key,
            "{key}: publisher {} is gone; keeping the destinations for {grace:?} for it to \
             come back",
            self.source_id
        );
        // A MediaMTX that stops runs its unpublish hooks after systemd's SIGTERM went out, so
        // they never get it, and then waits for them (1.21: "waiting for running hooks"):
        // its unit is `deactivating` meanwhile. That (or MediaMTX gone: the hook handed to
        // another parent) ends the stream now, rather than holding the stop for the grace.
        let mediamtx = std::os::unix::process::parent_id();
        let ask = std::time::Duration::from_secs(1);
        let systemd = Systemd::connect(ask).await.ok();
        // MediaMTX's own unit, whatever its name (none: MediaMTX is not a systemd service).
        let unit = match &systemd {
            Some(systemd) => tokio::time::timeout(ask, mediamtx_unit(systemd))
                .await
                .ok()
                .and_then(Result::ok)
                .flatten(),
            None => None,
        };
        let stopping = || async {
            let (Some(systemd), Some(unit)) = (&systemd, &unit) else {
                return false;
            };
            let state = tokio::time::timeout(ask, systemd.loaded_state(unit)).await;
            matches!(state, Ok(Ok(Some(s))) if s == "deactivating")
        };
        let taken_over = async {
            let mut poll = 0u64;
            loop {
                poll += 1;
                tokio::time::sleep(GRACE_POLL).await;
                if std::os::unix::process::parent_id() != mediamtx
                    || (poll.is_multiple_of(STOPPING_POLL) && stopping().await)
                {
                    return Watch::MediaMtxStopping;
                }
                match self.owner() {
                    Ok(Some(owner)) if self.newer_owner(&owner) => return Watch::TakenOver(owner),
                    Ok(None) => return Watch::Ended,
                    _ => {}
                }
            }
        };
        tokio::select! {
            watch = taken_over => match watch {
                Watch::TakenOver(owner) => {
                    info!(stream_key = %key, "{key}: publisher {owner} took the stream over within the grace");
                    return Ok(());
                }
                Watch::Ended => {
                    info!(stream_key = %key, "{key}: the stream was ended meanwhile");
                    return Ok(());
                }
                Watch::MediaMtxStopping => {
                    info!(stream_key = %key, "{key}: MediaMTX is stopping; ending the stream now, grace or not");
                }
            },
            _ = tokio::time::sleep(grace) => {
                info!(stream_key = %key, "{key}: no publisher within {grace:?}; ending the stream");
            }
            signal = interrupted => {
                info!(stream_key = %key, "{key}: {signal} received during the grace; ending the stream now");
            }
        }
        // Under the lock, the ownership is checked once more: a publisher may have come in
        // the last instant.
        self.end_session(false, "unpublish after the reconnect grace")
            .await
    }

    /// Ends this publisher's session, unless a newer publisher of the same key owns it now:
    /// stops the relay unit, removes the env file, and reports the end of the stream to the
    /// Control Plane when a session was recorded (or `report_anyway`). A stream-end the
    /// Control Plane does not confirm stays queued in the session record for `neustream
    /// reconcile`; MediaMTX has nothing to do with it, so it is logged, not returned.
    pub async fn end_session(&self, report_anyway: bool, reason: &str) -> anyhow::Result<()> {
        self.end(report_anyway, reason, false).await
    }

    /// Ends the key's stream whoever publishes it: a refused reconnect ends the grace of the
    /// publisher it would have replaced.
    pub async fn end_any_publisher(&self, reason: &str) -> anyhow::Result<()> {
        self.end(false, reason, true).await
    }

    async fn end(&self, report_anyway: bool, reason: &str, any_owner: bool) -> anyhow::Result<()> {
        let key = &self.key;
        let lock = self.dir.lock(key)?;
        let recorded = match self.dir.read(key)? {
            None => None,
            Some(text) => match envfile::parse(&text).and_then(|v| StreamSpec::from_vars(&v)) {
                Ok(spec) => Some(spec.source_id),
                Err(e) => {
                    warn!(stream_key = %key, "{key}: env file is unreadable ({e}); removing it");
                    Some(String::new())
                }
            },
        };
        let session = match self.sessions.load_or_recover(key) {
            Ok((session, corrupt)) => {
                if let Some(e) = corrupt {
                    warn!(stream_key = %key, "{key}: {e}");
                }
                session
            }
            Err(e) => {
                error!(stream_key = %key, "{key}: {e}");
                None
            }
        };
        // Who publishes this key now: the env file's publisher, else a live record's.
        let owner = recorded.clone().filter(|o| !o.is_empty()).or_else(|| {
            session
                .as_ref()
                .filter(|s| s.state == State::Live && !s.source_id.is_empty())
                .map(|s| s.source_id.clone())
        });
        if let Some(owner) = owner.filter(|_| !any_owner) {
            if !self.source_id.is_empty() && owner != self.source_id {
                info!(
                    stream_key = %key,
                    "{key}: publisher {} is gone but newer publisher {owner} is live; \
                     leaving its relay running",
                    self.source_id
                );
                self.dir.unlock(key, lock)?;
                return Ok(());
            }
        }
        let systemd = Systemd::connect(self.settings.unit_timeout).await;
        let stopped = match &systemd {
            Ok(systemd) => {
                systemd
                    .stop_and_wait(&self.unit, self.settings.unit_timeout)
                    .await
            }
            Err(_) => Ok(()),
        };
        // Reported under the lock: a new publish of this key (OBS reconnecting) authenticates
        // only after it, else this end would close the new publisher's session.
        if recorded.is_some() || session.is_some() || report_anyway {
            let mut session = session.unwrap_or_else(|| Session::unknown(key, &self.source_id));
            session.end(reason);
            if let Err(e) = self.sessions.save(&session) {
                error!(stream_key = %key, "{key}: {e}; the stream-end is sent without a record");
            }
            match send_end(
                &self.authority,
                &self.sessions,
                &mut session,
                self.settings.stream_end_timeout,
            )
            .await
            {
                Ok(()) => {} // the authority logs it
                Err(e) => error!(
                    stream_key = %key,
                    "{key}: failed to report the end of the stream ({e}); queued in {} for \
                     neustream reconcile (neustream-reconcile.timer retries it every minute)",
                    self.sessions.path(key).display()
                ),
            }
        }
        self.dir.remove(key, &lock)?;
        drop(lock);
        systemd?;
        stopped?;
        Ok(())
    }

    pub async fn kick(&self) {
        kick(
            &self.settings,
            &self.source_type,
            &self.source_id,
            self.key.as_str(),
        )
        .await
    }
}

/// MediaMTX's systemd service, found from this hook's own cgroup: the service whose cgroup
/// holds both this hook and its parent (MediaMTX starts its hooks itself, so they run in its
/// cgroup). None when MediaMTX is not a systemd service: started by hand (a login session's
/// scope), in a container (no unit here), or the hook run by hand.
pub async fn mediamtx_unit(systemd: &Systemd) -> Result<Option<String>, SystemdError> {
    let own = systemd.unit_of_pid(std::process::id()).await?;
    let parent = systemd
        .unit_of_pid(std::os::unix::process::parent_id())
        .await?;
    Ok(own.filter(|own| own.ends_with(".service") && parent.as_ref() == Some(own)))
}

/// Where the MediaMTX that runs this hook runs, for the session record: its service and that
/// service's current invocation, or why it is not known.
pub async fn where_mediamtx_runs(systemd: Result<&Systemd, &SystemdError>) -> MediaMtx {
    let not_asked = |e: &dyn std::fmt::Display| MediaMtx::NotAUnit {
        why: format!("systemd could not be asked: {e}"),
    };
    let systemd = match systemd {
        Ok(systemd) => systemd,
        Err(e) => return not_asked(e),
    };
    let find = async {
        let Some(unit) = mediamtx_unit(systemd).await? else {
            return Ok::<_, SystemdError>(MediaMtx::NotAUnit {
                why: "this hook and MediaMTX do not run in one systemd service".into(),
            });
        };
        Ok(match systemd.unit_run(&unit).await? {
            Some(run) if !run.invocation.is_empty() => MediaMtx::Unit {
                unit,
                invocation: run.invocation,
            },
            _ => MediaMtx::NotAUnit {
                why: format!("{unit} has no invocation"),
            },
        })
    };
    match tokio::time::timeout(std::time::Duration::from_secs(5), find).await {
        Ok(Ok(found)) => found,
        Ok(Err(e)) => not_asked(&e),
        Err(_) => not_asked(&"no answer within 5s"),
    }
}

/// The session records of `settings.state_dir`.
pub fn open_sessions(settings: &HookSettings) -> anyhow::Result<SessionDir> {
    Ok(SessionDir::open(&settings.state_dir.join("sessions"))?)
}

/// Sends the stream-end of `session` (saved `ending` by the caller, who holds the key's lock)
/// within `budget`. Confirmed: the record is removed. Not confirmed: the attempt is counted in
/// the record, which stays queued; the error says why.
pub async fn send_end(
    authority: &Authority,
    sessions: &SessionDir,
    session: &mut Session,
    budget: std::time::Duration,
) -> Result<(), String> {
    let key = crate::stream_key::StreamKey::parse(&session.key).map_err(|e| e.to_string())?;
    match authority.stream_end(&key, budget).await {
        Ok(()) => {
            if let Err(e) = sessions.remove(&key) {
                // Confirmed, but the record stays: a later run would send it again, which the
                // Control Plane answers 200 to without effect (contract); say so.
                error!(stream_key = %key, "{key}: stream end confirmed, but {e}");
            }
            Ok(())
        }
        Err(e) => {
            session.attempts += 1;
            session.last_error = Some(e.to_string());
            if let Err(save) = sessions.save(session) {
                error!(stream_key = %key, "{key}: {save}");
            }
            Err(e.to_string())
        }
    }
}

/// Disconnects a publisher through MediaMTX's Control API, when one is configured.
pub async fn kick(settings: &HookSettings, source_type: &str, source_id: &str, label: &str) {
    let Some(api) = &settings.mediamtx_api_url else {
        warn!("{label}: not disconnecting the publisher: NEUSTREAM_MEDIAMTX_API_URL is not set");
        return;
    };
    match crate::mediamtx::kick(api, source_type, source_id).await {
        Ok(()) => info!("{label}: publisher {source_id} disconnected"),
        Err(e) => error!("{label}: failed to disconnect the publisher: {e}"),
    }
}

/// The authority the settings name (the Control Plane, or the streams file).
pub fn authority(s: &HookSettings) -> anyhow::Result<Authority> {
    Ok(Authority::new(
        s.control_plane_url.as_deref(),
        s.control_plane_token.as_deref(),
        s.allow_insecure_control_plane,
        s.streams_file.as_deref(),
    )
    .map_err(ConfigError)?)
}

/// How often `unpublish` looks for a new publisher during the grace.
const GRACE_POLL: std::time::Duration = std::time::Duration::from_millis(200);

/// What `unpublish` saw during the grace.
enum Watch {
    /// A newer publisher owns the stream.
    TakenOver(String),
    /// Nobody does any more: the stream was ended by someone else.
    Ended,
    /// MediaMTX is stopping (its unit deactivating), or gone.
    MediaMtxStopping,
}

/// Every how many grace polls `unpublish` asks systemd whether MediaMTX is stopping (1 s).
const STOPPING_POLL: u64 = 5;

/// A user-supplied string fit for a log line: control characters replaced, at most 200 chars.
pub fn printable(text: &str) -> String {
    text.chars()
        .take(200)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// Catches SIGINT and SIGTERM from the moment it is called, and resolves when one arrives
/// (MediaMTX sends SIGINT to runOnReady's process group when the stream stops while the hook
/// still runs, and when the hook kicks its publisher). Call it before anything that can make
/// MediaMTX send one: until then the signal's default action would kill the hook before it
/// logs why it refused a publish (seen with the streams file, where refusals are immediate).
pub fn interrupted() -> impl std::future::Future<Output = &'static str> {
    use tokio::signal::unix::{signal, SignalKind};
    let signals = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    );
    async move {
        let (Ok(mut int), Ok(mut term)) = signals else {
            return std::future::pending().await;
        };
        tokio::select! {
            _ = int.recv() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        }
    }
}
