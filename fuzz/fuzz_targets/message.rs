//! The message on stdin, as submit.rs reads it: Intake::read_header then
//! copy_body (line endings, the dot rule, the header section, Bcc
//! stripping, size limits), then -t recipients and header qualification.
//! The first input byte picks the options (-i, a size limit) and the
//! chunking; the rest is the message.
//!
//! Asserts: the result does not depend on how the input is chunked
//! (whole, one byte at a time, or the chosen sizes); a body ends with a
//! newline; every header field ends with one; no Bcc field is written;
//! the size limit holds; the
//! header written is what written_size promised; the -t recipients print
//! back to themselves; qualification only adds '@host' to bare names.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spoolmail::address::Address;
use spoolmail::accept::message::{Header, Intake, IntakeOptions};
use spoolmail_fuzz::Chunked;

/// Header bytes written, body bytes, the header, or the error text.
type Outcome = Result<(Vec<u8>, Vec<u8>, Header), String>;

fn run(data: &[u8], sizes: &[usize], options: &IntakeOptions) -> Outcome {
    let mut intake = Intake::new(Chunked::new(data, sizes), options.clone());
    let header = intake.read_header().map_err(|e| e.to_string())?;
    let mut head = Vec::new();
    let written = header.write_to(&mut head).map_err(|e| e.to_string())?;
    assert_eq!(written, head.len() as u64);
    let mut body = Vec::new();
    let n = intake.copy_body(&mut body).map_err(|e| e.to_string())?;
    assert_eq!(n, body.len() as u64);
    // A second call writes nothing.
    assert_eq!(intake.copy_body(&mut Vec::new()).ok(), Some(0));
    Ok((head, body, header))
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, message)) = data.split_first() else {
        return;
    };
    let options = IntakeOptions {
        ignore_dots: flags & 1 != 0,
        max_size: if flags & 2 != 0 {
            u64::from(flags >> 2) * 4
        } else {
            0
        },
        max_header_size: if flags & 0x80 != 0 { 64 } else { 256 * 1024 },
    };
    let sizes = [usize::from(flags % 7) + 1, 3, 1, 64 * 1024];
    let whole = run(message, &[usize::MAX], &options);
    let bytewise = run(message, &[1], &options);
    let chunked = run(message, &sizes, &options);
    assert_eq!(whole, bytewise, "one read vs byte at a time");
    assert_eq!(whole, chunked, "one read vs chunks {sizes:?}");
    let Ok((head, body, mut header)) = whole else {
        return;
    };
    if !body.is_empty() {
        assert_eq!(body.last(), Some(&b'\n'));
    }
    if !head.is_empty() {
        assert_eq!(head.last(), Some(&b'\n'));
    }
    // Nobody's Bcc leaks: no written field is a Bcc or Resent-Bcc.
    for line in head.split(|&b| b == b'\n') {
        if line.first().is_some_and(|&b| b != b' ' && b != b'\t') {
            let name = line.split(|&b| b == b':').next().unwrap_or_default();
            assert!(
                !name.eq_ignore_ascii_case(b"bcc") && !name.eq_ignore_ascii_case(b"resent-bcc"),
                "{head:?}"
            );
        }
    }
    if options.max_size > 0 {
        assert!((head.len() + body.len()) as u64 <= options.max_size);
    }
    if !options.ignore_dots {
        // The dot rule ended the message at the latest at a lone dot line.
        assert!(!body.split(|&b| b == b'\n').any(|l| l == b"."), "{body:?}");
    }
    // -t: header recipients, then qualification of bare names.
    if let Ok(rcpts) = header.recipients() {
        for a in &rcpts {
            assert_eq!(Address::parse(&a.to_string()).ok().as_ref(), Some(a));
        }
    }
    let before = head.clone();
    header.qualify("host.example");
    let mut after = Vec::new();
    header.write_to(&mut after).unwrap();
    assert!(after.len() >= before.len());
    if after.len() == before.len() {
        assert_eq!(after, before);
    }
    let _ = header.get("Subject");
    let _ = header.contains("From");
});
