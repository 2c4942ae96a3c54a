//! nginx-rtmp servers on 127.0.0.1, as destinations (they record into files the benchmark
//! watches, and report per-stream timestamps through `rtmp_stat`) and as the ingest of the
//! "nginx-rtmp push" baseline; and the synthetic publishers.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::{tls_front, wait_for};

pub const MODULE: &str = "/usr/lib/nginx/modules/ngx_rtmp_module.so";

/// Children die with the benchmark, even when it is killed.
fn die_with_parent(cmd: &mut Command) {
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
}

/// Applications of a destination server: `live` (no recording: for figures that only need
/// stream statistics), `rec` (records everything: arrival of every frame), `head` (records
/// the first 512 KB of each stream: its first frames, for many streams at little cost).
pub fn destination_apps(dir: &Path) -> String {
    destination_apps_notifying(dir, None)
}

/// Like [`destination_apps`], with `rec` sending nginx-rtmp's `on_publish` and
/// `on_publish_done` notifications to `notify` (tests/common/publish_hooks.rs), so that the
/// publish sessions each destination saw can be counted.
pub fn destination_apps_notifying(dir: &Path, notify: Option<&str>) -> String {
    format!(
        "application live {{ live on; }}\n\
         application rec {{ live on; record all; record_path {d}/rec; record_unique off;{hooks} }}\n\
         application head {{ live on; record all; record_path {d}/head; record_unique off;\n\
           record_max_size 512K; }}\n",
        d = dir.display(),
        hooks = notify.map_or(String::new(), |url| format!(
            "\n  on_publish {url}/publish; on_publish_done {url}/publish_done; \
             notify_method get;"
        )),
    )
}

/// Applications of the "nginx-rtmp push" ingest: `plain` relays nothing (its CPU is the
/// ingest's own), the others push every stream to the same application of each destination,
/// `dests` being the port it pushes to per destination (for an RTMPS destination a local
/// tunnel, [`Serve::tunnels`]).
pub fn push_apps(dests: &[u16]) -> String {
    let mut out = String::from("application plain { live on; }\n");
    for app in ["live", "rec", "head"] {
        out.push_str(&format!("application {app} {{ live on;\n"));
        for port in dests {
            out.push_str(&format!("  push rtmp://127.0.0.1:{port}/{app};\n"));
        }
        out.push_str("}\n");
    }
    out
}

/// How a server behaves beyond its applications.
#[derive(Debug, Clone)]
pub struct Serve {
    /// The chunk size nginx-rtmp announces (Set Chunk Size) to every client. A publisher that
    /// adopts the server's (ffmpeg 5.1) then writes chunks of this size; YouTube's ingest
    /// announces none, which leaves ffmpeg at RTMP's initial 128.
    pub chunk_size: u32,
    /// RTMPS: a TLS terminator (nginx's `stream` module in the same nginx,
    /// tests/common/tls_front.rs) on this port with this certificate and key, in front of the
    /// RTMP port.
    pub tls: Option<(u16, PathBuf, PathBuf)>,
    /// Local plain-to-TLS tunnels in the same nginx: (listen port, RTMPS port), for
    /// nginx-rtmp's `push`, which cannot speak RTMPS.
    pub tunnels: Vec<(u16, u16)>,
}

impl Default for Serve {
    /// nginx-rtmp's and OBS's 4096, plain RTMP.
    fn default() -> Self {
        Serve {
            chunk_size: 4096,
            tls: None,
            tunnels: vec![],
        }
    }
}

pub struct Nginx {
    pub port: u16,
    pub http_port: u16,
    pub dir: PathBuf,
    /// When it first accepted a TCP connection on its public port (unix seconds; polled
    /// every 2 ms from its start).
    pub listening_at: f64,
    pub serve: Serve,
    child: Option<Child>,
}

/// One stream as `rtmp_stat` shows it.
#[derive(Debug, Clone)]
pub struct StreamStat {
    pub app: String,
    pub name: String,
    /// The publisher's last message timestamp, seconds.
    pub timestamp: f64,
    /// The payload bytes of the audio and video messages the stream received (nginx-rtmp's
    /// `bytes_in` of the stream: the message lengths, no chunk headers).
    pub bytes_in: u64,
    pub publishing: bool,
}

