//! Figure 2, first frame as a streamer feels it: from the publisher's first packet to the first
//! video frame at every destination, for a fresh publish through the real MediaMTX, which runs
//! the layout's hook itself (runOnAvailable) exactly as in production. Beside it, in the same
//! run, MediaMTX's ready hook also starts a plain reader (bench/floor.sh: `ffmpeg
//! -fpsprobesize 0 -tcp_nodelay 1 -i <path> -c copy -f flv` to a fourth recording): the floor
//! of any relay behind MediaMTX, which reads ~2 s of media before the path is ready and then
//! hands a new reader nothing before the next keyframe.
//!
//! Start: the publisher (`ffmpeg -re -stream_loop -1 -c copy`, from the clip's first frame, a
//! keyframe) connects through a tap (tap.rs) that stamps its first byte. Arrival: the first
//! video frame recorded at each destination (tests/common/arrivals.rs, 5 ms polling). Also
//! recorded: when MediaMTX made the path ready (its API's `readyTime`). Every run is a new
//! publish with a new key; the layouts take turns, run by run, so that a change in the
//! machine's load touches them all alike. MediaMTX forward has the floor too (its path has the
//! same ready hook); nginx-rtmp push does not go through MediaMTX and has none.

use std::time::Duration;

use crate::common::wait_for;
use crate::lab::{Lab, DESTS};
use crate::layouts::Layout;
use crate::rtmp::{http_get, Publisher};
use crate::stats::{secs, summary, table};
use crate::tap::Tap;
use crate::{progress, sleep, Opts};

/// How long a run waits for every destination's first frame.
const LIMIT: f64 = 25.0;
/// Goal: neustream's first frame at every destination within this of the floor.
const GOAL_OVER_FLOOR: f64 = 0.3;

struct Run {
    /// Per destination, seconds from the publisher's first byte to its first video frame.
    dests: Vec<f64>,
    floor: Option<f64>,
    /// MediaMTX's path ready, from the first byte.
    ready: Option<f64>,
}

impl Run {
    fn all(&self) -> f64 {
        self.dests.iter().copied().fold(0.0, f64::max)
    }
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

/// Unix seconds of an RFC 3339 UTC time as MediaMTX writes it (`2026-12-01T21:40:00.123Z`).
fn rfc3339(text: &str) -> Option<f64> {
    let (date, time) = text.split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>().ok());
    let (y, mo, da) = (d.next()??, d.next()??, d.next()??);
    let time = time.strip_suffix('Z')?;
    let mut t = time.split(':');
    let (h, mi, s): (f64, f64, f64) = (
        t.next()?.parse().ok()?,
        t.next()?.parse().ok()?,
        t.next()?.parse().ok()?,
    );
    Some(days_from_civil(y, mo, da) as f64 * 86400.0 + h * 3600.0 + mi * 60.0 + s)
}

pub(crate) fn ready_time(lab: &Lab, path: &str) -> Option<f64> {
    let body = http_get(lab.mtx_api, &format!("/v3/paths/get/{path}"))?;
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    rfc3339(v["readyTime"].as_str()?)
}

/// The floor readers still running (bench/floor.sh's ffmpeg, `<key>-floor`).
fn floor_readers(lab: &Lab) -> Vec<i32> {
    crate::procs::named_descendants(lab.machine.pid1, &["ffmpeg"])
        .into_iter()
        .filter(|p| crate::procs::cmdline(*p).contains("-floor"))
        .collect()
}

fn one(lab: &Lab, layout: Layout, key: &str) -> Result<Run, String> {
    let (path, upstream, with_floor) = match layout {
        Layout::Push => (
            format!("rec/{key}"),
            lab.push.as_ref().expect("an nginx push ingest").port,
            false,
        ),
        Layout::Forward => (format!("tf/{key}"), lab.mtx_port, true),
        _ => (format!("t{}/{key}", layout.prefix()), lab.mtx_port, true),
    };
    if layout.hooks().is_some() {
        lab.add_stream(key, "rec", &Lab::dest_names(key));
    }
    let names: Vec<String> = (0..DESTS).map(|i| format!("{key}-d{i}")).collect();
    for (i, n) in names.iter().enumerate() {
        lab.watcher.watch(n, &lab.dests[i].recording("rec", key));
    }
    let floor_name = format!("{key}-floor");
    if with_floor {
        lab.watcher
            .watch(&floor_name, &lab.dests[0].recording("rec", &floor_name));
    }
    let tap = Tap::start(upstream);
    let publisher = Publisher::start(&lab.clip, &format!("rtmp://127.0.0.1:{}/{path}", tap.port));
    let first = |n: &str| lab.watcher.frames(n).first().map(|f| f.wall);
    let arrived = wait_for(
        Duration::from_secs_f64(LIMIT),
        Duration::from_millis(20),
        || {
            crate::check_interrupted();
            let dests = names
                .iter()
                .map(|n| first(n))
                .collect::<Option<Vec<f64>>>()?;
            let floor = if with_floor {
                Some(first(&floor_name)?)
            } else {
                None
            };
            Some((dests, floor))
        },
    );
    let ready = if layout == Layout::Push {
        None
    } else {
        ready_time(lab, &path)
    };
    let t0 = tap.first_byte();
    drop(publisher);
    drop(tap);
    // Everything of this run gone: relays (MediaMTX ran the unpublish hook), floor reader,
    // destination streams.
    let gone = wait_for(Duration::from_secs(20), Duration::from_millis(100), || {
        let streams: usize = lab
            .dests
            .iter()
            .map(|d| d.stat().iter().filter(|s| s.name.starts_with(key)).count())
            .sum();
        let units = if layout == Layout::Neustream {
            lab.units_in("active,activating,deactivating")
        } else {
            0
        };
        (layout.leftover_pids(lab).is_empty()
            && floor_readers(lab).is_empty()
            && units == 0
            && streams == 0)
            .then_some(())
    });
    if gone.is_none() {
        progress!(
            "ttff: {}: {key}: still running 20 s after the publisher stopped; killing floor readers",
            layout.name()
        );
        for p in floor_readers(lab) {
            unsafe { libc::kill(p, libc::SIGKILL) };
        }
    }
    for n in names.iter().chain([&floor_name]) {
        lab.watcher.forget(n);
    }
    let t0 = t0.ok_or("the publisher never sent a byte")?;
    let (dests, floor) = arrived.ok_or_else(|| {
        format!(
            "not every destination had a video frame within {LIMIT:.0} s (floor: {})",
            if with_floor {
                first(&floor_name).map_or("none".into(), |f| secs(f - t0))
            } else {
                "–".into()
            }
        )
    })?;
    Ok(Run {
        dests: dests.iter().map(|d| d - t0).collect(),
        floor: floor.map(|f| f - t0),
        ready: ready.map(|r| r - t0),
    })
}

