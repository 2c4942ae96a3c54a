//! System tests on a real systemd (an ephemeral systemd-nspawn machine, see
//! tests/common/machine.rs): the whole lifecycle, as MediaMTX and an operator see it.
//!
//! Each test boots its own machine; around it, on the host's 127.0.0.1, run the Control Plane
//! double, an nginx-rtmp ingest that synthetic publishers publish to, and nginx-rtmp
//! destinations that record what they receive (tests/common/stack.rs). Hooks run inside the
//! machine as MediaMTX runs them: user `mediamtx`, MediaMTX's variables. The scenarios:
//!
//! 1. publish_fans_out_to_three_destinations_at_real_time
//! 2. systemd_owns_the_relay_restarts_limits_and_cgroup
//! 3. unpublish_stops_everything_and_reports_the_end_once
//! 4. rejected_keys_start_nothing_and_say_why
//! 5. a_late_unpublish_of_a_replaced_publisher_leaves_the_new_one_alone
//! 6. a_failing_destination_never_interrupts_the_others_and_resumes
//! 7. least_privilege_polkit_users_and_sandbox
//! 8. secrets_stay_secret_through_a_whole_stream (and `assert_secrets_kept` in the others)
//! 9. the_journal_tells_operators_which_stream_and_destination
//! 10. twenty_streams_at_once
//!
//! 11. a_crashed_relay_is_restarted_never_ended (issue 18)
//! 12. a_failed_relay_stays_failed_until_its_key_publishes_again (issue 18)
//!
//! plus env_file_round_trips_through_systemd_environment_file.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::control_plane_double::Reply;
use common::machine::{Machine, Options};
use common::media::{probe, Publisher};
use common::nginx::RtmpServer;
use common::stack::{self, Dest, Stack};

#[test]
fn machine_boots_with_the_relay_template_loaded() {
    let m = Machine::boot("smoke");
    let props = m.show(
        "neustream-relay@smoke.service",
        &[
            "LoadState",
            "Slice",
            "CPUQuotaPerSecUSec",
            "MemoryMax",
            "TasksMax",
            "User",
        ],
    );
    assert_eq!(props["LoadState"], "loaded");
    assert_eq!(props["Slice"], "neustream.slice");
    assert_eq!(props["CPUQuotaPerSecUSec"], "500ms");
    let file = unit_file("neustream-relay@.service");
    assert_eq!(
        props["MemoryMax"],
        size_bytes(&file["MemoryMax"]).to_string()
    );
    assert_eq!(props["TasksMax"], file["TasksMax"]);
    let id = m.ok(&["id", "mediamtx"]);
    assert!(id.contains("mediamtx"), "{id}");
    let dir = m.ok(&["stat", "-c", "%a %U", "/run/neustream/streams"]);
    assert_eq!(dir.trim(), "700 mediamtx");
    assert!(m.wait_state(
        "neustream-relay@smoke.service",
        "inactive",
        Duration::from_secs(1)
    ));
}

// ---------------------------------------------------------------------------------------------
// The whole lifecycle, driven like production.

const PLATFORMS: [&str; 3] = ["youtube", "twitch", "custom"];

/// `n` destination servers of a stack, named d0, d1, ...
fn servers(s: &Stack, n: usize) -> Vec<RtmpServer> {
    (0..n).map(|i| s.destination(&format!("d{i}"))).collect()
}

/// One destination per server, platforms in the order of [`PLATFORMS`], fresh secret keys.
fn dests(servers: &[RtmpServer], tag: &str) -> Vec<Dest> {
    servers
        .iter()
        .enumerate()
        .map(|(i, server)| {
            Dest::on(
                server,
                PLATFORMS[i % PLATFORMS.len()],
                &stack::secret_key(&format!("{tag}{i}")),
            )
        })
        .collect()
}

fn keys(dests: &[Dest]) -> Vec<String> {
    dests.iter().map(|d| d.key.clone()).collect()
}

/// Publishes `key` to the ingest and waits until the ingest has it, as MediaMTX runs
/// runOnReady only once the stream is ready.
fn publish(s: &Stack, key: &str) -> Publisher {
    let publisher = s.publish(key);
    let ready = common::wait_for(Duration::from_secs(15), Duration::from_millis(100), || {
        probe(&s.ingest.recording(key))
            .filter(|r| r.video_frames > 0)
            .map(|_| ())
    });
    assert!(ready.is_some(), "the ingest never got stream {key}");
    publisher
}

/// Publishes `key`, runs `ready`: the relay is active and every destination receives.
fn go_live(s: &Stack, key: &str, dests: &[Dest], source: &str) -> Publisher {
    stack::add_stream(&s.cp, key, dests);
    let publisher = publish(s, key);
    s.ready_ok(key, source);
    if let Err(e) = stack::wait_receiving(dests, None, 30, Duration::from_secs(15)) {
        panic!("{e}; relay log:\n{}", s.relay_log(key));
    }
    publisher
}

#[test]
fn publish_fans_out_to_three_destinations_at_real_time() {
    let s = Stack::boot("fanout");
    let servers = servers(&s, 3);
    let dests = dests(&servers, "fan");
    let key = "fanout01";
    stack::add_stream(&s.cp, key, &dests);
    let _publisher = publish(&s, key);

    let started = Instant::now();
    s.ready_ok(key, &stack::source_id(1));
    let hook_time = started.elapsed();
    let p = s.relay(key, &["ActiveState", "SubState", "MainPID"]);
    assert_eq!(p["ActiveState"], "active", "{p:?}\n{}", s.relay_log(key));
    let first = stack::wait_receiving(&dests, None, 1, Duration::from_secs(15))
        .unwrap_or_else(|e| panic!("{e}; relay log:\n{}", s.relay_log(key)));
    eprintln!("ready hook took {hook_time:?}; all 3 destinations receiving after {first:?}");

    // Real time, codecs unchanged: over a window of wall clock, each destination gains as much
    // media, at 30 fps, H.264 + AAC as published. The window opens once the start-up burst (the
    // relay catching up to the live edge) is over.
    stack::wait_receiving(&dests, None, 60, Duration::from_secs(10)).unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let source = probe(&s.ingest.recording(key)).unwrap();
    let span = |d: &Dest| d.probe().map_or(0.0, |r| r.video_span);
    let before: Vec<f64> = dests.iter().map(span).collect();
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(8));
    let wall = t0.elapsed().as_secs_f64();
    for (i, d) in dests.iter().enumerate() {
        let got = d.probe().unwrap();
        let rate = (got.video_span - before[i]) / wall;
        assert!(
            rate > 0.93 && rate < 1.1,
            "destination {i}: media/wall rate {rate:.3}"
        );
        assert_eq!(got.video_codec, "h264", "destination {i}");
        assert_eq!(got.audio_codec, "aac", "destination {i}");
        assert_eq!(
            (&got.video_codec, &got.audio_codec),
            (&source.video_codec, &source.audio_codec),
            "destination {i}: codecs changed"
        );
        let fps = got.video_frames as f64 / got.video_span;
        assert!((fps - 30.0).abs() < 1.5, "destination {i}: {fps:.1} fps");
        assert!(
            got.audio_packets as f64 > 40.0 * got.video_span,
            "destination {i}: {} audio packets over {:.1}s",
            got.audio_packets,
            got.video_span
        );
        assert!(
            got.worst_video_gap < 0.5,
            "destination {i}: gap {:.2}s",
            got.worst_video_gap
        );
    }
    assert_eq!(s.relay(key, &["ActiveState"])["ActiveState"], "active");
    assert_eq!(s.nrestarts(key), 0, "{}", s.relay_log(key));
    s.assert_secrets_kept(&keys(&dests));
}

