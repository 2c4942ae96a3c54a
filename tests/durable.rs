//! No stream end is ever lost (issue 11): MediaMTX killed, stopped or restarted with streams
//! live, the Control Plane down around the end of a stream, the host losing power. Each on a
//! real systemd (test machine), the real MediaMTX as the shipped mediamtx.service, the Control
//! Plane double and three nginx-rtmp destinations; every wait bounded.
//!
//! "Exactly one stream-end" counts the stream-ends the double answered 2xx: the ones a real
//! Control Plane acts on (failed attempts during an outage are recorded, and counted apart).

mod common;

use std::time::{Duration, Instant};

use common::control_plane_double::Reply;
use common::machine::Options;
use common::mediamtx::{self as mtx, ms, Feed, HookNames};
use common::scene::{Scene, STREAM_END};

const SESSIONS: &str = "/var/lib/neustream/sessions";

fn record(s: &Scene, key: &str) -> Option<String> {
    let out = s
        .ingest
        .machine
        .run(&["cat", &format!("{SESSIONS}/{key}.json")]);
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Goes live on `key`: published, relayed to the three destinations, hooks done.
fn go_live(s: &Scene, key: &str, tag: &str) -> Feed {
    s.add_stream(key);
    let feed = s.publish(key, tag);
    s.wait_relay(key, "active", Duration::from_secs(15));
    let base = s.frames(key);
    s.wait_receiving(key, &base, 30);
    s.ingest.wait_hooks_done(Duration::from_secs(15));
    feed
}

fn ffmpegs(s: &Scene) -> usize {
    s.ingest.machine.processes("ffmpeg").len()
}

fn relay_state(s: &Scene, key: &str) -> String {
    s.relay(key, &["ActiveState"])["ActiveState"].clone()
}

/// Waits until every key's relay is inactive, no ffmpeg runs in the machine and each key has
/// `ends` confirmed stream-ends; the time it took.
fn wait_all_ended(s: &Scene, keys: &[&str], ends: usize, timeout: Duration) -> Duration {
    let started = Instant::now();
    let done = common::wait_for(timeout, ms(50), || {
        (keys
            .iter()
            .all(|k| relay_state(s, k) == "inactive" && s.cp.confirmed_ends(k) >= ends)
            && ffmpegs(s) == 0)
            .then(|| started.elapsed())
    });
    done.unwrap_or_else(|| {
        let states: Vec<(String, String, usize)> = keys
            .iter()
            .map(|k| (k.to_string(), relay_state(s, k), s.cp.confirmed_ends(k)))
            .collect();
        panic!(
            "not ended within {timeout:?}: (key, relay, confirmed ends) {states:?}, {} ffmpeg \
             in the machine\n{}",
            ffmpegs(s),
            s.ingest.log()
        )
    })
}

fn mediamtx_pid(s: &Scene) -> String {
    s.ingest.machine.show(mtx::UNIT, &["MainPID"])["MainPID"].clone()
}

/// Waits for MediaMTX to be back (a new MainPID, its API answering).
fn wait_mediamtx_back(s: &Scene, old_pid: &str) -> Duration {
    let started = Instant::now();
    let back = common::wait_for(Duration::from_secs(20), ms(100), || {
        let pid = mediamtx_pid(s);
        (pid != "0" && pid != old_pid && s.ingest.api("/v3/paths/list").is_some())
            .then(|| started.elapsed())
    });
    back.unwrap_or_else(|| panic!("MediaMTX did not come back\n{}", s.ingest.log()))
}

/// `kill -9` of MediaMTX mid-stream: no hook runs, yet within 10 s the relay is gone, no ffmpeg
/// is left and the Control Plane has exactly one stream-end (mediamtx.service's ExecStopPost=
/// runs `neustream reconcile --mediamtx-stopped`). MediaMTX restarts, and a new publish of the
/// same key is relayed and ends as usual.
#[test]
fn kill_9_of_mediamtx_ends_the_stream_once() {
    let s = Scene::start("k9", mtx::VERSION, HookNames::Shipped);
    let key = "crash_key_1";
    let mut feed = go_live(&s, key, "a");
    let live = record(&s, key).expect("a session record while live");
    assert!(live.contains("\"state\": \"live\""), "{live}");
    assert!(
        !live.contains("_dest"),
        "no destination key in the record: {live}"
    );
    assert_eq!(
        s.ingest
            .machine
            .ok(&["stat", "-c", "%U %a", &format!("{SESSIONS}/{key}.json")]),
        "mediamtx 600\n"
    );

    let pid = mediamtx_pid(&s);
    let killed = Instant::now();
    s.ingest.machine.ok(&["kill", "-9", &pid]);
    let ended = wait_all_ended(&s, &[key], 1, Duration::from_secs(10));
    let back = wait_mediamtx_back(&s, &pid);
    eprintln!(
        "kill -9: relay gone, no ffmpeg and the stream-end confirmed {ended:?} after the kill; \
         MediaMTX answering again {back:?} later ({:?} after the kill)",
        killed.elapsed()
    );
    feed.kill();
    std::thread::sleep(ms(2000));
    let log = s.ingest.log();
    assert_eq!(s.sessions(key), ["auth", "end"], "{log}");
    assert!(
        log.contains(&format!("{key}: session {key}/")) && log.contains("MediaMTX is not running"),
        "{log}"
    );
    assert_eq!(record(&s, key), None);
    assert_eq!(s.ingest.env_file(key), None);

    // The same key publishes again once MediaMTX is back.
    publishes_again(&s, key, Duration::from_secs(15));
}

/// After one session of `key` has ended: a new publish of it is relayed, and ends as usual
/// (its relay gone within `stop_within`), with its own stream-end.
fn publishes_again(s: &Scene, key: &str, stop_within: Duration) {
    let mut again = go_live(s, key, "b");
    assert!(record(s, key).is_some());
    again.stop();
    s.wait_relay(key, "inactive", stop_within);
    s.ingest.wait_hooks_done(Duration::from_secs(20));
    std::thread::sleep(ms(1000));
    assert_eq!(
        s.sessions(key),
        ["auth", "end", "auth", "end"],
        "{}",
        s.ingest.log()
    );
    assert_eq!(s.cp.confirmed_ends(key), 2);
    assert_eq!(record(s, key), None);
}

fn source_state(s: &Scene, key: &str) -> String {
    let out = s
        .ingest
        .machine
        .run(&["cat", &format!("/run/neustream/relays/{key}/state.json")]);
    let json: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    json["source"]["state"].as_str().unwrap_or("").to_string()
}

/// With a reconnect grace, `kill -9` of MediaMTX is a publisher drop like any other: the relay
/// keeps every destination (the same publish session at each) through the crash and
/// MediaMTX's restart, the publisher's reconnect takes the stream over, and no stream-end is
/// sent. Then `systemctl stop mediamtx` (on purpose) ends the stream at once, grace or not.
///
/// MediaMTX is killed 1 to 3 s after the relay went live (a different time each run): the
/// relay is then just starting its destinations, and MediaMTX's ExecStopPost= reconcile runs
/// while the relay enters its grace (issue 18: a reconcile that read the relay's state file
/// then ended the session).
#[test]
fn with_a_grace_a_mediamtx_crash_is_a_publisher_drop() {
    let s = Scene::start("k9grace", mtx::VERSION, HookNames::Shipped);
    s.set_grace("20s");
    let key = "crash_grace_2";
    s.add_stream(key);
    let mut old = s.publish(key, "a");
    s.wait_relay(key, "active", Duration::from_secs(15));
    let live = Instant::now();
    s.ingest.wait_hooks_done(Duration::from_secs(15));
    let old_id = s.publisher_id(key);
    let before = s.relay(key, &["NRestarts", "MainPID"]);
    let pid = mediamtx_pid(&s);
    let gap = s.frames(key);
    // 1.0 to 2.7 s, and the kill itself takes a few tens of milliseconds.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    let live_for = ms(1000 + nanos % 1701);
    std::thread::sleep(live_for.saturating_sub(live.elapsed()));
    s.ingest.machine.ok(&["kill", "-9", &pid]);
    let killed_at = live.elapsed();
    old.kill();
    eprintln!("kill -9 of MediaMTX {killed_at:?} after the relay went live");
    let back = wait_mediamtx_back(&s, &pid);
    // Meanwhile the destinations got the last picture, and the session is still live.
    s.wait_receiving(key, &gap, 10);
    assert_eq!(relay_state(&s, key), "active", "{}", s.ingest.log());
    assert_eq!(source_state(&s, key), "grace", "{}", s.relay_log(key));
    assert_eq!(s.cp.confirmed_ends(key), 0, "{}", s.ingest.log());
    assert!(record(&s, key).is_some_and(|r| r.contains("\"state\": \"live\"")));

    let reconnect = Instant::now();
    let mut new = s.publish(key, "b");
    s.wait_new_owner(key, &old_id);
    let base = s.frames(key);
    s.wait_receiving(key, &base, 30);
    eprintln!(
        "kill -9 with a 20 s grace: MediaMTX back after {back:?}; the reconnected publisher's \
         picture at every destination {:?} after it published",
        reconnect.elapsed()
    );
    s.ingest.wait_hooks_done(Duration::from_secs(15));
    let log = s.ingest.log();
    for (i, dest) in s.dests.iter().enumerate() {
        assert_eq!(
            dest.publishes(&common::scene::dest_key(key, i)),
            1,
            "destination {i}: one publish session across the crash\n{log}"
        );
    }
    let after = s.relay(key, &["NRestarts", "MainPID"]);
    assert_eq!(after, before, "the same relay all along\n{log}");
    assert_eq!(s.sessions(key), ["auth", "auth"], "no end\n{log}");

    // The unpublish hook MediaMTX runs while stopping never gets systemd's SIGTERM: it sees
    // MediaMTX exit and ends the stream, instead of holding the stop for the grace.
    let stopped = Instant::now();
    s.ingest.machine.ok(&["systemctl", "stop", mtx::UNIT]);
    let returned = stopped.elapsed();
    let ended = wait_all_ended(&s, &[key], 1, Duration::from_secs(10));
    eprintln!(
        "systemctl stop mediamtx with a 20 s grace: returned after {returned:?}; relay gone, \
         no ffmpeg, the stream-end confirmed {ended:?} after that"
    );
    assert!(
        returned + ended < Duration::from_secs(10),
        "the stop waited for the grace: {returned:?} + {ended:?}\n{}",
        s.ingest.log()
    );
    new.kill();
    std::thread::sleep(ms(1000));
    assert_eq!(
        s.sessions(key),
        ["auth", "auth", "end"],
        "{}",
        s.ingest.log()
    );
    assert_eq!(record(&s, key), None);
    assert_eq!(s.ingest.env_file(key), None);
}

/// MediaMTX run as another unit than mediamtx.service (a copy of it), its API not configured,
/// mediamtx.service installed and not running (issue 18): the session records the unit
/// MediaMTX really runs as, found by its hook; `kill -9` of the relay restarts it in the same
/// session with no stream-end, through reconcile runs too; `systemctl stop mediamtx` (not
/// running anyway) changes nothing; stopping the unit MediaMTX runs as ends the stream once.
#[test]
fn mediamtx_under_another_unit_name_is_found_by_its_hooks() {
    const ALT: &str = "ingest-mtx.service";
    let s = Scene::start_as(
        "altunit",
        mtx::VERSION,
        HookNames::Shipped,
        Options::default(),
        ALT,
    );
    let m = &s.ingest.machine;
    m.ok(&[
        "sed",
        "-i",
        "/^NEUSTREAM_MEDIAMTX_API_URL=/d",
        "/etc/neustream/neustream.env",
    ]);
    assert_eq!(
        m.show(mtx::UNIT, &["ActiveState"])["ActiveState"],
        "inactive"
    );
    let key = "alt_unit_4";
    let mut feed = go_live(&s, key, "a");
    let invocation = m.show(ALT, &["InvocationID"])["InvocationID"].clone();
    let rec = record(&s, key).expect("a session record while live");
    assert!(
        rec.contains(&format!("\"unit\": \"{ALT}\""))
            && rec.contains(&format!("\"invocation\": \"{invocation}\"")),
        "{rec}"
    );

    // kill -9 of the relay: restarted, the same session, no stream-end.
    let before = s.relay(key, &["MainPID"]);
    let killed = Instant::now();
    m.ok(&["kill", "-9", &before["MainPID"]]);
    let restarted = common::wait_for(Duration::from_secs(10), ms(20), || {
        let p = s.relay(key, &["MainPID", "NRestarts"]);
        (p["NRestarts"] == "1" && p["MainPID"] != "0" && p["MainPID"] != before["MainPID"])
            .then(|| killed.elapsed())
    });
    let took = restarted.unwrap_or_else(|| panic!("no restart\n{}", s.relay_log(key)));
    s.wait_relay(key, "active", Duration::from_secs(20));
    let active = killed.elapsed();
    let base = s.frames(key);
    s.wait_receiving(key, &base, 30);
    eprintln!(
        "{ALT}: kill -9 of the relay, restarted {took:?} after the kill, active after \
         {active:?}"
    );
    assert!(took < Duration::from_secs(3), "{took:?}");
    m.ok(&["systemctl", "start", "neustream-reconcile.service"]);
    assert_eq!(relay_state(&s, key), "active");
    assert_eq!(record(&s, key).as_deref(), Some(rec.as_str()));
    assert_eq!(
        s.cp.count_for("POST", STREAM_END, key),
        0,
        "{}",
        s.ingest.log()
    );

    // mediamtx.service is not how MediaMTX runs here: stopping it changes nothing.
    m.ok(&["systemctl", "stop", mtx::UNIT]);
    m.ok(&["systemctl", "start", "neustream-reconcile.service"]);
    std::thread::sleep(ms(1000));
    assert_eq!(relay_state(&s, key), "active");
    assert_eq!(record(&s, key).as_deref(), Some(rec.as_str()));
    assert_eq!(
        s.cp.count_for("POST", STREAM_END, key),
        0,
        "{}",
        s.ingest.log()
    );

    // Stopping the unit MediaMTX runs as ends the stream, once.
    let stopped = Instant::now();
    m.ok(&["systemctl", "stop", ALT]);
    let ended = wait_all_ended(&s, &[key], 1, Duration::from_secs(10));
    eprintln!(
        "systemctl stop {ALT}: returned after {:?}; the stream-end confirmed {ended:?} after \
         the stop began",
        stopped.elapsed()
    );
    feed.kill();
    std::thread::sleep(ms(2000));
    let log = s.ingest.log();
    assert_eq!(s.sessions(key), ["auth", "end"], "{log}");
    assert_eq!(s.cp.confirmed_ends(key), 1, "{log}");
    assert_eq!(record(&s, key), None);
    assert_eq!(s.ingest.env_file(key), None);
}

/// With a reconnect grace, a MediaMTX that crashed and is not back within it (its restart
/// held off here by a drop-in) ends the stream when the grace runs out: the relay keeps the
/// destinations meanwhile, then within 10 s of the grace's end it is gone, no ffmpeg is left
/// and the Control Plane has exactly one stream-end (the relay's OnSuccess= runs reconcile,
/// which finds the MediaMTX unit recorded for the session not running).
#[test]
fn with_a_grace_a_mediamtx_not_back_in_time_ends_the_stream_once() {
    let grace = Duration::from_secs(6);
    let s = Scene::start_with(
        "k9late",
        mtx::VERSION,
        HookNames::Shipped,
        Options {
            units: vec![(
                format!("{}.d/slow-restart.conf", mtx::UNIT),
                "[Service]\nRestartSec=40\n".into(),
            )],
            ..Options::default()
        },
    );
    s.set_grace("6s");
    let key = "crash_late_3";
    let mut feed = go_live(&s, key, "a");
    let pid = mediamtx_pid(&s);
    let killed = Instant::now();
    s.ingest.machine.ok(&["kill", "-9", &pid]);
    feed.kill();
    std::thread::sleep(ms(3000));
    assert_eq!(
        relay_state(&s, key),
        "active",
        "kept within the grace\n{}",
        s.ingest.log()
    );
    assert_eq!(source_state(&s, key), "grace", "{}", s.relay_log(key));
    assert_eq!(s.cp.confirmed_ends(key), 0);
    let ended = wait_all_ended(
        &s,
        &[key],
        1,
        grace + Duration::from_secs(10) - killed.elapsed(),
    );
    let after_kill = killed.elapsed();
    eprintln!(
        "kill -9 with a 6 s grace, MediaMTX kept down: relay gone, no ffmpeg, the stream-end \
         confirmed {after_kill:?} after the kill ({:?} after the grace ran out)",
        after_kill.saturating_sub(grace)
    );
    assert!(
        after_kill >= grace,
        "ended before the grace ran out: {ended:?}"
    );
    std::thread::sleep(ms(1000));
    let log = s.ingest.log();
    assert_eq!(s.sessions(key), ["auth", "end"], "{log}");
    assert!(
        log.contains(&format!("{key}: session {key}/"))
            && log.contains("ended: MediaMTX is not running"),
        "{log}"
    );
    assert_eq!(record(&s, key), None);
    assert_eq!(s.ingest.env_file(key), None);

    // MediaMTX back (at once, not after its 40 s), the key publishes again.
    s.ingest.machine.ok(&["systemctl", "restart", mtx::UNIT]);
    wait_mediamtx_back(&s, &pid);
    publishes_again(&s, key, grace + Duration::from_secs(15));
}

/// `systemctl stop mediamtx`, then `systemctl restart mediamtx`, with three live streams each
/// time: within 10 s every relay is gone (the unpublish hooks, and mediamtx.service's
/// ExecStopPost=), no ffmpeg is left, each stream has exactly one stream-end, and no relay is
/// left failed or started again.
#[test]
fn stop_and_restart_of_mediamtx_end_three_streams_once_each() {
    let s = Scene::start("stop3", mtx::VERSION, HookNames::Shipped);
    let keys = ["three_a", "three_b", "three_c"];
    for (round, verb) in ["stop", "restart"].iter().enumerate() {
        let mut feeds: Vec<Feed> = keys
            .iter()
            .map(|k| go_live(&s, k, &format!("{verb}-{round}")))
            .collect();
        let pid = mediamtx_pid(&s);
        let started = Instant::now();
        s.ingest.machine.ok(&["systemctl", verb, mtx::UNIT]);
        let returned = started.elapsed();
        let ended = wait_all_ended(&s, &keys, round + 1, Duration::from_secs(10));
        eprintln!(
            "systemctl {verb} mediamtx with 3 streams: returned after {returned:?}; relays gone, \
             no ffmpeg, 3 stream-ends confirmed {ended:?} after it returned"
        );
        if *verb == "stop" {
            s.ingest.machine.ok(&["systemctl", "start", mtx::UNIT]);
        }
        wait_mediamtx_back(&s, &pid);
        for f in &mut feeds {
            f.kill();
        }
        // Nothing comes back to life: no relay restarted by the propagated restart, none failed.
        std::thread::sleep(ms(3000));
        for k in keys {
            let p = s.relay(k, &["ActiveState", "Result"]);
            assert_eq!(
                (p["ActiveState"].as_str(), p["Result"].as_str()),
                ("inactive", "success"),
                "{k} after {verb}\n{}\n{}",
                s.ingest.log(),
                s.relay_log(k)
            );
            assert_eq!(s.cp.confirmed_ends(k), round + 1, "{k}\n{}", s.ingest.log());
            assert_eq!(record(&s, k), None);
        }
    }
    for k in keys {
        assert_eq!(s.sessions(k), ["auth", "end", "auth", "end"], "{k}");
    }
}

/// The Control Plane answers 500 for a minute and is then unreachable for another (2 minutes
/// in all) around the end of a stream: the unpublish hook queues the stream-end it could not
/// deliver and says so; neustream-reconcile.timer (every 3 s here: a drop-in, as an operator
/// would write one) delivers it once the Control Plane is back, exactly once.
#[test]
fn a_control_plane_outage_delays_the_stream_end_but_never_loses_it() {
    let options = Options {
        units: vec![(
            "neustream-reconcile.timer.d/test.conf".into(),
            "[Timer]\nOnActiveSec=3s\nOnUnitActiveSec=3s\nAccuracySec=100ms\n".into(),
        )],
        ..Options::default()
    };
    let s = Scene::start_with("outage", mtx::VERSION, HookNames::Shipped, options);
    let m = &s.ingest.machine;
    m.ok(&["systemctl", "start", "neustream-reconcile.timer"]);
    let key = "outage_key";
    let mut feed = go_live(&s, key, "a");

    let outage = Duration::from_secs(120);
    let began = Instant::now();
    s.cp.outage(outage, Reply::Text(500, "Internal server error".into()));
    // The timer runs every 3 s meanwhile and must leave the live stream alone.
    std::thread::sleep(Duration::from_secs(20));
    assert_eq!(relay_state(&s, key), "active");
    assert_eq!(
        s.cp.count_for("POST", STREAM_END, key),
        0,
        "{}",
        s.ingest.log()
    );
    feed.stop();
    s.wait_relay(key, "inactive", Duration::from_secs(15));
    let queued = format!("queued in {SESSIONS}/{key}.json");
    let said = common::wait_for(Duration::from_secs(45), ms(250), || {
        s.ingest.log().contains(&queued).then_some(())
    });
    assert!(
        said.is_some(),
        "unpublish never said '{queued}'\n{}",
        s.ingest.log()
    );
    let pending = record(&s, key).expect("the pending record");
    assert!(pending.contains("\"state\": \"ending\""), "{pending}");
    // Second half: unreachable (connections dropped unanswered).
    let half = (outage / 2).saturating_sub(began.elapsed());
    std::thread::sleep(half);
    s.cp.outage(outage.saturating_sub(began.elapsed()), Reply::Drop);
    std::thread::sleep(outage.saturating_sub(began.elapsed()));
    let over = Instant::now();
    assert_eq!(s.cp.confirmed_ends(key), 0);
    let attempts = s.cp.count_for("POST", STREAM_END, key);

    let delivered = common::wait_for(Duration::from_secs(30), ms(100), || {
        (s.cp.confirmed_ends(key) == 1).then(|| over.elapsed())
    });
    let delivered =
        delivered.unwrap_or_else(|| panic!("no stream-end after the outage\n{}", s.ingest.log()));
    // Several timer periods later: still exactly one.
    std::thread::sleep(Duration::from_secs(12));
    eprintln!(
        "Control Plane outage of {outage:?}: {attempts} failed stream-end attempts during it; \
         the stream-end confirmed {delivered:?} after it ended; {} confirmed in all",
        s.cp.confirmed_ends(key)
    );
    assert_eq!(s.cp.confirmed_ends(key), 1, "{}", s.ingest.log());
    assert_eq!(record(&s, key), None);
    assert!(s.ingest.active_relays().is_empty());
    let requests = s.cp.requests();
    let after: Vec<u16> = requests
        .iter()
        .filter(|r| r.path == STREAM_END && r.body == format!("name={key}"))
        .map(|r| r.status)
        .collect();
    assert_eq!(
        after.iter().filter(|st| **st == 200).count(),
        1,
        "{after:?}"
    );
    assert!(after.contains(&500) && after.contains(&0), "{after:?}");
}

/// The host loses power mid-stream (every process of the machine killed at once: no hook, no
/// ExecStopPost) and boots again over the same /var/lib/neustream: MediaMTX's ExecStartPre=
/// ends the session it finds and the Control Plane gets exactly one stream-end.
#[test]
fn after_a_power_loss_the_next_boot_reports_the_end_once() {
    let state = common::scratch("durable-state");
    let options = Options {
        state: Some(state.clone()),
        ..Options::default()
    };
    let mut s = Scene::start_with("power1", mtx::VERSION, HookNames::Shipped, options);
    let key = "power_key";
    let mut feed = go_live(&s, key, "a");
    let on_host = state.join("sessions").join(format!("{key}.json"));
    let text = std::fs::read_to_string(&on_host).expect("the record on the persistent directory");
    assert!(text.contains("\"state\": \"live\""), "{text}");

    s.ingest.machine.power_off();
    feed.kill();
    std::thread::sleep(ms(1000));
    assert_eq!(s.cp.count_for("POST", STREAM_END, key), 0);
    assert!(on_host.exists(), "the record survives the power loss");

    let booting = Instant::now();
    s.ingest.power_cycle("power2");
    let ended = common::wait_for(Duration::from_secs(15), ms(50), || {
        (s.cp.confirmed_ends(key) == 1).then(|| booting.elapsed())
    });
    let ended = ended.unwrap_or_else(|| panic!("no stream-end after boot\n{}", s.ingest.log()));
    eprintln!("power loss: the stream-end confirmed {ended:?} after the boot began");
    std::thread::sleep(ms(3000));
    let log = s.ingest.log();
    assert_eq!(s.sessions(key), ["auth", "end"], "{log}");
    assert!(log.contains("MediaMTX is not running"), "{log}");
    assert!(
        !on_host.exists(),
        "the record goes once the end is confirmed"
    );
    assert!(s.ingest.active_relays().is_empty());
    // The key can go live again on the new boot.
    let mut again = go_live(&s, key, "b");
    again.stop();
    s.wait_relay(key, "inactive", Duration::from_secs(15));
}

/// A clean reboot mid-stream (the machine is shut down, so systemd stops MediaMTX, which runs
/// the unpublish hook and its ExecStopPost=) and a boot over the same /var/lib/neustream:
/// exactly one stream-end in all, and nothing left for the new boot to report.
#[test]
fn a_clean_reboot_reports_the_end_once() {
    let state = common::scratch("durable-state-reboot");
    let options = Options {
        state: Some(state.clone()),
        ..Options::default()
    };
    let mut s = Scene::start_with("reboot1", mtx::VERSION, HookNames::Shipped, options);
    let key = "reboot_key";
    let mut feed = go_live(&s, key, "a");
    let on_host = state.join("sessions").join(format!("{key}.json"));
    assert!(on_host.exists());
    let started = Instant::now();
    s.ingest.machine.shutdown();
    // Reported while the machine shut down: MediaMTX stops before D-Bus, polkit and the network.
    assert_eq!(s.cp.confirmed_ends(key), 1);
    assert!(!on_host.exists());
    eprintln!(
        "clean reboot: shut down in {:?}, the end reported before it finished",
        started.elapsed()
    );
    s.ingest.reboot("reboot2");
    feed.kill();
    let ended = common::wait_for(Duration::from_secs(15), ms(50), || {
        (s.cp.confirmed_ends(key) == 1).then_some(())
    });
    assert!(
        ended.is_some(),
        "no stream-end
{}",
        s.ingest.log()
    );
    std::thread::sleep(ms(3000));
    assert_eq!(s.sessions(key), ["auth", "end"], "{}", s.ingest.log());
    assert!(!on_host.exists());
}

/// A session whose publisher vanished without its unpublish hook, its relay gone (here: an env
/// file and a record made by hand for a key nobody publishes, beside a live stream):
/// `systemctl start neustream-reconcile` (as the timer does; user mediamtx, its sandbox) asks
/// MediaMTX's API and reports its end once, and leaves the live stream alone: no end for a key
/// that is live. (A relay that runs owns its session: see a_crashed_relay_is_restarted_never_ended
/// in tests/system.rs.)
#[test]
fn reconcile_ends_a_session_without_publisher_and_leaves_live_ones() {
    let s = Scene::start("orphan", mtx::VERSION, HookNames::Shipped);
    let m = &s.ingest.machine;
    let live = "still_live";
    let _feed = go_live(&s, live, "a");
    let ghost = "ghost_key";
    s.add_stream(ghost);
    // The live stream's env file and record, renamed: a session the Control Plane holds, with
    // no publisher on live/ghost_key and no relay running.
    let script = format!(
        "set -e; cd /run/neustream/streams; cp -p {live}.env {ghost}.env; \
         sed -i 's/^NEUSTREAM_STREAM_KEY=.*/NEUSTREAM_STREAM_KEY=\"{ghost}\"/' {ghost}.env; \
         sed 's/\"{live}/\"{ghost}/g' {SESSIONS}/{live}.json > {SESSIONS}/{ghost}.json; \
         chown mediamtx: {SESSIONS}/{ghost}.json; chmod 600 {SESSIONS}/{ghost}.json"
    );
    let out = m.sh(&script);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(relay_state(&s, ghost), "inactive");

    m.ok(&["systemctl", "start", "neustream-reconcile.service"]);
    let p = m.show("neustream-reconcile.service", &["Result", "User"]);
    assert_eq!(
        (p["Result"].as_str(), p["User"].as_str()),
        ("success", "mediamtx")
    );
    let log = m.journal(&["-u", "neustream-reconcile.service", "-o", "cat"]);
    assert_eq!(relay_state(&s, ghost), "inactive", "{log}");
    assert_eq!(s.cp.confirmed_ends(ghost), 1, "{log}");
    assert!(
        log.contains(&format!("{ghost}: session {live}/"))
            || log.contains(&format!("{ghost}: session {ghost}/")),
        "{log}"
    );
    assert!(log.contains("no publisher left in MediaMTX"), "{log}");
    assert_eq!(record(&s, ghost), None);
    assert_eq!(s.ingest.env_file(ghost), None);
    // The live stream goes on untouched.
    assert_eq!(relay_state(&s, live), "active");
    assert_eq!(s.cp.count_for("POST", STREAM_END, live), 0, "{log}");
    assert!(record(&s, live).is_some());
    let base = s.frames(live);
    s.wait_receiving(live, &base, 30);
    // Run again: idempotent, nothing more is sent.
    m.ok(&["systemctl", "start", "neustream-reconcile.service"]);
    assert_eq!(s.cp.confirmed_ends(ghost), 1);
    assert_eq!(s.cp.count_for("POST", STREAM_END, live), 0);
}

/// The Control Plane's auth and stream-end (2xx answers only), in order, for `key`.
fn confirmed_sessions(s: &Scene, key: &str) -> Vec<&'static str> {
    let form = format!("name={key}");
    s.cp.requests()
        .iter()
        .filter(|r| r.method == "POST" && r.body == form && (200..300).contains(&r.status))
        .filter_map(|r| match r.path.as_str() {
            common::scene::AUTH => Some("auth"),
            STREAM_END => Some("end"),
            _ => None,
        })
        .collect()
}

