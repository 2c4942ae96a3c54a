//! Figure 7, a publisher drop (issue 10, the reconnect grace): a stream is live at its 3
//! destinations; its publisher (`ffmpeg -re -stream_loop -1 -c copy`) stops (SIGTERM: it
//! leaves the ingest) and `--drop-gap` seconds later a NEW publisher connects to the same path,
//! a new connection as OBS reconnecting. Through the real MediaMTX, which runs the layouts'
//! hooks itself (runOnAvailable / runOnUnavailable) or forwards; nginx-rtmp push takes the
//! publishers on its own ingest.
//!
//! Measured at each destination (nginx-rtmp, `rec` application):
//! - the longest wall-clock gap between video frames from the drop until the new publisher's
//!   picture is there (tests/common/arrivals.rs, 10 ms polling), + 1 s;
//! - the publish sessions it saw during the run (nginx-rtmp `on_publish` notifications,
//!   tests/common/publish_hooks.rs): 1 if the destination stayed connected across the drop;
//! - the time to the new publisher's picture: its first video frame that is followed by at
//!   least 10 more within 0.5 s (30 fps, where the frozen picture of the grace is 2 fps), from
//!   the new publisher's first byte (tap.rs) and from MediaMTX's `readyTime` of the path (the
//!   moment it fired runOnAvailable; not for nginx push).
//!
//! The cases take turns, run by run, each run a new stream key. After each run the publisher
//! leaves for good and the run waits until nothing of it is left (for the grace, 30 s).

use std::time::Duration;

use crate::common::arrivals::{now, worst_gap, Frame};
use crate::common::wait_for;
use crate::figures::ttff::ready_time;
use crate::lab::{Lab, DESTS};
use crate::layouts::Layout;
use crate::rtmp::Publisher;
use crate::stats::{percentile, secs, table};
use crate::tap::Tap;
use crate::{progress, sleep, Opts};

/// How long a run waits for the first publisher's picture, and for the new one's.
const LIMIT: f64 = 25.0;
/// How long a run waits, after the last publisher left, until nothing of it is left (the
/// grace is 30 s).
const GONE_LIMIT: f64 = 50.0;
/// A frame counts as the new publisher's picture when at least this many frames follow it
/// within `LIVE_WINDOW` (30 fps: 15; the frozen picture, 2 fps: 1).
const LIVE_FRAMES: usize = 10;
const LIVE_WINDOW: f64 = 0.5;

struct Case {
    name: &'static str,
    layout: Layout,
    /// MediaMTX path prefix (lab.rs); for nginx push (its `rec` application) only the keys'.
    prefix: &'static str,
}

fn cases(opts: &Opts) -> Vec<Case> {
    let mut v = vec![
        Case {
            name: "neustream, grace 30 s",
            layout: Layout::Neustream,
            prefix: "dn",
        },
        Case {
            name: "neustream, grace 0 (off)",
            layout: Layout::Neustream,
            prefix: "dz",
        },
    ];
    if opts.baseline("seed") {
        v.push(Case {
            name: Layout::Seed.name(),
            layout: Layout::Seed,
            prefix: "ds",
        });
    }
    if opts.baseline("mediamtx") {
        v.push(Case {
            name: Layout::Forward.name(),
            layout: Layout::Forward,
            prefix: "df",
        });
    }
    if opts.baseline("nginx") {
        v.push(Case {
            name: Layout::Push.name(),
            layout: Layout::Push,
            prefix: "dp",
        });
    }
    v
}

struct Run {
    /// Per destination: the longest gap between video frames across the drop.
    gaps: Vec<f64>,
    /// Per destination: publish sessions seen during the run.
    sessions: Vec<usize>,
    /// Per destination: video frames per second during the drop.
    fps_during: Vec<f64>,
    /// Seconds from the drop to the new publisher's first byte: how long the publisher was
    /// away (`--drop-gap` plus its own start), a floor of every gap without the grace.
    away: f64,
    /// Seconds from the new publisher's first byte to its picture at every destination.
    from_byte: f64,
    /// Seconds from MediaMTX's path ready to the picture at every destination.
    from_ready: Option<f64>,
}

/// The first frame from `from` on that is followed by `LIVE_FRAMES` more within
/// `LIVE_WINDOW`: the new publisher's picture (None while it cannot be told yet).
fn live_from(frames: &[Frame], from: f64) -> Option<f64> {
    let after: Vec<f64> = frames
        .iter()
        .filter(|f| f.wall >= from)
        .map(|f| f.wall)
        .collect();
    after.iter().enumerate().find_map(|(i, &t)| {
        let within = after[i + 1..]
            .iter()
            .take_while(|&&u| u <= t + LIVE_WINDOW)
            .count();
        (within >= LIVE_FRAMES).then_some(t)
    })
}

fn count(frames: &[Frame], from: f64, to: f64) -> usize {
    frames
        .iter()
        .filter(|f| f.wall >= from && f.wall <= to)
        .count()
}

