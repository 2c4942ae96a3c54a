//! The Neustream benchmark (bench/run.sh; `cargo bench --bench neustream -- [FIGURES] [OPTIONS]`).
//!
//! Measures, on this machine and side by side with baselines in the same run, how fast a
//! stream goes live, what a relay costs and how many streams the box carries, and prints a
//! Markdown report. See docs/performance.md for what each figure measures and how.
//!
//! Figures: latency ttff join cost scale storm recovery scrape drop (default: all). Options (also
//! `--quick` for a short run of every figure): see `usage()`.

#[path = "../tests/common/mod.rs"]
mod common;

mod figures;
mod lab;
mod layouts;
mod procs;
mod rtmp;
mod stats;
mod tap;
mod wire;

use std::sync::atomic::{AtomicBool, Ordering};

pub const FIGURES: [&str; 9] = [
    "latency", "ttff", "join", "cost", "scale", "storm", "recovery", "scrape", "drop",
];

/// Sizes and repetitions of every figure.
#[derive(Debug, Clone)]
pub struct Opts {
    pub figures: Vec<String>,
    pub latency_runs: usize,
    pub seed_latency_runs: usize,
    pub ttff_runs: usize,
    pub seed_ttff_runs: usize,
    pub cost_sizes: Vec<usize>,
    pub window: f64,
    pub scale_sizes: Vec<usize>,
    pub scale_window: f64,
    /// Layouts of figure 4, each tried at every size until one fails.
    pub scale_layouts: Vec<layouts::Layout>,
    /// Streams started at a time in figure 4.
    pub scale_batch: usize,
    pub storm_streams: Vec<usize>,
    pub recovery_runs: usize,
    pub outage: f64,
    pub scrape_relays: usize,
    pub scrape_runs: usize,
    pub drop_runs: usize,
    pub drop_gap: f64,
    /// Baselines to run beside neustream: v2, v1, restreamer, seed, mediamtx, nginx.
    pub baselines: Vec<String>,
    /// How the destination servers behave (chunk size, which take RTMPS).
    pub destinations: lab::Destinations,
    pub profile: bool,
    pub out: Option<String>,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            figures: FIGURES.iter().map(|s| s.to_string()).collect(),
            latency_runs: 200,
            seed_latency_runs: 10,
            ttff_runs: 20,
            seed_ttff_runs: 20,
            cost_sizes: vec![1, 10, 50],
            window: 20.0,
            scale_sizes: vec![50, 60, 70, 80, 90, 100, 120, 150, 200],
            scale_window: 30.0,
            scale_layouts: vec![layouts::Layout::Neustream],
            scale_batch: 10,
            storm_streams: vec![100],
            recovery_runs: 3,
            outage: 6.0,
            scrape_relays: 100,
            scrape_runs: 50,
            drop_runs: 3,
            drop_gap: 4.0,
            baselines: layouts::BASELINES.iter().map(|s| s.to_string()).collect(),
            destinations: lab::Destinations::default(),
            profile: true,
            out: None,
        }
    }
}

impl Opts {
    fn quick() -> Self {
        Opts {
            latency_runs: 30,
            seed_latency_runs: 3,
            ttff_runs: 3,
            seed_ttff_runs: 2,
            cost_sizes: vec![1, 10],
            window: 10.0,
            scale_sizes: vec![20, 40],
            scale_window: 15.0,
            storm_streams: vec![20],
            recovery_runs: 1,
            outage: 5.0,
            drop_runs: 1,
            ..Opts::default()
        }
    }

    pub fn baseline(&self, name: &str) -> bool {
        self.baselines.iter().any(|b| b == name)
    }
}

