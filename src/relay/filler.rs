//! What destinations get while the publisher is gone (the reconnect grace): the last
//! picture, its keyframe re-sent twice a second with advancing timestamps, and silence in the
//! stream's own audio format, in real time. RTMP servers drop a publisher that sends nothing
//! within seconds; a frozen picture is the honest "we'll be right back".
//!
//! It stops by itself at the first keyframe of the next source (the hub refuses injected
//! tags from then on), so the two never interleave.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;

use tracing::{info, warn};

use super::flv::{Kind, Tag};
use super::silence::{self, Silence};
use super::Shared;

/// Silence already made for an audio configuration (its sequence header's payload).
pub type SilenceCache = Arc<Mutex<Option<(Bytes, Silence)>>>;

async fn cached(cache: &SilenceCache, ffmpeg: &Path, config: &Tag) -> Result<Silence, String> {
    if let Some((made_for, s)) = cache.lock().unwrap().as_ref() {
        if *made_for == config.payload {
            return Ok(s.clone());
        }
    }
    let s = silence::make(ffmpeg, config).await?;
    *cache.lock().unwrap() = Some((config.payload.clone(), s.clone()));
    Ok(s)
}

/// How often the frozen picture's keyframe is re-sent.
const PICTURE_EVERY_MS: f64 = 500.0;
const TICK: Duration = Duration::from_millis(50);

/// Makes the silence for the current audio format in the background, if not made yet.
pub fn prepare(shared: &Arc<Shared>) {
    let (_, _, Some(config)) = shared.hub.last() else {
        return;
    };
    let (ffmpeg, cache) = (shared.ffmpeg.clone(), shared.silence.clone());
    tokio::spawn(async move {
        let _ = cached(&cache, &ffmpeg, &config).await;
    });
}

pub async fn run(shared: &Shared) {
    let key = shared.key.as_str();
    let (last, keyframe, audio_config) = shared.hub.last();
    if keyframe.is_none() && audio_config.is_none() {
        warn!(
            stream_key = key,
            "{key}: nothing to send during the grace (no picture, no audio)"
        );
        return;
    }
    info!(
        stream_key = key,
        "{key}: sending the last picture and silence until a publisher is back"
    );
    // The picture at once; the audio as soon as its silence is made (once per format).
    let mut silence: Option<Silence> = None;
    let mut making = audio_config.map(|config| {
        let ffmpeg = shared.ffmpeg.clone();
        let cache = shared.silence.clone();
        tokio::spawn(async move { cached(&cache, &ffmpeg, &config).await })
    });
    let start = Instant::now();
    let base = f64::from(last) + 1.0;
    let (mut next_picture, mut next_audio) = (0.0f64, 0.0f64);
    loop {
        let now = start.elapsed().as_secs_f64() * 1000.0;
        if making.as_ref().is_some_and(|m| m.is_finished()) {
            match making.take().expect("checked").await {
                Ok(Ok(s)) => {
                    silence = Some(s);
                    next_audio = now;
                }
                Ok(Err(why)) => warn!(
                    stream_key = key,
                    "{key}: no silence for the grace ({why}): sending the picture only"
                ),
                Err(_) => {}
            }
        }
        while let Some(s) = silence.as_ref().filter(|_| next_audio <= now) {
            let tag = Tag {
                kind: Kind::Audio,
                timestamp: (base + next_audio) as u32,
                payload: s.payload.clone(),
            };
            if !shared.hub.inject(tag) {
                return;
            }
            next_audio += s.frame_ms;
        }
        while let Some(k) = keyframe.as_ref().filter(|_| next_picture <= now) {
            let tag = Tag {
                timestamp: (base + next_picture) as u32,
                ..k.clone()
            };
            if !shared.hub.inject(tag) {
                return;
            }
            next_picture += PICTURE_EVERY_MS;
        }
        tokio::time::sleep(TICK).await;
    }
}
