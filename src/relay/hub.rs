//! The fan-out: every tag read from the source goes through the hub once. It puts the tag on
//! one continuous timeline, remembers it in the GOP cache and offers it to each destination's
//! queue; a destination that starts gets the cache's snapshot first.

use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use tracing::warn;

use super::cache::GopCache;
use super::flv::{Codec, Kind, Role, Tag};
use super::output::Output;
use super::queue::Pushed;
use super::shape::{Shape, ShapeTracker};
use crate::platforms::StreamCodecs;

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
    /// A tag already on the timeline (made by the relay): kept in order per kind.
    fn place(&mut self, tag: &Tag) -> u32 {
        let slot = match tag.kind {
            Kind::Audio => 0,
            Kind::Video => 1,
            Kind::Script => return tag.timestamp,
        };
        let out = self.last[slot].map_or(i64::from(tag.timestamp), |l| {
            l.max(i64::from(tag.timestamp))
        });
        self.last[slot] = Some(out);
        out.min(i64::from(u32::MAX)) as u32
    }

    fn map(&mut self, tag: &Tag) -> u32 {
        let ts = i64::from(tag.timestamp);
        if tag.kind == Kind::Script || tag.is_sequence_header() {
            // Not a frame: stamped with the latest time given out, and moves nothing (a new
            // source's configuration comes before the frame it is spliced at).
            let latest = self.last.iter().flatten().max().copied().unwrap_or(0);
            return latest.clamp(0, i64::from(u32::MAX)) as u32;
        }
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
    /// A new source started: its tags are dropped up to its first keyframe (its first frame,
    /// for a stream without video), where it is spliced onto the timeline.
    splicing: bool,
    /// Whether this source has sent a video configuration.
    source_has_video: bool,
    /// The stream's shape (codecs, size, frame rate, bitrates), from what it sent.
    shape: ShapeTracker,
    /// The current source's codecs, per kind (none before it sent that kind).
    video_codec: Option<Codec>,
    audio_codec: Option<Codec>,
    /// The current source's headers (metadata, sequence headers) before its first picture.
    source_headers: Vec<Tag>,
    outputs: Vec<Arc<Output>>,
}

/// Headers kept of a source before its first picture (metadata, video and audio
/// configuration, and a few repeats).
const MAX_SOURCE_HEADERS: usize = 8;

pub struct Hub {
    key: String,
    inner: Mutex<Inner>,
    /// The stream's codecs, for the destinations to check what they can take.
    codecs: watch::Sender<StreamCodecs>,
}

impl Hub {
    pub fn new(key: &str) -> Self {
        Hub {
            key: key.to_owned(),
            inner: Mutex::new(Inner {
                cache: GopCache::new(),
                timeline: Timeline::default(),
                has_video: false,
                splicing: true,
                source_has_video: false,
                shape: ShapeTracker::new(),
                video_codec: None,
                audio_codec: None,
                source_headers: Vec::new(),
                outputs: Vec::new(),
            }),
            codecs: watch::channel(StreamCodecs::default()).0,
        }
    }

    /// The stream's shape as its tags tell it.
    pub fn shape(&self) -> Shape {
        self.inner.lock().unwrap().shape.shape()
    }

    /// The stream's codecs as they change.
    pub fn codecs(&self) -> watch::Receiver<StreamCodecs> {
        self.codecs.subscribe()
    }

    /// Notes the codec of a media tag of the current source; once the source is spliced in,
    /// a change is told to the destinations.
    fn note_codec(&self, hub: &mut Inner, tag: &Tag) {
        let Some(packet) = tag.packet() else { return };
        if !matches!(packet.role, Role::Config | Role::Frame) {
            return;
        }
        let slot = match tag.kind {
            Kind::Video => &mut hub.video_codec,
            Kind::Audio => &mut hub.audio_codec,
            Kind::Script => return,
        };
        if *slot != Some(packet.codec) {
            *slot = Some(packet.codec);
            if !hub.splicing {
                self.tell_codecs(hub, true);
            }
        }
    }

    /// The current source's codecs to the destinations, when they differ from what they had:
    /// at a splice (a new publisher may have other codecs, or no audio) and on a change.
    /// `resumed`: the source sent no headers (the same publisher after a stall, not a new
    /// connection): a kind it has not shown again yet keeps what it was.
    fn tell_codecs(&self, hub: &Inner, resumed: bool) {
        let mut codecs = StreamCodecs {
            video: hub.video_codec.map(|c| c.name(Kind::Video)),
            audio: hub.audio_codec.map(|c| c.name(Kind::Audio)),
        };
        self.codecs.send_if_modified(|now| {
            if resumed {
                codecs.video = codecs.video.take().or_else(|| now.video.clone());
                codecs.audio = codecs.audio.take().or_else(|| now.audio.clone());
            }
            let changed = *now != codecs;
            *now = codecs;
            changed
        });
    }

