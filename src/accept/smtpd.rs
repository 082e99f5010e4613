//! `sendmail -bs`: an SMTP server dialogue on stdin/stdout (RFC 5321),
//! as Symfony Mailer, SwiftMailer and Alpine use it. Several messages
//! per session; each is committed to the spool before its 250 (RFC 1047)
//! through the same path as `sendmail` itself. PIPELINING (RFC 2920):
//! replies are buffered while more commands are already waiting, and
//! flushed before we would block reading.
//!
//! Hostile input (a local user drives this dialogue, and a web
//! application may pass its users' text into the message): memory is
//! bounded for any input. A command line longer than [`MAX_COMMAND`] is
//! answered with 500 and the rest of it is skipped in the reader's
//! buffer, never collected; message data is read 8 KiB at a time.
//!
//! End of data (SMTP smuggling, CVE-2023-51764 and friends): only
//! `<CRLF>.<CRLF>` ends DATA — a line holding a single dot, ended by
//! CRLF, whose previous line also ended with CRLF (or which is the first
//! line of the data). `<LF>.<LF>`, `<LF>.<CRLF>` and `<CRLF>.<LF>` are
//! data, so a body cannot carry a second envelope of its own: the
//! smuggled commands stay text inside the one message. Such a lone dot
//! that is not the end is kept as it came (one dot, not unstuffed to an
//! empty line), so what was smuggled shows in the message. Lines ended
//! by a bare LF are otherwise accepted and stored as lines, in commands
//! and in data, as Postfix 3.9's default `smtpd_forbid_bare_newline =
//! normalize` does: rejecting them would break local scripts, and once
//! the end of data is unambiguous a bare LF is only a line ending. A
//! client that sends nothing but bare LFs never ends its DATA (again as
//! Postfix); Symfony Mailer, SwiftMailer and Alpine send CRLF.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::time::SystemTime;

use crate::accept::submit::{self, Caller};
use crate::address::{self, Address};
use crate::cli::Invocation;
use crate::config::Config;
use crate::error::{Error, Kind, Result};
use crate::spool::QueueId;

/// Longest command line accepted (RFC 5321 §4.5.3.1.4 says 512 octets
/// with the CRLF; some clients send more with parameters).
const MAX_COMMAND: usize = 4096;
/// Longest piece of a data line read at once.
const DATA_CHUNK: usize = 8192;
/// A client this confused is cut off.
const MAX_ERRORS: u32 = 20;

/// One transaction in progress: MAIL given, RCPTs collected.
struct Transaction {
    /// The sender as given: "" for the null sender.
    sender: String,
    body_type: Option<String>,
    recipients: Vec<String>,
}

/// Runs the dialogue until QUIT or end of input. Returns the IDs of the
/// messages committed, for the caller to hand to a runner. `committed`
/// is called after each commit (to start delivery at once).
pub fn serve<R: Read, W: Write>(
    inv: &Invocation,
    config: &Config,
    caller: &Caller,
    input: R,
    output: W,
    committed: &mut dyn FnMut(&QueueId),
) -> Result<Vec<QueueId>> {
    let mut session = Session {
        inv,
        config,
        caller,
        input: BufReader::with_capacity(64 * 1024, input),
        output: io::BufWriter::new(output),
        transaction: None,
        errors: 0,
        ids: Vec::new(),
    };
    session.reply(&format!("220 {} ESMTP spoolmail ready", config.hostname))?;
    while session.step(committed)? {}
    session.flush()?;
    Ok(session.ids)
}

struct Session<'a, R: Read, W: Write> {
    inv: &'a Invocation,
    config: &'a Config,
    caller: &'a Caller,
    input: BufReader<R>,
    output: io::BufWriter<W>,
    transaction: Option<Transaction>,
    errors: u32,
    ids: Vec<QueueId>,
}

fn io_err(e: io::Error) -> Error {
    Error::io("talking SMTP on stdin/stdout", &e)
}

