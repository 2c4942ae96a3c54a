//! The client session, without I/O: bytes from the server in ([`Session::receive`]), events
//! ([`Session::poll_event`]) and bytes for the server ([`Session::take_output`]) out.
//!
//! Publish, as OBS does it:
//! ```text
//! C0C1 ─▶ ◀─ S0S1S2    C2 ─▶
//! Set Chunk Size (ours) + connect(app, type, flashVer, tcUrl) ─▶
//!                                         ◀─ Window Ack Size, Set Peer Bandwidth, _result
//! releaseStream(key) + FCPublish(key) + createStream ─▶   ◀─ _result(stream id)
//! publish(key, "live") on that stream ─▶       ◀─ onStatus NetStream.Publish.Start: Started
//! audio/video/@setDataFrame ─▶ ... ; answers to pings, Acknowledgements
//! stop: FCUnpublish(key) + deleteStream(stream id)
//! ```
//! Play: connect (with `fourCcList`), createStream, play(name), Set Buffer Length; onStatus
//! NetStream.Play.Start: Started; then media until NetStream.Play.Stop/UnpublishNotify,
//! StreamEOF, or the server closing the connection after media: End.

use std::collections::VecDeque;

use bytes::{BufMut, Bytes, BytesMut};

use super::amf0::{self, Value};
use super::chunk::{ChunkReader, ChunkWriter, Header, Limits, Message, CONTROL_CSID};
use super::handshake::{self, Handshake};
use super::{Class, Endpoint, Error, Media, MediaKind};

// Message types.
const SET_CHUNK_SIZE: u8 = 1;
const ABORT: u8 = 2;
const ACKNOWLEDGEMENT: u8 = 3;
const USER_CONTROL: u8 = 4;
const WINDOW_ACK_SIZE: u8 = 5;
const SET_PEER_BANDWIDTH: u8 = 6;
const AUDIO: u8 = 8;
const VIDEO: u8 = 9;
const DATA_AMF3: u8 = 15;
const COMMAND_AMF3: u8 = 17;
const DATA: u8 = 18;
const COMMAND: u8 = 20;
const AGGREGATE: u8 = 22;

// User control events.
const STREAM_BEGIN: u16 = 0;
const STREAM_EOF: u16 = 1;
const SET_BUFFER_LENGTH: u16 = 3;
const PING_REQUEST: u16 = 6;
const PING_RESPONSE: u16 = 7;

// Our chunk streams: commands of the connection, commands of the stream, and one per media
// kind so that each keeps its own header compression.
const COMMAND_CSID: u32 = 3;
const AUDIO_CSID: u32 = 4;
const DATA_CSID: u32 = 5;
const VIDEO_CSID: u32 = 6;
const STREAM_COMMAND_CSID: u32 = 8;

/// Command messages above this size are refused (real ones are a few hundred bytes).
const MAX_COMMAND_LEN: usize = 1024 * 1024;
/// The largest message (and all unfinished ones together) a destination may send us.
const PUBLISH_MAX_MESSAGE: u32 = 1024 * 1024;
/// Longest piece of server text (an onStatus description) quoted in an error.
const MAX_QUOTE: usize = 200;

const FLASH_VER: &str = "FMLE/3.0 (compatible; FMSc/1.0)";
const PLAYER_FLASH_VER: &str = "LNX 9,0,124,2";
/// The codecs the player asks for (Enhanced RTMP v1 `fourCcList`).
pub const FOURCC_LIST: [&str; 10] = [
    "avc1", "hvc1", "av01", "vp09", "Opus", "mp4a", ".mp3", "ac-3", "ec-3", "fLaC",
];
/// `@setDataFrame` as an AMF0 string.
const SET_DATA_FRAME: &[u8] = b"\x02\x00\x0d@setDataFrame";
const ON_METADATA: &[u8] = b"\x02\x00\x0aonMetaData";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Publish,
    Play,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// NetStream.Publish.Start (publish) or NetStream.Play.Start (play).
    Started,
    /// A media message (play).
    Media(Media),
    /// The stream ended cleanly (play).
    End,
    /// Worth a log line, not an error (an `_error` to releaseStream, ...).
    Warning(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    Handshake,
    /// `connect` sent.
    Connect,
    /// `createStream` sent.
    CreateStream,
    /// `publish` or `play` sent.
    Start,
    Live,
    /// Ended (play) or stopped by us.
    Closed,
}

