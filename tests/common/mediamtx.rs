//! A real MediaMTX in front of the hooks: built from the Go module proxy by
//! `tests/support/build-mediamtx.sh` (cached under /var/cache/neustream-test), and run inside a
//! system-test machine by the shipped `systemd/mediamtx.service` (user `mediamtx`) with the
//! shipped `mediamtx.yml`, of which only the listening ports are changed. The hooks read their
//! settings from /etc/neustream/neustream.env inside the machine, as on a Debian install.
//!
//! Also: an RTMP publisher that can drop or stall like OBS on a bad network, and a small client
//! of MediaMTX's Control API.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use super::machine::{Machine, Options};

const PROJECT: &str = env!("CARGO_MANIFEST_DIR");

pub use super::mediamtx_binary::{binary, VERSION};
/// Older releases the hooks are also tested with: the last 1.20, and the oldest the Go module
/// proxy lets us build, which is also the first with runOnAvailable/runOnUnavailable (v1.20.0
/// and v1.19.2 pin dependency versions the proxy refuses; see docs/mediamtx.md).
pub const OLDER_VERSIONS: [&str; 2] = ["v1.20.1", "v1.19.3"];

/// Where the binary is installed on a Debian host, as systemd/mediamtx.service runs it.
const INSTALLED_BINARY: &str = "/usr/local/bin/mediamtx";
const INSTALLED_CONFIG: &str = "/etc/neustream/mediamtx.yml";
const SETTINGS_FILE: &str = "/etc/neustream/neustream.env";
pub const UNIT: &str = "mediamtx.service";

/// The project's mediamtx.yml, as shipped.
pub fn shipped_config() -> String {
    std::fs::read_to_string(Path::new(PROJECT).join("mediamtx.yml")).unwrap()
}

/// Replaces the one line `from` of `text` by `to`; panics if it is not there exactly once.
fn replace_line(text: &str, from: &str, to: &str) -> String {
    let n = text.lines().filter(|l| *l == from).count();
    assert_eq!(
        n, 1,
        "mediamtx.yml must have exactly one line '{from}' (found {n})"
    );
    text.lines()
        .map(|l| if l == from { to } else { l })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// Where a test's MediaMTX listens, all on 127.0.0.1.
#[derive(Clone, Copy, Debug)]
pub struct Ports {
    pub rtmp: u16,
    pub api: u16,
    /// UDP.
    pub srt: u16,
    /// Used only with RTMPS on ([`with_rtmps`]).
    pub rtmps: u16,
}

impl Ports {
    pub fn free() -> Ports {
        Ports {
            rtmp: super::free_port(),
            api: super::free_port(),
            srt: super::free_udp_port(),
            rtmps: super::free_port(),
        }
    }
}

/// The shipped configuration with its RTMP, RTMPS, SRT and API listeners moved to free loopback
/// ports: the only change a test makes.
pub fn adapt(shipped: &str, ports: Ports) -> String {
    let mut text = shipped.to_string();
    for (from, to) in [
        (
            "rtmpAddress: :1935",
            format!("rtmpAddress: 127.0.0.1:{}", ports.rtmp),
        ),
        (
            "rtmpsAddress: :1936",
            format!("rtmpsAddress: 127.0.0.1:{}", ports.rtmps),
        ),
        (
            "srtAddress: :8890",
            format!("srtAddress: 127.0.0.1:{}", ports.srt),
        ),
        (
            "apiAddress: 127.0.0.1:9997",
            format!("apiAddress: 127.0.0.1:{}", ports.api),
        ),
    ] {
        text = replace_line(&text, from, &to);
    }
    text
}

/// What mediamtx.yml tells operators to do to offer RTMPS, once the certificate and key are at
/// the paths it names (installed there by [`Ingest::start_rtmps`]).
pub fn with_rtmps(config: &str) -> String {
    replace_line(
        config,
        "rtmpEncryption: \"no\"",
        "rtmpEncryption: \"optional\"",
    )
}

/// Where the shipped mediamtx.yml looks for the RTMPS certificate and key.
pub const RTMPS_CERT: &str = "/etc/neustream/tls/rtmps.crt";
pub const RTMPS_KEY: &str = "/etc/neustream/tls/rtmps.key";

/// What docs/mediamtx.md tells operators of MediaMTX < 1.19.3 to do: the hooks' old names.
pub fn with_old_hook_names(config: &str) -> String {
    let mut text = config.to_string();
    for (new, old) in [
        ("    runOnAvailable: ", "    runOnReady: "),
        ("    runOnAvailableRestart: ", "    runOnReadyRestart: "),
        ("    runOnUnavailable: ", "    runOnNotReady: "),
    ] {
        assert_eq!(text.matches(new).count(), 1, "no '{new}' in mediamtx.yml");
        text = text.replace(new, old);
    }
    text
}

/// Which names the hooks go by in the configuration MediaMTX gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HookNames {
    /// runOnAvailable / runOnUnavailable, as shipped (MediaMTX >= 1.19.3).
    Shipped,
    /// runOnReady / runOnNotReady (MediaMTX < 1.19.3; deprecated aliases from then on).
    Old,
}

