//! Figure 1, hook latency: from `neustream ready` starting to the relay unit active, and from
//! `neustream unpublish` starting to the unit stopped, env file removed and stream end
//! reported. The hooks run inside the nspawn machine as user `mediamtx` (polkit decides), with
//! MediaMTX's environment, against the Control Plane double (which answers at once), while the
//! stream is live at the ingest (so the relay really starts its ffmpeg).
//!
//! Timing is taken inside the machine by the shell that runs the hook ($EPOCHREALTIME before
//! the fork, after the exit): it includes the hook's exec and dynamic loading, as MediaMTX
//! would see it. `ready` returns only after systemd reported the start job `done` (the unit is
//! `Type=notify`: active once the relay sent READY=1, i.e. its source ffmpeg connected to
//! MediaMTX and the relay read the first FLV tag); every run is checked with `systemctl
//! is-active` afterwards, and runs where it was not active are counted as failures. That first
//! tag depends on where in the GOP the run starts (the source ffmpeg writes its FLV header once
//! it knows every stream's parameters), so runs are spread over the 2 s GOP by a random pause
//! of 0–2 s between them: a fixed cycle about as long as the GOP would lock onto one phase.

use std::time::Duration;

use crate::lab::{Lab, PROJECT};
use crate::stats::{ms, ratio, summary, table, Summary};
use crate::{progress, Opts};

const HOLD: f64 = 0.5;
const GAP: f64 = 0.2;
const BATCH: usize = 50;

struct Runs {
    ready: Vec<f64>,
    unpublish: Vec<f64>,
    failures: usize,
}

/// Runs `ready` then `unpublish` `n` times; `active` is a shell test of the relay running.
fn measure(lab: &Lab, path: &str, n: usize, ready: &str, unpublish: &str, active: &str) -> Runs {
    let mut runs = Runs {
        ready: vec![],
        unpublish: vec![],
        failures: 0,
    };
    let mut done = 0;
    while done < n {
        crate::check_interrupted();
        let batch = BATCH.min(n - done);
        let script = format!(
            "for i in $(seq 1 {batch}); do\n\
               t0=$EPOCHREALTIME; {ready} >/dev/null 2>>/tmp/bench-ready.log; rc=$?; t1=$EPOCHREALTIME\n\
               if {active}; then s1=active; else s1=inactive; fi\n\
               sleep {HOLD}\n\
               t2=$EPOCHREALTIME; {unpublish} >/dev/null 2>>/tmp/bench-unpublish.log; rc2=$?; t3=$EPOCHREALTIME\n\
               if {active}; then s2=active; else s2=inactive; fi\n\
               echo \"run $t0 $t1 $rc $s1 $t2 $t3 $rc2 $s2\"\n\
               sleep {GAP}; sleep $((RANDOM % 2)).$(printf %03d $((RANDOM % 1000)))\n\
             done\n\
             tail -n 5 /tmp/bench-ready.log /tmp/bench-unpublish.log >&2 2>/dev/null; true"
        );
        let out = lab.run_in(
            &lab.hook_env(path),
            &script,
            Duration::from_secs((batch as u64) * 20 + 60),
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let mut seen = 0;
        for line in text.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() != 9 || f[0] != "run" {
                continue;
            }
            seen += 1;
            let t = |i: usize| f[i].parse::<f64>().unwrap_or(f64::NAN);
            let ok = f[3] == "0" && f[4] == "active" && f[7] == "0" && f[8] == "inactive";
            if !ok {
                runs.failures += 1;
                progress!("latency: failed run: {line}");
                continue;
            }
            runs.ready.push(t(2) - t(1));
            runs.unpublish.push(t(6) - t(5));
        }
        if seen < batch {
            progress!(
                "latency: {} of {batch} runs reported; stderr: {}",
                seen,
                String::from_utf8_lossy(&out.stderr)
            );
            runs.failures += batch - seen;
        }
        done += batch;
    }
    runs
}

fn row(
    name: &str,
    s: &Summary,
    failures: usize,
    base: Option<&Summary>,
    goal: &str,
) -> Vec<String> {
    vec![
        name.into(),
        format!(
            "{}{}",
            s.n,
            if failures > 0 {
                format!(" ({failures} failed)")
            } else {
                String::new()
            }
        ),
        ms(s.p50),
        ms(s.p90),
        ms(s.p99),
        format!("{}–{}", ms(s.min), ms(s.max)),
        base.map_or("–".into(), |b| ratio(s.p50, b.p50)),
        goal.into(),
    ]
}

