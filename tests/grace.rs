//! The reconnect grace and live destination changes, on a real systemd in the test machine,
//! with the hooks run as MediaMTX runs them, real ffmpeg and nginx-rtmp destinations whose
//! `on_publish`/`on_publish_done` notifications count the publish sessions each one saw.

mod common;

use std::time::{Duration, Instant};

use common::arrivals::{self, worst_gap, Watcher};
use common::media::Publisher;
use common::nginx::RtmpServer;
use common::publish_hooks::PublishHooks;
use common::stack::{self, Dest, Stack};

const STREAM_END: &str = "/api/auth/stream-end";

/// Destination servers whose publishes are counted by `hooks`.
fn servers(s: &Stack, hooks: &PublishHooks, n: usize) -> Vec<RtmpServer> {
    (0..n)
        .map(|i| {
            RtmpServer::start_notifying(
                &s.dir.join(format!("d{i}")),
                common::free_port(),
                Some(&hooks.url),
            )
        })
        .collect()
}

fn dests(servers: &[RtmpServer], tag: &str) -> Vec<Dest> {
    servers
        .iter()
        .enumerate()
        .map(|(i, srv)| {
            Dest::on(
                srv,
                ["youtube", "twitch", "custom"][i % 3],
                &stack::secret_key(&format!("{tag}{i}")),
            )
        })
        .collect()
}

