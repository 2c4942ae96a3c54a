//! `neustream ready`: MediaMTX's runOnReady (runOnAvailable) hook.

use std::sync::atomic::Ordering;

use anyhow::Context;
use tracing::{debug, info, warn};

use super::hook::{self, Hook};
use crate::cli::HookArgs;
use crate::control_plane::RawDestination;
use crate::destination::{Destination, MAX_DESTINATIONS};
use crate::envfile::StreamSpec;
use crate::sessions::{Session, State};
use crate::stream_key::StreamKey;
use crate::systemd::Systemd;

pub fn run(args: HookArgs) -> anyhow::Result<()> {
    super::runtime()?.block_on(async {
        let interrupted = hook::interrupted();
        let key = match StreamKey::from_path(&args.path) {
            Ok(key) => key,
            Err(e) => {
                let path = hook::printable(&args.path);
                hook::kick(&args.settings, &args.source_type, &args.source_id, &path).await;
                return Err(e).with_context(|| format!("refusing stream path '{path}'"));
            }
        };
        // Settings that cannot be used (both a Control Plane and a streams file, a bad URL)
        // relay nothing: the publisher is dropped as for a refused key.
        let (settings, source_type, source_id) = (
            args.settings.clone(),
            args.source_type.clone(),
            args.source_id.clone(),
        );
        let hook = match Hook::new(args) {
            Ok(hook) => hook,
            Err(e) => {
                hook::kick(&settings, &source_type, &source_id, key.as_str()).await;
                return Err(e);
            }
        };
        let result = tokio::select! {
            result = publish(&hook) => result,
            signal = interrupted => {
                // The stream stopped while we were starting it: undo what was done.
                warn!(stream_key = %hook.key, "{}: {signal} received; abandoning the publish", hook.key);
                hook.end_session(hook.accepted(), "publish abandoned").await?;
                anyhow::bail!("{}: publish abandoned on {signal}", hook.key)
            }
        };
        if result.is_err() {
            // Not relayed: drop the publisher. Outside the select, since the kick itself makes
            // MediaMTX stop the stream and SIGINT this hook, which must not cut it short.
            hook.kick().await;
        }
        result
    })
}

async fn publish(hook: &Hook) -> anyhow::Result<()> {
    let key = &hook.key;
    let s = &hook.settings;
    // Where MediaMTX runs (this hook is its child), for the session record: what lets
    // reconcile be sure that a session's MediaMTX is gone.
    let systemd = Systemd::connect(s.unit_timeout).await;
    let mediamtx = hook::where_mediamtx_runs(systemd.as_ref()).await;
    // Held from before the Control Plane hears of this publish until its relay runs. The
    // unpublish of a publisher this one replaces (OBS reconnecting) runs concurrently: it either
    // reports its end before our authentication, or then finds us the owner and reports nothing.
    let lock = hook.dir.lock(key)?;
    flush_pending_end(hook).await;
    if let Err(e) = hook.authority.authenticate(key, s.auth_timeout).await {
        if let Err(e) = hook.dir.unlock(key, lock) {
            warn!(stream_key = %key, "{key}: {e}");
        }
        // A key refused on a reconnect: the stream it would have continued (in its grace,
        // or still live) ends now, not when the grace runs out.
        if e.is_refusal() && hook.owner().ok().flatten().is_some() {
            warn!(stream_key = %key, "{key}: refused on a reconnect; ending the stream now");
            if let Err(end) = hook.end_any_publisher("key refused on a reconnect").await {
                warn!(stream_key = %key, "{key}: {end:#}");
            }
        }
        return Err(e).context("stream not relayed");
    }
    hook.accepted.store(true, Ordering::SeqCst);
    info!(
        stream_key = %key,
        "{key}: accepted by {} (publisher {}; MediaMTX: {mediamtx})",
        hook.authority, hook.source_id
    );

    // The durable record, before anything else can go wrong: from now on an end of this
    // session is reported whatever happens to MediaMTX, this host or the Control Plane.
    let session = Session::accepted(key, &hook.source_id, &hook.source_type, Some(mediamtx));
    let result = match hook.sessions.save(&session) {
        Ok(()) => match &systemd {
            Ok(systemd) => start_relay(hook, systemd).await,
            Err(e) => Err(anyhow::anyhow!("{e}")),
        },
        Err(e) => Err(anyhow::Error::new(e).context("cannot record the session")),
    };
    drop(lock);
    if result.is_err() {
        // Accepted, but it cannot be relayed: end the Control Plane's session; the caller
        // drops the publisher, so that OBS reconnects and tries again.
        hook.end_session(true, "relay not started").await.ok();
    }
    result.context("stream not relayed")
}

