//! Masquerading of the sender header fields (masquerade.rs
//! Masquerade::header_field), on any field value, as Header::masquerade
//! applies it to a submitted message. The first input byte chooses the
//! mode (a masquerading domain, or one fixed address); the rest is the
//! value of a `From:` field.
//!
//! Asserts: no panic; masquerading twice changes nothing more; when the
//! value parses as an address list before, it parses after to as many
//! addresses, each either unchanged or — only when it was local — what
//! masquerading makes of it; a foreign address never changes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spoolmail::address::{self, Address};
use spoolmail::config::{self, Config};
use spoolmail::accept::masquerade::Masquerade;
use spoolmail_fuzz::field_value;
use std::sync::OnceLock;

/// host.example is the hostname; *.internal and db1 are local too.
fn configs() -> &'static (Config, Config) {
    static CONFIGS: OnceLock<(Config, Config)> = OnceLock::new();
    CONFIGS.get_or_init(|| {
        let base = "hostname = host.example\nmasquerade_local = *.internal, db1\n";
        let domain = config::parse(&format!("{base}masquerade_domain = example.com\n"), "f")
            .expect("domain config");
        let fixed = config::parse(
            &format!("{base}sender_address = noreply@example.com\n"),
            "f",
        )
        .expect("fixed config");
        (domain, fixed)
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let (domain, fixed) = configs();
    let config = if mode & 1 == 0 { domain } else { fixed };
    let m = Masquerade::new(config).expect("masquerading on");
    let mut raw = b"From:".to_vec();
    raw.extend_from_slice(rest);
    let Some(out) = m.header_field(&raw) else {
        return;
    };
    assert_ne!(out, raw);
    assert!(out.starts_with(b"From:"));
    assert_eq!(m.header_field(&out), None, "{raw:?} -> {out:?}");
    let masqueraded = |a: &Address| -> Address {
        match mode & 1 {
            0 => Address::parse(&format!("{}@example.com", a.local_part())).expect("valid"),
            _ => Address::parse("noreply@example.com").expect("valid"),
        }
    };
    if let (Some(before), Some(after)) = (field_value(&raw), field_value(&out))
        && let Ok(list) = address::parse_list(&before)
    {
        let got = address::parse_list(&after)
            .unwrap_or_else(|e| panic!("{before:?} -> {after:?}: {}", e.message()));
        assert_eq!(got.len(), list.len(), "{before:?} -> {after:?}");
        for (b, a) in list.iter().zip(&got) {
            if !m.is_local(b) {
                assert_eq!(a, b, "a foreign address changed: {before:?} -> {after:?}");
            } else {
                assert!(
                    a == b || *a == masqueraded(b),
                    "{b} became {a}: {before:?} -> {after:?}"
                );
            }
        }
    }
});
