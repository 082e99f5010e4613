//! A recipient domain's MTA-STS policy as MX delivery uses it (RFC 8461
//! §3.3, §5.1): announced by the `_mta-sts` TXT record, fetched from
//! `https://mta-sts.DOMAIN/.well-known/mta-sts.txt`, cached under
//! `hosts/` for its `max_age`. What the record and the policy say is
//! read by [`super::mta_sts`]; this module gets them and remembers them.
//!
//! The fetch is bounded as everything from the network is here: the
//! host resolved by the runner's own resolver (the `resolver` key), the
//! certificate verified for `mta-sts.DOMAIN` against the system roots
//! and `tls_ca_file`, no redirect followed (§3.3), `text/plain` only,
//! at most [`MAX_POLICY`] octets, [`FETCH_TIMEOUT`] for the whole
//! request.
//!
//! The cache: `hosts/sts-KEY.policy` (KEY as the domain's hop key, see
//! [`super::hosts`]), one JSON document — the announced id, the fetch
//! time, and the policy text as fetched, parsed again on every read, so
//! that a file read back is held to what a fetched policy is. A policy
//! is used until `fetched + max_age`; the domain announcing another id
//! refetches it sooner; a fetch that fails leaves an unexpired cached
//! policy in force (§5.1). A lost or unreadable cache file costs one
//! fetch. Root's queue run removes expired and damaged cache files
//! ([`sweep`], at most every [`SWEEP_INTERVAL`]): a domain mailed once
//! must not leave its file in `hosts/` for ever.

use std::io::Read;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::spool::durable;

use super::dns;
use super::hosts::Hop;
use super::mta_sts::{self, MAX_POLICY, Mode, Policy};

/// The whole policy fetch — connect, TLS, request, headers and body —
/// gets at most this long (RFC 8461 §3.3 leaves it to the sender; a
/// hostile server must not hold a delivery worker longer).
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest cache file read: the policy text and a little JSON
/// around it (escapes can double the text).
const MAX_CACHE_FILE: u64 = 2 * MAX_POLICY as u64 + 4096;

/// A domain's policy in force, and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Known {
    /// The domain (A-label form) it is the policy of.
    pub domain: String,
    /// The id its TXT record announced when it was fetched.
    pub id: String,
    /// The policy.
    pub policy: Policy,
}

impl Known {
    /// How log lines and deferrals name it.
    pub fn describe(&self) -> String {
        format!("MTA-STS policy of {} (id {})", self.domain, self.id)
    }
}

/// How often root's queue run looks for expired cached policies.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(3600);

/// In `hosts/`: when the cached policies were last swept (unix seconds).
const SWEEP_STAMP: &str = "sts-swept.stamp";

/// One cache file.
#[derive(Debug, Serialize, Deserialize)]
struct Cached {
    /// The id announced when it was fetched.
    id: String,
    /// When it was fetched (unix seconds).
    fetched: u64,
    /// The policy file as fetched.
    policy: String,
}

/// The policy in force for mail to `domain` at `now` (None: the domain
/// has none, or withdrew it with `mode: none`): the cached one while
/// unexpired and still the announced one, else fetched afresh (and
/// cached). Failures are logged and mean the cached policy while it
/// lasts, else none (RFC 8461 §5.1: deliver as though the domain had
/// not implemented MTA-STS).
pub fn in_force(
    config: &Config,
    resolver: &dns::Resolver,
    hosts_dir: &Path,
    domain: &str,
    now: u64,
) -> Option<Known> {
    let domain = host_name(domain)?;
    let name = cache_name(&domain);
    let cached = read_cache(hosts_dir, &domain, now);
    // Asked for each new connection to the domain, not each message
    // (a connection serves many), and the worker's resolver keeps the
    // answer for its TTL: a queue run's messages cost one query.
    let announced = match resolver.txt(&format!("_mta-sts.{domain}")) {
        Ok(records) => mta_sts::announced_id(&records),
        Err(e) => {
            // §5.1: a TXT lookup that fails leaves the cached policy.
            log::warn!("{domain}: MTA-STS: {}", route_error(&e));
            return cached.and_then(usable);
        }
    };
    let Some(id) = announced else {
        // No record (or none usable): a cached policy still holds until
        // it expires (§3.1: the record only says when to refetch).
        return cached.and_then(usable);
    };
    if let Some(known) = &cached
        && known.id == id
    {
        return usable(known.clone());
    }
    match fetch(config, resolver, &domain) {
        Ok(text) => match mta_sts::parse_policy(&text) {
            Ok(policy) => {
                let record = Cached {
                    id: id.clone(),
                    fetched: now,
                    policy: String::from_utf8_lossy(&text).into_owned(),
                };
                write_cache(hosts_dir, &name, &record, &domain);
                log::info!(
                    "{domain}: MTA-STS policy id {id} fetched: mode {}, max_age {}",
                    mode_name(policy.mode),
                    policy.max_age
                );
                usable(Known { domain, id, policy })
            }
            Err(why) => {
                log::warn!("{domain}: MTA-STS policy id {id} refused: {why}");
                cached.and_then(usable)
            }
        },
        Err(why) => {
            log::warn!("{domain}: MTA-STS policy id {id} not fetched: {why}");
            cached.and_then(usable)
        }
    }
}

