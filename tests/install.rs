//! What a new user does (issue 12): on a fresh host (a test machine with nothing of the project
//! in it), `./install.sh` from the checkout, a streams file with one key and two destinations,
//! OBS (an ffmpeg publisher) streaming through the installed MediaMTX, an unknown key kicked,
//! `./install.sh` again changing nothing, `--uninstall` leaving configuration only; and MediaMTX
//! from a release tarball served on 127.0.0.1, refused when its checksum does not match.
//!
//! The neustream binary is the one cargo built for the tests (`--binary`); MediaMTX is the
//! cached build of tests/support/build-mediamtx.sh (`--mediamtx`, and packed as the release
//! tarball). The machine shares the host's network: MediaMTX gets free ports
//! (`--rtmp-port`, `--api-port`, `--srt-port`), and apt is not needed (the host has every package).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::file_server::FileServer;
use common::machine::{Machine, Options};
use common::media::probe;
use common::mediamtx::{self as mtx, ms, Feed};
use common::nginx::RtmpServer;

const PROJECT: &str = env!("CARGO_MANIFEST_DIR");
const VERSION: &str = "v1.21.0";
/// Everything install.sh installs that is not configuration.
const INSTALLED: [&str; 11] = [
    "/usr/local/bin/neustream",
    "/usr/local/bin/mediamtx",
    "/etc/systemd/system/neustream-relay@.service",
    "/etc/systemd/system/neustream.slice",
    "/etc/systemd/system/mediamtx.service",
    "/etc/systemd/system/neustream-metrics.socket",
    "/etc/systemd/system/neustream-metrics.service",
    "/etc/polkit-1/rules.d/50-neustream.rules",
    "/etc/sysusers.d/neustream.conf",
    "/etc/tmpfiles.d/neustream.conf",
    "/var/lib/neustream/installed-files",
];
const CONFIG: [&str; 3] = [
    "/etc/neustream/mediamtx.yml",
    "/etc/neustream/neustream.env",
    "/etc/neustream/streams.toml",
];

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

struct Host {
    machine: Machine,
    binary: String,
    mediamtx: String,
    rtmp_port: u16,
    api_port: u16,
    /// UDP.
    srt_port: u16,
}

impl Host {
    /// `./install.sh ARGS` as root, from the checkout, with HOME and extra variables.
    fn install(&self, env: &[(&str, &str)], args: &[&str]) -> Output {
        let script = format!("{PROJECT}/install.sh");
        let mut argv = vec![script.as_str()];
        argv.extend_from_slice(args);
        let mut vars = vec![("HOME", "/root")];
        vars.extend_from_slice(env);
        self.machine.run_env(None, &vars, &argv)
    }

    fn ports(&self) -> [String; 6] {
        [
            "--rtmp-port".into(),
            self.rtmp_port.to_string(),
            "--api-port".into(),
            self.api_port.to_string(),
            "--srt-port".into(),
            self.srt_port.to_string(),
        ]
    }

    fn exists(&self, path: &str) -> bool {
        self.machine.run(&["test", "-e", path]).status.success()
    }

    fn present(&self, paths: &[&str]) -> Vec<String> {
        paths
            .iter()
            .filter(|p| self.exists(p))
            .map(|p| p.to_string())
            .collect()
    }

    /// Contents, mode, owner and mtime of every file install.sh may write.
    fn snapshot(&self) -> String {
        let mut script = String::new();
        for path in INSTALLED.iter().chain(CONFIG.iter()) {
            script.push_str(&format!(
                "if [ -e {path} ]; then stat -c '%n %a %U:%G %s %Y' {path}; sha256sum {path}; fi; "
            ));
        }
        String::from_utf8_lossy(&self.machine.sh(&script).stdout).into_owned()
    }

    fn main_pid(&self) -> String {
        self.machine.show(mtx::UNIT, &["MainPID"])["MainPID"].clone()
    }

    fn hook_log(&self) -> String {
        self.machine.journal(&["-t", "neustream", "-o", "cat"])
    }
}

