//! The DATA encoder: the spool's LF-terminated message to SMTP's wire
//! form (RFC 5321 §4.5.2, §4.5.3.1.6), streamed in constant memory (S5).
//!
//! - every LF becomes CRLF (a lone CR inside a line is passed as is);
//! - a line starting with "." gets another "." (dot-stuffing);
//! - no line exceeds 998 octets: a longer header line is folded (CRLF and
//!   a space, which a header reader takes as white space), a longer body
//!   line is broken with a plain CRLF — the content survives either way,
//!   whereas a server may truncate or reject an overlong line;
//! - a last line without LF is ended with CRLF.
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
    let mut encoder = Encoder::default();
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
    Ok(encoder.written)
}

/// The encoder's state between chunks.
struct Encoder {
    /// Octets on the current output line so far.
    line_len: usize,
    /// Still in the header section (before the first empty line).
    in_header: bool,
    written: u64,
}

impl Default for Encoder {
    fn default() -> Encoder {
        Encoder {
            line_len: 0,
            in_header: true,
            written: 0,
        }
    }
}

impl Encoder {
    fn put(&mut self, out: &mut dyn Write, bytes: &[u8]) -> io::Result<()> {
        self.written += bytes.len() as u64;
        out.write_all(bytes)
    }

    fn feed(&mut self, mut input: &[u8], out: &mut dyn Write) -> io::Result<()> {
        while !input.is_empty() {
            // The rest of the current line in this chunk.
            let end = input.iter().position(|&b| b == b'\n');
            let (mut text, has_lf) = match end {
                Some(i) => (&input[..i], true),
                None => (input, false),
            };
            input = match end {
                Some(i) => &input[i + 1..],
                None => &[],
            };
            while !text.is_empty() {
                if self.line_len == 0 && text[0] == b'.' {
                    self.put(out, b".")?;
                    self.line_len += 1;
                }
                let room = MAX_LINE - self.line_len;
                if text.len() <= room {
                    self.put(out, text)?;
                    self.line_len += text.len();
                    break;
                }
                let (head, rest) = text.split_at(room);
                self.put(out, head)?;
                if self.in_header {
                    // Folding: the continuation starts with white space.
                    self.put(out, b"\r\n ")?;
                    self.line_len = 1;
                } else {
                    self.put(out, b"\r\n")?;
                    self.line_len = 0;
                }
                text = rest;
            }
            if has_lf {
                if self.line_len == 0 && self.in_header {
                    self.in_header = false;
                }
                self.put(out, b"\r\n")?;
                self.line_len = 0;
            }
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut dyn Write) -> io::Result<()> {
        if self.line_len > 0 {
            self.put(out, b"\r\n")?;
            self.line_len = 0;
        }
        Ok(())
    }
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
    fn lf_becomes_crlf_and_dots_are_stuffed() {
        let input = b"Subject: x\n\n.\n..two\nmid.dot\n.end";
        let expected = b"Subject: x\r\n\r\n..\r\n...two\r\nmid.dot\r\n..end\r\n";
        assert_eq!(wire(input), expected);
        assert_eq!(wire_bytewise(input), expected);
    }

    #[test]
    fn lone_cr_passes_through() {
        assert_eq!(wire(b"S: a\n\na\rb\n"), b"S: a\r\n\r\na\rb\r\n");
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
    fn long_header_lines_are_folded() {
        let mut input = b"X-Long: ".to_vec();
        input.extend(std::iter::repeat_n(b'h', 1500));
        input.extend_from_slice(b"\n\nbody\n");
        let out = wire(&input);
        let text = String::from_utf8(out.clone()).unwrap();
        let header = text.split("\r\n\r\n").next().unwrap();
        let lines: Vec<&str> = header.split("\r\n").collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].len() <= MAX_LINE);
        assert!(lines[1].starts_with(' '), "a continuation line");
        assert!(text.ends_with("\r\n\r\nbody\r\n"));
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