/// `known` unless it withdraws the policy (`mode: none`).
fn usable(known: Known) -> Option<Known> {
    (known.policy.mode != Mode::None).then_some(known)
}

/// The mode as the policy file writes it.
pub fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Enforce => "enforce",
        Mode::Testing => "testing",
        Mode::None => "none",
    }
}

/// `domain` as the host-name part of a URL: its A-label form, letters,
/// digits, `-` and `.` only (None otherwise: no policy is looked for a
/// name that could make the URL point elsewhere).
fn host_name(domain: &str) -> Option<String> {
    let ascii = super::hosts::a_label(domain)?;
    let clean = !ascii.is_empty()
        && ascii
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    clean.then_some(ascii)
}

/// Removes the cached policies in `hosts_dir` that expired by `now`
/// (fetch time + `max_age` past) or that no read would take (damaged,
/// oversized, not a policy), at most every [`SWEEP_INTERVAL`]. Returns
/// how many went. A cache a runner rewrote between this read and the
/// removal goes too: that costs one fetch, never a wrong policy.
pub fn sweep(hosts_dir: &Path, now: u64) -> usize {
    // The stamp holds the time of the last sweep (its own clock: the
    // caller's `now`, as the caches' fetch times are).
    let stamp = hosts_dir.join(SWEEP_STAMP);
    let last = std::fs::read(&stamp)
        .ok()
        .filter(|b| b.len() <= 20)
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|t| t.trim().parse::<u64>().ok());
    if last.is_some_and(|t| t <= now && now - t < SWEEP_INTERVAL.as_secs()) {
        return 0;
    }
    if let Err(e) =
        durable::replace_file_unsynced(hosts_dir, SWEEP_STAMP, now.to_string().as_bytes())
    {
        log::debug!("{}: {e}", stamp.display());
    }
    sweep_expired(hosts_dir, now)
}

/// [`sweep`] without its stamp.
fn sweep_expired(hosts_dir: &Path, now: u64) -> usize {
    let Ok(entries) = std::fs::read_dir(hosts_dir) else {
        return 0;
    };
    let mut swept = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            continue;
        };
        if !(name.starts_with("sts-") && name.ends_with(".policy")) {
            continue;
        }
        let path = entry.path();
        let expired = match read_cached(&path) {
            Some((cached, policy)) => cached.fetched.saturating_add(policy.max_age) <= now,
            // Of no use to any read: see read_cache.
            None => true,
        };
        if expired && std::fs::remove_file(&path).is_ok() {
            swept += 1;
        }
    }
    if swept > 0 {
        log::info!("{swept} expired MTA-STS cached policies removed");
    }
    swept
}

fn cache_name(domain: &str) -> String {
    format!("sts-{}.policy", Hop::Domain(domain.to_string()).key())
}

fn route_error(e: &dns::RouteError) -> &str {
    match e {
        dns::RouteError::Permanent { message, .. } | dns::RouteError::Temporary { message } => {
            message
        }
    }
}

