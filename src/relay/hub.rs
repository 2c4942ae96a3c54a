//! The fan-out: every tag read from the source goes through the hub once. It puts the tag on
//! one continuous timeline, remembers it in the GOP cache and offers it to each destination's
//! queue; a destination that starts gets the cache's snapshot first.

use std::sync::{Arc, Mutex};

use tracing::warn;

use super::cache::GopCache;
use super::flv::{Kind, Tag};
use super::queue::{Pushed, Queue};

/// One timeline for the whole relay: the timestamps every destination reads never go
/// backwards, whatever the source does (a restarted or new source starts again near 0).
#[derive(Default)]
struct Timeline {
    /// Added to a source timestamp.
    offset: i64,
    /// Last timestamp given out, per kind (audio, video).
    last: [Option<i64>; 2],
    /// The next tag starts a new source: map it just after the last one given out.
    rebase: bool,
}

/// Gap put between the last tag of one source and the first of the next (one 30 fps frame).
const SPLICE_MS: i64 = 33;

impl Timeline {
    fn map(&mut self, tag: &Tag) -> u32 {
        let ts = i64::from(tag.timestamp);
        let slot = match tag.kind {
            Kind::Audio => Some(0),
            Kind::Video => Some(1),
            Kind::Script => None,
        };
        if self.rebase && slot.is_some() {
            let last = self.last.iter().flatten().max().copied();
            self.offset = last.map_or(0, |l| l + SPLICE_MS) - ts;
            self.rebase = false;
        }
        let mut out = (ts + self.offset).max(0);
        if let Some(i) = slot {
            if let Some(last) = self.last[i] {
                out = out.max(last);
            }
            self.last[i] = Some(out);
        }
        out.min(i64::from(u32::MAX)) as u32
    }
}

struct Inner {
    cache: GopCache,
    timeline: Timeline,
    has_video: bool,
    outputs: Vec<Arc<Queue>>,
}

pub struct Hub {
    key: String,
    inner: Mutex<Inner>,
}

impl Hub {
    pub fn new(key: &str, outputs: Vec<Arc<Queue>>) -> Self {
        Hub {
            key: key.to_owned(),
            inner: Mutex::new(Inner {
                cache: GopCache::new(),
                timeline: Timeline::default(),
                has_video: false,
                outputs,
            }),
        }
    }

    /// Takes one tag from the source.
    pub fn publish(&self, mut tag: Tag) {
        if tag.is_end_of_sequence() {
            return; // a source's end is not the stream's
        }
        let mut hub = self.inner.lock().unwrap();
        tag.timestamp = hub.timeline.map(&tag);
        hub.has_video |= tag.kind == Kind::Video;
        hub.cache.push(&tag);
        let has_video = hub.has_video;
        for (index, queue) in hub.outputs.iter().enumerate() {
            if let Pushed::Overflowed { dropped } = queue.push(&tag, has_video) {
                warn!(
                    stream_key = %self.key,
                    destination_index = index,
                    "{}: destination {index} is not keeping up: dropped {dropped} queued \
                     tag(s), resuming at the next keyframe",
                    self.key
                );
            }
        }
    }

    /// The next tag comes from a new source: splice it onto the timeline.
    pub fn new_source(&self) {
        self.inner.lock().unwrap().timeline.rebase = true;
    }

    /// Starts a session of destination `index`: its queue gets the cache's snapshot, then
    /// every tag published from now on.
    pub fn attach(&self, index: usize) {
        let hub = self.inner.lock().unwrap();
        hub.outputs[index].open(hub.cache.snapshot(), hub.cache.has_picture());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn video(ts: u32, key: bool) -> Tag {
        Tag {
            kind: Kind::Video,
            timestamp: ts,
            payload: Bytes::from(vec![if key { 0x17 } else { 0x27 }, 1, 0, 0, 0]),
        }
    }
    fn audio(ts: u32) -> Tag {
        Tag {
            kind: Kind::Audio,
            timestamp: ts,
            payload: Bytes::from_static(&[0xAF, 1, 0]),
        }
    }

    #[test]
    fn a_new_source_continues_the_timeline() {
        let mut t = Timeline::default();
        assert_eq!(t.map(&video(5000, true)), 5000);
        assert_eq!(t.map(&audio(5010)), 5010);
        assert_eq!(t.map(&video(5033, false)), 5033);
        t.rebase = true;
        assert_eq!(t.map(&video(0, true)), 5033 + 33);
        assert_eq!(t.map(&audio(5)), 5071);
        assert_eq!(t.map(&video(33, false)), 5099);
    }

    #[test]
    fn timestamps_never_go_backwards_per_kind() {
        let mut t = Timeline::default();
        assert_eq!(t.map(&video(1000, true)), 1000);
        assert_eq!(t.map(&video(900, false)), 1000);
        assert_eq!(t.map(&audio(950)), 950, "audio has its own order");
        assert_eq!(t.map(&audio(940)), 950);
    }

    #[test]
    fn a_late_destination_starts_from_the_cached_keyframe() {
        let queues: Vec<Arc<Queue>> = (0..2).map(|_| Arc::new(Queue::new())).collect();
        let hub = Hub::new("k", queues.clone());
        hub.attach(0);
        for (i, ts) in (0..90).map(|i| (i, i * 33)) {
            hub.publish(video(ts, i % 60 == 0));
        }
        hub.attach(1);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let (mut a, mut b) = (Vec::new(), Vec::new());
        rt.block_on(queues[0].take(&mut a));
        rt.block_on(queues[1].take(&mut b));
        assert_eq!(a.len(), 90);
        assert_eq!(b.len(), 30, "from the keyframe at frame 60");
        assert!(b[0].is_keyframe() && b[0].timestamp == 60 * 33);
    }
}
