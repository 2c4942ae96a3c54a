//! Real RTMP servers: nginx with libnginx-mod-rtmp, one instance per server, on 127.0.0.1.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const MODULE: &str = "/usr/lib/nginx/modules/ngx_rtmp_module.so";

/// An nginx-rtmp server with an application `live` that records what is published to it into
/// `<dir>/rec/<stream name>.flv`. Stopped on drop.
pub struct RtmpServer {
    pub port: u16,
    pub dir: PathBuf,
    child: Option<Child>,
}

impl RtmpServer {
    pub fn start(dir: &Path) -> Self {
        Self::start_on(dir, super::free_port())
    }

    /// On a given port (to bring a server back where a relay expects it).
    pub fn start_on(dir: &Path, port: u16) -> Self {
        Self::start_notifying(dir, port, None)
    }

    /// With nginx-rtmp's `on_publish` and `on_publish_done` notifications sent to
    /// `notify` (`<notify>/publish`, `<notify>/publish_done`): a publish is refused unless
    /// the answer is 2xx (see [`super::publish_hooks::PublishHooks`]).
    pub fn start_notifying(dir: &Path, port: u16, notify: Option<&str>) -> Self {
        Self::start_with(dir, port, notify, 4096)
    }

    /// Like [`Self::start_notifying`], announcing `chunk_size` to clients (nginx-rtmp's
    /// default is 4096; YouTube's ingest leaves the protocol's 128).
    pub fn start_with(dir: &Path, port: u16, notify: Option<&str>, chunk_size: u32) -> Self {
        super::require_tool("nginx", "nginx-light libnginx-mod-rtmp");
        assert!(
            Path::new(MODULE).exists(),
            "{MODULE} missing: apt-get install libnginx-mod-rtmp"
        );
        let rec = dir.join("rec");
        std::fs::create_dir_all(&rec).unwrap();
        std::fs::create_dir_all(dir.join("tmp")).unwrap();
        // nginx workers run as nobody when started by root: let them write.
        let _ = Command::new("chmod")
            .args(["-R", "a+rwx"])
            .arg(dir)
            .status();
        let conf = dir.join("nginx.conf");
        std::fs::write(
            &conf,
            format!(
                "load_module {MODULE};\n\
                 daemon off;\nmaster_process on;\nworker_processes 1;\n\
                 pid {dir}/nginx.pid;\nerror_log {dir}/error.log info;\n\
                 events {{ worker_connections 1024; }}\n\
                 rtmp {{ server {{ listen 127.0.0.1:{port}; chunk_size {chunk_size};\n\
                   application live {{ live on; record all; record_path {rec};\n\
                     record_unique off; record_append on; {hooks} }}\n\
                 }} }}\n",
                dir = dir.display(),
                rec = rec.display(),
                hooks = notify.map_or(String::new(), |url| format!(
                    "on_publish {url}/publish; on_publish_done {url}/publish_done; \
                     notify_method get;"
                )),
            ),
        )
        .unwrap();
        let child = Command::new("nginx")
            .arg("-c")
            .arg(&conf)
            .arg("-p")
            .arg(dir.join("tmp"))
            .arg("-e")
            .arg(dir.join("error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx");
        let server = RtmpServer {
            port,
            dir: dir.into(),
            child: Some(child),
        };
        let up = super::wait_for(Duration::from_secs(10), Duration::from_millis(50), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        });
        assert!(
            up.is_some(),
            "nginx did not listen on 127.0.0.1:{port}; see {}/error.log",
            dir.display()
        );
        server
    }

    pub fn url(&self, app_and_name: &str) -> String {
        format!("rtmp://127.0.0.1:{}/{app_and_name}", self.port)
    }

    /// How many publish sessions of stream `name` the server accepted (its own log).
    pub fn publishes(&self, name: &str) -> usize {
        std::fs::read_to_string(self.dir.join("error.log"))
            .unwrap_or_default()
            .matches(&format!("publish: name='{name}'"))
            .count()
    }

    pub fn recording(&self, name: &str) -> PathBuf {
        self.dir.join("rec").join(format!("{name}.flv"))
    }

    /// Stops the server now (SIGTERM to the master, which stops its worker).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let waited = super::wait_for(Duration::from_secs(5), Duration::from_millis(20), || {
                child.try_wait().ok().flatten()
            });
            if waited.is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
            // The worker may linger a moment after the master.
            let pidfile = self.dir.join("nginx.pid");
            let _ = std::fs::remove_file(pidfile);
        }
    }
}

impl Drop for RtmpServer {
    fn drop(&mut self) {
        self.stop();
    }
}
