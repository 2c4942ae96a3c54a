//! One destination's queue of tags: filled by the source without ever waiting, emptied by the
//! destination's writer as fast as its ffmpeg takes them.
//!
//! A destination that cannot keep up (its queue outgrows a bound in bytes or media time)
//! loses what is queued and then everything up to the next video keyframe: it skips ahead
//! instead of slowing the source or the other destinations.

use std::collections::VecDeque;
use std::sync::Mutex;

use tokio::sync::Notify;

use super::flv::{Kind, Tag};

pub const MAX_BYTES: usize = 16 << 20;
pub const MAX_SPAN_MS: u32 = 12_000;

#[derive(Default)]
struct Inner {
    tags: VecDeque<Tag>,
    bytes: usize,
    /// A session is reading: pushes are taken.
    open: bool,
    /// Dropping frames until the next video keyframe.
    skipping: bool,
    /// Times the queue overflowed since the relay started.
    overflows: u64,
}

#[derive(Default)]
pub struct Queue {
    inner: Mutex<Inner>,
    ready: Notify,
}

/// What [`Queue::push`] did with a tag.
#[derive(Debug, PartialEq, Eq)]
pub enum Pushed {
    Queued,
    /// Not queued: no session, or skipping to a keyframe.
    Skipped,
    /// The queue was full: `dropped` tags were thrown away and the queue now waits for a
    /// keyframe.
    Overflowed {
        dropped: usize,
    },
}

impl Queue {
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts a session with `first` (the GOP cache's snapshot) queued; `has_picture` tells
    /// whether it holds a keyframe (if not, frames are skipped up to the next one).
    pub fn open(&self, first: Vec<Tag>, has_picture: bool) {
        let mut q = self.inner.lock().unwrap();
        q.bytes = first.iter().map(Tag::wire_len).sum();
        q.tags = first.into();
        q.open = true;
        q.skipping = !has_picture;
        drop(q);
        self.ready.notify_one();
    }

    /// Ends the session: nothing more is taken; the reader gets what is queued, then `None`.
    pub fn close(&self) {
        self.inner.lock().unwrap().open = false;
        self.ready.notify_one();
    }

    /// Queues a tag unless it must be skipped; never waits. `has_video`: the stream has
    /// video, so skipping ends at a video keyframe (an audio-only stream never skips).
    pub fn push(&self, tag: &Tag, has_video: bool) -> Pushed {
        let mut q = self.inner.lock().unwrap();
        if !q.open {
            return Pushed::Skipped;
        }
        let header = tag.kind == Kind::Script || tag.is_sequence_header();
        if q.skipping && !header {
            if tag.is_keyframe() || (!has_video && tag.kind == Kind::Audio) {
                q.skipping = false;
            } else {
                return Pushed::Skipped;
            }
        }
        // Media time queued, from the oldest media tag: the headers a session starts with
        // carry the stream's first timestamps, not the GOP's.
        let span = q
            .tags
            .iter()
            .find(|t| !(t.kind == Kind::Script || t.is_sequence_header()))
            .map_or(0, |first| tag.timestamp.saturating_sub(first.timestamp));
        if !header && (q.bytes + tag.wire_len() > MAX_BYTES || span > MAX_SPAN_MS) {
            let dropped = q.tags.len();
            // Keep the codec configuration queued: the destination may not have it yet.
            q.tags
                .retain(|t| t.kind == Kind::Script || t.is_sequence_header());
            q.bytes = q.tags.iter().map(Tag::wire_len).sum();
            q.overflows += 1;
            let dropped = dropped - q.tags.len();
            if tag.is_keyframe() || !has_video {
                q.bytes += tag.wire_len();
                q.tags.push_back(tag.clone());
            } else {
                q.skipping = true;
            }
            drop(q);
            self.ready.notify_one();
            return Pushed::Overflowed { dropped };
        }
        q.bytes += tag.wire_len();
        q.tags.push_back(tag.clone());
        drop(q);
        self.ready.notify_one();
        Pushed::Queued
    }

    /// Waits for tags and moves all of them into `out`; `false` once the session is closed and
    /// everything was taken.
    pub async fn take(&self, out: &mut Vec<Tag>) -> bool {
        loop {
            {
                let mut q = self.inner.lock().unwrap();
                if !q.tags.is_empty() {
                    out.extend(q.tags.drain(..));
                    q.bytes = 0;
                    return true;
                }
                if !q.open {
                    return false;
                }
            }
            self.ready.notified().await;
        }
    }

    pub fn overflows(&self) -> u64 {
        self.inner.lock().unwrap().overflows
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn video(ts: u32, key: bool, size: usize) -> Tag {
        let mut payload = vec![if key { 0x17 } else { 0x27 }, 1];
        payload.resize(size, 0);
        Tag {
            kind: Kind::Video,
            timestamp: ts,
            payload: Bytes::from(payload),
        }
    }

    fn config() -> Tag {
        Tag {
            kind: Kind::Video,
            timestamp: 0,
            payload: Bytes::from_static(&[0x17, 0, 0, 0, 0]),
        }
    }

    fn take_now(q: &Queue) -> Vec<Tag> {
        let mut out = Vec::new();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let _ =
                tokio::time::timeout(std::time::Duration::from_millis(10), q.take(&mut out)).await;
        });
        out
    }