// Transaction ids.
const TXN_CONNECT: f64 = 1.0;
const TXN_RELEASE: f64 = 2.0;
const TXN_FCPUBLISH: f64 = 3.0;
const TXN_CREATE: f64 = 4.0;
const TXN_START: f64 = 5.0;

pub struct Session {
    mode: Mode,
    ep: Endpoint,
    step: Step,
    handshake: Handshake,
    reader: ChunkReader,
    writer: ChunkWriter,
    chunk_size: u32,
    inbuf: BytesMut,
    out: Vec<u8>,
    events: VecDeque<Event>,
    stream_id: u32,
    /// Bytes received from the server, handshake included.
    received: u64,
    /// `received` when we last acknowledged.
    acked: u64,
    /// The server's Window Acknowledgement Size (0: none announced).
    window: u32,
    media_bytes: u64,
    got_media: bool,
}

fn quote(ep: &Endpoint, text: &str) -> String {
    let clean: String = ep
        .redact(text)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    match clean.char_indices().nth(MAX_QUOTE) {
        Some((at, _)) => format!("{}...", &clean[..at]),
        None => clean,
    }
}

fn protocol(message: impl Into<String>) -> Error {
    Error::new(Class::Protocol, message)
}

impl Session {
    /// A session for `ep`, and its first bytes (C0 + C1). `time` and `random` fill C1.
    pub fn new(
        mode: Mode,
        ep: &Endpoint,
        chunk_size: u32,
        time: u32,
        random: &[u8; handshake::PACKET - 8],
    ) -> Session {
        let (hs, c0c1) = Handshake::start(time, random);
        Session {
            mode,
            ep: ep.clone(),
            step: Step::Handshake,
            handshake: hs,
            reader: ChunkReader::new(Self::limits(mode)),
            writer: ChunkWriter::new(),
            chunk_size: chunk_size.clamp(128, 0x00FF_FFFF),
            inbuf: BytesMut::new(),
            out: c0c1,
            events: VecDeque::new(),
            stream_id: 0,
            received: 0,
            acked: 0,
            window: 0,
            media_bytes: 0,
            got_media: false,
        }
    }

    /// What a server may make us hold. A destination (publish) sends only control messages and
    /// command answers: 1 MiB is plenty, and a relay with many destinations stays small. The
    /// ingest (play) sends media: keyframes of several MB, the protocol's whole range.
    fn limits(mode: Mode) -> Limits {
        match mode {
            Mode::Publish => Limits {
                max_message_len: PUBLISH_MAX_MESSAGE,
                max_buffered: PUBLISH_MAX_MESSAGE as usize,
                ..Limits::default()
            },
            Mode::Play => Limits::default(),
        }
    }

    /// Bytes to send to the server, taken (the session forgets them).
    #[cfg(test)]
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    /// Appends the bytes to send to `out` (which keeps its allocation).
    pub fn drain_output_into(&mut self, out: &mut Vec<u8>) {
        if out.is_empty() {
            std::mem::swap(out, &mut self.out);
        } else {
            out.append(&mut self.out);
        }
    }

    pub fn has_output(&self) -> bool {
        !self.out.is_empty()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    #[cfg(test)]
    pub fn is_live(&self) -> bool {
        self.step == Step::Live
    }

    pub fn media_bytes(&self) -> u64 {
        self.media_bytes
    }

    /// What the session waits for, for a timeout's message.
    pub fn waiting_for(&self) -> &'static str {
        match (self.step, self.mode) {
            (Step::Handshake, _) => "the server's handshake",
            (Step::Connect, _) => "the answer to connect",
            (Step::CreateStream, _) => "the answer to createStream",
            (Step::Start, Mode::Publish) => "NetStream.Publish.Start",
            (Step::Start, Mode::Play) => "NetStream.Play.Start",
            (Step::Live | Step::Closed, _) => "nothing",
        }
    }

