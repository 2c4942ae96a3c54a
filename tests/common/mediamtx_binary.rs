//! The MediaMTX binary the tests run, built (or found in the cache) by
//! tests/support/build-mediamtx.sh. Apart from the machine-based helpers in `mediamtx.rs` so
//! that the RTMP client's interop tests (src/rtmp/tests_interop.rs) can include it too.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const PROJECT: &str = env!("CARGO_MANIFEST_DIR");

/// The MediaMTX release the shipped configuration is written for.
pub const VERSION: &str = "v1.21.0";
/// The MediaMTX binary of `version`, built (or found in the cache) by
/// tests/support/build-mediamtx.sh. Fails with the script's own words if it cannot be built.
pub fn binary(version: &str) -> PathBuf {
    let script = Path::new(PROJECT).join("tests/support/build-mediamtx.sh");
    let out = Command::new(&script)
        .arg(version)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let path = stdout.lines().last().map(str::trim).unwrap_or("");
    assert!(
        out.status.success() && Path::new(path).is_file(),
        "MediaMTX {version} could not be built by {} ({}); it needs Go, npm and the Go module \
         proxy (see .ci/run). Its output:\n{}",
        script.display(),
        out.status,
        tail(&String::from_utf8_lossy(&out.stderr), 30)
    );
    PathBuf::from(path)
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
