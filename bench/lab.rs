//! The benchmark's world, all on 127.0.0.1: the synthetic clip, a real systemd (an ephemeral
//! nspawn machine with the project's units and polkit rule, tests/common/machine.rs) running
//! MediaMTX 1.21 as the ingest under user `mediamtx` exactly like production, the Control
//! Plane double, three destination servers (nginx-rtmp; one per destination index, so that one
//! can drop alone), and an nginx-rtmp ingest with `push` for that baseline.
//!
//! The destination servers behave like the platforms (see [`Destinations`]): they announce a
//! 128-byte chunk size, as YouTube's ingest leaves ffmpeg at 128, and some take RTMPS only,
//! through a TLS terminator on 127.0.0.1 in front of nginx-rtmp, with a certificate from the
//! lab's own CA, which the relays trust (`NEUSTREAM_CA_FILE`), MediaMTX forward by its
//! fingerprint, and the ffmpeg baselines without verifying (ffmpeg's default).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use crate::common::arrivals::Watcher;
use crate::common::control_plane_double::ControlPlaneDouble;
use crate::common::machine::{Machine, Options};
use crate::common::publish_hooks::PublishHooks;
use crate::common::rtmps::{make_certs, Certs};
use crate::common::tls_front;
use crate::common::{free_port, wait_for};
use crate::layouts::Layout;
use crate::rtmp::{destination_apps_notifying, http_get, push_apps, Nginx, Publisher, Serve};

pub const PROJECT: &str = env!("CARGO_MANIFEST_DIR");
/// Destinations per stream.
pub const DESTS: usize = 3;

/// How the destination servers behave, the same for every layout and figure of a run
/// (`--dest-chunk-size`, `--rtmps-dests`; set once by main.rs).
#[derive(Debug, Clone)]
pub struct Destinations {
    /// The chunk size every destination server announces.
    pub chunk_size: u32,
    /// Destination indices that take RTMPS only (a TLS terminator in front).
    pub rtmps: Vec<usize>,
}

impl Default for Destinations {
    /// As a streamer's YouTube (RTMPS), Twitch (RTMP) and Facebook (RTMPS only): 128-byte
    /// chunks (YouTube announces no chunk size; nginx-rtmp must announce one, so 128, RTMP's
    /// initial size, which is what an ffmpeg publisher keeps at YouTube).
    fn default() -> Self {
        Destinations {
            chunk_size: 128,
            rtmps: vec![0, 2],
        }
    }
}

pub static DESTINATIONS: OnceLock<Destinations> = OnceLock::new();

pub fn destinations() -> &'static Destinations {
    DESTINATIONS.get_or_init(Destinations::default)
}

/// The synthetic source: 1280x720 30 fps H.264 at ~6 Mbit/s (keyframe every 2 s) + AAC
/// 160 kbit/s, 20 s, looped by the publishers; encoded once into the target directory.
pub fn clip() -> PathBuf {
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("neustream-bench-720p30-6M.flv");
    if path.exists() {
        return path;
    }
    eprintln!(
        "bench: encoding the synthetic clip {} (once)",
        path.display()
    );
    let tmp = path.with_extension(format!("{}.tmp.flv", std::process::id()));
    let status = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        // Temporal noise keeps the encoder busy at the target rate, as a camera would.
        .args(["-t", "20", "-vf", "noise=alls=12:allf=t"])
        .args(["-c:v", "libx264", "-preset", "veryfast", "-b:v", "6M"])
        .args([
            "-maxrate",
            "6M",
            "-bufsize",
            "6M",
            "-g",
            "60",
            "-keyint_min",
            "60",
        ])
        .args(["-sc_threshold", "0", "-pix_fmt", "yuv420p"])
        .args(["-c:a", "aac", "-b:a", "160k", "-f", "flv"])
        .arg(&tmp)
        .status()
        .expect("run ffmpeg");
    assert!(status.success(), "could not encode the benchmark clip");
    std::fs::rename(&tmp, &path).unwrap();
    path
}

