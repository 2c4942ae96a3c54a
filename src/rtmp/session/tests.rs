//! The command flows against server answers as nginx-rtmp and MediaMTX send them (written with
//! our own chunk writer and AMF0 encoder, plus literal bytes), and malformed servers.

use super::*;
use crate::rtmp::chunk::INITIAL_CHUNK_SIZE;
use proptest::prelude::*;

const KEY: &str = "sk-abc-123-SECRET";

fn ep() -> Endpoint {
    Endpoint {
        host: "ingest.example.net".into(),
        port: 1935,
        tls: false,
        app: "live".into(),
        stream: KEY.into(),
    }
}

/// The server side: reads what the client sent, writes answers.
struct Server {
    reader: ChunkReader,
    writer: ChunkWriter,
    inbuf: BytesMut,
}

impl Server {
    fn new() -> Server {
        Server {
            reader: ChunkReader::new(Limits::default()),
            writer: ChunkWriter::new(),
            inbuf: BytesMut::new(),
        }
    }

    /// The messages in the client's output, honouring its Set Chunk Size.
    fn messages(&mut self, s: &mut Session) -> Vec<Message> {
        self.inbuf.extend_from_slice(&s.take_output());
        let mut out = Vec::new();
        while let Some(m) = self.reader.read(&mut self.inbuf).unwrap() {
            if m.header.type_id == SET_CHUNK_SIZE {
                let size = u32::from_be_bytes(m.payload[..4].try_into().unwrap());
                self.reader.set_chunk_size(size).unwrap();
            }
            out.push(m);
        }
        assert!(self.inbuf.is_empty(), "client output ends mid-chunk");
        out
    }

    fn message(&mut self, csid: u32, type_id: u8, stream_id: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        self.writer.write(
            Header {
                csid,
                timestamp: 0,
                type_id,
                stream_id,
            },
            payload,
            &mut out,
        );
        out
    }

    fn command(&mut self, stream_id: u32, values: &[Value]) -> Vec<u8> {
        self.message(3, COMMAND, stream_id, &amf0::encode_all(values))
    }

    fn set_chunk_size(&mut self, size: u32) -> Vec<u8> {
        let out = self.message(2, SET_CHUNK_SIZE, 0, &size.to_be_bytes());
        self.writer.set_chunk_size(size);
        out
    }
}

fn command_values(m: &Message) -> Vec<Value> {
    assert_eq!(m.header.type_id, COMMAND, "{m:?}");
    amf0::decode_all(&m.payload).unwrap()
}

fn name(m: &Message) -> String {
    command_values(m)[0].as_str().unwrap().to_owned()
}

fn s0s1s2() -> Vec<u8> {
    let mut b = vec![3u8];
    b.extend((0..handshake::PACKET).map(|i| (i % 251) as u8));
    b.extend(std::iter::repeat_n(0u8, handshake::PACKET));
    b
}

fn info(level: &str, code: &str, description: &str) -> Value {
    Value::Object(vec![
        ("level".into(), Value::str(level)),
        ("code".into(), Value::str(code)),
        ("description".into(), Value::str(description)),
    ])
}

fn result(txn: f64, a: Value, b: Value) -> Vec<Value> {
    vec![Value::str("_result"), Value::Number(txn), a, b]
}

fn on_status(level: &str, code: &str, description: &str) -> Vec<Value> {
    vec![
        Value::str("onStatus"),
        Value::Number(0.0),
        Value::Null,
        info(level, code, description),
    ]
}

fn connect_result() -> Vec<Value> {
    result(
        1.0,
        Value::Object(vec![
            ("fmsVer".into(), Value::str("FMS/3,0,1,123")),
            ("capabilities".into(), Value::Number(31.0)),
        ]),
        info(
            "status",
            "NetConnection.Connect.Success",
            "Connection succeeded.",
        ),
    )
}

