//! A slow network path to a destination: a TCP proxy on 127.0.0.1 that forwards what the
//! client sends at a fixed rate (the server's answers go back at full speed).

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct SlowLink {
    pub port: u16,
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
}

impl SlowLink {
    pub fn start(upstream_port: u16, bytes_per_second: usize) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (s, c) = (stop.clone(), conns.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream_port)) else {
                    continue;
                };
                c.lock()
                    .unwrap()
                    .extend([client.try_clone().unwrap(), server.try_clone().unwrap()]);
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let stop = s.clone();
                std::thread::spawn(move || pump(client, server, Some(bytes_per_second), stop));
                let stop = s.clone();
                std::thread::spawn(move || pump(s2, c2, None, stop));
            }
        });
        SlowLink { port, stop, conns }
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, rate: Option<usize>, stop: Arc<AtomicBool>) {
    let start = Instant::now();
    let mut sent = 0usize;
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::SeqCst) {
        let chunk = rate.map_or(buf.len(), |r| (r / 20).clamp(1, buf.len()));
        let n = match from.read(&mut buf[..chunk]) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
        sent += n;
        if let Some(r) = rate {
            let due = Duration::from_secs_f64(sent as f64 / r as f64);
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                std::thread::sleep(wait);
            }
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}

impl Drop for SlowLink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for c in self.conns.lock().unwrap().iter() {
            let _ = c.shutdown(Shutdown::Both);
        }
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}
