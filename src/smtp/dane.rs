//! DANE for SMTP (RFC 7672): the TLS handshake with an MX host whose
//! TLSA records (RFC 6698, RFC 7671) the caller looked up and found
//! DNSSEC-secure. This room knows nothing of DNS: it takes the records as
//! plain data ([`Tlsa`]) and checks the server's certificate against them.
//!
//! The check itself is OpenSSL's own DANE verifier (`SSL_dane_enable`,
//! `SSL_dane_tlsa_add`), which the `openssl` crate does not wrap: a
//! chain check written here would be a second, less tested copy of the
//! hardest part (DANE-TA: the anchor in the presented chain or given as
//! a bare key, the chain from it to the leaf, the leaf's name). So the
//! few functions are declared here and called on the crate's own `SSL`.
//!
//! RFC 7672 §3.1: only DANE-TA(2) and DANE-EE(3) are usable for SMTP;
//! PKIX-TA(0) and PKIX-EE(1) records are set aside as unusable, as are
//! unknown selectors or matching types and digests of the wrong length.
//! DANE-EE matches the leaf alone, its names and dates ignored
//! (§3.1.1, `DANE_FLAG_NO_DANE_EE_NAMECHECKS`); DANE-TA needs the chain
//! and the MX host's name in the leaf (§3.2.2). A secure TLSA RRset with
//! no usable record still makes TLS mandatory, unauthenticated (§2.2).

use std::ffi::{CString, c_char, c_int, c_uchar, c_ulong, c_void};

use foreign_types::ForeignTypeRef;
use openssl::ssl::{HandshakeError, SslConnector, SslMethod, SslStream, SslVerifyMode, SslVersion};
use openssl::x509::X509VerifyResult;

use super::stream::Timed;

/// One TLSA record (RFC 6698 §2.1) as published at `_25._tcp.HOST`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tlsa {
    /// Certificate usage: 2 DANE-TA, 3 DANE-EE (0 and 1 are PKIX).
    pub usage: u8,
    /// Selector: 0 the full certificate, 1 its SubjectPublicKeyInfo.
    pub selector: u8,
    /// Matching type: 0 exact, 1 SHA-256, 2 SHA-512.
    pub matching: u8,
    /// The certificate association data.
    pub data: Vec<u8>,
}

/// DANE-TA(2): a trust anchor the chain must lead to.
pub const DANE_TA: u8 = 2;
/// DANE-EE(3): the server's own certificate or key.
pub const DANE_EE: u8 = 3;

/// The largest association data taken: a full certificate (selector 0,
/// matching 0) is a few KB; a hostile zone's larger one is unusable.
const MAX_DATA: usize = 16 * 1024;

impl Tlsa {
    /// Whether RFC 7672 §3.1 lets SMTP use this record: DANE-TA or
    /// DANE-EE, a known selector, a known matching type, and a digest of
    /// that type's length.
    pub fn is_usable(&self) -> bool {
        let usage = matches!(self.usage, DANE_TA | DANE_EE);
        let selector = matches!(self.selector, 0 | 1);
        let data = match self.matching {
            0 => !self.data.is_empty() && self.data.len() <= MAX_DATA,
            1 => self.data.len() == 32,
            2 => self.data.len() == 64,
            _ => false,
        };
        usage && selector && data
    }
}

/// The usable records of `records` (RFC 7672 §3.1).
pub fn usable(records: &[Tlsa]) -> Vec<Tlsa> {
    records.iter().filter(|r| r.is_usable()).cloned().collect()
}

// OpenSSL ≥ 1.1.0 (ssl.h); libssl is linked through the openssl crate.
unsafe extern "C" {
    fn SSL_CTX_dane_enable(ctx: *mut c_void) -> c_int;
    fn SSL_dane_enable(ssl: *mut c_void, basedomain: *const c_char) -> c_int;
    fn SSL_dane_set_flags(ssl: *mut c_void, flags: c_ulong) -> c_ulong;
    fn SSL_dane_tlsa_add(
        ssl: *mut c_void,
        usage: u8,
        selector: u8,
        mtype: u8,
        data: *const c_uchar,
        dlen: usize,
    ) -> c_int;
    fn SSL_add1_host(ssl: *mut c_void, hostname: *const c_char) -> c_int;
}

/// ssl.h: a DANE-EE match needs no name check (RFC 7672 §3.1.1).
const DANE_FLAG_NO_DANE_EE_NAMECHECKS: c_ulong = 1;

/// X509_V_ERR_DANE_NO_MATCH (x509_vfy.h).
const DANE_NO_MATCH: i32 = 65;

/// How a DANE handshake failed.
#[derive(Debug)]
pub(super) enum Failure {
    /// The certificate matched no usable TLSA record (or, for DANE-TA,
    /// its chain or name did not verify).
    Mismatch(String),
    /// Anything else: the setup, the link, the protocol.
    Handshake(String),
}

