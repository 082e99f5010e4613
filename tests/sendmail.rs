//! The sendmail face, end to end: each test runs the built binary with a
//! real command line and checks what reached the spool.

mod common;

use common::*;

const SIMPLE: &[u8] = b"Subject: hello\n\nbody line\n";

#[test]
fn message_is_queued_and_exit_is_zero() {
    let w = World::new();
    let id = w.send_ok(&["rcpt@example.com"], SIMPLE);
    assert_eq!(id.len(), 16, "short, fixed-width queue id: {id}");
    let env = w.envelope(&id);
    assert_eq!(env.recipients, vec!["rcpt@example.com"]);
    assert!(w.tmp_files().is_empty());
    let data = w.data(&id);
    assert_eq!(env.size, data.len() as u64);
    let (_, body) = split_message(&data);
    assert_eq!(body, b"body line\n");
}

#[test]
fn several_recipients_and_comma_lists() {
    let w = World::new();
    let id = w.send_ok(
        &["a@example.com", "b@example.org, Carol <c@example.net>"],
        SIMPLE,
    );
    assert_eq!(
        w.envelope(&id).recipients,
        vec!["a@example.com", "b@example.org", "c@example.net"]
    );
}

#[test]
fn bare_local_names_are_accepted() {
    // cron and fail2ban send to "root".
    let w = World::new();
    let id = w.send_ok(&["root"], SIMPLE);
    assert_eq!(w.envelope(&id).recipients, vec!["root"]);
}

#[test]
fn no_recipients_exits_64_and_queues_nothing() {
    let w = World::new();
    let out = w.sendmail(&[], SIMPLE);
    assert_exit(&out, 64);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no recipients"));
    assert!(w.queue_ids().is_empty());
}

#[test]
fn t_without_recipient_headers_exits_64_and_queues_nothing() {
    let w = World::new();
    let out = w.sendmail(&["-t"], SIMPLE);
    assert_exit(&out, 64);
    assert!(w.queue_ids().is_empty());
    assert!(
        w.tmp_files().is_empty(),
        "draft removed: {:?}",
        w.tmp_files()
    );
}

#[test]
fn unknown_option_exits_64_with_usage() {
    let w = World::new();
    let out = w.sendmail(&["-Z", "a@example.com"], SIMPLE);
    assert_exit(&out, 64);
    assert!(String::from_utf8_lossy(&out.stderr).contains("usage:"));
    assert!(w.queue_ids().is_empty());
}

#[test]
fn t_takes_to_cc_bcc_and_strips_bcc() {
    let w = World::new();
    let msg = b"To: a@example.com, B <b@example.com>\nCc: c@example.com\nBcc: secret@example.com\nSubject: t\n\nhi\n";
    let id = w.send_ok(&["-t"], msg);
    assert_eq!(
        w.envelope(&id).recipients,
        vec![
            "a@example.com",
            "b@example.com",
            "c@example.com",
            "secret@example.com"
        ]
    );
    let (header, _) = split_message(&w.data(&id));
    assert!(!header.to_ascii_lowercase().contains("bcc"), "{header}");
    assert!(!header.contains("secret@"), "{header}");
    assert!(header.contains("To: a@example.com, B <b@example.com>\n"));
}

#[test]
fn t_adds_command_line_recipients() {
    let w = World::new();
    let msg = b"To: a@example.com\n\nhi\n";
    let id = w.send_ok(&["-t", "extra@example.com"], msg);
    assert_eq!(
        w.envelope(&id).recipients,
        vec!["a@example.com", "extra@example.com"]
    );
}

#[test]
fn t_uses_resent_headers_when_present() {
    let w = World::new();
    let msg = b"To: original@example.com\nResent-To: new@example.com\nResent-Bcc: hidden@example.com\n\nhi\n";
    let id = w.send_ok(&["-t"], msg);
    assert_eq!(
        w.envelope(&id).recipients,
        vec!["new@example.com", "hidden@example.com"]
    );
    let (header, _) = split_message(&w.data(&id));
    assert!(!header.contains("hidden@"), "{header}");
    assert!(header.contains("To: original@example.com"));
}

