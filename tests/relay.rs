//! `neustream relay` without systemd: the real binary, real ffmpeg, a real RTMP source and
//! real RTMP destination servers (nginx + libnginx-mod-rtmp; MediaMTX for RTMPS) on 127.0.0.1.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::arrivals::{self, worst_gap, Watcher};
use common::media::{probe, Publisher};
use common::media_server::MediaServer;
use common::nginx::RtmpServer;
use common::publish_hooks::PublishHooks;

const KEY: &str = "relaytest01";

fn dest_key(i: usize) -> String {
    format!("SECRET-dest{i}-{}", std::process::id())
}

/// One destination as the env file describes it: platform, server URL, key.
type Dest = (&'static str, String, String);

fn nginx_dest(i: usize, server: &RtmpServer) -> Dest {
    (
        ["youtube", "twitch", "custom"][i % 3],
        server.url("live/"),
        dest_key(i),
    )
}

/// `neustream relay KEY` with the stream described in its environment, as systemd would set it.
struct Relay {
    child: Child,
    log: PathBuf,
    state_dir: PathBuf,
}

impl Relay {
    fn start(source: &str, dests: &[Dest], dir: &Path) -> Relay {
        Self::start_with(source, dests, dir, &[])
    }

    fn start_with(source: &str, dests: &[Dest], dir: &Path, extra: &[(&str, &str)]) -> Relay {
        let log = dir.join("relay.log");
        let state_dir = dir.join("state");
        std::fs::create_dir_all(&state_dir).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_neustream"));
        cmd.args(["relay", KEY])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap())
            .env("NEUSTREAM_STREAM_KEY", KEY)
            .env("NEUSTREAM_SOURCE_URL", source)
            .env("NEUSTREAM_MTX_SOURCE_ID", "conn-1")
            .env("NEUSTREAM_RELAY_STATE_DIR", &state_dir)
            .env("NEUSTREAM_DESTINATIONS", dests.len().to_string());
        for (i, (platform, url, key)) in dests.iter().enumerate() {
            cmd.env(format!("NEUSTREAM_DEST_{i}_PLATFORM"), platform)
                .env(format!("NEUSTREAM_DEST_{i}_RTMP_URL"), url)
                .env(format!("NEUSTREAM_DEST_{i}_STREAM_KEY"), key);
        }
        cmd.envs(extra.iter().copied());
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Relay {
            child,
            log,
            state_dir,
        }
    }

    fn log(&self) -> String {
        let mut text = String::new();
        std::fs::File::open(&self.log)
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        text
    }

    /// The ffmpeg processes the relay runs (its children).
    fn ffmpegs(&self) -> Vec<i32> {
        children(self.child.id() as i32)
            .into_iter()
            .filter(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .is_ok_and(|c| c.trim() == "ffmpeg")
            })
            .collect()
    }

    fn state(&self) -> serde_json::Value {
        let text = std::fs::read_to_string(self.state_dir.join("state.json")).unwrap_or_default();
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null)
    }

    fn state_text(&self) -> String {
        std::fs::read_to_string(self.state_dir.join("state.json")).unwrap_or_default()
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
        let pids = self.ffmpegs();
        let _ = self.child.kill();
        let _ = self.child.wait();
        for pid in pids {
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

fn children(pid: i32) -> Vec<i32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|c| {
            c.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<i32>>()
        })
        .collect()
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

fn assert_no_keys(text: &str, keys: &[String], what: &str) {
    for k in keys {
        assert!(
            !text.contains(k.as_str()),
            "a destination key leaked into {what}:\n{text}"
        );
    }
}

#[test]
fn relays_to_three_destinations_at_real_time_and_stops_cleanly() {
    fan_out("native");
}

/// The fallback engine (`NEUSTREAM_RTMP_ENGINE=ffmpeg`) end to end: the same stream, the same
/// state, the same clean stop, with one source ffmpeg and one per destination.
#[test]
fn the_ffmpeg_engine_relays_to_three_destinations_and_stops_cleanly() {
    fan_out("ffmpeg");
}

fn fan_out(engine: &str) {
    let dir = common::scratch(&format!("relay-fanout-{engine}"));
    let source = RtmpServer::start(&dir.join("source"));
    let _publisher = Publisher::start(&source.url("live/src"));
    let servers: Vec<RtmpServer> = (0..3)
        .map(|i| RtmpServer::start(&dir.join(format!("d{i}"))))
        .collect();
    let dests: Vec<Dest> = servers
        .iter()
        .enumerate()
        .map(|(i, s)| nginx_dest(i, s))
        .collect();
    let mut relay = Relay::start_with(
        &source.url("live/src"),
        &dests,
        &dir,
        &[("NEUSTREAM_RTMP_ENGINE", engine)],
    );

    // Every destination gets video within a few seconds of the relay starting.
    let started = Instant::now();
    let first = common::wait_for(Duration::from_secs(15), Duration::from_millis(200), || {
        (0..3).all(|i| recorded(&servers[i], i) > 0.5).then_some(())
    });
    assert!(
        first.is_some(),
        "not all destinations received video; relay log:\n{}",
        relay.log()
    );
    eprintln!("all destinations receiving after {:?}", started.elapsed());

    // Real time: over 10 s of wall clock each destination gains ~10 s of media.
    let before: Vec<f64> = (0..3).map(|i| recorded(&servers[i], i)).collect();
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(10));
    let wall = t0.elapsed().as_secs_f64();
    for (i, server) in servers.iter().enumerate() {
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
        let pts = &got.video_pts;
        assert!(
            pts.windows(2).all(|w| w[1] + 0.2 >= w[0]),
            "destination {i}: timestamps go backwards"
        );
    }

    // The native engine is this one process; the ffmpeg engine runs one source ffmpeg and
    // one per destination. The state file says every destination is live.
    let ffmpegs = relay.ffmpegs();
    if engine == "native" {
        assert_eq!(
            ffmpegs,
            Vec::<i32>::new(),
            "no ffmpeg with the native engine"
        );
    } else {
        assert_eq!(ffmpegs.len(), 4, "1 source + 3 destinations: {ffmpegs:?}");
    }
    let state = relay.state();
    assert_eq!(state["stream"], KEY, "{state}");
    assert_eq!(state["source"]["state"], "live", "{state}");
    for i in 0..3 {
        let d = &state["destinations"][i];
        assert_eq!(d["state"], "live", "destination {i}: {state}");
        assert_eq!(d["attempts"], 1, "destination {i}: {state}");
        assert!(
            d["bytes"].as_u64().unwrap() > 1_000_000,
            "destination {i}: {state}"
        );
        let bitrate = d["bitrate"].as_u64().unwrap();
        assert!(
            (1_000_000..3_000_000).contains(&bitrate),
            "destination {i}: the clip is ~1.6 Mb/s: {state}"
        );
        if engine == "native" {
            // The relay's own socket: what the server acknowledged, and RTMP's framing
            // (4096-byte chunks) costs no more than FLV's tag headers did.
            let media = d["bytes"].as_f64().unwrap();
            let sent = d["tcp"]["bytes_sent"].as_f64().unwrap_or(0.0);
            let acked = d["tcp"]["bytes_acked"].as_f64().unwrap_or(0.0);
            assert!(
                sent > 0.9 * media && sent < 1.02 * media,
                "destination {i}: {sent} bytes on the socket for {media} media bytes: {state}"
            );
            assert!(acked > 0.5 * media, "destination {i}: {state}");
        }
    }

    // Stop as systemd does: the relay exits 0, closes every destination cleanly and leaves
    // no ffmpeg behind.
    let status = relay.terminate();
    assert!(
        status.success(),
        "relay exit status {status}; log:\n{}",
        relay.log()
    );
    for pid in ffmpegs {
        assert!(!alive(pid), "ffmpeg {pid} outlived the relay");
    }
    let log = relay.log();
    for (i, (platform, _, _)) in dests.iter().enumerate() {
        assert!(
            log.contains(&format!("destination {i} ({platform}) closed cleanly")),
            "destination {i} not closed cleanly:\n{log}"
        );
    }
    // Destination keys appear nowhere in the relay's output, nor in its state.
    let keys: Vec<String> = (0..3).map(dest_key).collect();
    assert_no_keys(&log, &keys, "the relay log");
    assert_no_keys(&relay.state_text(), &keys, "the state file");
    assert!(
        log.contains("<redacted>"),
        "relay names destinations redacted:\n{log}"
    );
}

