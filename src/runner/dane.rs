//! Whether DANE (RFC 7672) applies to an MX host, from DNSSEC-validated
//! answers: hickory's validating resolver, anchored at the root's keys or
//! at `dnssec_trust_anchor`.
//!
//! RFC 7672 §2.2: DANE applies to a host only when the MX RRset that
//! named it and the host's own address records are DNSSEC-secure, and
//! then its TLSA RRset at `_25._tcp.HOST` (the port delivery uses,
//! `smtp_port`) decides:
//! - secure records: TLS authenticated by them ([`HostPolicy::Dane`]);
//! - an insecure zone anywhere on the way, or no TLSA records: no DANE,
//!   the usual opportunistic TLS ([`HostPolicy::NoDane`]);
//! - a bogus answer, or a lookup that fails where the zone is known to
//!   be signed: the attempt is deferred ([`HostPolicy::Defer`]) — an
//!   attacker who can break DNS must not get plain text by doing so.
//!
//! The zone is its owner's and may be hostile: one destination's
//! decisions are bounded by [`DEADLINE`] together, and at most
//! [`MAX_TLSA`] records are kept per host.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_resolver::TokioResolver;
use hickory_resolver::lookup::Lookup;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::dnssec::{Proof, TrustAnchors};
use hickory_resolver::proto::rr::RData;

use crate::error::{Error, Kind, Result};
use crate::smtp::dane::Tlsa;

use super::dns;

/// The DANE decisions of one destination's MX hosts (MX, addresses,
/// TLSA of each) get at most this long together: ten hostile hosts must
/// not cost ten times as much.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// At most this many TLSA records of one host are kept: a real RRset has
/// two or three (a current and a next key).
pub const MAX_TLSA: usize = 16;

/// What DANE says of one MX host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPolicy {
    /// DANE applies: STARTTLS mandatory, the certificate checked against
    /// these records (secure, usable or not: RFC 7672 §2.2).
    Dane(Vec<Tlsa>),
    /// DANE does not apply (why): deliver as without it.
    NoDane(String),
    /// The DNSSEC answers are bogus or could not be had for a signed
    /// zone: defer the attempt (why).
    Defer(String),
}

/// A DNSSEC-validating resolver for DANE decisions.
pub struct Validator {
    runtime: tokio::runtime::Runtime,
    inner: TokioResolver,
}

impl Validator {
    /// A validating resolver asking `server` (or /etc/resolv.conf's),
    /// trusting the keys in `anchor` (DNSKEY records in zone-file form),
    /// or hickory's built-in root keys when None.
    pub fn new(
        server: Option<SocketAddr>,
        timeout: Duration,
        anchor: Option<&Path>,
    ) -> Result<Validator> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::io("starting the DNS runtime", &e))?;
        let mut builder = dns::builder(server, timeout)?;
        builder.options_mut().validate = true;
        if let Some(path) = anchor {
            let keys = TrustAnchors::from_file(path).map_err(|e| {
                Error::new(
                    Kind::Config,
                    format!("dnssec_trust_anchor {}: {e}", path.display()),
                )
            })?;
            builder = builder.with_trust_anchor(Arc::new(keys));
        }
        let inner = {
            let _guard = runtime.enter();
            builder
                .build()
                .map_err(|e| Error::new(Kind::TempFail, format!("DNS resolver: {e}")))?
        };
        Ok(Validator { runtime, inner })
    }

    /// What DANE says of `host`, an MX host of `domain` whose SMTP
    /// service is on `port` (RFC 7672 §2.2), decided by `deadline`: one
    /// not decided by then defers.
    pub fn policy(&self, domain: &str, host: &str, port: u16, deadline: Instant) -> HostPolicy {
        let left = deadline.saturating_duration_since(Instant::now());
        let decided = self
            .runtime
            .block_on(async { tokio::time::timeout(left, self.decide(domain, host, port)).await });
        decided.unwrap_or_else(|_| {
            HostPolicy::Defer(format!(
                "{host}: DANE lookups not done within {DEADLINE:?} for {domain}"
            ))
        })
    }

    async fn decide(&self, domain: &str, host: &str, port: u16) -> HostPolicy {
        let mx = self.inner.mx_lookup(fqdn(domain)).await;
        match security(&mx) {
            Security::Secure => {}
            // RFC 5321 §5.1: a domain without MX is its own host; DANE
            // then rests on that host's addresses and TLSA records.
            Security::NoData if domain.eq_ignore_ascii_case(host) => {}
            Security::Insecure | Security::NoData => {
                return HostPolicy::NoDane(format!("{domain}: MX not DNSSEC-signed"));
            }
            Security::Bogus => {
                return HostPolicy::Defer(format!("{domain}: MX answer DNSSEC-bogus"));
            }
            Security::Failed(e) => {
                return HostPolicy::Defer(format!("{domain}: MX lookup failed: {e}"));
            }
        }
        let (a, aaaa) = dns::both(
            self.inner.ipv4_lookup(fqdn(host)),
            self.inner.ipv6_lookup(fqdn(host)),
        )
        .await;
        let addresses = [security(&a), security(&aaaa)];
        for s in &addresses {
            match s {
                Security::Bogus => {
                    return HostPolicy::Defer(format!("{host}: address answer DNSSEC-bogus"));
                }
                Security::Failed(e) => {
                    return HostPolicy::Defer(format!("{host}: address lookup failed: {e}"));
                }
                _ => {}
            }
        }
        // A name with only A records answers AAAA with no data: the
        // records it has must all be secure, and there must be some.
        if addresses.contains(&Security::Insecure) || !addresses.contains(&Security::Secure) {
            return HostPolicy::NoDane(format!("{host}: address records not DNSSEC-signed"));
        }
        let tlsa = self
            .inner
            .tlsa_lookup(format!("_{port}._tcp.{}", fqdn(host)))
            .await;
        let records: Vec<Tlsa> = match &tlsa {
            Ok(lookup) => lookup
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    RData::TLSA(t) => Some(Tlsa {
                        usage: t.cert_usage.into(),
                        selector: t.selector.into(),
                        matching: t.matching.into(),
                        data: t.cert_data.clone(),
                    }),
                    _ => None,
                })
                .take(MAX_TLSA)
                .collect(),
            Err(_) => Vec::new(),
        };
        match security(&tlsa) {
            Security::Secure if !records.is_empty() => HostPolicy::Dane(records),
            Security::Secure | Security::Insecure | Security::NoData => {
                HostPolicy::NoDane(format!("{host}: no DNSSEC-signed TLSA records"))
            }
            Security::Bogus => HostPolicy::Defer(format!("{host}: TLSA answer DNSSEC-bogus")),
            Security::Failed(e) => {
                HostPolicy::Defer(format!("{host}: TLSA lookup failed in a signed zone: {e}"))
            }
        }
    }
}