#[test]
fn t_expands_groups_and_ignores_empty_groups() {
    let w = World::new();
    let msg = b"To: team: a@example.com, b@example.com;\nCc: undisclosed-recipients:;\n\nhi\n";
    let id = w.send_ok(&["-t"], msg);
    assert_eq!(
        w.envelope(&id).recipients,
        vec!["a@example.com", "b@example.com"]
    );
}

#[test]
fn lone_dot_ends_the_message_without_i() {
    let w = World::new();
    let id = w.send_ok(&["a@example.com"], b"Subject: x\n\nbefore\n.\nafter\n");
    let (_, body) = split_message(&w.data(&id));
    assert_eq!(body, b"before\n");
}

#[test]
fn lone_dot_is_data_with_i_and_oi() {
    for flag in ["-i", "-oi"] {
        let w = World::new();
        let id = w.send_ok(
            &[flag, "a@example.com"],
            b"Subject: x\n\nbefore\n.\nafter\n",
        );
        let (_, body) = split_message(&w.data(&id));
        assert_eq!(body, b"before\n.\nafter\n", "with {flag}");
    }
}

#[test]
fn double_dot_is_kept_as_sent_without_i() {
    // sendmail 8 does not undo dot-stuffing outside SMTP mode.
    let w = World::new();
    let id = w.send_ok(&["a@example.com"], b"Subject: x\n\n..leading\n");
    let (_, body) = split_message(&w.data(&id));
    assert_eq!(body, b"..leading\n");
}

#[test]
fn crlf_and_lf_input_are_stored_with_one_line_ending() {
    // PHP mail(): headers end in CRLF, the body in LF.
    let w = World::new();
    let msg = b"To: a@example.com\r\nSubject: php\r\n\r\nline one\nline two\r\n";
    let id = w.send_ok(&["-t", "-i"], msg);
    let data = w.data(&id);
    assert!(
        !data.contains(&b'\r'),
        "no CR left: {:?}",
        String::from_utf8_lossy(&data)
    );
    let (header, body) = split_message(&data);
    assert!(
        header.contains("\nTo: a@example.com\nSubject: php\n"),
        "{header}"
    );
    assert_eq!(body, b"line one\nline two\n");
}

#[test]
fn missing_final_newline_is_added() {
    // fail2ban: `sendmail -f fail2ban root`, no -i, no final newline.
    let w = World::new();
    let id = w.send_ok(
        &["-f", "fail2ban", "root"],
        b"Subject: ban\n\nbanned 1.2.3.4",
    );
    let env = w.envelope(&id);
    assert_eq!(env.sender, format!("fail2ban@{HOSTNAME}"));
    let (_, body) = split_message(&w.data(&id));
    assert_eq!(body, b"banned 1.2.3.4\n");
}

#[test]
fn eight_bit_and_binary_bytes_are_kept() {
    let w = World::new();
    let mut msg = b"Subject: caf\xc3\xa9\n\n".to_vec();
    let body: Vec<u8> = (0u8..=255).filter(|b| *b != b'\n' && *b != b'\r').collect();
    msg.extend_from_slice(&body);
    msg.push(b'\n');
    let id = w.send_ok(&["-i", "a@example.com"], &msg);
    let data = w.data(&id);
    let (header, stored) = split_message(&data);
    assert!(header.contains("Subject: café\n"));
    let mut expected = body.clone();
    expected.push(b'\n');
    assert_eq!(stored, expected);
}

#[test]
fn message_without_headers_gets_a_header_section() {
    let w = World::new();
    let id = w.send_ok(&["a@example.com"], b"just a line of text\nand another\n");
    let (header, body) = split_message(&w.data(&id));
    assert!(header_value(&header, "From").is_some());
    assert_eq!(body, b"just a line of text\nand another\n");
}

#[test]
fn from_date_message_id_are_added_when_missing() {
    let w = World::new();
    let id = w.send_ok(&["-F", "Cron Daemon", "a@example.com"], SIMPLE);
    let (header, _) = split_message(&w.data(&id));
    let from = header_value(&header, "From").expect("From added");
    let env = w.envelope(&id);
    assert_eq!(from, format!("Cron Daemon <{}>", env.sender));
    let date = header_value(&header, "Date").expect("Date added");
    assert!(date.len() >= 29 && date.contains(':'), "{date}");
    let mid = header_value(&header, "Message-ID").expect("Message-ID added");
    assert_eq!(mid, format!("<{id}@{HOSTNAME}>"));
}

