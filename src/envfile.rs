//! The per-stream env file: written by `neustream ready`, read by systemd's `EnvironmentFile=`
//! for `neustream relay`, and read back by `neustream unpublish`.
//!
//! Every value is double-quoted with `"`, `\`, `` ` `` and `$` escaped, the one syntax that
//! systemd's parser (and `parse` below, which follows it) reads back byte for byte; values
//! never hold a newline or control character, so no value can start another variable.

use crate::destination::{Destination, DestinationError};
use crate::stream_key::{KeyError, StreamKey};

const KEY: &str = "NEUSTREAM_STREAM_KEY";
const SOURCE_URL: &str = "NEUSTREAM_SOURCE_URL";
const SOURCE_ID: &str = "NEUSTREAM_MTX_SOURCE_ID";
const SOURCE_TYPE: &str = "NEUSTREAM_MTX_SOURCE_TYPE";
const COUNT: &str = "NEUSTREAM_DESTINATIONS";
/// The hooks' reconnect grace, handed to the relay (it reads it as a setting: `relay --help`).
const GRACE: &str = "NEUSTREAM_RECONNECT_GRACE";
/// The publisher's tracks as MediaMTX names them (`H264,MPEG-4 Audio`), comma-separated: what
/// the relay can tell the streamer when the ingest gives it less.
const TRACKS: &str = "NEUSTREAM_SOURCE_TRACKS";
/// At most this many tracks are kept, each at most [`MAX_TRACK_NAME`] characters.
pub const MAX_TRACKS: usize = 16;
pub const MAX_TRACK_NAME: usize = 64;

/// What a relay needs to know about its stream, and who published it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSpec {
    pub key: StreamKey,
    /// Where the relay reads the stream (the local ingest).
    pub source_url: String,
    /// MediaMTX's id of the publishing connection (`MTX_SOURCE_ID`); may be empty.
    pub source_id: String,
    pub source_type: String,
    pub destinations: Vec<Destination>,
    /// How long the relay keeps destinations after the publisher is gone (none: the relay's
    /// own default).
    pub grace: Option<std::time::Duration>,
    /// The publisher's tracks as MediaMTX names them (`H264`, `MPEG-1/2 Audio`); empty:
    /// unknown.
    pub tracks: Vec<String>,
}

