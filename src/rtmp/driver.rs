//! The tokio driver: owns the socket (TCP, or TLS over TCP with rustls), the timers and the
//! buffers, and moves bytes between the socket and the sans-IO [`Session`].
//!
//! Every wait is one `poll_fn` over [`Conn::poll_drive`], which writes pending output and reads
//! (and so answers pings and sends acknowledgements) in the same poll. All state lives in the
//! [`Conn`], so a future dropped half way (a `select!` branch that lost) loses nothing.

use std::future::{poll_fn, Future};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use super::handshake::PACKET;
use super::session::{Event, Mode, Session};
use super::{tls, Class, Endpoint, Error, Media, Options, Stats, TcpInfo, TlsConfig};

/// Bytes read from the socket at once.
const READ_BUF: usize = 64 * 1024;
/// Reads per poll before yielding to other tasks.
const READS_PER_POLL: usize = 16;
/// An output buffer larger than this is freed once written.
const MAX_IDLE_BUFFER: usize = 1024 * 1024;

/// A TCP stream that counts the bytes written to it (TLS records included when TLS wraps it).
struct Counted {
    tcp: TcpStream,
    written: Arc<AtomicU64>,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.tcp).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            self.written.fetch_add(n as u64, Ordering::Relaxed);
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = r {
            self.written.fetch_add(n as u64, Ordering::Relaxed);
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

enum Stream {
    Plain(Counted),
    Tls(Box<tokio_rustls::client::TlsStream<Counted>>),
}

impl Stream {
    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }

    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// One connection: socket, session, buffers, and what happened so far.
struct Conn {
    io: Stream,
    fd: RawFd,
    /// host:port, for messages.
    server: String,
    session: Session,
    /// Bytes to write, from `out_pos` on.
    out: Vec<u8>,
    out_pos: usize,
    /// Written to the stream but maybe not yet to the socket (TLS): flush before idling.
    unflushed: bool,
    rbuf: Vec<u8>,
    written: Arc<AtomicU64>,
    write_stall: Duration,
    started: bool,
    media: std::collections::VecDeque<Media>,
    ended: bool,
    eof: bool,
    /// The error that ended the connection; every later call returns it.
    failed: Option<Error>,
}

fn random_c1() -> [u8; PACKET - 8] {
    // Not a secret: only has to differ between connections.
    let mut bytes = [0u8; PACKET - 8];
    let mut x = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0x9E37_79B9_7F4A_7C15, |d| d.as_nanos() as u64)
        ^ (u64::from(std::process::id()) << 32)
        | 1;
    for b in bytes.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = (x >> 24) as u8;
    }
    bytes
}

fn io_error(session: &Session, server: &str, e: &io::Error, doing: &str) -> Error {
    session.broken(&format!("{doing} {server}: {e}"))
}

