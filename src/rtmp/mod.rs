//! Our own RTMP client: publish to a destination, play from the ingest.
//!
//! ```text
//!            ┌──────────────── sans-IO core (bytes in → events + bytes out) ─────────────┐
//! socket ──▶ │ handshake.rs ─▶ chunk.rs (ChunkReader) ─▶ session.rs ─▶ Event::{Started,  │
//! (TCP or    │                                            │  ▲           Media, End}     │
//!  TLS)  ◀── │ C0C1/C2 ◀──────── chunk.rs (ChunkWriter) ◀─┘  └─ amf0.rs (commands)     │
//!            └─────────────────────────────────────────────────────────────────────────┘
//!                 ▲ driver.rs: tokio + rustls (tls.rs), timers, TCP_INFO; Publisher, Player
//! ```
//!
//! The protocol (handshake, chunk stream, AMF0, the publish and play command flows) does no
//! I/O and is tested byte for byte; `driver.rs` owns the socket, the TLS stream and the timers
//! and is tested against a scripted server (`driver/tests.rs`: stalls, errors while writing,
//! cancellation) and against real servers (`tests_interop.rs`: nginx-rtmp announcing 4096 and
//! 128, MediaMTX over RTMP and RTMPS, HEVC through play and publish, refusals, certificates).
//!
//! Cancel safety: every wait of [`Publisher`] and [`Player`] keeps its state in the connection,
//! so a future dropped in a `select!` loses nothing; a `send()` dropped half way leaves its batch
//! queued whole, and the next call (`send`, `closed`, `close`) writes the rest.

pub mod amf0;
pub mod chunk;
mod driver;
pub mod handshake;
pub mod session;
mod tls;

#[cfg(test)]
mod tests_interop;

use std::time::Duration;

pub use driver::{Player, Publisher};
pub use tls::TlsConfig;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MediaKind {
    Audio,
    Video,
    Data,
}

/// One RTMP media message = one FLV tag: same kind, timestamp (ms, 32-bit) and payload bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Media {
    pub kind: MediaKind,
    pub timestamp: u32,
    pub payload: bytes::Bytes,
}

impl From<crate::relay::flv::Tag> for Media {
    fn from(tag: crate::relay::flv::Tag) -> Media {
        use crate::relay::flv::Kind;
        Media {
            kind: match tag.kind {
                Kind::Audio => MediaKind::Audio,
                Kind::Video => MediaKind::Video,
                Kind::Script => MediaKind::Data,
            },
            timestamp: tag.timestamp,
            payload: tag.payload,
        }
    }
}

impl From<Media> for crate::relay::flv::Tag {
    fn from(m: Media) -> crate::relay::flv::Tag {
        use crate::relay::flv::Kind;
        crate::relay::flv::Tag {
            kind: match m.kind {
                MediaKind::Audio => Kind::Audio,
                MediaKind::Video => Kind::Video,
                MediaKind::Data => Kind::Script,
            },
            timestamp: m.timestamp,
            payload: m.payload,
        }
    }
}

/// Where to connect. `Debug` does not print `stream` (a secret: the destination's stream key).
#[derive(Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    pub tls: bool,
    pub app: String,
    pub stream: String,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("app", &self.app)
            .field("stream", &"<redacted>")
            .finish()
    }
}

impl Endpoint {
    /// tcUrl as sent in connect: scheme://host[:port]/app (no stream key). The port is left out
    /// when it is the scheme's default (1935, 443).
    pub fn tc_url(&self) -> String {
        let scheme = if self.tls { "rtmps" } else { "rtmp" };
        let default = if self.tls { 443 } else { 1935 };
        let host = if self.host.contains(':') && !self.host.starts_with('[') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == default {
            format!("{scheme}://{host}/{}", self.app)
        } else {
            format!("{scheme}://{host}:{}/{}", self.port, self.app)
        }
    }

