//! What the SMTP client sends and how long a hostile server may hold it
//! (issue 15): message content that tries to end
//! the data early at the receiver (SMTP smuggling), replies trickled one
//! byte a second, a transaction of thousands of pipelined recipients, and
//! a STARTTLS refused in the middle of an opportunistic session.
//!
//! Real servers (aiosmtpd) where a real server shows the fault; a scripted
//! server over a real loopback socket where no real server misbehaves that
//! way on purpose (trickling, a 454 to STARTTLS).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Output, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::smtpd::SmtpServer;
use crate::common::{self, Setup, World};

/// The most a hostile peer may hold an attempt whose timeouts are 2 s: a
/// correctness bound (each stage's timeout ends the attempt), not a
/// performance one.
const HOLD_LIMIT: Duration = Duration::from_secs(30);

/// Runs `sendmail -odi -v args` in `w` with `stdin`, killing it if it has
/// not finished within `limit`. Returns its output and whether it
/// finished in time.
fn sendmail_within(w: &World, args: &[&str], stdin: &[u8], limit: Duration) -> (Output, bool) {
    let mut child = w
        .command("sendmail")
        .args(["-odi", "-v"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sendmail");
    let mut pipe = child.stdin.take().expect("stdin");
    let input = stdin.to_vec();
    let writer = thread::spawn(move || {
        let _ = pipe.write_all(&input);
    });
    // Drained as they fill, so that a chatty child never blocks on them.
    let drain = |mut from: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut all = Vec::new();
            let _ = from.read_to_end(&mut all);
            all
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("stdout")));
    let stderr = drain(Box::new(child.stderr.take().expect("stderr")));
    let finished = common::wait_for(limit, || child.try_wait().expect("try_wait").is_some());
    if !finished {
        let _ = child.kill();
    }
    let status = child.wait().expect("wait");
    writer.join().expect("stdin writer");
    let out = Output {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    };
    (out, finished)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The one queued message's recipient entries, from `mailq --json`.
fn queued_recipients(w: &World) -> Vec<serde_json::Value> {
    let q = w.mailq_json();
    assert_eq!(q.len(), 1, "one message queued: {q:?}");
    q[0]["recipients"].as_array().expect("recipients").clone()
}

// ---------------------------------------------------------------------
// A scripted server: real SMTP on a real socket, with one fault.

/// The fault a [`Scripted`] server plays.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// The greeting, one byte a second.
    TrickledGreeting,
    /// The reply to EHLO, one byte a second.
    TrickledEhlo,
    /// The reply to the final dot, one byte a second.
    TrickledFinalDot,
    /// STARTTLS offered, then refused with 454.
    RefusedStarttls,
}

/// A long reply (a few minutes at one byte a second), well-formed: only
/// its pace is hostile.
fn long_reply(code: u16) -> String {
    let mut reply = String::new();
    for i in 0..10 {
        reply.push_str(&format!("{code}-slow line {i} of a trickled reply\r\n"));
    }
    reply.push_str(&format!("{code} done\r\n"));
    reply
}

/// Writes `text` one byte a second; Err once the client has gone.
fn trickle(w: &mut TcpStream, text: &str) -> std::io::Result<()> {
    for b in text.bytes() {
        w.write_all(&[b])?;
        w.flush()?;
        // The fault itself, not a synchronisation.
        thread::sleep(Duration::from_secs(1));
    }
    Ok(())
}

/// A server on 127.0.0.1 that plays `fault`; every line clients sent is
/// kept (per connection) for the test to read.
struct Scripted {
    port: u16,
    seen: Arc<Mutex<Vec<Vec<String>>>>,
}

impl Scripted {
    fn start(fault: Fault) -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let all = seen.clone();
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let all = all.clone();
                thread::spawn(move || {
                    let index = {
                        let mut all = all.lock().unwrap();
                        all.push(Vec::new());
                        all.len() - 1
                    };
                    let _ = serve(stream, fault, |line| {
                        all.lock().unwrap()[index].push(line.to_string())
                    });
                });
            }
        });
        Scripted { port, seen }
    }

    /// Lines of connection `n` so far.
    fn lines(&self, n: usize) -> Vec<String> {
        self.seen
            .lock()
            .unwrap()
            .get(n)
            .cloned()
            .unwrap_or_default()
    }

    fn connections(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

fn serve(stream: TcpStream, fault: Fault, mut seen: impl FnMut(&str)) -> std::io::Result<()> {
    let mut w = stream.try_clone()?;
    let mut r = BufReader::new(stream);
    if fault == Fault::TrickledGreeting {
        trickle(&mut w, &long_reply(220))?;
    } else {
        w.write_all(b"220 scripted.test ESMTP\r\n")?;
    }
    let mut in_data = false;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let line = line.trim_end_matches(['\r', '\n']).to_string();
        seen(&line);
        if in_data {
            if line == "." {
                in_data = false;
                if fault == Fault::TrickledFinalDot {
                    trickle(&mut w, &long_reply(250))?;
                } else {
                    w.write_all(b"250 2.0.0 queued\r\n")?;
                }
            }
            continue;
        }
        let upper = line.to_ascii_uppercase();
        if upper.starts_with("EHLO") {
            if fault == Fault::TrickledEhlo {
                trickle(&mut w, &long_reply(250))?;
            } else if fault == Fault::RefusedStarttls {
                w.write_all(b"250-scripted.test\r\n250-PIPELINING\r\n250 STARTTLS\r\n")?;
            } else {
                w.write_all(b"250-scripted.test\r\n250 PIPELINING\r\n")?;
            }
        } else if upper == "STARTTLS" {
            w.write_all(b"454 4.7.0 TLS not available due to local problem\r\n")?;
        } else if upper == "DATA" {
            in_data = true;
            w.write_all(b"354 go ahead\r\n")?;
        } else if upper == "QUIT" {
            w.write_all(b"221 bye\r\n")?;
            return Ok(());
        } else {
            w.write_all(b"250 ok\r\n")?;
        }
    }
}

