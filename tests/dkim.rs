//! DKIM signing end to end (issue 26): keys made by `spoolmail
//! --dkim-keygen`, messages delivered by the built binary to a real SMTP
//! server (tests/peers/smtpd.py), and each received message checked by
//! two independent verifiers, Python's dkimpy (tests/peers/dkimcheck.py)
//! and, as root, OpenDKIM's library (tests/peers/opendkim-verify.sh),
//! against the DNS record keygen printed — for RSA and Ed25519, a plain
//! message (through a smarthost, and straight to the MX found in DNS),
//! 8-bit mail converted for a server without 8BITMIME, long lines, `-t`
//! with Bcc, a masqueraded From, a notice the runner writes; and the
//! failures: a record of another key, a changed message, a key that
//! cannot be read. (A real Postfix as the smarthost passing signed mail
//! on: tests/postfix_mx.rs.)

mod common;

use std::process::Command;
use std::time::Duration;

use common::dkim::{keygen, verify, zone_line};
use common::smtpd::{Received, SmtpServer};
use common::*;

const WAIT: Duration = Duration::from_secs(60);

/// The two algorithms, as `--dkim-keygen` and the `dkim` line name them.
const ALGORITHMS: [(&str, bool); 2] = [("rsa-sha256", false), ("ed25519-sha256", true)];

/// A world relaying to `server`, signing with `keys`' lines.
fn world(server: &SmtpServer, lines: &str) -> World {
    Setup::smarthost(server.port)
        .line("retry_min = 1s\nretry_max = 2s")
        .line(lines)
        .world()
}

/// Sends `message` (`args` to sendmail) and returns what the server got.
fn deliver(w: &World, server: &SmtpServer, args: &[&str], message: &[u8]) -> Received {
    let before = server.messages().len();
    let mut argv = vec!["-odi"];
    argv.extend_from_slice(args);
    assert_success(&w.run("sendmail", &argv, message));
    server.wait_messages(before + 1, WAIT).pop().unwrap()
}

/// The header section of a received message (CRLF line endings).
fn header_of(data: &[u8]) -> String {
    let end = data
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| {
            panic!(
                "no empty line after the header: {:?}",
                String::from_utf8_lossy(data)
            )
        });
    String::from_utf8_lossy(&data[..end + 2]).into_owned()
}

/// The value of the received message's DKIM-Signature, unfolded.
fn signature(r: &Received) -> String {
    let header = header_of(&r.data);
    header_value(&header, "DKIM-Signature").unwrap_or_else(|| panic!("not signed: {header}"))
}

fn tag<'a>(signature: &'a str, name: &str) -> Option<&'a str> {
    signature.split(';').find_map(|t| {
        let (n, v) = t.split_once('=')?;
        (n.trim() == name).then(|| v.trim())
    })
}

const PLAIN: &str = "From: Alice <alice@example.org>\nTo: bob@far.test\nSubject: signed   and  spaced\nMessage-ID: <1@example.org>\n\nHello,\n.a line that starts with a dot\n..two\n\ntrailing  white space \t\n\n\n";

#[test]
fn a_plain_message_is_signed_and_verifies_with_either_algorithm() {
    let server = SmtpServer::start(std::env::temp_dir().as_path(), &[]);
    for (algorithm, ed25519) in ALGORITHMS {
        let keys = tempfile::tempdir().unwrap();
        let key = keygen(keys.path(), "example.org", "s1", ed25519);
        let w = world(&server, &key.line);
        let r = deliver(&w, &server, &["bob@far.test"], PLAIN.as_bytes());
        let sig = signature(&r);
        assert_eq!(tag(&sig, "a"), Some(algorithm));
        assert_eq!(tag(&sig, "d"), Some("example.org"));
        assert_eq!(tag(&sig, "s"), Some("s1"));
        assert_eq!(tag(&sig, "c"), Some("relaxed/relaxed"));
        let h = tag(&sig, "h").unwrap().to_ascii_lowercase();
        assert_eq!(h.matches("from").count(), 2, "From oversigned: {h}");
        for field in ["subject", "to", "message-id", "date"] {
            assert!(h.contains(field), "{field} in h={h}");
        }
        let verdicts = verify(&r.data, &key.record);
        println!("{algorithm}, plain message:\n{}", verdicts.report);
        assert!(verdicts.pass(), "{}", verdicts.report);
        assert!(
            r.data
                .windows(b"\r\n.a line".len())
                .any(|w| w == b"\r\n.a line"),
            "dot-stuffing undone by the server"
        );
    }
}

