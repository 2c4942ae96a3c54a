//! Reader of what the relays publish: `/run/neustream/relays/<instance>/state.json` (written
//! by `crate::relay::state`, layout version 1). Never reads the env files: nothing here holds
//! a URL or a key of a destination.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Layout version understood here (`crate::relay::state::STATE_VERSION`).
pub const VERSION: u32 = 1;
/// A relay rewrites its file every 2 s; older than this, the relay is not updating it.
pub const STALE_AFTER: u64 = 10;
/// A state file larger than this is not a relay's (64 destinations take ~30 KiB).
const MAX_FILE: u64 = 1 << 20;

/// Destination states, in the order metrics list them.
pub const STATES: [&str; 6] = [
    "waiting",
    "connecting",
    "live",
    "retrying",
    "incompatible",
    "stopped",
];
/// Error classes (`crate::relay::state::ErrorClass`).
pub const ERRORS: [&str; 7] = [
    "refused",
    "unreachable",
    "certificate",
    "tls",
    "dropped",
    "timeout",
    "protocol",
];

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("failed to read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is larger than {MAX_FILE} bytes: not a relay's state file")]
    TooLarge { path: PathBuf },
    #[error("{path} is not a relay state file: {detail}")]
    Invalid { path: PathBuf, detail: String },
    #[error("{path} has layout version {found}; this neustream reads version {VERSION}")]
    Version { path: PathBuf, found: u32 },
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct RelayState {
    pub version: u32,
    pub stream: String,
    pub pid: u32,
    pub started: u64,
    pub updated: u64,
    pub source: Source,
    /// The stream's own shape (absent in files of relays before v3).
    #[serde(default)]
    pub media: Media,
    pub destinations: Vec<Destination>,
}

/// `crate::relay::shape::Shape` as the state file holds it.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub struct Media {
    #[serde(default)]
    pub video: Option<Video>,
    #[serde(default)]
    pub audio: Option<Audio>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct Video {
    pub codec: String,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub fps: Option<f64>,
    pub bitrate: Option<u64>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct Audio {
    pub codec: String,
    pub sample_rate: Option<u32>,
    pub channels: Option<u8>,
    pub bitrate: Option<u64>,
}

impl Media {
    /// `HEVC 1280x720 30 fps 2.5 Mb/s, AAC 48000 Hz 2 ch 160 kb/s`; `-` before any media.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(v) = &self.video {
            let mut s = v.codec.clone();
            if let (Some(w), Some(h)) = (v.width, v.height) {
                s.push_str(&format!(" {w}x{h}"));
            }
            if let Some(fps) = v.fps {
                s.push_str(&format!(" {fps} fps"));
            }
            if let Some(b) = v.bitrate {
                s.push_str(&format!(" {:.1} Mb/s", b as f64 / 1e6));
            }
            parts.push(s);
        }
        if let Some(a) = &self.audio {
            let mut s = a.codec.clone();
            if let Some(r) = a.sample_rate {
                s.push_str(&format!(" {r} Hz"));
            }
            if let Some(c) = a.channels {
                s.push_str(&format!(" {c} ch"));
            }
            if let Some(b) = a.bitrate {
                s.push_str(&format!(" {} kb/s", b / 1000));
            }
            parts.push(s);
        }
        if parts.is_empty() {
            "-".into()
        } else {
            parts.join(", ")
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Source {
    /// `starting`, `live`, `grace` (the publisher is gone, the relay waits for a new one),
    /// `unreadable` (the ingest will not give the publisher's stream: `problem` says why) or
    /// `ended`.
    pub state: String,
    pub since: u64,
    pub publisher: String,
    /// While in grace: unix time at which the relay gives up waiting.
    #[serde(default)]
    pub grace_until: Option<u64>,
    /// While unreadable: why, and what the streamer should change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Destination {
    pub index: usize,
    pub platform: String,
    pub state: String,
    pub since: u64,
    pub bytes: u64,
    pub bitrate: u64,
    pub attempts: u32,
    pub failures: u32,
    pub last_error: Option<String>,
    pub retry_at: Option<u64>,
    pub queue_overflows: u64,
    /// Why it is `incompatible` (the stream's codecs and what its platform takes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The socket's own counters (`tcp_info`), when the relay could read them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<Tcp>,
}

/// `crate::relay::tcpinfo::Totals` as the state file holds it.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq)]
pub struct Tcp {
    /// Bytes the destination acknowledged, all sessions of this relay.
    pub bytes_acked: u64,
    /// Bytes handed to TCP (retransmissions included), all sessions.
    pub bytes_sent: u64,
    /// Smoothed RTT of the current connection; none between connections.
    pub rtt_ms: Option<f64>,
    /// The kernel's delivery-rate estimate of the current connection, bytes per second.
    pub delivery_rate: Option<u64>,
}

/// One relay directory: its unit instance (the directory's name, escaped as in the unit's
/// name) and what could be read of it.
#[derive(Debug)]
pub struct Entry {
    pub instance: String,
    pub state: Result<RelayState, ReadError>,
}

impl Entry {
    pub fn unit(&self) -> String {
        format!("neustream-relay@{}.service", self.instance)
    }
}

/// Parses one state file's text.
pub fn parse(path: &Path, text: &str) -> Result<RelayState, ReadError> {
    let state: RelayState = serde_json::from_str(text).map_err(|e| ReadError::Invalid {
        path: path.into(),
        detail: e.to_string(),
    })?;
    if state.version != VERSION {
        return Err(ReadError::Version {
            path: path.into(),
            found: state.version,
        });
    }
    Ok(state)
}

pub fn read_file(path: &Path) -> Result<RelayState, ReadError> {
    use std::io::Read;
    let io = |source| ReadError::Io {
        path: path.into(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut text = String::new();
    file.take(MAX_FILE + 1)
        .read_to_string(&mut text)
        .map_err(io)?;
    if text.len() as u64 > MAX_FILE {
        return Err(ReadError::TooLarge { path: path.into() });
    }
    parse(path, &text)
}

/// Every relay directory under `dir`, sorted by instance. A missing `dir` is no relay.
pub fn read_dir(dir: &Path) -> Result<Vec<Entry>, ReadError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(ReadError::Io {
                path: dir.into(),
                source,
            })
        }
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| ReadError::Io {
            path: dir.into(),
            source,
        })?;
        let Ok(instance) = entry.file_name().into_string() else {
            continue;
        };
        if instance.starts_with('.') || !entry.path().is_dir() {
            continue;
        }
        let path = entry.path().join("state.json");
        let state = read_file(&path);
        // A relay that has just started has not written its file yet: NotFound, kept.
        out.push(Entry { instance, state });
    }
    out.sort_by(|a, b| a.instance.cmp(&b.instance));
    Ok(out)
}

