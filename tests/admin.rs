//! Queue administration (issue 14): `mailq --delete`, `--hold`,
//! `--release` against a real SMTP server, and against a runner that is
//! delivering the message at that moment. (An ordinary user acting on
//! another's message: tests/hostile, which has the accounts.)

mod common;

use std::process::Stdio;

use common::smtpd::SmtpServer;
use common::*;

const MSG: &[u8] = b"Subject: admin\n\nbody\n";
const WAIT: std::time::Duration = std::time::Duration::from_secs(60);

fn world(server: &SmtpServer) -> World {
    Setup::smarthost(server.port).world()
}

fn queue(w: &World, n: usize) -> Vec<String> {
    for i in 0..n {
        let rcpt = format!("r{i}@example.org");
        assert_success(&w.sendmail(&["-odq", &rcpt], MSG));
    }
    let ids = w.queue_ids();
    assert_eq!(ids.len(), n);
    ids
}

#[test]
fn delete_removes_the_messages_named_and_all() {
    let dir = tempfile::tempdir().unwrap();
    let server = SmtpServer::start(dir.path(), &[]);
    let w = world(&server);
    let ids = queue(&w, 3);
    let out = w.run("mailq", &["--delete", &ids[1]], b"");
    assert_success(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("{}: removed", ids[1])));
    assert_eq!(w.queue_ids(), vec![ids[0].clone(), ids[2].clone()]);
    // A name that is not queued: said so, 66, nothing else touched.
    let out = w.run("mailq", &["--delete", &ids[1]], b"");
    assert_eq!(out.status.code(), Some(66), "{out:?}");
    assert_eq!(w.queue_ids().len(), 2);
    let out = w.run("mailq", &["--delete", "ALL"], b"");
    assert_success(&out);
    assert!(
        String::from_utf8_lossy(&out.stdout).ends_with("\n2 message(s) removed\n"),
        "{out:?}"
    );
    assert!(w.queue_ids().is_empty());
    assert!(
        std::fs::read_dir(w.spool.join("state"))
            .unwrap()
            .next()
            .is_none()
    );
    assert_success(&w.sendmail(&["-q"], b""));
    assert!(
        server.messages().is_empty(),
        "nothing deleted was delivered"
    );
}

#[test]
fn a_held_message_is_never_delivered_until_released() {
    let dir = tempfile::tempdir().unwrap();
    let server = SmtpServer::start(dir.path(), &[]);
    let w = world(&server);
    let ids = queue(&w, 2);
    let held = &ids[0];
    assert_success(&w.run("mailq", &["--hold", held], b""));
    let listing = String::from_utf8_lossy(&w.run("mailq", &[], b"").stdout).into_owned();
    assert!(listing.contains(&format!("{held}!")), "{listing}");
    assert!(listing.contains("on hold"), "{listing}");
    let q = w.mailq_json();
    assert_eq!(q[0]["held"], true, "{q:?}");
    assert_eq!(q[1]["held"], false, "{q:?}");
    // A plain run and a forced one deliver the other message only.
    assert_success(&w.sendmail(&["-q"], b""));
    // The plain run filed it a day later: not looked at by every run.
    let buckets: Vec<String> = std::fs::read_dir(w.spool.join("schedule"))
        .unwrap()
        .flatten()
        .filter(|b| b.path().join(held).exists())
        .map(|b| b.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        buckets.len() == 1 && buckets[0] != "0",
        "held, filed under {buckets:?}"
    );
    assert_success(&w.sendmail(&[&format!("-qI{held}")], b""));
    assert_eq!(server.messages().len(), 1);
    assert_eq!(w.queue_ids(), vec![held.clone()]);
    // Released: due at once, delivered by the runner the release starts.
    let out = w.run("mailq", &["--release", held], b"");
    assert_success(&out);
    assert!(
        wait_for(WAIT, || w.queue_ids().is_empty()),
        "the released message was delivered"
    );
    assert_eq!(server.messages().len(), 2);
}

#[test]
fn an_action_leaves_a_message_a_runner_is_delivering_alone() {
    let dir = tempfile::tempdir().unwrap();
    let slow = SmtpServer::start(dir.path(), &["--dot-delay", "30"]);
    let w = world(&slow);
    let ids = queue(&w, 1);
    let mut runner = w
        .command("sendmail")
        .arg("-q")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let window = w.spool.join("window");
    assert!(
        wait_for(WAIT, || std::fs::read_dir(&window)
            .is_ok_and(|mut d| d.next().is_some())),
        "the runner reached the final dot"
    );
    // It waits for the claim, then gives up: 75, the message untouched.
    let out = w.run("mailq", &["--delete", &ids[0]], b"");
    assert_eq!(out.status.code(), Some(75), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("a runner is delivering it"));
    assert_eq!(w.queue_ids(), ids);
    let _ = runner.kill();
    let _ = runner.wait();
}

#[test]
fn the_actions_go_alone_and_need_messages() {
    let w = World::new();
    for args in [
        &["--delete"][..],
        &["--hold", "--release", "ALL"],
        &["-q", "--delete", "ALL"],
    ] {
        let out = w.run("mailq", args, b"");
        assert_eq!(out.status.code(), Some(64), "{args:?}: {out:?}");
    }
    let out = w.sendmail(&["--delete", "ALL"], b"");
    assert_eq!(out.status.code(), Some(64), "not without -bp: {out:?}");
}

