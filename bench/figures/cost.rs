//! Figure 3, relay cost in steady state, per stream (3 destinations each): CPU in % of one
//! core, from /proc/<pid>/stat utime + stime of every relay process (for neustream: every
//! process of the relay units, `neustream relay` and its ffmpeg; for the seed: its ffmpeg),
//! plus the extra CPU the ingest spends serving the relays (ingest CPU with the relays minus
//! ingest CPU with the same publishers and no relay: this kernel charges loopback receive work
//! to the sender, so the ingest's share matters). Memory: RSS and PSS (smaps_rollup) of the
//! relay processes, plus the ingest's extra PSS. The window is cut in 3 parts: the table shows
//! the median part and the spread (min–max) over the parts.

use std::time::Duration;

use crate::common::arrivals::now;
use crate::lab::Lab;
use crate::layouts::{Layout, Streams};
use crate::procs::{mem, CpuMeter, Mem};
use crate::stats::{mb, pct, percentile, ratio, table};
use crate::{progress, sleep, Opts};

const PARTS: usize = 3;
const WARMUP: f64 = 5.0;

#[derive(Debug, Clone, Copy, Default)]
pub struct Part {
    pub relay_cpu: f64,
    pub ingest_cpu: f64,
    pub ended: usize,
    /// Lowest media/wall rate of the destinations over the part.
    pub min_rate: f64,
}

/// CPU of the relays and the ingest over `window` seconds (in `PARTS` parts), with the
/// destinations' real-time rate.
pub fn measure(lab: &Lab, layout: Layout, streams: Option<&Streams>, window: f64) -> Vec<Part> {
    let mut parts = vec![];
    for _ in 0..PARTS {
        crate::check_interrupted();
        let relay = CpuMeter::start(&layout.relay_pids(lab));
        let ingest = CpuMeter::start(&layout.ingest_pids(lab));
        let before = streams.map(|s| (now(), s.stats(lab)));
        sleep(window / PARTS as f64);
        let (r, i) = (relay.stop(), ingest.stop());
        let min_rate = match (streams, before) {
            (Some(s), Some((t0, before))) => {
                let (t1, after) = (now(), s.stats(lab));
                let mut worst = f64::INFINITY;
                for (b, a) in before.iter().zip(&after) {
                    for st in b {
                        let rate = a
                            .iter()
                            .find(|x| x.name == st.name)
                            .map_or(0.0, |x| (x.timestamp - st.timestamp) / (t1 - t0));
                        worst = worst.min(rate);
                    }
                }
                if b_len(&before) < s.keys.len() * crate::lab::DESTS {
                    worst = 0.0;
                }
                worst
            }
            _ => f64::NAN,
        };
        parts.push(Part {
            relay_cpu: r.percent,
            ingest_cpu: i.percent,
            ended: r.ended + i.ended,
            min_rate,
        });
    }
    parts
}

fn b_len(stats: &[Vec<crate::rtmp::StreamStat>]) -> usize {
    stats.iter().map(Vec::len).sum()
}

struct Row {
    n: usize,
    layout: Layout,
    /// Per stream, per part: total CPU (relay + extra ingest).
    total: Vec<f64>,
    relay: f64,
    ingest_extra: f64,
    /// Relay processes' PSS per stream.
    pss: f64,
    /// The ingest's extra PSS per stream (its readers or forwarders).
    ingest_pss: f64,
    rss: f64,
    min_rate: f64,
    ended: usize,
}

fn idle(lab: &Lab, layout: Layout, n: usize, window: f64) -> (f64, Mem) {
    let pubs = match layout {
        Layout::Push => {
            let push = lab.push.as_ref().unwrap();
            (0..n)
                .map(|i| {
                    crate::rtmp::Publisher::start(&lab.clip, &push.url("plain", &format!("i{i}")))
                })
                .collect::<Vec<_>>()
        }
        _ => lab.publish_mtx(&(0..n).map(|i| format!("live/i{i}")).collect::<Vec<_>>()),
    };
    sleep(WARMUP);
    let parts = measure(lab, layout, None, window);
    let m = mem(&layout.ingest_pids(lab));
    let mut pubs = pubs;
    crate::rtmp::stop_all(&mut pubs);
    sleep(1.0);
    let cpu: Vec<f64> = parts.iter().map(|p| p.ingest_cpu).collect();
    (percentile(&cpu, 50.0), m)
}

