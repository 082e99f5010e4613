//! 8-bit content on a 7-bit path (RFC 6152 §3): what a message holds,
//! found in one pass ([`scan`]), and its conversion to 7-bit MIME
//! ([`convert`]) for a server that does not offer 8BITMIME — or for
//! content no SMTP server takes as it is: a NUL (not allowed in 8BITMIME
//! data either, RFC 6152 §2) or, in a MIME message, a line over 998
//! octets, which an encoding carries unchanged where a split would not.
//!
//! Both stream in constant memory (S5): a line is handled in pieces of
//! at most [`PIECE`] octets, a header field is held (to read
//! Content-Type and Content-Transfer-Encoding) up to [`FIELD_CAP`], and
//! MIME nesting is followed to [`MAX_DEPTH`] boundaries.
//!
//! The conversion keeps the MIME structure: every leaf part whose
//! encoding is the identity (none, 7bit, 8bit, binary) is encoded
//! quoted-printable, its Content-Transfer-Encoding replaced; a multipart
//! or message/rfc822 is followed into (its encoding, if declared, says
//! 7bit); a part already quoted-printable or base64 keeps its encoding,
//! a stray 8-bit octet in it escaped (=XX) or, in base64, dropped — as a
//! decoder reads it either way. A message without MIME gets a MIME
//! header of its own (text/plain, charset utf-8 when the body is UTF-8,
//! else unknown-8bit, RFC 1428). Preamble and epilogue, which no reader
//! shows, get `?` for an 8-bit octet (for a server without 8BITMIME).
//! Header fields cannot be converted without changing them: 8-bit ones
//! at the top are found by [`scan`], those of a part or an embedded
//! message by [`eight_bit_in_part_headers`], and such a message is
//! refused before MAIL for a server without 8BITMIME (the session's
//! plan; a notice with 5.6.3).
//!
//! The output is in stored form (LF line endings); [`super::data`] then
//! makes it wire form.

use std::io::{self, BufRead, BufReader, Read, Write};

use super::data::{Encoder, MAX_LINE};

/// A line is read in pieces of at most this many octets.
pub const PIECE: usize = 64 * 1024;
/// Octets of one header field held for reading its value; the rest of a
/// longer field is passed on as it is.
pub const FIELD_CAP: usize = 16 * 1024;
/// Multipart boundaries followed at once (Postfix's mime_nesting_limit);
/// deeper parts are taken for leaves.
pub const MAX_DEPTH: usize = 100;
/// Longest encoded quoted-printable line (RFC 2045 §6.7), soft break
/// included.
const QP_LINE: usize = 76;

/// What one pass over a stored message found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Content {
    /// The size as SIZE= declares it when sent as it is
    /// ([`super::content_size`]).
    pub size: u64,
    /// The octets read: the stored size (a note whose count is not the
    /// queue file's is not about its data).
    pub octets: u64,
    /// An octet over 127 in the top-level header section.
    pub eight_bit_header: bool,
    /// An octet over 127 in the body.
    pub eight_bit_body: bool,
    /// A NUL anywhere.
    pub nul: bool,
    /// A body line over 998 octets.
    pub long_line: bool,
    /// The top-level header has MIME-Version or Content-Type.
    pub mime: bool,
    /// The body is valid UTF-8.
    pub utf8_body: bool,
    /// An octet over 127 in a header section inside the MIME structure:
    /// not found by [`scan`] (which does not follow boundaries) but by
    /// [`eight_bit_in_part_headers`], a second pass its caller makes.
    pub eight_bit_part_header: bool,
}

impl Content {
    /// Whether any octet is over 127.
    pub fn eight_bit(&self) -> bool {
        self.eight_bit_header || self.eight_bit_body
    }

    /// What [`scan`] found, as one short line of text kept with the queue
    /// file. [`Content::eight_bit_part_header`] is not in it: a delivery
    /// to a server without 8BITMIME reads the MIME structure for that.
    pub fn note(&self) -> String {
        let flag = |b: bool| if b { 1 } else { 0 };
        format!(
            "{NOTE_VERSION} octets={} size={} header8={} body8={} nul={} long={} mime={} utf8={}",
            self.octets,
            self.size,
            flag(self.eight_bit_header),
            flag(self.eight_bit_body),
            flag(self.nul),
            flag(self.long_line),
            flag(self.mime),
            flag(self.utf8_body),
        )
    }

