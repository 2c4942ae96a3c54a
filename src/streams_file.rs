//! The streams file of standalone mode (no Control Plane): which stream keys may publish and
//! where each stream goes, as TOML in the shape of the Control Plane's forwarding answer:
//!
//! ```toml
//! [[stream]]
//! key = "my-obs-key"            # or key_sha256 = "<sha256 of the key, hex>"
//! name = "Main camera"          # optional
//! [[stream.destination]]
//! platform = "youtube"
//! rtmp_url = "rtmp://a.rtmp.youtube.com/live2"
//! stream_key = "xxxx-xxxx"
//! ```
//!
//! The whole file is checked when it is read: a syntax error, an unknown field, a missing or
//! duplicate key, or an invalid destination is an error naming the line, so that a mistake
//! refuses every publish instead of relaying something the operator did not mean. Messages
//! never quote values from the file (destination keys are secrets).

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use toml::Spanned;

use crate::destination::{Destination, MAX_DESTINATIONS};
use crate::stream_key::StreamKey;

pub const DEFAULT_STREAMS_FILE: &str = "/etc/neustream/streams.toml";
/// Largest streams file read.
const MAX_FILE_LEN: u64 = 1 << 20;
const MAX_NAME_LEN: usize = 200;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StreamsFileError {
    #[error(
        "streams file {path} does not exist: create it (see `neustream streams check --help`), \
         or set CONTROL_PLANE_URL to use the Neustream Control Plane"
    )]
    Missing { path: String },
    #[error("failed to read streams file {path}: {reason}")]
    Read { path: String, reason: String },
    #[error(
        "streams file {path} is {what} by other users (mode {mode:04o}) and holds stream keys; \
         refusing it: chmod 0640 {path} && chown root:mediamtx {path}"
    )]
    Exposed {
        path: String,
        what: &'static str,
        mode: u32,
    },
    #[error("streams file {path}, line {line}: {reason}")]
    Invalid {
        path: String,
        line: usize,
        reason: String,
    },
    #[error("stream key {key} is not in the streams file {path}")]
    UnknownKey { key: String, path: String },
}

/// A stream key as the file gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyMatch {
    Plain(StreamKey),
    /// Lower-case hex SHA-256 of the key.
    Sha256(String),
}

/// One destination of a stream, as written in the file (already validated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileDestination {
    pub platform: String,
    pub rtmp_url: String,
    pub stream_key: String,
    /// The same, validated: what `streams check` prints (redacted).
    pub parsed: Destination,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stream {
    pub key: KeyMatch,
    pub name: Option<String>,
    pub destinations: Vec<FileDestination>,
    /// Line of its `[[stream]]` header.
    pub line: usize,
}

#[derive(Debug)]
pub struct StreamsFile {
    pub streams: Vec<Stream>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    stream: Vec<Spanned<RawStream>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStream {
    key: Option<Spanned<String>>,
    key_sha256: Option<Spanned<String>>,
    name: Option<String>,
    #[serde(default)]
    destination: Vec<Spanned<RawDestination>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDestination {
    platform: Option<String>,
    rtmp_url: String,
    stream_key: String,
    /// What this destination takes, whatever its platform: `"h264,hevc,aac"` or `"any"`.
    codecs: Option<String>,
}

/// Reads and checks the streams file at `path`: it must be a regular file that other users
/// can neither read nor write.
pub fn load(path: &Path) -> Result<StreamsFile, StreamsFileError> {
    let shown = path.display().to_string();
    let read_error = |e: std::io::Error| StreamsFileError::Read {
        path: shown.clone(),
        reason: e.to_string(),
    };
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(StreamsFileError::Missing { path: shown })
        }
        Err(e) => return Err(read_error(e)),
    };
    let meta = file.metadata().map_err(read_error)?;
    if !meta.is_file() {
        return Err(StreamsFileError::Read {
            path: shown,
            reason: "not a regular file".into(),
        });
    }
    check_mode(&shown, meta.permissions().mode())?;
    if meta.len() > MAX_FILE_LEN {
        return Err(StreamsFileError::Read {
            path: shown,
            reason: format!("larger than {MAX_FILE_LEN} bytes"),
        });
    }
    let mut bytes = Vec::new();
    file.take(MAX_FILE_LEN + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    let text = match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => {
            let at = e.utf8_error().valid_up_to();
            return Err(StreamsFileError::Invalid {
                line: line_of(&String::from_utf8_lossy(&e.as_bytes()[..at]), at),
                path: shown,
                reason: "not UTF-8 text".into(),
            });
        }
    };
    parse(&shown, &text)
}