/// The MediaMTX binary (tests/support/build-mediamtx.sh; bench/run.sh exports its path).
pub fn mediamtx_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("NEUSTREAM_BENCH_MEDIAMTX") {
        return p.into();
    }
    let out = Command::new(Path::new(PROJECT).join("tests/support/build-mediamtx.sh"))
        .arg("v1.21.0")
        .stderr(Stdio::inherit())
        .output()
        .expect("run tests/support/build-mediamtx.sh");
    let text = String::from_utf8_lossy(&out.stdout);
    let path = text.lines().last().unwrap_or("").trim().to_string();
    assert!(
        out.status.success() && Path::new(&path).exists(),
        "no MediaMTX binary: tests/support/build-mediamtx.sh failed"
    );
    path.into()
}

pub struct Lab {
    pub dir: PathBuf,
    pub clip: PathBuf,
    pub cp: ControlPlaneDouble,
    pub dests: Vec<Nginx>,
    pub push: Option<Nginx>,
    pub machine: Machine,
    pub mtx_port: u16,
    pub mtx_api: u16,
    pub watcher: Watcher,
    /// The lab's CA and the RTMPS destinations' certificate (signed for IP 127.0.0.1).
    pub certs: Option<Certs>,
    /// Per destination server, the counter of its `rec` publish sessions (nginx-rtmp's
    /// `on_publish`/`on_publish_done`); empty unless the lab was made with
    /// [`Lab::counting_sessions`].
    pub sessions: Vec<PublishHooks>,
}

impl Lab {
    /// A fresh world. `poll` is the recording watcher's interval.
    pub fn new(label: &str, poll: Duration, with_push: bool) -> Lab {
        Lab::build(label, poll, with_push, false)
    }

    /// Like [`Lab::new`], each destination server's `rec` application also reporting its
    /// publish sessions to a counter of its own (`sessions`).
    pub fn counting_sessions(label: &str, poll: Duration, with_push: bool) -> Lab {
        Lab::build(label, poll, with_push, true)
    }

    fn build(label: &str, poll: Duration, with_push: bool, count_sessions: bool) -> Lab {
        let clip = clip();
        let mtx = mediamtx_binary();
        let dir = crate::common::scratch(&format!("bench-{label}"));
        let cp = ControlPlaneDouble::start();
        let sessions: Vec<PublishHooks> = if count_sessions {
            (0..DESTS).map(|_| PublishHooks::start()).collect()
        } else {
            vec![]
        };
        let setup = destinations();
        let certs = (!setup.rtmps.is_empty()).then(|| make_certs(&dir.join("certs")));
        let dests: Vec<Nginx> = (0..DESTS)
            .map(|i| {
                let d = dir.join(format!("dest{i}"));
                let notify = sessions.get(i).map(|h| h.url.as_str());
                let serve = Serve {
                    chunk_size: setup.chunk_size,
                    tls: certs
                        .as_ref()
                        .filter(|_| setup.rtmps.contains(&i))
                        .map(|c| (free_port(), c.good.0.clone(), c.good.1.clone())),
                    tunnels: vec![],
                };
                Nginx::start_serving(
                    &d,
                    free_port(),
                    free_port(),
                    serve,
                    &destination_apps_notifying(&d, notify),
                )
            })
            .collect();
        // nginx-rtmp's `push` speaks plain RTMP only: an RTMPS destination is reached through
        // a tunnel in the push ingest's own nginx (its `stream` module), so its TLS costs
        // land in the ingest's CPU, as a relay's would in the relay's.
        let push = with_push.then(|| {
            let mut tunnels = vec![];
            let ports: Vec<u16> = dests
                .iter()
                .map(|d| match &d.serve.tls {
                    Some((tls_port, ..)) => {
                        let listen = free_port();
                        tunnels.push((listen, *tls_port));
                        listen
                    }
                    None => d.port,
                })
                .collect();
            let serve = Serve {
                tunnels,
                ..Serve::default()
            };
            Nginx::start_serving(
                &dir.join("push-ingest"),
                free_port(),
                free_port(),
                serve,
                &push_apps(&ports),
            )
        });
        // The relays trust the lab's CA (a drop-in on every relay unit).
        let mut drop_ins = vec![];
        if let Some(c) = &certs {
            drop_ins.push((
                "neustream-relay@.service.d/bench-ca.conf".to_string(),
                format!(
                    "[Service]\nEnvironment=NEUSTREAM_CA_FILE={}\n",
                    c.ca.display()
                ),
            ));
        }
        let (mtx_port, mtx_api) = (free_port(), free_port());
        let unit = format!(
            "[Unit]\nDescription=MediaMTX, the benchmark's ingest\n\
             [Service]\nUser=mediamtx\nGroup=mediamtx\n\
             ExecStart={mtx} %t/bench/mediamtx.yml\n\
             Environment=CONTROL_PLANE_URL={cp}\n\
             Environment=NEUSTREAM_INGEST_URL=rtmp://127.0.0.1:{mtx_port}\n\
             Environment=SEED_INGEST_URL=rtmp://127.0.0.1:{mtx_port}\n\
             Environment=SEED_RUN_DIR=/tmp\n\
             Environment=NEUSTREAM_RECONNECT_GRACE=0\n\
             LimitNOFILE=65536\n",
            mtx = mtx.display(),
            cp = cp.url(),
        );
        let machine = Machine::boot_with(
            &format!("b{label}"),
            Options {
                units: [vec![("bench-mediamtx.service".into(), unit)], drop_ins].concat(),
                wants: vec![],
                ..Default::default()
            },
        );
        let lab = Lab {
            dir,
            clip,
            cp,
            dests,
            push,
            machine,
            mtx_port,
            mtx_api,
            watcher: Watcher::start(poll),
            certs,
            sessions,
        };
        lab.start_mediamtx();
        lab
    }

