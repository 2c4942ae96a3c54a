//! A real MediaMTX with its hooks in a test machine, the Control Plane double and three
//! nginx-rtmp destinations: the scene of the MediaMTX tests (tests/mediamtx.rs) and of the
//! durability tests (tests/durable.rs).

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::control_plane_double::ControlPlaneDouble;
use super::machine::Options;
use super::media::{probe, Publisher};
use super::mediamtx::{ms, Feed, HookNames, Ingest};
use super::nginx::RtmpServer;

pub const STREAM_END: &str = "/api/auth/stream-end";
pub const AUTH: &str = "/api/auth/stream";

/// One scenario at a time: each carries real-time streams, and (b) measures a latency.
pub fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// MediaMTX with its hooks, the Control Plane double and three destination servers.
pub struct Scene {
    /// Dropped first: the machine halts (MediaMTX, hooks, relays) before the servers go.
    pub ingest: Ingest,
    pub cp: ControlPlaneDouble,
    pub dests: Vec<RtmpServer>,
    pub dir: std::path::PathBuf,
    _serial: MutexGuard<'static, ()>,
}

impl Scene {
    pub fn start(label: &str, version: &str, names: HookNames) -> Scene {
        Self::start_with(label, version, names, Options::default())
    }

    /// Like `start`, with more units, drop-ins or a persistent state directory.
    pub fn start_with(label: &str, version: &str, names: HookNames, options: Options) -> Scene {
        Self::start_as(label, version, names, options, super::mediamtx::UNIT)
    }

    /// Like `start_with`, MediaMTX run as `unit` (a copy of the shipped mediamtx.service).
    pub fn start_as(
        label: &str,
        version: &str,
        names: HookNames,
        options: Options,
        unit: &str,
    ) -> Scene {
        Self::build(label, |_, cp_url| {
            Ingest::start_as(label, version, names, cp_url, options, unit)
        })
    }

    /// Like `start` (the MediaMTX release under test), with RTMPS offered as mediamtx.yml says,
    /// with a test certificate for 127.0.0.1 signed by a test CA (`<dir>/certs/ca.crt`).
    pub fn start_rtmps(label: &str) -> Scene {
        Self::build(label, |dir, cp_url| {
            let certs = super::rtmps::make_certs(&dir.join("certs"));
            Ingest::start_rtmps(label, cp_url, &certs.good)
        })
    }

    fn build(label: &str, ingest: impl FnOnce(&std::path::Path, &str) -> Ingest) -> Scene {
        let serial = serial();
        let dir = super::scratch(&format!("mediamtx-{label}"));
        let dests = (0..3)
            .map(|i| RtmpServer::start(&dir.join(format!("dest{i}"))))
            .collect();
        let cp = ControlPlaneDouble::start();
        let ingest = ingest(&dir, &cp.url());
        Scene {
            ingest,
            cp,
            dests,
            dir,
            _serial: serial,
        }
    }

    /// A valid stream key at the double, with one destination on each server.
    pub fn add_stream(&self, key: &str) {
        let urls: Vec<String> = self.dests.iter().map(|d| d.url("live")).collect();
        let keys: Vec<String> = (0..3).map(|i| dest_key(key, i)).collect();
        let platforms = ["youtube", "twitch", "custom"];
        let list: Vec<(&str, &str, &str)> = (0..3)
            .map(|i| (platforms[i], urls[i].as_str(), keys[i].as_str()))
            .collect();
        self.cp.add_stream(key, &list);
    }

    pub fn publish(&self, key: &str, tag: &str) -> Feed {
        Feed::start(
            &self.ingest.publish_url(key),
            &self.dir.join(format!("publisher-{key}-{tag}.log")),
        )
    }

    /// A live H.264 + AAC encode published over SRT to live/<key>, as OBS's SRT output or an IRL
    /// encoder set to AAC sends it (MPEG-TS; ffmpeg's own default audio there would be MP2).
    pub fn publish_srt(&self, key: &str) -> Publisher {
        self.publish_srt_audio(key, "aac")
    }

    /// Like `publish_srt`, with audio in `codec` (`mp2`: what ffmpeg sends in MPEG-TS unless
    /// told otherwise).
    pub fn publish_srt_audio(&self, key: &str, codec: &str) -> Publisher {
        super::media::encode(
            &[
                "-c:v",
                "libx264",
                "-preset",
                "veryfast",
                "-tune",
                "zerolatency",
                "-g",
                "30",
                "-pix_fmt",
                "yuv420p",
                "-c:a",
                codec,
                "-b:a",
                "96k",
            ],
            "mpegts",
            &self.ingest.srt_url(key),
        )
    }

    /// The clip published over RTMPS (as OBS with an rtmps:// server), not verifying the
    /// certificate (ffmpeg's default).
    pub fn publish_rtmps(&self, key: &str, tag: &str) -> Feed {
        Feed::start(
            &self.ingest.rtmps_url(key),
            &self.dir.join(format!("publisher-{key}-{tag}.log")),
        )
    }

