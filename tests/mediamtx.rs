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
    // The relay's: one source ffmpeg and one per destination (three), no other.
    assert_eq!(
        s.ingest.machine.processes("ffmpeg").len(),
        4,
        "one relay's ffmpegs in the machine"
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

/// (d) The shipped mediamtx.yml is what runs, changed only in its two listen addresses; MediaMTX
/// finds it valid, warns about nothing, and serves only RTMP and the loopback API; publishing
/// outside live/<key> is refused before any hook runs.
#[test]
fn shipped_config_runs_without_warnings() {
    let shipped = mtx::shipped_config();
    let adapted = mtx::adapt(&shipped, 19350, 19970);
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
    assert_eq!(
        std::fs::read_to_string(&s.ingest.config_path).unwrap(),
        adapted
            .replace("19350", &s.ingest.rtmp_port.to_string())
            .replace("19970", &s.ingest.api_port.to_string())
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
        2,
        "only RTMP and the API listen: {listeners:#?}"
    );
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