/// A session through the handshake; returns it, the server, and the client's first messages.
fn handshaken(mode: Mode) -> (Session, Server, Vec<Message>) {
    let mut s = Session::new(mode, &ep(), 4096, 0, &[7; handshake::PACKET - 8]);
    let c0c1 = s.take_output();
    assert_eq!(c0c1.len(), 1 + handshake::PACKET);
    assert_eq!(c0c1[0], 3);
    let flight = s0s1s2();
    s.receive(&flight).unwrap();
    let out = s.take_output();
    assert_eq!(
        &out[..handshake::PACKET],
        &flight[1..1 + handshake::PACKET],
        "C2 = S1"
    );
    let mut server = Server::new();
    server.inbuf.extend_from_slice(&out[handshake::PACKET..]);
    let msgs = server.messages(&mut s);
    (s, server, msgs)
}

/// A publish session up to NetStream.Publish.Start, as against MediaMTX.
fn publishing() -> (Session, Server) {
    let (mut s, mut server, _) = handshaken(Mode::Publish);
    let mut answer = server.set_chunk_size(65_536);
    answer.extend(server.message(2, WINDOW_ACK_SIZE, 0, &2_500_000u32.to_be_bytes()));
    answer.extend(server.message(2, SET_PEER_BANDWIDTH, 0, &[0, 0x26, 0x25, 0xA0, 2]));
    answer.extend(server.command(0, &connect_result()));
    s.receive(&answer).unwrap();
    server.messages(&mut s);
    let bytes = server.command(0, &result(4.0, Value::Null, Value::Number(1.0)));
    s.receive(&bytes).unwrap();
    server.messages(&mut s);
    let bytes = server.command(
        1,
        &on_status("status", "NetStream.Publish.Start", "Start publishing"),
    );
    s.receive(&bytes).unwrap();
    assert_eq!(s.poll_event(), Some(Event::Started));
    (s, server)
}

#[test]
fn publishes_like_obs() {
    let (mut s, mut server, first) = handshaken(Mode::Publish);
    // Our chunk size on csid 2, before connect.
    assert_eq!(first.len(), 2);
    assert_eq!(first[0].header.csid, 2);
    assert_eq!(first[0].header.type_id, SET_CHUNK_SIZE);
    assert_eq!(&first[0].payload[..], &4096u32.to_be_bytes());
    let connect = command_values(&first[1]);
    assert_eq!(connect[0], Value::str("connect"));
    assert_eq!(connect[1], Value::Number(1.0));
    let props = &connect[2];
    assert_eq!(props.get("app"), Some(&Value::str("live")));
    assert_eq!(props.get("type"), Some(&Value::str("nonprivate")));
    assert_eq!(
        props.get("flashVer"),
        Some(&Value::str("FMLE/3.0 (compatible; FMSc/1.0)"))
    );
    assert_eq!(
        props.get("tcUrl"),
        Some(&Value::str("rtmp://ingest.example.net/live"))
    );
    assert_eq!(
        props.get("fourCcList"),
        None,
        "OBS sends none when publishing"
    );
    assert_eq!(s.waiting_for(), "the answer to connect");

    // nginx-rtmp's answer: Window Ack Size, Set Peer Bandwidth, Set Chunk Size 4096 (literal
    // bytes), then _result.
    let mut answer = b"\x02\x00\x00\x00\x00\x00\x04\x05\x00\x00\x00\x00\x00\x4c\x4b\x40".to_vec();
    answer
        .extend_from_slice(b"\x02\x00\x00\x00\x00\x00\x05\x06\x00\x00\x00\x00\x00\x4c\x4b\x40\x02");
    answer.extend_from_slice(b"\x02\x00\x00\x00\x00\x00\x04\x01\x00\x00\x00\x00\x00\x00\x10\x00");
    server.writer.set_chunk_size(4096);
    answer.extend(server.command(0, &connect_result()));
    s.receive(&answer).unwrap();
    let next = server.messages(&mut s);
    let names: Vec<String> = next.iter().map(name).collect();
    assert_eq!(names, ["releaseStream", "FCPublish", "createStream"]);
    assert_eq!(command_values(&next[0])[3], Value::str(KEY));
    assert_eq!(command_values(&next[1])[3], Value::str(KEY));
    assert!(next.iter().all(|m| m.header.stream_id == 0));

    // ffmpeg-style noise: _error to releaseStream is only a warning.
    let bytes = server.command(
        0,
        &[
            Value::str("_error"),
            Value::Number(2.0),
            Value::Null,
            info("error", "NetConnection.Call.Failed", "Method not found"),
        ],
    );
    s.receive(&bytes).unwrap();
    match s.poll_event() {
        Some(Event::Warning(w)) => assert!(w.contains("releaseStream"), "{w}"),
        other => panic!("{other:?}"),
    }
    assert!(server.messages(&mut s).is_empty());

    let bytes = server.command(0, &result(4.0, Value::Null, Value::Number(1.0)));
    s.receive(&bytes).unwrap();
    let publish = server.messages(&mut s);
    assert_eq!(publish.len(), 1);
    assert_eq!(publish[0].header.stream_id, 1);
    let v = command_values(&publish[0]);
    assert_eq!(v[0], Value::str("publish"));
    assert_eq!(v[3], Value::str(KEY));
    assert_eq!(v[4], Value::str("live"));
    assert!(!s.is_live());

    let bytes = server.command(
        1,
        &on_status("status", "NetStream.Publish.Start", "Start publishing"),
    );
    s.receive(&bytes).unwrap();
    assert_eq!(s.poll_event(), Some(Event::Started));
    assert!(s.is_live());

    // The goodbye.
    s.stop();
    let bye = server.messages(&mut s);
    let names: Vec<String> = bye.iter().map(name).collect();
    assert_eq!(names, ["FCUnpublish", "deleteStream"]);
    assert_eq!(command_values(&bye[0])[3], Value::str(KEY));
    assert_eq!(command_values(&bye[1])[3], Value::Number(1.0));
    assert_eq!(s.eof(), Ok(()), "a close after our goodbye is no error");
}

