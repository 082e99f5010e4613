//! Delivery to a real Postfix smtpd (tests/peers/postfix-mx.sh: a private
//! instance from the unpacked Debian package, mail for x.test thrown away
//! by the discard transport and logged per recipient). The point is
//! Postfix's own limits — smtpd_recipient_limit, smtpd_hard_error_limit —
//! as Postfix enforces them, not as a test server imitates them: every
//! recipient of a long list must reach Postfix exactly once.
//!
//! Needs root (Postfix's master runs as root) and the unpacked package
//! (fetched with `sh tests/peers/postfix.sh` when missing); skips without.

mod common;

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::dkim::{keygen, verify};
use common::smtpd::SmtpServer;
use common::*;

const MSG: &[u8] = b"Subject: postfix test\n\nbody line\n.leading dot\n";
const WAIT: Duration = Duration::from_secs(300);

/// Instances start one at a time: the script may create the postfix user
/// and groups, and two concurrent useradds would trip over each other.
static STARTING: Mutex<()> = Mutex::new(());

/// A running private Postfix instance; stopped on drop.
struct PostfixMx {
    dir: tempfile::TempDir,
    port: u16,
}

impl PostfixMx {
    /// Starts an instance with `main_cf` lines added to its main.cf, or
    /// says why it cannot and returns None (the test then skips).
    fn start(main_cf: &[&str]) -> Option<PostfixMx> {
        if !root_or_skip("Postfix's master needs root") {
            return None;
        }
        let _one_at_a_time = STARTING.lock().unwrap_or_else(|e| e.into_inner());
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
        let tree = manifest.join("target/peers/postfix");
        if !tree.join("usr/lib/postfix/sbin/smtpd").exists() {
            let fetched = Command::new("sh")
                .arg(manifest.join("tests/peers/postfix.sh"))
                .arg(&tree)
                .status()
                .is_ok_and(|s| s.success());
            if !fetched || !tree.join("usr/lib/postfix/sbin/smtpd").exists() {
                eprintln!("skipped: no unpacked postfix and tests/peers/postfix.sh failed");
                return None;
            }
        }
        let dir = tempfile::Builder::new()
            .prefix("spoolmail-postfix")
            .tempdir()
            .expect("tempdir");
        let port = free_port();
        let out = Command::new("sh")
            .arg(manifest.join("tests/peers/postfix-mx.sh"))
            .arg(dir.path())
            .arg(port.to_string())
            .args(main_cf)
            .env("POSTFIX_TREE", &tree)
            .output()
            .expect("run tests/peers/postfix-mx.sh");
        assert_success(&out);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            port.to_string()
        );
        Some(PostfixMx { dir, port })
    }

    fn maillog(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("maillog")).unwrap_or_default()
    }

    /// The recipients the discard transport delivered, with how often.
    fn delivered(&self) -> BTreeMap<String, usize> {
        let mut seen = BTreeMap::new();
        for line in self.maillog().lines() {
            if line.contains("postfix/discard[") && line.contains("status=sent") {
                let to = line
                    .split_once("to=<")
                    .and_then(|(_, rest)| rest.split_once('>'))
                    .map(|(to, _)| to.to_string())
                    .expect("to=<...> in a delivery line");
                *seen.entry(to).or_insert(0) += 1;
            }
        }
        seen
    }

    /// Lines of `log` from `program` (e.g. "smtpd") containing `needle`.
    fn lines(log: &str, program: &str, needle: &str) -> Vec<String> {
        let tag = format!("postfix/{program}[");
        log.lines()
            .filter(|l| l.contains(&tag) && l.contains(needle))
            .map(String::from)
            .collect()
    }

    /// Transactions Postfix took (one "QUEUEID: client=" line each).
    fn transactions(log: &str) -> usize {
        Self::lines(log, "smtpd", ": client=").len()
    }

    /// The end-of-session summaries ("disconnect from ... rcpt=N/M ...")
    /// of the sessions that sent mail (the script's readiness probe sent
    /// none).
    fn sessions(log: &str) -> Vec<String> {
        Self::lines(log, "smtpd", "disconnect from")
            .into_iter()
            .filter(|l| l.contains(" mail="))
            .map(|l| l.split_once("disconnect from ").unwrap().1.to_string())
            .collect()
    }

    /// Polls until `n` distinct recipients were delivered and every message
    /// Postfix queued is done with (a "removed" line each), so that a late
    /// duplicate would still be counted. Panics with the log after WAIT.
    fn wait_delivered(&self, n: usize) -> BTreeMap<String, usize> {
        let done = wait_for(WAIT, || {
            let log = self.maillog();
            // Messages Postfix accepted (cleanup logs each one's
            // message-id; a transaction cut before DATA has none).
            let accepted = Self::lines(&log, "cleanup", ": message-id=").len();
            self.delivered().len() >= n && Self::lines(&log, "qmgr", ": removed").len() == accepted
        });
        let delivered = self.delivered();
        assert!(
            done,
            "waited {WAIT:?} for {n} recipients, {} delivered; log tail:\n{}",
            delivered.len(),
            tail(&self.maillog(), 40)
        );
        delivered
    }
}

