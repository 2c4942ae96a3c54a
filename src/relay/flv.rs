//! FLV, as ffmpeg's muxer writes it to a pipe and its demuxer reads it back: the file header,
//! then tags (11-byte header, payload, 4-byte size of the previous tag).
//!
//! The relay needs little of each tag: its kind, its timestamp, whether it is a video
//! keyframe, and whether it is an AVC/AAC sequence header (codec configuration). Payloads are
//! kept as shared [`Bytes`], so one tag read from the source is written to every destination
//! without a copy of its own.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// `FLV`, version 1, audio+video flags, header size 9, then PreviousTagSize0.
pub const FILE_HEADER: [u8; 13] = [b'F', b'L', b'V', 1, 0x05, 0, 0, 0, 9, 0, 0, 0, 0];
const TAG_HEADER_LEN: usize = 11;
const PREVIOUS_SIZE_LEN: usize = 4;
/// The largest payload a tag header can describe (24 bits).
pub const MAX_PAYLOAD: usize = 0xFF_FFFF;

const AUDIO: u8 = 8;
const VIDEO: u8 = 9;
const SCRIPT: u8 = 18;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FlvError {
    #[error("byte {offset}: not an FLV stream (header {found:02x?})")]
    NotFlv { offset: u64, found: Vec<u8> },
    #[error("byte {offset}: FLV header declares {size} header bytes; expected at least 9")]
    BadHeaderSize { offset: u64, size: u32 },
    #[error("byte {offset}: tag of unknown type {kind} ({size} bytes)")]
    UnknownTag { offset: u64, kind: u8, size: usize },
    #[error("byte {offset}: tag is marked encrypted (filter bit set)")]
    Encrypted { offset: u64 },
    #[error("byte {offset}: previous-tag size says {found}, the tag had {expected} bytes")]
    BadPreviousSize {
        offset: u64,
        expected: u32,
        found: u32,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Audio,
    Video,
    /// Script data: `onMetaData`.
    Script,
}

/// One FLV tag. `timestamp` is in milliseconds (FLV's 32-bit DTS).
#[derive(Clone, PartialEq, Eq)]
pub struct Tag {
    pub kind: Kind,
    pub timestamp: u32,
    pub payload: Bytes,
}

impl std::fmt::Debug for Tag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:?}@{}ms {}B{}{}",
            self.kind,
            self.timestamp,
            self.payload.len(),
            if self.is_keyframe() { " key" } else { "" },
            if self.is_sequence_header() {
                " seqhdr"
            } else {
                ""
            }
        )
    }
}

/// A codec as the tag names it: the legacy FLV codec id, or an Enhanced RTMP FourCC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// Legacy FLV: video codec id (7 AVC, 12 HEVC as some encoders write it) or audio sound
    /// format (10 AAC, 2 MP3, ...).
    Legacy(u8),
    /// Enhanced RTMP: `avc1`, `hvc1`, `av01`, `vp09`, `Opus`, `mp4a`, `.mp3`, `fLaC`, ...
    FourCc([u8; 4]),
}