#[test]
fn media_goes_out_byte_for_byte_on_the_stream() {
    let (mut s, mut server) = publishing();
    let metadata = {
        let mut b = ON_METADATA.to_vec();
        Value::EcmaArray(vec![("width".into(), Value::Number(1280.0))]).encode(&mut b);
        Bytes::from(b)
    };
    // An Enhanced RTMP HEVC keyframe (ExVideoHeader, CodedFramesX, "hvc1") and 10 kB of it.
    let mut hevc = vec![0x93, b'h', b'v', b'c', b'1'];
    hevc.extend((0..10_000).map(|i| (i % 253) as u8));
    let batch = [
        Media {
            kind: MediaKind::Data,
            timestamp: 0,
            payload: metadata.clone(),
        },
        Media {
            kind: MediaKind::Video,
            timestamp: 0,
            payload: Bytes::from(hevc.clone()),
        },
        Media {
            kind: MediaKind::Audio,
            timestamp: 21,
            payload: Bytes::from_static(b"\xaf\x01audio"),
        },
        Media {
            kind: MediaKind::Data,
            timestamp: 40,
            payload: Bytes::from_static(b"\x02\x00\x0aonCuePoint\x05"),
        },
    ];
    s.send(&batch).unwrap();
    let out = server.messages(&mut s);
    assert_eq!(out.len(), 4);
    assert!(out.iter().all(|m| m.header.stream_id == 1));
    let kinds: Vec<u8> = out.iter().map(|m| m.header.type_id).collect();
    assert_eq!(kinds, [DATA, VIDEO, AUDIO, DATA]);
    // Metadata as @setDataFrame + the FLV script payload; other data as it is.
    assert_eq!(&out[0].payload[..SET_DATA_FRAME.len()], SET_DATA_FRAME);
    assert_eq!(&out[0].payload[SET_DATA_FRAME.len()..], &metadata[..]);
    assert_eq!(&out[1].payload[..], &hevc[..]);
    assert_eq!(out[2].header.timestamp, 21);
    assert_eq!(&out[2].payload[..], b"\xaf\x01audio");
    assert_eq!(&out[3].payload[..], &batch[3].payload[..]);
    assert_eq!(
        s.media_bytes(),
        batch.iter().map(|m| m.payload.len() as u64).sum::<u64>()
    );
}

