//! The DATA encoder: the spool's LF-terminated message to SMTP's wire
//! form (RFC 5321 §4.5.2, §4.5.3.1.6), streamed in constant memory (S5).
//!
//! - every line ending on the wire is CRLF, and CR and LF never appear
//!   otherwise (RFC 5321 §2.3.8). The stored data may hold a bare CR
//!   (the intake keeps one that is not right before LF) and, from older
//!   spools or other writers, CRLF; each of CRLF, a bare LF and a bare
//!   CR in the body is one line ending. A bare CR in the header section
//!   becomes a space instead: a line break there would start a new
//!   header field, which a crafted value (a Subject with a CR in it)
//!   must not be able to do. Receivers disagree on what a bare CR or LF
//!   means, and SMTP smuggling (the 2023 disclosures: `<CR>.<CR>`,
//!   `<LF>.<LF>`, `<LF>.<CR><LF>`, ...) lives in that disagreement; after
//!   this normalisation there is only one reading, as Postfix and Exim
//!   send since then;
//! - then a line starting with "." gets another "." (dot-stuffing), so no
//!   line of the content is ever a lone "." on the wire, whatever the
//!   receiver takes for a line ending;
//! - no line exceeds 998 octets: a longer header line is folded before
//!   white space in it (RFC 5322 §2.2.3: unfolding then gives back the
//!   field as it was), a longer body line is broken with a plain CRLF
//!   between two characters, never inside a UTF-8 sequence — whereas a
//!   server may truncate or reject an overlong line. A header token
//!   longer than a line (no white space within 998 octets), which
//!   submission refuses, is broken with CRLF and a space as a last
//!   resort. A MIME message with long lines goes through
//!   [`super::downgrade`] instead, which encodes them;
//! - a last line without a line ending is ended with CRLF.
//!
//! The terminating ".\r\n" is not written here: the session writes it
//! after recording the RFC 1047 window.

use std::io::{self, Read, Write};

/// Longest line sent, CRLF excluded (RFC 5321 §4.5.3.1.6).
pub const MAX_LINE: usize = 998;
/// Read size. The reader under it is buffered already; a small stack
/// buffer avoids zeroing a large one for every message.
const CHUNK: usize = 8 * 1024;

/// Copies `src` to `out` in wire form. Returns the bytes written.
pub fn encode(src: &mut dyn Read, out: &mut dyn Write) -> io::Result<u64> {
    encode_counting(src, out).map(|e| e.written)
}

/// Copies `src` converted to 7-bit MIME ([`super::downgrade::convert`])
/// to `out` in wire form, streaming the one into the other.
pub fn encode_converted(
    src: &mut dyn Read,
    content: &super::downgrade::Content,
    eight_bit_ok: bool,
    out: &mut dyn Write,
) -> io::Result<u64> {
    convert_into(Encoder::default(), src, content, eight_bit_ok, out)
}

/// Copies `src` to `out` as it goes on the wire — converted when
/// `converted` holds what [`super::downgrade::scan`] found, folded,
/// broken and with CRLF line endings — but without dot-stuffing: the
/// message as the receiver will store it, which is what a DKIM
/// signature covers (issue 26). Same code as the send pass, so the two
/// cannot differ.
pub fn sent_form(
    src: &mut dyn Read,
    converted: Option<(&super::downgrade::Content, bool)>,
    out: &mut dyn Write,
) -> io::Result<u64> {
    let encoder = Encoder {
        stuff: false,
        ..Encoder::default()
    };
    match converted {
        Some((content, eight_bit_ok)) => convert_into(encoder, src, content, eight_bit_ok, out),
        None => encode_with(encoder, src, out).map(|e| e.written),
    }
}

