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
//!
//! Record names (issue 20): [`Hop::key`] is injective — two different
//! hops never share a record, a slot or a connect lock. A domain is
//! named by its IDNA A-label form (`bücher.example` is
//! `mx+xn--bcher-kva.example`, the name DNS is asked for), a relay by
//! host and port (`relay+smtp.example+587`), the lone smarthost
//! `smarthost`; the kind comes first, so that no domain can be named
//! like a relay or the smarthost. Bytes outside `[a-z0-9.-]` are written
//! `_XX` (hex), so no name can reach outside `hosts/`, and a key too
//! long for a file name keeps its start and adds the SHA-256 of the
//! whole. The other writers of `hosts/` use other first words
//! (`smtp.slot-N`, `runner…`, `command-u…`, `rate-u…`,
//! `state-swept.stamp`, the MTA-STS cache's `sts-KEY.policy`). Records under the names older versions wrote
//! (`dest-b_cher.example.status`) are no longer read: each is a lost
//! cache entry, costing at most one connection attempt.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::spool::durable;

/// Longest key used whole in a file name: `dest-KEY.status`,
/// `dest-KEY.slot-N` and `connect-KEY.slot-N` stay under 255 bytes.
const MAX_KEY: usize = 200;

/// How much of a longer key is kept, before its hash.
const KEPT_OF_LONG_KEY: usize = 120;

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

/// `name` with every byte outside `[a-z0-9.-]` written `_` and two
/// lowercase hex digits: a file-name-safe spelling from which the name
/// can be read back, so different names never share one.
fn escape(name: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        match b {
            b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' => out.push(char::from(b)),
            _ => {
                let _ = write!(out, "_{b:02x}");
            }
        }
    }
    out
}

/// `key` if it fits in a file name, else its first
/// [`KEPT_OF_LONG_KEY`] bytes, `~` and the SHA-256 of the whole: `~`
/// is in no whole key, and a hostile name cannot be made to share the
/// hash of another.
fn bounded(key: String) -> String {
    use std::fmt::Write as _;
    if key.len() <= MAX_KEY {
        return key;
    }
    let digest = openssl::sha::sha256(key.as_bytes());
    // Keys are ASCII: any byte index is a character boundary.
    let mut short = key[..KEPT_OF_LONG_KEY].to_string();
    short.push('~');
    for b in digest {
        let _ = write!(short, "{b:02x}");
    }
    short
}

/// The name DNS is asked for when mail goes to `domain` (the resolver
/// maps it the same way, IDNA to A-labels): lowercase ASCII, without a
/// final dot. None if it is no valid domain name.
pub(super) fn a_label(domain: &str) -> Option<String> {
    let name = hickory_resolver::proto::rr::Name::from_utf8(domain).ok()?;
    Some(name.to_ascii().trim_end_matches('.').to_ascii_lowercase())
}

impl Hop {
    /// A file-name-safe key, different for every hop (see the module
    /// comment): `smarthost`, `relay+HOST+PORT`, `mx+DOMAIN` (A-labels),
    /// or `mxraw+NAME` for a name IDNA refuses.
    pub fn key(&self) -> String {
        match self {
            Hop::Smarthost => "smarthost".to_string(),
            Hop::Relay(host, port) => bounded(format!(
                "relay+{}+{port}",
                escape(&host.to_ascii_lowercase())
            )),
            Hop::Domain(domain) => bounded(match a_label(domain) {
                Some(ascii) => format!("mx+{}", escape(&ascii)),
                None => format!("mxraw+{}", escape(domain)),
            }),
        }
    }

    /// The lock-file prefix of this hop's connection slots.
    pub fn slot_prefix(&self) -> String {
        format!("dest-{}", self.key())
    }

    /// The lock-file prefix of the lock held while connecting to this
    /// hop. Not `slot_prefix` with a suffix: a key and a suffix may
    /// spell another hop's key (`a.example` and `-connect` spell the
    /// domain `a.example-connect`).
    pub fn connect_prefix(&self) -> String {
        format!("connect-{}", self.key())
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
    use crate::config::route::Action;
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

/// What is remembered about an unreachable or overloaded destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostStatus {
    /// No connection before this time (unix seconds).
    pub unreachable_until: u64,
    /// Consecutive failed attempts, for the backoff.
    pub failures: u32,
    /// Why the last attempt failed.
    pub last_error: String,
    /// At most this many connections to it at once, below its
    /// configured maximum, since it answered 421 to a connection (see
    /// [`concurrency_after`]); None: the configured maximum.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// What a connection attempt to a hop came to, for its concurrency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// It greeted, and the session is ready.
    Accepted,
    /// It answered 421 before MAIL: up, but with no room for us now
    /// ("too many connections").
    Busy,
    /// No session: refused, timed out, or failed greeting, TLS or AUTH
    /// otherwise.
    Down,
}

/// How many connections at once this machine may open to a hop after
/// `answer`, when it allowed `current` (None: `configured`, its
/// `max_connections`): half as many after a 421 (at least one), one
/// more after each connection it accepts, back up to `configured`
/// (None again) — the additive-increase, multiplicative-decrease rule
/// of TCP's congestion control, so that a fleet's hosts share a busy
/// relay's room instead of each coming back at full width after one
/// success. A hop that is down keeps its limit (its record holds it
/// back, D6).
pub fn concurrency_after(answer: Answer, current: Option<u32>, configured: u32) -> Option<u32> {
    let configured = configured.max(1);
    let now = current.unwrap_or(configured).clamp(1, configured);
    match answer {
        Answer::Accepted => Some(now + 1).filter(|&n| n < configured),
        Answer::Busy => Some((now / 2).max(1)),
        Answer::Down => current.map(|_| now),
    }
}

/// Whether a 421 to a connection at `current` concurrency (None:
/// configured) holds the hop back like an unreachable one: when this
/// machine is down to one connection and even that found no room.
pub fn busy_holds_back(current: Option<u32>) -> bool {
    current == Some(1)
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
        let long = Hop::Domain("a".repeat(300));
        assert!(long.slot_prefix().len() < 255 - 16);
        assert!(long.connect_prefix().len() < 255 - 16);
    }

