//! Masquerading end to end: the built binary called as the real callers
//! call it (mailutils' `-f user@host`, cron's `-FCronDaemon` without
//! `-f`, PHP's fifth parameter, `-bs`), delivering to a real SMTP server
//! (tests/peers/smtpd.py), and what that server got: the `MAIL FROM` and
//! the From/Sender/Reply-To fields. The host is `test.example`
//! (tests/common), its mail masqueraded as `example.com`, and
//! `*.internal` counts as local too.

mod common;

use std::time::Duration;

use common::smtpd::{Received, SmtpServer};
use common::*;

const WAIT: Duration = Duration::from_secs(60);
/// Where every test's mail goes: a remote recipient behind the smarthost.
const FAR: &str = "far@x.test";

/// A world relaying to `server`, with the masquerading keys in `keys`.
fn world(server: &SmtpServer, keys: &str) -> World {
    Setup::smarthost(server.port)
        .line("retry_min = 1s\nretry_max = 2s")
        .line(keys)
        .world()
}

/// The masquerading most tests use: a domain, `*.internal` local.
const MASQ: &str = "masquerade_domain = example.com\nmasquerade_local = *.internal\n";

/// The login of the user running the tests: the envelope sender when no
/// `-f` is given (from the password database, as sendmail reads it).
fn login() -> String {
    nix::unistd::User::from_uid(nix::unistd::getuid())
        .unwrap()
        .expect("a password entry for the test user")
        .name
}

/// Sends in the foreground (`-odi`: delivered before sendmail exits)
/// and returns the one message the server got.
fn deliver(w: &World, server: &SmtpServer, args: &[&str], stdin: &[u8]) -> Received {
    let mut argv = vec!["-odi"];
    argv.extend_from_slice(args);
    let out = w.run("sendmail", &argv, stdin);
    assert_success(&out);
    let got = server.wait_messages(1, WAIT);
    assert_eq!(got.len(), 1, "{got:?}");
    got[0].clone()
}

/// The received header section, line endings as LF.
fn header(r: &Received) -> String {
    let text = String::from_utf8_lossy(&r.data).replace("\r\n", "\n");
    split_message(text.as_bytes()).0
}

/// The raw lines of the field `name` (with continuation lines), as sent.
fn field(r: &Received, name: &str) -> Option<String> {
    let header = header(r);
    let mut lines = header.lines();
    let first = lines.find(|l| {
        l.split_once(':')
            .is_some_and(|(n, _)| n.eq_ignore_ascii_case(name))
    })?;
    let mut field = first.to_string();
    for next in lines.take_while(|l| l.starts_with([' ', '\t'])) {
        field.push('\n');
        field.push_str(next);
    }
    Some(field)
}

/// The addresses of a field, as the address parser reads them.
fn addresses(r: &Received, name: &str) -> Vec<String> {
    let value = header_value(&header(r), name).unwrap_or_else(|| panic!("no {name}: field"));
    spoolmail::address::parse_list(&value)
        .unwrap_or_else(|e| panic!("{name}: {value:?}: {}", e.message()))
        .iter()
        .map(ToString::to_string)
        .collect()
}

/// What mailutils' `mail` runs: `-oi -f user@host -t`, no From field.
fn mailutils(w: &World, server: &SmtpServer, from: &str) -> Received {
    let msg = format!("To: {FAR}\nSubject: mailutils\n\nbody\n");
    deliver(w, server, &["-oi", "-f", from, "-t"], msg.as_bytes())
}

#[test]
fn mailutils_f_user_at_host_is_masqueraded_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let server = SmtpServer::start(dir.path(), &[]);
    let w = world(&server, MASQ);
    let got = mailutils(&w, &server, &format!("alice@{HOSTNAME}"));
    assert_eq!(got.mail_from, "alice@example.com");
    assert_eq!(got.rcpt_tos, [FAR]);
    // The From: sendmail adds (from -f) is masqueraded as a From: field.
    assert_eq!(addresses(&got, "From"), ["alice@example.com"]);
}