#[test]
fn present_from_date_message_id_are_kept_and_not_duplicated() {
    let w = World::new();
    let msg = b"From: Me <me@example.com>\nDate: Tue, 1 Jan 2030 00:00:00 +0000\nMessage-ID: <x@y>\nSubject: s\n\nb\n";
    let id = w.send_ok(&["a@example.com"], msg);
    let data = w.data(&id);
    let (header, _) = split_message(&data);
    // Only the trace field is added, on top (RFC 5321 §4.4).
    let (received, rest) = header.split_once("\n\tid ").expect("Received first");
    assert_eq!(
        received,
        format!(
            "Received: by {HOSTNAME} (spoolmail, from userid {})",
            w.envelope(&id).uid
        )
    );
    let rest = rest.split_once('\n').expect("rest").1;
    assert_eq!(rest, String::from_utf8_lossy(&msg[..msg.len() - 3]));
}

#[test]
fn default_sender_is_login_at_hostname() {
    let w = World::new();
    let id = w.send_ok(&["a@example.com"], SIMPLE);
    let login = nix::unistd::User::from_uid(nix::unistd::getuid())
        .unwrap()
        .unwrap()
        .name;
    assert_eq!(w.envelope(&id).sender, format!("{login}@{HOSTNAME}"));
}

#[test]
fn f_sets_the_envelope_sender_in_both_forms() {
    let w = World::new();
    let id = w.send_ok(&["-fbounce@example.com", "a@example.com"], SIMPLE);
    assert_eq!(w.envelope(&id).sender, "bounce@example.com");
    let id = w.send_ok(&["-f", "other@example.com", "a@example.com"], SIMPLE);
    assert_eq!(w.envelope(&id).sender, "other@example.com");
    let id = w.send_ok(&["-r", "r@example.com", "a@example.com"], SIMPLE);
    assert_eq!(w.envelope(&id).sender, "r@example.com");
}

#[test]
fn null_sender_is_accepted() {
    let w = World::new();
    let id = w.send_ok(&["-f", "<>", "a@example.com"], SIMPLE);
    assert_eq!(w.envelope(&id).sender, "");
}

/// A message from the null sender without a From: field gets
/// `From: MAILER-DAEMON@hostname`, as Postfix writes it — not the caller's
/// name and address, which the null sender does not stand for.
#[test]
fn null_sender_gets_a_mailer_daemon_from_field() {
    let w = World::new();
    let id = w.send_ok(&["-F", "Cron Daemon", "-f", "<>", "a@example.com"], SIMPLE);
    let (header, _) = split_message(&w.data(&id));
    let from = header_value(&header, "From").expect("From added");
    assert_eq!(from, format!("MAILER-DAEMON@{HOSTNAME}"));
}

