//! systemd over the D-Bus system bus: the only place that talks to it. A small facade over
//! zbus_systemd's generated Manager proxy: start (restart) and stop a unit and wait for the
//! job's result, reset a failed unit.

use std::time::Duration;

use futures_util::StreamExt;
use zbus_systemd::systemd1::{ManagerProxy, UnitProxy};

use crate::stream_key::StreamKey;

/// Longest unit name systemd accepts (UNIT_NAME_MAX).
const UNIT_NAME_MAX: usize = 255;

#[derive(Debug, thiserror::Error)]
pub enum SystemdError {
    #[error("failed to connect to the D-Bus system bus: {0}")]
    Connect(String),
    #[error(
        "unit name for stream key {key} would be {len} characters; systemd allows {UNIT_NAME_MAX}"
    )]
    NameTooLong { key: String, len: usize },
    #[error(
        "not allowed to {verb} {unit}: {detail} (is the Neustream polkit rule installed for the \
         user running this hook?)"
    )]
    Denied {
        verb: &'static str,
        unit: String,
        detail: String,
    },
    #[error("failed to {verb} {unit}: {detail}")]
    Call {
        verb: &'static str,
        unit: String,
        detail: String,
    },
    #[error("failed to {verb} {unit}: job result '{result}' (see: journalctl -u '{unit}')")]
    JobFailed {
        verb: &'static str,
        unit: String,
        result: String,
    },
    #[error("failed to {verb} {unit}: no job result within {timeout:?}")]
    Timeout {
        verb: &'static str,
        unit: String,
        timeout: Duration,
    },
}

/// The relay unit of a stream: `neustream-relay@<escaped key>.service`.
pub fn relay_unit(key: &StreamKey) -> Result<String, SystemdError> {
    let unit = format!("neustream-relay@{}.service", escape(key.as_str()));
    if unit.len() > UNIT_NAME_MAX {
        return Err(SystemdError::NameTooLong {
            key: key.to_string(),
            len: unit.len(),
        });
    }
    Ok(unit)
}

/// `systemd-escape STRING`: `/` becomes `-`, a leading `.` and every byte outside
/// `[A-Za-z0-9:_.]` become `\xHH`.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for (i, b) in text.bytes().enumerate() {
        match b {
            b'/' => out.push('-'),
            b'.' if i == 0 => out.push_str("\\x2e"),
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b':' | b'_' | b'.' => out.push(b as char),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out
}

