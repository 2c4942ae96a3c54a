//! A real systemd for system tests: an ephemeral `systemd-nspawn` machine booted over a
//! throw-away overlay of the host's root (see shared/notes/system-test-harness.md), with its
//! own systemd as PID 1, D-Bus system bus, journald and polkit.
//!
//! The machine gets the project's units (systemd/) in /run/systemd/system, the polkit rule in
//! /etc/polkit-1/rules.d, the built `neustream` as /usr/local/bin/neustream, and the user
//! `mediamtx` and /run/neustream/streams from the project's sysusers and tmpfiles files. It
//! shares the host's network namespace: servers on the host's 127.0.0.1 are reachable.
//!
//! The checkout is bound read-only at its own path (nspawn mounts a fresh /tmp, which would
//! hide a checkout under /tmp), the test's scratch directory read-write.
//!
//! `Options::bare` leaves all of that out: a fresh host, for testing `install.sh`.
//!
//! It is always shut down: on drop (also when a test panics), and by `timeout` around
//! systemd-nspawn if the test process dies without unwinding.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// Longest a machine may live, whatever happens to the test that booted it.
const MAX_LIFETIME: &str = "900";
const PROJECT: &str = env!("CARGO_MANIFEST_DIR");

pub struct Machine {
    pub name: String,
    /// Scratch directory on the host, bound read-write at the same path inside.
    pub dir: PathBuf,
    root: PathBuf,
    nspawn: Option<Child>,
    pub pid1: i32,
}

#[derive(Default, Clone)]
pub struct Options {
    /// Extra unit files or drop-ins (name relative to /run/systemd/system, contents) placed
    /// beside the project's units.
    pub units: Vec<(String, String)>,
    /// Units the test target pulls in at boot.
    pub wants: Vec<String>,
    /// A machine with nothing of the project in it (no units, binary, polkit rule, user or
    /// runtime directory), as a fresh host before `install.sh`.
    pub bare: bool,
    /// A host directory bound read-write as the machine's /var/lib/neustream: state that
    /// outlives the machine, so that a test can boot a second machine over it (a reboot).
    pub state: Option<PathBuf>,
}

/// Fails (does not skip) when the harness cannot run here, naming what is missing.
fn require_harness() {
    assert!(
        unsafe { libc::geteuid() } == 0,
        "system tests need root (systemd-nspawn, mount namespaces); run them as root, as .ci/run does"
    );
    super::require_tool("systemd-nspawn", "systemd-container");
    super::require_tool("unshare", "util-linux");
    super::require_tool("nsenter", "util-linux");
    assert!(
        Path::new("/usr/bin/dbus-daemon").exists() || Path::new("/usr/bin/dbus-broker").exists(),
        "no D-Bus daemon: apt-get install dbus"
    );
    assert!(
        Path::new("/usr/lib/polkit-1/polkitd").exists(),
        "polkitd missing: apt-get install polkitd"
    );
}

impl Machine {
    pub fn boot(label: &str) -> Machine {
        Self::boot_with(label, Options::default())
    }

