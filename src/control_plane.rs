//! The Neustream Control Plane's HTTP API (`shared/notes/control-plane-contract.md`):
//! authenticate a publisher, fetch its destinations, report the end of a stream.
//!
//! Every call is bounded in time, retries included. Authentication fails closed: only
//! `200 OK` with body `OK` accepts a key.

use std::future::Future;
use std::net::IpAddr;
use std::time::Duration;

use serde::Deserialize;
use tokio::time::Instant;
use url::Url;

use crate::stream_key::StreamKey;

/// Largest forwarding answer read (its destinations list is at most 64 entries).
pub const MAX_FORWARDING_BODY: usize = 1 << 20;
const MAX_SMALL_BODY: usize = 4096;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum ControlPlaneError {
    #[error("Control Plane URL '{0}' is not an http:// or https:// URL")]
    BadUrl(String),
    #[error(
        "Control Plane URL {0} is plain http on a non-loopback host; use https, or set \
         NEUSTREAM_ALLOW_INSECURE_CONTROL_PLANE=true"
    )]
    Insecure(String),
    #[error("failed to set up the HTTP client: {0}")]
    Client(String),
    #[error("stream key {key} rejected by the Control Plane ({status}: {reason})")]
    Rejected {
        key: String,
        status: u16,
        reason: String,
    },
    #[error("{endpoint}: no usable answer within {budget:?} ({attempts} attempts; last: {last})")]
    Unavailable {
        endpoint: String,
        budget: Duration,
        attempts: u32,
        last: String,
    },
    #[error("{endpoint}: unexpected answer: {detail}")]
    Unexpected { endpoint: String, detail: String },
    #[error("{endpoint}: the Control Plane does not know this stream key (404)")]
    NotFound { endpoint: String },
    #[error("{endpoint}: malformed answer: {detail}")]
    Malformed { endpoint: String, detail: String },
    #[error("{endpoint}: answer larger than {limit} bytes")]
    TooLarge { endpoint: String, limit: usize },
}

/// The forwarding answer; unknown fields are ignored, optional ones may be missing.
#[derive(Debug, Deserialize)]
pub struct Forwarding {
    #[serde(rename = "sourceName", default)]
    pub source_name: Option<String>,
    /// Entries are kept as JSON so that one malformed entry drops only itself.
    pub destinations: Vec<serde_json::Value>,
}

/// One entry of `destinations`, as far as it is well-formed.
#[derive(Debug, Deserialize, Default)]
pub struct RawDestination {
    #[serde(default)]
    pub platform: Option<String>,
    #[serde(default)]
    pub rtmp_url: Option<String>,
    #[serde(default)]
    pub stream_key: Option<String>,
    /// Not in the Control Plane's answer: the streams file's `codecs` of a destination, which
    /// takes the same path (standalone mode).
    #[serde(default)]
    pub codecs: Option<String>,
}

pub struct ControlPlane {
    client: reqwest::Client,
    base: Url,
    token: Option<String>,
}

/// What one attempt of a call came to.
enum Attempt<T> {
    Done(T),
    /// Worth another try (timeout, connection error, 5xx); the text says what happened.
    Retry(String),
    Fail(ControlPlaneError),
}

