//! Figure 5, start storm: `--storm-streams` publishers start within 1 s; MediaMTX runs the
//! hooks itself (runOnAvailable / runOnUnavailable, as in production). Measured from the first
//! publisher's start: until every relay runs (neustream: every relay unit `active`; seed: every
//! ffmpeg running) and until every destination has recorded its first keyframe. Then every
//! publisher stops at once: until nothing is left (no relay unit loaded as active, activating
//! or deactivating, no relay process, every stream end reported to the Control Plane, no
//! destination stream left).

use std::time::Duration;

use crate::common::arrivals::now;
use crate::lab::{Lab, DESTS};
use crate::layouts::Layout;
use crate::rtmp::{stop_all, Publisher};
use crate::stats::{percentile, secs, table};
use crate::{progress, sleep, Opts};

const LIMIT: f64 = 120.0;
const POLL: f64 = 0.25;

pub fn run(opts: &Opts) -> String {
    let mut out = String::from(
        "## 5. Start storm\n\n\
         N streams published within about 1 s (MediaMTX runs the hooks); times from the first \
         publisher's start. Then all N publishers stop at once: time until nothing is left (no \
         relay unit active/activating/deactivating, no relay process, no env file, all N stream \
         ends reported, no destination stream).\n\n",
    );
    let layouts = Layout::selected(opts);
    let mut rows = vec![];
    for &n in &opts.storm_streams {
        rows.extend(storm(&layouts, n));
    }
    out.push_str(&table(
        &[
            "streams",
            "relay",
            "published within",
            "every relay running",
            "every destination receiving",
            "p50 destination first frame",
            "all gone after unpublish",
        ],
        &rows,
    ));
    out
}

