//! Reading the message from stdin, streaming: line-ending
//! canonicalisation, the sendmail dot rule (`-i`), the header section
//! (`-t` recipients, Bcc stripping) and the header fields spool adds
//! (From, Date, Message-ID).
//!
//! What this module owns:
//! - The canonical form of a message (S4, docs/architecture.md): CRLF becomes LF, a lone
//!   CR and every other byte (8-bit, NUL) are kept exactly, a missing
//!   final newline is added. What is written here is what the recipient
//!   gets.
//! - Constant memory (S5): input is read in fixed 16 KiB blocks and
//!   fed through a byte-level state machine; only the header section is
//!   held in memory, bounded by `max_header_size`. Nothing ever waits for
//!   a newline, so a 100 MB message without one streams through.
//! - Keeping input and output errors apart: a read error is temporary
//!   (the caller may retry), a write error is classified by its errno.

use std::collections::HashSet;
use std::io::{self, Read, Write};
use std::time::SystemTime;

use crate::address::{self, Address};
use crate::error::{Error, Kind, Result};

/// Size of one read from the input.
const READ_SIZE: usize = 16 * 1024;
/// RFC 5322 lines are at most 998 octets, so a longer run of field-name
/// characters without a ':' cannot be a field: it is body text, and
/// deciding so early keeps it out of the header buffer.
const MAX_FIELD_NAME: usize = 998;
/// A full name longer than this (in characters) is cut: it only has to
/// be recognisable, and it must keep the From line well under 998 octets.
const MAX_FULL_NAME: usize = 200;

/// How the message on stdin is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntakeOptions {
    /// `-i`/`-oi`: a line consisting of a single "." is ordinary text
    /// instead of the end of the message.
    pub ignore_dots: bool,
    /// The largest message accepted, in canonical bytes (header fields as
    /// written plus body); 0 means unlimited.
    pub max_size: u64,
    /// The largest header section held in memory, in bytes.
    pub max_header_size: usize,
}

impl Default for IntakeOptions {
    /// Dots end the message, no size limit, 256 KiB of header.
    fn default() -> Self {
        IntakeOptions {
            ignore_dots: false,
            max_size: 0,
            max_header_size: 256 * 1024,
        }
    }
}

/// A message being read from `input`: first [`Intake::read_header`], then
/// [`Intake::copy_body`].
pub struct Intake<R: Read> {
    input: R,
    options: IntakeOptions,
    buf: Box<[u8]>,
    /// The unread part of `buf` is `pos..len`.
    pos: usize,
    len: usize,
    /// The input returned end-of-file; it is never read again.
    eof: bool,
    canon: Canon,
    header_read: bool,
    body_copied: bool,
    /// The start of the first body line, read while it still looked like
    /// it might be a header field.
    body_prefix: Vec<u8>,
    /// Canonical size of the header fields that will be written.
    header_size: u64,
}

impl<R: Read> Intake<R> {
    /// A message to be read from `input`; nothing is read yet.
    pub fn new(input: R, options: IntakeOptions) -> Self {
        let canon = Canon::new(options.ignore_dots);
        Intake {
            input,
            options,
            buf: vec![0u8; READ_SIZE].into_boxed_slice(),
            pos: 0,
            len: 0,
            eof: false,
            canon,
            header_read: false,
            body_copied: false,
            body_prefix: Vec::new(),
            header_size: 0,
        }
    }

    /// Reads the header section. Call once, before copy_body.
    ///
    /// The section ends at an empty line (consumed), at the first line
    /// that is not a field (kept: it starts the body), at a lone "." (the
    /// dot rule, unless `ignore_dots`) or at end of input. A first line
    /// "From ..." (an mbox From_ line) is dropped.
    pub fn read_header(&mut self) -> Result<Header> {
        if self.header_read {
            return Err(Error::new(Kind::Software, "read_header called twice"));
        }
        self.header_read = true;
        let mut parser = HeaderParser::new(self.options.max_header_size);
        let mut emitted = Vec::with_capacity(4);
        loop {
            if self.canon.ended {
                break;
            }
            emitted.clear();
            if self.pos == self.len && !self.fill()? {
                self.canon.finish(&mut emitted);
                if let Feed::Body(prefix) = parser.feed(&emitted)? {
                    self.body_prefix = prefix;
                }
                break;
            }
            let byte = self.buf[self.pos];
            self.pos += 1;
            self.canon.push(byte, &mut emitted);
            match parser.feed(&emitted)? {
                Feed::More => {}
                Feed::End => break,
                Feed::Body(prefix) => {
                    self.body_prefix = prefix;
                    break;
                }
            }
        }
        let header = Header {
            fields: parser.fields,
        };
        check_tokens(&header)?;
        self.header_size = header.written_size();
        self.check_size(0)?;
        Ok(header)
    }

    /// Streams the rest (the body) to `out` with the same
    /// canonicalisation and dot rule; returns body bytes written.
    ///
    /// Without a prior [`Intake::read_header`] the whole input is body.
    /// A second call writes nothing. Once the dot rule ends the message,
    /// the rest of the input is not read.
    pub fn copy_body<W: Write>(&mut self, out: &mut W) -> Result<u64> {
        self.header_read = true;
        if self.body_copied {
            return Ok(0);
        }
        self.body_copied = true;
        let mut written = 0u64;
        let prefix = std::mem::take(&mut self.body_prefix);
        self.emit(out, &prefix, &mut written)?;
        let mut chunk = Vec::with_capacity(2 * READ_SIZE + 4);
        while !self.canon.ended {
            chunk.clear();
            if self.pos == self.len && !self.fill()? {
                self.canon.finish(&mut chunk);
                self.emit(out, &chunk, &mut written)?;
                break;
            }
            self.canonicalize_buffer(&mut chunk);
            self.emit(out, &chunk, &mut written)?;
        }
        Ok(written)
    }

