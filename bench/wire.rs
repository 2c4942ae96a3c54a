//! Bytes on the wire over media bytes, per destination: what each destination server's
//! accepted TCP connections received over a window (the kernel's `bytes_received`, on the
//! server side of the TLS terminator for an RTMPS destination, so TLS records included;
//! tests/common/wire.rs), over the media bytes those destinations received in the same window:
//! the payload of the audio and video messages, as nginx-rtmp counts them per stream
//! (`bytes_in`), i.e. the clip's FLV tag payloads, exactly, whatever part of the clip the
//! window covers.

use std::collections::HashMap;

use crate::common::wire::{accepted, received, FlvMedia, SocketCount};
use crate::lab::Lab;
use crate::layouts::Streams;
use crate::rtmp::StreamStat;

/// One destination index over a window, all streams of a layout together.
#[derive(Debug, Clone, Default)]
pub struct DestWire {
    pub rtmps: bool,
    /// Bytes the destination's connections received.
    pub wire: u64,
    /// Media bytes received (audio and video payloads).
    pub media: f64,
    /// The same estimated from the clip's average rate and the media seconds received (a
    /// cross-check, off by the clip's own rate variation over a part of it).
    pub media_from_clip: f64,
    /// TCP segments received per second per connection.
    pub segs_per_s: f64,
    /// Connections counted, and connections opened or closed within the window (not counted).
    pub sockets: usize,
    pub changed: usize,
    /// Streams whose destination stream was not there at both ends of the window.
    pub missing: usize,
}

impl DestWire {
    pub fn ratio(&self) -> f64 {
        if self.media > 0.0 {
            self.wire as f64 / self.media
        } else {
            f64::NAN
        }
    }
}

pub struct WireMeter {
    t0: f64,
    sockets: Vec<HashMap<String, SocketCount>>,
    stats: Vec<Vec<StreamStat>>,
}

impl WireMeter {
    pub fn start(lab: &Lab, streams: &Streams) -> WireMeter {
        WireMeter {
            t0: crate::common::arrivals::now(),
            sockets: lab
                .dests
                .iter()
                .map(|d| accepted(d.public_port()))
                .collect(),
            stats: streams.stats(lab),
        }
    }

    pub fn stop(&self, lab: &Lab, streams: &Streams, media: &FlvMedia) -> Vec<DestWire> {
        let stats = streams.stats(lab);
        let sockets: Vec<_> = lab
            .dests
            .iter()
            .map(|d| accepted(d.public_port()))
            .collect();
        let wall = crate::common::arrivals::now() - self.t0;
        lab.dests
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let r = received(&self.sockets[i], &sockets[i]);
                let (mut seconds, mut bytes) = (0.0, 0u64);
                let mut counted = 0;
                for b in &self.stats[i] {
                    if let Some(a) = stats[i].iter().find(|a| a.name == b.name) {
                        seconds += (a.timestamp - b.timestamp).max(0.0);
                        bytes += a.bytes_in.saturating_sub(b.bytes_in);
                        counted += 1;
                    }
                }
                DestWire {
                    rtmps: d.is_rtmps(),
                    wire: r.bytes,
                    media: bytes as f64,
                    media_from_clip: seconds * media.rate(),
                    segs_per_s: r.segs as f64 / wall / r.sockets.max(1) as f64,
                    sockets: r.sockets,
                    changed: r.changed,
                    missing: streams.keys.len() - counted,
                }
            })
            .collect()
    }
}
