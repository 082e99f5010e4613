//! The session against scripted servers on real loopback sockets.

use super::*;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::sync::mpsc;
use std::thread;

/// What the scripted server saw: every line the client sent.
type Seen = mpsc::Receiver<Vec<String>>;

/// A server that answers each client line with the reply the `answer`
/// function gives (None: say nothing and read on), after `greeting`.
/// After DATA's 354 it collects data lines up to "." and answers
/// `dot_reply` (None: hang up without a reply).
fn server(
    greeting: &'static str,
    answer: fn(&str) -> Option<String>,
    dot_reply: Option<&'static str>,
) -> (SocketAddr, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut writer = stream.try_clone().unwrap();
        let mut reader = BufReader::new(stream);
        let mut seen = Vec::new();
        writer.write_all(greeting.as_bytes()).unwrap();
        let mut in_data = false;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                break;
            }
            seen.push(line.clone());
            let line = line.trim_end_matches(['\r', '\n']).to_string();
            if in_data {
                if line == "." {
                    in_data = false;
                    match dot_reply {
                        Some(r) => writer.write_all(r.as_bytes()).unwrap(),
                        None => break,
                    }
                }
                continue;
            }
            if let Some(reply) = answer(&line) {
                if reply.starts_with("354") {
                    in_data = true;
                }
                writer.write_all(reply.as_bytes()).unwrap();
            }
            if line == "QUIT" {
                break;
            }
        }
        let _ = tx.send(seen);
    });
    (addr, rx)
}

fn settings() -> ClientSettings {
    ClientSettings {
        helo_name: "client.test".into(),
        security: Security::Plain,
        credentials: None,
        ca_file: None,
        tlsa: Vec::new(),
        dane_names: Vec::new(),
        timeouts: Timeouts {
            connect: Duration::from_secs(5),
            command: Duration::from_secs(5),
            data_block: Duration::from_secs(5),
            final_dot: Duration::from_secs(5),
        },
    }
}

fn esmtp(line: &str) -> Option<String> {
    let upper = line.to_ascii_uppercase();
    Some(if upper.starts_with("EHLO") {
        "250-srv.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SIZE 100000\r\n".into()
    } else if upper.starts_with("RCPT TO:<BAD@") {
        "550 5.1.1 no such user\r\n".into()
    } else if upper == "DATA" {
        "354 go\r\n".into()
    } else if upper == "QUIT" {
        "221 bye\r\n".into()
    } else {
        "250 ok\r\n".into()
    })
}

fn envelope<'a>(recipients: &'a [String]) -> TransactionEnvelope<'a> {
    TransactionEnvelope {
        sender: "s@example.org",
        recipients,
        size: 20,
        eight_bit: true,
        smtputf8: false,
        dsn_ret: None,
        envid: None,
        dsn_notify: None,
        content: None,
        signer: None,
    }
}

#[test]
fn a_pipelined_transaction_reports_each_recipient() {
    let (addr, seen) = server(
        "220 srv.test ESMTP\r\n",
        esmtp,
        Some("250 2.0.0 queued\r\n"),
    );
    let mut s = Session::connect(addr, "srv.test", &settings()).unwrap();
    assert!(s.offers("pipelining"));
    let rcpts = vec!["good@x.test".to_string(), "bad@x.test".to_string()];
    let mut calls = 0;
    let result = s
        .send(
            &envelope(&rcpts),
            &mut &b"Subject: t\n\n.dot\nend"[..],
            &mut || {
                calls += 1;
                Ok(())
            },
        )
        .unwrap();
    assert_eq!(calls, 1);
    assert_eq!(result.rcpt[0].code, 250);
    assert_eq!(result.rcpt[1].enhanced_status().as_deref(), Some("5.1.1"));
    assert_eq!(result.data.as_ref().unwrap().code, 250);
    s.quit();
    let lines = seen.recv().unwrap();
    assert_eq!(lines[0], "EHLO client.test\r\n");
    assert_eq!(
        lines[1],
        "MAIL FROM:<s@example.org> SIZE=20 BODY=8BITMIME\r\n"
    );
    assert_eq!(lines[2], "RCPT TO:<good@x.test>\r\n");
    assert_eq!(lines[3], "RCPT TO:<bad@x.test>\r\n");
    assert_eq!(lines[4], "DATA\r\n");
    assert_eq!(
        lines[5..9],
        ["Subject: t\r\n", "\r\n", "..dot\r\n", "end\r\n"]
    );
    assert_eq!(lines[9], ".\r\n");
}