impl Conn {
    async fn open(
        mode: Mode,
        ep: &Endpoint,
        tls: &TlsConfig,
        opts: &Options,
    ) -> Result<Conn, Error> {
        let server = format!("{}:{}", ep.host, ep.port);
        let started = Instant::now();
        let connect = async {
            let tcp = TcpStream::connect((
                ep.host.trim_start_matches('[').trim_end_matches(']'),
                ep.port,
            ))
            .await
            .map_err(|e| {
                Error::new(
                    Class::Unreachable,
                    format!("cannot connect to {server}: {e}"),
                )
            })?;
            let _ = tcp.set_nodelay(true);
            let fd = tcp.as_raw_fd();
            let written = Arc::new(AtomicU64::new(0));
            let counted = Counted {
                tcp,
                written: written.clone(),
            };
            let io = if ep.tls {
                let name = tls::server_name(&ep.host)?;
                let tls_stream = tls
                    .connector()
                    .connect(name, counted)
                    .await
                    .map_err(|e| tls::handshake_error(&e, &server))?;
                Stream::Tls(Box::new(tls_stream))
            } else {
                Stream::Plain(counted)
            };
            Ok::<_, Error>((io, fd, written))
        };
        let (io, fd, written) = tokio::time::timeout(opts.connect_timeout, connect)
            .await
            .map_err(|_| {
                Error::new(
                    Class::Timeout,
                    format!(
                        "connecting to {server}{} took longer than {} s",
                        if ep.tls { " (TCP and TLS)" } else { "" },
                        opts.connect_timeout.as_secs_f32()
                    ),
                )
            })??;
        let time = started.elapsed().as_millis() as u32;
        let session = Session::new(mode, ep, opts.chunk_size, time, &random_c1());
        let mut conn = Conn {
            io,
            fd,
            server,
            session,
            out: Vec::with_capacity(64 * 1024),
            out_pos: 0,
            unflushed: false,
            rbuf: vec![0; READ_BUF],
            written,
            write_stall: opts.write_stall,
            started: false,
            media: Default::default(),
            ended: false,
            eof: false,
            failed: None,
        };
        let what = match mode {
            Mode::Publish => "NetStream.Publish.Start",
            Mode::Play => "NetStream.Play.Start",
        };
        let timeout = opts.publish_timeout;
        match tokio::time::timeout(timeout, conn.drive(|c| c.started)).await {
            Ok(Ok(())) => Ok(conn),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(Error::new(
                Class::Timeout,
                format!(
                    "no {what} from {} within {} s (waiting for {})",
                    conn.server,
                    timeout.as_secs_f32(),
                    conn.session.waiting_for()
                ),
            )),
        }
    }

