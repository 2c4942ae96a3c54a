//! The RTMP chunk stream, without I/O: messages cut into chunks (writer) and chunks put back
//! together into messages (reader).
//!
//! A chunk is a basic header (format 0–3 and chunk stream id, 1–3 bytes), a message header
//! whose size depends on the format (11, 7, 3 or 0 bytes), an extended timestamp (4 bytes) when
//! the 24-bit timestamp field says 0xFFFFFF, then up to chunk-size bytes of payload.
//!
//! The writer serialises a whole message, or a batch of them, into one buffer: the first chunk
//! with a type-0 or type-1/2 header (a delta against the previous message on the same chunk
//! stream), continuations with the 1-byte type-3 header and, when the first chunk had one, the
//! extended timestamp repeated (as Flash, ffmpeg and nginx-rtmp write and expect it).
//!
//! The reader honours the peer's chunk size and enforces [`Limits`]: every length from the peer
//! is checked before it is buffered, and a chunk is consumed only once it is complete, so the
//! reader can be fed any split of the byte stream.

use std::collections::HashMap;

use bytes::{BufMut, Bytes, BytesMut};

/// Chunk stream of protocol control messages (Set Chunk Size, Acknowledgement, ...).
pub const CONTROL_CSID: u32 = 2;
/// The chunk size both sides start with.
pub const INITIAL_CHUNK_SIZE: u32 = 128;
const MAX_CSID: u32 = 65_599;
const EXTENDED: u32 = 0xFF_FFFF;
/// The largest message length a chunk header can state (24 bits).
pub const MAX_MESSAGE_LEN: u32 = 0xFF_FFFF;

/// What a message is, apart from its payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub csid: u32,
    pub timestamp: u32,
    pub type_id: u8,
    pub stream_id: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub header: Header,
    pub payload: Bytes,
}

/// Bounds on what a peer can make the reader hold.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest Set Chunk Size accepted.
    pub max_chunk_size: u32,
    /// Largest message length accepted.
    pub max_message_len: u32,
    /// Most chunk streams with an unfinished message at once.
    pub max_partial: usize,
    /// Most bytes held in unfinished messages, all chunk streams together.
    pub max_buffered: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_chunk_size: 16 * 1024 * 1024,
            max_message_len: MAX_MESSAGE_LEN,
            max_partial: 64,
            max_buffered: 32 * 1024 * 1024,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    #[error("server sent a chunk size of {size}; at most {max} accepted")]
    ChunkSizeTooLarge { size: u32, max: u32 },
    #[error("server sent a chunk size of 0; at least 1 required")]
    ChunkSizeZero,
    #[error("server sent a message of {len} bytes on chunk stream {csid}; at most {max} accepted")]
    MessageTooLong { csid: u32, len: u32, max: u32 },
    #[error(
        "server used a type-{fmt} chunk header on chunk stream {csid} before any type-0 header"
    )]
    UnknownChunkStream { csid: u32, fmt: u8 },
    #[error(
        "server started a new message on chunk stream {csid} with {got} of {len} bytes of the \
         previous one still missing"
    )]
    Interrupted { csid: u32, got: usize, len: u32 },
    #[error("server left more than {max} messages unfinished at once")]
    TooManyPartial { max: usize },
    #[error("server's unfinished messages exceed {max} bytes")]
    TooMuchBuffered { max: usize },
}

/// Appends a basic header.
fn put_basic_header(out: &mut Vec<u8>, fmt: u8, csid: u32) {
    debug_assert!((2..=MAX_CSID).contains(&csid));
    let f = fmt << 6;
    if csid < 64 {
        out.put_u8(f | csid as u8);
    } else if csid < 320 {
        out.put_u8(f);
        out.put_u8((csid - 64) as u8);
    } else {
        out.put_u8(f | 1);
        out.put_u16_le((csid - 64) as u16);
    }
}

#[derive(Clone, Copy)]
struct Sent {
    timestamp: u32,
    len: u32,
    type_id: u8,
    stream_id: u32,
}

/// Cuts messages into chunks of our own size.
pub struct ChunkWriter {
    chunk_size: usize,
    prev: HashMap<u32, Sent>,
}