/// The settings of a unit file of the project, in order.
fn unit_file_entries(name: &str) -> Vec<(String, String)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("systemd")
        .join(name);
    std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// The settings of a unit file of the project (the last value of each name).
fn unit_file(name: &str) -> HashMap<String, String> {
    unit_file_entries(name).into_iter().collect()
}

/// `CPUQuota=50%` as systemd reports it: microseconds of CPU per second.
fn quota_usec(percent: &str) -> u64 {
    percent.trim_end_matches('%').parse::<u64>().unwrap() * 10_000
}

/// `256M` in bytes.
fn size_bytes(size: &str) -> u64 {
    let (number, unit) = size.split_at(
        size.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(size.len()),
    );
    let shift = match unit {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        other => panic!("size unit {other}"),
    };
    number.parse::<u64>().unwrap() << shift
}

/// A unit's property read over D-Bus with busctl, as `busctl get-property` prints it
/// (`t 500000`, `s "neustream.slice"`).
fn dbus_property(m: &Machine, unit: &str, interface: &str, property: &str) -> String {
    let path = m.ok(&[
        "busctl",
        "call",
        "org.freedesktop.systemd1",
        "/org/freedesktop/systemd1",
        "org.freedesktop.systemd1.Manager",
        "LoadUnit",
        "s",
        unit,
    ]);
    let path = path
        .trim()
        .trim_start_matches("o ")
        .trim_matches('"')
        .to_string();
    m.ok(&[
        "busctl",
        "get-property",
        "org.freedesktop.systemd1",
        &path,
        &format!("org.freedesktop.systemd1.{interface}"),
        property,
    ])
    .trim()
    .to_string()
}

/// Pids (as seen inside the machine) of the processes named `name`.
fn pids_in_machine(m: &Machine, name: &str) -> Vec<String> {
    let out = m.run(&["pidof", name]);
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(String::from)
        .collect()
}

/// The processes of `unit`'s cgroup (`cgroup.procs` under the unit's `ControlGroup`, in the
/// named systemd hierarchy the machine's systemd tracks units in).
fn cgroup_procs(m: &Machine, unit: &str) -> Vec<String> {
    let cgroup = dbus_property(m, unit, "Service", "ControlGroup");
    let cgroup = cgroup.trim_start_matches("s ").trim_matches('"');
    assert!(
        cgroup.starts_with("/neustream.slice/"),
        "{unit} is not in neustream.slice: {cgroup}"
    );
    let procs = m.ok(&[
        "cat",
        &format!("/sys/fs/cgroup/systemd{cgroup}/cgroup.procs"),
    ]);
    procs.split_whitespace().map(String::from).collect()
}

/// The relay is its unit's cgroup alone (the native engine: one process per stream, no
/// ffmpeg anywhere in the machine); returns its main pid (machine's view).
fn assert_relay_alone_in_cgroup(s: &Stack, key: &str) -> String {
    let unit = stack::unit(key);
    let main = s.relay(key, &["MainPID"])["MainPID"].clone();
    // The grace's silence is made once by a short-lived ffmpeg at the first picture: wait it out.
    let alone = common::wait_for(Duration::from_secs(5), Duration::from_millis(100), || {
        let procs = cgroup_procs(&s.machine, &unit);
        (procs == [main.clone()]).then_some(())
    });
    assert!(
        alone.is_some(),
        "{unit}'s cgroup holds {:?}, not its main pid {main} alone",
        cgroup_procs(&s.machine, &unit)
    );
    let ffmpegs = pids_in_machine(&s.machine, "ffmpeg");
    assert!(ffmpegs.is_empty(), "ffmpeg running: {ffmpegs:?}");
    main
}

#[test]
fn systemd_owns_the_relay_restarts_limits_and_cgroup() {
    let s = Stack::boot("owns");
    let servers = servers(&s, 3);
    let dests = dests(&servers, "own");
    let key = "owns01";
    let unit = stack::unit(key);
    let _publisher = go_live(&s, key, &dests, &stack::source_id(1));
    let m = &s.machine;

    // The limits are the unit file's, read over D-Bus; the slice's too.
    let file = unit_file("neustream-relay@.service");
    let service = |p: &str| dbus_property(m, &unit, "Service", p);
    assert_eq!(
        service("CPUQuotaPerSecUSec"),
        format!("t {}", quota_usec(&file["CPUQuota"]))
    );
    assert_eq!(
        service("MemoryMax"),
        format!("t {}", size_bytes(&file["MemoryMax"]))
    );
    assert_eq!(service("TasksMax"), format!("t {}", file["TasksMax"]));
    assert_eq!(service("Slice"), format!("s \"{}\"", file["Slice"]));
    let slice_file = unit_file("neustream.slice");
    let slice = |p: &str| dbus_property(m, "neustream.slice", "Slice", p);
    assert_eq!(
        slice("CPUQuotaPerSecUSec"),
        format!("t {}", quota_usec(&slice_file["CPUQuota"]))
    );
    assert_eq!(
        slice("MemoryMax"),
        format!("t {}", size_bytes(&slice_file["MemoryMax"]))
    );
    assert_eq!(slice("TasksMax"), format!("t {}", slice_file["TasksMax"]));

    // One process per stream: the relay reads the ingest and writes every destination itself.
    assert_relay_alone_in_cgroup(&s, key);

    // kill -9 of the main process: systemd restarts the relay, destinations receive again.
    let before = s.relay(key, &["MainPID", "NRestarts"]);
    let old_main = before["MainPID"].clone();
    let old_restarts: u32 = before["NRestarts"].parse().unwrap();
    m.ok(&["kill", "-9", &old_main]);
    let restarted = common::wait_for(Duration::from_secs(10), Duration::from_millis(100), || {
        let p = s.relay(key, &["MainPID", "NRestarts", "ActiveState"]);
        let n: u32 = p["NRestarts"].parse().unwrap();
        (n > old_restarts
            && p["ActiveState"] == "active"
            && p["MainPID"] != "0"
            && p["MainPID"] != old_main)
            .then_some(p)
    });
    let after = restarted.unwrap_or_else(|| {
        panic!(
            "no restart after kill -9: {:?}\n{}",
            s.relay(key, &["MainPID", "NRestarts", "ActiveState", "Result"]),
            s.relay_log(key)
        )
    });
    eprintln!("restarted: {after:?}");
    let base = stack::frames(&dests);
    let back = stack::wait_receiving(&dests, Some(&base), 60, Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("{e}; relay log:\n{}", s.relay_log(key)));
    eprintln!("destinations receiving again {back:?} after the restart");
    let new_main = assert_relay_alone_in_cgroup(&s, key);
    assert_ne!(new_main, old_main, "the old relay survived");
    s.assert_secrets_kept(&keys(&dests));
}

// ---------------------------------------------------------------------------------------------
// Issue 18: reconcile on a host where MediaMTX is not run by mediamtx.service and its API is not
// configured. The shipped mediamtx.service is installed, never started; the hooks run by hand.

/// The shipped mediamtx.service, installed but never started, and the units' settings file
/// (reconcile runs as the timer runs it): the Control Plane double, no MediaMTX API.
fn without_mediamtx_service() -> Options {
    let unit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/mediamtx.service"),
    )
    .unwrap();
    Options {
        units: vec![("mediamtx.service".into(), unit)],
        ..Options::default()
    }
}

