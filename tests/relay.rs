//! `neustream relay` without systemd: the real binary, real ffmpeg, a real RTMP source and
//! three real RTMP destination servers (nginx + libnginx-mod-rtmp) on 127.0.0.1.

mod common;

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::media::{probe, Publisher};
use common::nginx::RtmpServer;

const KEY: &str = "relaytest01";

fn dest_key(i: usize) -> String {
    format!("SECRET-dest{i}-{}", std::process::id())
}

/// `neustream relay KEY` with the stream described in its environment, as systemd would set it.
struct Relay {
    child: Child,
    log: std::path::PathBuf,
}

impl Relay {
    fn start(source: &str, dests: &[&RtmpServer], dir: &std::path::Path) -> Relay {
        let log = dir.join("relay.log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_neustream"));
        cmd.args(["relay", KEY])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap())
            .env("NEUSTREAM_STREAM_KEY", KEY)
            .env("NEUSTREAM_SOURCE_URL", source)
            .env("NEUSTREAM_MTX_SOURCE_ID", "conn-1")
            .env("NEUSTREAM_DESTINATIONS", dests.len().to_string());
        for (i, d) in dests.iter().enumerate() {
            cmd.env(
                format!("NEUSTREAM_DEST_{i}_PLATFORM"),
                ["youtube", "twitch", "custom"][i % 3],
            )
            .env(format!("NEUSTREAM_DEST_{i}_RTMP_URL"), d.url("live/"))
            .env(format!("NEUSTREAM_DEST_{i}_STREAM_KEY"), dest_key(i));
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Relay { child, log }
    }

    fn log(&self) -> String {
        let mut text = String::new();
        std::fs::File::open(&self.log)
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        text
    }

    fn ffmpeg_pid(&self) -> Option<i32> {
        let log = self.log();
        let at = log.find("ffmpeg started (pid ")?;
        log[at + 20..].split(')').next()?.parse().ok()
    }

    /// SIGTERM, as systemd stops it; returns its exit status.
    fn terminate(&mut self) -> std::process::ExitStatus {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        common::wait_for(Duration::from_secs(10), Duration::from_millis(20), || {
            self.child.try_wait().unwrap()
        })
        .expect("relay did not exit within 10 s of SIGTERM")
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn alive(pid: i32) -> bool {
    // A zombie is gone for our purposes; /proc/PID/stat's third field is its state.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(false)
}

/// Seconds of video a destination has recorded so far.
fn recorded(server: &RtmpServer, i: usize) -> f64 {
    probe(&server.recording(&dest_key(i))).map_or(0.0, |r| r.video_span)
}

#[test]
fn relays_to_three_destinations_at_real_time_and_stops_cleanly() {
    let dir = common::scratch("relay-fanout");
    let source = RtmpServer::start(&dir.join("source"));
    let _publisher = Publisher::start(&source.url("live/src"));
    let dests: Vec<RtmpServer> = (0..3)
        .map(|i| RtmpServer::start(&dir.join(format!("d{i}"))))
        .collect();
    let mut relay = Relay::start(
        &source.url("live/src"),
        &dests.iter().collect::<Vec<_>>(),
        &dir,
    );

    // Every destination gets video within a few seconds of the relay starting.
    let started = Instant::now();
    let first = common::wait_for(Duration::from_secs(15), Duration::from_millis(200), || {
        (0..3).all(|i| recorded(&dests[i], i) > 0.5).then_some(())
    });
    assert!(
        first.is_some(),
        "not all destinations received video; relay log:\n{}",
        relay.log()
    );
    eprintln!("all destinations receiving after {:?}", started.elapsed());

    // Real time: over 10 s of wall clock each destination gains ~10 s of media.
    let before: Vec<f64> = (0..3).map(|i| recorded(&dests[i], i)).collect();
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(10));
    let wall = t0.elapsed().as_secs_f64();
    for (i, server) in dests.iter().enumerate() {
        let got = probe(&server.recording(&dest_key(i))).unwrap();
        let rate = (got.video_span - before[i]) / wall;
        assert!(
            rate > 0.95 && rate < 1.1,
            "destination {i}: media/wall rate {rate:.3}"
        );
        assert_eq!(got.video_codec, "h264", "destination {i}");
        assert_eq!(got.audio_codec, "aac", "destination {i}");
        assert!(
            got.audio_packets > 100,
            "destination {i}: {} audio packets",
            got.audio_packets
        );
        let fps = got.video_frames as f64 / got.video_span;
        assert!((fps - 30.0).abs() < 1.5, "destination {i}: {fps:.1} fps");
        assert!(
            got.worst_video_gap < 0.5,
            "destination {i}: gap {:.2}s",
            got.worst_video_gap
        );
    }

    // Stop as systemd does: the relay exits 0 and leaves no ffmpeg behind.
    let pid = relay.ffmpeg_pid().expect("relay logs its ffmpeg's pid");
    assert!(alive(pid));
    let status = relay.terminate();
    assert!(
        status.success(),
        "relay exit status {status}; log:\n{}",
        relay.log()
    );
    assert!(!alive(pid), "ffmpeg {pid} outlived the relay");

    // Destination keys appear nowhere in the relay's output, nor on ffmpeg's command line.
    let log = relay.log();
    for i in 0..3 {
        assert!(
            !log.contains(&dest_key(i)),
            "key {i} leaked into the relay log:\n{log}"
        );
    }
    assert!(
        log.contains("<redacted>"),
        "relay names destinations redacted:\n{log}"
    );
}

