//! `sendmail -bs` end to end: the built binary speaking SMTP on its
//! stdin/stdout, driven the way Symfony Mailer and Alpine drive it.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

use common::smtpd::SmtpServer;
use common::{Setup, World, split_message};

/// A running `sendmail -bs` and the two ends of its dialogue.
struct Dialogue {
    child: Child,
    to: ChildStdin,
    from: BufReader<ChildStdout>,
}

impl Dialogue {
    fn start(w: &World, extra: &[&str]) -> Dialogue {
        let mut child = w
            .command("sendmail")
            .arg("-bs")
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start sendmail -bs");
        let to = child.stdin.take().unwrap();
        let from = BufReader::new(child.stdout.take().unwrap());
        let mut d = Dialogue { child, to, from };
        assert!(d.reply().starts_with("220 "), "greeting");
        d
    }

    fn send(&mut self, text: &str) {
        self.to.write_all(text.as_bytes()).unwrap();
        self.to.flush().unwrap();
    }

    /// One whole reply (all its lines), joined by '\n'.
    fn reply(&mut self) -> String {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            assert!(
                self.from.read_line(&mut line).unwrap() > 0,
                "reply expected, got EOF"
            );
            assert!(line.ends_with("\r\n"), "CRLF line ends: {line:?}");
            let line = line.trim_end().to_string();
            let last = line.as_bytes().get(3) != Some(&b'-');
            lines.push(line);
            if last {
                return lines.join("\n");
            }
        }
    }

    fn command(&mut self, text: &str) -> String {
        self.send(&format!("{text}\r\n"));
        self.reply()
    }

    fn finish(mut self) -> std::process::ExitStatus {
        drop(self.to);
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut self.from, &mut rest);
        self.child.wait().unwrap()
    }
}

fn queued_id(reply: &str) -> String {
    assert!(reply.starts_with("250 2.0.0 Ok: queued as "), "{reply}");
    reply.rsplit(' ').next().unwrap().to_string()
}

#[test]
fn each_message_is_committed_before_its_250() {
    let w = World::new();
    let mut d = Dialogue::start(&w, &["-odq"]);
    let ehlo = d.command("EHLO client.example");
    assert!(
        ehlo.contains("250-PIPELINING") && ehlo.contains("250-8BITMIME"),
        "{ehlo}"
    );
    for i in 0..3 {
        assert_eq!(
            d.command(&format!("MAIL FROM:<s{i}@example.org>")),
            "250 2.1.0 Ok"
        );
        assert_eq!(d.command("RCPT TO:<r@example.com>"), "250 2.1.5 Ok");
        assert!(d.command("DATA").starts_with("354 "));
        d.send(&format!(
            "Subject: m{i}\r\n\r\n..leading dot\r\nline\r\n.\r\n"
        ));
        let id = queued_id(&d.reply());
        // The 250 came: the message is in queue/ already, not later.
        assert!(w.queue_ids().contains(&id), "{id} committed before 250");
        let (_, body) = split_message(&w.data(&id));
        assert_eq!(body, b".leading dot\nline\n");
        assert_eq!(w.envelope(&id).sender, format!("s{i}@example.org"));
    }
    assert!(d.command("QUIT").starts_with("221 "));
    assert!(d.finish().success());
    assert_eq!(w.queue_ids().len(), 3);
}

#[test]
fn a_pipelined_session_gets_every_reply_in_order() {
    let w = World::new();
    let mut d = Dialogue::start(&w, &["-odq"]);
    d.send(
        "EHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<x@example.com>\r\nRCPT TO:<y@example.com>\r\n\
         DATA\r\nSubject: p\r\n\r\nbody\r\n.\r\nRSET\r\nNOOP\r\nVRFY root\r\nQUIT\r\n",
    );
    let replies: Vec<String> = (0..10).map(|_| d.reply()).collect();
    let codes: Vec<&str> = replies.iter().map(|r| &r[..3]).collect();
    assert_eq!(
        codes,
        [
            "250", "250", "250", "250", "354", "250", "250", "250", "252", "221"
        ],
        "{replies:?}"
    );
    let id = queued_id(&replies[5]);
    assert_eq!(
        w.envelope(&id).recipients,
        ["x@example.com", "y@example.com"]
    );
    assert!(d.finish().success());
}

