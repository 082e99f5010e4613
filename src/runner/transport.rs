//! Getting an SMTP session to a destination: its hops (a relay list in
//! its policy's order, or a domain's MX hosts), the per-hop slot (D7),
//! the unreachable cache per hop (D6) — an unreachable relay is skipped
//! and the next one tried in the same attempt — and one cached
//! connection per worker so that consecutive messages to the same hop
//! reuse it (RSET between them) instead of reconnecting.
//!
//! A hop's name is resolved before any slot is taken: a domain's zone is
//! its owner's, and a hostile one that never answers (bounded by
//! [`dns::Limits`]) must not hold a connection slot anyone else needs
//! meanwhile. Only the message's claim is held while resolving — and
//! while the domain's MTA-STS policy is fetched, which its owner's
//! server may stall as long as [`super::sts_policy::FETCH_TIMEOUT`], and
//! while DANE's DNSSEC-validated lookups run (all of one destination's
//! within [`super::dane::DEADLINE`]).
//!
//! Each address gets the TLS its hop's policy calls for
//! ([`super::tls_policy`]): a relay's own mode, or for MX delivery the
//! `tls` key's, with DANE and MTA-STS where the destination publishes
//! them; the connection carries the `tls=` that applied.

use std::collections::HashMap;
use std::fs;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::config::relay::Relay;
use crate::runner::dns::{self, RouteError};
use crate::smtp::{ClientSettings, Credentials, ErrorKind, Security, Session, Timeouts};
use crate::spool::TlsApplied;

use super::SLOT_WAIT;
use super::backoff::{JITTER, hop_retry};
use super::dane;
use super::hosts::{self, Answer, Destination, Hop, HostStatus};
use super::outcome::Outcome;
use super::slots::{self, Share, Slot};
use super::sts_policy;
use super::tls_policy::{self, DaneDecision, Protection};

/// At most this many addresses are tried per hop and attempt (Postfix
/// tries 10 too): a domain with fifty dead MX addresses must not hold a
/// runner for fifty connect timeouts.
const MAX_ADDRESSES: usize = dns::MAX_ADDRESSES;

/// Prefix of the global connection slots: at most `max_connections` SMTP
/// connections at once, machine-wide. Taken only for a connection (a
/// local delivery holds none).
const CONNECTION_SLOTS: &str = "smtp";

/// An open session to one hop of a destination, holding a global
/// connection slot and that hop's slot.
pub struct Connection {
    /// The destination it serves.
    pub dest: Destination,
    /// The hop it goes to.
    pub hop: Hop,
    /// The SMTP session.
    pub session: Session,
    /// `host[ip]:port`, for logs and the state.
    pub relay: String,
    /// Which TLS policy applied to it (`tls=`).
    pub tls: TlsApplied,
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
    /// The DNSSEC-validating resolver, made on first use when `tls` asks
    /// for DANE.
    validator: Option<dane::Validator>,
    cached: Option<Connection>,
    /// How much of the shared pools this worker's run may take.
    share: Share,
    /// Set when the last [`Transport::connection`] was refused from the
    /// unreachable cache (no attempt made): until when.
    refused_until: Option<u64>,
    /// The relay (`host[ip]:port`) the last failed
    /// [`Transport::connection`] last tried, if it tried one.
    failed_at: Option<String>,
    /// The TLS policy that applied where the last failed
    /// [`Transport::connection`] stopped, if one was decided.
    failed_tls: Option<TlsApplied>,
    /// Hops that answered 421 during this message's attempt: not tried
    /// again for it, even by a forced attempt (which ignores the cache).
    closed: Vec<Hop>,
    /// Hops this worker found (or made) unreachable, with their record:
    /// not read again before their retry time. A failover list costs its
    /// down relay one read per worker, not one per message. (Another
    /// runner may clear the record sooner; this worker then comes back
    /// to the relay at the time the record said, as it would have.)
    known_down: HashMap<Hop, HostStatus>,
}

