//! Delivery routed by DNS: a real DNS server (tests/peers/dns.py) serving
//! MX records and a real SMTP server (tests/peers/smtpd.py), both on
//! loopback addresses; `resolver` and `smtp_port` point spoolmail at them.

mod common;

use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::dns::DnsServer;
use common::smtpd::SmtpServer;
use common::*;

const MSG: &[u8] = b"Subject: routed\n\nbody\n";
const WAIT: Duration = Duration::from_secs(60);

fn world(dns: &DnsServer, port: u16, extra: &str) -> World {
    World::with_config(&format!(
        "resolver = {}\nsmtp_port = {port}\ntls = none\nretry_min = 1h\n{extra}",
        dns.addr
    ))
}

#[test]
fn three_recipients_at_one_mx_are_one_transaction_after_a_dead_primary() {
    let dir = tempfile::tempdir().unwrap();
    let server = SmtpServer::start(dir.path(), &[]);
    // The primary MX (127.0.0.2) has nothing on the port: refused; the
    // backup (127.0.0.1) is the real server.
    let dns = DnsServer::start(
        &[
            "dest.test MX 10 primary.dest.test",
            "dest.test MX 20 backup.dest.test",
            "primary.dest.test A 127.0.0.2",
            "backup.dest.test A 127.0.0.1",
        ],
        &[],
    );
    let w = world(&dns, server.port, "");
    let out = w.sendmail(
        &[
            "-odi",
            "-f",
            "s@example.org",
            "a@dest.test",
            "b@dest.test",
            "c@dest.test",
        ],
        MSG,
    );
    assert_success(&out);
    let got = server.messages();
    assert_eq!(got.len(), 1, "one transaction for one host: {got:?}");
    assert_eq!(
        got[0].rcpt_tos,
        ["a@dest.test", "b@dest.test", "c@dest.test"]
    );
    assert!(w.queue_ids().is_empty());
}

#[test]
fn null_mx_fails_at_once_and_bounces() {
    let dir = tempfile::tempdir().unwrap();
    let server = SmtpServer::start(dir.path(), &[]);
    let dns = DnsServer::start(
        &[
            "nomail.test MX 0 .",
            "example.org MX 10 mail.example.org",
            "mail.example.org A 127.0.0.1",
        ],
        &[],
    );
    let w = world(&dns, server.port, "");
    let out = w.sendmail(&["-odi", "-f", "s@example.org", "u@nomail.test"], MSG);
    assert_eq!(
        out.status.code(),
        Some(69),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("null MX"));
    // The bounce goes to the sender's MX: the real server.
    let got = server.wait_messages(1, WAIT);
    assert_eq!(got[0].mail_from, "");
    assert_eq!(got[0].rcpt_tos, ["s@example.org"]);
    let text = String::from_utf8_lossy(&got[0].data);
    assert!(text.contains("Status: 5.1.10"), "{text}");
    assert!(
        text.contains("Final-Recipient: rfc822; u@nomail.test"),
        "{text}"
    );
}

#[test]
fn a_missing_domain_fails_and_a_dns_failure_defers() {
    let dns = DnsServer::start(&["other.test A 127.0.0.1"], &["broken.test"]);
    let w = world(&dns, 9, "");
    let out = w.sendmail(&["-odi", "-f", "<>", "u@missing.test"], MSG);
    assert_eq!(
        out.status.code(),
        Some(69),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = w.sendmail(&["-odi", "-f", "<>", "u@broken.test"], MSG);
    assert_eq!(
        out.status.code(),
        Some(75),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let q = w.mailq_json();
    assert_eq!(q.len(), 1, "only the deferred one stays");
    assert_eq!(q[0]["recipients"][0]["status"], "deferred");
}

/// A listener on `ip:port` that counts connections and hangs up at once.
fn counting_listener(ip: &str, port: u16) -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind((ip, port)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            c.fetch_add(1, Ordering::SeqCst);
            drop(conn);
        }
    });
    (port, count)
}

#[test]
fn an_unreachable_mx_with_20_messages_costs_one_attempt_per_address() {
    let (port, first) = counting_listener("127.0.0.2", 0);
    let (_, second) = counting_listener("127.0.0.3", port);
    let dns = DnsServer::start(
        &[
            "down.test MX 10 mx.down.test",
            "mx.down.test A 127.0.0.2",
            "mx.down.test A 127.0.0.3",
        ],
        &[],
    );
    let w = world(&dns, port, "max_connections = 4");
    for i in 0..20 {
        w.send_ok(&["-f", "<>", &format!("r{i}@down.test")], MSG);
    }
    assert_success(&w.sendmail(&["-q"], b""));
    assert_eq!(first.load(Ordering::SeqCst), 1, "127.0.0.2 tried once");
    assert_eq!(second.load(Ordering::SeqCst), 1, "127.0.0.3 tried once");
    let q = w.mailq_json();
    assert_eq!(q.len(), 20);
    // The one tried is deferred; the others wait for the address without
    // a state of their own (still "queued").
    let status = |m: &serde_json::Value| m["recipients"][0]["status"].clone();
    assert!(
        q.iter()
            .all(|m| status(m) == "deferred" || status(m) == "queued")
    );
    assert!(q.iter().any(|m| status(m) == "deferred"));
    let status = std::fs::read_to_string(w.spool.join("hosts/dest-mx+down.test.status")).unwrap();
    assert!(status.contains("unreachable_until"), "{status}");
}

/// A domain whose DNS fails now (SERVFAIL here; a zone that never
/// answers costs the resolution deadline) is recorded unreachable like a
/// host that refuses connections (D6): the next message for it waits for
/// the retry time without another resolution.
#[test]
fn a_domain_whose_dns_fails_is_remembered_until_its_retry_time() {
    let dns = DnsServer::start_hostile(&["ok.test A 127.0.0.1"], &["flaky.test"], &[]);
    let w = world(&dns, 1, "");
    let asked = || {
        dns.queries()
            .iter()
            .filter(|(n, _)| n.trim_end_matches('.') == "flaky.test")
            .count()
    };
    // -odi says how it went: 75, deferred.
    assert_exit(
        &w.sendmail(&["-odi", "-f", "s@example.org", "a@flaky.test"], MSG),
        75,
    );
    let first = asked();
    assert!(first > 0, "flaky.test was never asked for");
    let record = w.spool.join("hosts").join("dest-mx+flaky.test.status");
    assert!(record.exists(), "no record of the failed resolution");
    // A queue run, which honours the record (-odi would force a try).
    assert_success(&w.sendmail(&["-odq", "-f", "s@example.org", "b@flaky.test"], MSG));
    assert_success(&w.sendmail(&["-q"], b""));
    assert_eq!(asked(), first, "asked again before the retry time");
    let waiting: Vec<String> = w
        .mailq_json()
        .iter()
        .flat_map(|m| m["recipients"].as_array().unwrap().clone())
        .filter_map(|r| r["waiting"].as_str().map(str::to_owned))
        .collect();
    assert!(
        waiting.iter().any(|t| t.contains("unreachable until")),
        "{waiting:?}"
    );
}
