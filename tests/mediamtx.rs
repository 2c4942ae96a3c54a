//! A real MediaMTX in front (issue 4): the shipped mediamtx.yml and mediamtx.service, inside a
//! system-test machine, running our hooks as user `mediamtx`; ffmpeg publishers, the Control
//! Plane double and three nginx-rtmp destinations on the host's 127.0.0.1.
//!
//! MediaMTX is built from the Go module proxy by tests/support/build-mediamtx.sh (cached in
//! /var/cache/neustream-test; the first build takes a minute or two).

mod common;

use std::time::{Duration, Instant};

use common::mediamtx::{self as mtx, ms, Feed, HookNames};
use common::scene::{dest_key, Scene, AUTH, STREAM_END};

/// (a) publish → `neustream ready` → relay → three destinations; stop → `neustream unpublish`
/// → relay stopped, one stream-end.
fn publish_and_stop(label: &str, version: &str, names: HookNames) {
    let s = Scene::start(label, version, names);
    let key = "abc123DEF_x-1";
    s.add_stream(key);
    let started = Instant::now();
    let mut feed = s.publish(key, "a");
    let id = s.publisher_id(key);
    s.wait_relay(key, "active", Duration::from_secs(15));
    let to_relay = started.elapsed();
    let to_frames = s.wait_receiving(key, &[0, 0, 0], 60) + to_relay;
    eprintln!(
        "MediaMTX {version} ({names:?} hook names): relay active {to_relay:?} after the \
         publisher started; 60 frames at all 3 destinations after {to_frames:?}"
    );

    // The hook ran as MediaMTX's user, with MediaMTX's connection id.
    let owner = s.ingest.machine.ok(&[
        "stat",
        "-c",
        "%U",
        &format!("/run/neustream/streams/{key}.env"),
    ]);
    assert_eq!(owner.trim(), "mediamtx");
    assert_eq!(
        s.ingest.env_var(key, "NEUSTREAM_MTX_SOURCE_ID").as_deref(),
        Some(id.as_str())
    );
    assert_eq!(
        s.ingest
            .env_var(key, "NEUSTREAM_MTX_SOURCE_TYPE")
            .as_deref(),
        Some("rtmpConn")
    );
    assert_eq!(
        s.ingest.env_var(key, "NEUSTREAM_SOURCE_URL"),
        Some(format!(
            "rtmp://127.0.0.1:{}/live/{key}",
            s.ingest.rtmp_port
        ))
    );
    assert_eq!(s.relay(key, &["NRestarts"])["NRestarts"], "0");
    assert_eq!(s.sessions(key), ["auth"]);
    let log = s.ingest.log();
    assert!(
        log.contains(&format!(
            "{key}: accepted by the Control Plane (publisher {id}; MediaMTX: {} (invocation ",
            mtx::UNIT
        )),
        "{log}"
    );

    feed.stop();
    s.wait_relay(key, "inactive", Duration::from_secs(15));
    let ended = common::wait_for(Duration::from_secs(15), ms(50), || {
        (s.cp.count_for("POST", STREAM_END, key) > 0).then_some(())
    });
    assert!(ended.is_some(), "no stream-end\n{}", s.ingest.log());
    s.ingest.wait_hooks_done(Duration::from_secs(15));
    std::thread::sleep(ms(1000));
    assert_eq!(s.sessions(key), ["auth", "end"], "{}", s.ingest.log());
    assert_eq!(s.ingest.env_file(key), None);
    assert_ne!(s.relay(key, &["Result"])["Result"], "failed");
    assert!(s.ingest.active_relays().is_empty());
    let log = s.ingest.log();
    assert!(
        log.contains(&format!("{key}: stream end reported")),
        "{log}"
    );

    match names {
        HookNames::Shipped => s.assert_no_warnings(&[]),
        HookNames::Old => s.assert_no_warnings(&[
            "parameter 'runOnReady' is deprecated",
            "parameter 'runOnReadyRestart' is deprecated",
            "parameter 'runOnNotReady' is deprecated",
        ]),
    }
}