impl ChunkWriter {
    pub fn new() -> ChunkWriter {
        ChunkWriter {
            chunk_size: INITIAL_CHUNK_SIZE as usize,
            prev: HashMap::new(),
        }
    }

    /// From now on chunks carry up to `size` bytes. The caller has just written the Set Chunk
    /// Size message that announces it (with the previous size).
    pub fn set_chunk_size(&mut self, size: u32) {
        self.chunk_size = size.clamp(1, 0x7FFF_FFFF) as usize;
    }

    /// Bytes [`Self::write`] appends for a message of `len` bytes, at most.
    pub fn wire_len(&self, len: usize) -> usize {
        let chunks = len.div_ceil(self.chunk_size).max(1);
        // 3-byte basic header + 11 + 4 for the first, 3 + 4 for each continuation.
        len + 18 + (chunks - 1) * 7
    }

    /// Appends `payload` as one message to `out`. The payload must fit the 24-bit length
    /// (the session checks this before it gets here).
    pub fn write(&mut self, h: Header, payload: &[u8], out: &mut Vec<u8>) {
        debug_assert!(payload.len() <= MAX_MESSAGE_LEN as usize);
        let len = payload.len() as u32;
        let prev = self.prev.get(&h.csid).copied();
        let fmt = match prev {
            Some(p) if p.stream_id == h.stream_id && h.timestamp >= p.timestamp => {
                if p.len == len && p.type_id == h.type_id {
                    2
                } else {
                    1
                }
            }
            _ => 0,
        };
        let field = if fmt == 0 {
            h.timestamp
        } else {
            h.timestamp - prev.map_or(0, |p| p.timestamp)
        };
        let ext = field >= EXTENDED;
        out.reserve(self.wire_len(payload.len()));
        put_basic_header(out, fmt, h.csid);
        out.put_uint(u64::from(field.min(EXTENDED)), 3);
        if fmt <= 1 {
            out.put_uint(u64::from(len), 3);
            out.put_u8(h.type_id);
        }
        if fmt == 0 {
            out.put_u32_le(h.stream_id);
        }
        if ext {
            out.put_u32(field);
        }
        let mut pieces = payload.chunks(self.chunk_size);
        out.extend_from_slice(pieces.next().unwrap_or(&[]));
        for piece in pieces {
            put_basic_header(out, 3, h.csid);
            if ext {
                out.put_u32(field);
            }
            out.extend_from_slice(piece);
        }
        self.prev.insert(
            h.csid,
            Sent {
                timestamp: h.timestamp,
                len,
                type_id: h.type_id,
                stream_id: h.stream_id,
            },
        );
    }
}

/// Header compression state and the unfinished message of one inbound chunk stream.
struct InStream {
    timestamp: u32,
    /// The timestamp field of the last type 0–2 header (a delta, or for type 0 the timestamp
    /// itself): what a type-3 header starting a new message adds.
    delta: u32,
    len: u32,
    type_id: u8,
    stream_id: u32,
    /// The last type 0–2 header had an extended timestamp, with this value.
    ext: Option<u32>,
    partial: Option<BytesMut>,
}

/// Puts chunks back together into messages.
pub struct ChunkReader {
    chunk_size: usize,
    limits: Limits,
    streams: HashMap<u32, InStream>,
    partials: usize,
    buffered: usize,
}

/// A parsed chunk header, not yet applied.
struct ChunkHead {
    fmt: u8,
    csid: u32,
    /// Bytes of basic header, message header and extended timestamp.
    head_len: usize,
    /// Timestamp field (extended value when present).
    field: u32,
    len: u32,
    type_id: u8,
    stream_id: u32,
    ext: bool,
}

fn be(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0, |acc, &b| (acc << 8) | u32::from(b))
}

impl ChunkReader {
    pub fn new(limits: Limits) -> ChunkReader {
        ChunkReader {
            chunk_size: INITIAL_CHUNK_SIZE as usize,
            limits,
            streams: HashMap::new(),
            partials: 0,
            buffered: 0,
        }
    }

    #[cfg(test)]
    pub fn chunk_size(&self) -> u32 {
        self.chunk_size as u32
    }

