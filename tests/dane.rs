//! DANE for MX delivery (RFC 7672), end to end: a DNSSEC-signed test
//! zone served by a real NSD (tests/peers/signed_dns.py), TLSA records
//! matching or not the STARTTLS certificate of a real aiosmtpd.

mod common;

use std::time::Duration;

use common::signed_dns::SignedDns;
use spoolmail::runner::dane::{HostPolicy, Validator};

const TLSA_X: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

#[test]
fn validator_sees_secure_insecure_and_bogus() {
    let dir = tempfile::tempdir().unwrap();
    let Some(dns) = SignedDns::start(
        dir.path(),
        &[
            "example.test. 60 IN MX 10 mx.example.test.",
            "mx.example.test. 60 IN A 127.0.0.1",
            &format!("_25._tcp.mx.example.test. 60 IN TLSA 3 1 1 {TLSA_X}"),
            "bogus.test. 60 IN MX 10 mx.bogus.test.",
            "mx.bogus.test. 60 IN A 127.0.0.1",
            &format!("_25._tcp.mx.bogus.test. 60 IN TLSA 3 1 1 {TLSA_X}"),
            "none.test. 60 IN MX 10 mx.none.test.",
            "mx.none.test. 60 IN A 127.0.0.1",
        ],
        &[
            "unsigned.test. 60 IN MX 10 mx.unsigned.test.",
            "mx.unsigned.test. 60 IN A 127.0.0.1",
            &format!("_25._tcp.mx.unsigned.test. 60 IN TLSA 3 1 1 {TLSA_X}"),
        ],
        &["_25._tcp.mx.bogus.test."],
    ) else {
        return;
    };
    let v = Validator::new(Some(dns.addr), Duration::from_secs(5), Some(&dns.anchor)).unwrap();
    let secure = v.policy("example.test", "mx.example.test");
    println!("secure: {secure:?}");
    let bogus = v.policy("bogus.test", "mx.bogus.test");
    println!("bogus: {bogus:?}");
    let none = v.policy("none.test", "mx.none.test");
    println!("none: {none:?}");
    let unsigned = v.policy("unsigned.test", "mx.unsigned.test");
    println!("unsigned: {unsigned:?}");
    assert!(
        matches!(secure, HostPolicy::Dane(ref r) if r.len() == 1),
        "{secure:?}"
    );
    assert!(matches!(bogus, HostPolicy::Defer(_)), "{bogus:?}");
    assert!(matches!(none, HostPolicy::NoDane(_)), "{none:?}");
    assert!(matches!(unsigned, HostPolicy::NoDane(_)), "{unsigned:?}");
}