#[test]
fn publish_relay_and_unpublish() {
    publish_and_stop("a", mtx::VERSION, HookNames::Shipped);
}

#[test]
fn publish_relay_and_unpublish_on_v1_20_1() {
    publish_and_stop("a-1.20.1", mtx::OLDER_VERSIONS[0], HookNames::Shipped);
}

#[test]
fn publish_relay_and_unpublish_on_v1_19_3() {
    publish_and_stop("a-1.19.3", mtx::OLDER_VERSIONS[1], HookNames::Shipped);
}

/// The configuration docs/mediamtx.md gives for MediaMTX < 1.19.3 (runOnReady/runOnNotReady),
/// on the oldest MediaMTX we can build: the hooks work by their old names (with the expected
/// deprecation warnings, which an older MediaMTX does not print).
#[test]
fn old_hook_names_still_work() {
    publish_and_stop("a-oldnames", mtx::OLDER_VERSIONS[1], HookNames::Old);
}

/// (b) A refused key is disconnected by MediaMTX within 2 s of the Control Plane's answer; no
/// relay is started for it; a valid stream publishing meanwhile is unaffected.
#[test]
fn refused_key_is_kicked_and_other_streams_go_on() {
    let s = Scene::start("b", mtx::VERSION, HookNames::Shipped);
    let good = "goodkey1";
    let bad = "badkey1";
    s.add_stream(good);
    let _good_feed = s.publish(good, "good");
    let good_id = s.publisher_id(good);
    s.wait_relay(good, "active", Duration::from_secs(15));
    s.wait_receiving(good, &[0, 0, 0], 30);
    let before = s.relay(good, &["MainPID", "NRestarts"]);

    let mut bad_feed = s.publish(bad, "bad");
    let (mut decided, mut seen, mut gone, mut exited) = (None, None, None, None);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) && (gone.is_none() || exited.is_none()) {
        let now = Instant::now();
        if decided.is_none() && s.cp.count_for("POST", AUTH, bad) > 0 {
            decided = Some(now);
        }
        let on_path = s.ingest.publishers(bad);
        if !on_path.is_empty() && seen.is_none() {
            seen = Some(on_path[0].clone());
        }
        if seen.is_some() && on_path.is_empty() && gone.is_none() {
            gone = Some(now);
        }
        if exited.is_none() && bad_feed.exited().is_some() {
            exited = Some(now);
        }
        std::thread::sleep(ms(10));
    }
    let decided = decided.expect("the hook never asked the Control Plane about the bad key");
    let bad_id = seen.expect("MediaMTX never listed the refused publisher");
    let gone = gone.unwrap_or_else(|| panic!("refused publisher not dropped\n{}", s.ingest.log()));
    let exited = exited.expect("the refused publisher's ffmpeg did not notice the disconnection");
    let kick = gone.saturating_duration_since(decided);
    eprintln!(
        "kick: connection gone from MediaMTX {kick:?} after the Control Plane refused the key \
         ({:?} after the publisher started); the publisher's ffmpeg exited after {:?}",
        gone - start,
        exited.saturating_duration_since(decided)
    );
    assert!(
        kick < Duration::from_secs(2),
        "kick took {kick:?}\n{}",
        s.ingest.log()
    );
    s.ingest.wait_hooks_done(Duration::from_secs(15));
    let log = s.ingest.log();
    // The operator reads why: the refusal, and the kick, in `journalctl -u mediamtx`.
    assert!(
        log.contains(&format!("{bad}: publisher {bad_id} disconnected")),
        "{log}"
    );
    assert!(
        log.contains(&format!(
            "stream key {bad} rejected by the Control Plane (401"
        )),
        "{log}"
    );
    assert!(!log.contains("abandoning the publish"), "{log}");

    // Never a relay for the refused key: the unit was never even started.
    let never = s.relay(
        bad,
        &[
            "ActiveState",
            "InactiveExitTimestampMonotonic",
            "ActiveEnterTimestampMonotonic",
            "NRestarts",
        ],
    );
    assert_eq!(never["ActiveState"], "inactive", "{never:?}");
    assert_eq!(never["InactiveExitTimestampMonotonic"], "0", "{never:?}");
    assert_eq!(never["ActiveEnterTimestampMonotonic"], "0", "{never:?}");
    assert_eq!(s.ingest.env_file(bad), None);
    let left = s.ingest.machine.ok(&["ls", "-A", "/run/neustream/streams"]);
    assert!(!left.contains(bad), "a refused key left files: {left}");
    assert!(
        !s.relay_log(bad).contains("Started"),
        "{}",
        s.relay_log(bad)
    );
    assert_eq!(s.cp.count_for("POST", STREAM_END, bad), 0);
    assert_eq!(s.ingest.active_relays(), [Scene::unit(good)]);

    // The valid stream went on: same publisher, same relay process, no restart, still arriving.
    assert_eq!(s.ingest.publishers(good), [good_id]);
    assert_eq!(s.relay(good, &["MainPID", "NRestarts"]), before);
    s.wait_receiving(good, &s.frames(good), 60);
    assert_eq!(s.sessions(good), ["auth"]);
    s.assert_no_warnings(&[]);
}