impl Codec {
    /// The codec's name as [`crate::platforms`] writes it (`h264`, `aac`, ...), or a
    /// description of one it does not know (`FLV video codec 4`, `FourCC 'xyz1'`).
    pub fn name(self, kind: Kind) -> String {
        let known = match (kind, self) {
            (Kind::Video, Codec::Legacy(7)) => "h264",
            (Kind::Video, Codec::Legacy(12)) => "hevc",
            (Kind::Video, Codec::Legacy(13)) => "av1",
            (Kind::Audio, Codec::Legacy(10)) => "aac",
            (Kind::Audio, Codec::Legacy(2 | 14)) => "mp3",
            (_, Codec::Legacy(id)) => {
                return match (kind, id) {
                    (Kind::Audio, 0 | 3) => "LPCM".to_owned(),
                    (Kind::Audio, 7) => "G.711 A-law".to_owned(),
                    (Kind::Audio, 8) => "G.711 mu-law".to_owned(),
                    (Kind::Audio, 11) => "Speex".to_owned(),
                    (Kind::Audio, 4..=6) => "Nellymoser".to_owned(),
                    (Kind::Video, 4 | 5) => "VP6".to_owned(),
                    (Kind::Video, 2) => "Sorenson H.263".to_owned(),
                    (Kind::Audio, id) => format!("FLV audio format {id}"),
                    (_, id) => format!("FLV video codec {id}"),
                };
            }
            (_, Codec::FourCc(cc)) => match (kind, &cc) {
                (Kind::Video, b"avc1") => "h264",
                (Kind::Video, b"hvc1") => "hevc",
                (Kind::Video, b"av01") => "av1",
                (Kind::Video, b"vp09") => "vp9",
                (Kind::Audio, b"mp4a") => "aac",
                (Kind::Audio, b".mp3") => "mp3",
                (Kind::Audio, b"Opus") => "opus",
                (Kind::Audio, b"ac-3") => "ac3",
                (Kind::Audio, b"ec-3") => "eac3",
                (Kind::Audio, b"fLaC") => "flac",
                _ => {
                    let printable: String = cc
                        .iter()
                        .map(|&b| if b.is_ascii_graphic() { b as char } else { '?' })
                        .collect();
                    return format!("FourCC '{printable}'");
                }
            },
        };
        known.to_owned()
    }
}

/// What an audio or video tag carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Codec configuration (sequence header / SequenceStart).
    Config,
    /// Coded media.
    Frame,
    /// The end of the sequence.
    End,
    /// Anything else (Enhanced RTMP metadata, multichannel configuration, a command frame,
    /// ModEx): passed through, never a keyframe or a header.
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet {
    pub codec: Codec,
    pub role: Role,
    /// A video keyframe (frame type 1); false for audio.
    pub key: bool,
}

/// Enhanced RTMP video packet types (veovera/enhanced-rtmp).
const EX_SEQUENCE_START: u8 = 0;
const EX_CODED_FRAMES: u8 = 1;
const EX_SEQUENCE_END: u8 = 2;
const EX_CODED_FRAMES_X: u8 = 3;
const EX_MPEG2TS_SEQUENCE_START: u8 = 5;
const EX_MULTITRACK: u8 = 6;
/// Enhanced RTMP audio packet types.
const EX_AUDIO_MULTITRACK: u8 = 5;
/// Audio sound format 9: an Enhanced RTMP audio header follows.
const AUDIO_EX_HEADER: u8 = 9;

fn fourcc(p: &[u8], at: usize) -> Option<[u8; 4]> {
    p.get(at..at + 4).map(|b| [b[0], b[1], b[2], b[3]])
}

fn video_packet(p: &[u8]) -> Option<Packet> {
    let b0 = *p.first()?;
    if b0 & 0x80 == 0 {
        // Legacy: frame type (4 bits), codec id (4 bits); AVC and HEVC add a packet type.
        let codec = b0 & 0x0F;
        let key = b0 >> 4 == 1;
        let role = if matches!(codec, 7 | 12) {
            match p.get(1)? {
                0 => Role::Config,
                1 => Role::Frame,
                2 => Role::End,
                _ => Role::Other,
            }
        } else {
            Role::Frame
        };
        return Some(Packet {
            codec: Codec::Legacy(codec),
            role,
            key,
        });
    }
    // Enhanced: IsExHeader, frame type (3 bits), packet type (4 bits), FourCC.
    let frame_type = (b0 >> 4) & 0x07;
    let mut packet_type = b0 & 0x0F;
    let mut at = 1;
    if packet_type == EX_MULTITRACK {
        // Multitrack type (high nibble) and the packet type of the tracks (low nibble); one
        // FourCC for every track unless the tracks differ in codec (type 2).
        let b1 = *p.get(1)?;
        packet_type = b1 & 0x0F;
        at = 2;
    }
    let cc = fourcc(p, at)?;
    let role = match packet_type {
        EX_SEQUENCE_START | EX_MPEG2TS_SEQUENCE_START => Role::Config,
        EX_CODED_FRAMES | EX_CODED_FRAMES_X => Role::Frame,
        EX_SEQUENCE_END => Role::End,
        _ => Role::Other,
    };
    // Frame type 0 is "reserved", yet what MediaMTX writes: the bitstream tells then.
    let key = match frame_type {
        0 if role == Role::Frame => super::codec::is_keyframe(&cc, packet_type, &p[at + 4..]),
        t => t == 1,
    };
    Some(Packet {
        codec: Codec::FourCc(cc),
        role,
        key,
    })
}