fn no_ehlo(line: &str) -> Option<String> {
    if line.starts_with("EHLO") {
        Some("502 5.5.1 what?\r\n".into())
    } else {
        esmtp(line)
    }
}

#[test]
fn helo_when_ehlo_is_refused_and_commands_go_one_by_one() {
    let (addr, seen) = server("220 old\r\n", no_ehlo, Some("250 ok\r\n"));
    let mut s = Session::connect(addr, "old", &settings()).unwrap();
    assert!(!s.offers("PIPELINING"));
    let rcpts = vec!["a@x.test".to_string()];
    s.send(&envelope(&rcpts), &mut &b"S: x\n\nb\n"[..], &mut || Ok(()))
        .unwrap();
    s.quit();
    let lines = seen.recv().unwrap();
    assert_eq!(lines[1], "HELO client.test\r\n");
    assert_eq!(
        lines[2], "MAIL FROM:<s@example.org>\r\n",
        "no extensions after HELO"
    );
}

#[test]
fn all_recipients_refused_means_no_data() {
    let (addr, seen) = server("220 x\r\n", esmtp, Some("250 ok\r\n"));
    let mut s = Session::connect(addr, "x", &settings()).unwrap();
    let rcpts = vec!["bad@x.test".to_string()];
    let mut called = false;
    let r = s
        .send(&envelope(&rcpts), &mut &b"S: x\n\nb\n"[..], &mut || {
            called = true;
            Ok(())
        })
        .unwrap();
    assert!(!called);
    assert!(r.data.is_none());
    s.quit();
    let lines = seen.recv().unwrap();
    // The pipelined DATA got 354: an empty data section, then RSET.
    assert!(lines.contains(&".\r\n".to_string()));
    assert!(lines.contains(&"RSET\r\n".to_string()));
    assert!(!lines.contains(&"b\r\n".to_string()), "no message data");
}

#[test]
fn too_big_for_the_servers_size_fails_before_mail() {
    let (addr, seen) = server("220 x\r\n", esmtp, Some("250 ok\r\n"));
    let mut s = Session::connect(addr, "x", &settings()).unwrap();
    let rcpts = vec!["a@x.test".to_string()];
    let mut env = envelope(&rcpts);
    env.size = 200_000;
    let e = s.send(&env, &mut &b""[..], &mut || Ok(())).unwrap_err();
    assert_eq!(e.kind, ErrorKind::TooBig);
    assert!(e.is_permanent());
    s.quit();
    let lines = seen.recv().unwrap();
    assert!(!lines.iter().any(|l| l.starts_with("MAIL")));
}

#[test]
fn a_link_dropped_after_the_dot_is_flagged() {
    let (addr, _seen) = server("220 x\r\n", esmtp, None);
    let mut s = Session::connect(addr, "x", &settings()).unwrap();
    let rcpts = vec!["a@x.test".to_string()];
    let e = s
        .send(&envelope(&rcpts), &mut &b"S: x\n\nb\n"[..], &mut || Ok(()))
        .unwrap_err();
    assert!(e.after_final_dot, "{e}");
}

#[test]
fn the_final_dot_reply_times_out() {
    // The server reads the dot but never answers: our (tiny) final-dot
    // timeout expires and the error says the dot had gone out.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let hold = thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut w = stream.try_clone().unwrap();
        let mut r = BufReader::new(stream);
        w.write_all(b"220 x\r\n").unwrap();
        let mut line = String::new();
        let mut in_data = false;
        while r.read_line(&mut line).unwrap_or(0) > 0 {
            let l = line.trim_end().to_string();
            line.clear();
            if in_data {
                if l == "." {
                    thread::sleep(Duration::from_secs(2));
                    break;
                }
                continue;
            }
            in_data = l == "DATA";
            w.write_all(esmtp(&l).unwrap().as_bytes()).unwrap();
        }
    });
    let mut st = settings();
    st.timeouts.final_dot = Duration::from_millis(200);
    let mut s = Session::connect(addr, "x", &st).unwrap();
    let rcpts = vec!["a@x.test".to_string()];
    let e = s
        .send(&envelope(&rcpts), &mut &b"S: x\n\nbody\n"[..], &mut || {
            Ok(())
        })
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Timeout, "{e}");
    assert!(e.after_final_dot);
    hold.join().unwrap();
}

