//! `neustream status [KEY] [--json]`: every relay on this node, from what the relays publish
//! (their state files) and what systemd accounts to their units. Any local user may run it: it
//! reads no env file and shows no destination URL or key. Exit status for monitoring checks:
//! 0 every destination live, 1 any not, 2 cannot tell.

use std::fmt::Write;

use crate::cli::StatusArgs;
use crate::operator::relays::RelayState;
use crate::operator::report::{self, Health, Relay, Report};

/// A status that is not "all live": its exit code and the one line that says why.
#[derive(Debug, thiserror::Error)]
#[error("{summary}")]
pub struct Verdict {
    pub code: u8,
    pub summary: String,
}

pub fn run(args: StatusArgs) -> anyhow::Result<()> {
    let mut report = super::runtime()?.block_on(report::gather(&report::Sources {
        state_dir: &args.view.relays.relays_dir,
        systemd: true,
        timeout: args.view.systemd_timeout,
    }));
    if let Some(stream) = &args.stream {
        report.only(stream);
    }
    let text = if args.json {
        serde_json::to_string_pretty(&report)? + "\n"
    } else {
        render(&report)
    };
    print!("{text}");
    verdict(&report, args.stream.as_deref()).map_or(Ok(()), |v| Err(v.into()))
}

fn verdict(report: &Report, stream: Option<&str>) -> Option<Verdict> {
    if let Some(e) = &report.state_error {
        return Some(Verdict {
            code: 2,
            summary: format!("cannot tell: {e}"),
        });
    }
    if let (Some(stream), true) = (stream, report.relays.is_empty()) {
        return Some(Verdict {
            code: 1,
            summary: format!("no relay for stream {stream} on this node"),
        });
    }
    let count = |h| report.relays.iter().filter(|r| r.health == h).count();
    let total = report.relays.len();
    match report.exit_code() {
        0 => None,
        code => Some(Verdict {
            code,
            summary: format!(
                "{} of {total} stream{} not live ({} degraded, {} down, {} unknown)",
                total - count(Health::Live),
                if total == 1 { "" } else { "s" },
                count(Health::Degraded),
                count(Health::Down),
                count(Health::Unknown)
            ),
        }),
    }
}

fn render(report: &Report) -> String {
    let mut out = String::new();
    if report.relays.is_empty() {
        out.push_str("no relays on this node\n");
    }
    if let Some(e) = &report.systemd_error {
        let _ = writeln!(out, "(systemd not asked: {e}; CPU and memory unknown)");
    }
    for r in &report.relays {
        relay(&mut out, r, report.now);
    }
    out
}

fn relay(out: &mut String, r: &Relay, now: u64) {
    let health = match r.health {
        Health::Live => "live",
        Health::Degraded => "degraded",
        Health::Down => "down",
        Health::Unknown => "unknown",
    };
    let _ = write!(out, "{}  id {}  {}  {health}", r.key, r.id, r.unit);
    if let Some(s) = &r.state {
        let grace = match (s.source.state.as_str(), s.source.grace_until) {
            ("grace", Some(until)) => format!(" ({} s left)", until.saturating_sub(now)),
            _ => String::new(),
        };
        let _ = write!(
            out,
            "  source {}{grace} for {}  publisher {}",
            s.source.state,
            age(now, s.source.since),
            if s.source.publisher.is_empty() {
                "-"
            } else {
                &s.source.publisher
            }
        );
    }
    if let Some(u) = &r.systemd {
        let _ = write!(
            out,
            "  cpu {}  memory {}  restarts {}",
            u.cpu_seconds.map_or("-".into(), |c| format!("{c:.1} s")),
            u.memory_bytes
                .map_or("-".into(), |m| format!("{:.1} MB", m as f64 / 1e6)),
            u.restarts.map_or("-".into(), |n| n.to_string())
        );
    }
    out.push('\n');
    if let Some(p) = &r.problem {
        let _ = writeln!(out, "  ! {p}");
    }
    if let Some(s) = &r.state {
        let _ = writeln!(out, "  media {}", s.media.describe());
        destinations(out, s, now);
    }
}

