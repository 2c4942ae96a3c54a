//! MediaMTX as a plain media server on 127.0.0.1 (no hooks, no authentication): RTMP and RTSP
//! on free ports, every path open ([`super::rtmps::RtmpsServer::plain_with_rtsp`]). A source for
//! the relay that converts what publishers send (HEVC, VP9 or Opus over RTSP, as IRL encoders
//! and OBS's other outputs do) to Enhanced RTMP readers, and a destination whose streams are
//! read back over RTSP with their codecs intact.

use std::path::Path;
use std::process::{Command, Stdio};

use super::rtmps::RtmpsServer;

pub struct MediaServer {
    server: RtmpsServer,
}

impl MediaServer {
    pub fn start(dir: &Path) -> Self {
        MediaServer {
            server: RtmpsServer::plain_with_rtsp(dir),
        }
    }

    pub fn rtmp_url(&self, path: &str) -> String {
        format!("rtmp://127.0.0.1:{}/{path}", self.server.port)
    }

    pub fn rtsp_url(&self, path: &str) -> String {
        let port = self.server.rtsp_port.expect("started with RTSP");
        format!("rtsp://127.0.0.1:{port}/{path}")
    }

    pub fn log(&self) -> String {
        self.server.log()
    }

    /// The codecs of `path`'s stream as ffprobe reads them over RTSP (`(video, audio)`, empty
    /// where a kind is missing); None while nothing is published there.
    pub fn codecs(&self, path: &str) -> Option<(String, String)> {
        let out = Command::new("ffprobe")
            .args([
                "-v",
                "error",
                "-rtsp_transport",
                "tcp",
                "-rw_timeout",
                "5000000",
                "-show_entries",
                "stream=codec_type,codec_name",
                "-of",
                "csv=p=0",
            ])
            .arg(self.rtsp_url(path))
            .stdin(Stdio::null())
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        let (mut video, mut audio) = (String::new(), String::new());
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            match line.split_once(',') {
                Some((name, "video")) => video = name.to_owned(),
                Some((name, "audio")) => audio = name.to_owned(),
                _ => {}
            }
        }
        Some((video, audio))
    }
}