/// A real MediaMTX running as a systemd service in its own test machine.
pub struct Ingest {
    pub machine: Machine,
    /// The unit MediaMTX runs as: the shipped mediamtx.service, or a copy of it under another
    /// name (the shipped one then installed beside it, never started).
    pub unit: String,
    pub version: String,
    pub rtmp_port: u16,
    pub api_port: u16,
    /// MediaMTX's SRT listener (UDP).
    pub srt_port: u16,
    /// MediaMTX's RTMPS listener, if RTMPS is on ([`Ingest::start_rtmps`]).
    pub rtmps_port: Option<u16>,
    /// The configuration MediaMTX runs with (on the host: `<machine dir>/mediamtx.yml`).
    pub config: String,
    pub config_path: PathBuf,
    settings: String,
    options: Options,
    /// The RTMPS certificate and key installed at [`RTMPS_CERT`] and [`RTMPS_KEY`].
    tls: Option<(PathBuf, PathBuf)>,
}

/// A machine with MediaMTX `version` installed as the README installs it (the machine's root
/// is a throw-away overlay), with `config` and the hooks' `settings`, the RTMPS certificate and
/// key if any (as the operator installs them: the key readable by group mediamtx only), and
/// MediaMTX started.
fn install(
    label: &str,
    version: &str,
    config: &str,
    settings: &str,
    options: &Options,
    tls: Option<&(PathBuf, PathBuf)>,
    run_as: &str,
) -> (Machine, PathBuf) {
    let binary = binary(version);
    let unit = std::fs::read_to_string(Path::new(PROJECT).join("systemd").join(UNIT)).unwrap();
    let mut options = options.clone();
    if run_as != UNIT {
        options.units.push((run_as.to_string(), unit.clone()));
    }
    options.units.push((UNIT.to_string(), unit));
    let machine = Machine::boot_with(label, options);
    let config_path = machine.dir.join("mediamtx.yml");
    std::fs::write(&config_path, config).unwrap();
    let settings_path = machine.dir.join("neustream.env");
    std::fs::write(&settings_path, settings).unwrap();
    let (b, c, s) = (
        binary.to_str().unwrap(),
        config_path.to_str().unwrap(),
        settings_path.to_str().unwrap(),
    );
    machine.ok(&["ln", "-sf", b, INSTALLED_BINARY]);
    machine.ok(&["install", "-D", "-m", "0644", c, INSTALLED_CONFIG]);
    machine.ok(&[
        "install",
        "-D",
        "-m",
        "0640",
        "-o",
        "root",
        "-g",
        "mediamtx",
        s,
        SETTINGS_FILE,
    ]);
    if let Some((cert, key)) = tls {
        let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
        machine.ok(&["install", "-D", "-m", "0644", cert, RTMPS_CERT]);
        machine.ok(&[
            "install", "-D", "-m", "0640", "-o", "root", "-g", "mediamtx", key, RTMPS_KEY,
        ]);
    }
    machine.ok(&["systemctl", "start", run_as]);
    (machine, config_path)
}