/// Refuses a file that other users may read (stream keys, destination keys) or write (anyone
/// could add a key of their own).
fn check_mode(path: &str, mode: u32) -> Result<(), StreamsFileError> {
    let what = if mode & 0o002 != 0 {
        "writable"
    } else if mode & 0o004 != 0 {
        "readable"
    } else {
        return Ok(());
    };
    Err(StreamsFileError::Exposed {
        path: path.into(),
        what,
        mode: mode & 0o7777,
    })
}

/// Parses and checks the text of a streams file (`path` only names it in errors).
pub fn parse(path: &str, text: &str) -> Result<StreamsFile, StreamsFileError> {
    let invalid = |offset: usize, reason: String| StreamsFileError::Invalid {
        path: path.into(),
        line: line_of(text, offset),
        reason,
    };
    let raw: RawFile = toml::from_str(text).map_err(|e| {
        let offset = e.span().map_or(0, |s| s.start);
        invalid(offset, redact_quoted(e.message().trim()))
    })?;
    let mut streams: Vec<Stream> = Vec::new();
    let mut digests: Vec<(String, usize)> = Vec::new();
    for spanned in raw.stream {
        let at = spanned.span().start;
        let line = line_of(text, at);
        let raw = spanned.into_inner();
        let (key, key_at) = match (raw.key, raw.key_sha256) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    at,
                    "stream has both key and key_sha256; keep one".into(),
                ))
            }
            (None, None) => {
                return Err(invalid(
                    at,
                    "stream has no key: set key = \"<OBS stream key>\" or key_sha256 = \
                     \"<sha256 of it, hex>\""
                        .into(),
                ))
            }
            (Some(key), None) => {
                let key_at = key.span().start;
                match StreamKey::parse(key.get_ref()) {
                    Ok(key) => (KeyMatch::Plain(key), key_at),
                    Err(e) => return Err(invalid(key_at, format!("key: {e}"))),
                }
            }
            (None, Some(hash)) => {
                let key_at = hash.span().start;
                let hex = hash.get_ref().trim().to_ascii_lowercase();
                if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(invalid(
                        key_at,
                        format!(
                            "key_sha256 must be 64 hexadecimal digits (`printf %s KEY | \
                             sha256sum`), not {} characters",
                            hash.get_ref().chars().count()
                        ),
                    ));
                }
                (KeyMatch::Sha256(hex), key_at)
            }
        };
        let digest = match &key {
            KeyMatch::Plain(k) => sha256_hex(k.as_str()),
            KeyMatch::Sha256(h) => h.clone(),
        };
        if let Some((_, first)) = digests.iter().find(|(d, _)| *d == digest) {
            return Err(invalid(
                key_at,
                format!("this key is already the key of the stream at line {first}"),
            ));
        }
        digests.push((digest, line));
        if let Some(name) = &raw.name {
            if name.chars().count() > MAX_NAME_LEN || name.chars().any(char::is_control) {
                return Err(invalid(
                    at,
                    format!(
                        "name must be at most {MAX_NAME_LEN} characters, without control \
                         characters"
                    ),
                ));
            }
        }
        if raw.destination.len() > MAX_DESTINATIONS {
            return Err(invalid(
                at,
                format!(
                    "{} destinations; at most {MAX_DESTINATIONS} are allowed",
                    raw.destination.len()
                ),
            ));
        }
        let mut destinations = Vec::new();
        for (index, dest) in raw.destination.into_iter().enumerate() {
            let dest_at = dest.span().start;
            let dest = dest.into_inner();
            let platform = dest.platform.unwrap_or_default();
            let parsed = Destination::from_parts(&platform, &dest.rtmp_url, &dest.stream_key)
                .map_err(|e| {
                    invalid(
                        dest_at,
                        format!(
                            "destination {index} ({}): {e}",
                            crate::destination::platform_name(&platform)
                        ),
                    )
                })?;
            let parsed = match &dest.codecs {
                Some(text) => {
                    parsed.with_codecs(crate::platforms::Accepts::parse(text).map_err(|e| {
                        invalid(
                            dest_at,
                            format!(
                                "destination {index} ({}): codecs: {e}",
                                crate::destination::platform_name(&platform)
                            ),
                        )
                    })?)
                }
                None => parsed,
            };
            destinations.push(FileDestination {
                platform,
                rtmp_url: dest.rtmp_url,
                stream_key: dest.stream_key,
                parsed,
            });
        }
        streams.push(Stream {
            key,
            name: raw.name,
            destinations,
            line,
        });
    }
    Ok(StreamsFile { streams })
}