#[test]
fn mail_sent_straight_to_the_mx_is_signed_and_verifies() {
    // The setup this issue is for: no smarthost, the destination's MX
    // found in DNS (a real DNS server), the message signed on the way.
    let server = SmtpServer::start(std::env::temp_dir().as_path(), &[]);
    let dns = common::dns::DnsServer::start(
        &["far.test MX 10 mx.far.test", "mx.far.test A 127.0.0.1"],
        &[],
    );
    for (algorithm, ed25519) in ALGORITHMS {
        let keys = tempfile::tempdir().unwrap();
        let key = keygen(keys.path(), "example.org", "s1", ed25519);
        let w = World::with_config(&format!(
            "resolver = {}\nsmtp_port = {}\ntls = none\nretry_min = 1s\nretry_max = 2s\n{}\n",
            dns.addr, server.port, key.line
        ));
        let r = deliver(&w, &server, &["bob@far.test"], PLAIN.as_bytes());
        assert_eq!(r.rcpt_tos, ["bob@far.test"]);
        assert_eq!(tag(&signature(&r), "a"), Some(algorithm));
        let verdicts = verify(&r.data, &key.record);
        println!("{algorithm}, straight to the MX:\n{}", verdicts.report);
        assert!(verdicts.pass(), "{}", verdicts.report);
    }
}

#[test]
fn eight_bit_mail_converted_for_a_server_without_8bitmime_verifies() {
    let server = SmtpServer::start(std::env::temp_dir().as_path(), &["--no-8bitmime"]);
    let message = "From: alice@example.org\nTo: bob@far.test\nSubject: 8-bit\nMIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\nGr\u{fc}\u{df}e aus K\u{f6}ln \u{2014} caf\u{e9}\n";
    for (algorithm, ed25519) in ALGORITHMS {
        let keys = tempfile::tempdir().unwrap();
        let key = keygen(keys.path(), "example.org", "s1", ed25519);
        let w = world(&server, &key.line);
        let r = deliver(&w, &server, &["bob@far.test"], message.as_bytes());
        assert!(r.data.is_ascii(), "converted to 7-bit");
        let header = header_of(&r.data);
        assert_eq!(
            header_value(&header, "Content-Transfer-Encoding").as_deref(),
            Some("quoted-printable")
        );
        let verdicts = verify(&r.data, &key.record);
        println!("{algorithm}, 8-bit converted:\n{}", verdicts.report);
        assert!(verdicts.pass(), "{}", verdicts.report);
    }
}

#[test]
fn lines_of_998_octets_and_longer_verify() {
    let server = SmtpServer::start(std::env::temp_dir().as_path(), &[]);
    let mut message = b"From: alice@example.org\nTo: bob@far.test\nSubject: long\n\n".to_vec();
    message.extend(std::iter::repeat_n(b'x', 998));
    message.extend_from_slice(b"\n");
    message.extend(std::iter::repeat_n(b'y', 2500));
    message.extend_from_slice(b"\nend\n");
    for (algorithm, ed25519) in ALGORITHMS {
        let keys = tempfile::tempdir().unwrap();
        let key = keygen(keys.path(), "example.org", "s1", ed25519);
        let w = world(&server, &key.line);
        let r = deliver(&w, &server, &["bob@far.test"], &message);
        let xs = "x".repeat(998);
        assert!(
            String::from_utf8_lossy(&r.data).contains(&format!("\r\n{xs}\r\n")),
            "the 998-octet line arrives whole"
        );
        let verdicts = verify(&r.data, &key.record);
        println!("{algorithm}, 998-octet line:\n{}", verdicts.report);
        assert!(verdicts.pass(), "{}", verdicts.report);
    }
}

