//! Relay lists end to end: the built binary against real SMTP servers
//! (aiosmtpd, tests/peers/smtpd.py) on loopback — one down (a port where
//! nothing listens), one refusing every connection with 421, one
//! accepting — under `failover` and `spread`.

mod common;

use std::net::TcpListener;
use std::time::Duration;

use common::smtpd::SmtpServer;
use common::*;

const MSG: &[u8] = b"Subject: relay test\n\nbody\n";
const WAIT: Duration = Duration::from_secs(60);

/// A loopback port where nothing listens (bound, then let go).
fn down_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// A server that answers every connection with 421 and closes it.
fn refusing_server(dir: &std::path::Path) -> SmtpServer {
    SmtpServer::start(
        dir,
        &[
            "--greeting",
            "421 4.3.2 Service not available, closing channel",
        ],
    )
}

/// The unreachable record of relay 127.0.0.1:`port`, if any.
fn relay_record(w: &World, port: u16) -> Option<serde_json::Value> {
    relay_record_named(w, "127.0.0.1", port)
}

fn relay_record_named(w: &World, host: &str, port: u16) -> Option<serde_json::Value> {
    let path = w
        .spool
        .join("hosts")
        .join(format!("dest-relay+{host}+{port}.status"));
    std::fs::read(path)
        .ok()
        .map(|b| serde_json::from_slice(&b).expect("a JSON record"))
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn a_burst_arrives_once_at_the_healthy_relay_and_the_others_are_tried_once() {
    let dir = tempfile::tempdir().unwrap();
    let down = down_port();
    let refusing = refusing_server(dir.path());
    let good = SmtpServer::start(dir.path(), &[]);
    let w = Setup::smarthosts(&[down, refusing.port, good.port])
        .line("smarthost_policy = failover\nretry_min = 1h\nmax_connections = 3")
        .world();
    const N: usize = 30;
    let expected: Vec<String> = (0..N).map(|i| format!("r{i:02}@x.test")).collect();
    w.sendmail_burst("s@example.org", &expected, MSG);
    good.wait_messages(N, WAIT);
    assert!(wait_for(WAIT, || w.queue_ids().is_empty()), "queue drained");
    assert_eq!(good.recipients(), expected, "every message exactly once");
    // The down relay was tried once for the whole burst: one failure on
    // its record, which holds it back for retry_min.
    let record = relay_record(&w, down).expect("the down relay is recorded");
    assert_eq!(record["failures"], 1, "{record}");
    assert!(record["unreachable_until"].as_u64().unwrap() > unix_now() + 3000);
    // The 421 one (issue 27: up, but full): its first 421 halves this
    // host's connections to it (3 → 1), the second, with one, records
    // it like an unreachable relay: two connections for the whole burst.
    assert_eq!(refusing.connections(), 2);
    let record = relay_record(&w, refusing.port).expect("the 421 relay is recorded");
    assert!(
        record["last_error"].as_str().unwrap().contains("421"),
        "{record}"
    );
    assert_eq!(record["limit"], 1, "{record}");
    assert_eq!(record["failures"], 1, "{record}");
    assert!(record["unreachable_until"].as_u64().unwrap() > unix_now() + 3000);
    // A later queue run tries neither again before their retry time.
    let id = w.send_ok(&["-f", "s@example.org", "late@x.test"], MSG);
    assert_success(&w.sendmail(&["-q"], b""));
    // The run's worker may find every slot still held by a burst runner
    // on its way out; then that runner's last look delivers it.
    assert!(wait_for(WAIT, || !w.queue_ids().contains(&id)), "delivered");
    assert_eq!(good.wait_messages(N + 1, WAIT).len(), N + 1);
    assert_eq!(refusing.connections(), 2);
    assert_eq!(relay_record(&w, down).unwrap()["failures"], 1);
}

#[test]
fn failover_returns_to_the_first_relay_after_its_retry_time() {
    let dir = tempfile::tempdir().unwrap();
    let first_port = down_port();
    let second = SmtpServer::start(dir.path(), &[]);
    let w = Setup::smarthosts(&[first_port, second.port])
        .line("retry_min = 5s\nretry_max = 5s")
        .world();
    // Queued, then a queue run (which honours the unreachable cache;
    // -odi, like -qI, forces an attempt at every relay).
    let send = |to: &str| {
        w.send_ok(&["-f", "s@example.org", to], MSG);
        assert_success(&w.sendmail(&["-q"], b""));
    };
    // The first is down: both go to the second, the first tried once.
    send("one@x.test");
    send("two@x.test");
    assert_eq!(second.recipients(), ["one@x.test", "two@x.test"]);
    let record = relay_record(&w, first_port).expect("the first relay is recorded");
    assert_eq!(record["failures"], 1, "tried for the first message only");
    // It comes back; once its retry time has passed, mail goes to it again.
    let first = SmtpServer::start(dir.path(), &["--port", &first_port.to_string()]);
    let until = record["unreachable_until"].as_u64().unwrap();
    assert!(wait_for(WAIT, || unix_now() >= until));
    send("three@x.test");
    send("four@x.test");
    assert_eq!(first.recipients(), ["four@x.test", "three@x.test"]);
    assert_eq!(second.messages().len(), 2, "the second got no more");
    assert_eq!(relay_record(&w, first_port), None, "reachable again");
}

#[test]
fn spread_uses_every_healthy_relay() {
    let dir = tempfile::tempdir().unwrap();
    let a = SmtpServer::start(dir.path(), &[]);
    let b = SmtpServer::start(dir.path(), &[]);
    let down = down_port();
    let w = Setup::smarthosts(&[a.port, b.port, down])
        .line("smarthost_policy = spread\nretry_min = 1h")
        .world();
    const N: usize = 40;
    for i in 0..N {
        w.send_ok(&["-f", "s@example.org", &format!("r{i:02}@x.test")], MSG);
    }
    assert_success(&w.sendmail(&["-q"], b""));
    assert!(w.queue_ids().is_empty(), "all delivered by the run");
    let (got_a, got_b) = (a.recipients(), b.recipients());
    // The distribution, for the record (`cargo test -- --nocapture`).
    println!(
        "spread over 2 healthy relays and 1 down: {} / {} / 0 of {N}",
        got_a.len(),
        got_b.len()
    );
    assert!(
        !got_a.is_empty() && !got_b.is_empty(),
        "both healthy relays used: {} and {}",
        got_a.len(),
        got_b.len()
    );
    let mut all = [got_a, got_b].concat();
    all.sort();
    let expected: Vec<String> = (0..N).map(|i| format!("r{i:02}@x.test")).collect();
    assert_eq!(all, expected, "each message exactly once");
    // The down relay was tried once, not once per message whose hash
    // put it first.
    assert_eq!(relay_record(&w, down).unwrap()["failures"], 1);
}

#[test]
fn a_5xx_at_rcpt_is_the_relays_answer_not_a_reason_to_fail_over() {
    let dir = tempfile::tempdir().unwrap();
    let first = SmtpServer::start(
        dir.path(),
        &["--rcpt-reply", "c@x.test=550 5.1.1 no such user"],
    );
    let second = SmtpServer::start(dir.path(), &[]);
    let w = Setup::smarthosts(&[first.port, second.port]).world();
    let out = w.sendmail(
        &["-odi", "-f", "s@example.org", "a@x.test", "c@x.test"],
        MSG,
    );
    assert_exit(&out, 69);
    // a went through the first; c bounced there; the bounce (to the
    // sender) goes through the first too.
    let got = first.wait_messages(2, WAIT);
    assert_eq!(got[0].rcpt_tos, ["a@x.test"]);
    assert_eq!(got[1].rcpt_tos, ["s@example.org"]);
    assert!(String::from_utf8_lossy(&got[1].data).contains("550 5.1.1 no such user"));
    assert!(second.messages().is_empty(), "no failover for a 5xx");
}

#[test]
fn mailq_shows_the_relay_each_recipient_last_went_to_or_failed_at() {
    let dir = tempfile::tempdir().unwrap();
    let down = down_port();
    let good = SmtpServer::start(
        dir.path(),
        &["--rcpt-reply", "b@x.test=450 4.2.0 mailbox busy"],
    );
    let w = Setup::smarthosts(&[down, good.port])
        .line("retry_min = 1h")
        .world();
    let out = w.sendmail(
        &["-odi", "-f", "s@example.org", "a@x.test", "b@x.test"],
        MSG,
    );
    assert_exit(&out, 75);
    let q = w.mailq_json();
    let relay_of = |addr: &str| {
        q[0]["recipients"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["address"] == addr)
            .and_then(|r| r["relay"].as_str().map(String::from))
    };
    let good_relay = format!("127.0.0.1[127.0.0.1]:{}", good.port);
    assert_eq!(relay_of("a@x.test").as_deref(), Some(good_relay.as_str()));
    assert_eq!(relay_of("b@x.test").as_deref(), Some(good_relay.as_str()));
    let text = String::from_utf8(w.run("mailq", &[], b"").stdout).unwrap();
    assert!(
        text.contains(&format!("<b@x.test> deferred relay={good_relay}")),
        "{text}"
    );

    // Every relay down: the recipient failed at the last one tried.
    let down2 = down_port();
    let w = Setup::smarthosts(&[down, down2])
        .line("retry_min = 1h")
        .world();
    let out = w.sendmail(&["-odi", "-f", "s@example.org", "c@x.test"], MSG);
    assert_exit(&out, 75);
    let q = w.mailq_json();
    let r = &q[0]["recipients"][0];
    assert_eq!(r["status"], "deferred");
    assert_eq!(
        r["relay"].as_str(),
        Some(format!("127.0.0.1[127.0.0.1]:{down2}").as_str()),
        "{r}"
    );
    // Both are recorded; the next message waits for the earliest retry
    // without a connection or a state write ("waiting" in mailq).
    assert!(relay_record(&w, down).is_some() && relay_record(&w, down2).is_some());
    let id = w.send_ok(&["-f", "s@example.org", "d@x.test"], MSG);
    assert_success(&w.sendmail(&["-q"], b""));
    let q = w.mailq_json();
    let m = q.iter().find(|m| m["id"] == id.as_str()).unwrap();
    assert_eq!(m["recipients"][0]["status"], "queued");
    assert!(
        m["recipients"][0]["waiting"]
            .as_str()
            .is_some_and(|s| s.starts_with("relay 127.0.0.1:") && s.contains("unreachable until")),
        "{m}"
    );
    assert_eq!(relay_record(&w, down).unwrap()["failures"], 1);
}

#[test]
fn each_relay_has_its_own_credentials_and_tls_mode() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = common::smtpd::self_signed_cert(dir.path(), "localhost");
    let (cert_s, key_s) = (cert.to_str().unwrap(), key.to_str().unwrap());
    // Both demand AUTH over TLS. The first is given credentials and
    // `tls=none`: it fails AUTH (never sent in clear text), so the next
    // is tried at once, over verified STARTTLS with its own user.
    let first = SmtpServer::start(
        dir.path(),
        &["--starttls", cert_s, key_s, "--require-auth", "first:right"],
    );
    let second = SmtpServer::start(
        dir.path(),
        &[
            "--starttls",
            cert_s,
            key_s,
            "--require-auth",
            "second:secret",
        ],
    );
    let pass = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let (first_pass, second_pass) = (
        pass("first.pass", "right\n"),
        pass("second.pass", "secret\n"),
    );
    let w = World::with_config(&format!(
        "smarthost = localhost:{p1}, localhost:{p2}\ntls_ca_file = {ca}\n\
         relay = localhost:{p1} tls=none auth_user=first auth_password_file={first_pass}\n\
         relay = localhost:{p2} tls=starttls auth_user=second auth_password_file={second_pass}\n\
         retry_min = 1h",
        p1 = first.port,
        p2 = second.port,
        ca = cert.display(),
    ));
    assert_success(&w.sendmail(&["-odi", "-f", "s@example.org", "a@x.test"], MSG));
    let got = second.wait_messages(1, WAIT);
    assert_eq!(got[0].auth_user.as_deref(), Some("second"));
    assert!(got[0].tls);
    assert!(first.messages().is_empty());
    let record = std::fs::read_to_string(
        w.spool
            .join("hosts")
            .join(format!("dest-relay+localhost+{}.status", first.port)),
    )
    .expect("the relay that refused AUTH is recorded");
    assert!(record.contains("failures"), "{record}");
}