    /// Reads a [`Content::note`] back: None for anything but exactly
    /// that form (a note from another version, or damaged), and the
    /// message is scanned instead.
    pub fn from_note(note: &[u8]) -> Option<Content> {
        let text = std::str::from_utf8(note).ok()?;
        let mut fields = text.split(' ');
        if fields.next()? != NOTE_VERSION {
            return None;
        }
        let keys = [
            "octets", "size", "header8", "body8", "nul", "long", "mime", "utf8",
        ];
        let mut values = [0u64; 8];
        for (key, slot) in keys.iter().zip(values.iter_mut()) {
            let (k, v) = fields.next()?.split_once('=')?;
            if k != *key || v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            *slot = v.parse().ok()?;
        }
        if fields.next().is_some() || values[2..].iter().any(|&f| f > 1) {
            return None;
        }
        let [octets, size, header8, body8, nul, long, mime, utf8] = values;
        Some(Content {
            octets,
            size,
            eight_bit_header: header8 == 1,
            eight_bit_body: body8 == 1,
            nul: nul == 1,
            long_line: long == 1,
            mime: mime == 1,
            utf8_body: utf8 == 1,
            eight_bit_part_header: false,
        })
    }
}

/// The first word of a [`Content::note`]: its form.
const NOTE_VERSION: &str = "content1";