#[test]
fn a_failing_window_record_withholds_the_dot() {
    let (addr, seen) = server("220 x\r\n", esmtp, Some("250 ok\r\n"));
    let mut s = Session::connect(addr, "x", &settings()).unwrap();
    let rcpts = vec!["a@x.test".to_string()];
    let e = s
        .send(&envelope(&rcpts), &mut &b"S: x\n\nb\n"[..], &mut || {
            Err(io::Error::other("disk full"))
        })
        .unwrap_err();
    assert!(!e.after_final_dot);
    drop(s);
    let lines = seen.recv().unwrap();
    assert!(!lines.contains(&".\r\n".to_string()), "{lines:?}");
}

#[test]
fn auth_is_refused_without_tls() {
    fn with_auth(line: &str) -> Option<String> {
        if line.starts_with("EHLO") {
            Some("250-x\r\n250 AUTH PLAIN LOGIN\r\n".into())
        } else {
            esmtp(line)
        }
    }
    let (addr, seen) = server("220 x\r\n", with_auth, Some("250 ok\r\n"));
    let mut st = settings();
    st.credentials = Some(Credentials {
        user: "u".into(),
        password: "secret".into(),
    });
    let e = Session::connect(addr, "x", &st).err().expect("refused");
    assert_eq!(e.kind, ErrorKind::AuthUnavailable);
    let lines = seen.recv().unwrap();
    assert!(!lines.iter().any(|l| l.starts_with("AUTH")), "{lines:?}");
    assert_eq!(
        lines.last().map(String::as_str),
        Some("QUIT\r\n"),
        "{lines:?}"
    );
}

#[test]
fn a_rejected_mail_leaves_the_session_usable() {
    fn reject_mail(line: &str) -> Option<String> {
        if line.starts_with("MAIL") {
            Some("451 4.3.0 try later\r\n".into())
        } else {
            esmtp(line)
        }
    }
    let (addr, _seen) = server("220 x\r\n", reject_mail, Some("250 ok\r\n"));
    let mut s = Session::connect(addr, "x", &settings()).unwrap();
    let rcpts = vec!["a@x.test".to_string()];
    let e = s
        .send(&envelope(&rcpts), &mut &b"S: x\n\nb\n"[..], &mut || Ok(()))
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Rejected);
    assert!(!e.is_permanent());
    s.reset().expect("the session still answers");
}

#[test]
fn xtext_encodes_specials() {
    assert_eq!(xtext("a+b=c d"), "a+2Bb+3Dc+20d");
}

/// A server that sends `head` at once, then `trickle` one byte every
/// 100 ms (the fault itself), then hangs up.
fn trickler(head: &'static [u8], trickle: &'static [u8]) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        stream.write_all(head).unwrap();
        let mut seen_starttls = head.is_empty();
        for &b in trickle {
            if !seen_starttls {
                // Reply to EHLO and STARTTLS before the trickle.
                let mut line = String::new();
                while reader.read_line(&mut line).unwrap_or(0) > 0 {
                    if line.starts_with("EHLO") {
                        stream.write_all(b"250-x\r\n250 STARTTLS\r\n").unwrap();
                    } else if line.starts_with("STARTTLS") {
                        stream.write_all(b"220 go ahead\r\n").unwrap();
                        break;
                    }
                    line.clear();
                }
                seen_starttls = true;
            }
            if stream.write_all(&[b]).is_err() {
                return;
            }
            thread::sleep(Duration::from_millis(100));
        }
    });
    addr
}

