//! The durable record of the sessions the Control Plane accepted and has not yet seen end
//! (`/var/lib/neustream/sessions/<key>.json`), so that no stream-end is lost to a MediaMTX
//! crash, a reboot or a Control Plane outage.
//!
//! One record per stream key, since the Control Plane holds at most one active stream per key
//! (`POST /api/auth/stream` answers 200 for a key already active: a reconnect continues it) and
//! its stream-end is per key (`name=<key>`), not per session. A record is:
//! - written `live` by `ready` once the Control Plane accepted the key, replacing any record of
//!   the key (the new publisher continues the Control Plane's session);
//! - turned `ending` (a pending stream-end) before the stream-end is sent, by `unpublish` or by
//!   `neustream reconcile`, under the key's lock;
//! - removed only once the Control Plane confirmed the stream-end.
//!
//! Files are JSON, written atomically (temporary file, fsync, rename, fsync of the directory),
//! mode 0600 in a 0700 directory. They hold no destination: no secret.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::private_file;
use crate::stream_key::StreamKey;

/// Version of the record format; a record of another version is refused, not guessed at.
pub const FORMAT: u32 = 1;
const SUFFIX: &str = ".json";

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("failed to create session directory {path}: {source}")]
    Create { path: PathBuf, source: io::Error },
    #[error("failed to {action} session record {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error(
        "session record {path} is unreadable ({detail}); it is kept as {kept} and its stream \
         is treated as a session of unknown publisher"
    )]
    Corrupt {
        path: PathBuf,
        kept: PathBuf,
        detail: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// The Control Plane holds an active stream for this key.
    Live,
    /// The stream ended; its stream-end is not confirmed yet (pending).
    Ending,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub format: u32,
    pub key: String,
    /// `<key>/<MTX_SOURCE_ID>/<accepted, unix ms>`: names one accepted publish in logs.
    pub id: String,
    /// MediaMTX's connection id of the publisher (MTX_SOURCE_ID); empty when unknown.
    pub source_id: String,
    pub source_type: String,
    /// When the Control Plane accepted the publish (unix seconds).
    pub accepted_at: u64,
    pub state: State,
    /// When the stream was found ended (unix seconds).
    #[serde(default)]
    pub ended_at: Option<u64>,
    /// Why it ended: "unpublish", "no publisher", "MediaMTX stopped", ...
    #[serde(default)]
    pub end_reason: Option<String>,
    /// Stream-end attempts so far (each one a bounded, retried call).
    #[serde(default)]
    pub attempts: u32,
    #[serde(default)]
    pub last_error: Option<String>,
    /// Where MediaMTX ran when `ready` accepted the publish; None in a record written before
    /// this was recorded, or for a session known only by its key.
    #[serde(default)]
    pub mediamtx: Option<MediaMtx>,
}

/// Where the MediaMTX that carried a publish runs, as its hook found it (a hook is MediaMTX's
/// child, in MediaMTX's cgroup): what lets `neustream reconcile` be sure that MediaMTX, and
/// so the publisher, is gone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "runs", rename_all = "snake_case")]
pub enum MediaMtx {
    /// As this systemd service, in this invocation of it (`InvocationID`, new at every start,
    /// an automatic restart too).
    Unit { unit: String, invocation: String },
    /// Not as a systemd service (by hand, in a container, ...), or systemd could not say: why.
    NotAUnit { why: String },
}

impl std::fmt::Display for MediaMtx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MediaMtx::Unit { unit, invocation } => write!(f, "{unit} (invocation {invocation})"),
            MediaMtx::NotAUnit { why } => write!(f, "not a systemd service ({why})"),
        }
    }
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

impl Session {
    /// The record of a publish the Control Plane has just accepted.
    pub fn accepted(
        key: &StreamKey,
        source_id: &str,
        source_type: &str,
        mediamtx: Option<MediaMtx>,
    ) -> Session {
        Session {
            format: FORMAT,
            key: key.to_string(),
            id: format!("{key}/{source_id}/{}", now_ms()),
            source_id: source_id.into(),
            source_type: source_type.into(),
            accepted_at: now(),
            state: State::Live,
            ended_at: None,
            end_reason: None,
            attempts: 0,
            last_error: None,
            mediamtx,
        }
    }

    /// A session of which only the key is known (its record was unreadable, or it predates the
    /// record: an env file left in the runtime directory).
    pub fn unknown(key: &StreamKey, source_id: &str) -> Session {
        let mut s = Session::accepted(key, source_id, "", None);
        s.id = format!("{key}/{source_id}/unknown");
        s.accepted_at = 0;
        s
    }

    /// The stream ended: its stream-end is pending from now on.
    pub fn end(&mut self, reason: &str) {
        if self.state != State::Ending {
            self.state = State::Ending;
            self.ended_at = Some(now());
            self.end_reason = Some(reason.into());
        }
    }
}

