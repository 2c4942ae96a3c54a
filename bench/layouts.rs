//! The four ways of relaying a stream to its destinations that the benchmark compares, each
//! started and stopped for many streams at once.
//!
//! - neustream: MediaMTX ingest; `neustream ready` (inside the systemd machine, as user
//!   mediamtx) starts `neustream-relay@<key>.service`: one ffmpeg with one fifo output per
//!   destination.
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
    Seed,
    Forward,
    Push,
}

impl Layout {
    pub fn name(self) -> &'static str {
        match self {
            Layout::Neustream => "neustream",
            Layout::Seed => "seed (1 ffmpeg, N flv outputs)",
            Layout::Forward => "MediaMTX forward",
            Layout::Push => "nginx-rtmp push",
        }
    }

    /// The layouts to run: neustream and the baselines asked for.
    pub fn selected(opts: &crate::Opts) -> Vec<Layout> {
        let mut v = vec![Layout::Neustream];
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

    fn prefix(self) -> &'static str {
        match self {
            Layout::Neustream => "n",
            Layout::Seed => "s",
            Layout::Forward => "f",
            Layout::Push => "p",
        }
    }

    /// Processes that relay (inside the machine), as host pids; the ingest does it for
    /// MediaMTX forward and nginx push.
    pub fn relay_pids(self, lab: &Lab) -> Vec<i32> {
        match self {
            Layout::Neustream | Layout::Seed => lab.relay_pids(),
            Layout::Forward | Layout::Push => vec![],
        }
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
        let seed = format!("{PROJECT}/bench/seed");
        let publishers = match layout {
            Layout::Neustream | Layout::Seed => {
                for k in &keys {
                    lab.add_stream(k, app, &Lab::dest_names(k));
                }
                let paths: Vec<String> = keys.iter().map(|k| format!("live/{k}")).collect();
                let pubs = lab.publish_mtx(&paths);
                if layout == Layout::Neustream {
                    run_hooks(lab, &keys, "neustream ready", 10);
                } else {
                    run_hooks(lab, &keys, &format!("bash {seed}/ready.sh"), 50);
                }
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
        let seed = format!("{PROJECT}/bench/seed");
        match self.layout {
            Layout::Neustream => run_hooks(lab, &self.keys, "neustream unpublish", 10),
            Layout::Seed => run_hooks(lab, &self.keys, &format!("bash {seed}/unpublish.sh"), 50),
            _ => {}
        }
        stop_all(&mut self.publishers);
        let gone = wait_for(Duration::from_secs(30), Duration::from_millis(250), || {
            let left = self.stats(lab).iter().map(Vec::len).sum::<usize>()
                + self.layout.relay_pids(lab).len();
            (left == 0).then_some(())
        });
        if gone.is_none() {
            progress!("{}: streams still left after stopping", self.layout.name());
        }
        sleep(1.0);
    }
}