fn convert_into(
    encoder: Encoder,
    src: &mut dyn Read,
    content: &super::downgrade::Content,
    eight_bit_ok: bool,
    out: &mut dyn Write,
) -> io::Result<u64> {
    /// The converter's output fed to the encoder as it comes.
    struct Feed<'a> {
        encoder: Encoder,
        out: &'a mut dyn Write,
    }
    impl Write for Feed<'_> {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.encoder.feed(buf, self.out)?;
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let mut feed = Feed { encoder, out };
    super::downgrade::convert(src, content, eight_bit_ok, &mut feed)?;
    feed.encoder.finish(feed.out)?;
    Ok(feed.encoder.written)
}

/// The size of `src` as SIZE= declares it (RFC 1870 §3): its wire form,
/// CRLF line endings included, the doubled quoting dots not — what the
/// server will count, not the stored (LF) size.
pub fn content_size(src: &mut dyn Read) -> io::Result<u64> {
    encode_counting(src, &mut io::sink()).map(|e| e.written - e.stuffed)
}

fn encode_counting(src: &mut dyn Read, out: &mut dyn Write) -> io::Result<Encoder> {
    encode_with(Encoder::default(), src, out)
}

fn encode_with(
    mut encoder: Encoder,
    src: &mut dyn Read,
    out: &mut dyn Write,
) -> io::Result<Encoder> {
    let mut buf = [0u8; CHUNK];
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        encoder.feed(&buf[..n], out)?;
    }
    encoder.finish(out)?;
    Ok(encoder)
}

/// The encoder's state between chunks.
pub(super) struct Encoder {
    /// Octets on the current output line so far.
    line_len: usize,
    /// Still in the header section (before the first empty line).
    in_header: bool,
    /// The last input byte was a CR: whether it is bare depends on the
    /// next byte, which may be in the next chunk.
    pending_cr: bool,
    written: u64,
    /// Of `written`, the dots added by dot-stuffing.
    stuffed: u64,
    /// The header line being built, held until it ends or outgrows a
    /// line: a fold goes before its last white space. Never more than
    /// [`MAX_LINE`] plus one chunk.
    held: Vec<u8>,
    /// Dot-stuffing on (the wire) or off (the sent form DKIM signs).
    stuff: bool,
}

impl Default for Encoder {
    fn default() -> Encoder {
        Encoder {
            line_len: 0,
            in_header: true,
            pending_cr: false,
            written: 0,
            stuffed: 0,
            held: Vec::new(),
            stuff: true,
        }
    }
}

impl Encoder {
    fn put(&mut self, out: &mut dyn Write, bytes: &[u8]) -> io::Result<()> {
        self.written += bytes.len() as u64;
        out.write_all(bytes)
    }

    /// What SIZE= counts of what was fed so far (see [`content_size`]).
    pub(super) fn declared(&self) -> u64 {
        self.written - self.stuffed
    }

    pub(super) fn feed(&mut self, mut input: &[u8], out: &mut dyn Write) -> io::Result<()> {
        while let Some((&first, rest)) = input.split_first() {
            match first {
                b'\n' => {
                    // CRLF or a bare LF: one line ending either way.
                    self.pending_cr = false;
                    self.end_line(out)?;
                    input = rest;
                }
                b'\r' => {
                    self.bare_cr(out)?;
                    self.pending_cr = true;
                    input = rest;
                }
                _ => {
                    self.bare_cr(out)?;
                    let end = input
                        .iter()
                        .position(|&b| b == b'\n' || b == b'\r')
                        .unwrap_or(input.len());
                    self.text(&input[..end], out)?;
                    input = &input[end..];
                }
            }
        }
        Ok(())
    }

    /// Settles a pending CR that turned out not to precede LF.
    fn bare_cr(&mut self, out: &mut dyn Write) -> io::Result<()> {
        if !std::mem::take(&mut self.pending_cr) {
            return Ok(());
        }
        if self.in_header {
            self.text(b" ", out)
        } else {
            self.end_line(out)
        }
    }