    fn start_mediamtx(&self) {
        let d: Vec<u16> = self.dests.iter().map(|d| d.port).collect();
        let seed = Path::new(PROJECT).join("bench/seed");
        // MediaMTX trusts an RTMPS destination by its certificate's fingerprint.
        let fingerprint = self
            .certs
            .as_ref()
            .map(|c| tls_front::fingerprint(&c.good.0))
            .unwrap_or_default();
        let forward = |app: &str| {
            self.dests
                .iter()
                .map(|d| {
                    let mut entry = format!("      - dest: \"{}#$G1\"\n", d.public_app_url(app));
                    if d.is_rtmps() {
                        entry.push_str(&format!("        destFingerprint: {fingerprint}\n"));
                    }
                    entry
                })
                .collect::<String>()
        };
        // The ttff figure's paths (t<layout prefix>/<key>): MediaMTX's ready hook starts the
        // floor reader (bench/floor.sh, to destination 0's `rec`) and the layout's own hook.
        let bench = Path::new(PROJECT).join("bench");
        let floor = format!(
            "/bin/bash {}/floor.sh rtmp://127.0.0.1:{}/rec",
            bench.display(),
            d[0]
        );
        let mut ttff = String::new();
        for layout in [
            Layout::Neustream,
            Layout::V1,
            Layout::Restreamer,
            Layout::Seed,
        ] {
            let (ready, unpublish) = layout.hooks().unwrap();
            let abs = |c: &str| {
                c.replace("neustream ", "/usr/local/bin/neustream ")
                    .replace("bash ", "/bin/bash ")
            };
            ttff.push_str(&format!(
                "  \"~^t{p}/(.+)$\":\n    runOnAvailable: {floor} {r}\n    runOnUnavailable: {u}\n",
                p = layout.prefix(),
                r = abs(&ready),
                u = abs(&unpublish),
            ));
        }
        ttff.push_str(&format!(
            "  \"~^tf/(.+)$\":\n    runOnAvailable: {floor}\n    forward:\n{}",
            forward("rec")
        ));
        // The drop figure's paths: neustream with the reconnect grace on (30 s) and off, the
        // seed, MediaMTX forward (figures/drop.rs).
        for (prefix, grace) in [("dn", "30s"), ("dz", "0")] {
            let env = format!("/usr/bin/env NEUSTREAM_RECONNECT_GRACE={grace}");
            ttff.push_str(&format!(
                "  \"~^{prefix}/(.+)$\":\n    runOnAvailable: {env} /usr/local/bin/neustream ready\n    \
                 runOnUnavailable: {env} /usr/local/bin/neustream unpublish\n"
            ));
        }
        ttff.push_str(&format!(
            "  \"~^ds/(.+)$\":\n    runOnAvailable: /bin/bash {s}/ready.sh\n    \
             runOnUnavailable: /bin/bash {s}/unpublish.sh\n  \"~^df/(.+)$\":\n    forward:\n{}",
            forward("rec"),
            s = seed.display(),
        ));
        // The start storm's paths of the shell-hook baselines v1 and restreamer.
        for (prefix, layout) in [("v1", Layout::V1), ("rs", Layout::Restreamer)] {
            let (ready, unpublish) = layout.hooks().unwrap();
            ttff.push_str(&format!(
                "  \"~^{prefix}/(.+)$\":\n    runOnAvailable: /bin/{ready}\n    \
                 runOnUnavailable: /bin/{unpublish}\n"
            ));
        }
        let config = format!(
            "logLevel: warn\nlogDestinations: [stdout]\n\
             readTimeout: 10s\nwriteTimeout: 10s\nwriteQueueSize: 512\n\
             api: yes\napiAddress: 127.0.0.1:{api}\n\
             metrics: no\npprof: no\nplayback: no\n\
             rtsp: no\nhls: no\nwebrtc: no\nsrt: no\n\
             rtmp: yes\nrtmpAddress: 127.0.0.1:{port}\n\
             paths:\n\
             \x20 \"~^hook/(.+)$\":\n\
             \x20   runOnAvailable: /usr/local/bin/neustream ready\n\
             \x20   runOnUnavailable: /usr/local/bin/neustream unpublish\n\
             \x20 \"~^seed/(.+)$\":\n\
             \x20   runOnAvailable: /bin/bash {seed}/ready.sh\n\
             \x20   runOnUnavailable: /bin/bash {seed}/unpublish.sh\n\
             \x20 \"~^fwd/(.+)$\":\n    forward:\n{fl}\
             \x20 \"~^fwdrec/(.+)$\":\n    forward:\n{fr}\
             \x20 \"~^fwdhead/(.+)$\":\n    forward:\n{fh}\
             {ttff}\
             \x20 all_others:\n",
            api = self.mtx_api,
            port = self.mtx_port,
            seed = seed.display(),
            fl = forward("live"),
            fr = forward("rec"),
            fh = forward("head"),
        );
        self.machine.ok(&["mkdir", "-p", "/run/bench"]);
        let host_path = self.machine.dir.join("mediamtx.yml");
        std::fs::write(&host_path, config).unwrap();
        // The machine's scratch directory is bound at the same path inside.
        self.machine.ok(&[
            "install",
            "-m",
            "0644",
            host_path.to_str().unwrap(),
            "/run/bench/mediamtx.yml",
        ]);
        self.machine
            .ok(&["systemctl", "start", "bench-mediamtx.service"]);
        let up = wait_for(Duration::from_secs(15), Duration::from_millis(20), || {
            std::net::TcpStream::connect(("127.0.0.1", self.mtx_port)).ok()
        });
        assert!(
            up.is_some(),
            "MediaMTX did not listen on 127.0.0.1:{}: {}",
            self.mtx_port,
            self.machine
                .journal(&["-u", "bench-mediamtx.service", "-n", "30"])
        );
    }