impl<R: Read, W: Write> Session<'_, R, W> {
    /// Queues one reply line (or several, joined by "\r\n").
    fn reply(&mut self, text: &str) -> Result<()> {
        self.output
            .write_all(text.as_bytes())
            .and_then(|()| self.output.write_all(b"\r\n"))
            .map_err(io_err)
    }

    fn flush(&mut self) -> Result<()> {
        self.output.flush().map_err(io_err)
    }

    /// An error reply; too many of them end the session.
    fn error(&mut self, text: &str) -> Result<bool> {
        self.errors += 1;
        if self.errors >= MAX_ERRORS {
            self.reply(&format!(
                "421 4.7.0 {} Error: too many errors",
                self.config.hostname
            ))?;
            return Ok(false);
        }
        self.reply(text)?;
        Ok(true)
    }

    /// Reads and answers one command. False: the session is over.
    fn step(&mut self, committed: &mut dyn FnMut(&QueueId)) -> Result<bool> {
        // PIPELINING: only flush when nothing more is waiting.
        if self.input.buffer().is_empty() {
            self.flush()?;
        }
        let raw = match read_command(&mut self.input).map_err(io_err)? {
            Command::Line(raw) => raw,
            Command::TooLong => return self.error("500 5.5.2 Error: line too long"),
            Command::End => return Ok(false),
        };
        let line = String::from_utf8_lossy(&raw);
        let line = line.trim_end_matches(['\r', '\n']);
        let (verb, arg) = match line.split_once(' ') {
            Some((v, a)) => (v.to_ascii_uppercase(), a.trim()),
            None => (line.to_ascii_uppercase(), ""),
        };
        let host = self.config.hostname.clone();
        match verb.as_str() {
            "HELO" if !arg.is_empty() => {
                self.transaction = None;
                self.reply(&format!("250 {host}"))?;
            }
            "EHLO" if !arg.is_empty() => {
                self.transaction = None;
                let size = match self.config.max_message_size {
                    0 => String::new(),
                    n => format!(" {n}"),
                };
                self.reply(&format!(
                    "250-{host}\r\n250-PIPELINING\r\n250-SIZE{size}\r\n250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250 HELP"
                ))?;
            }
            "HELO" | "EHLO" => return self.error(&format!("501 5.5.4 Syntax: {verb} hostname")),
            "MAIL" => return self.mail(arg),
            "RCPT" => return self.rcpt(arg),
            "DATA" if !arg.is_empty() => return self.error("501 5.5.4 Syntax: DATA"),
            "DATA" => return self.data(committed),
            "RSET" => {
                self.transaction = None;
                self.reply("250 2.0.0 Ok")?;
            }
            "NOOP" => self.reply("250 2.0.0 Ok")?,
            "VRFY" => self.reply("252 2.5.2 Cannot VRFY user, but will accept message")?,
            "EXPN" => return self.error("502 5.5.1 Error: EXPN not available"),
            "HELP" => {
                self.reply("214 2.0.0 Commands: HELO EHLO MAIL RCPT DATA RSET NOOP VRFY QUIT HELP")?
            }
            "QUIT" => {
                self.reply(&format!("221 2.0.0 {host} closing connection"))?;
                return Ok(false);
            }
            "STARTTLS" | "AUTH" | "BDAT" | "ETRN" | "TURN" => {
                return self.error(&format!("502 5.5.1 Error: {verb} not implemented"));
            }
            _ => return self.error("500 5.5.2 Error: command not recognized"),
        }
        Ok(true)
    }

    fn mail(&mut self, arg: &str) -> Result<bool> {
        if self.transaction.is_some() {
            return self.error("503 5.5.1 Error: nested MAIL command");
        }
        let Some((path, params)) = path_argument(arg, "FROM:") else {
            return self.error("501 5.5.4 Syntax: MAIL FROM:<address>");
        };
        let mut body_type = None;
        for param in params.split_whitespace() {
            let (key, value) = param.split_once('=').unwrap_or((param, ""));
            match key.to_ascii_uppercase().as_str() {
                "SIZE" => {
                    let limit = self.config.max_message_size;
                    match value.parse::<u64>() {
                        Ok(n) if limit > 0 && n > limit => {
                            return self.error("552 5.3.4 Error: message size exceeds fixed limit");
                        }
                        Ok(_) => {}
                        Err(_) => return self.error("501 5.5.4 Bad SIZE parameter"),
                    }
                }
                "BODY" => match value.to_ascii_uppercase().as_str() {
                    "7BIT" | "8BITMIME" => body_type = Some(value.to_ascii_uppercase()),
                    _ => return self.error("501 5.5.4 Bad BODY parameter"),
                },
                _ => {
                    return self.error(&format!("555 5.5.4 Unsupported option: {}", one_line(key)));
                }
            }
        }
        // Comments and white space a client left in the path go (RFC
        // 5322 CFWS); the address is what remains.
        let path = address::path_without_cfws(path);
        let path = path.as_str();
        if let Err(e) = address::parse_sender(path) {
            return self.error(&format!("553 5.1.7 {}", one_line(e.message())));
        }
        self.transaction = Some(Transaction {
            sender: path.to_string(),
            body_type,
            recipients: Vec::new(),
        });
        self.reply("250 2.1.0 Ok")?;
        Ok(true)
    }

    fn rcpt(&mut self, arg: &str) -> Result<bool> {
        let Some(count) = self.transaction.as_ref().map(|t| t.recipients.len()) else {
            return self.error("503 5.5.1 Error: need MAIL command");
        };
        let Some((path, params)) = path_argument(arg, "TO:") else {
            return self.error("501 5.5.4 Syntax: RCPT TO:<address>");
        };
        if !params.trim().is_empty() {
            return self.error("555 5.5.4 Unsupported RCPT option");
        }
        // `max_recipients` (RFC 5321 asks for at least 100): a 452 here
        // tells the client to send the rest in another transaction.
        if count >= self.config.max_recipients {
            return self.error("452 4.5.3 Error: too many recipients");
        }
        let path = address::path_without_cfws(path);
        let path = path.as_str();
        match Address::parse(path) {
            Ok(_) if !path.is_empty() => {
                if let Some(t) = self.transaction.as_mut() {
                    t.recipients.push(path.to_string());
                }
                self.reply("250 2.1.5 Ok")?;
                Ok(true)
            }
            Ok(_) => self.error("501 5.1.3 Error: empty recipient"),
            Err(e) => self.error(&format!("501 5.1.3 {}", one_line(e.message()))),
        }
    }

    fn data(&mut self, committed: &mut dyn FnMut(&QueueId)) -> Result<bool> {
        let Some(transaction) = self.transaction.take() else {
            return self.error("503 5.5.1 Error: need RCPT command");
        };
        if transaction.recipients.is_empty() {
            self.transaction = Some(transaction);
            return self.error("554 5.5.1 Error: no valid recipients");
        }
        self.reply("354 End data with <CR><LF>.<CR><LF>")?;
        self.flush()?;
        let mut inv = self.inv.clone();
        inv.sender = Some(match transaction.sender.as_str() {
            "" => "<>".to_string(),
            s => s.to_string(),
        });
        inv.recipients = transaction.recipients;
        inv.extract_recipients = false;
        // The dot has been dealt with by the reader below.
        inv.ignore_dots = true;
        if transaction.body_type.is_some() {
            inv.body_type = transaction.body_type;
        }
        let mut body = DotReader::new(&mut self.input);
        let result = submit::submit(&inv, self.config, self.caller, &mut body, SystemTime::now());
        if !body.done {
            // Refused part-way (too large, bad header): read to the dot
            // so the next command is a command. A vanished client ends it.
            if io::copy(&mut body, &mut io::sink()).is_err() {
                return Ok(false);
            }
        }
        match result {
            Ok(submitted) => {
                if !submitted.dropped {
                    committed(&submitted.id);
                }
                self.reply(&format!("250 2.0.0 Ok: queued as {}", submitted.id))?;
                self.ids.push(submitted.id);
                Ok(true)
            }
            Err(e) => {
                log::warn!("-bs: message refused: {e}");
                let text = one_line(e.message());
                let reply = match e.kind() {
                    Kind::Data if text.contains("larger") => {
                        format!("552 5.3.4 {text}")
                    }
                    Kind::Data | Kind::Usage => format!("554 5.6.0 {text}"),
                    _ => format!("451 4.3.0 {text}"),
                };
                self.error(&reply)
            }
        }
    }
}

