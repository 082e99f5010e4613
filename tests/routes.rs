//! The routing table end to end: `route = …` lines sending recipients by
//! MX, locally, through a relay list, or failing them with a configured
//! reply — the built binary against real SMTP servers on loopback.

mod common;

use std::time::Duration;

use common::smtpd::SmtpServer;
use common::*;

const MSG: &[u8] = b"Subject: route test\n\nbody\n";
const WAIT: Duration = Duration::from_secs(60);

/// Delivers one message in the foreground and asserts it went.
fn deliver(w: &World, from: &str, to: &str) {
    assert_success(&w.sendmail(&["-odi", "-f", from, to], MSG));
}

#[test]
fn the_first_matching_route_wins_and_star_dot_matches_subdomains() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c, default) = (
        SmtpServer::start(dir.path(), &[]),
        SmtpServer::start(dir.path(), &[]),
        SmtpServer::start(dir.path(), &[]),
        SmtpServer::start(dir.path(), &[]),
    );
    let w = Setup::smarthost(default.port)
        .route_to_relay("corp.test", a.port)
        .route_to_relay("corp.test", b.port)
        .route_to_relay("*.corp.test", b.port)
        .plain_relay(a.port)
        .plain_relay(b.port)
        .route_to_relay("*", c.port)
        .plain_relay(c.port)
        .world();
    deliver(&w, "s@example.org", "u@corp.test");
    deliver(&w, "s@example.org", "u@deep.sub.corp.test");
    deliver(&w, "s@example.org", "u@elsewhere.test");
    assert_eq!(a.recipients(), ["u@corp.test"], "the first of two matches");
    assert_eq!(b.recipients(), ["u@deep.sub.corp.test"], "*.corp.test");
    assert_eq!(c.recipients(), ["u@elsewhere.test"], "the catch-all");
    assert!(default.messages().is_empty(), "no mail fell through");
}

#[test]
fn a_sender_domain_route_sends_a_brands_mail_through_its_relay() {
    let dir = tempfile::tempdir().unwrap();
    let brand = SmtpServer::start(dir.path(), &[]);
    let default = SmtpServer::start(dir.path(), &[]);
    let w = Setup::smarthost(default.port)
        .route_to_relay("* from brand.test", brand.port)
        .plain_relay(brand.port)
        .world();
    deliver(&w, "news@brand.test", "u@x.test");
    deliver(&w, "someone@other.test", "v@x.test");
    assert_eq!(brand.recipients(), ["u@x.test"]);
    assert_eq!(brand.messages()[0].mail_from, "news@brand.test");
    assert_eq!(
        default.recipients(),
        ["v@x.test"],
        "other senders: the default"
    );
}

#[test]
fn an_mx_route_delivers_by_mx_even_with_a_smarthost() {
    let dir = tempfile::tempdir().unwrap();
    let mx = SmtpServer::start(dir.path(), &[]);
    let smarthost = SmtpServer::start(dir.path(), &[]);
    // An address literal needs no DNS: MX delivery to 127.0.0.1 on the
    // test server's port.
    let w = Setup::smarthost(smarthost.port)
        .line(&format!(
            "smtp_port = {}\ntls = none\nresolver = 127.0.0.1:9",
            mx.port
        ))
        .route("* from direct.test -> mx")
        .world();
    deliver(&w, "s@direct.test", "u@[127.0.0.1]");
    deliver(&w, "s@relayed.test", "v@[127.0.0.1]");
    assert_eq!(mx.recipients(), ["u@[127.0.0.1]"]);
    assert_eq!(smarthost.recipients(), ["v@[127.0.0.1]"]);
}

#[test]
fn a_local_route_delivers_locally_for_a_domain_that_is_not_ours() {
    let dir = tempfile::tempdir().unwrap();
    let smarthost = SmtpServer::start(dir.path(), &[]);
    let w = Setup::smarthost(smarthost.port)
        .route("intranet.test -> local")
        .world();
    std::fs::create_dir(w.dir.path().join("mail")).unwrap();
    let me = spoolmail::local::User::by_uid(nix::unistd::geteuid().as_raw())
        .expect("a password entry for the test user")
        .name;
    deliver(&w, "s@example.org", &format!("{me}@intranet.test"));
    let mbox = std::fs::read_to_string(w.dir.path().join("mail").join(&me))
        .expect("delivered to the local mailbox");
    assert!(mbox.contains("Subject: route test"), "{mbox}");
    assert!(smarthost.messages().is_empty());
}

#[test]
fn an_error_route_fails_the_recipient_and_the_bounce_carries_its_text() {
    let dir = tempfile::tempdir().unwrap();
    let server = SmtpServer::start(dir.path(), &[]);
    let w = Setup::smarthost(server.port)
        .route("blocked.test -> error 550 5.7.1 We do not send mail there")
        .world();
    let out = w.sendmail(
        &["-odi", "-f", "s@example.org", "u@blocked.test", "ok@x.test"],
        MSG,
    );
    assert_exit(&out, 69);
    let got = server.wait_messages(2, WAIT);
    assert_eq!(got[0].rcpt_tos, ["ok@x.test"], "the others go on");
    let dsn = &got[1];
    assert_eq!(dsn.mail_from, "");
    assert_eq!(dsn.rcpt_tos, ["s@example.org"]);
    let text = String::from_utf8_lossy(&dsn.data);
    assert!(
        text.contains("Final-Recipient: rfc822; u@blocked.test"),
        "{text}"
    );
    assert!(text.contains("Status: 5.7.1"), "{text}");
    assert!(
        text.contains("550 5.7.1 We do not send mail there"),
        "{text}"
    );
    assert!(wait_for(WAIT, || w.queue_ids().is_empty()));
}

#[test]
fn a_bad_route_line_is_a_config_error_with_its_line_number() {
    let w = World::with_config("route = good.test -> mx\nroute = bad.test => mx\n");
    let out = w.sendmail(&["-f", "s@example.org", "u@x.test"], MSG);
    assert_exit(&out, 78);
    let err = String::from_utf8_lossy(&out.stderr);
    // The test config has 5 lines before the extra ones (see tests/common).
    let line = std::fs::read_to_string(&w.config)
        .unwrap()
        .lines()
        .position(|l| l.starts_with("route = bad.test"))
        .unwrap()
        + 1;
    assert!(
        err.contains(&format!("spoolmail.conf:{line}: route: expected")),
        "{err}"
    );
    assert!(w.queue_ids().is_empty(), "nothing queued");
}