#[test]
fn a_relay_refusing_the_password_is_left_for_the_next_in_the_same_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = common::smtpd::self_signed_cert(dir.path(), "localhost");
    let (cert_s, key_s) = (cert.to_str().unwrap(), key.to_str().unwrap());
    // The first takes the credentials over TLS and answers 535.
    let refusing = SmtpServer::start(
        dir.path(),
        &["--starttls", cert_s, key_s, "--require-auth", "first:right"],
    );
    let good = SmtpServer::start(dir.path(), &[]);
    let wrong = dir.path().join("wrong.pass");
    std::fs::write(&wrong, "not the password\n").unwrap();
    let w = World::with_config(&format!(
        "smarthost = localhost:{p1}, 127.0.0.1:{p2}\ntls_ca_file = {ca}\n\
         relay = localhost:{p1} tls=starttls auth_user=first auth_password_file={wrong}\n\
         relay = 127.0.0.1:{p2} tls=none\nretry_min = 1h",
        p1 = refusing.port,
        p2 = good.port,
        ca = cert.display(),
        wrong = wrong.display(),
    ));
    assert_success(&w.sendmail(&["-odi", "-f", "s@example.org", "a@x.test"], MSG));
    assert_eq!(good.wait_messages(1, WAIT)[0].rcpt_tos, ["a@x.test"]);
    assert!(refusing.messages().is_empty());
    // (aiosmtpd logs a connection again after STARTTLS: counted as is.)
    let tried = refusing.connections();
    assert!(tried > 0, "the refusing relay was tried");
    let record = relay_record_named(&w, "localhost", refusing.port)
        .expect("the relay that refused the password is recorded");
    assert_eq!(record["failures"], 1, "{record}");
    assert!(
        record.to_string().contains("535"),
        "the record says why: {record}"
    );
    // The next message goes straight to the good relay.
    w.send_ok(&["-f", "s@example.org", "b@x.test"], MSG);
    assert_success(&w.sendmail(&["-q"], b""));
    assert_eq!(good.wait_messages(2, WAIT).len(), 2);
    assert_eq!(
        refusing.connections(),
        tried,
        "not tried again before its retry time"
    );
}

