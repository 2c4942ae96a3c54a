//! The production stack around one test machine, on the host's 127.0.0.1: the Control Plane
//! double, an RTMP ingest standing in for MediaMTX's (an nginx-rtmp server the synthetic
//! publishers publish to at `live/<key>`), destination servers, and MediaMTX's hooks run inside
//! the machine exactly as MediaMTX runs them: as user `mediamtx`, with its environment.
//!
//! Also: a slot semaphore that caps how many stream-carrying system tests run at once on this
//! small machine, and the checks several scenarios share (receiving, secrets).

use std::path::PathBuf;
use std::process::Output;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use super::control_plane_double::ControlPlaneDouble;
use super::machine::{Machine, Options};
use super::media::{probe, Publisher};
use super::nginx::RtmpServer;

/// Where `neustream ready` writes the per-stream env files (the default runtime dir).
pub const STREAMS_DIR: &str = "/run/neustream/streams";

/// Capacity shared by the system tests that carry streams; a test takes 1 slot, or all of
/// them when it must run alone. Set NEUSTREAM_TEST_SLOTS to change it.
fn capacity() -> usize {
    std::env::var("NEUSTREAM_TEST_SLOTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(2)
}

static SLOTS: (Mutex<usize>, Condvar) = (Mutex::new(0), Condvar::new());

/// Held slots, released on drop.
pub struct Slot(usize);

/// Waits for `weight` slots (capped at the capacity).
pub fn slot(weight: usize) -> Slot {
    let weight = weight.min(capacity()).max(1);
    let (lock, cvar) = &SLOTS;
    let mut used = lock.lock().unwrap_or_else(|e| e.into_inner());
    while *used + weight > capacity() {
        used = cvar.wait(used).unwrap_or_else(|e| e.into_inner());
    }
    *used += weight;
    Slot(weight)
}

impl Drop for Slot {
    fn drop(&mut self) {
        let (lock, cvar) = &SLOTS;
        let mut used = lock.lock().unwrap_or_else(|e| e.into_inner());
        *used -= self.0;
        cvar.notify_all();
    }
}

/// A destination stream key that looks like a real one and is unique to this run.
pub fn secret_key(tag: &str) -> String {
    use std::io::Read;
    let mut bytes = [0u8; 10];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut bytes)
        .unwrap();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("live_{tag}_{hex}")
}

/// A MediaMTX connection id (`MTX_SOURCE_ID` is a UUID).
pub fn source_id(n: u32) -> String {
    format!("{n:08x}-0000-4000-8000-{:012x}", std::process::id())
}

/// The relay unit of a stream key made of `[A-Za-z0-9_]` (no escaping needed).
pub fn unit(key: &str) -> String {
    assert!(
        key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
        "test keys avoid characters systemd escapes: {key}"
    );
    format!("neustream-relay@{key}.service")
}

pub fn env_file(key: &str) -> String {
    format!("{STREAMS_DIR}/{key}.env")
}

/// One run of a hook: its exit status and output.
pub struct HookRun {
    pub name: String,
    pub out: Output,
}

impl HookRun {
    pub fn ok(&self) -> bool {
        self.out.status.success()
    }
    pub fn code(&self) -> Option<i32> {
        self.out.status.code()
    }
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.out.stdout).into_owned()
    }
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.out.stderr).into_owned()
    }
}

pub struct Stack {
    /// Dropped first: the machine halts, stopping every relay, before the servers go.
    pub machine: Machine,
    pub cp: ControlPlaneDouble,
    pub ingest: RtmpServer,
    /// Host scratch directory of the servers.
    pub dir: PathBuf,
    /// Everything the hooks printed, for the secrets check.
    outputs: Mutex<Vec<String>>,
    /// Last: removes `dir` (recordings) once the servers above are stopped.
    _cleanup: Cleanup,
    _slot: Slot,
}

