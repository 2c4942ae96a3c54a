//! The other end of nginx-rtmp's `on_publish` / `on_publish_done` notifications: an HTTP
//! server on 127.0.0.1 that counts the publish sessions each destination saw, and can refuse
//! publishes (403, as a platform refuses a wrong stream key).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

#[derive(Debug, Clone)]
pub struct Call {
    /// `publish` or `publish_done`.
    pub kind: String,
    /// The stream name (the destination key).
    pub name: String,
    pub at: Instant,
}

pub struct PublishHooks {
    pub url: String,
    calls: Arc<Mutex<Vec<Call>>>,
    refuse: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    port: u16,
}

impl PublishHooks {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let calls: Arc<Mutex<Vec<Call>>> = Arc::default();
        let refuse = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let (c, r, s) = (calls.clone(), refuse.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut conn) = conn else { continue };
                let mut line = String::new();
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                // GET /publish?app=live&name=KEY&... HTTP/1.0
                let target = line.split_whitespace().nth(1).unwrap_or("").to_owned();
                loop {
                    let mut header = String::new();
                    match reader.read_line(&mut header) {
                        Ok(0) | Err(_) => break,
                        Ok(_) if header.trim().is_empty() => break,
                        Ok(_) => {}
                    }
                }
                let (path, query) = target.split_once('?').unwrap_or((&target, ""));
                let kind = path.trim_start_matches('/').to_owned();
                let name = query
                    .split('&')
                    .find_map(|kv| kv.strip_prefix("name="))
                    .unwrap_or("")
                    .to_owned();
                let refused = kind == "publish" && r.load(Ordering::SeqCst);
                c.lock().unwrap().push(Call {
                    kind,
                    name,
                    at: Instant::now(),
                });
                let status = if refused { "403 Forbidden" } else { "200 OK" };
                let _ = write!(
                    conn,
                    "HTTP/1.0 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
            }
        });
        PublishHooks {
            url: format!("http://127.0.0.1:{port}"),
            calls,
            refuse,
            stop,
            port,
        }
    }

    /// From now on, every publish is refused (403) or accepted.
    pub fn refuse(&self, refuse: bool) {
        self.refuse.store(refuse, Ordering::SeqCst);
    }

    pub fn calls(&self, kind: &str, name: &str) -> Vec<Call> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.kind == kind && c.name == name)
            .cloned()
            .collect()
    }
}

impl Drop for PublishHooks {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so that it sees the flag.
        let _ = std::net::TcpStream::connect(("127.0.0.1", self.port));
    }
}