#[test]
fn policy_keep_leaves_a_given_sender() {
    let dir = tempfile::tempdir().unwrap();
    let server = SmtpServer::start(dir.path(), &[]);
    let w = world(
        &server,
        &format!("{MASQ}masquerade_sender_override = keep\n"),
    );
    let got = mailutils(&w, &server, &format!("alice@{HOSTNAME}"));
    assert_eq!(got.mail_from, format!("alice@{HOSTNAME}"), "-f kept");
    // The policy is about the envelope: the From: field is a header and
    // follows masquerade_headers.
    assert_eq!(addresses(&got, "From"), ["alice@example.com"]);
}

#[test]
fn keep_still_masquerades_the_login_when_no_f_is_given() {
    let dir = tempfile::tempdir().unwrap();
    let server = SmtpServer::start(dir.path(), &[]);
    let w = world(
        &server,
        &format!("{MASQ}masquerade_sender_override = keep\n"),
    );
    let got = deliver(&w, &server, &[FAR], b"Subject: no -f\n\nbody\n");
    assert_eq!(got.mail_from, format!("{}@example.com", login()));
}

#[test]
fn a_foreign_f_is_kept_under_the_default_policy_and_rewritten_under_always() {
    let dir = tempfile::tempdir().unwrap();
    let server = SmtpServer::start(dir.path(), &[]);
    let w = world(&server, MASQ);
    let got = mailutils(&w, &server, "bounce@shop.example");
    assert_eq!(got.mail_from, "bounce@shop.example");
    assert_eq!(addresses(&got, "From"), ["bounce@shop.example"]);

    let dir = tempfile::tempdir().unwrap();
    let server = SmtpServer::start(dir.path(), &[]);
    let w = world(
        &server,
        &format!("{MASQ}masquerade_sender_override = always\n"),
    );
    let got = mailutils(&w, &server, "bounce@shop.example");
    assert_eq!(got.mail_from, "bounce@example.com");
    // Headers only ever change local addresses.
    assert_eq!(addresses(&got, "From"), ["bounce@shop.example"]);
}

/// What Debian's cron runs and writes (its sendmail command is hard-coded): no -f, the
/// recipient on the command line, `From: USER (Cron Daemon)`.
fn cron_message(user: &str) -> Vec<u8> {
    format!(
        "From: {user} (Cron Daemon)\nTo: {FAR}\nSubject: Cron <{user}@web01> echo hi\n\
         MIME-Version: 1.0\nContent-Type: text/plain; charset=UTF-8\n\
         Content-Transfer-Encoding: 8bit\nX-Cron-Env: <SHELL=/bin/sh>\n\nhi\n"
    )
    .into_bytes()
}

#[test]
fn cron_without_f_leaves_as_the_login_at_the_masquerading_domain() {
    let dir = tempfile::tempdir().unwrap();
    let server = SmtpServer::start(dir.path(), &[]);
    let w = world(&server, MASQ);
    let user = login();
    // As cron calls it: the default background delivery.
    let out = w.sendmail_delivering(
        &["-FCronDaemon", "-i", "-B8BITMIME", "-oem", FAR],
        &cron_message(&user),
    );
    assert_success(&out);
    let got = server.wait_messages(1, WAIT);
    assert_eq!(got[0].mail_from, format!("{user}@example.com"));
    // The bare name was qualified, then masqueraded; the comment stays.
    assert_eq!(
        field(&got[0], "From").unwrap(),
        format!("From: {user}@example.com (Cron Daemon)")
    );
    assert_eq!(
        field(&got[0], "To").unwrap(),
        format!("To: {FAR}"),
        "only From/Sender/Reply-To"
    );
}

