//! The mail log as the usual tools read it: every record under a
//! Postfix-style identity (`spoolmail/pickup`, `spoolmail/smtp`, …) with
//! Postfix's fields, written to a syslog receiver of the test's own, then
//! summarised by Debian's real `pflogsumm`, whose counts must be right.

mod common;

use common::smtpd::SmtpServer;
use common::syslog::{SyslogReceiver, pflogsumm, total};
use common::{Setup, World, assert_exit, assert_success, wait_for};
use nix::unistd::User;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

/// The identity of a log line (`spoolmail/smtp`), without its pid.
fn ident(line: &str) -> &str {
    // "Dec 02 22:30:01 HOST IDENT[PID]: …"
    let field = line.split(' ').nth(4).unwrap_or("");
    field.split('[').next().unwrap_or("")
}

/// The lines about queue ID `id` (after the identity).
fn about<'a>(lines: &'a [String], id: &str) -> Vec<&'a str> {
    let key = format!("]: {id}: ");
    lines
        .iter()
        .filter(|l| l.contains(&key))
        .map(String::as_str)
        .collect()
}

fn me() -> User {
    User::from_uid(nix::unistd::geteuid())
        .unwrap()
        .expect("a password entry")
}

fn world(server: &SmtpServer, syslog: &SyslogReceiver, extra: &str) -> World {
    let w = Setup::smarthost(server.port)
        .line(&syslog.config_line())
        .line(extra)
        .world();
    std::fs::create_dir(w.dir.path().join("mail")).unwrap();
    w
}

#[test]
fn pflogsumm_counts_what_was_received_delivered_deferred_and_bounced() {
    let dir = tempfile::tempdir().unwrap();
    let syslog = SyslogReceiver::start(dir.path());
    let server = SmtpServer::start(
        dir.path(),
        &[
            "--rcpt-reply",
            "bounce@remote.example=550 5.1.1 no such user",
            "--rcpt-reply",
            "defer@remote.example=451 4.3.0 try again later",
        ],
    );
    let w = world(&server, &syslog, "");
    let from = ["-odi", "-f", "sender@remote.example"];
    for _ in 0..3 {
        let out = w.run(
            "sendmail",
            &[&from[..], &["ok@remote.example"]].concat(),
            b"Subject: ok\n\nok\n",
        );
        assert_success(&out);
    }
    let bounced = w.run(
        "sendmail",
        &[&from[..], &["bounce@remote.example"]].concat(),
        b"Subject: b\n\nb\n",
    );
    assert_exit(&bounced, 69);
    let deferred = w.run(
        "sendmail",
        &[&from[..], &["defer@remote.example"]].concat(),
        b"Subject: d\n\nd\n",
    );
    assert_exit(&deferred, 75);
    let local = w.run(
        "sendmail",
        &[&from[..], &[me().name.as_str()]].concat(),
        b"Subject: l\n\nl\n",
    );
    assert_success(&local);
    // The non-delivery notice goes to the sender through the smarthost.
    assert!(
        wait_for(WAIT, || server
            .messages()
            .iter()
            .any(|m| m.mail_from.is_empty())),
        "the notice arrived"
    );

    // 6 messages handed in, 5 copies sent (3, the local one, the notice).
    let lines = syslog.wait_lines(WAIT, |lines| {
        lines.iter().filter(|l| l.contains("status=sent")).count() >= 5
            && lines.iter().filter(|l| l.ends_with(": removed")).count() >= 6
    });
    let text = lines.join("\n");
    println!("{text}");
    let pickups: Vec<&String> = lines
        .iter()
        .filter(|l| ident(l) == "spoolmail/pickup")
        .collect();
    assert_eq!(
        pickups.len(),
        6,
        "one pickup line per message handed in:\n{text}"
    );
    let uid = nix::unistd::geteuid().as_raw();
    for p in &pickups {
        assert!(
            p.ends_with(&format!("uid={uid} from=<sender@remote.example>")),
            "{p}"
        );
        let id = p.split("]: ").nth(1).unwrap().split(':').next().unwrap();
        let qmgr = about(&lines, id)
            .into_iter()
            .filter(|l| ident(l) == "spoolmail/qmgr" && l.contains("from=<"))
            .collect::<Vec<_>>();
        assert_eq!(qmgr.len(), 1, "{id}: one from= line:\n{text}");
        assert!(
            qmgr[0].contains(", size=") && qmgr[0].ends_with(", nrcpt=1 (queue active)"),
            "{}",
            qmgr[0]
        );
    }
    let with = |what: &str| -> Vec<&String> { lines.iter().filter(|l| l.contains(what)).collect() };
    let relay = format!("relay=127.0.0.1[127.0.0.1]:{}", server.port);
    let sent_smtp = with("status=sent");
    assert_eq!(sent_smtp.len(), 5, "{text}");
    for l in &sent_smtp {
        if l.contains(&format!("to=<{}>", me().name)) || l.contains("relay=local") {
            assert_eq!(ident(l), "spoolmail/local", "{l}");
            assert!(l.contains("relay=local,"), "{l}");
        } else {
            assert_eq!(ident(l), "spoolmail/smtp", "{l}");
            assert!(l.contains(&relay) && l.contains(", dsn=2."), "{l}");
            // Which TLS policy applied, after the status (issue 26).
            assert!(l.contains("), tls="), "{l}");
        }
    }
    let bounce_line = with("status=bounced");
    assert_eq!(bounce_line.len(), 1, "{text}");
    assert_eq!(ident(bounce_line[0]), "spoolmail/smtp");
    assert!(
        bounce_line[0].contains("to=<bounce@remote.example>")
            && bounce_line[0].contains("dsn=5.1.1")
    );
    let defer_line = with("status=deferred");
    assert_eq!(defer_line.len(), 1, "{text}");
    assert!(
        defer_line[0].contains("to=<defer@remote.example>") && defer_line[0].contains("dsn=4.3.0")
    );
    // The notice: named by the bounce service, queued with the null
    // sender, delivered, removed.
    let notices = with("sender non-delivery notification: ");
    assert_eq!(notices.len(), 1, "{text}");
    assert_eq!(ident(notices[0]), "spoolmail/bounce");
    let notice_id = notices[0].rsplit(' ').next().unwrap();
    let of_notice = about(&lines, notice_id);
    assert!(
        of_notice.iter().any(|l| l.contains("from=<>, size=")),
        "{text}"
    );
    assert!(
        of_notice
            .iter()
            .any(|l| l.contains("to=<sender@remote.example>") && l.contains("status=sent")),
        "{text}"
    );
    // Every message that left the queue says so, the deferred one does not.
    let deferred_id = defer_line[0]
        .split("]: ")
        .nth(1)
        .unwrap()
        .split(':')
        .next()
        .unwrap();
    for l in with(": removed") {
        assert_eq!(ident(l), "spoolmail/qmgr", "{l}");
        assert!(!l.contains(deferred_id), "{l}");
    }

    let totals = pflogsumm(&syslog.log, &["--syslog-name=spoolmail"]);
    assert_eq!(total(&totals, "received"), 6, "{totals:?}");
    assert_eq!(total(&totals, "delivered"), 5, "{totals:?}");
    assert_eq!(total(&totals, "deferred"), 1, "{totals:?}");
    assert_eq!(total(&totals, "bounced"), 1, "{totals:?}");
    // Without --syslog-name it sees none of it: the name is ours.
    let foreign = pflogsumm(&syslog.log, &[]);
    assert_eq!(total(&foreign, "received"), 0, "{foreign:?}");
}

