//! MX routing against a real DNS server (tests/peers/dns.py) on loopback.

mod common;

use std::collections::HashSet;
use std::net::IpAddr;
use std::time::Duration;

use common::dns::DnsServer;
use spoolmail::runner::dns::{Resolver, RouteError};

fn resolver(server: &DnsServer) -> Resolver {
    Resolver::new(Some(server.addr), Duration::from_secs(5)).unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn mx_hosts_come_in_preference_order_with_all_their_addresses() {
    let dns = DnsServer::start(
        &[
            "example.test MX 20 backup.example.test",
            "example.test MX 10 primary.example.test",
            "primary.example.test A 127.0.0.2",
            "primary.example.test A 127.0.0.3",
            "primary.example.test AAAA ::1",
            "backup.example.test A 127.0.0.4",
        ],
        &[],
    );
    let hosts = resolver(&dns).mx_hosts("example.test").unwrap();
    let names: Vec<&str> = hosts.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(names, ["primary.example.test", "backup.example.test"]);
    let primary: HashSet<IpAddr> = hosts[0].addresses.iter().copied().collect();
    assert_eq!(
        primary,
        HashSet::from([ip("127.0.0.2"), ip("127.0.0.3"), ip("::1")])
    );
    assert!(hosts[0].addresses[0].is_ipv4(), "IPv4 first");
    assert_eq!(hosts[1].addresses, [ip("127.0.0.4")]);
}

#[test]
fn equal_preferences_are_shuffled() {
    let dns = DnsServer::start(
        &[
            "spread.test MX 10 a.spread.test",
            "spread.test MX 10 b.spread.test",
            "a.spread.test A 127.0.0.2",
            "b.spread.test A 127.0.0.3",
        ],
        &[],
    );
    let r = resolver(&dns);
    let mut firsts = HashSet::new();
    for _ in 0..64 {
        firsts.insert(r.mx_hosts("spread.test").unwrap()[0].name.clone());
        if firsts.len() == 2 {
            break;
        }
    }
    assert_eq!(
        firsts.len(),
        2,
        "both hosts come first sometimes: {firsts:?}"
    );
}

#[test]
fn no_mx_means_the_domain_itself() {
    let dns = DnsServer::start(&["plain.test A 127.0.0.5"], &[]);
    let hosts = resolver(&dns).mx_hosts("plain.test").unwrap();
    assert_eq!(hosts.len(), 1);
    assert_eq!(hosts[0].name, "plain.test");
    assert_eq!(hosts[0].addresses, [ip("127.0.0.5")]);
}

#[test]
fn null_mx_is_a_permanent_failure() {
    let dns = DnsServer::start(&["nomail.test MX 0 ."], &[]);
    match resolver(&dns).mx_hosts("nomail.test") {
        Err(RouteError::Permanent { status, .. }) => assert_eq!(status, "5.1.10"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_missing_domain_is_a_permanent_failure() {
    let dns = DnsServer::start(&["other.test A 127.0.0.1"], &[]);
    match resolver(&dns).mx_hosts("missing.test") {
        Err(RouteError::Permanent { status, .. }) => assert_eq!(status, "5.1.2"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn servfail_is_temporary() {
    let dns = DnsServer::start(&["x.test A 127.0.0.1"], &["broken.test"]);
    assert!(matches!(
        resolver(&dns).mx_hosts("broken.test"),
        Err(RouteError::Temporary { .. })
    ));
}

#[test]
fn an_mx_host_without_address_is_skipped() {
    let dns = DnsServer::start(
        &[
            "half.test MX 10 gone.half.test",
            "half.test MX 20 ok.half.test",
            "ok.half.test A 127.0.0.6",
            "gone.half.test TXT nothing",
        ],
        &[],
    );
    let hosts = resolver(&dns).mx_hosts("half.test").unwrap();
    assert_eq!(hosts.len(), 1);
    assert_eq!(hosts[0].name, "ok.half.test");
}

/// Issue 20 item 2: a zone of twenty MX names that never answer costs at
/// most MAX_MX_NAMES names and the resolution deadline, then a temporary
/// failure; a zone whose first names give enough addresses is not read
/// further.
#[test]
fn a_hostile_zone_costs_a_bounded_resolution() {
    use spoolmail::runner::dns::{Limits, MAX_MX_NAMES};
    let names: Vec<String> = (1..=20).map(|n| format!("m{n:02}.hostile.test")).collect();
    let mut records: Vec<String> = names
        .iter()
        .map(|n| format!("hostile.test MX 10 {n}"))
        .collect();
    records.push("many.test MX 10 a.many.test".into());
    records.push("many.test MX 20 b.many.test".into());
    records.extend((2..=11).map(|n| format!("a.many.test A 127.0.0.{n}")));
    records.push("b.many.test A 127.0.1.1".into());
    let records: Vec<&str> = records.iter().map(String::as_str).collect();
    let dropped: Vec<&str> = names.iter().map(String::as_str).collect();
    let dns = DnsServer::start_hostile(&records, &[], &dropped);
    let r = Resolver::new(Some(dns.addr), Duration::from_millis(300)).unwrap();
    let limits = Limits {
        deadline: Duration::from_secs(120),
        ..Limits::default()
    };
    match r.mx_hosts_within("hostile.test", &limits) {
        Err(RouteError::Temporary { .. }) => {}
        other => panic!("expected a temporary failure, got {other:?}"),
    }
    let asked: HashSet<String> = dns
        .queries()
        .into_iter()
        .filter(|(n, _)| n.ends_with(".hostile.test"))
        .map(|(n, _)| n)
        .collect();
    assert_eq!(asked.len(), MAX_MX_NAMES, "names looked up: {asked:?}");
    // Ten addresses from the first name: the second is never asked.
    let hosts = r.mx_hosts("many.test").unwrap();
    assert_eq!(hosts.len(), 1);
    assert!(!dns.queries().iter().any(|(n, _)| n == "b.many.test"));
    // And the deadline ends a resolution that would take longer.
    let short = Limits {
        deadline: Duration::from_secs(1),
        ..Limits::default()
    };
    match r.mx_hosts_within("hostile.test", &short) {
        Err(RouteError::Temporary { message }) => assert!(message.contains("1s"), "{message}"),
        other => panic!("expected a temporary failure, got {other:?}"),
    }
}
