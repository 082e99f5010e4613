//! MX routing (RFC 5321 §5.1, RFC 1123 §5.3.4, RFC 7505) with
//! hickory-resolver.
//!
//! hickory is asynchronous; the runner is not. Each [`Resolver`] owns a
//! current-thread tokio runtime and blocks on it, which keeps the rest of
//! spoolmail free of async and costs one small runtime per worker.
//!
//! A domain's zone is its owner's to write, and a hostile one can list
//! many MX names none of whose addresses ever answer. So one domain's
//! resolution is bounded ([`Limits`]): at most [`MAX_MX_NAMES`] names
//! looked at, none after [`MAX_ADDRESSES`] addresses are known, A and
//! AAAA of a name asked together, and all of it within
//! [`RESOLVE_DEADLINE`] — what was found by then is used, nothing found
//! is a temporary failure. (Before, twenty silent names held a worker
//! for minutes per attempt.)

use std::fmt;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::NetError;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::{ResolverBuilder, TokioResolver};
use rand::seq::SliceRandom;

use crate::error::{Error, Kind, Result};

/// One host to try for a domain, with every address it has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MxHost {
    /// The host name, lowercased, without the trailing dot.
    pub name: String,
    /// Its MX preference (0 for an implicit MX or a literal).
    pub preference: u16,
    /// Its A and AAAA addresses, IPv4 first.
    pub addresses: Vec<IpAddr>,
}

/// Why a domain has no usable host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteError {
    /// The domain cannot receive mail, now or later: it does not exist,
    /// it publishes a null MX, or none of its hosts has an address.
    Permanent {
        /// RFC 3463 status for the DSN.
        status: &'static str,
        /// What was found.
        message: String,
    },
    /// DNS did not answer properly; try again later.
    Temporary {
        /// What went wrong.
        message: String,
    },
}

impl fmt::Display for RouteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RouteError::Permanent { message, .. } | RouteError::Temporary { message } => {
                f.write_str(message)
            }
        }
    }
}

/// At most this many MX names of one domain are looked up: the most
/// preferred ones (Postfix tries at most 10 addresses per attempt too).
pub const MAX_MX_NAMES: usize = 10;

/// At most this many addresses are tried per destination and attempt: no
/// name is looked up once the names before it gave this many.
pub const MAX_ADDRESSES: usize = 10;

/// One destination's whole resolution (MX, then the addresses of its
/// names) gets at most this long.
pub const RESOLVE_DEADLINE: Duration = Duration::from_secs(30);

/// How much work one domain's resolution may cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// MX names looked up at most.
    pub names: usize,
    /// Addresses after which no further name is looked up.
    pub addresses: usize,
    /// The time the whole resolution may take.
    pub deadline: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            names: MAX_MX_NAMES,
            addresses: MAX_ADDRESSES,
            deadline: RESOLVE_DEADLINE,
        }
    }
}

/// A DNS resolver for mail routing.
pub struct Resolver {
    runtime: tokio::runtime::Runtime,
    inner: TokioResolver,
}