#[test]
fn a_bcc_removed_by_dash_t_is_not_signed_and_the_rest_verifies() {
    let server = SmtpServer::start(std::env::temp_dir().as_path(), &[]);
    let message =
        "From: alice@example.org\nTo: bob@far.test\nBcc: hidden@far.test\nSubject: -t\n\nbody\n";
    for (algorithm, ed25519) in ALGORITHMS {
        let keys = tempfile::tempdir().unwrap();
        let key = keygen(keys.path(), "example.org", "s1", ed25519);
        let w = world(&server, &key.line);
        let r = deliver(&w, &server, &["-t"], message.as_bytes());
        assert!(r.rcpt_tos.iter().any(|t| t == "hidden@far.test"));
        let header = header_of(&r.data);
        assert!(header_value(&header, "Bcc").is_none(), "{header}");
        assert!(
            !tag(&signature(&r), "h")
                .unwrap()
                .to_ascii_lowercase()
                .contains("bcc")
        );
        let verdicts = verify(&r.data, &key.record);
        println!("{algorithm}, -t with Bcc:\n{}", verdicts.report);
        assert!(verdicts.pass(), "{}", verdicts.report);
    }
}

#[test]
fn a_masqueraded_from_is_signed_for_the_masquerade_domain() {
    let server = SmtpServer::start(std::env::temp_dir().as_path(), &[]);
    for (algorithm, ed25519) in ALGORITHMS {
        let keys = tempfile::tempdir().unwrap();
        let key = keygen(keys.path(), "example.com", "m1", ed25519);
        let w = world(
            &server,
            &format!("{}\nmasquerade_domain = example.com", key.line),
        );
        let r = deliver(
            &w,
            &server,
            &["-f", "cron@test.example", "bob@far.test"],
            b"From: cron@test.example\nTo: bob@far.test\nSubject: masqueraded\n\nbody\n",
        );
        let header = header_of(&r.data);
        assert_eq!(
            header_value(&header, "From").as_deref(),
            Some("cron@example.com")
        );
        assert_eq!(tag(&signature(&r), "d"), Some("example.com"));
        let verdicts = verify(&r.data, &key.record);
        println!("{algorithm}, masqueraded From:\n{}", verdicts.report);
        assert!(verdicts.pass(), "{}", verdicts.report);
    }
}

#[test]
fn a_delivery_status_notification_is_signed_for_the_hosts_domain() {
    // The notices the runner writes come From: MAILER-DAEMON@ the
    // hostname: with a line for that domain they are signed like any
    // other mail, so a receiver that wants DKIM takes the bounce too.
    let dir = tempfile::tempdir().unwrap();
    let server = SmtpServer::start(
        dir.path(),
        &["--rcpt-reply", "gone@far.test=550 5.1.1 no such user"],
    );
    let keys = tempfile::tempdir().unwrap();
    let key = keygen(keys.path(), HOSTNAME, "s1", true);
    let w = world(&server, &key.line);
    let out = w.run(
        "sendmail",
        &["-odi", "-f", "alice@elsewhere.test", "gone@far.test"],
        b"From: alice@elsewhere.test\nTo: gone@far.test\nSubject: lost\n\nbody\n",
    );
    assert_exit(&out, 69);
    let notice = server.wait_messages(1, WAIT).pop().unwrap();
    assert_eq!(notice.mail_from, "", "a notice has the null sender");
    assert_eq!(notice.rcpt_tos, ["alice@elsewhere.test"]);
    let sig = signature(&notice);
    assert_eq!(tag(&sig, "d"), Some(HOSTNAME));
    let verdicts = verify(&notice.data, &key.record);
    println!("a notice:\n{}", verdicts.report);
    assert!(verdicts.pass(), "{}", verdicts.report);
}