/// Seconds since UTC midnight of a tracing timestamp (`2026-11-24T07:34:37.047983Z ...`).
fn log_time(line: &str) -> Option<f64> {
    let ts = line.split_whitespace().next()?;
    let time = ts.split_once('T')?.1.trim_end_matches('Z');
    let mut f = time.split(':');
    let (h, m, s): (f64, f64, f64) = (
        f.next()?.parse().ok()?,
        f.next()?.parse().ok()?,
        f.next()?.parse().ok()?,
    );
    Some(h * 3600.0 + m * 60.0 + s)
}

/// Where a `ready` run spends its time: its own log lines (info level: after the Control
/// Plane accepted the key, and after systemd reported the start job done) against its start;
/// and the start job of the relay unit's sandbox (the unit with `/bin/sleep` as ExecStart)
/// against the same job without any sandboxing, both started by root with `systemctl start`.
fn profile(lab: &Lab, path: &str, runs: usize) -> String {
    let script = format!(
        "for i in $(seq 1 {runs}); do neustream unpublish >/dev/null 2>&1; sleep 0.3; \
           t0=$EPOCHREALTIME; neustream ready 2>/tmp/bench-profile.log; t1=$EPOCHREALTIME; \
           echo \"run $t0 $t1\"; sed 's/^/log /' /tmp/bench-profile.log; sleep 0.2; done; \
         neustream unpublish >/dev/null 2>&1"
    );
    let out = lab.run_in(
        &lab.hook_env(path),
        &script,
        Duration::from_secs(30 + runs as u64 * 5),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let (mut auth, mut rest, mut exit) = (vec![], vec![], vec![]);
    let mut cur: Option<(f64, f64)> = None;
    let mut accepted = None;
    for line in text.lines() {
        if let Some(r) = line.strip_prefix("run ") {
            let v: Vec<f64> = r
                .split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect();
            cur = (v.len() == 2).then(|| (v[0], v[1]));
            accepted = None;
        } else if let (Some(l), Some((t0, t1))) = (line.strip_prefix("log "), cur) {
            let Some(t) = log_time(l) else { continue };
            let since = (t - t0.rem_euclid(86400.0)).rem_euclid(86400.0);
            if l.contains("accepted by the Control Plane") {
                accepted = Some(since);
                auth.push(since);
            } else if l.contains("relaying to") {
                if let Some(a) = accepted {
                    rest.push(since - a);
                    exit.push(t1 - t0 - since);
                }
            }
        }
    }
    // The start job with and without the relay unit's sandbox.
    let relay_unit =
        std::fs::read_to_string(format!("{PROJECT}/systemd/neustream-relay@.service")).unwrap();
    let sandboxed: String = relay_unit
        .lines()
        .map(|l| {
            if l.starts_with("ExecStart=") {
                "ExecStart=/bin/sleep 60"
            } else if l.starts_with("Type=") {
                // sleep sends no READY=1: the sandbox's cost alone, as for the bare unit.
                "Type=exec"
            } else if l.starts_with("NotifyAccess=") {
                ""
            } else if l.starts_with("Restart=") {
                "Restart=no"
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let units = lab.machine.dir.join("units");
    std::fs::write(units.join("bench-sandboxed@.service"), sandboxed).unwrap();
    std::fs::write(
        units.join("bench-bare@.service"),
        "[Service]\nType=exec\nExecStart=/bin/sleep 60\n",
    )
    .unwrap();
    lab.machine.ok(&["systemctl", "daemon-reload"]);
    let script = format!(
        "for i in $(seq 1 {runs}); do for u in bench-sandboxed bench-bare; do \
           t0=$EPOCHREALTIME; systemctl start $u@$i; t1=$EPOCHREALTIME; echo \"$u $t0 $t1\"; \
           systemctl stop $u@$i; done; done"
    );
    let out = lab.machine.run(&["bash", "-c", &script]);
    let (mut sandboxed, mut bare) = (vec![], vec![]);
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() != 3 {
            continue;
        }
        let d = f[2].parse::<f64>().unwrap_or(f64::NAN) - f[1].parse::<f64>().unwrap_or(f64::NAN);
        match f[0] {
            "bench-sandboxed" => sandboxed.push(d),
            _ => bare.push(d),
        }
    }
    let p = |v: &[f64]| ms(crate::stats::percentile(v, 50.0));
    let sandbox_cost =
        crate::stats::percentile(&sandboxed, 50.0) - crate::stats::percentile(&bare, 50.0);
    format!(
        "Where `ready`'s time goes (p50 of {runs} runs, from its own log lines):\n\n{}\n\
         The start job alone, `systemctl start` by root (p50 of {runs}): the relay unit's \
         sandbox (as `Type=exec`, ExecStart `/bin/sleep`) {} vs the same `Type=exec` unit \
         without hardening {}: **the sandbox costs {}** per start on this machine; the rest \
         of the start job is the relay's own start until READY=1 (its source ffmpeg reading \
         MediaMTX).\n",
        table(
            &["phase", "p50"],
            &[
                vec![
                    "exec, settings, HTTP client (TLS roots), auth call".into(),
                    p(&auth)
                ],
                vec![
                    "forwarding call, env file, D-Bus, polkit, start job until READY=1".into(),
                    p(&rest)
                ],
                vec!["exit".into(), p(&exit)],
            ]
        ),
        p(&sandboxed),
        p(&bare),
        ms(sandbox_cost),
    )
}

pub fn run(opts: &Opts) -> String {
    let lab = Lab::new("lat", Duration::from_millis(50), false);
    let path = "live/lat";
    let key = "lat";
    lab.add_stream(key, "live", &Lab::dest_names(key));
    let _publishers = lab.publish_mtx(&[path.to_string()]);

    let unit = "neustream-relay@lat.service";
    progress!(
        "latency: {} runs of neustream ready/unpublish",
        opts.latency_runs
    );
    let ours = measure(
        &lab,
        path,
        opts.latency_runs,
        "neustream ready",
        "neustream unpublish",
        &format!("systemctl -q is-active {unit}"),
    );
    let seed = opts.baseline("seed").then(|| {
        progress!("latency: {} runs of the seed hooks", opts.seed_latency_runs);
        let seed_dir = format!("{PROJECT}/bench/seed");
        measure(
            &lab,
            path,
            opts.seed_latency_runs,
            &format!("bash {seed_dir}/ready.sh"),
            &format!("bash {seed_dir}/unpublish.sh"),
            "kill -0 $(cat /tmp/ffmpeg-source-42-lat.pid 2>/dev/null) 2>/dev/null",
        )
    });

    let r = summary(&ours.ready);
    let u = summary(&ours.unpublish);
    let sr = seed.as_ref().map(|s| summary(&s.ready));
    let su = seed.as_ref().map(|s| summary(&s.unpublish));
    let mut rows = vec![row(
        "neustream ready → unit active",
        &r,
        ours.failures,
        sr.as_ref(),
        "p50 < 50 ms, p99 < 150 ms",
    )];
    if let (Some(s), Some(seed)) = (&sr, &seed) {
        rows.push(row(
            "seed ready (curl + jq, sleep 2, ffmpeg, sleep 2)",
            s,
            seed.failures,
            None,
            "",
        ));
    }
    rows.push(row(
        "neustream unpublish → unit stopped, end reported",
        &u,
        0,
        su.as_ref(),
        "same",
    ));
    if let (Some(s), Some(_)) = (&su, &seed) {
        rows.push(row(
            "seed unpublish (curl + jq, kill, sleep 2)",
            s,
            0,
            None,
            "",
        ));
    }
    let met_ready = r.p50 < 0.050 && r.p99 < 0.150;
    let met_unpub = u.p50 < 0.050 && u.p99 < 0.150;
    let mut out = format!(
        "## 1. Hook latency\n\n\
         Hook start → relay unit active (`ready`) / stopped (`unpublish`), inside the systemd \
         machine as user mediamtx, Control Plane double answering at once, stream live. \
         Ratios are p50 / seed's p50.\n\n{}\n\
         Goal (p50 < 50 ms, p99 < 150 ms): ready {}, unpublish {}.\n",
        table(
            &[
                "hook",
                "runs",
                "p50",
                "p90",
                "p99",
                "min–max",
                "vs seed (p50)",
                "goal"
            ],
            &rows
        ),
        if met_ready { "**met**" } else { "**missed**" },
        if met_unpub { "**met**" } else { "**missed**" },
    );
    if (!met_ready || !met_unpub) && opts.profile {
        progress!("latency: profiling ready");
        out.push('\n');
        out.push_str(&profile(&lab, path, 20));
    }
    out
}