impl Ingest {
    /// Boots a machine with the shipped mediamtx.service, installs MediaMTX `version` as
    /// /usr/local/bin/mediamtx, the adapted mediamtx.yml and a settings file for the hooks that
    /// points them at `control_plane_url`, then starts MediaMTX and waits for its listeners.
    pub fn start(label: &str, version: &str, names: HookNames, control_plane_url: &str) -> Ingest {
        Self::start_with(label, version, names, control_plane_url, Options::default())
    }

    /// Like `start`, with more units, drop-ins or a persistent state directory in `options`.
    pub fn start_with(
        label: &str,
        version: &str,
        names: HookNames,
        control_plane_url: &str,
        options: Options,
    ) -> Ingest {
        Self::start_as(label, version, names, control_plane_url, options, UNIT)
    }

    /// Like `start_with`, MediaMTX run as `unit`: a copy of the shipped mediamtx.service.
    pub fn start_as(
        label: &str,
        version: &str,
        names: HookNames,
        control_plane_url: &str,
        options: Options,
        unit: &str,
    ) -> Ingest {
        Self::start_full(
            label,
            version,
            names,
            control_plane_url,
            options,
            None,
            unit,
        )
    }

    /// Like `start`, with RTMPS offered as mediamtx.yml says: `certificate` (certificate, key)
    /// installed at the paths it names and `rtmpEncryption: "optional"`.
    pub fn start_rtmps(
        label: &str,
        control_plane_url: &str,
        certificate: &(PathBuf, PathBuf),
    ) -> Ingest {
        Self::start_full(
            label,
            VERSION,
            HookNames::Shipped,
            control_plane_url,
            Options::default(),
            Some(certificate.clone()),
            UNIT,
        )
    }

    fn start_full(
        label: &str,
        version: &str,
        names: HookNames,
        control_plane_url: &str,
        options: Options,
        tls: Option<(PathBuf, PathBuf)>,
        unit: &str,
    ) -> Ingest {
        let ports = Ports::free();
        let (rtmp_port, api_port) = (ports.rtmp, ports.api);
        let mut config = adapt(&shipped_config(), ports);
        if names == HookNames::Old {
            config = with_old_hook_names(&config);
        }
        if tls.is_some() {
            config = with_rtmps(&config);
        }
        let settings = format!(
            "CONTROL_PLANE_URL={control_plane_url}\n\
             NEUSTREAM_INGEST_URL=rtmp://127.0.0.1:{rtmp_port}\n\
             NEUSTREAM_MEDIAMTX_API_URL=http://127.0.0.1:{api_port}\n\
             NEUSTREAM_RECONNECT_GRACE=0\n"
        );
        let (machine, config_path) = install(
            label,
            version,
            &config,
            &settings,
            &options,
            tls.as_ref(),
            unit,
        );
        let ingest = Ingest {
            machine,
            unit: unit.to_string(),
            version: version.to_string(),
            rtmp_port,
            api_port,
            srt_port: ports.srt,
            rtmps_port: tls.is_some().then_some(ports.rtmps),
            config,
            config_path,
            settings,
            options,
            tls,
        };
        ingest.wait_listening();
        ingest
    }

    /// The host loses power and boots again: a fresh machine (new /run, new overlay) over the
    /// same persistent state directory, MediaMTX installed as before and started as at boot.
    pub fn power_cycle(&mut self, label: &str) {
        self.machine.power_off();
        self.boot_again(label);
    }

    /// The host is rebooted: shut down cleanly (systemd stops every unit), then booted as in
    /// [`Self::power_cycle`].
    pub fn reboot(&mut self, label: &str) {
        self.machine.shutdown();
        self.boot_again(label);
    }

