//! The metric set (documented in README, "Metrics"): a [`Report`] as Prometheus families.
//! Labels are the stream's id (or key, if chosen), a destination's index and platform, and
//! closed sets of states and error classes: never a URL, a destination key or free text.

use super::prometheus::{encode, Family, Kind};
use super::relays::{ERRORS, STATES};
use super::report::{Health, Report};
use super::StreamLabel;
use crate::destination::platform_name;

const SOURCE_STATES: [&str; 5] = ["starting", "live", "grace", "unreadable", "ended"];
const HEALTHS: [(Health, &str); 4] = [
    (Health::Live, "live"),
    (Health::Degraded, "degraded"),
    (Health::Down, "down"),
    (Health::Unknown, "unknown"),
];

fn flag(b: bool) -> f64 {
    if b {
        1.0
    } else {
        0.0
    }
}

pub fn render(report: &Report, label: StreamLabel, scrape_seconds: f64) -> String {
    use Kind::{Counter, Gauge};
    let mut relays = Family::new(
        "neustream_relays",
        Gauge,
        "Relays on this node by health: live (every destination live), degraded (running, \
         not every destination live), down (unit failed or source ended), unknown (state \
         not readable or not updated).",
    );
    for (h, name) in HEALTHS {
        let n = report.relays.iter().filter(|r| r.health == h).count();
        relays.add(&[("health", name)], n as f64);
    }
    let mut systemd_up = Family::new(
        "neustream_systemd_up",
        Gauge,
        "1 if systemd answered over D-Bus (the relay_cpu, relay_memory and relay_restarts \
         metrics need it).",
    );
    systemd_up.add(&[], flag(report.systemd_error.is_none()));
    let mut scrape = Family::new(
        "neustream_scrape_duration_seconds",
        Gauge,
        "Time this exporter took to read the state files and ask systemd.",
    );
    scrape.add(&[], scrape_seconds);

    let mut up = Family::new(
        "neustream_relay_up",
        Gauge,
        "1 if the stream's relay is running and publishing its state.",
    );
    let mut started = Family::new(
        "neustream_relay_start_time_seconds",
        Gauge,
        "Unix time the relay process started.",
    );
    let mut source = Family::new(
        "neustream_relay_source_state",
        Gauge,
        "1 for the state the relay's source (the ingest) is in: starting, live, grace (the \
         publisher is gone, the relay waits for a new one), unreadable (the ingest will not \
         give the publisher's stream, e.g. MP2 audio; neustream status says why) or ended.",
    );
    let mut grace = Family::new(
        "neustream_relay_grace_end_timestamp_seconds",
        Gauge,
        "While the source is in grace: Unix time at which the relay stops waiting for a new \
         publisher.",
    );
    let mut video = Family::new(
        "neustream_stream_video_info",
        Gauge,
        "1 for the video codec and size the stream has now (read from its sequence headers, \
         no decoding).",
    );
    let mut video_fps = Family::new(
        "neustream_stream_video_frames_per_second",
        Gauge,
        "The stream's video frame rate over its last seconds of media.",
    );
    let mut video_bitrate = Family::new(
        "neustream_stream_video_bytes_per_second",
        Gauge,
        "The stream's video rate over its last seconds of media (bitrate / 8).",
    );
    let mut audio = Family::new(
        "neustream_stream_audio_info",
        Gauge,
        "1 for the audio codec, sample rate and channels the stream has now.",
    );
    let mut audio_bitrate = Family::new(
        "neustream_stream_audio_bytes_per_second",
        Gauge,
        "The stream's audio rate over its last seconds of media (bitrate / 8).",
    );
    let mut cpu = Family::new(
        "neustream_relay_cpu_seconds_total",
        Counter,
        "CPU time of the relay unit's cgroup (relay and every ffmpeg), systemd's CPUUsageNSec.",
    );
    let mut memory = Family::new(
        "neustream_relay_memory_bytes",
        Gauge,
        "Memory of the relay unit's cgroup, systemd's MemoryCurrent.",
    );
    let mut restarts = Family::new(
        "neustream_relay_restarts_total",
        Counter,
        "Automatic restarts of the relay unit (systemd's NRestarts).",
    );
    let mut d_up = Family::new(
        "neustream_destination_up",
        Gauge,
        "1 if the destination has accepted the publish and is being sent the stream.",
    );
    let mut d_state = Family::new(
        "neustream_destination_state",
        Gauge,
        "1 for the destination's state: waiting, connecting, live, retrying or stopped.",
    );
    let mut d_since = Family::new(
        "neustream_destination_state_change_timestamp_seconds",
        Gauge,
        "Unix time the destination entered its current state.",
    );
    let mut d_bytes = Family::new(
        "neustream_destination_sent_bytes_total",
        Counter,
        "FLV bytes the relay handed to the destination's ffmpeg, all sessions.",
    );
    let mut d_acked = Family::new(
        "neustream_destination_acked_bytes_total",
        Counter,
        "Bytes the destination's server acknowledged at TCP level (tcp_info bytes_acked), \
         all sessions.",
    );
    let mut d_tcp_sent = Family::new(
        "neustream_destination_tcp_sent_bytes_total",
        Counter,
        "Bytes sent on the destination's TCP connections, retransmissions included \
         (tcp_info bytes_sent), all sessions.",
    );
    let mut d_rtt = Family::new(
        "neustream_destination_rtt_seconds",
        Gauge,
        "Smoothed round-trip time of the destination's current TCP connection.",
    );
    let mut d_rate = Family::new(
        "neustream_destination_delivery_rate_bytes",
        Gauge,
        "The kernel's estimate of the destination's current delivery rate, bytes per second.",
    );
    let mut d_attempts = Family::new(
        "neustream_destination_attempts_total",
        Counter,
        "Connection attempts (ffmpeg sessions) the relay started for the destination.",
    );
    let mut d_failures = Family::new(
        "neustream_destination_consecutive_failures",
        Gauge,
        "Failed sessions since the destination's last healthy one.",
    );
    let mut d_error = Family::new(
        "neustream_destination_last_error",
        Gauge,
        "1 for the class of the destination's last failure: refused, unreachable, \
         certificate, tls, dropped, timeout or protocol (all 0 before any failure).",
    );
    let mut d_overflows = Family::new(
        "neustream_destination_queue_overflows_total",
        Counter,
        "Times the destination fell behind and its queue skipped to a keyframe.",
    );

    for r in &report.relays {
        let stream = match label {
            StreamLabel::Id => r.id.as_str(),
            StreamLabel::Key => r.key.as_str(),
        };
        let s = [("stream", stream)];
        up.add(
            &s,
            flag(matches!(r.health, Health::Live | Health::Degraded) && r.state.is_some()),
        );
        if let Some(u) = &r.systemd {
            if let Some(v) = u.cpu_seconds {
                cpu.add(&s, v);
            }
            if let Some(v) = u.memory_bytes {
                memory.add(&s, v as f64);
            }
            if let Some(v) = u.restarts {
                restarts.add(&s, f64::from(v));
            }
        }
        // A stale file tells what was, not what is: only its identity is exported.
        let Some(state) = r.state.as_ref().filter(|_| r.health != Health::Unknown) else {
            continue;
        };
        started.add(&s, state.started as f64);
        if let (true, Some(until)) = (state.source.state == "grace", state.source.grace_until) {
            grace.add(&s, until as f64);
        }
        if let Some(v) = &state.media.video {
            let (w, h) = (
                v.width.map_or(String::new(), |w| w.to_string()),
                v.height.map_or(String::new(), |h| h.to_string()),
            );
            video.add(
                &[
                    ("stream", stream),
                    ("codec", v.codec.as_str()),
                    ("width", w.as_str()),
                    ("height", h.as_str()),
                ],
                1.0,
            );
            if let Some(fps) = v.fps {
                video_fps.add(&s, fps);
            }
            if let Some(b) = v.bitrate {
                video_bitrate.add(&s, b as f64 / 8.0);
            }
        }
        if let Some(a) = &state.media.audio {
            let (rate, channels) = (
                a.sample_rate.map_or(String::new(), |r| r.to_string()),
                a.channels.map_or(String::new(), |c| c.to_string()),
            );
            audio.add(
                &[
                    ("stream", stream),
                    ("codec", a.codec.as_str()),
                    ("sample_rate", rate.as_str()),
                    ("channels", channels.as_str()),
                ],
                1.0,
            );
            if let Some(b) = a.bitrate {
                audio_bitrate.add(&s, b as f64 / 8.0);
            }
        }
        for st in SOURCE_STATES {
            source.add(
                &[("stream", stream), ("state", st)],
                flag(state.source.state == st),
            );
        }
        for d in &state.destinations {
            let index = d.index.to_string();
            let platform = platform_name(&d.platform);
            let l = [
                ("stream", stream),
                ("index", index.as_str()),
                ("platform", platform.as_str()),
            ];
            d_up.add(&l, flag(d.state == "live"));
            for st in STATES {
                d_state.add(&[l[0], l[1], l[2], ("state", st)], flag(d.state == st));
            }
            d_since.add(&l, d.since as f64);
            d_bytes.add(&l, d.bytes as f64);
            d_attempts.add(&l, f64::from(d.attempts));
            d_failures.add(&l, f64::from(d.failures));
            d_overflows.add(&l, d.queue_overflows as f64);
            for e in ERRORS {
                d_error.add(
                    &[l[0], l[1], l[2], ("error", e)],
                    flag(d.last_error.as_deref() == Some(e)),
                );
            }
            if let Some(t) = &d.tcp {
                d_acked.add(&l, t.bytes_acked as f64);
                d_tcp_sent.add(&l, t.bytes_sent as f64);
                if let Some(rtt) = t.rtt_ms {
                    d_rtt.add(&l, rtt / 1000.0);
                }
                if let Some(rate) = t.delivery_rate {
                    d_rate.add(&l, rate as f64);
                }
            }
        }
    }
    encode(&[
        relays,
        systemd_up,
        scrape,
        up,
        started,
        source,
        grace,
        video,
        video_fps,
        video_bitrate,
        audio,
        audio_bitrate,
        cpu,
        memory,
        restarts,
        d_up,
        d_state,
        d_since,
        d_bytes,
        d_acked,
        d_tcp_sent,
        d_rtt,
        d_rate,
        d_attempts,
        d_failures,
        d_error,
        d_overflows,
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::relays::{parse, Entry, Tcp};
    use crate::operator::report::join;
    use crate::systemd::UnitUsage;
    use std::path::Path;

    fn report() -> Report {
        let text = crate::operator::relays::relay_wrote(
            "secret-ingest-key",
            "c",
            &[("youtube", "live", 5000), ("twitch", "unreachable", 0)],
        );
        let mut s = parse(Path::new("x"), &text).unwrap();
        s.destinations[0].tcp = Some(Tcp {
            bytes_acked: 4000,
            bytes_sent: 4100,
            rtt_ms: Some(1.5),
            delivery_rate: Some(250_000),
        });
        let now = s.updated;
        join(
            now,
            vec![Entry {
                instance: "secret\\x2dingest\\x2dkey".into(),
                state: Ok(s),
            }],
            Some(vec![UnitUsage {
                unit: "neustream-relay@secret\\x2dingest\\x2dkey.service".into(),
                active_state: "active".into(),
                sub_state: "running".into(),
                cpu_nsec: Some(2_500_000_000),
                memory_bytes: Some(31_000_000),
                restarts: Some(1),
            }]),
            None,
            None,
        )
    }

    #[test]
    fn a_relay_becomes_its_metrics() {
        let text = render(&report(), StreamLabel::Id, 0.001);
        let id = crate::operator::stream_id("secret-ingest-key");
        for line in [
            "neustream_relays{health=\"degraded\"} 1".to_string(),
            "neustream_systemd_up 1".into(),
            format!("neustream_relay_up{{stream=\"{id}\"}} 1"),
            format!("neustream_relay_cpu_seconds_total{{stream=\"{id}\"}} 2.5"),
            format!("neustream_relay_memory_bytes{{stream=\"{id}\"}} 31000000"),
            format!("neustream_relay_restarts_total{{stream=\"{id}\"}} 1"),
            format!(
                "neustream_destination_up{{stream=\"{id}\",index=\"0\",platform=\"youtube\"}} 1"
            ),
            format!(
                "neustream_destination_up{{stream=\"{id}\",index=\"1\",platform=\"twitch\"}} 0"
            ),
            format!(
                "neustream_destination_state{{stream=\"{id}\",index=\"1\",platform=\"twitch\",\
                 state=\"retrying\"}} 1"
            ),
            format!(
                "neustream_destination_last_error{{stream=\"{id}\",index=\"1\",\
                 platform=\"twitch\",error=\"unreachable\"}} 1"
            ),
            format!(
                "neustream_destination_sent_bytes_total{{stream=\"{id}\",index=\"0\",\
                 platform=\"youtube\"}} 5000"
            ),
            format!(
                "neustream_destination_acked_bytes_total{{stream=\"{id}\",index=\"0\",\
                 platform=\"youtube\"}} 4000"
            ),
            format!(
                "neustream_destination_rtt_seconds{{stream=\"{id}\",index=\"0\",\
                 platform=\"youtube\"}} 0.0015"
            ),
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
        }
        assert!(
            !text.contains("secret"),
            "the key is only a label when asked for"
        );
    }

    #[test]
    fn the_streams_shape_and_an_incompatible_destination() {
        let mut r = report();
        let s = r.relays[0].state.as_mut().unwrap();
        s.media = serde_json::from_value(serde_json::json!({
            "video": {"codec": "HEVC", "width": 1280, "height": 720, "fps": 30.0,
                      "bitrate": 2_500_000},
            "audio": {"codec": "AAC", "sample_rate": 48000, "channels": 2, "bitrate": 160_000}
        }))
        .unwrap();
        s.destinations[1].state = "incompatible".into();
        s.destinations[1].reason = Some("twitch takes H.264 only; the stream is HEVC".into());
        let text = render(&r, StreamLabel::Id, 0.0);
        let id = crate::operator::stream_id("secret-ingest-key");
        for line in [
            format!(
                "neustream_stream_video_info{{stream=\"{id}\",codec=\"HEVC\",width=\"1280\",\
                 height=\"720\"}} 1"
            ),
            format!("neustream_stream_video_frames_per_second{{stream=\"{id}\"}} 30"),
            format!(
                "neustream_stream_audio_info{{stream=\"{id}\",codec=\"AAC\",\
                 sample_rate=\"48000\",channels=\"2\"}} 1"
            ),
            format!("neustream_stream_audio_bytes_per_second{{stream=\"{id}\"}} 20000"),
            format!(
                "neustream_destination_state{{stream=\"{id}\",index=\"1\",platform=\"twitch\",\
                 state=\"incompatible\"}} 1"
            ),
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
        }
        assert_eq!(
            r.relays[0].state.as_ref().unwrap().media.describe(),
            "HEVC 1280x720 30 fps 2.5 Mb/s, AAC 48000 Hz 2 ch 160 kb/s"
        );
    }

    #[test]
    fn a_grace_has_its_end_time() {
        let mut r = report();
        let s = r.relays[0].state.as_mut().unwrap();
        s.source.state = "grace".into();
        s.source.grace_until = Some(s.updated + 30);
        let until = s.updated + 30;
        let text = render(&r, StreamLabel::Id, 0.0);
        let id = crate::operator::stream_id("secret-ingest-key");
        assert!(text.contains(&format!(
            "neustream_relay_grace_end_timestamp_seconds{{stream=\"{id}\"}} {until}"
        )));
        assert!(text.contains(&format!(
            "neustream_relay_source_state{{stream=\"{id}\",state=\"grace\"}} 1"
        )));
    }

    #[test]
    fn an_unreadable_source_is_a_state() {
        let mut r = report();
        let s = r.relays[0].state.as_mut().unwrap();
        s.source.state = "unreadable".into();
        s.source.problem = Some("audio is MPEG-1/2 Audio".into());
        let text = render(&r, StreamLabel::Id, 0.0);
        let id = crate::operator::stream_id("secret-ingest-key");
        assert!(text.contains(&format!(
            "neustream_relay_source_state{{stream=\"{id}\",state=\"unreadable\"}} 1"
        )));
    }

    #[test]
    fn the_key_label_is_a_choice() {
        let text = render(&report(), StreamLabel::Key, 0.0);
        assert!(text.contains("neustream_relay_up{stream=\"secret-ingest-key\"} 1"));
    }

    #[test]
    fn every_family_has_help_and_type_once() {
        let text = render(&report(), StreamLabel::Id, 0.0);
        let types: Vec<&str> = text.lines().filter(|l| l.starts_with("# TYPE ")).collect();
        let helps = text.lines().filter(|l| l.starts_with("# HELP ")).count();
        assert_eq!(types.len(), helps);
        let mut names: Vec<&str> = types.iter().map(|l| l.split(' ').nth(2).unwrap()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), types.len());
    }
}