    /// Refills the buffer; false at end of input. EINTR is retried: a
    /// signal is no reason to lose a message.
    fn fill(&mut self) -> Result<bool> {
        if self.eof {
            return Ok(false);
        }
        loop {
            match self.input.read(&mut self.buf) {
                Ok(0) => {
                    self.eof = true;
                    self.pos = 0;
                    self.len = 0;
                    return Ok(false);
                }
                Ok(n) => {
                    // A misbehaving reader must not make us index past the buffer.
                    self.len = n.min(self.buf.len());
                    self.pos = 0;
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::temp(format!("reading the message: {e}"))),
            }
        }
    }

    /// Canonicalises the unread part of the buffer into `chunk`, stopping
    /// early when the dot rule ends the message.
    fn canonicalize_buffer(&mut self, chunk: &mut Vec<u8>) {
        while self.pos < self.len {
            let rest = &self.buf[self.pos..self.len];
            if self.canon.in_mid_line() {
                // Fast path: inside a line only CR and LF matter.
                let run = rest
                    .iter()
                    .position(|&b| b == b'\r' || b == b'\n')
                    .unwrap_or(rest.len());
                if run > 0 {
                    chunk.extend_from_slice(&rest[..run]);
                    self.pos += run;
                    continue;
                }
            }
            let byte = rest[0];
            self.pos += 1;
            if self.canon.push(byte, chunk) {
                break;
            }
        }
    }

    /// Writes body bytes after checking the size limit.
    fn emit<W: Write>(&self, out: &mut W, bytes: &[u8], written: &mut u64) -> Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.check_size(*written + bytes.len() as u64)?;
        out.write_all(bytes)
            .map_err(|e| Error::io("writing the queue file", &e))?;
        *written += bytes.len() as u64;
        Ok(())
    }

    /// Fails when the header plus `body` bytes exceed `max_size`.
    fn check_size(&self, body: u64) -> Result<()> {
        let max = self.options.max_size;
        if max > 0 && self.header_size.saturating_add(body) > max {
            return Err(Error::data(format!(
                "message larger than max_message_size ({max} bytes)"
            )));
        }
        Ok(())
    }
}

/// The byte-level canonicaliser: CRLF → LF, the dot rule, final newline.
/// It holds back at most a CR and a leading dot, so a CR at the end of one
/// read and an LF at the start of the next still make one line end.
#[derive(Debug)]
struct Canon {
    ignore_dots: bool,
    /// The next byte starts a line.
    line_start: bool,
    /// A CR was read and not yet released (it may be half of a CRLF).
    cr: bool,
    /// The current line so far is a single "." (held back: it may be the
    /// end of the message).
    dot: bool,
    /// The dot rule ended the message.
    ended: bool,
}

impl Canon {
    /// A canonicaliser at the start of a message.
    fn new(ignore_dots: bool) -> Canon {
        Canon {
            ignore_dots,
            line_start: true,
            cr: false,
            dot: false,
            ended: false,
        }
    }

    /// Inside a line with nothing held back: bytes other than CR and LF
    /// pass through unchanged.
    fn in_mid_line(&self) -> bool {
        !self.line_start && !self.cr && !self.dot && !self.ended
    }

    /// Feeds one input byte, appending what it releases to `out`; true
    /// when the message ended by the dot rule.
    fn push(&mut self, byte: u8, out: &mut Vec<u8>) -> bool {
        if self.ended {
            return true;
        }
        if self.cr {
            self.cr = false;
            if byte == b'\n' {
                return self.end_line(out);
            }
            // A lone CR is data, kept as it came.
            self.release_dot(out);
            out.push(b'\r');
            self.line_start = false;
        }
        match byte {
            b'\r' => self.cr = true,
            b'\n' => return self.end_line(out),
            b'.' if self.line_start && !self.ignore_dots => {
                self.dot = true;
                self.line_start = false;
            }
            _ => {
                // ".." and ".x" stay as they are: sendmail 8 undoes dot
                // stuffing only in SMTP mode.
                self.release_dot(out);
                out.push(byte);
                self.line_start = false;
            }
        }
        false
    }

    /// End of input: a held-back CR ends its line (it cannot be data at
    /// the very end), "." alone ends the message, and a last line without
    /// a newline gets one.
    fn finish(&mut self, out: &mut Vec<u8>) {
        if self.ended {
            return;
        }
        if self.cr {
            self.cr = false;
            self.end_line(out);
            return;
        }
        if self.dot {
            self.dot = false;
            self.ended = true;
            return;
        }
        if !self.line_start {
            out.push(b'\n');
            self.line_start = true;
        }
    }

    /// The held-back "." turned out to start an ordinary line.
    fn release_dot(&mut self, out: &mut Vec<u8>) {
        if self.dot {
            out.push(b'.');
            self.dot = false;
        }
    }

    /// A line ended (LF, CRLF, or CR at end of input); true when it was
    /// the lone "." that ends the message.
    fn end_line(&mut self, out: &mut Vec<u8>) -> bool {
        if self.dot {
            self.dot = false;
            self.ended = true;
            return true;
        }
        out.push(b'\n');
        self.line_start = true;
        false
    }
}

