//! sd_notify: READY=1, STATUS= and STOPPING=1 to systemd (`Type=notify`). A side channel:
//! outside systemd (no `NOTIFY_SOCKET`) nothing is sent, and a failure is a warning, once.

use std::sync::atomic::{AtomicBool, Ordering};

use sd_notify::NotifyState;

static WARNED: AtomicBool = AtomicBool::new(false);

fn send(state: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(state) {
        if !WARNED.swap(true, Ordering::Relaxed) {
            tracing::warn!("sd_notify failed (systemd will not see the relay's state): {e}");
        }
    }
}

pub fn ready() {
    send(&[NotifyState::Ready]);
}

pub fn status(line: &str) {
    send(&[NotifyState::Status(line)]);
}

pub fn stopping() {
    send(&[NotifyState::Stopping]);
}
