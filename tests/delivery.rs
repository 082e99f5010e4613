//! Delivery end to end: the built binary against a real SMTP server
//! (aiosmtpd, tests/peers/smtpd.py) on loopback, through the smarthost
//! route or the MX route with an address literal. DNS-routed delivery is
//! in tests/delivery_dns.rs.

mod common;

use std::net::TcpListener;
use std::process::Stdio;
use std::time::Duration;

use common::smtpd::SmtpServer;
use common::*;

const MSG: &[u8] = b"Subject: delivery test\n\nbody line\n.leading dot\n";
const WAIT: Duration = Duration::from_secs(60);
/// `-odi` delivery of one message to three recipients at one host.
const THREE_RECIPIENTS: &[&str] = &[
    "-odi",
    "-f",
    "s@example.org",
    "a@x.test",
    "b@x.test",
    "c@x.test",
];

/// A world whose smarthost is `server`, in plain text.
fn world_for(server: &SmtpServer, extra: &str) -> World {
    Setup::smarthost(server.port)
        .line("retry_min = 1s\nretry_max = 2s")
        .line(extra)
        .world()
}

/// A server offering STARTTLS with a fresh self-signed certificate for
/// "localhost"; returns it with the certificate's path.
fn tls_server(dir: &std::path::Path, extra: &[&str]) -> (SmtpServer, std::path::PathBuf) {
    let (cert, key) = common::smtpd::self_signed_cert(dir, "localhost");
    let mut args = vec!["--starttls", cert.to_str().unwrap(), key.to_str().unwrap()];
    args.extend_from_slice(extra);
    (SmtpServer::start(dir, &args), cert.clone())
}

/// A world relaying to `server` as smarthost "localhost" over verified
/// STARTTLS (trusting `cert`), with AUTH credentials.
fn auth_world(
    dir: &std::path::Path,
    server: &SmtpServer,
    cert: &std::path::Path,
    user: &str,
    password: &str,
) -> World {
    let pass = dir.join("password");
    std::fs::write(&pass, format!("{password}\n")).unwrap();
    Setup::verified_smarthost(server.port, "starttls", cert)
        .line(&format!(
            "auth_user = {user}\nauth_password_file = {}",
            pass.display()
        ))
        .world()
}

/// Polls until a runner has marked the final dot as sent without a
/// reply yet — its `window/ID` link, or where it cannot make one the
/// marker in the state file (`state/ID` itself: not the `ID.tmp-PID` it
/// is written as, which a kill before its rename leaves unread): it is
/// inside the RFC 1047 window.
fn wait_in_rfc1047_window(w: &World) -> bool {
    let (window_dir, state_dir) = (w.spool.join("window"), w.spool.join("state"));
    wait_for(WAIT, || {
        std::fs::read_dir(&window_dir).is_ok_and(|mut d| d.next().is_some())
            || std::fs::read_dir(&state_dir).is_ok_and(|d| {
                d.flatten().any(|e| {
                    !e.file_name().to_string_lossy().contains(".tmp-")
                        && std::fs::read_to_string(e.path())
                            .is_ok_and(|s| s.contains("\"final_dot_sent\":1"))
                })
            })
    })
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn three_recipients_on_one_host_are_one_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let server = SmtpServer::start(dir.path(), &[]);
    let w = world_for(&server, "");
    let out = w.sendmail(THREE_RECIPIENTS, MSG);
    assert_success(&out);
    let got = server.messages();
    assert_eq!(got.len(), 1, "one transaction: {got:?}");
    assert_eq!(got[0].mail_from, "s@example.org");
    assert_eq!(got[0].rcpt_tos, ["a@x.test", "b@x.test", "c@x.test"]);
    let data = String::from_utf8_lossy(&got[0].data);
    assert!(
        data.contains("\n.leading dot"),
        "dot-stuffing undone: {data}"
    );
    assert!(data.contains("Subject: delivery test"));
    assert!(
        w.queue_ids().is_empty(),
        "delivered messages leave the queue"
    );
    assert_eq!(server.connections(), 1);
}

#[test]
fn partial_failure_retries_only_the_failed_recipient() {
    let dir = tempfile::tempdir().unwrap();
    let first = SmtpServer::start(
        dir.path(),
        &["--rcpt-reply", "b@x.test=450 4.2.0 mailbox busy"],
    );
    let w = world_for(&first, "");
    let out = w.sendmail(
        &["-odi", "-f", "s@example.org", "a@x.test", "b@x.test"],
        MSG,
    );
    assert_exit(&out, 75);
    let got = first.messages();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].rcpt_tos, ["a@x.test"]);
    let ids = w.queue_ids();
    assert_eq!(ids.len(), 1, "b is still queued");
    let q = w.mailq_json();
    let rcpts = q[0]["recipients"].as_array().unwrap();
    let status = |addr: &str| {
        rcpts
            .iter()
            .find(|r| r["address"] == addr)
            .map(|r| r["status"].as_str().unwrap().to_string())
    };
    assert_eq!(status("a@x.test").as_deref(), Some("delivered"));
    assert_eq!(status("b@x.test").as_deref(), Some("deferred"));

    let dir2 = tempfile::tempdir().unwrap();
    let second = SmtpServer::start(dir2.path(), &[]);
    w.repoint(second.port);
    let out = w.sendmail(&[&format!("-qI{}", ids[0])], b"");
    assert_success(&out);
    let got = second.messages();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].rcpt_tos, ["b@x.test"], "a is never sent again");
    assert!(w.queue_ids().is_empty());
}