    fn boot_again(&mut self, label: &str) {
        let (machine, config_path) = install(
            label,
            &self.version,
            &self.config,
            &self.settings,
            &self.options,
            self.tls.as_ref(),
            &self.unit,
        );
        self.machine = machine;
        self.config_path = config_path;
        self.wait_listening();
    }

    fn wait_listening(&self) {
        let (rtmp_port, version) = (self.rtmp_port, &self.version);
        let rtmps_up = || {
            self.rtmps_port
                .is_none_or(|port| TcpStream::connect(("127.0.0.1", port)).is_ok())
        };
        let up = super::wait_for(Duration::from_secs(20), Duration::from_millis(50), || {
            (TcpStream::connect(("127.0.0.1", rtmp_port)).is_ok()
                && rtmps_up()
                && self.api("/v3/paths/list").is_some())
            .then_some(())
        });
        assert!(
            up.is_some(),
            "MediaMTX {version} did not listen on 127.0.0.1:{rtmp_port} (RTMP) and \
             127.0.0.1:{} (API):\n{}",
            self.api_port,
            self.log()
        );
    }

    /// Where a publisher of `key` publishes.
    pub fn publish_url(&self, key: &str) -> String {
        format!("rtmp://127.0.0.1:{}/live/{key}", self.rtmp_port)
    }

    /// Where an SRT publisher of `key` publishes (OBS's SRT output, IRL encoders).
    pub fn srt_url(&self, key: &str) -> String {
        format!(
            "srt://127.0.0.1:{}?streamid=publish:live/{key}",
            self.srt_port
        )
    }

    /// Where an RTMPS publisher of `key` publishes; panics unless RTMPS is on.
    pub fn rtmps_url(&self, key: &str) -> String {
        let port = self.rtmps_port.expect("RTMPS is off in this MediaMTX");
        format!("rtmps://127.0.0.1:{port}/live/{key}")
    }

    /// GET on MediaMTX's Control API: the JSON answer, if 200.
    pub fn api(&self, path: &str) -> Option<serde_json::Value> {
        let mut conn =
            TcpStream::connect_timeout(&([127, 0, 0, 1], self.api_port).into(), ms(1000)).ok()?;
        conn.set_read_timeout(Some(ms(3000))).ok()?;
        write!(conn, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
        let mut text = String::new();
        conn.read_to_string(&mut text).ok()?;
        let (head, body) = text.split_once("\r\n\r\n")?;
        if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
            return None;
        }
        serde_json::from_str(body).ok()
    }

    /// MediaMTX's RTMP connections: (id, path, state).
    pub fn rtmp_conns(&self) -> Option<Vec<(String, String, String)>> {
        self.conns("rtmpconns")
    }

    /// MediaMTX's connections in an API collection (`rtmpconns`, `rtmpsconns`, `srtconns`):
    /// (id, path, state).
    pub fn conns(&self, collection: &str) -> Option<Vec<(String, String, String)>> {
        let list = self.api(&format!("/v3/{collection}/list"))?;
        let field = |c: &serde_json::Value, k: &str| c[k].as_str().unwrap_or("").to_string();
        Some(
            list["items"]
                .as_array()?
                .iter()
                .map(|c| (field(c, "id"), field(c, "path"), field(c, "state")))
                .collect(),
        )
    }

    /// Ids of the RTMP connections publishing to live/<key>.
    pub fn publishers(&self, key: &str) -> Vec<String> {
        self.publishers_in("rtmpconns", key)
    }

    /// Ids of the connections of `collection` (`rtmpconns`, `rtmpsconns`, `srtconns`)
    /// publishing to live/<key>.
    pub fn publishers_in(&self, collection: &str, key: &str) -> Vec<String> {
        let path = format!("live/{key}");
        self.conns(collection)
            .unwrap_or_default()
            .into_iter()
            .filter(|(_, p, s)| *p == path && s == "publish")
            .map(|(id, _, _)| id)
            .collect()
    }

