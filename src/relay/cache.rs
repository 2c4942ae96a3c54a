//! The GOP cache: what a destination that starts (or restarts) mid-stream needs to show a
//! picture at once: the metadata, the codec configuration (sequence headers) and every tag
//! since the last video keyframe.
//!
//! Bounded in bytes and in media time: a GOP longer than either bound is not kept (the
//! destination then waits for the next keyframe, as it would without a cache).

use super::flv::{Kind, Tag};

pub const MAX_BYTES: usize = 8 << 20;
pub const MAX_SPAN_MS: u32 = 10_000;

#[derive(Default)]
pub struct GopCache {
    metadata: Option<Tag>,
    video_config: Option<Tag>,
    audio_config: Option<Tag>,
    /// From a video keyframe on; empty while no GOP is (or can be) kept.
    gop: Vec<Tag>,
    gop_bytes: usize,
    /// The current GOP outgrew a bound: nothing is kept until the next keyframe.
    overflowed: bool,
}

impl GopCache {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, tag: &Tag) {
        if tag.kind == Kind::Script {
            self.metadata = Some(tag.clone());
            return;
        }
        if tag.is_sequence_header() {
            match tag.kind {
                Kind::Video => self.video_config = Some(tag.clone()),
                _ => self.audio_config = Some(tag.clone()),
            }
            return;
        }
        if tag.is_end_of_sequence() {
            return;
        }
        if tag.is_keyframe() {
            self.gop.clear();
            self.gop_bytes = 0;
            self.overflowed = false;
        } else if self.gop.is_empty() || self.overflowed {
            return; // no keyframe yet to start from
        }
        let span = self
            .gop
            .first()
            .map_or(0, |key| tag.timestamp.saturating_sub(key.timestamp));
        if !self.gop.is_empty()
            && (self.gop_bytes + tag.wire_len() > MAX_BYTES || span > MAX_SPAN_MS)
        {
            self.gop.clear();
            self.gop_bytes = 0;
            self.overflowed = true;
            return;
        }
        self.gop_bytes += tag.wire_len();
        self.gop.push(tag.clone());
    }

    /// Whether a keyframe (and so a picture) is held.
    pub fn has_picture(&self) -> bool {
        !self.gop.is_empty()
    }

    /// The codec configuration and metadata, without frames.
    pub fn headers(&self) -> impl Iterator<Item = &Tag> {
        [&self.metadata, &self.video_config, &self.audio_config]
            .into_iter()
            .flatten()
    }

    /// The keyframe that starts the cached GOP (the grace repeats it).
    pub fn keyframe(&self) -> Option<&Tag> {
        self.gop.first()
    }

    pub fn audio_config(&self) -> Option<&Tag> {
        self.audio_config.as_ref()
    }

    /// What a starting destination is sent first: headers, then the GOP. Audio older than the
    /// keyframe is left out, so the destination's first timestamp is the keyframe's.
    pub fn snapshot(&self) -> Vec<Tag> {
        let mut tags: Vec<Tag> = self.headers().cloned().collect();
        if let Some(key) = self.gop.first() {
            tags.extend(
                self.gop
                    .iter()
                    .filter(|t| t.timestamp >= key.timestamp)
                    .cloned(),
            );
        }
        tags
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn tag(kind: Kind, ts: u32, first: u8, second: u8, size: usize) -> Tag {
        let mut payload = vec![first, second];
        payload.resize(size.max(2), 0);
        Tag {
            kind,
            timestamp: ts,
            payload: Bytes::from(payload),
        }
    }
    fn key(ts: u32) -> Tag {
        tag(Kind::Video, ts, 0x17, 1, 100)
    }
    fn inter(ts: u32) -> Tag {
        tag(Kind::Video, ts, 0x27, 1, 50)
    }
    fn aac(ts: u32) -> Tag {
        tag(Kind::Audio, ts, 0xAF, 1, 20)
    }

    #[test]
    fn keeps_headers_and_the_last_gop() {
        let mut c = GopCache::new();
        c.push(&tag(Kind::Script, 0, 2, 0, 30));
        c.push(&tag(Kind::Video, 0, 0x17, 0, 40));
        c.push(&tag(Kind::Audio, 0, 0xAF, 0, 4));
        c.push(&inter(10)); // before any keyframe: not kept
        assert!(!c.has_picture());
        assert_eq!(c.snapshot().len(), 3);
        for ts in [1000, 1033, 1066] {
            let t = if ts == 1000 { key(ts) } else { inter(ts) };
            c.push(&t);
        }
        c.push(&aac(990)); // audio that arrived after the keyframe but is older than it
        c.push(&aac(1040));
        c.push(&key(2000));
        c.push(&aac(2010));
        c.push(&inter(2033));
        let snap = c.snapshot();
        let stamps: Vec<(Kind, u32)> = snap.iter().map(|t| (t.kind, t.timestamp)).collect();
        assert_eq!(
            stamps,
            vec![
                (Kind::Script, 0),
                (Kind::Video, 0),
                (Kind::Audio, 0),
                (Kind::Video, 2000),
                (Kind::Audio, 2010),
                (Kind::Video, 2033)
            ]
        );
        assert!(snap[3].is_keyframe());
    }

    #[test]
    fn a_gop_beyond_a_bound_is_dropped_until_the_next_keyframe() {
        let mut c = GopCache::new();
        c.push(&key(0));
        for i in 1..=400 {
            c.push(&inter(i * 33)); // 13.2 s of GOP: beyond MAX_SPAN_MS
        }
        assert!(!c.has_picture());
        c.push(&inter(14_000));
        assert!(!c.has_picture());
        c.push(&key(15_000));
        assert!(c.has_picture());

        let mut c = GopCache::new();
        c.push(&key(0));
        c.push(&tag(Kind::Video, 33, 0x27, 1, MAX_BYTES));
        assert!(!c.has_picture(), "bytes bound");
    }
}