#[test]
fn protocol_errors_are_answered_and_the_session_goes_on() {
    let w = World::with_config("max_message_size = 2000");
    let mut d = Dialogue::start(&w, &["-odq"]);
    assert!(
        d.command("RCPT TO:<x@example.com>")
            .starts_with("503 5.5.1")
    );
    assert!(d.command("DATA").starts_with("503 5.5.1"));
    assert!(d.command("FROB").starts_with("500 5.5.2"));
    assert!(
        d.command("MAIL FROM:<a@example.org> SIZE=999999")
            .starts_with("552 5.3.4")
    );
    assert!(
        d.command("MAIL FROM:<bad@@example.org>")
            .starts_with("553 ")
    );
    assert_eq!(d.command("MAIL FROM:<a@example.org>"), "250 2.1.0 Ok");
    assert!(
        d.command("MAIL FROM:<a@example.org>")
            .starts_with("503 5.5.1")
    );
    assert!(d.command("RCPT TO:<-oQ/tmp>").starts_with("501 "));
    assert_eq!(d.command("RCPT TO:<x@example.com>"), "250 2.1.5 Ok");
    assert!(d.command("DATA").starts_with("354"));
    // Larger than max_message_size: refused after the dot, nothing queued.
    d.send(&format!(
        "Subject: big\r\n\r\n{}\r\n.\r\n",
        "x".repeat(5000)
    ));
    assert!(d.reply().starts_with("552 5.3.4"));
    assert!(w.queue_ids().is_empty());
    assert!(w.tmp_files().is_empty());
    // The next transaction works.
    assert_eq!(d.command("MAIL FROM:<>"), "250 2.1.0 Ok");
    assert_eq!(d.command("RCPT TO:<root>"), "250 2.1.5 Ok");
    assert!(d.command("DATA").starts_with("354"));
    d.send("Subject: small\r\n\r\nok\r\n.\r\n");
    let id = queued_id(&d.reply());
    assert_eq!(w.envelope(&id).sender, "");
    assert!(d.command("QUIT").starts_with("221"));
    assert!(d.finish().success());
}

#[test]
fn a_client_that_vanishes_in_data_leaves_nothing_behind() {
    let w = World::new();
    let mut d = Dialogue::start(&w, &["-odq"]);
    d.command("HELO c");
    d.command("MAIL FROM:<a@example.org>");
    d.command("RCPT TO:<x@example.com>");
    assert!(d.command("DATA").starts_with("354"));
    d.send("Subject: cut\r\n\r\nhalf a mess");
    d.finish();
    assert!(w.queue_ids().is_empty());
    assert!(w.tmp_files().is_empty());
}

#[test]
fn alpine_style_bs_odb_oem_delivers_in_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let server = SmtpServer::start(dir.path(), &[]);
    let w = Setup::smarthost(server.port).world();
    let mut d = Dialogue::start(&w, &["-odb", "-oem"]);
    d.command("EHLO alpine.example");
    d.command("MAIL FROM:<me@example.org> BODY=8BITMIME");
    d.command("RCPT TO:<you@example.com>");
    d.command("DATA");
    d.send("Subject: from alpine\r\n\r\nhéllo\r\n.\r\n");
    queued_id(&d.reply());
    d.command("QUIT");
    assert!(d.finish().success());
    let got = server.wait_messages(1, Duration::from_secs(60));
    assert_eq!(got[0].mail_from, "me@example.org");
    assert_eq!(got[0].rcpt_tos, ["you@example.com"]);
    assert!(String::from_utf8_lossy(&got[0].data).contains("héllo"));
}