/// Keeps the track names that can go into the env file: printable, no comma, bounded in
/// length and number. Anything else is dropped (the tracks only help a diagnosis).
pub fn clean_tracks<S: AsRef<str>>(names: &[S]) -> Vec<String> {
    names
        .iter()
        .map(|n| n.as_ref().trim())
        .filter(|n| {
            !n.is_empty()
                && n.chars().count() <= MAX_TRACK_NAME
                && n.chars().all(|c| !c.is_control() && c != ',')
        })
        .take(MAX_TRACKS)
        .map(str::to_owned)
        .collect()
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvFileError {
    #[error("{0} is not set")]
    Missing(String),
    #[error("{name} is not a number of destinations (0 to 64)")]
    BadCount { name: String },
    #[error("{name} is not a duration (e.g. 30s, or 0 for none)")]
    BadDuration { name: String },
    #[error("{name}: {source}")]
    BadKey { name: String, source: KeyError },
    #[error("destination {index} ({platform}): {source}")]
    BadDestination {
        index: usize,
        platform: String,
        source: DestinationError,
    },
    #[error("{name} holds a control character")]
    ControlChar { name: String },
    #[error("{name}: {reason}")]
    BadCodecs { name: String, reason: String },
    #[error("line {line}: expected NAME=\"value\"")]
    Syntax { line: usize },
}

fn dest_platform(i: usize) -> String {
    format!("NEUSTREAM_DEST_{i}_PLATFORM")
}

fn dest_server(i: usize) -> String {
    format!("NEUSTREAM_DEST_{i}_RTMP_URL")
}

fn dest_key(i: usize) -> String {
    format!("NEUSTREAM_DEST_{i}_STREAM_KEY")
}

fn dest_codecs(i: usize) -> String {
    format!("NEUSTREAM_DEST_{i}_CODECS")
}

impl StreamSpec {
    pub fn render(&self) -> Result<String, EnvFileError> {
        let mut out = String::from(
            "# Written by `neustream ready` for neustream-relay@.service. Holds destination\n\
             # stream keys: keep it 0600. Removed by `neustream unpublish`.\n",
        );
        let mut put = |name: &str, value: &str| -> Result<(), EnvFileError> {
            if value.chars().any(char::is_control) {
                return Err(EnvFileError::ControlChar { name: name.into() });
            }
            out.push_str(name);
            out.push_str("=\"");
            for c in value.chars() {
                if matches!(c, '"' | '\\' | '`' | '$') {
                    out.push('\\');
                }
                out.push(c);
            }
            out.push_str("\"\n");
            Ok(())
        };
        put(KEY, self.key.as_str())?;
        put(SOURCE_URL, &self.source_url)?;
        put(SOURCE_ID, &self.source_id)?;
        put(SOURCE_TYPE, &self.source_type)?;
        if let Some(grace) = self.grace {
            put(GRACE, &format!("{}ms", grace.as_millis()))?;
        }
        if !self.tracks.is_empty() {
            put(TRACKS, &clean_tracks(&self.tracks).join(","))?;
        }
        put(COUNT, &self.destinations.len().to_string())?;
        for (i, d) in self.destinations.iter().enumerate() {
            put(&dest_platform(i), d.platform())?;
            put(&dest_server(i), d.server())?;
            put(&dest_key(i), d.key())?;
            if let Some(codecs) = d.codecs() {
                put(&dest_codecs(i), &codecs.to_string())?;
            }
        }
        Ok(out)
    }

    /// From variables as systemd's `EnvironmentFile=` (or [`parse`]) produced them.
    pub fn from_vars(vars: &[(String, String)]) -> Result<Self, EnvFileError> {
        let get = |name: &str| -> Result<&str, EnvFileError> {
            vars.iter()
                .rev()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
                .ok_or_else(|| EnvFileError::Missing(name.into()))
        };
        let optional = |name: &str| get(name).unwrap_or("").to_owned();
        let key = StreamKey::parse(get(KEY)?).map_err(|source| EnvFileError::BadKey {
            name: KEY.into(),
            source,
        })?;
        let count: usize = get(COUNT)?
            .parse()
            .ok()
            .filter(|n| *n <= crate::destination::MAX_DESTINATIONS)
            .ok_or_else(|| EnvFileError::BadCount { name: COUNT.into() })?;
        let mut destinations = Vec::with_capacity(count);
        for index in 0..count {
            let platform = get(&dest_platform(index)).unwrap_or("unknown");
            let dest = Destination::from_parts(
                platform,
                get(&dest_server(index))?,
                get(&dest_key(index))?,
            )
            .map_err(|source| EnvFileError::BadDestination {
                index,
                platform: platform.into(),
                source,
            })?;
            let dest =
                match get(&dest_codecs(index)) {
                    Ok(text) => dest.with_codecs(crate::platforms::Accepts::parse(text).map_err(
                        |reason| EnvFileError::BadCodecs {
                            name: dest_codecs(index),
                            reason,
                        },
                    )?),
                    Err(_) => dest,
                };
            destinations.push(dest);
        }
        Ok(StreamSpec {
            key,
            source_url: get(SOURCE_URL)?.to_owned(),
            source_id: optional(SOURCE_ID),
            source_type: optional(SOURCE_TYPE),
            destinations,
            grace: get(GRACE)
                .ok()
                .map(crate::config::parse_grace)
                .transpose()
                .map_err(|_| EnvFileError::BadDuration { name: GRACE.into() })?,
            tracks: get(TRACKS)
                .map(|t| clean_tracks(&t.split(',').collect::<Vec<_>>()))
                .unwrap_or_default(),
        })
    }
}

/// Reads an env file the way systemd's `EnvironmentFile=` does (env-file.c): `#`/`;` comment
/// lines, `NAME=value` with surrounding blanks trimmed, double-quoted values with `\"`, `\\`,
/// `` \` `` and `\$` escapes (other backslashes kept), single-quoted values taken literally.
pub fn parse(text: &str) -> Result<Vec<(String, String)>, EnvFileError> {
    let mut vars = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let syntax = || EnvFileError::Syntax { line: n + 1 };
        let (name, raw) = line.split_once('=').ok_or_else(syntax)?;
        let name = name.trim_end();
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(syntax());
        }
        vars.push((name.to_owned(), unquote(raw.trim()).ok_or_else(syntax)?));
    }
    Ok(vars)
}