    /// The peer's Set Chunk Size.
    pub fn set_chunk_size(&mut self, size: u32) -> Result<(), ChunkError> {
        if size == 0 {
            return Err(ChunkError::ChunkSizeZero);
        }
        if size > self.limits.max_chunk_size {
            return Err(ChunkError::ChunkSizeTooLarge {
                size,
                max: self.limits.max_chunk_size,
            });
        }
        self.chunk_size = size as usize;
        Ok(())
    }

    /// The peer's Abort Message: drops the unfinished message of `csid`.
    pub fn abort(&mut self, csid: u32) {
        if let Some(partial) = self.streams.get_mut(&csid).and_then(|s| s.partial.take()) {
            self.partials -= 1;
            self.buffered -= partial.len();
        }
    }

    /// Bytes held in unfinished messages.
    #[cfg(test)]
    pub fn buffered(&self) -> usize {
        self.buffered
    }

    /// Parses the header of the chunk at the start of `buf`: None if incomplete.
    fn head(&self, buf: &[u8]) -> Result<Option<ChunkHead>, ChunkError> {
        let Some(&b0) = buf.first() else {
            return Ok(None);
        };
        let fmt = b0 >> 6;
        let (csid, mut at) = match b0 & 0x3F {
            0 => match buf.get(1) {
                Some(&b1) => (64 + u32::from(b1), 2),
                None => return Ok(None),
            },
            1 => match buf.get(1..3) {
                Some(b) => (64 + u32::from(b[0]) + 256 * u32::from(b[1]), 3),
                None => return Ok(None),
            },
            n => (u32::from(n), 1),
        };
        let Some(state) = self.streams.get(&csid) else {
            if fmt != 0 {
                return Err(ChunkError::UnknownChunkStream { csid, fmt });
            }
            return self.head_fields(buf, fmt, csid, at, None);
        };
        if fmt == 3 {
            // Extended timestamp repeated: always when a type-3 header starts a message; in
            // continuations only if those bytes are really the timestamp (some writers omit it).
            let mut field = state.delta;
            let mut ext = false;
            if let Some(value) = state.ext {
                let Some(b) = buf.get(at..at + 4) else {
                    return Ok(None);
                };
                if state.partial.is_none() {
                    field = be(b);
                    ext = true;
                    at += 4;
                } else if be(b) == value {
                    ext = true;
                    at += 4;
                }
            }
            return Ok(Some(ChunkHead {
                fmt,
                csid,
                head_len: at,
                field,
                len: state.len,
                type_id: state.type_id,
                stream_id: state.stream_id,
                ext,
            }));
        }
        self.head_fields(buf, fmt, csid, at, Some(state))
    }

    fn head_fields(
        &self,
        buf: &[u8],
        fmt: u8,
        csid: u32,
        at: usize,
        state: Option<&InStream>,
    ) -> Result<Option<ChunkHead>, ChunkError> {
        let size = [11, 7, 3][fmt as usize];
        let Some(h) = buf.get(at..at + size) else {
            return Ok(None);
        };
        let mut field = be(&h[0..3]);
        let (len, type_id) = if fmt <= 1 {
            (be(&h[3..6]), h[6])
        } else {
            state.map_or((0, 0), |s| (s.len, s.type_id))
        };
        let stream_id = if fmt == 0 {
            u32::from_le_bytes([h[7], h[8], h[9], h[10]])
        } else {
            state.map_or(0, |s| s.stream_id)
        };
        let mut head_len = at + size;
        let ext = field == EXTENDED;
        if ext {
            let Some(e) = buf.get(head_len..head_len + 4) else {
                return Ok(None);
            };
            field = be(e);
            head_len += 4;
        }
        Ok(Some(ChunkHead {
            fmt,
            csid,
            head_len,
            field,
            len,
            type_id,
            stream_id,
            ext,
        }))
    }