impl Resolver {
    /// A resolver asking `server` (UDP and TCP on its port) or, when
    /// None, the servers of /etc/resolv.conf. Names are always taken as
    /// fully qualified: no search list, no ndots games.
    pub fn new(server: Option<SocketAddr>, timeout: Duration) -> Result<Resolver> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::io("starting the DNS runtime", &e))?;
        let builder = builder(server, timeout)?;
        let inner = {
            let _guard = runtime.enter();
            builder
                .build()
                .map_err(|e| Error::new(Kind::TempFail, format!("DNS resolver: {e}")))?
        };
        Ok(Resolver { runtime, inner })
    }

    /// The hosts to try for `domain`, in order: MX preference ascending,
    /// equal preferences shuffled (RFC 5321 §5.1), each with all its
    /// addresses, within the default [`Limits`]. An address literal needs
    /// no DNS.
    pub fn mx_hosts(&self, domain: &str) -> std::result::Result<Vec<MxHost>, RouteError> {
        self.mx_hosts_within(domain, &Limits::default())
    }

    /// [`Resolver::mx_hosts`] within `limits`: the hosts found when the
    /// deadline passes are the answer; none is a temporary failure.
    pub fn mx_hosts_within(
        &self,
        domain: &str,
        limits: &Limits,
    ) -> std::result::Result<Vec<MxHost>, RouteError> {
        if let Some(ip) = address_literal(domain) {
            return Ok(vec![MxHost {
                name: domain.to_string(),
                preference: 0,
                addresses: vec![ip],
            }]);
        }
        let mut found = Found::default();
        let resolved = self.runtime.block_on(async {
            tokio::time::timeout(limits.deadline, self.resolve(domain, limits, &mut found)).await
        });
        match resolved {
            Ok(Err(e)) => Err(e),
            Ok(Ok(())) => found.finish(domain),
            Err(_) if !found.hosts.is_empty() => {
                log::warn!(
                    "{domain}: resolution stopped after {:?} with {} host(s)",
                    limits.deadline,
                    found.hosts.len()
                );
                Ok(found.hosts)
            }
            Err(_) => Err(RouteError::Temporary {
                message: format!(
                    "{domain}: no mail host address found within {:?}",
                    limits.deadline
                ),
            }),
        }
    }

    /// Looks up `domain`'s MX names and their addresses into `found`, in
    /// order, within `limits`' counts (the caller applies the deadline).
    async fn resolve(
        &self,
        domain: &str,
        limits: &Limits,
        found: &mut Found,
    ) -> std::result::Result<(), RouteError> {
        let fqdn = format!("{}.", domain.trim_end_matches('.'));
        let exchanges: Vec<(u16, String)> = match self.inner.mx_lookup(fqdn.as_str()).await {
            Ok(lookup) => lookup
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    RData::MX(mx) => Some((mx.preference, name_of(&mx.exchange.to_ascii()))),
                    _ => None,
                })
                .collect(),
            Err(e) if e.is_nx_domain() => {
                return Err(RouteError::Permanent {
                    status: "5.1.2",
                    message: format!("{domain}: no such domain"),
                });
            }
            Err(e) if e.is_no_records_found() => Vec::new(),
            Err(e) => return Err(temporary(domain, "MX", &e)),
        };
        if exchanges.len() == 1 && exchanges[0].1.is_empty() {
            return Err(RouteError::Permanent {
                status: "5.1.10",
                message: format!("{domain}: null MX: the domain accepts no mail (RFC 7505)"),
            });
        }
        for (preference, name) in plan(domain, exchanges, limits.names) {
            if found.addresses() >= limits.addresses {
                break;
            }
            match self.lookup_addresses(&name).await {
                Ok(addresses) if !addresses.is_empty() => found.hosts.push(MxHost {
                    name,
                    preference,
                    addresses,
                }),
                Ok(_) | Err(RouteError::Permanent { .. }) => {
                    log::warn!("{domain}: MX host {name} has no address")
                }
                Err(e @ RouteError::Temporary { .. }) => found.temporary = Some(e),
            }
        }
        Ok(())
    }

    /// The A and AAAA addresses of `host` (IPv4 first). NXDOMAIN or no
    /// address at all is Permanent; anything else that fails, Temporary.
    pub fn addresses(&self, host: &str) -> std::result::Result<Vec<IpAddr>, RouteError> {
        self.runtime.block_on(self.lookup_addresses(host))
    }

    /// The TXT records at `name`, each its strings joined (RFC 6376
    /// §3.6.2.2). Ok(empty) when the name has none or does not exist;
    /// Err only when the answer could not be had.
    pub fn txt(&self, name: &str) -> std::result::Result<Vec<Vec<u8>>, RouteError> {
        let fqdn = format!("{}.", name.trim_end_matches('.'));
        match self.runtime.block_on(self.inner.txt_lookup(fqdn.as_str())) {
            Ok(lookup) => Ok(lookup
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    RData::TXT(txt) => Some(txt.txt_data.concat()),
                    _ => None,
                })
                .collect()),
            Err(e) if e.is_no_records_found() => Ok(Vec::new()),
            Err(e) => Err(temporary(name, "TXT", &e)),
        }
    }

    /// [`Resolver::addresses`], A and AAAA asked at once.
    async fn lookup_addresses(&self, host: &str) -> std::result::Result<Vec<IpAddr>, RouteError> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![ip]);
        }
        let fqdn = format!("{}.", host.trim_end_matches('.'));
        let (v4, v6) = both(
            self.inner.ipv4_lookup(fqdn.as_str()),
            self.inner.ipv6_lookup(fqdn.as_str()),
        )
        .await;
        let mut addresses = Vec::new();
        let mut failure = None;
        for (result, kind) in [(v4, "A"), (v6, "AAAA")] {
            match result {
                Ok(lookup) => {
                    addresses.extend(lookup.answers().iter().filter_map(|r| match &r.data {
                        RData::A(a) => Some(IpAddr::V4(a.0)),
                        RData::AAAA(aaaa) => Some(IpAddr::V6(aaaa.0)),
                        _ => None,
                    }))
                }
                Err(e) if e.is_no_records_found() => {}
                Err(e) => failure = Some(temporary(host, kind, &e)),
            }
        }
        match failure {
            Some(e) if addresses.is_empty() => Err(e),
            _ if addresses.is_empty() => Err(RouteError::Permanent {
                status: "5.4.4",
                message: format!("{host}: no A or AAAA record"),
            }),
            _ => Ok(addresses),
        }
    }
}