/// Reads `src` once and says what it holds.
pub fn scan(src: &mut dyn Read) -> io::Result<Content> {
    let mut scanner = Scanner::default();
    let mut buf = vec![0u8; 8 * 1024];
    loop {
        match src.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => scanner.feed(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(scanner.finish())
}

/// [`scan`] as the bytes go by, in pieces of any size: at submission the
/// acceptance step feeds it what it writes into the queue file, and the
/// finding is kept with the file ([`Content::note`]), as Postfix's
/// cleanup records the body type, so a delivery need not read the
/// message once more to learn it.
pub struct Scanner {
    content: Content,
    size: Encoder,
    /// The octets fed.
    octets: u64,
    in_header: bool,
    /// The start of the current header line (lower-cased), for its name.
    name: Vec<u8>,
    line_len: usize,
    /// Continuation octets a UTF-8 sequence still needs.
    need: u8,
    /// The header's last octet was a CR: bare or not, the next one says.
    header_cr: bool,
}

impl Default for Scanner {
    fn default() -> Scanner {
        Scanner {
            content: Content {
                utf8_body: true,
                ..Content::default()
            },
            size: Encoder::default(),
            octets: 0,
            in_header: true,
            name: Vec::with_capacity(16),
            line_len: 0,
            need: 0,
            header_cr: false,
        }
    }
}

impl Scanner {
    /// The next octets of the message.
    pub fn feed(&mut self, chunk: &[u8]) {
        // Counting only: the encoder's output goes nowhere.
        let _ = self.size.feed(chunk, &mut io::sink());
        self.octets += chunk.len() as u64;
        let content = &mut self.content;
        let mut chunk = chunk;
        if !self.in_header && self.need == 0 && chunk.is_ascii() {
            // The common case, in bulk: ASCII body text.
            content.nul |= chunk.contains(&0);
            // The first piece goes on the current line, each other
            // starts a line; the last goes on in the next chunk.
            let mut pieces = chunk.split(|&b| b == b'\n' || b == b'\r');
            self.line_len += pieces.next().map_or(0, <[u8]>::len);
            content.long_line |= self.line_len > MAX_LINE;
            for piece in pieces {
                self.line_len = piece.len();
                content.long_line |= self.line_len > MAX_LINE;
            }
            chunk = &[];
        }
        for &b in chunk {
            content.nul |= b == 0;
            if self.in_header {
                // CRLF ends a line; a bare CR is a space on the wire
                // (see data): the line is not empty then.
                if std::mem::take(&mut self.header_cr) && b != b'\n' {
                    self.line_len += 1;
                }
                match b {
                    b'\n' => {
                        if self.line_len == 0 {
                            self.in_header = false;
                        }
                        self.line_len = 0;
                        self.name.clear();
                    }
                    b'\r' => self.header_cr = true,
                    _ => {
                        content.eight_bit_header |= b > 127;
                        if self.line_len < 13 {
                            self.name.push(b.to_ascii_lowercase());
                            if self.name == b"mime-version:" || self.name == b"content-type:" {
                                content.mime = true;
                            }
                        }
                        self.line_len += 1;
                    }
                }
                continue;
            }
            match b {
                b'\n' | b'\r' => self.line_len = 0,
                _ => {
                    self.line_len += 1;
                    content.long_line |= self.line_len > MAX_LINE;
                }
            }
            if b > 127 {
                content.eight_bit_body = true;
            }
            // A small UTF-8 check: lead octets and their continuations.
            if self.need > 0 {
                if b & 0xC0 == 0x80 {
                    self.need -= 1;
                    continue;
                }
                content.utf8_body = false;
                self.need = 0;
            }
            match b {
                0x00..=0x7F => {}
                0xC2..=0xDF => self.need = 1,
                0xE0..=0xEF => self.need = 2,
                0xF0..=0xF4 => self.need = 3,
                _ => content.utf8_body = false,
            }
        }
    }

    /// What the octets fed hold, and how many they were.
    pub fn finish(mut self) -> Content {
        if self.need > 0 {
            self.content.utf8_body = false;
        }
        let _ = self.size.finish(&mut io::sink());
        self.content.size = self.size.declared();
        self.content.octets = self.octets;
        self.content
    }
}

/// How a part's body is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Body {
    /// Encoded quoted-printable here.
    Encode,
    /// Already quoted-printable: stray octets escaped.
    Qp,
    /// Already base64: stray octets dropped.
    Base64,
    /// Preamble or epilogue: shown by no reader.
    Filler,
}

/// Where the converter is.
enum State {
    /// In a header section: of the message (`top`), of an embedded
    /// message (`message`), or of a part (default type `digest`'s).
    Header {
        top: bool,
        message: bool,
        digest: bool,
    },
    /// In a body written as `Body` says.
    Body(Body),
}

/// What a header section said, read as its fields go by.
#[derive(Default)]
struct Section {
    mime_version: bool,
    content_type: Option<String>,
    /// The Content-Transfer-Encoding field as it was, held back.
    encoding_field: Option<Vec<u8>>,
    encoding: Option<String>,
}

/// The converter's state between pieces.
struct Converter<'o> {
    out: &'o mut dyn Write,
    state: State,
    section: Section,
    /// The header field being held (its first [`FIELD_CAP`] octets).
    field: Vec<u8>,
    /// The held field outgrew the cap: written already, the rest too.
    field_spilled: bool,
    /// The open multiparts' boundaries, innermost last, each with
    /// whether it is a digest.
    boundaries: Vec<(Vec<u8>, bool)>,
    /// Quoted-printable output column.
    col: usize,
    /// A space or tab held back: encoded if the line ends after it.
    pending_space: Option<u8>,
    /// In an already quoted-printable part: escape octets still to come.
    escape_left: u8,
    /// The top-level body is UTF-8 (for a MIME header of its own).
    utf8: bool,
    /// 8-bit octets may stay where no decoder reads them.
    eight_bit_ok: bool,
    /// An 8-bit octet was seen in a part's header section.
    part_header_octets: bool,
}

/// Writes `src` converted to 7-bit MIME to `out` (stored form); see the
/// module comment. `content` is [`scan`]'s finding for it. With
/// `eight_bit_ok` (the server offers 8BITMIME; the conversion is for a
/// NUL or a long line) the octets no reader decodes — part header
/// fields, preamble, epilogue — are left as they are.
pub fn convert(
    src: &mut dyn Read,
    content: &Content,
    eight_bit_ok: bool,
    out: &mut dyn Write,
) -> io::Result<()> {
    convert_reporting(src, content, eight_bit_ok, out).map(drop)
}