impl Drop for PostfixMx {
    fn drop(&mut self) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/postfix-mx.sh");
        let _ = Command::new("sh")
            .arg(script)
            .arg("--stop")
            .arg(self.dir.path())
            .env(
                "POSTFIX_TREE",
                Path::new(env!("CARGO_MANIFEST_DIR")).join("target/peers/postfix"),
            )
            .output();
    }
}

/// A port nothing listens on now (the kernel's choice; released at once
/// for Postfix to bind).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The RCPT commands of one session summary: the total of "rcpt=N/M",
/// or N when all succeeded ("rcpt=N").
fn rcpt_total(session: &str) -> usize {
    session
        .split_whitespace()
        .find_map(|f| f.strip_prefix("rcpt="))
        .map(|v| v.rsplit('/').next().unwrap().parse().expect("rcpt count"))
        .unwrap_or(0)
}

/// Sends one message with `count` recipients r0000@x.test... through a
/// world configured with `extra`, in the foreground; returns them sorted.
fn send(w: &World, count: usize) -> Vec<String> {
    let rcpts: Vec<String> = (0..count).map(|i| format!("r{i:04}@x.test")).collect();
    let mut args = vec!["-odi", "-f", "s@example.org"];
    args.extend(rcpts.iter().map(String::as_str));
    let started = Instant::now();
    assert_success(&w.sendmail(&args, MSG));
    eprintln!("sendmail -odi, {count} recipients: {:?}", started.elapsed());
    rcpts
}

/// Asserts each of `rcpts` was delivered exactly once and nothing else.
fn assert_each_once(delivered: &BTreeMap<String, usize>, rcpts: &[String]) {
    let twice: Vec<_> = delivered.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    let got: Vec<&String> = delivered.keys().collect();
    let want: Vec<&String> = rcpts.iter().collect();
    assert_eq!(got, want, "each recipient, and only those");
}

/// Prints the figures a note may quote: transactions and sessions.
fn report(pf: &PostfixMx) {
    let log = pf.maillog();
    let sessions = PostfixMx::sessions(&log);
    eprintln!(
        "postfix took {} transactions in {} connections",
        PostfixMx::transactions(&log),
        sessions.len()
    );
    for s in &sessions {
        eprintln!("  session: {s}");
    }
}

#[test]
fn postfix_gets_2500_recipients_at_one_domain_once_each() {
    let Some(pf) = PostfixMx::start(&[]) else {
        return;
    };
    let w = Setup::smarthost(pf.port)
        .line("max_recipients = 3000")
        .world();
    let started = Instant::now();
    let rcpts = send(&w, 2500);
    let delivered = pf.wait_delivered(rcpts.len());
    eprintln!(
        "2500 recipients delivered by postfix after {:?}",
        started.elapsed()
    );
    report(&pf);
    assert_each_once(&delivered, &rcpts);
    assert_eq!(
        w.queue_ids(),
        Vec::<String>::new(),
        "spoolmail's queue is empty"
    );
}

#[test]
fn postfix_with_a_low_recipient_limit_still_gets_each_recipient_once() {
    // Postfix answers 452 beyond 30 recipients; spoolmail asks for 100 a
    // transaction. Were it to keep sending RCPTs after the 452 — or ask
    // for 100 again each time — the errors would add up to Postfix's
    // hard error limit and a "421 4.7.0 Error: too many errors" drop.
    let Some(pf) = PostfixMx::start(&["smtpd_recipient_limit = 30"]) else {
        return;
    };
    let w = Setup::smarthost(pf.port)
        .line("smtp_recipient_limit = 100\nmax_recipients = 3000")
        .world();
    let rcpts = send(&w, 500);
    let delivered = pf.wait_delivered(rcpts.len());
    report(&pf);
    let log = pf.maillog();
    // RCPT commands Postfix received, refused ones included ("rcpt=N" or
    // "rcpt=N/M" in its session summary, M being the total): beyond the
    // 500 it took, only those pipelined in the first transaction before
    // its 452 was read may have been refused; a later transaction asking
    // for 100 again would add 70 refusals each.
    let rcpt_commands: usize = PostfixMx::sessions(&log)
        .iter()
        .map(|s| rcpt_total(s))
        .sum();
    let refused = rcpt_commands - rcpts.len();
    eprintln!(
        "{rcpt_commands} RCPT commands for {} recipients: {refused} refused",
        rcpts.len()
    );
    assert!(
        refused < 100,
        "only the first transaction's pipelined RCPTs may meet a 452: {refused} did"
    );
    assert!(
        !log.contains("too many errors"),
        "postfix dropped the link:\n{}",
        PostfixMx::lines(&log, "smtpd", "too many errors").join("\n")
    );
    assert_each_once(&delivered, &rcpts);
    assert_eq!(
        w.queue_ids(),
        Vec::<String>::new(),
        "spoolmail's queue is empty"
    );
}