/// A resolver builder asking `server` (UDP and TCP on its port) or, when
/// None, the servers of /etc/resolv.conf, each query within `timeout`
/// and tried twice; names always fully qualified. Shared with the
/// validating resolver of `dane`.
pub(super) fn builder(
    server: Option<SocketAddr>,
    timeout: Duration,
) -> Result<ResolverBuilder<TokioRuntimeProvider>> {
    let provider = TokioRuntimeProvider::default();
    let mut builder = match server {
        Some(addr) => {
            let mut ns = NameServerConfig::udp_and_tcp(addr.ip());
            for connection in &mut ns.connections {
                connection.port = addr.port();
            }
            TokioResolver::builder_with_config(
                ResolverConfig::from_name_servers(vec![ns]),
                provider,
            )
        }
        None => TokioResolver::builder(provider)
            .map_err(|e| Error::new(Kind::TempFail, format!("reading /etc/resolv.conf: {e}")))?,
    };
    let opts: &mut ResolverOpts = builder.options_mut();
    opts.timeout = timeout;
    opts.attempts = 2;
    opts.ndots = 0;
    Ok(builder)
}

/// What one domain's resolution found so far.
#[derive(Default)]
struct Found {
    hosts: Vec<MxHost>,
    /// The last name whose lookup failed for now.
    temporary: Option<RouteError>,
}

impl Found {
    fn addresses(&self) -> usize {
        self.hosts.iter().map(|h| h.addresses.len()).sum()
    }

    /// The hosts, or why there is none: a temporary failure if any name
    /// failed for now, else no host has an address.
    fn finish(self, domain: &str) -> std::result::Result<Vec<MxHost>, RouteError> {
        if !self.hosts.is_empty() {
            return Ok(self.hosts);
        }
        Err(self.temporary.unwrap_or_else(|| RouteError::Permanent {
            status: "5.4.4",
            message: format!("{domain}: no mail host has an address"),
        }))
    }
}

/// The MX names of `domain` to look up, in order, from its `exchanges`
/// (preference, name): the domain itself when it has none (RFC 5321
/// §5.1), roots dropped, ascending preference with equal ones shuffled,
/// at most `cap` of them.
fn plan(domain: &str, mut exchanges: Vec<(u16, String)>, cap: usize) -> Vec<(u16, String)> {
    if exchanges.is_empty() {
        exchanges.push((0, name_of(domain)));
    }
    exchanges.retain(|(_, name)| !name.is_empty());
    exchanges.shuffle(&mut rand::rng());
    exchanges.sort_by_key(|(preference, _)| *preference);
    exchanges.truncate(cap);
    exchanges
}

/// Runs two futures at once and waits for both (tokio's `join!` needs
/// its macros feature).
pub(super) async fn both<A: Future, B: Future>(a: A, b: B) -> (A::Output, B::Output) {
    let (mut a, mut b) = (pin!(a), pin!(b));
    let (mut ra, mut rb) = (None, None);
    std::future::poll_fn(|cx| {
        if ra.is_none()
            && let Poll::Ready(v) = a.as_mut().poll(cx)
        {
            ra = Some(v);
        }
        if rb.is_none()
            && let Poll::Ready(v) = b.as_mut().poll(cx)
        {
            rb = Some(v);
        }
        match ra.is_some() && rb.is_some() {
            true => Poll::Ready(()),
            false => Poll::Pending,
        }
    })
    .await;
    (
        ra.expect("polled to the end"),
        rb.expect("polled to the end"),
    )
}