#[test]
fn a_trickled_greeting_is_cut_at_the_command_timeout() {
    // 100 lines at 10 bytes a second: over five minutes, each read of
    // which makes progress well within any per-read timeout.
    let addr = trickler(b"", "220-trickle\r\n".repeat(100).leak().as_bytes());
    let mut st = settings();
    st.timeouts.command = Duration::from_millis(700);
    let start = std::time::Instant::now();
    let e = Session::connect(addr, "x", &st).err().expect("cut");
    assert_eq!(e.kind, ErrorKind::Timeout, "{e}");
    assert!(e.message.contains("greeting"), "{e}");
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn a_trickled_tls_handshake_is_cut_at_the_command_timeout() {
    // After 220 to STARTTLS, a TLS record header announcing a long
    // handshake message, whose body then comes one byte at a time.
    let mut record = vec![0x16, 0x03, 0x03, 0x40, 0x00, 0x02, 0x00, 0x3f, 0xfc];
    record.extend(std::iter::repeat_n(0u8, 3000));
    let addr = trickler(b"220 x\r\n", record.leak());
    let mut st = settings();
    st.security = Security::Opportunistic;
    st.timeouts.command = Duration::from_millis(700);
    let start = std::time::Instant::now();
    let e = Session::connect(addr, "x", &st).err().expect("cut");
    assert_eq!(e.kind, ErrorKind::Timeout, "{e}");
    assert!(e.message.contains("TLS handshake"), "{e}");
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
}

/// What a window-watching server saw: the most commands it ever had
/// unanswered, and the RCPTs it answered.
struct WindowSeen {
    most_unanswered: usize,
    rcpts: usize,
    messages: usize,
}

/// A pipelining server that answers nothing until it holds a full
/// window of commands (or DATA); then it waits a little for one more
/// command, which a client keeping to the window never sends, and
/// answers all it holds.
fn window_watcher() -> (SocketAddr, mpsc::Receiver<WindowSeen>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut w = stream.try_clone().unwrap();
        let mut r = BufReader::new(stream);
        let mut seen = WindowSeen {
            most_unanswered: 0,
            rcpts: 0,
            messages: 0,
        };
        w.write_all(b"220 x\r\n").unwrap();
        let mut held: Vec<String> = Vec::new();
        let mut in_data = false;
        let mut line = String::new();
        loop {
            line.clear();
            match r.read_line(&mut line) {
                Ok(0) => break,
                Ok(_) => {}
                // The quiet wait below ran out: the client waits for us.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    r.get_ref().set_read_timeout(None).unwrap();
                    answer(&mut w, &mut held, &mut seen, &mut in_data);
                    continue;
                }
                Err(_) => break,
            }
            let l = line.trim_end().to_string();
            if in_data {
                if l == "." {
                    in_data = false;
                    seen.messages += 1;
                    w.write_all(b"250 ok\r\n").unwrap();
                }
                continue;
            }
            if l.starts_with("EHLO") {
                w.write_all(b"250-x\r\n250 PIPELINING\r\n").unwrap();
                continue;
            }
            if l == "QUIT" {
                w.write_all(b"221 bye\r\n").unwrap();
                break;
            }
            held.push(l.clone());
            seen.most_unanswered = seen.most_unanswered.max(held.len());
            if l == "DATA" || l == "RSET" {
                answer(&mut w, &mut held, &mut seen, &mut in_data);
            } else if held.len() >= PIPELINE_WINDOW {
                // One more command within this wait breaks the window.
                r.get_ref()
                    .set_read_timeout(Some(Duration::from_millis(300)))
                    .unwrap();
            }
        }
        let _ = tx.send(seen);
    });
    (addr, rx)
}

fn answer(w: &mut TcpStream, held: &mut Vec<String>, seen: &mut WindowSeen, in_data: &mut bool) {
    for c in held.drain(..) {
        if c.starts_with("RCPT") {
            seen.rcpts += 1;
        }
        if c == "DATA" {
            *in_data = true;
            w.write_all(b"354 go\r\n").unwrap();
        } else {
            w.write_all(b"250 ok\r\n").unwrap();
        }
    }
}

