//! `spoolmail --check-config --network`: each relay the configuration
//! names (the smarthost list, then the routes' lists, each relay once)
//! is asked what the runner would ask of it — connect, greeting, EHLO,
//! STARTTLS or implicit TLS with the certificate verified as configured,
//! AUTH with the configured credentials — and then told QUIT. No mail is
//! sent: no MAIL command is ever given. The session is the runner's own
//! (`smtp::Session`) with the runner's settings for that relay, so what
//! the probe finds is what delivery would find.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use crate::config::Config;
use crate::config::relay::{Relay, RelayList};
use crate::config::route::Action;
use crate::smtp::{ClientSettings, ErrorKind, Security, Session, Timeouts};

/// A probe waits at most this long for any one step, whatever the
/// configured timeouts (which allow a slow server minutes).
const STEP_LIMIT: Duration = Duration::from_secs(30);

/// At most this many addresses of one relay are tried.
const MAX_ADDRESSES: usize = 3;

/// What the probe of one relay found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// The relay, `host:port`.
    pub relay: String,
    /// Whether the relay would take mail from this host as configured.
    pub ok: bool,
    /// What was found, in a few words.
    pub found: String,
}

impl std::fmt::Display for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "relay {}: {}", self.relay, self.found)
    }
}

/// Probes every relay of `config`, one after the other.
pub fn probe_relays(config: &Config) -> Vec<Probe> {
    let mut lists: Vec<&RelayList> = config.smarthost.iter().collect();
    lists.extend(config.routes.iter().filter_map(|r| match &r.action {
        Action::Relay(list) => Some(list),
        _ => None,
    }));
    let mut seen: Vec<(&str, u16)> = Vec::new();
    let mut probes = Vec::new();
    for relay in lists.into_iter().flat_map(|l| &l.relays) {
        if seen.contains(&(relay.host.as_str(), relay.port)) {
            continue;
        }
        seen.push((relay.host.as_str(), relay.port));
        probes.push(probe(config, relay));
    }
    probes
}

/// Probes one relay.
fn probe(config: &Config, relay: &Relay) -> Probe {
    let failed = |found: String| Probe {
        relay: relay.to_string(),
        ok: false,
        found,
    };
    let settings = match settings(config, relay) {
        Ok(settings) => settings,
        Err(why) => return failed(why),
    };
    let addrs: Vec<SocketAddr> = match (relay.host.as_str(), relay.port).to_socket_addrs() {
        Ok(addrs) => addrs.take(MAX_ADDRESSES).collect(),
        Err(e) => return failed(format!("does not resolve: {e}")),
    };
    // The most telling failure: one past the TCP connection (TLS, AUTH)
    // over a refused connection to another of the relay's addresses.
    let mut last: Option<(ErrorKind, String)> = None;
    for addr in addrs {
        match Session::connect(addr, &relay.host, &settings) {
            Ok(session) => {
                let found = found(relay, &settings, &session);
                session.quit();
                return Probe {
                    relay: relay.to_string(),
                    ok: true,
                    found,
                };
            }
            Err(e) => {
                let stage = match e.kind {
                    ErrorKind::Connect => "cannot connect",
                    ErrorKind::Timeout => "timed out",
                    ErrorKind::Tls => "TLS failed",
                    ErrorKind::AuthUnavailable => "AUTH failed",
                    ErrorKind::Rejected if e.message.starts_with("AUTH") => "AUTH failed",
                    ErrorKind::Rejected => "refused",
                    _ => "failed",
                };
                if last
                    .as_ref()
                    .is_none_or(|(kind, _)| *kind == ErrorKind::Connect)
                {
                    last = Some((e.kind, format!("{stage} at {}: {e}", addr.ip())));
                }
            }
        }
    }
    failed(last.map_or_else(|| "no address".to_string(), |(_, line)| line))
}

/// The line for a session that got as far as delivery would start.
fn found(relay: &Relay, settings: &ClientSettings, session: &Session) -> String {
    let mut parts = vec![format!("{}: 220 greeting, EHLO ok", session.peer().ip())];
    parts.push(match settings.security {
        Security::StarttlsVerified => {
            format!("STARTTLS, certificate verified for {}", relay.host)
        }
        Security::Implicit => format!("TLS, certificate verified for {}", relay.host),
        Security::Dane => format!("STARTTLS, certificate matched by TLSA for {}", relay.host),
        Security::Plain | Security::Opportunistic => "no TLS (tls=none)".to_string(),
    });
    parts.push(match &settings.credentials {
        Some(c) => format!("AUTH accepted for {}", c.user),
        None if session.offers("AUTH") => "no AUTH configured (the server offers it)".to_string(),
        None => "no AUTH configured".to_string(),
    });
    parts.join(", ")
}

/// The runner's settings for `relay` (`runner::transport`'s own), with
/// each step's wait capped at [`STEP_LIMIT`]. Err: the password file
/// cannot be read.
fn settings(config: &Config, relay: &Relay) -> Result<ClientSettings, String> {
    let capped = |d: Duration| d.min(STEP_LIMIT);
    let timeouts = Timeouts {
        connect: capped(config.connect_timeout),
        command: capped(config.command_timeout),
        data_block: capped(config.data_timeout),
        final_dot: capped(config.final_dot_timeout),
    };
    super::transport::relay_settings(config, relay, timeouts)
        .map_err(|why| format!("password file unreadable: {why}"))
}
