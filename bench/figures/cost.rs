//! Figure 3, relay cost in steady state, per stream (3 destinations each): CPU in % of one
//! core, from /proc/<pid>/stat utime + stime of every relay process (for neustream: every
//! process of the relay units' cgroups, `neustream relay` and, with the ffmpeg engine (v2), its
//! source ffmpeg and its destination ffmpegs; for v1, the restreamer layout and the seed:
//! their ffmpegs),
//! plus the extra CPU the ingest spends serving the relays (ingest CPU with the relays minus
//! ingest CPU with the same publishers and no relay: this kernel charges loopback receive work
//! to the sender, so the ingest's share matters). Memory: RSS and PSS (smaps_rollup) of the
//! relay processes, plus the ingest's extra PSS. The window is cut in 3 parts: the table shows
//! the median part and the spread (min–max) over the parts. Over the same window, the bytes on
//! each destination's connections over the media bytes (figure 3b, bench/wire.rs).

use std::time::Duration;

use crate::common::arrivals::now;
use crate::common::wire::FlvMedia;
use crate::lab::Lab;
use crate::layouts::{Layout, Streams};
use crate::procs::{mem, CpuMeter, Mem};
use crate::stats::{mb, pct, percentile, ratio, table};
use crate::wire::{DestWire, WireMeter};
use crate::{progress, sleep, Opts};

const PARTS: usize = 3;
const WARMUP: f64 = 5.0;

#[derive(Debug, Clone, Default)]
pub struct Part {
    pub relay_cpu: f64,
    /// The relay's CPU by role (see [`roles`]), % of one core, all streams.
    pub roles: Vec<(&'static str, f64)>,
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
        let relay_pids = layout.relay_pids(lab);
        let relay = CpuMeter::start(&relay_pids);
        let role_meters: Vec<(&'static str, CpuMeter)> = roles(layout, &relay_pids)
            .into_iter()
            .map(|(name, pids)| (name, CpuMeter::start(&pids)))
            .collect();
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
            roles: role_meters
                .iter()
                .map(|(name, m)| (*name, m.stop().percent))
                .collect(),
            ingest_cpu: i.percent,
            ended: r.ended + i.ended,
            min_rate,
        });
    }
    parts
}

/// The relay processes of neustream by what they do: the relay process itself, the source
/// ffmpegs (ingest → FLV pipe: `pipe:1`), the destination ffmpegs (FLV pipe → RTMP:
/// `pipe:0`). One role, "ffmpeg", for the other layouts.
pub fn roles(layout: Layout, pids: &[i32]) -> Vec<(&'static str, Vec<i32>)> {
    if !layout.is_neustream() {
        return vec![("ffmpeg", pids.to_vec())];
    }
    let mut out: Vec<(&'static str, Vec<i32>)> = vec![
        ("relay process", vec![]),
        ("source ffmpeg", vec![]),
        ("destination ffmpegs", vec![]),
        ("other", vec![]),
    ];
    for &p in pids {
        let cmd = crate::procs::cmdline(p);
        let i = match crate::procs::comm(p).as_deref() {
            Some("neustream") => 0,
            Some("ffmpeg") if cmd.contains("\0pipe:1") => 1,
            Some("ffmpeg") if cmd.contains("\0pipe:0") => 2,
            _ => 3,
        };
        out[i].1.push(p);
    }
    out.retain(|(_, v)| !v.is_empty());
    out
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
    /// Relay processes per stream.
    procs: f64,
    /// By role: (role, CPU per stream, PSS per stream in KiB).
    roles: Vec<(&'static str, f64, f64)>,
    /// Bytes on the wire over media bytes, per destination index, over the whole window.
    wire: Vec<DestWire>,
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
    let media = FlvMedia::read(&crate::lab::clip());
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
            let wire = WireMeter::start(&lab, &streams);
            let parts = measure(&lab, layout, Some(&streams), opts.window);
            let wire = wire.stop(&lab, &streams, &media);
            let relay_pids = layout.relay_pids(&lab);
            let relay_mem = mem(&relay_pids);
            let role_mem: Vec<(&'static str, f64)> = roles(layout, &relay_pids)
                .into_iter()
                .map(|(name, pids)| (name, mem(&pids).pss_kib))
                .collect();
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
            let roles = role_mem
                .iter()
                .map(|(name, pss)| {
                    let cpu: Vec<f64> = parts
                        .iter()
                        .filter_map(|p| p.roles.iter().find(|r| r.0 == *name).map(|r| r.1))
                        .collect();
                    (*name, percentile(&cpu, 50.0) / nf, pss / nf)
                })
                .collect();
            let row = Row {
                n,
                layout,
                procs: relay_pids.len() as f64 / nf,
                roles,
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
                wire,
            };
            progress!(
                "cost: {n} × {}: {} CPU/stream (relay {}, ingest extra {}), PSS {}/stream, \
                 min rate {:.3}, wire/media {}",
                layout.name(),
                pct(percentile(&row.total, 50.0)),
                pct(row.relay),
                pct(row.ingest_extra),
                mb(row.pss),
                row.min_rate,
                row.wire
                    .iter()
                    .map(|w| format!(
                        "{:.3} (media {:.1} MB, {:.3} of the clip's rate)",
                        w.ratio(),
                        w.media / 1e6,
                        w.media / w.media_from_clip
                    ))
                    .collect::<Vec<_>>()
                    .join(" / ")
            );
            rows.push(row);
        }
    }
    format!("{}\n{}", report(&rows), wire_report(&rows, &media))
}