/// Whether a header section inside the MIME structure (a part's, an
/// embedded message's) holds an 8-bit octet: like the top-level header,
/// such a field cannot be made 7-bit without changing it (RFC 2047 words
/// would be a different field), so a message with one is refused for a
/// server without 8BITMIME, not sent with `?` in a file name (issue 24).
/// A second pass, with the converter's own MIME reading; [`scan`] does
/// not follow boundaries. Only a MIME message with an 8-bit body can
/// have one.
pub fn eight_bit_in_part_headers(src: &mut dyn Read, content: &Content) -> io::Result<bool> {
    if !(content.mime && content.eight_bit_body) {
        return Ok(false);
    }
    convert_reporting(src, content, false, &mut io::sink())
}

/// [`convert`], saying whether a part's header held an 8-bit octet.
fn convert_reporting(
    src: &mut dyn Read,
    content: &Content,
    eight_bit_ok: bool,
    out: &mut dyn Write,
) -> io::Result<bool> {
    let mut reader = BufReader::with_capacity(PIECE, src);
    let mut c = Converter {
        out,
        state: State::Header {
            top: true,
            message: true,
            digest: false,
        },
        section: Section::default(),
        field: Vec::new(),
        field_spilled: false,
        boundaries: Vec::new(),
        col: 0,
        pending_space: None,
        escape_left: 0,
        utf8: content.utf8_body,
        eight_bit_ok,
        part_header_octets: false,
    };
    let mut piece: Vec<u8> = Vec::with_capacity(1024);
    let mut at_line_start = true;
    loop {
        piece.clear();
        let n = (&mut reader)
            .take(PIECE as u64)
            .read_until(b'\n', &mut piece)?;
        if n == 0 {
            break;
        }
        let complete = piece.last() == Some(&b'\n');
        if complete {
            piece.pop();
            if piece.last() == Some(&b'\r') {
                piece.pop();
            }
        }
        c.piece(&piece, at_line_start, complete)?;
        at_line_start = complete;
    }
    if !at_line_start {
        c.piece(b"", false, true)?;
    }
    c.end()?;
    Ok(c.part_header_octets)
}