#[test]
fn a_destination_that_restarts_is_back_at_once_and_the_others_never_notice() {
    let dir = common::scratch("relay-isolation");
    let source = RtmpServer::start(&dir.join("source"));
    let _publisher = Publisher::start(&source.url("live/src"));
    let mut servers: Vec<RtmpServer> = (0..3)
        .map(|i| RtmpServer::start(&dir.join(format!("d{i}"))))
        .collect();
    let dests: Vec<Dest> = servers
        .iter()
        .enumerate()
        .map(|(i, s)| nginx_dest(i, s))
        .collect();
    let relay = Relay::start(&source.url("live/src"), &dests, &dir);
    // Long enough for the drop to be a drop, not a refusal (output.rs: REFUSED_WITHIN).
    let ok = common::wait_for(Duration::from_secs(20), Duration::from_millis(200), || {
        (0..3).all(|i| recorded(&servers[i], i) > 5.0).then_some(())
    });
    assert!(
        ok.is_some(),
        "destinations not receiving; relay log:\n{}",
        relay.log()
    );
    let watcher = Watcher::start(Duration::from_millis(5));
    for (i, server) in servers.iter().enumerate().take(2) {
        watcher.watch(&i.to_string(), &server.recording(&dest_key(i)));
    }

    // Destination 2 goes away for 8 s.
    let port = servers[2].port;
    let down = arrivals::now();
    servers[2].stop();
    std::thread::sleep(Duration::from_millis(500));
    let state = relay.state();
    assert_eq!(state["destinations"][2]["state"], "retrying", "{state}");
    std::thread::sleep(Duration::from_millis(7500));
    let back_dir = dir.join("d2-back");
    watcher.watch(
        "2",
        &back_dir.join("rec").join(format!("{}.flv", dest_key(2))),
    );
    servers[2] = RtmpServer::start_on(&back_dir, port);
    // start_on returns once the port accepts connections (polled every 50 ms).
    let accepting = arrivals::now();
    let key = common::wait_for(Duration::from_secs(10), Duration::from_millis(20), || {
        watcher.first_key("2")
    });
    let Some(key) = key else {
        panic!(
            "destination 2 got no keyframe within 10 s; log:\n{}",
            relay.log()
        );
    };
    let recovery = key - accepting;
    eprintln!("destination 2: first keyframe {recovery:.3} s after it accepted connections");
    assert!(
        recovery < 0.5,
        "destination 2 took {recovery:.3} s to get a keyframe (GOP cache); log:\n{}",
        relay.log()
    );
    std::thread::sleep(Duration::from_secs(2));

    // The others never stopped receiving, through the same connections (one attempt each).
    let end = arrivals::now();
    let state = relay.state();
    for i in 0..2 {
        let gap = worst_gap(&watcher.frames(&i.to_string()), down, end);
        assert!(
            gap < 0.5,
            "destination {i}: gap {gap:.2}s during the outage"
        );
        assert_eq!(
            state["destinations"][i]["attempts"], 1,
            "destination {i} reconnected: {state}"
        );
    }
    assert_eq!(state["destinations"][2]["state"], "live", "{state}");
    assert_eq!(
        state["destinations"][2]["last_error"], "unreachable",
        "{state}"
    );
    assert_eq!(state["destinations"][0]["attempts"], 1, "{state}");
    let log = relay.log();
    assert!(
        log.contains("destination 2 (custom) dropped the connection"),
        "the drop is tied to destination 2:\n{log}"
    );
    assert!(
        log.contains("destination 2 (custom) accepts connections again"),
        "{log}"
    );
    assert_no_keys(
        &log,
        &(0..3).map(dest_key).collect::<Vec<_>>(),
        "the relay log",
    );
}

