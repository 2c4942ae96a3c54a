//! What the publisher's tracks (as MediaMTX names them; `ready` writes them into the env file)
//! say when the ingest gives the relay less than the publisher sends: MediaMTX closes an RTMP
//! reader at the first frame of MPEG-1/2 audio it cannot put in RTMP (MP2, MP3 at 48 kHz), and
//! refuses one when no track is left. Rather than read again and again, the relay names the
//! codec and what the streamer should change.

/// Tracks MediaMTX gives an RTMP reader that announces the relay's `fourCcList`.
const VIDEO: [&str; 4] = ["H264", "H265", "AV1", "VP9"];
const AUDIO: [&str; 5] = ["MPEG-4 Audio", "Opus", "AC-3", "G711", "LPCM"];
/// MP3 at 44.1, 22.05 or 11.025 kHz reaches an RTMP reader; MP2, and MP3 at 48 kHz, close it.
const MPEG_AUDIO: &str = "MPEG-1/2 Audio";

/// What one read of the ingest got before it ended.
#[derive(Debug, Default, Clone, Copy)]
pub struct Read {
    pub audio: bool,
    pub video: bool,
}

/// Why a read that the ingest ended (cleanly or not) cannot have been the stream, when the
/// tracks say so; `None` when they do not (the publisher is gone, or the tracks are unknown).
pub fn after_read(tracks: &[String], read: Read) -> Option<String> {
    if !read.audio && tracks.iter().any(|t| t == MPEG_AUDIO) {
        return Some(format!(
            "audio is {MPEG_AUDIO} (MP2, ffmpeg's MPEG-TS default, or MP3 at 48 kHz), which the \
             ingest cannot give to an RTMP reader: set the encoder's audio to AAC \
             (ffmpeg: -c:a aac)"
        ));
    }
    if !read.audio && !read.video {
        return none_readable(tracks);
    }
    None
}

/// Why the ingest refused to play the stream, when the tracks say so: none of them is one an
/// RTMP reader gets. (A refusal alone is no diagnosis: during a grace there is no publisher.)
pub fn after_refusal(tracks: &[String]) -> Option<String> {
    none_readable(tracks)
}

fn none_readable(tracks: &[String]) -> Option<String> {
    let readable = |t: &String| VIDEO.contains(&t.as_str()) || AUDIO.contains(&t.as_str());
    if tracks.is_empty() || tracks.iter().any(readable) {
        return None;
    }
    Some(format!(
        "the stream's tracks ({}) are none that the ingest can give to an RTMP reader: set the \
         encoder to H.264 (or HEVC, AV1, VP9) with AAC (or Opus)",
        tracks.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    const NOTHING: Read = Read {
        audio: false,
        video: false,
    };

    #[test]
    fn mpeg_audio_that_never_came_is_named_with_the_fix() {
        let mp2 = t(&["H264", "MPEG-1/2 Audio"]);
        let video_only = Read {
            audio: false,
            video: true,
        };
        for read in [NOTHING, video_only] {
            let problem = after_read(&mp2, read).unwrap();
            assert!(
                problem.starts_with("audio is MPEG-1/2 Audio (MP2") && problem.contains("AAC"),
                "{problem}"
            );
        }
        // MP3 at 44.1 kHz is read: its stream ending is the publisher leaving.
        let read_audio = Read {
            audio: true,
            video: true,
        };
        assert_eq!(after_read(&mp2, read_audio), None);
    }

    #[test]
    fn a_publisher_gone_is_no_diagnosis() {
        assert_eq!(after_read(&t(&["H264", "MPEG-4 Audio"]), NOTHING), None);
        assert_eq!(after_read(&t(&["H265", "Opus"]), NOTHING), None);
        assert_eq!(after_read(&[], NOTHING), None);
        assert_eq!(after_refusal(&t(&["H264", "MPEG-4 Audio"])), None);
        assert_eq!(after_refusal(&t(&["MPEG-4 Video", "Opus"])), None);
        assert_eq!(after_refusal(&[]), None);
    }

    #[test]
    fn tracks_an_rtmp_reader_never_gets_are_named() {
        let odd = t(&["MPEG-4 Video", "G722"]);
        let problem = after_refusal(&odd).unwrap();
        assert!(
            problem.contains("(MPEG-4 Video, G722)") && problem.contains("H.264"),
            "{problem}"
        );
        assert_eq!(after_read(&odd, NOTHING).as_deref(), Some(problem.as_str()));
    }
}