    /// Moves bytes until `done(self)` or an error. Cancel-safe.
    async fn drive(&mut self, mut done: impl FnMut(&Conn) -> bool) -> Result<(), Error> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let stall = tokio::time::sleep(self.write_stall);
        tokio::pin!(stall);
        let result = poll_fn(|cx| self.poll_drive(cx, &mut done, stall.as_mut())).await;
        if let Err(e) = &result {
            self.failed = Some(e.clone());
        }
        result
    }

    fn take_events(&mut self) {
        while let Some(event) = self.session.poll_event() {
            match event {
                Event::Started => self.started = true,
                Event::Media(m) => self.media.push_back(m),
                Event::End => self.ended = true,
                Event::Warning(w) => tracing::warn!("RTMP {}: {w}", self.server),
            }
        }
    }

    /// Writes what is pending; true if any byte went out.
    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Result<bool, Error> {
        self.session.drain_output_into(&mut self.out);
        let mut progressed = false;
        while self.out_pos < self.out.len() {
            match self.io.poll_write(cx, &self.out[self.out_pos..]) {
                Poll::Ready(Ok(0)) => {
                    return Err(Error::new(
                        Class::Dropped,
                        format!("connection to {} closed while writing", self.server),
                    ))
                }
                Poll::Ready(Ok(n)) => {
                    self.out_pos += n;
                    self.unflushed = true;
                    progressed = true;
                }
                Poll::Ready(Err(e)) => {
                    return Err(io_error(&self.session, &self.server, &e, "writing to"))
                }
                Poll::Pending => return Ok(progressed),
            }
        }
        self.out.clear();
        self.out_pos = 0;
        if self.out.capacity() > MAX_IDLE_BUFFER {
            // A burst (a GOP cache sent at once) need not stay allocated.
            self.out = Vec::new();
        }
        if self.unflushed {
            match self.io.poll_flush(cx) {
                Poll::Ready(Ok(())) => self.unflushed = false,
                Poll::Ready(Err(e)) => {
                    return Err(io_error(&self.session, &self.server, &e, "writing to"))
                }
                Poll::Pending => {}
            }
        }
        Ok(progressed)
    }

    fn writing(&self) -> bool {
        self.out_pos < self.out.len() || self.unflushed || self.session.has_output()
    }

    fn poll_drive(
        &mut self,
        cx: &mut Context<'_>,
        done: &mut impl FnMut(&Conn) -> bool,
        mut stall: Pin<&mut Sleep>,
    ) -> Poll<Result<(), Error>> {
        // Whether the socket said "nothing more to read" (and so will wake us when there is).
        let mut read_pending = false;
        // Answers produced by reading (pongs, acks) are written in the next round.
        for _round in 0..4 {
            if self.poll_write_out(cx)? {
                stall.as_mut().reset(Instant::now() + self.write_stall);
            }
            self.take_events();
            if done(self) {
                return Poll::Ready(Ok(()));
            }
            read_pending = false;
            let mut reads = 0;
            while !self.eof && reads < READS_PER_POLL {
                let mut buf = ReadBuf::new(&mut self.rbuf);
                match self.io.poll_read(cx, &mut buf) {
                    Poll::Ready(Ok(())) if buf.filled().is_empty() => {
                        self.eof = true;
                        self.session.eof()?;
                    }
                    Poll::Ready(Ok(())) => {
                        let n = buf.filled().len();
                        reads += 1;
                        self.session.receive(&self.rbuf[..n])?;
                    }
                    Poll::Ready(Err(e)) => {
                        return Poll::Ready(Err(io_error(
                            &self.session,
                            &self.server,
                            &e,
                            "reading from",
                        )));
                    }
                    Poll::Pending => {
                        read_pending = true;
                        break;
                    }
                }
                self.take_events();
                if done(self) {
                    return Poll::Ready(Ok(()));
                }
            }
            if !self.session.has_output() {
                break;
            }
        }
        if done(self) {
            return Poll::Ready(Ok(()));
        }
        if self.eof && !self.writing() {
            return Poll::Ready(Err(Error::new(
                Class::Dropped,
                format!("the server {} closed the connection", self.server),
            )));
        }
        if self.writing() && stall.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(Error::new(
                Class::Timeout,
                format!(
                    "writing to {} made no progress for {} s",
                    self.server,
                    self.write_stall.as_secs_f32()
                ),
            )));
        }
        if (!read_pending && !self.eof) || self.session.has_output() {
            // We stopped before the socket ran dry, or with answers not yet tried (a budget):
            // nothing would wake us, so come back after the other tasks had their turn.
            cx.waker().wake_by_ref();
        }
        Poll::Pending
    }

    fn stats(&self) -> Stats {
        Stats {
            socket_bytes: self.written.load(Ordering::Relaxed),
            media_bytes: self.session.media_bytes(),
            tcp: tcp_info(self.fd),
        }
    }

    /// The goodbye (if `polite`), then TLS close_notify and TCP FIN, then reads until the
    /// server closes (so that it reads the goodbye before our socket goes). Bounded.
    async fn close(mut self, polite: bool, timeout: Duration) {
        let bye = async {
            if polite && self.failed.is_none() {
                self.session.stop();
                self.drive(|c| !c.writing()).await?;
            }
            poll_fn(|cx| self.io.poll_shutdown(cx))
                .await
                .map_err(|e| io_error(&self.session, &self.server, &e, "closing"))?;
            while !self.eof {
                let mut buf = ReadBuf::new(&mut self.rbuf);
                poll_fn(|cx| self.io.poll_read(cx, &mut buf))
                    .await
                    .map_err(|e| io_error(&self.session, &self.server, &e, "closing"))?;
                self.eof = buf.filled().is_empty();
            }
            Ok::<(), Error>(())
        };
        match tokio::time::timeout(timeout, bye).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!("RTMP {}: {e}", self.server),
            Err(_) => tracing::debug!("RTMP {}: close took longer than {timeout:?}", self.server),
        }
    }
}

