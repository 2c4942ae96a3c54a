//! The operator's view against real relays in a real systemd (tests/common/stack.rs):
//! `neustream status` run by an unprivileged local user, and `GET /metrics` from the
//! socket-activated neustream-metrics.service, compared with what the destinations' servers
//! really recorded; a destination taken down and brought back; the scrape checked by
//! Prometheus' own `promtool check metrics`; no destination key anywhere.
//!
//! With NEUSTREAM_OPERATOR_TRACE=FILE, the scrapes taken during the test are written to FILE
//! as CSV (docs/operator-outage.csv and the README's picture come from such a run).

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::machine::Options;
use common::media::{probe, Publisher};
use common::nginx::RtmpServer;
use common::stack::{self, Dest, Stack};

const PLATFORMS: [&str; 3] = ["youtube", "twitch", "custom"];

fn project_file(name: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(name)).unwrap()
}

/// The shipped metrics units, the socket moved to `port` (tests run side by side on one host,
/// and the machine shares the host's network).
fn metrics_units(port: u16) -> Options {
    let socket = project_file("systemd/neustream-metrics.socket");
    assert!(socket.contains("ListenStream=127.0.0.1:9431\n"));
    Options {
        units: vec![
            (
                "neustream-metrics.socket".into(),
                socket.replace(
                    "ListenStream=127.0.0.1:9431\n",
                    &format!("ListenStream=127.0.0.1:{port}\n"),
                ),
            ),
            (
                "neustream-metrics.service".into(),
                project_file("systemd/neustream-metrics.service"),
            ),
        ],
        wants: Vec::new(),
        ..Options::default()
    }
}

/// `GET /metrics` on 127.0.0.1:`port`: the status line and headers, and the body.
fn scrape(port: u16) -> (String, String) {
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect to metrics");
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/plain\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    c.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    (head.to_string(), body.to_string())
}

/// The value of sample `name` whose labels include `labels`.
fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (series, v) = l.rsplit_once(' ')?;
        let (n, rest) = series.split_once('{').unwrap_or((series, "}"));
        if n != name {
            return None;
        }
        let rest = rest.strip_suffix('}')?;
        labels
            .iter()
            .all(|(k, want)| rest.split(',').any(|kv| kv == format!("{k}=\"{want}\"")))
            .then(|| v.parse().ok())?
    })
}

/// `neustream status` (extra args) as the unprivileged user `daemon`: exit code and stdout.
fn status(s: &Stack, args: &[&str]) -> (i32, String, String) {
    let mut argv = vec!["neustream", "status"];
    argv.extend_from_slice(args);
    let out = s.machine.run_env(Some("daemon"), &[], &argv);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn status_json(s: &Stack, key: &str) -> (i32, serde_json::Value) {
    let (code, out, err) = status(s, &[key, "--json"]);
    let v = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}{err}"));
    (code, v)
}

/// The state file as the relay wrote it, read from the host through the machine's root.
fn state_path(s: &Stack, key: &str) -> PathBuf {
    PathBuf::from(format!(
        "/proc/{}/root/run/neustream/relays/{key}/state.json",
        s.machine.pid1
    ))
}

/// Waits for the relay's next write of its state file, then at once reads it and the size of
/// every destination's recording, so that the two are compared at the same moment.
fn aligned(s: &Stack, key: &str, dests: &[Dest]) -> (serde_json::Value, Vec<u64>) {
    let path = state_path(s, key);
    let before = std::fs::read_to_string(&path).unwrap_or_default();
    let fresh = common::wait_for(Duration::from_secs(5), Duration::from_millis(5), || {
        std::fs::read_to_string(&path)
            .ok()
            .filter(|t| *t != before && t.ends_with("}\n"))
    })
    .expect("the relay rewrites its state file every 2 s");
    let sizes = dests
        .iter()
        .map(|d| std::fs::metadata(&d.recording).map_or(0, |m| m.len()))
        .collect();
    (serde_json::from_str(&fresh).unwrap(), sizes)
}

fn within(got: f64, want: f64, tolerance: f64) -> bool {
    want > 0.0 && ((got - want) / want).abs() <= tolerance
}