impl Nginx {
    /// The same server again (ports, chunk size, TLS) after [`Nginx::stop`], in `dir`.
    pub fn again(&self, dir: &Path, apps: &str) -> Nginx {
        Self::start_serving(dir, self.port, self.http_port, self.serve.clone(), apps)
    }

    pub fn start_serving(dir: &Path, port: u16, http_port: u16, serve: Serve, apps: &str) -> Nginx {
        assert!(
            Path::new(MODULE).exists(),
            "{MODULE} missing: apt-get install nginx-light libnginx-mod-rtmp"
        );
        for sub in ["rec", "head", "tmp"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        // Workers run as nobody when nginx is started by root: let them write.
        let _ = Command::new("chmod")
            .args(["-R", "a+rwx"])
            .arg(dir)
            .status();
        let mut stream = String::new();
        if let Some((tls_port, cert, key)) = &serve.tls {
            stream.push_str(&tls_front::terminator(*tls_port, port, cert, key));
        }
        for (listen, upstream) in &serve.tunnels {
            stream.push_str(&tls_front::tunnel(*listen, *upstream));
        }
        let (stream_module, stream) = if stream.is_empty() {
            (String::new(), String::new())
        } else {
            (tls_front::load_module(), format!("stream {{\n{stream}}}\n"))
        };
        let conf = dir.join("nginx.conf");
        std::fs::write(
            &conf,
            format!(
                "load_module {MODULE};\n{stream_module}\
                 daemon off;\nmaster_process on;\nworker_processes 1;\n\
                 worker_rlimit_nofile 16384;\n\
                 pid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
                 events {{ worker_connections 8192; }}\n\
                 rtmp {{ server {{ listen 127.0.0.1:{port}; chunk_size {chunk};\n{apps}}} }}\n\
                 {stream}\
                 http {{ access_log off; server {{ listen 127.0.0.1:{http_port};\n\
                   location /stat {{ rtmp_stat all; }} }} }}\n",
                d = dir.display(),
                chunk = serve.chunk_size,
            ),
        )
        .unwrap();
        let mut cmd = Command::new("nginx");
        cmd.arg("-c")
            .arg(&conf)
            .arg("-p")
            .arg(dir.join("tmp"))
            .arg("-e")
            .arg(dir.join("error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        die_with_parent(&mut cmd);
        let child = cmd.spawn().expect("start nginx");
        let public = serve.tls.as_ref().map_or(port, |t| t.0);
        let mut server = Nginx {
            port,
            http_port,
            dir: dir.into(),
            listening_at: f64::NAN,
            serve,
            child: Some(child),
        };
        let up = wait_for(Duration::from_secs(10), Duration::from_millis(2), || {
            std::net::TcpStream::connect(("127.0.0.1", public))
                .ok()
                .map(|_| crate::common::arrivals::now())
        });
        server.listening_at = up.unwrap_or(f64::NAN);
        assert!(
            up.is_some(),
            "nginx did not listen on 127.0.0.1:{port}; see {}/error.log",
            dir.display()
        );
        server
    }

    /// Its plain RTMP URL (also behind a TLS terminator: the benchmark's own readers).
    pub fn url(&self, app: &str, name: &str) -> String {
        format!("rtmp://127.0.0.1:{}/{app}/{name}", self.port)
    }

    /// The port clients publish to: the TLS terminator's for an RTMPS server.
    pub fn public_port(&self) -> u16 {
        self.serve.tls.as_ref().map_or(self.port, |t| t.0)
    }

    /// The URL of application `app` as a destination: `rtmps://` for an RTMPS server.
    pub fn public_app_url(&self, app: &str) -> String {
        let scheme = if self.serve.tls.is_some() {
            "rtmps"
        } else {
            "rtmp"
        };
        format!("{scheme}://127.0.0.1:{}/{app}", self.public_port())
    }

    pub fn is_rtmps(&self) -> bool {
        self.serve.tls.is_some()
    }

    /// Where the application `app` (rec or head) records stream `name`.
    pub fn recording(&self, app: &str, name: &str) -> PathBuf {
        self.dir.join(app).join(format!("{name}.flv"))
    }

    /// The master and its workers.
    pub fn pids(&self) -> Vec<i32> {
        let Some(child) = &self.child else {
            return vec![];
        };
        let master = child.id() as i32;
        let mut pids = crate::procs::descendants(master);
        pids.push(master);
        pids
    }

    /// Every stream of every application.
    pub fn stat(&self) -> Vec<StreamStat> {
        let Some(xml) = http_get(self.http_port, "/stat") else {
            return vec![];
        };
        let mut out = Vec::new();
        for app in xml.split("<application>").skip(1) {
            let app_name = between(app, "<name>", "</name>").unwrap_or("").to_string();
            for stream in app.split("<stream>").skip(1) {
                let stream = stream.split("</stream>").next().unwrap_or("");
                let name = between(stream, "<name>", "</name>")
                    .unwrap_or("")
                    .to_string();
                let head = stream.split("<client>").next().unwrap_or("");
                let bytes_in = between(head, "<bytes_in>", "</bytes_in>")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                let publisher = stream
                    .split("<client>")
                    .skip(1)
                    .find(|c| c.contains("<publishing/>"));
                let timestamp = publisher
                    .and_then(|c| between(c, "<timestamp>", "</timestamp>"))
                    .and_then(|v| v.parse::<f64>().ok())
                    .map_or(0.0, |ms| ms / 1000.0);
                out.push(StreamStat {
                    app: app_name.clone(),
                    name,
                    timestamp,
                    bytes_in,
                    publishing: publisher.is_some(),
                });
            }
        }
        out
    }

    /// Stops the server now (SIGTERM to the master, which stops its workers).
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let workers = crate::procs::descendants(child.id() as i32);
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let done = wait_for(Duration::from_secs(5), Duration::from_millis(10), || {
            child.try_wait().ok().flatten()
        });
        if done.is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // A worker may outlive its master for a moment; never leave one behind.
        for w in workers {
            if crate::procs::alive(w) && crate::procs::comm(w).as_deref() == Some("nginx") {
                unsafe { libc::kill(w, libc::SIGKILL) };
            }
        }
        let _ = std::fs::remove_file(self.dir.join("nginx.pid"));
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.stop();
    }
}

fn between<'a>(text: &'a str, open: &str, close: &str) -> Option<&'a str> {
    let start = text.find(open)? + open.len();
    let end = text[start..].find(close)? + start;
    Some(&text[start..end])
}

