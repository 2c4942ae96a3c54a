//! What each platform's ingest takes, and whether a stream fits a destination. The relay never
//! transcodes: a destination that cannot take the stream's codecs gets nothing (its state is
//! `incompatible`, with the reason), never a broadcast with a track silently missing.
//!
//! Built in (public ingest documentation, 2026): `youtube` takes H.264, HEVC and AV1 with AAC
//! or MP3; `twitch`, `facebook` and `kick` take H.264 with AAC; any other platform name
//! (`custom`) takes anything. Every platform but `custom` needs video, and Facebook needs audio
//! too. An operator overrides a platform with `NEUSTREAM_PLATFORM_CODECS` and one destination
//! with `codecs` in the streams file, both as a list like `h264,hevc,aac` or `any`.

use std::fmt;

/// A codec as this module names it (lower case, as the settings write it).
pub const VIDEO: [&str; 4] = ["h264", "hevc", "av1", "vp9"];
pub const AUDIO: [&str; 6] = ["aac", "mp3", "opus", "ac3", "eac3", "flac"];

/// How people write a codec.
pub fn display(codec: &str) -> &str {
    match codec {
        "h264" => "H.264",
        "hevc" => "HEVC",
        "av1" => "AV1",
        "vp9" => "VP9",
        "aac" => "AAC",
        "mp3" => "MP3",
        "opus" => "Opus",
        "ac3" => "AC-3",
        "eac3" => "E-AC-3",
        "flac" => "FLAC",
        other => other,
    }
}

/// What a destination takes: codec lists (`None`: any) and whether it needs each kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepts {
    pub video: Option<Vec<String>>,
    pub audio: Option<Vec<String>>,
    pub needs_video: bool,
    pub needs_audio: bool,
}

impl Accepts {
    pub fn any() -> Self {
        Accepts {
            video: None,
            audio: None,
            needs_video: false,
            needs_audio: false,
        }
    }

    /// The built-in table.
    pub fn of_platform(platform: &str) -> Self {
        let list = |codecs: &[&str]| Some(codecs.iter().map(|c| (*c).to_owned()).collect());
        match platform {
            "youtube" => Accepts {
                video: list(&["h264", "hevc", "av1"]),
                audio: list(&["aac", "mp3"]),
                needs_video: true,
                needs_audio: false,
            },
            "twitch" | "kick" => Accepts {
                video: list(&["h264"]),
                audio: list(&["aac"]),
                needs_video: true,
                needs_audio: false,
            },
            "facebook" => Accepts {
                video: list(&["h264"]),
                audio: list(&["aac"]),
                needs_video: true,
                needs_audio: true,
            },
            _ => Accepts::any(),
        }
    }

    /// `h264,hevc,aac` or `any`; a list names the codecs taken, and a kind it names is needed
    /// (a list with no audio codec takes no audio: such a stream must have none).
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.eq_ignore_ascii_case("any") {
            return Ok(Accepts::any());
        }
        let mut video = Vec::new();
        let mut audio = Vec::new();
        for word in text.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            let word = word.to_ascii_lowercase();
            if VIDEO.contains(&word.as_str()) {
                video.push(word);
            } else if AUDIO.contains(&word.as_str()) {
                audio.push(word);
            } else {
                return Err(format!(
                    "unknown codec '{word}' (known: {}, {}, or 'any')",
                    VIDEO.join(", "),
                    AUDIO.join(", ")
                ));
            }
        }
        if video.is_empty() && audio.is_empty() {
            return Err("no codec named (write e.g. 'h264,aac', or 'any')".into());
        }
        Ok(Accepts {
            needs_video: !video.is_empty(),
            needs_audio: false,
            video: Some(video),
            audio: Some(audio),
        })
    }
}

/// As [`Accepts::parse`] reads it back.
impl fmt::Display for Accepts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.video, &self.audio) {
            (None, None) => f.write_str("any"),
            (video, audio) => {
                let all: Vec<&str> = video
                    .iter()
                    .chain(audio)
                    .flatten()
                    .map(String::as_str)
                    .collect();
                f.write_str(&all.join(","))
            }
        }
    }
}

/// `NEUSTREAM_PLATFORM_CODECS`: `twitch=h264,hevc,aac;kick=any`.
pub fn parse_overrides(text: &str) -> Result<Vec<(String, Accepts)>, String> {
    let mut out = Vec::new();
    for part in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let (platform, list) = part
            .split_once('=')
            .ok_or_else(|| format!("'{part}' is not platform=codecs"))?;
        let platform = crate::destination::platform_name(platform);
        let accepts = Accepts::parse(list).map_err(|e| format!("{platform}: {e}"))?;
        out.push((platform, accepts));
    }
    Ok(out)
}