#[test]
fn a_refusing_destination_is_retried_with_backoff_while_the_others_stream() {
    let dir = common::scratch("relay-refused");
    let source = RtmpServer::start(&dir.join("source"));
    let _publisher = Publisher::start(&source.url("live/src"));
    let hooks = PublishHooks::start();
    hooks.refuse(true);
    let good = RtmpServer::start(&dir.join("d0"));
    let refusing =
        RtmpServer::start_notifying(&dir.join("d1"), common::free_port(), Some(&hooks.url));
    let dests = vec![nginx_dest(0, &good), nginx_dest(1, &refusing)];
    let relay = Relay::start(&source.url("live/src"), &dests, &dir);
    let watcher = Watcher::start(Duration::from_millis(10));
    watcher.watch("0", &good.recording(&dest_key(0)));

    let first = common::wait_for(Duration::from_secs(15), Duration::from_millis(50), || {
        hooks.calls("publish", &dest_key(1)).first().map(|c| c.at)
    })
    .expect("the refusing destination was never tried");
    let from = arrivals::now();
    std::thread::sleep(Duration::from_secs(60).saturating_sub(first.elapsed()));
    let to = arrivals::now();
    let calls = hooks.calls("publish", &dest_key(1));
    let within: Vec<f64> = calls
        .iter()
        .filter(|c| c.at.duration_since(first) <= Duration::from_secs(60))
        .map(|c| c.at.duration_since(first).as_secs_f64())
        .collect();
    eprintln!("publish attempts at the refusing destination (s after the first): {within:.1?}");
    assert!(within.len() >= 5, "too few attempts: {within:?}");
    assert!(
        within.len() <= 8,
        "more than 8 attempts in 60 s: {within:?}"
    );
    assert!(within[1] <= 2.0, "first retry after {:.2} s", within[1]);
    for w in within.windows(2).skip(1) {
        assert!(w[1] - w[0] >= 0.4, "retries too close: {within:?}");
    }
    // The other destination streamed throughout.
    let gap = worst_gap(&watcher.frames("0"), from, to);
    assert!(gap < 0.5, "destination 0: gap {gap:.2}s");
    let state = relay.state();
    let d1 = &state["destinations"][1];
    assert_eq!(d1["last_error"], "refused", "{state}");
    assert!(
        d1["state"] == "retrying" || d1["state"] == "connecting",
        "{state}"
    );
    assert_eq!(state["destinations"][0]["state"], "live", "{state}");
    let log = relay.log();
    assert!(
        log.contains("destination 1 (twitch) refused the publish"),
        "{log}"
    );
    assert_no_keys(&log, &[dest_key(0), dest_key(1)], "the relay log");

    // The streamer fixes the key: at the next attempt it is accepted.
    hooks.refuse(false);
    let live = common::wait_for(Duration::from_secs(35), Duration::from_millis(200), || {
        (relay.state()["destinations"][1]["state"] == "live").then_some(())
    });
    assert!(
        live.is_some(),
        "destination 1 never went live: {}",
        relay.state()
    );
}