/// A plain HTTP/1.0 GET on 127.0.0.1 (the benchmark has no HTTP client dependency).
pub fn http_get(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    let (_, body) = body.split_once("\r\n\r\n")?;
    Some(body.to_string())
}

/// `ffmpeg -re -stream_loop -1 -i CLIP -c copy -f flv URL`: the synthetic publisher.
pub struct Publisher {
    child: Child,
}

impl Publisher {
    pub fn start(clip: &Path, url: &str) -> Publisher {
        let mut cmd = Command::new("ffmpeg");
        cmd.args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-nostdin",
            "-re",
            "-stream_loop",
            "-1",
            "-i",
        ])
        .arg(clip)
        .args(["-c", "copy", "-f", "flv", url])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        // No pre_exec here: std then uses posix_spawn (vfork), ~1 ms per publisher instead of
        // a fork of the benchmark, so that a storm of publishers starts within a second. A
        // publisher left behind by a killed benchmark ends by itself once its ingest is gone.
        Publisher {
            child: cmd.spawn().expect("start a publisher (ffmpeg)"),
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// SIGTERM now, without waiting (see `reap`).
    pub fn signal(&self) {
        unsafe { libc::kill(self.pid(), libc::SIGTERM) };
    }

    pub fn reap(&mut self) {
        let done = wait_for(Duration::from_secs(5), Duration::from_millis(10), || {
            self.child.try_wait().ok().flatten()
        });
        if done.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.signal();
            self.reap();
        }
    }
}

/// Stops many publishers at once: all signalled, then all reaped.
pub fn stop_all(publishers: &mut Vec<Publisher>) {
    for p in publishers.iter() {
        p.signal();
    }
    for p in publishers.iter_mut() {
        p.reap();
    }
    publishers.clear();
}