/// Scrapes every 100 ms in the background, for the outage trace (the relay rewrites its state
/// every 2 s: a fine trace tells when each counter moved).
struct Trace {
    stop: Arc<AtomicBool>,
    rows: Arc<Mutex<Vec<String>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Trace {
    fn start(port: u16, id: String) -> Trace {
        let stop = Arc::new(AtomicBool::new(false));
        let rows = Arc::new(Mutex::new(Vec::new()));
        let (st, r) = (stop.clone(), rows.clone());
        let thread = std::thread::spawn(move || {
            let start = Instant::now();
            // Bounded: at most 10 minutes of scrapes.
            while !st.load(Ordering::Relaxed) && start.elapsed() < Duration::from_secs(600) {
                let t = start.elapsed().as_secs_f64();
                let (_, body) = scrape(port);
                for i in 0..PLATFORMS.len() {
                    let idx = i.to_string();
                    let l = [("stream", id.as_str()), ("index", idx.as_str())];
                    let get = |n| value(&body, n, &l).map_or(String::new(), |v| v.to_string());
                    r.lock().unwrap().push(format!(
                        "{t:.3},{i},{},{},{},{}",
                        get("neustream_destination_up"),
                        get("neustream_destination_sent_bytes_total"),
                        get("neustream_destination_acked_bytes_total"),
                        get("neustream_destination_rtt_seconds"),
                    ));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        Trace {
            stop,
            rows,
            thread: Some(thread),
        }
    }

    fn finish(mut self, events: &[(f64, &str)]) -> String {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let mut csv = String::from("# events:");
        for (t, what) in events {
            csv.push_str(&format!(" {t:.3}={what}"));
        }
        csv.push_str("\nseconds,index,up,sent_bytes,acked_bytes,rtt_seconds\n");
        for row in self.rows.lock().unwrap().iter() {
            csv.push_str(row);
            csv.push('\n');
        }
        csv
    }
}

impl Drop for Trace {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn status_and_metrics_tell_what_each_destination_really_receives() {
    common::require_tool("promtool", "prometheus");
    let port = common::free_port();
    let s = Stack::boot_with("operator", metrics_units(port), 1);
    s.machine
        .ok(&["systemctl", "start", "neustream-metrics.socket"]);

    // Before any stream: nothing to report, all is well.
    let (code, out, err) = status(&s, &[]);
    assert_eq!(
        (code, out.as_str()),
        (0, "no relays on this node\n"),
        "{err}"
    );
    let (head, body) = scrape(port);
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4; charset=utf-8"),
        "{head}"
    );
    assert!(
        body.contains("neustream_relays{health=\"live\"} 0"),
        "{body}"
    );
    assert!(
        body.lines().any(|l| l == "neustream_systemd_up 1"),
        "{body}\n{}",
        s.machine.journal(&["-u", "neustream-metrics.service"])
    );
    let exporter = s.machine.show(
        "neustream-metrics.service",
        &["ActiveState", "MainPID", "TriggeredBy"],
    );
    assert_eq!(exporter["ActiveState"], "active", "{exporter:?}");
    let uid = s.machine.ok(&[
        "stat",
        "-c",
        "%u",
        &format!("/proc/{}", exporter["MainPID"]),
    ]);
    assert_ne!(uid.trim(), "0", "the exporter runs unprivileged");

    // A stream to three destinations.
    let mut servers: Vec<RtmpServer> = (0..3).map(|i| s.destination(&format!("d{i}"))).collect();
    let dests: Vec<Dest> = servers
        .iter()
        .enumerate()
        .map(|(i, srv)| Dest::on(srv, PLATFORMS[i], &stack::secret_key(&format!("op{i}"))))
        .collect();
    let secrets: Vec<String> = dests.iter().map(|d| d.key.clone()).collect();
    let key = "op01";
    stack::add_stream(&s.cp, key, &dests);
    let publisher = Publisher::start(&s.ingest.url(&format!("live/{key}")));
    common::wait_for(Duration::from_secs(15), Duration::from_millis(100), || {
        probe(&s.ingest.recording(key)).filter(|r| r.video_frames > 0)
    })
    .expect("the ingest has the stream");
    s.ready_ok(key, &stack::source_id(1));
    stack::wait_receiving(&dests, None, 30, Duration::from_secs(15))
        .unwrap_or_else(|e| panic!("{e}; relay log:\n{}", s.relay_log(key)));

    let mut outputs: Vec<(String, String)> = Vec::new();
    let (code, v) = status_json(&s, key);
    let id = v["relays"][0]["id"].as_str().unwrap().to_string();
    let trace = Trace::start(port, id.clone());
    let t0 = Instant::now();
    // Let a few seconds of stream through, so that 5 % is well above a second's worth.
    std::thread::sleep(Duration::from_secs(8));

    // --- Every destination live, and the numbers match what the servers recorded.
    let (code_live, text, _) = status(&s, &[]);
    outputs.push(("neustream status".into(), text.clone()));
    assert_eq!(code_live, 0, "{text}");
    assert_eq!(code, 0, "{v:#}");
    for (i, p) in PLATFORMS.iter().enumerate() {
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("  {i}  {p}")) && l.contains(" live ")),
            "{text}"
        );
    }
    // A publish of a key the Control Plane does not know: refused (401), relayed nowhere.
    let refused = s.hook("ready", "op_unknown", &stack::source_id(2), &[]);
    assert!(!refused.ok(), "an unknown key is refused");
    let (state, sizes) = aligned(&s, key, &dests);
    let (_, body) = scrape(port);
    outputs.push(("/metrics".into(), body.clone()));

    // --- The hooks' reports: the ready above (auth, destinations) and the refused one.
    let hooks = [
        (
            "neustream_hook_runs_total",
            vec![("hook", "ready"), ("result", "ok")],
            1.0,
        ),
        (
            "neustream_hook_runs_total",
            vec![("hook", "ready"), ("result", "refused")],
            1.0,
        ),
        (
            "neustream_hook_runs_total",
            vec![("hook", "unpublish"), ("result", "ok")],
            0.0,
        ),
        (
            "neustream_control_plane_requests_total",
            vec![("endpoint", "auth"), ("outcome", "2xx")],
            1.0,
        ),
        (
            "neustream_control_plane_requests_total",
            vec![("endpoint", "auth"), ("outcome", "4xx")],
            1.0,
        ),
        (
            "neustream_control_plane_requests_total",
            vec![("endpoint", "forwarding"), ("outcome", "2xx")],
            1.0,
        ),
        (
            "neustream_control_plane_request_duration_seconds_count",
            vec![("endpoint", "auth")],
            2.0,
        ),
        (
            "neustream_control_plane_request_duration_seconds_bucket",
            vec![("endpoint", "forwarding"), ("le", "+Inf")],
            1.0,
        ),
        ("neustream_hook_reports_invalid_total", vec![], 0.0),
    ];
    for (name, labels, want) in &hooks {
        assert_eq!(
            value(&body, name, labels),
            Some(*want),
            "{name}{labels:?} in\n{body}\n{}",
            s.machine.journal(&["-u", "neustream-metrics.service"])
        );
    }
    let auth_seconds = value(
        &body,
        "neustream_control_plane_request_duration_seconds_sum",
        &[("endpoint", "auth")],
    )
    .unwrap();
    assert!(auth_seconds > 0.0 && auth_seconds < 10.0, "{auth_seconds}");
    let mut report = Vec::new();
    for (i, size) in sizes.iter().enumerate() {
        let d = &state["destinations"][i];
        let sent = d["bytes"].as_f64().unwrap();
        let acked = d["tcp"]["bytes_acked"]
            .as_f64()
            .unwrap_or_else(|| panic!("no tcp counters for destination {i}: {d:#}"));
        let size = *size as f64;
        report.push(format!(
            "destination {i}: recorded {size} B, sent {sent} ({:+.2} %), acked {acked} ({:+.2} %)",
            (sent - size) / size * 100.0,
            (acked - size) / size * 100.0
        ));
        assert!(within(sent, size, 0.05), "{}", report.join("\n"));
        assert!(within(acked, size, 0.05), "{}", report.join("\n"));
        let l = [("stream", id.as_str()), ("index", &i.to_string())];
        let m_sent = value(&body, "neustream_destination_sent_bytes_total", &l).unwrap();
        let m_acked = value(&body, "neustream_destination_acked_bytes_total", &l).unwrap();
        assert!(
            within(m_sent, size, 0.05),
            "metrics sent {m_sent} vs recorded {size}"
        );
        assert!(
            within(m_acked, size, 0.05),
            "metrics acked {m_acked} vs recorded {size}"
        );
        assert_eq!(
            value(&body, "neustream_destination_up", &l),
            Some(1.0),
            "{body}"
        );
        assert!(value(&body, "neustream_destination_rtt_seconds", &l).unwrap() > 0.0);
    }
    eprintln!("{}", report.join("\n"));
    // CPU and memory are systemd's own accounting: the same numbers as `systemctl show`, or
    // absent where systemd has none (a cgroup-v1 host, as this test machine on some hosts).
    let shown = s.relay(key, &["CPUUsageNSec", "MemoryCurrent", "NRestarts"]);
    let (_, v) = status_json(&s, key);
    let usage = &v["relays"][0]["systemd"];
    let sample = |name| value(&body, name, &[("stream", id.as_str())]);
    eprintln!(
        "systemctl show: {shown:?}; metrics: cpu {:?} memory {:?}; status: {usage}",
        sample("neustream_relay_cpu_seconds_total"),
        sample("neustream_relay_memory_bytes")
    );
    assert_eq!(
        sample("neustream_relay_restarts_total"),
        Some(shown["NRestarts"].parse().unwrap())
    );
    assert_eq!(usage["restarts"], 0, "{v:#}");
    match shown["CPUUsageNSec"].parse::<f64>() {
        Ok(nsec) => {
            let cpu = sample("neustream_relay_cpu_seconds_total").expect("cpu");
            assert!(
                cpu > 0.0 && within(cpu, nsec / 1e9, 0.2),
                "cpu {cpu} vs {nsec} ns"
            );
            assert!(usage["cpu_seconds"].as_f64().unwrap() > 0.0, "{v:#}");
        }
        Err(_) => {
            assert_eq!(sample("neustream_relay_cpu_seconds_total"), None, "{body}");
            assert!(usage["cpu_seconds"].is_null(), "{v:#}");
        }
    }
    match shown["MemoryCurrent"].parse::<f64>() {
        Ok(bytes) => {
            let mem = sample("neustream_relay_memory_bytes").expect("memory");
            assert!(within(mem, bytes, 0.3), "memory {mem} vs {bytes}");
            assert!(usage["memory_bytes"].as_u64().unwrap() > 1_000_000, "{v:#}");
        }
        Err(_) => {
            assert_eq!(sample("neustream_relay_memory_bytes"), None, "{body}");
            assert!(usage["memory_bytes"].is_null(), "{v:#}");
        }
    }

    // Prometheus' own checker: any complaint fails.
    let file = s.dir.join("metrics.prom");
    std::fs::write(&file, &body).unwrap();
    let check = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("promtool check metrics < {}", file.display()))
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(
        check.status.success() && said.trim().is_empty(),
        "promtool: {said}\n{body}"
    );

    // --- Destination 1 goes down: within 5 s, not live in status (exit 1) and up 0.
    let down_port = servers[1].port;
    let events_down = t0.elapsed().as_secs_f64();
    let down_at = Instant::now();
    servers[1].stop();
    let l1 = [("stream", id.as_str()), ("index", "1")];
    let seen = common::wait_for(Duration::from_secs(5), Duration::from_millis(100), || {
        let (_, body) = scrape(port);
        (value(&body, "neustream_destination_up", &l1) == Some(0.0)).then_some(body)
    })
    .unwrap_or_else(|| panic!("destination 1 still up 5 s after its server went away"));
    let metrics_down = down_at.elapsed();
    outputs.push(("/metrics (outage)".into(), seen.clone()));
    let retrying = [
        ("stream", id.as_str()),
        ("index", "1"),
        ("state", "retrying"),
    ];
    assert_eq!(
        value(&seen, "neustream_destination_state", &retrying),
        Some(1.0),
        "{seen}"
    );
    let (code, v) = common::wait_for(Duration::from_secs(5), Duration::from_millis(100), || {
        let (code, v) = status_json(&s, key);
        (v["relays"][0]["state"]["destinations"][1]["state"] == "retrying").then_some((code, v))
    })
    .unwrap_or_else(|| panic!("status does not show destination 1 retrying"));
    let status_down = down_at.elapsed();
    assert!(status_down < Duration::from_secs(5), "{status_down:?}");
    assert_eq!(code, 1, "{v:#}");
    let err = v["relays"][0]["state"]["destinations"][1]["last_error"]
        .as_str()
        .unwrap();
    assert!(
        ["dropped", "unreachable", "refused"].contains(&err),
        "{v:#}"
    );
    for i in [0, 2] {
        let l = [("stream", id.as_str()), ("index", &i.to_string())];
        assert_eq!(
            value(&seen, "neustream_destination_up", &l),
            Some(1.0),
            "{seen}"
        );
    }
    let (code, text, stderr) = status(&s, &[]);
    assert_eq!(code, 1, "{text}");
    assert!(stderr.contains("1 of 1 stream not live"), "{stderr}");
    eprintln!("neustream status during the outage (exit {code}):\n{text}");
    outputs.push(("neustream status (outage)".into(), text));
    eprintln!("outage seen: /metrics after {metrics_down:?}, status after {status_down:?}");
    std::thread::sleep(Duration::from_secs(6));

    // --- It comes back: live and up 1 again.
    let events_back = t0.elapsed().as_secs_f64();
    let back_at = Instant::now();
    servers[1] = RtmpServer::start_on(&s.dir.join("d1-back"), down_port);
    common::wait_for(Duration::from_secs(10), Duration::from_millis(100), || {
        let (_, body) = scrape(port);
        (value(&body, "neustream_destination_up", &l1) == Some(1.0)).then_some(())
    })
    .unwrap_or_else(|| panic!("destination 1 not up 10 s after it came back"));
    let metrics_back = back_at.elapsed();
    let (code, text, _) = status(&s, &[]);
    assert_eq!(code, 0, "{text}");
    eprintln!("back: /metrics up after {metrics_back:?}");
    // Its bytes keep counting over both sessions: acked grows past what it had before.
    std::thread::sleep(Duration::from_secs(6));
    let (_, body) = scrape(port);
    outputs.push(("/metrics (back)".into(), body.clone()));
    let attempts = value(&body, "neustream_destination_attempts_total", &l1).unwrap();
    assert!(attempts >= 2.0, "{body}");
    let csv = trace.finish(&[(events_down, "down"), (events_back, "back")]);
    let trace_file = std::env::var_os("NEUSTREAM_OPERATOR_TRACE")
        .map(PathBuf::from)
        .unwrap_or_else(|| s.dir.join("trace.csv"));
    std::fs::write(&trace_file, &csv).unwrap();
    eprintln!("trace: {}", trace_file.display());

    // --- No destination key anywhere; the ingest key not in the metrics (labels carry the id).
    for (place, text) in &outputs {
        for secret in &secrets {
            assert!(
                !text.contains(secret.as_str()),
                "{secret} in {place}:\n{text}"
            );
        }
        if place.starts_with("/metrics") {
            assert!(!text.contains(key), "the ingest key in {place}:\n{text}");
        }
    }
    assert!(!csv.contains(key));
    s.assert_secrets_kept(&secrets);

    // The exporter's sandbox.
    let exposure = s.machine.ok(&[
        "systemd-analyze",
        "security",
        "--no-pager",
        "neustream-metrics.service",
    ]);
    let overall = exposure
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_default()
        .to_string();
    eprintln!("{overall}");
    let level: f64 = overall
        .split_whitespace()
        .find_map(|w| w.parse().ok())
        .unwrap_or(10.0);
    assert!(level <= 2.0, "{overall}");

    drop(publisher);
    s.unpublish_ok(key, &stack::source_id(1));
    let (code, out, _) = status(&s, &[key]);
    assert_eq!(code, 1, "an ended stream is not live: {out}");
}
