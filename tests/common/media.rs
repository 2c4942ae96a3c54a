//! The synthetic stream: a pre-encoded clip (H.264 + AAC, 2 s GOP) published in a loop at
//! real time, and ffprobe of what a destination recorded.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

/// 10 s of 640x360 30 fps H.264 (keyframe every 2 s) + 48 kHz AAC, made once per test binary.
pub fn clip() -> &'static Path {
    static CLIP: OnceLock<PathBuf> = OnceLock::new();
    CLIP.get_or_init(|| {
        super::require_tool("ffmpeg", "ffmpeg");
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        let path = dir.join("neustream-clip-640x360.flv");
        if path.exists() {
            return path;
        }
        let tmp = dir.join(format!("neustream-clip.{}.tmp.flv", std::process::id()));
        let status = Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-y"])
            .args(["-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30"])
            .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
            .args([
                "-t", "10", "-c:v", "libx264", "-preset", "veryfast", "-b:v", "1500k",
            ])
            .args([
                "-g",
                "60",
                "-keyint_min",
                "60",
                "-sc_threshold",
                "0",
                "-pix_fmt",
                "yuv420p",
            ])
            .args(["-c:a", "aac", "-b:a", "128k", "-f", "flv"])
            .arg(&tmp)
            .status()
            .expect("run ffmpeg");
        assert!(status.success(), "could not encode the test clip");
        std::fs::rename(&tmp, &path).unwrap();
        path
    })
}

/// `ffmpeg -re -stream_loop -1 -c copy` of the clip to `url`; stopped on drop.
pub struct Publisher {
    child: Child,
}

impl Publisher {
    pub fn start(url: &str) -> Self {
        let child = Command::new("ffmpeg")
            .args([
                "-hide_banner",
                "-loglevel",
                "error",
                "-nostdin",
                "-re",
                "-stream_loop",
                "-1",
                "-i",
            ])
            .arg(clip())
            .args(["-c", "copy", "-f", "flv", url])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the publisher");
        Publisher { child }
    }

    pub fn stop(&mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let done = super::wait_for(Duration::from_secs(5), Duration::from_millis(20), || {
            self.child.try_wait().ok().flatten()
        });
        if done.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A live encode (ffmpeg's test pattern and a tone, real time) to `url` in the given codecs,
/// e.g. `["-c:v", "libx265", ...]` and `-f rtsp`: publishers of codecs the clip does not have.
/// Stopped on drop.
pub fn encode(codec_args: &[&str], format: &str, url: &str) -> Publisher {
    let child = Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-nostdin",
            "-re",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x240:rate=30",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=48000",
            "-ac",
            "2",
        ])
        .args(codec_args)
        .args(["-f", format])
        .args(if format == "rtsp" {
            &["-rtsp_transport", "tcp"][..]
        } else {
            &[][..]
        })
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the encoder");
    Publisher { child }
}

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