/// The cached policy of `domain` (A-label form) if it is readable,
/// well-formed and unexpired at `now`.
fn read_cache(dir: &Path, domain: &str, now: u64) -> Option<Known> {
    let (cached, policy) = read_cached(&dir.join(cache_name(domain)))?;
    if cached.fetched.saturating_add(policy.max_age) <= now || cached.fetched > now {
        return None;
    }
    Some(Known {
        domain: domain.to_string(),
        id: cached.id,
        policy,
    })
}

/// The cache file at `path` and its policy, if it is one: a regular
/// file (not followed if a link) of at most [`MAX_CACHE_FILE`] octets,
/// its id as a TXT record would have it, its policy well-formed.
fn read_cached(path: &Path) -> Option<(Cached, Policy)> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .ok()?;
    let mut bytes = Vec::new();
    file.take(MAX_CACHE_FILE + 1).read_to_end(&mut bytes).ok()?;
    if bytes.len() as u64 > MAX_CACHE_FILE {
        return None;
    }
    let cached: Cached = serde_json::from_slice(&bytes).ok()?;
    // The id as the TXT record would have it (1 to 32 letters and
    // digits), so that a damaged file cannot name another.
    let id_ok =
        (1..=32).contains(&cached.id.len()) && cached.id.bytes().all(|b| b.is_ascii_alphanumeric());
    if !id_ok {
        return None;
    }
    let policy = mta_sts::parse_policy(cached.policy.as_bytes()).ok()?;
    Some((cached, policy))
}

fn write_cache(dir: &Path, name: &str, record: &Cached, domain: &str) {
    let Ok(bytes) = serde_json::to_vec(record) else {
        return;
    };
    // A lost cache costs one fetch: no fsync.
    if let Err(e) = durable::replace_file_unsynced(dir, name, &bytes) {
        log::warn!("{domain}: cannot cache the MTA-STS policy: {e}");
    }
}