pub struct SessionDir {
    dir: PathBuf,
}

impl SessionDir {
    /// Opens the directory, creating it (mode 0700) if needed.
    pub fn open(dir: &Path) -> Result<Self, SessionError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| SessionError::Create {
                path: dir.into(),
                source,
            })?;
        Ok(SessionDir { dir: dir.into() })
    }

    pub fn path(&self, key: &StreamKey) -> PathBuf {
        self.dir.join(format!("{key}{SUFFIX}"))
    }

    /// The record of `key`, or None. An unreadable record is moved aside (never deleted) and
    /// reported as [`SessionError::Corrupt`]; the caller decides what the session becomes.
    pub fn load(&self, key: &StreamKey) -> Result<Option<Session>, SessionError> {
        let path = self.path(key);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(SessionError::Io {
                    action: "read",
                    path,
                    source,
                })
            }
        };
        let detail = match serde_json::from_slice::<Session>(&bytes) {
            Ok(s) if s.format == FORMAT && s.key == key.as_str() => return Ok(Some(s)),
            Ok(s) if s.format != FORMAT => format!("format {} (expected {FORMAT})", s.format),
            Ok(s) => format!("it names stream key '{}'", printable(&s.key)),
            Err(e) => format!("{e}"),
        };
        let kept = self
            .dir
            .join(format!(".{key}{SUFFIX}.corrupt-{}", now_ms()));
        fs::rename(&path, &kept).map_err(|source| SessionError::Io {
            action: "move aside the unreadable",
            path: path.clone(),
            source,
        })?;
        Err(SessionError::Corrupt { path, kept, detail })
    }

    /// Like [`Self::load`], but an unreadable record becomes a session of unknown publisher,
    /// saved in its place, so that its stream-end is still sent: returns it and the error.
    pub fn load_or_recover(
        &self,
        key: &StreamKey,
    ) -> Result<(Option<Session>, Option<SessionError>), SessionError> {
        match self.load(key) {
            Ok(s) => Ok((s, None)),
            Err(e @ SessionError::Corrupt { .. }) => {
                let s = Session::unknown(key, "");
                self.save(&s)?;
                Ok((Some(s), Some(e)))
            }
            Err(e) => Err(e),
        }
    }

    /// Writes the record atomically: on failure the previous record is untouched and no
    /// temporary file is left.
    pub fn save(&self, session: &Session) -> Result<(), SessionError> {
        let name = format!("{}{SUFFIX}", session.key);
        let mut text = serde_json::to_string_pretty(session).expect("a session serialises");
        text.push('\n');
        private_file::write(&self.dir, &name, text.as_bytes()).map_err(|source| SessionError::Io {
            action: "write",
            path: self.dir.join(name),
            source,
        })
    }

    /// Removes the record of `key` (the Control Plane confirmed its end). Absent is fine.
    pub fn remove(&self, key: &StreamKey) -> Result<(), SessionError> {
        let path = self.path(key);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(source) => {
                return Err(SessionError::Io {
                    action: "remove",
                    path,
                    source,
                })
            }
        }
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|source| SessionError::Io {
                action: "sync the directory of",
                path,
                source,
            })
    }

    /// Keys that have a record, sorted. Names that are not `<valid key>.json` are skipped
    /// (temporary and moved-aside files start with '.').
    pub fn keys(&self) -> Result<Vec<StreamKey>, SessionError> {
        private_file::keys(&self.dir, SUFFIX).map_err(|source| SessionError::Io {
            action: "list",
            path: self.dir.clone(),
            source,
        })
    }
}