    /// Every line of MediaMTX and of its hooks. The hooks' are taken by their identifier too:
    /// journald attributes a line to its sender's unit by reading the sender's cgroup when it
    /// processes the line, which fails when the hook has already exited (seen on this
    /// cgroup-v1 hybrid host for the last lines of a hook that exits at once).
    pub fn log(&self) -> String {
        self.machine.journal(&[
            "-o",
            "short-monotonic",
            &format!("_SYSTEMD_UNIT={}", self.unit),
            "+",
            &format!("UNIT={}", self.unit),
            "+",
            "SYSLOG_IDENTIFIER=neustream",
        ])
    }

    /// MediaMTX's own lines (its stdout), without the hooks'.
    pub fn own_log(&self) -> String {
        self.machine
            .journal(&["-u", &self.unit, "-t", "mediamtx", "-o", "cat"])
    }

    /// MediaMTX's warnings: its lines at level WAR, and any that says "deprecated".
    pub fn warnings(&self) -> Vec<String> {
        self.own_log()
            .lines()
            .filter(|l| l.contains(" WAR ") || l.starts_with("WAR ") || l.contains("deprecated"))
            .map(str::to_string)
            .collect()
    }

    /// Command lines of the hooks running now (`neustream ready` / `neustream unpublish`).
    pub fn running_hooks(&self) -> Vec<String> {
        self.machine
            .processes("neustream")
            .into_iter()
            .filter_map(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).ok())
            .map(|raw| String::from_utf8_lossy(&raw).replace('\0', " "))
            .filter(|cmd| !cmd.contains(" relay "))
            .collect()
    }

    /// Waits until no hook runs any more; panics after `timeout`.
    pub fn wait_hooks_done(&self, timeout: Duration) {
        let done = super::wait_for(timeout, ms(50), || {
            self.running_hooks().is_empty().then_some(())
        });
        assert!(
            done.is_some(),
            "hooks still running after {timeout:?}: {:?}\n{}",
            self.running_hooks(),
            self.log()
        );
    }

    /// The per-stream env file of `key`, if there is one.
    pub fn env_file(&self, key: &str) -> Option<String> {
        let out = self
            .machine
            .run(&["cat", &format!("/run/neustream/streams/{key}.env")]);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// A variable of the env file of `key`.
    pub fn env_var(&self, key: &str, var: &str) -> Option<String> {
        let text = self.env_file(key)?;
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{var}=")))
            .map(|v| v.trim_matches(|c| c == '"' || c == '\'').to_string())
    }

    /// Relay units (neustream-relay@*.service) that are active now.
    pub fn active_relays(&self) -> Vec<String> {
        self.machine
            .ok(&[
                "systemctl",
                "list-units",
                "--plain",
                "--no-legend",
                "--state=active",
                "neustream-relay@*",
            ])
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .map(str::to_string)
            .collect()
    }
}

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A publisher of the synthetic clip at real time (ffmpeg, as OBS would publish), that can also
/// drop its connection or stall like OBS on a bad network. Killed on drop.
pub struct Feed {
    child: Child,
    pub log: PathBuf,
}

impl Feed {
    pub fn start(url: &str, log: &Path) -> Feed {
        let child = Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-re"])
            .args(["-stream_loop", "-1", "-i"])
            .arg(super::media::clip())
            .args(["-c", "copy", "-f", "flv", url])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .expect("start ffmpeg");
        Feed {
            child,
            log: log.into(),
        }
    }

    /// Its exit status, once it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    fn signal(&self, signal: i32) {
        unsafe { libc::kill(self.child.id() as i32, signal) };
    }

    /// The network hangs: the process stops, its TCP connection stays open and silent.
    pub fn stall(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// The encoder dies: the kernel closes its connection.
    pub fn kill(&mut self) {
        self.signal(libc::SIGKILL);
        let _ = self.child.wait();
    }

    /// The user stops streaming: ffmpeg ends the stream and disconnects.
    pub fn stop(&mut self) {
        self.signal(libc::SIGTERM);
        let done = super::wait_for(Duration::from_secs(5), ms(20), || self.exited());
        if done.is_none() {
            self.kill();
        }
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        if self.exited().is_none() {
            self.kill();
        }
    }
}
