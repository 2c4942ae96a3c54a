//! What each destination's server has really taken: the kernel's own counters of the TCP
//! connection its ffmpeg holds (`tcp_info`: bytes acknowledged, bytes sent, RTT, delivery
//! rate), read without touching ffmpeg. The relay lists the socket inodes of the ffmpeg child
//! (`/proc/<pid>/fd`) and asks `sock_diag` over netlink for the TCP sockets of this network
//! namespace (unprivileged; `ss -ti` does the same); the unit allows `AF_NETLINK` for it.
//!
//! The netlink exchange is written here by hand: one fixed request (`inet_diag_req_v2`) and
//! fixed offsets in the answer, with `libc` only, tested on captured bytes below.

use std::collections::{HashMap, HashSet};
use std::io;
use std::sync::{Arc, Weak};
use std::time::Duration;

use serde::Serialize;

const NETLINK_SOCK_DIAG: libc::c_int = 4;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const INET_DIAG_INFO: u16 = 2;
const NLMSG_HDR: usize = 16;
/// `struct inet_diag_msg`; `idiag_inode` at 68.
const DIAG_MSG: usize = 72;
const DIAG_INODE: usize = 68;
/// Offsets in `struct tcp_info` (linux/tcp.h; checked with offsetof on Debian 12's headers).
const TCPI_RTT: usize = 68;
const TCPI_BYTES_ACKED: usize = 120;
const TCPI_DELIVERY_RATE: usize = 160;
const TCPI_BYTES_SENT: usize = 200;
/// A dump answer that takes longer than this is abandoned (the kernel answers in microseconds).
const RECV_TIMEOUT: Duration = Duration::from_millis(500);

/// One connection's counters, as the kernel reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sample {
    pub bytes_acked: u64,
    /// Zero on kernels before 4.19 (no `tcpi_bytes_sent`).
    pub bytes_sent: u64,
    pub rtt_us: u32,
    /// Bytes per second.
    pub delivery_rate: u64,
}

/// A destination's counters over every session of this relay (the state file's `tcp`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Totals {
    pub bytes_acked: u64,
    pub bytes_sent: u64,
    /// Of the current connection; none between connections.
    pub rtt_ms: Option<f64>,
    pub delivery_rate: Option<u64>,
}

/// Inodes of the sockets `pid` holds open (`socket:[N]` links in `/proc/<pid>/fd`).
pub fn socket_inodes(pid: u32) -> Vec<u64> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let link = std::fs::read_link(e.ok()?.path()).ok()?;
        let link = link.to_str()?;
        link.strip_prefix("socket:[")?
            .strip_suffix(']')?
            .parse()
            .ok()
    })
    .collect()
}

/// The counters of those TCP sockets (IPv4 and IPv6) of this network namespace whose inode is
/// in `inodes`.
pub fn query(inodes: &HashSet<u64>) -> io::Result<HashMap<u64, Sample>> {
    let mut out = HashMap::new();
    if inodes.is_empty() {
        return Ok(out);
    }
    let sock = Netlink::open()?;
    for family in [libc::AF_INET as u8, libc::AF_INET6 as u8] {
        sock.send(&request(family, 1))?;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = sock.recv(&mut buf)?;
            match parse(&buf[..n], inodes, &mut out)? {
                Parsed::More => continue,
                Parsed::Done => break,
            }
        }
    }
    Ok(out)
}

/// `nlmsghdr` + `inet_diag_req_v2`: dump every TCP socket of `family`, with `tcp_info`.
fn request(family: u8, seq: u32) -> Vec<u8> {
    let len = NLMSG_HDR + 56;
    let mut b = Vec::with_capacity(len);
    b.extend_from_slice(&(len as u32).to_ne_bytes());
    b.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16;
    b.extend_from_slice(&flags.to_ne_bytes());
    b.extend_from_slice(&seq.to_ne_bytes());
    b.extend_from_slice(&0u32.to_ne_bytes());
    b.push(family);
    b.push(libc::IPPROTO_TCP as u8);
    b.push(1 << (INET_DIAG_INFO - 1)); // idiag_ext
    b.push(0);
    b.extend_from_slice(&u32::MAX.to_ne_bytes()); // every state
    b.resize(len, 0); // inet_diag_sockid: any
    b
}