/// A stream-end of this key still pending (the Control Plane was unreachable when the last
/// session ended) is sent before the new publish authenticates, so that the Control Plane
/// closes the old session and opens a new one. If it cannot be sent now, the new publish
/// continues the Control Plane's still active session (auth answers 200 for an active key),
/// so the pending end is void: `ready` replaces the record once the key is accepted, and
/// never sends an end for a key that is live again.
async fn flush_pending_end(hook: &Hook) {
    let key = &hook.key;
    let mut session = match hook.sessions.load_or_recover(key) {
        Ok((Some(session), _)) if session.state == State::Ending => session,
        Ok(_) => return,
        Err(e) => {
            warn!(stream_key = %key, "{key}: {e}");
            return;
        }
    };
    let budget = hook.settings.auth_timeout;
    match hook::send_end(&hook.authority, &hook.sessions, &mut session, budget).await {
        Ok(()) => info!(
            stream_key = %key,
            "{key}: pending stream end of session {} reported before the new publish",
            session.id
        ),
        Err(e) => warn!(
            stream_key = %key,
            "{key}: pending stream end of session {} still undelivered ({e}); if the new \
             publish is accepted it continues that session",
            session.id
        ),
    }
}

async fn start_relay(hook: &Hook, systemd: &Systemd) -> anyhow::Result<()> {
    let key = &hook.key;
    let s = &hook.settings;
    let forwarding = hook.authority.forwarding(key, s.forwarding_timeout).await?;
    if let Some(name) = &forwarding.source_name {
        info!(stream_key = %key, "{key}: source '{}'", hook::printable(name));
    }
    let destinations = select_destinations(key, forwarding.destinations);
    let spec = StreamSpec {
        key: key.clone(),
        source_url: format!(
            "{}/{}",
            s.ingest_url.trim_end_matches('/'),
            hook.path.trim_start_matches('/')
        ),
        source_id: hook.source_id.clone(),
        source_type: hook.source_type.clone(),
        destinations,
        grace: Some(s.reconnect_grace),
        tracks: source_tracks(hook).await,
    };
    let contents = spec.render()?;

    let path = hook.dir.write(key, &contents)?;
    if spec.destinations.is_empty() {
        // A stream with nowhere to go is not an error; a relay of an earlier publish must stop.
        systemd.stop_and_wait(&hook.unit, s.unit_timeout).await?;
        info!(stream_key = %key, "{key}: no destinations; nothing to relay");
        return Ok(());
    }
    // A relay that runs (in its grace, or still reading the publisher this one replaces)
    // takes the new description without restarting: no destination reconnects.
    if systemd.active_state(&hook.unit).await? == "active" {
        match systemd.reload_and_wait(&hook.unit, s.unit_timeout).await {
            Ok(()) => {
                info!(
                    stream_key = %key,
                    "{key}: {} switched to publisher {} ({} destination(s); env file {})",
                    hook.unit,
                    hook.source_id,
                    spec.destinations.len(),
                    path.display()
                );
                return Ok(());
            }
            Err(e) => warn!(stream_key = %key, "{key}: {e}; restarting the relay instead"),
        }
    }
    systemd.reset_failed(&hook.unit).await?;
    systemd.restart_and_wait(&hook.unit, s.unit_timeout).await?;
    info!(
        stream_key = %key,
        "{key}: {} relaying to {} destination(s) (env file {})",
        hook.unit,
        spec.destinations.len(),
        path.display()
    );
    Ok(())
}