/// With Postfix's smtpd_recipient_overshoot_limit lowered (default 1000)
/// to 20, RCPTs past smtpd_recipient_limit count as errors once 20 of
/// them are refused. spoolmail pipelines up to smtp_recipient_limit (100)
/// RCPTs before it reads the first 452, so 70 are refused and Postfix
/// drops the link with "too many errors" before DATA. Before the runner
/// learned from that, the retry did the same and nothing was ever
/// delivered; now it reconnects at once asking for what Postfix took.
#[test]
fn postfix_with_a_low_overshoot_limit_still_gets_each_recipient_once() {
    let Some(pf) = PostfixMx::start(&[
        "smtpd_recipient_limit = 30",
        "smtpd_recipient_overshoot_limit = 20",
    ]) else {
        return;
    };
    let w = Setup::smarthost(pf.port)
        .line("smtp_recipient_limit = 100")
        .world();
    let rcpts = send(&w, 300);
    // -odi delivers in the foreground: anything left queued failed.
    assert_eq!(
        w.queue_ids(),
        Vec::<String>::new(),
        "spoolmail's queue is empty; postfix said:\n{}",
        PostfixMx::lines(&pf.maillog(), "smtpd", "from localhost").join("\n")
    );
    let delivered = pf.wait_delivered(rcpts.len());
    assert_each_once(&delivered, &rcpts);
}

/// Writes a test CA and a certificate for "localhost" it signs, with
/// openssl, into `dir`; returns (CA certificate, server certificate,
/// server key).
fn test_ca(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .current_dir(dir)
            .args(args)
            .output()
            .expect("openssl");
        assert_success(&out);
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    openssl(
        &[
            &[
                "req", "-x509", "-days", "2", "-keyout", "ca.key", "-out", "ca.pem",
            ][..],
            &ec,
            &[
                "-subj",
                "/CN=spoolmail test CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        ]
        .concat(),
    );
    openssl(
        &[
            &["req", "-keyout", "server.key", "-out", "server.csr"][..],
            &ec,
            &["-subj", "/CN=localhost"],
        ]
        .concat(),
    );
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName = DNS:localhost\nbasicConstraints = CA:FALSE\nextendedKeyUsage = serverAuth\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-days",
        "2",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-extfile",
        "server.ext",
        "-out",
        "server.pem",
    ]);
    (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    )
}

#[test]
fn postfix_starttls_with_a_certificate_from_a_test_ca() {
    // smarthost_tls = starttls verifies the server: the certificate must
    // chain to tls_ca_file and name "localhost".
    let certs = tempfile::tempdir().unwrap();
    let (ca, cert, key) = test_ca(certs.path());
    let Some(pf) = PostfixMx::start(&[
        &format!("smtpd_tls_cert_file = {}", cert.display()),
        &format!("smtpd_tls_key_file = {}", key.display()),
        "smtpd_tls_security_level = may",
        // Level 1 logs each TLS session's summary line.
        "smtpd_tls_loglevel = 1",
    ]) else {
        return;
    };
    let w = Setup::verified_smarthost(pf.port, "starttls", &ca).world();
    let rcpts = send(&w, 3);
    let delivered = pf.wait_delivered(rcpts.len());
    assert_each_once(&delivered, &rcpts);
    assert_eq!(
        w.queue_ids(),
        Vec::<String>::new(),
        "spoolmail's queue is empty"
    );
    let log = pf.maillog();
    let tls = PostfixMx::lines(&log, "smtpd", "TLS connection established");
    eprintln!("{}", tls.join("\n"));
    assert!(
        !tls.is_empty(),
        "postfix logged no TLS session:\n{}",
        tail(&log, 40)
    );
    assert!(
        PostfixMx::sessions(&log)
            .iter()
            .all(|s| s.contains("starttls=1")),
        "every session that sent mail began with STARTTLS: {:?}",
        PostfixMx::sessions(&log)
    );
}

