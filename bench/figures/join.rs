//! Figure 2b, a relay joining a live stream: from the hook starting to the first video keyframe
//! received at each destination, for a stream that is already live (the relay joins mid-GOP),
//! with the start times spread evenly over the 2 s GOP. (Figure 2, ttff.rs, is the whole
//! publish → first frame as a streamer sees it.)
//!
//! Arrival is read from the destination's own recording (tests/common/arrivals.rs): the
//! watcher stamps a frame when nginx has written it, polling every 5 ms. The hook's start is stamped inside the
//! machine by the shell that runs it ($EPOCHREALTIME, same clock).
//!
//! The floor: an always-connected `ffmpeg -c copy` from the ingest to a fourth recording shows
//! when each keyframe of the source reaches a destination through an ideal relay (already
//! running, nothing to set up). MediaMTX sends a new RTMP reader nothing before the next IDR
//! (it keeps no GOP cache), so no relay started at time t can deliver its first frame before
//! that relay's next keyframe after t: that is each run's floor, U[0, GOP] over the runs.

use std::process::Command;
use std::time::Duration;

use crate::common::arrivals::now;
use crate::lab::{field, timed, Lab, DESTS};
use crate::layouts::Layout as Relay;
use crate::stats::{ratio, secs, summary, table};
use crate::{progress, Opts};

struct Layout {
    name: &'static str,
    ready: String,
    unpublish: String,
}

struct Run {
    /// Per destination, seconds from hook start to its first keyframe (inf: none in time).
    dests: Vec<f64>,
    floor: f64,
}

impl Run {
    fn all(&self) -> f64 {
        self.dests.iter().copied().fold(0.0, f64::max)
    }
}