fn unquote(raw: &str) -> Option<String> {
    let mut out = String::new();
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => loop {
                match chars.next()? {
                    '"' => break,
                    '\\' => match chars.next()? {
                        e @ ('"' | '\\' | '`' | '$') => out.push(e),
                        e => {
                            out.push('\\');
                            out.push(e);
                        }
                    },
                    other => out.push(other),
                }
            },
            '\'' => loop {
                match chars.next()? {
                    '\'' => break,
                    other => out.push(other),
                }
            },
            '\\' => out.push(chars.next()?),
            other => out.push(other),
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(dests: &[(&str, &str)]) -> StreamSpec {
        StreamSpec {
            grace: Some(std::time::Duration::from_secs(30)),
            key: StreamKey::parse("abc-123").unwrap(),
            source_url: "rtmp://127.0.0.1:1935/live/abc-123".into(),
            source_id: "9c1d2e3f-0000-4000-8000-000000000001".into(),
            source_type: "rtmpConn".into(),
            destinations: dests
                .iter()
                .enumerate()
                .map(|(i, (server, key))| {
                    Destination::from_parts(["youtube", "twitch"][i % 2], server, key).unwrap()
                })
                .collect(),
            tracks: vec!["H264".into(), "MPEG-1/2 Audio".into()],
        }
    }

    #[test]
    fn round_trips_every_special_character() {
        let dests = [
            ("rtmp://a.rtmp.youtube.com/live2", "x&y?z=1%20#frag"),
            (
                "rtmps://h:443/app?t='1'",
                r#"k"quote'single\back`tick$HOME${X}"#,
            ),
            ("rtmp://h/app", "k;NEUSTREAM_DEST_0_STREAM_KEY=evil\\"),
            ("rtmp://h/app", r"k\"),
            ("rtmp://h/a\\pp", "k\\\""),
        ];
        let original = spec(&dests);
        let text = original.render().unwrap();
        let vars = parse(&text).unwrap();
        let back = StreamSpec::from_vars(&vars).unwrap();
        assert_eq!(back, original);
        for (i, (server, key)) in dests.iter().enumerate() {
            assert_eq!(back.destinations[i].server(), *server);
            assert_eq!(back.destinations[i].key(), *key);
        }
        // One line per variable (5 + the grace + the tracks + 3 per destination): no value
        // can start a line of its own.
        assert_eq!(
            text.lines().filter(|l| !l.starts_with('#')).count(),
            7 + 3 * dests.len()
        );
        assert!(text.contains("NEUSTREAM_SOURCE_TRACKS=\"H264,MPEG-1/2 Audio\"\n"));
    }

    #[test]
    fn tracks_are_optional_and_only_printable() {
        let mut original = spec(&[]);
        original.tracks.clear();
        let text = original.render().unwrap();
        assert!(!text.contains("NEUSTREAM_SOURCE_TRACKS"));
        assert_eq!(
            StreamSpec::from_vars(&parse(&text).unwrap())
                .unwrap()
                .tracks,
            Vec::<String>::new()
        );
        original.tracks = vec!["H265".into(), "a,b".into(), "x\u{7}".into(), " ".into()];
        let back = StreamSpec::from_vars(&parse(&original.render().unwrap()).unwrap()).unwrap();
        assert_eq!(back.tracks, vec!["H265"]);
        let long = vec!["x".repeat(MAX_TRACK_NAME + 1); 1];
        assert!(clean_tracks(&long).is_empty());
        assert_eq!(clean_tracks(&vec!["Opus"; 40]).len(), MAX_TRACKS);
    }

    #[test]
    fn zero_destinations_round_trip() {
        let original = spec(&[]);
        let back = StreamSpec::from_vars(&parse(&original.render().unwrap()).unwrap()).unwrap();
        assert_eq!(back, original);
    }

    #[test]
    fn systemd_syntax_subset() {
        let vars = parse("# c\n; c\n  A = 'lit\\eral' \nB=\"x\\y\\$\"\nC=plain\\ value\n").unwrap();
        assert_eq!(
            vars,
            vec![
                ("A".into(), "lit\\eral".into()),
                ("B".into(), "x\\y$".into()),
                ("C".into(), "plain value".into())
            ]
        );
        assert_eq!(
            parse("A=\"open\n").unwrap_err(),
            EnvFileError::Syntax { line: 1 }
        );
        assert_eq!(parse("x\n").unwrap_err(), EnvFileError::Syntax { line: 1 });
    }

    #[test]
    fn bad_files_name_the_problem() {
        let mut vars = parse(&spec(&[("rtmp://h/app", "k")]).render().unwrap()).unwrap();
        vars.retain(|(k, _)| k != "NEUSTREAM_DEST_0_STREAM_KEY");
        assert_eq!(
            StreamSpec::from_vars(&vars).unwrap_err(),
            EnvFileError::Missing("NEUSTREAM_DEST_0_STREAM_KEY".into())
        );
        let vars = vec![("NEUSTREAM_STREAM_KEY".to_string(), "a".to_string())];
        assert_eq!(
            StreamSpec::from_vars(&vars).unwrap_err().to_string(),
            "NEUSTREAM_DESTINATIONS is not set"
        );
        let err = StreamSpec::from_vars(&[
            ("NEUSTREAM_STREAM_KEY".into(), "a".into()),
            ("NEUSTREAM_DESTINATIONS".into(), "1".into()),
            ("NEUSTREAM_DEST_0_PLATFORM".into(), "twitch".into()),
            ("NEUSTREAM_DEST_0_RTMP_URL".into(), "http://h/app".into()),
            ("NEUSTREAM_DEST_0_STREAM_KEY".into(), "secret".into()),
        ])
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            "destination 0 (twitch): URL scheme must be rtmp:// or rtmps://"
        );
    }
}
