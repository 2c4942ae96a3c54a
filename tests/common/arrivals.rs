//! When frames reach a destination (tests and the benchmark): nginx-rtmp records what is published to it (`record all`)
//! by writing each FLV tag with its own write(2) as the message arrives, so the recording grows
//! frame by frame. A watcher thread polls the recordings every few milliseconds, parses the new
//! tags, and stamps each video frame with the wall-clock time it first saw it. A frame's
//! arrival time is therefore known to within one polling interval (plus nginx's own handling),
//! and it does not depend on a reader's buffering or probing.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Unix time in seconds, the clock every component of the benchmark stamps with (the hooks
/// inside the nspawn machine read the same clock through bash's $EPOCHREALTIME).
pub fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[derive(Debug, Clone, Copy)]
pub struct Frame {
    /// When the watcher first saw it (unix seconds).
    pub wall: f64,
    pub key: bool,
}

#[derive(Default)]
struct Tail {
    path: PathBuf,
    file: Option<File>,
    offset: u64,
    buf: Vec<u8>,
    header_done: bool,
    frames: Vec<Frame>,
}

impl Tail {
    fn poll(&mut self, wall: f64) {
        if self.file.is_none() {
            match File::open(&self.path) {
                Ok(f) => self.file = Some(f),
                Err(_) => return,
            }
        }
        let file = self.file.as_mut().unwrap();
        let Ok(len) = file.metadata().map(|m| m.len()) else {
            return;
        };
        if len < self.offset {
            // Truncated: a new recording under the same name.
            self.offset = 0;
            self.buf.clear();
            self.header_done = false;
        }
        if len == self.offset {
            return;
        }
        if file.seek(SeekFrom::Start(self.offset)).is_err() {
            return;
        }
        let mut chunk = Vec::with_capacity((len - self.offset) as usize);
        if file
            .take(len - self.offset)
            .read_to_end(&mut chunk)
            .is_err()
        {
            return;
        }
        self.offset += chunk.len() as u64;
        self.buf.extend_from_slice(&chunk);
        self.parse(wall);
    }

    fn parse(&mut self, wall: f64) {
        let b = &self.buf;
        let mut pos = 0usize;
        if !self.header_done {
            if b.len() < 13 {
                return;
            }
            if &b[0..3] != b"FLV" {
                self.buf.clear();
                return;
            }
            let header = u32::from_be_bytes([b[5], b[6], b[7], b[8]]) as usize;
            pos = header + 4;
            self.header_done = true;
        }
        loop {
            if b.len() < pos + 11 {
                break;
            }
            let kind = b[pos] & 0x1f;
            let size = u32::from_be_bytes([0, b[pos + 1], b[pos + 2], b[pos + 3]]) as usize;
            let total = 11 + size + 4;
            if b.len() < pos + total {
                break;
            }
            if kind == 9 && size >= 2 {
                let first = b[pos + 11];
                let codec = first & 0x0f;
                // AVC: packet type 0 is the sequence header, not a frame.
                let is_frame = codec != 7 || b[pos + 12] == 1;
                if is_frame {
                    self.frames.push(Frame {
                        wall,
                        key: first >> 4 == 1,
                    });
                }
            }
            pos += total;
        }
        self.buf.drain(..pos.min(self.buf.len()));
    }
}

/// Polls recordings in a thread of its own; stopped on drop.
pub struct Watcher {
    tails: Arc<Mutex<HashMap<String, Tail>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Watcher {
    pub fn start(every: Duration) -> Watcher {
        let tails: Arc<Mutex<HashMap<String, Tail>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (t, s) = (tails.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                let wall = now();
                for tail in t.lock().unwrap().values_mut() {
                    tail.poll(wall);
                }
                std::thread::sleep(every);
            }
        });
        Watcher {
            tails,
            stop,
            thread: Some(thread),
        }
    }

    /// Starts watching `path` (it may not exist yet) under `name`.
    pub fn watch(&self, name: &str, path: &Path) {
        self.tails.lock().unwrap().insert(
            name.into(),
            Tail {
                path: path.into(),
                ..Tail::default()
            },
        );
    }

    pub fn forget(&self, name: &str) {
        self.tails.lock().unwrap().remove(name);
    }

    pub fn frames(&self, name: &str) -> Vec<Frame> {
        self.tails
            .lock()
            .unwrap()
            .get(name)
            .map(|t| t.frames.clone())
            .unwrap_or_default()
    }

    /// When the first video keyframe of `name` arrived.
    pub fn first_key(&self, name: &str) -> Option<f64> {
        let tails = self.tails.lock().unwrap();
        tails
            .get(name)?
            .frames
            .iter()
            .find(|f| f.key)
            .map(|f| f.wall)
    }

    /// Arrival times of the keyframes of `name`.
    pub fn keyframes(&self, name: &str) -> Vec<f64> {
        self.frames(name)
            .iter()
            .filter(|f| f.key)
            .map(|f| f.wall)
            .collect()
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The largest wall-clock gap between consecutive video frames that arrived in `[from, to]`,
/// counting the edges of the window (so a destination that stops receiving shows the gap
/// until `to`). Infinite when nothing arrived.
pub fn worst_gap(frames: &[Frame], from: f64, to: f64) -> f64 {
    let mut last = None::<f64>;
    let mut worst = 0.0f64;
    for f in frames.iter().filter(|f| f.wall >= from && f.wall <= to) {
        worst = worst.max(f.wall - last.unwrap_or(from));
        last = Some(f.wall);
    }
    match last {
        Some(l) => worst.max(to - l),
        None => f64::INFINITY,
    }
}