/// (c) OBS reconnects: the old connection is gone or stalled, a new one publishes the same key
/// within a second. In the end exactly one relay runs, for the new connection, the
/// destinations receive again, and the Control Plane still holds an active stream.
fn reconnect(label: &str, drop_old: impl FnOnce(&mut Feed)) {
    let s = Scene::start(label, mtx::VERSION, HookNames::Shipped);
    let key = "obs_key_42";
    s.add_stream(key);
    let mut old = s.publish(key, "old");
    let old_id = s.publisher_id(key);
    s.wait_relay(key, "active", Duration::from_secs(15));
    s.wait_receiving(key, &[0, 0, 0], 30);
    s.ingest.wait_hooks_done(Duration::from_secs(10));

    drop_old(&mut old);
    let mut new = s.publish(key, "new");
    let switched = Instant::now();
    let new_id = common::wait_for(Duration::from_secs(15), ms(20), || {
        let ids = s.ingest.publishers(key);
        (ids.len() == 1 && ids[0] != old_id).then(|| ids[0].clone())
    })
    .unwrap_or_else(|| panic!("the new publisher never took over\n{}", s.ingest.log()));
    // Both hooks (old unpublish, new ready) have run their course.
    std::thread::sleep(ms(500));
    s.ingest.wait_hooks_done(Duration::from_secs(20));
    old.kill();
    let base = s.frames(key);
    s.wait_receiving(key, &base, 60);
    eprintln!(
        "{label}: new publisher {new_id} took over; 60 new frames at all 3 destinations {:?} \
         after the new publisher started",
        switched.elapsed()
    );

    let log = s.ingest.log();
    assert_eq!(
        s.ingest.active_relays(),
        [Scene::unit(key)],
        "exactly one relay\n{log}"
    );
    s.wait_relay(key, "active", Duration::from_secs(1));
    assert_eq!(
        s.ingest.env_var(key, "NEUSTREAM_MTX_SOURCE_ID").as_deref(),
        Some(new_id.as_str()),
        "{log}"
    );
    // The native engine is the relay's process alone: no ffmpeg left from either publisher.
    assert_eq!(
        s.ingest.machine.processes("ffmpeg"),
        Vec::<i32>::new(),
        "no ffmpeg in the machine"
    );
    // The Control Plane is left with an active stream: no stream-end after the last auth.
    let sessions = s.sessions(key);
    eprintln!("{label}: Control Plane requests of {key}: {sessions:?}");
    assert_eq!(sessions.last(), Some(&"auth"), "{sessions:?}\n{log}");

    new.stop();
    s.wait_relay(key, "inactive", Duration::from_secs(15));
    s.ingest.wait_hooks_done(Duration::from_secs(20));
    std::thread::sleep(ms(500));
    let sessions = s.sessions(key);
    assert_eq!(
        sessions.iter().rev().take(2).collect::<Vec<_>>(),
        [&"end", &"auth"],
        "{sessions:?}"
    );
    assert_eq!(s.ingest.env_file(key), None);
    s.assert_no_warnings(&[]);
}

