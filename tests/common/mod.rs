//! Helpers shared by the integration and system tests: free ports, bounded waits, real RTMP
//! servers (nginx + libnginx-mod-rtmp), a synthetic publisher, and ffprobe of what arrived.
#![allow(dead_code)]

pub mod arrivals;
pub mod control_plane_double;
pub mod file_server;
pub mod machine;
pub mod media;
pub mod media_server;
pub mod mediamtx;
pub mod mediamtx_binary;
pub mod nginx;
pub mod probe;
pub mod publish_hooks;
pub mod rtmps;
pub mod scene;
pub mod slow_link;
pub mod stack;
pub mod tls_front;
pub mod util;
pub mod wire;

pub use util::{free_port, free_udp_port, require_tool, wait_for};

use std::path::PathBuf;

/// A fresh scratch directory for one test, under the target directory.
pub fn scratch(name: &str) -> PathBuf {
    let dir =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