impl StreamsFile {
    /// The stream whose key (or key hash) is `key`.
    pub fn find(&self, key: &StreamKey) -> Option<&Stream> {
        let digest = sha256_hex(key.as_str());
        self.streams.iter().find(|s| match &s.key {
            KeyMatch::Plain(k) => k == key,
            KeyMatch::Sha256(h) => *h == digest,
        })
    }
}

impl Stream {
    /// The stream's destinations as entries of a Control Plane forwarding answer, so that they
    /// take the same path from here on.
    pub fn forwarding_entries(&self) -> Vec<serde_json::Value> {
        self.destinations
            .iter()
            .map(|d| {
                let mut entry = serde_json::json!({
                    "platform": d.platform,
                    "rtmp_url": d.rtmp_url,
                    "stream_key": d.stream_key,
                });
                if let Some(codecs) = d.parsed.codecs() {
                    entry["codecs"] = codecs.to_string().into();
                }
                entry
            })
            .collect()
    }

    /// How `streams check` names the stream's key without showing it.
    pub fn redacted_key(&self) -> String {
        match &self.key {
            KeyMatch::Plain(k) => format!("key <redacted, {} characters>", k.as_str().len()),
            KeyMatch::Sha256(h) => format!("key_sha256 {}…", &h[..12]),
        }
    }
}

/// Lower-case hex SHA-256 of `text`.
pub fn sha256_hex(text: &str) -> String {
    format!("{:x}", Sha256::digest(text.as_bytes()))
}

/// 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    let upto = offset.min(text.len());
    text.as_bytes()[..upto]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Replaces every double-quoted part of a parser message by "…": serde quotes the values it
