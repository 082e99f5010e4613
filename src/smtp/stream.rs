//! The connection under a session: plain TCP or TLS over it, with a
//! small read buffer of our own so that a reply line can be read without
//! a BufReader owning the stream (STARTTLS must take the stream back).

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use super::reply::MAX_LINE;

/// Plain or TLS.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<native_tls::TlsStream<TcpStream>>),
}

impl Stream {
    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => s.get_ref(),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

/// A stream with a read buffer and a write buffer.
pub struct Conn {
    pub stream: Stream,
    /// The socket timeout now set: each change is two system calls, and
    /// a transaction would otherwise make eight.
    timeout: Option<Duration>,
    rbuf: Vec<u8>,
    rpos: usize,
    wbuf: Vec<u8>,
}

/// Write buffer size: big enough that pipelined commands go in one
/// segment and data in large ones.
const WRITE_BUFFER: usize = 64 * 1024;
const READ_BUFFER: usize = 16 * 1024;

impl Conn {
    pub fn new(stream: Stream) -> Conn {
        Conn {
            stream,
            timeout: None,
            rbuf: Vec::with_capacity(READ_BUFFER),
            rpos: 0,
            wbuf: Vec::with_capacity(WRITE_BUFFER),
        }
    }

    /// Sets both socket timeouts: every read and every write must make
    /// progress within `limit`.
    pub fn set_timeout(&mut self, limit: Duration) -> io::Result<()> {
        let limit = Some(limit.max(Duration::from_millis(1)));
        if self.timeout == limit {
            return Ok(());
        }
        self.stream.tcp().set_read_timeout(limit)?;
        self.stream.tcp().set_write_timeout(limit)?;
        self.timeout = limit;
        Ok(())
    }

    /// Forgets the cached timeout (the stream under it was replaced).
    pub fn timeout_unknown(&mut self) {
        self.timeout = None;
    }

    /// True when the server sent bytes we have not read: after STARTTLS's
    /// 220 that is an injection attempt (CVE-2011-0411), not a reply.
    pub fn has_unread(&self) -> bool {
        self.rpos < self.rbuf.len()
    }

    /// One line, CRLF (or LF) stripped. A line longer than MAX_LINE is an
    /// error: a hostile server must not make us buffer without bound.
    pub fn read_line(&mut self) -> io::Result<Vec<u8>> {
        let mut line = Vec::new();
        loop {
            if self.rpos == self.rbuf.len() {
                self.rbuf.resize(READ_BUFFER, 0);
                let n = loop {
                    match self.stream.read(&mut self.rbuf) {
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        other => break other,
                    }
                };
                let n = match n {
                    Ok(n) => n,
                    Err(e) => {
                        self.rbuf.clear();
                        self.rpos = 0;
                        return Err(e);
                    }
                };
                self.rbuf.truncate(n);
                self.rpos = 0;
                if n == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "connection closed by the server",
                    ));
                }
            }
            let avail = &self.rbuf[self.rpos..];
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
                    self.rpos = self.rbuf.len();
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

    /// Flushes the write buffer to the stream.
    pub fn flush(&mut self) -> io::Result<()> {
        if !self.wbuf.is_empty() {
            self.stream.write_all(&self.wbuf)?;
            self.wbuf.clear();
        }
        self.stream.flush()
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.wbuf.len() + buf.len() > WRITE_BUFFER {
            self.stream.write_all(&self.wbuf)?;
            self.wbuf.clear();
            if buf.len() >= WRITE_BUFFER {
                self.stream.write_all(buf)?;
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