const NO_API: &[&str] = &["NEUSTREAM_MEDIAMTX_API_URL"];

fn write_settings(s: &Stack) {
    let settings = format!(
        "CONTROL_PLANE_URL={}\nNEUSTREAM_INGEST_URL=rtmp://127.0.0.1:{}\n\
         NEUSTREAM_RECONNECT_GRACE=0\n",
        s.cp.url(),
        s.ingest.port
    );
    let path = s.dir.join("neustream.env");
    std::fs::write(&path, settings).unwrap();
    s.machine.ok(&[
        "install",
        "-D",
        "-m",
        "0640",
        "-o",
        "root",
        "-g",
        "mediamtx",
        path.to_str().unwrap(),
        "/etc/neustream/neustream.env",
    ]);
}

/// The runs of neustream-reconcile.service so far (each logs one summary line).
fn reconcile_runs(m: &Machine) -> Vec<String> {
    m.journal(&["-u", "neustream-reconcile.service", "-o", "cat"])
        .lines()
        .filter(|l| l.starts_with("reconcile: "))
        .map(str::to_string)
        .collect()
}

const STREAM_END: &str = "/api/auth/stream-end";

/// A crashed relay is restarted, never ended: `kill -9` of a live relay's main process
/// (an OOM kill, a crash) restarts it within 3 s, in the same session, the destinations receive
/// again and no stream-end is sent, although systemd 252 runs the relay's OnSuccess= reconcile
/// on that restart and mediamtx.service is loaded and not running. 70 s later, past a run of
/// the real neustream-reconcile.timer, the relay still runs and still no stream-end was sent.
#[test]
fn a_crashed_relay_is_restarted_never_ended() {
    let s = Stack::boot_with("crashrelay", without_mediamtx_service(), 1);
    let m = &s.machine;
    write_settings(&s);
    m.ok(&["systemctl", "start", "neustream-reconcile.timer"]);
    assert_eq!(
        m.show("mediamtx.service", &["LoadState", "ActiveState"])["ActiveState"],
        "inactive"
    );
    let servers = servers(&s, 2);
    let dests = dests(&servers, "crash");
    let key = "crash01";
    let source = stack::source_id(1);
    stack::add_stream(&s.cp, key, &dests);
    let _publisher = publish(&s, key);
    let run = s.hook_unset("ready", key, &source, &[], NO_API);
    s.assert_ok(&run, key);
    stack::wait_receiving(&dests, None, 30, Duration::from_secs(15))
        .unwrap_or_else(|e| panic!("{e}; relay log:\n{}", s.relay_log(key)));
    let record_path = format!("/var/lib/neustream/sessions/{key}.json");
    let record = s.read(&record_path);
    assert!(
        record.contains("\"runs\": \"not_a_unit\""),
        "a hook run by hand is not in MediaMTX's service: {record}"
    );

    let before = s.relay(key, &["MainPID", "NRestarts"]);
    let runs_before = reconcile_runs(m).len();
    let killed = Instant::now();
    m.ok(&["kill", "-9", &before["MainPID"]]);
    // Restarted: a new main process runs (the unit is `active` once it reads the stream again).
    let restarted = common::wait_for(Duration::from_secs(10), Duration::from_millis(20), || {
        let p = s.relay(key, &["MainPID", "NRestarts"]);
        (p["NRestarts"] == "1" && p["MainPID"] != "0" && p["MainPID"] != before["MainPID"])
            .then(|| killed.elapsed())
    });
    let took = restarted.unwrap_or_else(|| {
        panic!(
            "no restart after kill -9: {:?}\n{}",
            s.relay(key, &["MainPID", "NRestarts", "ActiveState", "Result"]),
            s.relay_log(key)
        )
    });
    assert!(
        m.wait_state(&stack::unit(key), "active", Duration::from_secs(20)),
        "{}",
        s.relay_log(key)
    );
    let active = killed.elapsed();
    let after = s.relay(key, &["MainPID", "NRestarts", "ActiveState"]);
    let base = stack::frames(&dests);
    let back = stack::wait_receiving(&dests, Some(&base), 30, Duration::from_secs(15))
        .unwrap_or_else(|e| panic!("{e}; relay log:\n{}", s.relay_log(key)));
    eprintln!(
        "kill -9 of the relay: restarted {took:?} after the kill, active (reading the stream) \
         after {active:?}, destinations receiving again {back:?} later"
    );
    assert!(took < Duration::from_secs(3), "restarted after {took:?}");
    let journal = m.journal(&["-o", "short-monotonic", "-n", "400"]);
    // systemd 252 runs OnSuccess= on the automatic restart; that run leaves the relay alone.
    let on_success = s
        .relay_log(key)
        .contains("Triggering OnSuccess= dependencies");
    eprintln!("OnSuccess= triggered by the automatic restart: {on_success}");
    if on_success {
        let waited = common::wait_for(Duration::from_secs(10), Duration::from_millis(100), || {
            (reconcile_runs(m).len() > runs_before).then_some(())
        });
        assert!(
            waited.is_some(),
            "no reconcile run after OnSuccess=\n{journal}"
        );
    }
    assert_eq!(s.read(&record_path), record, "the same session");
    assert_eq!(s.cp.count_for("POST", STREAM_END, key), 0, "{journal}");

    // Past a run of the timer (the first one a minute after boot, then every minute).
    let runs = reconcile_runs(m).len();
    std::thread::sleep(Duration::from_secs(70));
    let journal = m.journal(&["-o", "short-monotonic", "-n", "400"]);
    let all_runs = reconcile_runs(m);
    assert!(
        all_runs.len() > runs,
        "no timer run of reconcile in 70 s\n{journal}"
    );
    assert!(
        all_runs[runs..]
            .iter()
            .all(|l| l.contains("1 kept by their running relay")),
        "{all_runs:?}"
    );
    let now = s.relay(key, &["MainPID", "NRestarts", "ActiveState"]);
    assert_eq!(now, after, "the relay ran on untouched\n{journal}");
    assert_eq!(s.cp.count_for("POST", STREAM_END, key), 0, "{journal}");
    assert_eq!(s.read(&record_path), record);
    let base = stack::frames(&dests);
    stack::wait_receiving(&dests, Some(&base), 30, Duration::from_secs(15))
        .unwrap_or_else(|e| panic!("{e}; relay log:\n{}", s.relay_log(key)));

    // Its publisher goes: the unpublish hook ends it, once.
    let run = s.hook_unset("unpublish", key, &source, &[], NO_API);
    s.assert_ok(&run, key);
    assert_eq!(s.cp.count_for("POST", STREAM_END, key), 1);
    s.assert_secrets_kept(&keys(&dests));
}