#[test]
fn pipelined_commands_never_exceed_the_window() {
    let (addr, seen) = window_watcher();
    let mut s = Session::connect(addr, "x", &settings()).unwrap();
    let rcpts: Vec<String> = (0..450).map(|i| format!("r{i}@x.test")).collect();
    let result = s
        .send(&envelope(&rcpts), &mut &b"S: x\n\nb\n"[..], &mut || Ok(()))
        .unwrap();
    assert_eq!(result.rcpt.len(), 450);
    assert!(result.rcpt.iter().all(Reply::is_positive));
    assert_eq!(result.data.unwrap().code, 250);
    s.quit();
    let seen = seen.recv().unwrap();
    assert_eq!(seen.rcpts, 450);
    assert_eq!(seen.messages, 1);
    assert!(
        seen.most_unanswered <= PIPELINE_WINDOW,
        "{} commands unanswered at once",
        seen.most_unanswered
    );
    assert_eq!(
        seen.most_unanswered, PIPELINE_WINDOW,
        "the window is used in full, not one command at a time"
    );
}

#[test]
fn a_small_pipelined_envelope_goes_in_one_write() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream.write_all(b"220 x\r\n").unwrap();
        let mut buf = [0u8; 4096];
        let n = stream.read(&mut buf).unwrap();
        assert!(buf[..n].starts_with(b"EHLO"));
        stream.write_all(b"250-x\r\n250 PIPELINING\r\n").unwrap();
        // The first read after EHLO: what one write of the client holds.
        let n = stream.read(&mut buf).unwrap();
        let _ = tx.send(String::from_utf8_lossy(&buf[..n]).into_owned());
    });
    let mut s = Session::connect(addr, "x", &settings()).unwrap();
    let rcpts: Vec<String> = (0..3).map(|i| format!("r{i}@x.test")).collect();
    let _ = s.send(&envelope(&rcpts), &mut &b"S: x\n\nb\n"[..], &mut || Ok(()));
    assert_eq!(
        rx.recv().unwrap(),
        "MAIL FROM:<s@example.org>\r\nRCPT TO:<r0@x.test>\r\nRCPT TO:<r1@x.test>\r\n\
         RCPT TO:<r2@x.test>\r\nDATA\r\n"
    );
}

#[test]
fn a_refused_mail_stops_the_pipeline() {
    fn refuse_mail(line: &str) -> Option<String> {
        if line.starts_with("MAIL") {
            Some("550 5.7.1 not you\r\n".into())
        } else if line.starts_with("RCPT") {
            Some("503 5.5.1 MAIL first\r\n".into())
        } else {
            esmtp(line)
        }
    }
    let (addr, seen) = server("220 x\r\n", refuse_mail, Some("250 ok\r\n"));
    let mut s = Session::connect(addr, "x", &settings()).unwrap();
    let rcpts: Vec<String> = (0..300).map(|i| format!("r{i}@x.test")).collect();
    let e = s
        .send(&envelope(&rcpts), &mut &b"S: x\n\nb\n"[..], &mut || Ok(()))
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Rejected);
    assert!(e.is_permanent());
    s.quit();
    let lines = seen.recv().unwrap();
    let rcpt_lines = lines.iter().filter(|l| l.starts_with("RCPT")).count();
    assert!(
        rcpt_lines <= PIPELINE_WINDOW,
        "{rcpt_lines} RCPTs after a refused MAIL"
    );
    assert!(!lines.contains(&"DATA\r\n".to_string()), "no DATA");
    assert!(lines.contains(&"RSET\r\n".to_string()), "RSET");
}