impl PostfixMx {
    /// The messages the capture transport kept (see postfix-mx.sh), once
    /// `n` are there and every message Postfix queued is done with;
    /// panics with the log after WAIT.
    fn wait_captured(&self, n: usize) -> Vec<std::path::PathBuf> {
        let dir = self.dir.path().join("captured");
        let files = || -> Vec<std::path::PathBuf> {
            let mut found: Vec<_> = std::fs::read_dir(&dir)
                .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
                .unwrap_or_default();
            found.sort();
            found
        };
        let done = wait_for(WAIT, || {
            let log = self.maillog();
            let accepted = Self::lines(&log, "cleanup", ": message-id=").len();
            files().len() >= n && Self::lines(&log, "qmgr", ": removed").len() == accepted
        });
        assert!(
            done,
            "waited {WAIT:?} for {n} captured messages; log tail:\n{}",
            tail(&self.maillog(), 40)
        );
        files()
    }

    /// The MAIL commands smtpd logged (debug_peer_list).
    fn mail_commands(log: &str) -> Vec<String> {
        Self::lines(log, "smtpd", ": MAIL FROM:")
            .into_iter()
            .filter(|l| l.contains("]: MAIL FROM:"))
            .collect()
    }
}

/// What Python's `email` package reads out of the message in `path`:
/// each non-multipart part's content type and decoded payload (a
/// message/* part's payload as the message it holds, flattened).
fn python_parts(path: &Path) -> Vec<(String, Vec<u8>)> {
    const SCRIPT: &str = r#"
import sys, json, email
from email import policy
m = email.message_from_binary_file(open(sys.argv[1], 'rb'), policy=policy.default)
out = []
for part in m.walk():
    if part.is_multipart():
        continue
    payload = part.get_payload(decode=True)
    if payload is None:
        payload = part.as_bytes()
    out.append([part.get_content_type(), payload.hex()])
print(json.dumps(out))
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(SCRIPT)
        .arg(path)
        .output()
        .expect("python3");
    assert_success(&out);
    let parts: Vec<(String, String)> = serde_json::from_slice(&out.stdout).expect("python's JSON");
    parts
        .into_iter()
        .map(|(ctype, hex)| {
            let bytes = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                .collect();
            (ctype, bytes)
        })
        .collect()
}

/// A body PHP's mail() or cron hands over: UTF-8, no MIME, and one line
/// of "a" and 1,000 "é" (2,001 octets).
fn eight_bit_body() -> Vec<u8> {
    let mut body =
        "Gr\u{fc}\u{df}e aus K\u{f6}ln, caf\u{e9} cr\u{e8}me = 100 \u{20ac} \n".to_string();
    body.push('a');
    body.push_str(&"\u{e9}".repeat(1000));
    body.push_str("\n. a dot\nlast line\n");
    body.into_bytes()
}

fn world_for(pf: &PostfixMx) -> World {
    World::with_config(&format!(
        "smarthost = 127.0.0.1:{}\nsmarthost_tls = none",
        pf.port
    ))
}

/// As `world_for`, but mail to the senders' domain (example.org) waits
/// on a port nothing listens on: a notice about a failed recipient stays
/// in the queue for the test to read, instead of racing the detached
/// runner that sendmail -odi starts for it to Postfix.
fn world_keeping_notices(pf: &PostfixMx) -> World {
    World::with_config(&format!(
        "smarthost = 127.0.0.1:{}\nsmarthost_tls = none\nroute = example.org -> relay 127.0.0.1:{}",
        pf.port,
        free_port()
    ))
}

#[test]
fn postfix_offering_8bitmime_gets_body_8bitmime_and_whole_characters() {
    // Issue 24 items 1 and 4: 8-bit content declared (RFC 6152 §3), and a
    // line over 998 octets split between characters, not inside one.
    let Some(pf) = PostfixMx::start(&["relay_transport = capture:", "debug_peer_list = 127.0.0.1"])
    else {
        return;
    };
    let w = world_for(&pf);
    let body = eight_bit_body();
    let mut message = b"Subject: 8-bit, no MIME\n\n".to_vec();
    message.extend_from_slice(&body);
    assert_success(&w.sendmail(&["-odi", "-f", "s@example.org", "r@x.test"], &message));
    let captured = pf.wait_captured(1);
    let log = pf.maillog();
    let mail = PostfixMx::mail_commands(&log);
    eprintln!("{}", mail.join("\n"));
    assert!(
        mail.len() == 1 && mail[0].contains(" BODY=8BITMIME"),
        "BODY=8BITMIME declared: {mail:?}"
    );
    let raw = std::fs::read(&captured[0]).unwrap();
    let text = std::str::from_utf8(&raw).expect("arrived as valid UTF-8");
    assert!(text.lines().all(|l| l.len() <= 998), "no line over 998");
    let parts = python_parts(&captured[0]);
    assert_eq!(parts.len(), 1);
    // Sent as it is, the one long line split: the rest byte for byte.
    let joined = |b: &[u8]| -> Vec<u8> {
        String::from_utf8(b.to_vec())
            .unwrap()
            .replace(&format!("\n{}", "\u{e9}"), "\u{e9}")
            .into_bytes()
    };
    assert_eq!(joined(&parts[0].1), joined(&body));
    let sessions = PostfixMx::sessions(&log);
    assert!(
        sessions.iter().all(|s| s.contains("quit=1")),
        "{sessions:?}"
    );
}

