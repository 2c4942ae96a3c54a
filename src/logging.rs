//! Logging: to journald with structured fields when systemd connected our stderr to the
//! journal (relay units, and hooks of a MediaMTX that runs under systemd); to stderr otherwise.
//!
//! Journal fields come from the event's fields, upper-cased: `stream_key` → `STREAM_KEY`,
//! `destination_platform` → `DESTINATION_PLATFORM`, `destination_index` → `DESTINATION_INDEX`.

use std::os::unix::fs::MetadataExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

pub fn init(level: tracing::Level, identifier: &str) {
    let filter = tracing_subscriber::filter::LevelFilter::from_level(level);
    if stderr_is_journal() {
        match tracing_journald::layer() {
            Ok(layer) => {
                let layer = layer
                    .with_field_prefix(None)
                    .with_syslog_identifier(identifier.to_owned());
                tracing_subscriber::registry()
                    .with(filter)
                    .with(layer)
                    .init();
                return;
            }
            // journald is a side channel: without it, log to stderr (still the journal).
            Err(err) => eprintln!("neustream: journald unavailable ({err}); logging to stderr"),
        }
    }
    tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(false)
                .with_target(false),
        )
        .init();
}

/// True when `JOURNAL_STREAM` names the device and inode of our stderr (systemd.exec(5)).
fn stderr_is_journal() -> bool {
    let Some(value) = crate::config::journal_stream() else {
        return false;
    };
    let Ok(meta) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    value == format!("{}:{}", meta.dev(), meta.ino())
}