impl RelayState {
    /// Seconds since the relay last wrote its file.
    pub fn age(&self, now: u64) -> u64 {
        now.saturating_sub(self.updated)
    }

    pub fn is_stale(&self, now: u64) -> bool {
        self.age(now) > STALE_AFTER
    }
}

/// What the relay (`crate::relay::state`) writes for `key`: each destination as (platform,
/// `live` | `connecting` | an error class it failed with, bytes sent). For tests of readers.
#[cfg(test)]
pub(crate) fn relay_wrote(key: &str, publisher: &str, dests: &[(&str, &str, u64)]) -> String {
    use crate::relay::state::{Board, DestinationState, ErrorClass};
    let b = Board::new(key, publisher);
    let mut d: Vec<DestinationState> = dests
        .iter()
        .enumerate()
        .map(|(i, (platform, what, bytes))| {
            let mut d = DestinationState::new(i, platform);
            d.connecting();
            d.bytes = *bytes;
            let class = match *what {
                "live" => None,
                "connecting" => return d,
                "refused" => Some(ErrorClass::Refused),
                "unreachable" => Some(ErrorClass::Unreachable),
                "dropped" => Some(ErrorClass::Dropped),
                other => panic!("no such test state {other}"),
            };
            match class {
                None => d.live(),
                Some(c) => d.failed(c, std::time::Duration::from_secs(4)),
            }
            d
        })
        .collect();
    b.render(&mut d, &Default::default()).1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written() -> String {
        relay_wrote(
            "key-1",
            "conn-1",
            &[("youtube", "live", 1234), ("twitch", "refused", 0)],
        )
    }

    #[test]
    fn reads_what_the_relay_writes() {
        let s = parse(Path::new("x"), &written()).unwrap();
        assert_eq!(s.stream, "key-1");
        assert_eq!(s.source.state, "starting");
        assert_eq!(s.destinations.len(), 2);
        assert_eq!(s.destinations[0].state, "live");
        assert_eq!(s.destinations[0].bytes, 1234);
        assert_eq!(s.destinations[1].last_error.as_deref(), Some("refused"));
        assert_eq!(s.destinations[1].attempts, 1);
        assert!(s.destinations[0].tcp.is_none());
        assert!(!s.is_stale(s.updated + STALE_AFTER));
        assert!(s.is_stale(s.updated + STALE_AFTER + 1));
    }

    #[test]
    fn tcp_counters_are_read_when_present() {
        let mut v: serde_json::Value = serde_json::from_str(&written()).unwrap();
        v["destinations"][0]["tcp"] = serde_json::json!(
            {"bytes_acked": 10, "bytes_sent": 12, "rtt_ms": 0.5, "delivery_rate": 99});
        let s = parse(Path::new("x"), &v.to_string()).unwrap();
        assert_eq!(
            s.destinations[0].tcp,
            Some(Tcp {
                bytes_acked: 10,
                bytes_sent: 12,
                rtt_ms: Some(0.5),
                delivery_rate: Some(99)
            })
        );
    }

    #[test]
    fn other_versions_and_garbage_are_refused_by_name() {
        let text = written().replace("\"version\": 1", "\"version\": 2");
        let e = parse(Path::new("/run/x/state.json"), &text).unwrap_err();
        assert_eq!(
            e.to_string(),
            "/run/x/state.json has layout version 2; this neustream reads version 1"
        );
        let e = parse(Path::new("/run/x/state.json"), "{\"version\":1}").unwrap_err();
        assert!(e
            .to_string()
            .starts_with("/run/x/state.json is not a relay state file: "));
    }

    #[test]
    fn a_directory_lists_each_relay_and_a_missing_one_none() {
        let dir = std::env::temp_dir().join(format!("neustream-relays-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        assert!(read_dir(&dir).unwrap().is_empty());
        for (name, text) in [("b", written()), ("a", "nonsense".into())] {
            std::fs::create_dir_all(dir.join(name)).unwrap();
            std::fs::write(dir.join(name).join("state.json"), text).unwrap();
        }
        std::fs::create_dir_all(dir.join("c")).unwrap();
        let got = read_dir(&dir).unwrap();
        let names: Vec<&str> = got.iter().map(|e| e.instance.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert!(matches!(got[0].state, Err(ReadError::Invalid { .. })));
        assert!(got[1].state.is_ok());
        assert!(matches!(got[2].state, Err(ReadError::Io { .. })));
        assert_eq!(got[1].unit(), "neustream-relay@b.service");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