    pub fn mtx_url(&self, path: &str) -> String {
        format!("rtmp://127.0.0.1:{}/{path}", self.mtx_port)
    }

    /// MediaMTX's pid on the host.
    pub fn mtx_pids(&self) -> Vec<i32> {
        self.machine.processes("mediamtx")
    }

    /// Paths MediaMTX has ready (a publisher is streaming), by name.
    pub fn mtx_ready_paths(&self) -> Vec<String> {
        let Some(body) = http_get(self.mtx_api, "/v3/paths/list?itemsPerPage=10000") else {
            return vec![];
        };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&body) else {
            return vec![];
        };
        v["items"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter(|i| i["ready"].as_bool() == Some(true))
                    .filter_map(|i| i["name"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Starts one publisher per path and waits until MediaMTX has them all ready.
    pub fn publish_mtx(&self, paths: &[String]) -> Vec<Publisher> {
        let pubs: Vec<Publisher> = paths
            .iter()
            .map(|p| Publisher::start(&self.clip, &self.mtx_url(p)))
            .collect();
        let ok = wait_for(Duration::from_secs(60), Duration::from_millis(100), || {
            let ready = self.mtx_ready_paths();
            paths.iter().all(|p| ready.contains(p)).then_some(())
        });
        assert!(
            ok.is_some(),
            "MediaMTX did not get all {} publishers",
            paths.len()
        );
        pubs
    }

    /// Registers `key` with the Control Plane double, its destination `i` being
    /// `rtmp://127.0.0.1:<dest i>/<app>/<name_i>` (`rtmps://` and the TLS terminator's port for
    /// an RTMPS destination).
    pub fn add_stream(&self, key: &str, app: &str, names: &[String]) {
        let urls: Vec<String> = (0..DESTS)
            .map(|i| self.dests[i].public_app_url(app))
            .collect();
        let dests: Vec<(&str, &str, &str)> = (0..DESTS)
            .map(|i| {
                (
                    ["youtube", "twitch", "custom"][i % 3],
                    urls[i].as_str(),
                    names[i].as_str(),
                )
            })
            .collect();
        self.cp.add_stream(key, &dests);
    }

    /// Destination stream names of `key`: the key itself on each destination server.
    pub fn dest_names(key: &str) -> Vec<String> {
        vec![key.to_string(); DESTS]
    }

    /// The environment MediaMTX gives a hook for `path`, plus the hook's settings.
    pub fn hook_env(&self, path: &str) -> Vec<(String, String)> {
        vec![
            ("MTX_PATH".into(), path.into()),
            ("MTX_SOURCE_TYPE".into(), "rtmpConn".into()),
            ("MTX_SOURCE_ID".into(), "bench-conn".into()),
            ("CONTROL_PLANE_URL".into(), self.cp.url()),
            (
                "NEUSTREAM_INGEST_URL".into(),
                format!("rtmp://127.0.0.1:{}", self.mtx_port),
            ),
            (
                "SEED_INGEST_URL".into(),
                format!("rtmp://127.0.0.1:{}", self.mtx_port),
            ),
            ("SEED_RUN_DIR".into(), "/tmp".into()),
            // Streams end with their publisher: each figure starts and stops streams in
            // turn (the drop figure's paths set the grace themselves).
            ("NEUSTREAM_RECONNECT_GRACE".into(), "0".into()),
        ]
    }

    /// A bash script run inside the machine as user `mediamtx` (like MediaMTX's hooks), with
    /// `env` and at most `timeout`; not waited for.
    pub fn spawn_in(&self, env: &[(String, String)], script: &str, timeout: Duration) -> Child {
        let pid = self.machine.pid1.to_string();
        let mut cmd = Command::new("nsenter");
        cmd.args(["-t", &pid, "-m", "-p", "-u", "-i", "--"])
            .arg("timeout")
            .arg(timeout.as_secs().max(1).to_string())
            .args([
                "setpriv",
                "--reuid=mediamtx",
                "--regid=mediamtx",
                "--init-groups",
                "env",
                "-i",
                "PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
            ]);
        for (k, v) in env {
            cmd.arg(format!("{k}={v}"));
        }
        cmd.args(["bash", "-c", script])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd.spawn().expect("run nsenter")
    }

    /// Like `spawn_in`, waited for.
    pub fn run_in(&self, env: &[(String, String)], script: &str, timeout: Duration) -> Output {
        self.spawn_in(env, script, timeout)
            .wait_with_output()
            .expect("wait for nsenter")
    }

    /// Every process of every relay unit's cgroup (`neustream-relay@*.service`: the relay,
    /// its source ffmpeg, one ffmpeg per destination), as host pids. Hooks (`neustream
    /// ready`) run outside these cgroups and are not counted.
    pub fn relay_unit_pids(&self) -> Vec<i32> {
        crate::procs::descendants(self.machine.pid1)
            .into_iter()
            .filter(|p| {
                crate::procs::unit_of(*p).is_some_and(|u| u.starts_with("neustream-relay@"))
            })
            .collect()
    }

    /// The ffmpegs the shell-hook baselines (v1, restreamer, seed) started inside the
    /// machine, outside any relay unit; not the ttff figure's plain readers (`floor` in
    /// their command line).
    pub fn hook_ffmpeg_pids(&self) -> Vec<i32> {
        crate::procs::named_descendants(self.machine.pid1, &["ffmpeg"])
            .into_iter()
            .filter(|p| {
                !crate::procs::unit_of(*p).is_some_and(|u| u.starts_with("neustream-relay@"))
                    && !crate::procs::cmdline(*p).contains("-floor")
            })
            .collect()
    }

    /// The restreamer baseline's restart loops (bash, `$0` = restreamer).
    pub fn restreamer_loops(&self) -> Vec<i32> {
        crate::procs::named_descendants(self.machine.pid1, &["bash"])
            .into_iter()
            .filter(|p| crate::procs::cmdline(*p).contains("\0restreamer\0"))
            .collect()
    }

    /// Relay units in one of `states` (active, activating, deactivating...).
    pub fn units_in(&self, states: &str) -> usize {
        let out = self.machine.run(&[
            "systemctl",
            "list-units",
            "--no-legend",
            "--plain",
            "--all",
            &format!("--state={states}"),
            "neustream-relay@*",
        ]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains("neustream-relay@"))
            .count()
    }

    /// Sets (or with `None` removes) `NEUSTREAM_RTMP_ENGINE` for the relay units of `keys`:
    /// a drop-in per instance (`neustream-relay@<key>.service.d/`, the keys being plain
    /// alphanumerics need no escaping), then one daemon-reload. The hooks and everything else
    /// stay as they are, so one machine runs both engines side by side.
    pub fn set_engine(&self, keys: &[String], engine: Option<&str>) {
        let units = self.machine.dir.join("units");
        for k in keys {
            let dir = units.join(format!("neustream-relay@{k}.service.d"));
            match engine {
                Some(e) => {
                    std::fs::create_dir_all(&dir).unwrap();
                    std::fs::write(
                        dir.join("bench-engine.conf"),
                        format!("[Service]\nEnvironment=NEUSTREAM_RTMP_ENGINE={e}\n"),
                    )
                    .unwrap();
                }
                None => {
                    let _ = std::fs::remove_dir_all(&dir);
                }
            }
        }
        self.machine.ok(&["systemctl", "daemon-reload"]);
    }

    pub fn dest_pids(&self) -> Vec<i32> {
        self.dests.iter().flat_map(|d| d.pids()).collect()
    }
}

impl Drop for Lab {
    /// Stops everything, then removes the scratch directories (recordings can be large);
    /// `NEUSTREAM_BENCH_KEEP=1` keeps them.
    fn drop(&mut self) {
        self.machine.shutdown();
        for d in &mut self.dests {
            d.stop();
        }
        if let Some(p) = &mut self.push {
            p.stop();
        }
        if std::env::var_os("NEUSTREAM_BENCH_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
            let _ = std::fs::remove_dir_all(&self.machine.dir);
        }
    }
}

/// A script line that prints the time and runs a hook: `t0 <unix time>` then the hook's own
/// output; `rc <status>` and `t1 <unix time>` after it.
pub fn timed(command: &str) -> String {
    format!("echo t0 $EPOCHREALTIME; {command}; echo rc $?; echo t1 $EPOCHREALTIME")
}

/// The value of the first `<tag> <value>` line of a `timed` script's output.
pub fn field(out: &str, tag: &str) -> Option<f64> {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{tag} ")))
        .and_then(|v| v.trim().parse().ok())
}
