//! The ways of relaying a stream to its destinations that the benchmark compares, each
//! started and stopped for many streams at once.
//!
//! - neustream (v3): MediaMTX ingest; `neustream ready` (inside the systemd machine, as user
//!   mediamtx) starts `neustream-relay@<key>.service` with its default engine (`native`: the
//!   relay reads the ingest and publishes to every destination itself, one process).
//! - v2: the same relay with `NEUSTREAM_RTMP_ENGINE=ffmpeg` (a drop-in on each of its units):
//!   the relay process, a source ffmpeg reading the ingest into an FLV pipe, and one ffmpeg per
//!   destination fed by the relay (1 + N ffmpegs in the unit's cgroup), as relay v2 ran.
//! - v1: the previous relay's ffmpeg (bench/v1/ready.sh): one ffmpeg per stream with one
//!   `-f fifo` output per destination, exactly v1's command line, started by a shell hook.
//! - restreamer: datarhei Restreamer's layout (bench/restreamer/ready.sh): one ffmpeg per
//!   destination, each reading the ingest itself, each restarted alone.
//! - seed: MediaMTX ingest; the original shell hook starts one detached ffmpeg with one
//!   `-f flv` output per destination.
//! - mediamtx: MediaMTX 1.21's native per-path `forward:` list (no hook, no process).
//! - nginx: nginx-rtmp as the ingest, `push` to each destination (no hook, no process).

use std::time::Duration;

use crate::common::wait_for;
use crate::lab::{Lab, DESTS, PROJECT};
use crate::rtmp::{stop_all, Publisher, StreamStat};
use crate::{progress, sleep};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    Neustream,
    FfmpegEngine,
    V1,
    Restreamer,
    Seed,
    Forward,
    Push,
}

/// Baselines `--baselines` can name, in report order.
pub const BASELINES: [&str; 6] = ["v2", "v1", "restreamer", "seed", "mediamtx", "nginx"];

impl Layout {
    pub fn name(self) -> &'static str {
        match self {
            Layout::Neustream => "neustream v3 (native engine)",
            Layout::FfmpegEngine => "v2 (neustream, ffmpeg engine)",
            Layout::V1 => "v1 (1 ffmpeg, fifo outputs)",
            Layout::Restreamer => "per-destination ffmpeg reading the ingest",
            Layout::Seed => "seed (1 ffmpeg, N flv outputs)",
            Layout::Forward => "MediaMTX forward",
            Layout::Push => "nginx-rtmp push",
        }
    }

    /// The layouts to run: neustream and the baselines asked for.
    pub fn selected(opts: &crate::Opts) -> Vec<Layout> {
        let mut v = vec![Layout::Neustream];
        if opts.baseline("v2") {
            v.push(Layout::FfmpegEngine);
        }
        if opts.baseline("v1") {
            v.push(Layout::V1);
        }
        if opts.baseline("restreamer") {
            v.push(Layout::Restreamer);
        }
        if opts.baseline("seed") {
            v.push(Layout::Seed);
        }
        if opts.baseline("mediamtx") {
            v.push(Layout::Forward);
        }
        if opts.baseline("nginx") {
            v.push(Layout::Push);
        }
        v
    }

    /// A layout by the name `--baselines` uses (v3 or neustream: neustream v3).
    pub fn by_name(name: &str) -> Option<Layout> {
        Some(match name {
            "v3" | "neustream" => Layout::Neustream,
            "v2" => Layout::FfmpegEngine,
            "v1" => Layout::V1,
            "restreamer" => Layout::Restreamer,
            "seed" => Layout::Seed,
            "mediamtx" => Layout::Forward,
            "nginx" => Layout::Push,
            _ => return None,
        })
    }

    /// Like [`Layout::selected`] without the ffmpeg engine's layout (v2), for the figures whose
    /// relays MediaMTX starts from its own hooks with keys made up on the spot (ttff, join,
    /// storm): the engine is set per relay unit by a drop-in written before its start
    /// ([`Lab::set_engine`]), which those figures have no moment for. They run v3.
    pub fn selected_without_v2(opts: &crate::Opts) -> Vec<Layout> {
        let mut v = Layout::selected(opts);
        v.retain(|l| *l != Layout::FfmpegEngine);
        v
    }

    pub fn prefix(self) -> &'static str {
        match self {
            Layout::Neustream => "n",
            Layout::FfmpegEngine => "e",
            Layout::V1 => "v",
            Layout::Restreamer => "r",
            Layout::Seed => "s",
            Layout::Forward => "f",
            Layout::Push => "p",
        }
    }

    /// Whether the layout is neustream's relay unit (either engine).
    pub fn is_neustream(self) -> bool {
        matches!(self, Layout::Neustream | Layout::FfmpegEngine)
    }

    /// Processes that relay (inside the machine), as host pids: for neustream every process
    /// of the relay units' cgroups (`neustream relay`; with the ffmpeg engine also its source
    /// ffmpeg and one ffmpeg per destination); for the shell-hook baselines their ffmpegs.
    /// The ingest does it for MediaMTX forward and nginx push.
    pub fn relay_pids(self, lab: &Lab) -> Vec<i32> {
        match self {
            Layout::Neustream | Layout::FfmpegEngine => lab.relay_unit_pids(),
            Layout::V1 | Layout::Restreamer | Layout::Seed => lab.hook_ffmpeg_pids(),
            Layout::Forward | Layout::Push => vec![],
        }
    }

    /// Everything of this layout still running (its relays, and the restart loops of the
    /// restreamer baseline), for "all stopped" checks.
    pub fn leftover_pids(self, lab: &Lab) -> Vec<i32> {
        let mut pids = self.relay_pids(lab);
        if self == Layout::Restreamer {
            pids.extend(lab.restreamer_loops());
        }
        pids
    }

    /// The shell hooks of a baseline started from a hook (ready, unpublish).
    pub fn hooks(self) -> Option<(String, String)> {
        let dir = match self {
            Layout::V1 => "v1",
            Layout::Restreamer => "restreamer",
            Layout::Seed => "seed",
            Layout::Neustream | Layout::FfmpegEngine => {
                return Some(("neustream ready".into(), "neustream unpublish".into()))
            }
            Layout::Forward | Layout::Push => return None,
        };
        Some((
            format!("bash {PROJECT}/bench/{dir}/ready.sh"),
            format!("bash {PROJECT}/bench/{dir}/unpublish.sh"),
        ))
    }

    pub fn ingest_pids(self, lab: &Lab) -> Vec<i32> {
        match self {
            Layout::Push => lab.push.as_ref().map(|p| p.pids()).unwrap_or_default(),
            _ => lab.mtx_pids(),
        }
    }
}