/// `neustream` processes (hooks, relays) and the seed's ffmpegs still running in the machine.
fn leftovers(lab: &Lab, case: &Case) -> usize {
    let hooks = crate::procs::named_descendants(lab.machine.pid1, &["neustream"]).len();
    case.layout.leftover_pids(lab).len() + hooks
}

fn one(lab: &Lab, case: &Case, key: &str, gap: f64) -> Result<Run, String> {
    let (path, upstream) = if case.layout == Layout::Push {
        (
            format!("rec/{key}"),
            lab.push.as_ref().expect("an nginx push ingest").port,
        )
    } else {
        (format!("{}/{key}", case.prefix), lab.mtx_port)
    };
    if case.layout.hooks().is_some() {
        lab.add_stream(key, "rec", &Lab::dest_names(key));
    }
    let names: Vec<String> = (0..DESTS).map(|i| format!("{key}-d{i}")).collect();
    for (i, n) in names.iter().enumerate() {
        lab.watcher.watch(n, &lab.dests[i].recording("rec", key));
    }
    let result = measure(lab, case, key, &path, upstream, &names, gap);

    // The last publisher is gone (measure dropped it): wait until nothing of this run is left
    // (MediaMTX ran the unpublish hook; with the grace on, it waits the grace out first).
    let gone = wait_for(
        Duration::from_secs_f64(GONE_LIMIT),
        Duration::from_millis(250),
        || {
            crate::check_interrupted();
            let streams: usize = lab
                .dests
                .iter()
                .map(|d| d.stat().iter().filter(|s| s.name == key).count())
                .sum();
            let units = if case.layout == Layout::Neustream {
                lab.units_in("active,activating,deactivating")
            } else {
                0
            };
            (streams == 0 && units == 0 && leftovers(lab, case) == 0).then_some(())
        },
    );
    if gone.is_none() {
        progress!(
            "drop: {}: {key}: still running {GONE_LIMIT:.0} s after the publisher left",
            case.name
        );
    }
    for n in &names {
        lab.watcher.forget(n);
    }
    result
}

fn measure(
    lab: &Lab,
    case: &Case,
    key: &str,
    path: &str,
    upstream: u16,
    names: &[String],
    gap: f64,
) -> Result<Run, String> {
    let frames = |n: &str| lab.watcher.frames(n);
    let first = Publisher::start(&lab.clip, &format!("rtmp://127.0.0.1:{upstream}/{path}"));
    let live = wait_for(
        Duration::from_secs_f64(LIMIT),
        Duration::from_millis(50),
        || {
            crate::check_interrupted();
            names.iter().all(|n| !frames(n).is_empty()).then_some(())
        },
    );
    if live.is_none() {
        drop(first);
        return Err(format!(
            "not every destination had a frame within {LIMIT:.0} s of the first publish"
        ));
    }
    sleep(3.0);

    // The drop: the publisher leaves the ingest; a new one connects `gap` s later.
    let dropped = now();
    drop(first);
    sleep(dropped + gap - now());
    let tap = Tap::start(upstream);
    let back_started = now();
    let second = Publisher::start(&lab.clip, &format!("rtmp://127.0.0.1:{}/{path}", tap.port));
    let pictures = wait_for(
        Duration::from_secs_f64(LIMIT),
        Duration::from_millis(20),
        || {
            crate::check_interrupted();
            names
                .iter()
                .map(|n| live_from(&frames(n), back_started))
                .collect::<Option<Vec<f64>>>()
        },
    );
    let ready = if case.layout == Layout::Push {
        None
    } else {
        // The new publisher's path ready (not the first one's).
        wait_for(Duration::from_secs(2), Duration::from_millis(50), || {
            ready_time(lab, path).filter(|r| *r >= back_started - 0.5)
        })
    };
    let end = pictures
        .as_ref()
        .map_or(now(), |p| p.iter().copied().fold(0.0, f64::max))
        + 1.0;
    sleep(end - now());
    let sessions: Vec<usize> = (0..DESTS)
        .map(|i| lab.sessions[i].calls("publish", key).len())
        .collect();
    let gaps: Vec<f64> = names
        .iter()
        .map(|n| worst_gap(&frames(n), dropped, end))
        .collect();
    let fps_during: Vec<f64> = names
        .iter()
        .map(|n| count(&frames(n), dropped + 0.5, back_started) as f64 / (gap - 0.5))
        .collect();
    let first_byte = tap.first_byte();
    drop(second);
    drop(tap);
    let pictures = pictures.ok_or_else(|| {
        format!(
            "the new publisher's picture did not reach every destination within {LIMIT:.0} s \
             (sessions {sessions:?})"
        )
    })?;
    let all = pictures.iter().copied().fold(0.0, f64::max);
    let t0 = first_byte.ok_or("the new publisher never sent a byte")?;
    Ok(Run {
        gaps,
        sessions,
        fps_during,
        away: t0 - dropped,
        from_byte: all - t0,
        from_ready: ready.map(|r| all - r),
    })
}