/// `FROM:<path> params` → (path without brackets, params). Accepts a
/// space after the colon and, leniently, a path without brackets.
fn path_argument<'a>(arg: &'a str, keyword: &str) -> Option<(&'a str, &'a str)> {
    let head = arg.get(..keyword.len())?;
    if !head.eq_ignore_ascii_case(keyword) {
        return None;
    }
    let rest = arg[keyword.len()..].trim_start();
    if let Some(inner) = rest.strip_prefix('<') {
        let end = inner.find('>')?;
        Some((inner[..end].trim(), inner[end + 1..].trim()))
    } else {
        let (path, params) = rest.split_once(' ').unwrap_or((rest, ""));
        (!path.is_empty()).then_some((path, params.trim()))
    }
}

/// Text safe inside a one-line reply.
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(200)
        .collect()
}

/// What [`read_command`] found.
enum Command {
    /// A whole line, its line ending included.
    Line(Vec<u8>),
    /// A line longer than [`MAX_COMMAND`], skipped up to its end (or to
    /// the end of input).
    TooLong,
    /// The end of input.
    End,
}

/// Reads one command line of at most [`MAX_COMMAND`] bytes. A longer one
/// is consumed in the reader's own buffer, piece by piece, and dropped:
/// memory stays bounded whatever the client sends (an endless line
/// included).
fn read_command<R: Read>(input: &mut BufReader<R>) -> io::Result<Command> {
    let mut line = Vec::new();
    let mut too_long = false;
    loop {
        let buf = match input.fill_buf() {
            Ok(buf) => buf,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            // End of input; a last line without its newline is dropped
            // with the session, as the client went away mid-command.
            return Ok(if too_long {
                Command::TooLong
            } else {
                Command::End
            });
        }
        let (piece, found) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        if !too_long {
            if line.len() + piece > MAX_COMMAND {
                too_long = true;
                line = Vec::new();
            } else {
                line.extend_from_slice(&buf[..piece]);
            }
        }
        input.consume(piece);
        if found {
            return Ok(if too_long {
                Command::TooLong
            } else {
                Command::Line(line)
            });
        }
    }
}

