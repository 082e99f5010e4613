//! Qualification of bare local names in address header fields
//! (qualify.rs qualify_field), on any raw field bytes, as
//! Header::qualify applies it to a locally submitted message.
//!
//! Asserts: only "@host.example" is inserted (removing the inserted
//! copies gives back the input byte for byte); qualifying twice changes
//! nothing more; when the field's value parses as an address list
//! before, it parses after to the same addresses, each qualified.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spoolmail::address;
use spoolmail::accept::qualify::{is_address_field, qualify_field};
use spoolmail_fuzz::field_value;

const HOST: &str = "host.example";

/// True when `out` is `raw` with copies of `at` inserted.
fn only_inserts(raw: &[u8], out: &[u8], at: &[u8]) -> bool {
    // Greedy: match raw byte for byte, skipping an inserted `at` where
    // raw does not continue.
    fn go(raw: &[u8], out: &[u8], at: &[u8]) -> bool {
        if out.is_empty() {
            return raw.is_empty();
        }
        if !raw.is_empty() && raw[0] == out[0] && go(&raw[1..], &out[1..], at) {
            return true;
        }
        out.starts_with(at) && go(raw, &out[at.len()..], at)
    }
    raw.len() < 4096 && go(raw, out, at)
}

fuzz_target!(|data: &[u8]| {
    let _ = is_address_field(data);
    let Some(out) = qualify_field(data, HOST) else {
        return;
    };
    let at = format!("@{HOST}");
    assert!(out.len() > data.len());
    assert_eq!((out.len() - data.len()) % at.len(), 0);
    if data.len() < 256 {
        assert!(
            only_inserts(data, &out, at.as_bytes()),
            "{data:?} -> {out:?}"
        );
    }
    assert_eq!(qualify_field(&out, HOST), None, "{data:?} -> {out:?}");
    if let (Some(before), Some(after)) = (field_value(data), field_value(&out)) {
        if let Ok(list) = address::parse_list(&before) {
            let expected: Vec<_> = list.iter().map(|a| a.qualified(HOST)).collect();
            let got = address::parse_list(&after)
                .unwrap_or_else(|e| panic!("{before:?} -> {after:?}: {}", e.message()));
            assert_eq!(got, expected, "{before:?} -> {after:?}");
        }
    }
});