#[test]
fn a_failing_destination_never_interrupts_the_others_and_resumes() {
    let dir = common::scratch("relay-isolation");
    let source = RtmpServer::start(&dir.join("source"));
    let _publisher = Publisher::start(&source.url("live/src"));
    let mut dests: Vec<RtmpServer> = (0..3)
        .map(|i| RtmpServer::start(&dir.join(format!("d{i}"))))
        .collect();
    let relay = Relay::start(
        &source.url("live/src"),
        &dests.iter().collect::<Vec<_>>(),
        &dir,
    );
    let ok = common::wait_for(Duration::from_secs(15), Duration::from_millis(200), || {
        (0..3).all(|i| recorded(&dests[i], i) > 1.0).then_some(())
    });
    assert!(
        ok.is_some(),
        "destinations not receiving; relay log:\n{}",
        relay.log()
    );
    let pid = relay.ffmpeg_pid().unwrap();

    // Destination 2 goes away for 8 s.
    let port = dests[2].port;
    dests[2].stop();
    std::thread::sleep(Duration::from_secs(8));
    let back_dir = dir.join("d2-back");
    let returned = Instant::now();
    dests[2] = RtmpServer::start_on(&back_dir, port);
    let resumed = common::wait_for(Duration::from_secs(10), Duration::from_millis(100), || {
        (recorded(&dests[2], 2) > 0.5).then(|| returned.elapsed())
    });
    assert!(
        resumed.is_some(),
        "destination 2 did not resume within 10 s; log:\n{}",
        relay.log()
    );
    eprintln!(
        "destination 2 resumed {:?} after it came back",
        resumed.unwrap()
    );

    // The others never stopped receiving: no gap over 0.5 s in their recordings.
    for (i, server) in dests.iter().enumerate().take(2) {
        let got = probe(&server.recording(&dest_key(i))).unwrap();
        assert!(
            got.worst_video_gap < 0.5,
            "destination {i}: gap {:.2}s during the outage",
            got.worst_video_gap
        );
        assert!(
            got.video_span > 10.0,
            "destination {i}: only {:.1}s recorded",
            got.video_span
        );
    }
    // The same ffmpeg throughout: the failure was handled inside it, not by a restart.
    assert!(alive(pid), "ffmpeg was restarted");
    let log = relay.log();
    assert!(
        log.contains("destination 2 (custom)"),
        "failures are tied to destination 2:\n{log}"
    );
    for i in 0..3 {
        assert!(!log.contains(&dest_key(i)), "key {i} leaked:\n{log}");
    }
}

#[test]
fn missing_stream_description_is_a_configuration_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_neustream"))
        .args(["relay", KEY])
        .env_clear()
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(78),
        "EX_CONFIG stops systemd's restarts"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("NEUSTREAM_STREAM_KEY is not set"), "{err}");
    assert!(
        err.contains(&format!("/run/neustream/streams/{KEY}.env")),
        "{err}"
    );
}