fn temporary(name: &str, kind: &str, e: &NetError) -> RouteError {
    RouteError::Temporary {
        message: format!("{name}: {kind} lookup failed: {e}"),
    }
}

/// A DNS name as spoolmail writes host names: lowercase, no trailing
/// dot; the root (a null MX's exchange ".") becomes "".
fn name_of(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// `[192.0.2.1]` or `[IPv6:2001:db8::1]` (RFC 5321 §4.1.3).
fn address_literal(domain: &str) -> Option<IpAddr> {
    let inner = domain.strip_prefix('[')?.strip_suffix(']')?;
    match inner.get(..5) {
        Some(tag) if tag.eq_ignore_ascii_case("IPv6:") => inner[5..].parse().ok(),
        _ => inner.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_literals_need_no_dns() {
        assert_eq!(
            address_literal("[192.0.2.1]"),
            Some("192.0.2.1".parse().unwrap())
        );
        assert_eq!(
            address_literal("[IPv6:2001:db8::1]"),
            Some("2001:db8::1".parse().unwrap())
        );
        assert_eq!(address_literal("[2001:db8::1]"), None, "IPv6 needs its tag");
        assert_eq!(address_literal("example.com"), None);
        assert_eq!(address_literal("[300.1.1.1]"), None);
    }

    #[test]
    fn names_are_lowercased_and_the_root_is_empty() {
        assert_eq!(name_of("MX1.Example.COM."), "mx1.example.com");
        assert_eq!(name_of("."), "");
    }

    #[test]
    fn a_literal_routes_without_a_server() {
        // Port 9 (discard) answers nothing: a query would time out.
        let r = Resolver::new(
            Some("127.0.0.1:9".parse().unwrap()),
            Duration::from_millis(100),
        )
        .unwrap();
        let hosts = r.mx_hosts("[127.0.0.1]").unwrap();
        assert_eq!(hosts[0].addresses, vec![IpAddr::from([127, 0, 0, 1])]);
    }

    #[test]
    fn a_dead_server_is_a_temporary_failure() {
        let r = Resolver::new(
            Some("127.0.0.1:9".parse().unwrap()),
            Duration::from_millis(200),
        )
        .unwrap();
        match r.mx_hosts("example.test") {
            Err(RouteError::Temporary { .. }) => {}
            other => panic!("expected a temporary failure, got {other:?}"),
        }
    }

    #[test]
    fn at_most_the_cap_of_names_is_looked_at_most_preferred_first() {
        let exchanges: Vec<(u16, String)> = (0..20)
            .map(|n| (20 - n as u16, format!("m{n:02}.example")))
            .collect();
        let planned = plan("example", exchanges, MAX_MX_NAMES);
        assert_eq!(planned.len(), MAX_MX_NAMES);
        let preferences: Vec<u16> = planned.iter().map(|(p, _)| *p).collect();
        assert_eq!(preferences, (1..=10).collect::<Vec<u16>>());
    }

    #[test]
    fn a_domain_without_mx_is_its_own_host_and_roots_are_dropped() {
        assert_eq!(
            plan("Example.ORG", Vec::new(), 3),
            [(0, "example.org".into())]
        );
        let planned = plan("x", vec![(10, "".into()), (5, "a.x".into())], 3);
        assert_eq!(planned, [(5, "a.x".into())]);
    }

    #[test]
    fn a_resolution_past_its_deadline_is_a_temporary_failure() {
        // Nothing answers on port 9: every query would wait its timeout
        // (an hour) and its retry; the deadline ends the resolution.
        let r = Resolver::new(
            Some("127.0.0.1:9".parse().unwrap()),
            Duration::from_secs(3600),
        )
        .unwrap();
        let limits = Limits {
            deadline: Duration::from_millis(200),
            ..Limits::default()
        };
        match r.mx_hosts_within("example.test", &limits) {
            Err(RouteError::Temporary { message }) => {
                assert!(message.contains("within 200ms"), "{message}")
            }
            other => panic!("expected a temporary failure, got {other:?}"),
        }
    }

    #[test]
    fn both_waits_for_both() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (a, b) = rt.block_on(both(
            async {
                tokio::time::sleep(Duration::from_millis(20)).await;
                1
            },
            async { 2 },
        ));
        assert_eq!((a, b), (1, 2));
    }
}