    #[test]
    fn domains_are_named_by_their_a_labels() {
        assert_eq!(
            Hop::Domain("bücher.example".into()).key(),
            "mx+xn--bcher-kva.example"
        );
        assert_eq!(
            Hop::Domain("xn--bcher-kva.example".into()).key(),
            Hop::Domain("bücher.example".into()).key(),
            "one DNS name, one record"
        );
        assert_eq!(Hop::Domain("example.org.".into()).key(), "mx+example.org");
        assert_eq!(
            Hop::Relay("SMTP.Example".into(), 587).key(),
            "relay+smtp.example+587"
        );
    }

    #[test]
    fn different_hops_never_share_a_name() {
        let mut hops = vec![
            Hop::Smarthost,
            Hop::Domain("smarthost".into()),
            Hop::Domain("bücher.example".into()),
            Hop::Domain("bächer.example".into()),
            Hop::Domain("b_cher.example".into()),
            Hop::Domain("b?cher.example".into()),
            Hop::Domain("a.example".into()),
            Hop::Domain("a.example-connect".into()),
            Hop::Domain("relay+a.example+25".into()),
            Hop::Domain("mx+a.example".into()),
            Hop::Domain("a..example".into()),
            Hop::Domain("[192.0.2.1]".into()),
            Hop::Relay("a.example".into(), 25),
            Hop::Relay("a.example".into(), 2),
            Hop::Relay("a.example+2".into(), 5),
            Hop::Relay("::1".into(), 25),
            Hop::Relay("_3a_3a1".into(), 25),
        ];
        // Long names: the same first bytes, different after.
        for tail in ["x", "y", "xx"] {
            hops.push(Hop::Domain(format!("{}{tail}", "é".repeat(150))));
            hops.push(Hop::Domain(format!("{}.{tail}", "a".repeat(250))));
        }
        let mut names = std::collections::BTreeMap::new();
        for hop in &hops {
            let key = hop.key();
            assert!(
                key.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"+-._~".contains(&b)),
                "{key}"
            );
            for name in [
                status_name(hop),
                format!("{}.slot-0", hop.slot_prefix()),
                format!("{}.slot-0", hop.connect_prefix()),
            ] {
                assert!(name.len() < 255, "{name}");
                if let Some(other) = names.insert(name.clone(), hop) {
                    panic!("{hop:?} and {other:?} share {name}");
                }
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn domain_keys_are_injective(a in "\\PC{0,80}", b in "\\PC{0,80}") {
            let (ka, kb) = (Hop::Domain(a.clone()).key(), Hop::Domain(b.clone()).key());
            // One key only for names DNS is asked for the same way.
            if ka == kb {
                proptest::prop_assert!(a == b || (a_label(&a).is_some() && a_label(&a) == a_label(&b)));
            }
        }

        #[test]
        fn escape_is_injective(a in "\\PC{0,40}", b in "\\PC{0,40}") {
            proptest::prop_assert_eq!(escape(&a) == escape(&b), a == b);
        }
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
            limit: Some(3),
        };
        mark_unreachable(dir.path(), &d, &s);
        assert_eq!(read_status(dir.path(), &d), Some(s));
        mark_reachable(dir.path(), &d);
        assert_eq!(read_status(dir.path(), &d), None);
    }

    #[test]
    fn records_of_older_versions_read_as_unlimited() {
        let dir = tempfile::tempdir().unwrap();
        let d = Hop::Smarthost;
        std::fs::write(
            dir.path().join(status_name(&d)),
            br#"{"unreachable_until":5,"failures":1,"last_error":"x"}"#,
        )
        .unwrap();
        assert_eq!(read_status(dir.path(), &d).unwrap().limit, None);
    }

    #[test]
    fn concurrency_halves_on_421_and_climbs_back_one_by_one() {
        use Answer::*;
        let mut limit = None;
        let mut seen = Vec::new();
        for answer in [Busy, Busy, Busy, Busy, Down, Accepted, Accepted, Busy] {
            limit = concurrency_after(answer, limit, 10);
            seen.push(limit);
        }
        assert_eq!(
            seen,
            [
                Some(5),
                Some(2),
                Some(1),
                Some(1),
                Some(1),
                Some(2),
                Some(3),
                Some(1)
            ]
        );
        // Back to the configured maximum: unlimited again.
        let mut limit = Some(8);
        limit = concurrency_after(Accepted, limit, 10);
        assert_eq!(limit, Some(9));
        assert_eq!(concurrency_after(Accepted, limit, 10), None);
        assert_eq!(concurrency_after(Accepted, None, 10), None);
        assert_eq!(concurrency_after(Down, None, 10), None);
        // A configured maximum of one: a 421 cannot go lower.
        assert_eq!(concurrency_after(Busy, None, 1), Some(1));
        assert!(!busy_holds_back(None) && !busy_holds_back(Some(2)));
        assert!(busy_holds_back(Some(1)));
    }
}