pub fn run(opts: &Opts) -> String {
    let layouts = Layout::selected_without_v2(opts);
    let lab = Lab::new(
        "ttff",
        Duration::from_millis(5),
        layouts.contains(&Layout::Push),
    );
    let runs_of = |l: Layout| {
        if l == Layout::Seed {
            opts.seed_ttff_runs
        } else {
            opts.ttff_runs
        }
    };
    let rounds = layouts.iter().map(|l| runs_of(*l)).max().unwrap_or(0);
    let mut results: Vec<(Layout, Vec<Run>, usize)> =
        layouts.iter().map(|l| (*l, vec![], 0)).collect();
    for r in 0..rounds {
        for (layout, done, failed) in results.iter_mut() {
            if r >= runs_of(*layout) {
                continue;
            }
            crate::check_interrupted();
            let key = format!("t{}{r}", layout.prefix());
            match one(&lab, *layout, &key) {
                Ok(run) => {
                    progress!(
                        "ttff: {} run {r}: {} (floor {}, path ready {})",
                        layout.name(),
                        run.dests
                            .iter()
                            .map(|d| secs(*d))
                            .collect::<Vec<_>>()
                            .join(" "),
                        run.floor.map_or("–".into(), secs),
                        run.ready.map_or("–".into(), secs),
                    );
                    done.push(run);
                }
                Err(e) => {
                    *failed += 1;
                    progress!("ttff: {} run {r} failed: {e}", layout.name());
                }
            }
            sleep(0.5);
        }
    }
    drop(lab);

    let mut rows = vec![];
    let mut verdict = "not run".to_string();
    for (layout, runs, failed) in &results {
        let all = summary(&runs.iter().map(Run::all).collect::<Vec<_>>());
        let floors: Vec<f64> = runs.iter().filter_map(|r| r.floor).collect();
        let over: Vec<f64> = runs
            .iter()
            .filter_map(|r| Some(r.all() - r.floor?))
            .collect();
        let over_s = summary(&over);
        let ready: Vec<f64> = runs.iter().filter_map(|r| r.ready).collect();
        let per_dest: Vec<String> = (0..DESTS)
            .map(|i| secs(summary(&runs.iter().map(|r| r.dests[i]).collect::<Vec<_>>()).p50))
            .collect();
        if *layout == Layout::Neustream && !over.is_empty() {
            verdict = format!(
                "**{}** (p50 {} over the floor)",
                if over_s.p50 <= GOAL_OVER_FLOOR {
                    "met"
                } else {
                    "missed"
                },
                secs(over_s.p50)
            );
        }
        rows.push(vec![
            layout.name().into(),
            format!(
                "{}{}",
                all.n,
                if *failed > 0 {
                    format!(" ({failed} failed)")
                } else {
                    String::new()
                }
            ),
            format!("**{}**", secs(all.p50)),
            format!("{}–{}", secs(all.min), secs(all.max)),
            per_dest.join(" / "),
            secs(summary(&floors).p50),
            if over.is_empty() {
                "–".into()
            } else {
                format!(
                    "{} ({}–{})",
                    secs(over_s.p50),
                    secs(over_s.min),
                    secs(over_s.max)
                )
            },
            secs(summary(&ready).p50),
        ]);
    }
    format!(
        "## 2. First frame, as a streamer feels it\n\n\
         A fresh publish through the real MediaMTX, which runs the layout's hook: from the \
         publisher's first packet to the first video frame recorded at each destination. \
         \"all\" is the last of the {DESTS} destinations. \"floor\": a plain reader \
         (`ffmpeg -fpsprobesize 0 -tcp_nodelay 1 -c copy`) started by the same ready hook in \
         the same run, to a fourth recording: what any relay behind MediaMTX could do at best \
         (MediaMTX reads ~2 s before the path is ready, then a new reader waits for the next \
         keyframe). \"over floor\": per run, all − floor. \"path ready\": MediaMTX's \
         `readyTime`. nginx-rtmp push does not go through MediaMTX (no floor).\n\n{}\n\
         Goal (neustream within {GOAL_OVER_FLOOR} s of the floor): {verdict}.\n",
        table(
            &[
                "relay",
                "runs",
                "p50 all",
                "min–max all",
                "p50 per destination",
                "floor p50",
                "over floor p50 (min–max)",
                "path ready p50",
            ],
            &rows
        ),
    )
}