/// `systemd-escape --unescape STRING`: the inverse of [`escape`].
pub fn unescape(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 2..i + 4)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], bytes.get(i + 1), hex) {
            (b'\\', Some(b'x'), Some(byte)) => {
                out.push(byte);
                i += 4;
            }
            (b'-', ..) => {
                out.push(b'/');
                i += 1;
            }
            (b, ..) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub struct Systemd {
    manager: ManagerProxy<'static>,
}

impl Systemd {
    /// Connects to the system bus (`DBUS_SYSTEM_BUS_ADDRESS`, or systemd's default socket).
    pub async fn connect(timeout: Duration) -> Result<Self, SystemdError> {
        let connect = async {
            let conn = zbus::Connection::system().await?;
            let manager = ManagerProxy::new(&conn).await?;
            // Without a subscriber systemd sends no JobRemoved signals. Once per connection:
            // a second Subscribe fails ("Client is already subscribed").
            manager.subscribe().await?;
            Ok::<_, zbus::Error>(manager)
        };
        match tokio::time::timeout(timeout, connect).await {
            Ok(Ok(manager)) => Ok(Systemd { manager }),
            Ok(Err(e)) => Err(SystemdError::Connect(e.to_string())),
            Err(_) => Err(SystemdError::Connect(format!(
                "no answer within {timeout:?}"
            ))),
        }
    }

    /// `ResetFailedUnit`, so that a unit that hit its start limit can start again. A unit that
    /// is not loaded or not failed is fine.
    pub async fn reset_failed(&self, unit: &str) -> Result<(), SystemdError> {
        match self.manager.reset_failed_unit(unit.to_owned()).await {
            Ok(()) => Ok(()),
            Err(e) if is_no_such_unit(&e) => Ok(()),
            Err(e) => Err(call_error("reset", unit, e)),
        }
    }

    /// `RestartUnit(unit, "replace")` (starts it if it is not running) and waits for the job.
    pub async fn restart_and_wait(
        &self,
        unit: &str,
        timeout: Duration,
    ) -> Result<(), SystemdError> {
        self.job_and_wait("start", unit, timeout).await
    }

    /// `ReloadUnit(unit, "replace")` (the relay's `ExecReload=`: a new stream description for
    /// the running relay) and waits for the job.
    pub async fn reload_and_wait(&self, unit: &str, timeout: Duration) -> Result<(), SystemdError> {
        self.job_and_wait("reload", unit, timeout).await
    }

    /// The unit's `ActiveState` (`active`, `reloading`, `activating`, `inactive`, `failed`,
    /// ...); a unit that is not loaded is `inactive`.
    pub async fn active_state(&self, unit: &str) -> Result<String, SystemdError> {
        let path = match self.manager.get_unit(unit.into()).await {
            Ok(path) => path,
            Err(e) if is_no_such_unit(&e) => return Ok("inactive".into()),
            Err(e) => return Err(call_error("query", unit, e)),
        };
        let proxy = UnitProxy::builder(self.manager.inner().connection())
            .path(path)
            .build()
            .await
            .map_err(|e| call_error("query", unit, e))?;
        proxy
            .active_state()
            .await
            .map_err(|e| call_error("query", unit, e))
    }

    /// The unit's ActiveState if systemd has it loaded (`ListUnitsByPatterns`, which needs no
    /// authorization); `None` for a unit that is not loaded.
    pub async fn loaded_state(&self, unit: &str) -> Result<Option<String>, SystemdError> {
        let units = self
            .manager
            .list_units_by_patterns(vec![], vec![unit.into()])
            .await
            .map_err(|e| call_error("query", unit, e))?;
        Ok(units
            .into_iter()
            .find(|u| u.0 == unit && u.2 == "loaded")
            .map(|u| u.3))
    }

    /// Relay units systemd has loaded now (`neustream-relay@*.service`, any state), with their
    /// ActiveState: `ListUnitsByPatterns`, which needs no authorization.
    pub async fn relay_units(&self) -> Result<Vec<(String, String)>, SystemdError> {
        let pattern = "neustream-relay@*.service";
        let units = self
            .manager
            .list_units_by_patterns(vec![], vec![pattern.into()])
            .await
            .map_err(|e| call_error("list", pattern, e))?;
        Ok(units.into_iter().map(|u| (u.0, u.3)).collect())
    }

    /// `StopUnit(unit, "replace")` and waits for the job. No such unit is fine.
    pub async fn stop_and_wait(&self, unit: &str, timeout: Duration) -> Result<(), SystemdError> {
        self.job_and_wait("stop", unit, timeout).await
    }

    async fn job_and_wait(
        &self,
        verb: &'static str,
        unit: &str,
        timeout: Duration,
    ) -> Result<(), SystemdError> {
        let work = async {
            // Listen before issuing the job, so that its JobRemoved cannot be missed.
            let mut removed = self
                .manager
                .receive_job_removed()
                .await
                .map_err(|e| call_error(verb, unit, e))?;
            let job = match verb {
                "stop" => self.manager.stop_unit(unit.into(), "replace".into()).await,
                "reload" => {
                    self.manager
                        .reload_unit(unit.into(), "replace".into())
                        .await
                }
                _ => {
                    self.manager
                        .restart_unit(unit.into(), "replace".into())
                        .await
                }
            };
            let job = match job {
                Ok(job) => job,
                Err(e) if verb == "stop" && is_no_such_unit(&e) => return Ok(()),
                Err(e) => return Err(call_error(verb, unit, e)),
            };
            while let Some(signal) = removed.next().await {
                let Ok(args) = signal.args() else { continue };
                if *args.job() != job {
                    continue;
                }
                return match args.result().as_str() {
                    "done" => Ok(()),
                    result => Err(SystemdError::JobFailed {
                        verb,
                        unit: unit.into(),
                        result: result.into(),
                    }),
                };
            }
            Err(SystemdError::Call {
                verb,
                unit: unit.into(),
                detail: "the bus connection closed before the job finished".into(),
            })
        };
        tokio::time::timeout(timeout, work)
            .await
            .unwrap_or_else(|_| {
                Err(SystemdError::Timeout {
                    verb,
                    unit: unit.into(),
                    timeout,
                })
            })
    }
}

/// One loaded unit as systemd sees it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitRun {
    pub unit: String,
    /// `ActiveState`: `active`, `reloading`, `activating`, `deactivating`, `inactive`, `failed`.
    pub active_state: String,
    /// `InvocationID` in hex: a new one at every start (an automatic restart too); empty
    /// before the first.
    pub invocation: String,
}