#[test]
fn the_whole_batch_is_one_buffer_of_4096_byte_chunks() {
    let (mut s, _) = publishing();
    let frame = Media {
        kind: MediaKind::Video,
        timestamp: 33,
        payload: Bytes::from(vec![0x27; 10_000]),
    };
    s.send(&[
        frame.clone(),
        Media {
            timestamp: 66,
            ..frame
        },
    ])
    .unwrap();
    let out = s.take_output();
    // First: 12-byte type-0 header, 1-byte continuations after 4096 and 8192 bytes; second:
    // a 4-byte type-2 header (same length and type, a timestamp delta), 2 continuations.
    assert_eq!(out.len(), (12 + 10_000 + 2) + (4 + 10_000 + 2));
    assert_eq!(out[12 + 4096], 0xC6);
    assert_eq!(out[12 + 10_002], 0x86);
}

#[test]
fn pings_are_answered_and_acknowledgements_are_cumulative() {
    let (mut s, mut server) = publishing();
    // Ping request (literal user control on csid 2, timestamp 0x01020304 in the event).
    s.receive(b"\x02\x00\x00\x00\x00\x00\x06\x04\x00\x00\x00\x00\x00\x06\x01\x02\x03\x04")
        .unwrap();
    let pong = server.messages(&mut s);
    assert_eq!(pong.len(), 1);
    assert_eq!(pong[0].header.type_id, USER_CONTROL);
    assert_eq!(&pong[0].payload[..], b"\x00\x07\x01\x02\x03\x04");

    // Window 2 500 000: an ack once 250 000 bytes have come in since the last.
    let received_so_far = s.received;
    let filler = server.message(5, DATA, 1, &[0x05; 100_000]);
    let mut acks = Vec::new();
    for _ in 0..6 {
        s.receive(&filler).unwrap();
        acks.extend(
            server
                .messages(&mut s)
                .into_iter()
                .filter(|m| m.header.type_id == ACKNOWLEDGEMENT),
        );
    }
    assert_eq!(acks.len(), 2, "after 300 000 and 600 000 bytes");
    let seq = |m: &Message| u64::from(u32::from_be_bytes(m.payload[..4].try_into().unwrap()));
    let per = filler.len() as u64;
    assert_eq!(seq(&acks[0]), received_so_far + 3 * per);
    assert_eq!(seq(&acks[1]), received_so_far + 6 * per);
}

#[test]
fn acknowledgement_sequence_numbers_wrap() {
    let (mut s, mut server) = publishing();
    s.received = u64::from(u32::MAX) - 10;
    s.acked = s.received;
    let filler = server.message(5, DATA, 1, &[0x05; 300_000]);
    s.receive(&filler).unwrap();
    let ack = server
        .messages(&mut s)
        .into_iter()
        .find(|m| m.header.type_id == ACKNOWLEDGEMENT)
        .unwrap();
    let expected = (u64::from(u32::MAX) - 10 + filler.len() as u64) as u32;
    assert_eq!(&ack.payload[..], &expected.to_be_bytes());
}

