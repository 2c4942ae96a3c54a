//! The hooks' reports (`crate::hook_report`), summed since this exporter started: runs by
//! hook and result, Control Plane requests by endpoint and outcome, and a histogram of their
//! durations. Counters start at 0 for every combination, so that a rate exists before the
//! first failure.

use std::collections::BTreeMap;

use super::prometheus::{Family, Kind};
use crate::hook_report::{self, ENDPOINTS, HOOKS, OUTCOMES, RESULTS};

/// Upper bounds of the duration histogram, seconds: a healthy Control Plane answers in tens of
/// milliseconds; a hook's whole budget is 5 s (auth, destinations) to 30 s (stream-end).
pub const BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

#[derive(Default, Clone)]
struct Histogram {
    /// Observations per bucket (not cumulative); beyond the last bound: only in `count`.
    per_bucket: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Default)]
pub struct HookTotals {
    runs: BTreeMap<(&'static str, &'static str), u64>,
    requests: BTreeMap<(&'static str, &'static str), u64>,
    durations: BTreeMap<&'static str, Histogram>,
    /// Datagrams that were not a report.
    invalid: u64,
}

impl HookTotals {
    /// Adds one datagram.
    pub fn add(&mut self, datagram: &[u8]) {
        let Some(report) = hook_report::decode(datagram) else {
            self.invalid += 1;
            return;
        };
        *self.runs.entry((report.hook, report.result)).or_default() += 1;
        for r in report.requests {
            *self.requests.entry((r.endpoint, r.outcome)).or_default() += 1;
            let h = self.durations.entry(r.endpoint).or_default();
            if let Some(i) = BUCKETS.iter().position(|le| r.seconds <= *le) {
                h.per_bucket[i] += 1;
            }
            h.count += 1;
            h.sum += r.seconds;
        }
    }

    pub fn families(&self) -> Vec<Family> {
        let mut runs = Family::new(
            "neustream_hook_runs_total",
            Kind::Counter,
            "Runs of the hooks (ready, unpublish) and of reconcile and refresh on this node \
             since the exporter started, by result: ok, refused (a key the Control Plane or \
             the streams file refuses), error (not relayed or not ended as asked; see the \
             journal).",
        );
        for hook in HOOKS {
            for result in RESULTS {
                let n = self.runs.get(&(hook, result)).copied().unwrap_or(0);
                runs.add(&[("hook", hook), ("result", result)], n as f64);
            }
        }
        let mut requests = Family::new(
            "neustream_control_plane_requests_total",
            Kind::Counter,
            "HTTP requests to the Control Plane (every attempt, retries included) by endpoint \
             (auth, forwarding, stream_end) and outcome: 2xx, 4xx, 5xx, no_answer (timeout, \
             connection or TLS failure, oversized answer).",
        );
        for endpoint in ENDPOINTS {
            for outcome in OUTCOMES {
                let n = self
                    .requests
                    .get(&(endpoint, outcome))
                    .copied()
                    .unwrap_or(0);
                requests.add(&[("endpoint", endpoint), ("outcome", outcome)], n as f64);
            }
        }
        let mut durations = Family::new(
            "neustream_control_plane_request_duration_seconds",
            Kind::Histogram,
            "Time of each HTTP request to the Control Plane, from sending it to its whole \
             answer (or to giving up on it), by endpoint.",
        );
        for endpoint in ENDPOINTS {
            let h = self.durations.get(endpoint).cloned().unwrap_or_default();
            let mut cumulative = 0;
            let buckets: Vec<(f64, u64)> = BUCKETS
                .iter()
                .zip(h.per_bucket)
                .map(|(le, n)| {
                    cumulative += n;
                    (*le, cumulative)
                })
                .collect();
            durations.add_histogram(&[("endpoint", endpoint)], &buckets, h.sum, h.count);
        }
        let mut invalid = Family::new(
            "neustream_hook_reports_invalid_total",
            Kind::Counter,
            "Datagrams on the hook report socket that were not a report (another program, \
             or another neustream version).",
        );
        invalid.add(&[], self.invalid as f64);
        vec![runs, requests, durations, invalid]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hook_report::{encode, Report, Request};
    use crate::operator::prometheus::encode as render;

    #[test]
    fn reports_become_counters_and_a_histogram() {
        let mut t = HookTotals::default();
        let ready = Report {
            hook: "ready",
            result: "ok",
            requests: vec![
                Request {
                    endpoint: "auth",
                    seconds: 0.02,
                    outcome: "2xx",
                },
                Request {
                    endpoint: "forwarding",
                    seconds: 0.3,
                    outcome: "2xx",
                },
            ],
        };
        t.add(encode(&ready).as_bytes());
        t.add(encode(&ready).as_bytes());
        t.add(
            encode(&Report {
                hook: "unpublish",
                result: "error",
                requests: vec![Request {
                    endpoint: "stream_end",
                    seconds: 40.0,
                    outcome: "no_answer",
                }],
            })
            .as_bytes(),
        );
        t.add(b"not a report");
        let text = render(&t.families());
        for line in [
            "neustream_hook_runs_total{hook=\"ready\",result=\"ok\"} 2",
            "neustream_hook_runs_total{hook=\"unpublish\",result=\"error\"} 1",
            "neustream_hook_runs_total{hook=\"refresh\",result=\"refused\"} 0",
            "neustream_control_plane_requests_total{endpoint=\"auth\",outcome=\"2xx\"} 2",
            "neustream_control_plane_requests_total{endpoint=\"stream_end\",outcome=\"no_answer\"} 1",
            "neustream_control_plane_request_duration_seconds_bucket{endpoint=\"auth\",le=\"0.01\"} 0",
            "neustream_control_plane_request_duration_seconds_bucket{endpoint=\"auth\",le=\"0.025\"} 2",
            "neustream_control_plane_request_duration_seconds_bucket{endpoint=\"forwarding\",le=\"0.25\"} 0",
            "neustream_control_plane_request_duration_seconds_bucket{endpoint=\"forwarding\",le=\"0.5\"} 2",
            "neustream_control_plane_request_duration_seconds_sum{endpoint=\"forwarding\"} 0.6",
            // Beyond the last bound: only in +Inf and the count.
            "neustream_control_plane_request_duration_seconds_bucket{endpoint=\"stream_end\",le=\"30\"} 0",
            "neustream_control_plane_request_duration_seconds_bucket{endpoint=\"stream_end\",le=\"+Inf\"} 1",
            "neustream_control_plane_request_duration_seconds_count{endpoint=\"stream_end\"} 1",
            "neustream_hook_reports_invalid_total 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
    }
}