/// Where the header parser is within the current line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LineState {
    /// Nothing of the line seen yet.
    Start,
    /// Field-name characters, no ':' yet.
    Name,
    /// After "name:", up to the newline.
    Value,
    /// A folded continuation of the previous field.
    Continuation,
    /// Discarding the mbox "From " line.
    DropFrom,
}

/// What the header parser wants after some bytes.
enum Feed {
    More,
    /// The empty line ending the header section was consumed.
    End,
    /// The current line is body text: here is what was read of it.
    Body(Vec<u8>),
}

/// Splits canonical bytes into header fields, deciding on each byte
/// whether the current line can still be a field.
struct HeaderParser {
    fields: Vec<Vec<u8>>,
    line: Vec<u8>,
    state: LineState,
    first_line: bool,
    /// A field was just completed, so a line starting with SP/HT folds
    /// into it.
    can_continue: bool,
    /// Bytes held (fields and current line).
    size: usize,
    max_size: usize,
}

/// RFC 5322 ftext: printable ASCII except ':'.
fn is_name_byte(b: u8) -> bool {
    (33..=126).contains(&b) && b != b':'
}

impl HeaderParser {
    /// A parser before the first line, holding at most `max_size` bytes.
    fn new(max_size: usize) -> HeaderParser {
        HeaderParser {
            fields: Vec::new(),
            line: Vec::new(),
            state: LineState::Start,
            first_line: true,
            can_continue: false,
            size: 0,
            max_size,
        }
    }

    /// Feeds the canonical bytes released by one input byte.
    fn feed(&mut self, bytes: &[u8]) -> Result<Feed> {
        for (i, &b) in bytes.iter().enumerate() {
            match self.byte(b)? {
                Some(true) => return Ok(Feed::End),
                Some(false) => {
                    let mut prefix = std::mem::take(&mut self.line);
                    prefix.extend_from_slice(bytes.get(i..).unwrap_or_default());
                    return Ok(Feed::Body(prefix));
                }
                None => {}
            }
        }
        Ok(Feed::More)
    }

    /// One canonical byte: None to go on, Some(true) at the end of the
    /// header section, Some(false) when the current line (not including
    /// `b`, which is not kept) is body.
    fn byte(&mut self, b: u8) -> Result<Option<bool>> {
        match self.state {
            LineState::Start => match b {
                b'\n' => return Ok(Some(true)),
                b' ' | b'\t' if self.can_continue => {
                    self.state = LineState::Continuation;
                    self.keep(b)?;
                }
                _ if is_name_byte(b) => {
                    self.state = LineState::Name;
                    self.keep(b)?;
                }
                _ => return Ok(Some(false)),
            },
            LineState::Name => match b {
                b':' => {
                    self.state = LineState::Value;
                    self.keep(b)?;
                }
                b' ' if self.first_line && self.line == b"From" => {
                    // Postfix and sendmail drop an mbox From_ line too.
                    self.size -= self.line.len();
                    self.line.clear();
                    self.state = LineState::DropFrom;
                }
                _ if is_name_byte(b) && self.line.len() < MAX_FIELD_NAME => self.keep(b)?,
                _ => return Ok(Some(false)),
            },
            LineState::Value | LineState::Continuation => {
                self.keep(b)?;
                if b == b'\n' {
                    let line = std::mem::take(&mut self.line);
                    match self.fields.last_mut() {
                        Some(field) if self.state == LineState::Continuation => {
                            field.extend_from_slice(&line)
                        }
                        _ => self.fields.push(line),
                    }
                    self.end_line();
                }
            }
            LineState::DropFrom => {
                if b == b'\n' {
                    self.end_line();
                    self.can_continue = false;
                }
            }
        }
        Ok(None)
    }

    /// A field line or continuation was completed.
    fn end_line(&mut self) {
        self.state = LineState::Start;
        self.first_line = false;
        self.can_continue = true;
    }

    /// Holds one more header byte, within the header size limit.
    fn keep(&mut self, b: u8) -> Result<()> {
        self.size += 1;
        if self.size > self.max_size {
            return Err(Error::data(format!(
                "header section longer than {} bytes",
                self.max_size
            )));
        }
        self.line.push(b);
        Ok(())
    }
}

/// The header section as received: the raw fields, in order, each with
/// its folded continuation lines and final LF (line endings canonical).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Header {
    fields: Vec<Vec<u8>>,
}

/// Longest run of octets without white space a header field may hold:
/// a line's worth (RFC 5322 §2.1.1). A longer word can only be sent by
/// folding inside it, which changes it (issue 24).
const MAX_HEADER_TOKEN: usize = 998;

/// Refuses a header field with a word longer than [`MAX_HEADER_TOKEN`]:
/// a clear error now rather than a changed field at the recipient.
fn check_tokens(header: &Header) -> Result<()> {
    for field in &header.fields {
        let longest = field
            .split(|b| b.is_ascii_whitespace())
            .map(<[u8]>::len)
            .max()
            .unwrap_or(0);
        if longest > MAX_HEADER_TOKEN {
            return Err(Error::data(format!(
                "header field {:?} has a word of {longest} octets without white space, longer than a line may be ({MAX_HEADER_TOKEN}, RFC 5322 §2.1.1): it could not be sent unchanged",
                String::from_utf8_lossy(field_name(field))
            )));
        }
    }
    Ok(())
}