/// Only a new publish resets a failed relay: one started without its env file (exit status 78,
/// final), after other streams came and went, ends `failed` with 78 for the operator to see
/// (`systemctl --failed`), and stays so through reconcile runs (the timer's, a relay's
/// OnSuccess=). Its start is made to take 3 s (ExecStartPre=sleep, as a loaded host can take),
/// and reconcile runs meanwhile: it never stops a relay that is starting (that replaced the
/// start job, and the relay ended `inactive`, status 0, its failure unseen).
#[test]
fn a_failed_relay_stays_failed_until_its_key_publishes_again() {
    let mut options = without_mediamtx_service();
    let failed = stack::unit("noenv01");
    options.units.push((
        format!("{failed}.d/slow-start.conf"),
        "[Service]\nExecStartPre=/bin/sleep 3\n".into(),
    ));
    let s = Stack::boot_with("staysfailed", options, 1);
    let m = &s.machine;
    write_settings(&s);
    let servers = servers(&s, 1);
    let come_and_go = |key: &str, n: u32| {
        let dests = dests(&servers, key);
        let source = stack::source_id(n);
        stack::add_stream(&s.cp, key, &dests);
        let _publisher = publish(&s, key);
        s.assert_ok(&s.hook_unset("ready", key, &source, &[], NO_API), key);
        stack::wait_receiving(&dests, None, 10, Duration::from_secs(15))
            .unwrap_or_else(|e| panic!("{e}; relay log:\n{}", s.relay_log(key)));
        s.assert_ok(&s.hook_unset("unpublish", key, &source, &[], NO_API), key);
    };
    come_and_go("came01", 1);
    come_and_go("came02", 2);

    let state = || m.show(&failed, &["ActiveState", "Result", "ExecMainStatus"]);
    m.ok(&["systemctl", "start", "--no-block", &failed]);
    assert_eq!(state()["ActiveState"], "activating");
    // While it starts: a reconcile run as the timer's, and a stream that comes and goes (its
    // relay's OnSuccess= runs reconcile too).
    m.ok(&["systemctl", "start", "neustream-reconcile.service"]);
    come_and_go("came03", 3);
    let settled = common::wait_for(Duration::from_secs(20), Duration::from_millis(100), || {
        let p = state();
        (p["ActiveState"] != "activating").then_some(p)
    });
    let journal = m.journal(&["-o", "short-monotonic", "-n", "300"]);
    let p = settled.unwrap_or_else(|| panic!("{:?}\n{journal}", state()));
    let expected = |p: &HashMap<String, String>| {
        (p["ActiveState"].as_str(), p["ExecMainStatus"].as_str()) == ("failed", "78")
    };
    assert!(expected(&p), "{p:?}\n{journal}");
    m.ok(&["systemctl", "start", "neustream-reconcile.service"]);
    std::thread::sleep(Duration::from_secs(3));
    let journal = m.journal(&["-o", "short-monotonic", "-n", "300"]);
    assert!(expected(&state()), "{:?}\n{journal}", state());
    let listed = m.ok(&["systemctl", "--failed", "--plain", "--no-legend"]);
    assert!(listed.contains(&failed), "{listed}");
}

#[test]
fn unpublish_stops_everything_and_reports_the_end_once() {
    let s = Stack::boot("unpublish");
    let servers = servers(&s, 2);
    let dests = dests(&servers, "unp");
    let key = "unpub01";
    let source = stack::source_id(1);
    let _publisher = go_live(&s, key, &dests, &source);
    assert!(s.exists(&stack::env_file(key)));
    assert!(
        !s.machine.processes("neustream").is_empty(),
        "no relay running"
    );

    let run = s.unpublish(key, &source);
    s.assert_ok(&run, key);
    let p = s.relay(key, &["ActiveState", "Result", "MainPID"]);
    assert_eq!(p["ActiveState"], "inactive", "{p:?}");
    assert_eq!(p["Result"], "success", "stopped, not failed: {p:?}");
    assert!(s.ffmpegs().is_empty(), "ffmpeg left: {:?}", s.ffmpegs());
    assert!(
        s.machine.processes("neustream").is_empty(),
        "a relay process is left"
    );
    let left = s.machine.ok(&["ls", "-A", stack::STREAMS_DIR]);
    assert_eq!(left.trim(), "", "files left in {}", stack::STREAMS_DIR);
    // Exactly one stream-end, and no late second one.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        s.cp.count_for("POST", "/api/auth/stream-end", key),
        1,
        "{:?}",
        s.cp.requests()
    );
    assert_eq!(s.cp.count("POST", "/api/auth/stream-end"), 1);
    // The publisher still publishes, but nothing reaches the destinations any more.
    let base = stack::frames(&dests);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(stack::frames(&dests), base, "destinations still receive");
    assert!(
        run.stderr().contains("stream end reported"),
        "{}",
        run.stderr()
    );
    s.assert_secrets_kept(&keys(&dests));
}

