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

    /// Its exit status, once it has exited (e.g. its server closed the connection).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    pub fn stop(&mut self) {
        if self.exited().is_some() {
            return;
        }
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

pub use super::probe::{probe, Received};