#[derive(Debug, PartialEq)]
enum Parsed {
    More,
    Done,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}
fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_ne_bytes(b.get(at..at + 8)?.try_into().ok()?))
}
fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// One datagram of the dump answer: the messages of wanted sockets go to `out`.
fn parse(
    mut buf: &[u8],
    inodes: &HashSet<u64>,
    out: &mut HashMap<u64, Sample>,
) -> io::Result<Parsed> {
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "malformed sock_diag answer");
    while buf.len() >= NLMSG_HDR {
        let len = u32_at(buf, 0).ok_or_else(bad)? as usize;
        let kind = u16_at(buf, 4).ok_or_else(bad)?;
        if len < NLMSG_HDR || len > buf.len() {
            return Err(bad());
        }
        let msg = &buf[NLMSG_HDR..len];
        match kind {
            NLMSG_DONE => return Ok(Parsed::Done),
            NLMSG_ERROR => {
                let errno = u32_at(msg, 0).ok_or_else(bad)? as i32;
                return Err(io::Error::from_raw_os_error(-errno));
            }
            SOCK_DIAG_BY_FAMILY if msg.len() >= DIAG_MSG => {
                let inode = u64::from(u32_at(msg, DIAG_INODE).ok_or_else(bad)?);
                if inodes.contains(&inode) {
                    if let Some(sample) = tcp_info(&msg[DIAG_MSG..]) {
                        out.insert(inode, sample);
                    }
                }
            }
            _ => {}
        }
        buf = &buf[align4(len).min(buf.len())..];
    }
    Ok(Parsed::More)
}

/// The `INET_DIAG_INFO` attribute among a message's attributes, read as `tcp_info`.
fn tcp_info(mut attrs: &[u8]) -> Option<Sample> {
    while attrs.len() >= 4 {
        let len = usize::from(u16_at(attrs, 0)?);
        let kind = u16_at(attrs, 2)?;
        if len < 4 || len > attrs.len() {
            return None;
        }
        if kind == INET_DIAG_INFO {
            let info = &attrs[4..len];
            return Some(Sample {
                rtt_us: u32_at(info, TCPI_RTT)?,
                bytes_acked: u64_at(info, TCPI_BYTES_ACKED)?,
                delivery_rate: u64_at(info, TCPI_DELIVERY_RATE).unwrap_or(0),
                bytes_sent: u64_at(info, TCPI_BYTES_SENT).unwrap_or(0),
            });
        }
        attrs = &attrs[align4(len).min(attrs.len())..];
    }
    None
}

struct Netlink(std::os::fd::OwnedFd);