fn grace(value: &str) -> [(&'static str, String); 1] {
    [("NEUSTREAM_RECONNECT_GRACE", value.to_string())]
}

/// Runs a hook with the grace set.
fn hook(s: &Stack, name: &str, key: &str, source: &str, g: &str) -> common::stack::HookRun {
    let env = grace(g);
    let extra: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    s.hook(name, key, source, &extra)
}

fn go_live(s: &Stack, key: &str, dests: &[Dest], source: &str, g: &str) -> Publisher {
    stack::add_stream(&s.cp, key, dests);
    let publisher = s.publish(key);
    std::thread::sleep(Duration::from_secs(1));
    let run = hook(s, "ready", key, source, g);
    s.assert_ok(&run, key);
    if let Err(e) = stack::wait_receiving(dests, None, 30, Duration::from_secs(15)) {
        panic!("{e}; relay log:\n{}", s.relay_log(key));
    }
    publisher
}

fn watch_all(dests: &[Dest]) -> Watcher {
    let w = Watcher::start(Duration::from_millis(10));
    for (i, d) in dests.iter().enumerate() {
        w.watch(&i.to_string(), &d.recording);
    }
    w
}

/// Frames per second `name` received in `[from, to]`.
fn fps(w: &Watcher, name: &str, from: f64, to: f64) -> f64 {
    let n = w
        .frames(name)
        .iter()
        .filter(|f| f.wall >= from && f.wall <= to)
        .count();
    n as f64 / (to - from)
}

#[test]
fn a_publisher_back_within_the_grace_keeps_every_broadcast() {
    let s = Stack::boot("grace-back");
    let hooks = PublishHooks::start();
    let servers = servers(&s, &hooks, 3);
    let dests = dests(&servers, "back");
    let key = "graceback01";
    let (first, second) = (stack::source_id(1), stack::source_id(2));
    let mut publisher = go_live(&s, key, &dests, &first, "20s");
    let before = s.relay(key, &["NRestarts", "MainPID"]);
    let watcher = watch_all(&dests);
    std::thread::sleep(Duration::from_secs(2));

    // OBS drops; MediaMTX runs unpublish for it at once (it waits out the grace).
    let dropped = arrivals::now();
    publisher.stop();
    let (unpublish, resumed_at) = std::thread::scope(|scope| {
        let waiting = scope.spawn(|| hook(&s, "unpublish", key, &first, "20s"));
        std::thread::sleep(Duration::from_secs(4));
        // OBS is back 4 s later: a new connection, a new MTX_SOURCE_ID.
        let _back = s.publish(key);
        std::thread::sleep(Duration::from_millis(500));
        let run = hook(&s, "ready", key, &second, "20s");
        s.assert_ok(&run, key);
        let ready_at = arrivals::now();
        let unpublish = waiting.join().unwrap();
        std::thread::sleep(Duration::from_secs(5));
        let end = arrivals::now();

        // Media throughout: never more than a second without a frame, frozen or live.
        for i in 0..dests.len() {
            let gap = worst_gap(&watcher.frames(&i.to_string()), dropped - 1.0, end);
            assert!(
                gap < 1.0,
                "destination {i}: {gap:.2} s without a frame; relay log:\n{}",
                s.relay_log(key)
            );
            // The new publisher's frames (30 fps, against the frozen picture's 2) within 3 s.
            let rate = fps(&watcher, &i.to_string(), ready_at + 3.0, end);
            assert!(
                rate > 25.0,
                "destination {i}: {rate:.1} fps after the new publisher"
            );
            let during = fps(&watcher, &i.to_string(), dropped + 1.0, dropped + 3.5);
            assert!(
                (1.0..10.0).contains(&during),
                "destination {i}: {during:.1} fps during the gap (the frozen picture)"
            );
        }
        (unpublish, ready_at)
    });
    s.assert_ok(&unpublish, key);
    assert!(
        unpublish
            .stderr()
            .contains("took the stream over within the grace"),
        "{}",
        unpublish.stderr()
    );
    let _ = resumed_at;

    // One publish session per destination, none ended; timestamps never went backwards.
    for d in &dests {
        assert_eq!(hooks.calls("publish", &d.key).len(), 1, "{}", d.platform);
        assert_eq!(
            hooks.calls("publish_done", &d.key).len(),
            0,
            "{}",
            d.platform
        );
        let got = d.probe().unwrap();
        assert!(
            got.video_pts.windows(2).all(|w| w[1] >= w[0] - 0.1),
            "{}: timestamps go backwards",
            d.platform
        );
        assert_eq!(got.audio_codec, "aac", "{}", d.platform);
    }
    // No stream end, no restart: the same relay switched its source.
    assert_eq!(s.cp.count_for("POST", STREAM_END, key), 0);
    let after = s.relay(key, &["NRestarts", "MainPID", "ActiveState"]);
    assert_eq!(after["NRestarts"], before["NRestarts"], "{after:?}");
    assert_eq!(after["MainPID"], before["MainPID"], "{after:?}");
    assert_eq!(after["ActiveState"], "active");
    let log = s.relay_log(key);
    assert!(
        log.contains("the source reads it already") || log.contains("switching the source"),
        "{log}"
    );
    s.assert_secrets_kept(&dests.iter().map(|d| d.key.clone()).collect::<Vec<_>>());
}

#[test]
fn no_publisher_within_the_grace_ends_every_destination_once() {
    let s = Stack::boot("grace-gone");
    let hooks = PublishHooks::start();
    let servers = servers(&s, &hooks, 2);
    let dests = dests(&servers, "gone");
    let key = "gracegone01";
    let source = stack::source_id(1);
    let mut publisher = go_live(&s, key, &dests, &source, "6s");
    let watcher = watch_all(&dests);
    // The watcher stamps what is already recorded at its first look: let it catch up.
    std::thread::sleep(Duration::from_secs(2));
    let dropped = arrivals::now();
    publisher.stop();
    let started = Instant::now();
    let run = hook(&s, "unpublish", key, &source, "6s");
    s.assert_ok(&run, key);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(5) && waited < Duration::from_secs(20),
        "unpublish took {waited:?} with a 6 s grace"
    );
    // Frozen picture until the end of the grace.
    for i in 0..dests.len() {
        let gap = worst_gap(
            &watcher.frames(&i.to_string()),
            dropped - 1.0,
            dropped + 5.0,
        );
        assert!(gap < 1.0, "destination {i}: {gap:.2} s without a frame");
    }
    // Then: one stream end, one clean end of each destination's session, nothing left.
    let ended = common::wait_for(Duration::from_secs(5), Duration::from_millis(100), || {
        dests
            .iter()
            .all(|d| hooks.calls("publish_done", &d.key).len() == 1)
            .then_some(())
    });
    assert!(
        ended.is_some(),
        "publish_done per destination: {:?}",
        dests
            .iter()
            .map(|d| hooks.calls("publish_done", &d.key).len())
            .collect::<Vec<_>>()
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(s.cp.count_for("POST", STREAM_END, key), 1);
    for d in &dests {
        assert_eq!(hooks.calls("publish", &d.key).len(), 1);
        assert_eq!(hooks.calls("publish_done", &d.key).len(), 1);
    }
    let p = s.relay(key, &["ActiveState"]);
    assert_eq!(p["ActiveState"], "inactive", "{p:?}");
    assert!(s.ffmpegs().is_empty(), "ffmpeg left: {:?}", s.ffmpegs());
    assert!(!s.exists(&stack::env_file(key)));
}

#[test]
fn a_reconnect_applies_the_new_destination_list_and_leaves_the_rest_alone() {
    let s = Stack::boot("grace-diff");
    let hooks = PublishHooks::start();
    let servers = servers(&s, &hooks, 3);
    let all = dests(&servers, "diff");
    let key = "gracediff01";
    let (first, second) = (stack::source_id(1), stack::source_id(2));
    // Live to 0 and 1; on the reconnect the Control Plane lists 0 and 2.
    let mut publisher = go_live(&s, key, &all[0..2], &first, "20s");
    publisher.stop();
    std::thread::scope(|scope| {
        let waiting = scope.spawn(|| hook(&s, "unpublish", key, &first, "20s"));
        std::thread::sleep(Duration::from_secs(2));
        stack::add_stream(&s.cp, key, &[all[0].clone(), all[2].clone()]);
        let _back = s.publish(key);
        std::thread::sleep(Duration::from_millis(500));
        let run = hook(&s, "ready", key, &second, "20s");
        s.assert_ok(&run, key);
        s.assert_ok(&waiting.join().unwrap(), key);
        if let Err(e) = stack::wait_receiving(&all[2..3], None, 30, Duration::from_secs(15)) {
            panic!(
                "the added destination: {e}; relay log:\n{}",
                s.relay_log(key)
            );
        }
    });
    assert_eq!(
        hooks.calls("publish", &all[0].key).len(),
        1,
        "unchanged: one session"
    );
    assert_eq!(hooks.calls("publish_done", &all[0].key).len(), 0);
    let removed = common::wait_for(Duration::from_secs(5), Duration::from_millis(100), || {
        (hooks.calls("publish_done", &all[1].key).len() == 1).then_some(())
    });
    assert!(
        removed.is_some(),
        "the removed destination's session did not end"
    );
    assert_eq!(
        hooks.calls("publish", &all[2].key).len(),
        1,
        "added: one session"
    );
    assert_eq!(s.cp.count_for("POST", STREAM_END, key), 0);
    let log = s.relay_log(key);
    assert!(
        log.contains("1 kept, 1 added, 1 removed") || log.contains("removed"),
        "{log}"
    );

    // `neustream refresh` while the publisher stays: 2 is replaced by 1 again.
    stack::add_stream(&s.cp, key, &[all[0].clone(), all[1].clone()]);
    let env = s.hook_env(key, &second);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let out = s
        .machine
        .run_env(Some("mediamtx"), &env, &["neustream", "refresh", key]);
    assert!(
        out.status.success(),
        "neustream refresh {key}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    if let Err(e) = stack::wait_receiving(
        &all[1..2],
        Some(&[all[1].frames()]),
        30,
        Duration::from_secs(15),
    ) {
        panic!("refresh: {e}; relay log:\n{}", s.relay_log(key));
    }
    assert_eq!(
        hooks.calls("publish", &all[0].key).len(),
        1,
        "still one session"
    );
    let ended = common::wait_for(Duration::from_secs(5), Duration::from_millis(100), || {
        (hooks.calls("publish_done", &all[2].key).len() == 1).then_some(())
    });
    assert!(
        ended.is_some(),
        "refresh did not close the removed destination"
    );
    assert_eq!(s.relay(key, &["NRestarts"])["NRestarts"], "0");
}

#[test]
fn a_key_refused_on_the_reconnect_ends_the_grace_at_once() {
    use common::control_plane_double::Reply;
    let s = Stack::boot("grace-refused");
    let hooks = PublishHooks::start();
    let servers = servers(&s, &hooks, 1);
    let dests = dests(&servers, "ref");
    let key = "gracerefused01";
    let (first, second) = (stack::source_id(1), stack::source_id(2));
    let mut publisher = go_live(&s, key, &dests, &first, "30s");
    publisher.stop();
    std::thread::scope(|scope| {
        let waiting = scope.spawn(|| {
            let started = Instant::now();
            (hook(&s, "unpublish", key, &first, "30s"), started.elapsed())
        });
        std::thread::sleep(Duration::from_secs(2));
        // The streamer's plan ran out meanwhile: the reconnect is refused.
        s.cp.script_auth(
            key,
            vec![Reply::Text(403, "Streaming hour limit exceeded".into())],
        );
        let _back = s.publish(key);
        std::thread::sleep(Duration::from_millis(500));
        let run = hook(&s, "ready", key, &second, "30s");
        assert!(!run.ok(), "a refused key is not relayed");
        let (unpublish, waited) = waiting.join().unwrap();
        s.assert_ok(&unpublish, key);
        assert!(
            waited < Duration::from_secs(10),
            "the old publisher's grace went on for {waited:?} after the refusal"
        );
    });
    let p = s.relay(key, &["ActiveState"]);
    assert_eq!(p["ActiveState"], "inactive", "{p:?}");
    assert_eq!(
        s.cp.count_for("POST", STREAM_END, key),
        1,
        "one end, not two"
    );
    assert_eq!(hooks.calls("publish_done", &dests[0].key).len(), 1);
    assert!(s.ffmpegs().is_empty(), "ffmpeg left: {:?}", s.ffmpegs());
}