/// `--requeue`: a message deferred for an unreachable smarthost, retry
/// an hour away and the destination in the unreachable cache, is
/// attempted at once and delivered.
#[test]
fn requeue_attempts_now_past_the_retry_time_and_the_unreachable_cache() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let w = Setup::smarthost(port).line("retry_min = 1h").world();
    let ids = queue(&w, 1);
    assert_success(&w.sendmail(&["-q"], b""));
    let q = w.mailq_json();
    assert_eq!(q[0]["recipients"][0]["status"], "deferred", "{q:?}");
    // The smarthost is back, at another port (same destination, still
    // remembered as unreachable): a plain run leaves the message be.
    let dir = tempfile::tempdir().unwrap();
    let server = SmtpServer::start(dir.path(), &[]);
    w.repoint(server.port);
    assert_success(&w.sendmail(&["-q"], b""));
    assert!(server.messages().is_empty(), "not due, destination cached");
    let out = w.run("mailq", &["--requeue", &ids[0]], b"");
    assert_success(&out);
    assert!(
        wait_for(WAIT, || w.queue_ids().is_empty()),
        "requeued and delivered"
    );
    assert_eq!(server.messages().len(), 1);
}

/// `--return`: the sender gets a failure DSN naming the administrator,
/// and the message leaves the queue; a bounce is never bounced (D8).
#[test]
fn return_sends_the_sender_a_dsn_and_removes_the_message() {
    let dir = tempfile::tempdir().unwrap();
    let server = SmtpServer::start(
        dir.path(),
        &[
            "--rcpt-reply",
            "r0@example.org=451 4.3.0 later",
            "--rcpt-reply",
            "r1@example.org=451 4.3.0 later",
        ],
    );
    let w = world(&server);
    assert_success(&w.sendmail(&["-odq", "-f", "sender@example.org", "r0@example.org"], MSG));
    assert_success(&w.sendmail(&["-odq", "-f", "<>", "r1@example.org"], MSG));
    assert_success(&w.sendmail(&["-q"], b""));
    let ids = w.queue_ids();
    assert_eq!(ids.len(), 2, "both deferred");
    let out = w.run("mailq", &["--return", "ALL"], b"");
    assert_success(&out);
    assert!(
        wait_for(WAIT, || w.queue_ids().is_empty()),
        "returned messages leave the queue"
    );
    let got = server.messages();
    let notices: Vec<_> = got
        .iter()
        .filter(|m| m.rcpt_tos.iter().any(|r| r == "sender@example.org"))
        .collect();
    assert_eq!(notices.len(), 1, "one DSN, to the sender only: {got:?}");
    let text = String::from_utf8_lossy(&notices[0].data);
    assert!(
        text.contains("5.0.0") && text.contains("returned by the administrator"),
        "{text}"
    );
}

/// Messages chosen by recipient or sender (substrings, case ignored), or
/// by IDs on standard input (`postsuper -d -`).
#[test]
fn messages_are_chosen_by_recipient_sender_or_ids_on_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let server = SmtpServer::start(dir.path(), &[]);
    let w = world(&server);
    let ids = queue(&w, 3);
    assert_success(&w.sendmail(&["-odq", "-f", "Cron@Example.NET", "r9@example.org"], MSG));
    let all = w.queue_ids();
    let cron = all.iter().find(|id| !ids.contains(id)).unwrap().clone();
    let out = w.run("mailq", &["--hold", "--recipient", "R1@EXAMPLE"], b"");
    assert_success(&out);
    let q = w.mailq_json();
    let held: Vec<&str> = q
        .iter()
        .filter(|m| m["held"] == true)
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(held, vec![ids[1].as_str()], "{q:?}");
    let out = w.run("mailq", &["--delete", "--sender", "cron@example.net"], b"");
    assert_success(&out);
    assert!(!w.queue_ids().contains(&cron));
    let out = w.run(
        "mailq",
        &["--delete", "-"],
        format!("{}\n{}\n", ids[0], ids[2]).as_bytes(),
    );
    assert_success(&out);
    assert_eq!(
        w.queue_ids(),
        vec![ids[1].clone()],
        "only the held one is left"
    );
    let out = w.run("mailq", &["--sender", "x"], b"");
    assert_eq!(
        out.status.code(),
        Some(64),
        "a selector without an action: {out:?}"
    );
}

/// A held message does not expire: past `queue_lifetime` a run leaves it
/// queued and held; once released, it is past its lifetime and bounces.
#[test]
fn a_held_message_does_not_expire_until_released() {
    let dir = tempfile::tempdir().unwrap();
    let server = SmtpServer::start(dir.path(), &[]);
    let w = Setup::smarthost(server.port)
        .line("retry_min = 1s\nretry_max = 1s\nqueue_lifetime = 1s")
        .world();
    assert_success(&w.sendmail(
        &["-odq", "-f", "sender@example.org", "held@example.org"],
        MSG,
    ));
    let ids = w.queue_ids();
    assert_success(&w.run("mailq", &["--hold", &ids[0]], b""));
    // Time must pass here (the lifetime is what is tested), not a
    // condition: wait until the message is older than its lifetime.
    let submitted = std::time::Instant::now();
    assert!(wait_for(WAIT, || submitted.elapsed()
        > std::time::Duration::from_secs(2)));
    assert_success(&w.sendmail(&["-q"], b""));
    assert_success(&w.sendmail(&[&format!("-qI{}", ids[0])], b""));
    assert_eq!(w.queue_ids(), ids, "held, not expired");
    assert!(server.messages().is_empty());
    assert_success(&w.run("mailq", &["--release", &ids[0]], b""));
    assert!(
        wait_for(WAIT, || w.queue_ids().is_empty()),
        "expired once released"
    );
    let got = server.messages();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(
        got[0].rcpt_tos,
        vec!["sender@example.org".to_string()],
        "the bounce"
    );
}