#[test]
fn no_rcpt_is_pipelined_after_a_452() {
    // Takes r0..r39, then 452 for any more.
    fn forty(line: &str) -> Option<String> {
        let n = line
            .strip_prefix("RCPT TO:<r")
            .and_then(|rest| rest.split('@').next())
            .and_then(|n| n.parse::<usize>().ok());
        match n {
            Some(n) if n >= 40 => Some("452 4.5.3 Too many recipients\r\n".into()),
            _ => esmtp(line),
        }
    }
    let (addr, seen) = server("220 x\r\n", forty, Some("250 ok\r\n"));
    let mut s = Session::connect(addr, "x", &settings()).unwrap();
    let rcpts: Vec<String> = (0..300).map(|i| format!("r{i}@x.test")).collect();
    let result = s
        .send(&envelope(&rcpts), &mut &b"S: x\n\nb\n"[..], &mut || Ok(()))
        .unwrap();
    assert_eq!(result.rcpt.len(), 300, "a reply for each, sent or not");
    assert!(result.rcpt[..40].iter().all(Reply::is_positive));
    assert!(result.rcpt[40..].iter().all(|r| r.code == 452));
    assert_eq!(result.data.unwrap().code, 250, "the 40 got their copy");
    s.quit();
    let lines = seen.recv().unwrap();
    let rcpt_lines = lines.iter().filter(|l| l.starts_with("RCPT")).count();
    assert!(
        rcpt_lines < PIPELINE_WINDOW,
        "{rcpt_lines} RCPTs sent: none after the 452 was read, only those already in flight"
    );
}

#[test]
fn every_refused_setup_ends_with_quit() {
    // Issue 24 item 3: RFC 5321 §4.1.1.10; Postfix logged "lost
    // connection after AUTH" / "after EHLO".
    fn no_starttls(line: &str) -> Option<String> {
        esmtp(line)
    }
    fn refuse_ehlo(line: &str) -> Option<String> {
        if line.starts_with("EHLO") || line.starts_with("HELO") {
            Some("550 5.7.1 go away\r\n".into())
        } else {
            esmtp(line)
        }
    }
    let without_tls = |security: Security| {
        let mut st = settings();
        st.security = security;
        st
    };
    type Case = (
        &'static str,
        fn(&str) -> Option<String>,
        ClientSettings,
        ErrorKind,
    );
    let cases: [Case; 3] = [
        (
            "220 x\r\n",
            no_starttls,
            without_tls(Security::StarttlsVerified),
            ErrorKind::Tls,
        ),
        (
            "554 5.7.1 no service\r\n",
            esmtp,
            settings(),
            ErrorKind::Rejected,
        ),
        ("220 x\r\n", refuse_ehlo, settings(), ErrorKind::Rejected),
    ];
    for (greeting, answer, st, kind) in cases {
        let (addr, seen) = server(greeting, answer, None);
        let e = Session::connect(addr, "x", &st).err().expect("refused");
        assert_eq!(e.kind, kind, "{e}");
        let lines = seen.recv().unwrap();
        assert_eq!(
            lines.last().map(String::as_str),
            Some("QUIT\r\n"),
            "{lines:?}"
        );
    }
}

#[test]
fn a_refused_auth_is_followed_by_quit() {
    // The 535 path of [`Session::authenticate`]; the TLS it needs is
    // taken as done (the scripted server speaks plain text), and what
    // `open` does after the error, QUIT, follows.
    fn refuse_auth(line: &str) -> Option<String> {
        if line.starts_with("AUTH") {
            Some("535 5.7.8 authentication failed\r\n".into())
        } else {
            esmtp(line)
        }
    }
    let (addr, seen) = server("220 x\r\n", refuse_auth, None);
    let mut s = Session::connect(addr, "x", &settings()).unwrap();
    s.tls = true;
    s.extensions.push(("AUTH".into(), "PLAIN".into()));
    let e = s
        .authenticate(&Credentials {
            user: "u".into(),
            password: "p".into(),
        })
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::AuthUnavailable);
    assert_eq!(e.reply.as_ref().map(|r| r.code), Some(535));
    s.send_quit();
    let lines = seen.recv().unwrap();
    assert_eq!(lines.last().map(String::as_str), Some("QUIT\r\n"));
}

fn no_8bitmime(line: &str) -> Option<String> {
    if line.to_ascii_uppercase().starts_with("EHLO") {
        Some("250-srv.test\r\n250-PIPELINING\r\n250 SIZE 100000\r\n".into())
    } else {
        esmtp(line)
    }
}

