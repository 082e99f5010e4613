//! Getting an SMTP session to a destination: routing (smarthost or MX),
//! the per-destination slot (D7), the unreachable cache (D6), and one
//! cached connection per worker so that consecutive messages to the same
//! destination reuse it (RSET between them) instead of reconnecting.

use std::fs;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::config::{Config, SmarthostTls, TlsPolicy};
use crate::dns::{self, RouteError};
use crate::smtp::{ClientSettings, Credentials, Security, Session, Timeouts};

use super::SLOT_WAIT;
use super::backoff::retry_delay;
use super::hosts::{self, Destination, HostStatus};
use super::outcome::Outcome;
use super::slots::{self, Share, Slot};

/// At most this many addresses are tried per destination and attempt
/// (Postfix tries 10 too): a domain with fifty dead MX addresses must not
/// hold a runner for fifty connect timeouts.
const MAX_ADDRESSES: usize = 10;

/// Prefix of the global connection slots: at most `max_connections` SMTP
/// connections at once, machine-wide. Taken only for a connection (a
/// local delivery holds none).
const CONNECTION_SLOTS: &str = "smtp";

/// An open session to one destination, holding a global connection slot
/// and that destination's slot.
pub struct Connection {
    /// Where it goes.
    pub dest: Destination,
    /// The SMTP session.
    pub session: Session,
    /// `host[ip]:port`, for logs and the state.
    pub relay: String,
    /// When the last transaction ended.
    pub last_used: Instant,
    _slot: Slot,
    _connection_slot: Slot,
}

/// Builds and caches connections for one worker.
pub struct Transport<'a> {
    config: &'a Config,
    hosts_dir: PathBuf,
    resolver: Option<dns::Resolver>,
    cached: Option<Connection>,
    /// How much of the shared pools this worker's run may take.
    share: Share,
    /// Set when the last [`Transport::connection`] was refused from the
    /// unreachable cache (no attempt made): until when.
    refused_until: Option<u64>,
}

