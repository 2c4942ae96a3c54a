//! A TCP relay on 127.0.0.1 between a publisher and its ingest that stamps the publisher's
//! first byte (the first packet of the RTMP handshake): the start of "publish → first frame"
//! as a streamer sees it. One connection; both directions pumped by threads of their own
//! until either side closes; everything closed on drop.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::arrivals::now;

pub struct Tap {
    pub port: u16,
    first: Arc<Mutex<Option<f64>>>,
    streams: Arc<Mutex<Vec<TcpStream>>>,
}

/// How long the tap waits for its publisher to connect.
const ACCEPT_WITHIN: Duration = Duration::from_secs(20);

fn pump(mut from: TcpStream, mut to: TcpStream, first: Option<Arc<Mutex<Option<f64>>>>) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if let Some(f) = &first {
                    let mut f = f.lock().unwrap();
                    if f.is_none() {
                        *f = Some(now());
                    }
                }
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

impl Tap {
    /// Listens on a free port of 127.0.0.1 and relays its one connection to `upstream`.
    pub fn start(upstream: u16) -> Tap {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the tap");
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let first: Arc<Mutex<Option<f64>>> = Arc::default();
        let streams: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (f, s) = (first.clone(), streams.clone());
        std::thread::spawn(move || {
            let deadline = Instant::now() + ACCEPT_WITHIN;
            let client = loop {
                match listener.accept() {
                    Ok((c, _)) => break c,
                    Err(_) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(1))
                    }
                    Err(_) => return,
                }
            };
            // The first bytes may already wait in the socket: stamp before connecting on.
            let _ = client.set_nonblocking(false);
            let _ = client.set_read_timeout(Some(ACCEPT_WITHIN));
            let mut peek = [0u8; 1];
            if client.peek(&mut peek).is_ok_and(|n| n > 0) {
                *f.lock().unwrap() = Some(now());
            }
            let _ = client.set_read_timeout(None);
            let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            s.lock()
                .unwrap()
                .extend([client.try_clone().unwrap(), server.try_clone().unwrap()]);
            std::thread::spawn(move || pump(s2, c2, None));
            pump(client, server, Some(f));
        });
        Tap {
            port,
            first,
            streams,
        }
    }

    /// When the publisher's first byte arrived (unix seconds).
    pub fn first_byte(&self) -> Option<f64> {
        *self.first.lock().unwrap()
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        for s in self.streams.lock().unwrap().iter() {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}