/// The stream's codecs as the relay reads them (names as in [`VIDEO`] and [`AUDIO`], or a
/// description of another codec).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamCodecs {
    pub video: Option<String>,
    pub audio: Option<String>,
}

/// Why a destination cannot take the stream, in words for the operator: `twitch takes H.264
/// only; the stream is HEVC`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch(pub String);

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `twitch takes H.264 only`, `youtube takes AAC or MP3 audio`; `kind` is "" or " audio".
fn takes(platform: &str, list: &[String], kind: &str) -> String {
    let names: Vec<&str> = list.iter().map(|c| display(c)).collect();
    match names.as_slice() {
        [] => format!(
            "{platform} takes no{}",
            if kind.is_empty() { " video" } else { kind }
        ),
        [one] => format!("{platform} takes {one}{kind} only"),
        [init @ .., last] => format!("{platform} takes {} or {last}{kind}", init.join(", ")),
    }
}

/// Whether `platform`'s destination (taking `accepts`) can be sent `stream`.
pub fn check(platform: &str, accepts: &Accepts, stream: &StreamCodecs) -> Result<(), Mismatch> {
    match (&stream.video, &accepts.video) {
        (None, _) if accepts.needs_video => {
            return Err(Mismatch(format!(
                "{platform} needs video; the stream has none"
            )))
        }
        (Some(v), Some(list)) if !list.contains(v) => {
            return Err(Mismatch(format!(
                "{}; the stream is {}",
                takes(platform, list, ""),
                display(v)
            )))
        }
        _ => {}
    }
    match (&stream.audio, &accepts.audio) {
        (None, _) if accepts.needs_audio => Err(Mismatch(format!(
            "{platform} needs audio; the stream has none"
        ))),
        (Some(a), Some(list)) if list.is_empty() => Err(Mismatch(format!(
            "{platform} takes no audio; the stream's audio is {}",
            display(a)
        ))),
        (Some(a), Some(list)) if !list.contains(a) => Err(Mismatch(format!(
            "{}; the stream's audio is {}",
            takes(platform, list, " audio"),
            display(a)
        ))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(video: Option<&str>, audio: Option<&str>) -> StreamCodecs {
        StreamCodecs {
            video: video.map(str::to_owned),
            audio: audio.map(str::to_owned),
        }
    }

    #[test]
    fn the_built_in_table() {
        let hevc = stream(Some("hevc"), Some("aac"));
        let t = |p: &str, s: &StreamCodecs| check(p, &Accepts::of_platform(p), s);
        assert_eq!(
            t("twitch", &hevc).unwrap_err().0,
            "twitch takes H.264 only; the stream is HEVC"
        );
        assert!(t("youtube", &hevc).is_ok());
        assert!(t("custom", &hevc).is_ok());
        assert!(t("myserver", &stream(Some("vp9"), Some("opus"))).is_ok());
        assert_eq!(
            t("youtube", &stream(Some("h264"), Some("opus")))
                .unwrap_err()
                .0,
            "youtube takes AAC or MP3 audio; the stream's audio is Opus"
        );
        assert_eq!(
            t("facebook", &stream(Some("h264"), None)).unwrap_err().0,
            "facebook needs audio; the stream has none"
        );
        assert!(t("twitch", &stream(Some("h264"), None)).is_ok());
        assert_eq!(
            t("kick", &stream(None, Some("aac"))).unwrap_err().0,
            "kick needs video; the stream has none"
        );
        assert_eq!(
            t("youtube", &stream(Some("vp9"), Some("aac")))
                .unwrap_err()
                .0,
            "youtube takes H.264, HEVC or AV1; the stream is VP9"
        );
    }

    #[test]
    fn overrides_parse_and_name_what_is_wrong() {
        let o = parse_overrides("twitch=h264,hevc,aac; Kick = any").unwrap();
        assert_eq!(o[0].0, "twitch");
        assert!(check("twitch", &o[0].1, &stream(Some("hevc"), Some("aac"))).is_ok());
        assert_eq!(o[1], ("kick".into(), Accepts::any()));
        assert!(parse_overrides("twitch")
            .unwrap_err()
            .contains("platform=codecs"));
        assert!(parse_overrides("twitch=h265")
            .unwrap_err()
            .contains("unknown codec 'h265'"));
        assert!(Accepts::parse(" , ").is_err());
        for text in ["any", "h264,hevc,aac", "h264"] {
            assert_eq!(Accepts::parse(text).unwrap().to_string(), text);
        }
        // A list without audio codecs takes no audio.
        let video_only = Accepts::parse("h264").unwrap();
        assert!(check("x", &video_only, &stream(Some("h264"), None)).is_ok());
        assert_eq!(
            check("x", &video_only, &stream(Some("h264"), Some("aac")))
                .unwrap_err()
                .0,
            "x takes no audio; the stream's audio is AAC"
        );
    }
}