/// A 421 once MAIL is under way is about the message, not the relay
/// (issue 20: a relay that finds one user's mail suspicious answers it
/// so): the message goes on to the next relay in the same attempt, and
/// the relay is not recorded as unreachable — the next message tries it
/// again. (Until issue 20 it was recorded, and one message could hold a
/// relay back for everyone's mail.)
#[test]
fn a_relay_answering_421_in_the_transaction_is_left_for_the_next_for_that_message_only() {
    let dir = tempfile::tempdir().unwrap();
    let closing = SmtpServer::start(
        dir.path(),
        &["--mail-reply", "421 4.3.2 Shutting down, closing channel"],
    );
    let good = SmtpServer::start(dir.path(), &[]);
    let w = Setup::smarthosts(&[closing.port, good.port])
        .line("retry_min = 1h\nmax_connections = 1")
        .world();
    for i in 0..5 {
        w.send_ok(&["-f", "s@example.org", &format!("r{i}@x.test")], MSG);
    }
    assert_success(&w.sendmail(&["-q"], b""));
    assert!(w.queue_ids().is_empty(), "all delivered by the one run");
    assert_eq!(good.messages().len(), 5);
    // Each message was offered to the first relay, once.
    assert_eq!(closing.mail_commands().len(), 5);
    assert_eq!(relay_record(&w, closing.port), None, "not recorded down");
    // A forced attempt too goes to the first, then on to the second.
    let out = w.sendmail(&["-odi", "-f", "s@example.org", "forced@x.test"], MSG);
    assert_success(&out);
    assert_eq!(good.messages().len(), 6);
    assert_eq!(closing.mail_commands().len(), 6);
}

