//! One look at every relay: its state file joined with its unit's state and accounting.

use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use super::relays::{self, RelayState};
use crate::systemd::{Systemd, UnitUsage};

/// How a whole stream stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// Every destination live.
    Live,
    /// Running, but not every destination is live (starting, retrying, waiting).
    Degraded,
    /// The unit failed or is not running: nothing is relayed.
    Down,
    /// The relay's state cannot be read or is not updated: cannot tell.
    Unknown,
}

#[derive(Debug, Serialize)]
pub struct Relay {
    /// The unit's instance, escaped as in its name.
    pub instance: String,
    pub unit: String,
    /// The stream's ingest key (as the unit names it; never a destination's key).
    pub key: String,
    /// [`super::stream_id`] of the key.
    pub id: String,
    pub health: Health,
    /// Why the health is unknown or down, for the operator.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// The unit as systemd sees it; none when systemd could not be asked.
    pub systemd: Option<Usage>,
    /// The relay's own state; none when its file cannot be read.
    pub state: Option<RelayState>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Usage {
    pub active_state: String,
    pub sub_state: String,
    pub cpu_seconds: Option<f64>,
    pub memory_bytes: Option<u64>,
    pub restarts: Option<u32>,
}

impl From<&UnitUsage> for Usage {
    fn from(u: &UnitUsage) -> Self {
        Usage {
            active_state: u.active_state.clone(),
            sub_state: u.sub_state.clone(),
            cpu_seconds: u.cpu_nsec.map(|n| n as f64 / 1e9),
            memory_bytes: u.memory_bytes,
            restarts: u.restarts,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Report {
    /// Unix time the report was made.
    pub now: u64,
    pub relays: Vec<Relay>,
    /// Why systemd's view is missing (no bus, timeout).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub systemd_error: Option<String>,
    /// Why the state directory could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_error: Option<String>,
}

pub struct Sources<'a> {
    pub state_dir: &'a Path,
    /// Ask systemd for the units' state and accounting (off: state files only).
    pub systemd: bool,
    pub timeout: Duration,
}

/// Reads the state files and asks systemd, then joins the two.
pub async fn gather(src: &Sources<'_>) -> Report {
    let files = relays::read_dir(src.state_dir);
    let units = if src.systemd {
        match Systemd::connect(src.timeout).await {
            Ok(s) => s.relay_usage(src.timeout).await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        }
    } else {
        Ok(Vec::new())
    };
    let (files, state_error) = match files {
        Ok(f) => (f, None),
        Err(e) => (Vec::new(), Some(e.to_string())),
    };
    let (units, systemd_error) = match units {
        Ok(u) => (Some(u), None),
        Err(e) => (None, Some(e)),
    };
    join(
        crate::relay::state::unix_now(),
        files,
        units,
        state_error,
        systemd_error,
    )
}

/// The join itself (pure, for tests): one [`Relay`] per state directory, plus one per relay
/// unit that systemd knows and that has none (starting, or failed).
pub fn join(
    now: u64,
    files: Vec<relays::Entry>,
    units: Option<Vec<UnitUsage>>,
    state_error: Option<String>,
    systemd_error: Option<String>,
) -> Report {
    let instance_of = |unit: &str| {
        unit.strip_prefix("neustream-relay@")
            .and_then(|u| u.strip_suffix(".service"))
            .map(str::to_owned)
    };
    let mut units: Vec<(String, UnitUsage)> = units
        .iter()
        .flatten()
        .filter_map(|u| instance_of(&u.unit).map(|i| (i, u.clone())))
        .collect();
    let asked = systemd_error.is_none();
    let mut out = Vec::new();
    for entry in files {
        let unit = units
            .iter()
            .position(|(i, _)| *i == entry.instance)
            .map(|p| units.remove(p).1);
        let unit_name = entry.unit();
        let (state, read_problem) = match entry.state {
            Ok(s) => (Some(s), None),
            Err(e) => (None, Some(e.to_string())),
        };
        let key = state
            .as_ref()
            .map(|s| s.stream.clone())
            .or_else(|| super::unescape(&entry.instance))
            .unwrap_or_else(|| entry.instance.clone());
        let (health, problem) = judge(now, state.as_ref(), read_problem, unit.as_ref(), asked);
        out.push(Relay {
            id: super::stream_id(&key),
            key,
            instance: entry.instance,
            unit: unit_name,
            health,
            problem,
            systemd: unit.as_ref().map(Usage::from),
            state,
        });
    }
    // Units without a state directory: running ones have not created it yet; failed ones
    // lost it when they stopped. Inactive ones are streams that ended: not listed.
    for (instance, unit) in units {
        if unit.active_state == "inactive" {
            continue;
        }
        let key = super::unescape(&instance).unwrap_or_else(|| instance.clone());
        let (health, problem) = match unit.active_state.as_str() {
            "failed" => (
                Health::Down,
                Some(format!(
                    "{} failed; see journalctl -u '{}'",
                    unit.unit, unit.unit
                )),
            ),
            "activating" | "active" | "reloading" => (
                Health::Degraded,
                Some("starting: no state file yet".to_string()),
            ),
            other => (Health::Down, Some(format!("{} is {other}", unit.unit))),
        };
        out.push(Relay {
            id: super::stream_id(&key),
            key,
            unit: unit.unit.clone(),
            instance,
            health,
            problem,
            systemd: Some(Usage::from(&unit)),
            state: None,
        });
    }
    out.sort_by(|a, b| a.instance.cmp(&b.instance));
    Report {
        now,
        relays: out,
        systemd_error,
        state_error,
    }
}

fn judge(
    now: u64,
    state: Option<&RelayState>,
    read_problem: Option<String>,
    unit: Option<&UnitUsage>,
    asked_systemd: bool,
) -> (Health, Option<String>) {
    if let Some(u) = unit {
        if u.active_state == "failed" {
            return (
                Health::Down,
                Some(format!("{} failed; see journalctl -u '{}'", u.unit, u.unit)),
            );
        }
    }
    let Some(state) = state else {
        return (Health::Unknown, read_problem);
    };
    if state.is_stale(now) {
        return (
            Health::Unknown,
            Some(format!(
                "state file not updated for {} s (the relay writes it every 2 s)",
                state.age(now)
            )),
        );
    }
    if asked_systemd && unit.is_none() {
        return (
            Health::Unknown,
            Some("state file present but systemd has no such unit".into()),
        );
    }
    if state.source.state == "ended" {
        return (Health::Down, Some("the source stream ended".into()));
    }
    if state.source.state == "unreadable" {
        return (
            Health::Degraded,
            Some(format!(
                "nothing is relayed: {}",
                state
                    .source
                    .problem
                    .as_deref()
                    .unwrap_or("the ingest will not give the publisher's stream")
            )),
        );
    }
    if state.source.state == "grace" {
        let left = state
            .source
            .grace_until
            .map_or(0, |u| u.saturating_sub(now));
        return (
            Health::Degraded,
            Some(format!(
                "the publisher is gone; the relay waits {left} s more for it (destinations get \
                 a frozen picture)"
            )),
        );
    }
    if let Some(d) = state
        .destinations
        .iter()
        .find(|d| d.state == "incompatible")
    {
        return (
            Health::Degraded,
            Some(format!(
                "destination {} ({}) is not sent the stream: {}",
                d.index,
                d.platform,
                d.reason.as_deref().unwrap_or("its codecs do not fit")
            )),
        );
    }
    if !state.destinations.is_empty() && state.destinations.iter().all(|d| d.state == "live") {
        (Health::Live, None)
    } else {
        (Health::Degraded, None)
    }
}

impl Report {
    /// Exit status for monitoring checks: 0 all live, 1 any not, 2 cannot tell.
    pub fn exit_code(&self) -> u8 {
        if self.state_error.is_some() || self.relays.iter().any(|r| r.health == Health::Unknown) {
            2
        } else if self.relays.iter().all(|r| r.health == Health::Live) {
            0
        } else {
            1
        }
    }

    /// Keeps the relays of one stream, named by key, unit instance or id.
    pub fn only(&mut self, stream: &str) {
        self.relays
            .retain(|r| r.key == stream || r.instance == stream || r.id == stream);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::relays::{parse, Entry};

    fn state(now: u64, dests: &[&str]) -> RelayState {
        let dests: Vec<(&str, &str, u64)> = dests.iter().map(|d| ("custom", *d, 0)).collect();
        let text = crate::operator::relays::relay_wrote("k1", "c", &dests);
        let mut s = parse(Path::new("x"), &text).unwrap();
        s.updated = now;
        s
    }

    fn unit(instance: &str, active: &str) -> UnitUsage {
        UnitUsage {
            unit: format!("neustream-relay@{instance}.service"),
            active_state: active.into(),
            sub_state: "running".into(),
            cpu_nsec: Some(1_500_000_000),
            memory_bytes: Some(10),
            restarts: Some(0),
        }
    }

    fn entry(instance: &str, s: RelayState) -> Entry {
        Entry {
            instance: instance.into(),
            state: Ok(s),
        }
    }

    #[test]
    fn all_live_is_0_one_not_is_1_stale_is_2() {
        let now = 1000;
        let r = join(
            now,
            vec![entry("k1", state(now, &["live", "live"]))],
            Some(vec![unit("k1", "active")]),
            None,
            None,
        );
        assert_eq!(r.relays[0].health, Health::Live);
        assert_eq!(r.relays[0].systemd.as_ref().unwrap().cpu_seconds, Some(1.5));
        assert_eq!(r.exit_code(), 0);

        let r = join(
            now,
            vec![entry("k1", state(now, &["live", "connecting"]))],
            Some(vec![unit("k1", "active")]),
            None,
            None,
        );
        assert_eq!(r.exit_code(), 1);

        let r = join(
            now,
            vec![entry("k1", state(now - 11, &["live"]))],
            Some(vec![unit("k1", "active")]),
            None,
            None,
        );
        assert_eq!(r.relays[0].health, Health::Unknown);
        assert_eq!(r.exit_code(), 2);
    }

    #[test]
    fn a_grace_is_not_live_and_says_how_long_it_lasts() {
        let now = 50;
        let mut s = state(now, &["live"]);
        s.source.state = "grace".into();
        s.source.grace_until = Some(now + 12);
        let r = join(now, vec![entry("k1", s)], None, None, Some("no bus".into()));
        assert_eq!(r.relays[0].health, Health::Degraded);
        assert!(r.relays[0]
            .problem
            .as_ref()
            .unwrap()
            .contains("waits 12 s more"));
        assert_eq!(r.exit_code(), 1);
    }

    #[test]
    fn an_unreadable_stream_is_degraded_with_the_streamers_fix() {
        let now = 50;
        let mut s = state(now, &["live"]);
        s.source.state = "unreadable".into();
        s.source.problem =
            Some("audio is MPEG-1/2 Audio ...: set the encoder's audio to AAC".into());
        let r = join(now, vec![entry("k1", s)], None, None, Some("no bus".into()));
        assert_eq!(r.relays[0].health, Health::Degraded);
        assert_eq!(
            r.relays[0].problem.as_deref(),
            Some("nothing is relayed: audio is MPEG-1/2 Audio ...: set the encoder's audio to AAC")
        );
        assert_eq!(r.exit_code(), 1);
    }

    #[test]
    fn failed_and_starting_units_are_listed_and_ended_ones_not() {
        let r = join(
            5,
            Vec::new(),
            Some(vec![
                unit("a", "failed"),
                unit("b", "activating"),
                unit("c", "inactive"),
            ]),
            None,
            None,
        );
        let got: Vec<(&str, Health)> = r
            .relays
            .iter()
            .map(|r| (r.key.as_str(), r.health))
            .collect();
        assert_eq!(got, [("a", Health::Down), ("b", Health::Degraded)]);
        assert_eq!(r.exit_code(), 1);
    }

    #[test]
    fn without_systemd_the_state_files_still_tell() {
        let r = join(
            9,
            vec![entry("k1", state(9, &["live"]))],
            None,
            None,
            Some("no bus".into()),
        );
        assert_eq!(r.relays[0].health, Health::Live);
        assert!(r.relays[0].systemd.is_none());
        assert_eq!(r.exit_code(), 0);
    }

    #[test]
    fn a_stream_is_found_by_key_instance_or_id() {
        let now = 7;
        let mk = || {
            join(
                now,
                vec![entry("k1", state(now, &["live"]))],
                None,
                None,
                None,
            )
        };
        for name in ["k1".to_string(), crate::operator::stream_id("k1")] {
            let mut r = mk();
            r.only(&name);
            assert_eq!(r.relays.len(), 1, "{name}");
        }
        let mut r = mk();
        r.only("nope");
        assert!(r.relays.is_empty());
    }
}