/// The publisher's tracks as MediaMTX names them, for the relay to name what the ingest will
/// not give it (MP2 audio...). Unknown (empty) when MediaMTX's API is not configured or does not
/// answer in time: never a reason not to relay.
async fn source_tracks(hook: &Hook) -> Vec<String> {
    let key = &hook.key;
    let Some(api) = &hook.settings.mediamtx_api_url else {
        return Vec::new();
    };
    match crate::mediamtx::tracks(api, &hook.path).await {
        Ok(tracks) => {
            let tracks = crate::envfile::clean_tracks(&tracks);
            debug!(stream_key = %key, "{key}: the publisher's tracks: {}", tracks.join(", "));
            tracks
        }
        Err(e) => {
            debug!(stream_key = %key, "{key}: the publisher's tracks are unknown: {e}");
            Vec::new()
        }
    }
}

/// The valid destinations of a forwarding answer, in order; each invalid one is dropped with a
/// warning that names its index and platform, never its URL or key.
pub(super) fn select_destinations(
    key: &StreamKey,
    raw: Vec<serde_json::Value>,
) -> Vec<Destination> {
    let total = raw.len();
    let mut kept = Vec::new();
    for (index, value) in raw.into_iter().enumerate() {
        if kept.len() == MAX_DESTINATIONS {
            warn!(
                stream_key = %key,
                "{key}: {} destination(s) beyond the first {MAX_DESTINATIONS} dropped",
                total - index
            );
            break;
        }
        let entry: RawDestination = serde_json::from_value(value).unwrap_or_default();
        let platform = crate::destination::platform_name(entry.platform.as_deref().unwrap_or(""));
        let result = match (&entry.rtmp_url, &entry.stream_key) {
            (Some(url), Some(stream_key)) => Destination::from_parts(&platform, url, stream_key)
                .map_err(|e| e.to_string())
                .and_then(|d| match &entry.codecs {
                    // The streams file's own list for this destination.
                    Some(text) => crate::platforms::Accepts::parse(text)
                        .map(|c| d.with_codecs(c))
                        .map_err(|e| format!("codecs: {e}")),
                    None => Ok(d),
                }),
            _ => Err("rtmp_url or stream_key missing".into()),
        };
        match result {
            Ok(dest) => kept.push(dest),
            Err(why) => warn!(
                stream_key = %key,
                destination_index = index,
                destination_platform = %platform,
                "{key}: dropping destination {index} ({platform}): {why}"
            ),
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keeps_valid_destinations_in_order() {
        let key = StreamKey::parse("k").unwrap();
        let raw = vec![
            json!({"platform": "youtube", "rtmp_url": "rtmp://a/live2", "stream_key": "y1"}),
            json!({"platform": "twitch", "rtmp_url": "http://bad/app", "stream_key": "t1"}),
            json!("not an object"),
            json!({"platform": "custom", "rtmp_url": "rtmp://c/live/", "stream_key": "c1", "x": 1}),
            json!({"platform": "facebook", "rtmp_url": "rtmps://f:443/rtmp"}),
        ];
        let kept = select_destinations(&key, raw);
        let urls: Vec<String> = kept.iter().map(|d| d.secret_url()).collect();
        assert_eq!(urls, vec!["rtmp://a/live2/y1", "rtmp://c/live/c1"]);
    }

    #[test]
    fn caps_the_number_of_destinations() {
        let key = StreamKey::parse("k").unwrap();
        let raw = (0..70)
            .map(|i| json!({"platform": "custom", "rtmp_url": "rtmp://h/app", "stream_key": format!("k{i}")}))
            .collect();
        assert_eq!(select_destinations(&key, raw).len(), MAX_DESTINATIONS);
    }
}