    /// Takes one tag from the source. Returns true when this tag makes the source's first
    /// picture (the splice point).
    pub fn publish(&self, mut tag: Tag) -> bool {
        if tag.is_end_of_sequence() {
            return false; // a source's end is not the stream's
        }
        let mut hub = self.inner.lock().unwrap();
        let header = tag.kind == Kind::Script || tag.is_sequence_header();
        if tag.kind == Kind::Video && tag.is_sequence_header() {
            hub.source_has_video = true;
        }
        let mut spliced = false;
        if hub.splicing && !header {
            let starts = tag.is_keyframe() || (!hub.source_has_video && tag.kind == Kind::Audio);
            if !starts {
                return false;
            }
            hub.splicing = false;
            hub.timeline.rebase = true;
            spliced = true;
        }
        tag.timestamp = hub.timeline.map(&tag);
        hub.has_video |= tag.kind == Kind::Video;
        self.note_codec(&mut hub, &tag);
        if hub.splicing {
            // The new source's headers, kept for its shape (a bounded few: a source sends
            // one of each kind).
            if hub.source_headers.len() < MAX_SOURCE_HEADERS {
                hub.source_headers.push(tag.clone());
            }
        } else if spliced {
            // The stream is this source's from here on: its shape and codecs alone.
            let headers = std::mem::take(&mut hub.source_headers);
            let resumed = headers.is_empty();
            if !resumed {
                hub.shape.reset();
                for h in &headers {
                    hub.shape.push(h);
                }
            }
            hub.shape.push(&tag);
            self.tell_codecs(&hub, resumed);
        } else {
            hub.shape.push(&tag);
        }
        hub.cache.push(&tag);
        self.fan_out(&hub, &tag);
        spliced
    }

    /// Takes a tag made by the relay (the grace's repeated picture and silence): to every
    /// destination, not into the cache, its timestamp put on the timeline as it is. Only
    /// between two sources: once the next source is spliced in, refused (`false`).
    pub fn inject(&self, mut tag: Tag) -> bool {
        let mut hub = self.inner.lock().unwrap();
        if !hub.splicing {
            return false;
        }
        tag.timestamp = hub.timeline.place(&tag);
        self.fan_out(&hub, &tag);
        true
    }

    fn fan_out(&self, hub: &Inner, tag: &Tag) {
        for output in &hub.outputs {
            if let Pushed::Overflowed { dropped } = output.queue.push(tag, hub.has_video) {
                let index = output.index();
                warn!(
                    stream_key = %self.key,
                    destination_index = index,
                    destination_platform = output.dest.platform(),
                    "{}: destination {index} is not keeping up: dropped {dropped} queued \
                     tag(s), resuming at the next keyframe",
                    self.key
                );
            }
        }
    }

    /// The next tags come from a new source: spliced onto the timeline at its first keyframe.
    pub fn new_source(&self) {
        let mut hub = self.inner.lock().unwrap();
        hub.splicing = true;
        hub.source_has_video = false;
        hub.video_codec = None;
        hub.audio_codec = None;
        hub.source_headers.clear();
    }

    /// Whether the current source has not reached its first picture yet.
    pub fn splicing(&self) -> bool {
        self.inner.lock().unwrap().splicing
    }

    /// The last timestamp given out (ms) and what the grace needs: the last keyframe, and
    /// the audio configuration.
    pub fn last(&self) -> (u32, Option<Tag>, Option<Tag>) {
        let hub = self.inner.lock().unwrap();
        let last = hub
            .timeline
            .last
            .iter()
            .flatten()
            .max()
            .copied()
            .unwrap_or(0);
        (
            last.clamp(0, i64::from(u32::MAX)) as u32,
            hub.cache.keyframe().cloned(),
            hub.cache.audio_config().cloned(),
        )
    }

    /// Starts a session of `output`: its queue gets the cache's snapshot, then every tag
    /// published from now on.
    pub fn attach(&self, output: &Output) {
        let hub = self.inner.lock().unwrap();
        output
            .queue
            .open(hub.cache.snapshot(), hub.cache.has_picture());
    }

    pub fn outputs(&self) -> Vec<Arc<Output>> {
        self.inner.lock().unwrap().outputs.clone()
    }

