//! The connection under a session: plain TCP or TLS over it, with a
//! small read buffer of our own so that a reply line can be read without
//! a BufReader owning the stream (STARTTLS must take the stream back).
//!
//! Time is bounded by deadlines, not by per-read socket timeouts: a
//! server that trickles a reply one byte a second makes progress on every
//! read, and would hold us for as long as it liked (issue 15, item 10).
//! Every read and write on the socket — TLS records and the TLS handshake
//! included, since TLS runs over [`Timed`] — first checks the deadline
//! and lets the socket wait only for what is left of it. The session
//! sets the deadline for each whole reply ([`Conn::set_deadline`]) and
//! each block written ([`Conn::set_write_limit`]).

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use super::reply::MAX_LINE;

/// A TCP stream whose every read and write ends by a deadline.
#[derive(Debug)]
pub struct Timed {
    tcp: TcpStream,
    deadline: Instant,
    /// The socket timeout now set: unchanged ones cost no system call.
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
}

impl Timed {
    /// `tcp`, with a deadline of now + `limit` until another is set.
    pub fn new(tcp: TcpStream, limit: Duration) -> Timed {
        Timed {
            tcp,
            deadline: Instant::now() + limit,
            read_timeout: None,
            write_timeout: None,
        }
    }

    /// Every read and write from now on must be done by `deadline`.
    pub fn set_deadline(&mut self, deadline: Instant) {
        self.deadline = deadline;
    }

    /// The socket.
    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    /// The time left before the deadline, at least a millisecond (a zero
    /// socket timeout means none); TimedOut once it has passed.
    fn left(&self) -> io::Result<Duration> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "deadline passed"));
        }
        // Whole milliseconds, rounded up: fewer distinct values, fewer
        // system calls, and never zero.
        let millis = u64::try_from(left.as_micros().div_ceil(1000)).unwrap_or(u64::MAX);
        Ok(Duration::from_millis(millis))
    }
}

/// The socket timeout to set before a call that must end within `left`,
/// or None to keep `current`: one no longer than `left` is kept (the call
/// cannot outlast the deadline; if it expires first, the caller waits
/// again), so a session whose deadlines move forward by the same limit
/// sets each timeout about once, not before every read and write — unless
/// it is under a second while more is left (the tail of an earlier
/// deadline), which would wake a wait for a slow reply too often.
fn timeout_to_set(current: Option<Duration>, left: Duration) -> Option<Duration> {
    match current {
        Some(t) if t <= left && t >= left.min(Duration::from_secs(1)) => None,
        _ => Some(left),
    }
}

impl Read for Timed {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let left = self.left()?;
            if let Some(t) = timeout_to_set(self.read_timeout, left) {
                self.tcp.set_read_timeout(Some(t))?;
                self.read_timeout = Some(t);
            }
            match self.tcp.read(buf) {
                // A timeout shorter than the deadline: wait the rest
                // (`left` fails once the deadline has passed). EAGAIN
                // never escapes: TLS would take it for a non-blocking
                // socket and ask to be called again.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                other => return other,
            }
        }
    }
}

impl Write for Timed {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        loop {
            let left = self.left()?;
            if let Some(t) = timeout_to_set(self.write_timeout, left) {
                self.tcp.set_write_timeout(Some(t))?;
                self.write_timeout = Some(t);
            }
            match self.tcp.write(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                other => return other,
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.tcp.flush()
    }
}

/// Plain or TLS: native-tls, or OpenSSL itself where DANE needs what
/// native-tls does not expose (`dane`).
pub enum Stream {
    Plain(Timed),
    Tls(Box<native_tls::TlsStream<Timed>>),
    Dane(Box<openssl::ssl::SslStream<Timed>>),
}

impl Stream {
    /// The socket under it.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s.tcp(),
            Stream::Tls(s) => s.get_ref().tcp(),
            Stream::Dane(s) => s.get_ref().tcp(),
        }
    }

    fn timed(&mut self) -> &mut Timed {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => s.get_mut(),
            Stream::Dane(s) => s.get_mut(),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
            Stream::Dane(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
            Stream::Dane(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
            Stream::Dane(s) => s.flush(),
        }
    }
}

/// A stream with a read buffer and a write buffer.
pub struct Conn {
    pub stream: Stream,
    /// How long each block written may take (RFC 5321 §4.5.3.2 bounds
    /// each data block, not the whole data).
    write_limit: Duration,
    /// Zeroed once per connection: refilling it must not clear 16 KiB
    /// for every reply (two or more a message).
    rbuf: Box<[u8]>,
    /// `rbuf[rpos..rlen]` is read from the server, not yet consumed.
    rpos: usize,
    rlen: usize,
    wbuf: Vec<u8>,
}