impl Systemd {
    /// The unit whose cgroup holds process `pid` (`GetUnitByPID`: systemd reads the process's
    /// cgroup, in its own namespaces), or None when it belongs to no loaded unit (a process
    /// of another PID or cgroup namespace, a login session's scope is a unit too). Needs no
    /// authorization.
    pub async fn unit_of_pid(&self, pid: u32) -> Result<Option<String>, SystemdError> {
        let label = format!("the unit of pid {pid}");
        let path = match self.manager.get_unit_by_pid(pid).await {
            Ok(path) => path,
            Err(e) if is_error(&e, "NoUnitForPID") || is_no_such_unit(&e) => return Ok(None),
            Err(e) => return Err(call_error("query", &label, e)),
        };
        let proxy = self.unit_proxy(path, &label).await?;
        let id = proxy
            .id()
            .await
            .map_err(|e| call_error("query", &label, e))?;
        Ok(Some(id))
    }

    /// `unit`'s ActiveState and InvocationID now (`GetUnit`, which needs no authorization and
    /// loads nothing); None when systemd has no such unit loaded (it does not run).
    pub async fn unit_run(&self, unit: &str) -> Result<Option<UnitRun>, SystemdError> {
        let path = match self.manager.get_unit(unit.into()).await {
            Ok(path) => path,
            Err(e) if is_no_such_unit(&e) => return Ok(None),
            Err(e) => return Err(call_error("query", unit, e)),
        };
        let proxy = self.unit_proxy(path, unit).await?;
        let (state, invocation) = tokio::join!(proxy.active_state(), proxy.invocation_id());
        Ok(Some(UnitRun {
            unit: unit.into(),
            active_state: state.map_err(|e| call_error("query", unit, e))?,
            invocation: hex(&invocation.map_err(|e| call_error("query", unit, e))?),
        }))
    }