impl ControlPlane {
    pub fn new(
        base_url: &str,
        token: Option<&str>,
        allow_insecure: bool,
    ) -> Result<Self, ControlPlaneError> {
        let base = Url::parse(base_url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
            .ok_or_else(|| ControlPlaneError::BadUrl(base_url.into()))?;
        if base.scheme() == "http" && !allow_insecure && !is_loopback(&base) {
            return Err(ControlPlaneError::Insecure(base_url.into()));
        }
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("neustream/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ControlPlaneError::Client(e.to_string()))?;
        Ok(ControlPlane {
            client,
            base,
            token: token.filter(|t| !t.is_empty()).map(str::to_owned),
        })
    }

    fn endpoint(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .expect("http(s) URLs have paths")
            .pop_if_empty()
            .extend(segments);
        url
    }

    fn request(&self, method: reqwest::Method, url: Url) -> reqwest::RequestBuilder {
        let req = self.client.request(method, url);
        match &self.token {
            Some(token) => req.bearer_auth(token),
            None => req,
        }
    }

    /// One call of the API, retried within `budget` (doubling waits from `first_wait`) as long
    /// as `judge` says the answer is worth another try. `form_key` sends the form `name=<key>`.
    #[allow(clippy::too_many_arguments)]
    async fn call<T>(
        &self,
        method: reqwest::Method,
        segments: &[&str],
        form_key: Option<&StreamKey>,
        budget: Duration,
        first_wait: Duration,
        limit: usize,
        judge: impl Fn(u16, &[u8], String) -> Attempt<T>,
    ) -> Result<T, ControlPlaneError> {
        let url = self.endpoint(segments);
        let endpoint = format!("{method} {url}");
        let name = match segments {
            ["api", "auth", "stream"] => "auth",
            ["api", "auth", "stream-end"] => "stream_end",
            _ => "forwarding",
        };
        retry(&endpoint, budget, first_wait, |timeout| {
            let mut req = self.request(method.clone(), url.clone());
            if let Some(key) = form_key {
                req = req.form(&[("name", key.as_str())]);
            }
            let endpoint = endpoint.clone();
            let judge = &judge;
            async move {
                let started = std::time::Instant::now();
                let answer = send(req, timeout, limit, &endpoint).await;
                let status = answer.as_ref().ok().map(|(status, _)| *status);
                crate::hook_report::request(name, started.elapsed(), status);
                match answer {
                    Ok((status, body)) => judge(status, &body, endpoint),
                    Err(attempt) => attempt,
                }
            }
        })
        .await
    }

    /// `POST /api/auth/stream`: Ok only for `200` with body `OK`. 401 and 403 are final
    /// rejections; timeouts, connection errors and 5xx are retried within `budget`, then
    /// reject too (fail closed).
    pub async fn authenticate(
        &self,
        key: &StreamKey,
        budget: Duration,
    ) -> Result<(), ControlPlaneError> {
        let segments = ["api", "auth", "stream"];
        let wait = Duration::from_millis(100);
        self.call(
            reqwest::Method::POST,
            &segments,
            Some(key),
            budget,
            wait,
            MAX_SMALL_BODY,
            |status, body, endpoint| {
                let text = excerpt(body);
                match status {
                    200 if text == "OK" => Attempt::Done(()),
                    401 | 403 => Attempt::Fail(ControlPlaneError::Rejected {
                        key: key.to_string(),
                        status,
                        reason: if text.is_empty() {
                            "no reason given".into()
                        } else {
                            text
                        },
                    }),
                    500..=599 => Attempt::Retry(format!("{status} {text}")),
                    _ => Attempt::Fail(ControlPlaneError::Unexpected {
                        endpoint,
                        detail: format!("{status} '{text}' (only 200 'OK' accepts a key)"),
                    }),
                }
            },
        )
        .await
    }

    /// `GET /api/streams/forwarding/{key}`: the stream's destinations, unvalidated.
    pub async fn forwarding(
        &self,
        key: &StreamKey,
        budget: Duration,
    ) -> Result<Forwarding, ControlPlaneError> {
        let segments = ["api", "streams", "forwarding", key.as_str()];
        let wait = Duration::from_millis(100);
        self.call(
            reqwest::Method::GET,
            &segments,
            None,
            budget,
            wait,
            MAX_FORWARDING_BODY,
            |status, body, endpoint| {
                match status {
                    200 => match serde_json::from_slice::<Forwarding>(body) {
                        Ok(forwarding) => Attempt::Done(forwarding),
                        // serde's messages may quote values (destination keys): position only.
                        Err(e) => Attempt::Fail(ControlPlaneError::Malformed {
                            endpoint,
                            detail: format!(
                                "{} at line {} column {}",
                                match e.classify() {
                                    serde_json::error::Category::Data => {
                                        "JSON of the wrong shape (expected an object with a \
                                     'destinations' list)"
                                    }
                                    serde_json::error::Category::Eof => "truncated JSON",
                                    _ => "not JSON",
                                },
                                e.line(),
                                e.column()
                            ),
                        }),
                    },
                    404 => Attempt::Fail(ControlPlaneError::NotFound { endpoint }),
                    500..=599 => Attempt::Retry(format!("{status} {}", error_field(body))),
                    _ => Attempt::Fail(ControlPlaneError::Unexpected {
                        endpoint,
                        detail: format!("{status} {}", error_field(body)),
                    }),
                }
            },
        )
        .await
    }

    /// `POST /api/auth/stream-end`: retried with backoff within `budget`, since losing it bills
    /// the streamer for time they did not stream.
    pub async fn stream_end(
        &self,
        key: &StreamKey,
        budget: Duration,
    ) -> Result<(), ControlPlaneError> {
        let segments = ["api", "auth", "stream-end"];
        let wait = Duration::from_millis(500);
        self.call(
            reqwest::Method::POST,
            &segments,
            Some(key),
            budget,
            wait,
            MAX_SMALL_BODY,
            |status, body, endpoint| match status {
                200..=299 => Attempt::Done(()),
                500..=599 => Attempt::Retry(format!("{status} {}", excerpt(body))),
                _ => Attempt::Fail(ControlPlaneError::Unexpected {
                    endpoint,
                    detail: format!("{status} '{}'", excerpt(body)),
                }),
            },
        )
        .await
    }
}

/// Runs `attempt` (given the time it may take) until it is done or fails for good, retrying
/// with doubling waits (from `first_wait`, at most 4 s) while `budget` lasts.
async fn retry<T, F, Fut>(
    endpoint: &str,
    budget: Duration,
    first_wait: Duration,
    mut attempt: F,
) -> Result<T, ControlPlaneError>
where
    F: FnMut(Duration) -> Fut,
    Fut: Future<Output = Attempt<T>>,
{
    let deadline = Instant::now() + budget;
    let mut wait = first_wait;
    let mut attempts = 0;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        attempts += 1;
        let last = match tokio::time::timeout(left, attempt(left)).await {
            Ok(Attempt::Done(value)) => return Ok(value),
            Ok(Attempt::Fail(err)) => return Err(err),
            Ok(Attempt::Retry(why)) => why,
            Err(_) => format!("no answer within {left:?}"),
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left <= wait {
            return Err(ControlPlaneError::Unavailable {
                endpoint: endpoint.into(),
                budget,
                attempts,
                last,
            });
        }
        tracing::warn!("{endpoint}: {last}; retrying in {wait:?}");
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(4));
    }
}

/// Sends a request and reads at most `limit` bytes of its answer within `timeout`.
async fn send<T>(
    req: reqwest::RequestBuilder,
    timeout: Duration,
    limit: usize,
    endpoint: &str,
) -> Result<(u16, Vec<u8>), Attempt<T>> {
    let mut resp = match req.timeout(timeout).send().await {
        Ok(resp) => resp,
        Err(e) if e.is_timeout() => {
            return Err(Attempt::Retry(format!("no answer within {timeout:?}")))
        }
        Err(e) => return Err(Attempt::Retry(error_chain(&e))),
    };
    let status = resp.status().as_u16();
    let too_large = || {
        Attempt::Fail(ControlPlaneError::TooLarge {
            endpoint: endpoint.into(),
            limit,
        })
    };
    if resp.content_length().is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > limit {
                    return Err(too_large());
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok((status, body)),
            Err(e) if e.is_timeout() => {
                return Err(Attempt::Retry(format!(
                    "answer not read within {timeout:?}"
                )))
            }
            Err(e) => return Err(Attempt::Retry(error_chain(&e))),
        }
    }
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}

/// The first line of a small plain-text answer, printable characters only, at most 200.
fn excerpt(body: &[u8]) -> String {
    String::from_utf8_lossy(body)
        .lines()
        .next()
        .unwrap_or("")
        .trim()
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect()
}

/// The `error` field of a JSON error answer (`{"error":"..."}`), never the whole body.
fn error_field(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct ErrorBody {
        error: String,
    }
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(e) => excerpt(e.error.as_bytes()),
        Err(_) => format!("({} bytes, no JSON error field)", body.len()),
    }
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests;