impl Tag {
    /// An Enhanced RTMP video tag written with frame type 0 (reserved: MediaMTX does so) gets
    /// the frame type its bitstream says (1 keyframe, 2 inter frame; a sequence start 1), so
    /// destinations see what the specification asks for. Every other tag is returned as is.
    pub fn with_frame_type(self) -> Tag {
        let Some(&b0) = self.payload.first() else {
            return self;
        };
        if self.kind != Kind::Video || b0 & 0x80 == 0 || b0 & 0x70 != 0 {
            return self;
        }
        let frame_type = match self.packet() {
            Some(Packet { key: true, .. })
            | Some(Packet {
                role: Role::Config, ..
            }) => 1,
            Some(Packet {
                role: Role::Frame, ..
            }) => 2,
            _ => return self,
        };
        let mut payload = BytesMut::from(&self.payload[..]);
        payload[0] = b0 | (frame_type << 4);
        Tag {
            payload: payload.freeze(),
            ..self
        }
    }
}

fn audio_packet(p: &[u8]) -> Option<Packet> {
    let b0 = *p.first()?;
    let format = b0 >> 4;
    if format != AUDIO_EX_HEADER {
        let role = if format == 10 {
            match p.get(1)? {
                0 => Role::Config,
                _ => Role::Frame,
            }
        } else {
            Role::Frame
        };
        return Some(Packet {
            codec: Codec::Legacy(format),
            role,
            key: false,
        });
    }
    let mut packet_type = b0 & 0x0F;
    let mut at = 1;
    if packet_type == EX_AUDIO_MULTITRACK {
        packet_type = *p.get(1)? & 0x0F;
        at = 2;
    }
    let codec = Codec::FourCc(fourcc(p, at)?);
    let role = match packet_type {
        EX_SEQUENCE_START => Role::Config,
        EX_CODED_FRAMES => Role::Frame,
        EX_SEQUENCE_END => Role::End,
        _ => Role::Other,
    };
    Some(Packet {
        codec,
        role,
        key: false,
    })
}

impl Tag {
    /// What the first bytes of an audio or video payload say, legacy FLV and Enhanced RTMP
    /// alike (none for script data or an empty payload).
    pub fn packet(&self) -> Option<Packet> {
        match self.kind {
            Kind::Video => video_packet(&self.payload),
            Kind::Audio => audio_packet(&self.payload),
            Kind::Script => None,
        }
    }

    /// A video frame that starts a GOP (frame type 1), in any codec. Sequence headers and
    /// the end of sequence carry the flag too, and are not keyframes.
    pub fn is_keyframe(&self) -> bool {
        self.kind == Kind::Video
            && matches!(
                self.packet(),
                Some(Packet {
                    role: Role::Frame,
                    key: true,
                    ..
                })
            )
    }

    /// Codec configuration: AVC/HEVC packet type 0, AAC packet type 0, or an Enhanced RTMP
    /// SequenceStart (HEVC, AV1, VP9, Opus, FLAC, AC-3, ...). Destinations need it before any
    /// frame.
    pub fn is_sequence_header(&self) -> bool {
        self.packet().is_some_and(|p| p.role == Role::Config)
    }

