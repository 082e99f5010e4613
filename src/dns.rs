//! MX routing (RFC 5321 §5.1, RFC 1123 §5.3.4, RFC 7505) with
//! hickory-resolver.
//!
//! hickory is asynchronous; the runner is not. Each [`Resolver`] owns a
//! current-thread tokio runtime and blocks on it, which keeps the rest of
//! spoolmail free of async and costs one small runtime per worker.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::NetError;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
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
            None => TokioResolver::builder(provider).map_err(|e| {
                Error::new(Kind::TempFail, format!("reading /etc/resolv.conf: {e}"))
            })?,
        };
        let opts: &mut ResolverOpts = builder.options_mut();
        opts.timeout = timeout;
        opts.attempts = 2;
        opts.ndots = 0;
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
    /// addresses. An address literal needs no DNS.
    pub fn mx_hosts(&self, domain: &str) -> std::result::Result<Vec<MxHost>, RouteError> {
        if let Some(ip) = address_literal(domain) {
            return Ok(vec![MxHost {
                name: domain.to_string(),
                preference: 0,
                addresses: vec![ip],
            }]);
        }
        let fqdn = format!("{}.", domain.trim_end_matches('.'));
        let mut exchanges: Vec<(u16, String)> =
            match self.runtime.block_on(self.inner.mx_lookup(fqdn.as_str())) {
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
        if exchanges.is_empty() {
            // RFC 5321 §5.1: no MX means the domain is its own mail host.
            exchanges.push((0, name_of(domain)));
        } else if exchanges.len() == 1 && exchanges[0].1.is_empty() {
            return Err(RouteError::Permanent {
                status: "5.1.10",
                message: format!("{domain}: null MX: the domain accepts no mail (RFC 7505)"),
            });
        }
        exchanges.retain(|(_, name)| !name.is_empty());
        let mut rng = rand::rng();
        exchanges.shuffle(&mut rng);
        exchanges.sort_by_key(|(preference, _)| *preference);

        let mut hosts = Vec::new();
        let mut temporary_failure = None;
        for (preference, name) in exchanges {
            match self.addresses(&name) {
                Ok(addresses) if !addresses.is_empty() => hosts.push(MxHost {
                    name,
                    preference,
                    addresses,
                }),
                Ok(_) | Err(RouteError::Permanent { .. }) => {
                    log::warn!("{domain}: MX host {name} has no address")
                }
                Err(e @ RouteError::Temporary { .. }) => temporary_failure = Some(e),
            }
        }
        if !hosts.is_empty() {
            return Ok(hosts);
        }
        Err(temporary_failure.unwrap_or_else(|| RouteError::Permanent {
            status: "5.4.4",
            message: format!("{domain}: no mail host has an address"),
        }))
    }

    /// The A and AAAA addresses of `host` (IPv4 first). NXDOMAIN or no
    /// address at all is Permanent; anything else that fails, Temporary.
    pub fn addresses(&self, host: &str) -> std::result::Result<Vec<IpAddr>, RouteError> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![ip]);
        }
        let fqdn = format!("{}.", host.trim_end_matches('.'));
        let v4 = self.runtime.block_on(self.inner.ipv4_lookup(fqdn.as_str()));
        let v6 = self.runtime.block_on(self.inner.ipv6_lookup(fqdn.as_str()));
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
}