#[test]
fn rejected_keys_start_nothing_and_say_why() {
    let s = Stack::boot("reject");
    let server = s.destination("d0");
    let listed = |tag: &str| vec![Dest::on(&server, "twitch", &stack::secret_key(tag))];
    let mut secrets = Vec::new();
    // 401: a key the Control Plane does not know (the double answers as the contract says).
    // 403, 500: answers scripted for listed keys; a timeout: an answer that comes too late.
    for (key, reply) in [
        (
            "rej403",
            Reply::Text(403, "Streaming hour limit exceeded".into()),
        ),
        ("rej500", Reply::Text(500, "Internal server error".into())),
        (
            "rejslow",
            Reply::Delay(Duration::from_secs(6), Box::new(Reply::Contract)),
        ),
    ] {
        let dests = listed(key);
        secrets.extend(keys(&dests));
        stack::add_stream(&s.cp, key, &dests);
        s.cp.script_auth(key, vec![reply]);
    }
    let cases: [(&str, &str, &[&str]); 5] = [
        (
            "rej401",
            "live/rej401",
            &["rejected by the Control Plane (401: Invalid stream key)"],
        ),
        (
            "rej403",
            "live/rej403",
            &["(403: Streaming hour limit exceeded)"],
        ),
        (
            "rej500",
            "live/rej500",
            &["no usable answer within 1s", "500 Internal server error"],
        ),
        ("rejslow", "live/rejslow", &["no usable answer within 1s"]),
        (
            "bad.key",
            "live/bad.key",
            &["refusing stream path 'live/bad.key'", "'.'"],
        ),
    ];
    for (n, (key, path, reasons)) in cases.iter().enumerate() {
        let source = stack::source_id(100 + n as u32);
        let started = Instant::now();
        let run = s.hook(
            "ready",
            key,
            &source,
            &[("MTX_PATH", path), ("NEUSTREAM_AUTH_TIMEOUT", "1s")],
        );
        let took = started.elapsed();
        let err = run.stderr();
        assert!(!run.ok(), "{key}: ready succeeded:\n{err}");
        assert_ne!(run.code(), Some(0));
        for reason in *reasons {
            assert!(
                err.contains(reason),
                "{key}: stderr lacks {reason:?}:\n{err}"
            );
        }
        assert!(!err.contains("panicked"), "{err}");
        assert!(
            took < Duration::from_secs(5),
            "{key}: the hook took {took:?}"
        );
        // The refused publisher is disconnected through MediaMTX's Control API.
        let kick = format!("/v3/rtmpconns/kick/{source}");
        assert_eq!(s.cp.count("POST", &kick), 1, "{key}: no kick\n{err}");
        if !key.contains('.') {
            assert_never_started(&s, key);
        }
    }
    // Nothing anywhere: no env file, no relay ever logged, no ffmpeg, no session to end.
    // Anyone can publish random keys: whatever a rejected publish left in /run (a tmpfs) would
    // pile up there until the next boot.
    let left = s.machine.ok(&["ls", "-A", stack::STREAMS_DIR]);
    assert_eq!(
        left.trim(),
        "",
        "rejected publishes left files in {}",
        stack::STREAMS_DIR
    );
    let journal = s.machine.journal_export();
    assert!(
        !journal.contains("neustream-relay"),
        "a relay unit ran:\n{}",
        journal
            .lines()
            .filter(|l| l.starts_with("MESSAGE=") && l.contains("neustream-relay"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(s.ffmpegs().is_empty());
    assert_eq!(s.cp.count("POST", "/api/auth/stream-end"), 0);
    let fetched =
        s.cp.requests()
            .iter()
            .filter(|r| r.path.starts_with("/api/streams/forwarding/"))
            .count();
    assert_eq!(fetched, 0, "destinations fetched for a rejected key");
    s.assert_secrets_kept(&secrets);
}

/// The relay unit of `key` was never started: loaded from the template, never active, no
/// restarts, no env file.
fn assert_never_started(s: &Stack, key: &str) {
    let p = s.relay(
        key,
        &[
            "LoadState",
            "ActiveState",
            "NRestarts",
            "InvocationID",
            "ActiveEnterTimestampMonotonic",
        ],
    );
    assert_eq!(p["ActiveState"], "inactive", "{key}: {p:?}");
    assert_eq!(p["NRestarts"], "0", "{key}: {p:?}");
    assert_eq!(p["InvocationID"], "", "{key} was started: {p:?}");
    assert_eq!(p["ActiveEnterTimestampMonotonic"], "0", "{key}: {p:?}");
    assert!(!s.exists(&stack::env_file(key)), "{key}: env file written");
}

#[test]
fn a_late_unpublish_of_a_replaced_publisher_leaves_the_new_one_alone() {
    let s = Stack::boot("race");
    let servers = servers(&s, 2);
    let dests = dests(&servers, "race");
    let key = "race01";
    let (a, b) = (stack::source_id(0xa), stack::source_id(0xb));
    let _publisher = go_live(&s, key, &dests, &a);
    let env = stack::env_file(key);
    assert!(s
        .read(&env)
        .contains(&format!("NEUSTREAM_MTX_SOURCE_ID=\"{a}\"")));

    // Publisher B replaces A on the same path (MediaMTX's overridePublisher): B's ready runs
    // while A's relay still runs, and A's unpublish comes late.
    s.ready_ok(key, &b);
    assert!(s
        .read(&env)
        .contains(&format!("NEUSTREAM_MTX_SOURCE_ID=\"{b}\"")));
    let late = s.unpublish(key, &a);
    s.assert_ok(&late, key);
    assert!(
        late.stderr().contains("newer publisher"),
        "{}",
        late.stderr()
    );
    let p = s.relay(key, &["ActiveState", "MainPID"]);
    assert_eq!(p["ActiveState"], "active", "B's relay stopped: {p:?}");
    assert!(
        s.read(&env)
            .contains(&format!("NEUSTREAM_MTX_SOURCE_ID=\"{b}\"")),
        "B's env file is gone or changed"
    );
    assert_eq!(
        s.cp.count("POST", "/api/auth/stream-end"),
        0,
        "A's late unpublish ended B's session"
    );
    let base = stack::frames(&dests);
    stack::wait_receiving(&dests, Some(&base), 60, Duration::from_secs(15))
        .unwrap_or_else(|e| panic!("{e}; relay log:\n{}", s.relay_log(key)));
    assert_eq!(
        s.relay(key, &["MainPID"])["MainPID"],
        p["MainPID"],
        "relay restarted after the late unpublish"
    );

    // B's own unpublish ends it all.
    s.unpublish_ok(key, &b);
    assert_eq!(s.relay(key, &["ActiveState"])["ActiveState"], "inactive");
    assert!(!s.exists(&env));
    assert_eq!(s.cp.count_for("POST", "/api/auth/stream-end", key), 1);
    s.assert_secrets_kept(&keys(&dests));
}

#[test]
fn a_failing_destination_never_interrupts_the_others_and_resumes() {
    let s = Stack::boot("isolation");
    let mut servers = servers(&s, 3);
    let dests = dests(&servers, "iso");
    let key = "iso01";
    let _publisher = go_live(&s, key, &dests, &stack::source_id(1));
    let main = s.relay(key, &["MainPID"])["MainPID"].clone();

    // What `systemctl status` shows any local user: every destination's state.
    let status = |m: &Machine| {
        // Any local user (Debian's nobody has no group of its name: daemon has).
        let out = m.run_env(
            Some("daemon"),
            &[],
            &["systemctl", "status", "--no-pager", &stack::unit(key)],
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let shown = common::wait_for(Duration::from_secs(5), Duration::from_millis(200), || {
        let text = status(&s.machine);
        text.contains("Status: \"3 destinations: 0 youtube live")
            .then_some(text)
    })
    .unwrap_or_else(|| panic!("no live status: {}", status(&s.machine)));
    for (i, platform) in PLATFORMS.iter().enumerate() {
        assert!(shown.contains(&format!("{i} {platform} live")), "{shown}");
    }

    // Destination 2 refuses for 8 s (its server is gone), then comes back on the same port.
    let port = servers[2].port;
    servers[2].stop();
    let retrying = common::wait_for(Duration::from_secs(5), Duration::from_millis(200), || {
        let text = status(&s.machine);
        text.contains(&format!("2 {} retrying in", PLATFORMS[2]))
            .then_some(text)
    });
    assert!(
        retrying.is_some(),
        "systemctl status does not show destination 2 retrying: {}",
        status(&s.machine)
    );
    std::thread::sleep(Duration::from_secs(8));
    servers[2] = RtmpServer::start_on(&s.dir.join("d2-back"), port);
    let returned = Instant::now();
    let back = Dest::on(&servers[2], PLATFORMS[2], &dests[2].key);
    let resumed = stack::wait_receiving(
        std::slice::from_ref(&back),
        None,
        1,
        Duration::from_secs(10),
    )
    .unwrap_or_else(|e| {
        panic!(
            "destination 2 did not resume: {e}; log:\n{}",
            s.relay_log(key)
        )
    });
    eprintln!("destination 2 resumed {resumed:?} after it came back");
    assert!(returned.elapsed() < Duration::from_secs(11));

    // The others never stopped receiving: no gap over 0.5 s in what they recorded.
    for (i, d) in dests.iter().enumerate().take(2) {
        let got = d.probe().unwrap();
        assert!(
            got.worst_video_gap < 0.5,
            "destination {i}: gap {:.2}s during the outage",
            got.worst_video_gap
        );
        assert!(
            got.video_span > 9.0,
            "destination {i}: {:.1}s",
            got.video_span
        );
    }
    // Handled inside the relay: no restart; only destination 2 connected again.
    let p = s.relay(key, &["NRestarts", "MainPID", "ActiveState"]);
    assert_eq!(p["NRestarts"], "0", "{p:?}");
    assert_eq!(p["MainPID"], main, "{p:?}");
    let state: serde_json::Value =
        serde_json::from_str(&s.read(&format!("/run/neustream/relays/{key}/state.json"))).unwrap();
    for i in 0..2 {
        assert_eq!(state["destinations"][i]["attempts"], 1, "{state}");
    }
    assert!(
        state["destinations"][2]["attempts"].as_u64() > Some(1),
        "{state}"
    );
    let back_live = common::wait_for(Duration::from_secs(5), Duration::from_millis(200), || {
        status(&s.machine)
            .contains(&format!("2 {} live", PLATFORMS[2]))
            .then_some(())
    });
    assert!(back_live.is_some(), "{}", status(&s.machine));
    // The journal says which destination failed, without its key.
    let failures = s.machine.journal(&[
        "-u",
        &stack::unit(key),
        "DESTINATION_INDEX=2",
        "-p",
        "warning",
        "-o",
        "cat",
    ]);
    assert!(
        !failures.trim().is_empty(),
        "no failure logged for destination 2"
    );
    s.assert_secrets_kept(&keys(&dests));
}

/// A unit that is none of the relays, for polkit to refuse.
const VICTIM: &str = "neustream-test-victim.service";

/// A relay instance whose ExecStart is replaced by a script that tries, with the relay's
/// identity and sandbox, to reach another relay's processes and env file.
const SPY: &str = "neustream-relay@spy.service";
const SPY_SCRIPT: &str = "\
echo uid=$(id -u); \
echo pids: $(ls /proc | grep '^[0-9]') .; \
cat /proc/$SPY_TARGET_PID/environ && echo READ-ENVIRON; \
cat /proc/$SPY_TARGET_PID/cmdline && echo READ-CMDLINE; \
cat /run/neustream/streams/$SPY_TARGET_KEY.env && echo READ-ENVFILE; \
ls /run/neustream/streams && echo LIST-DIR; \
true";

#[test]
fn least_privilege_polkit_users_and_sandbox() {
    let options = Options {
        units: vec![
            (
                VICTIM.into(),
                "[Service]\nExecStart=/bin/sleep infinity\n".into(),
            ),
            (
                format!("{SPY}.d/spy.conf"),
                // Type=exec: the spy is not a relay and sends no READY=1.
                format!("[Service]\nType=exec\nExecStart=\nExecStart=/bin/sh -c '{SPY_SCRIPT}'\n"),
            ),
        ],
        ..Options::default()
    };
    let s = Stack::boot_with("privilege", options, 1);
    let m = &s.machine;
    let busctl_as_mediamtx = |method: &str, unit: &str| {
        m.run_env(
            Some("mediamtx"),
            &[],
            &[
                "busctl",
                "call",
                "org.freedesktop.systemd1",
                "/org/freedesktop/systemd1",
                "org.freedesktop.systemd1.Manager",
                method,
                "ss",
                unit,
                "replace",
            ],
        )
    };
    let text = |o: &std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };

    // MediaMTX's user may start and stop a relay (this one then refuses to run: no env file).
    let relay_x = "neustream-relay@x.service";
    let started = busctl_as_mediamtx("StartUnit", relay_x);
    assert!(
        started.status.success(),
        "StartUnit {relay_x}: {}",
        text(&started)
    );
    assert!(text(&started).contains("/org/freedesktop/systemd1/job/"));
    let ended = common::wait_for(Duration::from_secs(10), Duration::from_millis(100), || {
        let p = m.show(relay_x, &["ActiveState", "ExecMainStatus"]);
        (p["ActiveState"] != "active" && p["ActiveState"] != "activating").then_some(p)
    });
    let p = ended.expect("relay x kept running without an env file");
    assert_eq!(
        p["ExecMainStatus"], "78",
        "{p:?}: no restart loop without an env file"
    );
    let stopped = busctl_as_mediamtx("StopUnit", relay_x);
    assert!(
        stopped.status.success(),
        "StopUnit {relay_x}: {}",
        text(&stopped)
    );

    // ... and no other unit.
    let denied = busctl_as_mediamtx("StartUnit", VICTIM);
    assert!(!denied.status.success(), "mediamtx started {VICTIM}");
    let refused = |o: &std::process::Output| {
        let why = text(o);
        !o.status.success()
            && (why.contains("Interactive authentication required")
                || why.contains("Access denied"))
    };
    assert!(refused(&denied), "{}", text(&denied));
    assert_eq!(m.show(VICTIM, &["ActiveState"])["ActiveState"], "inactive");
    m.ok(&["systemctl", "start", VICTIM]);
    for (method, unit) in [
        ("StopUnit", VICTIM),
        ("RestartUnit", VICTIM),
        ("StopUnit", "dbus.service"),
        ("RestartUnit", "systemd-journald.service"),
        // Look-alikes of a relay's name.
        ("StartUnit", "neustream-relayx@x.service"),
        ("StartUnit", "neustream-relay@x.socket"),
        ("StartUnit", "neustream-relay@x.y.service"),
    ] {
        let out = busctl_as_mediamtx(method, unit);
        assert!(
            refused(&out),
            "mediamtx may {method} {unit}: {}",
            text(&out)
        );
    }
    assert_eq!(m.show(VICTIM, &["ActiveState"])["ActiveState"], "active");
    assert_eq!(
        m.show("dbus.service", &["ActiveState"])["ActiveState"],
        "active"
    );

    // A running relay: none of its processes runs as root or holds a capability.
    let servers = servers(&s, 1);
    let dests = dests(&servers, "priv");
    let key = "priv01";
    let _publisher = go_live(&s, key, &dests, &stack::source_id(1));
    let procs = cgroup_procs(m, &stack::unit(key));
    assert!(!procs.is_empty(), "the relay expected: {procs:?}");
    for pid in &procs {
        let status = m.ok(&["cat", &format!("/proc/{pid}/status")]);
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{name}:")))
                .unwrap_or_default()
                .split_whitespace()
                .map(String::from)
                .collect::<Vec<_>>()
        };
        for id in field("Uid").iter().chain(field("Gid").iter()) {
            assert_ne!(id, "0", "process {pid} runs as root:\n{status}");
        }
        assert_eq!(field("CapEff"), ["0000000000000000"], "{pid}:\n{status}");
        assert_eq!(field("NoNewPrivs"), ["1"], "{pid}:\n{status}");
    }

    // Another relay (the same transient user: DynamicUser shares it among instances) can
    // neither see this relay's processes nor read its env file.
    let main = s.relay(key, &["MainPID"])["MainPID"].clone();
    m.ok(&[
        "systemctl",
        "set-environment",
        &format!("SPY_TARGET_PID={main}"),
        &format!("SPY_TARGET_KEY={key}"),
    ]);
    m.ok(&["systemctl", "start", SPY]);
    assert!(m.wait_state(SPY, "inactive", Duration::from_secs(10)));
    let spied = m.journal(&["-u", SPY, "-o", "cat"]);
    assert!(spied.contains("uid="), "the spy did not run:\n{spied}");
    for reached in ["READ-ENVIRON", "READ-CMDLINE", "READ-ENVFILE", "LIST-DIR"] {
        assert!(
            !spied.contains(reached),
            "another relay could {reached}:\n{spied}"
        );
    }
    let visible = spied
        .lines()
        .find_map(|l| l.strip_prefix("pids: "))
        .unwrap_or_else(|| panic!("{spied}"));
    for pid in &procs {
        assert!(
            !visible.split_whitespace().any(|p| p == pid),
            "another relay sees process {pid}:\n{spied}"
        );
    }

    // systemd's own rating of the sandbox.
    let out = m.run(&["systemd-analyze", "security", "--no-pager", relay_x]);
    let report = String::from_utf8_lossy(&out.stdout);
    let exposure: f64 = report
        .lines()
        .find_map(|l| l.split("Overall exposure level for ").nth(1))
        .and_then(|rest| rest.split(": ").nth(1))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{report}"));
    eprintln!("systemd-analyze security {relay_x}: {exposure}");
    assert!(exposure <= 2.0, "exposure {exposure} > 2.0:\n{report}");
    s.assert_secrets_kept(&keys(&dests));
}

#[test]
fn secrets_stay_secret_through_a_whole_stream() {
    let s = Stack::boot("secrets");
    let servers = servers(&s, 3);
    let dests = dests(&servers, "sec");
    // A destination that refuses (nothing listens): ffmpeg's error lines about it must not
    // carry its key either.
    let refusing = Dest {
        platform: "custom".into(),
        url: format!("rtmp://127.0.0.1:{}/live", common::free_port()),
        key: stack::secret_key("sec3"),
        recording: s.dir.join("nowhere.flv"),
    };
    let mut secrets = keys(&dests);
    secrets.push(refusing.key.clone());
    // One the hook drops as invalid: its warning names it without its key.
    let invalid = (
        "facebook",
        "http://127.0.0.1/rtmp",
        stack::secret_key("sec4"),
    );
    secrets.push(invalid.2.clone());
    let key = "secret01";
    let source = stack::source_id(1);
    let mut listing: Vec<(&str, &str, &str)> = dests
        .iter()
        .chain([&refusing])
        .map(|d| (d.platform.as_str(), d.url.as_str(), d.key.as_str()))
        .collect();
    listing.push((invalid.0, invalid.1, &invalid.2));
    s.cp.add_stream(key, &listing);
    let _publisher = publish(&s, key);
    let ready = s.ready(key, &source);
    s.assert_ok(&ready, key);
    assert!(
        ready.stderr().contains("dropping destination 4 (facebook)"),
        "{}",
        ready.stderr()
    );
    stack::wait_receiving(&dests, None, 30, Duration::from_secs(15))
        .unwrap_or_else(|e| panic!("{e}; relay log:\n{}", s.relay_log(key)));
    std::thread::sleep(Duration::from_secs(3)); // a few failed attempts for the refusing one

    // While live: the env file holds the keys (what is protected), 0600 in a 0700 directory,
    // both owned by mediamtx; nobody else can read it.
    let env = stack::env_file(key);
    let stat = s
        .machine
        .ok(&["stat", "-c", "%a %U %G", stack::STREAMS_DIR, &env]);
    assert_eq!(
        stat.lines().collect::<Vec<_>>(),
        ["700 mediamtx mediamtx", "600 mediamtx mediamtx"]
    );
    let text = s.read(&env);
    for secret in &secrets[..4] {
        assert!(
            text.contains(secret.as_str()),
            "env file lacks a key: is the test meaningful?"
        );
    }
    // Nor, through /proc, the environment systemd gave the relay from it, nor its ffmpeg's.
    let main = s.relay(key, &["MainPID"])["MainPID"].clone();
    let ffmpeg = pids_in_machine(&s.machine, "ffmpeg");
    let environ: Vec<String> = [&main]
        .into_iter()
        .chain(&ffmpeg)
        .map(|pid| format!("/proc/{pid}/environ"))
        .collect();
    let tries = [("nobody", &env)].into_iter().chain(
        environ
            .iter()
            .flat_map(|f| [("nobody", f), ("mediamtx", f)]),
    );
    for (user, file) in tries {
        let out = s.machine.run_env(Some(user), &[], &["cat", file]);
        assert!(!out.status.success(), "{user} read {file}");
    }
    s.assert_secrets_kept(&secrets);

    s.unpublish_ok(key, &source);
    assert!(s.ffmpegs().is_empty());
    s.assert_secrets_kept(&secrets);
}

#[test]
fn the_journal_tells_operators_which_stream_and_destination() {
    let s = Stack::boot("logs");
    let servers = servers(&s, 3);
    let dests = dests(&servers, "log");
    let key = "logs01";
    let unit = stack::unit(key);
    stack::add_stream(&s.cp, key, &dests);
    let _publisher = publish(&s, key);
    // The hook as MediaMTX runs it under systemd/mediamtx.service: its user and sandbox, and
    // its stderr connected to the journal.
    let mut argv: Vec<String> = [
        "systemd-run",
        "--wait",
        "--quiet",
        "--collect",
        "--unit=mediamtx-hook-ready",
    ]
    .map(String::from)
    .to_vec();
    let not_for_a_hook = [
        "Description",
        "Documentation",
        "After",
        "Wants",
        "WantedBy",
        "Type",
        "ExecStart",
        // MediaMTX's own reconcile when it starts and stops (`--mediamtx-stopped`), not the
        // hook's: run around the hook, it would end the very session the hook starts.
        "ExecStartPre",
        "ExecStopPost",
        "Restart",
        "RestartSec",
    ];
    for (name, value) in unit_file_entries("mediamtx.service") {
        if !not_for_a_hook.contains(&name.as_str()) {
            argv.push(format!("--property={name}={value}"));
        }
    }
    for (k, v) in s.hook_env(key, &stack::source_id(1)) {
        argv.push(format!("--setenv={k}={v}"));
    }
    argv.extend(["/usr/local/bin/neustream".into(), "ready".into()]);
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let hook = s.machine.run(&argv);
    assert!(
        hook.status.success(),
        "the ready hook failed ({}):\n{}",
        hook.status,
        s.machine
            .journal(&["-u", "mediamtx-hook-ready.service", "-o", "short-monotonic"])
    );
    stack::wait_receiving(&dests, None, 30, Duration::from_secs(15))
        .unwrap_or_else(|e| panic!("{e}; relay log:\n{}", s.relay_log(key)));

    let entries = |args: &[&str]| -> Vec<serde_json::Value> {
        let mut argv = vec!["-o", "json"];
        argv.extend_from_slice(args);
        s.machine
            .journal(&argv)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let field = |e: &serde_json::Value, f: &str| e[f].as_str().unwrap_or_default().to_string();

    // The relay's own lines: every one structured, tagged with the stream key.
    let relay: Vec<serde_json::Value> = entries(&["-u", &unit])
        .into_iter()
        .filter(|e| field(e, "_SYSTEMD_UNIT") == unit && field(e, "_PID") != "1")
        .collect();
    assert!(relay.len() >= 4, "few relay lines: {relay:?}");
    let mut seen = [false; 3];
    for e in &relay {
        assert_eq!(field(e, "_TRANSPORT"), "journal", "unstructured line: {e}");
        assert_eq!(field(e, "SYSLOG_IDENTIFIER"), "neustream-relay", "{e}");
        assert_eq!(field(e, "STREAM_KEY"), key, "{e}");
        if let Ok(i) = field(e, "DESTINATION_INDEX").parse::<usize>() {
            assert_eq!(field(e, "DESTINATION_PLATFORM"), PLATFORMS[i], "{e}");
            seen[i] = true;
        }
    }
    assert_eq!(seen, [true; 3], "lines for every destination");
    // An operator's query by platform.
    let twitch = entries(&["DESTINATION_PLATFORM=twitch"]);
    assert!(
        !twitch.is_empty(),
        "journalctl DESTINATION_PLATFORM=twitch is empty"
    );
    for e in &twitch {
        assert_eq!(field(e, "DESTINATION_INDEX"), "1", "{e}");
        assert_eq!(field(e, "STREAM_KEY"), key, "{e}");
    }
    // The hook's lines, in the journal of the service that ran it, are tagged too.
    let hook: Vec<serde_json::Value> = entries(&[&format!("STREAM_KEY={key}")])
        .into_iter()
        .filter(|e| field(e, "_SYSTEMD_UNIT") == "mediamtx-hook-ready.service")
        .collect();
    assert!(
        hook.iter()
            .any(|e| field(e, "MESSAGE").contains("accepted by the Control Plane")),
        "hook lines: {hook:?}"
    );
    s.assert_secrets_kept(&keys(&dests));
}

#[test]
fn twenty_streams_at_once() {
    const STREAMS: usize = 20;
    // Alone: 20 publishers, 20 relays and 40 destinations on 2 cores.
    let s = Stack::boot_with("many", Options::default(), usize::MAX);
    let servers = servers(&s, 4);
    let streams: Vec<(String, String, Vec<Dest>)> = (0..STREAMS)
        .map(|i| {
            let key = format!("many{i:02}");
            let dests = vec![
                Dest::on(
                    &servers[i % 4],
                    "youtube",
                    &stack::secret_key(&format!("m{i}a")),
                ),
                Dest::on(
                    &servers[(i + 1) % 4],
                    "twitch",
                    &stack::secret_key(&format!("m{i}b")),
                ),
            ];
            stack::add_stream(&s.cp, &key, &dests);
            (key, stack::source_id(i as u32), dests)
        })
        .collect();
    let all: Vec<Dest> = streams.iter().flat_map(|(_, _, d)| d.clone()).collect();
    let units: Vec<String> = streams.iter().map(|(k, _, _)| stack::unit(k)).collect();
    // The units whose `prop` is not `want`, with what it is.
    let not = |prop: &str, want: &str| -> Vec<String> {
        let mut argv = vec!["systemctl", "show", "--value", "-p", prop];
        argv.extend(units.iter().map(String::as_str));
        let values: Vec<String> = s
            .machine
            .ok(&argv)
            .lines()
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect();
        assert_eq!(values.len(), units.len());
        units
            .iter()
            .zip(values)
            .filter(|(_, v)| v != want)
            .map(|(u, v)| format!("{u}: {prop}={v}"))
            .collect()
    };

    let _publishers: Vec<Publisher> = streams.iter().map(|(k, _, _)| s.publish(k)).collect();
    let ingested = common::wait_for(Duration::from_secs(20), Duration::from_millis(500), || {
        streams
            .iter()
            .all(|(k, _, _)| probe(&s.ingest.recording(k)).is_some_and(|r| r.video_frames > 0))
            .then_some(())
    });
    assert!(ingested.is_some(), "the ingest did not get all streams");

    let started = Instant::now();
    let stack = &s;
    std::thread::scope(|scope| {
        let runs: Vec<_> = streams
            .iter()
            .map(|(k, id, _)| scope.spawn(move || (k, stack.ready(k, id))))
            .collect();
        for run in runs {
            let (k, run) = run.join().unwrap();
            stack.assert_ok(&run, k);
        }
    });
    eprintln!(
        "{STREAMS} concurrent ready hooks done in {:?}",
        started.elapsed()
    );
    assert_eq!(not("ActiveState", "active"), Vec::<String>::new());
    let receiving = stack::wait_receiving(&all, None, 30, Duration::from_secs(40))
        .unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "all {} destinations receiving after {receiving:?}",
        all.len()
    );
    assert_eq!(not("NRestarts", "0"), Vec::<String>::new());
    // Per stream one process, the relay: no ffmpeg.
    assert_eq!(pids_in_machine(&s.machine, "ffmpeg"), Vec::<String>::new());

    let started = Instant::now();
    std::thread::scope(|scope| {
        let runs: Vec<_> = streams
            .iter()
            .map(|(k, id, _)| scope.spawn(move || (k, stack.unpublish(k, id))))
            .collect();
        for run in runs {
            let (k, run) = run.join().unwrap();
            stack.assert_ok(&run, k);
        }
    });
    eprintln!(
        "{STREAMS} concurrent unpublish hooks done in {:?}",
        started.elapsed()
    );
    assert_eq!(not("ActiveState", "inactive"), Vec::<String>::new());
    assert!(s.ffmpegs().is_empty(), "ffmpeg left: {:?}", s.ffmpegs());
    assert!(s.machine.processes("neustream").is_empty());
    let left = s.machine.ok(&["ls", "-A", stack::STREAMS_DIR]);
    assert_eq!(left.trim(), "", "files left in {}", stack::STREAMS_DIR);
    for (k, _, _) in &streams {
        assert_eq!(s.cp.count_for("POST", "/api/auth/stream-end", k), 1, "{k}");
    }
    s.assert_secrets_kept(&keys(&all));
}

/// Destination keys and URLs with every character the env file must carry through systemd's
/// own `EnvironmentFile=` parser.
#[test]
fn env_file_round_trips_through_systemd_environment_file() {
    let key = "roundtrip01";
    let dump = "/run/neustream-envdump";
    let options = Options {
        units: vec![(
            "neustream-test-envdump.service".into(),
            format!(
                "[Service]\nType=oneshot\nEnvironmentFile={}\nExecStart=/usr/bin/env -0\n\
                 StandardOutput=file:{dump}\n",
                stack::env_file(key)
            ),
        )],
        ..Options::default()
    };
    let s = Stack::boot_with("envfile", options, 1);
    // Nothing listens there: the relay just keeps retrying.
    let url = |q: &str| format!("rtmp://127.0.0.1:{}/live{q}", common::free_port());
    let listed: Vec<(String, String, String)> = vec![
        ("youtube".into(), url(""), r#"a&b?c=d%20e#f=g"#.into()),
        ("twitch".into(), url(""), r#"k$HOME${X}`id`$(id)"#.into()),
        ("custom".into(), url(""), r#"q"u'o\te\\n\"#.into()),
        (
            "custom".into(),
            url(r#"?t='1'&u="2"&v=$V\x"#),
            r#"\'"#.into(),
        ),
        (
            "custom".into(),
            url(""),
            r#"semi;NEUSTREAM_DEST_0_STREAM_KEY=evil\"#.into(),
        ),
    ];
    let refs: Vec<(&str, &str, &str)> = listed
        .iter()
        .map(|(p, u, k)| (p.as_str(), u.as_str(), k.as_str()))
        .collect();
    s.cp.add_stream(key, &refs);
    // A live source: the relay is ready (Type=notify) once it reads it.
    let _publisher = s.publish(key);
    s.ready_ok(key, &stack::source_id(1));

    s.machine
        .ok(&["systemctl", "start", "neustream-test-envdump.service"]);
    let out = s.machine.run(&["cat", dump]);
    let vars: HashMap<String, String> = out
        .stdout
        .split(|b| *b == 0)
        .filter_map(|entry| {
            let entry = String::from_utf8(entry.to_vec()).ok()?;
            let (k, v) = entry.split_once('=')?;
            Some((k.to_string(), v.to_string()))
        })
        .collect();
    assert_eq!(vars["NEUSTREAM_STREAM_KEY"], key);
    assert_eq!(vars["NEUSTREAM_DESTINATIONS"], listed.len().to_string());
    assert_eq!(
        vars["NEUSTREAM_SOURCE_URL"],
        format!("rtmp://127.0.0.1:{}/live/{key}", s.ingest.port)
    );
    for (i, (platform, url, dest_key)) in listed.iter().enumerate() {
        assert_eq!(vars[&format!("NEUSTREAM_DEST_{i}_PLATFORM")], *platform);
        assert_eq!(
            vars[&format!("NEUSTREAM_DEST_{i}_RTMP_URL")],
            *url,
            "destination {i}"
        );
        assert_eq!(
            vars[&format!("NEUSTREAM_DEST_{i}_STREAM_KEY")],
            *dest_key,
            "destination {i}"
        );
    }
}