/// What a validated answer proves.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Security {
    /// Records all Secure, or their absence proved by secure NSEC.
    Secure,
    /// Unsigned (an insecure delegation on the way).
    Insecure,
    /// No records, the answer's security not told (hickory keeps the
    /// proof of a denial only for some): neither for DANE nor against.
    NoData,
    /// Signatures that do not verify, or a proof that should be there
    /// and is not.
    Bogus,
    /// No answer at all (SERVFAIL, timeout).
    Failed(String),
}

fn security(answer: &std::result::Result<Lookup, NetError>) -> Security {
    match answer {
        Ok(lookup) => {
            let proofs: Vec<Proof> = lookup.answers().iter().map(|r| r.proof).collect();
            if proofs.is_empty() {
                Security::NoData
            } else if proofs.contains(&Proof::Bogus) {
                Security::Bogus
            } else if proofs.iter().all(|p| *p == Proof::Secure) {
                Security::Secure
            } else if proofs.iter().all(|p| *p == Proof::Insecure) {
                Security::Insecure
            } else {
                // Indeterminate: the proof could not be had either way.
                // Taking it for insecure would let whoever withholds the
                // DNSSEC records choose plain text.
                Security::Failed("DNSSEC status indeterminate".to_string())
            }
        }
        Err(NetError::Dns(DnsError::DnssecBogus)) => Security::Bogus,
        Err(NetError::Dns(DnsError::Nsec { proof, .. })) => match proof {
            Proof::Secure => Security::Secure,
            Proof::Bogus => Security::Bogus,
            _ => Security::Insecure,
        },
        Err(e) if e.is_no_records_found() => Security::NoData,
        Err(e) => Security::Failed(e.to_string()),
    }
}

/// `name` fully qualified.
fn fqdn(name: &str) -> String {
    format!("{}.", name.trim_end_matches('.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_decision_past_its_deadline_defers() {
        // Nothing answers on port 9: every query would wait an hour.
        let v = Validator::new(
            Some("127.0.0.1:9".parse().unwrap()),
            Duration::from_secs(3600),
            None,
        )
        .unwrap();
        let deadline = Instant::now() + Duration::from_millis(200);
        match v.policy("example.test", "mx.example.test", 25, deadline) {
            HostPolicy::Defer(why) => assert!(why.contains("not done within"), "{why}"),
            other => panic!("expected a deferral, got {other:?}"),
        }
    }

    #[test]
    fn an_anchor_that_is_not_dnskey_records_is_a_config_error() {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), ". IN DS 20326 8 2 E06D44B8\n").unwrap();
        let server = Some("127.0.0.1:9".parse().unwrap());
        let e = Validator::new(server, Duration::from_secs(1), Some(file.path()))
            .err()
            .expect("refused");
        assert_eq!(e.kind(), Kind::Config);
    }
}