pub fn run(opts: &Opts) -> String {
    let lab = Lab::new("ttff", Duration::from_millis(5), false);
    let path = "live/tt";
    let _publisher = lab.publish_mtx(&[path.to_string()]);
    // The ideal relay, already running.
    let mut floor_relay = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-i"])
        .arg(lab.mtx_url(path))
        .args(["-c", "copy", "-f", "flv"])
        .arg(lab.dests[0].url("rec", "floor"))
        .stdin(std::process::Stdio::null())
        .spawn()
        .expect("start the floor relay");
    lab.watcher
        .watch("floor", &lab.dests[0].recording("rec", "floor"));
    let ok = crate::common::wait_for(Duration::from_secs(20), Duration::from_millis(100), || {
        (lab.watcher.keyframes("floor").len() >= 4).then_some(())
    });
    assert!(ok.is_some(), "the floor relay delivered no keyframes");
    let kf = lab.watcher.keyframes("floor");
    let diffs: Vec<f64> = kf.windows(2).map(|w| w[1] - w[0]).collect();
    let gop = crate::stats::percentile(&diffs, 50.0);
    progress!("join: source keyframes every {gop:.2} s at the destination");

    // The layouts started by a hook; MediaMTX forward and nginx push have no hook to start.
    let layouts: Vec<(Layout, usize)> = Relay::selected_without_v2(opts)
        .into_iter()
        .filter_map(|l| {
            let (ready, unpublish) = l.hooks()?;
            let name = match l {
                Relay::Neustream => "neustream",
                Relay::Seed => "seed",
                Relay::V1 => "v1",
                _ => "restreamer",
            };
            let runs = if l == Relay::Seed {
                opts.seed_ttff_runs
            } else {
                opts.ttff_runs
            };
            Some((
                Layout {
                    name,
                    ready,
                    unpublish,
                },
                runs,
            ))
        })
        .collect();

    let mut results: Vec<(&str, Vec<Run>, usize)> = vec![];
    for (layout, runs) in &layouts {
        progress!("join: {runs} runs of {}", layout.name);
        let mut done = vec![];
        let mut failed = 0;
        for r in 0..*runs {
            crate::check_interrupted();
            let names: Vec<String> = (0..DESTS)
                .map(|i| format!("tt-{}{r}-d{i}", layout.name))
                .collect();
            lab.add_stream("tt", "rec", &names);
            for (i, n) in names.iter().enumerate() {
                lab.watcher.watch(n, &lab.dests[i].recording("rec", n));
            }
            // Start at an even spread of phases over the GOP, in a scrambled order.
            let slot = (r * 7 + 3) % runs;
            let phase = (slot as f64 + 0.5) / *runs as f64 * gop;
            let last = lab
                .watcher
                .keyframes("floor")
                .last()
                .copied()
                .unwrap_or(now());
            let mut target = last + phase;
            while target < now() + 0.3 {
                target += gop;
            }
            crate::sleep(target - now());
            let env = lab.hook_env(path);
            let child = lab.spawn_in(&env, &timed(&layout.ready), Duration::from_secs(60));
            let arrived =
                crate::common::wait_for(Duration::from_secs(20), Duration::from_millis(20), || {
                    names
                        .iter()
                        .map(|n| lab.watcher.first_key(n))
                        .collect::<Option<Vec<f64>>>()
                });
            let out = child.wait_with_output().expect("wait for the hook");
            let text = String::from_utf8_lossy(&out.stdout);
            let t0 = field(&text, "t0");
            // The floor's keyframe after t0 may still be on its way.
            let floor = t0.and_then(|t0| {
                crate::common::wait_for(Duration::from_secs(5), Duration::from_millis(20), || {
                    lab.watcher
                        .keyframes("floor")
                        .into_iter()
                        .find(|k| *k > t0)
                        .map(|k| k - t0)
                })
            });
            match (t0, arrived.clone(), floor) {
                (Some(t0), Some(first), Some(floor)) => {
                    let run = Run {
                        dests: first.iter().map(|f| f - t0).collect(),
                        floor,
                    };
                    progress!(
                        "join: {} run {r}: {} (floor {})",
                        layout.name,
                        run.dests
                            .iter()
                            .map(|d| secs(*d))
                            .collect::<Vec<_>>()
                            .join(" "),
                        secs(floor)
                    );
                    done.push(run);
                }
                _ => {
                    failed += 1;
                    progress!(
                        "join: {} run {r} failed: t0 {t0:?}, arrived {arrived:?}; hook said: {}",
                        layout.name,
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
            }
            lab.run_in(&env, &layout.unpublish, Duration::from_secs(60));
            for n in &names {
                lab.watcher.forget(n);
            }
            crate::sleep(0.3);
        }
        results.push((layout.name, done, failed));
    }
    let _ = floor_relay.kill();
    let _ = floor_relay.wait();

    let seed_p50 = results
        .iter()
        .find(|r| r.0 == "seed")
        .map(|r| summary(&r.1.iter().map(Run::all).collect::<Vec<_>>()).p50);
    let mut rows = vec![];
    let mut ours_p50 = f64::NAN;
    let mut floor_all = vec![];
    for (name, runs, failed) in &results {
        let all = summary(&runs.iter().map(Run::all).collect::<Vec<_>>());
        let floor = summary(&runs.iter().map(|r| r.floor).collect::<Vec<_>>());
        floor_all.extend(runs.iter().map(|r| r.floor));
        let over = summary(&runs.iter().map(|r| r.all() - r.floor).collect::<Vec<_>>());
        let per_dest: Vec<String> = (0..DESTS)
            .map(|i| secs(summary(&runs.iter().map(|r| r.dests[i]).collect::<Vec<_>>()).p50))
            .collect();
        if *name == "neustream" {
            ours_p50 = all.p50;
        }
        rows.push(vec![
            name.to_string(),
            format!(
                "{}{}",
                all.n,
                if *failed > 0 {
                    format!(" ({failed} failed)")
                } else {
                    String::new()
                }
            ),
            secs(all.p50),
            format!("{}–{}", secs(all.p10), secs(all.p90)),
            per_dest.join(" / "),
            secs(floor.p50),
            secs(over.p50),
            seed_p50.map_or("–".into(), |s| ratio(all.p50, s)),
        ]);
    }
    let floor = summary(&floor_all);
    rows.push(vec![
        "floor (relay already connected)".into(),
        floor.n.to_string(),
        secs(floor.p50),
        format!("{}–{}", secs(floor.p10), secs(floor.p90)),
        "–".into(),
        "–".into(),
        "–".into(),
        seed_p50.map_or("–".into(), |s| ratio(floor.p50, s)),
    ]);
    format!(
        "## 2b. A relay joining a live stream\n\n\
         Hook start → first video keyframe recorded at each destination, stream already live, \
         starts spread evenly over the {gop:.2} s GOP. \"all\" is the last of the 3 \
         destinations; \"over floor\" is that minus the run's floor (the next keyframe after \
         the hook started, as an already-connected relay receives it).\n\n{}\n\
         Goal (p50 ≤ 1.0 s for all destinations): **{}** ({}); the floor's own p50 is {}.\n",
        table(
            &[
                "relay",
                "runs",
                "p50 all",
                "p10–p90 all",
                "p50 per destination",
                "floor p50",
                "over floor p50",
                "vs seed"
            ],
            &rows
        ),
        if ours_p50 <= 1.0 { "met" } else { "missed" },
        secs(ours_p50),
        secs(floor.p50),
    )
}
