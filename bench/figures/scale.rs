//! Figure 4, scale: the largest number of streams × 3 destinations relayed at real time on
//! this machine, publishers, ingest and destination servers included. Stream counts are tried
//! in order (`--scale-sizes`), each in a fresh world, until one fails, for each layout of
//! `--scale-layouts` (neustream v3 by default). The streams start in batches of
//! `--scale-batch` (each batch receiving at every destination before the next starts), so that
//! the figure measures the steady state, not a start storm (the storm figure does that).
//!
//! Real time: every destination's media timestamp advances by at least 0.99 s per wall second
//! over the window (from nginx-rtmp's per-stream statistics), and at the sampled destinations
//! (3 streams, first, middle and last started, whose destinations record) no two consecutive
//! video frames arrive more than 0.5 s apart (wall clock, 50 ms polling).
//!
//! The relays run as they do in production: systemd units in the nspawn machine. Its cgroup
//! controllers are read-only here, so the units' CPUQuota/MemoryMax are recorded but not
//! enforced and do not limit this figure.

use std::time::Duration;

use crate::common::arrivals::{now, worst_gap};
use crate::lab::{Lab, DESTS};
use crate::layouts::{Layout, Streams};
use crate::procs::{mem, CpuMeter, SystemMeter};
use crate::stats::{mb, pct, secs, table};
use crate::{progress, sleep, Opts};

const WARMUP: f64 = 10.0;
const MIN_RATE: f64 = 0.99;
const MAX_GAP: f64 = 0.5;

pub fn run(opts: &Opts) -> String {
    let mut rows = vec![];
    let mut verdicts = vec![];
    for &layout in &opts.scale_layouts {
        let mut largest = None;
        for &n in &opts.scale_sizes {
            crate::check_interrupted();
            let n = n.max(3);
            let (row, pass) = size(opts, layout, n);
            rows.push(row);
            if pass {
                largest = Some(n);
            } else {
                break;
            }
        }
        verdicts.push(format!(
            "{}: **{}**",
            layout.name(),
            largest.map_or("none".into(), |n| n.to_string())
        ));
        if layout == Layout::Neustream {
            verdicts.push(format!(
                "goal ≥ 100 for neustream v3: **{}**",
                if largest.is_some_and(|n| n >= 100) {
                    "met"
                } else {
                    "missed"
                }
            ));
        }
    }
    format!(
        "## 4. Scale\n\n\
         Streams × 3 destinations relayed at real time on this machine, everything on it: \
         relays, the ingest (MediaMTX; nginx-rtmp for nginx push), the publishers \
         (`ffmpeg -re -c copy`) and the 3 destination servers (with their TLS terminators). \
         Streams start in batches of {batch}, each receiving everywhere before the next. CPU in \
         % of one core over a {:.0} s window; \"machine\" is the whole machine's busy time (2 \
         cores = 200 %). Real time: every destination ≥ {MIN_RATE} media s per wall s, no video \
         gap > {MAX_GAP} s at the 9 sampled destinations.\n\n{}\n\
         Largest real-time count tried: {}.\n",
        opts.scale_window,
        table(
            &[
                "streams",
                "relay",
                "real time",
                "destinations",
                "min rate",
                "worst gap",
                "relays CPU",
                "ingest",
                "publishers",
                "destination servers",
                "machine",
                "relays PSS",
            ],
            &rows
        ),
        verdicts.join("; "),
        batch = opts.scale_batch,
    )
}

/// One stream count of one layout, in a fresh world: (report row, real time).
fn size(opts: &Opts, layout: Layout, n: usize) -> (Vec<String>, bool) {
    progress!(
        "scale: {n} streams × {DESTS} destinations: {}",
        layout.name()
    );
    let lab = Lab::new(
        &format!("scale{n}{}", layout.prefix()),
        Duration::from_millis(50),
        layout == Layout::Push,
    );
    let sampled = Streams::start(&lab, layout, 3, "rec", "x");
    for k in &sampled.keys {
        for i in 0..DESTS {
            lab.watcher
                .watch(&format!("{k}-{i}"), &lab.dests[i].recording("rec", k));
        }
    }
    let mut all = vec![sampled];
    let batch = opts.scale_batch.max(1);
    let mut started = 3;
    while started < n {
        crate::check_interrupted();
        let m = batch.min(n - started);
        all.push(Streams::start(
            &lab,
            layout,
            m,
            "live",
            &format!("b{}x", all.len()),
        ));
        started += m;
        progress!("scale: {started} of {n} streams started");
    }
    sleep(WARMUP);

    let publishers: Vec<i32> = all
        .iter()
        .flat_map(|s| &s.publishers)
        .map(|p| p.pid())
        .collect();
    let relay_pids = layout.relay_pids(&lab);
    let m_relays = CpuMeter::start(&relay_pids);
    let m_ingest = CpuMeter::start(&layout.ingest_pids(&lab));
    let m_pubs = CpuMeter::start(&publishers);
    let m_dests = CpuMeter::start(&lab.dest_pids());
    let m_system = SystemMeter::start();
    let t0 = now();
    let before: Vec<_> = all.iter().map(|s| s.stats(&lab)).collect();
    sleep(opts.scale_window);
    let t1 = now();
    let after: Vec<_> = all.iter().map(|s| s.stats(&lab)).collect();
    let (relays, ingest, pubs, dests, system) = (
        m_relays.stop(),
        m_ingest.stop(),
        m_pubs.stop(),
        m_dests.stop(),
        m_system.stop(),
    );
    let pss = mem(&relay_pids).pss_kib;
    let sampled = &all[0];

    let mut rates = vec![];
    let mut present = 0;
    for (b, a) in before.iter().zip(&after) {
        for (bs, as_) in b.iter().zip(a) {
            for st in bs {
                let rate = as_
                    .iter()
                    .find(|x| x.name == st.name)
                    .map_or(0.0, |x| (x.timestamp - st.timestamp) / (t1 - t0));
                rates.push(rate);
            }
            present += as_.len();
        }
    }
    let min_rate = rates.iter().copied().fold(f64::INFINITY, f64::min);
    let gap = sampled
        .keys
        .iter()
        .flat_map(|k| (0..DESTS).map(move |i| format!("{k}-{i}")))
        .map(|name| worst_gap(&lab.watcher.frames(&name), t0, t1))
        .fold(0.0, f64::max);
    let pass =
        present == n * DESTS && rates.len() == n * DESTS && min_rate >= MIN_RATE && gap <= MAX_GAP;
    progress!(
        "scale: {n} × {}: {present}/{} destinations, min rate {min_rate:.3}, worst gap {}, \
         relays {}, ingest {}, publishers {}, destinations {}, machine {} → {}",
        layout.name(),
        n * DESTS,
        secs(gap),
        pct(relays.percent),
        pct(ingest.percent),
        pct(pubs.percent),
        pct(dests.percent),
        pct(system),
        if pass { "real time" } else { "NOT real time" }
    );
    let row = vec![
        n.to_string(),
        layout.name().into(),
        if pass { "yes".into() } else { "**no**".into() },
        format!("{present}/{}", n * DESTS),
        format!("{min_rate:.3}"),
        secs(gap),
        format!(
            "{} ({} /stream)",
            pct(relays.percent),
            pct(relays.percent / n as f64)
        ),
        pct(ingest.percent),
        pct(pubs.percent),
        pct(dests.percent),
        format!("{} of 200 %", pct(system)),
        if relay_pids.is_empty() {
            "–".into()
        } else {
            mb(pss)
        },
    ];
    drop(all);
    drop(lab);
    (row, pass)
}