/// The policy file of `domain` (A-label form), fetched as the module
/// comment says. Err says why not.
fn fetch(config: &Config, resolver: &dns::Resolver, domain: &str) -> Result<Vec<u8>, String> {
    let host = format!("mta-sts.{domain}");
    let addresses: Vec<SocketAddr> = resolver
        .addresses(&host)
        .map_err(|e| route_error(&e).to_string())?
        .into_iter()
        .take(dns::MAX_ADDRESSES)
        .map(|ip| SocketAddr::new(ip, 443))
        .collect();
    if addresses.is_empty() {
        return Err(format!("{host} has no address"));
    }
    let mut tls = native_tls::TlsConnector::builder();
    tls.min_protocol_version(Some(native_tls::Protocol::Tlsv12));
    if let Some(path) = &config.tls_ca_file {
        let pem = std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
        let root = native_tls::Certificate::from_pem(&pem)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        tls.add_root_certificate(root);
    }
    let tls = tls.build().map_err(|e| format!("TLS setup: {e}"))?;
    let agent = ureq::AgentBuilder::new()
        .tls_connector(Arc::new(tls))
        // The runner's resolver, not the system's: the same DNS as the
        // MX lookup (and a test's `resolver`).
        .resolver(move |_: &str| Ok(addresses.clone()))
        // RFC 8461 §3.3: redirects are not followed.
        .redirects(0)
        .timeout(FETCH_TIMEOUT)
        .user_agent(concat!("spoolmail/", env!("CARGO_PKG_VERSION")))
        .build();
    let url = format!("https://{host}/.well-known/mta-sts.txt");
    let response = match agent.get(&url).call() {
        Ok(response) => response,
        Err(ureq::Error::Status(code, _)) => return Err(format!("{url}: HTTP {code}")),
        // ureq's error names the URL itself.
        Err(e) => return Err(e.to_string()),
    };
    if response.status() != 200 {
        // A 3xx (redirects are not followed) or another 2xx.
        return Err(format!("{url}: HTTP {}", response.status()));
    }
    if !response.content_type().eq_ignore_ascii_case("text/plain") {
        return Err(format!(
            "{url}: Content-Type {:?}, not text/plain",
            crate::logging::text(response.content_type())
        ));
    }
    let mut body = Vec::new();
    response
        .into_reader()
        .take(MAX_POLICY as u64 + 1)
        .read_to_end(&mut body)
        .map_err(|e| format!("{url}: {e}"))?;
    if body.len() > MAX_POLICY {
        return Err(format!("{url}: policy over {MAX_POLICY} octets"));
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy_text(mode: &str, max_age: u64) -> String {
        format!("version: STSv1\nmode: {mode}\nmx: mx.example.org\nmax_age: {max_age}\n")
    }

    fn write(dir: &Path, id: &str, fetched: u64, text: &str) -> &'static str {
        let record = Cached {
            id: id.into(),
            fetched,
            policy: text.into(),
        };
        write_cache(dir, &cache_name("example.org"), &record, "example.org");
        "example.org"
    }

    #[test]
    fn a_cached_policy_lasts_its_max_age() {
        let dir = tempfile::tempdir().unwrap();
        let name = write(dir.path(), "abc1", 1000, &policy_text("enforce", 60));
        let known = read_cache(dir.path(), name, 1059).unwrap();
        assert_eq!(known.id, "abc1");
        assert_eq!(known.domain, "example.org");
        assert_eq!(known.policy.mode, Mode::Enforce);
        assert!(read_cache(dir.path(), name, 1060).is_none(), "expired");
        assert!(
            read_cache(dir.path(), name, 999).is_none(),
            "from the future"
        );
    }

    #[test]
    fn a_damaged_cache_is_no_policy() {
        let dir = tempfile::tempdir().unwrap();
        let name = write(dir.path(), "abc1", 1000, "version: STSv1\nmode: enforce\n");
        assert!(
            read_cache(dir.path(), name, 1001).is_none(),
            "no mx, no max_age"
        );
        let name = write(dir.path(), "../x", 1000, &policy_text("enforce", 60));
        assert!(read_cache(dir.path(), name, 1001).is_none(), "bad id");
        let file = dir.path().join(cache_name(name));
        std::fs::write(&file, b"{not json").unwrap();
        assert!(read_cache(dir.path(), name, 1001).is_none());
        let huge = vec![b' '; MAX_CACHE_FILE as usize + 1];
        std::fs::write(&file, huge).unwrap();
        assert!(read_cache(dir.path(), name, 1001).is_none());
    }

    #[test]
    fn the_sweep_removes_expired_and_damaged_caches_and_keeps_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let cache = |domain: &str, fetched: u64, max_age: u64| {
            let record = Cached {
                id: "abc1".into(),
                fetched,
                policy: policy_text("enforce", max_age),
            };
            write_cache(d, &cache_name(domain), &record, domain);
            d.join(cache_name(domain))
        };
        let expired = cache("expired.example", 1000, 60);
        let just_expired = cache("edge.example", 1000, 100);
        let fresh = cache("fresh.example", 1000, 86400);
        let damaged = d.join(cache_name("damaged.example"));
        std::fs::write(&damaged, b"{not json").unwrap();
        let other = d.join("example.org.status");
        std::fs::write(&other, b"not a cache").unwrap();
        assert_eq!(sweep(d, 1100), 3);
        assert!(!expired.exists() && !just_expired.exists() && !damaged.exists());
        assert!(fresh.exists(), "unexpired: kept");
        assert!(other.exists(), "not a cached policy: not touched");
        // Within the interval the next run looks at nothing.
        let expired = cache("expired.example", 1000, 60);
        assert_eq!(sweep(d, 1200), 0);
        assert!(expired.exists());
        assert_eq!(sweep_expired(d, 1200), 1);
        assert!(!expired.exists());
    }

    #[test]
    fn only_host_names_make_a_url() {
        assert_eq!(host_name("Example.ORG").as_deref(), Some("example.org"));
        assert_eq!(
            host_name("bücher.example").as_deref(),
            Some("xn--bcher-kva.example")
        );
        assert_eq!(host_name("a/b.example"), None);
        assert_eq!(host_name("a@b.example"), None);
        assert_eq!(host_name("a:1.example"), None);
    }

    #[test]
    fn mode_none_withdraws_the_policy() {
        let known = Known {
            domain: "example.org".into(),
            id: "a".into(),
            policy: mta_sts::parse_policy(policy_text("none", 60).as_bytes()).unwrap(),
        };
        assert_eq!(usable(known), None);
    }
}