fn usage() -> &'static str {
    "usage: bench/run.sh [FIGURE...] [OPTION...]\n\
     figures: latency ttff join cost scale storm recovery scrape drop (default: all)\n\
     options:\n\
     \x20 --quick                    small sizes for every figure (about 15 minutes in all)\n\
     \x20 --latency-runs N           hook runs for figure 1 (200)\n\
     \x20 --seed-latency-runs N      seed hook runs for figure 1 (10; each takes > 4 s)\n\
     \x20 --ttff-runs N              publishes per layout for figure 2, and joins of figure 2b (20)\n\
     \x20 --seed-ttff-runs N         seed runs for figures 2 and 2b (20)\n\
     \x20 --cost-sizes A,B,C         streams for figure 3 (1,10,50)\n\
     \x20 --window SECONDS           steady-state measuring window of figure 3 (20)\n\
     \x20 --scale-sizes A,B,...      stream counts tried in figure 4, in order, until one fails\n\
     \x20                            (50,60,70,80,90,100,120,150,200)\n\
     \x20 --scale-window SECONDS     real-time check window of figure 4 (30)\n\
     \x20 --scale-layouts a,b        layouts of figure 4: v3 and the --baselines names (v3)\n\
     \x20 --scale-batch N            streams started at a time in figure 4, each batch\n\
     \x20                            receiving before the next (10)\n\
     \x20 --storm-streams A,B        streams of figure 5, one storm per count (100)\n\
     \x20 --recovery-runs N          outages per layout in figure 6 (3)\n\
     \x20 --outage SECONDS           how long a destination stays away in figure 6 (6)\n\
     \x20 --scrape-relays N         relays (state files and units) for figure scrape (100)\n\
     \x20 --scrape-runs N           timed scrapes for figure scrape (50)\n\
     \x20 --drop-runs N              publisher drops per layout in figure 7 (3)\n\
     \x20 --drop-gap SECONDS         how long the publisher stays away in figure 7 (4)\n\
     \x20 --baselines a,b            which of v2,v1,restreamer,seed,mediamtx,nginx to run beside\n\
     \x20                            neustream v3 (all; `--baselines ''` for none); v2 is the\n\
     \x20                            relay with NEUSTREAM_RTMP_ENGINE=ffmpeg (not in ttff, join, drop)\n\
     \x20 --dest-chunk-size N        chunk size every destination server announces (128: what an\n\
     \x20                            ffmpeg publisher keeps at YouTube, which announces none)\n\
     \x20 --rtmps-dests A,B          destinations (0-2) that take RTMPS only, through a TLS\n\
     \x20                            terminator (0,2: as YouTube and Facebook; '' for none)\n\
     \x20 --no-profile               skip the hook profile printed when figure 1 misses its goal\n\
     \x20 --out FILE                 also write the report to FILE\n"
}

fn parse_args() -> Result<Opts, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut opts = if args.iter().any(|a| a == "--quick") {
        Opts::quick()
    } else {
        Opts::default()
    };
    let mut figures = Vec::new();
    let mut it = args.into_iter();
    let list = |v: String| -> Result<Vec<usize>, String> {
        v.split(',')
            .map(|x| x.trim().parse().map_err(|_| format!("not a number: {x}")))
            .collect()
    };
    while let Some(arg) = it.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = || -> Result<String, String> {
            inline
                .clone()
                .or_else(|| it.next())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        let num = |v: String| -> Result<usize, String> {
            v.parse().map_err(|_| format!("{name}: not a number: {v}"))
        };
        let float = |v: String| -> Result<f64, String> {
            v.parse().map_err(|_| format!("{name}: not a number: {v}"))
        };
        match name.as_str() {
            "--bench" | "--quick" => {}
            "--latency-runs" => opts.latency_runs = num(value()?)?,
            "--seed-latency-runs" => opts.seed_latency_runs = num(value()?)?,
            "--ttff-runs" => opts.ttff_runs = num(value()?)?,
            "--seed-ttff-runs" => opts.seed_ttff_runs = num(value()?)?,
            "--cost-sizes" => opts.cost_sizes = list(value()?)?,
            "--window" => opts.window = float(value()?)?,
            "--scale-sizes" => opts.scale_sizes = list(value()?)?,
            "--scale-window" => opts.scale_window = float(value()?)?,
            "--scale-layouts" => {
                opts.scale_layouts = value()?
                    .split(',')
                    .map(|n| {
                        layouts::Layout::by_name(n.trim())
                            .ok_or_else(|| format!("--scale-layouts: unknown layout {n}"))
                    })
                    .collect::<Result<_, _>>()?
            }
            "--scale-batch" => opts.scale_batch = num(value()?)?,
            "--storm-streams" => opts.storm_streams = list(value()?)?,
            "--recovery-runs" => opts.recovery_runs = num(value()?)?,
            "--outage" => opts.outage = float(value()?)?,
            "--scrape-relays" => opts.scrape_relays = num(value()?)?,
            "--scrape-runs" => opts.scrape_runs = num(value()?)?,
            "--drop-runs" => opts.drop_runs = num(value()?)?,
            "--drop-gap" => opts.drop_gap = float(value()?)?,
            "--baselines" => {
                opts.baselines = value()?
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect()
            }
            "--dest-chunk-size" => {
                opts.destinations.chunk_size = value()?
                    .parse()
                    .ok()
                    .filter(|c| (1..=0x7fff_ffff).contains(c))
                    .ok_or("--dest-chunk-size: a number from 1 to 2^31-1")?
            }
            "--rtmps-dests" => {
                let v = value()?;
                opts.destinations.rtmps = if v.is_empty() { vec![] } else { list(v)? };
                if opts.destinations.rtmps.iter().any(|i| *i >= lab::DESTS) {
                    return Err(format!("--rtmps-dests: indices 0 to {}", lab::DESTS - 1));
                }
            }
            "--no-profile" => opts.profile = false,
            "--out" => opts.out = Some(value()?),
            "-h" | "--help" => return Err(String::new()),
            f if FIGURES.contains(&f) || f == "all" => figures.push(f.to_string()),
            other => return Err(format!("unknown argument: {other}")),
        }
    }
    if !figures.is_empty() && !figures.iter().any(|f| f == "all") {
        opts.figures = figures;
    }
    for b in &opts.baselines {
        if !layouts::BASELINES.contains(&b.as_str()) {
            return Err(format!("unknown baseline: {b}"));
        }
    }
    Ok(opts)
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Panics (so that every server, machine and process is stopped by its guard while
/// unwinding) once the operator interrupted the run.
pub fn check_interrupted() {
    if INTERRUPTED.load(Ordering::SeqCst) {
        panic!("interrupted; cleaning up");
    }
}

/// Sleeps, in slices, noticing an interruption.
pub fn sleep(seconds: f64) {
    let end = std::time::Instant::now() + std::time::Duration::from_secs_f64(seconds.max(0.0));
    loop {
        check_interrupted();
        let now = std::time::Instant::now();
        if now >= end {
            return;
        }
        std::thread::sleep((end - now).min(std::time::Duration::from_millis(50)));
    }
}

/// Progress, on stderr.
#[macro_export]
macro_rules! progress {
    ($($arg:tt)*) => { eprintln!("bench: {}", format!($($arg)*)) };
}

fn header() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map_or(String::new(), |kib| format!("{:.0} GB", kib / 1048576.0));
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let ffmpeg = std::process::Command::new("ffmpeg")
        .arg("-version")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .split_whitespace()
                .nth(2)
                .unwrap_or("")
                .to_string()
        })
        .unwrap_or_default();
    format!(
        "Machine: {cores} × {cpu}, {mem} RAM, Linux {}, ffmpeg {ffmpeg}, nginx-rtmp (Debian), \
         MediaMTX v1.21.0; load average at start {}. Everything on 127.0.0.1; source: \
         1280x720 30 fps H.264 ~6 Mbit/s (GOP 2 s) + AAC 160 kbit/s, `ffmpeg -re -stream_loop -1 \
         -c copy`; 3 destinations per stream (nginx-rtmp, one server per destination index), \
         each announcing {chunk}-byte chunks; {tls}.\n",
        kernel.trim(),
        procs::loadavg(),
        chunk = lab::destinations().chunk_size,
        tls = if lab::destinations().rtmps.is_empty() {
            "all plain RTMP".to_string()
        } else {
            format!(
                "destination{} {} RTMPS only (TLS terminator: nginx `stream` module on \
                 127.0.0.1 in front of nginx-rtmp)",
                if lab::destinations().rtmps.len() > 1 {
                    "s"
                } else {
                    ""
                },
                lab::destinations()
                    .rtmps
                    .iter()
                    .map(|i| i.to_string())
                    .collect::<Vec<_>>()
                    .join(" and ")
            )
        }
    )
}

