//! Silence in the stream's own audio format, for the reconnect grace: AAC frames made once
//! with ffmpeg for the stream's sample rate and channels, checked to carry the same
//! AudioSpecificConfig as the stream (so the destinations see no format change).

use std::path::Path;
use std::process::Stdio;

use bytes::Bytes;

use super::flv::{Kind, Parser, Tag};

/// One silent AAC frame as an FLV audio payload, and how long it lasts.
#[derive(Debug, Clone)]
pub struct Silence {
    pub payload: Bytes,
    pub frame_ms: f64,
}

const RATES: [u32; 13] = [
    96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
];

/// AAC object type, sample rate and channels from an FLV AAC sequence header.
pub fn aac_format(config: &Tag) -> Option<(u8, u32, u8)> {
    let p = &config.payload;
    if config.kind != Kind::Audio || !config.is_sequence_header() || p.len() < 4 || p[0] >> 4 != 10
    {
        return None;
    }
    let object = p[2] >> 3;
    let rate_index = ((p[2] & 0x07) << 1) | (p[3] >> 7);
    let channels = (p[3] >> 3) & 0x0F;
    Some((object, *RATES.get(usize::from(rate_index))?, channels))
}

/// Makes silence for the stream whose AAC configuration is `config`; `Err` says why none can
/// be made (then the grace sends the picture only).
pub async fn make(ffmpeg: &Path, config: &Tag) -> Result<Silence, String> {
    let (object, rate, channels) =
        aac_format(config).ok_or("the audio is not AAC with a known sample rate")?;
    if object != 2 {
        return Err(format!(
            "AAC object type {object} (ffmpeg makes AAC-LC, type 2)"
        ));
    }
    let layout = match channels {
        1 => "mono",
        2 => "stereo",
        n => return Err(format!("{n} audio channels")),
    };
    let out = tokio::process::Command::new(ffmpeg)
        .args([
            "-hide_banner",
            "-nostdin",
            "-loglevel",
            "error",
            "-f",
            "lavfi",
            "-i",
        ])
        .arg(format!("anullsrc=r={rate}:cl={layout}"))
        .args(["-t", "1", "-c:a", "aac", "-b:a", "32k", "-f", "flv"])
        .args(["-flvflags", "no_duration_filesize", "pipe:1"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .env_remove("NOTIFY_SOCKET")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(std::time::Duration::from_secs(10), out)
        .await
        .map_err(|_| "ffmpeg took more than 10 s".to_string())?
        .map_err(|e| format!("failed to run ffmpeg: {e}"))?;
    let mut parser = Parser::new();
    parser.push(&out.stdout);
    let mut made_config = None;
    let mut frames = Vec::new();
    while let Some(tag) = parser.next_tag().map_err(|e| e.to_string())? {
        if tag.kind != Kind::Audio {
            continue;
        }
        if tag.is_sequence_header() {
            made_config = Some(tag);
        } else {
            frames.push(tag);
        }
    }
    let made = made_config.ok_or("ffmpeg made no AAC")?;
    if made.payload.get(2..4) != config.payload.get(2..4) {
        return Err("ffmpeg's AAC configuration differs from the stream's".into());
    }
    // A frame from the middle: past the encoder's priming, truly silent.
    let frame = frames
        .get(frames.len() / 2)
        .ok_or("ffmpeg made no AAC frame")?;
    let mut payload = vec![config.payload[0], 1];
    payload.extend_from_slice(&frame.payload[2..]);
    Ok(Silence {
        payload: Bytes::from(payload),
        frame_ms: 1024.0 * 1000.0 / f64::from(rate),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(bytes: [u8; 2]) -> Tag {
        Tag {
            kind: Kind::Audio,
            timestamp: 0,
            payload: Bytes::from(vec![0xAF, 0, bytes[0], bytes[1]]),
        }
    }

    #[test]
    fn reads_the_audio_specific_config() {
        // AAC-LC, 48 kHz (index 3), stereo: 00010 0011 0010 000
        assert_eq!(aac_format(&config([0x11, 0x90])), Some((2, 48000, 2)));
        // AAC-LC, 44.1 kHz (index 4), mono
        assert_eq!(aac_format(&config([0x12, 0x08])), Some((2, 44100, 1)));
        let frame = Tag {
            payload: Bytes::from_static(&[0xAF, 1, 0x21]),
            ..config([0x11, 0x90])
        };
        assert_eq!(aac_format(&frame), None);
    }

    #[test]
    fn makes_silence_in_the_streams_format() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let s = rt
            .block_on(make(Path::new("ffmpeg"), &config([0x11, 0x90])))
            .expect("ffmpeg (Debian package ffmpeg) makes 48 kHz stereo AAC-LC");
        assert_eq!(&s.payload[..2], &[0xAF, 1]);
        assert!(
            s.payload.len() > 4 && s.payload.len() < 100,
            "{}",
            s.payload.len()
        );
        assert!((s.frame_ms - 21.333).abs() < 0.01);
        // HE-AAC (object type 5) cannot be matched.
        let he = config([0x2B, 0x10]);
        assert!(rt.block_on(make(Path::new("ffmpeg"), &he)).is_err());
    }
}