    pub fn boot_with(label: &str, options: Options) -> Machine {
        require_harness();
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "nstest-{label}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        );
        let name: String = name.chars().take(60).collect();
        let dir = super::scratch(&format!("machine-{label}"));
        let root = dir.join("root");
        let units = dir.join("units");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(&units).unwrap();
        if !options.bare {
            for f in [
                "neustream-relay@.service",
                "neustream.slice",
                "neustream-refresh.service",
                "neustream-refresh.timer",
                "neustream-reconcile.service",
                "neustream-reconcile.timer",
            ] {
                std::fs::copy(Path::new(PROJECT).join("systemd").join(f), units.join(f)).unwrap();
            }
        }
        let mut wants = vec![
            "dbus.socket".to_string(),
            "systemd-journald.socket".to_string(),
        ];
        wants.extend(options.wants.iter().cloned());
        std::fs::write(
            units.join("neustream-test.target"),
            format!(
                "[Unit]\nDescription=Neustream system test\nRequires={w}\nAfter={w}\nAllowIsolate=yes\n",
                w = wants.join(" ")
            ),
        )
        .unwrap();
        for (unit, text) in &options.units {
            // A name may be a drop-in: "x@y.service.d/z.conf".
            std::fs::create_dir_all(units.join(unit).parent().unwrap()).unwrap();
            std::fs::write(units.join(unit), text).unwrap();
        }
        let binary = env!("CARGO_BIN_EXE_neustream");
        let state = options
            .state
            .as_ref()
            .map(|d| format!("--bind={}:/var/lib/neustream", d.display()))
            .unwrap_or_default();
        let rules = Path::new(PROJECT).join("systemd/neustream.rules");
        let installed = if options.bare {
            String::new()
        } else {
            format!(
                "--bind-ro={binary}:/usr/local/bin/neustream \
                 --bind-ro={rules}:/etc/polkit-1/rules.d/50-neustream.rules",
                rules = rules.display()
            )
        };
        let script = format!(
            "set -e; mount --make-rprivate /; mount --bind / {root}; \
             exec timeout --kill-after=10 {MAX_LIFETIME} systemd-nspawn -q -D {root} \
             --volatile=overlay -b --register=no --keep-unit --link-journal=no -M {name} \
             --bind-ro={project}:{project}:norbind \
             --bind-ro={units}:/run/systemd/system \
             {installed} \
             --bind={dir}:{dir}:norbind {state} \
             -- systemd.unit=neustream-test.target",
            root = root.display(),
            project = PROJECT,
            units = units.display(),
            dir = dir.display(),
        );
        let log = std::fs::File::create(dir.join("nspawn.log")).unwrap();
        let mut cmd = Command::new("unshare");
        cmd.args(["-m", "sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let nspawn = cmd.spawn().expect("start systemd-nspawn");
        let mut machine = Machine {
            name,
            dir,
            root,
            nspawn: Some(nspawn),
            pid1: 0,
        };
        machine.pid1 = machine.find_pid1();
        machine.wait_booted();
        if !options.bare {
            machine.provision();
        }
        machine
    }

    /// The machine's PID 1: systemd-nspawn's child (nspawn runs under `timeout`).
    fn find_pid1(&mut self) -> i32 {
        let top = self.nspawn.as_ref().unwrap().id() as i32;
        let found = super::wait_for(Duration::from_secs(20), Duration::from_millis(20), || {
            let nspawn = children(top)
                .into_iter()
                .find(|p| comm(*p).as_deref() == Some("systemd-nspawn"))?;
            children(nspawn)
                .into_iter()
                .find(|p| comm(*p).as_deref() == Some("systemd"))
        });
        found
            .unwrap_or_else(|| panic!("machine {} did not start; {}", self.name, self.nspawn_log()))
    }

    fn wait_booted(&self) {
        let state = super::wait_for(Duration::from_secs(60), Duration::from_millis(100), || {
            let out = self.run(&["systemctl", "is-system-running"]);
            let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
            matches!(s.as_str(), "running" | "degraded").then_some(s)
        });
        assert!(
            state.is_some(),
            "machine {} did not boot; {}",
            self.name,
            self.nspawn_log()
        );
    }

    /// The project's sysusers and tmpfiles files, applied as on a real install.
    fn provision(&self) {
        for (tool, file) in [
            ("systemd-sysusers", "systemd/neustream.sysusers.conf"),
            ("systemd-tmpfiles", "systemd/neustream.tmpfiles.conf"),
        ] {
            let path = Path::new(PROJECT).join(file);
            let path = path.to_str().unwrap();
            let args: Vec<&str> = if tool == "systemd-tmpfiles" {
                vec![tool, "--create", path]
            } else {
                vec![tool, path]
            };
            self.ok(&args);
        }
    }

    fn nspawn_log(&self) -> String {
        format!(
            "nspawn log:\n{}",
            std::fs::read_to_string(self.dir.join("nspawn.log")).unwrap_or_default()
        )
    }

    /// Runs a command inside the machine as root (at most 120 s).
    pub fn run(&self, argv: &[&str]) -> Output {
        self.run_env(None, &[], argv)
    }

    /// Runs a command inside, as `user` when given, with exactly these environment variables
    /// (plus PATH), at most 120 s.
    pub fn run_env(&self, user: Option<&str>, env: &[(&str, &str)], argv: &[&str]) -> Output {
        let pid = self.pid1.to_string();
        let mut cmd = Command::new("nsenter");
        cmd.args(["-t", &pid, "-m", "-p", "-u", "-i", "--", "timeout", "120"]);
        if let Some(user) = user {
            cmd.args([
                "setpriv",
                &format!("--reuid={user}"),
                &format!("--regid={user}"),
                "--init-groups",
            ]);
        }
        cmd.arg("env")
            .arg("-i")
            .arg("PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin");
        for (k, v) in env {
            cmd.arg(format!("{k}={v}"));
        }
        cmd.args(argv).stdin(Stdio::null());
        cmd.output().expect("run nsenter")
    }

    /// Like `run`, but panics with the command's output when it fails.
    pub fn ok(&self, argv: &[&str]) -> String {
        let out = self.run(argv);
        assert!(
            out.status.success(),
            "{argv:?} failed in {}: {}{}",
            self.name,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn sh(&self, script: &str) -> Output {
        self.run(&["sh", "-c", script])
    }

    /// `systemctl show -p A,B unit` as a map.
    pub fn show(&self, unit: &str, props: &[&str]) -> HashMap<String, String> {
        let out = self.ok(&["systemctl", "show", unit, "-p", &props.join(",")]);
        out.lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.into(), v.into()))
            .collect()
    }

    /// Waits until `unit` reports `ActiveState=state`.
    pub fn wait_state(&self, unit: &str, state: &str, timeout: Duration) -> bool {
        super::wait_for(timeout, Duration::from_millis(100), || {
            (self
                .show(unit, &["ActiveState"])
                .get("ActiveState")
                .map(String::as_str)
                == Some(state))
            .then_some(())
        })
        .is_some()
    }

    /// The whole journal, every field of every entry (`journalctl -o export`).
    pub fn journal_export(&self) -> String {
        self.ok(&["journalctl", "--no-pager", "-o", "export"])
    }

    /// `journalctl -u unit` lines with the given output format.
    pub fn journal(&self, args: &[&str]) -> String {
        let mut argv = vec!["journalctl", "--no-pager"];
        argv.extend_from_slice(args);
        self.ok(&argv)
    }

    /// Processes inside the machine whose command name is `name` (pid as seen on the host).
    pub fn processes(&self, name: &str) -> Vec<i32> {
        descendants(self.pid1)
            .into_iter()
            .filter(|p| comm(*p).as_deref() == Some(name))
            .collect()
    }

    /// Power loss: every process of the machine dies at once (SIGKILL to its PID 1 ends its
    /// PID namespace), nothing is stopped cleanly; /run and the overlay go with it.
    pub fn power_off(&mut self) {
        let Some(mut child) = self.nspawn.take() else {
            return;
        };
        unsafe { libc::kill(self.pid1, libc::SIGKILL) };
        let done = super::wait_for(Duration::from_secs(15), Duration::from_millis(50), || {
            child.try_wait().ok().flatten()
        });
        if done.is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir(&self.root);
    }

    pub fn shutdown(&mut self) {
        let Some(mut child) = self.nspawn.take() else {
            return;
        };
        // SIGTERM to systemd-nspawn halts the machine cleanly (never to its PID 1, which would
        // re-execute and outlive nspawn).
        let top = child.id() as i32;
        for p in children(top) {
            if comm(p).as_deref() == Some("systemd-nspawn") {
                unsafe { libc::kill(p, libc::SIGTERM) };
            }
        }
        let done = super::wait_for(Duration::from_secs(15), Duration::from_millis(50), || {
            child.try_wait().ok().flatten()
        });
        if done.is_none() {
            unsafe { libc::kill(self.pid1, libc::SIGKILL) };
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir(&self.root);
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn comm(pid: i32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim().to_string())
}

fn ppid(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit(')')
        .next()?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn all_pids() -> Vec<i32> {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

pub fn children(pid: i32) -> Vec<i32> {
    all_pids()
        .into_iter()
        .filter(|p| ppid(*p) == Some(pid))
        .collect()
}

pub fn descendants(pid: i32) -> Vec<i32> {
    let pids = all_pids();
    let parents: HashMap<i32, i32> = pids.iter().filter_map(|p| Some((*p, ppid(*p)?))).collect();
    pids.into_iter()
        .filter(|p| {
            let mut cur = *p;
            for _ in 0..64 {
                match parents.get(&cur) {
                    Some(&pp) if pp == pid => return true,
                    Some(&pp) if pp > 1 => cur = pp,
                    _ => return false,
                }
            }
            false
        })
        .collect()
}