impl<'a> Transport<'a> {
    /// A transport with nothing open yet, taking `share` of the
    /// connection pools.
    pub fn new(config: &'a Config, hosts_dir: PathBuf, share: Share) -> Transport<'a> {
        Transport {
            config,
            hosts_dir,
            resolver: None,
            cached: None,
            share,
            refused_until: None,
        }
    }

    /// Until when `dest` is in the unreachable cache (None: it may be
    /// tried now, or this worker holds a live connection to it; always
    /// None unless `honour_unreachable`).
    pub fn waits_for(&self, dest: &Destination, now: u64, honour_unreachable: bool) -> Option<u64> {
        if !honour_unreachable || self.cached.as_ref().is_some_and(|c| c.dest == *dest) {
            return None;
        }
        hosts::unreachable(&self.hosts_dir, dest, now).map(|s| s.unreachable_until)
    }

    /// A session ready for a transaction to `dest`. Reuses the cached one
    /// when it is for `dest` and still answers; otherwise closes it and
    /// connects (unless `dest` is remembered as unreachable and
    /// `honour_unreachable`). The Err is the outcome for every recipient
    /// of the transaction, plus the relay it concerns if any.
    pub fn connection(
        &mut self,
        dest: &Destination,
        now: u64,
        honour_unreachable: bool,
    ) -> Result<&mut Connection, Outcome> {
        if let Some(mut conn) = self.cached.take() {
            // Straight after a clean transaction the session is ready for
            // MAIL. Otherwise RSET both resets what a failed command left
            // and proves an idle link is still alive before a message is
            // committed to it.
            let fresh = conn.session.is_clean() && conn.last_used.elapsed() < IDLE_CHECK;
            if conn.dest == *dest && (fresh || conn.session.reset().is_ok()) {
                return Ok(self.cached.insert(conn));
            }
            conn.session.quit();
        }
        self.refused_until = None;
        if honour_unreachable {
            self.unreachable_now(dest, now)?;
        }
        let max = match dest {
            Destination::Smarthost => self.config.max_connections,
            Destination::Domain(_) => self.config.max_host_connections,
        };
        let connection_slot = self.slot(
            CONNECTION_SLOTS,
            self.config.max_connections,
            "SMTP connection",
        )?;
        let slot = self.slot(&dest.slot_prefix(), max, &format!("connection to {dest}"))?;
        // One runner at a time establishes a connection to a destination,
        // and re-reads the cache once it may: when the destination is
        // down, the first to try records it and the others defer without
        // a connection (D6), instead of all timing out together. Only an
        // economy: after a connect timeout's wait (the holder may be
        // stopped) we connect without it.
        let connect_lock = slots::acquire_within(
            &self.hosts_dir,
            &format!("{}-connect", dest.slot_prefix()),
            1,
            Share::Whole,
            self.config.connect_timeout,
        )
        .map_err(|e| Outcome::deferred("4.3.0", e.to_string()))?;
        if honour_unreachable {
            self.unreachable_now(dest, now)?;
        }
        let (session, relay) = self.connect(dest, now)?;
        drop(connect_lock);
        Ok(self.cached.insert(Connection {
            dest: dest.clone(),
            session,
            relay,
            last_used: Instant::now(),
            _slot: slot,
            _connection_slot: connection_slot,
        }))
    }

    /// The connection the last successful [`Transport::connection`]
    /// returned.
    pub fn open_connection(&mut self) -> &mut Connection {
        self.cached
            .as_mut()
            .expect("open_connection follows a successful connection()")
    }

    /// Until when the last [`Transport::connection`] was refused from
    /// the unreachable cache (None: it was not, or it made an attempt).
    pub fn refused_until(&self) -> Option<u64> {
        self.refused_until
    }

    /// Err when `dest` is in the unreachable cache (D6).
    fn unreachable_now(&mut self, dest: &Destination, now: u64) -> Result<(), Outcome> {
        match hosts::unreachable(&self.hosts_dir, dest, now) {
            Some(s) => {
                self.refused_until = Some(s.unreachable_until);
                Err(Outcome::deferred(
                    "4.4.1",
                    format!(
                        "{dest} unreachable, not retried before {}: {}",
                        crate::mailq::local_time(s.unreachable_until),
                        s.last_error
                    ),
                ))
            }
            None => Ok(()),
        }
    }

    /// A slot of `prefix` within this worker's share, waited for up to
    /// [`SLOT_WAIT`]; a deferral when none came free.
    fn slot(&self, prefix: &str, count: u32, what: &str) -> Result<Slot, Outcome> {
        match slots::acquire_within(&self.hosts_dir, prefix, count, self.share, SLOT_WAIT) {
            Ok(Some(slot)) => Ok(slot),
            Ok(None) => Err(Outcome::deferred(
                "4.3.0",
                format!("every {what} slot stayed busy for {}s", SLOT_WAIT.as_secs()),
            )),
            Err(e) => Err(Outcome::deferred("4.3.0", e.to_string())),
        }
    }

    /// Drops the cached connection without QUIT (after an I/O error or a
    /// timeout, when the link is in an unknown state).
    pub fn discard(&mut self) {
        self.cached = None;
    }

    /// QUITs the cached connection, if any.
    pub fn close(&mut self) {
        if let Some(conn) = self.cached.take() {
            conn.session.quit();
        }
    }

    fn connect(&mut self, dest: &Destination, now: u64) -> Result<(Session, String), Outcome> {
        let (targets, settings) = match dest {
            Destination::Smarthost => (self.smarthost_targets()?, self.smarthost_settings()?),
            Destination::Domain(domain) => (self.mx_targets(domain)?, self.mx_settings()),
        };
        let mut last_error = String::from("no address to connect to");
        for (name, addr) in targets.iter().take(MAX_ADDRESSES) {
            match Session::connect(*addr, name, &settings) {
                Ok(session) => {
                    hosts::mark_reachable(&self.hosts_dir, dest);
                    return Ok((session, relay_name(name, addr)));
                }
                Err(e) => {
                    log::warn!("{dest}: {}: {e}", relay_name(name, addr));
                    last_error = format!("{}: {e}", relay_name(name, addr));
                }
            }
        }
        let failures = hosts::read_status(&self.hosts_dir, dest).map_or(0, |s| s.failures) + 1;
        let delay = retry_delay(failures, self.config.retry_min, self.config.retry_max);
        hosts::mark_unreachable(
            &self.hosts_dir,
            dest,
            &HostStatus {
                unreachable_until: now.saturating_add(delay.as_secs()),
                failures,
                last_error: last_error.clone(),
            },
        );
        Err(Outcome::deferred("4.4.1", last_error))
    }

    fn mx_targets(&mut self, domain: &str) -> Result<Vec<(String, SocketAddr)>, Outcome> {
        if self.resolver.is_none() {
            let resolver = dns::Resolver::new(
                self.config.resolver,
                self.config.command_timeout.min(DNS_TIMEOUT),
            )
            .map_err(|e| Outcome::deferred("4.4.3", e.to_string()))?;
            self.resolver = Some(resolver);
        }
        let resolver = self.resolver.as_ref().expect("resolver set above");
        let hosts = resolver.mx_hosts(domain).map_err(|e| match e {
            RouteError::Permanent { status, message } => Outcome::failed(status, message),
            RouteError::Temporary { message } => Outcome::deferred("4.4.3", message),
        })?;
        Ok(hosts
            .into_iter()
            .flat_map(|h| {
                let port = self.config.smtp_port;
                h.addresses
                    .into_iter()
                    .map(move |ip| (h.name.clone(), SocketAddr::new(ip, port)))
            })
            .collect())
    }

    fn smarthost_targets(&self) -> Result<Vec<(String, SocketAddr)>, Outcome> {
        let (host, port) = self
            .config
            .smarthost
            .clone()
            .ok_or_else(|| Outcome::deferred("4.3.5", "no smarthost configured"))?;
        // The system resolver, not hickory: /etc/hosts names a smarthost
        // as often as DNS does.
        let addrs = (host.as_str(), port)
            .to_socket_addrs()
            .map_err(|e| Outcome::deferred("4.4.3", format!("smarthost {host}: {e}")))?;
        Ok(addrs.map(|a| (host.clone(), a)).collect())
    }

    fn timeouts(&self) -> Timeouts {
        Timeouts {
            connect: self.config.connect_timeout,
            command: self.config.command_timeout,
            data_block: self.config.data_timeout,
            final_dot: self.config.final_dot_timeout,
        }
    }

    fn mx_settings(&self) -> ClientSettings {
        ClientSettings {
            helo_name: self.config.hostname.clone(),
            security: match self.config.tls {
                TlsPolicy::None => Security::Plain,
                TlsPolicy::Opportunistic => Security::Opportunistic,
                TlsPolicy::Required => Security::StarttlsVerified,
            },
            credentials: None,
            ca_file: self.config.tls_ca_file.clone(),
            timeouts: self.timeouts(),
        }
    }

    fn smarthost_settings(&self) -> Result<ClientSettings, Outcome> {
        let credentials = match (&self.config.auth_user, &self.config.auth_password_file) {
            (Some(user), Some(path)) => {
                let text = fs::read_to_string(path).map_err(|e| {
                    Outcome::deferred("4.7.0", format!("reading {}: {e}", path.display()))
                })?;
                let password = text.lines().next().unwrap_or("").to_string();
                Some(Credentials {
                    user: user.clone(),
                    password,
                })
            }
            _ => None,
        };
        Ok(ClientSettings {
            helo_name: self.config.hostname.clone(),
            security: match self.config.smarthost_tls {
                SmarthostTls::Starttls => Security::StarttlsVerified,
                SmarthostTls::Tls => Security::Implicit,
                SmarthostTls::None => Security::Plain,
            },
            credentials,
            ca_file: self.config.tls_ca_file.clone(),
            timeouts: self.timeouts(),
        })
    }
}

/// A cached connection idle longer than this is checked with RSET before
/// use: servers drop idle clients (Postfix after 300 s, some sooner).
const IDLE_CHECK: Duration = Duration::from_secs(2);

/// DNS queries get at most this long, whatever the SMTP timeouts.
const DNS_TIMEOUT: Duration = Duration::from_secs(10);

fn relay_name(name: &str, addr: &SocketAddr) -> String {
    format!("{name}[{}]:{}", addr.ip(), addr.port())
}