#[test]
fn permanent_failure_bounces_to_the_sender_from_the_null_sender() {
    let dir = tempfile::tempdir().unwrap();
    let server = SmtpServer::start(
        dir.path(),
        &["--rcpt-reply", "c@x.test=550 5.1.1 no such user"],
    );
    let w = world_for(&server, "");
    let out = w.sendmail(
        &["-odi", "-f", "s@example.org", "a@x.test", "c@x.test"],
        MSG,
    );
    assert_exit(&out, 69);
    assert!(stderr(&out).contains("5.1.1"), "{}", stderr(&out));
    // The bounce was committed before the original left, and -odi handed
    // it to a background runner.
    let got = server.wait_messages(2, WAIT);
    assert_eq!(got[0].rcpt_tos, ["a@x.test"], "c was refused at RCPT");
    let dsn = &got[1];
    assert_eq!(dsn.mail_from, "", "bounces come from <>");
    assert_eq!(dsn.rcpt_tos, ["s@example.org"]);
    let text = String::from_utf8_lossy(&dsn.data);
    assert!(text.contains("multipart/report"), "{text}");
    assert!(text.contains("Action: failed"), "{text}");
    assert!(text.contains("Final-Recipient: rfc822; c@x.test"), "{text}");
    assert!(text.contains("550 5.1.1 no such user"), "{text}");
    assert!(
        !text.contains("Final-Recipient: rfc822; a@x.test"),
        "{text}"
    );
    assert!(wait_for(WAIT, || w.queue_ids().is_empty()));
}

#[test]
fn a_bounce_that_fails_is_never_bounced() {
    let dir = tempfile::tempdir().unwrap();
    let server = SmtpServer::start(
        dir.path(),
        &["--rcpt-reply", "s@example.org=550 5.1.1 sender gone"],
    );
    let w = world_for(&server, "");
    // A message from <> (as a bounce is) to a recipient that fails.
    let out = w.sendmail(&["-odi", "-f", "<>", "s@example.org"], MSG);
    assert_exit(&out, 69);
    assert!(
        w.queue_ids().is_empty(),
        "no bounce of a bounce: {:?}",
        w.queue_ids()
    );
}

#[test]
fn too_many_recipients_continue_in_a_second_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let server = SmtpServer::start(dir.path(), &["--max-rcpt", "2"]);
    let w = world_for(&server, "");
    let out = w.sendmail(THREE_RECIPIENTS, MSG);
    assert_success(&out);
    let got = server.messages();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].rcpt_tos, ["a@x.test", "b@x.test"]);
    assert_eq!(got[1].rcpt_tos, ["c@x.test"]);
    assert_eq!(server.connections(), 1, "on the same connection");
}

#[test]
fn dropped_final_dot_reply_is_flagged_possibly_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let dropper = SmtpServer::start(dir.path(), &["--drop-after-dot"]);
    let w = world_for(&dropper, "");
    let out = w.sendmail(&["-odi", "-v", "-f", "s@example.org", "a@x.test"], MSG);
    assert_eq!(out.status.code(), Some(75), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("possibly delivered"),
        "{}",
        stderr(&out)
    );
    let q = w.mailq_json();
    assert_eq!(q.len(), 1);
    assert_eq!(q[0]["possibly_delivered"], true);
    let listing = w.run("mailq", &[], b"");
    assert!(
        String::from_utf8_lossy(&listing.stdout).contains("possibly delivered"),
        "{}",
        String::from_utf8_lossy(&listing.stdout)
    );

    let dir2 = tempfile::tempdir().unwrap();
    let good = SmtpServer::start(dir2.path(), &[]);
    w.repoint(good.port);
    let id = w.queue_ids()[0].clone();
    let out = w.sendmail(&["-v", &format!("-qI{id}")], b"");
    assert_success(&out);
    assert!(
        stderr(&out).contains("possible duplicate"),
        "{}",
        stderr(&out)
    );
    assert_eq!(good.messages().len(), 1);
    assert!(w.queue_ids().is_empty());
}

