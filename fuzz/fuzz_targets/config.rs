//! The configuration file: config::parse on any UTF-8 text, and
//! config::parse_duration on each value.
//!
//! Asserts: parsing is deterministic; an accepted file's hostname and
//! local domains hold no control character nor white space; what is
//! accepted is accepted again when written back for the keys whose
//! values print back (hostname, max_message_size via its byte count).
#![no_main]

use libfuzzer_sys::fuzz_target;
use spoolmail::config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let first = config::parse(text, "fuzz");
    let again = config::parse(text, "fuzz");
    assert_eq!(first.is_ok(), again.is_ok());
    match first {
        Ok(c) => {
            assert_eq!(Some(&c), again.as_ref().ok());
            for name in std::iter::once(&c.hostname).chain(&c.local_domains) {
                assert!(
                    !name.chars().any(|ch| ch.is_control() || ch.is_whitespace()),
                    "{name:?}"
                );
            }
            let rewritten = format!(
                "hostname = {}\nmax_message_size = {}\n",
                c.hostname, c.max_message_size
            );
            if !c.hostname.is_empty() {
                let back = config::parse(&rewritten, "fuzz")
                    .unwrap_or_else(|e| panic!("{rewritten:?}: {}", e.message()));
                assert_eq!(back.hostname, c.hostname);
                assert_eq!(back.max_message_size, c.max_message_size);
            }
        }
        Err(e) => assert!(e.message().starts_with("fuzz"), "{}", e.message()),
    }
    for line in text.lines() {
        if let Some((_, value)) = line.split_once('=') {
            let _ = config::parse_duration(value.trim());
        }
    }
    let _ = config::parse_duration(text);
});
