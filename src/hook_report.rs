//! What a hook run did, for the metrics exporter: each run of `ready`, `unpublish`,
//! `reconcile` or `refresh` sends one datagram to neustream-metrics.socket's datagram socket
//! (`/run/neustream/hook-reports.sock`, writable by MediaMTX's group only), naming the hook,
//! its result and every Control Plane request it made (endpoint, seconds, result class). No key,
//! no URL, no free-form text: only words of the fixed sets below. The exporter sums them into
//! counters and a histogram (`crate::operator::hooks`).
//!
//! Best effort by design: a node without the metrics socket (metrics not enabled) or an
//! exporter that does not read loses the report, never the hook's work or time (the send does
//! not block).

use std::cell::RefCell;
use std::path::Path;
use std::time::Duration;

/// Where neustream-metrics.socket listens for reports (`ListenDatagram=`).
pub const SOCKET: &str = "/run/neustream/hook-reports.sock";
/// First line of a report: the format and its version.
const MAGIC: &str = "neustream-hook-report 1";
/// Longest report accepted (a hook makes a handful of requests).
pub const MAX_REPORT: usize = 4096;
/// Requests kept per run (a run retries a few times; reconcile may send many stream-ends).
const MAX_REQUESTS: usize = 64;

pub const HOOKS: [&str; 4] = ["ready", "unpublish", "reconcile", "refresh"];
pub const RESULTS: [&str; 3] = ["ok", "refused", "error"];
pub const ENDPOINTS: [&str; 3] = ["auth", "forwarding", "stream_end"];
/// A request's outcome: an HTTP answer 2xx, 4xx, 5xx (or another status), or none at all
/// (timeout, connection refused or reset, TLS failure).
pub const OUTCOMES: [&str; 4] = ["2xx", "4xx", "5xx", "no_answer"];

/// One Control Plane request.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub endpoint: &'static str,
    pub seconds: f64,
    pub outcome: &'static str,
}

/// One hook run.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub hook: &'static str,
    pub result: &'static str,
    pub requests: Vec<Request>,
}

thread_local! {
    /// This run's requests: a hook runs on one thread (a current-thread runtime).
    static REQUESTS: RefCell<Vec<Request>> = const { RefCell::new(Vec::new()) };
}

/// Notes a Control Plane request of this run (`control_plane` calls it for every attempt).
/// `status`: the HTTP status, or `None` when no answer came.
pub fn request(endpoint: &'static str, took: Duration, status: Option<u16>) {
    let outcome = match status {
        Some(200..=299) => "2xx",
        Some(400..=499) => "4xx",
        Some(_) => "5xx",
        None => "no_answer",
    };
    REQUESTS.with_borrow_mut(|requests| {
        if requests.len() < MAX_REQUESTS {
            requests.push(Request {
                endpoint,
                seconds: took.as_secs_f64(),
                outcome,
            });
        }
    });
}

/// Sends this run's report (the requests noted so far) to `socket`, without waiting.
pub fn send(socket: &Path, hook: &'static str, result: &'static str) {
    let requests = REQUESTS.take();
    let report = Report {
        hook,
        result,
        requests,
    };
    let Ok(sender) = std::os::unix::net::UnixDatagram::unbound() else {
        return;
    };
    if sender.set_nonblocking(true).is_ok() {
        if let Err(e) = sender.send_to(encode(&report).as_bytes(), socket) {
            tracing::debug!("hook report not sent to {}: {e}", socket.display());
        }
    }
}

pub fn encode(report: &Report) -> String {
    let mut out = format!("{MAGIC}\nrun {} {}\n", report.hook, report.result);
    for r in &report.requests {
        out.push_str(&format!(
            "request {} {:.6} {}\n",
            r.endpoint, r.seconds, r.outcome
        ));
    }
    out
}