    fn refused(&self, what: &str) -> Error {
        Error::new(Class::Refused, format!("refused: {what}"))
    }

    /// Bytes from the server.
    pub fn receive(&mut self, mut data: &[u8]) -> Result<(), Error> {
        self.received += data.len() as u64;
        if self.step == Step::Handshake {
            let p = self
                .handshake
                .receive(data)
                .map_err(|e| protocol(e.to_string()))?;
            if let Some(c2) = p.send {
                self.out.extend_from_slice(&c2);
            }
            data = &data[p.consumed..];
            if !p.done {
                return Ok(());
            }
            self.after_handshake();
        }
        self.inbuf.extend_from_slice(data);
        while self.step != Step::Closed {
            let msg = self
                .reader
                .read(&mut self.inbuf)
                .map_err(|e| protocol(e.to_string()))?;
            let Some(msg) = msg else { break };
            self.handle(msg)?;
        }
        self.maybe_ack();
        Ok(())
    }

    /// The server closed the connection: the error it means, or Ok for a clean end of a play.
    pub fn eof(&mut self) -> Result<(), Error> {
        match (self.step, self.mode) {
            (Step::Closed, _) => Ok(()),
            (Step::Handshake, _) => Err(protocol(
                "the server closed the connection during the RTMP handshake",
            )),
            (Step::Live, Mode::Play) if self.got_media => {
                self.step = Step::Closed;
                self.events.push_back(Event::End);
                Ok(())
            }
            (Step::Live, _) => Err(Error::new(
                Class::Dropped,
                "the server closed the connection",
            )),
            (_, Mode::Publish) => Err(self.refused(&format!(
                "the server closed the connection before NetStream.Publish.Start (waiting for {})",
                self.waiting_for()
            ))),
            (_, Mode::Play) => Err(self.refused(&format!(
                "the server closed the connection before NetStream.Play.Start (waiting for {})",
                self.waiting_for()
            ))),
        }
    }

    /// The connection broke (reset, or a write failed): the error it means at this step.
    /// `detail` is the system's word for it.
    pub fn broken(&self, detail: &str) -> Error {
        match self.step {
            Step::Handshake => protocol(format!(
                "the server broke the connection during the RTMP handshake: {detail}"
            )),
            Step::Connect | Step::CreateStream | Step::Start => {
                let what = match self.mode {
                    Mode::Publish => "NetStream.Publish.Start",
                    Mode::Play => "NetStream.Play.Start",
                };
                self.refused(&format!(
                    "the server broke the connection before {what} (waiting for {}): {detail}",
                    self.waiting_for()
                ))
            }
            Step::Live | Step::Closed => {
                Error::new(Class::Dropped, format!("the connection broke: {detail}"))
            }
        }
    }

    fn write(&mut self, csid: u32, type_id: u8, stream_id: u32, timestamp: u32, payload: &[u8]) {
        self.writer.write(
            Header {
                csid,
                timestamp,
                type_id,
                stream_id,
            },
            payload,
            &mut self.out,
        );
    }

    fn control(&mut self, type_id: u8, payload: &[u8]) {
        self.write(CONTROL_CSID, type_id, 0, 0, payload);
    }

    fn command(&mut self, stream_id: u32, values: &[Value]) {
        let csid = if stream_id == 0 {
            COMMAND_CSID
        } else {
            STREAM_COMMAND_CSID
        };
        let body = amf0::encode_all(values);
        self.write(csid, COMMAND, stream_id, 0, &body);
    }