#[test]
fn another_key_s_record_or_a_changed_message_fails_verification() {
    let server = SmtpServer::start(std::env::temp_dir().as_path(), &[]);
    for (algorithm, ed25519) in ALGORITHMS {
        let keys = tempfile::tempdir().unwrap();
        let key = keygen(keys.path(), "example.org", "s1", ed25519);
        let other = tempfile::tempdir().unwrap();
        let wrong = keygen(other.path(), "example.org", "s1", ed25519);
        let w = world(&server, &key.line);
        let r = deliver(&w, &server, &["bob@far.test"], PLAIN.as_bytes());
        let verdicts = verify(&r.data, &key.record);
        assert!(verdicts.pass(), "{}", verdicts.report);
        // Each verifier that passes the right record must fail these.
        let verdicts = verify(&r.data, &wrong.record);
        println!("{algorithm}, a record of another key:\n{}", verdicts.report);
        assert!(
            verdicts.fail(),
            "verified with another key's record: {}",
            verdicts.report
        );
        let changed = String::from_utf8_lossy(&r.data).replace("Hello,", "Hullo,");
        let verdicts = verify(changed.as_bytes(), &key.record);
        println!("{algorithm}, a changed body:\n{}", verdicts.report);
        assert!(
            verdicts.fail(),
            "a changed message verified: {}",
            verdicts.report
        );
        let changed =
            String::from_utf8_lossy(&r.data).replace("Subject: signed", "Subject: Signed");
        let verdicts = verify(changed.as_bytes(), &key.record);
        assert!(
            verdicts.fail(),
            "a changed Subject verified: {}",
            verdicts.report
        );
    }
}

#[test]
fn a_key_that_cannot_be_read_makes_the_message_wait_unless_not_required() {
    let server = SmtpServer::start(std::env::temp_dir().as_path(), &[]);
    let keys = tempfile::tempdir().unwrap();
    let missing = keys.path().join("missing.key");
    let line = format!("dkim = example.org selector=s1 key={}", missing.display());
    let w = world(&server, &line);
    let out = w.run("sendmail", &["-odi", "bob@far.test"], PLAIN.as_bytes());
    assert_exit(&out, 75);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("the DKIM key for example.org cannot be used"),
        "{said}"
    );
    let listing = w.mailq_json();
    assert_eq!(listing.len(), 1, "the message waits: {listing:?}");
    let text = listing[0].to_string();
    assert!(
        text.contains("DKIM key") && text.contains("deferred"),
        "{text}"
    );
    assert!(server.messages().is_empty(), "never sent unsigned");

    // Not required: sent, unsigned.
    let w = world(&server, &format!("{line}\ndkim_required = no"));
    let r = deliver(&w, &server, &["bob@far.test"], PLAIN.as_bytes());
    let header = header_of(&r.data);
    assert!(header_value(&header, "DKIM-Signature").is_none());
}

#[test]
fn a_key_readable_by_everyone_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let server = SmtpServer::start(std::env::temp_dir().as_path(), &[]);
    let keys = tempfile::tempdir().unwrap();
    let key = keygen(keys.path(), "example.org", "s1", false);
    let path = keys.path().join("example.org.s1.key");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let w = world(&server, &key.line);
    let out = w.run("sendmail", &["-odi", "bob@far.test"], PLAIN.as_bytes());
    assert_exit(&out, 75);
    let text = w.mailq_json()[0].to_string();
    assert!(text.contains("readable by everyone"), "{text}");
    assert!(server.messages().is_empty());
}

#[test]
fn a_subdomain_is_signed_by_its_parent_only_when_asked() {
    let server = SmtpServer::start(std::env::temp_dir().as_path(), &[]);
    let keys = tempfile::tempdir().unwrap();
    let key = keygen(keys.path(), "example.org", "s1", true);
    let message = b"From: alice@mail.example.org\nTo: bob@far.test\nSubject: sub\n\nbody\n";
    let w = world(&server, &key.line);
    let r = deliver(&w, &server, &["bob@far.test"], message);
    let header = header_of(&r.data);
    assert!(
        header_value(&header, "DKIM-Signature").is_none(),
        "{header}"
    );
    let w = world(&server, &format!("{} subdomains=yes", key.line));
    let r = deliver(&w, &server, &["bob@far.test"], message);
    assert_eq!(tag(&signature(&r), "d"), Some("example.org"));
    let verdicts = verify(&r.data, &key.record);
    assert!(verdicts.pass(), "{}", verdicts.report);
}

