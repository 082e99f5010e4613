//! Destinations and what the runner remembers about them (D6).
//!
//! A destination is where one SMTP transaction goes: the smarthost, or a
//! recipient domain (whose MX hosts are then tried in order). A
//! destination that could not be reached is remembered in
//! `hosts/dest-KEY.status` with the time before which nobody connects
//! again; the other messages for it are deferred without a connection
//! until then, and a successful connection clears the record.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::spool::durable;

/// Longest destination key kept in a file name (names are ≤ 255 bytes).
const MAX_KEY: usize = 200;

/// Where a recipient's mail goes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Destination {
    /// The configured smarthost: every non-local recipient.
    Smarthost,
    /// A recipient domain, lowercased; delivered to its MX hosts.
    Domain(String),
}

impl Destination {
    /// A file-name-safe key: the domain with anything but `[a-z0-9.-]`
    /// replaced, so that a hostile domain cannot name a path.
    pub fn key(&self) -> String {
        match self {
            Destination::Smarthost => "smarthost".to_string(),
            Destination::Domain(domain) => domain
                .chars()
                .take(MAX_KEY)
                .map(|c| match c {
                    'a'..='z' | '0'..='9' | '-' => c,
                    '.' => '.',
                    _ => '_',
                })
                .collect(),
        }
    }

    /// The lock-file prefix of this destination's connection slots.
    pub fn slot_prefix(&self) -> String {
        format!("dest-{}", self.key())
    }
}

/// Where mail for `address` goes; None when it is delivered locally.
pub fn destination_of(config: &crate::config::Config, address: &str) -> Option<Destination> {
    if crate::local::is_local(config, address) {
        return None;
    }
    if config.smarthost.is_some() {
        return Some(Destination::Smarthost);
    }
    let domain = address.rsplit_once('@').map_or("", |(_, d)| d);
    Some(Destination::Domain(domain.to_ascii_lowercase()))
}

impl std::fmt::Display for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Destination::Smarthost => f.write_str("smarthost"),
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

fn status_name(dest: &Destination) -> String {
    format!("dest-{}.status", dest.key())
}

/// The remembered status, if the destination is unreachable now or was
/// last time. A missing or unreadable file means "reachable as far as we
/// know": the worst that costs is one connection attempt.
pub fn read_status(dir: &Path, dest: &Destination) -> Option<HostStatus> {
    let bytes = std::fs::read(dir.join(status_name(dest))).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The remembered status of `dest` if it is not to be tried before a
/// time after `now` (the unreachable cache, D6).
pub fn unreachable(dir: &Path, dest: &Destination, now: u64) -> Option<HostStatus> {
    read_status(dir, dest).filter(|s| s.unreachable_until > now)
}

/// Records that `dest` could not be reached: no attempt before `until`.
pub fn mark_unreachable(dir: &Path, dest: &Destination, status: &HostStatus) {
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
pub fn mark_reachable(dir: &Path, dest: &Destination) {
    let _ = std::fs::remove_file(dir.join(status_name(dest)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_cannot_name_paths() {
        let d = Destination::Domain("../../etc/passwd".into());
        assert!(!d.key().contains('/'));
        let long = Destination::Domain("a".repeat(300));
        assert!(long.slot_prefix().len() < 255 - 16);
    }

    #[test]
    fn status_round_trips_and_clears() {
        let dir = tempfile::tempdir().unwrap();
        let d = Destination::Domain("down.example".into());
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