    fn after_handshake(&mut self) {
        // Our chunk size first, before connect, as OBS does; it applies from the next chunk.
        let size = self.chunk_size;
        self.control(SET_CHUNK_SIZE, &size.to_be_bytes());
        self.writer.set_chunk_size(size);
        let mut props = vec![("app".to_owned(), Value::str(&self.ep.app))];
        match self.mode {
            Mode::Publish => {
                props.push(("type".into(), Value::str("nonprivate")));
                props.push(("flashVer".into(), Value::str(FLASH_VER)));
                props.push(("tcUrl".into(), Value::String(self.ep.tc_url())));
            }
            Mode::Play => {
                props.push(("flashVer".into(), Value::str(PLAYER_FLASH_VER)));
                props.push(("tcUrl".into(), Value::String(self.ep.tc_url())));
                props.push(("fpad".into(), Value::Boolean(false)));
                props.push(("capabilities".into(), Value::Number(15.0)));
                props.push(("audioCodecs".into(), Value::Number(4071.0)));
                props.push(("videoCodecs".into(), Value::Number(252.0)));
                props.push(("videoFunction".into(), Value::Number(1.0)));
                props.push((
                    "fourCcList".into(),
                    Value::StrictArray(FOURCC_LIST.iter().map(|c| Value::str(c)).collect()),
                ));
            }
        }
        self.command(
            0,
            &[
                Value::str("connect"),
                Value::Number(TXN_CONNECT),
                Value::Object(props),
            ],
        );
        self.step = Step::Connect;
    }

    fn maybe_ack(&mut self) {
        // As OBS: acknowledge when a tenth of the window has come in since the last one.
        if self.window > 0 && self.received - self.acked >= u64::from(self.window / 10).max(1) {
            self.acked = self.received;
            let seq = self.received as u32;
            self.control(ACKNOWLEDGEMENT, &seq.to_be_bytes());
        }
    }

    fn handle(&mut self, msg: Message) -> Result<(), Error> {
        let p = &msg.payload;
        let u32_at = |at: usize| -> Option<u32> {
            p.get(at..at + 4)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        };
        match msg.header.type_id {
            SET_CHUNK_SIZE => {
                let size = u32_at(0).ok_or_else(|| protocol("short Set Chunk Size message"))?;
                self.reader
                    .set_chunk_size(size)
                    .map_err(|e| protocol(e.to_string()))?;
            }
            ABORT => {
                let csid = u32_at(0).ok_or_else(|| protocol("short Abort message"))?;
                self.reader.abort(csid);
            }
            WINDOW_ACK_SIZE => {
                self.window =
                    u32_at(0).ok_or_else(|| protocol("short Window Acknowledgement Size"))?;
            }
            ACKNOWLEDGEMENT | SET_PEER_BANDWIDTH => {}
            USER_CONTROL => self.user_control(p)?,
            AUDIO | VIDEO if self.mode == Mode::Play => {
                let kind = if msg.header.type_id == AUDIO {
                    MediaKind::Audio
                } else {
                    MediaKind::Video
                };
                self.media(kind, msg.header.timestamp, msg.payload);
            }
            DATA | DATA_AMF3 => {
                let body = if msg.header.type_id == DATA_AMF3 {
                    msg.payload.slice(p.len().min(1)..)
                } else {
                    msg.payload.clone()
                };
                self.data(msg.header.timestamp, body)?;
            }
            COMMAND | COMMAND_AMF3 => {
                if p.len() > MAX_COMMAND_LEN {
                    return Err(protocol(format!(
                        "server sent a command of {} bytes; at most {MAX_COMMAND_LEN} accepted",
                        p.len()
                    )));
                }
                let body = if msg.header.type_id == COMMAND_AMF3 {
                    &p[p.len().min(1)..]
                } else {
                    &p[..]
                };
                let values = amf0::decode_all(body).map_err(|e| {
                    protocol(format!("server sent a command that does not decode: {e}"))
                })?;
                self.command_in(&values)?;
            }
            AGGREGATE if self.mode == Mode::Play => self.aggregate(&msg)?,
            _ => {}
        }
        Ok(())
    }