fn destinations(out: &mut String, s: &RelayState, now: u64) {
    let header = [
        "#",
        "PLATFORM",
        "STATE",
        "SINCE",
        "BITRATE",
        "SENT",
        "ACKED",
        "RTT",
        "ATTEMPTS",
        "LAST ERROR",
    ];
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|h| h.to_string()).collect()];
    for d in &s.destinations {
        let state = match (d.state.as_str(), d.retry_at) {
            ("retrying", Some(at)) => format!("retrying in {} s", at.saturating_sub(now)),
            (other, _) => other.to_string(),
        };
        let last = match (&d.reason, &d.last_error) {
            (Some(reason), _) => reason.clone(),
            (None, Some(e)) => e.clone(),
            (None, None) => "-".into(),
        };
        rows.push(vec![
            d.index.to_string(),
            d.platform.clone(),
            state,
            age(now, d.since),
            format!("{:.2} Mb/s", d.bitrate as f64 / 1e6),
            size(d.bytes),
            d.tcp.map_or("-".into(), |t| size(t.bytes_acked)),
            d.tcp
                .and_then(|t| t.rtt_ms)
                .map_or("-".into(), |ms| format!("{ms:.1} ms")),
            d.attempts.to_string(),
            last,
        ]);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        let _ = writeln!(out, "  {}", line.join("  ").trim_end());
    }
}

fn age(now: u64, since: u64) -> String {
    let s = now.saturating_sub(since);
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s / 60 % 60),
    }
}

fn size(bytes: u64) -> String {
    match bytes {
        0..=9_999 => format!("{bytes} B"),
        10_000..=999_999 => format!("{:.1} kB", bytes as f64 / 1e3),
        1_000_000..=999_999_999 => format!("{:.2} MB", bytes as f64 / 1e6),
        _ => format!("{:.2} GB", bytes as f64 / 1e9),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::relays::{parse, Entry};
    use std::path::Path;

    fn report(live: bool) -> Report {
        let second = if live { "live" } else { "refused" };
        let text = crate::operator::relays::relay_wrote(
            "k1",
            "conn-9",
            &[("youtube", "live", 123_456_789), ("twitch", second, 0)],
        );
        let s = parse(Path::new("x"), &text).unwrap();
        let now = s.updated;
        report::join(
            now,
            vec![Entry {
                instance: "k1".into(),
                state: Ok(s),
            }],
            None,
            None,
            Some("no bus".into()),
        )
    }

    #[test]
    fn a_table_per_stream() {
        let text = render(&report(false));
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[1].starts_with("k1  id "), "{text}");
        assert!(lines[1].contains("degraded  source starting for 0s  publisher conn-9"));
        assert_eq!(lines[2], "  media -");
        assert_eq!(
            lines[3],
            "  #  PLATFORM  STATE            SINCE  BITRATE    SENT       ACKED  RTT  ATTEMPTS  \
             LAST ERROR"
        );
        assert!(lines[4].starts_with("  0  youtube   live             0s     0.00 Mb/s  123.46 MB"));
        assert!(lines[5].contains("retrying in 4 s") && lines[5].ends_with("refused"));
    }

    #[test]
    fn an_unreadable_source_shows_what_to_change() {
        let mut r = report(true);
        let s = r.relays[0].state.as_mut().unwrap();
        s.source.state = "unreadable".into();
        s.source.problem = Some("audio is MPEG-1/2 Audio: set the encoder's audio to AAC".into());
        let state = s.clone();
        let r = report::join(
            state.updated,
            vec![Entry {
                instance: "k1".into(),
                state: Ok(state),
            }],
            None,
            None,
            Some("no bus".into()),
        );
        let text = render(&r);
        assert!(text.contains("degraded  source unreadable"), "{text}");
        assert!(
            text.contains(
                "  ! nothing is relayed: audio is MPEG-1/2 Audio: set the encoder's audio to AAC\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn verdicts() {
        assert!(verdict(&report(true), None).is_none());
        let v = verdict(&report(false), None).unwrap();
        assert_eq!(v.code, 1);
        assert_eq!(
            v.summary,
            "1 of 1 stream not live (1 degraded, 0 down, 0 unknown)"
        );
        let mut r = report(true);
        r.only("other");
        assert_eq!(verdict(&r, Some("other")).unwrap().code, 1);
    }

    #[test]
    fn ages_and_sizes() {
        assert_eq!(age(100, 40), "1m00s");
        assert_eq!(age(10_000, 0), "2h46m");
        assert_eq!(size(999), "999 B");
        assert_eq!(size(2_500_000_000), "2.50 GB");
    }
}