#[test]
fn refusals_carry_the_servers_words_without_the_key() {
    // onStatus error at publish (nginx-rtmp, a bad name that echoes the key).
    let (mut s, mut server, _) = handshaken(Mode::Publish);
    s.receive(&server.command(0, &connect_result())).unwrap();
    s.receive(&server.command(0, &result(4.0, Value::Null, Value::Number(1.0))))
        .unwrap();
    let bytes = server.command(
        1,
        &on_status(
            "error",
            "NetStream.Publish.BadName",
            &format!("stream {KEY} already publishing\r\n"),
        ),
    );
    let err = s.receive(&bytes).unwrap_err();
    assert_eq!(err.class, Class::Refused);
    assert_eq!(
        err.message,
        "refused: NetStream.Publish.BadName: stream <key> already publishing  "
    );

    // _error to connect.
    let (mut s, mut server, _) = handshaken(Mode::Publish);
    let bytes = server.command(
        0,
        &[
            Value::str("_error"),
            Value::Number(1.0),
            Value::Null,
            info(
                "error",
                "NetConnection.Connect.Rejected",
                "[ AccessManager.Reject ] : [ code=403 need auth; authmod=adobe ] : ",
            ),
        ],
    );
    let err = s.receive(&bytes).unwrap_err();
    assert_eq!(err.class, Class::Refused);
    assert!(
        err.message
            .starts_with("refused: connect: NetConnection.Connect.Rejected: [ AccessManager"),
        "{err}"
    );

    // _error to publish, with a description longer than we quote.
    let (mut s, mut server, _) = handshaken(Mode::Publish);
    s.receive(&server.command(0, &connect_result())).unwrap();
    s.receive(&server.command(0, &result(4.0, Value::Null, Value::Number(1.0))))
        .unwrap();
    let long = "x".repeat(1000);
    let bytes = server.command(
        0,
        &[
            Value::str("_error"),
            Value::Number(5.0),
            Value::Null,
            info("error", "NetStream.Publish.Denied", &long),
        ],
    );
    let err = s.receive(&bytes).unwrap_err();
    assert_eq!(err.class, Class::Refused);
    assert!(err
        .message
        .starts_with("refused: publish: NetStream.Publish.Denied: xxx"));
    assert!(err.message.len() < 300, "{}", err.message.len());

    // Twitch: a wrong key gets no answer, the connection is closed.
    let (mut s, mut server, _) = handshaken(Mode::Publish);
    s.receive(&server.command(0, &connect_result())).unwrap();
    let err = s.eof().unwrap_err();
    assert_eq!(err.class, Class::Refused);
    assert_eq!(
        err.message,
        "refused: the server closed the connection before NetStream.Publish.Start (waiting for \
         the answer to createStream)"
    );
    let err = s.broken("Connection reset by peer");
    assert_eq!(err.class, Class::Refused);

    // An onStatus error after the start (Facebook's NetStream.Publish.Failed, say).
    let (mut s, mut server) = publishing();
    let err = s
        .receive(&server.command(
            1,
            &on_status("error", "NetStream.Publish.Failed", "ingest closed"),
        ))
        .unwrap_err();
    assert_eq!(err.class, Class::Refused);
    assert_eq!(
        err.message,
        "refused: NetStream.Publish.Failed: ingest closed"
    );
}

#[test]
fn closes_and_resets_by_step() {
    let mut s = Session::new(Mode::Publish, &ep(), 4096, 0, &[0; handshake::PACKET - 8]);
    let err = s.eof().unwrap_err();
    assert_eq!(err.class, Class::Protocol);
    assert!(err.message.contains("handshake"), "{err}");
    let (mut s, _) = publishing();
    assert_eq!(s.eof().unwrap_err().class, Class::Dropped);
    assert_eq!(s.broken("reset").class, Class::Dropped);
}

#[test]
fn media_on_a_session_not_live_is_an_error() {
    let (mut s, _, _) = handshaken(Mode::Publish);
    let err = s
        .send(&[Media {
            kind: MediaKind::Audio,
            timestamp: 0,
            payload: Bytes::new(),
        }])
        .unwrap_err();
    assert_eq!(err.class, Class::Protocol);
    let (mut s, _) = publishing();
    let err = s
        .send(&[Media {
            kind: MediaKind::Video,
            timestamp: 0,
            payload: Bytes::from(vec![0; 1 << 24]),
        }])
        .unwrap_err();
    assert!(err.message.contains("24-bit"), "{err}");
    assert!(!s.has_output(), "nothing of a refused batch goes out");
}

/// A play session up to NetStream.Play.Start, as against MediaMTX.
fn playing() -> (Session, Server) {
    let (mut s, mut server, first) = handshaken(Mode::Play);
    let connect = command_values(&first[1]);
    let list: Vec<&str> = match connect[2].get("fourCcList") {
        Some(Value::StrictArray(items)) => items.iter().filter_map(Value::as_str).collect(),
        other => panic!("fourCcList as a strict array, not {other:?}"),
    };
    assert_eq!(list, FOURCC_LIST);
    let mut answer = server.set_chunk_size(65_536);
    answer.extend(server.message(2, WINDOW_ACK_SIZE, 0, &2_500_000u32.to_be_bytes()));
    answer.extend(server.command(0, &connect_result()));
    s.receive(&answer).unwrap();
    let next = server.messages(&mut s);
    let names: Vec<String> = next.iter().map(name).collect();
    assert_eq!(names, ["createStream"]);
    s.receive(&server.command(0, &result(4.0, Value::Null, Value::Number(1.0))))
        .unwrap();
    let next = server.messages(&mut s);
    let v = command_values(&next[0]);
    assert_eq!(v[0], Value::str("play"));
    assert_eq!(v[3], Value::str(KEY));
    assert_eq!(v[4], Value::Number(-2.0));
    assert_eq!(next[0].header.stream_id, 1);
    assert_eq!(next[1].header.type_id, USER_CONTROL);
    assert_eq!(&next[1].payload[..2], &SET_BUFFER_LENGTH.to_be_bytes());
    // MediaMTX: StreamBegin, Play.Reset, Play.Start, Data.Start (as a data message).
    let mut answer = server.message(2, USER_CONTROL, 0, b"\x00\x00\x00\x00\x00\x01");
    answer.extend(server.command(1, &on_status("status", "NetStream.Play.Reset", "")));
    answer.extend(server.command(1, &on_status("status", "NetStream.Play.Start", "")));
    answer.extend(server.message(
        5,
        DATA,
        1,
        &amf0::encode_all(&[
            Value::str("onStatus"),
            info("status", "NetStream.Data.Start", ""),
        ]),
    ));
    answer.extend(server.message(5, DATA, 1, b"\x02\x00\x11|RtmpSampleAccess\x01\x01\x01\x01"));
    s.receive(&answer).unwrap();
    assert_eq!(s.poll_event(), Some(Event::Started));
    assert_eq!(s.poll_event(), None);
    (s, server)
}