#[test]
fn burst_of_40_background_sendmails_delivers_all_within_max_connections() {
    let dir = tempfile::tempdir().unwrap();
    let server = SmtpServer::start(dir.path(), &["--dot-delay", "0.05"]);
    let w = world_for(&server, "max_connections = 3\nmax_host_connections = 3");
    let sent: Vec<String> = (0..40).map(|i| format!("r{i}@x.test")).collect();
    w.sendmail_burst("s@example.org", &sent, MSG);
    let got = server.wait_messages(40, WAIT);
    let mut rcpts: Vec<String> = got.iter().flat_map(|m| m.rcpt_tos.clone()).collect();
    rcpts.sort();
    rcpts.dedup();
    assert_eq!(rcpts.len(), 40, "every message arrived exactly once");
    assert_eq!(got.len(), 40, "no duplicates");
    assert!(
        server.max_concurrent() <= 3,
        "max_connections = 3 but {} were open at once",
        server.max_concurrent()
    );
    assert!(wait_for(WAIT, || w.queue_ids().is_empty()), "queue drained");
}

#[test]
fn unreachable_destination_costs_one_connection_attempt_per_run() {
    // A listener that accepts and hangs up at once: every attempt to
    // reach it is counted, and none gets an SMTP greeting.
    let (port, accepted) = common::hang_up::hang_up_listener();
    let w = World::with_config(&format!(
        "resolver = 127.0.0.1:9\nsmtp_port = {port}\nretry_min = 1h\nmax_connections = 4"
    ));
    for i in 0..20 {
        w.send_ok(&["-f", "s@example.org", &format!("r{i}@[127.0.0.1]")], MSG);
    }
    let out = w.sendmail(&["-q"], b"");
    assert_success(&out);
    assert_eq!(accepted.count(), 1, "one attempt for 20 messages");
    let q = w.mailq_json();
    assert_eq!(q.len(), 20);
    // The one tried is deferred; the others wait for the destination
    // without a state write of their own (still "queued").
    let status = |m: &serde_json::Value| m["recipients"][0]["status"].clone();
    assert!(
        q.iter()
            .all(|m| status(m) == "deferred" || status(m) == "queued")
    );
    assert_eq!(q.iter().filter(|m| status(m) == "deferred").count(), 1);
    // The next run finds nothing due: no connection at all.
    assert_success(&w.sendmail(&["-q"], b""));
    assert_eq!(accepted.count(), 1);
}

#[test]
fn queue_run_filters_select_messages() {
    let dir = tempfile::tempdir().unwrap();
    let server = SmtpServer::start(dir.path(), &[]);
    let w = world_for(&server, "");
    w.send_ok(&["-f", "alice@example.org", "one@x.test"], MSG);
    w.send_ok(&["-f", "bob@example.org", "two@x.test"], MSG);
    w.send_ok(&["-f", "bob@example.org", "three@x.test"], MSG);
    assert_success(&w.sendmail(&["-qRtwo"], b""));
    let got = server.messages();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].rcpt_tos, ["two@x.test"]);
    assert_success(&w.sendmail(&["-qSALICE"], b""));
    assert_eq!(server.messages().len(), 2);
    assert_eq!(w.queue_ids().len(), 1);
    assert_success(&w.sendmail(&["-q"], b""));
    assert_eq!(server.messages().len(), 3);
    assert!(w.queue_ids().is_empty());
}

#[test]
fn delay_warning_is_a_dsn_with_action_delayed() {
    // Both the recipient and the sender are deferred by the server, so
    // the original and its notice both stay queued where we can see them.
    let dir = tempfile::tempdir().unwrap();
    let server = SmtpServer::start(
        dir.path(),
        &[
            "--rcpt-reply",
            "a@x.test=451 4.3.0 later",
            "--rcpt-reply",
            "s@example.org=451 4.3.0 later",
        ],
    );
    let w = world_for(&server, "delay_warning = 0s");
    let out = w.sendmail(&["-odi", "-f", "s@example.org", "a@x.test"], MSG);
    assert_exit(&out, 75);
    let ids = w.queue_ids();
    assert_eq!(ids.len(), 2, "the original and the delay notice");
    let notice = ids
        .iter()
        .find(|id| w.envelope(id).sender.is_empty())
        .expect("a message from <>");
    assert_eq!(w.envelope(notice).recipients, ["s@example.org"]);
    let data = String::from_utf8_lossy(&w.data(notice)).into_owned();
    assert!(data.contains("Action: delayed"), "{data}");
    assert!(data.contains("Final-Recipient: rfc822; a@x.test"), "{data}");
    // One warning per message, however often it is retried.
    let original = ids.iter().find(|id| *id != notice).unwrap();
    assert_success(&w.sendmail(&[&format!("-qI{original}")], b""));
    assert_eq!(w.queue_ids().len(), 2, "{:?}", w.queue_ids());
    // A notice is itself never warned about (it comes from <>).
    assert_success(&w.sendmail(&[&format!("-qI{notice}")], b""));
    assert_eq!(w.queue_ids().len(), 2, "{:?}", w.queue_ids());
}