#[test]
fn postfix_without_8bitmime_gets_7bit_mime_that_decodes_to_the_original() {
    // Issue 24 item 1: to a server that does not offer 8BITMIME, 8-bit
    // content goes converted (RFC 6152 §3), MIME structure kept, a
    // message without MIME given a MIME header of its own; -B8BITMIME
    // changes nothing about that.
    let Some(pf) = PostfixMx::start(&[
        "relay_transport = capture:",
        "smtpd_discard_ehlo_keywords = 8bitmime",
        "debug_peer_list = 127.0.0.1",
    ]) else {
        return;
    };
    // Signed too (issue 26): the signature covers the form sent, so it
    // verifies after the conversion.
    let keys = tempfile::tempdir().unwrap();
    let key = keygen(keys.path(), "example.org", "s1", true);
    let w = World::with_config(&format!(
        "smarthost = 127.0.0.1:{}\nsmarthost_tls = none\n{}",
        pf.port, key.line
    ));
    let body = eight_bit_body();
    let mut plain = b"Subject: 8-bit, no MIME\n\n".to_vec();
    plain.extend_from_slice(&body);
    assert_success(&w.sendmail(
        &["-odi", "-B8BITMIME", "-f", "s@example.org", "plain@x.test"],
        &plain,
    ));
    let html = "<p>Gr\u{fc}\u{df}e \u{2014} \u{e9}t\u{e9}</p>\n";
    let multipart = format!(
        "Subject: 8-bit MIME\nMIME-Version: 1.0\nContent-Type: multipart/alternative; boundary=\"=_b\"\n\n\
         --=_b\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n{}\n\
         --=_b\nContent-Type: text/html; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n{html}\n--=_b--\n",
        String::from_utf8(body.clone()).unwrap()
    );
    assert_success(&w.sendmail(
        &["-odi", "-f", "s@example.org", "mime@x.test"],
        multipart.as_bytes(),
    ));
    let captured = pf.wait_captured(2);
    let log = pf.maillog();
    let mail = PostfixMx::mail_commands(&log);
    eprintln!("{}", mail.join("\n"));
    assert_eq!(mail.len(), 2);
    assert!(
        mail.iter().all(|m| !m.contains("BODY=")),
        "nothing declared to a server without 8BITMIME: {mail:?}"
    );
    let mut decoded: Vec<Vec<(String, Vec<u8>)>> = Vec::new();
    for path in &captured {
        let raw = std::fs::read(path).unwrap();
        assert!(raw.is_ascii(), "7-bit on arrival: {}", path.display());
        assert!(raw.split(|&b| b == b'\n').all(|l| l.len() <= 998));
        decoded.push(python_parts(path));
        let verdicts = verify(&raw, &key.record);
        eprintln!("{}", verdicts.report);
        assert!(
            verdicts.pass(),
            "the signature verifies as Postfix stored the message: {}",
            verdicts.report
        );
    }
    decoded.sort_by_key(|parts| parts.len());
    eprintln!(
        "decoded by python: {:?}",
        decoded
            .iter()
            .map(|p| p
                .iter()
                .map(|(t, b)| (t.clone(), b.len()))
                .collect::<Vec<_>>())
            .collect::<Vec<_>>()
    );
    assert_eq!(
        decoded[0],
        vec![("text/plain".to_string(), body.clone())],
        "the message without MIME, byte for byte"
    );
    assert_eq!(
        decoded[1],
        vec![
            ("text/plain".to_string(), body.clone()),
            ("text/html".to_string(), html.as_bytes().to_vec()),
        ],
        "each part byte for byte"
    );
}