impl Netlink {
    fn open() -> io::Result<Self> {
        use std::os::fd::FromRawFd;
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
                NETLINK_SOCK_DIAG,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let sock = Netlink(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) });
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: RECV_TIMEOUT.as_micros() as libc::suseconds_t,
        };
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(sock)
    }

    fn send(&self, msg: &[u8]) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        let rc = unsafe {
            libc::sendto(
                self.0.as_raw_fd(),
                msg.as_ptr().cast(),
                msg.len(),
                0,
                (&addr as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        use std::os::fd::AsRawFd;
        let n = unsafe { libc::recv(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }
}

/// Keeps each destination's totals across its sessions: a new ffmpeg (a new connection)
/// starts its counters at zero, so what the previous one reached is carried over. Bytes
/// acknowledged in the last moments of a connection, after the last sample, are not counted
/// (at most one state period, 2 s). Destinations are told apart by their `Arc` (a weak
/// reference is kept, so a removed destination's address is never taken for a new one's).
pub struct Sampler<T> {
    destinations: Vec<(Weak<T>, Carry)>,
    /// Logged once: sock_diag unusable (e.g. AF_NETLINK not allowed).
    failed: bool,
}

impl<T> Default for Sampler<T> {
    fn default() -> Self {
        Sampler {
            destinations: Vec::new(),
            failed: false,
        }
    }
}

#[derive(Default, Clone)]
struct Carry {
    pid: Option<u32>,
    carried: Sample,
    current: Option<Sample>,
}

impl<T> Sampler<T> {
    /// Samples the connections of each destination's current ffmpeg child (none for a
    /// destination without one); the totals come back in the same order.
    pub fn sample(&mut self, children: &[(&Arc<T>, Option<u32>)]) -> Vec<Option<Totals>> {
        // Forget destinations that are gone; add new ones.
        self.destinations.retain(|(w, _)| {
            children
                .iter()
                .any(|(d, _)| Weak::ptr_eq(w, &Arc::downgrade(d)))
        });
        for (d, _) in children {
            let w = Arc::downgrade(d);
            if !self.destinations.iter().any(|(x, _)| Weak::ptr_eq(x, &w)) {
                self.destinations.push((w, Carry::default()));
            }
        }
        let inodes: Vec<Vec<u64>> = children
            .iter()
            .map(|(_, p)| p.map_or_else(Vec::new, socket_inodes))
            .collect();
        let wanted: HashSet<u64> = inodes.iter().flatten().copied().collect();
        let samples = match query(&wanted) {
            Ok(s) => s,
            Err(e) => {
                if !self.failed {
                    tracing::warn!(
                        "cannot read the destinations' TCP counters over sock_diag: {e}; \
                         the state file goes without them"
                    );
                    self.failed = true;
                }
                return vec![None; children.len()];
            }
        };
        children
            .iter()
            .zip(&inodes)
            .map(|((d, pid), inodes)| {
                let w = Arc::downgrade(d);
                let carry = &mut self
                    .destinations
                    .iter_mut()
                    .find(|(x, _)| Weak::ptr_eq(x, &w))
                    .expect("added above")
                    .1;
                let found: Vec<&Sample> = inodes.iter().filter_map(|i| samples.get(i)).collect();
                let now = (!found.is_empty()).then(|| Sample {
                    bytes_acked: found.iter().map(|s| s.bytes_acked).sum(),
                    bytes_sent: found.iter().map(|s| s.bytes_sent).sum(),
                    rtt_us: found.iter().map(|s| s.rtt_us).max().unwrap_or(0),
                    delivery_rate: found.iter().map(|s| s.delivery_rate).sum(),
                });
                carry.advance(*pid, now)
            })
            .collect()
    }
}

impl Carry {
    fn advance(&mut self, pid: Option<u32>, now: Option<Sample>) -> Option<Totals> {
        if pid != self.pid {
            // A new session (or none): the last connection's counters are final.
            if let Some(last) = self.current.take() {
                self.carried.bytes_acked += last.bytes_acked;
                self.carried.bytes_sent += last.bytes_sent;
            }
            self.pid = pid;
        }
        if let Some(now) = now {
            // Counters of one connection only grow; a smaller value is a new connection
            // made by the same ffmpeg.
            if let Some(last) = self.current {
                if now.bytes_acked < last.bytes_acked {
                    self.carried.bytes_acked += last.bytes_acked;
                    self.carried.bytes_sent += last.bytes_sent;
                }
            }
            self.current = Some(now);
        }
        let cur = self.current.filter(|_| now.is_some());
        if self.pid.is_none() && self.carried == Sample::default() && cur.is_none() {
            return None;
        }
        Some(Totals {
            bytes_acked: self.carried.bytes_acked + self.current.map_or(0, |c| c.bytes_acked),
            bytes_sent: self.carried.bytes_sent + self.current.map_or(0, |c| c.bytes_sent),
            rtt_ms: cur.map(|c| f64::from(c.rtt_us) / 1000.0),
            delivery_rate: cur.map(|c| c.delivery_rate),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A dump answer as the kernel sends it: one inet_diag_msg with an INET_DIAG_INFO.
    fn answer(inode: u32, acked: u64, rtt_us: u32) -> Vec<u8> {
        let mut info = vec![0u8; 232];
        info[TCPI_RTT..TCPI_RTT + 4].copy_from_slice(&rtt_us.to_ne_bytes());
        info[TCPI_BYTES_ACKED..TCPI_BYTES_ACKED + 8].copy_from_slice(&acked.to_ne_bytes());
        info[TCPI_DELIVERY_RATE..TCPI_DELIVERY_RATE + 8].copy_from_slice(&750_000u64.to_ne_bytes());
        info[TCPI_BYTES_SENT..TCPI_BYTES_SENT + 8].copy_from_slice(&(acked + 7).to_ne_bytes());
        let mut msg = vec![0u8; DIAG_MSG];
        msg[DIAG_INODE..DIAG_INODE + 4].copy_from_slice(&inode.to_ne_bytes());
        // an attribute before the one wanted
        msg.extend_from_slice(&5u16.to_ne_bytes());
        msg.extend_from_slice(&1u16.to_ne_bytes());
        msg.extend_from_slice(&[9, 0, 0, 0]);
        msg.extend_from_slice(&((4 + info.len()) as u16).to_ne_bytes());
        msg.extend_from_slice(&INET_DIAG_INFO.to_ne_bytes());
        msg.extend_from_slice(&info);
        let mut out = Vec::new();
        out.extend_from_slice(&((NLMSG_HDR + msg.len()) as u32).to_ne_bytes());
        out.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        out.extend_from_slice(&[0; 10]);
        out.extend_from_slice(&msg);
        out
    }

    #[test]
    fn parses_wanted_sockets_and_skips_others() {
        let mut buf = answer(42, 1000, 1500);
        buf.extend(answer(43, 5, 1));
        let mut out = HashMap::new();
        let wanted: HashSet<u64> = [42].into();
        assert_eq!(parse(&buf, &wanted, &mut out).unwrap(), Parsed::More);
        assert_eq!(
            out.get(&42),
            Some(&Sample {
                bytes_acked: 1000,
                bytes_sent: 1007,
                rtt_us: 1500,
                delivery_rate: 750_000
            })
        );
        assert_eq!(out.len(), 1);
        let mut done = vec![0u8; 20];
        done[0..4].copy_from_slice(&20u32.to_ne_bytes());
        done[4..6].copy_from_slice(&NLMSG_DONE.to_ne_bytes());
        assert_eq!(parse(&done, &wanted, &mut out).unwrap(), Parsed::Done);
        assert!(parse(&buf[..30], &wanted, &mut out).is_err(), "truncated");
    }

    #[test]
    fn totals_carry_over_sessions() {
        let s = |acked| {
            Some(Sample {
                bytes_acked: acked,
                bytes_sent: acked,
                rtt_us: 2000,
                delivery_rate: 1,
            })
        };
        let mut c = Carry::default();
        assert_eq!(c.advance(None, None), None);
        assert_eq!(c.advance(Some(10), s(100)).unwrap().bytes_acked, 100);
        assert_eq!(c.advance(Some(10), s(300)).unwrap().bytes_acked, 300);
        // the session ended: totals stay, RTT goes
        let t = c.advance(None, None).unwrap();
        assert_eq!((t.bytes_acked, t.rtt_ms), (300, None));
        // a new ffmpeg
        let t = c.advance(Some(11), s(50)).unwrap();
        assert_eq!((t.bytes_acked, t.rtt_ms), (350, Some(2.0)));
        // the same ffmpeg reconnected
        assert_eq!(c.advance(Some(11), s(20)).unwrap().bytes_acked, 370);
    }

    #[test]
    fn a_sampler_forgets_removed_destinations() {
        let (a, b) = (Arc::new(1), Arc::new(2));
        let mut s: Sampler<i32> = Sampler::default();
        assert_eq!(s.sample(&[(&a, None), (&b, None)]), vec![None, None]);
        assert_eq!(s.destinations.len(), 2);
        s.sample(&[(&b, None)]);
        assert_eq!(s.destinations.len(), 1);
        assert!(Weak::ptr_eq(&s.destinations[0].0, &Arc::downgrade(&b)));
    }

    /// Against the real kernel: a loopback connection of this process is found and counted.
    #[test]
    fn reads_a_real_loopback_connection() {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        client.write_all(&[7u8; 100_000]).unwrap();
        let mut got = vec![0u8; 100_000];
        server.read_exact(&mut got).unwrap();
        let inodes = socket_inodes(std::process::id());
        let mine: HashSet<u64> = inodes.into_iter().collect();
        let samples = query(&mine).unwrap();
        assert!(
            samples
                .values()
                .any(|s| s.bytes_acked >= 100_000 && s.bytes_sent >= 100_000),
            "{samples:?}"
        );
    }
}