    /// Replaces the list of destinations (their order gives their indexes).
    pub fn set_outputs(&self, outputs: Vec<Arc<Output>>) {
        for (i, o) in outputs.iter().enumerate() {
            o.set_index(i);
        }
        self.inner.lock().unwrap().outputs = outputs;
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
        let dest =
            |k: &str| crate::destination::Destination::from_parts("x", "rtmp://h/a", k).unwrap();
        let outputs = vec![Output::new(0, dest("a")), Output::new(1, dest("b"))];
        let hub = Hub::new("k");
        hub.set_outputs(outputs.clone());
        hub.attach(&outputs[0]);
        for (i, ts) in (0..90).map(|i| (i, i * 33)) {
            hub.publish(video(ts, i % 60 == 0));
        }
        hub.attach(&outputs[1]);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let (mut a, mut b) = (Vec::new(), Vec::new());
        rt.block_on(outputs[0].queue.take(&mut a));
        rt.block_on(outputs[1].queue.take(&mut b));
        assert_eq!(a.len(), 90);
        assert_eq!(b.len(), 30, "from the keyframe at frame 60");
        assert!(b[0].is_keyframe() && b[0].timestamp == 60 * 33);
    }

    #[test]
    fn a_new_source_is_spliced_at_its_first_keyframe() {
        let dest = crate::destination::Destination::from_parts("x", "rtmp://h/a", "k").unwrap();
        let out = Output::new(0, dest);
        let hub = Hub::new("k");
        hub.set_outputs(vec![out.clone()]);
        hub.attach(&out);
        let config = Tag {
            kind: Kind::Video,
            timestamp: 0,
            payload: Bytes::from_static(&[0x17, 0, 0, 0, 0]),
        };
        assert!(
            !hub.publish(config.clone()),
            "the configuration is no picture"
        );
        assert!(!hub.publish(audio(0)), "nothing before the first keyframe");
        assert!(hub.publish(video(10, true)));
        hub.publish(video(43, false));
        assert!(
            !hub.inject(video(500, true)),
            "no filler while a source is live"
        );
        // The source ends; the grace's filler goes on from there.
        hub.new_source();
        assert!(hub.inject(video(1043, true)));
        assert!(hub.splicing());
        assert!(!hub.publish(config));
        assert!(!hub.publish(audio(5)));
        assert!(!hub.publish(video(20, false)));
        assert!(hub.publish(video(40, true)));
        assert!(
            !hub.inject(video(2000, true)),
            "the filler stops at the splice"
        );
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let mut got = Vec::new();
        rt.block_on(out.queue.take(&mut got));
        let stamps: Vec<u32> = got.iter().map(|t| t.timestamp).collect();
        assert_eq!(stamps, [0, 0, 33, 1043, 1043, 1076]);
    }

    fn header(kind: Kind, payload: &'static [u8]) -> Tag {
        Tag {
            kind,
            timestamp: 0,
            payload: Bytes::from_static(payload),
        }
    }

    #[test]
    fn the_destinations_learn_each_publishers_codecs() {
        let hub = Hub::new("k");
        let codecs = hub.codecs();
        let stream = |v: &str, a: Option<&str>| StreamCodecs {
            video: Some(v.to_owned()),
            audio: a.map(str::to_owned),
        };
        // H.264 + AAC: told at the first picture, not before.
        hub.publish(header(Kind::Video, &[0x17, 0, 0, 0, 0]));
        hub.publish(header(Kind::Audio, &[0xAF, 0, 0x11, 0x90]));
        assert_eq!(*codecs.borrow(), StreamCodecs::default());
        assert!(hub.publish(video(0, true)));
        hub.publish(audio(10));
        assert_eq!(*codecs.borrow(), stream("h264", Some("aac")));
        let shape = hub.shape();
        assert_eq!(shape.audio.unwrap().sample_rate, Some(48000));
        // A stall: the same publisher resumes at a keyframe without headers; its audio, not
        // seen again yet, is still AAC.
        hub.new_source();
        assert!(hub.publish(video(2000, true)));
        assert_eq!(*codecs.borrow(), stream("h264", Some("aac")));
        assert!(hub.shape().audio.is_some());
        // A new publisher: HEVC (Enhanced RTMP) without audio. Its own codecs only.
        hub.new_source();
        hub.publish(header(Kind::Video, b"\x90hvc1\x01"));
        assert!(hub.publish(header(Kind::Video, b"\x91hvc1\0\0\0\0\0\0\x02\x26\x01")));
        assert_eq!(*codecs.borrow(), stream("hevc", None));
        let shape = hub.shape();
        assert_eq!(shape.video.unwrap().codec, "HEVC");
        assert_eq!(shape.audio, None);
    }
}