    /// Video frames each destination has recorded of `key`.
    pub fn frames(&self, key: &str) -> Vec<usize> {
        self.dests
            .iter()
            .enumerate()
            .map(|(i, d)| probe(&d.recording(&dest_key(key, i))).map_or(0, |r| r.video_frames))
            .collect()
    }

    /// Waits until every destination got `more` video frames of `key` beyond `base`.
    pub fn wait_receiving(&self, key: &str, base: &[usize], more: usize) -> Duration {
        let start = Instant::now();
        let got = super::wait_for(Duration::from_secs(30), ms(250), || {
            let now = self.frames(key);
            now.iter()
                .zip(base)
                .all(|(n, b)| *n >= b + more)
                .then_some(())
        });
        assert!(
            got.is_some(),
            "destinations of {key} did not get {more} new frames within 30 s: before {base:?}, \
             now {:?}\n{}\n{}",
            self.frames(key),
            self.ingest.log(),
            self.relay_log(key)
        );
        start.elapsed()
    }

    /// The relay unit of `key` ("-" escaped as systemd does; test keys use no other escapes).
    pub fn unit(key: &str) -> String {
        format!("neustream-relay@{}.service", key.replace('-', "\\x2d"))
    }

    pub fn relay_log(&self, key: &str) -> String {
        self.ingest
            .machine
            .journal(&["-u", &Self::unit(key), "-o", "short-monotonic"])
    }

    pub fn relay(&self, key: &str, props: &[&str]) -> std::collections::HashMap<String, String> {
        self.ingest.machine.show(&Self::unit(key), props)
    }

    pub fn wait_relay(&self, key: &str, state: &str, timeout: Duration) {
        assert!(
            self.ingest
                .machine
                .wait_state(&Self::unit(key), state, timeout),
            "{} not {state} within {timeout:?}: {:?}\n{}\n{}",
            Self::unit(key),
            self.relay(key, &["ActiveState", "Result"]),
            self.ingest.log(),
            self.relay_log(key)
        );
    }

    /// Sets the reconnect grace the hooks write into each new stream's env file (they read the
    /// settings file at every run; the harness starts with it off).
    pub fn set_grace(&self, grace: &str) {
        self.ingest.machine.ok(&[
            "sed",
            "-i",
            &format!("s/^NEUSTREAM_RECONNECT_GRACE=.*$/NEUSTREAM_RECONNECT_GRACE={grace}/"),
            "/etc/neustream/neustream.env",
        ]);
    }

    /// Waits until a publisher other than `old_id` owns `key`'s stream (its `ready` wrote the
    /// env file); its id.
    pub fn wait_new_owner(&self, key: &str, old_id: &str) -> String {
        super::wait_for(Duration::from_secs(20), ms(100), || {
            self.ingest
                .env_var(key, "NEUSTREAM_MTX_SOURCE_ID")
                .filter(|id| id != old_id)
        })
        .unwrap_or_else(|| panic!("the new publisher never took over\n{}", self.ingest.log()))
    }

    /// The one publisher MediaMTX has on live/<key> (waits for it).
    pub fn publisher_id(&self, key: &str) -> String {
        let id = super::wait_for(Duration::from_secs(10), ms(50), || {
            let ids = self.ingest.publishers(key);
            (ids.len() == 1).then(|| ids[0].clone())
        });
        id.unwrap_or_else(|| panic!("no publisher on live/{key}\n{}", self.ingest.log()))
    }

    /// Auth and stream-end requests of `key` at the double, in order ("auth", "end").
    pub fn sessions(&self, key: &str) -> Vec<&'static str> {
        let form = format!("name={key}");
        self.cp
            .requests()
            .iter()
            .filter(|r| r.method == "POST" && r.body == form)
            .filter_map(|r| match r.path.as_str() {
                AUTH => Some("auth"),
                STREAM_END => Some("end"),
                _ => None,
            })
            .collect()
    }

    /// No MediaMTX warning at all (configuration ones included), unless `expected`.
    pub fn assert_no_warnings(&self, expected: &[&str]) {
        let warnings = self.ingest.warnings();
        let unexpected: Vec<&String> = warnings
            .iter()
            .filter(|w| !expected.iter().any(|e| w.contains(e)))
            .collect();
        assert!(
            unexpected.is_empty(),
            "MediaMTX {} warned:\n{unexpected:#?}",
            self.ingest.version
        );
        for e in expected {
            assert!(
                warnings.iter().any(|w| w.contains(e)),
                "expected warning '{e}' missing: {warnings:#?}"
            );
        }
    }
}

pub fn dest_key(key: &str, i: usize) -> String {
    format!("{key}_dest{i}")
}