/// The old connection is still open (the network hangs); MediaMTX's overridePublisher closes it
/// when the new one publishes, and runs the old unpublish and the new ready concurrently.
#[test]
fn obs_reconnect_replaces_a_stalled_publisher() {
    reconnect("c-stall", |old| {
        old.stall();
        std::thread::sleep(ms(300));
    });
}

/// The old connection dropped (MediaMTX sees it close); OBS is back half a second later.
#[test]
fn obs_reconnect_after_a_dropped_connection() {
    reconnect("c-drop", |old| {
        old.kill();
        std::thread::sleep(ms(500));
    });
}

/// (d) The shipped mediamtx.yml is what runs, changed only in its listen addresses; MediaMTX
/// finds it valid, warns about nothing, and serves only RTMP, SRT and the loopback API (RTMPS
/// waits for the operator's certificate); publishing outside live/<key> is refused before any
/// hook runs.
#[test]
fn shipped_config_runs_without_warnings() {
    let shipped = mtx::shipped_config();
    let ports = mtx::Ports {
        rtmp: 19350,
        api: 19970,
        srt: 18890,
        rtmps: 19360,
    };
    let adapted = mtx::adapt(&shipped, ports);
    let changed: Vec<(&str, &str)> = shipped
        .lines()
        .zip(adapted.lines())
        .filter(|(a, b)| a != b)
        .collect();
    assert_eq!(
        changed,
        [
            ("apiAddress: 127.0.0.1:9997", "apiAddress: 127.0.0.1:19970"),
            ("rtmpAddress: :1935", "rtmpAddress: 127.0.0.1:19350"),
            ("rtmpsAddress: :1936", "rtmpsAddress: 127.0.0.1:19360"),
            ("srtAddress: :8890", "srtAddress: 127.0.0.1:18890"),
        ]
    );
    assert_eq!(shipped.lines().count(), adapted.lines().count());

    // The validator of MediaMTX itself, on the shipped file (1.21 has --validate-conf).
    let out = std::process::Command::new(mtx::binary(mtx::VERSION))
        .arg("--validate-conf")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/mediamtx.yml"))
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && text.contains("configuration file is valid"),
        "{text}"
    );
    assert!(
        !text.contains("WAR") && !text.contains("deprecated"),
        "{text}"
    );

    let s = Scene::start("d", mtx::VERSION, HookNames::Shipped);
    let m = &s.ingest.machine;
    // As the shipped unit runs it: user mediamtx, our config.
    let props = m.show(mtx::UNIT, &["ActiveState", "User", "MainPID", "ExecStart"]);
    assert_eq!(props["ActiveState"], "active");
    assert_eq!(props["User"], "mediamtx");
    assert!(props["ExecStart"].contains("/usr/local/bin/mediamtx /etc/neustream/mediamtx.yml"));
    let user = m.ok(&["ps", "-o", "user=", "-p", &props["MainPID"]]);
    assert_eq!(user.trim(), "mediamtx");
    assert_eq!(
        m.ok(&["cat", "/etc/neustream/mediamtx.yml"]),
        s.ingest.config
    );
    let rtmps_port = s
        .ingest
        .config
        .lines()
        .find_map(|l| l.strip_prefix("rtmpsAddress: 127.0.0.1:"))
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(&s.ingest.config_path).unwrap(),
        adapted
            .replace("19350", &s.ingest.rtmp_port.to_string())
            .replace("19970", &s.ingest.api_port.to_string())
            .replace("18890", &s.ingest.srt_port.to_string())
            .replace("19360", rtmps_port)
    );

    let own = s.ingest.own_log();
    assert!(own.contains(&format!("MediaMTX {}", mtx::VERSION)), "{own}");
    assert!(
        own.contains("configuration loaded from /etc/neustream/mediamtx.yml"),
        "{own}"
    );
    let listeners: Vec<&str> = own
        .lines()
        .filter(|l| l.contains("started with listener"))
        .collect();
    assert_eq!(
        listeners.len(),
        3,
        "only RTMP, SRT and the API listen (RTMPS waits for a certificate): {listeners:#?}"
    );
    assert!(listeners.iter().any(|l| l.contains("[SRT]")
        && l.contains(&format!("127.0.0.1:{} (UDP/SRT)", s.ingest.srt_port))));
    assert!(listeners
        .iter()
        .any(|l| l.contains("[RTMP]") && l.contains(&format!("127.0.0.1:{}", s.ingest.rtmp_port))));
    assert!(listeners
        .iter()
        .any(|l| l.contains("[API]") && l.contains(&format!("127.0.0.1:{}", s.ingest.api_port))));

    // Only live/<key> can be published: elsewhere MediaMTX refuses before any hook runs.
    s.add_stream("k1");
    for (i, path) in ["other/k1", "live/k1/extra", "k1"].iter().enumerate() {
        let url = format!("rtmp://127.0.0.1:{}/{path}", s.ingest.rtmp_port);
        let mut feed = Feed::start(&url, &s.dir.join(format!("refused-{i}.log")));
        let exited = common::wait_for(Duration::from_secs(10), ms(50), || feed.exited());
        assert!(exited.is_some(), "publishing to {path} was not refused");
    }
    assert!(s.cp.requests().is_empty(), "{:?}", s.cp.requests());
    assert!(!s.ingest.log().contains("runOnAvailable command started"));
    s.assert_no_warnings(&[]);
}

