//! Whether DANE (RFC 7672) applies to an MX host, from DNSSEC-validated
//! answers: hickory's validating resolver, anchored at the root's keys or
//! at `dnssec_trust_anchor`.
//!
//! RFC 7672 §2.2: DANE applies to a host only when the MX RRset that
//! named it (which must name it: the host list comes from the ordinary
//! lookup) and the host's own address records are DNSSEC-secure, and
//! then its TLSA RRset at `_25._tcp.HOST` (the port delivery uses,
//! `smtp_port`) decides:
//! - secure records: TLS authenticated by them ([`HostPolicy::Dane`]),
//!   at the host's DNSSEC-validated addresses — never the ordinary
//!   lookup's, which a forged answer could steer (§2.2.1); a host that
//!   is a CNAME has its records looked up at the fully expanded name
//!   first, then at its own (§2.2.2), and the name they were found
//!   under is the TLSA base domain;
//! - an insecure zone anywhere on the way, or no TLSA records: no DANE,
//!   the usual opportunistic TLS ([`HostPolicy::NoDane`]);
//! - a bogus answer, or a lookup that fails where the zone is known to
//!   be signed: the attempt is deferred ([`HostPolicy::Defer`]) — an
//!   attacker who can break DNS must not get plain text by doing so.
//!
//! The zone is its owner's and may be hostile: one destination's
//! decisions are bounded by [`DEADLINE`] together, and at most
//! [`MAX_TLSA`] records are kept per host.

use std::net::{IpAddr, SocketAddr};
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
    /// the records (secure, usable or not: RFC 7672 §2.2).
    Dane(DaneHost),
    /// DANE does not apply (why): deliver as without it.
    NoDane(String),
    /// The DNSSEC answers are bogus or could not be had for a signed
    /// zone: defer the attempt (why).
    Defer(String),
}

/// An MX host that DANE protects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaneHost {
    /// Its DNSSEC-secure TLSA records.
    pub records: Vec<Tlsa>,
    /// The TLSA base domain: the name the records were found under —
    /// the host's CNAME expansion, or the MX name itself (RFC 7672
    /// §2.2.2) — lowercased, without the trailing dot.
    pub base: String,
    /// Its DNSSEC-validated addresses: the only ones to connect to
    /// (§2.2.1).
    pub addresses: Vec<IpAddr>,
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
            // The host came from the ordinary, non-validating lookup: it
            // must be one the DNSSEC-secure RRset names, or that lookup
            // was answered by someone else (RFC 7672 §2.2.1).
            Security::Secure if !names_exchange(&mx, host) => {
                return HostPolicy::Defer(format!(
                    "{host}: not in the DNSSEC-validated MX RRset of {domain}"
                ));
            }
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
        let (mut a, mut aaaa) = dns::both(
            self.inner.ipv4_lookup(fqdn(host)),
            self.inner.ipv6_lookup(fqdn(host)),
        )
        .await;
        // hickory 0.26 takes the signed proof that the end of a CNAME
        // chain has no records of one family for bogus. The chain itself
        // is validated by the other family's secure answer, so that
        // family is asked again at the chain's end, where no CNAME is in
        // the way and the proof validates (or is bogus on its own).
        match (security(&a), security(&aaaa)) {
            (Security::Secure, Security::Bogus) => {
                if let Some(end) = chain_end(host, &a) {
                    aaaa = self.inner.ipv6_lookup(fqdn(&end)).await;
                }
            }
            (Security::Bogus, Security::Secure) => {
                if let Some(end) = chain_end(host, &aaaa) {
                    a = self.inner.ipv4_lookup(fqdn(&end)).await;
                }
            }
            _ => {}
        }
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
        // records it has must all be secure, and there must be some. A
        // CNAME on the way is among the records whose proofs count: the
        // whole chain is secure or DANE does not apply (§2.2.2).
        if addresses.contains(&Security::Insecure) || !addresses.contains(&Security::Secure) {
            return HostPolicy::NoDane(format!("{host}: address records not DNSSEC-signed"));
        }
        // The connection goes to these addresses, not to the ordinary
        // lookup's: a forged address record must not steer it.
        let validated: Vec<IpAddr> = [&a, &aaaa]
            .into_iter()
            .filter_map(|answer| answer.as_ref().ok())
            .flat_map(|lookup| lookup.answers().iter())
            .filter_map(|r| match &r.data {
                RData::A(a) => Some(IpAddr::V4(a.0)),
                RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                _ => None,
            })
            .take(dns::MAX_ADDRESSES)
            .collect();
        if validated.is_empty() {
            // Proved to have none, yet the ordinary lookup gave some.
            return HostPolicy::Defer(format!("{host}: no DNSSEC-validated address"));
        }
        // RFC 7672 §2.2.2: a CNAME'd host's TLSA records are looked up
        // at the fully expanded name first, then at the MX name.
        let expanded = [&a, &aaaa]
            .into_iter()
            .filter_map(|answer| answer.as_ref().ok())
            .map(|lookup| expand(host, lookup))
            .find(|name| !name.eq_ignore_ascii_case(host));
        let mut bases: Vec<&str> = expanded.iter().map(String::as_str).collect();
        bases.push(host);
        for base in bases {
            match self.tlsa(base, port).await {
                Ok(records) if records.is_empty() => continue,
                Ok(records) => {
                    return HostPolicy::Dane(DaneHost {
                        records,
                        base: base.to_string(),
                        addresses: validated,
                    });
                }
                Err(defer) => return defer,
            }
        }
        HostPolicy::NoDane(format!("{host}: no DNSSEC-signed TLSA records"))
    }

    /// The DNSSEC-secure TLSA records at `_PORT._tcp.BASE` (empty: none,
    /// or not secure), or the deferral a bogus or failed answer means.
    async fn tlsa(&self, base: &str, port: u16) -> std::result::Result<Vec<Tlsa>, HostPolicy> {
        let tlsa = self
            .inner
            .tlsa_lookup(format!("_{port}._tcp.{}", fqdn(base)))
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
            Security::Secure => Ok(records),
            Security::Insecure | Security::NoData => Ok(Vec::new()),
            Security::Bogus => Err(HostPolicy::Defer(format!(
                "{base}: TLSA answer DNSSEC-bogus"
            ))),
            Security::Failed(e) => Err(HostPolicy::Defer(format!(
                "{base}: TLSA lookup failed in a signed zone: {e}"
            ))),
        }
    }
}