/// Every relay of the list answers 421 to one message: it is deferred
/// with that reply, for its own retry time (its backoff), not as
/// "waiting" for the relays; nothing is recorded against them, and the
/// next message goes to the first relay as usual.
#[test]
fn a_message_every_relay_answers_421_waits_for_its_own_retry() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["--data-reply-from", "bad@example.org=421 4.7.0 suspicious"];
    let first = SmtpServer::start(dir.path(), &args);
    let second = SmtpServer::start(dir.path(), &args);
    let w = Setup::smarthosts(&[first.port, second.port])
        .line("retry_min = 1h")
        .world();
    let start = unix_now();
    let id = w.send_ok(&["-f", "bad@example.org", "a@x.test"], MSG);
    assert_success(&w.sendmail(&["-q"], b""));
    let end = unix_now();
    let q = w.mailq_json();
    let r = &q[0]["recipients"][0];
    assert_eq!(r["status"], "deferred", "{r}");
    assert_eq!(r["last_error"], "421 4.7.0 suspicious", "{r}");
    assert_eq!(
        r["relay"].as_str(),
        Some(format!("127.0.0.1[127.0.0.1]:{}", second.port).as_str()),
        "{r}"
    );
    assert!(
        r["next_attempt"].as_u64().unwrap() > unix_now() + 1000,
        "{r}"
    );
    // retry_min, jittered up to one step later (issue 27).
    let next = r["next_attempt"].as_u64().unwrap();
    assert!((start + 3600..=end + 2 * 3600).contains(&next), "{r}");
    assert_eq!(relay_record(&w, first.port), None);
    assert_eq!(relay_record(&w, second.port), None);
    w.send_ok(&["-f", "good@example.org", "b@x.test"], MSG);
    assert_success(&w.sendmail(&["-q"], b""));
    assert_eq!(first.recipients(), ["b@x.test"]);
    assert_eq!(w.queue_ids(), [id]);
}