/// `systemctl stop mediamtx` (an upgrade, a reboot) with a stream live: MediaMTX runs the
/// unpublish hook of each stream before it exits, so the relay stops and the end is reported.
#[test]
fn stopping_mediamtx_ends_its_streams() {
    let s = Scene::start("stop", mtx::VERSION, HookNames::Shipped);
    let key = "stopkey";
    s.add_stream(key);
    let _feed = s.publish(key, "a");
    s.wait_relay(key, "active", Duration::from_secs(15));
    s.ingest.wait_hooks_done(Duration::from_secs(10));
    let started = Instant::now();
    s.ingest.machine.ok(&["systemctl", "stop", mtx::UNIT]);
    let stopped = started.elapsed();
    s.wait_relay(key, "inactive", Duration::from_secs(15));
    let ended = common::wait_for(Duration::from_secs(15), ms(50), || {
        (s.cp.count_for("POST", STREAM_END, key) > 0).then_some(())
    });
    eprintln!("systemctl stop mediamtx took {stopped:?}");
    assert!(ended.is_some(), "no stream-end\n{}", s.ingest.log());
    assert_eq!(s.sessions(key), ["auth", "end"], "{}", s.ingest.log());
    assert_eq!(s.ingest.env_file(key), None);
    assert!(s.ingest.active_relays().is_empty());
}

/// OBS loses its connection and comes back 4 s later (a new connection: MediaMTX runs the old
/// publisher's unpublish and the new one's ready), with the reconnect grace on: every
/// destination keeps its one publish session, the relay is reloaded, not restarted, and the
/// Control Plane sees no end.
#[test]
fn obs_reconnect_within_the_grace_keeps_every_destination_session() {
    let s = Scene::start("grace", mtx::VERSION, HookNames::Shipped);
    s.set_grace("20s");
    let key = "obs_grace_7";
    s.add_stream(key);
    let mut old = s.publish(key, "old");
    let old_id = s.publisher_id(key);
    s.wait_relay(key, "active", Duration::from_secs(15));
    s.wait_receiving(key, &[0, 0, 0], 30);
    s.ingest.wait_hooks_done(Duration::from_secs(10));
    let before = s.relay(key, &["NRestarts", "MainPID"]);

    old.kill();
    std::thread::sleep(Duration::from_secs(4));
    let mut new = s.publish(key, "new");
    let new_id = s.wait_new_owner(key, &old_id);
    let base = s.frames(key);
    s.wait_receiving(key, &base, 60);
    s.ingest.wait_hooks_done(Duration::from_secs(25));
    let log = s.ingest.log();
    for (i, dest) in s.dests.iter().enumerate() {
        assert_eq!(
            dest.publishes(&dest_key(key, i)),
            1,
            "destination {i}: one publish session across the drop\n{log}"
        );
    }
    let after = s.relay(key, &["NRestarts", "MainPID", "ActiveState"]);
    assert_eq!(after["NRestarts"], before["NRestarts"], "{after:?}");
    assert_eq!(after["MainPID"], before["MainPID"], "{after:?}\n{log}");
    assert_eq!(after["ActiveState"], "active");
    assert_eq!(s.sessions(key), ["auth", "auth"], "no end between\n{log}");
    assert!(
        s.relay_log(key)
            .contains(&format!("new publisher {new_id}")),
        "{}",
        s.relay_log(key)
    );
    new.stop();
}