/// Where [`Transport::consider`] puts what it finds.
struct Pick<'a> {
    honour_unreachable: bool,
    now: u64,
    skipped: Option<Skipped>,
    candidates: Vec<Candidate<'a>>,
}

/// The earliest retry among the hops skipped for the unreachable cache:
/// (until, the hop, its last error).
type Skipped = (u64, String, String);

use super::relays::Candidate;

impl<'a> Transport<'a> {
    /// A transport with nothing open yet, taking `share` of the
    /// connection pools.
    pub fn new(config: &'a Config, hosts_dir: PathBuf, share: Share) -> Transport<'a> {
        Transport {
            config,
            hosts_dir,
            resolver: None,
            validator: None,
            cached: None,
            share,
            refused_until: None,
            failed_at: None,
            failed_tls: None,
            closed: Vec::new(),
            known_down: HashMap::new(),
        }
    }

    /// Starts a message's attempt: every hop may be tried again.
    pub fn begin_message(&mut self) {
        self.closed.clear();
    }

    /// Whether `dest` has more than one hop: a relay list to fail over
    /// along.
    pub fn can_fail_over(&self, dest: &Destination) -> bool {
        super::relays::hops(self.config, dest, "").len() > 1
    }

    /// The open connection's relay answered 421 ("closing channel",
    /// RFC 5321 §3.8) in a transaction: the connection is dropped and
    /// the relay not tried again for this message, so that the next
    /// [`Transport::connection`] goes to the next relay of the list. It
    /// is not recorded as unreachable: a 421 once MAIL is under way may
    /// be about this message alone (a relay that finds it suspicious),
    /// and one sender's message must not hold the relay back for
    /// everyone's (issue 20). Only a failure before MAIL — connect,
    /// greeting, TLS, AUTH — says the relay is down.
    pub fn fail_over(&mut self, reason: &str) {
        if let Some(conn) = self.cached.take() {
            log::warn!("{}: {}: {reason}", conn.hop, conn.relay);
            self.closed.push(conn.hop);
        }
    }

    /// Until when every hop of `dest` is in the unreachable cache (None:
    /// one may be tried now, or this worker holds a live connection to
    /// one; always None unless `honour_unreachable`).
    pub fn waits_for(
        &mut self,
        dest: &Destination,
        id: &str,
        now: u64,
        honour_unreachable: bool,
    ) -> Option<u64> {
        if !honour_unreachable || self.cached.as_ref().is_some_and(|c| c.dest == *dest) {
            return None;
        }
        let mut until: Option<u64> = None;
        for (hop, _) in super::relays::hops(self.config, dest, id) {
            let s = self.unreachable(&hop, now)?;
            until = Some(until.map_or(s.unreachable_until, |u| u.min(s.unreachable_until)));
        }
        until
    }

    /// A session ready for a transaction to `dest` for the message `id`.
    /// Reuses the cached one when it goes to the hop this message would
    /// try first and still answers; otherwise closes it and connects to
    /// the hops in order, skipping those in the unreachable cache (when
    /// `honour_unreachable`) and going on to the next after a failure to
    /// connect, greet, TLS or AUTH (recorded in the cache). The Err is
    /// the outcome for every recipient of the transaction;
    /// [`Transport::failed_at`] names the relay it concerns if any.
    pub fn connection(
        &mut self,
        dest: &Destination,
        id: &str,
        now: u64,
        honour_unreachable: bool,
    ) -> Result<&mut Connection, Outcome> {
        self.refused_until = None;
        self.failed_at = None;
        self.failed_tls = None;
        let hops = super::relays::hops(self.config, dest, id);
        if hops.is_empty() {
            return Err(Outcome::deferred(
                "4.3.5",
                format!("{dest}: no relay configured"),
            ));
        }
        // The hops not in the unreachable cache, in order; and the
        // earliest time one of the others may be tried again. The first
        // is enough to decide whether the open connection serves: the
        // rest are looked at only when connecting.
        let mut hops = hops.into_iter();
        let mut pick = Pick {
            honour_unreachable,
            now,
            skipped: None,
            candidates: Vec::new(),
        };
        self.consider(&mut hops, &mut pick, false);
        if let Some(mut conn) = self.cached.take() {
            // Straight after a clean transaction the session is ready for
            // MAIL. Otherwise RSET both resets what a failed command left
            // and proves an idle link is still alive before a message is
            // committed to it.
            let fresh = conn.session.is_clean() && conn.last_used.elapsed() < IDLE_CHECK;
            let first = pick.candidates.first().map(|(hop, _)| hop);
            if conn.dest == *dest
                && first == Some(&conn.hop)
                && (fresh || conn.session.reset().is_ok())
            {
                return Ok(self.cached.insert(conn));
            }
            conn.session.quit();
        }
        self.consider(&mut hops, &mut pick, true);
        let Pick {
            mut skipped,
            candidates,
            ..
        } = pick;
        if candidates.is_empty() {
            return Err(self.refuse(skipped));
        }
        // Taken after the first hop's name resolved, kept for the next
        // hop if this one fails.
        let mut connection_slot: Option<Slot> = None;
        let mut last: Option<Outcome> = None;
        for (hop, relay) in candidates {
            // First the names, holding no slot (see the module comment).
            let (targets, settings) = match self.targets(&hop, relay, now) {
                Ok(found) => found,
                // A permanent answer (a domain with a null MX) is the
                // recipients' outcome; there is no other hop to try.
                Err(outcome @ Outcome::Failed { .. }) => return Err(outcome),
                Err(outcome) => {
                    last = Some(outcome);
                    continue;
                }
            };
            if connection_slot.is_none() {
                connection_slot = Some(self.slot(
                    CONNECTION_SLOTS,
                    self.config.max_connections,
                    "SMTP connection",
                )?);
            }
            let configured = match relay {
                Some(relay) => relay.max_connections,
                None => self.config.max_host_connections,
            };
            // Fewer while the hop answers 421 to connections (its record's
            // limit, hosts::concurrency_after): slots above it stay free.
            let max = hosts::read_status(&self.hosts_dir, &hop)
                .and_then(|s| s.limit)
                .map_or(configured, |limit| limit.clamp(1, configured.max(1)));
            let slot = match self.slot(&hop.slot_prefix(), max, &format!("connection to {hop}")) {
                Ok(slot) => slot,
                Err(outcome) => {
                    last = Some(outcome);
                    continue;
                }
            };
            // One runner at a time establishes a connection to a hop, and
            // re-reads the cache once it may: when the hop is down, the
            // first to try records it and the others go on (or defer)
            // without a connection (D6), instead of all timing out
            // together. Only an economy: after a connect timeout's wait
            // (the holder may be stopped) we connect without it.
            let connect_lock = match slots::acquire_within(
                &self.hosts_dir,
                &hop.connect_prefix(),
                1,
                Share::Whole,
                self.config.connect_timeout,
            ) {
                Ok(lock) => lock,
                Err(e) => {
                    last = Some(Outcome::deferred("4.3.0", e.to_string()));
                    continue;
                }
            };
            // Read afresh: the point of the lock is to see what the
            // runner before us found.
            if honour_unreachable && let Some(s) = hosts::unreachable(&self.hosts_dir, &hop, now) {
                skip(&mut skipped, &hop, &s);
                continue;
            }
            match self.connect(&hop, &targets, &settings, now, configured) {
                Ok((session, relay_name, tls)) => {
                    drop(connect_lock);
                    let connection_slot = connection_slot.take().expect("taken above");
                    return Ok(self.cached.insert(Connection {
                        dest: dest.clone(),
                        hop,
                        session,
                        relay: relay_name,
                        tls,
                        last_used: Instant::now(),
                        _slot: slot,
                        _connection_slot: connection_slot,
                    }));
                }
                Err(outcome) => last = Some(outcome),
            }
        }
        // Every hop failed now or was found in the cache meanwhile (by a
        // runner that held its connect lock): nothing tried, a wait.
        Err(match last {
            Some(outcome) => outcome,
            None => self.refuse(skipped),
        })
    }

    /// Moves hops from `hops` to `pick`'s candidates (those not closed
    /// for this message nor, when honoured, in the unreachable cache),
    /// noting the skipped; stops after the first candidate unless `all`.
    fn consider(
        &mut self,
        hops: &mut impl Iterator<Item = Candidate<'a>>,
        pick: &mut Pick<'a>,
        all: bool,
    ) {
        for (hop, relay) in hops {
            if self.closed.contains(&hop) {
                continue;
            }
            // A live connection to it is news fresher than any record.
            let open = self.cached.as_ref().is_some_and(|c| c.hop == hop);
            match (pick.honour_unreachable && !open)
                .then(|| self.unreachable(&hop, pick.now))
                .flatten()
            {
                Some(s) => skip(&mut pick.skipped, &hop, &s),
                None => {
                    pick.candidates.push((hop, relay));
                    if !all {
                        return;
                    }
                }
            }
        }
    }

    /// The deferral when every hop is in the unreachable cache (no
    /// attempt made); sets [`Transport::refused_until`].
    fn refuse(&mut self, skipped: Option<Skipped>) -> Outcome {
        let (until, hop, error) = skipped.unwrap_or_default();
        self.refused_until = Some(until);
        Outcome::deferred(
            "4.4.1",
            format!(
                "{hop} unreachable, not retried before {}: {error}",
                crate::clock::local_time(until)
            ),
        )
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

    /// The relay the last failed [`Transport::connection`] tried last
    /// (None: it tried none).
    pub fn failed_at(&self) -> Option<&str> {
        self.failed_at.as_deref()
    }

    /// The TLS policy that applied where the last failed
    /// [`Transport::connection`] stopped (None: none was decided).
    pub fn failed_tls(&self) -> Option<TlsApplied> {
        self.failed_tls
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

    /// The addresses to try for `hop` and the session settings: resolved
    /// with no slot held. A relay whose name does not resolve is
    /// recorded as unreachable.
    fn targets(
        &mut self,
        hop: &Hop,
        relay: Option<&Relay>,
        now: u64,
    ) -> Result<(Vec<Target>, ClientSettings), Outcome> {
        // Our own trouble first (the relay's password file cannot be
        // read: a runner without the spool group, a root-only 0600
        // file): the message waits, and the relay is not recorded down
        // for everybody else's mail because of it.
        let settings = match relay {
            Some(relay) => self.relay_settings(relay)?,
            None => {
                self.ensure_resolver()?;
                self.mx_settings()
            }
        };
        let found = match (relay, hop) {
            (Some(relay), _) => Self::relay_targets(relay),
            (None, Hop::Domain(domain)) => match self.mx_targets(domain, now) {
                Ok(targets) => Ok(targets),
                Err(MxRefusal::Dns(outcome)) => Err(outcome),
                // Not the hop's reachability: no record, no connection.
                Err(MxRefusal::Policy(outcome)) => {
                    self.failed_tls = Some(TlsApplied::MtaSts);
                    return Err(outcome);
                }
                Err(MxRefusal::Dane(outcome)) => {
                    self.failed_tls = Some(TlsApplied::Dane);
                    return Err(outcome);
                }
            },
            (None, _) => Err(Outcome::deferred(
                "4.3.5",
                format!("{hop}: no relay settings"),
            )),
        };
        match found {
            // A hop whose names do not resolve now (a relay's name, or a
            // domain whose DNS times out or fails within the resolution
            // deadline) is as good as down: recorded (D6), so that the
            // next messages go to the next relay, or wait, without
            // another resolution each — a zone that never answers costs
            // one worker one deadline per retry period, not one per
            // message.
            Err(Outcome::Deferred { dsn, reason }) if !matches!(hop, Hop::Smarthost) => {
                self.unreachable_from(hop, now, reason.clone());
                // The name service's status (4.4.3), not a connection's.
                Err(Outcome::Deferred { dsn, reason })
            }
            Err(outcome) => Err(outcome),
            Ok(targets) => Ok((targets, settings)),
        }
    }

    /// Connects to the first of `targets` (at most [`MAX_ADDRESSES`])
    /// that greets; all failing makes `hop` unreachable, or, when one
    /// answered 421, busy ([`Transport::busy`]). `configured`: the
    /// hop's `max_connections`.
    fn connect(
        &mut self,
        hop: &Hop,
        targets: &[Target],
        settings: &ClientSettings,
        now: u64,
        configured: u32,
    ) -> Result<(Session, String, TlsApplied), Outcome> {
        let mut last_error = String::from("no address to connect to");
        let mut busy = false;
        for target in targets.iter().take(MAX_ADDRESSES) {
            let (name, addr) = (&target.name, &target.addr);
            self.failed_at = Some(relay_name(name, addr));
            self.failed_tls = Some(target.protection.label);
            match connect_protected(target, settings) {
                Ok((session, tls)) => {
                    self.accepted(hop, configured);
                    return Ok((session, relay_name(name, addr), tls));
                }
                Err(e) => {
                    busy |= e.reply.as_ref().is_some_and(|r| r.code == 421);
                    log::warn!("{hop}: {}: {e}", relay_name(name, addr));
                    last_error = format!("{}: {e}", relay_name(name, addr));
                }
            }
        }
        match busy {
            true => Err(self.busy(hop, now, last_error, configured)),
            false => Err(self.unreachable_from(hop, now, last_error)),
        }
    }

    /// `hop` took a connection: it is reachable, and one more connection
    /// to it is allowed than before if it was limited (D6; a lost update
    /// between two workers costs a connection's worth of width, no mail).
    fn accepted(&mut self, hop: &Hop, configured: u32) {
        self.known_down.remove(hop);
        let old = hosts::read_status(&self.hosts_dir, hop);
        let current = old.as_ref().and_then(|s| s.limit);
        match hosts::concurrency_after(Answer::Accepted, current, configured) {
            Some(limit) => {
                let status = HostStatus {
                    unreachable_until: 0,
                    failures: 0,
                    last_error: old.map(|s| s.last_error).unwrap_or_default(),
                    limit: Some(limit),
                };
                hosts::mark_unreachable(&self.hosts_dir, hop, &status);
            }
            None => {
                if current.is_some() {
                    log::info!("{hop}: takes connections again: back to {configured} at once");
                }
                hosts::mark_reachable(&self.hosts_dir, hop);
            }
        }
    }

    /// `hop` answered 421 to a connection (too many connections): it is
    /// up but has no room now, and piling on would only make that worse
    /// for every host sending to it (issue 27). This machine opens half
    /// as many connections to it at once (logged when the limit is
    /// first set); one that is down to one and is still refused holds it
    /// back like an unreachable hop, for its jittered backoff. The
    /// deferral is what the transaction's recipients get unless another
    /// relay of the list takes them.
    fn busy(&mut self, hop: &Hop, now: u64, last_error: String, configured: u32) -> Outcome {
        let old = hosts::read_status(&self.hosts_dir, hop);
        let current = old.as_ref().and_then(|s| s.limit);
        if hosts::busy_holds_back(current) {
            return self.unreachable_from(hop, now, last_error);
        }
        let limit = hosts::concurrency_after(Answer::Busy, current, configured);
        match current {
            None => log::warn!(
                "{hop}: answers 421 to new connections: at most {} at once from this host until it takes them again",
                limit.unwrap_or(1)
            ),
            Some(was) => log::debug!(
                "{hop}: 421 again: {was} → {} connections",
                limit.unwrap_or(1)
            ),
        }
        let status = HostStatus {
            unreachable_until: old.as_ref().map_or(0, |s| s.unreachable_until),
            failures: old.as_ref().map_or(0, |s| s.failures),
            last_error: last_error.clone(),
            limit,
        };
        hosts::mark_unreachable(&self.hosts_dir, hop, &status);
        Outcome::deferred("4.4.1", last_error)
    }

    /// Records `hop` as unreachable from `now` for its backoff (jittered,
    /// drawn from the machine's random source: hosts that lost the hop
    /// together come back to it apart), and returns the deferral it
    /// means.
    fn unreachable_from(&mut self, hop: &Hop, now: u64, last_error: String) -> Outcome {
        let old = hosts::read_status(&self.hosts_dir, hop);
        let failures = old.as_ref().map_or(0, |s| s.failures) + 1;
        let until = hop_retry(now, failures, rand::random(), self.config, JITTER);
        let status = HostStatus {
            unreachable_until: until,
            failures,
            last_error: last_error.clone(),
            limit: old.and_then(|s| s.limit),
        };
        hosts::mark_unreachable(&self.hosts_dir, hop, &status);
        self.known_down.insert(hop.clone(), status);
        Outcome::deferred("4.4.1", last_error)
    }

    /// The record of `hop` if it is not to be tried before a time after
    /// `now`: from [`Transport::known_down`] while that holds, else
    /// read (D6).
    fn unreachable(&mut self, hop: &Hop, now: u64) -> Option<HostStatus> {
        if let Some(s) = self.known_down.get(hop)
            && s.unreachable_until > now
        {
            return Some(s.clone());
        }
        self.known_down.remove(hop);
        let status = hosts::unreachable(&self.hosts_dir, hop, now)?;
        self.known_down.insert(hop.clone(), status.clone());
        Some(status)
    }

    /// Makes the resolver on first use. Its failure (no usable
    /// resolver configuration) is this machine's, not a destination's.
    fn ensure_resolver(&mut self) -> Result<(), Outcome> {
        if self.resolver.is_none() {
            let resolver = dns::Resolver::new(
                self.config.resolver,
                self.config.command_timeout.min(DNS_TIMEOUT),
            )
            .map_err(|e| Outcome::deferred("4.4.3", e.to_string()))?;
            self.resolver = Some(resolver);
        }
        if self.validator.is_none() && self.config.tls.uses_dane() {
            let validator = dane::Validator::new(
                self.config.resolver,
                self.config.command_timeout.min(DNS_TIMEOUT),
                self.config.dnssec_trust_anchor.as_deref(),
            )
            .map_err(|e| Outcome::deferred("4.4.3", e.to_string()))?;
            self.validator = Some(validator);
        }
        Ok(())
    }

    /// The addresses of `domain`'s MX hosts, each with the protection
    /// the TLS policy gives it: a host's DANE records first (when asked
    /// for), else the domain's published policy, else the default.
    fn mx_targets(&mut self, domain: &str, now: u64) -> Result<Vec<Target>, MxRefusal> {
        let resolver = self.resolver.as_ref().expect("ensure_resolver first");
        let hosts = resolver.mx_hosts(domain).map_err(|e| {
            MxRefusal::Dns(match e {
                RouteError::Permanent { status, message } => Outcome::failed(status, message),
                RouteError::Temporary { message } => Outcome::deferred("4.4.3", message),
            })
        })?;
        let port = self.config.smtp_port;
        let sts = match self.config.tls.uses_mta_sts() {
            true => sts_policy::in_force(self.config, resolver, &self.hosts_dir, domain, now),
            false => None,
        };
        let fallback = tls_policy::mx_default(self.config);
        let validator = self.validator.as_ref();
        let dane_deadline = Instant::now() + dane::DEADLINE;
        let mut targets = Vec::new();
        let mut refused = Vec::new();
        let mut dane_refused = Vec::new();
        for h in hosts {
            // DANE takes precedence over MTA-STS (RFC 8461 §2).
            let mut addresses = h.addresses;
            let protection =
                match tls_policy::dane_for_host(validator, domain, &h.name, port, dane_deadline) {
                    DaneDecision::Protect(protection, validated) => {
                        // RFC 7672 §2.2.1: the DNSSEC-validated addresses,
                        // not the ordinary lookup's (which a forger may
                        // have answered).
                        addresses = validated;
                        protection
                    }
                    DaneDecision::Refuse(why) => {
                        // RFC 7672 §2.2: not this host, and never in plain
                        // text; another MX host may still take the mail.
                        log::warn!("{}: not used: {why}", h.name);
                        dane_refused.push(why);
                        continue;
                    }
                    DaneDecision::NotApplicable => match &sts {
                        Some(known) => match tls_policy::for_mta_sts(known, &h.name) {
                            Some(protection) => protection,
                            None => {
                                // Never connected to (RFC 8461 §4.2).
                                refused.push(h.name);
                                continue;
                            }
                        },
                        None => fallback.clone(),
                    },
                };
            targets.extend(addresses.into_iter().map(|ip| Target {
                name: h.name.clone(),
                addr: SocketAddr::new(ip, port),
                protection: protection.clone(),
            }));
        }
        if targets.is_empty() && !dane_refused.is_empty() {
            return Err(MxRefusal::Dane(Outcome::deferred(
                "4.7.5",
                format!("{domain}: DANE: {}", dane_refused.join("; ")),
            )));
        }
        if let (true, Some(known)) = (targets.is_empty(), &sts) {
            return Err(MxRefusal::Policy(Outcome::deferred(
                "4.7.0",
                format!(
                    "{domain}: no MX host is allowed by the {} in enforce mode: {} not in its mx list ({})",
                    known.describe(),
                    refused.join(", "),
                    listed(&known.policy.mx)
                ),
            )));
        }
        Ok(targets)
    }

    fn relay_targets(relay: &Relay) -> Result<Vec<Target>, Outcome> {
        // The system resolver, not hickory: /etc/hosts names a relay as
        // often as DNS does.
        let addrs = (relay.host.as_str(), relay.port)
            .to_socket_addrs()
            .map_err(|e| Outcome::deferred("4.4.3", format!("relay {}: {e}", relay.host)))?;
        let protection = tls_policy::for_relay(relay.tls);
        Ok(addrs
            .map(|a| Target {
                name: relay.host.clone(),
                addr: a,
                protection: protection.clone(),
            })
            .collect())
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
            // Each target's own protection replaces it (connect_protected).
            security: tls_policy::mx_default(self.config).security,
            credentials: None,
            ca_file: self.config.tls_ca_file.clone(),
            tlsa: Vec::new(),
            dane_names: Vec::new(),
            timeouts: self.timeouts(),
        }
    }

    fn relay_settings(&self, relay: &Relay) -> Result<ClientSettings, Outcome> {
        relay_settings(self.config, relay, self.timeouts())
            .map_err(|why| Outcome::deferred("4.7.0", why))
    }
}

/// The client settings for `relay`: its TLS mode, its credentials (the
/// first line of its password file) and `timeouts`. Err: the password
/// file cannot be read. Shared with `--check-config --network`
/// ([`super::probe`]), so that the check connects as delivery does.
pub(super) fn relay_settings(
    config: &Config,
    relay: &Relay,
    timeouts: Timeouts,
) -> Result<ClientSettings, String> {
    let credentials = match &relay.auth {
        Some(auth) => {
            let path = &auth.password_file;
            let text =
                fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
            Some(Credentials {
                user: auth.user.clone(),
                password: text.lines().next().unwrap_or("").to_string(),
            })
        }
        None => None,
    };
    Ok(ClientSettings {
        helo_name: config.hostname.clone(),
        security: tls_policy::for_relay(relay.tls).security,
        credentials,
        ca_file: config.tls_ca_file.clone(),
        tlsa: Vec::new(),
        dane_names: Vec::new(),
        timeouts,
    })
}

/// A cached connection idle longer than this is checked with RSET before
/// use: servers drop idle clients (Postfix after 300 s, some sooner).
const IDLE_CHECK: Duration = Duration::from_secs(2);

/// DNS queries get at most this long, whatever the SMTP timeouts.
pub(super) const DNS_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a domain's MX hosts give nothing to connect to.
enum MxRefusal {
    /// DNS: no answer (temporary) or no mail host (permanent).
    Dns(Outcome),
    /// Its MTA-STS policy, enforced, allows none of them.
    Policy(Outcome),
    /// DANE refuses every one of them (bogus or failed DNSSEC answers).
    Dane(Outcome),
}

/// A policy's `mx` patterns for a deferral: the first few (a policy may
/// list thousands; the reason is stored per recipient).
fn listed(patterns: &[String]) -> String {
    const SHOWN: usize = 5;
    let mut text = patterns
        .iter()
        .take(SHOWN)
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    if patterns.len() > SHOWN {
        text.push_str(", …");
    }
    text
}

/// One address to try for a hop, with the TLS it gets there.
struct Target {
    /// The host name (TLS verification checks it).
    name: String,
    /// Its address and port.
    addr: SocketAddr,
    /// How the connection uses TLS.
    protection: Protection,
}

/// A session to `target` under its protection, and the `tls=` that
/// applied. A policy in testing mode that the host fails (a certificate
/// not valid for it, no STARTTLS) is reported in one line, naming the
/// policy and what its enforcement would have refused, and the host is
/// used with opportunistic TLS as though there were no policy.
fn connect_protected(
    target: &Target,
    settings: &ClientSettings,
) -> Result<(Session, TlsApplied), crate::smtp::SmtpError> {
    let protection = &target.protection;
    let settings_for = |security| ClientSettings {
        security,
        tlsa: protection.tlsa.clone(),
        dane_names: protection.dane_names.iter().skip(1).cloned().collect(),
        ..settings.clone()
    };
    // Under DANE, the TLSA base domain is the name presented and checked.
    let server_name = protection.dane_names.first().unwrap_or(&target.name);
    match Session::connect(target.addr, server_name, &settings_for(protection.security)) {
        Ok(session) => {
            let tls = protection.applied(session.tls_active());
            Ok((session, tls))
        }
        Err(e) if e.kind == ErrorKind::Tls && protection.report_only => {
            let policy = protection.policy.as_deref().unwrap_or("policy");
            log::warn!(
                "{}: {policy}: enforcing it would refuse this host: {e}; delivering with opportunistic TLS",
                relay_name(&target.name, &target.addr)
            );
            let session = Session::connect(
                target.addr,
                &target.name,
                &settings_for(Security::Opportunistic),
            )?;
            let tls = Protection::opportunistic().applied(session.tls_active());
            Ok((session, tls))
        }
        Err(mut e) if e.kind == ErrorKind::Tls => {
            // The deferral says which policy wanted the TLS that failed.
            if let Some(policy) = &protection.policy {
                e.message = format!("{} (required by the {policy})", e.message);
            }
            Err(e)
        }
        Err(e) => Err(e),
    }
}

fn relay_name(name: &str, addr: &SocketAddr) -> String {
    format!("{name}[{}]:{}", addr.ip(), addr.port())
}

/// Notes `hop` as skipped for being in the unreachable cache per
/// `status`, keeping the earliest retry time among those skipped.
fn skip(skipped: &mut Option<Skipped>, hop: &Hop, status: &HostStatus) {
    let until = status.unreachable_until;
    if skipped.as_ref().is_none_or(|(u, _, _)| until < *u) {
        *skipped = Some((until, hop.to_string(), status.last_error.clone()));
    }
}