#[test]
fn a_421_to_the_final_dot_sends_the_message_to_the_next_relay_once() {
    let dir = tempfile::tempdir().unwrap();
    let closing = SmtpServer::start(
        dir.path(),
        &["--data-reply", "421 4.3.2 Shutting down, closing channel"],
    );
    let good = SmtpServer::start(dir.path(), &[]);
    let w = Setup::smarthosts(&[closing.port, good.port])
        .line("retry_min = 1h")
        .world();
    w.send_ok(&["-f", "s@example.org", "a@x.test", "b@x.test"], MSG);
    assert_success(&w.sendmail(&["-q"], b""));
    assert!(w.queue_ids().is_empty(), "delivered in the one run");
    let got = good.messages();
    assert_eq!(got.len(), 1, "one copy, at the next relay");
    assert_eq!(got[0].rcpt_tos, ["a@x.test", "b@x.test"]);
    assert!(closing.messages().is_empty(), "the 421 took nothing");
    let window: Vec<_> = std::fs::read_dir(w.spool.join("window"))
        .map(|d| d.flatten().collect())
        .unwrap_or_default();
    assert!(window.is_empty(), "no RFC 1047 window left open");
}

/// A relay whose password file this runner cannot read (missing here; a
/// root-only 0600 file for a user's runner) is our trouble, not the
/// relay's: the message goes on to the next relay, and the relay is not
/// recorded down for everybody else's mail (issue 20's notes).
#[test]
fn an_unreadable_password_file_does_not_record_its_relay_down() {
    let dir = tempfile::tempdir().unwrap();
    let first = SmtpServer::start(dir.path(), &[]);
    let second = SmtpServer::start(dir.path(), &[]);
    let missing = dir.path().join("no-such.pass");
    let w = Setup::smarthosts(&[first.port, second.port])
        .line("smarthost_policy = failover")
        .line(&format!(
            "relay = 127.0.0.1:{} auth_user=first auth_password_file={}",
            first.port,
            missing.display()
        ))
        .line("retry_min = 1h")
        .world();
    assert_success(&w.sendmail(&["-odi", "-f", "s@example.org", "a@x.test"], MSG));
    second.wait_messages(1, WAIT);
    assert!(first.messages().is_empty());
    assert_eq!(
        relay_record(&w, first.port),
        None,
        "the relay was recorded down"
    );
}