/// Waits for the one publisher of live/<key> in `collection` (`srtconns`, `rtmpsconns`); its id.
fn publisher_in(s: &Scene, collection: &str, key: &str) -> String {
    common::wait_for(Duration::from_secs(15), ms(50), || {
        let ids = s.ingest.publishers_in(collection, key);
        (ids.len() == 1).then(|| ids[0].clone())
    })
    .unwrap_or_else(|| {
        panic!(
            "no publisher on live/{key} in {collection}\n{}",
            s.ingest.log()
        )
    })
}

/// The stream's own env file names the publisher as MediaMTX does; then `stop` ends it: the
/// relay stops and the Control Plane hears of the end exactly once.
fn relayed_then_ended(s: &Scene, key: &str, source_type: &str, id: &str, stop: impl FnOnce()) {
    s.wait_relay(key, "active", Duration::from_secs(20));
    s.wait_receiving(key, &[0, 0, 0], 60);
    for (i, dest) in s.dests.iter().enumerate() {
        let got = probe_dest(dest, &dest_key(key, i));
        assert_eq!(
            (got.video_codec.as_str(), got.audio_codec.as_str()),
            ("h264", "aac"),
            "destination {i}: {got:?}"
        );
        assert!(got.audio_packets > 0, "destination {i} got no audio");
    }
    assert_eq!(
        s.ingest
            .env_var(key, "NEUSTREAM_MTX_SOURCE_TYPE")
            .as_deref(),
        Some(source_type)
    );
    assert_eq!(
        s.ingest.env_var(key, "NEUSTREAM_MTX_SOURCE_ID").as_deref(),
        Some(id)
    );
    // The relay reads every protocol's stream back over plain RTMP on loopback.
    assert_eq!(
        s.ingest.env_var(key, "NEUSTREAM_SOURCE_URL"),
        Some(format!(
            "rtmp://127.0.0.1:{}/live/{key}",
            s.ingest.rtmp_port
        ))
    );
    assert_eq!(s.sessions(key), ["auth"]);

    stop();
    s.wait_relay(key, "inactive", Duration::from_secs(15));
    let ended = common::wait_for(Duration::from_secs(15), ms(50), || {
        (s.cp.count_for("POST", STREAM_END, key) > 0).then_some(())
    });
    assert!(ended.is_some(), "no stream-end\n{}", s.ingest.log());
    s.ingest.wait_hooks_done(Duration::from_secs(15));
    std::thread::sleep(ms(1000));
    assert_eq!(s.sessions(key), ["auth", "end"], "{}", s.ingest.log());
    assert_eq!(s.ingest.env_file(key), None);
    assert!(s.ingest.active_relays().is_empty());
}

fn probe_dest(dest: &common::nginx::RtmpServer, name: &str) -> common::media::Received {
    common::media::probe(&dest.recording(name)).unwrap_or_default()
}

/// (e) SRT ingest, as OBS's SRT output and IRL encoders publish (MPEG-TS over SRT, stream id
/// `publish:live/<key>`, H.264 + AAC): the same hook checks the key, the relay reads it back
/// over RTMP and every destination gets video and audio; the end is reported once.
#[test]
fn srt_publish_is_relayed_and_its_end_reported_once() {
    let s = Scene::start("srt", mtx::VERSION, HookNames::Shipped);
    let key = "srt_key_1";
    s.add_stream(key);
    let mut feed = s.publish_srt(key);
    let id = publisher_in(&s, "srtconns", key);
    relayed_then_ended(&s, key, "srtConn", &id, || feed.stop());
    s.assert_no_warnings(&[]);
}