    /// An end-of-sequence tag (AVC/HEVC packet type 2, Enhanced RTMP SequenceEnd): ends the
    /// destination's stream.
    pub fn is_end_of_sequence(&self) -> bool {
        self.kind == Kind::Video && self.packet().is_some_and(|p| p.role == Role::End)
    }

    /// Bytes this tag takes on the wire.
    pub fn wire_len(&self) -> usize {
        TAG_HEADER_LEN + self.payload.len() + PREVIOUS_SIZE_LEN
    }

    /// Appends the tag as FLV (header, payload, previous-tag size) to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let size = self.payload.len();
        debug_assert!(size <= MAX_PAYLOAD);
        out.reserve(self.wire_len());
        out.put_u8(match self.kind {
            Kind::Audio => AUDIO,
            Kind::Video => VIDEO,
            Kind::Script => SCRIPT,
        });
        out.put_uint(size as u64, 3);
        out.put_uint(u64::from(self.timestamp & 0xFF_FFFF), 3);
        out.put_u8((self.timestamp >> 24) as u8);
        out.put_uint(0, 3); // stream id
        out.extend_from_slice(&self.payload);
        out.put_u32((TAG_HEADER_LEN + size) as u32);
    }
}

/// Reads tags from bytes as they arrive: [`Parser::push`] what was read, then take tags with
/// [`Parser::next_tag`] until it returns `Ok(None)` (more bytes needed).
#[derive(Default)]
pub struct Parser {
    buf: BytesMut,
    /// Stream offset of `buf[0]`.
    offset: u64,
    header_done: bool,
}

impl Parser {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes received and not yet consumed as tags.
    #[cfg(test)]
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Stream offset of the next byte to parse.
    #[cfg(test)]
    pub fn offset(&self) -> u64 {
        self.offset
    }

    fn consume(&mut self, n: usize) -> BytesMut {
        self.offset += n as u64;
        self.buf.split_to(n)
    }

    pub fn next_tag(&mut self) -> Result<Option<Tag>, FlvError> {
        if !self.header_done {
            if self.buf.len() < 9 {
                if !FILE_HEADER[..self.buf.len().min(3)].eq(&self.buf[..self.buf.len().min(3)]) {
                    return Err(self.not_flv());
                }
                return Ok(None);
            }
            if &self.buf[..3] != b"FLV" {
                return Err(self.not_flv());
            }
            let size = u32::from_be_bytes([self.buf[5], self.buf[6], self.buf[7], self.buf[8]]);
            if size < 9 {
                return Err(FlvError::BadHeaderSize {
                    offset: self.offset + 5,
                    size,
                });
            }
            let skip = size as usize + PREVIOUS_SIZE_LEN;
            if self.buf.len() < skip {
                return Ok(None);
            }
            self.consume(skip);
            self.header_done = true;
        }
        if self.buf.len() < TAG_HEADER_LEN {
            return Ok(None);
        }
        let start = self.offset;
        let head = &self.buf[..TAG_HEADER_LEN];
        let filter = head[0] & 0x20 != 0;
        let kind_byte = head[0] & 0x1F;
        let size =
            (usize::from(head[1]) << 16) | (usize::from(head[2]) << 8) | usize::from(head[3]);
        let timestamp = (u32::from(head[7]) << 24)
            | (u32::from(head[4]) << 16)
            | (u32::from(head[5]) << 8)
            | u32::from(head[6]);
        let kind = match kind_byte {
            AUDIO => Kind::Audio,
            VIDEO => Kind::Video,
            SCRIPT => Kind::Script,
            other => {
                return Err(FlvError::UnknownTag {
                    offset: start,
                    kind: other,
                    size,
                })
            }
        };
        if filter {
            return Err(FlvError::Encrypted { offset: start });
        }
        let total = TAG_HEADER_LEN + size + PREVIOUS_SIZE_LEN;
        if self.buf.len() < total {
            self.buf.reserve(total - self.buf.len());
            return Ok(None);
        }
        let mut tag = self.consume(total);
        tag.advance(TAG_HEADER_LEN);
        let payload = tag.split_to(size).freeze();
        let previous = tag.get_u32();
        if previous != (TAG_HEADER_LEN + size) as u32 {
            return Err(FlvError::BadPreviousSize {
                offset: start + (TAG_HEADER_LEN + size) as u64,
                expected: (TAG_HEADER_LEN + size) as u32,
                found: previous,
            });
        }
        Ok(Some(Tag {
            kind,
            timestamp,
            payload,
        }))
    }