fn media_events(s: &mut Session) -> Vec<Media> {
    std::iter::from_fn(|| s.poll_event())
        .map(|e| match e {
            Event::Media(m) => m,
            other => panic!("{other:?}"),
        })
        .collect()
}

#[test]
fn plays_like_a_reader_asking_for_every_codec() {
    let (mut s, mut server) = playing();
    let mut bytes = Vec::new();
    let mut meta = SET_DATA_FRAME.to_vec();
    meta.extend_from_slice(ON_METADATA);
    Value::EcmaArray(vec![]).encode(&mut meta);
    server.writer.write(
        Header {
            csid: 5,
            timestamp: 0,
            type_id: DATA,
            stream_id: 1,
        },
        &meta,
        &mut bytes,
    );
    for (i, (csid, type_id, payload)) in [
        (6, VIDEO, &b"\x17\x00\x00\x00\x00avcC"[..]),
        (4, AUDIO, &b"\xaf\x00\x12\x10"[..]),
        (6, VIDEO, &b"\x93hvc1frame"[..]),
    ]
    .into_iter()
    .enumerate()
    {
        server.writer.write(
            Header {
                csid,
                timestamp: 0x00FF_FFF0 + i as u32 * 40,
                type_id,
                stream_id: 1,
            },
            payload,
            &mut bytes,
        );
    }
    s.receive(&bytes).unwrap();
    let got = media_events(&mut s);
    assert_eq!(got.len(), 4);
    assert_eq!(got[0].kind, MediaKind::Data);
    assert_eq!(
        &got[0].payload[..],
        &meta[SET_DATA_FRAME.len()..],
        "@setDataFrame stripped"
    );
    assert_eq!(got[1].kind, MediaKind::Video);
    assert_eq!(got[1].timestamp, 0x00FF_FFF0);
    assert_eq!(got[3].timestamp, 0x0100_0040);
    assert_eq!(&got[3].payload[..], b"\x93hvc1frame");
    // The end: UnpublishNotify.
    s.receive(&server.command(
        1,
        &on_status("status", "NetStream.Play.UnpublishNotify", ""),
    ))
    .unwrap();
    assert_eq!(s.poll_event(), Some(Event::End));
    assert_eq!(s.eof(), Ok(()));
}

#[test]
fn a_play_ends_on_stream_eof_or_a_close_after_media() {
    let (mut s, mut server) = playing();
    s.receive(&server.message(6, VIDEO, 1, b"\x17\x01"))
        .unwrap();
    media_events(&mut s);
    s.receive(&server.message(2, USER_CONTROL, 0, b"\x00\x01\x00\x00\x00\x01"))
        .unwrap();
    assert_eq!(s.poll_event(), Some(Event::End));

    let (mut s, mut server) = playing();
    // No media yet: a close is a drop.
    assert_eq!(s.broken("reset").class, Class::Dropped);
    s.receive(&server.message(6, VIDEO, 1, b"\x17\x01"))
        .unwrap();
    media_events(&mut s);
    assert_eq!(s.eof(), Ok(()));
    assert_eq!(s.poll_event(), Some(Event::End));

    // Play.StreamNotFound is an error before the start.
    let (mut s, mut server, _) = handshaken(Mode::Play);
    s.receive(&server.command(0, &connect_result())).unwrap();
    s.receive(&server.command(0, &result(4.0, Value::Null, Value::Number(1.0))))
        .unwrap();
    let err = s
        .receive(&server.command(
            1,
            &on_status("error", "NetStream.Play.StreamNotFound", "no such stream"),
        ))
        .unwrap_err();
    assert_eq!(err.class, Class::Refused);
}