/// A layout whose slowest destination got less media per wall second than this did not keep
/// up (the machine was saturated): its CPU is then a lower bound. Below the scale figure's
/// 0.99: nginx-rtmp's per-stream timestamp moves a frame or an audio packet at a time, which
/// over a part of a few seconds reads as up to ~1 % below real time.
const REAL_TIME: f64 = 0.97;
/// Goals of issue 16 for relay v3 (native engine): CPU per stream at most MediaMTX forward's
/// and at most this times v1's...
const GOAL_CPU_VS_V1: f64 = 0.6;
/// ...at most this PSS per stream of 3 destinations (MiB)...
const GOAL_PSS_MB: f64 = 12.0;
/// ...one process per stream...
const GOAL_PROCS: f64 = 1.0;
/// ...and at most this many bytes on each destination's connection per media byte.
const GOAL_WIRE: f64 = 1.02;

/// A warning when the "v3" rows ran the ffmpeg engine after all: a relay binary that predates
/// the native engine ignores NEUSTREAM_RTMP_ENGINE and runs ffmpegs in its units.
fn engine_note(rows: &[Row]) -> String {
    let ffmpegs = rows.iter().any(|r| {
        r.layout == Layout::Neustream && r.roles.iter().any(|(name, ..)| name.contains("ffmpeg"))
    });
    if ffmpegs {
        "**Note: the relay units of \"neustream v3\" ran ffmpegs: this relay binary has no native \
         engine yet (it ignores NEUSTREAM_RTMP_ENGINE), so its rows measure the ffmpeg engine \
         too.**\n\n"
            .into()
    } else {
        String::new()
    }
}

/// Section 3b: bytes on each destination's connections over the media bytes.
fn wire_report(rows: &[Row], media: &FlvMedia) -> String {
    let dests = rows.first().map_or(0, |r| r.wire.len());
    let mut lines = vec![];
    let mut verdicts = vec![];
    for r in rows {
        let mut line = vec![r.n.to_string(), r.layout.name().into()];
        for w in &r.wire {
            let mut cell = format!("**{:.3}×** ({:.0} seg/s)", w.ratio(), w.segs_per_s);
            if w.changed > 0 || w.missing > 0 || w.sockets != r.n {
                cell.push_str(&format!(
                    " ({} connection(s) counted; {} opened or closed and {} stream(s) not \
                     there throughout: not counted)",
                    w.sockets, w.changed, w.missing
                ));
            }
            line.push(cell);
        }
        let worst = r.wire.iter().map(DestWire::ratio).fold(f64::NAN, f64::max);
        line.push(format!("{worst:.3}×"));
        lines.push(line);
        if r.layout == Layout::Neustream {
            verdicts.push(format!(
                "{} streams: worst {worst:.3}× ({})",
                r.n,
                if worst <= GOAL_WIRE {
                    "**met**"
                } else {
                    "**missed**"
                }
            ));
        }
    }
    let mut header = vec!["streams".to_string(), "relay".to_string()];
    if let Some(r) = rows.first() {
        for (i, w) in r.wire.iter().enumerate() {
            header.push(format!(
                "destination {i} ({})",
                if w.rtmps { "RTMPS" } else { "RTMP" }
            ));
        }
    }
    header.push("worst".into());
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    format!(
        "## 3b. Bytes on the wire over media bytes, per destination\n\n\
         Over the cost figure's window, per destination index ({dests} servers, each announcing \
         {chunk}-byte chunks): the bytes that server's accepted TCP connections received (the \
         kernel's `bytes_received`, `ss -tin`; for RTMPS on the TLS terminator's side, so TLS \
         records and handshakes included; TCP/IP headers not), over the media bytes those \
         streams received in the same window: the payload of their audio and video messages as \
         the destination's nginx-rtmp counts them (`bytes_in` of each stream in `rtmp_stat`), \
         i.e. the clip's FLV tag payloads ({:.2} Mbit/s over its {:.1} s), exact whatever part \
         of the clip the window covers. Segments: TCP segments the server received per second per \
         connection. nginx-rtmp push reaches an RTMPS destination through a plain-to-TLS \
         tunnel in its own nginx (`stream` module, `proxy_ssl`): its TLS is nginx's, its CPU \
         in the ingest's.\n\n{}\n\
         Goal of neustream v3 (issue 16: ≤ {GOAL_WIRE}× at every destination, RTMPS \
         included): {}.\n",
        media.rate() * 8.0 / 1e6,
        media.seconds,
        table(&header, &lines),
        if verdicts.is_empty() {
            "not run".into()
        } else {
            verdicts.join("; ")
        },
        chunk = crate::lab::destinations().chunk_size,
    )
}