fn range(values: &[f64], show: impl Fn(f64) -> String) -> String {
    if values.is_empty() {
        return "–".into();
    }
    let (lo, hi) = (percentile(values, 0.0), percentile(values, 100.0));
    format!(
        "**{}** ({}–{})",
        show(percentile(values, 50.0)),
        show(lo),
        show(hi)
    )
}

pub fn run(opts: &Opts) -> String {
    let cases = cases(opts);
    let lab = Lab::counting_sessions(
        "drop",
        Duration::from_millis(10),
        cases.iter().any(|c| c.layout == Layout::Push),
    );
    let mut results: Vec<(Vec<Run>, usize)> = cases.iter().map(|_| (vec![], 0)).collect();
    for r in 0..opts.drop_runs {
        for (ci, case) in cases.iter().enumerate() {
            crate::check_interrupted();
            let key = format!("{}x{r}", case.prefix);
            match one(&lab, case, &key, opts.drop_gap) {
                Ok(run) => {
                    progress!(
                        "drop: {} run {r}: gaps {}, sessions {:?}, during {} fps, away {}, \
                         picture {} after the first byte ({} after path ready)",
                        case.name,
                        run.gaps
                            .iter()
                            .map(|g| secs(*g))
                            .collect::<Vec<_>>()
                            .join(" "),
                        run.sessions,
                        run.fps_during
                            .iter()
                            .map(|f| format!("{f:.1}"))
                            .collect::<Vec<_>>()
                            .join(" "),
                        secs(run.away),
                        secs(run.from_byte),
                        run.from_ready.map_or("–".into(), secs),
                    );
                    results[ci].0.push(run);
                }
                Err(e) => {
                    results[ci].1 += 1;
                    progress!("drop: {} run {r} failed: {e}", case.name);
                }
            }
            sleep(0.5);
        }
    }
    drop(lab);

    let mut rows = vec![];
    for (case, (runs, failed)) in cases.iter().zip(&results) {
        // Per run, the worst destination.
        let gaps: Vec<f64> = runs
            .iter()
            .map(|r| r.gaps.iter().copied().fold(0.0, f64::max))
            .collect();
        let sessions: Vec<String> = (0..DESTS)
            .map(|i| {
                let s: Vec<usize> = runs.iter().map(|r| r.sessions[i]).collect();
                match (s.iter().min(), s.iter().max()) {
                    (Some(lo), Some(hi)) if lo == hi => lo.to_string(),
                    (Some(lo), Some(hi)) => format!("{lo}–{hi}"),
                    _ => "–".into(),
                }
            })
            .collect();
        let during: Vec<f64> = runs
            .iter()
            .map(|r| r.fps_during.iter().sum::<f64>() / DESTS as f64)
            .collect();
        let away: Vec<f64> = runs.iter().map(|r| r.away).collect();
        let from_byte: Vec<f64> = runs.iter().map(|r| r.from_byte).collect();
        let from_ready: Vec<f64> = runs.iter().filter_map(|r| r.from_ready).collect();
        rows.push(vec![
            case.name.into(),
            format!(
                "{}{}",
                runs.len(),
                if *failed > 0 {
                    format!(" ({failed} failed)")
                } else {
                    String::new()
                }
            ),
            range(&gaps, secs),
            if away.is_empty() {
                "–".into()
            } else {
                secs(percentile(&away, 50.0))
            },
            sessions.join(" / "),
            if during.is_empty() {
                "–".into()
            } else {
                format!("{:.1}", percentile(&during, 50.0))
            },
            range(&from_byte, secs),
            range(&from_ready, secs),
        ]);
    }
    format!(
        "## 7. A publisher drop\n\n\
         Live to {DESTS} destinations through the real MediaMTX (which runs the hooks), the \
         publisher leaves and a new one (a new connection, as OBS reconnecting) publishes the \
         same path {gap:.0} s later; nginx-rtmp push takes both on its own ingest. \"longest \
         gap\": the longest wall-clock gap between video frames at a destination from the \
         drop until 1 s after the new publisher's picture is at every destination (per run, \
         the worst destination; median and min–max over runs). \"publisher away\": from the drop \
         to the new publisher's first byte ({gap:.0} s and the new ffmpeg's start): without \
         the grace no gap can be shorter. \"sessions\": publish sessions \
         each destination saw in the run (nginx-rtmp `on_publish`; 1 = connected throughout). \
         \"during\": video frames per second at a destination while no publisher is there \
         (the grace's frozen picture: 2). \"picture\": until the new publisher's picture (30 \
         fps again: a frame followed by {LIVE_FRAMES} more within {LIVE_WINDOW} s) is at \
         every destination, from the new publisher's first byte and from MediaMTX's \
         `readyTime` of the path (when it fired runOnAvailable).\n\n{}",
        table(
            &[
                "relay",
                "runs",
                "longest gap p50 (min–max)",
                "publisher away p50",
                "sessions per destination",
                "fps during the drop",
                "picture after first byte p50 (min–max)",
                "picture after path ready p50 (min–max)",
            ],
            &rows
        ),
        gap = opts.drop_gap,
    )
}