#[test]
fn keygen_writes_a_private_key_and_never_over_one() {
    use std::os::unix::fs::MetadataExt;
    let keys = tempfile::tempdir().unwrap();
    let key = keygen(keys.path(), "example.org", "s1", false);
    let text = std::fs::read_to_string(&key.record).unwrap();
    assert!(
        text.starts_with("s1._domainkey.example.org. IN TXT ( \"v=DKIM1; k=rsa; p="),
        "{text}"
    );
    assert!(
        text.split('"').all(|s| s.len() <= 255),
        "TXT strings of 255 at most"
    );
    let path = keys.path().join("example.org.s1.key");
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o640);
    if is_root() {
        assert_eq!(meta.uid(), 0);
        if let Ok(Some(mail)) = nix::unistd::Group::from_name("mail") {
            assert_eq!(meta.gid(), mail.gid.as_raw());
        }
    }
    let before = std::fs::read(&path).unwrap();
    let conf = keys.path().join("keygen-example.org-s1.conf");
    let out = Command::new(env!("CARGO_BIN_EXE_spoolmail"))
        .arg("-C")
        .arg(&conf)
        .args(["--dkim-keygen", "example.org", "s1"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "a second key over the first");
    assert_eq!(std::fs::read(&path).unwrap(), before);
}

#[test]
fn check_config_names_each_key_that_cannot_be_used() {
    let keys = tempfile::tempdir().unwrap();
    let good = keygen(keys.path(), "example.org", "s1", true);
    let missing = keys.path().join("missing.key");
    let w = World::with_config(&format!(
        "{}\ndkim = example.net selector=s2 key={}\n",
        good.line,
        missing.display()
    ));
    let out = w.run("sendmail", &["--check-config"], b"");
    let said = String::from_utf8_lossy(&out.stdout);
    assert_exit(&out, 78);
    let dkim: Vec<&str> = said.lines().filter(|l| l.contains(": dkim: ")).collect();
    // As root the key keygen wrote is root:mail 0640, as it should be;
    // anyone else's is theirs, which the check names too.
    if is_root() {
        assert_eq!(dkim.len(), 1, "{said}");
    }
    assert!(dkim.iter().any(|l| l.contains("missing.key")), "{said}");
}

#[test]
fn check_config_network_compares_each_key_with_its_published_record() {
    // Issue 26: what a receiver verifies against is the published
    // record; a key rotated on one side only, or never published, fails
    // every signature this host makes. --network says so before mail
    // does.
    let keys = tempfile::tempdir().unwrap();
    let rsa = keygen(keys.path(), "example.org", "s1", false);
    let ed = keygen(keys.path(), "example.net", "s2", true);
    let rotated = keygen(keys.path(), "example.com", "s3", true);
    let unpublished = keygen(keys.path(), "example.edu", "s4", true);
    let dns = common::dns::DnsServer::start(
        &[
            &zone_line(&rsa.record, "s1._domainkey.example.org"),
            &zone_line(&ed.record, "s2._domainkey.example.net"),
            // example.com publishes example.net's key: not the one it signs with.
            &zone_line(&ed.record, "s3._domainkey.example.com"),
        ],
        &[],
    );
    let w = World::with_config(&format!(
        "resolver = {}\n{}\n{}\n{}\n{}\n",
        dns.addr, rsa.line, ed.line, rotated.line, unpublished.line
    ));
    let out = w.run("sendmail", &["--check-config", "--network"], b"");
    let said = String::from_utf8_lossy(&out.stdout);
    eprintln!("{said}");
    assert_exit(&out, 78);
    let line = |name: &str| {
        said.lines()
            .find(|l| l.starts_with(&format!("dkim {name}: ")))
            .unwrap_or_else(|| panic!("no line for {name}: {said}"))
            .to_string()
    };
    for (name, says) in [
        ("s1._domainkey.example.org", ": published, the key of"),
        ("s1._domainkey.example.org", "(rsa)"),
        ("s2._domainkey.example.net", "(ed25519)"),
        ("s3._domainkey.example.com", "is not the key of"),
        ("s4._domainkey.example.edu", "no DKIM key record published"),
    ] {
        assert!(line(name).contains(says), "{name}: {says}: {said}");
    }
}