/// could not use, and a value may be a destination's key. A lone quote (the parser naming the
/// character it expected) is kept.
fn redact_quoted(message: &str) -> String {
    let mut out = String::new();
    let mut rest = message;
    while let Some(open) = rest.find('"') {
        let Some(len) = rest[open + 1..].find('"') else {
            break;
        };
        out.push_str(&rest[..open]);
        out.push_str("\"…\"");
        rest = &rest[open + 1 + len + 1..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const PATH: &str = "/etc/neustream/streams.toml";

    fn key(k: &str) -> StreamKey {
        StreamKey::parse(k).unwrap()
    }

    fn line_and_reason(text: &str) -> (usize, String) {
        match parse(PATH, text) {
            Err(StreamsFileError::Invalid { line, reason, .. }) => (line, reason),
            other => panic!("expected an invalid file, got {other:?}"),
        }
    }

    const TWO_STREAMS: &str = r#"
# comment
[[stream]]
key = "my-obs-key"
name = "Main camera"
[[stream.destination]]
platform = "youtube"
rtmp_url = "rtmp://a.rtmp.youtube.com/live2"
stream_key = "yt-secret"
[[stream.destination]]
platform = "twitch"
rtmp_url = "rtmp://live.twitch.tv/app/"
stream_key = "tw-secret"

[[stream]]
key_sha256 = "5E884898DA28047151D0E56F8DC6292773603D0D6AABBDD62A11EF721D1542D8"
"#;

    #[test]
    fn reads_streams_keys_names_and_destinations() {
        let file = parse(PATH, TWO_STREAMS).unwrap();
        assert_eq!(file.streams.len(), 2);
        let main = file.find(&key("my-obs-key")).unwrap();
        assert_eq!(main.line, 3);
        assert_eq!(main.name.as_deref(), Some("Main camera"));
        let urls: Vec<String> = main
            .destinations
            .iter()
            .map(|d| d.parsed.secret_url())
            .collect();
        assert_eq!(
            urls,
            [
                "rtmp://a.rtmp.youtube.com/live2/yt-secret",
                "rtmp://live.twitch.tv/app/tw-secret"
            ]
        );
        assert_eq!(
            main.forwarding_entries()[1],
            serde_json::json!({"platform": "twitch", "rtmp_url": "rtmp://live.twitch.tv/app/",
                               "stream_key": "tw-secret"})
        );
    }

    #[test]
    fn hashed_keys_match_the_key_whatever_the_hex_case() {
        // sha256("password"), upper case in the file.
        let file = parse(PATH, TWO_STREAMS).unwrap();
        let hashed = file.find(&key("password")).unwrap();
        assert_eq!(hashed.line, 15);
        assert!(hashed.destinations.is_empty());
        assert_eq!(hashed.redacted_key(), "key_sha256 5e884898da28…");
        assert_eq!(
            sha256_hex("password"),
            "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8"
        );
    }

    #[test]
    fn unknown_keys_and_near_misses_are_not_found() {
        let file = parse(PATH, TWO_STREAMS).unwrap();
        for k in ["my-obs-ke", "MY-OBS-KEY", "my-obs-key2", "Password", "x"] {
            assert!(file.find(&key(k)).is_none(), "{k} must not be found");
        }
        // The hash itself is not a key that publishes.
        let hash = sha256_hex("password");
        assert!(file.find(&key(&hash)).is_none());
    }

    #[test]
    fn a_stream_without_destinations_is_accepted() {
        let file = parse(PATH, "[[stream]]\nkey = \"solo\"\n").unwrap();
        let s = file.find(&key("solo")).unwrap();
        assert!(s.destinations.is_empty() && s.forwarding_entries().is_empty());
    }

    #[test]
    fn an_empty_file_knows_no_key() {
        let file = parse(PATH, "# nothing yet\n").unwrap();
        assert!(file.streams.is_empty());
        assert!(file.find(&key("any")).is_none());
    }

    #[test]
    fn syntax_errors_name_their_line() {
        let (line, reason) = line_and_reason("[[stream]]\nkey = \"a\"\nname = \"unterminated\n");
        assert_eq!(line, 3, "{reason}");
        let (line, _) = line_and_reason("[[stream]]\nkey = \"a\"\n\n[[stream.destination]\n");
        assert_eq!(line, 4);
        let (line, _) = line_and_reason("[[stream]]\nkey = bare-word\n");
        assert_eq!(line, 2);
    }

    #[test]
    fn unknown_and_misspelt_fields_are_errors() {
        let (line, reason) = line_and_reason("[[stream]]\nkey = \"a\"\nstream-key = \"b\"\n");
        assert_eq!(line, 3, "{reason}");
        assert!(reason.contains("stream-key"), "{reason}");
        let (line, reason) = line_and_reason(
            "[[stream]]\nkey = \"a\"\n[[stream.destination]]\nrtmp_url = \"rtmp://h/app\"\n\
             streamkey = \"s\"\n",
        );
        assert!(reason.contains("streamkey"), "{reason}");
        assert!((3..=5).contains(&line), "{line}");
        let (_, reason) = line_and_reason("[[streams]]\nkey = \"a\"\n");
        assert!(reason.contains("streams"), "{reason}");
    }

    #[test]
    fn missing_fields_are_errors() {
        let (line, reason) = line_and_reason(
            "[[stream]]\nkey = \"a\"\n[[stream.destination]]\nplatform = \"x\"\n\
             rtmp_url = \"rtmp://h/app\"\n",
        );
        assert!(reason.contains("stream_key"), "{reason}");
        assert!((3..=5).contains(&line), "{line}");
        let (line, reason) = line_and_reason("\n[[stream]]\nname = \"no key\"\n");
        assert_eq!(line, 2);
        assert!(reason.contains("no key"), "{reason}");
    }

    #[test]
    fn wrong_types_never_quote_the_value() {
        let (_, reason) = line_and_reason(
            "[[stream]]\nkey = \"a\"\ndestination = \"rtmp://h/app/very-secret-key\"\n",
        );
        assert!(!reason.contains("very-secret-key"), "{reason}");
        let (line, reason) = line_and_reason(
            "[[stream]]\nkey = \"a\"\n[[stream.destination]]\nrtmp_url = \"rtmp://h/app\"\n\
             stream_key = 42\n",
        );
        assert_eq!(line, 5, "{reason}");
    }

    #[test]
    fn keys_are_checked() {
        let (line, reason) = line_and_reason("[[stream]]\n\nkey = \"bad key!\"\n");
        assert_eq!(line, 3);
        assert!(reason.starts_with("key: stream key contains"), "{reason}");
        let (line, reason) =
            line_and_reason("[[stream]]\nkey = \"a\"\n\n[[stream]]\nkey_sha256 = \"abc\"\n");
        assert_eq!(line, 5);
        assert!(reason.contains("64 hexadecimal digits"), "{reason}");
        let (_, reason) = line_and_reason(&format!(
            "[[stream]]\nkey_sha256 = \"{}\"\n",
            "g".repeat(64)
        ));
        assert!(reason.contains("64 hexadecimal digits"), "{reason}");
        let (line, reason) = line_and_reason("[[stream]]\nkey = \"a\"\nkey_sha256 = \"00\"\n");
        assert_eq!(line, 1);
        assert!(reason.contains("both key and key_sha256"), "{reason}");
    }

    #[test]
    fn duplicate_keys_are_errors_hashed_or_not() {
        let (line, reason) = line_and_reason(
            "[[stream]]\nkey = \"a\"\n[[stream]]\nkey = \"b\"\n[[stream]]\nkey = \"a\"\n",
        );
        assert_eq!(line, 6);
        assert!(reason.contains("stream at line 1"), "{reason}");
        let text = format!(
            "[[stream]]\nkey = \"password\"\n[[stream]]\nkey_sha256 = \"{}\"\n",
            sha256_hex("password")
        );
        let (line, reason) = line_and_reason(&text);
        assert_eq!(line, 4);
        assert!(reason.contains("stream at line 1"), "{reason}");
    }

    #[test]
    fn invalid_destinations_name_their_line_and_not_their_key() {
        let text = "[[stream]]\nkey = \"a\"\n[[stream.destination]]\nplatform = \"youtube\"\n\
                    rtmp_url = \"rtmp://h/app\"\nstream_key = \"ok\"\n\
                    [[stream.destination]]\nplatform = \"twitch\"\n\
                    rtmp_url = \"http://h/app\"\nstream_key = \"tw-secret\"\n";
        let (line, reason) = line_and_reason(text);
        assert!((7..=10).contains(&line), "{line}");
        assert_eq!(
            reason,
            "destination 1 (twitch): URL scheme must be rtmp:// or rtmps://"
        );
        let (_, reason) = line_and_reason(
            "[[stream]]\nkey = \"a\"\n[[stream.destination]]\n\
             rtmp_url = \"rtmp://user:pw@h/app\"\nstream_key = \"k\"\n",
        );
        assert!(
            reason.contains("credentials") && !reason.contains("pw"),
            "{reason}"
        );
    }

    #[test]
    fn a_destinations_own_codecs_override_its_platforms() {
        let text = "[[stream]]\nkey = \"a\"\n[[stream.destination]]\nplatform = \"twitch\"\n\
                    rtmp_url = \"rtmp://h/app\"\nstream_key = \"k\"\n\
                    codecs = \"h264,hevc,aac\"\n";
        let file = parse("streams.toml", text).unwrap();
        let dest = &file.streams[0].destinations[0];
        let codecs = dest.parsed.codecs().expect("its own list");
        assert_eq!(codecs.to_string(), "h264,hevc,aac");
        // It travels with the destination as a forwarding entry (what `ready` reads).
        let entry = &file.streams[0].forwarding_entries()[0];
        assert_eq!(entry["codecs"], "h264,hevc,aac");
        let (_, reason) = line_and_reason(&text.replace("h264,hevc,aac", "h265"));
        assert!(
            reason.starts_with("destination 0 (twitch): codecs: unknown codec 'h265'"),
            "{reason}"
        );
    }

    #[test]
    fn too_many_destinations_is_an_error() {
        let mut text = String::from("[[stream]]\nkey = \"a\"\n");
        for i in 0..=MAX_DESTINATIONS {
            text.push_str(&format!(
                "[[stream.destination]]\nrtmp_url = \"rtmp://h/app\"\nstream_key = \"k{i}\"\n"
            ));
        }
        let (line, reason) = line_and_reason(&text);
        assert_eq!(line, 1);
        assert!(reason.contains("at most 64"), "{reason}");
    }

    #[test]
    fn names_are_checked() {
        let (_, reason) = line_and_reason("[[stream]]\nkey = \"a\"\nname = \"a\\u0007b\"\n");
        assert!(reason.contains("control characters"), "{reason}");
    }

    #[test]
    fn quoted_parts_of_parser_messages_are_redacted() {
        assert_eq!(
            redact_quoted(r#"invalid type: string "s3cret", expected a sequence"#),
            r#"invalid type: string "…", expected a sequence"#
        );
        assert_eq!(redact_quoted(r#"a "b" c "d" e"#), r#"a "…" c "…" e"#);
        assert_eq!(
            redact_quoted(r#"invalid basic string, expected `"`"#),
            r#"invalid basic string, expected `"`"#
        );
        assert_eq!(redact_quoted("unknown field `x`"), "unknown field `x`");
    }

    struct TempFile(std::path::PathBuf);
    impl TempFile {
        fn new(name: &str, text: &[u8], mode: u32) -> Self {
            let dir = std::env::temp_dir().join(format!(
                "neustream-streams-file-{}-{name}",
                std::process::id()
            ));
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join("streams.toml");
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            TempFile(path)
        }
    }
    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(self.0.parent().unwrap());
        }
    }

    #[test]
    fn files_other_users_can_read_or_write_are_refused() {
        for (mode, what) in [
            (0o644, "readable"),
            (0o604, "readable"),
            (0o662, "writable"),
        ] {
            let f = TempFile::new(&format!("{mode:o}"), b"[[stream]]\nkey = \"a\"\n", mode);
            match load(&f.0) {
                Err(e @ StreamsFileError::Exposed { .. }) => {
                    let text = e.to_string();
                    assert!(text.contains(&format!("{what} by other users")), "{text}");
                    assert!(text.contains(&format!("mode {mode:04o}")), "{text}");
                    assert!(text.contains("chmod 0640"), "{text}");
                }
                other => panic!("mode {mode:o}: expected Exposed, got {other:?}"),
            }
        }
        for mode in [0o640, 0o600, 0o660, 0o400] {
            let f = TempFile::new(&format!("ok{mode:o}"), b"[[stream]]\nkey = \"a\"\n", mode);
            let file = load(&f.0).unwrap_or_else(|e| panic!("mode {mode:o}: {e}"));
            assert!(file.find(&key("a")).is_some());
        }
    }

    #[test]
    fn missing_unreadable_and_binary_files() {
        let path = std::env::temp_dir().join("neustream-no-such-dir/streams.toml");
        let err = load(&path).unwrap_err();
        assert!(matches!(err, StreamsFileError::Missing { .. }));
        assert!(err.to_string().contains("CONTROL_PLANE_URL"), "{err}");

        let f = TempFile::new(
            "binary",
            b"[[stream]]\nkey = \"a\"\nname = \"\xff\"\n",
            0o600,
        );
        match load(&f.0) {
            Err(StreamsFileError::Invalid { line, reason, .. }) => {
                assert_eq!((line, reason.as_str()), (3, "not UTF-8 text"));
            }
            other => panic!("expected invalid UTF-8, got {other:?}"),
        }

        let dir = TempFile::new("dir", b"", 0o600);
        let err = load(dir.0.parent().unwrap()).unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
    }
}
