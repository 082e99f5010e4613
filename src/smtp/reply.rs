//! SMTP replies (RFC 5321 §4.2): reading them off the wire defensively
//! and reading them back for logs, state and DSNs.

use std::fmt;

/// Longest reply line accepted (RFC 5321 allows 512; servers exceed it).
pub const MAX_LINE: usize = 4096;
/// Most lines accepted in one reply (an EHLO list is a few dozen).
pub const MAX_LINES: usize = 1000;
/// Longest text kept by [`Reply::one_line`].
const MAX_ONE_LINE: usize = 512;

/// One reply: its code and its text lines (without the "250-" prefix).
#[derive(Clone, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit code.
    pub code: u16,
    /// The text of each line.
    pub lines: Vec<String>,
}

impl Reply {
    /// 2xx.
    pub fn is_positive(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// 4xx: try again later.
    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }

    /// 5xx: do not try again.
    pub fn is_permanent(&self) -> bool {
        (500..600).contains(&self.code)
    }

    /// The RFC 3463 enhanced status code at the start of the text
    /// ("5.1.1"), when the server gives one whose class agrees with the
    /// reply code.
    pub fn enhanced_status(&self) -> Option<String> {
        let first = self.lines.first()?;
        let token = first.split_whitespace().next()?;
        let mut parts = token.split('.');
        let (class, subject, detail) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let digits = |s: &str, max: usize| {
            !s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_digit())
        };
        let class_ok = matches!(class, "2" | "4" | "5")
            && class.as_bytes()[0] - b'0' == (self.code / 100) as u8;
        (class_ok && digits(subject, 3) && digits(detail, 3)).then(|| token.to_string())
    }

    /// "550 5.1.1 no such user", the lines joined by spaces, control
    /// characters replaced and the length bounded: safe for syslog, the
    /// state file and a DSN's Diagnostic-Code.
    pub fn one_line(&self) -> String {
        let mut out = self.code.to_string();
        for line in &self.lines {
            if !line.is_empty() {
                out.push(' ');
                out.push_str(line);
            }
        }
        let mut clean: String = out
            .chars()
            .map(|c| if c.is_control() { '?' } else { c })
            .take(MAX_ONE_LINE)
            .collect();
        if clean.len() < out.len() && out.chars().count() > MAX_ONE_LINE {
            clean.push('…');
        }
        clean
    }
}

impl fmt::Debug for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.one_line())
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.one_line())
    }
}

/// Why a reply could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// Not "DDD", "DDD text" or "DDD-text".
    Garbled(String),
    /// A continuation line with another code than the first.
    CodeChanged,
    /// More than [`MAX_LINES`] lines.
    TooLong,
}

/// Collects a reply line by line.
#[derive(Default)]
pub struct ReplyParser {
    code: Option<u16>,
    lines: Vec<String>,
}

impl ReplyParser {
    /// Feeds one line (CRLF stripped). Ok(Some(reply)) on the last line.
    pub fn line(&mut self, raw: &[u8]) -> Result<Option<Reply>, ParseError> {
        let garbled =
            || ParseError::Garbled(String::from_utf8_lossy(&raw[..raw.len().min(80)]).into());
        if raw.len() < 3
            || !raw[..3].iter().all(u8::is_ascii_digit)
            || !(b'2'..=b'5').contains(&raw[0])
        {
            return Err(garbled());
        }
        let code = raw[..3]
            .iter()
            .fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
        let last = match raw.get(3) {
            None | Some(b' ') => true,
            Some(b'-') => false,
            Some(_) => return Err(garbled()),
        };
        if *self.code.get_or_insert(code) != code {
            return Err(ParseError::CodeChanged);
        }
        if self.lines.len() >= MAX_LINES {
            return Err(ParseError::TooLong);
        }
        let text = raw.get(4..).unwrap_or(&[]);
        self.lines.push(String::from_utf8_lossy(text).into_owned());
        if last {
            let reply = Reply {
                code,
                lines: std::mem::take(&mut self.lines),
            };
            self.code = None;
            Ok(Some(reply))
        } else {
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(lines: &[&str]) -> Result<Reply, ParseError> {
        let mut p = ReplyParser::default();
        for (i, l) in lines.iter().enumerate() {
            if let Some(r) = p.line(l.as_bytes())? {
                assert_eq!(i, lines.len() - 1, "reply ended early");
                return Ok(r);
            }
        }
        panic!("reply did not end");
    }

    #[test]
    fn multiline_replies_collect_their_lines() {
        let r = parse(&["250-mx.example", "250-PIPELINING", "250 SIZE 1000"]).unwrap();
        assert_eq!(r.code, 250);
        assert_eq!(r.lines, ["mx.example", "PIPELINING", "SIZE 1000"]);
        assert!(r.is_positive());
    }

    #[test]
    fn bare_code_is_a_reply() {
        let r = parse(&["354"]).unwrap();
        assert_eq!(r.code, 354);
        assert_eq!(r.one_line(), "354");
    }

    #[test]
    fn garbled_and_inconsistent_replies_are_errors() {
        assert!(matches!(parse(&["hello"]), Err(ParseError::Garbled(_))));
        assert!(matches!(parse(&["25"]), Err(ParseError::Garbled(_))));
        assert!(matches!(parse(&["250x"]), Err(ParseError::Garbled(_))));
        assert!(matches!(parse(&["650 x"]), Err(ParseError::Garbled(_))));
        assert_eq!(parse(&["250-a", "251 b"]), Err(ParseError::CodeChanged));
    }

    #[test]
    fn enhanced_status_must_agree_with_the_code() {
        let r = |code, text: &str| Reply {
            code,
            lines: vec![text.into()],
        };
        assert_eq!(
            r(550, "5.1.1 no such user").enhanced_status().as_deref(),
            Some("5.1.1")
        );
        assert_eq!(
            r(451, "4.7.1 greylisted").enhanced_status().as_deref(),
            Some("4.7.1")
        );
        assert_eq!(r(550, "4.1.1 wrong class").enhanced_status(), None);
        assert_eq!(r(250, "ok").enhanced_status(), None);
        assert_eq!(r(550, "5.1 short").enhanced_status(), None);
    }

    #[test]
    fn one_line_is_clean_and_bounded() {
        let r = Reply {
            code: 550,
            lines: vec!["5.7.1 evil\r\nInjected: header".into(), "x".repeat(2000)],
        };
        let line = r.one_line();
        assert!(!line.chars().any(char::is_control), "{line:?}");
        assert!(line.chars().count() <= MAX_ONE_LINE + 1);
        assert!(line.starts_with("550 5.7.1 evil??Injected"));
    }
}