#[test]
fn php_fifth_parameter_is_masqueraded_when_local() {
    // PHP: `sh -c "sendmail -t -i"` plus the fifth parameter; CRLF headers.
    let msg = format!(
        "To: {FAR}\r\nSubject: order\r\nFrom: Shop <www-data@web01.internal>\r\n\r\nthanks\n"
    );
    for (param, envelope) in [
        (
            "-f www-data@web01.internal".to_string(),
            "www-data@example.com",
        ),
        (format!("-fuser@{HOSTNAME}"), "user@example.com"),
        ("-fbounce@shop.example".to_string(), "bounce@shop.example"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let server = SmtpServer::start(dir.path(), &[]);
        let w = world(&server, MASQ);
        let mut args = vec!["-t", "-i"];
        args.extend(param.split(' '));
        let got = deliver(&w, &server, &args, msg.as_bytes());
        assert_eq!(got.mail_from, envelope, "{param}");
        assert_eq!(
            field(&got, "From").unwrap(),
            "From: Shop <www-data@example.com>",
            "{param}"
        );
    }
}

#[test]
fn sender_address_sends_every_local_sender_as_one_address() {
    let dir = tempfile::tempdir().unwrap();
    let server = SmtpServer::start(dir.path(), &[]);
    let w = world(
        &server,
        "sender_address = noreply@example.com\nmasquerade_local = *.internal\n",
    );
    let user = login();
    let got = deliver(&w, &server, &["-FCronDaemon", FAR], &cron_message(&user));
    assert_eq!(got.mail_from, "noreply@example.com");
    assert_eq!(
        field(&got, "From").unwrap(),
        "From: noreply@example.com (Cron Daemon)"
    );

    let dir = tempfile::tempdir().unwrap();
    let server = SmtpServer::start(dir.path(), &[]);
    let w = world(
        &server,
        "sender_address = noreply@example.com\nmasquerade_local = *.internal\n",
    );
    let got = mailutils(&w, &server, "www-data@web01.internal");
    assert_eq!(got.mail_from, "noreply@example.com");
    assert_eq!(addresses(&got, "From"), ["noreply@example.com"]);
}

#[test]
fn the_null_sender_is_never_rewritten() {
    for keys in [
        format!("{MASQ}masquerade_sender_override = always\n"),
        "sender_address = noreply@example.com\nmasquerade_sender_override = always\n".to_string(),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let server = SmtpServer::start(dir.path(), &[]);
        let w = world(&server, &keys);
        let got = deliver(
            &w,
            &server,
            &["-f", "<>", FAR],
            b"From: <>\nSubject: null\n\nbody\n",
        );
        assert_eq!(got.mail_from, "", "{keys}");
        assert_eq!(field(&got, "From").unwrap(), "From: <>", "{keys}");
    }
}

#[test]
fn a_bounce_goes_from_the_null_sender_to_the_masqueraded_sender() {
    let dir = tempfile::tempdir().unwrap();
    let server = SmtpServer::start(dir.path(), &["--rcpt-reply", "gone@x.test=550 5.1.1 no"]);
    let w = world(&server, MASQ);
    let out = w.run(
        "sendmail",
        &[
            "-odi",
            "-f",
            &format!("alice@{HOSTNAME}"),
            FAR,
            "gone@x.test",
        ],
        b"Subject: half\n\nbody\n",
    );
    assert_exit(&out, 69);
    let got = server.wait_messages(2, WAIT);
    assert_eq!(got[0].mail_from, "alice@example.com");
    let dsn = &got[1];
    assert_eq!(
        dsn.mail_from, "",
        "bounces come from <>, masqueraded or not"
    );
    assert_eq!(dsn.rcpt_tos, ["alice@example.com"], "to the stored sender");
    assert!(wait_for(WAIT, || w.queue_ids().is_empty()));
}

#[test]
fn a_forward_through_an_alias_keeps_its_owner_sender() {
    let dir = tempfile::tempdir().unwrap();
    let server = SmtpServer::start(dir.path(), &[]);
    let w = world(&server, MASQ);
    std::fs::write(
        w.dir.path().join("aliases"),
        format!("list: {FAR}\nowner-list: postmaster\nplain: other@x.test\n"),
    )
    .unwrap();
    assert_success(&w.run("newaliases", &[], b""));
    // The originals are masqueraded at submission; the copies that local
    // delivery re-queues for the remote members are not submissions.
    w.send_ok(
        &["-f", &format!("alice@{HOSTNAME}"), "list"],
        b"Subject: l\n\n1\n",
    );
    w.send_ok(
        &["-f", &format!("bob@{HOSTNAME}"), "plain"],
        b"Subject: p\n\n2\n",
    );
    assert_success(&w.sendmail(&["-q"], b""));
    let got = server.wait_messages(2, WAIT);
    let from = |rcpt: &str| {
        got.iter()
            .find(|m| m.rcpt_tos == [rcpt])
            .unwrap_or_else(|| panic!("nothing for {rcpt}: {got:?}"))
            .mail_from
            .clone()
    };
    // owner-list@test.example is a local address, and stays as it is.
    assert_eq!(from(FAR), format!("owner-list@{HOSTNAME}"));
    // Without an owner- alias the copy keeps the original's stored sender.
    assert_eq!(from("other@x.test"), "bob@example.com");
}

#[test]
fn display_names_comments_groups_and_folding_survive() {
    let dir = tempfile::tempdir().unwrap();
    let server = SmtpServer::start(dir.path(), &[]);
    let w = world(&server, MASQ);
    let msg = format!(
        "From: \"Ops, Night\" <ops@web01.internal> (pager)\n\
         Sender: =?UTF-8?Q?J=C3=B6rg?=\n <root>\n\
         Reply-To: Team: a@db.internal, b@shop.example;, \"c@web01.internal\" <c@gmail.example>\n\
         To: {FAR}, Someone <root@web01.internal>\n\
         Subject: headers\n\nbody\n"
    );
    let got = deliver(
        &w,
        &server,
        &["-t", "-f", "ops@web01.internal"],
        msg.as_bytes(),
    );
    assert_eq!(got.mail_from, "ops@example.com");
    assert_eq!(
        field(&got, "From").unwrap(),
        "From: \"Ops, Night\" <ops@example.com> (pager)"
    );
    assert_eq!(
        field(&got, "Sender").unwrap(),
        "Sender: =?UTF-8?Q?J=C3=B6rg?=\n <root@example.com>"
    );
    assert_eq!(
        field(&got, "Reply-To").unwrap(),
        "Reply-To: Team: a@example.com, b@shop.example;, \"c@web01.internal\" <c@gmail.example>"
    );
    // To: is not a sender field: qualified, never masqueraded.
    assert_eq!(
        field(&got, "To").unwrap(),
        format!("To: {FAR}, Someone <root@web01.internal>")
    );
    // The recipient list was read from To: before anything changed.
    assert_eq!(got.rcpt_tos, [FAR, "root@web01.internal"]);
}

#[test]
fn masquerade_headers_and_masquerade_envelope_choose_the_parts() {
    let dir = tempfile::tempdir().unwrap();
    let server = SmtpServer::start(dir.path(), &[]);
    let w = world(
        &server,
        &format!("{MASQ}masquerade_envelope = no\nmasquerade_headers = reply-to\n"),
    );
    let msg = format!("From: a@web01.internal\nReply-To: b@web01.internal\nTo: {FAR}\n\nbody\n");
    let got = deliver(
        &w,
        &server,
        &["-t", "-f", "a@web01.internal"],
        msg.as_bytes(),
    );
    assert_eq!(got.mail_from, "a@web01.internal");
    assert_eq!(field(&got, "From").unwrap(), "From: a@web01.internal");
    assert_eq!(field(&got, "Reply-To").unwrap(), "Reply-To: b@example.com");
}

#[test]
fn bs_mail_from_follows_the_f_policy() {
    let dir = tempfile::tempdir().unwrap();
    let server = SmtpServer::start(dir.path(), &[]);
    let w = world(&server, MASQ);
    let session = format!(
        "EHLO c\r\nMAIL FROM:<svc@{HOSTNAME}>\r\nRCPT TO:<{FAR}>\r\nDATA\r\n\
         From: Service <svc>\r\nSubject: bs\r\n\r\nbody\r\n.\r\n\
         MAIL FROM:<x@shop.example>\r\nRCPT TO:<{FAR}>\r\nDATA\r\nSubject: bs2\r\n\r\nbody\r\n.\r\nQUIT\r\n"
    );
    let out = w.run("sendmail", &["-bs", "-odq"], session.as_bytes());
    assert_success(&out);
    assert_success(&w.sendmail(&["-q"], b""));
    let got = server.wait_messages(2, WAIT);
    let mut froms: Vec<&str> = got.iter().map(|m| m.mail_from.as_str()).collect();
    froms.sort();
    assert_eq!(froms, ["svc@example.com", "x@shop.example"]);
    let first = got
        .iter()
        .find(|m| m.mail_from == "svc@example.com")
        .unwrap();
    assert_eq!(
        field(first, "From").unwrap(),
        "From: Service <svc@example.com>"
    );
}

#[test]
fn without_masquerading_nothing_changes() {
    let dir = tempfile::tempdir().unwrap();
    let server = SmtpServer::start(dir.path(), &[]);
    let w = world(&server, "masquerade_local = *.internal\n");
    let got = mailutils(&w, &server, "www-data@web01.internal");
    assert_eq!(got.mail_from, "www-data@web01.internal");
    assert_eq!(addresses(&got, "From"), ["www-data@web01.internal"]);
}

/// `name` in a directory of PATH.
fn in_path(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| std::path::Path::new(dir).join(name))
        .find(|p| p.is_file())
}