    /// Ends the current line with CRLF; an empty line ends the header.
    fn end_line(&mut self, out: &mut dyn Write) -> io::Result<()> {
        if self.in_header {
            self.flush_held(out)?;
        }
        if self.line_len == 0 && self.in_header {
            self.in_header = false;
        }
        self.put(out, b"\r\n")?;
        self.line_len = 0;
        Ok(())
    }

    /// Line content (no CR, no LF): stuffed, folded or broken as needed.
    fn text(&mut self, text: &[u8], out: &mut dyn Write) -> io::Result<()> {
        if !self.in_header {
            return self.body_text(text, out);
        }
        self.held.extend_from_slice(text);
        while self.line_len + self.held.len() > MAX_LINE {
            self.fold(out)?;
        }
        Ok(())
    }

    /// Writes out as much of the held header line as fits, folding
    /// before its last white space within the line (not the one a
    /// continuation line starts with).
    fn fold(&mut self, out: &mut dyn Write) -> io::Result<()> {
        let room = MAX_LINE - self.line_len;
        let at = self.held[..=room]
            .iter()
            .rposition(|&b| b == b' ' || b == b'\t')
            .filter(|&i| i > 0 || self.line_len > 0);
        let held = std::mem::take(&mut self.held);
        match at {
            Some(at) => {
                self.write_piece(&held[..at], out)?;
                self.put(out, b"\r\n")?;
                self.line_len = 0;
                self.held = held[at..].to_vec();
            }
            None => {
                // One token longer than a line: no fold keeps it whole.
                let at = char_boundary(&held, room);
                self.write_piece(&held[..at], out)?;
                self.put(out, b"\r\n ")?;
                self.line_len = 1;
                self.held = held[at..].to_vec();
            }
        }
        Ok(())
    }

    fn flush_held(&mut self, out: &mut dyn Write) -> io::Result<()> {
        let held = std::mem::take(&mut self.held);
        self.write_piece(&held, out)
    }

    /// Writes `piece`, which fits on the current line, stuffing a dot at
    /// the start of a line.
    fn write_piece(&mut self, piece: &[u8], out: &mut dyn Write) -> io::Result<()> {
        if piece.is_empty() {
            return Ok(());
        }
        if self.stuff && self.line_len == 0 && piece[0] == b'.' {
            self.put(out, b".")?;
            self.stuffed += 1;
            self.line_len += 1;
        }
        self.put(out, piece)?;
        self.line_len += piece.len();
        Ok(())
    }

    /// Body line content: broken at 998 octets, between characters.
    fn body_text(&mut self, mut text: &[u8], out: &mut dyn Write) -> io::Result<()> {
        while !text.is_empty() {
            if self.stuff && self.line_len == 0 && text[0] == b'.' {
                self.put(out, b".")?;
                self.stuffed += 1;
                self.line_len += 1;
            }
            let room = MAX_LINE - self.line_len;
            let at = char_boundary(text, room);
            if at == text.len() {
                self.put(out, text)?;
                self.line_len += text.len();
                break;
            }
            let (head, rest) = text.split_at(at);
            self.put(out, head)?;
            self.put(out, b"\r\n")?;
            self.line_len = 0;
            text = rest;
        }
        Ok(())
    }

    pub(super) fn finish(&mut self, out: &mut dyn Write) -> io::Result<()> {
        self.bare_cr(out)?;
        self.flush_held(out)?;
        if self.line_len > 0 {
            self.put(out, b"\r\n")?;
            self.line_len = 0;
        }
        Ok(())
    }
}

