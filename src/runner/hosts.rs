//! Destinations and what the runner remembers about them (D6).
//!
//! A destination is where one SMTP transaction goes: a relay list (the
//! smarthost's or a route's), or a recipient domain (whose MX hosts are
//! then tried in order); [`route_of`] says which, from the routing
//! table. A hop is what one connection goes to: one relay of a list, or
//! a domain's MX hosts. A hop that could not be reached is remembered in
//! `hosts/dest-KEY.status` with the time before which nobody connects
//! again; the other messages for it are deferred (or sent to the next
//! relay of their list) without a connection until then, and a
//! successful connection clears the record.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::spool::durable;

/// Longest destination key kept in a file name (names are ≤ 255 bytes).
const MAX_KEY: usize = 200;

/// Where a recipient's mail goes: the recipients of a message with the
/// same destination go in one transaction (D3).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Destination {
    /// The `smarthost` relay list: every non-local recipient no route
    /// takes.
    Smarthost,
    /// The relay list of the route at this index of `Config::routes`.
    Route(usize),
    /// A recipient domain, lowercased; delivered to its MX hosts.
    Domain(String),
}

/// What one connection goes to, and what the unreachable cache (D6) and
/// the per-destination slots (D7) are kept for: a lone smarthost, one
/// relay of a list, or a domain's MX hosts.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Hop {
    /// The smarthost when `smarthost` names a single relay: the key it
    /// always had, so that records survive an upgrade and a change of
    /// its address.
    Smarthost,
    /// One relay of a list: (host, port).
    Relay(String, u16),
    /// A recipient domain's MX hosts.
    Domain(String),
}

/// Keeps `[a-z0-9.-]` and replaces anything else, so that a hostile
/// domain cannot name a path.
fn file_safe(name: &str) -> String {
    name.chars()
        .take(MAX_KEY)
        .map(|c| match c {
            'a'..='z' | '0'..='9' | '-' | '.' => c,
            _ => '_',
        })
        .collect()
}

impl Hop {
    /// A file-name-safe key. A relay's has a `+`, which no domain's
    /// has, so that a relay and a domain never share a record.
    pub fn key(&self) -> String {
        match self {
            Hop::Smarthost => "smarthost".to_string(),
            Hop::Relay(host, port) => {
                format!("relay+{}+{port}", file_safe(&host.to_ascii_lowercase()))
            }
            Hop::Domain(domain) => file_safe(domain),
        }
    }

    /// The lock-file prefix of this hop's connection slots.
    pub fn slot_prefix(&self) -> String {
        format!("dest-{}", self.key())
    }
}

impl std::fmt::Display for Hop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Hop::Smarthost => f.write_str("smarthost"),
            Hop::Relay(host, port) if host.contains(':') => write!(f, "relay [{host}]:{port}"),
            Hop::Relay(host, port) => write!(f, "relay {host}:{port}"),
            Hop::Domain(d) => f.write_str(d),
        }
    }
}

/// How one recipient is to be delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Routing {
    /// Locally: aliases, mailboxes, pipes.
    Local,
    /// Over SMTP to this destination.
    Remote(Destination),
    /// Not at all: an `error` route's reply, the recipient's outcome.
    Refused(super::outcome::Outcome),
}

/// How mail from `sender` to `address` is delivered: local domains and
/// bare names locally; else the first matching route of the table; else
/// the smarthost if set, else MX.
pub fn route_of(config: &crate::config::Config, sender: &str, address: &str) -> Routing {
    use crate::route::Action;
    if crate::local::is_local(config, address) {
        return Routing::Local;
    }
    let domain = address.rsplit_once('@').map_or("", |(_, d)| d);
    let by_mx = || Routing::Remote(Destination::Domain(domain.to_ascii_lowercase()));
    match config.routes.iter().position(|r| r.matches(sender, domain)) {
        Some(index) => match &config.routes[index].action {
            Action::Mx => by_mx(),
            Action::Local => Routing::Local,
            Action::Relay(_) => Routing::Remote(Destination::Route(index)),
            Action::Error { code, status, text } => {
                let reply = format!("{code} {status} {text}");
                Routing::Refused(match code {
                    400..=499 => super::outcome::Outcome::deferred(status, reply),
                    _ => super::outcome::Outcome::failed(status, reply),
                })
            }
        },
        None if config.smarthost.is_some() => Routing::Remote(Destination::Smarthost),
        None => by_mx(),
    }
}

impl std::fmt::Display for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Destination::Smarthost => f.write_str("smarthost"),
            Destination::Route(i) => write!(f, "route {}", i + 1),
            Destination::Domain(d) => f.write_str(d),
        }
    }
}

/// What is remembered about an unreachable destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostStatus {
    /// No connection before this time (unix seconds).
    pub unreachable_until: u64,
    /// Consecutive failed attempts, for the backoff.
    pub failures: u32,
    /// Why the last attempt failed.
    pub last_error: String,
}

fn status_name(dest: &Hop) -> String {
    format!("dest-{}.status", dest.key())
}

/// The remembered status, if the destination is unreachable now or was
/// last time. A missing or unreadable file means "reachable as far as we
/// know": the worst that costs is one connection attempt.
pub fn read_status(dir: &Path, dest: &Hop) -> Option<HostStatus> {
    let bytes = std::fs::read(dir.join(status_name(dest))).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The remembered status of `dest` if it is not to be tried before a
/// time after `now` (the unreachable cache, D6).
pub fn unreachable(dir: &Path, dest: &Hop, now: u64) -> Option<HostStatus> {
    read_status(dir, dest).filter(|s| s.unreachable_until > now)
}

/// Records that `dest` could not be reached: no attempt before `until`.
pub fn mark_unreachable(dir: &Path, dest: &Hop, status: &HostStatus) {
    let Ok(bytes) = serde_json::to_vec(status) else {
        return;
    };
    // A lost record costs one extra connection attempt, not a message:
    // no fsync.
    if let Err(e) = durable::replace_file_unsynced(dir, &status_name(dest), &bytes) {
        log::warn!("{dest}: cannot record the unreachable status: {e}");
    }
}

/// Forgets that `dest` was unreachable (a connection succeeded).
pub fn mark_reachable(dir: &Path, dest: &Hop) {
    let _ = std::fs::remove_file(dir.join(status_name(dest)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_cannot_name_paths() {
        let d = Hop::Domain("../../etc/passwd".into());
        assert!(!d.key().contains('/'));
        let r = Hop::Relay("../x".into(), 25);
        assert!(!r.key().contains('/'));
        assert_ne!(
            Hop::Relay("a.example".into(), 25).key(),
            Hop::Domain("a.example".into()).key()
        );
        let long = Hop::Domain("a".repeat(300));
        assert!(long.slot_prefix().len() < 255 - 16);
    }

    #[test]
    fn status_round_trips_and_clears() {
        let dir = tempfile::tempdir().unwrap();
        let d = Hop::Domain("down.example".into());
        assert_eq!(read_status(dir.path(), &d), None);
        let s = HostStatus {
            unreachable_until: 1234,
            failures: 2,
            last_error: "connection refused".into(),
        };
        mark_unreachable(dir.path(), &d, &s);
        assert_eq!(read_status(dir.path(), &d), Some(s));
        mark_reachable(dir.path(), &d);
        assert_eq!(read_status(dir.path(), &d), None);
    }
}