fn main() {
    // `cargo test --all-targets` builds and runs benches without `--bench`: do nothing then.
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("bench: not run (use bench/run.sh or `cargo bench --bench neustream`)");
        return;
    }
    let opts = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("bench: {e}");
            }
            eprint!("{}", usage());
            std::process::exit(if e.is_empty() { 0 } else { 2 });
        }
    };
    assert!(
        unsafe { libc::geteuid() } == 0,
        "the benchmark needs root (systemd-nspawn machines, nginx workers)"
    );
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    lab::DESTINATIONS
        .set(opts.destinations.clone())
        .expect("destinations set once");
    let started = std::time::Instant::now();
    let mut report = format!(
        "# Neustream benchmark\n\n{}\nCommand: `bench/run.sh {}`\n\n",
        header(),
        std::env::args()
            .skip(1)
            .filter(|a| a != "--bench")
            .collect::<Vec<_>>()
            .join(" ")
    );
    print!("{report}");
    for figure in opts.figures.clone() {
        progress!("figure {figure} (load average {})", procs::loadavg());
        let t = std::time::Instant::now();
        let section = match figure.as_str() {
            "latency" => figures::latency::run(&opts),
            "ttff" => figures::ttff::run(&opts),
            "join" => figures::join::run(&opts),
            "cost" => figures::cost::run(&opts),
            "scale" => figures::scale::run(&opts),
            "storm" => figures::storm::run(&opts),
            "recovery" => figures::recovery::run(&opts),
            "scrape" => figures::scrape::run(&opts),
            "drop" => figures::drop::run(&opts),
            _ => unreachable!(),
        };
        let section = format!(
            "{section}\n_({figure}: {:.0} s, load average after: {})_\n\n",
            t.elapsed().as_secs_f64(),
            procs::loadavg()
        );
        println!("{section}");
        report.push_str(&section);
        if let Some(out) = &opts.out {
            let _ = std::fs::write(out, &report);
        }
    }
    progress!("done in {:.0} s", started.elapsed().as_secs_f64());
    if let Some(out) = &opts.out {
        std::fs::write(out, &report).expect("write the report");
        progress!("report written to {out}");
    }
}
