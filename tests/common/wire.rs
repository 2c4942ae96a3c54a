//! Bytes on the wire against media bytes: the kernel's TCP counters of the sockets a server
//! accepted (`ss -tin`: `bytes_received` is every byte the client sent, RTMP chunk headers and
//! TLS records included, TCP/IP headers not), and the FLV payload bytes of a clip (the media a
//! relay has to carry, whatever its framing).

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};

/// One established TCP socket's counters (`ss -tin`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SocketCount {
    /// Bytes received from the peer (`tcpi_bytes_received`).
    pub bytes_received: u64,
    /// Bytes sent and acknowledged by the peer (`tcpi_bytes_acked`).
    pub bytes_acked: u64,
    /// Segments received (`tcpi_segs_in`).
    pub segs_in: u64,
}

/// Established TCP sockets whose local address is 127.0.0.1:`port` (for a listening port: the
/// connections it accepted), by peer address (`127.0.0.1:<client port>`).
pub fn accepted(port: u16) -> HashMap<String, SocketCount> {
    let out = Command::new("ss")
        .args([
            "-tinH",
            "state",
            "established",
            "sport",
            "=",
            &format!(":{port}"),
        ])
        .stdin(Stdio::null())
        .output()
        .expect("ss is installed (Debian: iproute2)");
    assert!(
        out.status.success(),
        "ss: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    parse_ss(&String::from_utf8_lossy(&out.stdout), port)
}

fn parse_ss(text: &str, port: u16) -> HashMap<String, SocketCount> {
    let mut sockets = HashMap::new();
    let mut current: Option<String> = None;
    let local = format!(":{port}");
    for line in text.lines() {
        if !line.starts_with(char::is_whitespace) {
            // "Recv-Q Send-Q Local Peer": the addresses are the fields with a port.
            let addrs: Vec<&str> = line
                .split_whitespace()
                .filter(|f| f.contains(':'))
                .collect();
            current = match addrs.as_slice() {
                [l, peer, ..] if l.ends_with(&local) => Some(peer.to_string()),
                _ => None,
            };
            continue;
        }
        let Some(peer) = &current else { continue };
        let mut count = SocketCount::default();
        for field in line.split_whitespace() {
            let Some((name, value)) = field.split_once(':') else {
                continue;
            };
            let Ok(v) = value.parse::<u64>() else {
                continue;
            };
            match name {
                "bytes_received" => count.bytes_received = v,
                "bytes_acked" => count.bytes_acked = v,
                "segs_in" => count.segs_in = v,
                _ => {}
            }
        }
        sockets.insert(peer.clone(), count);
        current = None;
    }
    sockets
}

/// What two [`accepted`] snapshots of one port say: the bytes and segments received over the
/// sockets present in both, and how many were only in one (opened or closed between them;
/// their bytes are not counted).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Received {
    pub bytes: u64,
    pub segs: u64,
    pub sockets: usize,
    pub changed: usize,
}

pub fn received(
    before: &HashMap<String, SocketCount>,
    after: &HashMap<String, SocketCount>,
) -> Received {
    let mut r = Received::default();
    for (peer, a) in after {
        match before.get(peer) {
            Some(b) if a.bytes_received >= b.bytes_received => {
                r.bytes += a.bytes_received - b.bytes_received;
                r.segs += a.segs_in.saturating_sub(b.segs_in);
                r.sockets += 1;
            }
            _ => r.changed += 1,
        }
    }
    r.changed += before.keys().filter(|p| !after.contains_key(*p)).count();
    r
}

/// The media of an FLV file: the payload bytes of its audio, video and script tags (what any
/// RTMP framing has to carry) against their timestamps.
#[derive(Debug, Clone)]
pub struct FlvMedia {
    /// (timestamp in seconds, payload bytes) of every tag, in file order.
    pub tags: Vec<(f64, u64)>,
    /// Payload bytes of all tags.
    pub bytes: u64,
    /// The media's length: the last video timestamp plus one frame interval (what
    /// `ffmpeg -stream_loop` advances by per loop).
    pub seconds: f64,
}

impl FlvMedia {
    pub fn read(path: &Path) -> FlvMedia {
        let data = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        FlvMedia::parse(&data).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    pub fn parse(data: &[u8]) -> Result<FlvMedia, String> {
        if data.len() < 9 || &data[..3] != b"FLV" {
            return Err("not an FLV file".into());
        }
        let mut at = u32::from_be_bytes([data[5], data[6], data[7], data[8]]) as usize + 4;
        let (mut tags, mut bytes, mut video) = (vec![], 0u64, vec![]);
        while at + 11 <= data.len() {
            let kind = data[at] & 0x1f;
            let size = u32::from_be_bytes([0, data[at + 1], data[at + 2], data[at + 3]]) as u64;
            let ts = u32::from_be_bytes([data[at + 7], data[at + 4], data[at + 5], data[at + 6]]);
            let end = at + 11 + size as usize;
            if end > data.len() {
                break; // a truncated last tag (a recording still being written)
            }
            let t = ts as f64 / 1000.0;
            if matches!(kind, 8 | 9 | 18) {
                tags.push((t, size));
                bytes += size;
            }
            if kind == 9 {
                video.push(t);
            }
            at = end + 4;
        }
        let frame = match video.as_slice() {
            [first, .., last] => (last - first) / (video.len() - 1) as f64,
            _ => 0.0,
        };
        let seconds = video.last().copied().unwrap_or(0.0) + frame;
        if tags.is_empty() || seconds <= 0.0 {
            return Err("no media tags".into());
        }
        Ok(FlvMedia {
            tags,
            bytes,
            seconds,
        })
    }

    /// Media bytes per media second, over the whole file.
    pub fn rate(&self) -> f64 {
        self.bytes as f64 / self.seconds
    }
}
