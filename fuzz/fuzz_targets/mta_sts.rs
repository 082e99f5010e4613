//! MTA-STS as a domain publishes it (runner/mta_sts.rs): the policy file
//! a server returns over HTTPS, and the `_mta-sts` TXT records (the input
//! split at NUL into records).
//!
//! Asserts: a policy read has a mode, a max_age within the RFC's bound,
//! mx patterns that are lower case without a trailing dot (at least one
//! unless mode none), and `allows` does not panic on any host; an
//! announced id is 1..=32 alphanumerics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spoolmail::runner::mta_sts::{MAX_AGE_LIMIT, Mode, announced_id, parse_policy};

fuzz_target!(|data: &[u8]| {
    if let Ok(policy) = parse_policy(data) {
        assert!(policy.max_age <= MAX_AGE_LIMIT);
        assert!(policy.mode == Mode::None || !policy.mx.is_empty());
        for p in &policy.mx {
            assert!(!p.ends_with('.') && *p == p.to_ascii_lowercase(), "{p:?}");
        }
        let host = String::from_utf8_lossy(data);
        let _ = policy.allows(&host);
        let _ = policy.allows("mail.example.com.");
    }
    let records: Vec<Vec<u8>> = data.split(|&b| b == 0).map(<[u8]>::to_vec).collect();
    if let Some(id) = announced_id(&records) {
        assert!((1..=32).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric()));
    }
});