/// `getsockopt(TCP_INFO)`; offsets of `struct tcp_info` (linux/tcp.h).
fn tcp_info(fd: RawFd) -> Option<TcpInfo> {
    const RTT: usize = 68;
    const TOTAL_RETRANS: usize = 100;
    const BYTES_ACKED: usize = 120;
    const DELIVERY_RATE: usize = 160;
    let mut buf = [0u8; 256];
    let mut len = buf.len() as libc::socklen_t;
    // SAFETY: `buf` is writable for `len` bytes; the kernel writes at most `len`.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            buf.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return None;
    }
    let b = &buf[..(len as usize).min(buf.len())];
    let u32_at = |at: usize| {
        b.get(at..at + 4)
            .map(|s| u32::from_ne_bytes(s.try_into().unwrap_or([0; 4])))
    };
    let u64_at = |at: usize| {
        b.get(at..at + 8)
            .map(|s| u64::from_ne_bytes(s.try_into().unwrap_or([0; 8])))
    };
    Some(TcpInfo {
        bytes_acked: u64_at(BYTES_ACKED)?,
        rtt_us: u32_at(RTT)?,
        delivery_rate_bps: u64_at(DELIVERY_RATE).unwrap_or(0),
        retransmits: u32_at(TOTAL_RETRANS)?,
    })
}

/// A publish to one destination.
pub struct Publisher {
    conn: Conn,
}

impl Publisher {
    /// TCP (+TLS) connect, handshake, connect/releaseStream/FCPublish/createStream/publish;
    /// returns once the server said NetStream.Publish.Start. Bounded by `opts`.
    pub async fn connect(
        ep: &Endpoint,
        tls: &TlsConfig,
        opts: &Options,
    ) -> Result<Publisher, Error> {
        let conn = Conn::open(Mode::Publish, ep, tls, opts).await?;
        Ok(Publisher { conn })
    }

    /// Serialises the whole batch (and pending control answers) into one buffer and writes
    /// it, reading and answering the server meanwhile. An error is final.
    pub async fn send(&mut self, batch: &[Media]) -> Result<(), Error> {
        if let Some(e) = &self.conn.failed {
            return Err(e.clone());
        }
        if let Err(e) = self.conn.session.send(batch) {
            self.conn.failed = Some(e.clone());
            return Err(e);
        }
        self.conn.drive(|c| !c.writing()).await
    }

    /// Resolves only when the connection fails or the server ends the publish. Cancel-safe.
    pub async fn closed(&mut self) -> Error {
        match self.conn.drive(|_| false).await {
            Err(e) => e,
            Ok(()) => Error::new(Class::Dropped, "the connection ended"),
        }
    }

    /// FCUnpublish, deleteStream, flush, TLS close_notify and TCP shutdown; bounded.
    pub async fn close(self, timeout: Duration) {
        self.conn.close(true, timeout).await
    }

    pub fn stats(&self) -> Stats {
        self.conn.stats()
    }
}

/// A play from a server (the ingest).
pub struct Player {
    conn: Conn,
}

impl Player {
    /// connect (with fourCcList), createStream, play(ep.stream); returns once playing.
    pub async fn connect(ep: &Endpoint, tls: &TlsConfig, opts: &Options) -> Result<Player, Error> {
        let conn = Conn::open(Mode::Play, ep, tls, opts).await?;
        Ok(Player { conn })
    }

    /// The next media message; `Ok(None)` at a clean end of stream. Cancel-safe.
    pub async fn next(&mut self) -> Result<Option<Media>, Error> {
        if let Some(m) = self.conn.media.pop_front() {
            return Ok(Some(m));
        }
        if self.conn.ended {
            return Ok(None);
        }
        self.conn.drive(|c| !c.media.is_empty() || c.ended).await?;
        Ok(self.conn.media.pop_front())
    }

    /// deleteStream, then TLS close_notify and TCP shutdown; bounded.
    pub async fn close(self, timeout: Duration) {
        self.conn.close(true, timeout).await
    }
}

#[cfg(test)]
mod tests;
