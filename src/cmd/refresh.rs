//! `neustream refresh [KEY]`: fetches the destinations of live streams again and applies the
//! differences to their running relays (`systemctl reload`: unchanged destinations are left
//! alone, added ones start, removed ones close). Run by neustream-refresh.timer; by hand for
//! one key. A Control Plane (or streams file) that cannot answer changes nothing.

use std::time::{Duration, SystemTime};

use anyhow::Context;
use tracing::{debug, info, warn};

use super::ConfigError;
use crate::authority::Authority;
use crate::cli::RefreshArgs;
use crate::envfile::{self, StreamSpec};
use crate::stream_key::StreamKey;
use crate::streamdir::StreamDir;
use crate::systemd::{self, Systemd};

pub fn run(args: RefreshArgs) -> anyhow::Result<()> {
    let s = &args.settings;
    let authority = super::hook::authority(s)?;
    let dir = StreamDir::open(&s.runtime_dir)?;
    let keys = match &args.key {
        Some(key) => vec![StreamKey::parse(key)
            .map_err(|e| ConfigError(format!("refresh: stream key '{key}': {e}")))?],
        None if args.interval.is_zero() => {
            debug!("NEUSTREAM_REFRESH_INTERVAL=0: refresh is off");
            return Ok(());
        }
        None => due(&dir, args.interval)?,
    };
    super::runtime()?.block_on(async {
        let mut failed = 0;
        for key in &keys {
            if let Err(e) = refresh(&args, &authority, &dir, key).await {
                failed += 1;
                warn!(stream_key = %key, "{key}: destinations not refreshed: {e:#}");
            }
        }
        if failed > 0 && args.key.is_some() {
            anyhow::bail!("refresh of {} failed", keys[0]);
        }
        Ok(())
    })
}

/// Live streams (env files) not checked for `interval` (the env file's mtime is the last
/// check: written by `ready` or `refresh`, touched by a check that found no change).
fn due(dir: &StreamDir, interval: Duration) -> anyhow::Result<Vec<StreamKey>> {
    let mut keys = Vec::new();
    let entries = std::fs::read_dir(dir.path())
        .with_context(|| format!("failed to list {}", dir.path().display()))?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(key) = name.to_str().and_then(|n| n.strip_suffix(".env")) else {
            continue;
        };
        let Ok(key) = StreamKey::parse(key) else {
            continue;
        };
        let age = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .unwrap_or(Duration::MAX);
        if age >= interval {
            keys.push(key);
        }
    }
    keys.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    Ok(keys)
}

async fn refresh(
    args: &RefreshArgs,
    authority: &Authority,
    dir: &StreamDir,
    key: &StreamKey,
) -> anyhow::Result<()> {
    let s = &args.settings;
    // The hooks of this key wait meanwhile: a publish or an end never interleaves.
    let lock = dir.lock(key)?;
    let Some(text) = dir.read(key)? else {
        info!(stream_key = %key, "{key}: not live; nothing to refresh");
        return Ok(());
    };
    let mut spec = envfile::parse(&text)
        .and_then(|v| StreamSpec::from_vars(&v))
        .with_context(|| format!("{}", dir.env_path(key).display()))?;
    // Fail static: an unanswered or refused fetch leaves the running destinations alone.
    let forwarding = authority
        .forwarding(key, s.forwarding_timeout)
        .await
        .context("the destinations could not be fetched; the running ones are kept")?;
    let fresh = super::ready::select_destinations(key, forwarding.destinations);
    let path = dir.env_path(key);
    if fresh == spec.destinations {
        // Checked: the mtime says when, for the timer's interval.
        std::fs::File::open(&path)
            .and_then(|f| f.set_modified(SystemTime::now()))
            .with_context(|| format!("failed to touch {}", path.display()))?;
        debug!(stream_key = %key, "{key}: destinations unchanged");
        return Ok(());
    }
    let (before, after) = (spec.destinations.len(), fresh.len());
    spec.destinations = fresh;
    dir.write(key, &spec.render()?)?;
    let unit = systemd::relay_unit(key)?;
    let systemd = Systemd::connect(s.unit_timeout).await?;
    let state = systemd.active_state(&unit).await?;
    if spec.destinations.is_empty() {
        systemd.stop_and_wait(&unit, s.unit_timeout).await?;
    } else if state == "active" {
        systemd.reload_and_wait(&unit, s.unit_timeout).await?;
    } else if state == "inactive" {
        systemd.restart_and_wait(&unit, s.unit_timeout).await?;
    } else {
        // Failed: only a new publish of the key resets it (the operator sees the failure);
        // starting or restarting: it reads the new env file when it starts.
        drop(lock);
        info!(stream_key = %key, "{key}: destinations changed ({before} -> {after}); {unit} is {state}: the new list applies at its next start");
        return Ok(());
    }
    drop(lock);
    info!(stream_key = %key, "{key}: destinations changed ({before} -> {after}); {unit} updated");
    Ok(())
}
