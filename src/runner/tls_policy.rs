//! Which TLS each delivery hop gets, and what the `tls=` field says
//! about it (issue 26): the `tls` key for MX delivery — `none`,
//! `opportunistic`, `required`, or a policy the destination publishes
//! (`mta-sts`, `dane`, `dane-then-mta-sts`), each falling back to
//! opportunistic TLS where the destination publishes none — and a
//! relay's own TLS mode. A relay, smarthost or route is not MX delivery:
//! published policies never apply there (RFC 8461 §4, RFC 7672 §1.3).
//!
//! This module decides; the SMTP session carries it out.

use std::net::IpAddr;
use std::time::Instant;

use crate::config::{Config, SmarthostTls, TlsPolicy};
use crate::smtp::Security;
use crate::smtp::dane::Tlsa;
use crate::spool::TlsApplied;

use super::dane::{self, HostPolicy};
use super::mta_sts::Mode;
use super::sts_policy::Known;

/// How one connection uses TLS, and what that is called.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Protection {
    /// What the SMTP session does.
    pub security: Security,
    /// The `tls=` value once TLS is up (a session left in plain text,
    /// as opportunistic TLS allows, is `tls=none` whatever this says).
    pub label: TlsApplied,
    /// The published policy it comes from, as log lines and deferrals
    /// name it ("MTA-STS policy of example.org (id 2024a)").
    pub policy: Option<String>,
    /// The policy is in its testing mode (MTA-STS `mode: testing`, RFC
    /// 8461 §5): `security` is what it would enforce, but a TLS failure
    /// is only reported, naming the policy, and the host is then used
    /// with opportunistic TLS.
    pub report_only: bool,
    /// The TLSA records that authenticate the host, for
    /// [`Security::Dane`] (empty otherwise).
    pub tlsa: Vec<Tlsa>,
    /// For [`Security::Dane`]: the TLSA base domain, the name the
    /// session presents (SNI) and DANE-TA checks, then the MX host's own
    /// name when the base is its CNAME expansion (RFC 7672 §2.2.2,
    /// §3.2.2). Empty otherwise: the host's name serves.
    pub dane_names: Vec<String>,
}

impl Protection {
    /// The fixed protection of `security`, labelled `label`.
    pub fn fixed(security: Security, label: TlsApplied) -> Protection {
        Protection {
            security,
            label,
            policy: None,
            report_only: false,
            tlsa: Vec::new(),
            dane_names: Vec::new(),
        }
    }

    /// Opportunistic TLS: what every published-policy setting falls back
    /// to where the destination publishes nothing.
    pub fn opportunistic() -> Protection {
        Protection::fixed(Security::Opportunistic, TlsApplied::Opportunistic)
    }

    /// The `tls=` value of a session set up under this protection.
    pub fn applied(&self, tls_active: bool) -> TlsApplied {
        match tls_active {
            true => self.label,
            false => TlsApplied::None,
        }
    }
}

/// The protection of a relay's connection: its own TLS mode (verified
/// STARTTLS, implicit TLS, or none).
pub fn for_relay(tls: SmarthostTls) -> Protection {
    match tls {
        SmarthostTls::Starttls => {
            Protection::fixed(Security::StarttlsVerified, TlsApplied::Verified)
        }
        SmarthostTls::Tls => Protection::fixed(Security::Implicit, TlsApplied::Verified),
        SmarthostTls::None => Protection::fixed(Security::Plain, TlsApplied::None),
    }
}

/// The protection of MX delivery when the destination publishes no
/// policy (or none is asked for): `tls = none`, `opportunistic`,
/// `required`, and the published-policy values' fallback.
pub fn mx_default(config: &Config) -> Protection {
    match config.tls {
        TlsPolicy::None => Protection::fixed(Security::Plain, TlsApplied::None),
        TlsPolicy::Required => Protection::fixed(Security::StarttlsVerified, TlsApplied::Verified),
        TlsPolicy::Opportunistic
        | TlsPolicy::MtaSts
        | TlsPolicy::Dane
        | TlsPolicy::DaneThenMtaSts => Protection::opportunistic(),
    }
}

/// The protection `known`, a domain's MTA-STS policy, gives its MX host
/// `host` (RFC 8461 §4, §5); None: the host is not to be used (not in
/// an enforced policy's `mx` list). In `enforce` mode, STARTTLS with the
/// certificate verified for the MX name (`tls=mta-sts`); in `testing`
/// mode the same is tried, its failures only reported (see
/// [`Protection::report_only`]), and a host not in the list is used
/// with opportunistic TLS after a line saying enforcement would refuse
/// it.
pub fn for_mta_sts(known: &Known, host: &str) -> Option<Protection> {
    let listed = known.policy.allows(host);
    match known.policy.mode {
        Mode::Enforce if listed => Some(Protection {
            security: Security::StarttlsVerified,
            label: TlsApplied::MtaSts,
            policy: Some(known.describe()),
            report_only: false,
            tlsa: Vec::new(),
            dane_names: Vec::new(),
        }),
        Mode::Enforce => None,
        Mode::Testing if listed => Some(Protection {
            security: Security::StarttlsVerified,
            label: TlsApplied::Verified,
            policy: Some(format!("{} in testing mode", known.describe())),
            report_only: true,
            tlsa: Vec::new(),
            dane_names: Vec::new(),
        }),
        Mode::Testing => {
            log::warn!(
                "{host}: not an MX host of the {} in testing mode: enforcing it would refuse this host; delivering with opportunistic TLS",
                known.describe()
            );
            Some(Protection::opportunistic())
        }
        Mode::None => Some(Protection::opportunistic()),
    }
}