/// A release directory as MediaMTX publishes one: the tarball of this architecture and
/// checksums.sha256; `good` false writes a checksum that does not match.
fn release_dir(dir: &Path, binary: &Path, good: bool) -> PathBuf {
    let arch = String::from_utf8(
        Command::new("dpkg")
            .arg("--print-architecture")
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let arch = match arch.trim() {
        "amd64" => "linux_amd64",
        "arm64" => "linux_arm64",
        "armhf" => "linux_armv7",
        other => panic!("no MediaMTX release for {other}"),
    };
    let release = dir.join(if good { "release-good" } else { "release-bad" });
    let content = dir.join("release-content");
    std::fs::create_dir_all(&release).unwrap();
    std::fs::create_dir_all(&content).unwrap();
    std::fs::copy(binary, content.join("mediamtx")).unwrap();
    std::fs::write(content.join("LICENSE"), "MIT\n").unwrap();
    std::fs::copy(
        Path::new(PROJECT).join("mediamtx.yml"),
        content.join("mediamtx.yml"),
    )
    .unwrap();
    let asset = format!("mediamtx_{VERSION}_{arch}.tar.gz");
    let status = Command::new("tar")
        .arg("-czf")
        .arg(release.join(&asset))
        .arg("-C")
        .arg(&content)
        .args(["mediamtx", "mediamtx.yml", "LICENSE"])
        .status()
        .unwrap();
    assert!(status.success(), "tar failed");
    let out = Command::new("sha256sum")
        .arg(release.join(&asset))
        .output()
        .unwrap();
    let mut sum = String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    if !good {
        // One digit off: a corrupted or tampered download.
        let last = if sum.ends_with('0') { "1" } else { "0" };
        sum.replace_range(63.., last);
    }
    std::fs::write(
        release.join("checksums.sha256"),
        format!(
            "{}  mediamtx_{VERSION}_darwin_amd64.tar.gz\n{sum}  {asset}\n",
            "0".repeat(64)
        ),
    )
    .unwrap();
    release
}

/// Puts host file `from` at `to` in the machine as a configuration file: root:mediamtx, `mode`.
fn install_config(machine: &Machine, from: &Path, to: &str, mode: &str) {
    let from = from.to_str().unwrap();
    machine.ok(&[
        "install", "-m", mode, "-o", "root", "-g", "mediamtx", from, to,
    ]);
}

/// `systemctl list-units --all 'neustream*'`: every Neustream unit systemd still has loaded,
/// in any state.
fn neustream_units(machine: &Machine) -> String {
    machine
        .ok(&[
            "systemctl",
            "list-units",
            "--all",
            "--plain",
            "--no-legend",
            "neustream*",
        ])
        .trim()
        .to_string()
}

#[test]
fn a_new_user_installs_streams_reinstalls_and_uninstalls() {
    let _slot = common::stack::slot(1);
    let cached_mediamtx = mtx::binary(VERSION);
    let machine = Machine::boot_with(
        "install",
        Options {
            bare: true,
            ..Default::default()
        },
    );
    // Binaries where the machine surely sees them (its scratch directory is bound inside).
    let binary = machine.dir.join("neustream");
    std::fs::copy(env!("CARGO_BIN_EXE_neustream"), &binary).unwrap();
    let mediamtx = machine.dir.join("mediamtx-cached");
    std::fs::copy(&cached_mediamtx, &mediamtx).unwrap();
    let host = Host {
        binary: binary.to_str().unwrap().into(),
        mediamtx: mediamtx.to_str().unwrap().into(),
        rtmp_port: common::free_port(),
        api_port: common::free_port(),
        srt_port: common::free_udp_port(),
        machine,
    };
    let everything: Vec<&str> = INSTALLED.iter().chain(CONFIG.iter()).copied().collect();
    assert_eq!(
        host.present(&everything),
        Vec::<String>::new(),
        "the machine is not fresh"
    );
    assert!(!host.machine.run(&["id", "mediamtx"]).status.success());

    // Without cargo and without --binary: stops at once, says how to get Rust.
    let out = host.install(&[("HOME", "/nonexistent")], &[]);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains("cargo not found")
            && said.contains("Rust >= 1.89")
            && said.contains("rustup"),
        "{said}"
    );
    assert_eq!(host.present(&everything), Vec::<String>::new(), "{said}");

    // Debian's own cargo (too old): stops at once too, naming the version.
    let old = host.machine.dir.join("old-rust-home");
    std::fs::create_dir_all(old.join(".cargo/bin")).unwrap();
    let fake = old.join(".cargo/bin/cargo");
    std::fs::write(&fake, "#!/bin/sh\necho 'cargo 1.65.0'\n").unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let out = host.install(&[("HOME", old.to_str().unwrap())], &[]);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains("is Rust 1.65.0, older than 1.89") && said.contains("rustup"),
        "{said}"
    );
    assert_eq!(host.present(&everything), Vec::<String>::new(), "{said}");

    // The release tarball with a checksum that does not match: aborts, installs nothing.
    let dir = host.machine.dir.clone();
    let bad = FileServer::start(release_dir(&dir, &mediamtx, false));
    let ports = host.ports();
    let mut args = vec!["--binary", host.binary.as_str()];
    args.extend(ports.iter().map(String::as_str));
    let out = host.install(&[("NEUSTREAM_MEDIAMTX_BASE_URL", &bad.url())], &args);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains("checksum mismatch for mediamtx_v1.21.0_"),
        "{said}"
    );
    assert!(said.contains("nothing was installed"), "{said}");
    assert_eq!(host.present(&everything), Vec::<String>::new(), "{said}");
    assert!(!host.exists("/etc/neustream"), "{said}");
    assert!(
        bad.requests().iter().any(|p| p == "/checksums.sha256"),
        "{:?}",
        bad.requests()
    );
    drop(bad);

    // First install: MediaMTX from --mediamtx.
    let mut args = vec![
        "--binary",
        host.binary.as_str(),
        "--mediamtx",
        host.mediamtx.as_str(),
    ];
    args.extend(ports.iter().map(String::as_str));
    let out = host.install(&[], &args);
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert_eq!(host.present(&everything), everything, "{said}");
    assert!(host
        .machine
        .wait_state(mtx::UNIT, "active", Duration::from_secs(10)));
    let enabled = host.machine.run(&["systemctl", "is-enabled", mtx::UNIT]);
    assert_eq!(String::from_utf8_lossy(&enabled.stdout).trim(), "enabled");
    assert!(
        said.contains("Server rtmp://") && said.contains(&format!(":{}/live", host.rtmp_port)),
        "{said}"
    );
    // SRT is offered too, on the port given (RTMPS waits for a certificate).
    assert!(
        said.contains(&format!(
            ":{}?streamid=publish:live/<stream key>",
            host.srt_port
        )),
        "{said}"
    );
    assert!(!said.contains("rtmps://"), "{said}");
    let generated = said
        .lines()
        .find_map(|l| l.trim().strip_prefix("Stream key: "))
        .unwrap_or_else(|| panic!("no stream key printed: {said}"))
        .to_string();
    assert!(said.contains("/etc/neustream/streams.toml"), "{said}");
    let mode = host
        .machine
        .ok(&["stat", "-c", "%a %U:%G", "/etc/neustream/streams.toml"]);
    assert_eq!(mode.trim(), "640 root:mediamtx");
    let check = host.machine.ok(&["neustream", "streams", "check"]);
    assert!(
        check.contains("1 stream(s)")
            && check.contains("no destination")
            && !check.contains(&generated),
        "{check}"
    );

    // The generated key is accepted and not relayed.
    {
        let mut feed = Feed::start(
            &format!("rtmp://127.0.0.1:{}/live/{generated}", host.rtmp_port),
            &dir.join("feed-generated.log"),
        );
        let seen = common::wait_for(Duration::from_secs(15), ms(100), || {
            host.hook_log()
                .contains(&format!("{generated}: no destinations; nothing to relay"))
                .then_some(())
        });
        assert!(seen.is_some(), "{}", host.hook_log());
        std::thread::sleep(ms(500));
        assert!(
            feed.exited().is_none(),
            "the generated key's publisher was dropped"
        );
        feed.stop();
    }

    // The user's streams file: one key, two destinations on this host.
    let dests = [
        RtmpServer::start(&dir.join("dest-a")),
        RtmpServer::start(&dir.join("dest-b")),
    ];
    let key = "obsinstall01";
    let streams = dir.join("streams.toml");
    std::fs::write(
        &streams,
        format!(
            "[[stream]]\nkey = \"{key}\"\nname = \"Install test\"\n\
             [[stream.destination]]\nplatform = \"custom\"\nrtmp_url = \"{}\"\nstream_key = \"desta\"\n\
             [[stream.destination]]\nplatform = \"custom\"\nrtmp_url = \"{}\"\nstream_key = \"destb\"\n",
            dests[0].url("live"),
            dests[1].url("live")
        ),
    )
    .unwrap();
    install_config(
        &host.machine,
        &streams,
        "/etc/neustream/streams.toml",
        "0640",
    );
    let mut feed = Feed::start(
        &format!("rtmp://127.0.0.1:{}/live/{key}", host.rtmp_port),
        &dir.join("feed.log"),
    );
    let unit = format!("neustream-relay@{key}.service");
    assert!(
        host.machine
            .wait_state(&unit, "active", Duration::from_secs(20)),
        "relay did not start:\n{}",
        host.hook_log()
    );
    let received = common::wait_for(Duration::from_secs(30), ms(250), || {
        let frames: Vec<usize> = ["desta", "destb"]
            .iter()
            .zip(&dests)
            .map(|(name, d)| probe(&d.recording(name)).map_or(0, |r| r.video_frames))
            .collect();
        frames.iter().all(|n| *n >= 60).then_some(frames)
    });
    assert!(
        received.is_some(),
        "both destinations must receive 2 s of video:\n{}",
        host.hook_log()
    );
    for (name, d) in ["desta", "destb"].iter().zip(&dests) {
        let r = probe(&d.recording(name)).unwrap();
        assert_eq!(
            (r.video_codec.as_str(), r.audio_codec.as_str()),
            ("h264", "aac")
        );
    }

    // An unknown key is refused and kicked.
    let mut stranger = Feed::start(
        &format!("rtmp://127.0.0.1:{}/live/notakey99", host.rtmp_port),
        &dir.join("stranger.log"),
    );
    let kicked = common::wait_for(Duration::from_secs(15), ms(50), || stranger.exited());
    assert!(
        kicked.is_some(),
        "unknown key not kicked:\n{}",
        host.hook_log()
    );
    // The hook's lines may reach the journal a moment after the kick.
    let refused = common::wait_for(Duration::from_secs(10), ms(100), || {
        let log = host.hook_log();
        (log.contains(
            "stream key notakey99 is not in the streams file /etc/neustream/streams.toml",
        ) && log.contains("notakey99: publisher")
            && log.contains("disconnected"))
        .then_some(())
    });
    assert!(
        refused.is_some(),
        "{}",
        host.machine.journal(&["-o", "short-monotonic", "-n", "80"])
    );
    assert!(!host
        .machine
        .wait_state("neustream-relay@notakey99.service", "active", ms(500)));

    // The stream ends: after the reconnect grace (30 s by default: the relay keeps the
    // destinations for a publisher coming back), the relay stops and the end is logged.
    feed.stop();
    assert!(host
        .machine
        .wait_state(&unit, "inactive", Duration::from_secs(50)));
    let ended = common::wait_for(Duration::from_secs(10), ms(100), || {
        host.hook_log()
            .contains(&format!("{key}: stream ended (standalone mode"))
            .then_some(())
    });
    assert!(ended.is_some(), "{}", host.hook_log());

    // Mistakes refuse every publish, and say what to fix: a malformed file, a file other users
    // can read, both a Control Plane and a streams file.
    let good = std::fs::read_to_string(&streams).unwrap();
    let env_file = "/etc/neustream/neustream.env";
    let env_before = host.machine.ok(&["cat", env_file]);
    let install_streams = |text: &str, mode: &str| {
        std::fs::write(&streams, text).unwrap();
        install_config(&host.machine, &streams, "/etc/neustream/streams.toml", mode);
    };
    let mistakes: [(&str, &dyn Fn()); 3] = [
        ("streams file /etc/neustream/streams.toml, line 3:", &|| {
            install_streams(
                &good.replacen("name = \"Install test\"", "name = \"unterminated", 1),
                "0640",
            )
        }),
        (
            "streams file /etc/neustream/streams.toml is readable by other users (mode 0644)",
            &|| install_streams(&good, "0644"),
        ),
        (
            "CONTROL_PLANE_URL is set and the streams file /etc/neustream/streams.toml exists: \
             remove (or rename) /etc/neustream/streams.toml",
            &|| {
                install_streams(&good, "0640");
                host.machine.ok(&[
                    "sh",
                    "-c",
                    &format!("echo CONTROL_PLANE_URL=https://cp.example >> {env_file}"),
                ]);
            },
        ),
    ];
    for (n, (expected, make)) in mistakes.iter().enumerate() {
        make();
        let mut refused = Feed::start(
            &format!("rtmp://127.0.0.1:{}/live/{key}", host.rtmp_port),
            &dir.join(format!("mistake-{n}.log")),
        );
        let kicked = common::wait_for(Duration::from_secs(15), ms(50), || refused.exited());
        let seen = common::wait_for(Duration::from_secs(10), ms(100), || {
            host.hook_log().contains(expected).then_some(())
        });
        assert!(
            kicked.is_some() && seen.is_some(),
            "mistake {n} ({expected}): kicked {kicked:?}\n{}",
            host.machine.journal(&["-o", "short-monotonic", "-n", "60"])
        );
        assert!(
            !host.machine.wait_state(&unit, "active", ms(300)),
            "mistake {n} relayed"
        );
    }
    install_streams(&good, "0640");
    std::fs::write(dir.join("neustream.env"), &env_before).unwrap();
    install_config(&host.machine, &dir.join("neustream.env"), env_file, "0640");

    // ./install.sh again: nothing changes, MediaMTX is not restarted.
    let before = (host.snapshot(), host.main_pid());
    let out = host.install(&[], &args);
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("nothing changed"), "{said}");
    assert!(!said.contains("installed /"), "{said}");
    assert_eq!((host.snapshot(), host.main_pid()), before, "{said}");

    // --uninstall: no unit, no binary; configuration kept as it was. A relay left failed
    // (started without its env file: exit 78) goes too.
    let failed = "neustream-relay@left_failed.service";
    host.machine.run(&["systemctl", "start", failed]);
    assert_eq!(
        host.machine.show(failed, &["ActiveState"])["ActiveState"],
        "failed"
    );
    let config_before: Vec<String> = CONFIG
        .iter()
        .map(|c| host.machine.ok(&["sha256sum", c]))
        .collect();
    let out = host.install(&[], &["--uninstall"]);
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert_eq!(host.present(&INSTALLED), Vec::<String>::new(), "{said}");
    assert_eq!(neustream_units(&host.machine), "", "{said}");
    for path in INSTALLED.iter().filter(|p| !p.starts_with("/var/lib")) {
        assert!(said.contains(&format!("removed {path}\n")), "{said}");
    }
    let unit_files = host.machine.run(&[
        "systemctl",
        "list-unit-files",
        "--no-legend",
        "mediamtx.service",
        "neustream-relay@.service",
        "neustream.slice",
    ]);
    let unit_files = String::from_utf8_lossy(&unit_files.stdout).into_owned();
    assert_eq!(unit_files.trim(), "", "{said}");
    assert!(host.machine.processes("mediamtx").is_empty());
    let config_after: Vec<String> = CONFIG
        .iter()
        .map(|c| host.machine.ok(&["sha256sum", c]))
        .collect();
    assert_eq!(config_after, config_before);

    // Again, MediaMTX from the release tarball (checksum good); the configuration is reused.
    let good = FileServer::start(release_dir(&dir, &mediamtx, true));
    let mut args = vec!["--binary", host.binary.as_str()];
    args.extend(ports.iter().map(String::as_str));
    let out = host.install(&[("NEUSTREAM_MEDIAMTX_BASE_URL", &good.url())], &args);
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("verified against checksums.sha256"), "{said}");
    assert!(said.contains("kept /etc/neustream/streams.toml"), "{said}");
    let installed = host.machine.ok(&["sha256sum", "/usr/local/bin/mediamtx"]);
    let cached = host.machine.ok(&["sha256sum", host.mediamtx.as_str()]);
    assert_eq!(
        installed.split_whitespace().next(),
        cached.split_whitespace().next()
    );
    assert!(host
        .machine
        .wait_state(mtx::UNIT, "active", Duration::from_secs(10)));
    let out = host.install(&[], &["--uninstall"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(host.present(&INSTALLED), Vec::<String>::new());
    assert_eq!(neustream_units(&host.machine), "", "{}", text(&out));
    assert_eq!(host.present(&CONFIG), CONFIG);
}