    async fn unit_proxy(
        &self,
        path: zbus::OwnedObjectPath,
        label: &str,
    ) -> Result<UnitProxy<'static>, SystemdError> {
        UnitProxy::builder(self.manager.inner().connection())
            .path(path)
            .cache_properties(zbus::proxy::CacheProperties::No)
            .build()
            .await
            .map_err(|e| call_error("query", label, e))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What systemd itself knows of one relay unit: its state and its own resource accounting.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnitUsage {
    pub unit: String,
    pub active_state: String,
    pub sub_state: String,
    /// `CPUUsageNSec`: CPU time of the whole cgroup (relay and every ffmpeg), when accounted.
    pub cpu_nsec: Option<u64>,
    /// `MemoryCurrent`: memory of the cgroup, when accounted.
    pub memory_bytes: Option<u64>,
    /// `NRestarts`: automatic restarts since the unit was last started by hand or by the hook.
    pub restarts: Option<u32>,
}

impl Systemd {
    /// Every loaded `neustream-relay@*.service`, with its accounting. Reading unit properties
    /// needs no privilege: any local user may call this.
    pub async fn relay_usage(&self, timeout: Duration) -> Result<Vec<UnitUsage>, SystemdError> {
        const PATTERN: &str = "neustream-relay@*.service";
        let work = async {
            let units = self
                .manager
                .list_units_by_patterns(Vec::new(), vec![PATTERN.into()])
                .await
                .map_err(|e| call_error("list", PATTERN, e))?;
            let conn = self.manager.inner().connection();
            let reads = units.into_iter().map(|u| async move {
                let (unit, active_state, sub_state, path) = (u.0, u.3, u.4, u.6);
                let service = zbus_systemd::systemd1::ServiceProxy::builder(conn)
                    .path(path)
                    .cache_properties(zbus::proxy::CacheProperties::No)
                    .build()
                    .await;
                let (cpu, memory, restarts) = match service {
                    Ok(p) => {
                        let (c, m, r) =
                            tokio::join!(p.cpu_usage_n_sec(), p.memory_current(), p.n_restarts());
                        (c.ok(), m.ok(), r.ok())
                    }
                    Err(_) => (None, None, None),
                };
                // systemd reports u64::MAX for "not accounted".
                let known = |v: Option<u64>| v.filter(|&v| v != u64::MAX);
                UnitUsage {
                    unit,
                    active_state,
                    sub_state,
                    cpu_nsec: known(cpu),
                    memory_bytes: known(memory),
                    restarts,
                }
            });
            Ok(futures_util::future::join_all(reads).await)
        };
        tokio::time::timeout(timeout, work)
            .await
            .unwrap_or_else(|_| {
                Err(SystemdError::Timeout {
                    verb: "list",
                    unit: PATTERN.into(),
                    timeout,
                })
            })
    }
}

fn is_no_such_unit(err: &zbus::Error) -> bool {
    is_error(err, "NoSuchUnit")
}

/// Whether `err` is systemd's error `org.freedesktop.systemd1.<name>`.
fn is_error(err: &zbus::Error, name: &str) -> bool {
    matches!(err, zbus::Error::MethodError(error, _, _)
        if error.as_str().strip_prefix("org.freedesktop.systemd1.") == Some(name))
}

fn call_error(verb: &'static str, unit: &str, err: zbus::Error) -> SystemdError {
    if let zbus::Error::MethodError(name, message, _) = &err {
        let detail = message.clone().unwrap_or_else(|| name.to_string());
        if matches!(
            name.as_str(),
            "org.freedesktop.DBus.Error.AccessDenied"
                | "org.freedesktop.DBus.Error.InteractiveAuthorizationRequired"
        ) {
            return SystemdError::Denied {
                verb,
                unit: unit.into(),
                detail,
            };
        }
        return SystemdError::Call {
            verb,
            unit: unit.into(),
            detail,
        };
    }
    SystemdError::Call {
        verb,
        unit: unit.into(),
        detail: err.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_like_systemd() {
        assert_eq!(escape("abc123"), "abc123");
        assert_eq!(escape("a-b"), "a\\x2db");
        assert_eq!(escape("a_b"), "a_b");
        assert_eq!(escape(".x"), "\\x2ex");
        assert_eq!(escape("a/b c"), "a-b\\x20c");
    }

    /// Compares with the real `systemd-escape` on many keys, when it is installed.
    #[test]
    fn matches_systemd_escape() {
        let keys: Vec<String> = (0..200)
            .map(|i| {
                let alphabet = b"abcXYZ019_-";
                (0..(1 + i % 17))
                    .map(|j| alphabet[(i * 7 + j * 3) % alphabet.len()] as char)
                    .collect()
            })
            .chain(["-", "--x", "_", "-leading", "trailing-", "0123456789abcdef"].map(String::from))
            .collect();
        let Ok(out) = std::process::Command::new("systemd-escape")
            .arg("--")
            .args(&keys)
            .output()
        else {
            panic!("systemd-escape is not installed (package systemd)");
        };
        let expected: Vec<&str> = std::str::from_utf8(&out.stdout)
            .unwrap()
            .split_whitespace()
            .collect();
        assert_eq!(expected.len(), keys.len());
        for (key, want) in keys.iter().zip(expected) {
            assert_eq!(escape(key), want, "key {key}");
        }
    }

    #[test]
    fn unescapes_what_it_escapes() {
        for key in ["abc123", "a-b", "a_b", ".x", "--x", "-", "a/b c", "é"] {
            assert_eq!(unescape(&escape(key)), key, "{key}");
        }
        assert_eq!(unescape("ab\\x2d1"), "ab-1");
        assert_eq!(unescape("a\\xZZ"), "a\\xZZ");
    }

    #[test]
    fn relay_unit_names() {
        let key = StreamKey::parse("ab-1").unwrap();
        assert_eq!(
            relay_unit(&key).unwrap(),
            "neustream-relay@ab\\x2d1.service"
        );
        let long = StreamKey::parse(&"-".repeat(100)).unwrap();
        assert!(matches!(
            relay_unit(&long),
            Err(SystemdError::NameTooLong { .. })
        ));
    }
}