fn storm(layouts: &[Layout], n: usize) -> Vec<Vec<String>> {
    let lab = Lab::new(
        &format!("storm{n}"),
        Duration::from_millis(100),
        layouts.contains(&Layout::Push),
    );
    let mut rows = vec![];
    for &layout in layouts {
        crate::check_interrupted();
        progress!("storm: {n} streams, {}", layout.name());
        let tag = layout.prefix();
        let keys: Vec<String> = (0..n).map(|i| format!("{tag}storm{i}")).collect();
        let urls: Vec<String> = keys
            .iter()
            .map(|k| match layout {
                Layout::Neustream | Layout::FfmpegEngine => lab.mtx_url(&format!("hook/{k}")),
                Layout::V1 => lab.mtx_url(&format!("v1/{k}")),
                Layout::Restreamer => lab.mtx_url(&format!("rs/{k}")),
                Layout::Seed => lab.mtx_url(&format!("seed/{k}")),
                Layout::Forward => lab.mtx_url(&format!("fwdhead/{k}")),
                Layout::Push => lab.push.as_ref().unwrap().url("head", k),
            })
            .collect();
        for k in &keys {
            lab.add_stream(k, "head", &Lab::dest_names(k));
            for i in 0..DESTS {
                lab.watcher
                    .watch(&format!("{k}-{i}"), &lab.dests[i].recording("head", k));
            }
        }
        if layout == Layout::FfmpegEngine {
            lab.set_engine(&keys, Some("ffmpeg"));
        }
        let ends_before = lab.cp.count("POST", "/api/auth/stream-end");

        // CPU before the storm: the machine's own daemons, and MediaMTX with its reaped hooks.
        let daemons = |lab: &Lab| {
            let mut pids = vec![lab.machine.pid1];
            pids.extend(crate::procs::named_descendants(
                lab.machine.pid1,
                &[
                    "systemd-journal",
                    "dbus-daemon",
                    "polkitd",
                    "systemd-logind",
                ],
            ));
            pids
        };
        let daemon_pids = daemons(&lab);
        let daemons0 = crate::procs::cpu_seconds(&daemon_pids);
        let ingest = layout.ingest_pids(&lab);
        let hooks0: f64 = ingest
            .iter()
            .map(|p| crate::procs::cpu_seconds_with_children(*p))
            .sum();
        let ingest0 = crate::procs::cpu_seconds(&ingest);

        // The storm: n publishers within 1 s.
        let t0 = now();
        let mut publishers: Vec<Publisher> = vec![];
        for (i, url) in urls.iter().enumerate() {
            publishers.push(Publisher::start(&lab.clip, url));
            let next = t0 + (i + 1) as f64 / n as f64;
            sleep(next - now());
        }
        let spawned = now() - t0;
        let mut all_running = None;
        let mut half_running = None;
        let mut all_receiving = None;
        while now() - t0 < LIMIT && (all_running.is_none() || all_receiving.is_none()) {
            crate::check_interrupted();
            if all_running.is_none() {
                let running = match layout {
                    Layout::Neustream | Layout::FfmpegEngine => lab.units_in("active"),
                    Layout::Seed | Layout::V1 => lab.hook_ffmpeg_pids().len(),
                    // One ffmpeg per destination.
                    Layout::Restreamer => lab.hook_ffmpeg_pids().len() / DESTS,
                    _ => n,
                };
                if running * 2 >= n && half_running.is_none() {
                    half_running = Some(now() - t0);
                }
                if running >= n {
                    all_running = Some(now() - t0);
                }
            }
            if all_receiving.is_none() {
                let firsts: Vec<Option<f64>> = keys
                    .iter()
                    .flat_map(|k| (0..DESTS).map(move |i| format!("{k}-{i}")))
                    .map(|name| lab.watcher.first_key(&name))
                    .collect();
                if firsts.iter().all(Option::is_some) {
                    let times: Vec<f64> = firsts.iter().map(|f| f.unwrap() - t0).collect();
                    all_receiving = Some((percentile(&times, 100.0), percentile(&times, 50.0)));
                }
            }
            sleep(POLL);
        }
        // Where the CPU went until every destination received (or the limit).
        let relays = crate::procs::cpu_seconds(&layout.relay_pids(&lab));
        let publishers_cpu =
            crate::procs::cpu_seconds(&publishers.iter().map(|p| p.pid()).collect::<Vec<_>>());
        let ingest1 = crate::procs::cpu_seconds(&ingest);
        let hooks = ingest
            .iter()
            .map(|p| crate::procs::cpu_seconds_with_children(*p))
            .sum::<f64>()
            - hooks0
            - (ingest1 - ingest0);
        progress!(
            "storm: {}: CPU seconds during the start ({:.1} s): relays {relays:.1} (sandbox, \
             relay, ffmpeg), hooks {hooks:.1}, systemd+dbus+polkit+journald {:.1}, ingest {:.1}, \
             publishers {publishers_cpu:.1}",
            layout.name(),
            now() - t0,
            crate::procs::cpu_seconds(&daemon_pids) - daemons0,
            ingest1 - ingest0,
        );
        let missing: Vec<String> = keys
            .iter()
            .flat_map(|k| (0..DESTS).map(move |i| format!("{k}-{i}")))
            .filter(|name| lab.watcher.first_key(name).is_none())
            .collect();
        let received = n * DESTS - missing.len();
        if !missing.is_empty() {
            progress!(
                "storm: {}: no keyframe at {} destination(s): {}",
                layout.name(),
                missing.len(),
                missing
                    .iter()
                    .take(12)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(" ")
            );
            if layout.is_neustream() {
                let unit = format!(
                    "neustream-relay@{}.service",
                    missing[0].rsplit_once('-').unwrap().0
                );
                let props = lab
                    .machine
                    .show(&unit, &["ActiveState", "NRestarts", "Result"]);
                progress!("storm: {unit}: {props:?}");
            }
        }
        sleep(2.0);

        // Everything stops at once.
        let t1 = now();
        stop_all(&mut publishers);
        let mut gone = None;
        let mut left = String::new();
        while now() - t1 < LIMIT {
            crate::check_interrupted();
            let units = if layout.is_neustream() {
                lab.units_in("active,activating,deactivating,reloading")
            } else {
                0
            };
            let procs = layout.leftover_pids(&lab).len();
            let env_files = if layout.is_neustream() {
                let out = lab.machine.run(&["ls", "/run/neustream/streams"]);
                String::from_utf8_lossy(&out.stdout).lines().count()
            } else {
                0
            };
            let ends = match layout {
                Layout::Neustream
                | Layout::FfmpegEngine
                | Layout::V1
                | Layout::Restreamer
                | Layout::Seed => lab.cp.count("POST", "/api/auth/stream-end") - ends_before,
                _ => n,
            };
            let dests: usize = lab
                .dests
                .iter()
                .map(|d| {
                    d.stat()
                        .iter()
                        .filter(|s| s.app == "head" && keys.contains(&s.name))
                        .count()
                })
                .sum();
            if units == 0 && procs == 0 && env_files == 0 && ends >= n && dests == 0 {
                gone = Some(now() - t1);
                break;
            }
            left = format!(
                "{units} units, {procs} relay processes, {env_files} env files, {ends}/{n} \
                 stream ends, {dests} destination streams"
            );
            sleep(POLL);
        }
        if gone.is_none() {
            progress!(
                "storm: {}: still left after unpublish: {left}",
                layout.name()
            );
        }
        for k in &keys {
            for i in 0..DESTS {
                lab.watcher.forget(&format!("{k}-{i}"));
            }
        }
        progress!(
            "storm: {}: published in {}, all running {:?}, all receiving {:?} ({received}/{}), all gone {:?}",
            layout.name(),
            secs(spawned),
            all_running,
            all_receiving,
            n * DESTS,
            gone
        );
        let limit = format!("> {LIMIT:.0} s");
        rows.push(vec![
            n.to_string(),
            layout.name().into(),
            secs(spawned),
            match layout {
                Layout::Neustream
                | Layout::FfmpegEngine
                | Layout::V1
                | Layout::Restreamer
                | Layout::Seed => format!(
                    "{} (half: {})",
                    all_running.map_or(limit.clone(), secs),
                    half_running.map_or(limit.clone(), secs)
                ),
                _ => "–".into(),
            },
            all_receiving.map_or(format!("{limit} ({received}/{})", n * DESTS), |(max, _)| {
                secs(max)
            }),
            all_receiving.map_or("–".into(), |(_, p50)| secs(p50)),
            gone.map_or(limit.clone(), secs),
        ]);
        sleep(3.0);
    }
    rows
}