    fn not_flv(&self) -> FlvError {
        FlvError::NotFlv {
            offset: self.offset,
            found: self.buf[..self.buf.len().min(3)].to_vec(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn video(ts: u32, key: bool, seq: bool) -> Tag {
        let first = if key { 0x17 } else { 0x27 };
        Tag {
            kind: Kind::Video,
            timestamp: ts,
            payload: Bytes::from(vec![first, u8::from(!seq), 0, 0, 0, 0xAB]),
        }
    }

    fn stream(tags: &[Tag]) -> Vec<u8> {
        let mut out = FILE_HEADER.to_vec();
        for t in tags {
            t.write_to(&mut out);
        }
        out
    }

    fn parse_all(bytes: &[u8], chunk: usize) -> Result<Vec<Tag>, FlvError> {
        let mut p = Parser::new();
        let mut tags = Vec::new();
        for piece in bytes.chunks(chunk) {
            p.push(piece);
            while let Some(t) = p.next_tag()? {
                tags.push(t);
            }
        }
        assert_eq!(p.buffered(), 0, "bytes left over");
        Ok(tags)
    }

    #[test]
    fn round_trips_in_any_chunking() {
        let tags = vec![
            Tag {
                kind: Kind::Script,
                timestamp: 0,
                payload: Bytes::from_static(b"\x02\x00\x0aonMetaData"),
            },
            video(0, true, true),
            Tag {
                kind: Kind::Audio,
                timestamp: 0,
                payload: Bytes::from_static(&[0xAF, 0, 0x11, 0x90]),
            },
            video(0, true, false),
            // Above 24 bits: the extended timestamp byte.
            video(0x0123_4567, false, false),
        ];
        let bytes = stream(&tags);
        for chunk in [1, 2, 7, 11, 4096] {
            assert_eq!(parse_all(&bytes, chunk).unwrap(), tags, "chunk {chunk}");
        }
    }

    #[test]
    fn classifies_tags() {
        assert!(video(0, true, true).is_sequence_header());
        assert!(!video(0, true, true).is_keyframe());
        assert!(video(0, true, false).is_keyframe());
        assert!(!video(0, false, false).is_keyframe());
        let aac_config = Tag {
            kind: Kind::Audio,
            timestamp: 0,
            payload: Bytes::from_static(&[0xAF, 0, 0x11, 0x90]),
        };
        assert!(aac_config.is_sequence_header());
        let aac_frame = Tag {
            payload: Bytes::from_static(&[0xAF, 1, 0x21]),
            ..aac_config
        };
        assert!(!aac_frame.is_sequence_header());
        let eos = Tag {
            payload: Bytes::from_static(&[0x17, 2, 0, 0, 0]),
            ..video(5, true, false)
        };
        assert!(eos.is_end_of_sequence() && !eos.is_keyframe());
    }

    fn tag(kind: Kind, payload: &'static [u8]) -> Tag {
        Tag {
            kind,
            timestamp: 0,
            payload: Bytes::from_static(payload),
        }
    }

    #[test]
    fn classifies_enhanced_rtmp_tags() {
        // IsExHeader | frame type 1 | SequenceStart, "hvc1".
        let hevc_config = tag(Kind::Video, b"\x90hvc1\x01\x02");
        assert!(hevc_config.is_sequence_header() && !hevc_config.is_keyframe());
        assert_eq!(hevc_config.packet().unwrap().codec, Codec::FourCc(*b"hvc1"));
        // Keyframes: CodedFrames (1) and CodedFramesX (3), frame type 1.
        assert!(tag(Kind::Video, b"\x91hvc1\0\0\0\x05").is_keyframe());
        assert!(tag(Kind::Video, b"\x93av01\x12").is_keyframe());
        // Inter frame (frame type 2).
        let inter = tag(Kind::Video, b"\xA3av01\x12");
        assert!(!inter.is_keyframe() && !inter.is_sequence_header());
        // SequenceEnd.
        assert!(tag(Kind::Video, b"\x92vp09").is_end_of_sequence());
        // Metadata (4) and a command frame: neither header nor keyframe.
        let meta = tag(Kind::Video, b"\x94hvc1\x02");
        assert!(!meta.is_keyframe() && !meta.is_sequence_header());
        // Multitrack, one track type (0) of CodedFramesX: the packet type is in byte 1.
        assert!(tag(Kind::Video, b"\x96\x03av01\0\x12").is_keyframe());
        assert!(tag(Kind::Video, b"\x96\x00hvc1\0\x01").is_sequence_header());
        // Frame type 0 (MediaMTX): the HEVC bitstream says IDR (NAL type 19) or not (1).
        let idr = tag(Kind::Video, b"\x81hvc1\0\0\0\0\0\0\x02\x26\x01");
        assert!(idr.is_keyframe());
        assert_eq!(idr.clone().with_frame_type().payload[0], 0x91);
        let trail = tag(Kind::Video, b"\x81hvc1\0\0\0\0\0\0\x02\x02\x01");
        assert!(!trail.is_keyframe());
        assert_eq!(trail.with_frame_type().payload[0], 0xA1);
        assert_eq!(
            tag(Kind::Video, b"\x80hvc1\x01").with_frame_type().payload[0],
            0x90
        );
        // Set frame types and legacy tags stay as they are.
        assert_eq!(
            tag(Kind::Video, b"\xA1hvc1\0\0\0")
                .with_frame_type()
                .payload[0],
            0xA1
        );
        assert_eq!(
            video(0, true, false).with_frame_type(),
            video(0, true, false)
        );
        assert_eq!(Codec::FourCc(*b"hvc1").name(Kind::Video), "hevc");
        assert_eq!(Codec::Legacy(10).name(Kind::Audio), "aac");
        assert_eq!(Codec::Legacy(4).name(Kind::Video), "VP6");
        assert_eq!(
            Codec::FourCc(*b"ab\x01c").name(Kind::Audio),
            "FourCC 'ab?c'"
        );
        // Too short for a FourCC: nothing.
        assert_eq!(tag(Kind::Video, b"\x91hv").packet(), None);
        // Audio ExHeader (9): SequenceStart, CodedFrames.
        let opus_config = tag(Kind::Audio, b"\x90Opus\x01");
        assert!(opus_config.is_sequence_header());
        assert_eq!(opus_config.packet().unwrap().codec, Codec::FourCc(*b"Opus"));
        assert!(!tag(Kind::Audio, b"\x91Opus\xfc").is_sequence_header());
        // Legacy MP3 (format 2) is a frame; legacy AAC keeps its packet type.
        let mp3 = tag(Kind::Audio, b"\x2f\xff\xfb");
        assert_eq!(mp3.packet().unwrap().codec, Codec::Legacy(2));
        assert!(!mp3.is_sequence_header());
        assert_eq!(tag(Kind::Audio, b"").packet(), None);
    }

    #[test]
    fn bad_input_names_the_byte_offset() {
        assert_eq!(
            parse_all(b"RIFF....", 8).unwrap_err(),
            FlvError::NotFlv {
                offset: 0,
                found: b"RIF".to_vec()
            }
        );
        // A tag of type 7 right after the header (offset 13).
        let mut bytes = FILE_HEADER.to_vec();
        bytes.extend_from_slice(&[7, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0, 0, 0, 12]);
        assert_eq!(
            parse_all(&bytes, 3).unwrap_err(),
            FlvError::UnknownTag {
                offset: 13,
                kind: 7,
                size: 1
            }
        );
        // A wrong previous-tag size after the second tag.
        let mut bytes = stream(&[video(0, true, true), video(1, true, false)]);
        let len = bytes.len();
        bytes[len - 1] ^= 0xFF;
        let err = parse_all(&bytes, 5).unwrap_err();
        assert!(
            matches!(err, FlvError::BadPreviousSize { offset, .. } if offset == len as u64 - 4),
            "{err:?}"
        );
        assert!(err.to_string().starts_with(&format!("byte {}:", len - 4)));
        // Encrypted tags are refused, not relayed.
        let mut bytes = stream(&[video(0, true, false)]);
        bytes[13] |= 0x20;
        assert_eq!(
            parse_all(&bytes, 64).unwrap_err(),
            FlvError::Encrypted { offset: 13 }
        );
    }

    #[test]
    fn truncated_input_waits_for_more() {
        let bytes = stream(&[video(0, true, false)]);
        let mut p = Parser::new();
        p.push(&bytes[..bytes.len() - 1]);
        assert_eq!(p.next_tag(), Ok(None));
        p.push(&bytes[bytes.len() - 1..]);
        assert!(p.next_tag().unwrap().unwrap().is_keyframe());
        assert_eq!(p.offset(), bytes.len() as u64);
    }

    /// 2.5 s of 160x90 H.264 (B-frames, a keyframe a second) + stereo AAC, as ffmpeg 5.1
    /// writes FLV to a pipe (tests/fixtures/README.md says how it was made).
    const FFMPEG_OUTPUT: &[u8] = include_bytes!("../../tests/fixtures/small-h264-aac.flv");

    #[test]
    fn reads_what_ffmpeg_writes() {
        let tags = parse_all(FFMPEG_OUTPUT, 1500).unwrap();
        let count = |f: &dyn Fn(&Tag) -> bool| tags.iter().filter(|t| f(t)).count();
        assert_eq!(count(&|t| t.kind == Kind::Script), 1, "onMetaData");
        assert_eq!(
            count(&|t| t.is_sequence_header()),
            2,
            "AVC and AAC configuration"
        );
        let frame = |t: &Tag| t.kind == Kind::Video && !t.is_sequence_header();
        assert_eq!(count(&|t| frame(t) && !t.is_end_of_sequence()), 75);
        // Written without -flvflags no_sequence_end: the muxer's trailer ends the sequence.
        assert!(tags.last().unwrap().is_end_of_sequence());
        assert_eq!(
            count(&|t| t.kind == Kind::Audio && !t.is_sequence_header()),
            109
        );
        let keys: Vec<u32> = tags
            .iter()
            .filter(|t| t.is_keyframe())
            .map(|t| t.timestamp)
            .collect();
        assert_eq!(keys.len(), 3);
        assert!(
            keys.windows(2).all(|w| (w[1] - w[0]).abs_diff(1000) <= 40),
            "{keys:?}"
        );
        // Written back, the tags are the same bytes.
        assert_eq!(stream(&tags), FFMPEG_OUTPUT);
    }

    #[test]
    fn never_panics_on_garbage() {
        // A fixed pseudo-random walk over mutated streams: every outcome is Ok or an Err.
        let good = stream(&[
            video(0, true, true),
            video(40, true, false),
            video(80, false, false),
        ]);
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        for _ in 0..2000 {
            let mut bytes = good.clone();
            for _ in 0..3 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let at = (seed as usize) % bytes.len();
                bytes[at] = (seed >> 32) as u8;
            }
            let _ = parse_all_lenient(&bytes);
        }
    }

    fn parse_all_lenient(bytes: &[u8]) -> Result<Vec<Tag>, FlvError> {
        let mut p = Parser::new();
        p.push(bytes);
        let mut tags = Vec::new();
        while let Some(t) = p.next_tag()? {
            tags.push(t);
        }
        Ok(tags)
    }
}