/// A world relaying in plain text to `port`, every SMTP timeout 2 s.
fn impatient_world(port: u16) -> World {
    Setup::smarthost(port)
        .line("retry_min = 1h\ncommand_timeout = 2s\ndata_timeout = 2s\nfinal_dot_timeout = 2s")
        .world()
}

const MSG: &[u8] = b"Subject: hostile client test\n\nbody\n";

/// Why the tests here that need no [`Site`](crate::site::Site) are
/// still skipped when not run as root: the suite runs as root.
const SUITE_NEEDS_ROOT: &str = "the hostile-user suite runs as root";

/// Sends one message through `server`'s fault and checks the attempt
/// ended within [`HOLD_LIMIT`], deferred with a timeout as its reason.
fn assert_cut_at_the_timeout(fault: Fault) -> World {
    let server = Scripted::start(fault);
    let w = impatient_world(server.port);
    let start = Instant::now();
    let (out, finished) =
        sendmail_within(&w, &["-f", "s@example.org", "a@x.test"], MSG, HOLD_LIMIT);
    assert!(
        finished,
        "a peer trickling one byte a second still held the attempt after {HOLD_LIMIT:?} \
         (timeouts 2 s); stderr: {}",
        stderr(&out)
    );
    assert_eq!(out.status.code(), Some(75), "deferred: {}", stderr(&out));
    assert!(start.elapsed() < HOLD_LIMIT);
    let rcpts = queued_recipients(&w);
    assert_eq!(rcpts[0]["status"], "deferred", "{rcpts:?}");
    let reason = rcpts[0]["last_error"].as_str().unwrap_or("");
    assert!(reason.contains("timeout"), "a timeout reason: {reason:?}");
    assert_eq!(server.connections(), 1, "no second connection");
    w
}

// ---------------------------------------------------------------------
// A reply's timeout bounds the whole reply.

#[test]
fn a_server_trickling_its_greeting_is_cut_at_the_command_timeout() {
    if !common::root_or_skip(SUITE_NEEDS_ROOT) {
        return;
    }
    assert_cut_at_the_timeout(Fault::TrickledGreeting);
}

#[test]
fn a_server_trickling_its_ehlo_reply_is_cut_at_the_command_timeout() {
    if !common::root_or_skip(SUITE_NEEDS_ROOT) {
        return;
    }
    assert_cut_at_the_timeout(Fault::TrickledEhlo);
}

#[test]
fn a_server_trickling_its_final_dot_reply_is_cut_at_the_final_dot_timeout() {
    if !common::root_or_skip(SUITE_NEEDS_ROOT) {
        return;
    }
    let w = assert_cut_at_the_timeout(Fault::TrickledFinalDot);
    let q = w.mailq_json();
    assert_eq!(
        q[0]["possibly_delivered"], true,
        "the dot had gone out: the RFC 1047 window"
    );
}

// ---------------------------------------------------------------------
// SMTP smuggling through stored bare CR and LF.

/// True when every CR is followed by LF and every LF follows a CR.
fn only_crlf(data: &[u8]) -> bool {
    data.iter().enumerate().all(|(i, &b)| match b {
        b'\r' => data.get(i + 1) == Some(&b'\n'),
        b'\n' => i > 0 && data[i - 1] == b'\r',
        _ => true,
    })
}

