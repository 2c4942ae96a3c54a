//! Helpers shared by the integration and system tests: free ports, bounded waits, real RTMP
//! servers (nginx + libnginx-mod-rtmp), a synthetic publisher, and ffprobe of what arrived.
#![allow(dead_code)]

pub mod arrivals;
pub mod control_plane_double;
pub mod file_server;
pub mod machine;
pub mod media;
pub mod mediamtx;
pub mod nginx;
pub mod publish_hooks;
pub mod rtmps;
pub mod scene;
pub mod slow_link;
pub mod stack;
pub mod tls_front;
pub mod wire;

use std::net::TcpListener;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `check` every `every` until it returns Some or `timeout` passes.
pub fn wait_for<T>(
    timeout: Duration,
    every: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(every);
    }
}

/// A fresh scratch directory for one test, under the target directory.
pub fn scratch(name: &str) -> PathBuf {
    let dir =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Fails with a message naming what is missing, rather than skipping silently.
pub fn require_tool(tool: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "{tool} is not installed: apt-get install {package} (see .ci/run)"
    );
}