#[test]
fn syslog_name_postfix_is_read_by_tools_that_know_only_postfix() {
    let dir = tempfile::tempdir().unwrap();
    let syslog = SyslogReceiver::start(dir.path());
    let server = SmtpServer::start(dir.path(), &[]);
    let w = world(&server, &syslog, "syslog_name = postfix\n");
    for _ in 0..2 {
        assert_success(&w.run(
            "sendmail",
            &["-odi", "-f", "s@remote.example", "r@remote.example"],
            b"\n",
        ));
    }
    let lines = syslog.wait_lines(WAIT, |lines| {
        lines.iter().filter(|l| l.contains("status=sent")).count() >= 2
    });
    assert!(
        lines.iter().all(|l| ident(l).starts_with("postfix/")),
        "{lines:?}"
    );
    let totals = pflogsumm(&syslog.log, &[]);
    assert_eq!(total(&totals, "received"), 2, "{totals:?}");
    assert_eq!(total(&totals, "delivered"), 2, "{totals:?}");
}

/// Addresses and replies are escaped in the log (issue 20): a quoted
/// local part with `>`, `,` and `=`, a sender with a bidi override, a
/// reply quoting a whole delivered line. pflogsumm still reads every
/// line, and counts only what happened: one delivered, one deferred.
#[test]
fn escaped_fields_are_still_counted_right_by_pflogsumm() {
    let dir = tempfile::tempdir().unwrap();
    let syslog = SyslogReceiver::start(dir.path());
    let server = SmtpServer::start(
        dir.path(),
        &[
            "--rcpt-reply",
            "defer@remote.example=451 4.3.0 to=<a@b>, relay=r, delay=0, dsn=2.0.0, status=sent (",
        ],
    );
    let w = world(&server, &syslog, "");
    let odd = r#""a>, b=c"@remote.example"#;
    let sender = "s\u{202e}gpj@remote.example";
    assert_success(&w.run("sendmail", &["-odi", "-f", sender, odd], b"\n"));
    let out = w.run(
        "sendmail",
        &["-odi", "-f", sender, "defer@remote.example"],
        b"\n",
    );
    assert_exit(&out, 75);
    let lines = syslog.wait_lines(WAIT, |lines| {
        lines.iter().filter(|l| l.contains(", dsn=")).count() >= 2
    });
    let text = lines.join("\n");
    println!("{text}");
    assert!(
        text.contains(r#"to=<"a\x3e\x2c b\x3dc"@remote.example>, relay=127.0.0.1"#),
        "{text}"
    );
    assert!(
        text.contains(r"from=<s\u{202e}gpj@remote.example>, size="),
        "{text}"
    );
    assert!(!text.contains('\u{202e}'), "{text}");
    let totals = pflogsumm(&syslog.log, &["--syslog-name=spoolmail"]);
    assert_eq!(total(&totals, "received"), 2, "{totals:?}");
    assert_eq!(total(&totals, "delivered"), 1, "{totals:?}");
    assert_eq!(total(&totals, "deferred"), 1, "{totals:?}");
}

#[test]
fn a_bad_syslog_name_is_a_config_error_with_its_line() {
    let w = World::with_config("syslog_name = spool/mail\n");
    let out = w.sendmail(&["r@remote.example"], b"\n");
    assert_exit(&out, 78);
    let err = String::from_utf8_lossy(&out.stderr);
    let text = std::fs::read_to_string(&w.config).unwrap();
    let n = 1 + text
        .lines()
        .position(|l| l.starts_with("syslog_name"))
        .unwrap();
    let line_of_key = format!("{}:{n}: syslog_name", w.config.display());
    assert!(err.contains(&line_of_key), "{err}");
    assert!(w.queue_ids().is_empty());
}
