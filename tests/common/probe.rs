//! What ffprobe sees in a recording (or a stream read back from a server). Apart from
//! `media.rs` so that the RTMP client's interop tests (src/rtmp/tests_interop.rs) can include
//! it too.

use std::path::Path;
use std::process::Command;

/// What ffprobe sees in a recording.
#[derive(Debug, Default)]
pub struct Received {
    pub video_codec: String,
    pub audio_codec: String,
    pub video_frames: usize,
    pub audio_packets: usize,
    /// First to last video timestamp, seconds.
    pub video_span: f64,
    /// Largest step between consecutive video timestamps, seconds.
    pub worst_video_gap: f64,
    /// Video timestamps, seconds.
    pub video_pts: Vec<f64>,
}

pub fn probe(path: &Path) -> Option<Received> {
    if !path.exists() {
        return None;
    }
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=index,codec_type,codec_name:packet=stream_index,pts_time",
        ])
        .args(["-of", "compact=p=0:nk=0"])
        .arg(path)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut r = Received::default();
    // ffprobe prints packets before streams: read both, then sort packets by stream kind.
    let mut kinds = std::collections::HashMap::new();
    let mut packets = Vec::new();
    for line in text.lines() {
        let fields: std::collections::HashMap<&str, &str> = line
            .split('|')
            .filter_map(|kv| kv.split_once('='))
            .collect();
        if let (Some(kind), Some(index)) = (fields.get("codec_type"), fields.get("index")) {
            kinds.insert(index.to_string(), kind.to_string());
            let codec = fields.get("codec_name").unwrap_or(&"").to_string();
            match *kind {
                "video" => r.video_codec = codec,
                "audio" => r.audio_codec = codec,
                _ => {}
            }
        } else if let (Some(index), Some(pts)) =
            (fields.get("stream_index"), fields.get("pts_time"))
        {
            packets.push((index.to_string(), pts.parse::<f64>().ok()));
        }
    }
    for (index, pts) in packets {
        match kinds.get(&index).map(String::as_str) {
            Some("video") => r.video_pts.extend(pts),
            Some("audio") => r.audio_packets += 1,
            _ => {}
        }
    }
    r.video_frames = r.video_pts.len();
    let mut sorted = r.video_pts.clone();
    sorted.sort_by(|a, b| a.partial_cmp(b).unwrap());
    if let (Some(first), Some(last)) = (sorted.first(), sorted.last()) {
        r.video_span = last - first;
    }
    r.worst_video_gap = sorted.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max);
    Some(r)
}