/// The name of a raw field: the bytes before its ':'.
fn field_name(raw: &[u8]) -> &[u8] {
    let end = raw.iter().position(|&b| b == b':').unwrap_or(raw.len());
    &raw[..end]
}

/// Bcc fields are never written: nobody's Bcc leaks to the others.
fn is_bcc(name: &[u8]) -> bool {
    name.eq_ignore_ascii_case(b"Bcc") || name.eq_ignore_ascii_case(b"Resent-Bcc")
}

/// The unfolded value of a raw field, lossy UTF-8, without the
/// surrounding blanks.
fn field_value(raw: &[u8]) -> String {
    let name_len = field_name(raw).len();
    let value: Vec<u8> = raw
        .get(name_len + 1..)
        .unwrap_or_default()
        .iter()
        .copied()
        .filter(|&b| b != b'\n')
        .collect();
    String::from_utf8_lossy(&value)
        .trim_matches([' ', '\t'])
        .to_string()
}

impl Header {
    /// Case-insensitive: is there a field with this name?
    pub fn contains(&self, name: &str) -> bool {
        self.fields
            .iter()
            .any(|f| field_name(f).eq_ignore_ascii_case(name.as_bytes()))
    }

    /// -t recipients: the Resent-To/Resent-Cc/Resent-Bcc set when any of
    /// them is present, otherwise To/Cc/Bcc. Groups expanded
    /// ("undisclosed-recipients:;" gives none). Every address validated
    /// (Address::parse); a malformed one is an Error::data naming the
    /// field. Bare local names are returned unqualified; an address named
    /// twice is returned once, in first-seen order.
    pub fn recipients(&self) -> Result<Vec<Address>> {
        const RESENT: [&str; 3] = ["Resent-To", "Resent-Cc", "Resent-Bcc"];
        const PLAIN: [&str; 3] = ["To", "Cc", "Bcc"];
        let names = if RESENT.iter().any(|n| self.contains(n)) {
            RESENT
        } else {
            PLAIN
        };
        let mut seen = HashSet::new();
        let mut found = Vec::new();
        for raw in &self.fields {
            let name = field_name(raw);
            let Some(which) = names
                .iter()
                .find(|n| name.eq_ignore_ascii_case(n.as_bytes()))
            else {
                continue;
            };
            let addresses = address::parse_mailboxes(&field_value(raw))
                .map_err(|e| e.context(format!("{which} field")))?;
            for a in addresses {
                if seen.insert(a.clone()) {
                    found.push(a);
                }
            }
        }
        Ok(found)
    }

    /// Writes every field except Bcc and Resent-Bcc (always stripped:
    /// nobody's Bcc leaks), byte-for-byte as received apart from line
    /// endings (LF). Returns bytes written.
    pub fn write_to<W: Write>(&self, out: &mut W) -> Result<u64> {
        let mut written = 0u64;
        for raw in self.fields.iter().filter(|f| !is_bcc(field_name(f))) {
            out.write_all(raw)
                .map_err(|e| Error::io("writing the queue file", &e))?;
            written += raw.len() as u64;
        }
        Ok(written)
    }

    /// Adds `@hostname` to bare local names in the address fields
    /// (`To: root` → `To: root@hostname`), as sendmail does.
    pub fn qualify(&mut self, hostname: &str) {
        for raw in &mut self.fields {
            if crate::accept::qualify::is_address_field(field_name(raw))
                && let Some(rewritten) = crate::accept::qualify::qualify_field(raw, hostname)
            {
                *raw = rewritten;
            }
        }
    }

    /// Masquerades the local mailboxes of the fields `masquerade` covers
    /// (From, Sender, Reply-To by default); see [`crate::accept::masquerade`].
    pub fn masquerade(&mut self, masquerade: &crate::accept::masquerade::Masquerade) {
        for raw in &mut self.fields {
            if let Some(rewritten) = masquerade.header_field(raw) {
                *raw = rewritten;
            }
        }
    }

    /// Unfolded value of the first field with this name, if any (lossy
    /// UTF-8), without leading and trailing blanks.
    pub fn get(&self, name: &str) -> Option<String> {
        self.fields
            .iter()
            .find(|f| field_name(f).eq_ignore_ascii_case(name.as_bytes()))
            .map(|f| field_value(f))
    }

    /// What [`Header::write_to`] will write, in bytes.
    fn written_size(&self) -> u64 {
        self.fields
            .iter()
            .filter(|f| !is_bcc(field_name(f)))
            .map(|f| f.len() as u64)
            .sum()
    }
}

/// "From: Full Name <addr>\n" — the name quoted when it has RFC 5322
/// specials, RFC 2047 encoded (=?UTF-8?B?...?=) when non-ASCII, omitted
/// when None/empty; control characters in the name are dropped. A name
/// longer than 200 characters is cut.
pub fn from_field(full_name: Option<&str>, sender: &Address) -> Vec<u8> {
    let name: String = full_name
        .unwrap_or("")
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_FULL_NAME)
        .collect();
    let name = name.trim();
    let field = if name.is_empty() {
        format!("From: {sender}\n")
    } else {
        format!("From: {} <{sender}>\n", display_name(name))
    };
    field.into_bytes()
}

/// A display name as an RFC 5322 phrase.
fn display_name(name: &str) -> String {
    // "=?" in plain text could be taken for an encoded word by a reader;
    // encoding it shows the name literally.
    if !name.is_ascii() || name.contains("=?") {
        return encoded_words(name);
    }
    if name.chars().any(|c| "()<>[]:;@\\,.\"".contains(c)) {
        let escaped = name.replace('\\', "\\\\").replace('"', "\\\"");
        return format!("\"{escaped}\"");
    }
    name.to_string()
}