#[test]
fn expired_messages_bounce_without_another_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let server = SmtpServer::start(dir.path(), &[]);
    let w = Setup::smarthost(server.port)
        .line("retry_min = 0s\nqueue_lifetime = 0s")
        .world();
    let id = w.send_ok(&["-f", "s@example.org", "a@x.test"], MSG);
    assert_success(&w.sendmail(&[&format!("-qI{id}")], b""));
    // The original expired: nothing reached the server, and the only
    // message left is the bounce (itself not delivered by -qI).
    assert!(server.messages().is_empty());
    let ids = w.queue_ids();
    assert_eq!(ids.len(), 1);
    assert_ne!(ids[0], id);
    assert_eq!(w.envelope(&ids[0]).sender, "");
    let text = String::from_utf8_lossy(&w.data(&ids[0])).into_owned();
    assert!(text.contains("Status: 4.4.7"), "{text}");
    assert!(text.contains("Action: failed"), "{text}");
}

#[test]
fn runner_killed_mid_transaction_loses_nothing() {
    killed_in_the_window(|_| {});
}

/// The same where no window link can be made (a spool whose `window` is
/// not a directory, as for a runner that may not link the queue file):
/// the marker goes into the state file, and it shows the same way.
#[test]
fn runner_killed_mid_transaction_without_a_window_link_loses_nothing() {
    killed_in_the_window(|w| {
        std::fs::create_dir_all(&w.spool).unwrap();
        std::fs::write(w.spool.join("window"), b"not a directory").unwrap();
    });
}

/// A runner killed in the RFC 1047 window: the message stays queued,
/// `mailq` says possibly delivered before any retry, the retry is logged
/// as a possible duplicate and delivers it once.
fn killed_in_the_window(prepare: impl Fn(&World)) {
    let dir = tempfile::tempdir().unwrap();
    let slow = SmtpServer::start(dir.path(), &["--dot-delay", "30"]);
    let w = world_for(&slow, "");
    prepare(&w);
    let mut child = w
        .command("sendmail")
        .args(["-odi", "-f", "s@example.org", "a@x.test"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(MSG).unwrap();
    }
    // Wait until the runner is inside the RFC 1047 window.
    let in_window = wait_in_rfc1047_window(&w);
    assert!(in_window, "the runner never recorded the final dot");
    child.kill().unwrap();
    child.wait().unwrap();
    let ids = w.queue_ids();
    assert_eq!(ids.len(), 1, "the message is still queued");
    assert!(w.tmp_files().is_empty());
    // From the marker alone, before any retry (issue 11, defect 3).
    let q = w.mailq_json();
    assert_eq!(q[0]["possibly_delivered"], true, "{q:?}");

    let dir2 = tempfile::tempdir().unwrap();
    let good = SmtpServer::start(dir2.path(), &[]);
    w.repoint(good.port);
    let out = w.sendmail(&["-v", &format!("-qI{}", ids[0])], b"");
    assert_success(&out);
    assert!(
        stderr(&out).contains("possibly delivered"),
        "{}",
        stderr(&out)
    );
    assert_eq!(good.messages().len(), 1);
    assert!(w.queue_ids().is_empty());
    let window = std::fs::read_dir(w.spool.join("window")).map_or(0, |d| d.count());
    assert_eq!(window, 0, "the window's marker went with the message");
}

#[test]
fn killed_before_the_dot_leaves_a_clean_retry() {
    // A server that never answers the greeting: the runner is killed
    // while waiting, before any data went out.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let held = std::thread::spawn(move || listener.accept().map(|(s, _)| s));
    let w = Setup::smarthost(port).world();
    let mut child = w
        .command("sendmail")
        .args(["-odi", "-f", "s@example.org", "a@x.test"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(MSG).unwrap();
    }
    let _socket = held.join().unwrap().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let q = w.mailq_json();
    assert_eq!(q.len(), 1);
    assert_eq!(q[0]["possibly_delivered"], false);
}

#[test]
fn a_message_to_an_address_literal_uses_the_mx_route() {
    let dir = tempfile::tempdir().unwrap();
    let server = SmtpServer::start(dir.path(), &[]);
    let w = World::with_config(&format!(
        "resolver = 127.0.0.1:9\nsmtp_port = {}\ntls = none",
        server.port
    ));
    let out = w.sendmail(&["-odi", "-f", "s@example.org", "a@[127.0.0.1]"], MSG);
    assert_success(&out);
    assert_eq!(server.messages()[0].rcpt_tos, ["a@[127.0.0.1]"]);
}

#[test]
fn starttls_opportunistic_accepts_a_self_signed_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _cert) = tls_server(dir.path(), &[]);
    let w = World::with_config(&format!(
        "resolver = 127.0.0.1:9\nsmtp_port = {}\ntls = opportunistic",
        server.port
    ));
    let out = w.sendmail(&["-odi", "-f", "s@example.org", "a@[127.0.0.1]"], MSG);
    assert_success(&out);
    let got = server.messages();
    assert_eq!(got.len(), 1);
    assert!(got[0].tls, "the message went over TLS");
}