/// A TLS handshake over `timed` with `server_name` (SNI, and the name
/// DANE-TA checks: the TLSA base domain), authenticated by `records` —
/// all of which must be usable — or, when there are none, encrypted
/// without authentication (RFC 7672 §2.2: a secure RRset of unusable
/// records). DANE-TA also accepts a leaf naming one of `also_names`
/// (the MX host's own name when the base domain is its CNAME
/// expansion, RFC 7672 §3.2.2).
pub(super) fn handshake(
    timed: Timed,
    server_name: &str,
    also_names: &[String],
    records: &[Tlsa],
) -> Result<SslStream<Timed>, Failure> {
    let setup = |what: &str, e: &dyn std::fmt::Display| Failure::Handshake(format!("{what}: {e}"));
    let mut builder =
        SslConnector::builder(SslMethod::tls_client()).map_err(|e| setup("TLS setup", &e))?;
    builder
        .set_min_proto_version(Some(SslVersion::TLS1_2))
        .map_err(|e| setup("TLS setup", &e))?;
    if records.is_empty() {
        builder.set_verify(SslVerifyMode::NONE);
    } else {
        builder.set_verify(SslVerifyMode::PEER);
        // SAFETY: the pointer is the live SSL_CTX the builder owns.
        if unsafe { SSL_CTX_dane_enable(builder.as_ptr().cast()) } <= 0 {
            return Err(setup("DANE setup", &openssl::error::ErrorStack::get()));
        }
    }
    let connector = builder.build();
    let mut config = connector.configure().map_err(|e| setup("TLS setup", &e))?;
    // Names are DANE's to check (DANE-TA) or not checked (DANE-EE); the
    // PKIX host check would refuse what RFC 7672 accepts.
    config.set_verify_hostname(false);
    if !records.is_empty() {
        let base = CString::new(server_name)
            .map_err(|_| Failure::Handshake(format!("{server_name:?}: not a host name")))?;
        let ssl = config.as_ptr().cast::<c_void>();
        // SAFETY: `ssl` is the live SSL of `config`; `base` and each
        // record's data outlive the calls, which copy them.
        unsafe {
            if SSL_dane_enable(ssl, base.as_ptr()) <= 0 {
                return Err(setup("DANE setup", &openssl::error::ErrorStack::get()));
            }
            SSL_dane_set_flags(ssl, DANE_FLAG_NO_DANE_EE_NAMECHECKS);
            for name in also_names {
                let name = CString::new(name.as_str())
                    .map_err(|_| Failure::Handshake(format!("{name:?}: not a host name")))?;
                if SSL_add1_host(ssl, name.as_ptr()) <= 0 {
                    return Err(setup("DANE setup", &openssl::error::ErrorStack::get()));
                }
            }
            for r in records {
                // 0: unusable to OpenSSL, negative: malformed. Records
                // were filtered already, so either is a refusal.
                let added = SSL_dane_tlsa_add(
                    ssl,
                    r.usage,
                    r.selector,
                    r.matching,
                    r.data.as_ptr(),
                    r.data.len(),
                );
                if added <= 0 {
                    return Err(Failure::Handshake(format!(
                        "TLSA {} {} {} not accepted by OpenSSL",
                        r.usage, r.selector, r.matching
                    )));
                }
            }
        }
    }
    config.connect(server_name, timed).map_err(|e| match e {
        HandshakeError::Failure(mid) => {
            let verify = mid.ssl().verify_result();
            if verify != X509VerifyResult::OK {
                Failure::Mismatch(describe(verify))
            } else {
                Failure::Handshake(mid.error().to_string())
            }
        }
        HandshakeError::SetupFailure(e) => setup("TLS setup", &e),
        HandshakeError::WouldBlock(mid) => Failure::Handshake(mid.error().to_string()),
    })
}

/// What a failed verification says, in the words of RFC 7672 when no
/// record matched.
fn describe(verify: X509VerifyResult) -> String {
    if verify.as_raw() == DANE_NO_MATCH {
        "no TLSA record matches the server's certificate".to_string()
    } else {
        verify.error_string().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tlsa(usage: u8, selector: u8, matching: u8, len: usize) -> Tlsa {
        Tlsa {
            usage,
            selector,
            matching,
            data: vec![0xab; len],
        }
    }

    #[test]
    fn only_dane_ta_and_dane_ee_are_usable_for_smtp() {
        assert!(tlsa(3, 1, 1, 32).is_usable());
        assert!(tlsa(2, 0, 1, 32).is_usable());
        assert!(!tlsa(0, 0, 1, 32).is_usable(), "PKIX-TA (RFC 7672 §3.1.3)");
        assert!(!tlsa(1, 1, 1, 32).is_usable(), "PKIX-EE (RFC 7672 §3.1.3)");
        assert!(!tlsa(4, 1, 1, 32).is_usable());
    }

    #[test]
    fn selectors_and_matching_types_must_be_known_and_digests_sized() {
        assert!(!tlsa(3, 2, 1, 32).is_usable(), "unknown selector");
        assert!(!tlsa(3, 1, 3, 32).is_usable(), "unknown matching type");
        assert!(!tlsa(3, 1, 1, 31).is_usable(), "SHA-256 is 32 bytes");
        assert!(tlsa(3, 1, 2, 64).is_usable());
        assert!(!tlsa(3, 1, 2, 32).is_usable(), "SHA-512 is 64 bytes");
        assert!(tlsa(3, 0, 0, 900).is_usable());
        assert!(!tlsa(3, 0, 0, 0).is_usable(), "empty exact data");
        assert!(!tlsa(3, 0, 0, MAX_DATA + 1).is_usable());
    }

    #[test]
    fn usable_keeps_only_the_usable_records() {
        let records = [tlsa(1, 1, 1, 32), tlsa(3, 1, 1, 32), tlsa(3, 1, 1, 5)];
        assert_eq!(usable(&records), [tlsa(3, 1, 1, 32)]);
    }
}