/// A stream-end is pending (its stream-end answered 500) when the same key publishes again.
/// If the Control Plane still cannot take the end, the new publish continues its active
/// session and the pending end is void: no end is ever sent for the key while it is live
/// again, even once the Control Plane recovers and the timer runs. If it can, `ready` sends the
/// pending end first, then authenticates: the old session closes before the new one opens.
#[test]
fn a_pending_end_never_closes_a_key_that_is_live_again() {
    let options = Options {
        units: vec![(
            "neustream-reconcile.timer.d/test.conf".into(),
            "[Timer]\nOnActiveSec=3s\nOnUnitActiveSec=3s\nAccuracySec=100ms\n".into(),
        )],
        ..Options::default()
    };
    let s = Scene::start_with("relive", mtx::VERSION, HookNames::Shipped, options);
    let m = &s.ingest.machine;
    // unpublish gives up after 2 s here (30 s by default): the queue takes over sooner.
    m.ok(&[
        "sh",
        "-c",
        "echo NEUSTREAM_STREAM_END_TIMEOUT=2s >> /etc/neustream/neustream.env",
    ]);
    m.ok(&["systemctl", "start", "neustream-reconcile.timer"]);
    let key = "relive_key";
    let failing = || Reply::Text(500, "Internal server error".into());
    let queued = format!("queued in {SESSIONS}/{key}.json");
    let wait_queued = |n: usize| {
        let done = common::wait_for(Duration::from_secs(20), ms(100), || {
            (s.ingest.log().matches(&queued).count() >= n).then_some(())
        });
        assert!(done.is_some(), "no '{queued}' #{n}\n{}", s.ingest.log());
    };

    // 1. The end cannot be delivered; the key goes live again meanwhile.
    let mut a = go_live(&s, key, "a");
    s.cp.script_stream_end(vec![failing()]);
    a.stop();
    s.wait_relay(key, "inactive", Duration::from_secs(15));
    wait_queued(1);
    let mut b = go_live(&s, key, "b");
    let rec = record(&s, key).unwrap();
    assert!(rec.contains("\"state\": \"live\""), "{rec}");
    s.cp.script_stream_end(vec![Reply::Contract]);
    // The Control Plane takes ends again; the timer runs four times: nothing is sent.
    std::thread::sleep(Duration::from_secs(12));
    assert_eq!(relay_state(&s, key), "active");
    assert_eq!(
        confirmed_sessions(&s, key),
        ["auth", "auth"],
        "{}",
        s.ingest.log()
    );
    b.stop();
    s.wait_relay(key, "inactive", Duration::from_secs(15));
    s.ingest.wait_hooks_done(Duration::from_secs(15));
    assert_eq!(confirmed_sessions(&s, key), ["auth", "auth", "end"]);

    // 2. The end is pending when the key publishes again and the Control Plane is back: ready
    // sends it before it authenticates (the timer is stopped, so that only ready can).
    m.ok(&["systemctl", "stop", "neustream-reconcile.timer"]);
    let mut c = go_live(&s, key, "c");
    s.cp.script_stream_end(vec![failing()]);
    c.stop();
    s.wait_relay(key, "inactive", Duration::from_secs(15));
    wait_queued(2);
    s.cp.script_stream_end(vec![Reply::Contract]);
    let mut d = go_live(&s, key, "d");
    let log = s.ingest.log();
    assert!(
        log.contains(&format!("{key}: pending stream end of session {key}/")),
        "{log}"
    );
    assert_eq!(
        confirmed_sessions(&s, key),
        ["auth", "auth", "end", "auth", "end", "auth"],
        "{log}"
    );
    d.stop();
    s.wait_relay(key, "inactive", Duration::from_secs(15));
    s.ingest.wait_hooks_done(Duration::from_secs(15));
    assert_eq!(
        confirmed_sessions(&s, key),
        ["auth", "auth", "end", "auth", "end", "auth", "end"]
    );
    assert_eq!(record(&s, key), None);
}