#[test]
fn a_slow_destination_never_stalls_the_others() {
    let dir = common::scratch("relay-slow");
    let source = RtmpServer::start(&dir.join("source"));
    let _publisher = Publisher::start(&source.url("live/src"));
    let servers: Vec<RtmpServer> = (0..3)
        .map(|i| RtmpServer::start(&dir.join(format!("d{i}"))))
        .collect();
    // Destination 1 takes 20 kB/s of a ~200 kB/s stream.
    let slow = common::slow_link::SlowLink::start(servers[1].port, 20_000);
    let mut dests: Vec<Dest> = servers
        .iter()
        .enumerate()
        .map(|(i, s)| nginx_dest(i, s))
        .collect();
    dests[1].1 = format!("rtmp://127.0.0.1:{}/live/", slow.port);
    let relay = Relay::start(&source.url("live/src"), &dests, &dir);
    let watcher = Watcher::start(Duration::from_millis(10));
    for i in [0, 2] {
        watcher.watch(&i.to_string(), &servers[i].recording(&dest_key(i)));
    }
    let ok = common::wait_for(Duration::from_secs(15), Duration::from_millis(100), || {
        watcher.first_key("0").and(watcher.first_key("2"))
    });
    assert!(ok.is_some(), "no video; log:\n{}", relay.log());
    let from = arrivals::now();
    let dropped = common::wait_for(Duration::from_secs(60), Duration::from_millis(200), || {
        relay
            .log()
            .contains("destination 1 is not keeping up")
            .then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    let to = arrivals::now();
    assert!(
        dropped.is_some(),
        "the slow destination's queue never overflowed; log:\n{}",
        relay.log()
    );
    for i in [0, 2] {
        let frames = watcher.frames(&i.to_string());
        let gap = worst_gap(&frames, from, to);
        assert!(
            gap < 0.5,
            "destination {i}: gap {gap:.2}s while destination 1 was slow"
        );
        let count = frames
            .iter()
            .filter(|f| f.wall >= from && f.wall <= to)
            .count() as f64;
        let fps = count / (to - from);
        assert!(fps > 28.0, "destination {i}: {fps:.1} frames/s");
    }
    let state = relay.state();
    assert!(
        state["destinations"][1]["queue_overflows"]
            .as_u64()
            .unwrap()
            >= 1,
        "{state}"
    );
}

#[test]
fn rtmps_destinations_are_verified_and_keys_never_reach_an_unverified_server() {
    let dir = common::scratch("relay-tls");
    let certs = common::rtmps::make_certs(&dir.join("certs"));
    let source = RtmpServer::start(&dir.join("source"));
    let _publisher = Publisher::start(&source.url("live/src"));
    use common::rtmps::RtmpsServer;
    let self_signed = RtmpsServer::start(&dir.join("self"), &certs.self_signed);
    let good = RtmpsServer::start(&dir.join("good"), &certs.good);
    let wrong_name = RtmpsServer::start(&dir.join("wrong"), &certs.wrong_name);
    let servers = [&self_signed, &good, &wrong_name];
    let dests: Vec<Dest> = servers
        .iter()
        .enumerate()
        .map(|(i, s)| {
            (
                "facebook",
                format!("rtmps://127.0.0.1:{}/live", s.port),
                dest_key(i),
            )
        })
        .collect();
    let ca = certs.ca.to_str().unwrap();
    let mut relay = Relay::start_with(
        &source.url("live/src"),
        &dests,
        &dir,
        &[("NEUSTREAM_CA_FILE", ca)],
    );
    let path = |i: usize| format!("live/{}", dest_key(i));
    let received = common::wait_for(Duration::from_secs(15), Duration::from_millis(100), || {
        good.saw_publish(&path(1)).then_some(())
    });
    assert!(
        received.is_some(),
        "the verified server got nothing; log:\n{}\n{}",
        relay.log(),
        good.log()
    );
    // Both refused servers have had several attempts by now.
    std::thread::sleep(Duration::from_secs(4));
    for (i, server) in [(0, &self_signed), (2, &wrong_name)] {
        assert!(
            !server.saw_publish(&path(i)),
            "server {i} is not verifiable but saw the publish:\n{}",
            server.log()
        );
        assert!(
            !server.log().contains(&dest_key(i)),
            "server {i} saw the key:\n{}",
            server.log()
        );
    }
    let state = relay.state();
    assert_eq!(
        state["destinations"][0]["last_error"], "certificate",
        "{state}"
    );
    assert_eq!(
        state["destinations"][2]["last_error"], "certificate",
        "{state}"
    );
    assert_eq!(state["destinations"][1]["state"], "live", "{state}");
    let log = relay.log();
    for i in [0, 2] {
        assert!(
            log.contains(&format!(
                "destination {i} (facebook) presented a TLS certificate"
            )),
            "{log}"
        );
    }
    assert!(relay.terminate().success());

    // Without NEUSTREAM_CA_FILE, the system's CA store does not know the test CA either.
    let dir2 = dir.join("default-ca");
    std::fs::create_dir_all(&dir2).unwrap();
    let mut relay = Relay::start(&source.url("live/src"), &dests[1..2], &dir2);
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(
        relay.state()["destinations"][0]["last_error"],
        "certificate",
        "{}",
        relay.state()
    );
    assert!(relay.terminate().success());

    // Verification off, explicitly: the self-signed server gets the stream, and the relay
    // warns at start.
    let dir3 = dir.join("verify-off");
    std::fs::create_dir_all(&dir3).unwrap();
    let mut relay = Relay::start_with(
        &source.url("live/src"),
        &dests[0..1],
        &dir3,
        &[("NEUSTREAM_TLS_VERIFY", "false")],
    );
    let received = common::wait_for(Duration::from_secs(15), Duration::from_millis(100), || {
        self_signed.saw_publish(&path(0)).then_some(())
    });
    assert!(received.is_some(), "{}", relay.log());
    assert!(
        relay.log().contains("NEUSTREAM_TLS_VERIFY=false: the TLS certificates of rtmps:// destinations are NOT verified"),
        "{}",
        relay.log()
    );
    assert!(relay.terminate().success());
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

/// What a test stream is, and what each destination should make of it.
struct CodecCase {
    label: &'static str,
    encoder: &'static [&'static str],
    /// As ffprobe names them at the `custom` destination.
    expect: (&'static str, &'static str),
    /// The state file's reason for the `twitch` destination.
    twitch_reason: &'static str,
}

/// A stream in codecs other than H.264/AAC, published to MediaMTX over RTSP (as IRL encoders
/// and OBS's other outputs do): the native engine asks MediaMTX for every codec (Enhanced RTMP),
/// so a `custom` destination (a MediaMTX) receives the same codecs with audio, byte for byte;
/// a `twitch` destination (nginx-rtmp, H.264/AAC only) is `incompatible`, with the reason, and
/// never sees a publish.
fn codecs_reach_custom_and_twitch_is_told(case: CodecCase) {
    let dir = common::scratch(&format!("relay-{}", case.label));
    let server = MediaServer::start(&dir.join("mediamtx"));
    let hooks = PublishHooks::start();
    let twitch =
        RtmpServer::start_notifying(&dir.join("twitch"), common::free_port(), Some(&hooks.url));
    let _publisher = common::media::encode(case.encoder, "rtsp", &server.rtsp_url("live/src"));
    let published = common::wait_for(Duration::from_secs(15), Duration::from_millis(250), || {
        server.codecs("live/src")
    });
    let expect = (case.expect.0.to_owned(), case.expect.1.to_owned());
    assert_eq!(
        published.as_ref(),
        Some(&expect),
        "the publisher; MediaMTX log:\n{}",
        server.log()
    );
    let dests: Vec<Dest> = vec![
        ("custom", server.rtmp_url("live/"), dest_key(0)),
        ("twitch", twitch.url("live/"), dest_key(1)),
    ];
    let relay = Relay::start(&server.rtmp_url("live/src"), &dests, &dir);
    let got = common::wait_for(Duration::from_secs(20), Duration::from_millis(500), || {
        server
            .codecs(&format!("live/{}", dest_key(0)))
            .filter(|(v, a)| !v.is_empty() && !a.is_empty())
    });
    assert_eq!(
        got,
        Some(expect),
        "the custom destination's stream; relay log:\n{}\nMediaMTX log:\n{}",
        relay.log(),
        server.log()
    );
    assert!(
        !server.log().contains("skipping track"),
        "MediaMTX skipped a track for the relay:\n{}",
        server.log()
    );
    let state = relay.state();
    assert_eq!(state["destinations"][0]["state"], "live", "{state}");
    let twitch_state = &state["destinations"][1];
    assert_eq!(twitch_state["state"], "incompatible", "{state}");
    assert_eq!(twitch_state["reason"], case.twitch_reason, "{state}");
    assert_eq!(twitch_state["attempts"], 0, "{state}");
    // One journal line says it, and the twitch server never saw a publish.
    std::thread::sleep(Duration::from_secs(2));
    let log = relay.log();
    assert_eq!(
        log.matches("destination 1 (twitch) is not sent the stream")
            .count(),
        1,
        "{log}"
    );
    assert!(log.contains(case.twitch_reason), "{log}");
    assert!(
        hooks.calls("publish", &dest_key(1)).is_empty(),
        "twitch saw a publish"
    );
    assert_no_keys(&log, &[dest_key(0), dest_key(1)], "the relay log");
}

#[test]
fn an_hevc_stream_reaches_a_destination_as_hevc_with_audio() {
    codecs_reach_custom_and_twitch_is_told(CodecCase {
        label: "hevc",
        encoder: &[
            "-c:v",
            "libx265",
            "-preset",
            "ultrafast",
            "-x265-params",
            "keyint=30:log-level=error",
            "-b:v",
            "300k",
            "-c:a",
            "aac",
        ],
        expect: ("hevc", "aac"),
        twitch_reason: "twitch takes H.264 only; the stream is HEVC",
    });
}

/// VP9 (Debian's ffmpeg 5.1 encodes AV1 too, but carries it neither over RTSP (no clock rate
/// in its SDP) nor in MPEG-TS, so no AV1 stream reaches MediaMTX from it; AV1 frames are
/// covered by the unit tests of `codec.rs` and `shape.rs`).
#[test]
fn a_vp9_stream_reaches_a_destination_as_vp9_with_audio() {
    codecs_reach_custom_and_twitch_is_told(CodecCase {
        label: "vp9",
        encoder: &[
            // ffmpeg 5.1's RTP packetizer for VP9 is marked experimental.
            "-strict",
            "experimental",
            "-c:v",
            "libvpx-vp9",
            "-deadline",
            "realtime",
            "-cpu-used",
            "8",
            "-g",
            "30",
            "-b:v",
            "300k",
            "-c:a",
            "aac",
        ],
        expect: ("vp9", "aac"),
        twitch_reason: "twitch takes H.264 only; the stream is VP9",
    });
}

#[test]
fn an_opus_stream_reaches_a_custom_destination_and_not_twitch() {
    codecs_reach_custom_and_twitch_is_told(CodecCase {
        label: "opus",
        encoder: &[
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-g",
            "30",
            "-b:v",
            "300k",
            "-c:a",
            "libopus",
        ],
        expect: ("h264", "opus"),
        twitch_reason: "twitch takes AAC audio only; the stream's audio is Opus",
    });
}

/// The stream's own shape, read from its headers without decoding, as `neustream status
/// --json` shows it: what the encoder was told (1280x720, 30 fps, AAC 48000 Hz stereo).
#[test]
fn neustream_status_shows_the_streams_shape() {
    let dir = common::scratch("relay-shape");
    let source = RtmpServer::start(&dir.join("source"));
    let server = RtmpServer::start(&dir.join("d0"));
    let _publisher = common::media::encode(
        &[
            "-s",
            "1280x720",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-g",
            "30",
            "-b:v",
            "1000k",
            "-c:a",
            "aac",
        ],
        "flv",
        &source.url("live/src"),
    );
    let relays = dir.join("relays");
    let state_dir = relays.join(KEY);
    std::fs::create_dir_all(&state_dir).unwrap();
    let dests = vec![nginx_dest(0, &server)];
    let relay = Relay::start_with(
        &source.url("live/src"),
        &dests,
        &dir,
        &[("NEUSTREAM_RELAY_STATE_DIR", state_dir.to_str().unwrap())],
    );
    let status = || {
        let out = Command::new(env!("CARGO_BIN_EXE_neustream"))
            .args(["status", KEY, "--json"])
            .env("NEUSTREAM_RELAYS_DIR", &relays)
            .env("NEUSTREAM_SYSTEMD_TIMEOUT", "100ms")
            .output()
            .unwrap();
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap_or_default()
    };
    // The frame rate and bitrates need a few seconds of media.
    let media = common::wait_for(Duration::from_secs(20), Duration::from_millis(500), || {
        let v = status();
        let media = v["relays"][0]["state"]["media"].clone();
        (media["video"]["fps"].as_f64().is_some() && media["audio"]["bitrate"].is_u64())
            .then_some(media)
    })
    .unwrap_or_else(|| {
        panic!(
            "no shape in neustream status: {}\n{}",
            status(),
            relay.log()
        )
    });
    let video = &media["video"];
    assert_eq!(video["codec"], "H.264", "{media}");
    assert_eq!(
        (&video["width"], &video["height"]),
        (&1280.into(), &720.into()),
        "{media}"
    );
    assert_eq!(video["fps"], 30.0, "{media}");
    let rate = video["bitrate"].as_f64().unwrap();
    assert!((400e3..2.5e6).contains(&rate), "{media}");
    let audio = &media["audio"];
    assert_eq!(audio["codec"], "AAC", "{media}");
    assert_eq!(audio["sample_rate"], 48000, "{media}");
    assert_eq!(audio["channels"], 2, "{media}");
    // The text view says it in one line.
    let out = Command::new(env!("CARGO_BIN_EXE_neustream"))
        .args(["status", KEY])
        .env("NEUSTREAM_RELAYS_DIR", &relays)
        .env("NEUSTREAM_SYSTEMD_TIMEOUT", "100ms")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("media H.264 1280x720 30 fps"), "{text}");
    assert!(text.contains("AAC 48000 Hz 2 ch"), "{text}");
}

/// MP2 audio (ffmpeg's default in MPEG-TS, so a common SRT publisher's mistake): MediaMTX
/// accepts the relay as a reader, then closes it at the first audio frame. With the tracks
/// `ready` wrote into its environment, the relay says once what the streamer should change,
/// its state says so, and it does not read the ingest again and again: it waits for a new
/// publisher (a reload) or its stop.
#[test]
fn mp2_audio_is_named_once_and_never_read_in_a_loop() {
    let dir = common::scratch("relay-mp2");
    let server = MediaServer::start(&dir.join("mediamtx"));
    let dest = RtmpServer::start(&dir.join("d0"));
    let encoder = [
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-g",
        "30",
        "-b:v",
        "300k",
        "-c:a",
        "mp2",
    ];
    let mut publisher = common::media::encode(&encoder, "rtsp", &server.rtsp_url("live/src"));
    let published = common::wait_for(Duration::from_secs(15), Duration::from_millis(250), || {
        server.codecs("live/src")
    });
    assert_eq!(
        published,
        Some(("h264".to_owned(), "mp2".to_owned())),
        "the publisher; MediaMTX log:\n{}",
        server.log()
    );
    let reads = || {
        server
            .log()
            .matches("is reading from path 'live/src'")
            .count()
    };
    let before = reads(); // ffprobe's reads over RTSP
    let mut relay = Relay::start_with(
        &server.rtmp_url("live/src"),
        &[nginx_dest(0, &dest)],
        &dir,
        &[
            ("NEUSTREAM_SOURCE_TRACKS", "H264,MPEG-1/2 Audio"),
            ("NEUSTREAM_RECONNECT_GRACE", "10s"),
        ],
    );
    let state = common::wait_for(Duration::from_secs(10), Duration::from_millis(200), || {
        let s = relay.state();
        (s["source"]["state"] == "unreadable").then_some(s)
    })
    .unwrap_or_else(|| {
        panic!(
            "not unreadable: {}\nrelay log:\n{}\nMediaMTX log:\n{}",
            relay.state(),
            relay.log(),
            server.log()
        )
    });
    let problem = state["source"]["problem"].as_str().unwrap_or_default();
    assert!(
        problem.contains("MPEG-1/2 Audio") && problem.contains("AAC"),
        "{state}"
    );
    // No loop: some seconds on, the ingest was read once (twice at most), the relay runs and
    // has said it once.
    std::thread::sleep(Duration::from_secs(8));
    let rtmp_reads = reads() - before;
    assert!(
        (1..=2).contains(&rtmp_reads),
        "{rtmp_reads} reads of live/src; MediaMTX log:\n{}",
        server.log()
    );
    assert!(relay.child.try_wait().unwrap().is_none(), "{}", relay.log());
    let log = relay.log();
    let said: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("MPEG-1/2 Audio") && l.contains("AAC"))
        .collect();
    assert_eq!(said.len(), 1, "{log}");
    assert!(said[0].contains("ERROR"), "{log}");
    assert!(!log.contains("the publisher is gone"), "{log}");
    assert_eq!(relay.state()["source"]["state"], "unreadable");
    assert_no_keys(&log, &[dest_key(0)], "the relay log");
    assert_no_keys(&relay.state_text(), &[dest_key(0)], "the state file");

    // The streamer sets AAC and publishes again: its `ready` reloads the relay, which reads
    // the new publisher and forgets the problem.
    publisher.stop();
    let mut aac = encoder;
    aac[9] = "aac";
    let _publisher = common::media::encode(&aac, "rtsp", &server.rtsp_url("live/src"));
    let published = common::wait_for(Duration::from_secs(15), Duration::from_millis(250), || {
        server.codecs("live/src").filter(|c| c.1 == "aac")
    });
    assert!(published.is_some(), "{}", server.log());
    let env = dir.join("streams");
    std::fs::create_dir_all(&env).unwrap();
    std::fs::write(
        env.join(format!("{KEY}.env")),
        format!(
            "NEUSTREAM_STREAM_KEY={KEY}\nNEUSTREAM_SOURCE_URL={}\nNEUSTREAM_MTX_SOURCE_ID=conn-2\n\
             NEUSTREAM_SOURCE_TRACKS=\"H264,MPEG-4 Audio\"\nNEUSTREAM_DESTINATIONS=1\n\
             NEUSTREAM_DEST_0_PLATFORM=youtube\nNEUSTREAM_DEST_0_RTMP_URL={}\n\
             NEUSTREAM_DEST_0_STREAM_KEY={}\n",
            server.rtmp_url("live/src"),
            dest.url("live/"),
            dest_key(0)
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_neustream"))
        .args(["relay-reload", KEY, "--runtime-dir"])
        .arg(&env)
        .env("RUNTIME_DIRECTORY", &relay.state_dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let live = common::wait_for(Duration::from_secs(15), Duration::from_millis(200), || {
        let s = relay.state();
        (s["source"]["state"] == "live").then_some(s)
    });
    let state = live.unwrap_or_else(|| panic!("{}\n{}", relay.state(), relay.log()));
    assert_eq!(state["source"]["publisher"], "conn-2", "{state}");
    assert!(state["source"].get("problem").is_none(), "{state}");
    assert_eq!(relay.log().matches("audio is MPEG-1/2 Audio").count(), 1);
    assert!(relay.terminate().success(), "{}", relay.log());
}
