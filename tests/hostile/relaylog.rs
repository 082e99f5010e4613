//! Work one user causes that others paid for (issue 20): a
//! relay's 421 to one user's message taken as the
//! relay being down for everyone, destination records shared by domains
//! that only look alike, and log fields an address or a server reply
//! could close or fake.
//!
//! Real peers throughout: aiosmtpd relays (`tests/peers/smtpd.py`), a
//! DNS server (`tests/peers/dns.py`), a syslog receiver
//! (`tests/peers/syslogd.py`) and Debian's pflogsumm.

use std::time::Duration;

use crate::common::dns::DnsServer;
use crate::common::smtpd::SmtpServer;
use crate::common::syslog::{SyslogReceiver, pflogsumm, total};
use crate::common::{self, HOSTNAME, Setup};
use crate::site::Site;

const MSG: &[u8] = b"Subject: round two\n\nbody\n";
const WAIT: Duration = Duration::from_secs(60);

/// The destination records (`*.status`) in the site's `hosts/`.
fn records(site: &Site) -> Vec<String> {
    crate::site::names(&site.spool.join("hosts"))
        .into_iter()
        .filter(|n| n.ends_with(".status"))
        .collect()
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Mallory's messages draw `421 4.7.0 … suspicious` from every
/// relay of the list — one at the final dot (as Google's smtp-relay
/// answers), one at RCPT. Her messages wait for their own retry; the
/// relays are not recorded down, and Alice's message, queued after,
/// goes out in her own queue run (which honours the unreachable cache)
/// at once.
#[test]
fn a_421_to_one_users_message_does_not_hold_the_relays_for_others() {
    let Some(site) = Site::new("rrly", "") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mallory_from = format!("{}@{HOSTNAME}", site.mallory.name);
    let suspicious = format!(
        "{mallory_from}=421 4.7.0 Our system has detected an unusual rate of suspicious email"
    );
    let relay_args = [
        "--data-reply-from",
        suspicious.as_str(),
        "--rcpt-reply",
        "victim@example.org=421 4.7.0 suspicious recipient",
    ];
    let first = SmtpServer::start(dir.path(), &relay_args);
    let second = SmtpServer::start(dir.path(), &relay_args);
    site.set_config(
        Setup::smarthosts(&[first.port, second.port])
            .line("smarthost_policy = failover\nretry_min = 1h")
            .text(),
    );
    // Forced attempts (-odi): every relay is tried for each message.
    let out = site.run(
        Some(&site.mallory),
        "sendmail",
        &["-odi", "someone@example.org"],
        MSG,
    );
    common::assert_exit(&out, 75);
    let out = site.run(
        Some(&site.mallory),
        "sendmail",
        &["-odi", "victim@example.org"],
        MSG,
    );
    common::assert_exit(&out, 75);
    assert_eq!(site.queue_ids().len(), 2, "Mallory's two messages wait");

    // Alice's message, queued, then her own queue run: it goes to the
    // first relay now, not after the relays' "retry time".
    let out = site.run(
        Some(&site.alice),
        "sendmail",
        &["-odq", "friend@example.org"],
        MSG,
    );
    common::assert_success(&out);
    let out = site.run(Some(&site.alice), "sendmail", &["-q"], b"");
    common::assert_success(&out);
    let alices = site.mailq_json(Some(&site.alice));
    assert!(
        alices.is_empty(),
        "Alice's message still waits after Mallory's 421s: {alices:?}"
    );
    let got = first.wait_messages(1, WAIT);
    assert!(
        got.iter().any(|m| m.rcpt_tos == ["friend@example.org"]),
        "Alice's message reached the first relay"
    );
    assert_eq!(
        records(&site),
        Vec::<String>::new(),
        "no relay recorded down"
    );

    // Mallory's messages are deferred by their own backoff, each with
    // the relay's answer.
    let now = unix_now();
    let hers = site.mailq_json(Some(&site.mallory));
    assert_eq!(hers.len(), 2, "{hers:?}");
    for m in &hers {
        let r = &m["recipients"][0];
        assert_eq!(r["status"], "deferred", "{m}");
        assert!(
            r["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("421 4.7.0")),
            "{m}"
        );
        assert!(r["next_attempt"].as_u64().unwrap() > now + 1000, "{m}");
    }
    // The 421 to the final dot left no RFC 1047 window open.
    let window = crate::site::names(&site.spool.join("window"));
    assert!(window.is_empty(), "{window:?}");
}

/// `bächer.example` (Mallory's, dead) and `bücher.example`
/// (Alice's, healthy) once shared one record name; Mallory's dead
/// domain then held Alice's mail back and her `mailq` showed Mallory's
/// error. Each now has its own record.
#[test]
fn lookalike_domains_cannot_share_an_unreachable_record() {
    let Some(site) = Site::new("ridn", "") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = SmtpServer::start(dir.path(), &[]);
    // bücher.example is xn--bcher-kva, bächer.example xn--bcher-gra.
    let dns = DnsServer::start(
        &[
            "xn--bcher-kva.example MX 10 mx.good.test",
            "mx.good.test A 127.0.0.1",
            "xn--bcher-gra.example MX 10 mx.dead.test",
            // Nothing listens there: the connection is refused.
            "mx.dead.test A 127.0.0.2",
        ],
        &[],
    );
    site.set_config(
        Setup::default()
            .route("* -> mx")
            .line(&format!(
                "smtp_port = {}\nresolver = {}\ntls = none\nretry_min = 1h",
                server.port, dns.addr
            ))
            .text(),
    );
    let out = site.run(
        Some(&site.mallory),
        "sendmail",
        &["-odi", "m@bächer.example"],
        MSG,
    );
    common::assert_exit(&out, 75);
    assert_eq!(records(&site).len(), 1, "Mallory's dead domain is recorded");

    let out = site.run(
        Some(&site.alice),
        "sendmail",
        &["-odq", "a@bücher.example"],
        MSG,
    );
    common::assert_success(&out);
    let out = site.run(Some(&site.alice), "sendmail", &["-q"], b"");
    common::assert_success(&out);
    let listed = site.run(Some(&site.alice), "mailq", &[], b"");
    let text = String::from_utf8_lossy(&listed.stdout).into_owned();
    assert!(
        !text.contains("127.0.0.2"),
        "Alice's mailq shows Mallory's error: {text}"
    );
    assert!(
        site.mailq_json(Some(&site.alice)).is_empty(),
        "Alice's message waits behind Mallory's dead domain: {text}"
    );
    let got = server.wait_messages(1, WAIT);
    assert_eq!(got[0].rcpt_tos, ["a@bücher.example"]);
    assert_eq!(records(&site).len(), 1, "{:?}", records(&site));
}

/// A quoted local part that spells out the rest of a
/// delivered line, a server reply that spells out a whole one (it is
/// quoted in the `to=` lines and in the line `-odi` logs), and a bidi
/// override in an address and in the reply. The relay defers Mallory's
/// message; pflogsumm must count it deferred, not delivered, and no line
/// may carry the override raw.
#[test]
fn addresses_and_replies_cannot_close_or_fake_log_fields() {
    let Some(site) = Site::new("rlog", "") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = SmtpServer::start(
        dir.path(),
        &[
            "--mail-reply",
            "451 4.3.0 busy \u{202e}later\u{202c} to=<r@example.org>, relay=r, delay=0, \
             dsn=2.0.0, status=sent (ok",
        ],
    );
    // The receiver's socket is written by Mallory's processes: its
    // directory must be one she can enter.
    let logs = site.base.join("syslog");
    std::fs::create_dir(&logs).unwrap();
    std::fs::set_permissions(&logs, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let syslog = SyslogReceiver::start(&logs);
    site.set_config(
        Setup::smarthost(server.port)
            .line("retry_min = 1h")
            .line(&syslog.config_line())
            .text(),
    );
    // 62 octets of local part: within the limit of 64.
    let faker = "\"x>, relay=r[192.0.2.1]:25, delay=0, dsn=2.0.0, status=sent (\"@example.org";
    let bidi = "invoice\u{202e}fdp.exe@example.org";
    let out = site.run(Some(&site.mallory), "sendmail", &["-odi", faker, bidi], MSG);
    common::assert_exit(&out, 75);
    let lines = syslog.wait_lines(WAIT, |lines| {
        lines.iter().filter(|l| l.contains("dsn=4.3.0")).count() >= 2
    });
    let text = lines.join("\n");
    assert!(
        lines.iter().filter(|l| l.contains("dsn=4.3.0")).count() >= 2,
        "{text}"
    );
    // The log, for the record (`-- --nocapture`).
    println!("{text}");
    let totals = pflogsumm(&syslog.log, &["--syslog-name=spoolmail"]);
    assert_eq!(total(&totals, "delivered"), 0, "{totals:?}\n{text}");
    assert_eq!(total(&totals, "deferred"), 1, "{totals:?}\n{text}");
    assert!(!text.contains("status=sent"), "a faked field:\n{text}");
    assert!(
        !text.contains('\u{202e}') && !text.contains('\u{202c}'),
        "a bidi control reached the log raw:\n{text}"
    );
}