pub fn run(opts: &Opts) -> String {
    let layouts = Layout::selected(opts);
    let mut rows: Vec<Row> = vec![];
    for &n in &opts.cost_sizes {
        let lab = Lab::new(
            &format!("cost{n}"),
            Duration::from_millis(200),
            layouts.contains(&Layout::Push),
        );
        progress!("cost: {n} streams: ingest alone (MediaMTX)");
        let mtx_idle = idle(&lab, Layout::Neustream, n, opts.window);
        let push_idle = layouts.contains(&Layout::Push).then(|| {
            progress!("cost: {n} streams: ingest alone (nginx-rtmp)");
            idle(&lab, Layout::Push, n, opts.window)
        });
        for &layout in &layouts {
            progress!("cost: {n} streams: {}", layout.name());
            let streams = Streams::start(&lab, layout, n, "live", "");
            sleep(WARMUP);
            let parts = measure(&lab, layout, Some(&streams), opts.window);
            let relay_mem = mem(&layout.relay_pids(&lab));
            let ingest_mem = mem(&layout.ingest_pids(&lab));
            streams.stop(&lab);
            let (idle_cpu, idle_mem) = match layout {
                Layout::Push => push_idle.unwrap(),
                _ => mtx_idle,
            };
            let nf = n as f64;
            let total: Vec<f64> = parts
                .iter()
                .map(|p| (p.relay_cpu + p.ingest_cpu - idle_cpu) / nf)
                .collect();
            let relay =
                percentile(&parts.iter().map(|p| p.relay_cpu).collect::<Vec<_>>(), 50.0) / nf;
            let ingest_extra = (percentile(
                &parts.iter().map(|p| p.ingest_cpu).collect::<Vec<_>>(),
                50.0,
            ) - idle_cpu)
                / nf;
            let row = Row {
                n,
                layout,
                relay,
                ingest_extra,
                pss: relay_mem.pss_kib / nf,
                ingest_pss: (ingest_mem.pss_kib - idle_mem.pss_kib) / nf,
                rss: relay_mem.rss_kib / nf,
                min_rate: parts
                    .iter()
                    .map(|p| p.min_rate)
                    .fold(f64::INFINITY, f64::min),
                ended: parts.iter().map(|p| p.ended).sum(),
                total,
            };
            progress!(
                "cost: {n} × {}: {} CPU/stream (relay {}, ingest extra {}), PSS {}/stream, min rate {:.3}",
                layout.name(),
                pct(percentile(&row.total, 50.0)),
                pct(row.relay),
                pct(row.ingest_extra),
                mb(row.pss),
                row.min_rate
            );
            rows.push(row);
        }
    }
    report(&rows)
}

fn report(rows: &[Row]) -> String {
    let find = |n: usize, l: Layout| rows.iter().find(|r| r.n == n && r.layout == l);
    let mut lines = vec![];
    let mut verdicts = vec![];
    for r in rows {
        let t = percentile(&r.total, 50.0);
        let spread = format!(
            "{}–{}",
            pct(percentile(&r.total, 0.0)),
            pct(percentile(&r.total, 100.0))
        );
        let seed = find(r.n, Layout::Seed);
        let push = find(r.n, Layout::Push);
        lines.push(vec![
            r.n.to_string(),
            r.layout.name().into(),
            format!("**{}**", pct(t)),
            spread,
            pct(r.relay),
            pct(r.ingest_extra),
            if r.rss > 0.0 {
                format!("**{}**", mb(r.pss))
            } else {
                "–".into()
            },
            mb(r.ingest_pss),
            if r.rss > 0.0 { mb(r.rss) } else { "–".into() },
            seed.map_or("–".into(), |s| {
                format!(
                    "{} / {}",
                    ratio(t, percentile(&s.total, 50.0)),
                    ratio(r.pss, s.pss)
                )
            }),
            push.map_or("–".into(), |p| ratio(t, percentile(&p.total, 50.0))),
            format!(
                "{:.3}{}",
                r.min_rate,
                if r.ended > 0 {
                    " (processes ended!)"
                } else {
                    ""
                }
            ),
        ]);
        if r.layout == Layout::Neustream {
            if let Some(s) = seed {
                let ok = t <= percentile(&s.total, 50.0) && r.pss <= s.pss;
                verdicts.push(format!(
                    "{} streams: {}",
                    r.n,
                    if ok { "met" } else { "missed" }
                ));
            }
        }
    }
    format!(
        "## 3. Relay cost per stream (3 destinations)\n\n\
         CPU in % of one core per stream: relay processes + the ingest's extra CPU (median of \
         {PARTS} parts of the window, spread min–max). Memory per stream: PSS and RSS of the relay \
         processes, and the ingest's extra PSS (ingest PSS with the relays minus without: the \
         whole memory of MediaMTX forward and nginx push, and for the others the RTMP reader \
         they add to MediaMTX; Go's heap makes it noisy). \"min rate\": the slowest \
         destination's media seconds per wall second. The goal compares CPU/stream and the \
         relay processes' PSS.\n\n{}\n\
         Goal (no more CPU and PSS than the seed): {}.\n",
        table(
            &[
                "streams",
                "relay",
                "CPU/stream",
                "spread",
                "relay procs",
                "ingest extra",
                "PSS/stream (relay procs)",
                "ingest extra PSS",
                "RSS/stream (relay procs)",
                "vs seed (CPU / PSS)",
                "vs nginx push (CPU)",
                "min rate",
            ],
            &lines
        ),
        if verdicts.is_empty() {
            "no seed run".into()
        } else {
            verdicts.join(", ")
        }
    )
}
