//! A minimal HTTP/1.1 responder for the metrics exporter: `GET /metrics` (and `HEAD`), one
//! request per connection, bounded in size and time. It serves the listening socket systemd
//! passes (`neustream-metrics.socket`), or one it binds itself (`--listen`).

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, warn};

/// A request head larger than this is refused (a scraper sends ~200 bytes).
const MAX_HEAD: usize = 8192;
/// Time a client gets to send its request and read the answer.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, PartialEq, Eq)]
pub enum Request {
    /// `GET /metrics` (`head`: only the headers are wanted).
    Metrics { head: bool },
    /// Anything else, answered with this status and reason.
    Refused(u16, &'static str),
}

/// Parses the request line of a request head (everything up to the blank line).
pub fn parse(head: &[u8]) -> Request {
    let Some(line) = head
        .split(|&b| b == b'\n')
        .next()
        .and_then(|l| std::str::from_utf8(l).ok())
    else {
        return Request::Refused(400, "Bad Request");
    };
    let mut parts = line.trim_end_matches('\r').split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Request::Refused(400, "Bad Request");
    };
    if !version.starts_with("HTTP/1.") {
        return Request::Refused(505, "HTTP Version Not Supported");
    }
    let path = target.split('?').next().unwrap_or("");
    if path != "/metrics" {
        return Request::Refused(404, "Not Found");
    }
    match method {
        "GET" => Request::Metrics { head: false },
        "HEAD" => Request::Metrics { head: true },
        _ => Request::Refused(405, "Method Not Allowed"),
    }
}

pub fn response(status: u16, reason: &str, content_type: &str, body: &str, head: bool) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n",
        body.len()
    );
    if status == 405 {
        out.push_str("Allow: GET, HEAD\r\n");
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    if !head {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

/// The listening socket: the one systemd passed (socket activation), else `listen` bound now.
pub fn listener(
    passed: Option<std::net::TcpListener>,
    listen: SocketAddr,
) -> std::io::Result<TcpListener> {
    let std = match passed {
        Some(l) => l,
        None => std::net::TcpListener::bind(listen)?,
    };
    std.set_nonblocking(true)?;
    TcpListener::from_std(std)
}

/// Answers connections until the process is stopped; `metrics` renders one scrape.
pub async fn serve<F, Fut>(listener: TcpListener, metrics: F)
where
    F: Fn() -> Fut + Clone + 'static,
    Fut: Future<Output = String> + 'static,
{
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // EMFILE and the like: wait a little rather than spin.
                warn!("metrics: failed to accept a connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let metrics = metrics.clone();
        tokio::task::spawn_local(async move {
            if tokio::time::timeout(CLIENT_TIMEOUT, answer(stream, metrics))
                .await
                .is_err()
            {
                debug!("metrics: {peer} took longer than {CLIENT_TIMEOUT:?}; closed");
            }
        });
    }
}

async fn answer<F, Fut>(mut stream: TcpStream, metrics: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = String>,
{
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    let request = loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n") {
            break parse(&head);
        }
        if head.len() > MAX_HEAD {
            break Request::Refused(431, "Request Header Fields Too Large");
        }
    };
    let bytes = match request {
        Request::Metrics { head } => {
            let body = metrics().await;
            response(200, "OK", super::prometheus::CONTENT_TYPE, &body, head)
        }
        Request::Refused(status, reason) => response(
            status,
            reason,
            "text/plain; charset=utf-8",
            &format!("{status} {reason}: this exporter serves GET /metrics\n"),
            false,
        ),
    };
    let _ = stream.write_all(&bytes).await;
    let _ = stream.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests() {
        assert_eq!(
            parse(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Request::Metrics { head: false }
        );
        assert_eq!(
            parse(b"HEAD /metrics?x=1 HTTP/1.0\r\n\r\n"),
            Request::Metrics { head: true }
        );
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\n\r\n"),
            Request::Refused(404, "Not Found")
        );
        assert_eq!(
            parse(b"POST /metrics HTTP/1.1\r\n\r\n"),
            Request::Refused(405, "Method Not Allowed")
        );
        assert_eq!(
            parse(b"garbage\r\n\r\n"),
            Request::Refused(400, "Bad Request")
        );
        assert_eq!(
            parse(b"\xff\xfe\r\n\r\n"),
            Request::Refused(400, "Bad Request")
        );
        assert_eq!(
            parse(b"GET /metrics SPDY/3\r\n\r\n"),
            Request::Refused(505, "HTTP Version Not Supported")
        );
    }

    #[test]
    fn responses_carry_length_and_close() {
        let r = String::from_utf8(response(200, "OK", "text/plain", "ab\n", false)).unwrap();
        assert_eq!(
            r,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\
             Connection: close\r\n\r\nab\n"
        );
        let r = String::from_utf8(response(200, "OK", "text/plain", "ab\n", true)).unwrap();
        assert!(r.ends_with("Content-Length: 3\r\nConnection: close\r\n\r\n"));
    }

    #[test]
    fn serves_over_a_real_socket() {
        use std::io::{Read, Write};
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let local = tokio::task::LocalSet::new();
        let std = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = std.local_addr().unwrap();
        local.block_on(&rt, async move {
            let l = listener(Some(std), addr).unwrap();
            tokio::task::spawn_local(serve(l, || async { "m 1\n".to_string() }));
            let got = tokio::task::spawn_blocking(move || {
                let mut c = std::net::TcpStream::connect(addr).unwrap();
                c.write_all(b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n")
                    .unwrap();
                let mut s = String::new();
                c.read_to_string(&mut s).unwrap();
                s
            })
            .await
            .unwrap();
            assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{got}");
            assert!(got.contains("version=0.0.4"));
            assert!(got.ends_with("\r\n\r\nm 1\n"));
        });
    }
}
