//! The relay's live state, per destination: kept current in memory, and published as the
//! unit's `STATUS=` line (what `systemctl status` shows) and as a JSON file in the relay's
//! runtime directory for `neustream status` and the metrics exporter. Neither holds a URL or
//! a key: a destination is its index and platform.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::shape::Shape;
use tokio::sync::Notify;

/// Version of the state file's layout; readers refuse other versions.
pub const STATE_VERSION: u32 = 1;
/// File name in the relay's runtime directory.
pub const STATE_FILE: &str = "state.json";
/// Bitrates are averaged over at least this long.
const RATE_WINDOW: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Waiting for the source's first picture.
    Waiting,
    /// ffmpeg started; the server has not accepted the publish yet.
    Connecting,
    Live,
    /// Failed; the next attempt is scheduled.
    Retrying,
    /// Cannot take the stream's codecs (`reason` says why): not pushed until they change.
    Incompatible,
    Stopped,
}

/// Why a destination's last session ended (journal, `STATUS=`, state file).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ErrorClass {
    /// Connection accepted, publish refused or closed at once: typically a wrong key.
    Refused,
    /// No TCP connection (refused, timed out, no route, name not resolved).
    Unreachable,
    /// The server's TLS certificate was not accepted: the key was not sent.
    Certificate,
    /// The TLS handshake failed otherwise.
    Tls,
    /// The connection dropped after streaming.
    Dropped,
    /// No publish within the connect timeout, or a write that made no progress for long.
    Timeout,
    /// The server broke the RTMP protocol or one of the relay's bounds (an absurd chunk size
    /// or message length, garbage): native engine.
    Protocol,
}

