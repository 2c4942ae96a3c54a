//! Contract tests against the Control Plane double on 127.0.0.1, failures included.

#[path = "../../tests/common/control_plane_double.rs"]
mod double;

use super::*;
use double::{ControlPlaneDouble, Reply};
use std::time::Duration;

fn key(k: &str) -> StreamKey {
    StreamKey::parse(k).unwrap()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

const BUDGET: Duration = Duration::from_secs(3);

#[test]
fn accepts_only_200_ok() {
    let cp = ControlPlaneDouble::start();
    cp.add_stream("good", &[]);
    let client = ControlPlane::new(&cp.url(), Some("tok"), false).unwrap();
    rt().block_on(async {
        client.authenticate(&key("good"), BUDGET).await.unwrap();
        let err = client.authenticate(&key("bad"), BUDGET).await.unwrap_err();
        assert!(
            matches!(err, ControlPlaneError::Rejected { status: 401, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("Invalid stream key"), "{err}");
    });
    let reqs = cp.requests();
    assert_eq!(reqs[0].body, "name=good");
    assert_eq!(reqs[0].authorization.as_deref(), Some("Bearer tok"));
}

#[test]
fn rejects_403_with_its_reason_and_without_retrying() {
    let cp = ControlPlaneDouble::start();
    cp.script_auth(
        "k",
        vec![Reply::Text(403, "Streaming hour limit exceeded".into())],
    );
    let client = ControlPlane::new(&cp.url(), None, false).unwrap();
    let err = rt()
        .block_on(client.authenticate(&key("k"), BUDGET))
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("403: Streaming hour limit exceeded"),
        "{err}"
    );
    assert_eq!(cp.count("POST", "/api/auth/stream"), 1);
    assert_eq!(cp.requests()[0].authorization, None);
}

#[test]
fn fails_closed_on_500_after_bounded_retries() {
    let cp = ControlPlaneDouble::start();
    cp.script_auth("k", vec![Reply::Text(500, "Internal server error".into())]);
    let client = ControlPlane::new(&cp.url(), None, false).unwrap();
    let start = std::time::Instant::now();
    let err = rt()
        .block_on(client.authenticate(&key("k"), Duration::from_secs(1)))
        .unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(2));
    assert!(
        matches!(err, ControlPlaneError::Unavailable { .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains("500 Internal server error"),
        "{err}"
    );
    assert!(cp.count("POST", "/api/auth/stream") >= 2);
}

#[test]
fn retries_a_500_then_accepts() {
    let cp = ControlPlaneDouble::start();
    cp.add_stream("k", &[]);
    cp.script_auth(
        "k",
        vec![
            Reply::Text(500, "Internal server error".into()),
            Reply::Contract,
        ],
    );
    let client = ControlPlane::new(&cp.url(), None, false).unwrap();
    rt().block_on(client.authenticate(&key("k"), BUDGET))
        .unwrap();
    assert_eq!(cp.count("POST", "/api/auth/stream"), 2);
}

#[test]
fn fails_closed_on_timeout_within_budget() {
    let cp = ControlPlaneDouble::start();
    cp.add_stream("k", &[]);
    cp.script_auth(
        "k",
        vec![Reply::Delay(
            Duration::from_secs(5),
            Box::new(Reply::Contract),
        )],
    );
    let client = ControlPlane::new(&cp.url(), None, false).unwrap();
    let start = std::time::Instant::now();
    let err = rt()
        .block_on(client.authenticate(&key("k"), Duration::from_millis(500)))
        .unwrap_err();
    assert!(
        start.elapsed() < Duration::from_millis(1500),
        "{:?}",
        start.elapsed()
    );
    assert!(
        matches!(err, ControlPlaneError::Unavailable { .. }),
        "{err}"
    );
}

#[test]
fn fails_closed_on_garbage_and_refused_connections() {
    let cp = ControlPlaneDouble::start();
    cp.script_auth(
        "k",
        vec![Reply::Text(200, "<html>maintenance</html>".into())],
    );
    cp.script_auth("d", vec![Reply::Drop]);
    let client = ControlPlane::new(&cp.url(), None, false).unwrap();
    rt().block_on(async {
        let err = client.authenticate(&key("k"), BUDGET).await.unwrap_err();
        assert!(err.to_string().contains("only 200 'OK' accepts"), "{err}");
        let err = client
            .authenticate(&key("d"), Duration::from_millis(600))
            .await
            .unwrap_err();
        assert!(
            matches!(err, ControlPlaneError::Unavailable { .. }),
            "{err}"
        );
    });
    // Nothing listens on port 9 of loopback.
    let closed = ControlPlane::new("http://127.0.0.1:9", None, false).unwrap();
    let err = rt()
        .block_on(closed.authenticate(&key("k"), Duration::from_millis(500)))
        .unwrap_err();
    assert!(
        matches!(err, ControlPlaneError::Unavailable { .. }),
        "{err}"
    );
}

#[test]
fn forwarding_parses_the_contract_and_ignores_extras() {
    let cp = ControlPlaneDouble::start();
    cp.add_stream(
        "k",
        &[
            ("youtube", "rtmp://a.rtmp.youtube.com/live2", "xxxx"),
            ("twitch", "rtmp://t/app", "live_1"),
        ],
    );
    let client = ControlPlane::new(&cp.url(), None, false).unwrap();
    let f = rt().block_on(client.forwarding(&key("k"), BUDGET)).unwrap();
    assert_eq!(f.destinations.len(), 2);
    assert_eq!(f.source_name.as_deref(), Some("Main camera"));
    let d: RawDestination = serde_json::from_value(f.destinations[1].clone()).unwrap();
    assert_eq!(d.stream_key.as_deref(), Some("live_1"));
    assert_eq!(cp.requests()[0].path, "/api/streams/forwarding/k");
}

#[test]
fn forwarding_failures_are_named_without_secrets() {
    let cp = ControlPlaneDouble::start();
    let client = ControlPlane::new(&cp.url(), None, false).unwrap();
    let rt = rt();
    let err = rt
        .block_on(client.forwarding(&key("missing"), BUDGET))
        .unwrap_err();
    assert!(matches!(err, ControlPlaneError::NotFound { .. }), "{err}");

    cp.script_forwarding(
        "m",
        vec![Reply::Json(
            200,
            r#"{"destinations":"secret-key-1"}"#.into(),
        )],
    );
    let err = rt
        .block_on(client.forwarding(&key("m"), BUDGET))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("wrong shape") && !err.contains("secret-key-1"),
        "{err}"
    );

    cp.script_forwarding("g", vec![Reply::Text(200, "garbage".into())]);
    let err = rt
        .block_on(client.forwarding(&key("g"), BUDGET))
        .unwrap_err()
        .to_string();
    assert!(err.contains("not JSON"), "{err}");

    let big = format!(
        r#"{{"destinations":[],"pad":"{}"}}"#,
        "x".repeat(MAX_FORWARDING_BODY)
    );
    cp.script_forwarding("big", vec![Reply::Json(200, big)]);
    let err = rt
        .block_on(client.forwarding(&key("big"), BUDGET))
        .unwrap_err();
    assert!(matches!(err, ControlPlaneError::TooLarge { .. }), "{err}");

    cp.script_forwarding(
        "e",
        vec![Reply::Json(
            500,
            r#"{"error":"Failed to fetch forwarding configuration"}"#.into(),
        )],
    );
    let err = rt
        .block_on(client.forwarding(&key("e"), Duration::from_millis(400)))
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("Failed to fetch forwarding configuration"),
        "{err}"
    );

    cp.add_stream("empty", &[]);
    let f = rt
        .block_on(client.forwarding(&key("empty"), BUDGET))
        .unwrap();
    assert!(f.destinations.is_empty());
}

#[test]
fn stream_end_retries_with_backoff() {
    let cp = ControlPlaneDouble::start();
    cp.script_stream_end(vec![
        Reply::Text(500, "Internal server error".into()),
        Reply::Drop,
        Reply::Text(200, "OK".into()),
    ]);
    let client = ControlPlane::new(&cp.url(), None, false).unwrap();
    rt().block_on(client.stream_end(&key("k"), Duration::from_secs(10)))
        .unwrap();
    assert_eq!(cp.count_for("POST", "/api/auth/stream-end", "k"), 3);
}

#[test]
fn stream_end_gives_up_within_budget() {
    let cp = ControlPlaneDouble::start();
    cp.script_stream_end(vec![Reply::Text(500, "Internal server error".into())]);
    let client = ControlPlane::new(&cp.url(), None, false).unwrap();
    let start = std::time::Instant::now();
    let err = rt()
        .block_on(client.stream_end(&key("k"), Duration::from_secs(2)))
        .unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(3));
    assert!(
        matches!(err, ControlPlaneError::Unavailable { attempts: 2.., .. }),
        "{err}"
    );
}

#[test]
fn insecure_urls_are_refused_unless_allowed() {
    assert!(matches!(
        ControlPlane::new("http://api.example.org", None, false),
        Err(ControlPlaneError::Insecure(_))
    ));
    assert!(ControlPlane::new("http://api.example.org", None, true).is_ok());
    assert!(ControlPlane::new("http://localhost:3000", None, false).is_ok());
    assert!(ControlPlane::new("http://[::1]:3000", None, false).is_ok());
    assert!(ControlPlane::new("https://api.neustream.app", None, false).is_ok());
    assert!(matches!(
        ControlPlane::new("ftp://x", None, false),
        Err(ControlPlaneError::BadUrl(_))
    ));
}

#[test]
fn base_url_path_prefix_is_kept() {
    let client = ControlPlane::new("https://h/prefix/", None, false).unwrap();
    assert_eq!(
        client.endpoint(&["api", "auth", "stream"]).as_str(),
        "https://h/prefix/api/auth/stream"
    );
}
