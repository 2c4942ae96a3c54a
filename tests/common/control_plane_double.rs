//! A Control Plane double: an HTTP/1.1 server on 127.0.0.1 that speaks the contract of
//! `shared/notes/control-plane-contract.md` (answers, status codes and bodies), with scripted
//! failures (status, delay, garbage, oversize, dropped connection), and records every request.
//!
//! Shared by the unit tests of `src/control_plane.rs` and the system tests.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// How the double answers one request.
#[derive(Clone, Debug)]
pub enum Reply {
    /// What the real Control Plane answers for this request and key.
    Contract,
    /// A status with a plain-text body.
    Text(u16, String),
    /// A status with a JSON body.
    Json(u16, String),
    /// Wait, then answer.
    Delay(Duration, Box<Reply>),
    /// Close the connection without answering.
    Drop,
}

#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub body: String,
    pub authorization: Option<String>,
    /// The status it was answered with (0: the connection was dropped unanswered).
    pub status: u16,
}

#[derive(Default)]
struct State {
    /// stream key → its destinations (platform, rtmp_url, stream_key).
    streams: HashMap<String, Vec<(String, String, String)>>,
    auth: HashMap<String, Vec<Reply>>,
    forwarding: HashMap<String, Vec<Reply>>,
    stream_end: Vec<Reply>,
    /// An outage: until then every request gets this reply (a deploy, a database failover).
    outage: Option<(Instant, Reply)>,
    requests: Vec<Recorded>,
}

pub struct ControlPlaneDouble {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl ControlPlaneDouble {
    pub fn start() -> Self {
        Self::start_on("127.0.0.1:0")
    }

    pub fn start_on(addr: &str) -> Self {
        let listener = TcpListener::bind(addr).expect("bind the Control Plane double");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp) = (state.clone(), stop.clone());
        let thread = thread::spawn(move || {
            for conn in listener.incoming() {
                if sp.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let st = st.clone();
                thread::spawn(move || {
                    let _ = serve(conn, &st);
                });
            }
        });
        ControlPlaneDouble {
            addr,
            state,
            stop,
            thread: Some(thread),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A valid, active stream key with these destinations (platform, rtmp_url, stream_key).
    pub fn add_stream(&self, key: &str, destinations: &[(&str, &str, &str)]) {
        let list = destinations
            .iter()
            .map(|(p, u, k)| (p.to_string(), u.to_string(), k.to_string()))
            .collect();
        self.state.lock().unwrap().streams.insert(key.into(), list);
    }

    /// Answers for the next auth requests of `key`, in order; the last one repeats.
    pub fn script_auth(&self, key: &str, replies: Vec<Reply>) {
        self.state.lock().unwrap().auth.insert(key.into(), replies);
    }

    pub fn script_forwarding(&self, key: &str, replies: Vec<Reply>) {
        self.state
            .lock()
            .unwrap()
            .forwarding
            .insert(key.into(), replies);
    }

    pub fn script_stream_end(&self, replies: Vec<Reply>) {
        self.state.lock().unwrap().stream_end = replies;
    }

    /// From now on and for `length`, every request is answered `reply` (e.g. a 500, or
    /// `Reply::Drop` for an unreachable Control Plane); then the contract again.
    pub fn outage(&self, length: Duration, reply: Reply) {
        self.state.lock().unwrap().outage = Some((Instant::now() + length, reply));
    }

    /// Stream-ends of `key` the double answered with a 2xx: the ones the real Control Plane
    /// would have acted on.
    pub fn confirmed_ends(&self, key: &str) -> usize {
        let form = format!("name={key}");
        self.requests()
            .iter()
            .filter(|r| r.path == "/api/auth/stream-end" && r.body == form)
            .filter(|r| (200..300).contains(&r.status))
            .count()
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().unwrap().requests.clone()
    }

    /// How many requests of `method path` carried the form `name=<key>` (or path key).
    pub fn count(&self, method: &str, path: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.method == method && r.path == path)
            .count()
    }