    #[test]
    fn nothing_is_taken_without_a_session() {
        let q = Queue::new();
        assert_eq!(q.push(&video(0, true, 10), true), Pushed::Skipped);
        q.open(vec![config()], false);
        // No picture in the snapshot: frames up to the first keyframe are skipped.
        assert_eq!(q.push(&video(33, false, 10), true), Pushed::Skipped);
        assert_eq!(q.push(&video(66, true, 10), true), Pushed::Queued);
        assert_eq!(q.push(&video(99, false, 10), true), Pushed::Queued);
        let got = take_now(&q);
        assert_eq!(
            got.iter().map(|t| t.timestamp).collect::<Vec<_>>(),
            [0, 66, 99]
        );
        q.close();
        assert_eq!(q.push(&video(132, false, 10), true), Pushed::Skipped);
    }

    #[test]
    fn a_session_opened_late_in_the_stream_keeps_its_gop() {
        // A destination restarting 20 s in gets headers stamped 0 and a GOP stamped 20 s:
        // that is not 20 s of backlog.
        let q = Queue::new();
        q.open(vec![config(), video(20_000, true, 1000)], true);
        for ts in [20_033, 20_066, 20_099] {
            assert_eq!(q.push(&video(ts, false, 1000), true), Pushed::Queued);
        }
        let got = take_now(&q);
        assert_eq!(
            got.iter().map(|t| t.timestamp).collect::<Vec<_>>(),
            [0, 20_000, 20_033, 20_066, 20_099]
        );
        assert_eq!(q.overflows(), 0);
    }

    #[test]
    fn a_full_queue_skips_to_the_next_keyframe_and_keeps_the_configuration() {
        let q = Queue::new();
        q.open(vec![config(), video(0, true, 1000)], true);
        let mut ts = 0;
        let mut overflowed = None;
        for _ in 0..2000 {
            ts += 33;
            match q.push(&video(ts, false, 100_000), true) {
                Pushed::Queued => {}
                other => {
                    overflowed = Some(other);
                    break;
                }
            }
        }
        assert!(
            matches!(overflowed, Some(Pushed::Overflowed { dropped }) if dropped > 100),
            "{overflowed:?}"
        );
        assert_eq!(q.overflows(), 1);
        assert_eq!(q.push(&video(ts + 33, false, 10), true), Pushed::Skipped);
        assert_eq!(q.push(&video(ts + 66, true, 10), true), Pushed::Queued);
        let got = take_now(&q);
        assert_eq!(got.len(), 2);
        assert!(got[0].is_sequence_header() && got[1].is_keyframe());
    }

    #[test]
    fn the_media_time_bound_counts_too() {
        let q = Queue::new();
        q.open(vec![video(0, true, 10)], true);
        for i in 1..=(MAX_SPAN_MS / 33) {
            assert_eq!(q.push(&video(i * 33, false, 10), true), Pushed::Queued);
        }
        assert!(matches!(
            q.push(&video(MAX_SPAN_MS + 40, false, 10), true),
            Pushed::Overflowed { .. }
        ));
    }

    #[test]
    fn close_hands_over_what_is_queued_then_ends() {
        let q = Queue::new();
        q.open(vec![video(0, true, 10)], true);
        q.close();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let mut out = Vec::new();
        assert!(rt.block_on(q.take(&mut out)));
        assert_eq!(out.len(), 1);
        assert!(!rt.block_on(q.take(&mut out)));
    }
}