#[test]
fn eight_bit_content_is_declared_where_offered_and_converted_where_not() {
    let message = "Subject: t\n\nh\u{e9}llo\n".as_bytes();
    let content = scan(&mut &message[..]).unwrap();
    let rcpts = vec!["a@x.test".to_string()];
    let mut env = envelope(&rcpts);
    env.eight_bit = false;
    env.content = Some(&content);
    for (answer, declared, converted) in [
        (esmtp as fn(&str) -> Option<String>, true, false),
        (no_8bitmime, false, true),
    ] {
        let (addr, seen) = server("220 x\r\n", answer, Some("250 ok\r\n"));
        let mut s = Session::connect(addr, "x", &settings()).unwrap();
        s.send(&env, &mut &message[..], &mut || Ok(())).unwrap();
        s.quit();
        let lines = seen.recv().unwrap();
        let mail = lines.iter().find(|l| l.starts_with("MAIL")).unwrap();
        assert_eq!(mail.contains(" BODY=8BITMIME"), declared, "{mail}");
        let data: String = lines.concat();
        assert_eq!(data.contains("h=C3=A9llo"), converted, "{data}");
        assert!(!converted || data.is_ascii(), "{data}");
    }
}

/// Sends `message` (scanned as the runner does, MIME parts included) to
/// a server without 8BITMIME: the refusal before MAIL, as text.
fn refused_before_mail_without_8bitmime(message: &[u8]) -> String {
    let mut content = scan(&mut &message[..]).unwrap();
    content.eight_bit_part_header =
        crate::smtp::eight_bit_in_part_headers(&mut &message[..], &content).unwrap();
    let rcpts = vec!["a@x.test".to_string()];
    let mut env = envelope(&rcpts);
    env.content = Some(&content);
    let (addr, seen) = server("220 x\r\n", no_8bitmime, Some("250 ok\r\n"));
    let mut s = Session::connect(addr, "x", &settings()).unwrap();
    let e = s.send(&env, &mut &message[..], &mut || Ok(())).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unconvertible);
    assert!(e.is_permanent());
    s.quit();
    let lines = seen.recv().unwrap();
    assert!(!lines.iter().any(|l| l.starts_with("MAIL")), "{lines:?}");
    e.to_string()
}

#[test]
fn eight_bit_header_fields_without_8bitmime_are_refused_before_mail() {
    let said = refused_before_mail_without_8bitmime("Subject: \u{e9}t\u{e9}\n\nbody\n".as_bytes());
    assert!(!said.contains("in a MIME part"), "{said}");
}

#[test]
fn eight_bit_part_header_fields_without_8bitmime_are_refused_before_mail() {
    let message = "MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=b\n\n\
        --b\nContent-Type: text/plain; name=\"\u{e9}t\u{e9}.txt\"\n\nbody\n--b--\n";
    let said = refused_before_mail_without_8bitmime(message.as_bytes());
    assert!(said.contains("in a MIME part"), "{said}");
}

#[test]
fn a_nul_is_encoded_even_where_8bitmime_is_offered() {
    // Issue 24 item 5: NUL is not allowed in 8BITMIME data (RFC 6152 §2).
    let message = b"Subject: t\n\na\0b \xc3\xa9\n";
    let content = scan(&mut &message[..]).unwrap();
    let rcpts = vec!["a@x.test".to_string()];
    let mut env = envelope(&rcpts);
    env.content = Some(&content);
    let (addr, seen) = server("220 x\r\n", esmtp, Some("250 ok\r\n"));
    let mut s = Session::connect(addr, "x", &settings()).unwrap();
    s.send(&env, &mut &message[..], &mut || Ok(())).unwrap();
    s.quit();
    let data = seen.recv().unwrap().concat();
    assert!(!data.contains('\0'), "{data:?}");
    assert!(data.contains("a=00b =C3=A9\r\n"), "{data:?}");
    assert!(data.contains("MIME-Version: 1.0\r\n"), "{data:?}");
}

/// A pipelining server that reports each line it reads as it reads it
/// (the tests below look at what it has when the final dot's gate is
/// waited for), answers as [`esmtp`] and the final dot with 250.
fn line_reporting_server() -> (SocketAddr, mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut writer = stream.try_clone().unwrap();
        let mut reader = BufReader::new(stream);
        writer.write_all(b"220 srv.test ESMTP\r\n").unwrap();
        let mut in_data = false;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                break;
            }
            let _ = tx.send(line.clone());
            let line = line.trim_end_matches(['\r', '\n']);
            let reply = match in_data {
                true if line == "." => "250 ok\r\n".to_string(),
                true => continue,
                false => esmtp(line).unwrap(),
            };
            in_data = reply.starts_with("354");
            writer.write_all(reply.as_bytes()).unwrap();
            if line == "QUIT" {
                break;
            }
        }
    });
    (addr, rx)
}

