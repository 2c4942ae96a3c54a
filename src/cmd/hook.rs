//! What `ready` and `unpublish` share: their settings, and ending a stream's session.

use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use tracing::{error, info, warn};

use super::ConfigError;
use crate::authority::Authority;
use crate::cli::{HookArgs, HookSettings};
use crate::envfile::{self, StreamSpec};
use crate::stream_key::StreamKey;
use crate::streamdir::StreamDir;
use crate::systemd::{self, Systemd};

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
    /// Set once the Control Plane accepted the key: from then on it holds an active stream
    /// that must be reported ended if this publish is abandoned.
    pub accepted: AtomicBool,
}

impl Hook {
    pub fn new(args: HookArgs) -> anyhow::Result<Self> {
        let key = StreamKey::from_path(&args.path)
            .with_context(|| format!("refusing stream path '{}'", printable(&args.path)))?;
        let s = &args.settings;
        let authority = Authority::new(
            s.control_plane_url.as_deref(),
            s.control_plane_token.as_deref(),
            s.allow_insecure_control_plane,
            s.streams_file.as_deref(),
        )
        .map_err(ConfigError)?;
        let dir = StreamDir::open(&s.runtime_dir)?;
        Ok(Hook {
            unit: systemd::relay_unit(&key)?,
            key,
            path: args.path,
            source_id: args.source_id,
            source_type: args.source_type,
            settings: args.settings,
            authority,
            dir,
            accepted: AtomicBool::new(false),
        })
    }

    pub fn accepted(&self) -> bool {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Ends this publisher's session, unless a newer publisher of the same key owns it now:
    /// stops the relay unit, removes the env file, and reports the end of the stream to the
    /// Control Plane when a session was recorded (or `report_anyway`). Reporting failures are
    /// logged, not returned: MediaMTX has nothing to do with them.
    pub async fn end_session(&self, report_anyway: bool) -> anyhow::Result<()> {
        let key = &self.key;
        let lock = self.dir.lock(key)?;
        let recorded = match self.dir.read(key)? {
            None => None,
            Some(text) => match envfile::parse(&text).and_then(|v| StreamSpec::from_vars(&v)) {
                Ok(spec) => Some(spec.source_id),
                Err(e) => {
                    warn!(stream_key = %key, "env file of {key} is unreadable ({e}); removing it");
                    Some(String::new())
                }
            },
        };
        if let Some(owner) = &recorded {
            if !owner.is_empty() && !self.source_id.is_empty() && *owner != self.source_id {
                info!(
                    stream_key = %key,
                    "{key}: publisher {} is gone but newer publisher {owner} is live; \
                     leaving its relay running",
                    self.source_id
                );
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
        if recorded.is_some() || report_anyway {
            if let Err(e) = self
                .authority
                .stream_end(key, self.settings.stream_end_timeout)
                .await
            {
                error!(
                    stream_key = %key,
                    "{key}: failed to report the end of the stream; the Control Plane may bill \
                     time that was not streamed: {e}"
                );
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
