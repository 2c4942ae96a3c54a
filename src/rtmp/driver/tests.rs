//! The driver against a scripted server on 127.0.0.1 (written with our own chunk writer and
//! AMF0 encoder): what real servers are not easily made to do. Stalls, errors while writing,
//! bytes trickling in while `closed()` and `next()` are cancelled over and over.

use std::path::Path;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{sleep, timeout, Instant};

use super::*;
use crate::rtmp::amf0::{self, Value};
use crate::rtmp::chunk::{ChunkReader, ChunkWriter, Header, Limits, Message};
use crate::rtmp::MediaKind;

const KEY: &str = "sk-driver-test-KEY";

struct Server {
    tcp: TcpStream,
    reader: ChunkReader,
    writer: ChunkWriter,
    buf: BytesMut,
}

impl Server {
    async fn accept(listener: &TcpListener) -> Server {
        let (mut tcp, _) = listener.accept().await.unwrap();
        let mut c0c1 = [0u8; 1 + PACKET];
        tcp.read_exact(&mut c0c1).await.unwrap();
        let mut flight = vec![3u8];
        flight.extend(std::iter::repeat_n(1u8, PACKET));
        flight.extend_from_slice(&c0c1[1..]);
        tcp.write_all(&flight).await.unwrap();
        let mut c2 = [0u8; PACKET];
        tcp.read_exact(&mut c2).await.unwrap();
        assert!(c2.iter().all(|&b| b == 1), "C2 echoes S1");
        Server {
            tcp,
            reader: ChunkReader::new(Limits::default()),
            writer: ChunkWriter::new(),
            buf: BytesMut::new(),
        }
    }