#[test]
fn bs_without_a_shell_in_between_needs_nothing_but_stdin() {
    // Symfony's default: `sendmail -bs` through proc_open, nothing else.
    let w = World::new();
    let out = Command::new(w.bin.join("sendmail"))
        .args(["-C", w.config.to_str().unwrap(), "-bs", "-odq"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin
                .take()
                .unwrap()
                .write_all(b"HELO x\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\nSubject: s\r\n\r\n.\r\nQUIT\r\n")?;
            c.wait_with_output()
        })
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("250 2.0.0 Ok: queued as"), "{text}");
    assert_eq!(w.queue_ids().len(), 1);
}

#[test]
fn an_over_long_command_line_is_refused_and_the_session_goes_on() {
    let w = World::new();
    let mut d = Dialogue::start(&w, &["-odq"]);
    assert!(d.command("EHLO c").starts_with("250"));
    let long = format!("MAIL FROM:<{}@example.org>", "a".repeat(1 << 20));
    assert!(d.command(&long).starts_with("500 5.5.2"));
    assert_eq!(d.command("MAIL FROM:<a@example.org>"), "250 2.1.0 Ok");
    assert!(d.command("QUIT").starts_with("221 "));
    assert!(d.finish().success());
}

/// SMTP smuggling: `<LF>.<LF>` (and the mixed forms) inside the data do
/// not end it, so the commands after it are text of the one message and
/// never a second envelope.
#[test]
fn only_crlf_dot_crlf_ends_data_so_nothing_is_smuggled() {
    for (i, end) in ["\n.\n", "\r\n.\n", "\n.\r\n"].iter().enumerate() {
        let w = World::new();
        let mut d = Dialogue::start(&w, &["-odq"]);
        d.command("EHLO c");
        d.command("MAIL FROM:<app@example.org>");
        d.command("RCPT TO:<user@example.com>");
        assert!(d.command("DATA").starts_with("354"));
        d.send(&format!(
            "Subject: s{i}\r\n\r\nhello{end}MAIL FROM:<admin@example.org>\r\n\
             RCPT TO:<victim@example.net>\r\nDATA\r\nSubject: smuggled\r\n\r\nevil\r\n.\r\n"
        ));
        let id = queued_id(&d.reply());
        // The next reply answers QUIT: no reply was owed to smuggled commands.
        let quit = d.command("QUIT");
        assert!(quit.starts_with("221 "), "{end:?}: {quit}");
        assert!(d.finish().success());
        assert_eq!(
            w.queue_ids(),
            std::slice::from_ref(&id),
            "{end:?}: one message"
        );
        let envelope = w.envelope(&id);
        assert_eq!(envelope.sender, "app@example.org");
        assert_eq!(envelope.recipients, ["user@example.com"]);
        let (_, body) = split_message(&w.data(&id));
        let body = String::from_utf8_lossy(&body);
        assert!(
            body.contains("\n.\nMAIL FROM:<admin@example.org>\nRCPT TO:<victim@example.net>\n"),
            "{end:?}: the smuggled text is in the body: {body:?}"
        );
    }
}

#[test]
fn a_path_with_comments_is_the_address_without_them() {
    let w = World::new();
    let mut d = Dialogue::start(&w, &["-odq"]);
    assert!(d.command("EHLO client.example").starts_with("250"));
    assert_eq!(
        d.command("MAIL FROM:<s(sender)@example.org>"),
        "250 2.1.0 Ok"
    );
    assert_eq!(
        d.command("RCPT TO:<user(comment)@example.com>"),
        "250 2.1.5 Ok"
    );
    assert!(d.command("DATA").starts_with("354 "));
    d.send("Subject: cfws\r\n\r\nhi\r\n.\r\n");
    let id = queued_id(&d.reply());
    let envelope = w.envelope(&id);
    assert_eq!(envelope.sender, "s@example.org");
    assert_eq!(envelope.recipients, ["user@example.com"]);
    assert!(d.command("QUIT").starts_with("221 "));
    assert!(d.finish().success());
}