/// The message of a DATA command: dot-unstuffed, ending at
/// `<CRLF>.<CRLF>` only (see the module comment), streamed: a line is
/// read [`DATA_CHUNK`] bytes at a time, so memory does not grow with the
/// message or with one endless line.
struct DotReader<'a, R: Read> {
    inner: &'a mut BufReader<R>,
    chunk: Vec<u8>,
    pos: usize,
    /// The next byte starts a line.
    at_line_start: bool,
    /// The line before the next one ended with CRLF (or there was none):
    /// only then can a lone dot end the data.
    after_crlf: bool,
    /// The last byte read was a CR (a CRLF may straddle two chunks).
    last_cr: bool,
    done: bool,
}

impl<'a, R: Read> DotReader<'a, R> {
    fn new(inner: &'a mut BufReader<R>) -> Self {
        DotReader {
            inner,
            chunk: Vec::with_capacity(DATA_CHUNK),
            pos: 0,
            at_line_start: true,
            after_crlf: true,
            last_cr: false,
            done: false,
        }
    }
}

impl<R: Read> Read for DotReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos >= self.chunk.len() {
            if self.done {
                return Ok(0);
            }
            self.chunk.clear();
            self.pos = 0;
            let n = (&mut *self.inner)
                .take(DATA_CHUNK as u64)
                .read_until(b'\n', &mut self.chunk)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the client went away in the middle of DATA",
                ));
            }
            if self.at_line_start {
                if self.chunk == b".\r\n" && self.after_crlf {
                    self.done = true;
                    self.chunk.clear();
                    return Ok(0);
                }
                // A lone dot that is not the end stays one dot.
                let lone = self.chunk == b".\r\n" || self.chunk == b".\n";
                if self.chunk.starts_with(b".") && !lone {
                    self.pos = 1;
                }
            }
            let ends_line = self.chunk.ends_with(b"\n");
            if ends_line {
                self.after_crlf = self.chunk.ends_with(b"\r\n") || (n == 1 && self.last_cr);
            }
            self.at_line_start = ends_line;
            self.last_cr = self.chunk.ends_with(b"\r");
        }
        let n = buf.len().min(self.chunk.len() - self.pos);
        buf[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unstuff(input: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let mut reader = BufReader::new(input);
        let mut out = Vec::new();
        DotReader::new(&mut reader).read_to_end(&mut out).unwrap();
        let mut rest = Vec::new();
        reader.read_to_end(&mut rest).unwrap();
        (out, rest)
    }

    #[test]
    fn dots_are_unstuffed_and_the_lone_dot_ends_the_data() {
        let (data, rest) = unstuff(b"a\r\n..b\r\n.c\r\n\r\n.\r\nQUIT\r\n");
        assert_eq!(data, b"a\r\n.b\r\nc\r\n\r\n");
        assert_eq!(rest, b"QUIT\r\n");
    }

    #[test]
    fn a_dot_inside_a_long_line_is_data() {
        let long = format!("{}\r\n.\r\n", "x".repeat(20_000) + ".");
        let (data, rest) = unstuff(long.as_bytes());
        assert_eq!(data.len(), 20_003);
        assert!(rest.is_empty());
    }

    #[test]
    fn only_crlf_dot_crlf_ends_the_data() {
        for (input, data) in [
            (
                &b"a\n.\nMAIL FROM:<x>\r\n.\r\n"[..],
                &b"a\n.\nMAIL FROM:<x>\r\n"[..],
            ),
            (b"a\r\n.\nb\r\n.\r\n", b"a\r\n.\nb\r\n"),
            (b"a\n.\r\nb\r\n.\r\n", b"a\n.\r\nb\r\n"),
            (b".\nb\r\n.\r\n", b".\nb\r\n"),
            (b"a\r.\r\r\n.\r\n", b"a\r.\r\r\n"),
        ] {
            let (got, rest) = unstuff(input);
            assert_eq!(
                got,
                data,
                "{:?} -> {:?}",
                String::from_utf8_lossy(input),
                String::from_utf8_lossy(&got)
            );
            assert!(rest.is_empty());
        }
        let (data, rest) = unstuff(b".\r\nQUIT\r\n");
        assert!(data.is_empty());
        assert_eq!(rest, b"QUIT\r\n");
    }

    #[test]
    fn a_crlf_split_across_chunks_still_counts() {
        let mut input = vec![b'x'; DATA_CHUNK - 1];
        input.extend_from_slice(b"\r\n.\r\nQUIT\r\n");
        let (data, rest) = unstuff(&input);
        assert_eq!(data.len(), DATA_CHUNK + 1);
        assert_eq!(rest, b"QUIT\r\n");
    }

    #[test]
    fn an_over_long_command_is_skipped_in_pieces() {
        let mut input = vec![b'A'; 1 << 20];
        input.extend_from_slice(b"\r\nQUIT\r\n");
        let mut reader = BufReader::with_capacity(1024, &input[..]);
        assert!(matches!(
            read_command(&mut reader).unwrap(),
            Command::TooLong
        ));
        assert!(matches!(read_command(&mut reader).unwrap(),
            Command::Line(l) if l == b"QUIT\r\n"));
        assert!(matches!(read_command(&mut reader).unwrap(), Command::End));
        let endless = vec![0u8; 100_000];
        let mut reader = BufReader::with_capacity(1024, &endless[..]);
        assert!(matches!(
            read_command(&mut reader).unwrap(),
            Command::TooLong
        ));
        let exact = [vec![b'B'; MAX_COMMAND - 2], b"\r\n".to_vec()].concat();
        let mut reader = BufReader::with_capacity(100, &exact[..]);
        assert!(matches!(read_command(&mut reader).unwrap(),
            Command::Line(l) if l.len() == MAX_COMMAND));
    }

    #[test]
    fn paths_are_taken_apart() {
        assert_eq!(
            path_argument("FROM:<a@b> SIZE=10", "FROM:"),
            Some(("a@b", "SIZE=10"))
        );
        assert_eq!(path_argument("from: <>", "FROM:"), Some(("", "")));
        assert_eq!(path_argument("TO:root", "TO:"), Some(("root", "")));
        assert_eq!(path_argument("TO <x>", "TO:"), None);
    }
}