/// (e2) SRT with ffmpeg's own MPEG-TS audio, MP2, which MediaMTX will not give to an RTMP
/// reader: `ready` writes the publisher's tracks into the env file, the relay says once what
/// the streamer should change, `neustream status` shows it, and the unit runs without
/// restarting until the publisher leaves.
#[test]
fn srt_publish_with_mp2_audio_says_so_in_status() {
    let s = Scene::start("srt-mp2", mtx::VERSION, HookNames::Shipped);
    let key = "srt_mp2_1";
    s.add_stream(key);
    let mut feed = s.publish_srt_audio(key, "mp2");
    s.wait_relay(key, "active", Duration::from_secs(20));
    assert_eq!(
        s.ingest.env_var(key, "NEUSTREAM_SOURCE_TRACKS").as_deref(),
        Some("H264,MPEG-1/2 Audio"),
        "{}",
        s.ingest.log()
    );
    let status = || {
        let out = s.ingest.machine.run(&["neustream", "status", key]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let text = common::wait_for(Duration::from_secs(15), ms(250), || {
        Some(status()).filter(|t| t.contains("source unreadable"))
    })
    .unwrap_or_else(|| panic!("{}\n{}", status(), s.relay_log(key)));
    eprintln!("neustream status with an MP2 publisher:\n{text}");
    assert!(
        text.contains("! nothing is relayed: audio is MPEG-1/2 Audio") && text.contains("AAC"),
        "{text}"
    );
    std::thread::sleep(Duration::from_secs(4));
    let log = s.relay_log(key);
    assert_eq!(log.matches("audio is MPEG-1/2 Audio").count(), 1, "{log}");
    assert_eq!(s.relay(key, &["NRestarts"])["NRestarts"], "0", "{log}");
    feed.stop();
    s.wait_relay(key, "inactive", Duration::from_secs(15));
}

/// (f) An unknown key over SRT: the hook asks the Control Plane, which refuses it, and kicks
/// the publisher through `/v3/srtconns/kick/<id>`: its connection is gone from MediaMTX and
/// the encoder sees it close; no relay unit, nothing at any destination, no stream-end.
#[test]
fn srt_publisher_of_an_unknown_key_is_kicked() {
    let s = Scene::start("srt-kick", mtx::VERSION, HookNames::Shipped);
    let bad = "srt_unknown_9";
    let mut feed = s.publish_srt(bad);
    let start = Instant::now();
    let (mut decided, mut seen, mut gone, mut exited) = (None, None, None, None);
    while start.elapsed() < Duration::from_secs(30) && (gone.is_none() || exited.is_none()) {
        let now = Instant::now();
        if decided.is_none() && s.cp.count_for("POST", AUTH, bad) > 0 {
            decided = Some(now);
        }
        let on_path = s.ingest.publishers_in("srtconns", bad);
        if seen.is_none() && !on_path.is_empty() {
            seen = Some(on_path[0].clone());
        }
        if seen.is_some() && on_path.is_empty() && gone.is_none() {
            gone = Some(now);
        }
        if exited.is_none() && feed.exited().is_some() {
            exited = Some(now);
        }
        std::thread::sleep(ms(20));
    }
    let decided = decided.expect("the hook never asked the Control Plane about the key");
    let id = seen.unwrap_or_else(|| {
        panic!(
            "MediaMTX never listed the SRT publisher\n{}",
            s.ingest.log()
        )
    });
    let gone = gone.unwrap_or_else(|| panic!("SRT publisher not dropped\n{}", s.ingest.log()));
    eprintln!(
        "SRT kick: connection gone from MediaMTX {:?} after the Control Plane refused the key; \
         the encoder exited {:?} after the refusal",
        gone.saturating_duration_since(decided),
        exited.map(|e| e.saturating_duration_since(decided))
    );
    assert!(
        gone.saturating_duration_since(decided) < Duration::from_secs(2),
        "{}",
        s.ingest.log()
    );
    assert!(
        exited.is_some(),
        "the SRT encoder did not notice the disconnection within 30 s"
    );
    s.ingest.wait_hooks_done(Duration::from_secs(15));
    let log = s.ingest.log();
    assert!(
        log.contains(&format!("{bad}: publisher {id} disconnected")),
        "{log}"
    );
    assert!(!log.contains("failed to disconnect"), "{log}");
    let never = s.relay(
        bad,
        &["ActiveState", "InactiveExitTimestampMonotonic", "NRestarts"],
    );
    assert_eq!(never["ActiveState"], "inactive", "{never:?}");
    assert_eq!(never["InactiveExitTimestampMonotonic"], "0", "{never:?}");
    assert!(s.ingest.active_relays().is_empty());
    assert_eq!(s.ingest.env_file(bad), None);
    assert_eq!(s.frames(bad), [0, 0, 0]);
    assert_eq!(s.cp.count_for("POST", STREAM_END, bad), 0);
    s.assert_no_warnings(&[]);
}

/// (g) RTMPS, offered as mediamtx.yml says (the operator's certificate and key at
/// /etc/neustream/tls, `rtmpEncryption: "optional"`): OBS publishing rtmps://host:1936/live/<key>
/// is relayed like RTMP, and its end reported once; plain RTMP still works beside it.
#[test]
fn rtmps_publish_is_relayed_like_rtmp() {
    let s = Scene::start_rtmps("rtmps");
    let own = s.ingest.own_log();
    assert!(
        own.contains(&format!(
            "[RTMPS] started with listener on 127.0.0.1:{}",
            s.ingest.rtmps_port.unwrap()
        )),
        "{own}"
    );
    let key = "rtmps_key_1";
    s.add_stream(key);
    let mut feed = s.publish_rtmps(key, "a");
    let id = publisher_in(&s, "rtmpsconns", key);
    relayed_then_ended(&s, key, "rtmpsConn", &id, || feed.stop());

    let plain = "plain_beside_rtmps";
    s.add_stream(plain);
    let mut feed = s.publish(plain, "plain");
    s.wait_relay(plain, "active", Duration::from_secs(20));
    s.wait_receiving(plain, &[0, 0, 0], 30);
    feed.stop();
    s.wait_relay(plain, "inactive", Duration::from_secs(15));
    s.assert_no_warnings(&[]);
}

/// (h) An unknown key over RTMPS is kicked through `/v3/rtmpsconns/kick/<id>` (RTMPS
/// connections are not in `rtmpconns`).
#[test]
fn rtmps_publisher_of_an_unknown_key_is_kicked() {
    let s = Scene::start_rtmps("rtmps-kick");
    let bad = "rtmps_unknown_3";
    let mut feed = s.publish_rtmps(bad, "bad");
    // The refusal is quick (the double answers at once): the connection may be gone before a
    // poll of the API sees it, so the kick is read in the logs.
    let exited = common::wait_for(Duration::from_secs(20), ms(50), || feed.exited());
    assert!(
        exited.is_some(),
        "the RTMPS publisher was not disconnected\n{}",
        s.ingest.log()
    );
    s.ingest.wait_hooks_done(Duration::from_secs(15));
    let log = s.ingest.log();
    assert_eq!(s.cp.count_for("POST", AUTH, bad), 1, "{log}");
    assert!(
        log.contains(&format!("{bad}: publisher ")) && log.contains(" disconnected"),
        "{log}"
    );
    assert!(!log.contains("failed to disconnect"), "{log}");
    // MediaMTX's RTMPS server closed it on the API's kick ("terminated"), not on an error.
    assert!(
        s.ingest
            .own_log()
            .lines()
            .any(|l| l.contains("[RTMPS] [conn") && l.contains("closed: terminated")),
        "{log}"
    );
    assert!(s.ingest.publishers_in("rtmpsconns", bad).is_empty());
    assert!(s.ingest.active_relays().is_empty());
    assert_eq!(s.frames(bad), [0, 0, 0]);
    assert_eq!(s.cp.count_for("POST", STREAM_END, bad), 0);
}