/// The final dot's gate, counting its calls; `lines` are the server's.
struct CountingGate<'a> {
    open: bool,
    waits: usize,
    lines: &'a mpsc::Receiver<String>,
    /// Whether the server had the data's last line when `wait` was called.
    data_seen_at_wait: Option<bool>,
    /// How long a closed gate waits for the server to see that line.
    patience: Duration,
}

impl FinalDotGate for CountingGate<'_> {
    fn open_now(&mut self) -> bool {
        self.open
    }

    fn wait(&mut self) -> io::Result<()> {
        self.waits += 1;
        let last = "end\r\n";
        let seen = match self.open {
            // Nothing to wait for: what the server has by now.
            true => self.lines.try_iter().any(|l| l == last),
            // A closed gate stands for a wait (the window's sync): the
            // data must be on its way meanwhile. Bounded: a client that
            // held it back would never let the server see it.
            false => loop {
                match self.lines.recv_timeout(self.patience) {
                    Ok(l) if l == last => break true,
                    Ok(_) => continue,
                    Err(_) => break false,
                }
            },
        };
        self.data_seen_at_wait = Some(seen);
        Ok(())
    }
}

/// Sends `message` in one transaction through a [`CountingGate`] that is
/// `open` or closed (waiting up to `patience` for the data's last line),
/// after the session's QUIT: whether the server had that line when the
/// gate was asked, and the server's lines not yet taken.
fn send_through_gate(
    open: bool,
    patience: Duration,
    message: &[u8],
) -> (Option<bool>, mpsc::Receiver<String>) {
    let (addr, lines) = line_reporting_server();
    let mut s = Session::connect(addr, "srv.test", &settings()).unwrap();
    let rcpts = vec!["a@x.test".to_string()];
    let mut gate = CountingGate {
        open,
        waits: 0,
        lines: &lines,
        data_seen_at_wait: None,
        patience,
    };
    let result = s
        .send(&envelope(&rcpts), &mut &message[..], &mut gate)
        .unwrap();
    assert_eq!(result.data.unwrap().code, 250);
    // Asked once, open or not (an open gate's own check).
    assert_eq!(gate.waits, 1);
    let seen = gate.data_seen_at_wait;
    s.quit();
    (seen, lines)
}

#[test]
fn a_closed_final_dot_gate_is_waited_for_with_a_large_tail_sent() {
    // More than SMALL_TAIL of data: it goes out while the gate is
    // waited for.
    let mut message = b"S: x\n\n".to_vec();
    for _ in 0..(SMALL_TAIL / 50 + 1) {
        message.extend_from_slice(&[b'x'; 60]);
        message.push(b'\n');
    }
    message.extend_from_slice(b"end\n");
    let (seen, _) = send_through_gate(false, Duration::from_secs(10), &message);
    assert_eq!(seen, Some(true), "data flushed before the wait");
}

#[test]
fn a_small_tail_waits_for_a_closed_gate_and_goes_with_the_dot() {
    // Showing that the server has *not* seen the line takes a bounded
    // look: a client that sent it would have it there in microseconds.
    let (seen, _) = send_through_gate(false, Duration::from_millis(500), b"S: x\n\nend\n");
    assert_eq!(seen, Some(false), "data held for the dot");
}

#[test]
fn an_open_final_dot_gate_sends_the_data_with_the_dot() {
    let (seen, lines) = send_through_gate(true, Duration::from_secs(10), b"S: x\n\nend\n");
    // The data held back for one write with the dot: the server cannot
    // have it yet.
    assert_eq!(seen, Some(false), "data held for the dot");
    let rest: Vec<String> = lines.iter().collect();
    let dot = rest.iter().position(|l| l == ".\r\n").expect("the dot");
    assert_eq!(rest[dot - 1], "end\r\n", "the data, then the dot: {rest:?}");
}