/// Write buffer size: big enough that pipelined commands go in one
/// segment and data in large ones. Also the size of a "block" whose
/// write the write limit bounds.
const WRITE_BUFFER: usize = 64 * 1024;
const READ_BUFFER: usize = 16 * 1024;

impl Conn {
    /// A connection over `stream`; each block written may take
    /// `write_limit`.
    pub fn new(stream: Stream, write_limit: Duration) -> Conn {
        Conn {
            stream,
            write_limit,
            rbuf: vec![0; READ_BUFFER].into_boxed_slice(),
            rpos: 0,
            rlen: 0,
            wbuf: Vec::with_capacity(WRITE_BUFFER),
        }
    }

    /// Every read from now on must be done by `deadline`: the session
    /// sets one for each whole reply it waits for.
    pub fn set_deadline(&mut self, deadline: Instant) {
        self.stream.timed().set_deadline(deadline);
    }

    /// Each block written from now on (a flush, or a full buffer) must be
    /// out within `limit`.
    pub fn set_write_limit(&mut self, limit: Duration) {
        self.write_limit = limit;
    }

    /// Writes one block within the write limit.
    fn write_block(&mut self, block: &[u8]) -> io::Result<()> {
        self.set_deadline(Instant::now() + self.write_limit);
        self.stream.write_all(block)
    }

    /// True when the server sent bytes we have not read: after STARTTLS's
    /// 220 that is an injection attempt (CVE-2011-0411), not a reply.
    pub fn has_unread(&self) -> bool {
        self.rpos < self.rlen
    }

    /// One line, CRLF (or LF) stripped. A line longer than MAX_LINE is an
    /// error: a hostile server must not make us buffer without bound.
    pub fn read_line(&mut self) -> io::Result<Vec<u8>> {
        let mut line = Vec::new();
        loop {
            if self.rpos == self.rlen {
                let n = loop {
                    match self.stream.read(&mut self.rbuf) {
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        other => break other,
                    }
                };
                let n = match n {
                    Ok(n) => n,
                    Err(e) => {
                        (self.rpos, self.rlen) = (0, 0);
                        return Err(e);
                    }
                };
                (self.rpos, self.rlen) = (0, n);
                if n == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "connection closed by the server",
                    ));
                }
            }
            let avail = &self.rbuf[self.rpos..self.rlen];
            match avail.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    line.extend_from_slice(&avail[..i]);
                    self.rpos += i + 1;
                    if line.last() == Some(&b'\r') {
                        line.pop();
                    }
                    return Ok(line);
                }
                None => {
                    line.extend_from_slice(avail);
                    self.rpos = self.rlen;
                }
            }
            if line.len() > MAX_LINE {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "reply line too long",
                ));
            }
        }
    }

    /// Bytes written and not yet flushed.
    pub fn buffered(&self) -> usize {
        self.wbuf.len()
    }

    /// Flushes the write buffer to the stream.
    pub fn flush(&mut self) -> io::Result<()> {
        if !self.wbuf.is_empty() {
            let block = std::mem::take(&mut self.wbuf);
            let result = self.write_block(&block);
            self.wbuf = block;
            self.wbuf.clear();
            result?;
        }
        self.stream.flush()
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.wbuf.len() + buf.len() > WRITE_BUFFER {
            Conn::flush(self)?;
            if buf.len() >= WRITE_BUFFER {
                self.write_block(buf)?;
                return Ok(buf.len());
            }
        }
        self.wbuf.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Conn::flush(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_socket_timeout_is_set_only_when_it_could_outlast_the_deadline() {
        let s = Duration::from_secs;
        assert_eq!(timeout_to_set(None, s(300)), Some(s(300)));
        // The next command's deadline is later: the timeout set stands.
        assert_eq!(timeout_to_set(Some(s(300)), s(300)), None);
        assert_eq!(timeout_to_set(Some(s(180)), s(600)), None);
        // A nearer deadline: a shorter timeout, or the call outlasts it.
        assert_eq!(timeout_to_set(Some(s(300)), s(180)), Some(s(180)));
        // The tail of an old deadline is not kept for a long new one.
        let ms = Duration::from_millis;
        assert_eq!(timeout_to_set(Some(ms(3)), s(300)), Some(s(300)));
        assert_eq!(timeout_to_set(Some(ms(300)), ms(500)), Some(ms(500)));
        assert_eq!(timeout_to_set(Some(ms(300)), ms(200)), Some(ms(200)));
    }
}