/// Whether the MX answer `mx` names `host` among its exchanges.
fn names_exchange(mx: &std::result::Result<Lookup, NetError>, host: &str) -> bool {
    let Ok(lookup) = mx else {
        return false;
    };
    let host = host.trim_end_matches('.');
    lookup.answers().iter().any(|r| match &r.data {
        RData::MX(mx) => mx
            .exchange
            .to_ascii()
            .trim_end_matches('.')
            .eq_ignore_ascii_case(host),
        _ => false,
    })
}

/// The end of the CNAME chain `answer` followed from `host`, when there
/// is one (None: no answer, or no CNAME on the way).
fn chain_end(host: &str, answer: &std::result::Result<Lookup, NetError>) -> Option<String> {
    let end = expand(host, answer.as_ref().ok()?);
    (!end.eq_ignore_ascii_case(host.trim_end_matches('.'))).then_some(end)
}

/// `host` with the CNAME records of `lookup` followed to their end (at
/// most as many steps as there are records: a loop ends there).
fn expand(host: &str, lookup: &Lookup) -> String {
    let mut name = host.trim_end_matches('.').to_ascii_lowercase();
    for _ in 0..lookup.answers().len() {
        let next = lookup.answers().iter().find_map(|r| match &r.data {
            RData::CNAME(target)
                if r.name
                    .to_ascii()
                    .trim_end_matches('.')
                    .eq_ignore_ascii_case(&name) =>
            {
                Some(
                    target
                        .0
                        .to_ascii()
                        .trim_end_matches('.')
                        .to_ascii_lowercase(),
                )
            }
            _ => None,
        });
        match next {
            Some(target) => name = target,
            None => break,
        }
    }
    name
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
            } else if proofs.contains(&Proof::Indeterminate) {
                // The proof could not be had either way. Taking it for
                // insecure would let whoever withholds the DNSSEC records
                // choose plain text.
                Security::Failed("DNSSEC status indeterminate".to_string())
            } else {
                // Insecure records, and perhaps secure ones: a CNAME chain
                // that crosses from a signed zone into one proved unsigned
                // (an insecure delegation cannot be forged). Not all
                // secure, so DANE does not apply (RFC 7672 §2.2.2).
                Security::Insecure
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