#[test]
fn starttls_required_with_verification_defers_on_a_self_signed_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _cert) = tls_server(dir.path(), &[]);
    let w = World::with_config(&format!(
        "resolver = 127.0.0.1:9\nsmtp_port = {}\ntls = required",
        server.port
    ));
    let out = w.sendmail(&["-odi", "-f", "s@example.org", "a@[127.0.0.1]"], MSG);
    assert_exit(&out, 75);
    assert!(
        server.messages().is_empty(),
        "nothing sent without verified TLS"
    );
    assert_eq!(w.queue_ids().len(), 1);
}

#[test]
fn auth_against_a_server_that_requires_it() {
    let dir = tempfile::tempdir().unwrap();
    let (server, cert) = tls_server(dir.path(), &["--require-auth", "relayuser:s3cret pass"]);
    let w = auth_world(dir.path(), &server, &cert, "relayuser", "s3cret pass");
    let out = w.sendmail(&["-odi", "-f", "s@example.org", "a@x.test"], MSG);
    assert_success(&out);
    let got = server.messages();
    assert_eq!(got.len(), 1);
    assert!(got[0].tls);
    assert_eq!(got[0].auth_user.as_deref(), Some("relayuser"));
}

#[test]
fn auth_is_never_sent_in_clear_text() {
    let dir = tempfile::tempdir().unwrap();
    let server = SmtpServer::start(dir.path(), &[]);
    let pass = dir.path().join("password");
    std::fs::write(&pass, "secret\n").unwrap();
    let w = Setup::smarthost(server.port)
        .line(&format!(
            "auth_user = u\nauth_password_file = {}",
            pass.display()
        ))
        .world();
    let out = w.sendmail(&["-odi", "-f", "s@example.org", "a@x.test"], MSG);
    assert_exit(&out, 75);
    assert!(server.messages().is_empty());
}

#[test]
fn background_delivery_returns_before_the_server_answers() {
    // The caller must not wait for delivery (RFC 1123 §5.3.1.1): with a
    // server that takes 30 s to answer the final dot, sendmail still
    // exits at once, and its output pipes close (the runner holds none).
    let dir = tempfile::tempdir().unwrap();
    let slow = SmtpServer::start(dir.path(), &["--dot-delay", "30"]);
    let w = world_for(&slow, "");
    let out = w.sendmail_delivering(&["-f", "s@example.org", "a@x.test"], MSG);
    assert_success(&out);
    // sendmail has exited and its output pipes reached EOF, so the
    // detached runner holds neither; yet the runner goes on and enters
    // the RFC 1047 window, where the server keeps it for 30 s.
    let in_window = wait_in_rfc1047_window(&w);
    assert!(in_window, "the detached runner did not deliver");
}

#[test]
fn auth_login_when_plain_is_not_offered() {
    let dir = tempfile::tempdir().unwrap();
    let (server, cert) = tls_server(
        dir.path(),
        &["--require-auth", "loginuser:pw", "--no-auth-plain"],
    );
    let w = auth_world(dir.path(), &server, &cert, "loginuser", "pw");
    assert_success(&w.sendmail(&["-odi", "-f", "s@example.org", "a@x.test"], MSG));
    assert_eq!(server.messages()[0].auth_user.as_deref(), Some("loginuser"));
}

#[test]
fn implicit_tls_smarthost() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = common::smtpd::self_signed_cert(dir.path(), "localhost");
    let server = SmtpServer::start(
        dir.path(),
        &[
            "--implicit-tls",
            cert.to_str().unwrap(),
            key.to_str().unwrap(),
        ],
    );
    let w = Setup::verified_smarthost(server.port, "tls", &cert).world();
    assert_success(&w.sendmail(&["-odi", "-f", "s@example.org", "a@x.test"], MSG));
    assert_eq!(server.messages().len(), 1);
}

#[test]
fn a_queue_run_with_an_interval_keeps_running() {
    // `sendmail -q1s` is a service: it runs a pass, sleeps, runs again.
    let dir = tempfile::tempdir().unwrap();
    let server = SmtpServer::start(dir.path(), &[]);
    let w = world_for(&server, "");
    let mut service = w
        .command("sendmail")
        .arg("-q1s")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Queued after the service started: only a later pass can take them.
    w.send_ok(&["-f", "s@example.org", "one@x.test"], MSG);
    server.wait_messages(1, WAIT);
    w.send_ok(&["-f", "s@example.org", "two@x.test"], MSG);
    server.wait_messages(2, WAIT);
    assert!(service.try_wait().unwrap().is_none(), "still running");
    service.kill().unwrap();
    service.wait().unwrap();
}