impl ErrorClass {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Refused => "refused",
            ErrorClass::Unreachable => "unreachable",
            ErrorClass::Certificate => "certificate",
            ErrorClass::Tls => "tls",
            ErrorClass::Dropped => "dropped",
            ErrorClass::Timeout => "timeout",
            ErrorClass::Protocol => "protocol",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct DestinationState {
    pub index: usize,
    pub platform: String,
    pub state: Phase,
    /// Unix time of the last change of `state`.
    pub since: u64,
    /// Media bytes (as FLV tags) handed to this destination, all sessions.
    pub bytes: u64,
    /// Over the last few seconds, bits per second.
    pub bitrate: u64,
    /// Connection attempts (sessions) started.
    pub attempts: u32,
    /// Failed sessions since the last healthy one.
    pub failures: u32,
    pub last_error: Option<ErrorClass>,
    /// Unix time of the next attempt, while retrying.
    pub retry_at: Option<u64>,
    /// Times its queue overflowed (it did not keep up and skipped to a keyframe).
    pub queue_overflows: u64,
    /// Why the destination is `incompatible`: `twitch takes H.264 only; the stream is HEVC`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The socket's own counters (`tcp_info`), all sessions; absent when not readable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp: Option<super::tcpinfo::Totals>,
    #[serde(skip)]
    pub(super) rate_mark: Option<(Instant, u64)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SourcePhase {
    Starting,
    Live,
    /// The publisher is gone; destinations get a frozen picture and silence until a new one
    /// comes or the grace runs out (`grace_until`).
    Grace,
    /// The ingest will not give this publisher's stream to the relay (`problem` says why and
    /// what the streamer should change): nothing is relayed until a new publisher comes.
    Unreadable,
    Ended,
}

#[derive(Debug, Clone, Serialize)]
pub struct SourceState {
    pub state: SourcePhase,
    pub since: u64,
    /// MediaMTX's id of the publisher being read.
    pub publisher: String,
    /// While in grace: unix time at which the relay gives up on a new publisher.
    pub grace_until: Option<u64>,
    /// While unreadable: why, and what the streamer should change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
struct Snapshot<'a> {
    version: u32,
    stream: &'a str,
    pid: u32,
    started: u64,
    updated: u64,
    source: &'a SourceState,
    /// The stream's own shape: codecs, size, frame rate, bitrates.
    media: &'a Shape,
    destinations: &'a [DestinationState],
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl DestinationState {
    pub fn new(index: usize, platform: &str) -> Self {
        DestinationState {
            index,
            platform: platform.to_owned(),
            state: Phase::Waiting,
            since: unix_now(),
            bytes: 0,
            bitrate: 0,
            attempts: 0,
            failures: 0,
            last_error: None,
            retry_at: None,
            queue_overflows: 0,
            reason: None,
            tcp: None,
            rate_mark: None,
        }
    }

    /// The fields whose change makes a new `STATUS=` line.
    pub fn visible(&self) -> (Phase, Option<ErrorClass>, u32, usize) {
        (self.state, self.last_error, self.attempts, self.index)
    }

    fn phase(&mut self, phase: Phase) {
        if self.state != phase {
            self.state = phase;
            self.since = unix_now();
        }
    }

    pub fn connecting(&mut self) {
        self.reason = None;
        self.phase(Phase::Connecting);
        self.attempts += 1;
        self.retry_at = None;
        self.rate_mark = Some((Instant::now(), self.bytes));
    }

    pub fn live(&mut self) {
        self.phase(Phase::Live);
    }

    pub fn healthy(&mut self) {
        self.failures = 0;
    }

    pub fn failed(&mut self, class: ErrorClass, retry_in: Duration) {
        self.phase(Phase::Retrying);
        self.failures += 1;
        self.last_error = Some(class);
        self.bitrate = 0;
        self.retry_at = Some(unix_now() + retry_in.as_secs_f64().ceil() as u64);
    }

    /// Not pushed: the stream's codecs do not fit the destination.
    pub fn incompatible(&mut self, reason: String) {
        self.phase(Phase::Incompatible);
        self.reason = Some(reason);
        self.bitrate = 0;
        self.retry_at = None;
    }

    pub fn stopped(&mut self) {
        self.phase(Phase::Stopped);
        self.bitrate = 0;
        self.retry_at = None;
    }

    /// Updates the bitrate once a window has passed since the last update.
    fn measure(&mut self, now: Instant) {
        if let Some((at, bytes)) = self.rate_mark {
            let elapsed = now.duration_since(at);
            if elapsed >= RATE_WINDOW {
                self.bitrate = ((self.bytes - bytes) as f64 * 8.0 / elapsed.as_secs_f64()) as u64;
                self.rate_mark = Some((now, self.bytes));
            }
        }
        if self.state != Phase::Live {
            self.bitrate = 0;
        }
    }
}

/// The relay as a whole: its stream, its source, and when anything changed.
pub struct Board {
    key: String,
    started: u64,
    source: Mutex<SourceState>,
    changed: Notify,
}

impl Board {
    pub fn new(key: &str, publisher: &str) -> Self {
        let now = unix_now();
        Board {
            key: key.to_owned(),
            started: now,
            source: Mutex::new(SourceState {
                state: SourcePhase::Starting,
                since: now,
                publisher: publisher.to_owned(),
                grace_until: None,
                problem: None,
            }),
            changed: Notify::new(),
        }
    }

    /// Something worth a new `STATUS=` line changed.
    pub fn touch(&self) {
        self.changed.notify_one();
    }

    pub fn source(&self, phase: SourcePhase) {
        let mut source = self.source.lock().unwrap();
        if source.state != phase {
            source.state = phase;
            source.since = unix_now();
            if phase != SourcePhase::Grace {
                source.grace_until = None;
            }
            if phase != SourcePhase::Unreadable {
                source.problem = None;
            }
            drop(source);
            self.touch();
        }
    }

    /// The publisher is gone; the relay waits for a new one until `until` (unix time).
    pub fn grace(&self, until: u64) {
        self.source(SourcePhase::Grace);
        self.source.lock().unwrap().grace_until = Some(until);
        self.touch();
    }

    /// The ingest will not give the publisher's stream: `problem` says why.
    pub fn unreadable(&self, problem: &str) {
        self.source(SourcePhase::Unreadable);
        self.source.lock().unwrap().problem = Some(problem.to_owned());
        self.touch();
    }

    pub fn publisher(&self, id: &str) {
        self.source.lock().unwrap().publisher = id.to_owned();
        self.touch();
    }

    /// Resolves when something worth publishing changed.
    pub async fn changed(&self) {
        self.changed.notified().await
    }

    /// Updates the bitrates, then renders the `STATUS=` line and the state file's JSON.
    pub fn render(&self, dests: &mut [DestinationState], media: &Shape) -> (String, String) {
        let now = Instant::now();
        for d in dests.iter_mut() {
            d.measure(now);
        }
        let source = self.source.lock().unwrap().clone();
        let mut status = status_line(dests, unix_now());
        if let (SourcePhase::Grace, Some(until)) = (source.state, source.grace_until) {
            status = format!(
                "publisher gone, waiting {} s for it | {status}",
                until.saturating_sub(unix_now())
            );
        }
        if let (SourcePhase::Unreadable, Some(problem)) = (source.state, &source.problem) {
            status = format!("{problem} | {status}").replace(['\n', '\r'], " ");
        }
        let json = serde_json::to_string_pretty(&Snapshot {
            version: STATE_VERSION,
            stream: &self.key,
            pid: std::process::id(),
            started: self.started,
            updated: unix_now(),
            source: &source,
            media,
            destinations: dests,
        })
        .expect("the state serialises");
        (status, json)
    }
}

/// `3 destinations: 0 youtube live 6.1 Mb/s | 1 twitch retrying in 8 s (refused) | ...`
pub fn status_line(dests: &[DestinationState], now: u64) -> String {
    let parts: Vec<String> = dests
        .iter()
        .map(|d| {
            let what = match d.state {
                Phase::Live => format!("live {:.1} Mb/s", d.bitrate as f64 / 1e6),
                Phase::Retrying => format!(
                    "retrying in {} s ({})",
                    d.retry_at.unwrap_or(now).saturating_sub(now),
                    d.last_error.map_or("failed", ErrorClass::as_str)
                ),
                Phase::Waiting => "waiting for the source".into(),
                Phase::Incompatible => {
                    format!("incompatible ({})", d.reason.as_deref().unwrap_or("codecs"))
                }
                Phase::Connecting => format!("connecting (attempt {})", d.attempts),
                Phase::Stopped => "stopped".into(),
            };
            format!("{} {} {what}", d.index, d.platform)
        })
        .collect();
    let line = format!(
        "{} destination{}: {}",
        dests.len(),
        if dests.len() == 1 { "" } else { "s" },
        parts.join(" | ")
    );
    // One line: systemd's STATUS= ends at a newline.
    line.replace(['\n', '\r'], " ")
}

/// Writes `json` to `dir/state.json` atomically (a temporary file renamed over it), readable
/// by local users: it holds no secret.
pub fn write_file(dir: &Path, json: &str) -> std::io::Result<PathBuf> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let path = dir.join(STATE_FILE);
    let tmp = dir.join(format!(".{STATE_FILE}.tmp"));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(&tmp)?;
    // The unit's UMask=0077 narrows the mode given at creation.
    file.set_permissions(std::fs::Permissions::from_mode(0o644))?;
    file.write_all(json.as_bytes())?;
    file.write_all(b"\n")?;
    drop(file);
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dest(index: usize, platform: &str) -> DestinationState {
        DestinationState::new(index, platform)
    }

    #[test]
    fn the_status_line_names_each_destination() {
        let b = Board::new("k", "conn-1");
        let mut d = vec![dest(0, "youtube"), dest(1, "twitch"), dest(2, "facebook")];
        d[0].connecting();
        d[0].live();
        d[1].connecting();
        d[1].failed(ErrorClass::Refused, Duration::from_secs(8));
        d[2].connecting();
        let (status, json) = b.render(&mut d, &Default::default());
        assert_eq!(
            status,
            "3 destinations: 0 youtube live 0.0 Mb/s | 1 twitch retrying in 8 s (refused) | \
             2 facebook connecting (attempt 1)"
        );
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["version"], 1);
        assert_eq!(v["stream"], "k");
        assert_eq!(v["source"]["state"], "starting");
        assert_eq!(v["destinations"][1]["state"], "retrying");
        assert_eq!(v["destinations"][1]["last_error"], "refused");
        assert_eq!(v["destinations"][1]["attempts"], 1);
        assert_eq!(v["destinations"][0]["last_error"], serde_json::Value::Null);
    }

    #[test]
    fn the_grace_is_shown_with_the_seconds_left() {
        let b = Board::new("k", "conn-1");
        b.grace(unix_now() + 20);
        let (status, json) = b.render(&mut [dest(0, "youtube")], &Default::default());
        assert!(status.starts_with("publisher gone, waiting 2"), "{status}");
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["source"]["state"], "grace");
        assert!(v["source"]["grace_until"].as_u64().is_some());
        b.source(SourcePhase::Live);
        let (status, _) = b.render(&mut [dest(0, "youtube")], &Default::default());
        assert!(status.starts_with("1 destination:"), "{status}");
    }

