//! The stream's own shape, told from its tags without decoding: video codec, size, frame rate
//! and bitrate; audio codec, sample rate, channels and bitrate.
//!
//! Where each value comes from:
//! - the video size from the codec configuration: the first SPS of an H.264
//!   AVCDecoderConfigurationRecord or of an HEVCDecoderConfigurationRecord (cropping and
//!   conformance window applied), the sequence header OBU of an AV1CodecConfigurationRecord,
//!   and for VP9 (whose configuration has no size) a keyframe's uncompressed header. In-band
//!   parameter sets in keyframes (an SPS, AV1's repeated sequence header) take over from the
//!   configuration: MediaMTX sends fixed placeholder configurations for some sources;
//! - the audio format from the AAC AudioSpecificConfig, the OpusHead, FLAC's STREAMINFO, the
//!   first MPEG audio or AC-3/E-AC-3 frame header, or the FLV sound bits (formats without a
//!   header of their own);
//! - `onMetaData` (width, height, framerate, audiosamplerate, audiochannels/stereo) only for
//!   what the above leave unknown;
//! - frame rate and bitrates measured over the last [`WINDOW_MS`] of media timestamps, so they
//!   follow a new publisher with other settings.
//!
//! Every length read from a payload is checked: garbage gives `None` fields, never a panic.
//! [`ShapeTracker::push`] allocates nothing (sequence headers and frames are read in place;
//! only `onMetaData`, sent once per publish, is decoded into AMF0 values).

use std::collections::VecDeque;

use super::codec::leb128;
use super::flv::{Codec, Kind, Role, Tag};
use crate::rtmp::amf0::{self, Value};