#[test]
fn signed_mail_relayed_by_a_postfix_smarthost_verifies_where_it_arrives() {
    // Issue 26: mail relayed through a smarthost. A real Postfix is the
    // smarthost and passes the mail on to the next server, adding its
    // Received: field on the way; what arrives there still verifies, for
    // both algorithms, 8-bit content included (both hops offer 8BITMIME).
    let last = tempfile::tempdir().unwrap();
    let next_hop = SmtpServer::start(last.path(), &[]);
    let relay = format!("relay_transport = smtp:[127.0.0.1]:{}", next_hop.port);
    let Some(pf) = PostfixMx::start(&[&relay]) else {
        return;
    };
    let eight_bit = "From: Alice <alice@example.org>\nTo: r@x.test\nSubject: relayed, 8-bit\nMIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\nGr\u{fc}\u{df}e aus K\u{f6}ln\n.a dot\n";
    let plain = "From: Alice <alice@example.org>\nTo: r@x.test\nSubject: relayed\n\nbody\n";
    let mut sent = 0;
    for ed25519 in [false, true] {
        let keys = tempfile::tempdir().unwrap();
        let key = keygen(keys.path(), "example.org", "s1", ed25519);
        let w = World::with_config(&format!(
            "smarthost = 127.0.0.1:{}\nsmarthost_tls = none\n{}",
            pf.port, key.line
        ));
        for message in [plain, eight_bit] {
            assert_success(&w.sendmail(
                &["-odi", "-f", "alice@example.org", "r@x.test"],
                message.as_bytes(),
            ));
            sent += 1;
            let arrived = next_hop.wait_messages(sent, WAIT).pop().unwrap();
            let text = String::from_utf8_lossy(&arrived.data);
            assert!(
                text.contains("by mx.x.test (Postfix)"),
                "passed on by Postfix: {text}"
            );
            let verdicts = verify(&arrived.data, &key.record);
            eprintln!("{}", verdicts.report);
            assert!(
                verdicts.pass(),
                "verifies after the smarthost: {}",
                verdicts.report
            );
        }
    }
    let relayed = PostfixMx::lines(&pf.maillog(), "smtp", "status=sent");
    assert_eq!(relayed.len(), sent, "{relayed:?}");
}

#[test]
fn postfix_logs_quit_for_every_ending() {
    // Issue 24 item 3 (RFC 5321 §4.1.1.10): TLS required and not offered,
    // credentials that may not go over plain text, and a delivery each
    // end with QUIT, not with a lost connection.
    let Some(pf) = PostfixMx::start(&[]) else {
        return;
    };
    let tls_required = World::with_config(&format!(
        "smarthost = 127.0.0.1:{}\nsmarthost_tls = starttls",
        pf.port
    ));
    let out = tls_required.sendmail(&["-odi", "-f", "s@example.org", "a@x.test"], MSG);
    assert_eq!(tls_required.queue_ids().len(), 1, "{out:?}");
    let password = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(password.path(), "secret\n").unwrap();
    let auth_in_plain = World::with_config(&format!(
        "smarthost = 127.0.0.1:{}\nsmarthost_tls = none\nauth_user = u\nauth_password_file = {}",
        pf.port,
        password.path().display()
    ));
    let out = auth_in_plain.sendmail(&["-odi", "-f", "s@example.org", "b@x.test"], MSG);
    assert_eq!(auth_in_plain.queue_ids().len(), 1, "{out:?}");
    let delivered = world_for(&pf);
    assert_success(&delivered.sendmail(&["-odi", "-f", "s@example.org", "c@x.test"], MSG));
    pf.wait_delivered(1);
    let log = pf.maillog();
    // Every session that said EHLO (the script's readiness probe did not).
    let ends: Vec<String> = PostfixMx::lines(&log, "smtpd", "disconnect from")
        .into_iter()
        .filter(|l| l.contains(" ehlo="))
        .collect();
    eprintln!("{}", ends.join("\n"));
    assert_eq!(ends.len(), 3, "three sessions:\n{}", tail(&log, 40));
    assert!(
        ends.iter().all(|l| l.contains(" quit=1")),
        "each ended with QUIT:\n{}",
        ends.join("\n")
    );
    // The readiness probe's own "lost connection after CONNECT" aside.
    let lost: Vec<String> = PostfixMx::lines(&log, "smtpd", "lost connection after")
        .into_iter()
        .filter(|l| !l.contains("after CONNECT"))
        .collect();
    assert!(lost.is_empty(), "{}", lost.join("\n"));
}