    /// Takes complete chunks from the front of `buf` until a message is complete (returned) or
    /// `buf` holds no complete chunk (`Ok(None)`; feed more bytes and call again).
    pub fn read(&mut self, buf: &mut BytesMut) -> Result<Option<Message>, ChunkError> {
        loop {
            let Some(head) = self.head(buf)? else {
                return Ok(None);
            };
            let in_progress = self
                .streams
                .get(&head.csid)
                .and_then(|s| s.partial.as_ref())
                .map(BytesMut::len);
            if let (Some(got), true) = (in_progress, head.fmt != 3) {
                return Err(ChunkError::Interrupted {
                    csid: head.csid,
                    got,
                    len: head.len,
                });
            }
            let starting = in_progress.is_none();
            if starting && head.len > self.limits.max_message_len {
                return Err(ChunkError::MessageTooLong {
                    csid: head.csid,
                    len: head.len,
                    max: self.limits.max_message_len,
                });
            }
            let got = in_progress.unwrap_or(0);
            let piece = (head.len as usize - got).min(self.chunk_size);
            if buf.len() < head.head_len + piece {
                return Ok(None);
            }
            let whole = starting && piece == head.len as usize;
            if !whole {
                if starting && self.partials >= self.limits.max_partial {
                    return Err(ChunkError::TooManyPartial {
                        max: self.limits.max_partial,
                    });
                }
                if self.buffered + piece > self.limits.max_buffered {
                    return Err(ChunkError::TooMuchBuffered {
                        max: self.limits.max_buffered,
                    });
                }
            }
            // The chunk is complete and within bounds: apply it.
            let _ = buf.split_to(head.head_len);
            let state = self.streams.entry(head.csid).or_insert(InStream {
                timestamp: 0,
                delta: 0,
                len: 0,
                type_id: 0,
                stream_id: 0,
                ext: None,
                partial: None,
            });
            if starting {
                state.timestamp = match head.fmt {
                    0 => head.field,
                    _ => state.timestamp.wrapping_add(head.field),
                };
                state.delta = head.field;
                state.len = head.len;
                state.type_id = head.type_id;
                state.stream_id = head.stream_id;
                if head.fmt != 3 {
                    state.ext = head.ext.then_some(head.field);
                }
            }
            let header = Header {
                csid: head.csid,
                timestamp: state.timestamp,
                type_id: state.type_id,
                stream_id: state.stream_id,
            };
            if whole {
                let payload = buf.split_to(piece).freeze();
                return Ok(Some(Message { header, payload }));
            }
            let partial = state.partial.get_or_insert_with(|| {
                self.partials += 1;
                BytesMut::with_capacity((head.len as usize).min(64 * 1024))
            });
            partial.extend_from_slice(&buf.split_to(piece));
            self.buffered += piece;
            if partial.len() == head.len as usize {
                let payload = state.partial.take().unwrap_or_default().freeze();
                self.partials -= 1;
                self.buffered -= payload.len();
                return Ok(Some(Message { header, payload }));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn header(csid: u32, timestamp: u32, type_id: u8) -> Header {
        Header {
            csid,
            timestamp,
            type_id,
            stream_id: 1,
        }
    }

    fn payload(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    fn read_all(reader: &mut ChunkReader, bytes: &[u8]) -> Vec<Message> {
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        while let Some(m) = reader.read(&mut buf).unwrap() {
            out.push(m);
        }
        assert!(buf.is_empty(), "{} bytes left over", buf.len());
        out
    }

    fn reader_with(size: u32) -> ChunkReader {
        let mut r = ChunkReader::new(Limits::default());
        r.set_chunk_size(size).unwrap();
        r
    }

    #[test]
    fn every_boundary_round_trips() {
        for size in [128u32, 4096] {
            for len in [0usize, 1, 127, 128, 129, 4095, 4096, 4097, 1 << 20] {
                let mut w = ChunkWriter::new();
                w.set_chunk_size(size);
                let p = payload(len, 7);
                let mut out = Vec::new();
                w.write(header(6, 40, 9), &p, &mut out);
                let chunks = len.div_ceil(size as usize).max(1);
                // 1-byte basic headers, 11-byte first header, no extended timestamp.
                assert_eq!(out.len(), len + 12 + (chunks - 1), "len {len} size {size}");
                let mut r = reader_with(size);
                let got = read_all(&mut r, &out);
                assert_eq!(got.len(), 1);
                assert_eq!(got[0].header, header(6, 40, 9));
                assert_eq!(&got[0].payload[..], &p[..], "len {len} size {size}");
                assert_eq!(r.buffered(), 0);
            }
        }
    }

    #[test]
    fn literal_chunks_of_a_small_message() {
        let mut w = ChunkWriter::new();
        w.set_chunk_size(4);
        let mut out = Vec::new();
        w.write(
            Header {
                csid: 3,
                timestamp: 0x010203,
                type_id: 20,
                stream_id: 0x0A0B0C0D,
            },
            b"abcdef",
            &mut out,
        );
        assert_eq!(
            out,
            b"\x03\x01\x02\x03\x00\x00\x06\x14\x0d\x0c\x0b\x0aabcd\xc3ef".to_vec()
        );
        // Same csid, later, other length: type 1 with the delta. Then same length: type 2.
        out.clear();
        w.write(
            Header {
                csid: 3,
                timestamp: 0x010205,
                type_id: 20,
                stream_id: 0x0A0B0C0D,
            },
            b"xy",
            &mut out,
        );
        w.write(
            Header {
                csid: 3,
                timestamp: 0x010206,
                type_id: 20,
                stream_id: 0x0A0B0C0D,
            },
            b"zw",
            &mut out,
        );
        assert_eq!(
            out,
            b"\x43\x00\x00\x02\x00\x00\x02\x14xy\x83\x00\x00\x01zw".to_vec()
        );
    }

    #[test]
    fn basic_headers_of_two_and_three_bytes() {
        for csid in [63u32, 64, 319, 320, 65_599] {
            let mut w = ChunkWriter::new();
            let mut out = Vec::new();
            w.write(header(csid, 1, 8), &payload(300, 1), &mut out);
            w.write(header(csid, 2, 8), &payload(300, 2), &mut out);
            let first = out[0] & 0x3F;
            assert_eq!(
                first,
                [63, 0, 0, 1, 1][[63, 64, 319, 320, 65_599]
                    .iter()
                    .position(|&c| c == csid)
                    .unwrap()]
            );
            let got = read_all(&mut ChunkReader::new(Limits::default()), &out);
            assert_eq!(got.len(), 2);
            assert!(got.iter().all(|m| m.header.csid == csid));
            assert_eq!(got[1].header.timestamp, 2);
            assert_eq!(&got[1].payload[..], &payload(300, 2)[..]);
        }
    }

    #[test]
    fn extended_timestamps_in_type_0_and_type_3_continuations() {
        let mut w = ChunkWriter::new();
        w.set_chunk_size(100);
        let mut out = Vec::new();
        let p = payload(250, 3);
        w.write(header(4, 0x0100_0000, 8), &p, &mut out);
        // fmt 0: 1 + 11 + 4, two continuations of 1 + 4.
        assert_eq!(out.len(), 250 + 16 + 2 * 5);
        assert_eq!(&out[4..7], &[0, 0, 250]);
        assert_eq!(&out[1..4], &[0xFF, 0xFF, 0xFF]);
        assert_eq!(&out[12..16], &0x0100_0000u32.to_be_bytes());
        assert_eq!(out[116], 0xC4);
        assert_eq!(&out[117..121], &0x0100_0000u32.to_be_bytes());
        // Exactly 0xFFFFFF is extended too, and a delta of 0xFFFFFF in a type-1 header.
        w.write(header(4, 0x01FF_FFFF, 8), &payload(10, 4), &mut out);
        w.write(header(4, 0xFFFF_FFFF, 8), &payload(150, 5), &mut out);
        let mut r = reader_with(100);
        let got = read_all(&mut r, &out);
        let stamps: Vec<u32> = got.iter().map(|m| m.header.timestamp).collect();
        assert_eq!(stamps, [0x0100_0000, 0x01FF_FFFF, 0xFFFF_FFFF]);
        assert_eq!(&got[0].payload[..], &p[..]);
        assert_eq!(&got[2].payload[..], &payload(150, 5)[..]);
    }

    #[test]
    fn continuations_without_the_repeated_extended_timestamp_are_read_too() {
        // Some writers omit the extended timestamp in continuations.
        let mut bytes = vec![0x04, 0xFF, 0xFF, 0xFF, 0, 0, 10, 9, 1, 0, 0, 0, 1, 0, 0, 0];
        bytes.extend_from_slice(b"abcde");
        bytes.push(0xC4);
        bytes.extend_from_slice(b"fghij");
        let got = read_all(&mut reader_with(5), &bytes);
        assert_eq!(got[0].header.timestamp, 0x0100_0000);
        assert_eq!(&got[0].payload[..], b"abcdefghij");
    }

    #[test]
    fn a_type_3_header_starting_a_message_adds_the_last_delta() {
        // fmt 0 at 1000, fmt 1 delta 40 (len 2), fmt 3 new message: 1080.
        let bytes = b"\x06\x00\x03\xe8\x00\x00\x02\x09\x01\x00\x00\x00ab\
            \x46\x00\x00\x28\x00\x00\x02\x09cd\
            \xc6ef";
        let got = read_all(&mut ChunkReader::new(Limits::default()), bytes);
        let stamps: Vec<u32> = got.iter().map(|m| m.header.timestamp).collect();
        assert_eq!(stamps, [1000, 1040, 1080]);
        assert_eq!(&got[2].payload[..], b"ef");
    }

    #[test]
    fn interleaved_chunk_streams() {
        // Two 300-byte messages on csids 4 and 6 with 128-byte chunks, chunks alternating.
        let (a, b) = (payload(300, 1), payload(300, 2));
        let mut wa = Vec::new();
        let mut wb = Vec::new();
        let mut w = ChunkWriter::new();
        w.write(header(4, 10, 8), &a, &mut wa);
        w.write(header(6, 20, 9), &b, &mut wb);
        // Split each at its chunk boundaries: first chunk 12 + 128, then 1 + 128, then 1 + 44.
        let cuts = |v: &[u8]| vec![v[..140].to_vec(), v[140..269].to_vec(), v[269..].to_vec()];
        let (ca, cb) = (cuts(&wa), cuts(&wb));
        let mut bytes = Vec::new();
        for i in 0..3 {
            bytes.extend_from_slice(&ca[i]);
            bytes.extend_from_slice(&cb[i]);
        }
        let got = read_all(&mut ChunkReader::new(Limits::default()), &bytes);
        assert_eq!(got.len(), 2);
        assert_eq!((got[0].header.csid, &got[0].payload[..]), (4, &a[..]));
        assert_eq!((got[1].header.csid, &got[1].payload[..]), (6, &b[..]));
    }

    #[test]
    fn byte_by_byte_feeding_gives_the_same_messages() {
        let mut w = ChunkWriter::new();
        let mut out = Vec::new();
        w.write(header(4, 0x0100_0000, 8), &payload(500, 1), &mut out);
        w.write(header(6, 5, 9), &payload(0, 0), &mut out);
        w.write(header(4, 0x0100_0010, 8), &payload(129, 2), &mut out);
        let mut r = ChunkReader::new(Limits::default());
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for b in &out {
            buf.extend_from_slice(std::slice::from_ref(b));
            while let Some(m) = r.read(&mut buf).unwrap() {
                got.push(m);
            }
        }
        assert_eq!(got.len(), 3);
        assert_eq!(got[1].payload.len(), 0);
        assert_eq!(got[2].header.timestamp, 0x0100_0010);
        assert_eq!(&got[2].payload[..], &payload(129, 2)[..]);
    }

    #[test]
    fn chunk_sizes_out_of_bounds_are_errors() {
        let mut r = ChunkReader::new(Limits::default());
        let err = r.set_chunk_size(1 << 31).unwrap_err();
        assert_eq!(
            err.to_string(),
            "server sent a chunk size of 2147483648; at most 16777216 accepted"
        );
        assert_eq!(r.set_chunk_size(0), Err(ChunkError::ChunkSizeZero));
        assert_eq!(r.chunk_size(), 128);
        r.set_chunk_size(16 * 1024 * 1024).unwrap();
    }

    #[test]
    fn malformed_streams_are_errors() {
        // Continuation of a chunk stream never opened.
        let mut r = ChunkReader::new(Limits::default());
        let err = r.read(&mut BytesMut::from(&b"\xc5abc"[..])).unwrap_err();
        assert_eq!(err, ChunkError::UnknownChunkStream { csid: 5, fmt: 3 });
        let err = r.read(&mut BytesMut::from(&b"\x45\x00"[..])).unwrap_err();
        assert_eq!(err, ChunkError::UnknownChunkStream { csid: 5, fmt: 1 });
        // A message longer than the limit, refused on its header.
        let mut r = ChunkReader::new(Limits {
            max_message_len: 1000,
            ..Limits::default()
        });
        let err = r
            .read(&mut BytesMut::from(
                &b"\x04\x00\x00\x00\xff\xff\xff\x09\x01\x00\x00\x00"[..],
            ))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "server sent a message of 16777215 bytes on chunk stream 4; at most 1000 accepted"
        );
        // A new type-0 message while the previous one on that csid is unfinished.
        let mut r = ChunkReader::new(Limits::default());
        let mut bytes = b"\x04\x00\x00\x00\x00\x01\x00\x09\x01\x00\x00\x00".to_vec();
        bytes.extend_from_slice(&[0; 128]);
        bytes.extend_from_slice(b"\x04\x00\x00\x00\x00\x00\x01\x09\x01\x00\x00\x00x");
        let err = r.read(&mut BytesMut::from(&bytes[..])).unwrap_err();
        assert_eq!(
            err,
            ChunkError::Interrupted {
                csid: 4,
                got: 128,
                len: 1
            }
        );
    }

    #[test]
    fn truncated_input_waits_and_consumes_nothing() {
        let mut w = ChunkWriter::new();
        let mut out = Vec::new();
        w.write(header(300, 0x0100_0000, 8), &payload(100, 1), &mut out);
        for cut in 0..out.len() {
            let mut r = ChunkReader::new(Limits::default());
            let mut buf = BytesMut::from(&out[..cut]);
            assert_eq!(r.read(&mut buf).unwrap(), None);
            assert_eq!(buf.len(), cut, "nothing consumed at cut {cut}");
        }
    }

    #[test]
    fn limits_on_unfinished_messages() {
        let limits = Limits {
            max_partial: 3,
            max_buffered: 1000,
            ..Limits::default()
        };
        // Four unfinished 200-byte messages on csids 3..=6: the fourth is refused.
        let mut bytes = Vec::new();
        for csid in 3..=6u8 {
            bytes.extend_from_slice(&[csid, 0, 0, 0, 0, 0, 200, 9, 1, 0, 0, 0]);
            bytes.extend_from_slice(&[0; 128]);
        }
        let mut r = ChunkReader::new(limits);
        let err = r.read(&mut BytesMut::from(&bytes[..])).unwrap_err();
        assert_eq!(err, ChunkError::TooManyPartial { max: 3 });
        // Buffered bytes: the eighth 128-byte piece of three 600-byte messages passes 1000.
        let mut r = ChunkReader::new(limits);
        let mut bytes = Vec::new();
        for csid in 3..=5u8 {
            bytes.extend_from_slice(&[csid, 0, 0, 0, 0, 2, 0x58, 9, 1, 0, 0, 0]);
            bytes.extend_from_slice(&[0; 128]);
        }
        for _ in 0..2 {
            for csid in 3..=5u8 {
                bytes.push(0xC0 | csid);
                bytes.extend_from_slice(&[0; 128]);
            }
        }
        let err = r.read(&mut BytesMut::from(&bytes[..])).unwrap_err();
        assert_eq!(err, ChunkError::TooMuchBuffered { max: 1000 });
        // An abort frees what the message held.
        let mut r = ChunkReader::new(limits);
        let mut buf = BytesMut::from(&bytes[..140]);
        assert_eq!(r.read(&mut buf).unwrap(), None);
        assert_eq!(r.buffered(), 128);
        r.abort(3);
        assert_eq!(r.buffered(), 0);
    }

    fn arb_messages() -> impl Strategy<Value = Vec<(u32, u32, u8, Vec<u8>)>> {
        prop::collection::vec(
            (
                prop::sample::select(vec![2u32, 3, 4, 6, 63, 64, 400]),
                prop_oneof![0u32..1000, 0xFF_FFF0u32..0x100_0010, any::<u32>()],
                prop::sample::select(vec![8u8, 9, 18, 20]),
                prop::collection::vec(any::<u8>(), 0..3000),
            ),
            1..12,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// Whatever the chunk size, messages written and read back are the same; chunks of
        /// different messages interleave when the writer's output is split at chunk
        /// boundaries and merged (the reader sees them in any order across chunk streams).
        #[test]
        fn written_and_read_back_identical(
            size in prop_oneof![1u32..300, 300u32..=65_536],
            messages in arb_messages(),
            feed in 1usize..5000,
        ) {
            let mut w = ChunkWriter::new();
            w.set_chunk_size(size);
            let mut out = Vec::new();
            for (csid, ts, type_id, p) in &messages {
                w.write(Header { csid: *csid, timestamp: *ts, type_id: *type_id, stream_id: 1 }, p, &mut out);
            }
            let mut r = reader_with(size);
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            for piece in out.chunks(feed) {
                buf.extend_from_slice(piece);
                while let Some(m) = r.read(&mut buf).unwrap() {
                    got.push(m);
                }
            }
            prop_assert!(buf.is_empty());
            prop_assert_eq!(got.len(), messages.len());
            for (m, (csid, ts, type_id, p)) in got.iter().zip(&messages) {
                prop_assert_eq!(m.header, Header { csid: *csid, timestamp: *ts, type_id: *type_id, stream_id: 1 });
                prop_assert_eq!(&m.payload[..], &p[..]);
            }
        }

        /// Two messages on different chunk streams, their continuation chunks interleaved.
        #[test]
        fn interleaved_messages_read_back(
            size in 1u32..600,
            a in prop::collection::vec(any::<u8>(), 0..4000),
            b in prop::collection::vec(any::<u8>(), 0..4000),
            ts in any::<u32>(),
        ) {
            let mut w = ChunkWriter::new();
            w.set_chunk_size(size);
            let (mut wa, mut wb) = (Vec::new(), Vec::new());
            w.write(Header { csid: 4, timestamp: ts, type_id: 8, stream_id: 1 }, &a, &mut wa);
            w.write(Header { csid: 70, timestamp: 3, type_id: 9, stream_id: 1 }, &b, &mut wb);
            let ext = if ts >= EXTENDED { 4 } else { 0 };
            // Cut each at its chunk boundaries (header sizes are known), then alternate.
            let cut = |v: &[u8], first: usize, cont: usize, len: usize| {
                let mut parts = Vec::new();
                let n0 = first + len.min(size as usize);
                parts.push(v[..n0].to_vec());
                let mut at = n0;
                let mut left = len.saturating_sub(size as usize);
                while left > 0 {
                    let n = cont + left.min(size as usize);
                    parts.push(v[at..at + n].to_vec());
                    at += n;
                    left -= left.min(size as usize);
                }
                assert_eq!(at, v.len());
                parts
            };
            let pa = cut(&wa, 12 + ext, 1 + ext, a.len());
            let pb = cut(&wb, 13, 2, b.len());
            let mut bytes = Vec::new();
            for i in 0..pa.len().max(pb.len()) {
                if let Some(p) = pa.get(i) { bytes.extend_from_slice(p); }
                if let Some(p) = pb.get(i) { bytes.extend_from_slice(p); }
            }
            let got = read_all(&mut reader_with(size), &bytes);
            prop_assert_eq!(got.len(), 2);
            let (ga, gb) = if got[0].header.csid == 4 { (&got[0], &got[1]) } else { (&got[1], &got[0]) };
            prop_assert_eq!(&ga.payload[..], &a[..]);
            prop_assert_eq!(ga.header.timestamp, ts);
            prop_assert_eq!(&gb.payload[..], &b[..]);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2000), size in 1u32..200) {
            let mut r = reader_with(size);
            let mut buf = BytesMut::from(&bytes[..]);
            for _ in 0..bytes.len() + 1 {
                match r.read(&mut buf) {
                    Ok(Some(_)) => continue,
                    Ok(None) | Err(_) => break,
                }
            }
        }
    }
}