/// One of `set`, as the `'static` word there.
fn word(set: &[&'static str], text: &str) -> Option<&'static str> {
    set.iter().find(|w| **w == text).copied()
}

/// Parses a report; `None` for anything but a well-formed report of the words above.
pub fn decode(bytes: &[u8]) -> Option<Report> {
    if bytes.len() > MAX_REPORT {
        return None;
    }
    let text = std::str::from_utf8(bytes).ok()?;
    let mut lines = text.lines();
    if lines.next()? != MAGIC {
        return None;
    }
    let run: Vec<&str> = lines.next()?.split(' ').collect();
    let (hook, result) = match run[..] {
        ["run", hook, result] => (word(&HOOKS, hook)?, word(&RESULTS, result)?),
        _ => return None,
    };
    let mut requests = Vec::new();
    for line in lines {
        let fields: Vec<&str> = line.split(' ').collect();
        let ["request", endpoint, seconds, outcome] = fields[..] else {
            return None;
        };
        let seconds: f64 = seconds.parse().ok()?;
        if !(seconds.is_finite() && seconds >= 0.0) || requests.len() == MAX_REQUESTS {
            return None;
        }
        requests.push(Request {
            endpoint: word(&ENDPOINTS, endpoint)?,
            seconds,
            outcome: word(&OUTCOMES, outcome)?,
        });
    }
    Some(Report {
        hook,
        result,
        requests,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> Report {
        Report {
            hook: "ready",
            result: "refused",
            requests: vec![
                Request {
                    endpoint: "auth",
                    seconds: 0.5,
                    outcome: "5xx",
                },
                Request {
                    endpoint: "auth",
                    seconds: 0.012,
                    outcome: "4xx",
                },
            ],
        }
    }

    #[test]
    fn reports_round_trip() {
        let text = encode(&report());
        assert_eq!(
            text,
            "neustream-hook-report 1\nrun ready refused\nrequest auth 0.500000 5xx\n\
             request auth 0.012000 4xx\n"
        );
        assert_eq!(decode(text.as_bytes()), Some(report()));
    }

    #[test]
    fn anything_else_is_refused() {
        for bad in [
            "",
            "neustream-hook-report 2\nrun ready ok\n",
            "neustream-hook-report 1\n",
            "neustream-hook-report 1\nrun publish ok\n",
            "neustream-hook-report 1\nrun ready fine\n",
            "neustream-hook-report 1\nrun ready ok extra\n",
            "neustream-hook-report 1\nrun ready ok\nrequest keys 0.1 2xx\n",
            "neustream-hook-report 1\nrun ready ok\nrequest auth -1 2xx\n",
            "neustream-hook-report 1\nrun ready ok\nrequest auth NaN 2xx\n",
            "neustream-hook-report 1\nrun ready ok\nrequest auth 0.1 302\n",
            "neustream-hook-report 1\nrun ready ok\nrequest auth 0.1\n",
        ] {
            assert_eq!(decode(bad.as_bytes()), None, "{bad:?}");
        }
        assert_eq!(decode(&[0xff, 0xfe]), None);
        let long = format!("{MAGIC}\nrun ready ok\n{}", "x".repeat(MAX_REPORT));
        assert_eq!(decode(long.as_bytes()), None);
    }

    #[test]
    fn a_run_sends_its_requests_once_and_never_waits() {
        let dir = std::env::temp_dir().join(format!("neustream-report-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("r.sock");
        let _ = std::fs::remove_file(&path);
        let listener = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        request("forwarding", Duration::from_millis(30), Some(200));
        request("stream_end", Duration::from_secs(5), None);
        send(&path, "unpublish", "ok");
        let mut buf = [0u8; MAX_REPORT];
        let n = listener.recv(&mut buf).unwrap();
        let got = decode(&buf[..n]).unwrap();
        assert_eq!((got.hook, got.result), ("unpublish", "ok"));
        let outcomes: Vec<_> = got
            .requests
            .iter()
            .map(|r| (r.endpoint, r.outcome))
            .collect();
        assert_eq!(
            outcomes,
            [("forwarding", "2xx"), ("stream_end", "no_answer")]
        );
        // Sent: the next run starts empty. No socket: nothing happens, at once.
        send(&path, "refresh", "error");
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(decode(&buf[..n]).unwrap().requests, []);
        send(&dir.join("missing.sock"), "ready", "ok");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