impl Converter<'_> {
    fn piece(&mut self, piece: &[u8], start: bool, complete: bool) -> io::Result<()> {
        if start && complete && self.boundary(piece)? {
            return Ok(());
        }
        match self.state {
            State::Header { .. } => self.header_piece(piece, start, complete),
            State::Body(body) => {
                self.body_piece(body, piece)?;
                if complete {
                    self.end_body_line(body)?;
                }
                Ok(())
            }
        }
    }

    /// A delimiter line of an open multipart: written as it is, and the
    /// state moves to the next part's header or the epilogue.
    fn boundary(&mut self, line: &[u8]) -> io::Result<bool> {
        let Some(rest) = line.strip_prefix(b"--") else {
            return Ok(false);
        };
        let rest = trim_end(rest);
        for depth in (0..self.boundaries.len()).rev() {
            let (b, digest) = &self.boundaries[depth];
            let Some(after) = rest.strip_prefix(&b[..]) else {
                continue;
            };
            let digest = *digest;
            let close = match after {
                b"" => false,
                b"--" => true,
                _ => continue,
            };
            self.finish_part()?;
            self.boundaries.truncate(depth + 1);
            self.out.write_all(line)?;
            self.out.write_all(b"\n")?;
            if close {
                self.boundaries.pop();
                self.state = State::Body(Body::Filler);
            } else {
                self.state = State::Header {
                    top: false,
                    message: false,
                    digest,
                };
                self.section = Section::default();
            }
            return Ok(true);
        }
        Ok(false)
    }

    /// Before a delimiter or the end: a header section cut short ends.
    fn finish_part(&mut self) -> io::Result<()> {
        if let State::Header { .. } = self.state {
            self.flush_field()?;
            self.end_header()?;
        }
        Ok(())
    }

    fn header_piece(&mut self, piece: &[u8], start: bool, complete: bool) -> io::Result<()> {
        let continuation = start && matches!(piece.first(), Some(b' ' | b'\t'));
        if start && !continuation {
            self.flush_field()?;
            if complete && piece.is_empty() {
                return self.end_header();
            }
        }
        if continuation {
            self.push_field(b"\n")?;
        }
        self.push_field(piece)
    }

    fn push_field(&mut self, bytes: &[u8]) -> io::Result<()> {
        if !self.field_spilled && self.field.len() + bytes.len() <= FIELD_CAP {
            self.field.extend_from_slice(bytes);
            return Ok(());
        }
        if !self.field_spilled {
            // Too long to hold: read for its name, then passed on.
            self.field_spilled = true;
            self.note_field();
            let field = std::mem::take(&mut self.field);
            self.write_header_bytes(&field)?;
        }
        self.write_header_bytes(bytes)
    }

    /// Header octets out; a NUL becomes `?`, and so does an 8-bit octet in
    /// a part's header when the server takes no 8-bit.
    fn write_header_bytes(&mut self, bytes: &[u8]) -> io::Result<()> {
        let top = matches!(self.state, State::Header { top: true, .. });
        self.part_header_octets |= !top && bytes.iter().any(|&b| b > 127);
        let keep = top || self.eight_bit_ok;
        let bad = |b: u8| b == 0 || (b > 127 && !keep);
        if !bytes.iter().any(|&b| bad(b)) {
            return self.out.write_all(bytes);
        }
        // A NUL never belongs in a header field.
        let clean: Vec<u8> = bytes
            .iter()
            .map(|&b| if bad(b) { b'?' } else { b })
            .collect();
        self.out.write_all(&clean)
    }

    /// Reads the held field's name and, for the MIME ones, its value.
    fn note_field(&mut self) {
        let field = &self.field;
        let Some(colon) = field.iter().position(|&b| b == b':') else {
            return;
        };
        let name = String::from_utf8_lossy(&field[..colon])
            .trim()
            .to_ascii_lowercase();
        let value: String = String::from_utf8_lossy(&field[colon + 1..])
            .replace(['\n', '\r'], "")
            .trim()
            .to_string();
        match name.as_str() {
            "mime-version" => self.section.mime_version = true,
            "content-type" => self.section.content_type = Some(value),
            "content-transfer-encoding" => {
                self.section.encoding = Some(value.to_ascii_lowercase());
            }
            _ => {}
        }
    }

    /// Ends the held field: written, or held back when it is the
    /// Content-Transfer-Encoding (decided at the header's end).
    fn flush_field(&mut self) -> io::Result<()> {
        if self.field_spilled {
            self.field_spilled = false;
            self.field.clear();
            return self.out.write_all(b"\n");
        }
        if self.field.is_empty() {
            return Ok(());
        }
        self.note_field();
        let mut field = std::mem::take(&mut self.field);
        field.push(b'\n');
        let is_encoding =
            field.len() > 26 && field[..26].eq_ignore_ascii_case(b"content-transfer-encoding:");
        if is_encoding && self.section.encoding_field.is_none() {
            self.section.encoding_field = Some(field);
            return Ok(());
        }
        self.write_header_bytes(&field)
    }

    /// The empty line after a header section: what the part is decides
    /// its encoding field and how its body goes.
    fn end_header(&mut self) -> io::Result<()> {
        let State::Header {
            top,
            message,
            digest,
        } = self.state
        else {
            return Ok(());
        };
        let section = std::mem::take(&mut self.section);
        if message && !section.mime_version {
            self.out.write_all(b"MIME-Version: 1.0\n")?;
        }
        let default_type = if digest {
            "message/rfc822"
        } else {
            "text/plain"
        };
        let content_type = section.content_type.clone();
        if message && content_type.is_none() {
            let charset = if top && !self.utf8 {
                "unknown-8bit"
            } else {
                "utf-8"
            };
            writeln!(self.out, "Content-Type: text/plain; charset={charset}")?;
        }
        let ctype = content_type
            .as_deref()
            .map(media_type)
            .unwrap_or_else(|| default_type.to_string());
        let boundary = content_type.as_deref().and_then(boundary_of);
        let identity = section
            .encoding
            .as_deref()
            .is_none_or(|e| matches!(e, "7bit" | "8bit" | "binary"));
        let next = if ctype.starts_with("multipart/")
            && let Some(b) = boundary.filter(|_| self.boundaries.len() < MAX_DEPTH)
        {
            self.boundaries
                .push((b.into_bytes(), ctype == "multipart/digest"));
            self.write_identity(&section)?;
            State::Body(Body::Filler)
        } else if ctype == "message/rfc822" && identity {
            self.write_identity(&section)?;
            self.out.write_all(b"\n")?;
            self.state = State::Header {
                top: false,
                message: true,
                digest: false,
            };
            return Ok(());
        } else if !identity && section.encoding.as_deref() == Some("quoted-printable") {
            self.write_kept(&section)?;
            State::Body(Body::Qp)
        } else if !identity && section.encoding.as_deref() == Some("base64") {
            self.write_kept(&section)?;
            State::Body(Body::Base64)
        } else {
            self.out
                .write_all(b"Content-Transfer-Encoding: quoted-printable\n")?;
            State::Body(Body::Encode)
        };
        self.out.write_all(b"\n")?;
        self.state = next;
        self.col = 0;
        self.pending_space = None;
        self.escape_left = 0;
        Ok(())
    }

    /// A container's encoding field, if it had one: 7bit now.
    fn write_identity(&mut self, section: &Section) -> io::Result<()> {
        if section.encoding_field.is_some() {
            self.out.write_all(b"Content-Transfer-Encoding: 7bit\n")?;
        }
        Ok(())
    }

    fn write_kept(&mut self, section: &Section) -> io::Result<()> {
        match &section.encoding_field {
            Some(field) => self.out.write_all(field),
            None => Ok(()),
        }
    }

    fn body_piece(&mut self, body: Body, piece: &[u8]) -> io::Result<()> {
        match body {
            Body::Encode => {
                for &b in piece {
                    self.qp_byte(b)?;
                }
                Ok(())
            }
            Body::Qp => {
                for &b in piece {
                    self.kept_qp_byte(b)?;
                }
                Ok(())
            }
            Body::Base64 => {
                for &b in piece {
                    if b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=') {
                        if self.col >= QP_LINE {
                            self.out.write_all(b"\n")?;
                            self.col = 0;
                        }
                        self.out.write_all(&[b])?;
                        self.col += 1;
                    }
                }
                Ok(())
            }
            Body::Filler => {
                let ok = self.eight_bit_ok;
                let clean: Vec<u8> = piece
                    .iter()
                    .map(|&b| if (b > 127 && !ok) || b == 0 { b'?' } else { b })
                    .collect();
                self.out.write_all(&clean)
            }
        }
    }

    fn end_body_line(&mut self, body: Body) -> io::Result<()> {
        if let Some(space) = self.pending_space.take() {
            // Trailing white space is dropped by readers: encoded.
            self.qp_write(format!("={space:02X}").as_bytes())?;
        }
        if body == Body::Qp && self.escape_left > 0 {
            self.escape_left = 0;
        }
        self.col = 0;
        self.out.write_all(b"\n")
    }

    /// One octet of a part being encoded quoted-printable (RFC 2045 §6.7).
    fn qp_byte(&mut self, b: u8) -> io::Result<()> {
        if let Some(space) = self.pending_space.take() {
            self.qp_write(&[space])?;
        }
        match b {
            b' ' | b'\t' => {
                self.pending_space = Some(b);
                Ok(())
            }
            33..=60 | 62..=126 => self.qp_write(&[b]),
            _ => self.qp_write(format!("={b:02X}").as_bytes()),
        }
    }

    /// Writes one encoded unit, after a soft line break if the line
    /// would outgrow [`QP_LINE`] (the break's `=` included).
    fn qp_write(&mut self, unit: &[u8]) -> io::Result<()> {
        if self.col + unit.len() > QP_LINE - 1 {
            self.out.write_all(b"=\n")?;
            self.col = 0;
        }
        self.out.write_all(unit)?;
        self.col += unit.len();
        Ok(())
    }

    /// One octet of a part that was quoted-printable already: an octet
    /// that may not stand there escaped, a line too long broken softly.
    fn kept_qp_byte(&mut self, b: u8) -> io::Result<()> {
        if self.escape_left > 0 {
            self.escape_left -= 1;
        } else if self.col >= MAX_LINE - 8 {
            self.out.write_all(b"=\n")?;
            self.col = 0;
        }
        if b == b'=' {
            self.escape_left = 2;
        }
        if b > 127 || b == 0 {
            self.col += 3;
            return write!(self.out, "={b:02X}");
        }
        self.col += 1;
        self.out.write_all(&[b])
    }

    fn end(&mut self) -> io::Result<()> {
        if let State::Header { .. } = self.state {
            self.flush_field()?;
            self.end_header()?;
        }
        Ok(())
    }
}