/// What DANE makes of one MX host (RFC 7672 §2.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DaneDecision {
    /// Its DNSSEC-secure TLSA records authenticate it (`tls=dane`), at
    /// its DNSSEC-validated addresses (RFC 7672 §2.2.1: the ordinary
    /// lookup's may be forged).
    Protect(Protection, Vec<IpAddr>),
    /// DANE does not apply (not asked for, an unsigned zone, no TLSA
    /// records): the next policy applies — MTA-STS under
    /// `dane-then-mta-sts`, else opportunistic.
    NotApplicable,
    /// Its DNSSEC answers are bogus, or failed for a signed zone: the
    /// host is not to be used (why), and never in plain text.
    Refuse(String),
}

/// What DANE makes of `host`, an MX host of `domain` whose SMTP service
/// is on `port`, from `validator`'s DNSSEC-validated answers had by
/// `deadline` (None: the `tls` key does not ask for DANE).
pub fn dane_for_host(
    validator: Option<&dane::Validator>,
    domain: &str,
    host: &str,
    port: u16,
    deadline: Instant,
) -> DaneDecision {
    let Some(validator) = validator else {
        return DaneDecision::NotApplicable;
    };
    match validator.policy(domain, host, port, deadline) {
        HostPolicy::Dane(dane) => {
            let mut dane_names = vec![dane.base.clone()];
            if !dane.base.eq_ignore_ascii_case(host.trim_end_matches('.')) {
                dane_names.push(host.to_string());
            }
            let protection = Protection {
                security: Security::Dane,
                label: TlsApplied::Dane,
                policy: Some(format!("DANE TLSA records of _{port}._tcp.{}", dane.base)),
                report_only: false,
                tlsa: dane.records,
                dane_names,
            };
            DaneDecision::Protect(protection, dane.addresses)
        }
        HostPolicy::NoDane(why) => {
            log::debug!("{host}: no DANE: {why}");
            DaneDecision::NotApplicable
        }
        HostPolicy::Defer(why) => DaneDecision::Refuse(why),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(tls: TlsPolicy) -> Config {
        Config {
            tls,
            ..Config::default()
        }
    }

    #[test]
    fn published_policies_fall_back_to_opportunistic() {
        for tls in [
            TlsPolicy::Opportunistic,
            TlsPolicy::MtaSts,
            TlsPolicy::Dane,
            TlsPolicy::DaneThenMtaSts,
        ] {
            assert_eq!(mx_default(&config(tls)), Protection::opportunistic());
        }
        let required = mx_default(&config(TlsPolicy::Required));
        assert_eq!(required.security, Security::StarttlsVerified);
        assert_eq!(required.label, TlsApplied::Verified);
        assert_eq!(
            mx_default(&config(TlsPolicy::None)).security,
            Security::Plain
        );
    }

    #[test]
    fn a_session_left_in_plain_text_is_tls_none() {
        let p = Protection::opportunistic();
        assert_eq!(p.applied(true), TlsApplied::Opportunistic);
        assert_eq!(p.applied(false), TlsApplied::None);
    }

    fn known(mode: &str) -> Known {
        let text = format!("version: STSv1\nmode: {mode}\nmx: *.mx.example\nmax_age: 86400\n");
        Known {
            domain: "example.org".into(),
            id: "20240101".into(),
            policy: super::super::mta_sts::parse_policy(text.as_bytes()).unwrap(),
        }
    }

    #[test]
    fn enforce_verifies_listed_hosts_and_refuses_the_others() {
        let p = for_mta_sts(&known("enforce"), "a.mx.example").unwrap();
        assert_eq!(p.security, Security::StarttlsVerified);
        assert_eq!(p.label, TlsApplied::MtaSts);
        assert!(!p.report_only);
        assert!(p.policy.unwrap().contains("example.org (id 20240101)"));
        assert_eq!(for_mta_sts(&known("enforce"), "mx.other.example"), None);
    }

    #[test]
    fn testing_reports_and_delivers() {
        let p = for_mta_sts(&known("testing"), "a.mx.example").unwrap();
        assert_eq!(p.security, Security::StarttlsVerified);
        assert!(p.report_only);
        let other = for_mta_sts(&known("testing"), "mx.other.example").unwrap();
        assert_eq!(other, Protection::opportunistic());
    }

    #[test]
    fn dane_not_asked_for_is_not_applicable() {
        assert_eq!(
            dane_for_host(None, "example.org", "mx.example.org", 25, Instant::now()),
            DaneDecision::NotApplicable
        );
    }

    #[test]
    fn relays_keep_their_own_mode() {
        assert_eq!(for_relay(SmarthostTls::Tls).label, TlsApplied::Verified);
        assert_eq!(for_relay(SmarthostTls::None).security, Security::Plain);
    }
}