fn printable(text: &str) -> String {
    text.chars()
        .take(200)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn tempdir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("neustream-sessions-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn round_trip_and_remove() {
        let dir = tempdir("rt");
        let sd = SessionDir::open(&dir).unwrap();
        assert_eq!(fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        let key = StreamKey::parse("k-1").unwrap();
        assert_eq!(sd.load(&key).unwrap(), None);
        let where_ = MediaMtx::Unit {
            unit: "mediamtx.service".into(),
            invocation: "0123abcd".into(),
        };
        let mut s = Session::accepted(&key, "c0ffee", "rtmpConn", Some(where_));
        assert!(s.id.starts_with("k-1/c0ffee/"), "{}", s.id);
        sd.save(&s).unwrap();
        assert_eq!(fs::metadata(sd.path(&key)).unwrap().mode() & 0o777, 0o600);
        assert_eq!(sd.load(&key).unwrap(), Some(s.clone()));
        s.end("unpublish");
        s.end("later reason is ignored");
        s.attempts = 2;
        sd.save(&s).unwrap();
        let back = sd.load(&key).unwrap().unwrap();
        assert_eq!(back.state, State::Ending);
        assert_eq!(back.end_reason.as_deref(), Some("unpublish"));
        assert_eq!(sd.keys().unwrap(), vec![key.clone()]);
        sd.remove(&key).unwrap();
        sd.remove(&key).unwrap();
        assert!(names(&dir).is_empty(), "{:?}", names(&dir));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn where_mediamtx_runs_is_recorded_and_older_records_still_read() {
        let dir = tempdir("where");
        let sd = SessionDir::open(&dir).unwrap();
        let key = StreamKey::parse("k5").unwrap();
        let elsewhere = MediaMtx::NotAUnit {
            why: "its hook runs in no unit".into(),
        };
        let s = Session::accepted(&key, "a", "rtmpConn", Some(elsewhere.clone()));
        sd.save(&s).unwrap();
        let text = fs::read_to_string(sd.path(&key)).unwrap();
        assert!(text.contains("\"runs\": \"not_a_unit\""), "{text}");
        assert_eq!(sd.load(&key).unwrap().unwrap().mediamtx, Some(elsewhere));
        // A record of the version before: no `mediamtx`, same format.
        fs::write(
            sd.path(&key),
            r#"{"format":1,"key":"k5","id":"k5/a/1","source_id":"a","source_type":"rtmpConn",
                "accepted_at":1,"state":"live"}"#,
        )
        .unwrap();
        let old = sd.load(&key).unwrap().unwrap();
        assert_eq!((old.state, old.mediamtx), (State::Live, None));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_failed_write_keeps_the_previous_record_and_leaves_no_temporary_file() {
        let dir = tempdir("fail");
        let sd = SessionDir::open(&dir).unwrap();
        let key = StreamKey::parse("k2").unwrap();
        let live = Session::accepted(&key, "a", "rtmpConn", None);
        sd.save(&live).unwrap();
        // A read-only directory makes the temporary file impossible (root ignores modes, so
        // the rename is made to fail instead: a directory where the temporary file goes).
        let tmp = dir.join(format!(".k2.json.{}.tmp", std::process::id()));
        fs::create_dir(&tmp).unwrap();
        let mut ended = live.clone();
        ended.end("x");
        let err = sd.save(&ended).unwrap_err().to_string();
        assert!(
            err.contains("failed to write session record") && err.contains("k2.json"),
            "{err}"
        );
        fs::remove_dir(&tmp).unwrap();
        assert_eq!(sd.load(&key).unwrap(), Some(live));
        assert_eq!(names(&dir), vec!["k2.json"]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_corrupt_record_is_named_kept_and_recovered_never_lost() {
        let dir = tempdir("corrupt");
        let sd = SessionDir::open(&dir).unwrap();
        let key = StreamKey::parse("k3").unwrap();
        for (i, junk) in [
            &b"{\"format\":1,\"key\":\"k3\""[..],
            b"\xff\xfe not json",
            b"",
            b"{\"format\":9,\"key\":\"k3\",\"id\":\"\",\"source_id\":\"\",\"source_type\":\"\",\
               \"accepted_at\":0,\"state\":\"live\"}",
            b"{\"format\":1,\"key\":\"other\",\"id\":\"\",\"source_id\":\"\",\"source_type\":\"\",\
               \"accepted_at\":0,\"state\":\"live\"}",
        ]
        .iter()
        .enumerate()
        {
            fs::write(sd.path(&key), junk).unwrap();
            let err = sd.load(&key).unwrap_err();
            let text = err.to_string();
            assert!(
                text.contains(&sd.path(&key).display().to_string()) && text.contains("kept as"),
                "{i}: {text}"
            );
            let SessionError::Corrupt { kept, .. } = err else {
                panic!("{i}: {text}")
            };
            assert_eq!(fs::read(&kept).unwrap(), *junk, "{i}: bytes kept");
            fs::remove_file(kept).unwrap();
        }
        fs::write(sd.path(&key), "garbage").unwrap();
        let (s, err) = sd.load_or_recover(&key).unwrap();
        let s = s.unwrap();
        assert!(err.is_some());
        assert_eq!((s.state, s.source_id.as_str()), (State::Live, ""));
        // The recovered record is on disk, the bad bytes beside it.
        assert_eq!(sd.load(&key).unwrap(), Some(s));
        assert_eq!(names(&dir).len(), 2, "{:?}", names(&dir));
        assert_eq!(sd.keys().unwrap(), vec![key]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn keys_skip_other_files() {
        let dir = tempdir("keys");
        let sd = SessionDir::open(&dir).unwrap();
        for name in [
            "b.json",
            "a.json",
            ".a.json.1.tmp",
            "bad key.json",
            "c.txt",
            ".x.json",
        ] {
            fs::write(dir.join(name), "{}").unwrap();
        }
        let keys: Vec<String> = sd.keys().unwrap().iter().map(|k| k.to_string()).collect();
        assert_eq!(keys, ["a", "b"]);
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
        fs::remove_dir_all(&dir).unwrap();
    }
}