    #[test]
    fn an_unreadable_stream_says_why_until_the_next_publisher() {
        let b = Board::new("k", "conn-1");
        b.unreadable("audio is MPEG-1/2 Audio: set the encoder's audio to AAC");
        let (status, json) = b.render(&mut [dest(0, "youtube")], &Default::default());
        assert!(
            status.starts_with(
                "audio is MPEG-1/2 Audio: set the encoder's audio to AAC | 1 destination:"
            ),
            "{status}"
        );
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["source"]["state"], "unreadable");
        assert!(v["source"]["problem"].as_str().unwrap().contains("AAC"));
        b.source(SourcePhase::Starting);
        let (status, json) = b.render(&mut [dest(0, "youtube")], &Default::default());
        assert!(status.starts_with("1 destination:"), "{status}");
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["source"]["problem"], serde_json::Value::Null);
    }

    #[test]
    fn bitrates_come_from_the_bytes_sent() {
        let b = Board::new("k", "");
        let mut d = vec![dest(0, "custom")];
        d[0].connecting();
        d[0].live();
        d[0].rate_mark = Some((Instant::now() - Duration::from_secs(4), 0));
        d[0].bytes += 3_000_000;
        let (status, _) = b.render(&mut d, &Default::default());
        assert_eq!(status, "1 destination: 0 custom live 6.0 Mb/s");
    }

    #[test]
    fn the_state_file_is_replaced_whole_and_world_readable() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("neustream-state-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = write_file(&dir, "{\"a\":1}").unwrap();
        write_file(&dir, "{\"a\":2}").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"a\":2}\n");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o644);
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            1,
            "no temporary left"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn newlines_never_reach_status() {
        let mut d = vec![dest(0, "a\nb")];
        assert!(!status_line(&d, 0).contains('\n'));
        d[0].platform = "x\ry".into();
        assert!(!status_line(&d, 0).contains('\r'));
    }
}