/// GNU mailutils' `mail` itself (Debian package mailutils), when
/// `mail.mailutils` is on PATH: it always runs `sendmail -oi -f
/// USER@HOST -t`, HOST the system's host name (dma #64, #114), with no
/// From: field. compat/run.py drives it against the installed package.
#[test]
fn gnu_mailutils_itself_is_masqueraded() {
    let Some(mail) = in_path("mail.mailutils") else {
        eprintln!("skipped: mail.mailutils not on PATH (Debian package mailutils)");
        return;
    };
    let host = nix::unistd::gethostname()
        .unwrap()
        .into_string()
        .unwrap()
        .to_ascii_lowercase();
    if !host
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
    {
        eprintln!("skipped: the system host name {host:?} is not a valid host name");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = SmtpServer::start(dir.path(), &[]);
    let w = world(
        &server,
        &format!("masquerade_domain = example.com\nmasquerade_local = {host}\n"),
    );
    // mailutils runs a sendmail URL's program with its own arguments
    // only: a wrapper adds our -C.
    let wrapper = w.dir.path().join("sendmail-wrapper");
    common::stage::write_executable(
        &wrapper,
        &format!(
            "#!/bin/sh\nexec {} -C {} \"$@\"\n",
            w.bin.join("sendmail").display(),
            w.config.display()
        ),
        0o755,
    );
    let out = run_with_stdin(
        std::process::Command::new(mail)
            .arg("-E")
            .arg(format!("set sendmail=sendmail://{}", wrapper.display()))
            .args(["-s", "from mailutils", FAR]),
        b"hello\n",
    );
    assert_success(&out);
    let got = server.wait_messages(1, WAIT);
    assert_eq!(got[0].mail_from, format!("{}@example.com", login()));
    assert_eq!(
        addresses(&got[0], "From"),
        [format!("{}@example.com", login())]
    );
}