#[test]
fn postfix_gets_an_rfc_6533_notice_about_a_utf8_recipient() {
    // Issue 24 item 2: Postfix refuses a UTF-8 recipient; the failure
    // notice spoolmail sends back through it is a
    // message/global-delivery-status naming the recipient as `utf-8;`,
    // declared BODY=8BITMIME (its own content is 8-bit).
    let Some(pf) = PostfixMx::start(&[
        "relay_transport = capture:",
        "debug_peer_list = 127.0.0.1",
        "smtpd_recipient_restrictions = check_recipient_access inline:{ {\u{fc}nicode@x.test = REJECT no such user} }, permit_mynetworks, reject",
    ]) else {
        return;
    };
    let w = world_for(&pf);
    let out = w.sendmail(
        &["-odi", "-f", "s@x.test", "\u{fc}nicode@x.test"],
        "Subject: hello\n\nbody\n".as_bytes(),
    );
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    // The notice, queued by the failed attempt, goes in a queue run.
    assert_success(&w.sendmail(&["-q"], b""));
    let captured = pf.wait_captured(1);
    let log = pf.maillog();
    let refused = PostfixMx::lines(&log, "smtpd", "reject: RCPT");
    eprintln!("{}", refused.join("\n"));
    assert_eq!(refused.len(), 1, "{}", tail(&log, 40));
    let mail = PostfixMx::mail_commands(&log);
    eprintln!("{}", mail.join("\n"));
    assert!(
        mail.iter()
            .any(|m| m.contains("MAIL FROM:<>") && m.contains(" BODY=8BITMIME")),
        "the notice declared 8-bit: {mail:?}"
    );
    let types: Vec<String> = python_parts(&captured[0])
        .into_iter()
        .map(|(t, _)| t)
        .collect();
    eprintln!("python reads: {types:?}");
    const SCRIPT: &str = r#"
import sys, email
from email import policy
m = email.message_from_binary_file(open(sys.argv[1], 'rb'), policy=policy.default)
assert m.get_content_type() == 'multipart/report', m.get_content_type()
assert m.get_param('report-type') == 'global-delivery-status', m.get_param('report-type')
parts = [p for p in m.iter_parts()]
status = parts[1]
assert status.get_content_type() == 'message/global-delivery-status', status.get_content_type()
text = status.as_bytes().decode('utf-8')
sys.stdout.write(text)
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(SCRIPT)
        .arg(&captured[0])
        .output()
        .expect("python3");
    assert_success(&out);
    let status = String::from_utf8(out.stdout).unwrap();
    eprintln!("{status}");
    assert!(
        status.contains("Final-Recipient: utf-8; \u{fc}nicode@x.test"),
        "{status}"
    );
}

#[test]
fn postfix_without_smtputf8_gets_the_ascii_recipients_of_a_mixed_list() {
    // Issue 24 item 5: the UTF-8 recipient cannot go (5.6.7) to a server
    // without SMTPUTF8; the ASCII ones in the same message can, in a
    // transaction of their own.
    let Some(pf) = PostfixMx::start(&["smtputf8_enable = no"]) else {
        return;
    };
    let w = world_keeping_notices(&pf);
    let out = w.sendmail(
        &[
            "-odi",
            "-f",
            "s@example.org",
            "\u{fc}nicode@x.test",
            "a@x.test",
            "b@x.test",
        ],
        MSG,
    );
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    let delivered = pf.wait_delivered(2);
    assert_each_once(
        &delivered,
        &["a@x.test".to_string(), "b@x.test".to_string()],
    );
    // The original is gone (all final), its notice about the UTF-8 one
    // queued.
    let ids = w.queue_ids();
    assert_eq!(ids.len(), 1, "only the notice is left: {ids:?}");
    let notice = String::from_utf8_lossy(&w.data(&ids[0])).into_owned();
    assert!(notice.contains("Status: 5.6.7"), "{notice}");
    assert!(notice.contains("utf-8; \u{fc}nicode@x.test"), "{notice}");
    assert!(!notice.contains("rfc822; a@x.test"), "{notice}");
}

#[test]
fn postfix_with_a_small_size_limit_gets_no_data_and_the_notice_names_no_remote_mta() {
    // Issue 24 item 5: spoolmail's own refusal (the message exceeds the
    // server's SIZE) is not the server's answer: the notice types it
    // X-Spoolmail and names no Remote-MTA.
    let Some(pf) = PostfixMx::start(&["message_size_limit = 2000"]) else {
        return;
    };
    let w = world_keeping_notices(&pf);
    let mut big = b"Subject: big\n\n".to_vec();
    big.extend("0123456789 abcdefghij\n".repeat(200).as_bytes());
    let out = w.sendmail(&["-odi", "-f", "s@example.org", "a@x.test"], &big);
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    let ids = w.queue_ids();
    assert_eq!(ids.len(), 1, "only the notice is left: {ids:?}");
    let notice = String::from_utf8_lossy(&w.data(&ids[0])).into_owned();
    assert!(notice.contains("Status: 5.3.4"), "{notice}");
    assert!(
        notice.contains("Diagnostic-Code: X-Spoolmail; message of"),
        "{notice}"
    );
    assert!(!notice.contains("Remote-MTA:"), "{notice}");
    let log = pf.maillog();
    assert!(
        PostfixMx::sessions(&log).is_empty(),
        "no MAIL was sent:\n{}",
        tail(&log, 20)
    );
}