/// Where to end a line piece of `text` that must fit in `room` octets:
/// `text.len()` when all of it fits and its last character is complete
/// or fits whole, else the start of the first character that would not
/// fit — a UTF-8 sequence is never cut (its lead byte says its length).
/// Bytes that are not UTF-8 count as characters of one octet; at least
/// one octet goes on an empty line whatever it is.
fn char_boundary(text: &[u8], room: usize) -> usize {
    let limit = text.len().min(room);
    // The last character starting within the piece: must it wait for
    // the next line? (One starting earlier was checked when it came.)
    for back in 1..=limit.min(4) {
        let i = limit - back;
        let len = match text[i] {
            0x80..=0xBF => continue,
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF7 => 4,
            _ => 1,
        };
        if i + len <= room || (i == 0 && room == MAX_LINE) {
            return limit;
        }
        return i;
    }
    limit
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(input: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode(&mut &input[..], &mut out).unwrap();
        out
    }

    /// The same input fed one byte at a time: chunk borders must not
    /// change anything.
    fn wire_bytewise(input: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut e = Encoder::default();
        for b in input {
            e.feed(std::slice::from_ref(b), &mut out).unwrap();
        }
        e.finish(&mut out).unwrap();
        out
    }

    #[test]
    fn the_declared_size_is_the_wire_content_without_stuffing() {
        let size = |input: &[u8]| content_size(&mut &input[..]).unwrap();
        assert_eq!(size(b"a\nb\n"), 6, "CRLF counted");
        assert_eq!(size(b"a\r\nb\r\n"), 6, "stored CRLF stays two octets");
        assert_eq!(size(b"..x\n"), 5, "the stuffed dot is not counted");
        assert_eq!(size(b"a"), 3, "a last line gets its CRLF");
        assert_eq!(
            size(b"S: x\n\nbare\rcr\n"),
            18,
            "a bare CR in the body is a line end"
        );
        for input in [&b"x\n.\n..\n"[..], b"Subject: a\rb\n\n.\r.\r\n", b""] {
            let stuffed_dots = wire(input).len() as u64 - size(input);
            assert!(stuffed_dots <= input.len() as u64);
        }
        let long = vec![b'y'; 3000];
        assert_eq!(
            size(&long),
            wire(&long).len() as u64,
            "broken lines counted"
        );
    }

    #[test]
    fn the_sent_form_is_the_wire_form_without_stuffing() {
        // Issue 26: what DKIM signs is what the receiver stores.
        let mut input = b"Subject: x\n\n.\n..two\nmid\rcr\n".to_vec();
        input.extend(std::iter::repeat_n(b'z', 1200));
        let mut sent = Vec::new();
        sent_form(&mut &input[..], None, &mut sent).unwrap();
        let unstuffed: Vec<u8> = String::from_utf8(wire(&input))
            .unwrap()
            .replace("\r\n.", "\r\n")
            .into_bytes();
        assert_eq!(sent, unstuffed);
        assert!(sent.starts_with(b"Subject: x\r\n\r\n.\r\n..two\r\nmid\r\ncr\r\n"));
    }

    #[test]
    fn lf_becomes_crlf_and_dots_are_stuffed() {
        let input = b"Subject: x\n\n.\n..two\nmid.dot\n.end";
        let expected = b"Subject: x\r\n\r\n..\r\n...two\r\nmid.dot\r\n..end\r\n";
        assert_eq!(wire(input), expected);
        assert_eq!(wire_bytewise(input), expected);
    }

    /// What a lax receiver takes for the end of the data: a line that is
    /// a lone "." with CR, LF or CRLF on either side.
    fn lax_end_of_data(wire: &[u8]) -> Option<usize> {
        let eol = |b: u8| b == b'\r' || b == b'\n';
        (0..wire.len()).find(|&i| {
            wire[i] == b'.'
                && (i == 0 || eol(wire[i - 1]))
                && wire.get(i + 1).is_some_and(|&b| eol(b))
        })
    }

    /// True when every CR on the wire is followed by LF and every LF
    /// follows a CR.
    fn only_crlf(wire: &[u8]) -> bool {
        wire.iter().enumerate().all(|(i, &b)| match b {
            b'\r' => wire.get(i + 1) == Some(&b'\n'),
            b'\n' => i > 0 && wire[i - 1] == b'\r',
            _ => true,
        })
    }

    #[test]
    fn a_bare_cr_in_the_body_is_a_line_ending() {
        let expected = b"S: a\r\n\r\na\r\nb\r\n";
        assert_eq!(wire(b"S: a\n\na\rb\n"), expected);
        assert_eq!(wire_bytewise(b"S: a\n\na\rb\n"), expected);
    }

    #[test]
    fn a_bare_cr_in_the_header_is_a_space() {
        let input = b"Subject: a\rBcc: victim@x.test\n\nbody\n";
        let expected = b"Subject: a Bcc: victim@x.test\r\n\r\nbody\r\n";
        assert_eq!(wire(input), expected);
        assert_eq!(wire_bytewise(input), expected);
    }

    #[test]
    fn stored_crlf_is_one_line_ending() {
        let input = b"S: a\r\n\r\nb\r\n.\r\nc\r\r\n";
        let expected = b"S: a\r\n\r\nb\r\n..\r\nc\r\n\r\n";
        assert_eq!(wire(input), expected);
        assert_eq!(wire_bytewise(input), expected);
    }

    #[test]
    fn smuggling_sequences_are_normalised_then_stuffed() {
        // Item 9b: the 2023 SMTP smuggling variants, each followed by a
        // would-be second transaction.
        for (input, expected) in [
            (
                &b"S: a\n\nhello\r.\r\nMAIL FROM:<e@x>\n"[..],
                &b"S: a\r\n\r\nhello\r\n..\r\nMAIL FROM:<e@x>\r\n"[..],
            ),
            (
                b"S: a\n\nhello\r.\rMAIL FROM:<e@x>\n",
                b"S: a\r\n\r\nhello\r\n..\r\nMAIL FROM:<e@x>\r\n",
            ),
            (
                b"S: a\n\nhello\n.\nMAIL FROM:<e@x>\n",
                b"S: a\r\n\r\nhello\r\n..\r\nMAIL FROM:<e@x>\r\n",
            ),
            (
                b"S: a\n\nhello\n.\r\nMAIL FROM:<e@x>\n",
                b"S: a\r\n\r\nhello\r\n..\r\nMAIL FROM:<e@x>\r\n",
            ),
            (
                b"S: a\n\nhello\r\n.\rMAIL FROM:<e@x>\n",
                b"S: a\r\n\r\nhello\r\n..\r\nMAIL FROM:<e@x>\r\n",
            ),
            (b"S: a\n\nend\r.\r", b"S: a\r\n\r\nend\r\n..\r\n"),
        ] {
            assert_eq!(
                wire(input),
                expected,
                "{:?}",
                String::from_utf8_lossy(input)
            );
            assert_eq!(wire_bytewise(input), expected);
        }
    }

    #[test]
    fn no_mix_of_cr_lf_and_dots_ends_the_data_early() {
        // Every sequence of up to six bytes from CR, LF, "." and "x",
        // after a header and in it: the wire has CRLF only and no line a
        // lax receiver could take for the end of the data.
        let alphabet = [b'\r', b'\n', b'.', b'x'];
        let mut body = Vec::new();
        for len in 1..=6u32 {
            for n in 0..4usize.pow(len) {
                body.clear();
                let mut k = n;
                for _ in 0..len {
                    body.push(alphabet[k % 4]);
                    k /= 4;
                }
                for prefix in [&b"S: a\n\n"[..], b"", b"S: a\n"] {
                    let mut input = prefix.to_vec();
                    input.extend_from_slice(&body);
                    let out = wire(&input);
                    assert!(only_crlf(&out), "{input:?} -> {out:?}");
                    assert_eq!(lax_end_of_data(&out), None, "{input:?} -> {out:?}");
                    assert_eq!(wire_bytewise(&input), out);
                }
            }
        }
    }

    #[test]
    fn long_body_lines_are_broken_at_998() {
        let mut input = b"S: a\n\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', 2500));
        input.push(b'\n');
        let out = wire(&input);
        let lines: Vec<&[u8]> = out.split(|&b| b == b'\n').collect();
        for l in &lines {
            assert!(l.len() <= MAX_LINE + 1, "line of {}", l.len());
        }
        let body: Vec<u8> = out[b"S: a\r\n\r\n".len()..]
            .iter()
            .copied()
            .filter(|&b| b != b'\r' && b != b'\n')
            .collect();
        assert_eq!(body.len(), 2500, "nothing lost");
        assert_eq!(wire_bytewise(&input), out);
    }

    #[test]
    fn an_overlong_header_token_is_broken_as_a_last_resort() {
        let mut input = b"X-Long: ".to_vec();
        input.extend(std::iter::repeat_n(b'h', 1500));
        input.extend_from_slice(b"\n\nbody\n");
        let out = wire(&input);
        assert_eq!(wire_bytewise(&input), out);
        let text = String::from_utf8(out.clone()).unwrap();
        let header = text.split("\r\n\r\n").next().unwrap();
        let lines: Vec<&str> = header.split("\r\n").collect();
        assert!(lines.len() >= 2);
        assert!(lines.iter().all(|l| l.len() <= MAX_LINE));
        assert!(
            lines[1..].iter().all(|l| l.starts_with(' ')),
            "continuation lines"
        );
        assert!(text.ends_with("\r\n\r\nbody\r\n"));
    }

    #[test]
    fn long_header_lines_are_folded_at_white_space_only() {
        // Unfolding (RFC 5322 §2.2.3: removing each CRLF before white
        // space) gives back the field exactly.
        let mut input = b"Subject: ".to_vec();
        for i in 0..400 {
            input.extend_from_slice(
                format!("w\u{e9}rd{i}{}", if i % 7 == 0 { "\t" } else { " " }).as_bytes(),
            );
        }
        input.extend_from_slice(b"end\n\nbody\n");
        for out in [wire(&input), wire_bytewise(&input)] {
            let header_end = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
            let header = &out[..header_end];
            for line in header.split(|&b| b == b'\n') {
                assert!(line.len() <= MAX_LINE + 1, "line of {}", line.len());
            }
            let unfolded: Vec<u8> = String::from_utf8(header.to_vec())
                .expect("folded between characters")
                .replace("\r\n", "")
                .into_bytes();
            assert_eq!(unfolded, input[..input.len() - b"\n\nbody\n".len()]);
        }
    }

    #[test]
    fn long_body_lines_are_broken_between_characters() {
        // Issue 24: "a" and 1,000 "é" arrived as invalid UTF-8.
        let mut input = b"S: a\n\na".to_vec();
        for _ in 0..1000 {
            input.extend_from_slice("\u{e9}".as_bytes());
        }
        input.extend_from_slice("\u{1F600}x\u{800}\n".repeat(300).as_bytes());
        for out in [wire(&input), wire_bytewise(&input)] {
            let body = &out[b"S: a\r\n\r\n".len()..];
            for line in body.split(|&b| b == b'\n') {
                assert!(line.len() <= MAX_LINE + 1, "line of {}", line.len());
                std::str::from_utf8(line).expect("each line is whole characters");
            }
            let joined: Vec<u8> = body
                .iter()
                .copied()
                .filter(|&b| b != b'\r' && b != b'\n')
                .collect();
            let original: Vec<u8> = input[b"S: a\n\n".len()..]
                .iter()
                .copied()
                .filter(|&b| b != b'\n')
                .collect();
            assert_eq!(joined, original, "nothing lost");
        }
    }

    #[test]
    fn a_dot_after_a_break_is_stuffed_too() {
        let mut input = b"S: a\n\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', MAX_LINE));
        input.extend_from_slice(b".tail\n");
        let out = wire(&input);
        assert!(
            out.ends_with(b"\r\n..tail\r\n"),
            "{:?}",
            String::from_utf8_lossy(&out[out.len() - 20..])
        );
    }
}