/// RFC 2047 B-encoded words, each at most 75 characters (45 bytes of
/// text), split on character boundaries and folded onto separate lines.
fn encoded_words(text: &str) -> String {
    let mut words = Vec::new();
    let mut piece = String::new();
    for c in text.chars() {
        if piece.len() + c.len_utf8() > 45 {
            words.push(format!("=?UTF-8?B?{}?=", base64(piece.as_bytes())));
            piece.clear();
        }
        piece.push(c);
    }
    if !piece.is_empty() {
        words.push(format!("=?UTF-8?B?{}?=", base64(piece.as_bytes())));
    }
    words.join("\n ")
}

/// Standard base64 with padding (RFC 4648), for encoded words.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for group in bytes.chunks(3) {
        let b = [
            group[0],
            group.get(1).copied().unwrap_or(0),
            group.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18u32, 12, 6, 0].into_iter().enumerate() {
            if i <= group.len() {
                out.push(char::from(ALPHABET[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// "Date: Mon, 23 Nov 2026 06:50:03 +0100\n": the field, with the date
/// [`crate::clock::rfc5322`] writes (local time, no locale, never a failure).
pub fn date_field(now: SystemTime) -> Vec<u8> {
    format!("Date: {}\n", crate::clock::rfc5322(now)).into_bytes()
}

/// The trace field sendmail and Postfix put on a locally submitted
/// message (RFC 5321 §4.4): "Received: by HOST (spoolmail, from userid
/// UID)\n\tid ID; DATE\n". It also counts towards loop detection.
pub fn received_field(hostname: &str, uid: u32, queue_id: &str, now: SystemTime) -> Vec<u8> {
    let date = crate::clock::rfc5322(now);
    let host: String = hostname
        .chars()
        .filter(|c| c.is_ascii_graphic() && !"()<>;".contains(*c))
        .collect();
    format!("Received: by {host} (spoolmail, from userid {uid})\n\tid {queue_id}; {date}\n")
        .into_bytes()
}

/// "Message-ID: <ID@hostname>\n". Characters that cannot appear in a
/// msg-id (specials, spaces, controls, non-ASCII) are dropped from both
/// parts, so a strange hostname cannot break the field.
pub fn message_id_field(queue_id: &str, hostname: &str) -> Vec<u8> {
    fn clean(s: &str, fallback: &str) -> String {
        let kept: String = s
            .chars()
            .filter(|c| c.is_ascii_graphic() && !"()<>[]:;@\\,\"".contains(*c))
            .collect();
        if kept.is_empty() {
            fallback.to_string()
        } else {
            kept
        }
    }
    format!(
        "Message-ID: <{}@{}>\n",
        clean(queue_id, "unknown"),
        clean(hostname, "localhost")
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that hands out its data in the given chunk sizes (cycled).
    struct Chunked {
        data: Vec<u8>,
        pos: usize,
        sizes: Vec<usize>,
        turn: usize,
    }

    impl Chunked {
        fn new(data: &[u8], sizes: &[usize]) -> Chunked {
            Chunked {
                data: data.to_vec(),
                pos: 0,
                sizes: sizes.to_vec(),
                turn: 0,
            }
        }
    }

    impl Read for Chunked {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let want = self.sizes[self.turn % self.sizes.len()].max(1);
            self.turn += 1;
            let n = want.min(buf.len()).min(self.data.len() - self.pos);
            buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
            self.pos += n;
            Ok(n)
        }
    }

    /// Gives `data`, then fails: proves that nothing after it was read.
    struct FailsAfter<'a>(&'a [u8]);

    impl Read for FailsAfter<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.0.is_empty() {
                return Err(io::Error::other("read past the end"));
            }
            let n = buf.len().min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    /// Header as written, body as copied, and the header itself.
    fn intake_from<R: Read>(
        input: R,
        options: IntakeOptions,
    ) -> Result<(Vec<u8>, Vec<u8>, Header)> {
        let mut intake = Intake::new(input, options);
        let header = intake.read_header()?;
        let mut head = Vec::new();
        let n = header.write_to(&mut head)?;
        assert_eq!(n, head.len() as u64);
        let mut body = Vec::new();
        let m = intake.copy_body(&mut body)?;
        assert_eq!(m, body.len() as u64);
        Ok((head, body, header))
    }

    fn read(input: &[u8]) -> (Vec<u8>, Vec<u8>, Header) {
        intake_from(input, IntakeOptions::default()).unwrap()
    }

    fn read_i(input: &[u8]) -> (Vec<u8>, Vec<u8>, Header) {
        let options = IntakeOptions {
            ignore_dots: true,
            ..IntakeOptions::default()
        };
        intake_from(input, options).unwrap()
    }

    #[test]
    fn a_header_word_longer_than_a_line_is_refused() {
        // Issue 24: a 1,500-octet token could only be folded inside
        // itself, which changes it.
        let mut input = b"Subject: ok\nX-Token: a ".to_vec();
        input.extend(std::iter::repeat_n(b'h', 1500));
        input.extend_from_slice(b"\n\nbody\n");
        let e = intake_from(&input[..], IntakeOptions::default()).unwrap_err();
        assert_eq!(e.kind(), Kind::Data);
        assert!(e.to_string().contains("X-Token"), "{e}");
        // Long fields of ordinary words, folded or not, are fine.
        let long = "word ".repeat(400);
        let input = format!("Subject: {long}\nX-Folded: a\n {long}\n\nbody\n");
        let (head, _, _) = read(input.as_bytes());
        assert!(head.len() > 4000);
        // 998 octets is a line's worth: taken.
        let input = format!("X-Token: {}\n\nb\n", "t".repeat(998));
        read(input.as_bytes());
    }

    #[test]
    fn crlf_becomes_lf() {
        let (head, body, _) = read(b"Subject: a\r\nTo: b\r\n\r\nline1\r\nline2\r\n");
        assert_eq!(head, b"Subject: a\nTo: b\n");
        assert_eq!(body, b"line1\nline2\n");
    }

    #[test]
    fn lf_is_kept() {
        let (head, body, _) = read(b"Subject: a\n\nline1\nline2\n");
        assert_eq!(head, b"Subject: a\n");
        assert_eq!(body, b"line1\nline2\n");
    }

    #[test]
    fn php_mixed_endings_are_canonical() {
        // PHP mail(): headers in CRLF, body in LF, CRLF appended.
        let (head, body, _) = read(b"To: a@x.example\r\nSubject: s\r\n\r\nbody 1\nbody 2\r\n");
        assert_eq!(head, b"To: a@x.example\nSubject: s\n");
        assert_eq!(body, b"body 1\nbody 2\n");
    }

    #[test]
    fn lone_cr_is_kept() {
        let (_, body, _) = read(b"\na\rb\r\r\nc\n");
        assert_eq!(body, b"a\rb\r\nc\n");
    }

    #[test]
    fn cr_at_end_of_input_ends_the_line() {
        let (_, body, _) = read(b"\nabc\r");
        assert_eq!(body, b"abc\n");
    }

    #[test]
    fn cr_lf_split_across_reads_is_one_line_end() {
        let input: &[u8] = b"Subject: a\r\n\r\n.x\r\n..y\r\nz\r\n.\r\n";
        for sizes in [&[1][..], &[2], &[3], &[1, 2, 5]] {
            let (head, body, _) =
                intake_from(Chunked::new(input, sizes), IntakeOptions::default()).unwrap();
            assert_eq!(head, b"Subject: a\n", "sizes {sizes:?}");
            assert_eq!(body, b".x\n..y\nz\n", "sizes {sizes:?}");
        }
    }

    #[test]
    fn missing_final_newline_is_added() {
        // fail2ban sends no final newline.
        let (_, body, _) = read(b"Subject: ban\n\nHi,\nbanned 1.2.3.4");
        assert_eq!(body, b"Hi,\nbanned 1.2.3.4\n");
        let (head, body, _) = read(b"Subject: only");
        assert_eq!(head, b"Subject: only\n");
        assert_eq!(body, b"");
    }

    #[test]
    fn lone_dot_ends_the_message_and_nothing_more_is_read() {
        let (_, body, _) = intake_from(
            FailsAfter(b"S: x\n\nline\n.\nmore\n"),
            IntakeOptions::default(),
        )
        .unwrap();
        assert_eq!(body, b"line\n");
        let (_, body, _) = read(b"S: x\n\nline\r\n.\r\nmore\r\n");
        assert_eq!(body, b"line\n");
        let (_, body, _) = read(b"S: x\n\nline\n.");
        assert_eq!(body, b"line\n");
    }

    #[test]
    fn dot_rule_applies_in_the_header_section() {
        let (head, body, _) = intake_from(
            FailsAfter(b"Subject: x\n.\nTo: y\n"),
            IntakeOptions::default(),
        )
        .unwrap();
        assert_eq!(head, b"Subject: x\n");
        assert_eq!(body, b"");
        let (head, body, _) = read(b".\r\n");
        assert_eq!((head, body), (vec![], vec![]));
    }

    #[test]
    fn dots_that_are_not_alone_are_kept() {
        let (_, body, _) = read(b"\n..foo\n.bar\n. \n.\r.\n..\n");
        assert_eq!(body, b"..foo\n.bar\n. \n.\r.\n..\n");
    }

    #[test]
    fn ignore_dots_makes_a_lone_dot_ordinary() {
        let (head, body, _) = read_i(b"S: x\n.\nT: y\n\na\n.\nb\n.");
        assert_eq!(head, b"S: x\n");
        assert_eq!(body, b".\nT: y\n\na\n.\nb\n.\n");
    }

    #[test]
    fn headers_only_message() {
        let (head, body, header) = read(b"Subject: x\nTo: root\n");
        assert_eq!(head, b"Subject: x\nTo: root\n");
        assert_eq!(body, b"");
        assert!(header.contains("to"));
    }

    #[test]
    fn message_without_header_is_all_body() {
        let (head, body, header) = read(b"hello world\nFrom: not a header\n");
        assert_eq!(head, b"");
        assert_eq!(body, b"hello world\nFrom: not a header\n");
        assert!(!header.contains("From"));
        let (head, body, _) = read(b"Subject : spaced\n\nx\n");
        assert_eq!(head, b"");
        assert_eq!(body, b"Subject : spaced\n\nx\n");
    }

    #[test]
    fn non_field_line_ends_the_header_and_starts_the_body() {
        let (head, body, _) = read(b"Subject: x\nnot a field\nTo: y\n");
        assert_eq!(head, b"Subject: x\n");
        assert_eq!(body, b"not a field\nTo: y\n");
    }

    #[test]
    fn continuation_lines_fold_into_their_field() {
        let (head, body, header) = read(b"Subject: a\r\n  b\r\n\tc\r\n\r\nx\n");
        assert_eq!(head, b"Subject: a\n  b\n\tc\n");
        assert_eq!(body, b"x\n");
        assert_eq!(header.get("SUBJECT").as_deref(), Some("a  b\tc"));
    }

    #[test]
    fn continuation_as_first_line_is_body() {
        let (head, body, _) = read(b" indented\nSubject: x\n");
        assert_eq!(head, b"");
        assert_eq!(body, b" indented\nSubject: x\n");
    }

    #[test]
    fn huge_first_line_streams_instead_of_filling_the_header_buffer() {
        let options = IntakeOptions {
            max_header_size: 1024,
            ..IntakeOptions::default()
        };
        let mut input = vec![0xffu8; 1 << 20];
        input.extend_from_slice(b"\nend");
        let (head, body, _) = intake_from(&input[..], options.clone()).unwrap();
        assert_eq!(head, b"");
        assert_eq!(body.len(), input.len() + 1);
        // A run of name characters longer than any real field name too.
        let input = "a".repeat(5000);
        let (_, body, _) = intake_from(input.as_bytes(), options).unwrap();
        assert_eq!(body.len(), 5001);
    }

    #[test]
    fn mbox_from_line_is_dropped() {
        let (head, body, header) =
            read(b"From someone@x.example Mon Jan  1 00:00:00 2026\nSubject: x\n\nFrom me\n");
        assert_eq!(head, b"Subject: x\n");
        assert_eq!(body, b"From me\n");
        assert!(!header.contains("From"));
        let (head, _, _) = read(b"From: a@x.example\n\n");
        assert_eq!(head, b"From: a@x.example\n");
        // Only the first line is a From_ line.
        let (head, body, _) = read(b"Subject: x\nFrom y\n");
        assert_eq!(head, b"Subject: x\n");
        assert_eq!(body, b"From y\n");
    }

    #[test]
    fn bcc_is_stripped_but_its_recipients_count() {
        let input = b"To: a@x.example\nBcc: b@x.example,\n c@x.example\nbcc: d@x.example\nSubject: s\n\nbody\n";
        let (head, body, header) = read(input);
        assert_eq!(head, b"To: a@x.example\nSubject: s\n");
        assert_eq!(body, b"body\n");
        let rcpts: Vec<String> = header
            .recipients()
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            rcpts,
            ["a@x.example", "b@x.example", "c@x.example", "d@x.example"]
        );
    }

    #[test]
    fn resent_fields_take_over_when_present() {
        let input =
            b"To: old@x.example\nResent-To: new@x.example\nResent-Bcc: hidden@x.example\n\n";
        let (head, _, header) = read(input);
        assert_eq!(head, b"To: old@x.example\nResent-To: new@x.example\n");
        let rcpts: Vec<String> = header
            .recipients()
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(rcpts, ["new@x.example", "hidden@x.example"]);
    }

    #[test]
    fn groups_display_names_and_bare_names_in_recipients() {
        let (_, _, header) = read(b"To: undisclosed-recipients:;\n\n");
        assert!(header.recipients().unwrap().is_empty());
        let (_, _, header) = read(
            b"To: team: a@x.example, \"B, Bee\" <b@x.example>;, root\nCc: =?UTF-8?B?w6k=?= <a@x.example>\n\n",
        );
        let rcpts: Vec<String> = header
            .recipients()
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(rcpts, ["a@x.example", "b@x.example", "root"]);
    }

    #[test]
    fn malformed_recipient_names_the_field() {
        let (_, _, header) = read(b"To: a@x.example\nCc: not valid@x\n\n");
        let e = header.recipients().unwrap_err();
        assert_eq!(e.kind(), Kind::Data);
        assert!(
            e.message().starts_with("Cc field: invalid address"),
            "{}",
            e.message()
        );
    }

    #[test]
    fn get_and_contains_are_case_insensitive() {
        let (_, _, header) = read(b"X-Thing:  \xe9t\xe9 \nSubject: s\n\n");
        assert!(header.contains("x-thing"));
        assert!(!header.contains("x-thin"));
        assert_eq!(header.get("X-THING").as_deref(), Some("\u{FFFD}t\u{FFFD}"));
        assert_eq!(header.get("Date"), None);
    }

    #[test]
    fn eight_bit_bytes_and_nul_are_kept() {
        let input = b"Subject: \xe9t\xe9\n\n\x00\xff\x80\x1b\n";
        let (head, body, _) = read(input);
        assert_eq!(head, b"Subject: \xe9t\xe9\n");
        assert_eq!(body, b"\x00\xff\x80\x1b\n");
    }

    #[test]
    fn size_limit_counts_header_and_body() {
        let input = b"Subject: x\n\n0123456789\n"; // 11 header + 11 body
        let options = |max_size| IntakeOptions {
            max_size,
            ..IntakeOptions::default()
        };
        intake_from(&input[..], options(22)).unwrap();
        let e = intake_from(&input[..], options(21)).unwrap_err();
        assert_eq!(e.kind(), Kind::Data);
        assert_eq!(
            e.message(),
            "message larger than max_message_size (21 bytes)"
        );
        // The header alone can be too large, and Bcc does not count.
        let e = intake_from(&input[..], options(5)).unwrap_err();
        assert_eq!(e.kind(), Kind::Data);
        intake_from(&b"Bcc: a@x.example\n\nxy\n"[..], options(3)).unwrap();
    }

    #[test]
    fn header_section_limit() {
        let options = IntakeOptions {
            max_header_size: 16,
            ..IntakeOptions::default()
        };
        let e = intake_from(&b"Subject: a rather long value\n\n"[..], options.clone()).unwrap_err();
        assert_eq!(e.kind(), Kind::Data);
        assert_eq!(e.message(), "header section longer than 16 bytes");
        intake_from(
            &b"Subject: short\n\nbody is not limited by it\n"[..],
            options,
        )
        .unwrap();
    }

    #[test]
    fn read_error_is_temporary_and_write_error_follows_errno() {
        struct Broken;
        impl Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::from_raw_os_error(libc::EIO))
            }
        }
        let e = Intake::new(Broken, IntakeOptions::default())
            .read_header()
            .unwrap_err();
        assert_eq!(e.kind(), Kind::TempFail);
        assert!(e.message().starts_with("reading the message: "));

        struct DiskFull;
        impl Write for DiskFull {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::from_raw_os_error(libc::ENOSPC))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut intake = Intake::new(&b"Subject: x\n\nbody\n"[..], IntakeOptions::default());
        let header = intake.read_header().unwrap();
        let e = header.write_to(&mut DiskFull).unwrap_err();
        assert_eq!(e.kind(), Kind::TempFail);
        assert!(e.message().starts_with("writing the queue file: "));
        let e = intake.copy_body(&mut DiskFull).unwrap_err();
        assert_eq!(e.kind(), Kind::TempFail);
        let e = Intake::new(&b"x\n"[..], IntakeOptions::default())
            .copy_body(&mut WriteDenied)
            .unwrap_err();
        assert_eq!(e.kind(), Kind::NoPermission);

        struct WriteDenied;
        impl Write for WriteDenied {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::from_raw_os_error(libc::EACCES))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
    }

    #[test]
    fn interrupted_reads_are_retried() {
        struct Interrupts(bool, &'static [u8]);
        impl Read for Interrupts {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                self.0 = !self.0;
                if self.0 {
                    return Err(io::Error::from(io::ErrorKind::Interrupted));
                }
                let n = buf.len().min(self.1.len()).min(3);
                buf[..n].copy_from_slice(&self.1[..n]);
                self.1 = &self.1[n..];
                Ok(n)
            }
        }
        let (head, body, _) = intake_from(
            Interrupts(false, b"S: x\n\nbody\n"),
            IntakeOptions::default(),
        )
        .unwrap();
        assert_eq!(head, b"S: x\n");
        assert_eq!(body, b"body\n");
    }

    #[test]
    fn read_header_twice_is_a_bug() {
        let mut intake = Intake::new(&b"S: x\n\n"[..], IntakeOptions::default());
        intake.read_header().unwrap();
        assert_eq!(intake.read_header().unwrap_err().kind(), Kind::Software);
    }

    #[test]
    fn copy_body_without_read_header_copies_everything() {
        let mut intake = Intake::new(&b"S: x\r\n\r\nbody"[..], IntakeOptions::default());
        let mut out = Vec::new();
        intake.copy_body(&mut out).unwrap();
        assert_eq!(out, b"S: x\n\nbody\n");
    }

    #[test]
    fn empty_input_is_an_empty_message() {
        assert_eq!(read(b""), (vec![], vec![], Header::default()));
    }

    fn addr(s: &str) -> Address {
        Address::parse(s).unwrap()
    }

    #[test]
    fn from_field_forms() {
        let a = addr("root@host.example");
        assert_eq!(from_field(None, &a), b"From: root@host.example\n");
        assert_eq!(from_field(Some("  "), &a), b"From: root@host.example\n");
        assert_eq!(
            from_field(Some("Cron Daemon"), &a),
            b"From: Cron Daemon <root@host.example>\n"
        );
        assert_eq!(
            from_field(Some("Doe, J. \"Jr\""), &a),
            b"From: \"Doe, J. \\\"Jr\\\"\" <root@host.example>\n".to_vec()
        );
        assert_eq!(
            from_field(Some("Evil\r\nBcc: x@y\0"), &a),
            b"From: \"EvilBcc: x@y\" <root@host.example>\n".to_vec()
        );
        assert_eq!(
            from_field(Some("é"), &a),
            b"From: =?UTF-8?B?w6k=?= <root@host.example>\n"
        );
    }

    #[test]
    fn long_non_ascii_name_is_split_into_short_encoded_words() {
        let field = from_field(Some(&"ü".repeat(100)), &addr("a@b.example"));
        let text = String::from_utf8(field).unwrap();
        for line in text.lines() {
            assert!(line.len() <= 78, "{line}");
        }
        assert!(text.ends_with(" <a@b.example>\n"));
        assert_eq!(text.matches("=?UTF-8?B?").count(), 5);
    }

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        let vectors = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, encoded) in vectors {
            assert_eq!(base64(plain.as_bytes()), encoded);
        }
    }

    #[test]
    fn date_field_is_the_clock_date_as_a_field() {
        let when = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_795_413_003);
        let expected = format!("Date: {}\n", crate::clock::rfc5322(when));
        assert_eq!(date_field(when), expected.into_bytes());
    }

    #[test]
    fn message_id_field_form() {
        assert_eq!(
            message_id_field("1AbC", "host.example"),
            b"Message-ID: <1AbC@host.example>\n"
        );
        assert_eq!(message_id_field("a b>", "h<x>\n"), b"Message-ID: <ab@hx>\n");
    }
}