/// Streams of one layout, live.
pub struct Streams {
    pub layout: Layout,
    pub keys: Vec<String>,
    pub app: String,
    pub publishers: Vec<Publisher>,
}

/// Runs `command` (a hook) for every key inside the machine as user mediamtx, `parallel` at a
/// time, each with MediaMTX's environment for `live/<key>`.
pub fn run_hooks(lab: &Lab, keys: &[String], command: &str, parallel: usize) {
    let env = lab.hook_env("live/x");
    let list = keys.join(" ");
    let script = format!(
        "n=0; for k in {list}; do MTX_PATH=live/$k {command} >/dev/null 2>>/tmp/bench-hooks.log & \
         n=$((n+1)); if [ $n -ge {parallel} ]; then wait; n=0; fi; done; wait"
    );
    let out = lab.run_in(
        &env,
        &script,
        Duration::from_secs(60 + 5 * keys.len() as u64),
    );
    if !out.status.success() {
        progress!(
            "hooks: {command} for {} keys: {}",
            keys.len(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Streams {
    /// Publishes `n` streams and relays each to 3 destinations (application `app` of each
    /// destination server: live, rec or head), then waits until every destination receives.
    pub fn start(lab: &Lab, layout: Layout, n: usize, app: &str, tag: &str) -> Streams {
        let keys: Vec<String> = (0..n)
            .map(|i| format!("{}{tag}{i}", layout.prefix()))
            .collect();
        let publishers = match layout {
            Layout::Neustream
            | Layout::FfmpegEngine
            | Layout::V1
            | Layout::Restreamer
            | Layout::Seed => {
                for k in &keys {
                    lab.add_stream(k, app, &Lab::dest_names(k));
                }
                if layout == Layout::FfmpegEngine {
                    lab.set_engine(&keys, Some("ffmpeg"));
                }
                let paths: Vec<String> = keys.iter().map(|k| format!("live/{k}")).collect();
                let pubs = lab.publish_mtx(&paths);
                let (ready, _) = layout.hooks().unwrap();
                let parallel = if layout.is_neustream() { 10 } else { 50 };
                run_hooks(lab, &keys, &ready, parallel);
                pubs
            }
            Layout::Forward => {
                let prefix = match app {
                    "live" => "fwd",
                    "rec" => "fwdrec",
                    _ => "fwdhead",
                };
                let paths: Vec<String> = keys.iter().map(|k| format!("{prefix}/{k}")).collect();
                lab.publish_mtx(&paths)
            }
            Layout::Push => {
                let push = lab.push.as_ref().expect("the lab has an nginx push ingest");
                keys.iter()
                    .map(|k| Publisher::start(&lab.clip, &push.url(app, k)))
                    .collect()
            }
        };
        let streams = Streams {
            layout,
            keys,
            app: app.into(),
            publishers,
        };
        let ok = wait_for(
            Duration::from_secs(30 + n as u64 / 2),
            Duration::from_millis(500),
            || {
                crate::check_interrupted();
                (streams.receiving(lab, 1.0) == n * DESTS).then_some(())
            },
        );
        if ok.is_none() {
            progress!(
                "{}: only {} of {} destinations receive",
                layout.name(),
                streams.receiving(lab, 1.0),
                n * DESTS
            );
        }
        streams
    }

    /// This layout's destination streams, per destination server, as `rtmp_stat` shows them.
    pub fn stats(&self, lab: &Lab) -> Vec<Vec<StreamStat>> {
        lab.dests
            .iter()
            .map(|d| {
                d.stat()
                    .into_iter()
                    .filter(|s| s.app == self.app && self.keys.contains(&s.name) && s.publishing)
                    .collect()
            })
            .collect()
    }

    /// Destinations that have received more than `seconds` of media.
    pub fn receiving(&self, lab: &Lab, seconds: f64) -> usize {
        self.stats(lab)
            .iter()
            .map(|s| s.iter().filter(|s| s.timestamp > seconds).count())
            .sum()
    }

    /// Stops the relays and the publishers; waits until nothing of this layout is left.
    pub fn stop(mut self, lab: &Lab) {
        if let Some((_, unpublish)) = self.layout.hooks() {
            let parallel = if self.layout.is_neustream() { 10 } else { 50 };
            run_hooks(lab, &self.keys, &unpublish, parallel);
        }
        stop_all(&mut self.publishers);
        let gone = wait_for(Duration::from_secs(30), Duration::from_millis(250), || {
            let left = self.stats(lab).iter().map(Vec::len).sum::<usize>()
                + self.layout.leftover_pids(lab).len();
            (left == 0).then_some(())
        });
        if gone.is_none() {
            progress!("{}: streams still left after stopping", self.layout.name());
        }
        if self.layout == Layout::FfmpegEngine {
            lab.set_engine(&self.keys, None);
        }
        sleep(1.0);
    }
}
