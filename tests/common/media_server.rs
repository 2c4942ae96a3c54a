//! MediaMTX as a plain media server on 127.0.0.1 (no hooks, no authentication): RTMP and RTSP
//! (and SRT) on free ports, every path open. A source for the relay that converts what
//! publishers send (HEVC over RTSP or SRT, as IRL encoders do) to Enhanced RTMP readers, and a
//! destination whose streams are read back over RTSP with their codecs intact.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct MediaServer {
    pub rtmp_port: u16,
    pub rtsp_port: u16,
    pub srt_port: u16,
    log: PathBuf,
    child: Child,
}

impl MediaServer {
    pub fn start(dir: &Path) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let binary = super::mediamtx::binary(super::mediamtx::VERSION);
        let (rtmp_port, rtsp_port, srt_port) =
            (super::free_port(), super::free_port(), super::free_port());
        let config = dir.join("mediamtx.yml");
        std::fs::write(
            &config,
            format!(
                "logLevel: info\nlogDestinations: [stdout]\napi: no\nmetrics: no\npprof: no\n\
                 playback: no\nhls: no\nwebrtc: no\nmoq: no\n\
                 rtmp: yes\nrtmpAddress: 127.0.0.1:{rtmp_port}\n\
                 rtsp: yes\nrtspTransports: [tcp]\nrtspAddress: 127.0.0.1:{rtsp_port}\n\
                 srt: yes\nsrtAddress: 127.0.0.1:{srt_port}\n\
                 paths:\n  all_others:\n"
            ),
        )
        .unwrap();
        let log = dir.join("mediamtx.log");
        let child = Command::new(binary)
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .expect("start MediaMTX");
        let server = MediaServer {
            rtmp_port,
            rtsp_port,
            srt_port,
            log,
            child,
        };
        let up = super::wait_for(Duration::from_secs(10), Duration::from_millis(50), || {
            std::net::TcpStream::connect(("127.0.0.1", rtmp_port)).ok()
        });
        assert!(
            up.is_some(),
            "MediaMTX did not listen on {rtmp_port}: {}",
            server.log()
        );
        server
    }

    pub fn rtmp_url(&self, path: &str) -> String {
        format!("rtmp://127.0.0.1:{}/{path}", self.rtmp_port)
    }

    pub fn rtsp_url(&self, path: &str) -> String {
        format!("rtsp://127.0.0.1:{}/{path}", self.rtsp_port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The codecs of `path`'s stream as ffprobe reads them over RTSP (`[video, audio]`, empty
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

impl Drop for MediaServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
