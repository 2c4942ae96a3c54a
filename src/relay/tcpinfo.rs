//! What each destination's server has really taken: the kernel's own counters of the relay's
//! TCP connection to it (`tcp_info`: bytes acknowledged, RTT, delivery rate; read by the RTMP
//! driver on its own socket), kept across the destination's sessions.

use serde::Serialize;

/// One connection's counters, as the kernel and the driver report them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sample {
    pub bytes_acked: u64,
    /// Bytes written to the socket (TLS records included).
    pub bytes_sent: u64,
    pub rtt_us: u32,
    /// Bytes per second.
    pub delivery_rate: u64,
}

/// A destination's counters over every session of this relay (the state file's `tcp`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Totals {
    pub bytes_acked: u64,
    pub bytes_sent: u64,
    /// Of the current connection; none between connections.
    pub rtt_ms: Option<f64>,
    pub delivery_rate: Option<u64>,
}

/// Keeps a destination's totals across its connections: a new connection starts its counters
/// at zero, so what the previous ones reached is carried over.
#[derive(Debug, Default)]
pub struct Counter {
    carried: Sample,
    current: Option<Sample>,
    seen: bool,
}

impl Counter {
    /// The current connection's latest counters.
    pub fn update(&mut self, sample: Sample) {
        self.current = Some(sample);
        self.seen = true;
    }

    /// The current connection is closed: its last counters are carried over.
    pub fn end_connection(&mut self) {
        if let Some(c) = self.current.take() {
            self.carried.bytes_acked += c.bytes_acked;
            self.carried.bytes_sent += c.bytes_sent;
        }
    }

    /// None until a connection has been sampled (e.g. the ffmpeg engine, whose sockets are
    /// ffmpeg's).
    pub fn totals(&self) -> Option<Totals> {
        if !self.seen {
            return None;
        }
        let current = self.current.unwrap_or_default();
        Some(Totals {
            bytes_acked: self.carried.bytes_acked + current.bytes_acked,
            bytes_sent: self.carried.bytes_sent + current.bytes_sent,
            rtt_ms: self.current.map(|c| f64::from(c.rtt_us) / 1000.0),
            delivery_rate: self.current.map(|c| c.delivery_rate),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_carry_over_connections() {
        let mut c = Counter::default();
        assert_eq!(c.totals(), None);
        let s = |acked, sent| Sample {
            bytes_acked: acked,
            bytes_sent: sent,
            rtt_us: 1500,
            delivery_rate: 1_000_000,
        };
        c.update(s(100, 120));
        c.update(s(1000, 1200));
        let t = c.totals().unwrap();
        assert_eq!(
            (t.bytes_acked, t.bytes_sent, t.rtt_ms),
            (1000, 1200, Some(1.5))
        );
        c.end_connection();
        let t = c.totals().unwrap();
        assert_eq!(
            (t.bytes_acked, t.rtt_ms, t.delivery_rate),
            (1000, None, None)
        );
        c.update(s(10, 12));
        assert_eq!(c.totals().unwrap().bytes_sent, 1212);
    }
}