/// Removes a scratch directory on drop, unless the test failed (then it is kept to look at).
struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("kept {} for inspection", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl Stack {
    pub fn boot(label: &str) -> Stack {
        Self::boot_with(label, Options::default(), 1)
    }

    /// Waits for `weight` slots, then boots the machine and starts the servers.
    pub fn boot_with(label: &str, options: Options, weight: usize) -> Stack {
        let slot = slot(weight);
        let dir = super::scratch(&format!("stack-{label}"));
        let ingest = RtmpServer::start(&dir.join("ingest"));
        let cp = ControlPlaneDouble::start();
        let machine = Machine::boot_with(label, options);
        Stack {
            machine,
            cp,
            ingest,
            dir: dir.clone(),
            outputs: Mutex::new(Vec::new()),
            _cleanup: Cleanup(dir),
            _slot: slot,
        }
    }

    /// A new destination server (nginx-rtmp, recording) named `name`.
    pub fn destination(&self, name: &str) -> RtmpServer {
        RtmpServer::start(&self.dir.join(name))
    }

    /// The synthetic publisher of `key`, publishing to the ingest at `live/<key>`.
    pub fn publish(&self, key: &str) -> Publisher {
        Publisher::start(&self.ingest.url(&format!("live/{key}")))
    }

    /// What MediaMTX puts in a hook's environment, plus the settings of its environment file.
    pub fn hook_env(&self, key: &str, source_id: &str) -> Vec<(String, String)> {
        vec![
            ("MTX_PATH".into(), format!("live/{key}")),
            ("MTX_SOURCE_TYPE".into(), "rtmpConn".into()),
            ("MTX_SOURCE_ID".into(), source_id.into()),
            ("RTSP_PORT".into(), "8554".into()),
            ("CONTROL_PLANE_URL".into(), self.cp.url()),
            (
                "NEUSTREAM_INGEST_URL".into(),
                format!("rtmp://127.0.0.1:{}", self.ingest.port),
            ),
            // The double also answers MediaMTX's kick endpoint, and records the call.
            ("NEUSTREAM_MEDIAMTX_API_URL".into(), self.cp.url()),
            // Streams end with their publisher, as before the grace existed; the grace's own
            // tests (tests/grace.rs) set it.
            ("NEUSTREAM_RECONNECT_GRACE".into(), "0".into()),
        ]
    }

    /// Runs `neustream <hook>` in the machine as MediaMTX does: as user mediamtx, with
    /// MediaMTX's variables; `extra` adds or overrides variables.
    pub fn hook(&self, hook: &str, key: &str, source_id: &str, extra: &[(&str, &str)]) -> HookRun {
        self.hook_unset(hook, key, source_id, extra, &[])
    }

    /// Like [`Self::hook`], without the variables `unset` (e.g. `NEUSTREAM_MEDIAMTX_API_URL`:
    /// a MediaMTX whose API is not configured).
    pub fn hook_unset(
        &self,
        hook: &str,
        key: &str,
        source_id: &str,
        extra: &[(&str, &str)],
        unset: &[&str],
    ) -> HookRun {
        let mut env = self.hook_env(key, source_id);
        env.retain(|(name, _)| !unset.contains(&name.as_str()));
        for (k, v) in extra {
            env.retain(|(name, _)| name != k);
            env.push((k.to_string(), v.to_string()));
        }
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let out = self
            .machine
            .run_env(Some("mediamtx"), &env, &["neustream", hook]);
        let run = HookRun {
            name: format!("neustream {hook} (live/{key}, source {source_id})"),
            out,
        };
        self.outputs
            .lock()
            .unwrap()
            .push(format!("{}{}", run.stdout(), run.stderr()));
        run
    }

    /// Panics unless `run` succeeded, with its output and the relay's journal.
    pub fn assert_ok(&self, run: &HookRun, key: &str) {
        assert!(
            run.ok(),
            "{} failed ({}):\n{}{}\nrelay log:\n{}",
            run.name,
            run.out.status,
            run.stdout(),
            run.stderr(),
            self.relay_log(key)
        );
    }

    /// `ready`, which must succeed.
    pub fn ready_ok(&self, key: &str, source_id: &str) -> HookRun {
        let run = self.ready(key, source_id);
        self.assert_ok(&run, key);
        run
    }

    /// `unpublish`, which must succeed.
    pub fn unpublish_ok(&self, key: &str, source_id: &str) -> HookRun {
        let run = self.unpublish(key, source_id);
        self.assert_ok(&run, key);
        run
    }

    pub fn ready(&self, key: &str, source_id: &str) -> HookRun {
        self.hook("ready", key, source_id, &[])
    }

    pub fn unpublish(&self, key: &str, source_id: &str) -> HookRun {
        self.hook("unpublish", key, source_id, &[])
    }

    /// `systemctl show` of the relay unit of `key`.
    pub fn relay(&self, key: &str, props: &[&str]) -> std::collections::HashMap<String, String> {
        self.machine.show(&unit(key), props)
    }

    pub fn nrestarts(&self, key: &str) -> u32 {
        self.relay(key, &["NRestarts"])["NRestarts"]
            .parse()
            .unwrap()
    }

    /// Whether a file exists inside the machine.
    pub fn exists(&self, path: &str) -> bool {
        self.machine.run(&["test", "-e", path]).status.success()
    }

    /// Text of a file inside the machine.
    pub fn read(&self, path: &str) -> String {
        self.machine.ok(&["cat", path])
    }

    /// ffmpeg processes inside the machine (host pids).
    pub fn ffmpegs(&self) -> Vec<i32> {
        self.machine.processes("ffmpeg")
    }

    /// The relay's journal lines (`journalctl -u`), for failure messages.
    pub fn relay_log(&self, key: &str) -> String {
        self.machine
            .journal(&["-u", &unit(key), "-o", "short-monotonic"])
    }

    /// Fails if any of `secrets` appears in the machine's whole journal (every field of every
    /// entry), in anything a hook printed, in `ps` or in `systemctl status` of the relays.
    pub fn assert_secrets_kept(&self, secrets: &[String]) {
        let m = &self.machine;
        let mut places: Vec<(String, String)> = vec![
            ("journalctl -o export".into(), m.journal_export()),
            (
                "ps -eo user,pid,args".into(),
                String::from_utf8_lossy(&m.run(&["ps", "-eww", "-o", "user,pid,args"]).stdout)
                    .into_owned(),
            ),
            (
                "systemctl status neustream-relay@*".into(),
                String::from_utf8_lossy(
                    &m.run(&[
                        "systemctl",
                        "status",
                        "--all",
                        "--no-pager",
                        "--full",
                        "-n",
                        "200",
                        "neustream-relay@*",
                    ])
                    .stdout,
                )
                .into_owned(),
            ),
        ];
        for (i, text) in self.outputs.lock().unwrap().iter().enumerate() {
            places.push((format!("output of hook run {i}"), text.clone()));
        }
        assert!(
            places[0].1.contains("_CMDLINE="),
            "the journal export looks empty"
        );
        for secret in secrets {
            for (place, text) in &places {
                assert!(
                    !text.contains(secret.as_str()),
                    "destination key {secret} leaked into {place}:\n{}",
                    excerpt(text, secret)
                );
            }
        }
    }
}

/// The lines of `text` that hold `needle`.
fn excerpt(text: &str, needle: &str) -> String {
    text.lines()
        .filter(|l| l.contains(needle))
        .take(5)
        .collect::<Vec<_>>()
        .join("\n")
}

/// A destination as the Control Plane lists it, and where to look for what it received.
#[derive(Clone, Debug)]
pub struct Dest {
    pub platform: String,
    /// `rtmp_url`, without the key.
    pub url: String,
    /// The destination's stream key: a secret.
    pub key: String,
    /// Where its server records what it receives.
    pub recording: PathBuf,
}

impl Dest {
    /// A destination on `server`'s application `live`.
    pub fn on(server: &RtmpServer, platform: &str, key: &str) -> Dest {
        Dest {
            platform: platform.into(),
            url: server.url("live"),
            key: key.into(),
            recording: server.recording(key),
        }
    }

    /// Video frames recorded so far.
    pub fn frames(&self) -> usize {
        probe(&self.recording).map_or(0, |r| r.video_frames)
    }

    pub fn probe(&self) -> Option<super::media::Received> {
        probe(&self.recording)
    }
}

/// Registers `key` with these destinations at the double.
pub fn add_stream(cp: &ControlPlaneDouble, key: &str, dests: &[Dest]) {
    let refs: Vec<(&str, &str, &str)> = dests
        .iter()
        .map(|d| (d.platform.as_str(), d.url.as_str(), d.key.as_str()))
        .collect();
    cp.add_stream(key, &refs);
}

/// Video frames each destination has recorded so far.
pub fn frames(dests: &[Dest]) -> Vec<usize> {
    dests.iter().map(Dest::frames).collect()
}

/// Waits until every destination has recorded at least `frames` more video frames than in
/// `since` (or than nothing); returns how long that took, or which ones fell short. A
/// destination that got there is not probed again.
pub fn wait_receiving(
    dests: &[Dest],
    since: Option<&[usize]>,
    frames: usize,
    timeout: Duration,
) -> Result<Duration, String> {
    let start = Instant::now();
    let base: Vec<usize> = since.map_or_else(|| vec![0; dests.len()], <[usize]>::to_vec);
    let mut pending: Vec<usize> = (0..dests.len()).collect();
    let every = Duration::from_millis(if dests.len() > 8 { 1000 } else { 250 });
    let done = super::wait_for(timeout, every, || {
        pending.retain(|&i| dests[i].frames() < base[i] + frames);
        pending.is_empty().then(|| start.elapsed())
    });
    done.ok_or_else(|| {
        let got: Vec<String> = pending
            .iter()
            .map(|&i| {
                let d = &dests[i];
                format!(
                    "{} ({}) +{}",
                    d.recording.display(),
                    d.platform,
                    d.frames().saturating_sub(base[i])
                )
            })
            .collect();
        format!(
            "{} of {} destinations did not get {frames} new video frames within {timeout:?}: {}",
            pending.len(),
            dests.len(),
            got.join(", ")
        )
    })
}
