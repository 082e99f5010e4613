//! Addresses as the caller gives them (argv recipients, -f/-r, `\user` in
//! aliases, RCPT TO): Address::parse, parse_list and parse_sender on any
//! UTF-8 text. Asserts the module's invariant (control characters, '-',
//! length limits) and the round trip: what parses prints back to text
//! that parses to the same address, qualified or not.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spoolmail::address::{self, Address};

fn check(a: &Address, input: &str) {
    let text = a.to_string();
    assert!(!text.chars().any(char::is_control), "{input:?} -> {text:?}");
    assert!(!text.starts_with('-'), "{input:?} -> {text:?}");
    assert!(text.len() <= 254, "{input:?} -> {} octets", text.len());
    assert!(a.local_part().len() <= 64, "{input:?} -> {text:?}");
    let back = Address::parse(&text)
        .unwrap_or_else(|e| panic!("{input:?} -> {text:?} does not parse: {}", e.message()));
    assert_eq!(&back, a, "{input:?} -> {text:?}");
    // With angle brackets, as on a SMTP wire.
    let bracketed = Address::parse(&format!("<{text}>"))
        .unwrap_or_else(|e| panic!("<{text}> does not parse: {}", e.message()));
    assert_eq!(&bracketed, a);
    let q = a.qualified("host.example");
    assert!(q.is_qualified());
    if a.is_qualified() {
        assert_eq!(&q, a);
    } else if q.to_string().len() <= 254 {
        assert_eq!(Address::parse(&q.to_string()).ok().as_ref(), Some(&q));
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(a) = Address::parse(s) {
        check(&a, s);
    }
    if let Ok(list) = address::parse_list(s) {
        assert!(!list.is_empty());
        for a in &list {
            check(a, s);
        }
    }
    if let Ok(Some(a)) = address::parse_sender(s) {
        check(&a, s);
    }
});