    fn user_control(&mut self, p: &[u8]) -> Result<(), Error> {
        let event = p
            .get(0..2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .ok_or_else(|| protocol("short User Control message"))?;
        match event {
            PING_REQUEST => {
                let stamp = p
                    .get(2..6)
                    .ok_or_else(|| protocol("short Ping Request"))?
                    .to_vec();
                let mut pong = PING_RESPONSE.to_be_bytes().to_vec();
                pong.extend_from_slice(&stamp);
                self.control(USER_CONTROL, &pong);
            }
            STREAM_EOF if self.mode == Mode::Play && self.step == Step::Live => {
                let id = p
                    .get(2..6)
                    .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
                if id == Some(self.stream_id) {
                    self.end();
                }
            }
            STREAM_BEGIN | STREAM_EOF => {}
            _ => {}
        }
        Ok(())
    }

    fn end(&mut self) {
        if self.step != Step::Closed {
            self.step = Step::Closed;
            self.events.push_back(Event::End);
        }
    }

    fn media(&mut self, kind: MediaKind, timestamp: u32, payload: Bytes) {
        if self.step == Step::Closed {
            return;
        }
        self.got_media = true;
        self.media_bytes += payload.len() as u64;
        self.events.push_back(Event::Media(Media {
            kind,
            timestamp,
            payload,
        }));
    }

    /// A data message: onStatus (some servers send it as data), or metadata for the relay.
    fn data(&mut self, timestamp: u32, mut body: Bytes) -> Result<(), Error> {
        if body.starts_with(SET_DATA_FRAME) {
            body = body.slice(SET_DATA_FRAME.len()..);
        }
        let Ok((name, _)) = amf0::decode_one(&body) else {
            return Ok(());
        };
        match name.as_str() {
            Some("onStatus") => {
                let values = amf0::decode_all(&body).unwrap_or_default();
                if let Some(info) = values.iter().find(|v| matches!(v, Value::Object(_))) {
                    self.status(info)?;
                }
            }
            // Flash's access flags, not stream data.
            Some(n) if n.starts_with('|') => {}
            _ if self.mode == Mode::Play => self.media(MediaKind::Data, timestamp, body),
            _ => {}
        }
        Ok(())
    }

    /// FLV tags packed in one message; their timestamps are relative to the message's.
    fn aggregate(&mut self, msg: &Message) -> Result<(), Error> {
        let p = &msg.payload;
        let mut at = 0;
        let mut first: Option<u32> = None;
        while at < p.len() {
            let h = p
                .get(at..at + 11)
                .ok_or_else(|| protocol("truncated aggregate message"))?;
            let size = u32::from_be_bytes([0, h[1], h[2], h[3]]) as usize;
            let ts = u32::from_be_bytes([h[7], h[4], h[5], h[6]]);
            let start = at + 11;
            let end = start + size;
            if end + 4 > p.len() {
                return Err(protocol(format!(
                    "aggregate message: a tag of {size} bytes at byte {at} does not fit its {} bytes",
                    p.len()
                )));
            }
            let base = *first.get_or_insert(ts);
            let timestamp = msg.header.timestamp.wrapping_add(ts.wrapping_sub(base));
            let kind = match h[0] {
                AUDIO => Some(MediaKind::Audio),
                VIDEO => Some(MediaKind::Video),
                _ => None,
            };
            match kind {
                Some(kind) => self.media(kind, timestamp, p.slice(start..end)),
                None if h[0] == DATA => self.data(timestamp, p.slice(start..end))?,
                None => {}
            }
            at = end + 4;
        }
        Ok(())
    }

    fn command_in(&mut self, values: &[Value]) -> Result<(), Error> {
        let name = values.first().and_then(Value::as_str).unwrap_or("");
        let txn = values.get(1).and_then(Value::as_number).unwrap_or(-1.0);
        // The information object: the first object after the command object.
        let info = values
            .iter()
            .skip(3)
            .find(|v| matches!(v, Value::Object(_) | Value::EcmaArray(_)));
        match name {
            "_result" => self.result(txn, values),
            "_error" => {
                let what = self.describe(info);
                match txn {
                    t if t == TXN_RELEASE || t == TXN_FCPUBLISH => {
                        let cmd = if t == TXN_RELEASE {
                            "releaseStream"
                        } else {
                            "FCPublish"
                        };
                        self.events.push_back(Event::Warning(format!(
                            "the server answered {cmd} with an error: {what}"
                        )));
                        Ok(())
                    }
                    t if t == TXN_CONNECT && self.step == Step::Connect => {
                        Err(self.refused(&format!("connect: {what}")))
                    }
                    t if t == TXN_CREATE && self.step == Step::CreateStream => {
                        Err(self.refused(&format!("createStream: {what}")))
                    }
                    t if t == TXN_START && self.step == Step::Start => {
                        let cmd = match self.mode {
                            Mode::Publish => "publish",
                            Mode::Play => "play",
                        };
                        Err(self.refused(&format!("{cmd}: {what}")))
                    }
                    _ => {
                        self.events.push_back(Event::Warning(format!(
                            "the server answered a command with an error: {what}"
                        )));
                        Ok(())
                    }
                }
            }
            "onStatus" => match info {
                Some(info) => self.status(info),
                None => Ok(()),
            },
            "close" => match self.mode {
                Mode::Play if self.got_media => {
                    self.end();
                    Ok(())
                }
                _ => Err(Error::new(
                    if self.step == Step::Live {
                        Class::Dropped
                    } else {
                        Class::Refused
                    },
                    "the server asked to close the connection",
                )),
            },
            // onBWDone, onFCPublish, onFCUnpublish, _checkbw, ...: nothing to do.
            _ => Ok(()),
        }
    }

    /// "code: description" of an information object, quoted safely.
    fn describe(&self, info: Option<&Value>) -> String {
        let field = |k: &str| info.and_then(|i| i.get(k)).and_then(Value::as_str);
        match (field("code"), field("description")) {
            (Some(c), Some(d)) if !d.is_empty() => quote(&self.ep, &format!("{c}: {d}")),
            (Some(c), _) => quote(&self.ep, c),
            (None, Some(d)) => quote(&self.ep, d),
            (None, None) => "no description".into(),
        }
    }

    fn result(&mut self, txn: f64, values: &[Value]) -> Result<(), Error> {
        if txn == TXN_CONNECT && self.step == Step::Connect {
            match self.mode {
                Mode::Publish => {
                    let key = Value::str(&self.ep.stream);
                    self.command(
                        0,
                        &[
                            Value::str("releaseStream"),
                            Value::Number(TXN_RELEASE),
                            Value::Null,
                            key.clone(),
                        ],
                    );
                    self.command(
                        0,
                        &[
                            Value::str("FCPublish"),
                            Value::Number(TXN_FCPUBLISH),
                            Value::Null,
                            key,
                        ],
                    );
                }
                Mode::Play => {}
            }
            self.command(
                0,
                &[
                    Value::str("createStream"),
                    Value::Number(TXN_CREATE),
                    Value::Null,
                ],
            );
            self.step = Step::CreateStream;
        } else if txn == TXN_CREATE && self.step == Step::CreateStream {
            let id = values
                .iter()
                .skip(3)
                .find_map(Value::as_number)
                .filter(|n| n.is_finite() && *n >= 0.0 && *n <= f64::from(u32::MAX))
                .ok_or_else(|| protocol("the answer to createStream carried no stream id"))?;
            self.stream_id = id as u32;
            let key = Value::str(&self.ep.stream);
            match self.mode {
                Mode::Publish => self.command(
                    self.stream_id,
                    &[
                        Value::str("publish"),
                        Value::Number(TXN_START),
                        Value::Null,
                        key,
                        Value::str("live"),
                    ],
                ),
                Mode::Play => {
                    // Start -2: the live stream if there is one (then a recording).
                    self.command(
                        self.stream_id,
                        &[
                            Value::str("play"),
                            Value::Number(TXN_START),
                            Value::Null,
                            key,
                            Value::Number(-2.0),
                        ],
                    );
                    let mut buffer = SET_BUFFER_LENGTH.to_be_bytes().to_vec();
                    buffer.extend_from_slice(&self.stream_id.to_be_bytes());
                    buffer.extend_from_slice(&1000u32.to_be_bytes());
                    self.control(USER_CONTROL, &buffer);
                }
            }
            self.step = Step::Start;
        }
        Ok(())
    }

    fn status(&mut self, info: &Value) -> Result<(), Error> {
        let level = info.get("level").and_then(Value::as_str).unwrap_or("");
        let code = info.get("code").and_then(Value::as_str).unwrap_or("");
        if level.eq_ignore_ascii_case("error") {
            if self.step == Step::Closed {
                return Ok(());
            }
            return Err(self.refused(&self.describe(Some(info))));
        }
        match (self.mode, code) {
            (Mode::Publish, "NetStream.Publish.Start") | (Mode::Play, "NetStream.Play.Start")
                if self.step == Step::Start =>
            {
                self.step = Step::Live;
                self.events.push_back(Event::Started);
            }
            (Mode::Play, "NetStream.Play.Stop" | "NetStream.Play.UnpublishNotify")
                if self.step == Step::Live =>
            {
                self.end();
            }
            _ => {}
        }
        Ok(())
    }

    /// Queues a batch of media messages (publish, once started).
    pub fn send(&mut self, batch: &[Media]) -> Result<(), Error> {
        if self.step != Step::Live || self.mode != Mode::Publish {
            return Err(Error::new(
                Class::Protocol,
                "media sent on a session that is not publishing",
            ));
        }
        for m in batch {
            let prefix = m.kind == MediaKind::Data && m.payload.starts_with(ON_METADATA);
            let len = m.payload.len() + if prefix { SET_DATA_FRAME.len() } else { 0 };
            if len > super::chunk::MAX_MESSAGE_LEN as usize {
                return Err(protocol(format!(
                    "a {:?} message of {len} bytes does not fit RTMP's 24-bit length",
                    m.kind
                )));
            }
        }
        for m in batch {
            let (csid, type_id) = match m.kind {
                MediaKind::Audio => (AUDIO_CSID, AUDIO),
                MediaKind::Video => (VIDEO_CSID, VIDEO),
                MediaKind::Data => (DATA_CSID, DATA),
            };
            if m.kind == MediaKind::Data && m.payload.starts_with(ON_METADATA) {
                let mut body = Vec::with_capacity(SET_DATA_FRAME.len() + m.payload.len());
                body.put_slice(SET_DATA_FRAME);
                body.put_slice(&m.payload);
                self.write(csid, type_id, self.stream_id, m.timestamp, &body);
            } else {
                self.write(csid, type_id, self.stream_id, m.timestamp, &m.payload);
            }
            self.media_bytes += m.payload.len() as u64;
        }
        Ok(())
    }

    /// Queues the goodbye: FCUnpublish and deleteStream (publish) or deleteStream (play).
    pub fn stop(&mut self) {
        if matches!(self.step, Step::Handshake | Step::Connect | Step::Closed) {
            self.step = Step::Closed;
            return;
        }
        if self.mode == Mode::Publish && self.step == Step::Live {
            let key = Value::str(&self.ep.stream);
            self.command(
                0,
                &[
                    Value::str("FCUnpublish"),
                    Value::Number(6.0),
                    Value::Null,
                    key,
                ],
            );
        }
        if self.stream_id != 0 {
            let id = f64::from(self.stream_id);
            self.command(
                0,
                &[
                    Value::str("deleteStream"),
                    Value::Number(7.0),
                    Value::Null,
                    Value::Number(id),
                ],
            );
        }
        self.step = Step::Closed;
    }
}

#[cfg(test)]
mod tests;