/// What a stream is: `None` for a kind of media not seen since the last reset.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Shape {
    pub video: Option<Video>,
    pub audio: Option<Audio>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Video {
    /// "H.264", "HEVC", "AV1", "VP9"; another legacy FLV codec as "FLV codec N", another
    /// FourCC as its four characters.
    pub codec: String,
    pub width: Option<u32>,
    pub height: Option<u32>,
    /// Frames per second, rounded to 0.01.
    pub fps: Option<f64>,
    /// Bits per second of FLV video payload.
    pub bitrate: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Audio {
    /// "AAC", "Opus", "MP3", "FLAC", "AC-3", "E-AC-3", "G.711 A-law", "LPCM", ...
    pub codec: String,
    pub sample_rate: Option<u32>,
    pub channels: Option<u8>,
    /// Bits per second of FLV audio payload.
    pub bitrate: Option<u64>,
}

/// Frame rate and bitrates are measured over this much of the newest media timestamps.
pub const WINDOW_MS: u32 = 3000;
/// Below this span of timestamps nothing is measured yet (a stream's first second).
const MIN_SPAN_MS: u32 = 1000;
/// Frames remembered per window (256 per second over 4 s): a fixed ring, never grown.
const WINDOW_FRAMES: usize = 1024;
/// A timestamp this far behind the newest is a new timeline: the window starts over. Less
/// is jitter (some muxers write audio a millisecond back), taken as the newest.
const BACKWARDS_MS: u32 = 1000;

/// Follows one stream's tags (every tag, in order) and tells its [`Shape`].
pub struct ShapeTracker {
    video: VideoState,
    audio: AudioState,
    meta: Meta,
    video_window: Window,
    audio_window: Window,
}

impl Default for ShapeTracker {
    fn default() -> Self {
        ShapeTracker {
            video: VideoState::default(),
            audio: AudioState::default(),
            meta: Meta::default(),
            video_window: Window::new(),
            audio_window: Window::new(),
        }
    }
}

impl ShapeTracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes one tag of the stream: sequence headers and keyframes update the format,
    /// `onMetaData` the fallbacks, coded frames the frame rate and bitrates.
    pub fn push(&mut self, tag: &Tag) {
        match tag.kind {
            Kind::Script => self.meta.read(&tag.payload),
            Kind::Video => self.push_video(tag),
            Kind::Audio => self.push_audio(tag),
        }
    }

    fn push_video(&mut self, tag: &Tag) {
        let (Some(packet), Some(body)) = (tag.packet(), video_body(&tag.payload)) else {
            return;
        };
        let v = &mut self.video;
        let codec = VideoCodec::of(packet.codec);
        match packet.role {
            // An MPEG2TSSequenceStart carries a TS descriptor, no size: keyframes tell.
            Role::Config if tag.payload[0] & 0x8F == 0x85 => v.set_codec(packet.codec, false),
            Role::Config => {
                v.set_codec(packet.codec, true);
                let size = match codec {
                    VideoCodec::Avc => {
                        v.nal_len = body.get(4).map_or(4, |b| usize::from(b & 3) + 1);
                        avc_config_size(body)
                    }
                    VideoCodec::Hevc => {
                        v.nal_len = body.get(21).map_or(4, |b| usize::from(b & 3) + 1);
                        hevc_config_size(body)
                    }
                    VideoCodec::Av1 => body.get(4..).and_then(av1_obus_size),
                    VideoCodec::Vp9 | VideoCodec::Other => None,
                };
                v.size = size;
            }
            Role::Frame => {
                v.set_codec(packet.codec, false);
                if packet.key {
                    let in_band = match codec {
                        VideoCodec::Avc => nal_units(body, v.nal_len)
                            .find(|n| n.first().is_some_and(|b| b & 0x1F == 7))
                            .and_then(h264_sps_size),
                        VideoCodec::Hevc => nal_units(body, v.nal_len)
                            .find(|n| n.first().is_some_and(|b| (b >> 1) & 0x3F == 33))
                            .and_then(h265_sps_size),
                        VideoCodec::Av1 => av1_obus_size(body),
                        VideoCodec::Vp9 => vp9_frame_size(body),
                        VideoCodec::Other => None,
                    };
                    if in_band.is_some() {
                        v.size = in_band;
                    }
                }
                self.audio_window.expire(tag.timestamp);
                self.video_window.push(tag.timestamp, tag.payload.len());
            }
            Role::End | Role::Other => {}
        }
    }

    fn push_audio(&mut self, tag: &Tag) {
        let (Some(packet), Some(body)) = (tag.packet(), audio_body(&tag.payload)) else {
            return;
        };
        let a = &mut self.audio;
        let codec = AudioCodec::of(packet.codec);
        match packet.role {
            Role::Config => {
                a.set_codec(packet.codec, true);
                let format = match codec {
                    AudioCodec::Aac => aac_config(body),
                    AudioCodec::Opus => Some((Some(48_000), opus_head_channels(body))),
                    AudioCodec::Flac => flac_stream_info(body).map(|(r, c)| (Some(r), Some(c))),
                    _ => None,
                };
                (a.rate, a.channels) = format.unwrap_or((None, None));
            }
            Role::Frame => {
                a.set_codec(packet.codec, false);
                match codec {
                    AudioCodec::Mp3 => {
                        if let Some((layer, rate, channels)) = mpeg_audio_header(body) {
                            (a.layer, a.rate, a.channels) =
                                (Some(layer), Some(rate), Some(channels));
                        }
                    }
                    AudioCodec::Ac3 | AudioCodec::Eac3 if a.rate.is_none() => {
                        if let Some((rate, channels)) = ac3_header(body) {
                            (a.rate, a.channels) = (Some(rate), Some(channels));
                        }
                    }
                    _ => {}
                }
                if let Codec::Legacy(format) = packet.codec {
                    // The sound bits, where nothing better says (MP3 until a frame header
                    // was read).
                    if format != 10 && (a.rate.is_none() || !matches!(format, 2 | 14)) {
                        (a.rate, a.channels) = legacy_sound(tag.payload[0]);
                    }
                }
                self.video_window.expire(tag.timestamp);
                self.audio_window.push(tag.timestamp, tag.payload.len());
            }
            Role::End | Role::Other => {}
        }
    }

    /// The shape as of the tags pushed so far. Frame rate and bitrates need at least
    /// [`MIN_SPAN_MS`] of timestamps in the window; before that the frame rate is
    /// `onMetaData`'s, if any.
    pub fn shape(&self) -> Shape {
        let video = self.video.codec.map(|codec| {
            let rate = self.video_window.rate();
            let (width, height) = match self.video.size {
                Some((w, h)) => (Some(w), Some(h)),
                None => (self.meta.width, self.meta.height),
            };
            Video {
                codec: video_codec_name(codec),
                width,
                height,
                fps: rate.map(|r| r.frame_rate()).or(self.meta.fps).map(round2),
                bitrate: rate.map(|r| r.bits_per_second),
            }
        });
        let audio = self.audio.codec.map(|codec| Audio {
            codec: audio_codec_name(codec, self.audio.layer),
            sample_rate: self.audio.rate.or(self.meta.sample_rate),
            channels: self.audio.channels.or(self.meta.channels),
            bitrate: self.audio_window.rate().map(|r| r.bits_per_second),
        });
        Shape { video, audio }
    }

    /// A new publisher: forgets everything (keeps its memory).
    pub fn reset(&mut self) {
        self.video = VideoState::default();
        self.audio = AudioState::default();
        self.meta = Meta::default();
        self.video_window.clear();
        self.audio_window.clear();
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

#[derive(Default)]
struct VideoState {
    codec: Option<Codec>,
    size: Option<(u32, u32)>,
    /// Bytes of each NAL unit length (H.264/HEVC), from the configuration record; 0 unknown.
    nal_len: usize,
}

impl VideoState {
    /// A configuration starts over; a frame of another codec than the configured one too.
    fn set_codec(&mut self, codec: Codec, config: bool) {
        let same = self.codec.is_some_and(|c| {
            c == codec
                || (VideoCodec::of(c) == VideoCodec::of(codec)
                    && VideoCodec::of(c) != VideoCodec::Other)
        });
        if config || !same {
            *self = VideoState {
                codec: Some(codec),
                ..VideoState::default()
            };
        }
    }
}

#[derive(Default)]
struct AudioState {
    codec: Option<Codec>,
    rate: Option<u32>,
    channels: Option<u8>,
    /// The MPEG audio layer of an "MP3" stream's frames (2 is MP2, which FLV cannot carry).
    layer: Option<u8>,
}

impl AudioState {
    fn set_codec(&mut self, codec: Codec, config: bool) {
        if config || self.codec != Some(codec) {
            *self = AudioState {
                codec: Some(codec),
                ..AudioState::default()
            };
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum VideoCodec {
    Avc,
    Hevc,
    Av1,
    Vp9,
    Other,
}

impl VideoCodec {
    fn of(codec: Codec) -> Self {
        match codec {
            Codec::Legacy(7) => VideoCodec::Avc,
            Codec::Legacy(12) => VideoCodec::Hevc,
            Codec::Legacy(_) => VideoCodec::Other,
            Codec::FourCc(cc) => match &cc {
                b"avc1" => VideoCodec::Avc,
                b"hvc1" => VideoCodec::Hevc,
                b"av01" => VideoCodec::Av1,
                b"vp09" => VideoCodec::Vp9,
                _ => VideoCodec::Other,
            },
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AudioCodec {
    Aac,
    Opus,
    Mp3,
    Flac,
    Ac3,
    Eac3,
    Other,
}

impl AudioCodec {
    fn of(codec: Codec) -> Self {
        match codec {
            Codec::Legacy(10) => AudioCodec::Aac,
            Codec::Legacy(2 | 14) => AudioCodec::Mp3,
            Codec::Legacy(_) => AudioCodec::Other,
            Codec::FourCc(cc) => match &cc {
                b"mp4a" => AudioCodec::Aac,
                b".mp3" => AudioCodec::Mp3,
                b"Opus" => AudioCodec::Opus,
                b"fLaC" => AudioCodec::Flac,
                b"ac-3" => AudioCodec::Ac3,
                b"ec-3" => AudioCodec::Eac3,
                _ => AudioCodec::Other,
            },
        }
    }
}

fn fourcc_name(cc: [u8; 4]) -> String {
    if cc.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
        String::from_utf8_lossy(&cc).into_owned()
    } else {
        format!(
            "FourCC {:02x}{:02x}{:02x}{:02x}",
            cc[0], cc[1], cc[2], cc[3]
        )
    }
}

fn video_codec_name(codec: Codec) -> String {
    match (VideoCodec::of(codec), codec) {
        (VideoCodec::Avc, _) => "H.264".into(),
        (VideoCodec::Hevc, _) => "HEVC".into(),
        (VideoCodec::Av1, _) => "AV1".into(),
        (VideoCodec::Vp9, _) => "VP9".into(),
        (_, Codec::Legacy(id)) => format!("FLV codec {id}"),
        (_, Codec::FourCc(cc)) => fourcc_name(cc),
    }
}

fn audio_codec_name(codec: Codec, mpeg_layer: Option<u8>) -> String {
    let name = match (AudioCodec::of(codec), codec) {
        (AudioCodec::Mp3, _) => match mpeg_layer {
            Some(1) => "MP1",
            Some(2) => "MP2",
            _ => "MP3",
        },
        (AudioCodec::Aac, _) => "AAC",
        (AudioCodec::Opus, _) => "Opus",
        (AudioCodec::Flac, _) => "FLAC",
        (AudioCodec::Ac3, _) => "AC-3",
        (AudioCodec::Eac3, _) => "E-AC-3",
        (_, Codec::Legacy(0 | 3)) => "LPCM",
        (_, Codec::Legacy(1)) => "ADPCM",
        (_, Codec::Legacy(4..=6)) => "Nellymoser",
        (_, Codec::Legacy(7)) => "G.711 A-law",
        (_, Codec::Legacy(8)) => "G.711 µ-law",
        (_, Codec::Legacy(11)) => "Speex",
        (_, Codec::Legacy(n)) => return format!("FLV sound format {n}"),
        (_, Codec::FourCc(cc)) => return fourcc_name(cc),
    };
    name.into()
}

/// Sample rate and channels from a legacy FLV audio tag's first byte (sound rate, size and
/// type bits), with the rates that some formats fix whatever the bits say.
fn legacy_sound(b0: u8) -> (Option<u32>, Option<u8>) {
    let channels = 1 + (b0 & 1);
    let rate = [5512, 11025, 22050, 44100][usize::from((b0 >> 2) & 3)];
    match b0 >> 4 {
        4 | 11 => (Some(16_000), Some(1)), // Nellymoser 16 kHz, Speex
        5 => (Some(8_000), Some(1)),       // Nellymoser 8 kHz
        14 => (Some(8_000), Some(channels)),
        7 | 8 => (Some(8_000), Some(channels)), // G.711, as ffmpeg reads it
        _ => (Some(rate), Some(channels)),
    }
}

// ---------------------------------------------------------------------------------------
// Tag framing: where the codec's own bytes start.

/// The codec bytes of a video tag: configuration record or coded frame (after any
/// composition time). `None` for what is not the stream's main picture: command frames and
/// multitrack tags other than track 0 of a one-track tag.
fn video_body(p: &[u8]) -> Option<&[u8]> {
    let b0 = *p.first()?;
    if b0 & 0x80 == 0 {
        if b0 >> 4 == 5 {
            return None; // video info / command frame
        }
        let at = if matches!(b0 & 0x0F, 7 | 12) { 5 } else { 1 };
        return Some(p.get(at..).unwrap_or_default());
    }
    if (b0 >> 4) & 0x07 == 5 {
        return None;
    }
    let mut packet_type = b0 & 0x0F;
    let multitrack = packet_type == 6;
    let mut at = 1;
    if multitrack {
        let b1 = *p.get(1)?;
        if b1 >> 4 != 0 {
            return None; // several tracks in one tag: renditions, not the main picture
        }
        packet_type = b1 & 0x0F;
        at = 2;
    }
    let cc = p.get(at..at + 4)?;
    at += 4;
    if multitrack {
        if *p.get(at)? != 0 {
            return None;
        }
        at += 1;
    }
    if packet_type == 1 && matches!(cc, b"avc1" | b"hvc1") {
        at += 3;
    }
    Some(p.get(at..).unwrap_or_default())
}

/// The codec bytes of an audio tag, as [`video_body`].
fn audio_body(p: &[u8]) -> Option<&[u8]> {
    let b0 = *p.first()?;
    let format = b0 >> 4;
    if format != 9 {
        let at = if format == 10 { 2 } else { 1 };
        return Some(p.get(at..).unwrap_or_default());
    }
    let multitrack = b0 & 0x0F == 5;
    let mut at = 1;
    if multitrack {
        if *p.get(1)? >> 4 != 0 {
            return None;
        }
        at = 2;
    }
    at += 4;
    if multitrack {
        if *p.get(at)? != 0 {
            return None;
        }
        at += 1;
    }
    Some(p.get(at..).unwrap_or_default())
}

// ---------------------------------------------------------------------------------------
// The measuring window.

#[derive(Debug, Clone, Copy, PartialEq)]
struct Rate {
    per_second: f64,
    bits_per_second: u64,
    span_ms: u32,
}

impl Rate {
    /// Frames per second: the measured rate, or the integer or NTSC (n × 1000/1001) rate it
    /// cannot be told from. Millisecond timestamps put up to 1 ms of error on the span (a
    /// 30 fps stream over 1967 ms measures 29.995); an encoder's own rate is one of these.
    fn frame_rate(&self) -> f64 {
        let measured = self.per_second;
        let tolerance = measured * 1.5 / f64::from(self.span_ms);
        let whole = measured.round();
        let ntsc = (measured * 1.001).round() / 1.001;
        [whole, ntsc]
            .into_iter()
            .filter(|c| *c > 0.0 && (c - measured).abs() <= tolerance)
            .min_by(|a, b| (a - measured).abs().total_cmp(&(b - measured).abs()))
            .unwrap_or(measured)
    }
}

/// Timestamps and sizes of the frames of the last [`WINDOW_MS`].
struct Window {
    frames: VecDeque<(u32, u32)>,
    /// Sum of the sizes in `frames`.
    bytes: u64,
}

impl Window {
    fn new() -> Self {
        Window {
            frames: VecDeque::with_capacity(WINDOW_FRAMES),
            bytes: 0,
        }
    }

    fn clear(&mut self) {
        self.frames.clear();
        self.bytes = 0;
    }

    fn pop(&mut self) {
        if let Some((_, size)) = self.frames.pop_front() {
            self.bytes -= u64::from(size);
        }
    }

    /// Forgets what is older than the window before `now` (another media kind's timestamp:
    /// a track that stopped is not measured forever).
    fn expire(&mut self, now: u32) {
        while self
            .frames
            .front()
            .is_some_and(|&(t, _)| now.saturating_sub(t) > WINDOW_MS)
        {
            self.pop();
        }
    }

    fn push(&mut self, ts: u32, size: usize) {
        let size = u32::try_from(size).unwrap_or(u32::MAX);
        let mut ts = ts;
        if let Some(&(newest, _)) = self.frames.back() {
            if ts < newest {
                if newest - ts > BACKWARDS_MS {
                    self.clear();
                } else {
                    ts = newest;
                }
            }
        }
        self.expire(ts);
        if self.frames.len() == WINDOW_FRAMES {
            self.pop();
        }
        self.frames.push_back((ts, size));
        self.bytes += u64::from(size);
    }

    /// Frames and bits per second between the first and the last frame of the window.
    fn rate(&self) -> Option<Rate> {
        let (&(first, _), &(last, last_size)) = (self.frames.front()?, self.frames.back()?);
        let span = last - first;
        if span < MIN_SPAN_MS {
            return None;
        }
        // The frames before the last one fill the span.
        let intervals = (self.frames.len() - 1) as f64;
        let bytes = self.bytes - u64::from(last_size);
        Some(Rate {
            per_second: intervals * 1000.0 / f64::from(span),
            bits_per_second: bytes * 8 * 1000 / u64::from(span),
            span_ms: span,
        })
    }
}

// ---------------------------------------------------------------------------------------
// onMetaData.

/// What `onMetaData` says, used where the codec's own headers say nothing.
#[derive(Debug, Default, Clone, PartialEq)]
struct Meta {
    width: Option<u32>,
    height: Option<u32>,
    fps: Option<f64>,
    sample_rate: Option<u32>,
    channels: Option<u8>,
}

impl Meta {
    /// A script tag: `onMetaData` (or `@setDataFrame`, `onMetaData`) then an object or an ECMA
    /// array. Other script tags are ignored.
    fn read(&mut self, payload: &[u8]) {
        let mut rest = payload;
        let mut named = false;
        for _ in 0..3 {
            let Ok((value, used)) = amf0::decode_one(rest) else {
                return;
            };
            rest = &rest[used.min(rest.len())..];
            match value {
                Value::String(s) if s == "onMetaData" => named = true,
                Value::String(s) if s == "@setDataFrame" && !named => {}
                v @ (Value::Object(_) | Value::EcmaArray(_)) if named => {
                    *self = Meta::from_object(&v);
                    return;
                }
                _ => return,
            }
        }
    }

    fn from_object(v: &Value) -> Meta {
        let number = |key: &str| v.get(key).and_then(Value::as_number);
        let positive =
            |key: &str, max: f64| number(key).filter(|n| n.is_finite() && *n >= 1.0 && *n <= max);
        let channels =
            positive("audiochannels", 255.0)
                .map(|n| n as u8)
                .or(match v.get("stereo") {
                    Some(Value::Boolean(true)) => Some(2),
                    Some(Value::Boolean(false)) => Some(1),
                    _ => None,
                });
        Meta {
            width: positive("width", 65_536.0).map(|n| n as u32),
            height: positive("height", 65_536.0).map(|n| n as u32),
            fps: positive("framerate", 1000.0).or(positive("videoframerate", 1000.0)),
            sample_rate: positive("audiosamplerate", 1_000_000.0).map(|n| n as u32),
            channels,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Bit reading.

/// Reads bits MSB first from a byte slice; with `unescape`, removes H.264/HEVC emulation
/// prevention bytes (the 0x03 of 0x000003) on the way. Reads past the end give `None`.
struct Bits<'a> {
    raw: &'a [u8],
    at: usize,
    unescape: bool,
    zeros: u8,
    byte: u8,
    left: u8,
}

impl<'a> Bits<'a> {
    fn new(raw: &'a [u8]) -> Self {
        Bits {
            raw,
            at: 0,
            unescape: false,
            zeros: 0,
            byte: 0,
            left: 0,
        }
    }

    /// An H.264/HEVC RBSP.
    fn rbsp(raw: &'a [u8]) -> Self {
        Bits {
            unescape: true,
            ..Bits::new(raw)
        }
    }

    fn next_byte(&mut self) -> Option<u8> {
        let mut b = *self.raw.get(self.at)?;
        self.at += 1;
        if self.unescape && self.zeros >= 2 && b == 3 {
            self.zeros = 0;
            b = *self.raw.get(self.at)?;
            self.at += 1;
        }
        self.zeros = if b == 0 {
            self.zeros.saturating_add(1)
        } else {
            0
        };
        Some(b)
    }

    fn bit(&mut self) -> Option<bool> {
        if self.left == 0 {
            self.byte = self.next_byte()?;
            self.left = 8;
        }
        self.left -= 1;
        Some((self.byte >> self.left) & 1 == 1)
    }

    fn flag(&mut self) -> Option<bool> {
        self.bit()
    }

    /// `n` bits, at most 32.
    fn bits(&mut self, n: u32) -> Option<u32> {
        debug_assert!(n <= 32);
        let mut v: u64 = 0;
        for _ in 0..n {
            v = (v << 1) | u64::from(self.bit()?);
        }
        Some(v as u32)
    }

    fn skip(&mut self, n: u32) -> Option<()> {
        for _ in 0..n {
            self.bit()?;
        }
        Some(())
    }

    /// Exp-Golomb ue(v), up to 2^32 - 2.
    fn ue(&mut self) -> Option<u32> {
        let mut zeros = 0;
        while !self.bit()? {
            zeros += 1;
            if zeros > 31 {
                return None;
            }
        }
        let rest = self.bits(zeros)?;
        u32::try_from((1u64 << zeros) - 1 + u64::from(rest)).ok()
    }

    /// Exp-Golomb se(v).
    fn se(&mut self) -> Option<i64> {
        let k = i64::from(self.ue()?);
        Some(if k % 2 == 1 { (k + 1) / 2 } else { -(k / 2) })
    }
}

// ---------------------------------------------------------------------------------------
// H.264.

/// The size in the first SPS of an AVCDecoderConfigurationRecord.
fn avc_config_size(record: &[u8]) -> Option<(u32, u32)> {
    if *record.first()? != 1 || *record.get(5)? & 0x1F == 0 {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([*record.get(6)?, *record.get(7)?]));
    h264_sps_size(record.get(8..8 + len)?)
}

/// Width and height (cropped) of an H.264 SPS NAL unit (header byte included).
fn h264_sps_size(nal: &[u8]) -> Option<(u32, u32)> {
    if *nal.first()? & 0x1F != 7 {
        return None;
    }
    let mut r = Bits::rbsp(&nal[1..]);
    let profile = r.bits(8)?;
    r.skip(16)?; // constraint flags, level
    r.ue()?; // seq_parameter_set_id
    let mut chroma_format_idc = 1;
    let mut separate_colour_plane = false;
    if matches!(
        profile,
        100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135
    ) {
        chroma_format_idc = r.ue()?;
        if chroma_format_idc > 3 {
            return None;
        }
        if chroma_format_idc == 3 {
            separate_colour_plane = r.flag()?;
        }
        r.ue()?; // bit_depth_luma_minus8
        r.ue()?; // bit_depth_chroma_minus8
        r.flag()?; // qpprime_y_zero_transform_bypass_flag
        if r.flag()? {
            // seq_scaling_matrix_present_flag
            let lists = if chroma_format_idc == 3 { 12 } else { 8 };
            for i in 0..lists {
                if r.flag()? {
                    skip_scaling_list(&mut r, if i < 6 { 16 } else { 64 })?;
                }
            }
        }
    }
    r.ue()?; // log2_max_frame_num_minus4
    match r.ue()? {
        // pic_order_cnt_type
        0 => {
            r.ue()?; // log2_max_pic_order_cnt_lsb_minus4
        }
        1 => {
            r.flag()?; // delta_pic_order_always_zero_flag
            r.se()?; // offset_for_non_ref_pic
            r.se()?; // offset_for_top_to_bottom_field
            let cycle = r.ue()?;
            if cycle > 255 {
                return None;
            }
            for _ in 0..cycle {
                r.se()?;
            }
        }
        2 => {}
        _ => return None,
    }
    r.ue()?; // max_num_ref_frames
    r.flag()?; // gaps_in_frame_num_value_allowed_flag
    let width_mbs = u64::from(r.ue()?) + 1;
    let height_map_units = u64::from(r.ue()?) + 1;
    let frame_mbs_only = u64::from(r.flag()?);
    if frame_mbs_only == 0 {
        r.flag()?; // mb_adaptive_frame_field_flag
    }
    r.flag()?; // direct_8x8_inference_flag
               // frame_cropping_flag and its offsets.
    let (left, right, top, bottom) = crop_window(&mut r)?;
    let (sub_width, sub_height) = chroma_subsampling(separate_colour_plane, chroma_format_idc);
    let crop_x = sub_width;
    let crop_y = sub_height * (2 - frame_mbs_only);
    let width = (width_mbs * 16).checked_sub((left + right) * crop_x)?;
    let height =
        ((2 - frame_mbs_only) * height_map_units * 16).checked_sub((top + bottom) * crop_y)?;
    dimensions(width, height)
}

/// An SPS's cropping (H.264 frame cropping, HEVC conformance window): its flag, then left,
/// right, top and bottom offsets (all 0 without the flag).
fn crop_window(r: &mut Bits) -> Option<(u64, u64, u64, u64)> {
    if !r.flag()? {
        return Some((0, 0, 0, 0));
    }
    Some((
        u64::from(r.ue()?),
        u64::from(r.ue()?),
        u64::from(r.ue()?),
        u64::from(r.ue()?),
    ))
}

/// The units of the crop offsets, from the chroma format: ChromaArrayType 0 (monochrome, or
/// 4:4:4 coded as separate planes) and 4:4:4 crop in luma samples; 4:2:2 and 4:2:0 in chroma
/// samples.
fn chroma_subsampling(separate_colour_plane: bool, chroma_format_idc: u32) -> (u64, u64) {
    match (separate_colour_plane, chroma_format_idc) {
        (true, _) | (_, 0) | (_, 3) => (1, 1),
        (_, 2) => (2, 1),
        _ => (2, 2),
    }
}

fn skip_scaling_list(r: &mut Bits, size: usize) -> Option<()> {
    let (mut last, mut next) = (8i64, 8i64);
    for _ in 0..size {
        if next != 0 {
            let delta = r.se()?;
            next = (last + delta).rem_euclid(256);
        }
        if next != 0 {
            last = next;
        }
    }
    Some(())
}

/// A picture size worth reporting: both sides from 1 to 65536.
fn dimensions(width: u64, height: u64) -> Option<(u32, u32)> {
    let ok = |n: u64| (1..=65_536).contains(&n);
    (ok(width) && ok(height)).then_some((width as u32, height as u32))
}

/// NAL units with `len`-byte big-endian lengths (4 when unknown), until one does not fit.
fn nal_units(mut data: &[u8], len: usize) -> impl Iterator<Item = &[u8]> {
    let len = if (1..=4).contains(&len) { len } else { 4 };
    std::iter::from_fn(move || {
        let size = data
            .get(..len)?
            .iter()
            .fold(0usize, |n, b| (n << 8) | usize::from(*b));
        let unit = data.get(len..len.checked_add(size)?)?;
        data = &data[len + size..];
        Some(unit)
    })
}

// ---------------------------------------------------------------------------------------
// HEVC.

/// The size in the SPS (NAL type 33) of an HEVCDecoderConfigurationRecord.
fn hevc_config_size(record: &[u8]) -> Option<(u32, u32)> {
    if *record.first()? != 1 {
        return None;
    }
    let arrays = *record.get(22)?;
    let mut at = 23;
    for _ in 0..arrays {
        let nal_type = *record.get(at)? & 0x3F;
        let count = u16::from_be_bytes([*record.get(at + 1)?, *record.get(at + 2)?]);
        at += 3;
        for _ in 0..count {
            let len = usize::from(u16::from_be_bytes([*record.get(at)?, *record.get(at + 1)?]));
            let nal = record.get(at + 2..at + 2 + len)?;
            at += 2 + len;
            if nal_type == 33 {
                if let Some(size) = h265_sps_size(nal) {
                    return Some(size);
                }
            }
        }
    }
    None
}

/// Width and height (conformance window applied) of an HEVC SPS NAL unit (2-byte header
/// included), base layer only.
fn h265_sps_size(nal: &[u8]) -> Option<(u32, u32)> {
    let header = nal.get(..2)?;
    let nal_type = (header[0] >> 1) & 0x3F;
    let layer = ((header[0] & 1) << 5) | (header[1] >> 3);
    if nal_type != 33 || layer != 0 {
        return None;
    }
    let mut r = Bits::rbsp(&nal[2..]);
    r.skip(4)?; // sps_video_parameter_set_id
    let max_sub_layers_minus1 = r.bits(3)?;
    r.skip(1)?; // sps_temporal_id_nesting_flag
                // profile_tier_level(1, max_sub_layers_minus1): the general profile (88 bits) and level
                // (8), then which sub-layers carry their own.
    r.skip(88 + 8)?;
    let mut sub_layers = [(false, false); 8];
    for sub in sub_layers.iter_mut().take(max_sub_layers_minus1 as usize) {
        *sub = (r.flag()?, r.flag()?);
    }
    if max_sub_layers_minus1 > 0 {
        r.skip(2 * (8 - max_sub_layers_minus1))?; // reserved_zero_2bits
    }
    for &(profile, level) in sub_layers.iter().take(max_sub_layers_minus1 as usize) {
        if profile {
            r.skip(88)?;
        }
        if level {
            r.skip(8)?;
        }
    }
    r.ue()?; // sps_seq_parameter_set_id
    let chroma_format_idc = r.ue()?;
    if chroma_format_idc > 3 {
        return None;
    }
    let separate_colour_plane = chroma_format_idc == 3 && r.flag()?;
    let width = u64::from(r.ue()?);
    let height = u64::from(r.ue()?);
    // conformance_window_flag and its offsets.
    let (left, right, top, bottom) = crop_window(&mut r)?;
    let (sub_width, sub_height) = chroma_subsampling(separate_colour_plane, chroma_format_idc);
    dimensions(
        width.checked_sub(sub_width * (left + right))?,
        height.checked_sub(sub_height * (top + bottom))?,
    )
}

// ---------------------------------------------------------------------------------------
// AV1.

/// The maximum frame size in the first sequence header OBU of `data` (OBUs in the low
/// overhead format: an AV1CodecConfigurationRecord's configOBUs, a temporal unit).
fn av1_obus_size(mut data: &[u8]) -> Option<(u32, u32)> {
    // Bounded: each OBU takes at least one byte.
    while let Some(&header) = data.first() {
        if header & 0x80 != 0 {
            return None; // forbidden bit
        }
        let obu_type = (header >> 3) & 0x0F;
        let mut at = 1 + usize::from(header & 0x04 != 0);
        let size = if header & 0x02 != 0 {
            let (size, used) = leb128(data.get(at..)?)?;
            at += used;
            size
        } else {
            data.len().checked_sub(at)?
        };
        let end = at.checked_add(size)?;
        let payload = data.get(at..end)?;
        if obu_type == 1 {
            return av1_sequence_header_size(payload);
        }
        data = &data[end..];
    }
    None
}

/// max_frame_width/height of a sequence header OBU's payload (AV1 spec 5.5).
fn av1_sequence_header_size(payload: &[u8]) -> Option<(u32, u32)> {
    let mut r = Bits::new(payload);
    r.skip(3)?; // seq_profile
    r.skip(1)?; // still_picture
    if r.flag()? {
        // reduced_still_picture_header
        r.skip(5)?; // seq_level_idx[0]
    } else {
        let mut decoder_model_info = false;
        let mut buffer_delay_length = 0;
        if r.flag()? {
            // timing_info_present_flag: timing_info()
            r.skip(32 + 32)?; // num_units_in_display_tick, time_scale
            if r.flag()? {
                // equal_picture_interval: num_ticks_per_picture_minus_1, uvlc()
                let mut zeros = 0;
                while !r.bit()? {
                    zeros += 1;
                    if zeros >= 32 {
                        break;
                    }
                }
                if zeros < 32 {
                    r.skip(zeros)?;
                }
            }
            decoder_model_info = r.flag()?;
            if decoder_model_info {
                buffer_delay_length = r.bits(5)? + 1;
                r.skip(32 + 5 + 5)?; // num_units_in_decoding_tick, two lengths
            }
        }
        let initial_display_delay = r.flag()?;
        let operating_points = r.bits(5)? + 1;
        for _ in 0..operating_points {
            r.skip(12)?; // operating_point_idc
            if r.bits(5)? > 7 {
                // seq_level_idx
                r.skip(1)?; // seq_tier
            }
            if decoder_model_info && r.flag()? {
                // operating_parameters_info: two delays and low_delay_mode_flag
                r.skip(2 * buffer_delay_length + 1)?;
            }
            if initial_display_delay && r.flag()? {
                r.skip(4)?;
            }
        }
    }
    let width_bits = r.bits(4)? + 1;
    let height_bits = r.bits(4)? + 1;
    let width = u64::from(r.bits(width_bits)?) + 1;
    let height = u64::from(r.bits(height_bits)?) + 1;
    dimensions(width, height)
}

// ---------------------------------------------------------------------------------------
// VP9.

/// The frame size in a VP9 keyframe's uncompressed header (VP9 spec 6.2).
fn vp9_frame_size(frame: &[u8]) -> Option<(u32, u32)> {
    let mut r = Bits::new(frame);
    if r.bits(2)? != 2 {
        return None; // frame_marker
    }
    let low = r.bits(1)?;
    let profile = (r.bits(1)? << 1) | low;
    if profile == 3 {
        r.skip(1)?;
    }
    if r.flag()? {
        return None; // show_existing_frame
    }
    if r.flag()? {
        return None; // frame_type: not a keyframe
    }
    r.skip(2)?; // show_frame, error_resilient_mode
    if r.bits(24)? != 0x49_83_42 {
        return None;
    }
    // color_config()
    if profile >= 2 {
        r.skip(1)?; // ten_or_twelve_bit
    }
    let color_space = r.bits(3)?;
    if color_space != 7 {
        r.skip(1)?; // color_range
        if profile == 1 || profile == 3 {
            r.skip(3)?; // subsampling_x, subsampling_y, reserved_zero
        }
    } else if profile == 1 || profile == 3 {
        r.skip(1)?; // reserved_zero
    }
    let width = u64::from(r.bits(16)?) + 1;
    let height = u64::from(r.bits(16)?) + 1;
    dimensions(width, height)
}

// ---------------------------------------------------------------------------------------
// Audio headers.

const AAC_RATES: [u32; 13] = [
    96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
];
/// Channels of each AAC channel configuration (0: in a program config element, not read).
const AAC_CHANNELS: [u8; 16] = [0, 1, 2, 3, 4, 5, 6, 8, 0, 0, 0, 7, 8, 24, 8, 0];

/// Sample rate and channels of an AudioSpecificConfig (ISO 14496-3 1.6.2.1). With explicit
/// SBR/PS signalling (object type 5 or 29) the output rate of the extension, and stereo for
/// PS, as a decoder reports them.
fn aac_config(asc: &[u8]) -> Option<(Option<u32>, Option<u8>)> {
    let mut r = Bits::new(asc);
    let object = aac_object_type(&mut r)?;
    let mut rate = aac_rate(&mut r)?;
    let config = r.bits(4)?;
    let mut channels = Some(AAC_CHANNELS[config as usize]).filter(|c| *c != 0);
    if matches!(object, 5 | 29) {
        if let Some(ext) = aac_rate(&mut r) {
            rate = ext;
        }
        if object == 29 && channels == Some(1) {
            channels = Some(2);
        }
    }
    if object == 0 || (rate.is_none() && channels.is_none()) {
        return None;
    }
    Some((rate, channels))
}

fn aac_object_type(r: &mut Bits) -> Option<u32> {
    match r.bits(5)? {
        31 => Some(32 + r.bits(6)?),
        t => Some(t),
    }
}

/// A sampling frequency index, or 15 and an explicit 24-bit rate. `Some(None)`: a reserved
/// index.
fn aac_rate(r: &mut Bits) -> Option<Option<u32>> {
    match r.bits(4)? {
        15 => Some(Some(r.bits(24)?).filter(|r| *r > 0)),
        i => Some(AAC_RATES.get(i as usize).copied()),
    }
}

/// Channels of an OpusHead (RFC 7845 5.1); Opus decodes at 48 kHz whatever the input rate.
fn opus_head_channels(head: &[u8]) -> Option<u8> {
    if head.get(..8)? != b"OpusHead" {
        return None;
    }
    head.get(9).copied().filter(|c| *c > 0)
}

/// Sample rate and channels of FLAC's STREAMINFO: with or without the `fLaC` marker and the
/// metadata block header before it.
fn flac_stream_info(data: &[u8]) -> Option<(u32, u8)> {
    let mut info = data;
    if info.starts_with(b"fLaC") {
        info = &info[4..];
    }
    if info.len() >= 38 && info[0] & 0x7F == 0 && info[1..4] == [0, 0, 34] {
        info = &info[4..];
    }
    let info = info.get(..34)?;
    let rate = (u32::from(info[10]) << 12) | (u32::from(info[11]) << 4) | u32::from(info[12] >> 4);
    let channels = ((info[12] >> 1) & 0x07) + 1;
    (rate > 0).then_some((rate, channels))
}

/// Layer, sample rate and channels of an MPEG audio frame header.
fn mpeg_audio_header(frame: &[u8]) -> Option<(u8, u32, u8)> {
    let h = frame.get(..4)?;
    if h[0] != 0xFF || h[1] & 0xE0 != 0xE0 {
        return None;
    }
    let version = (h[1] >> 3) & 3; // 0 MPEG-2.5, 1 reserved, 2 MPEG-2, 3 MPEG-1
    let layer = match (h[1] >> 1) & 3 {
        1 => 3,
        2 => 2,
        3 => 1,
        _ => return None,
    };
    let base = [44100, 48000, 32000]
        .get(usize::from((h[2] >> 2) & 3))
        .copied()?;
    let rate = match version {
        3 => base,
        2 => base / 2,
        0 => base / 4,
        _ => return None,
    };
    let channels = if h[3] >> 6 == 3 { 1 } else { 2 };
    Some((layer, rate, channels))
}

/// Sample rate and channels (LFE included) of an AC-3 or E-AC-3 syncframe.
fn ac3_header(frame: &[u8]) -> Option<(u32, u8)> {
    if frame.get(..2)? != [0x0B, 0x77] {
        return None;
    }
    let bsid = *frame.get(5)? >> 3;
    let mut r = Bits::new(frame.get(2..)?);
    let (rate, acmod) = if bsid <= 10 {
        // AC-3: crc1 (16), fscod (2), frmsizecod (6), bsid (5), bsmod (3), acmod (3)
        r.skip(16)?;
        let rate = [48000, 44100, 32000].get(r.bits(2)? as usize).copied()?;
        r.skip(6 + 5 + 3)?;
        let acmod = r.bits(3)?;
        // cmixlev, surmixlev, dsurmod, each present for some channel layouts
        if acmod & 1 != 0 && acmod != 1 {
            r.skip(2)?;
        }
        if acmod & 4 != 0 {
            r.skip(2)?;
        }
        if acmod == 2 {
            r.skip(2)?;
        }
        (rate, acmod)
    } else if (11..=16).contains(&bsid) {
        // E-AC-3: strmtyp (2), substreamid (3), frmsiz (11), fscod (2), fscod2 or
        // numblkscod (2), acmod (3)
        r.skip(2 + 3 + 11)?;
        let rate = match r.bits(2)? {
            3 => [24000, 22050, 16000].get(r.bits(2)? as usize).copied()?,
            i => {
                r.skip(2)?;
                [48000, 44100, 32000][i as usize]
            }
        };
        (rate, r.bits(3)?)
    } else {
        return None;
    };
    let channels = [2, 1, 2, 3, 3, 4, 4, 5][acmod as usize] + u8::from(r.flag()?);
    Some((rate, channels))
}

#[cfg(test)]
mod tests {
    //! Bitstreams are made in the test by the machine's ffmpeg (Debian package ffmpeg, with
    //! libx264, libx265, libaom, libvpx, libmp3lame, libopus): FLV where ffmpeg 5.1 writes it
    //! (H.264, AAC, MP3, G.711, LPCM, FLV1), elsewhere raw streams (Annex B HEVC, AV1 OBUs,
    //! IVF, Ogg, raw FLAC/AC-3/E-AC-3) whose parameter sets are put into Enhanced RTMP tags
    //! as a publisher would. A few syntax paths no encoder here writes (AV1 timing and
    //! decoder model info, reduced still picture headers, AAC escapes) are written bit by
    //! bit from the specifications.
    use super::*;
    use crate::relay::flv::Parser;
    use bytes::Bytes;
    use proptest::prelude::*;
    use std::process::{Command, Stdio};

    fn ffmpeg(args: &[&str]) -> Vec<u8> {
        let out = Command::new("ffmpeg")
            .args(["-hide_banner", "-nostdin", "-loglevel", "error"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("ffmpeg (Debian package ffmpeg) runs");
        assert!(
            out.status.success(),
            "ffmpeg {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// One second or less of test picture as `args` encode it to `format` on stdout.
    fn video(size: &str, rate: u32, seconds: f64, args: &[&str], format: &str) -> Vec<u8> {
        // testsrc2 makes even sizes only: scaled to odd ones.
        let source = format!("testsrc2=size={size}:rate={rate},scale=s={size}");
        let t = seconds.to_string();
        let mut all = vec!["-f", "lavfi", "-i", &source, "-t", &t, "-threads", "1"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["-f", format, "-"]);
        ffmpeg(&all)
    }

    fn flv_tags(bytes: &[u8]) -> Vec<Tag> {
        let mut parser = Parser::new();
        parser.push(bytes);
        let mut tags = Vec::new();
        while let Some(tag) = parser.next_tag().expect("ffmpeg writes valid FLV") {
            tags.push(tag);
        }
        tags
    }

    fn tracked(tags: &[Tag]) -> ShapeTracker {
        let mut t = ShapeTracker::new();
        for tag in tags {
            t.push(tag);
        }
        t
    }

    fn tag(kind: Kind, timestamp: u32, parts: &[&[u8]]) -> Tag {
        Tag {
            kind,
            timestamp,
            payload: Bytes::from(parts.concat()),
        }
    }

    /// NAL units of an Annex B stream (start codes removed).
    fn annex_b(stream: &[u8]) -> Vec<&[u8]> {
        let mut starts = Vec::new();
        let mut i = 0;
        while i + 3 <= stream.len() {
            if stream[i..i + 3] == [0, 0, 1] {
                starts.push(i + 3);
                i += 3;
            } else {
                i += 1;
            }
        }
        starts
            .iter()
            .enumerate()
            .map(|(k, &s)| {
                let mut end = starts.get(k + 1).map_or(stream.len(), |n| n - 3);
                while end > s && stream[end - 1] == 0 {
                    end -= 1; // the leading zero of a 4-byte start code
                }
                &stream[s..end]
            })
            .collect()
    }

    fn length_prefixed(nals: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for n in nals {
            out.extend_from_slice(&(n.len() as u32).to_be_bytes());
            out.extend_from_slice(n);
        }
        out
    }

    fn avcc(sps: &[u8], pps: &[u8]) -> Vec<u8> {
        let mut out = vec![1, sps[1], sps[2], sps[3], 0xFF, 0xE1];
        out.extend_from_slice(&(sps.len() as u16).to_be_bytes());
        out.extend_from_slice(sps);
        out.push(1);
        out.extend_from_slice(&(pps.len() as u16).to_be_bytes());
        out.extend_from_slice(pps);
        out
    }

    /// An HEVCDecoderConfigurationRecord: the 22 fixed bytes (only the version and the
    /// length size matter here), then one array per parameter set.
    fn hvcc(sets: &[&[u8]]) -> Vec<u8> {
        let mut out = vec![1];
        out.extend_from_slice(&[0; 20]);
        out.push(0x0F); // lengthSizeMinusOne 3
        out.push(sets.len() as u8);
        for s in sets {
            out.push(0x80 | ((s[0] >> 1) & 0x3F));
            out.extend_from_slice(&1u16.to_be_bytes());
            out.extend_from_slice(&(s.len() as u16).to_be_bytes());
            out.extend_from_slice(s);
        }
        out
    }

    fn nal_type_h264(n: &[u8]) -> u8 {
        n[0] & 0x1F
    }

    fn nal_type_h265(n: &[u8]) -> u8 {
        (n[0] >> 1) & 0x3F
    }

    /// Writes bits MSB first, for syntax no encoder here produces (wider than 64 bits: zeros
    /// first).
    #[derive(Default)]
    struct BitWriter {
        out: Vec<u8>,
        bits: usize,
    }

    impl BitWriter {
        fn put(&mut self, n: u32, value: u64) -> &mut Self {
            for i in (0..n).rev() {
                if self.bits.is_multiple_of(8) {
                    self.out.push(0);
                }
                if i < 64 && (value >> i) & 1 == 1 {
                    *self.out.last_mut().unwrap() |= 0x80 >> (self.bits % 8);
                }
                self.bits += 1;
            }
            self
        }

        fn ue(&mut self, v: u32) -> &mut Self {
            let code = u64::from(v) + 1;
            let n = 64 - code.leading_zeros();
            self.put(n - 1, 0).put(n, code)
        }

        fn se(&mut self, v: i32) -> &mut Self {
            self.ue(if v > 0 {
                2 * v as u32 - 1
            } else {
                2 * v.unsigned_abs()
            })
        }

        fn bytes(&mut self) -> Vec<u8> {
            std::mem::take(&mut self.out)
        }
    }

    fn obu(obu_type: u8, payload: &[u8]) -> Vec<u8> {
        assert!(payload.len() < 128);
        let mut out = vec![(obu_type << 3) | 0x02, payload.len() as u8];
        out.extend_from_slice(payload);
        out
    }

    fn size(v: &Option<Video>) -> (Option<u32>, Option<u32>) {
        let v = v.as_ref().expect("video");
        (v.width, v.height)
    }

    #[test]
    fn h264_aac_720p30_stereo_as_the_system_test_publishes_it() {
        // B-frames (ultrafast alone has none), a 2 s GOP, AAC at 48 kHz stereo: 3 s.
        let bytes = ffmpeg(&[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=1280x720:rate=30",
            "-f",
            "lavfi",
            "-i",
            "sine=sample_rate=48000",
            "-ac",
            "2",
            "-t",
            "3",
            "-threads",
            "1",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-bf",
            "2",
            "-g",
            "60",
            "-c:a",
            "aac",
            "-b:a",
            "128k",
            "-f",
            "flv",
            "-",
        ]);
        let tags = flv_tags(&bytes);
        assert!(
            tags.iter()
                .any(|t| t.kind == Kind::Video && t.payload[1] == 1 && t.payload[2..5] != [0; 3]),
            "the stream has B-frames (non-zero composition times)"
        );
        let shape = tracked(&tags).shape();
        let v = shape.video.clone().expect("video");
        assert_eq!(v.codec, "H.264");
        assert_eq!(
            (v.width, v.height, v.fps),
            (Some(1280), Some(720), Some(30.0))
        );
        let video_bits: usize = tags
            .iter()
            .filter(|t| t.kind == Kind::Video)
            .map(|t| t.payload.len() * 8)
            .sum();
        let bitrate = v.bitrate.expect("video bitrate") as f64;
        assert!(
            bitrate > video_bits as f64 / 3.0 * 0.5 && bitrate < video_bits as f64 / 3.0 * 2.0,
            "{bitrate} vs {video_bits} bits in 3 s"
        );
        let a = shape.audio.clone().expect("audio");
        assert_eq!(
            (a.codec.as_str(), a.sample_rate, a.channels),
            ("AAC", Some(48000), Some(2))
        );
        let audio_rate = a.bitrate.expect("audio bitrate");
        assert!((100_000..180_000).contains(&audio_rate), "{audio_rate}");

        // The size and format come from the headers, not from onMetaData.
        let no_meta: Vec<Tag> = tags
            .iter()
            .filter(|t| t.kind != Kind::Script)
            .cloned()
            .collect();
        assert_eq!(tracked(&no_meta).shape(), shape);

        // The same stream in Enhanced RTMP framing (`avc1`, `mp4a`).
        let enhanced: Vec<Tag> = no_meta
            .iter()
            .map(|t| {
                let p = &t.payload;
                match t.kind {
                    Kind::Video if p[1] == 2 => tag(Kind::Video, t.timestamp, &[&[0x92], b"avc1"]),
                    Kind::Video if p[1] == 0 => {
                        tag(Kind::Video, t.timestamp, &[&[0x90], b"avc1", &p[5..]])
                    }
                    Kind::Video => {
                        let head = 0x80 | (p[0] & 0xF0) | 1; // CodedFrames
                        tag(Kind::Video, t.timestamp, &[&[head], b"avc1", &p[2..]])
                    }
                    _ => {
                        let head = 0x90 | if p[1] == 0 { 0 } else { 1 };
                        tag(Kind::Audio, t.timestamp, &[&[head], b"mp4a", &p[2..]])
                    }
                }
            })
            .collect();
        // Enhanced framing takes a few more bytes per tag: the same but for the bitrates.
        let mut ex = tracked(&enhanced).shape();
        let (ex_video, ex_audio) = (ex.video.as_mut().unwrap(), ex.audio.as_mut().unwrap());
        let ratio = ex_video.bitrate.unwrap() as f64 / v.bitrate.unwrap() as f64;
        assert!((1.0..1.01).contains(&ratio), "{ratio}");
        let ratio = ex_audio.bitrate.unwrap() as f64 / a.bitrate.unwrap() as f64;
        assert!((1.0..1.02).contains(&ratio), "{ratio}");
        (ex_video.bitrate, ex_audio.bitrate) = (v.bitrate, a.bitrate);
        assert_eq!(ex, shape);

        let json = serde_json::to_value(&shape).unwrap();
        assert_eq!(json["video"]["width"], 1280);
        assert_eq!(json["video"]["fps"], 30.0);
        assert_eq!(json["audio"]["sample_rate"], 48000);
        assert_eq!(json["audio"]["channels"], 2);
    }

    #[test]
    fn h264_sizes_with_cropping_chroma_formats_and_fields() {
        let cases: &[(&str, &[&str], (u32, u32))] = &[
            // 1088 coded, cropped to 1080.
            ("1920x1080", &["-pix_fmt", "yuv420p"], (1920, 1080)),
            ("854x480", &["-pix_fmt", "yuv420p"], (854, 480)),
            // High 4:4:4 (chroma_format_idc 3): cropping in luma samples, odd sizes.
            ("321x241", &["-pix_fmt", "yuv444p"], (321, 241)),
            // High 4:2:2 (chroma_format_idc 2).
            ("642x362", &["-pix_fmt", "yuv422p"], (642, 362)),
            // Monochrome (chroma_format_idc 0).
            ("321x241", &["-pix_fmt", "gray"], (321, 241)),
            // Interlaced: frame_mbs_only_flag 0, height in field map units.
            (
                "1920x1080",
                &["-pix_fmt", "yuv420p", "-x264-params", "interlaced=1"],
                (1920, 1080),
            ),
        ];
        for (dims, args, want) in cases {
            let mut all = vec!["-frames:v", "1", "-c:v", "libx264", "-preset", "ultrafast"];
            all.extend_from_slice(args);
            let stream = video(dims, 30, 1.0, &all, "h264");
            let nals = annex_b(&stream);
            let sps = nals.iter().find(|n| nal_type_h264(n) == 7).expect("an SPS");
            let pps = nals.iter().find(|n| nal_type_h264(n) == 8).expect("a PPS");
            assert_eq!(h264_sps_size(sps), Some(*want), "{dims} {args:?}");
            let record = avcc(sps, pps);
            assert_eq!(avc_config_size(&record), Some(*want), "{dims} {args:?}");
            let t = tracked(&[tag(Kind::Video, 0, &[&[0x17, 0, 0, 0, 0], &record])]);
            assert_eq!(size(&t.shape().video), (Some(want.0), Some(want.1)));
        }
    }

    /// x264 writes its matrices into the PPS: an SPS with scaling lists (one explicit 4x4,
    /// one 8x8 falling back to the default after a few values), picture order count type 1,
    /// and an emulation prevention byte, written by hand.
    #[test]
    fn h264_sps_with_scaling_lists_and_poc_type_1() {
        let mut w = BitWriter::default();
        w.put(8, 100).put(8, 0).put(8, 40).ue(0); // High, level 4.0, sps id
        w.ue(1).ue(0).ue(0).put(1, 0); // 4:2:0, 8 bits, no bypass
        w.put(1, 1); // seq_scaling_matrix_present_flag
        for i in 0..8 {
            match i {
                0 => {
                    w.put(1, 1);
                    for d in [8, -3, 5, 0, 1, -1, 2, 0, 0, 4, -8, 3, 0, 0, 1, 1] {
                        w.se(d);
                    }
                }
                6 => {
                    // nextScale 0 after three values: the rest of the list is implied.
                    w.put(1, 1).se(4).se(-2).se(-10);
                }
                _ => {
                    w.put(1, 0);
                }
            }
        }
        w.ue(0).ue(1).put(1, 0).se(-2).se(1).ue(2).se(3).se(-4); // frame num, POC type 1
        w.ue(0).put(1, 0).ue(0).ue(0); // refs, gaps, 16x16 (no zero bytes yet)
        w.put(1, 1).put(1, 1).put(1, 0).put(1, 0); // frame_mbs_only, direct 8x8, no crop, no VUI
        let rbsp = w.bytes();
        let mut nal = vec![0x67];
        nal.extend_from_slice(&rbsp);
        assert_eq!(h264_sps_size(&nal), Some((16, 16)));
        // Wider: 1280x720 with its zero bytes escaped.
        let mut w = BitWriter::default();
        // Baseline; sps id, frame num, POC type 0 and its lsb, refs, gaps
        w.put(8, 66).put(8, 0).put(8, 0);
        w.ue(0).ue(0).ue(0).ue(0).ue(1).put(1, 0);
        w.ue(79).ue(44).put(1, 1).put(1, 1).put(1, 0).put(1, 0);
        let rbsp = w.bytes();
        assert_eq!(
            rbsp[1..3],
            [0, 0],
            "two zero bytes (level 0, ...) to escape"
        );
        let mut nal = vec![0x67, rbsp[0], 0, 0, 3];
        nal.extend_from_slice(&rbsp[3..]);
        assert_eq!(h264_sps_size(&nal), Some((1280, 720)));
    }

    #[test]
    fn hevc_sizes_from_the_configuration_record_and_from_keyframes() {
        let cases: &[(&str, &str, (u32, u32))] = &[
            ("640x360", "log-level=error", (640, 360)),
            // 362 is coded as 368: a conformance window.
            ("642x362", "log-level=error", (642, 362)),
            // 4:4:4 (Main 4:4:4), odd sizes.
            ("321x241", "log-level=error", (321, 241)),
            // A temporal sub-layer: sub-layer flags in profile_tier_level.
            (
                "1280x720",
                "log-level=error:temporal-layers=1:bframes=3",
                (1280, 720),
            ),
        ];
        for (dims, params, want) in cases {
            let pix = if *dims == "321x241" {
                "yuv444p"
            } else {
                "yuv420p"
            };
            let stream = video(
                dims,
                30,
                1.0,
                &[
                    "-frames:v",
                    "1",
                    "-pix_fmt",
                    pix,
                    "-c:v",
                    "libx265",
                    "-x265-params",
                    params,
                ],
                "hevc",
            );
            let nals = annex_b(&stream);
            let find = |t: u8| {
                *nals
                    .iter()
                    .find(|n| nal_type_h265(n) == t)
                    .expect("VPS/SPS/PPS")
            };
            let (vps, sps, pps) = (find(32), find(33), find(34));
            if params.contains("temporal") {
                assert!((sps[2] >> 1) & 7 > 0, "sps_max_sub_layers_minus1 > 0");
            }
            assert_eq!(h265_sps_size(sps), Some(*want), "{dims}");
            let record = hvcc(&[vps, sps, pps]);
            // Enhanced RTMP `hvc1` SequenceStart, and legacy codec id 12.
            for config in [
                tag(Kind::Video, 0, &[&[0x90], b"hvc1", &record]),
                tag(Kind::Video, 0, &[&[0x1C, 0, 0, 0, 0], &record]),
            ] {
                let shape = tracked(&[config]).shape();
                assert_eq!(shape.video.as_ref().unwrap().codec, "HEVC");
                assert_eq!(size(&shape.video), (Some(want.0), Some(want.1)), "{dims}");
            }
            // No configuration (or a placeholder), then a keyframe carrying its parameter
            // sets in band, as MediaMTX relays SRT: MediaMTX writes frame type 0.
            let frame: Vec<&[u8]> = nals
                .iter()
                .copied()
                .filter(|n| nal_type_h265(n) < 40)
                .collect();
            let key = tag(
                Kind::Video,
                0,
                &[&[0x83], b"hvc1", &length_prefixed(&frame)],
            );
            assert!(key.is_keyframe());
            assert_eq!(
                size(&tracked(&[key]).shape().video),
                (Some(want.0), Some(want.1))
            );
        }
    }

    /// An RBSP as a NAL unit carries it: 0x03 after two zero bytes before a byte <= 3.
    fn escaped(rbsp: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut zeros = 0;
        for &b in rbsp {
            if zeros >= 2 && b <= 3 {
                out.push(3);
                zeros = 0;
            }
            out.push(b);
            zeros = if b == 0 { zeros + 1 } else { 0 };
        }
        out
    }

    /// Sub-layers with their own profile and level (which x265 does not write), and a
    /// conformance window, written by hand: all-zero profile fields need escaping.
    #[test]
    fn hevc_sps_with_sub_layer_profiles() {
        let mut w = BitWriter::default();
        w.put(4, 0).put(3, 2).put(1, 1); // vps id, max_sub_layers_minus1 2, nesting
        w.put(88, 0).put(8, 93); // general profile, level 3.1
        w.put(2, 0b11).put(2, 0b01); // sub-layer 0: profile and level; 1: level
        w.put(12, 0); // reserved_zero_2bits for sub-layers 2..8
        w.put(88, 0).put(8, 90).put(8, 90);
        w.ue(0).ue(1).ue(1920).ue(1088); // sps id, 4:2:0, coded size
        w.put(1, 1).ue(0).ue(0).ue(0).ue(4); // conformance window: 8 rows at the bottom
        w.put(8, 0xFF);
        let mut nal = vec![0x42, 0x01];
        let rbsp = w.bytes();
        nal.extend_from_slice(&escaped(&rbsp));
        assert!(
            nal.len() > rbsp.len() + 2,
            "emulation prevention bytes were inserted"
        );
        assert_eq!(h265_sps_size(&nal), Some((1920, 1080)));
        // Another layer's SPS (nuh_layer_id 1) is not the picture's.
        nal[1] = 0x09;
        assert_eq!(h265_sps_size(&nal), None);
    }

    #[test]
    fn av1_sizes_from_the_sequence_header() {
        let stream = video(
            "426x240",
            30,
            1.0,
            &["-frames:v", "1", "-c:v", "libaom-av1", "-cpu-used", "8"],
            "obu",
        );
        // A temporal delimiter, then the sequence header OBU.
        let mut at = 0;
        let mut seq = None;
        while at < stream.len() {
            let header = stream[at];
            let (len, used) = leb128(&stream[at + 1..]).unwrap();
            if (header >> 3) & 0x0F == 1 {
                seq = Some(stream[at..at + 1 + used + len].to_vec());
            }
            at += 1 + used + len;
        }
        let seq = seq.expect("a sequence header OBU");
        assert_eq!(av1_obus_size(&stream), Some((426, 240)));
        let record = [&[0x81, 0x00, 0x0C, 0x00][..], &seq].concat();
        let config = tag(Kind::Video, 0, &[&[0x90], b"av01", &record]);
        let shape = tracked(std::slice::from_ref(&config)).shape();
        assert_eq!(shape.video.as_ref().unwrap().codec, "AV1");
        assert_eq!(size(&shape.video), (Some(426), Some(240)));

        // A placeholder configuration of another size, then the stream's keyframe (frame
        // type 0, as MediaMTX writes it): the keyframe's sequence header wins.
        let mut w = BitWriter::default();
        w.put(3, 0).put(1, 0).put(1, 1).put(5, 8); // profile, still, reduced, level
        w.put(4, 10).put(4, 10).put(11, 1919).put(11, 1079);
        let placeholder = [&[0x81, 0x08, 0x0C, 0x00][..], &obu(1, &w.bytes())].concat();
        let t = tracked(&[
            tag(Kind::Video, 0, &[&[0x90], b"av01", &placeholder]),
            tag(Kind::Video, 0, &[&[0x81], b"av01", &stream]),
        ]);
        assert_eq!(size(&t.shape().video), (Some(426), Some(240)));
        // An MPEG2TSSequenceStart (a TS descriptor) leaves the size alone.
        let mut t = t;
        t.push(&tag(
            Kind::Video,
            40,
            &[&[0x95], b"av01", &[0x80, 4, 0x81, 0, 0x0C, 0]],
        ));
        assert!(tag(Kind::Video, 40, &[&[0x95], b"av01"]).is_sequence_header());
        assert_eq!(size(&t.shape().video), (Some(426), Some(240)));
    }

    #[test]
    fn av1_sequence_headers_with_timing_decoder_models_and_operating_points() {
        // reduced_still_picture_header: the level, then the size.
        let mut w = BitWriter::default();
        w.put(3, 0).put(1, 1).put(1, 1).put(5, 8);
        w.put(4, 11).put(4, 10).put(12, 4031).put(11, 2047);
        assert_eq!(av1_sequence_header_size(&w.bytes()), Some((4032, 2048)));

        // Timing info with equal_picture_interval (uvlc), a decoder model, initial display
        // delays, and two operating points (the second with a tier bit).
        let mut w = BitWriter::default();
        w.put(3, 0).put(1, 0).put(1, 0);
        w.put(1, 1).put(32, 1).put(32, 30).put(1, 1).put(5, 0b00101); // uvlc 4
        w.put(1, 1).put(5, 9).put(32, 1).put(5, 31).put(5, 31); // decoder model, delays of 10 bits
        w.put(1, 1).put(5, 1); // initial_display_delay_present, two operating points
                               // op 0: idc, level 4 (no tier), decoder model present + its parameters, a delay
        w.put(12, 0x101)
            .put(5, 4)
            .put(1, 1)
            .put(10, 5)
            .put(10, 6)
            .put(1, 0)
            .put(1, 1)
            .put(4, 9);
        // op 1: level 9 (a tier bit), no decoder model, no delay
        w.put(12, 0x103).put(5, 9).put(1, 1).put(1, 0).put(1, 0);
        w.put(4, 9).put(4, 8).put(10, 639).put(9, 359);
        let payload = w.bytes();
        assert_eq!(av1_sequence_header_size(&payload), Some((640, 360)));
        // The same OBU without a size field (it runs to the end), after an extension byte.
        let mut unsized_obu = vec![(1 << 3) | 0x04, 0];
        unsized_obu.extend_from_slice(&payload);
        assert_eq!(av1_obus_size(&unsized_obu), Some((640, 360)));
        // Cut anywhere: no size, no panic.
        for cut in 0..payload.len() - 1 {
            assert_eq!(av1_sequence_header_size(&payload[..cut]), None, "{cut}");
        }
    }

    #[test]
    fn vp9_sizes_from_the_first_keyframe() {
        for (pix, dims, want) in [
            ("yuv420p", "426x240", (426, 240)),
            ("yuv444p", "321x241", (321, 241)),
        ] {
            let ivf = video(
                dims,
                30,
                1.0,
                &[
                    "-frames:v",
                    "1",
                    "-pix_fmt",
                    pix,
                    "-c:v",
                    "libvpx-vp9",
                    "-deadline",
                    "realtime",
                    "-cpu-used",
                    "8",
                ],
                "ivf",
            );
            // IVF: a 32-byte file header, then 12-byte frame headers (size, pts).
            let len = u32::from_le_bytes(ivf[32..36].try_into().unwrap()) as usize;
            let frame = &ivf[44..44 + len];
            assert_eq!(vp9_frame_size(frame), Some(want), "{pix}");
            // The configuration record (vpcC) has no size; the keyframe does.
            let config = tag(
                Kind::Video,
                0,
                &[&[0x90], b"vp09", &[1, 0, 0x82, 1, 1, 1, 0, 0]],
            );
            let mut t = tracked(std::slice::from_ref(&config));
            let shape = t.shape();
            assert_eq!(shape.video.as_ref().unwrap().codec, "VP9");
            assert_eq!(size(&shape.video), (None, None));
            t.push(&tag(Kind::Video, 0, &[&[0x91], b"vp09", frame]));
            assert_eq!(size(&t.shape().video), (Some(want.0), Some(want.1)));
        }
    }

    fn audio_flv(args: &[&str]) -> Vec<Tag> {
        let mut all = vec!["-f", "lavfi", "-i", "sine=sample_rate=48000", "-t", "0.3"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["-f", "flv", "-"]);
        flv_tags(&ffmpeg(&all))
            .into_iter()
            .filter(|t| t.kind == Kind::Audio)
            .collect()
    }

    fn audio(t: &ShapeTracker) -> (String, Option<u32>, Option<u8>) {
        let a = t.shape().audio.expect("audio");
        (a.codec, a.sample_rate, a.channels)
    }

    #[test]
    fn legacy_audio_formats() {
        // MPEG-2 Layer III at 22.05 kHz, mono: from the frame header.
        let mp3 = audio_flv(&["-c:a", "libmp3lame", "-ar", "22050", "-ac", "1"]);
        assert_eq!(audio(&tracked(&mp3)), ("MP3".into(), Some(22050), Some(1)));
        // The same frames as Enhanced RTMP `.mp3`.
        let ex: Vec<Tag> = mp3
            .iter()
            .map(|t| {
                tag(
                    Kind::Audio,
                    t.timestamp,
                    &[&[0x91], b".mp3", &t.payload[1..]],
                )
            })
            .collect();
        assert_eq!(audio(&tracked(&ex)), ("MP3".into(), Some(22050), Some(1)));
        // An MPEG-1 Layer II frame header says MP2.
        let mp2 = tag(Kind::Audio, 0, &[&[0x2F, 0xFF, 0xFD, 0x44, 0x00]]);
        assert_eq!(
            audio(&tracked(&[mp2])),
            ("MP2".into(), Some(48000), Some(2))
        );

        let alaw = audio_flv(&["-c:a", "pcm_alaw", "-ar", "8000", "-ac", "1"]);
        assert_eq!(
            audio(&tracked(&alaw)),
            ("G.711 A-law".into(), Some(8000), Some(1))
        );
        let lpcm = audio_flv(&["-c:a", "pcm_s16le", "-ar", "44100", "-ac", "2"]);
        assert_eq!(
            audio(&tracked(&lpcm)),
            ("LPCM".into(), Some(44100), Some(2))
        );
    }

    #[test]
    fn enhanced_rtmp_audio_formats() {
        let sine = |rate: &str, channels: &str, args: &[&str], format: &str| {
            let source = format!("sine=sample_rate={rate}");
            let mut all = vec!["-f", "lavfi", "-i", &source, "-t", "0.2", "-ac", channels];
            all.extend_from_slice(args);
            all.extend_from_slice(&["-f", format, "-"]);
            ffmpeg(&all)
        };
        // Opus: OpusHead from the first Ogg page; 48 kHz whatever the input rate (24 kHz).
        let ogg = sine("24000", "2", &["-c:a", "libopus"], "ogg");
        let at = ogg.windows(8).position(|w| w == b"OpusHead").unwrap();
        let head = &ogg[at..at + 19];
        assert_eq!(u32::from_le_bytes(head[12..16].try_into().unwrap()), 24000);
        let t = tracked(&[tag(Kind::Audio, 0, &[&[0x90], b"Opus", head])]);
        assert_eq!(audio(&t), ("Opus".into(), Some(48000), Some(2)));

        // FLAC: STREAMINFO with the marker and block header, or bare.
        let flac = sine("44100", "1", &["-c:a", "flac"], "flac");
        for info in [&flac[..42], &flac[8..42]] {
            let t = tracked(&[tag(Kind::Audio, 0, &[&[0x90], b"fLaC", info])]);
            assert_eq!(audio(&t), ("FLAC".into(), Some(44100), Some(1)));
        }

        // AC-3 and E-AC-3: the first syncframe (no configuration needed).
        for (cc, codec, rate, channels, want) in [
            (b"ac-3", "ac3", "48000", "2", 2),
            (b"ac-3", "ac3", "48000", "6", 6),
            (b"ec-3", "eac3", "44100", "2", 2),
        ] {
            let frames = sine(rate, channels, &["-c:a", codec], codec);
            let t = tracked(&[
                tag(Kind::Audio, 0, &[&[0x90], cc]),
                tag(
                    Kind::Audio,
                    0,
                    &[&[0x91], cc, &frames[..frames.len().min(2000)]],
                ),
            ]);
            let name = if codec == "ac3" { "AC-3" } else { "E-AC-3" };
            assert_eq!(
                audio(&t),
                (name.into(), rate.parse().ok(), Some(want)),
                "{codec} {channels}"
            );
        }
    }

    #[test]
    fn aac_audio_specific_configs() {
        // AAC-LC 48 kHz stereo; 44.1 kHz mono.
        assert_eq!(aac_config(&[0x11, 0x90]), Some((Some(48000), Some(2))));
        assert_eq!(aac_config(&[0x12, 0x08]), Some((Some(44100), Some(1))));
        // Object type escape (31 → 32 + 2), explicit 24-bit rate 37800, 5.1.
        let mut w = BitWriter::default();
        w.put(5, 31).put(6, 2).put(4, 15).put(24, 37800).put(4, 6);
        assert_eq!(aac_config(&w.bytes()), Some((Some(37800), Some(6))));
        // HE-AAC v2 (object 29, explicit): core 24 kHz mono, output 48 kHz stereo.
        let mut w = BitWriter::default();
        w.put(5, 29).put(4, 6).put(4, 1).put(4, 3).put(5, 2);
        assert_eq!(aac_config(&w.bytes()), Some((Some(48000), Some(2))));
        // Channels in a program config element: the rate only.
        assert_eq!(aac_config(&[0x11, 0x80]), Some((Some(48000), None)));
        // A reserved rate index and no channels; object type 0; too short.
        assert_eq!(aac_config(&[0x16, 0x80]), None);
        assert_eq!(aac_config(&[0x01, 0x90]), None);
        assert_eq!(aac_config(&[0x11]), None);
    }

    #[test]
    fn metadata_fills_in_what_headers_lack() {
        // FLV1 (Sorenson H.263, FLV codec 2) has no header read here: onMetaData's size.
        let bytes = video("320x240", 30, 2.0, &["-c:v", "flv1"], "flv");
        let tags = flv_tags(&bytes);
        let v = tracked(&tags).shape().video.unwrap();
        assert_eq!(v.codec, "FLV codec 2");
        assert_eq!(
            (v.width, v.height, v.fps),
            (Some(320), Some(240), Some(30.0))
        );

        // As RTMP carries it (@setDataFrame first); fps before anything is measured.
        let meta = amf0::encode_all(&[
            Value::str("@setDataFrame"),
            Value::str("onMetaData"),
            Value::EcmaArray(vec![
                ("width".into(), Value::Number(1920.0)),
                ("height".into(), Value::Number(1080.0)),
                ("framerate".into(), Value::Number(59.94)),
                ("audiosamplerate".into(), Value::Number(44100.0)),
                ("stereo".into(), Value::Boolean(true)),
            ]),
        ]);
        let mut t = ShapeTracker::new();
        t.push(&tag(Kind::Script, 0, &[&meta]));
        assert_eq!(t.shape(), Shape::default(), "no media seen yet");
        // A truncated AVC configuration, AAC without a configuration.
        t.push(&tag(
            Kind::Video,
            0,
            &[&[0x17, 0, 0, 0, 0, 1, 0x64, 0, 0x28, 0xFF, 0xE1, 0, 30, 0x67]],
        ));
        t.push(&tag(Kind::Audio, 0, &[&[0xAF, 1, 0x21]]));
        let s = t.shape();
        let v = s.video.unwrap();
        assert_eq!(
            (v.width, v.height, v.fps, v.bitrate),
            (Some(1920), Some(1080), Some(59.94), None)
        );
        let a = s.audio.unwrap();
        assert_eq!(
            (a.codec.as_str(), a.sample_rate, a.channels),
            ("AAC", Some(44100), Some(2))
        );
        // Other script data and garbage change nothing.
        t.push(&tag(
            Kind::Script,
            0,
            &[&amf0::encode_all(&[Value::str("onCuePoint"), Value::Null])],
        ));
        t.push(&tag(Kind::Script, 0, &[&[0x02, 0xFF]]));
        assert_eq!(t.shape().video.unwrap().width, Some(1920));
    }

    /// `tags` with timestamps moved `by` milliseconds later.
    fn shifted(tags: &[Tag], by: u32) -> Vec<Tag> {
        tags.iter()
            .map(|t| Tag {
                timestamp: t.timestamp + by,
                ..t.clone()
            })
            .collect()
    }

    #[test]
    fn a_new_sequence_header_mid_stream_changes_the_shape() {
        let first = flv_tags(&ffmpeg(&[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=1280x720:rate=30",
            "-f",
            "lavfi",
            "-i",
            "sine=sample_rate=48000",
            "-ac",
            "2",
            "-t",
            "2",
            "-threads",
            "1",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-c:a",
            "aac",
            "-f",
            "flv",
            "-",
        ]));
        let second = flv_tags(&ffmpeg(&[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=640x360:rate=25",
            "-f",
            "lavfi",
            "-i",
            "sine=sample_rate=44100",
            "-ac",
            "1",
            "-t",
            "4",
            "-threads",
            "1",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-c:a",
            "aac",
            "-f",
            "flv",
            "-",
        ]));
        let mut t = tracked(&first);
        let s = t.shape();
        assert_eq!(size(&s.video), (Some(1280), Some(720)));
        assert_eq!(s.video.unwrap().fps, Some(30.0));
        // The next publisher, spliced onto the same timeline (no onMetaData of its own).
        let end = first.iter().map(|t| t.timestamp).max().unwrap() + 40;
        let next: Vec<Tag> = shifted(&second, end)
            .into_iter()
            .filter(|t| t.kind != Kind::Script)
            .collect();
        // At once: the new size and format; the old frame rate until the window has passed.
        for tag in next.iter().take(4) {
            t.push(tag);
        }
        let s = t.shape();
        assert_eq!(size(&s.video), (Some(640), Some(360)));
        let a = s.audio.unwrap();
        assert_eq!((a.sample_rate, a.channels), (Some(44100), Some(1)));
        for tag in &next[4..] {
            t.push(tag);
        }
        assert_eq!(t.shape().video.unwrap().fps, Some(25.0));

        t.reset();
        assert_eq!(t.shape(), Shape::default());
        // After a reset, a stream starting again at timestamp 0.
        for tag in &second {
            t.push(tag);
        }
        assert_eq!(t.shape().video.unwrap().fps, Some(25.0));
    }

    fn frame(kind: Kind, ts: u32, len: usize) -> Tag {
        let head: &[u8] = match kind {
            Kind::Video => &[0x27, 1, 0, 0, 0],
            _ => &[0xAF, 1],
        };
        let mut payload = head.to_vec();
        payload.resize(len, 0);
        tag(kind, ts, &[&payload])
    }

    #[test]
    fn the_window_measures_the_last_seconds_of_timestamps() {
        let mut t = ShapeTracker::new();
        // 29.97 fps in millisecond timestamps, 1000-byte frames: 239 760 bit/s.
        for i in 0..300u32 {
            t.push(&frame(
                Kind::Video,
                (f64::from(i) * 1001.0 / 30.0).round() as u32,
                1000,
            ));
        }
        let v = t.shape().video.unwrap();
        assert_eq!(v.fps, Some(29.97));
        let bitrate = v.bitrate.unwrap();
        assert!((239_000..240_500).contains(&bitrate), "{bitrate}");
        // Less than a second: nothing measured yet.
        let mut t = ShapeTracker::new();
        for i in 0..20u32 {
            t.push(&frame(Kind::Video, i * 40, 100));
        }
        assert_eq!(t.shape().video.unwrap().fps, None);
        // A timestamp far back starts the window over; a little back is jitter.
        let mut t = ShapeTracker::new();
        for i in 0..100u32 {
            t.push(&frame(Kind::Video, 100_000 + i * 40, 100));
        }
        t.push(&frame(Kind::Video, 100_000 + 99 * 40 - 5, 100));
        assert_eq!(t.video_window.frames.len(), 77);
        t.push(&frame(Kind::Video, 10, 100));
        assert_eq!(t.video_window.frames.len(), 1);
        // Video that stops while audio goes on is no longer measured.
        let mut t = ShapeTracker::new();
        for i in 0..100u32 {
            t.push(&frame(Kind::Video, i * 40, 100));
            t.push(&frame(Kind::Audio, i * 40, 10));
        }
        assert_eq!(t.shape().video.unwrap().fps, Some(25.0));
        for i in 100..200u32 {
            t.push(&frame(Kind::Audio, i * 40, 10));
        }
        let s = t.shape();
        assert_eq!(s.video.unwrap().fps, None);
        assert_eq!(s.audio.unwrap().bitrate, Some(2000));
        // More frames than the ring holds: the newest are measured.
        let mut t = ShapeTracker::new();
        for i in 0..3000u32 {
            t.push(&frame(Kind::Video, i * 2, 100));
        }
        assert_eq!(t.shape().video.unwrap().fps, Some(500.0));
    }

    #[test]
    fn tags_that_are_not_the_main_picture_are_not_counted() {
        let mut t = ShapeTracker::new();
        for i in 0..100u32 {
            t.push(&frame(Kind::Video, i * 40, 100));
            // Multitrack, one track: track 1 (another rendition) is ignored.
            t.push(&tag(
                Kind::Video,
                i * 40,
                &[&[0xA6, 0x01], b"avc1", &[1], &[0u8; 50]],
            ));
            // A command frame (frame type 5).
            t.push(&tag(Kind::Video, i * 40, &[&[0x57, 0]]));
        }
        assert_eq!(t.shape().video.unwrap().fps, Some(25.0));
    }

    /// Every real configuration made by the tests' encoders, cut at every length and with
    /// every byte flipped: no panic.
    #[test]
    fn truncated_and_corrupted_headers_give_none_not_a_panic() {
        let stream = video(
            "1920x1080",
            30,
            1.0,
            &["-frames:v", "1", "-c:v", "libx264", "-preset", "ultrafast"],
            "h264",
        );
        let nals = annex_b(&stream);
        let sps = nals.iter().find(|n| nal_type_h264(n) == 7).unwrap();
        let pps = nals.iter().find(|n| nal_type_h264(n) == 8).unwrap();
        let avc = avcc(sps, pps);
        let stream = video(
            "642x362",
            30,
            1.0,
            &[
                "-frames:v",
                "1",
                "-c:v",
                "libx265",
                "-x265-params",
                "log-level=error",
            ],
            "hevc",
        );
        let nals = annex_b(&stream);
        let hevc = hvcc(
            &nals
                .iter()
                .copied()
                .filter(|n| (32..=34).contains(&nal_type_h265(n)))
                .collect::<Vec<_>>(),
        );
        let av1 = video(
            "426x240",
            30,
            1.0,
            &["-frames:v", "1", "-c:v", "libaom-av1", "-cpu-used", "8"],
            "obu",
        );
        type Check<'a> = (&'a [u8], fn(&[u8]) -> bool);
        let checks: Vec<Check> = vec![
            (&avc, |b| avc_config_size(b).is_some()),
            (sps, |b| h264_sps_size(b).is_some()),
            (&hevc, |b| hevc_config_size(b).is_some()),
            (&av1, |b| av1_obus_size(b).is_some()),
        ];
        for (bytes, parse) in &checks {
            assert!(parse(bytes));
            for cut in 0..bytes.len() {
                parse(&bytes[..cut]);
            }
            for i in 0..bytes.len() {
                let mut bad = bytes.to_vec();
                bad[i] ^= 0xFF;
                parse(&bad);
            }
        }
        // The SPS's own length cut short: None.
        assert_eq!(avc_config_size(&avc[..avc.len() - pps.len() - 3 - 2]), None);
        assert_eq!(h264_sps_size(&sps[..6]), None);
        // Exp-Golomb without an end.
        assert_eq!(Bits::rbsp(&[0, 0, 0, 0, 0, 0]).ue(), None);
        assert_eq!(
            h264_sps_size(&[0x67, 0x64, 0, 0x28, 0, 0, 0, 0, 0, 0]),
            None
        );
        // Emulation prevention: 00 00 03 01 reads as 00 00 01.
        let mut r = Bits::rbsp(&[0, 0, 3, 1]);
        assert_eq!(r.bits(24), Some(1));
        assert_eq!(r.bits(1), None);
        // Tags with nothing after their headers.
        let mut t = ShapeTracker::new();
        for p in [
            &[0x17, 0][..],
            &[0x90],
            b"\x90avc1",
            b"\x91hvc1",
            b"\x90av01",
            b"\x91vp09",
            &[0xAF, 0],
            &[0x2F],
            b"\x90Opus",
            b"\x90fLaC",
            b"\x91ac-3",
            b"\x91ec-3",
            b"\x95\x00Opus",
        ] {
            t.push(&tag(Kind::Audio, 0, &[p]));
            t.push(&tag(Kind::Video, 0, &[p]));
        }
        t.shape();
    }

    proptest! {
        #[test]
        fn any_payload_is_read_without_panicking(
            head in prop::sample::select(vec![
                &[0x17u8, 0][..], &[0x17, 1], &[0x1C, 0], &[0x27, 1], &[0x90], &[0x91], &[0x93], &[0x96, 0x00],
                &[0xAF, 0], &[0xAF, 1], &[0x2F], &[0x90], &[0x91], &[0x95, 0x00], &[0x02], &[0x08, 0x00],
            ]),
            fourcc in prop::sample::select(vec![&b""[..], b"avc1", b"hvc1", b"av01", b"vp09", b"Opus", b"fLaC", b"ac-3", b"ec-3", b".mp3", b"mp4a"]),
            body in prop::collection::vec(any::<u8>(), 0..64),
            ts in any::<u32>(),
        ) {
            let mut t = ShapeTracker::new();
            for kind in [Kind::Video, Kind::Audio, Kind::Script] {
                t.push(&tag(kind, ts, &[head, fourcc, &body]));
                t.push(&tag(kind, ts.wrapping_add(3000), &[head, fourcc, &[0, 0, 0, 0, 0], &body]));
            }
            let _ = t.shape();
        }
    }
}