fn report(rows: &[Row]) -> String {
    let find = |n: usize, l: Layout| rows.iter().find(|r| r.n == n && r.layout == l);
    let mut lines = vec![];
    let mut verdicts = vec![];
    let mut breakdown = vec![];
    for r in rows {
        let t = percentile(&r.total, 50.0);
        let spread = format!(
            "{}–{}",
            pct(percentile(&r.total, 0.0)),
            pct(percentile(&r.total, 100.0))
        );
        let v1 = find(r.n, Layout::V1);
        let seed = find(r.n, Layout::Seed);
        let push = find(r.n, Layout::Push);
        let versus = |b: Option<&Row>| {
            b.map_or("–".into(), |b| {
                format!(
                    "{} / {}",
                    ratio(t, percentile(&b.total, 50.0)),
                    if r.rss > 0.0 {
                        ratio(r.pss, b.pss)
                    } else {
                        "–".into()
                    }
                )
            })
        };
        lines.push(vec![
            r.n.to_string(),
            r.layout.name().into(),
            if r.rss > 0.0 {
                format!("{:.0}", r.procs)
            } else {
                "–".into()
            },
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
            versus(v1),
            versus(seed),
            push.map_or("–".into(), |p| ratio(t, percentile(&p.total, 50.0))),
            format!(
                "{:.3}{}{}",
                r.min_rate,
                if r.min_rate < REAL_TIME {
                    " (not real time: CPU is a lower bound)"
                } else {
                    ""
                },
                if r.ended > 0 {
                    " (processes ended!)"
                } else {
                    ""
                }
            ),
        ]);
        if r.layout == Layout::Neustream {
            let verdict = |ok: Option<bool>| match ok {
                Some(true) => "**met**",
                Some(false) => "**missed**",
                None => "not run",
            };
            let cpu_v1 = v1.map(|v| t / percentile(&v.total, 50.0));
            let forward = find(r.n, Layout::Forward).map(|f| percentile(&f.total, 50.0));
            verdicts.push(format!(
                "{} streams{}: CPU {} v1 ({}), {} vs MediaMTX forward's {} ({}); PSS {} ({}); \
                 {:.0} process(es) per stream ({})",
                r.n,
                if r.min_rate < REAL_TIME || v1.is_some_and(|v| v.min_rate < REAL_TIME) {
                    " (not at real time: not a figure of record)"
                } else {
                    ""
                },
                cpu_v1.map_or("–".into(), |c| format!("{c:.2}×")),
                verdict(cpu_v1.map(|c| c <= GOAL_CPU_VS_V1)),
                pct(t),
                forward.map_or("–".into(), pct),
                verdict(forward.map(|f| t <= f)),
                mb(r.pss),
                verdict(Some(r.pss / 1024.0 <= GOAL_PSS_MB)),
                r.procs,
                verdict(Some(r.procs <= GOAL_PROCS)),
            ));
        }
        if r.layout.is_neustream() {
            breakdown.push(vec![
                r.n.to_string(),
                r.layout.name().into(),
                r.roles
                    .iter()
                    .map(|(name, cpu, pss)| format!("{name} {} / {}", pct(*cpu), mb(*pss)))
                    .collect::<Vec<_>>()
                    .join("; "),
            ]);
        }
    }
    format!(
        "## 3. Relay cost per stream (3 destinations)\n\n\
         CPU in % of one core per stream: relay processes + the ingest's extra CPU (median of \
         {PARTS} parts of the window, spread min–max). Relay processes: for neustream every \
         process of the relay units' cgroups (the relay; with the ffmpeg engine also its source \
         ffmpeg and one ffmpeg per destination); for v1, the restreamer layout and the seed their ffmpegs. Memory per \
         stream: PSS and RSS of the relay processes, and the ingest's extra PSS (ingest PSS \
         with the relays minus without: the whole memory of MediaMTX forward and nginx push, \
         and for the others the RTMP readers they add to MediaMTX; Go's heap makes it noisy). \
         \"min rate\": the slowest destination's media seconds per wall second; below \
         {REAL_TIME} the layout did not keep up (the machine was saturated) and its CPU is a \
         lower bound. Ratios: CPU per stream / PSS per stream.\n\n{}\n\
         Where neustream's cost goes, per stream (CPU median of the parts / PSS):\n\n{}\n\
         {}Goals of neustream v3 (issue 16: CPU ≤ MediaMTX forward's and ≤ {GOAL_CPU_VS_V1}× \
         v1's, PSS ≤ {GOAL_PSS_MB:.0} MB, {GOAL_PROCS:.0} process per stream): {}.\n",
        table(
            &[
                "streams",
                "relay",
                "processes/stream",
                "CPU/stream",
                "spread",
                "relay procs",
                "ingest extra",
                "PSS/stream (relay procs)",
                "ingest extra PSS",
                "RSS/stream (relay procs)",
                "vs v1",
                "vs seed",
                "vs nginx push (CPU)",
                "min rate",
            ],
            &lines
        ),
        table(&["streams", "relay", "by role: CPU / PSS"], &breakdown),
        engine_note(rows),
        if verdicts.is_empty() {
            "not run".into()
        } else {
            verdicts.join("; ")
        }
    )
}