#[test]
fn a_smuggled_end_of_data_in_the_body_stays_inside_one_message() {
    if !common::root_or_skip(SUITE_NEEDS_ROOT) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = SmtpServer::start(dir.path(), &[]);
    let w = Setup::smarthost(server.port).line("retry_min = 1h").world();
    // Each variant of the 2023 disclosures tries to end the data and
    // start a second transaction the receiver would take from us.
    let msg: &[u8] = b"Subject: smuggling\n\nfirst part\r.\r\n\
        MAIL FROM:<evil1@example.org>\r\nRCPT TO:<victim1@x.test>\r\nDATA\r\n\
        Subject: smuggled one\r\n\r\nsmuggled body one\r\n\
        \r.\rMAIL FROM:<evil2@example.org>\rRCPT TO:<victim2@x.test>\rDATA\r\
        Subject: smuggled two\r\rsmuggled body two\r\n\
        \n.\nMAIL FROM:<evil3@example.org>\nRCPT TO:<victim3@x.test>\nDATA\n\
        Subject: smuggled three\n\nsmuggled body three\n\
        \r\n.\r\r\nlast line\n";
    let (out, finished) = sendmail_within(
        &w,
        &["-i", "-f", "s@example.org", "a@x.test"],
        msg,
        HOLD_LIMIT,
    );
    assert!(finished, "{}", stderr(&out));
    common::assert_success(&out);
    let got = server.messages();
    assert_eq!(got.len(), 1, "exactly one message: {got:?}");
    assert_eq!(got[0].rcpt_tos, ["a@x.test"]);
    assert_eq!(got[0].mail_from, "s@example.org");
    let data = &got[0].data;
    let text = String::from_utf8_lossy(data);
    for inside in [
        "first part",
        "MAIL FROM:<evil1@example.org>",
        "smuggled body one",
        "MAIL FROM:<evil2@example.org>",
        "smuggled body two",
        "MAIL FROM:<evil3@example.org>",
        "smuggled body three",
        "last line",
    ] {
        assert!(
            text.contains(inside),
            "{inside:?} inside the body: {text:?}"
        );
    }
    assert!(
        only_crlf(data),
        "a bare CR or LF reached the server: {text:?}"
    );
    assert!(w.queue_ids().is_empty(), "delivered");
}

// ---------------------------------------------------------------------
// Thousands of pipelined recipients.

#[test]
fn five_thousand_pipelined_recipients_go_in_one_transaction_without_deadlock() {
    if !common::root_or_skip(SUITE_NEEDS_ROOT) {
        return;
    }
    const N: usize = 5000;
    let dir = tempfile::tempdir().unwrap();
    let server = SmtpServer::start(dir.path(), &[]);
    // With everything written before any reply is read, both sides block
    // writing: the command timeout would end that deadlock as a deferral.
    let w = Setup::smarthost(server.port)
        .line(
            "retry_min = 1h\ncommand_timeout = 20s\ndata_timeout = 20s\n\
             max_recipients = 5000\nsmtp_recipient_limit = 5000",
        )
        .world();
    let rcpts: Vec<String> = (0..N)
        .map(|i| format!("recipient-with-a-long-name-{i:05}@x.test"))
        .collect();
    let mut args = vec!["-f", "s@example.org"];
    args.extend(rcpts.iter().map(String::as_str));
    let (out, finished) = sendmail_within(&w, &args, MSG, Duration::from_secs(300));
    assert!(finished, "{}", stderr(&out));
    common::assert_success(&out);
    let got = server.messages();
    assert_eq!(got.len(), 1, "one copy");
    assert_eq!(got[0].rcpt_tos, rcpts, "every recipient, in order");
    assert!(w.queue_ids().is_empty(), "delivered");
}

// ---------------------------------------------------------------------
// An opportunistic STARTTLS refused is logged.

#[test]
fn a_starttls_refused_with_454_is_logged_before_falling_back_to_plain_text() {
    if !common::root_or_skip(SUITE_NEEDS_ROOT) {
        return;
    }
    let server = Scripted::start(Fault::RefusedStarttls);
    let w = World::with_config(&format!(
        "resolver = 127.0.0.1:9\nsmtp_port = {}\ntls = opportunistic\ncommand_timeout = 10s",
        server.port
    ));
    let (out, finished) = sendmail_within(
        &w,
        &["-f", "s@example.org", "a@[127.0.0.1]"],
        MSG,
        HOLD_LIMIT,
    );
    assert!(finished, "{}", stderr(&out));
    common::assert_success(&out);
    let lines = server.lines(0);
    let starttls = lines.iter().position(|l| l == "STARTTLS");
    let mail = lines.iter().position(|l| l.starts_with("MAIL FROM:"));
    assert!(
        matches!((starttls, mail), (Some(s), Some(m)) if s < m),
        "STARTTLS tried, then the message in plain text: {lines:?}"
    );
    let err = stderr(&out);
    let warning = err
        .lines()
        .find(|l| l.contains("STARTTLS") && l.contains("454"))
        .unwrap_or_else(|| panic!("no warning naming the refused STARTTLS: {err}"));
    assert!(warning.contains("127.0.0.1"), "names the host: {warning}");
    assert!(
        warning.contains("TLS not available due to local problem"),
        "quotes the reply: {warning}"
    );
    assert!(warning.contains("without TLS"), "{warning}");
}