#[test]
fn invalid_addresses_exit_65_with_a_clear_error() {
    let w = World::new();
    for bad in [
        "a@@example.com",
        "a@exa mple.com",
        "@example.com",
        "a@-x.com",
    ] {
        let out = w.sendmail(&[bad], SIMPLE);
        assert_exit(&out, 65);
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("invalid address"),
            "{bad}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let long_local = format!("{}@example.com", "x".repeat(65));
    assert_exit(&w.sendmail(&[&long_local], SIMPLE), 65);
    let out = w.sendmail(&["-f", "bad sender@x", "a@example.com"], SIMPLE);
    assert_exit(&out, 65);
    assert!(w.queue_ids().is_empty());
}

#[test]
fn invalid_header_address_under_t_exits_65() {
    let w = World::new();
    let out = w.sendmail(&["-t"], b"To: a@@b\n\nx\n");
    assert_exit(&out, 65);
    assert!(w.queue_ids().is_empty());
    assert!(w.tmp_files().is_empty());
}

#[test]
fn line_breaks_in_arguments_are_refused() {
    let w = World::new();
    for args in [
        vec![
            "-f",
            "a@example.com\r\nRCPT TO:<victim@example.com>",
            "b@example.com",
        ],
        vec!["-F", "Name\nBcc: victim@example.com", "b@example.com"],
        vec!["b@example.com\nvictim@example.com"],
        vec!["-V", "id\r\nDATA", "b@example.com"],
    ] {
        let out = w.sendmail(&args, SIMPLE);
        assert_exit(&out, 64);
    }
    assert!(w.queue_ids().is_empty());
}

#[test]
fn x_option_never_creates_or_writes_its_file() {
    // CVE-2016-10033: PHPMailer let "-X/var/www/shell.php" through to sendmail.
    let w = World::new();
    let target = w.dir.path().join("shell.php");
    let arg = format!("-X{}", target.display());
    w.send_ok(
        &[&arg, "a@example.com"],
        b"Subject: <?php system($_GET['c']); ?>\n\nx\n",
    );
    w.send_ok(&["-X", target.to_str().unwrap(), "a@example.com"], SIMPLE);
    let dbg = format!("-D{}", target.display());
    w.send_ok(&[&dbg, "a@example.com"], SIMPLE);
    assert!(!target.exists(), "-X/-D must not create the file");
    // An existing file is not touched either.
    std::fs::write(&target, b"original").unwrap();
    w.send_ok(&[&arg, "a@example.com"], SIMPLE);
    assert_eq!(std::fs::read(&target).unwrap(), b"original");
}

#[test]
fn oq_and_config_options_do_not_redirect_the_queue() {
    let w = World::new();
    let elsewhere = w.dir.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    let q = format!("-oQ{}", elsewhere.display());
    let o = format!("QueueDirectory={}", elsewhere.display());
    w.send_ok(&[&q, "-O", &o, "a@example.com"], SIMPLE);
    assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
}

#[test]
fn every_accepted_option_queues_the_message() {
    let w = World::new();
    let cases: &[&[&str]] = &[
        &["-oem"],
        &["-oep"],
        &["-oeq"],
        &["-oew"],
        &["-oee"],
        &["-odq"],
        &["-odd"],
        &["-B8BITMIME"],
        &["-B", "7BIT"],
        &["-N", "never"],
        &["-N", "success,failure,delay"],
        &["-R", "full"],
        &["-R", "hdrs"],
        &["-V", "envid123"],
        &["-v"],
        &["-h", "5"],
        &["-n"],
        &["-U"],
        &["-G"],
        &["-m"],
        &["-c"],
        &["-s"],
        &["-L", "tag"],
        &["-Am"],
        &["-d0.1"],
        &["-O", "LogLevel=9"],
        &["-oL9"],
        &["-om"],
        &["-bm"],
        &["-FFull"],
        &["-O", "IgnoreDots=true"],
        &["-pESMTP:host"],
        &["-Mrvalue"],
    ];
    for args in cases {
        let mut argv: Vec<&str> = args.to_vec();
        argv.push("a@example.com");
        let out = w.sendmail(&argv, SIMPLE);
        assert!(
            out.status.success(),
            "{argv:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(w.queue_ids().len(), cases.len());
}

#[test]
fn dsn_options_are_stored_in_the_envelope() {
    let w = World::new();
    let id = w.send_ok(
        &[
            "-B8BITMIME",
            "-N",
            "failure,delay",
            "-R",
            "hdrs",
            "-V",
            "abc-123",
            "a@example.com",
        ],
        SIMPLE,
    );
    let env = w.envelope(&id);
    assert_eq!(env.body_type.as_deref(), Some("8BITMIME"));
    assert_eq!(env.dsn_notify.as_deref(), Some("failure,delay"));
    assert_eq!(env.dsn_ret.as_deref(), Some("hdrs"));
    assert_eq!(env.envid.as_deref(), Some("abc-123"));
}

#[test]
fn double_dash_ends_options() {
    // mutt: `sendmail -oem -oi -- rcpt…`
    let w = World::new();
    let id = w.send_ok(
        &["-oem", "-oi", "--", "a@example.com", "b@example.com"],
        SIMPLE,
    );
    assert_eq!(w.envelope(&id).recipients.len(), 2);
}

#[test]
fn unsupported_modes_exit_69() {
    let w = World::new();
    for args in [&["-bd"][..], &["-bt"], &["-bh"]] {
        let out = w.sendmail(args, b"");
        assert_exit(&out, 69);
    }
}

#[test]
fn max_message_size_refuses_larger_messages() {
    let w = World::with_config("max_message_size = 1000");
    let mut big = b"Subject: big\n\n".to_vec();
    big.extend(std::iter::repeat_n(b'x', 2000));
    let out = w.sendmail(&["a@example.com"], &big);
    assert_exit(&out, 65);
    assert!(String::from_utf8_lossy(&out.stderr).contains("max_message_size"));
    assert!(w.queue_ids().is_empty());
    assert!(w.tmp_files().is_empty());
    // A small one still goes through.
    w.send_ok(&["a@example.com"], SIMPLE);
}

#[test]
fn queue_ids_are_unique_and_sorted_by_arrival() {
    let w = World::new();
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(w.send_ok(&["a@example.com"], SIMPLE));
    }
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted, "IDs sort in arrival order");
}

#[test]
fn concurrent_submissions_all_land_with_distinct_ids() {
    let w = World::new();
    let children: Vec<_> = (0..40)
        .map(|i| {
            let mut cmd = w.command("sendmail");
            cmd.args(["-odq", "a@example.com"])
                .stdin(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            let mut child = cmd.spawn().unwrap();
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(format!("Subject: {i}\n\nmessage {i}\n").as_bytes())
                .unwrap();
            child
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert_success(&out);
    }
    assert_eq!(w.queue_ids().len(), 40);
}

#[test]
fn v_prints_the_log_line_to_stderr() {
    let w = World::new();
    let out = w.sendmail(
        &[
            "-v",
            "-f",
            "s@example.com",
            "a@example.com",
            "b@example.com",
        ],
        SIMPLE,
    );
    assert_success(&out);
    let id = &w.queue_ids()[0];
    let err = String::from_utf8_lossy(&out.stderr);
    let size = w.envelope(id).size;
    assert!(
        err.contains(&format!("{id}: from=<s@example.com>, size={size}, nrcpt=2")),
        "{err}"
    );
}

#[test]
fn without_v_nothing_is_printed() {
    let w = World::new();
    let out = w.sendmail(&["a@example.com"], SIMPLE);
    assert_success(&out);
    assert!(out.stderr.is_empty() && out.stdout.is_empty());
}

#[test]
fn errors_are_one_line_even_with_v() {
    let w = World::new();
    let out = w.sendmail(&["-v", "a@@example.com"], SIMPLE);
    assert_exit(&out, 65);
}

#[test]
fn foreground_delivery_that_defers_exits_75_and_keeps_the_message() {
    // -odi/-odf deliver in the foreground and report the outcome; the
    // test config's smarthost refuses, so the recipient is deferred.
    let w = World::new();
    for mode in ["-odi", "-odf"] {
        let before = w.queue_ids().len();
        let out = w.sendmail(&[mode, "a@example.com"], SIMPLE);
        assert_exit(&out, 75);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("deferred"), "{stderr}");
        assert_eq!(w.queue_ids().len(), before + 1, "the message stays queued");
    }
}

#[test]
fn bare_local_names_in_address_fields_are_qualified_with_the_hostname() {
    let w = World::new();
    let id = w.send_ok(
        &["-t"],
        b"To: root, Bob <bob>, far@x.example (Far)\nCc: undisclosed-recipients:;\nFrom: cron\nSubject: q\n\nTo: body stays\n",
    );
    let data = String::from_utf8(w.data(&id)).unwrap();
    let host = common::HOSTNAME;
    assert!(
        data.contains(&format!(
            "\nTo: root@{host}, Bob <bob@{host}>, far@x.example (Far)\nCc: undisclosed-recipients:;\nFrom: cron@{host}\n"
        )),
        "{data}"
    );
    assert!(data.ends_with("\n\nTo: body stays\n"), "{data}");
}

#[test]
fn t_reads_addresses_with_comments_and_folding_white_space() {
    let w = World::new();
    let msg = b"To: Name <user(comment)@example.com(host)>,\n first . last @ example . com (old style)\nCc: (leading) c (x) @ example.com\nSubject: t\n\nhi\n";
    let id = w.send_ok(&["-t"], msg);
    assert_eq!(
        w.envelope(&id).recipients,
        vec![
            "user@example.com",
            "first.last@example.com",
            "c@example.com"
        ]
    );
}