#[test]
fn an_unknown_local_user_bounces_with_5_1_1() {
    let dir = tempfile::tempdir().unwrap();
    let server = SmtpServer::start(dir.path(), &[]);
    let w = world_for(&server, "");
    let out = w.sendmail(
        &["-odi", "-f", "s@example.org", "no-such-user-spoolmail-test"],
        MSG,
    );
    assert_eq!(out.status.code(), Some(69), "{}", stderr(&out));
    assert!(stderr(&out).contains("no such user"), "{}", stderr(&out));
    let got = server.wait_messages(1, WAIT);
    assert_eq!(got[0].mail_from, "");
    assert_eq!(got[0].rcpt_tos, ["s@example.org"]);
    let text = String::from_utf8_lossy(&got[0].data);
    assert!(text.contains("Status: 5.1.1"), "{text}");
}

/// Queues a message whose one recipient the server refuses (550), kills
/// `sendmail -q` at the syscall strace's `inject` names, then runs the
/// queue again: returns how many failure notices reached the server.
fn notices_after_a_kill(inject: &str, queued_after_kill: usize) -> Option<usize> {
    if std::process::Command::new("strace")
        .arg("-V")
        .output()
        .is_err()
    {
        eprintln!("skipped: needs strace for fault injection");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = SmtpServer::start(
        dir.path(),
        &["--rcpt-reply", "c@x.test=550 5.1.1 no such user"],
    );
    let w = world_for(&server, "max_connections = 1");
    assert_success(&w.sendmail(&["-f", "s@example.org", "c@x.test"], MSG));
    let out = std::process::Command::new("strace")
        .args(["-f", "-o", "/dev/null", "-e", inject])
        .arg(w.bin.join("sendmail"))
        .arg("-C")
        .arg(&w.config)
        .arg("-q")
        .output()
        .unwrap();
    assert!(!out.status.success(), "the run was killed: {out:?}");
    assert_eq!(
        w.queue_ids().len(),
        queued_after_kill,
        "{:?}",
        w.queue_ids()
    );
    assert_success(&w.run("sendmail", &["-q"], b""));
    assert!(wait_for(WAIT, || w.queue_ids().is_empty()));
    Some(
        server
            .messages()
            .into_iter()
            .filter(|m| m.mail_from.is_empty())
            .count(),
    )
}

/// `-odi` reports its own attempt even when a queue run lists the queue
/// between the message's commit and that attempt (the CI failure of
/// 2026-12-07: a background runner took the message and the caller was
/// told only "deferred"). strace holds the `-odi` process for a second
/// at the exit of its one fsync — that of `queue/`, after the rename, so
/// the message is visible — while a forced run (`-qR`) looks for it.
#[test]
fn a_queue_run_between_an_odi_commit_and_its_attempt_leaves_the_message_to_it() {
    if std::process::Command::new("strace")
        .arg("-V")
        .output()
        .is_err()
    {
        eprintln!("skipped: needs strace for fault injection");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = SmtpServer::start(dir.path(), &[]);
    let w = world_for(&server, "");
    let mut odi = std::process::Command::new("strace")
        .args(["-f", "-o", "/dev/null", "-e"])
        .arg("inject=fsync:delay_exit=1000000:when=1")
        .arg(w.bin.join("sendmail"))
        .arg("-C")
        .arg(&w.config)
        .args(["-odi", "-f", "s@example.org", "a@x.test"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = odi.stdin.take().unwrap();
        stdin.write_all(MSG).unwrap();
    }
    assert!(wait_for(WAIT, || w.queue_ids().len() == 1), "committed");
    assert_success(&w.sendmail(&["-qRa@x.test"], b""));
    assert!(
        server.messages().is_empty(),
        "the queue run left the message to its caller"
    );
    let out = odi.wait_with_output().unwrap();
    assert_success(&out);
    assert_eq!(server.messages().len(), 1, "delivered once, by -odi");
    assert!(w.queue_ids().is_empty());
}

/// Issue 11, defect 2: a runner killed after it queued a failure notice
/// and before the original left the queue must not make the next run
/// send a second notice. The kill lands on the third unlink of the run
/// (the first clears the smarthost's unreachable record after the
/// connection; the second closes the RFC 1047 window the transaction
/// opened before MAIL, once the refusal is recorded; the third is the
/// original's removal, which follows the notice's commit).
#[test]
fn a_runner_killed_after_queueing_a_notice_never_sends_a_second() {
    if let Some(n) = notices_after_a_kill("inject=unlink:signal=KILL:when=3", 2) {
        assert_eq!(n, 1, "exactly one failure notice");
    }
}

/// The other side: killed as the notice, already recorded in the
/// original's state, is renamed into the queue (the run's only
/// renameat2): the next run queues the sealed notice — not zero notices,
/// not two.
#[test]
fn a_runner_killed_while_queueing_a_notice_still_sends_one() {
    if let Some(n) = notices_after_a_kill("inject=renameat2:signal=KILL:when=1", 1) {
        assert_eq!(n, 1, "exactly one failure notice");
    }
}

/// Issue 12, defect 1: a long recipient list at one destination goes in
/// transactions of at most `smtp_recipient_limit` on one connection —
/// never more than a server allows — and each recipient gets one copy.
#[test]
fn a_long_recipient_list_goes_in_transactions_of_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let server = SmtpServer::start(dir.path(), &[]);
    let w = world_for(&server, "smtp_recipient_limit = 100");
    let rcpts: Vec<String> = (0..250).map(|i| format!("r{i:03}@x.test")).collect();
    let mut args = vec!["-odi", "-f", "s@example.org"];
    args.extend(rcpts.iter().map(String::as_str));
    assert_success(&w.sendmail(&args, MSG));
    let got = server.wait_messages(3, WAIT);
    let sizes: Vec<usize> = got.iter().map(|m| m.rcpt_tos.len()).collect();
    assert_eq!(sizes, [100, 100, 50]);
    let mut all: Vec<String> = got.into_iter().flat_map(|m| m.rcpt_tos).collect();
    all.sort();
    assert_eq!(all, rcpts, "each recipient exactly once");
    assert_eq!(server.connections(), 1, "on one connection");
}

/// A server that takes fewer recipients than `smtp_recipient_limit`
/// answers 452 beyond its own limit: the later transactions ask no more
/// of it than it took, so only the first one meets any 452.
#[test]
fn after_a_452_later_transactions_ask_no_more_than_the_server_took() {
    let dir = tempfile::tempdir().unwrap();
    let server = SmtpServer::start(dir.path(), &["--max-rcpt", "30"]);
    let w = world_for(&server, "smtp_recipient_limit = 100");
    let rcpts: Vec<String> = (0..90).map(|i| format!("r{i:03}@x.test")).collect();
    let mut args = vec!["-odi", "-f", "s@example.org"];
    args.extend(rcpts.iter().map(String::as_str));
    assert_success(&w.sendmail(&args, MSG));
    let got = server.wait_messages(3, WAIT);
    let sizes: Vec<usize> = got.iter().map(|m| m.rcpt_tos.len()).collect();
    assert_eq!(sizes, [30, 30, 30]);
    let refused = server.rcpt_refusals();
    assert_eq!(
        refused, 1,
        "one 452: no RCPT after it, and later transactions ask for 30"
    );
}

#[test]
fn after_a_452_no_further_recipient_goes_out_in_that_transaction() {
    // 300 recipients in one transaction, pipelined in windows of 100; the
    // server takes 40. Sending the other 260 would earn 260 452s (Postfix
    // drops a client after 20 errors).
    let dir = tempfile::tempdir().unwrap();
    let server = SmtpServer::start(dir.path(), &["--max-rcpt", "40"]);
    let w = world_for(&server, "smtp_recipient_limit = 300\nmax_recipients = 300");
    let rcpts: Vec<String> = (0..300).map(|i| format!("r{i:03}@x.test")).collect();
    let mut args = vec!["-odi", "-f", "s@example.org"];
    args.extend(rcpts.iter().map(String::as_str));
    assert_success(&w.sendmail(&args, MSG));
    let got = server.messages();
    let mut delivered: Vec<String> = got.iter().flat_map(|m| m.rcpt_tos.clone()).collect();
    delivered.sort();
    assert_eq!(delivered, rcpts, "each recipient exactly once");
    let refused = server.rcpt_refusals();
    assert!(
        refused < 100,
        "no RCPT sent after the first 452 was read, only those already in flight: {refused} refused"
    );
}

#[test]
fn size_declares_the_crlf_size_so_an_oversized_message_is_refused_before_data() {
    // 300 short lines: the stored (LF) size is under the server's limit,
    // the size on the wire (CRLF, what RFC 1870 counts) is over it.
    let mut msg = b"Subject: size test\n\n".to_vec();
    for _ in 0..300 {
        msg.extend_from_slice(b"line\n");
    }
    let w = Setup::smarthost(1).line("retry_min = 1s").world();
    let id = w.send_ok(&["-f", "s@example.org", "r@x.test"], &msg);
    let stored = w.envelope(&id).size as usize;
    let limit = stored + 150;
    let dir = tempfile::tempdir().unwrap();
    let server = SmtpServer::start(dir.path(), &["--size", &limit.to_string()]);
    w.repoint(server.port);
    let out = w.sendmail(&[&format!("-qI{id}")], b"");
    assert_success(&out);
    let declared: Vec<_> = server
        .mail_commands()
        .into_iter()
        .filter(|(sender, _)| sender == "s@example.org")
        .collect();
    assert!(
        declared.is_empty(),
        "refused from the announced size before MAIL (stored {stored}, limit {limit}), not after DATA: {declared:?}"
    );
    assert!(
        server.messages().iter().all(|m| m.rcpt_tos != ["r@x.test"]),
        "not delivered"
    );
    assert!(
        w.queue_ids().iter().all(|q| *q != id),
        "failed, not retried"
    );
}

#[test]
fn the_declared_size_is_what_the_server_receives() {
    let dir = tempfile::tempdir().unwrap();
    let server = SmtpServer::start(dir.path(), &["--size", "10000000"]);
    let w = world_for(&server, "");
    let msg = b"Subject: counted\n\n.a dot-stuffed line\nbare\rcr\nno final newline";
    assert_success(&w.sendmail(&["-odi", "-f", "s@example.org", "r@x.test"], msg));
    let got = server.messages();
    assert_eq!(got.len(), 1);
    let size = got[0]
        .mail_options
        .iter()
        .find_map(|o| o.strip_prefix("SIZE="))
        .expect("SIZE= declared");
    // aiosmtpd keeps the content as received: CRLF line endings, quoting
    // dots removed, the terminating dot line not included.
    assert_eq!(
        size,
        got[0].data.len().to_string(),
        "{:?}",
        String::from_utf8_lossy(&got[0].data)
    );
}

/// The content note a queue file carries (an extended attribute), if any.
fn content_note(path: &std::path::Path) -> Option<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    let mut buf = [0u8; 256];
    // SAFETY: NUL-terminated strings, a buffer valid for its length.
    let n = unsafe {
        libc::getxattr(
            path.as_ptr(),
            c"user.spoolmail.content".as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    (n > 0).then(|| buf[..n as usize].to_vec())
}

/// Replaces the content note of a queue file.
fn set_content_note(path: &std::path::Path, note: &str) {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: NUL-terminated strings, a value valid for its length.
    let rc = unsafe {
        libc::setxattr(
            path.as_ptr(),
            c"user.spoolmail.content".as_ptr(),
            note.as_ptr().cast(),
            note.len(),
            0,
        )
    };
    assert_eq!(rc, 0, "setxattr: {}", std::io::Error::last_os_error());
}

#[test]
fn what_submission_found_in_the_content_decides_body_8bitmime() {
    // Issue 24 item 1: 8-bit content is found at submission, as Postfix's
    // cleanup finds it, and kept with the queue file; the delivery takes
    // BODY=8BITMIME (and SIZE=) from that note, not from a second read —
    // unless the note is not about the file's octets.
    let dir = tempfile::tempdir().unwrap();
    let server = SmtpServer::start(dir.path(), &[]);
    let w = world_for(&server, "");
    let queue = w.spool.join("queue");
    let eight = w.send_ok(
        &["-f", "eight@example.org", "r@x.test"],
        "Subject: x\n\nh\u{e9}llo\n".as_bytes(),
    );
    let Some(note) = content_note(&queue.join(&eight)) else {
        eprintln!("skipped: the spool's file system keeps no user attributes");
        return;
    };
    let note = String::from_utf8(note).unwrap();
    eprintln!("note: {note}");
    assert!(
        note.starts_with("content1 ") && note.contains(" body8=1 "),
        "{note}"
    );
    // Two ASCII messages, each given a note that says 8-bit: the one
    // whose octet count matches is believed (BODY=8BITMIME declared for
    // ASCII is harmless, and shows which was read); the other is read.
    let believed = w.send_ok(
        &["-f", "believed@example.org", "r@x.test"],
        b"Subject: y\n\nplain\n",
    );
    let stale = w.send_ok(
        &["-f", "stale@example.org", "r@x.test"],
        b"Subject: y\n\nplain\n",
    );
    let own = String::from_utf8(content_note(&queue.join(&believed)).unwrap()).unwrap();
    assert!(own.contains(" body8=0 "), "{own}");
    set_content_note(
        &queue.join(&believed),
        &own.replace(" body8=0 ", " body8=1 "),
    );
    let octets = w.envelope(&stale).size;
    set_content_note(
        &queue.join(&stale),
        &own.replace(" body8=0 ", " body8=1 ").replace(
            &format!("octets={octets} "),
            &format!("octets={} ", octets + 1),
        ),
    );
    assert_success(&w.sendmail(&["-q"], b""));
    server.wait_messages(3, Duration::from_secs(30));
    let declared = |sender: &str| {
        let mails = server.mail_commands();
        let (_, params) = mails
            .iter()
            .find(|(s, _)| s == sender)
            .unwrap_or_else(|| panic!("no MAIL from {sender}: {mails:?}"));
        params.iter().any(|p| p == "BODY=8BITMIME")
    };
    assert!(declared("eight@example.org"));
    assert!(declared("believed@example.org"), "the note was read");
    assert!(
        !declared("stale@example.org"),
        "a note about other octets is not"
    );
}