    pub fn count_for(&self, method: &str, path: &str, key: &str) -> usize {
        let form = format!("name={key}");
        self.requests()
            .iter()
            .filter(|r| r.method == method && r.path == path && r.body == form)
            .count()
    }
}

impl Drop for ControlPlaneDouble {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn next_reply(map: &mut HashMap<String, Vec<Reply>>, key: &str) -> Reply {
    match map.get_mut(key) {
        Some(list) if list.len() > 1 => list.remove(0),
        Some(list) if list.len() == 1 => list[0].clone(),
        _ => Reply::Contract,
    }
}

fn serve(conn: TcpStream, state: &Mutex<State>) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("").to_string();
    let mut length = 0usize;
    let mut authorization = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
        let (name, value) = line.split_once(':').unwrap_or((&line, ""));
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => length = value.trim().parse().unwrap_or(0),
            "authorization" => authorization = Some(value.trim().to_string()),
            _ => {}
        }
    }
    let mut body = vec![0; length.min(1 << 20)];
    reader.read_exact(&mut body)?;
    let body = String::from_utf8_lossy(&body).to_string();
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let path = path.to_string();
    // The real server reads the key from the form, or from ?name= in the query string.
    let form_key = body
        .split('&')
        .chain(query.split('&'))
        .find_map(|kv| kv.strip_prefix("name="))
        .unwrap_or("")
        .to_string();

    let reply = {
        let mut st = state.lock().unwrap();
        st.requests.push(Recorded {
            method: method.clone(),
            path: path.clone(),
            body: body.clone(),
            authorization,
            status: 0,
        });
        let outage = match &st.outage {
            Some((until, reply)) if Instant::now() < *until => Some(reply.clone()),
            _ => None,
        };
        let reply = match outage {
            Some(reply) => reply,
            None => match (method.as_str(), path.as_str()) {
                ("POST", "/api/auth/stream") => {
                    let scripted = next_reply(&mut st.auth, &form_key);
                    contract_or(scripted, || {
                        if st.streams.contains_key(&form_key) {
                            Reply::Text(200, "OK".into())
                        } else {
                            Reply::Text(401, "Invalid stream key".into())
                        }
                    })
                }
                ("GET", p) if p.starts_with("/api/streams/forwarding/") => {
                    let key = p.trim_start_matches("/api/streams/forwarding/").to_string();
                    let scripted = next_reply(&mut st.forwarding, &key);
                    contract_or(scripted, || match st.streams.get(&key) {
                        Some(dests) => Reply::Json(200, forwarding_json(&key, dests)),
                        None => Reply::Json(404, r#"{"error":"Stream key not found"}"#.into()),
                    })
                }
                ("POST", "/api/auth/stream-end") => {
                    let scripted = match st.stream_end.len() {
                        0 => Reply::Contract,
                        1 => st.stream_end[0].clone(),
                        _ => st.stream_end.remove(0),
                    };
                    contract_or(scripted, || Reply::Text(200, "OK".into()))
                }
                // MediaMTX's Control API (v3) kick, for system tests that point
                // NEUSTREAM_MEDIAMTX_API_URL here: recorded like the rest.
                ("POST", p) if p.starts_with("/v3/") && p.contains("/kick/") => {
                    Reply::Text(200, String::new())
                }
                _ => Reply::Text(404, "Not found".into()),
            },
        };
        let status = final_status(&reply);
        st.requests.last_mut().unwrap().status = status;
        reply
    };
    answer(conn, reply)
}

fn final_status(reply: &Reply) -> u16 {
    match reply {
        Reply::Text(s, _) | Reply::Json(s, _) => *s,
        Reply::Delay(_, inner) => final_status(inner),
        Reply::Drop | Reply::Contract => 0,
    }
}

fn contract_or(reply: Reply, contract: impl FnOnce() -> Reply) -> Reply {
    match reply {
        Reply::Contract => contract(),
        Reply::Delay(d, inner) if matches!(*inner, Reply::Contract) => {
            Reply::Delay(d, Box::new(contract()))
        }
        other => other,
    }
}

fn answer(mut conn: TcpStream, reply: Reply) -> std::io::Result<()> {
    let (status, content_type, body) = match reply {
        Reply::Delay(d, inner) => {
            thread::sleep(d);
            return answer(conn, *inner);
        }
        Reply::Drop | Reply::Contract => return Ok(()),
        Reply::Text(s, b) => (s, "text/plain; charset=utf-8", b),
        Reply::Json(s, b) => (s, "application/json; charset=utf-8", b),
    };
    let head = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes())?;
    conn.write_all(body.as_bytes())?;
    conn.flush()
}

/// The forwarding answer of the real Control Plane, extra fields and nginx-style pushConfig
/// included.
pub fn forwarding_json(key: &str, dests: &[(String, String, String)]) -> String {
    let list: Vec<String> = dests
        .iter()
        .map(|(p, u, k)| {
            format!(
                r#"{{"platform":{},"rtmp_url":{},"stream_key":{},"id":1,"is_active":true}}"#,
                json_str(p),
                json_str(u),
                json_str(k)
            )
        })
        .collect();
    let push: Vec<String> = dests
        .iter()
        .map(|(_, u, k)| json_str(&format!("push {u}/{k}")))
        .collect();
    format!(
        r#"{{"streamKey":{},"sourceId":42,"userId":7,"sourceName":"Main camera","destinations":[{}],"pushConfig":[{}]}}"#,
        json_str(key),
        list.join(","),
        push.join(",")
    )
}

fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