#[test]
fn aggregate_messages_are_split_into_media() {
    let (mut s, mut server) = playing();
    let tag = |kind: u8, ts: u32, payload: &[u8]| {
        let mut t = vec![kind];
        t.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
        t.extend_from_slice(&ts.to_be_bytes()[1..]);
        t.push((ts >> 24) as u8);
        t.extend_from_slice(&[0, 0, 0]);
        t.extend_from_slice(payload);
        t.extend_from_slice(&(11 + payload.len() as u32).to_be_bytes());
        t
    };
    let mut agg = tag(VIDEO, 5000, b"\x17\x01v1");
    agg.extend(tag(AUDIO, 5010, b"\xaf\x01a1"));
    agg.extend(tag(VIDEO, 5033, b"\x27\x01v2"));
    let mut bytes = Vec::new();
    server.writer.write(
        Header {
            csid: 6,
            timestamp: 100,
            type_id: AGGREGATE,
            stream_id: 1,
        },
        &agg,
        &mut bytes,
    );
    s.receive(&bytes).unwrap();
    let got = media_events(&mut s);
    let seen: Vec<(MediaKind, u32, &[u8])> = got
        .iter()
        .map(|m| (m.kind, m.timestamp, &m.payload[..]))
        .collect();
    assert_eq!(
        seen,
        [
            (MediaKind::Video, 100, &b"\x17\x01v1"[..]),
            (MediaKind::Audio, 110, &b"\xaf\x01a1"[..]),
            (MediaKind::Video, 133, &b"\x27\x01v2"[..]),
        ]
    );
    // A tag that does not fit is an error.
    let mut bad = Vec::new();
    server.writer.write(
        Header {
            csid: 6,
            timestamp: 200,
            type_id: AGGREGATE,
            stream_id: 1,
        },
        &tag(VIDEO, 0, b"abc")[..10],
        &mut bad,
    );
    assert_eq!(s.receive(&bad).unwrap_err().class, Class::Protocol);
}

#[test]
fn malformed_servers_are_protocol_errors() {
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "chunk size 2^31",
            b"\x02\x00\x00\x00\x00\x00\x04\x01\x00\x00\x00\x00\x80\x00\x00\x00".to_vec(),
            "server sent a chunk size of 2147483648; at most 16777216 accepted",
        ),
        (
            "chunk size 0",
            b"\x02\x00\x00\x00\x00\x00\x04\x01\x00\x00\x00\x00\x00\x00\x00\x00".to_vec(),
            "server sent a chunk size of 0; at least 1 required",
        ),
        (
            "short Set Chunk Size",
            b"\x02\x00\x00\x00\x00\x00\x02\x01\x00\x00\x00\x00\x00\x10".to_vec(),
            "short Set Chunk Size message",
        ),
        (
            "fmt 3 on an unknown chunk stream",
            b"\xc7\x00\x00\x00\x00".to_vec(),
            "server used a type-3 chunk header on chunk stream 7 before any type-0 header",
        ),
        (
            "a command that does not decode",
            b"\x03\x00\x00\x00\x00\x00\x03\x14\x00\x00\x00\x00\x02\x00\x09".to_vec(),
            "server sent a command that does not decode: AMF0: truncated string at byte 3",
        ),
    ];
    for (what, bytes, message) in cases {
        let (mut s, _, _) = handshaken(Mode::Publish);
        let err = s.receive(&bytes).unwrap_err();
        assert_eq!(err.class, Class::Protocol, "{what}");
        assert_eq!(err.message, message, "{what}");
    }
    // Deeply nested AMF in a command.
    let (mut s, mut server, _) = handshaken(Mode::Publish);
    let mut nested = b"\x02\x00\x07_result\x00\x3f\xf0\x00\x00\x00\x00\x00\x00".to_vec();
    for _ in 0..5000 {
        nested.extend_from_slice(b"\x03\x00\x01a");
    }
    let err = s
        .receive(&server.message(3, COMMAND, 0, &nested))
        .unwrap_err();
    assert!(err.message.contains("nesting deeper than 32"), "{err}");
    // A command larger than a command can be.
    let (mut s, mut server, _) = handshaken(Mode::Publish);
    let big = server.message(3, COMMAND, 0, &vec![5u8; 2 * 1024 * 1024]);
    let err = s.receive(&big).unwrap_err();
    assert!(err.message.contains("at most 1048576 accepted"), "{err}");
    // createStream's answer without a stream id.
    let (mut s, mut server, _) = handshaken(Mode::Publish);
    s.receive(&server.command(0, &connect_result())).unwrap();
    let err = s
        .receive(&server.command(0, &result(4.0, Value::Null, Value::str("one"))))
        .unwrap_err();
    assert_eq!(
        err.message,
        "the answer to createStream carried no stream id"
    );
    // A handshake that is not RTMP.
    let mut s = Session::new(Mode::Publish, &ep(), 4096, 0, &[0; handshake::PACKET - 8]);
    let err = s.receive(b"\x16\x03\x01\x02\x00").unwrap_err();
    assert_eq!(err.class, Class::Protocol);
    assert!(err.message.contains("use rtmps://"), "{err}");
}