    /// `text` with the stream key replaced: for anything that came from the server.
    pub(crate) fn redact(&self, text: &str) -> String {
        if self.stream.is_empty() {
            text.to_owned()
        } else {
            text.replace(&self.stream, "<key>")
        }
    }
}

/// Why a connection failed; the relay maps these to its error classes 1:1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// The server said no (onStatus error, `_error`, or a close before the publish started).
    Refused,
    /// No TCP connection (refused, no route, name not resolved).
    Unreachable,
    /// The server's certificate was not accepted.
    Certificate,
    /// Any other TLS failure.
    Tls,
    /// The connection broke after the publish (or play) started.
    Dropped,
    /// A step took longer than its bound.
    Timeout,
    /// The server broke the protocol or one of our bounds.
    Protocol,
}

/// An error: its class and an operator-readable message that never contains the stream key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    pub class: Class,
    pub message: String,
}

impl Error {
    pub(crate) fn new(class: Class, message: impl Into<String>) -> Error {
        Error {
            class,
            message: message.into(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Options {
    /// TCP connect (+ TLS handshake).
    pub connect_timeout: Duration,
    /// From TCP connect to NetStream.Publish.Start / NetStream.Play.Start.
    pub publish_timeout: Duration,
    /// A write that makes no progress this long fails with [`Class::Timeout`].
    pub write_stall: Duration,
    /// Our outbound chunk size, announced before `connect`.
    pub chunk_size: u32,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            connect_timeout: Duration::from_secs(10),
            publish_timeout: Duration::from_secs(15),
            write_stall: Duration::from_secs(30),
            chunk_size: 4096,
        }
    }
}

/// Counters of one connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Bytes written to the TCP socket (TLS records included).
    pub socket_bytes: u64,
    /// Audio, video and data payload bytes sent.
    pub media_bytes: u64,
    /// The kernel's view of the connection, when it could be read.
    pub tcp: Option<TcpInfo>,
}

/// From getsockopt(TCP_INFO) on our own socket.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpInfo {
    pub bytes_acked: u64,
    pub rtt_us: u32,
    /// Bytes per second, as the kernel gives it.
    pub delivery_rate_bps: u64,
    /// `tcpi_total_retrans`.
    pub retransmits: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(host: &str, port: u16, tls: bool) -> Endpoint {
        Endpoint {
            host: host.into(),
            port,
            tls,
            app: "live2".into(),
            stream: "sk-secret-123".into(),
        }
    }

    #[test]
    fn tc_url_has_no_key_and_no_default_port() {
        assert_eq!(
            ep("a.rtmp.youtube.com", 1935, false).tc_url(),
            "rtmp://a.rtmp.youtube.com/live2"
        );
        assert_eq!(
            ep("a.rtmps.youtube.com", 443, true).tc_url(),
            "rtmps://a.rtmps.youtube.com/live2"
        );
        assert_eq!(
            ep("127.0.0.1", 19350, false).tc_url(),
            "rtmp://127.0.0.1:19350/live2"
        );
        assert_eq!(ep("::1", 443, false).tc_url(), "rtmp://[::1]:443/live2");
    }

    #[test]
    fn debug_does_not_print_the_key() {
        let text = format!("{:?}", ep("h", 1, false));
        assert!(!text.contains("sk-secret-123"), "{text}");
        assert!(text.contains("live2"));
        assert_eq!(
            ep("h", 1, false).redact("no stream sk-secret-123 here"),
            "no stream <key> here"
        );
    }

    #[test]
    fn media_and_flv_tags_convert_both_ways() {
        use crate::relay::flv::{Kind, Tag};
        let tag = Tag {
            kind: Kind::Script,
            timestamp: 7,
            payload: bytes::Bytes::from_static(b"\x02\x00\x0aonMetaData"),
        };
        let media = Media::from(tag.clone());
        assert_eq!(media.kind, MediaKind::Data);
        assert_eq!(Tag::from(media), tag);
    }
}
