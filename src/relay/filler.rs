//! What destinations get while the publisher is gone (the reconnect grace): the last
//! picture, its keyframe re-sent twice a second with advancing timestamps, and silence in the
//! stream's own audio format, in real time. RTMP servers drop a publisher that sends nothing
//! within seconds; a frozen picture is the honest "we'll be right back".
//!
//! It stops by itself at the first keyframe of the next source (the hub refuses injected
//! tags from then on), so the two never interleave.

use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::flv::{Kind, Tag};
use super::silence::{self, Silence};
use super::Shared;

/// How often the frozen picture's keyframe is re-sent.
const PICTURE_EVERY_MS: f64 = 500.0;
const TICK: Duration = Duration::from_millis(50);

pub async fn run(shared: &Shared) {
    let key = shared.key.as_str();
    let (last, keyframe, audio_config) = shared.hub.last();
    let silence: Option<Silence> = match &audio_config {
        None => None,
        Some(config) => match silence::make(&shared.ffmpeg, config).await {
            Ok(s) => Some(s),
            Err(why) => {
                warn!(
                    stream_key = key,
                    "{key}: no silence for the grace ({why}): sending the picture only"
                );
                None
            }
        },
    };
    if keyframe.is_none() && silence.is_none() {
        warn!(
            stream_key = key,
            "{key}: nothing to send during the grace (no picture, no audio)"
        );
        return;
    }
    info!(
        stream_key = key,
        "{key}: sending the last picture{} until a publisher is back",
        if silence.is_some() {
            " and silence"
        } else {
            ""
        }
    );
    let start = Instant::now();
    let base = f64::from(last) + 1.0;
    let (mut next_picture, mut next_audio) = (0.0f64, 0.0f64);
    loop {
        let now = start.elapsed().as_secs_f64() * 1000.0;
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