    async fn message(&mut self) -> Option<Message> {
        loop {
            if let Some(m) = self.reader.read(&mut self.buf).unwrap() {
                if m.header.type_id == 1 {
                    let size = u32::from_be_bytes(m.payload[..4].try_into().unwrap());
                    self.reader.set_chunk_size(size).unwrap();
                }
                return Some(m);
            }
            let mut chunk = vec![0u8; 65_536];
            let n = self.tcp.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// The next command, skipping other messages; its AMF0 values.
    async fn command(&mut self) -> Vec<Value> {
        loop {
            let m = self.message().await.expect("a command");
            if m.header.type_id == 20 {
                return amf0::decode_all(&m.payload).unwrap();
            }
        }
    }

    fn bytes(&mut self, csid: u32, type_id: u8, stream_id: u32, payload: &[u8]) -> Vec<u8> {
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

    async fn send(&mut self, csid: u32, type_id: u8, stream_id: u32, payload: &[u8]) {
        let bytes = self.bytes(csid, type_id, stream_id, payload);
        self.tcp.write_all(&bytes).await.unwrap();
    }

    async fn send_command(&mut self, stream_id: u32, values: &[Value]) {
        self.send(3, 20, stream_id, &amf0::encode_all(values)).await;
    }

    async fn status(&mut self, level: &str, code: &str) {
        let info = Value::Object(vec![
            ("level".into(), Value::str(level)),
            ("code".into(), Value::str(code)),
            ("description".into(), Value::str("scripted")),
        ]);
        self.send_command(
            1,
            &[
                Value::str("onStatus"),
                Value::Number(0.0),
                Value::Null,
                info,
            ],
        )
        .await;
    }

    async fn answer_connect(&mut self) {
        let connect = self.command().await;
        assert_eq!(connect[0], Value::str("connect"));
        self.send_command(
            0,
            &[
                Value::str("_result"),
                Value::Number(1.0),
                Value::Null,
                Value::Null,
            ],
        )
        .await;
    }

    async fn answer_create_stream(&mut self) {
        loop {
            let v = self.command().await;
            if v[0] == Value::str("createStream") {
                let result = [
                    Value::str("_result"),
                    v[1].clone(),
                    Value::Null,
                    Value::Number(1.0),
                ];
                self.send_command(0, &result).await;
                return;
            }
        }
    }

    /// Up to NetStream.Publish.Start.
    async fn accept_publish(listener: &TcpListener) -> Server {
        let mut s = Server::accept(listener).await;
        s.answer_connect().await;
        s.answer_create_stream().await;
        let publish = s.command().await;
        assert_eq!(publish[0], Value::str("publish"));
        s.status("status", "NetStream.Publish.Start").await;
        s
    }

    /// Up to NetStream.Play.Start.
    async fn accept_play(listener: &TcpListener) -> Server {
        let mut s = Server::accept(listener).await;
        s.answer_connect().await;
        s.answer_create_stream().await;
        let play = s.command().await;
        assert_eq!(play[0], Value::str("play"));
        s.status("status", "NetStream.Play.Start").await;
        s
    }

    async fn ping(&mut self, stamp: u32) {
        let mut p = vec![0, 6];
        p.extend_from_slice(&stamp.to_be_bytes());
        self.send(2, 4, 0, &p).await;
    }

    /// Reads until a ping response with `stamp` arrives (bounded by the caller).
    async fn pong(&mut self, stamp: u32) {
        loop {
            let m = self.message().await.expect("a pong before the end");
            if m.header.type_id == 4 && m.payload[..2] == [0, 7] {
                assert_eq!(&m.payload[2..6], &stamp.to_be_bytes());
                return;
            }
        }
    }
}

async fn listener() -> (TcpListener, Endpoint) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ep = Endpoint {
        host: "127.0.0.1".into(),
        port: l.local_addr().unwrap().port(),
        tls: false,
        app: "live".into(),
        stream: KEY.into(),
    };
    (l, ep)
}

fn tls() -> TlsConfig {
    TlsConfig::new(false, Path::new("/nonexistent")).unwrap()
}

fn video(size: usize, timestamp: u32) -> Media {
    Media {
        kind: MediaKind::Video,
        timestamp,
        payload: bytes::Bytes::from(vec![0x27; size]),
    }
}

#[tokio::test]
async fn a_server_that_stops_reading_fails_the_send_with_a_timeout() {
    let (l, ep) = listener().await;
    let server = tokio::spawn(async move {
        let s = Server::accept_publish(&l).await;
        // Holds the connection without reading.
        sleep(Duration::from_secs(30)).await;
        drop(s);
    });
    let opts = Options {
        write_stall: Duration::from_millis(500),
        ..Options::default()
    };
    let mut p = Publisher::connect(&ep, &tls(), &opts).await.unwrap();
    let start = Instant::now();
    let mut err = None;
    for i in 0..400 {
        if let Err(e) = p.send(&[video(256 * 1024, i * 33)]).await {
            err = Some(e);
            break;
        }
    }
    let err = err.expect("the send stalls once the socket buffers are full");
    assert_eq!(err.class, Class::Timeout, "{err}");
    assert!(err.message.contains("made no progress for 0.5 s"), "{err}");
    assert!(start.elapsed() < Duration::from_secs(20));
    // Final: every later call says the same.
    assert_eq!(p.send(&[video(10, 0)]).await.unwrap_err(), err);
    assert_eq!(p.closed().await, err);
    server.abort();
}

#[tokio::test]
async fn an_error_status_is_noticed_while_a_write_is_blocked() {
    let (l, ep) = listener().await;
    let server = tokio::spawn(async move {
        let mut s = Server::accept_publish(&l).await;
        // Let the client's buffers fill, then refuse without reading.
        sleep(Duration::from_millis(1500)).await;
        s.status("error", "NetStream.Publish.Rejected").await;
        sleep(Duration::from_secs(30)).await;
    });
    let opts = Options {
        write_stall: Duration::from_secs(20),
        ..Options::default()
    };
    let mut p = Publisher::connect(&ep, &tls(), &opts).await.unwrap();
    let start = Instant::now();
    let mut err = None;
    for i in 0..400 {
        if let Err(e) = p.send(&[video(256 * 1024, i * 33)]).await {
            err = Some(e);
            break;
        }
    }
    let err = err.expect("refused");
    assert_eq!(err.class, Class::Refused, "{err}");
    assert_eq!(err.message, "refused: NetStream.Publish.Rejected: scripted");
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
    server.abort();
}

#[tokio::test]
async fn closed_answers_pings_trickling_in_while_cancelled_over_and_over() {
    let (l, ep) = listener().await;
    let server = tokio::spawn(async move {
        let mut s = Server::accept_publish(&l).await;
        for stamp in [7u32, 0x0102_0304] {
            // One byte at a time, slower than the client's select! loop turns.
            let mut p = vec![0, 6];
            p.extend_from_slice(&stamp.to_be_bytes());
            let bytes = s.bytes(2, 4, 0, &p);
            for b in bytes {
                s.tcp.write_all(&[b]).await.unwrap();
                sleep(Duration::from_millis(15)).await;
            }
            timeout(Duration::from_secs(5), s.pong(stamp))
                .await
                .unwrap();
        }
        s.status("error", "NetStream.Publish.BadName").await;
        sleep(Duration::from_secs(5)).await;
    });
    let mut p = Publisher::connect(&ep, &tls(), &Options::default())
        .await
        .unwrap();
    let mut turns = 0;
    let err = loop {
        tokio::select! {
            _ = sleep(Duration::from_millis(5)) => turns += 1,
            e = p.closed() => break e,
        }
        assert!(turns < 2000, "no end in 10 s");
    };
    assert!(turns > 20, "closed() was cancelled {turns} times");
    assert_eq!(err.class, Class::Refused, "{err}");
    assert!(err.message.contains("BadName"), "{err}");
    server.await.unwrap();
}

#[tokio::test]
async fn a_close_after_the_start_is_dropped() {
    let (l, ep) = listener().await;
    let server = tokio::spawn(async move {
        let s = Server::accept_publish(&l).await;
        drop(s);
    });
    let mut p = Publisher::connect(&ep, &tls(), &Options::default())
        .await
        .unwrap();
    let err = timeout(Duration::from_secs(5), p.closed()).await.unwrap();
    assert_eq!(err.class, Class::Dropped, "{err}");
    server.await.unwrap();
}

#[tokio::test]
async fn a_huge_chunk_size_is_a_protocol_error() {
    let (l, ep) = listener().await;
    let server = tokio::spawn(async move {
        let mut s = Server::accept(&l).await;
        s.send(2, 1, 0, &0x8000_0000u32.to_be_bytes()).await;
        sleep(Duration::from_secs(5)).await;
    });
    let err = Publisher::connect(&ep, &tls(), &Options::default())
        .await
        .err()
        .unwrap();
    assert_eq!(err.class, Class::Protocol);
    assert_eq!(
        err.message,
        "server sent a chunk size of 2147483648; at most 16777216 accepted"
    );
    server.abort();
}

#[tokio::test]
async fn no_answer_to_create_stream_times_out_saying_so() {
    let (l, ep) = listener().await;
    let server = tokio::spawn(async move {
        let mut s = Server::accept(&l).await;
        s.answer_connect().await;
        sleep(Duration::from_secs(10)).await;
    });
    let opts = Options {
        publish_timeout: Duration::from_millis(800),
        ..Options::default()
    };
    let err = Publisher::connect(&ep, &tls(), &opts).await.err().unwrap();
    assert_eq!(err.class, Class::Timeout);
    assert!(
        err.message
            .ends_with("within 0.8 s (waiting for the answer to createStream)"),
        "{err}"
    );
    assert!(!err.message.contains(KEY));
    server.abort();
}

#[tokio::test]
async fn the_goodbye_reaches_the_server_before_the_close() {
    let (l, ep) = listener().await;
    let server = tokio::spawn(async move {
        let mut s = Server::accept_publish(&l).await;
        let mut names = Vec::new();
        let mut media = 0;
        while let Some(m) = s.message().await {
            match m.header.type_id {
                20 => names.push(amf0::decode_all(&m.payload).unwrap()[0].clone()),
                9 => media += m.payload.len(),
                _ => {}
            }
        }
        (names, media)
    });
    let mut p = Publisher::connect(&ep, &tls(), &Options::default())
        .await
        .unwrap();
    p.send(&[video(100_000, 0), video(50, 33)]).await.unwrap();
    let stats = p.stats();
    assert_eq!(stats.media_bytes, 100_050);
    assert!(stats.socket_bytes > 100_050 + 1537 + 1536, "{stats:?}");
    p.close(Duration::from_secs(2)).await;
    let (names, media) = timeout(Duration::from_secs(5), server)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        names,
        [Value::str("FCUnpublish"), Value::str("deleteStream")]
    );
    assert_eq!(media, 100_050);
}

#[tokio::test]
async fn next_is_cancel_safe_and_ends_cleanly() {
    let (l, ep) = listener().await;
    let server = tokio::spawn(async move {
        let mut s = Server::accept_play(&l).await;
        s.ping(1).await;
        for i in 0..20u8 {
            // A 3000-byte video message, in 128-byte chunks, trickled.
            let bytes = s.bytes(6, 9, 1, &vec![i; 3000]);
            for piece in bytes.chunks(700) {
                s.tcp.write_all(piece).await.unwrap();
                sleep(Duration::from_millis(3)).await;
            }
        }
        s.status("status", "NetStream.Play.UnpublishNotify").await;
        timeout(Duration::from_secs(5), s.pong(1)).await.unwrap();
    });
    let mut player = Player::connect(&ep, &tls(), &Options::default())
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut cancelled = 0;
    let end = loop {
        tokio::select! {
            _ = sleep(Duration::from_millis(2)) => cancelled += 1,
            m = player.next() => match m.unwrap() {
                Some(m) => got.push(m),
                None => break true,
            }
        }
        assert!(cancelled < 5000);
    };
    assert!(end);
    assert!(cancelled > 5, "{cancelled}");
    assert_eq!(got.len(), 20);
    for (i, m) in got.iter().enumerate() {
        assert_eq!(m.kind, MediaKind::Video);
        assert_eq!(&m.payload[..], &vec![i as u8; 3000][..]);
    }
    assert_eq!(player.next().await, Ok(None));
    server.await.unwrap();
}
