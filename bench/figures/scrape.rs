//! Figure 7, scrape: what one `GET /metrics` of neustream-metrics.service costs with many
//! relays. In a real systemd machine, `--scrape-relays` relay units run (the shipped template,
//! its ExecStart replaced by `sleep` through a drop-in, so that systemd accounts real units),
//! each with a state file of 3 destinations as the relay writes them; the exporter runs as
//! shipped (socket-activated, its sandbox, its user). Measured: wall time of `GET /metrics`
//! from the host (connect to last byte) over `--scrape-runs` scrapes after 5 warm-ups, and the
//! exporter's own `neustream_scrape_duration_seconds` (state files + D-Bus).

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use crate::common::machine::{Machine, Options};
use crate::stats::{ms, summary, table};
use crate::{progress, Opts};

const GOAL: f64 = 0.050;

fn project_file(name: &str) -> String {
    std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(name)).unwrap()
}

/// One state file as `crate::relay::state` writes it (layout version 1, with `tcp`).
fn state_json(key: &str, now: u64) -> String {
    let dest = |i: usize, platform: &str| {
        format!(
            "{{\"index\": {i}, \"platform\": \"{platform}\", \"state\": \"live\", \"since\": {s}, \
             \"bytes\": 2062125, \"bitrate\": 6147891, \"attempts\": 1, \"failures\": 0, \
             \"last_error\": null, \"retry_at\": null, \"queue_overflows\": 0, \
             \"tcp\": {{\"bytes_acked\": 2061000, \"bytes_sent\": 2062100, \"rtt_ms\": 0.35, \
             \"delivery_rate\": 780000}}}}",
            s = now - 60
        )
    };
    format!(
        "{{\"version\": 1, \"stream\": \"{key}\", \"pid\": 4242, \"started\": {}, \"updated\": {now}, \
         \"source\": {{\"state\": \"live\", \"since\": {}, \"publisher\": \"conn-{key}\"}}, \
         \"destinations\": [{}, {}, {}]}}\n",
        now - 61,
        now - 60,
        dest(0, "youtube"),
        dest(1, "twitch"),
        dest(2, "custom")
    )
}

fn scrape(port: u16) -> (f64, String) {
    let t = Instant::now();
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect to metrics");
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    c.read_to_string(&mut text).unwrap();
    (t.elapsed().as_secs_f64(), text)
}

fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

pub fn run(opts: &Opts) -> String {
    let port = crate::common::free_port();
    let socket = project_file("systemd/neustream-metrics.socket").replace(
        "ListenStream=127.0.0.1:9431\n",
        &format!("ListenStream=127.0.0.1:{port}\n"),
    );
    let m = Machine::boot_with(
        "scrape",
        Options {
            units: vec![
                ("neustream-metrics.socket".into(), socket),
                (
                    "neustream-metrics.service".into(),
                    project_file("systemd/neustream-metrics.service"),
                ),
                (
                    "neustream-relay@.service.d/bench.conf".into(),
                    "[Service]\nType=exec\nExecStart=\nExecStart=/bin/sleep infinity\n".into(),
                ),
            ],
            wants: Vec::new(),
            ..Options::default()
        },
    );
    let n = opts.scrape_relays;
    progress!("scrape: starting {n} relay units");
    let units: Vec<String> = (0..n)
        .map(|i| format!("neustream-relay@b{i:03}.service"))
        .collect();
    let mut argv = vec!["systemctl", "start"];
    argv.extend(units.iter().map(String::as_str));
    m.ok(&argv);
    m.ok(&["systemctl", "start", "neustream-metrics.socket"]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    for i in 0..n {
        let dir = format!("/proc/{}/root/run/neustream/relays/b{i:03}", m.pid1);
        std::fs::write(
            format!("{dir}/state.json"),
            state_json(&format!("b{i:03}"), now),
        )
        .expect("write a state file in the relay's runtime directory");
    }
    for _ in 0..5 {
        scrape(port);
    }
    let (mut wall, mut own) = (Vec::new(), Vec::new());
    let mut last = String::new();
    for _ in 0..opts.scrape_runs {
        crate::check_interrupted();
        let (t, text) = scrape(port);
        wall.push(t);
        own.push(sample(&text, "neustream_scrape_duration_seconds").unwrap_or(f64::NAN));
        last = text;
    }
    let live = sample(&last, "neustream_relays{health=\"live\"}").unwrap_or(0.0);
    let systemd = sample(&last, "neustream_systemd_up").unwrap_or(0.0);
    let series = last.lines().filter(|l| l.starts_with("neustream_")).count();
    let bytes = last.split_once("\r\n\r\n").map_or(0, |(_, b)| b.len());
    let ok = live as usize == n && systemd == 1.0;
    let (w, o) = (summary(&wall), summary(&own));
    let mut out = format!(
        "## 7. Scrape: `GET /metrics` with {n} relays\n\n\
         {n} relay units in a real systemd (ExecStart replaced by `sleep`), each with a state file \
         of 3 live destinations; the shipped neustream-metrics.socket/.service; {} scrapes from the \
         host after 5 warm-ups. Answer: {series} samples, {bytes} bytes; relays live in it: \
         {live}; systemd answered: {}.\n\n",
        opts.scrape_runs,
        if systemd == 1.0 { "yes" } else { "NO" }
    );
    out.push_str(&table(
        &["measure", "p50", "p90", "max", "goal"],
        &[
            vec![
                "GET /metrics, wall time".into(),
                ms(w.p50),
                ms(w.p90),
                ms(w.max),
                format!(
                    "< 50 ms: **{}**",
                    if ok && w.p90 < GOAL { "met" } else { "missed" }
                ),
            ],
            vec![
                "exporter's own neustream_scrape_duration_seconds".into(),
                ms(o.p50),
                ms(o.p90),
                ms(o.max),
                String::new(),
            ],
        ],
    ));
    drop(m);
    out
}
