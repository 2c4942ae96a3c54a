//! The operator's view of the relays: what `neustream status` prints and what the metrics
//! exporter serves, both built from the same [`report::Report`] (the relays' state files and
//! systemd's own accounting). Nothing here reads an env file.

pub mod hooks;
pub mod http;
pub mod metrics;
pub mod prometheus;
pub mod relays;
pub mod report;

use sha2::{Digest, Sha256};

/// How a stream is named where it travels further than this machine (metric labels).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StreamLabel {
    /// A digest of the ingest key: stable, not reversible (see [`stream_id`]).
    Id,
    /// The ingest key itself, as the unit's name carries it.
    Key,
}

/// The stream's public id: the first 16 hex digits (64 bits) of SHA-256 over a fixed prefix and
/// the ingest key. The same key gives the same id on every node and after every restart, so a
/// dashboard can follow a stream, but the id does not let anyone publish as the streamer; and
/// `neustream status` prints it next to the key, so an operator goes from a dashboard to the unit.
pub fn stream_id(key: &str) -> String {
    let digest = Sha256::new()
        .chain_update(b"neustream stream id\0")
        .chain_update(key.as_bytes())
        .finalize();
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// `systemd-escape --unescape`: the key a unit instance stands for (`\xHH` is a byte, `-` a
/// `/`). None when the result is not UTF-8.
pub fn unescape(instance: &str) -> Option<String> {
    let bytes = instance.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if bytes.get(i + 1) == Some(&b'x') && i + 4 <= bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 2..i + 4]).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 4;
            }
            b'-' => {
                out.push(b'/');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_ids_are_stable_short_and_distinct() {
        assert_eq!(stream_id("abc"), stream_id("abc"));
        assert_eq!(stream_id("abc").len(), 16);
        assert_ne!(stream_id("abc"), stream_id("abd"));
        assert!(!stream_id("abc").contains("abc"));
        // Pinned: dashboards keep their series across versions.
        assert_eq!(stream_id(""), {
            let d = Sha256::digest(b"neustream stream id\0");
            d[..8]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        });
    }

    #[test]
    fn unescape_reverses_the_unit_name() {
        for key in ["abc", "a-b_c", ".x", "K3y-with-dashes", "a b"] {
            assert_eq!(
                unescape(&crate::systemd::escape(key)).as_deref(),
                Some(key),
                "{key}"
            );
        }
        assert_eq!(unescape("\\xff"), None);
    }
}