#[test]
fn the_initial_chunk_size_is_128_until_the_server_says_otherwise() {
    let (mut s, mut server, _) = handshaken(Mode::Publish);
    assert_eq!(s.reader.chunk_size(), INITIAL_CHUNK_SIZE);
    // A 300-byte command in 128-byte chunks is read.
    let mut v = connect_result();
    v.push(Value::String("p".repeat(300)));
    s.receive(&server.command(0, &v)).unwrap();
    assert_eq!(server.messages(&mut s).len(), 3);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Whatever a server sends after the handshake, the session answers with an error or not
    /// at all, never a panic.
    #[test]
    fn any_bytes_after_the_handshake_never_panic(
        bytes in prop::collection::vec(any::<u8>(), 0..3000),
        mode in prop::sample::select(vec![Mode::Publish, Mode::Play]),
    ) {
        let (mut s, _, _) = handshaken(mode);
        for piece in bytes.chunks(97) {
            if s.receive(piece).is_err() {
                break;
            }
        }
    }

    /// Well-formed messages of any type with any payload: never a panic either.
    #[test]
    fn any_message_never_panics(
        type_id in 0u8..30,
        payload in prop::collection::vec(any::<u8>(), 0..600),
        live in any::<bool>(),
        mode in prop::sample::select(vec![Mode::Publish, Mode::Play]),
    ) {
        let (mut s, mut server) = if live {
            if mode == Mode::Publish { publishing() } else { playing() }
        } else {
            let (s, server, _) = handshaken(mode);
            (s, server)
        };
        let bytes = server.message(9, type_id, 1, &payload);
        let _ = s.receive(&bytes);
        let _ = s.eof();
    }
}

#[test]
fn a_destination_may_not_make_us_hold_more_than_a_mib() {
    // A publishing session: a 2 MiB message from the server is refused at its header, before
    // anything is buffered.
    let (mut s, mut server) = publishing();
    let mut bytes = server.set_chunk_size(65_536);
    bytes.extend(server.message(6, VIDEO, 1, &vec![0u8; 2 << 20])[..70_000].to_vec());
    let err = s.receive(&bytes).unwrap_err();
    assert_eq!(err.class, Class::Protocol, "{err}");
    assert!(err.message.contains("1048576"), "{err}");
    // Playing, the same message is media and is taken whole.
    let (mut s, mut server) = playing();
    let mut bytes = server.set_chunk_size(65_536);
    bytes.extend(server.message(6, VIDEO, 1, &vec![0x17; 2 << 20]));
    s.receive(&bytes).unwrap();
    let media = media_events(&mut s);
    assert_eq!(media.last().map(|m| m.payload.len()), Some(2 << 20));
}