fn trim_end(s: &[u8]) -> &[u8] {
    let end = s
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(0, |i| i + 1);
    &s[..end]
}

/// "text/plain" from a Content-Type value, lower-cased.
fn media_type(value: &str) -> String {
    value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// The boundary parameter of a Content-Type value.
fn boundary_of(value: &str) -> Option<String> {
    let lower = value.to_ascii_lowercase();
    let mut from = 0;
    while let Some(i) = lower[from..].find("boundary") {
        let at = from + i;
        from = at + 8;
        let before = lower[..at].trim_end();
        if !(before.ends_with(';')) {
            continue;
        }
        let rest = value[at + 8..].trim_start();
        let Some(rest) = rest.strip_prefix('=') else {
            continue;
        };
        let rest = rest.trim_start();
        let b = if let Some(q) = rest.strip_prefix('"') {
            q.split('"').next().unwrap_or("")
        } else {
            rest.split(|c: char| c == ';' || c.is_whitespace())
                .next()
                .unwrap_or("")
        };
        return (!b.is_empty()).then(|| b.to_string());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn converted(input: &[u8]) -> Vec<u8> {
        let content = scan(&mut &input[..]).unwrap();
        let mut out = Vec::new();
        convert(&mut &input[..], &content, false, &mut out).unwrap();
        out
    }

    #[test]
    fn a_message_without_mime_gets_its_own_header() {
        let out = converted("Subject: x\n\nh\u{e9}llo = world \n".as_bytes());
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "Subject: x\nMIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n\
             Content-Transfer-Encoding: quoted-printable\n\nh=C3=A9llo =3D world=20\n"
        );
        let out = converted(b"Subject: x\n\n\xe9t\xe9\n");
        assert!(
            String::from_utf8(out)
                .unwrap()
                .contains("charset=unknown-8bit")
        );
    }

    #[test]
    fn a_multipart_keeps_its_structure() {
        let input = "MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"b1\"\n\
            Content-Transfer-Encoding: 8bit\n\npre\u{e9}\n--b1\nContent-Type: text/plain\n\
            Content-Transfer-Encoding: 8bit\n\n\u{e9}\n--b1\nContent-Type: text/plain\n\
            Content-Transfer-Encoding: base64\n\naGk=\n--b1--\nepi\n";
        let out = String::from_utf8(converted(input.as_bytes())).unwrap();
        assert_eq!(
            out,
            "MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"b1\"\n\
            Content-Transfer-Encoding: 7bit\n\npre??\n--b1\nContent-Type: text/plain\n\
            Content-Transfer-Encoding: quoted-printable\n\n=C3=A9\n--b1\nContent-Type: text/plain\n\
            Content-Transfer-Encoding: base64\n\naGk=\n--b1--\nepi\n"
        );
    }

    #[test]
    fn an_8bit_octet_in_a_part_header_is_found_and_nowhere_else() {
        let with = |part_header: &str, preamble: &str| {
            format!(
                "MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=b1\n\n{preamble}\n\
                 --b1\nContent-Type: text/plain\n{part_header}\n\nbody \u{e9}\n--b1--\n"
            )
        };
        let found = |m: String| {
            let content = scan(&mut m.as_bytes()).unwrap();
            eight_bit_in_part_headers(&mut m.as_bytes(), &content).unwrap()
        };
        // An attachment's file name in UTF-8 (RFC 2231 not used).
        assert!(found(with(
            "Content-Disposition: attachment; filename=\"r\u{e9}sum\u{e9}.txt\"",
            "pre"
        )));
        // In the preamble, and in a body, it is not a header's.
        assert!(!found(with("Content-Disposition: inline", "pr\u{e9}")));
        // Nor in the top-level header: that is scan's finding.
        let top = "Subject: \u{e9}\nMIME-Version: 1.0\nContent-Type: text/plain\n\n\u{e9}\n";
        assert!(!found(top.to_string()));
        assert!(scan(&mut top.as_bytes()).unwrap().eight_bit_header);
    }

    #[test]
    fn the_scan_finds_what_needs_converting() {
        let c = scan(&mut &b"Subject: \xc3\xa9\n\nplain\n"[..]).unwrap();
        assert!(c.eight_bit_header && !c.eight_bit_body && !c.mime);
        let c = scan(&mut &b"Mime-Version: 1.0\n\na\0b\n"[..]).unwrap();
        assert!(c.nul && c.mime && c.utf8_body && !c.eight_bit());
        let mut long = b"S: a\n\n".to_vec();
        long.extend(std::iter::repeat_n(b'x', 999));
        let c = scan(&mut &long[..]).unwrap();
        assert!(c.long_line);
        assert_eq!(c.size, super::super::content_size(&mut &long[..]).unwrap());
        let c = scan(&mut &b"S: a\n\n\xff\n"[..]).unwrap();
        assert!(c.eight_bit_body && !c.utf8_body);
        // A bare CR is a space on the wire: that line does not end the
        // header (found by the property test).
        let c = scan(&mut &b"\r\r\n\x80"[..]).unwrap();
        assert!(c.eight_bit_header && !c.eight_bit_body);
    }

    /// Hands out its data `step` octets at a time.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.step.min(buf.len()).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    #[test]
    fn the_scan_does_not_depend_on_how_the_data_comes() {
        let mut inputs: Vec<Vec<u8>> = Vec::new();
        for len in [997, 998, 999, 20_000] {
            let mut m = b"Subject: x\n\nshort\n".to_vec();
            m.extend(std::iter::repeat_n(b'y', len));
            m.extend_from_slice(b"\r\nz\n");
            inputs.push(m);
        }
        inputs.push("S: a\n\n\u{e9}t\u{e9}\n".repeat(3000).into_bytes());
        inputs.push(b"S: a\n\n\xc3\nx\0\n".to_vec());
        for input in &inputs {
            let whole = scan(&mut &input[..]).unwrap();
            for step in [1, 7, 4096] {
                let mut t = Trickle { data: input, step };
                assert_eq!(scan(&mut t).unwrap(), whole, "step {step}");
            }
        }
        assert!(!scan(&mut &inputs[1][..]).unwrap().long_line);
        assert!(scan(&mut &inputs[2][..]).unwrap().long_line);
    }

    #[test]
    fn the_note_kept_at_submission_reads_back_as_the_scan_found_it() {
        for input in [
            "Subject: \u{e9}\nMIME-Version: 1.0\n\nx\0\n"
                .as_bytes()
                .to_vec(),
            b"Subject: x\n\n\xe9\n".to_vec(),
            b"Subject: x\n\nplain\r\n.\n".to_vec(),
        ] {
            // As the acceptance step feeds it: in the pieces it writes.
            let mut scanner = Scanner::default();
            for piece in input.chunks(3) {
                scanner.feed(piece);
            }
            let fed = scanner.finish();
            let whole = scan(&mut &input[..]).unwrap();
            assert_eq!(fed, whole);
            assert_eq!(whole.octets, input.len() as u64);
            assert_eq!(Content::from_note(whole.note().as_bytes()), Some(whole));
        }
        let note = scan(&mut &b"S: x\n\n\xe9\n"[..]).unwrap().note();
        assert!(note.contains(" body8=1 "), "{note}");
        // Anything but exactly that form is no note: the message is read.
        for bad in [
            note.replace("content1", "content2"),
            note.replace("body8=1", "body8=2"),
            note.replace("size=", "size=x"),
            format!("{note} extra=1"),
            note.replace(" utf8=0", ""),
            String::new(),
        ] {
            assert_eq!(Content::from_note(bad.as_bytes()), None, "{bad}");
        }
    }

    #[test]
    fn long_lines_are_soft_broken() {
        let mut input = b"Subject: x\n\n".to_vec();
        input.extend(std::iter::repeat_n(b'y', 5000));
        input.push(b'\n');
        let out = converted(&input);
        assert!(out.split(|&b| b == b'\n').all(|l| l.len() <= QP_LINE));
    }
}