/// A stand-in for Dovecot's auth service (the protocol Postfix's
/// `smtpd_sasl_type = dovecot` speaks, over TCP): offers PLAIN and
/// LOGIN and refuses every attempt. Returns its port.
fn refusing_dovecot_auth() -> u16 {
    use std::io::{BufRead, BufReader, Write};
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut writer = stream.try_clone().unwrap();
                let _ = writer.write_all(
                    b"VERSION\t1\t2\nMECH\tPLAIN\tplaintext\nMECH\tLOGIN\tplaintext\n\
                      SPID\t1\nCUID\t1\nCOOKIE\t0123456789abcdef0123456789abcdef\nDONE\n",
                );
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    let mut fields = line.split('\t');
                    if fields.next() == Some("AUTH")
                        && let Some(id) = fields.next()
                    {
                        let _ = writer.write_all(format!("FAIL\t{id}\tuser=u\n").as_bytes());
                    }
                }
            });
        }
    });
    port
}

#[test]
fn postfix_logs_quit_after_a_refused_auth() {
    // Issue 24 item 3: after 535, QUIT (Postfix logged "lost connection
    // after AUTH").
    let certs = tempfile::tempdir().unwrap();
    let (ca, cert, key) = test_ca(certs.path());
    let auth_port = refusing_dovecot_auth();
    let Some(pf) = PostfixMx::start(&[
        &format!("smtpd_tls_cert_file = {}", cert.display()),
        &format!("smtpd_tls_key_file = {}", key.display()),
        "smtpd_tls_security_level = may",
        "smtpd_sasl_auth_enable = yes",
        "smtpd_sasl_type = dovecot",
        &format!("smtpd_sasl_path = inet:127.0.0.1:{auth_port}"),
    ]) else {
        return;
    };
    let password = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(password.path(), "wrong\n").unwrap();
    let w = World::with_config(&format!(
        "smarthost = localhost:{}\nsmarthost_tls = starttls\ntls_ca_file = {}\nauth_user = u\nauth_password_file = {}",
        pf.port,
        ca.display(),
        password.path().display()
    ));
    let out = w.sendmail(&["-odi", "-f", "s@example.org", "a@x.test"], MSG);
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(w.queue_ids().len(), 1, "deferred");
    let log = pf.maillog();
    let ends: Vec<String> = PostfixMx::lines(&log, "smtpd", "disconnect from")
        .into_iter()
        .filter(|l| l.contains(" ehlo="))
        .collect();
    eprintln!("{}", ends.join("\n"));
    assert_eq!(ends.len(), 1, "{}", tail(&log, 30));
    assert!(
        ends[0].contains(" auth=0/1") && ends[0].contains(" quit=1"),
        "a refused AUTH, then QUIT: {}",
        ends[0]
    );
}

#[test]
fn postfix_without_8bitmime_gets_no_8bit_header_fields_and_the_sender_a_clear_notice() {
    // Issue 24 item 1: 8-bit header fields (RFC 6532) cannot be made
    // 7-bit without changing them: refused before MAIL (5.6.3), with a
    // notice that says why.
    let Some(pf) = PostfixMx::start(&["smtpd_discard_ehlo_keywords = 8bitmime"]) else {
        return;
    };
    let w = world_keeping_notices(&pf);
    let out = w.sendmail(
        &["-odi", "-f", "s@example.org", "a@x.test"],
        "Subject: Gr\u{fc}\u{df}e\n\nbody\n".as_bytes(),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stderr}");
    assert!(stderr.contains("8-bit header fields"), "{stderr}");
    let ids = w.queue_ids();
    assert_eq!(ids.len(), 1, "only the notice is left: {ids:?}");
    let notice = String::from_utf8_lossy(&w.data(&ids[0])).into_owned();
    assert!(notice.contains("Status: 5.6.3"), "{notice}");
    assert!(
        notice.contains("Diagnostic-Code: X-Spoolmail; the message has 8-bit header fields"),
        "{notice}"
    );
    // The same for a UTF-8 file name in an attachment's header: a
    // header field too, inside the MIME structure.
    let parts = w.sendmail(
        &["-odi", "-f", "s@example.org", "b@x.test"],
        "MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=b\n\n--b\n\
         Content-Type: text/plain\n\nhello \u{e9}\n--b\n\
         Content-Type: text/plain\nContent-Disposition: attachment; filename=\"r\u{e9}sum\u{e9}.txt\"\n\n\
         body\n--b--\n"
            .as_bytes(),
    );
    let stderr = String::from_utf8_lossy(&parts.stderr);
    assert!(
        stderr.contains("8-bit header fields in a MIME part"),
        "{stderr}"
    );
    assert_eq!(w.queue_ids().len(), 2, "the two notices");
    let log = pf.maillog();
    assert!(
        PostfixMx::sessions(&log).is_empty(),
        "no MAIL was sent:\n{}",
        tail(&log, 20)
    );
}
