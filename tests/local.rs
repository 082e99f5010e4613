//! Local delivery end to end: the built binary delivering into mailboxes,
//! Maildirs, files and commands under the test's own directory (the
//! config's `mail_spool_dir`, `aliases`, `maildir` and `forward_path`),
//! to the user running the tests. Checks that need root (delivery as
//! another user, ownership) run when the tests run as root, as in CI, and
//! say why they are skipped otherwise.

mod common;

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::smtpd::SmtpServer;
use common::{Setup, World, assert_success, is_root, root_or_skip, wait_for};
use spoolmail::local::User;

const WAIT: Duration = Duration::from_secs(60);

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The user running the tests: every mailbox here is theirs.
fn me() -> User {
    User::by_uid(nix::unistd::geteuid().as_raw()).expect("a password entry for the test user")
}

/// The user commands from /etc/aliases run as in these tests: ourselves,
/// unless we are root, who never runs them (then `nobody`).
fn pipe_user() -> User {
    match is_root() {
        true => User::lookup("nobody").unwrap().expect("user nobody"),
        false => me(),
    }
}

/// A world set up for local delivery: the mail directory exists, and —
/// when commands run as `nobody` — the test directory can be entered by
/// it and `out/` written.
fn local_world(extra: &str) -> World {
    let w = World::with_config(&format!(
        "pipe_user = {}\nretry_min = 1s\nretry_max = 2s\nmaildir = {dir}/maildirs/%u/\nforward_path = {dir}/forward/%u\n{extra}",
        pipe_user().name,
        dir = "@DIR@",
    ));
    // The config needs the world's own directory: fill it in.
    let text = fs::read_to_string(&w.config).unwrap();
    fs::write(
        &w.config,
        text.replace("@DIR@", &w.dir.path().display().to_string()),
    )
    .unwrap();
    for sub in ["mail", "forward", "maildirs", "out"] {
        fs::create_dir(w.dir.path().join(sub)).unwrap();
    }
    fs::set_permissions(w.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(w.dir.path().join("out"), fs::Permissions::from_mode(0o1777)).unwrap();
    w
}

fn world_with_server(server: &SmtpServer, extra: &str) -> World {
    local_world(Setup::smarthost(server.port).line(extra).text())
}

fn mailbox(w: &World, user: &str) -> PathBuf {
    w.dir.path().join("mail").join(user)
}

fn write_aliases(w: &World, text: &str) {
    fs::write(w.dir.path().join("aliases"), text).unwrap();
    assert_success(&w.run("newaliases", &[], b""));
}

/// Writes USER's forward file (the config's `forward_path`) with MODE.
fn write_forward(w: &World, user: &str, text: &str, mode: u32) -> PathBuf {
    let path = w.dir.path().join("forward").join(user);
    fs::write(&path, text).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
    path
}

fn queue_run(w: &World) {
    assert_success(&w.sendmail(&["-q"], b""));
}

/// The status and last error of every recipient of the only queued message.
fn recipient_states(w: &World) -> Vec<(String, String, String)> {
    let q = w.mailq_json();
    assert_eq!(q.len(), 1, "one message queued: {q:?}");
    q[0]["recipients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["address"].as_str().unwrap().to_string(),
                r["status"].as_str().unwrap().to_string(),
                r["last_error"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// Reads an mbox with Python's mailbox module: (headers we look at, body)
/// per message.
fn python_mbox(path: &Path) -> Vec<(String, String)> {
    let out = Command::new("python3")
        .arg("-c")
        .arg(
            "import mailbox, sys, json\n\
             print(json.dumps([[m.get_from(), m['Delivered-To'] or '', m['Return-Path'] or '', m['Subject'] or '', m.get_payload()] for m in mailbox.mbox(sys.argv[1])]))",
        )
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Vec<Vec<String>> = serde_json::from_slice(&out.stdout).unwrap();
    v.into_iter()
        .map(|m| {
            (
                format!("From {} | {} | {} | {}", m[0], m[1], m[2], m[3]),
                m[4].clone(),
            )
        })
        .collect()
}

/// bsd-mailx unpacked by tests/peers/mailx.sh, if there.
fn mailx() -> Option<Command> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/peers/mailx");
    let bin = root.join("usr/bin/bsd-mailx");
    if !bin.exists() {
        return None;
    }
    let mut cmd = Command::new(bin);
    cmd.env("LD_LIBRARY_PATH", root.join("usr/lib/x86_64-linux-gnu"));
    Some(cmd)
}

#[test]
fn mbox_delivery_reads_back_intact_in_python_and_mailx() {
    let w = local_world("");
    let u = me();
    let bodies = [
        "plain body\n",
        "From the start of a line\nnot From here\n>From already quoted\n",
        "last line without newline",
    ];
    for (i, body) in bodies.iter().enumerate() {
        let msg = format!("Subject: m{i}\n\n{body}");
        w.send_ok(&["-f", "sender@example.org", &u.name], msg.as_bytes());
    }
    queue_run(&w);
    assert!(w.queue_ids().is_empty(), "all delivered");
    let mbox = mailbox(&w, &u.name);
    let meta = fs::metadata(&mbox).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o660, "mailbox mode");
    assert_eq!(meta.uid(), u.uid, "mailbox owner");
    let got = python_mbox(&mbox);
    assert_eq!(got.len(), 3, "{got:?}");
    for (head, body) in &got {
        // Delivery order is the runner's business: match by subject.
        let i: usize = head.rsplit_once("| m").unwrap().1.parse().unwrap();
        assert!(head.starts_with("From sender@example.org "), "{head}");
        assert!(
            head.contains(&format!(
                "| {}@{} | <sender@example.org> | m{i}",
                u.name,
                common::HOSTNAME
            )),
            "{head}"
        );
        // mboxo: a body line starting "From " reads back as ">From "; the
        // trailing blank line is the separator's, not the body's.
        let expected = bodies[i].replace("\nFrom ", "\n>From ");
        let expected = match expected.strip_prefix("From ") {
            Some(rest) => format!(">From {rest}"),
            None => expected,
        };
        let expected = match expected.ends_with('\n') {
            true => expected,
            false => format!("{expected}\n"),
        };
        assert_eq!(body, &expected, "message {i} body");
    }
    let Some(mut mailx) = mailx() else {
        eprintln!("mailx part skipped: bsd-mailx not unpacked (run tests/peers/mailx.sh)");
        return;
    };
    let out = mailx
        .args(["-N", "-f"])
        .arg(&mbox)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().unwrap().write_all(b"p *\nx\n")?;
            c.wait_with_output()
        })
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Message 3:"), "{text}");
    assert!(
        text.contains(">From the start of a line\nnot From here\n>From already quoted\n"),
        "{text}"
    );
    assert!(text.contains("last line without newline"), "{text}");
}

#[test]
fn an_alias_reaches_the_mailbox_and_the_remote_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let server = SmtpServer::start(dir.path(), &[]);
    let w = world_with_server(&server, "");
    let u = me();
    write_aliases(
        &w,
        &format!(
            "root: admins\nadmins: {}, far@x.test\nowner-admins: postmaster\n",
            u.name
        ),
    );
    w.send_ok(
        &["-f", "cron@example.org", "root"],
        b"Subject: cron\n\nout\n",
    );
    queue_run(&w);
    let got = server.wait_messages(1, WAIT);
    assert_eq!(got[0].rcpt_tos, ["far@x.test"]);
    assert_eq!(
        got[0].mail_from,
        format!("owner-admins@{}", common::HOSTNAME)
    );
    let text = String::from_utf8_lossy(&got[0].data).replace("\r\n", "\n");
    assert!(
        text.starts_with(&format!("Delivered-To: root@{}\n", common::HOSTNAME)),
        "{text}"
    );
    let mbox = python_mbox(&mailbox(&w, &u.name));
    assert_eq!(mbox.len(), 1);
    assert!(
        mbox[0]
            .0
            .contains(&format!("| root@{} |", common::HOSTNAME)),
        "{:?}",
        mbox[0]
    );
    wait_for(WAIT, || w.queue_ids().is_empty());
    assert!(w.queue_ids().is_empty(), "original and copy both done");
}

#[test]
fn maildir_delivery_writes_new_and_leaves_tmp_empty() {
    let w = local_world("mailbox = maildir");
    let u = me();
    w.send_ok(
        &["-f", "s@example.org", &u.name],
        b"Subject: md\n\nFrom here\n",
    );
    queue_run(&w);
    let md = w.dir.path().join("maildirs").join(&u.name);
    let new: Vec<_> = fs::read_dir(md.join("new")).unwrap().collect();
    assert_eq!(new.len(), 1);
    let text = fs::read_to_string(new[0].as_ref().unwrap().path()).unwrap();
    assert!(
        text.starts_with(&format!(
            "Return-Path: <s@example.org>\nDelivered-To: {}@{}\n",
            u.name,
            common::HOSTNAME
        )),
        "{text}"
    );
    assert!(text.contains("Subject: md\n"), "{text}");
    assert!(
        text.ends_with("\n\nFrom here\n"),
        "no mbox escaping: {text}"
    );
    assert_eq!(fs::read_dir(md.join("tmp")).unwrap().count(), 0);
    assert!(w.queue_ids().is_empty());
}

#[test]
fn a_symlinked_mailbox_is_not_followed_and_the_recipient_waits() {
    let w = local_world("");
    let u = me();
    let target = w.dir.path().join("out").join("victim");
    fs::write(&target, b"precious\n").unwrap();
    std::os::unix::fs::symlink(&target, mailbox(&w, &u.name)).unwrap();
    w.send_ok(&["-f", "s@example.org", &u.name], b"Subject: x\n\nbody\n");
    queue_run(&w);
    assert_eq!(fs::read(&target).unwrap(), b"precious\n");
    let states = recipient_states(&w);
    assert_eq!(states[0].1, "deferred", "{states:?}");
}

#[test]
fn a_write_error_truncates_the_mailbox_back_and_defers() {
    let w = local_world("");
    let u = me();
    let mbox = mailbox(&w, &u.name);
    // An earlier message, then one too big for the file size limit.
    w.send_ok(
        &["-f", "s@example.org", &u.name],
        format!("Subject: one\n\n{}\n", "a".repeat(5000)).as_bytes(),
    );
    queue_run(&w);
    let before = fs::read(&mbox).unwrap();
    w.send_ok(
        &["-f", "s@example.org", &u.name],
        format!("Subject: two\n\n{}\n", "b".repeat(20000)).as_bytes(),
    );
    let limit = before.len() + 2000;
    let out = Command::new("prlimit")
        .arg(format!("--fsize={limit}"))
        .arg(w.bin.join("sendmail"))
        .arg("-C")
        .arg(&w.config)
        .arg("-q")
        .output()
        .unwrap();
    assert_success(&out);
    assert_eq!(fs::read(&mbox).unwrap(), before, "mailbox back as it was");
    let states = recipient_states(&w);
    assert_eq!(states[0].1, "deferred", "{states:?}");
    // Without the limit the retry delivers it, once, after the first.
    assert!(wait_for(WAIT, || {
        queue_run(&w);
        w.queue_ids().is_empty()
    }));
    let got = python_mbox(&mbox);
    assert_eq!(got.len(), 2);
    assert!(got[1].0.ends_with("| two"), "{:?}", got[1].0);
}

#[test]
fn a_safe_forward_is_honoured_and_backslash_keeps_a_copy() {
    let dir = tempfile::tempdir().unwrap();
    let server = SmtpServer::start(dir.path(), &[]);
    let w = world_with_server(&server, "");
    let u = me();
    write_forward(&w, &u.name, &format!("\\{}, away@x.test\n", u.name), 0o644);
    w.send_ok(&["-f", "s@example.org", &u.name], b"Subject: fw\n\nbody\n");
    queue_run(&w);
    let got = server.wait_messages(1, WAIT);
    assert_eq!(got[0].rcpt_tos, ["away@x.test"]);
    assert_eq!(got[0].mail_from, "s@example.org");
    assert_eq!(
        python_mbox(&mailbox(&w, &u.name)).len(),
        1,
        "the \\user copy"
    );
}

#[test]
fn a_forward_writable_by_others_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let server = SmtpServer::start(dir.path(), &[]);
    let w = world_with_server(&server, "");
    let u = me();
    write_forward(&w, &u.name, "thief@x.test\n", 0o666);
    w.send_ok(&["-f", "s@example.org", &u.name], b"Subject: fw\n\nbody\n");
    queue_run(&w);
    assert_eq!(python_mbox(&mailbox(&w, &u.name)).len(), 1);
    assert!(w.queue_ids().is_empty());
    assert_eq!(server.connections(), 0, "nothing forwarded");
}

#[test]
fn a_forward_owned_by_someone_else_is_ignored() {
    if !root_or_skip("giving a file to another user needs root") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = SmtpServer::start(dir.path(), &[]);
    let w = world_with_server(&server, "");
    let u = me();
    let forward = write_forward(&w, &u.name, "thief@x.test\n", 0o644);
    let nobody = User::lookup("nobody").unwrap().unwrap();
    std::os::unix::fs::chown(&forward, Some(nobody.uid), None).unwrap();
    w.send_ok(&["-f", "s@example.org", &u.name], b"Subject: fw\n\nbody\n");
    queue_run(&w);
    assert_eq!(python_mbox(&mailbox(&w, &u.name)).len(), 1);
    assert_eq!(server.connections(), 0, "nothing forwarded");
}

/// A command that records its uid, environment and input under out/.
fn recording_script(w: &World, name: &str, exit: &str) -> PathBuf {
    let script = w.dir.path().join(format!("{name}.sh"));
    let out = w.dir.path().join("out").join(name);
    common::stage::write_executable(
        &script,
        &format!(
            "#!/bin/sh\n{{ id -u; echo \"SENDER=$SENDER\"; echo \"RECIPIENT=$RECIPIENT\"; echo \"USER=$USER\"; echo \"HOME=$HOME\"; echo \"PATH=$PATH\"; cat; }} > {out}.tmp && mv {out}.tmp {out}\n{exit}\n",
            out = out.display()
        ),
        0o755,
    );
    script
}

#[test]
fn an_alias_pipe_runs_as_pipe_user_with_the_message_and_environment() {
    let w = local_world("");
    let script = recording_script(&w, "piped", "exit 0");
    write_aliases(&w, &format!("robot: \"|{}\"\n", script.display()));
    let out = w
        .command("sendmail")
        .args(["-odq", "-f", "s@example.org", "robot"])
        .env("PATH", "/hostile")
        .env("SENDER", "forged")
        .stdin(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin
                .take()
                .unwrap()
                .write_all(b"Subject: p\n\nFrom me\n")?;
            c.wait_with_output()
        })
        .unwrap();
    assert_success(&out);
    queue_run(&w);
    let text = fs::read_to_string(w.dir.path().join("out/piped")).unwrap();
    let pu = pipe_user();
    assert_ne!(pu.uid, 0);
    let recipient = format!("robot@{}", common::HOSTNAME);
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some(pu.uid.to_string().as_str()), "{text}");
    assert_eq!(lines.next(), Some("SENDER=s@example.org"));
    assert_eq!(
        lines.next(),
        Some(format!("RECIPIENT={recipient}").as_str())
    );
    assert_eq!(lines.next(), Some(format!("USER={}", pu.name).as_str()));
    assert_eq!(
        lines.next(),
        Some(format!("HOME={}", pu.home.display()).as_str())
    );
    assert_eq!(lines.next(), Some("PATH=/usr/local/bin:/usr/bin:/bin"));
    let rest: Vec<&str> = lines.collect();
    assert_eq!(rest[0], "Return-Path: <s@example.org>");
    assert_eq!(rest[1], format!("Delivered-To: {recipient}"));
    assert!(text.ends_with("\n\nFrom me\n"), "raw, unescaped: {text}");
    assert!(w.queue_ids().is_empty());
}

#[test]
fn a_pipe_exiting_75_defers_and_other_failures_bounce_with_output() {
    let dir = tempfile::tempdir().unwrap();
    let server = SmtpServer::start(dir.path(), &[]);
    let w = world_with_server(&server, "");
    write_aliases(
        &w,
        "later: \"|echo busy; exit 75\"\nbroken: \"|echo 'no such mailbox here' >&2; exit 1\"\n",
    );
    w.send_ok(
        &["-f", "s@example.org", "later", "broken"],
        b"Subject: p\n\nbody\n",
    );
    queue_run(&w);
    let states = recipient_states(&w);
    let later = states.iter().find(|s| s.0.starts_with("later")).unwrap();
    assert_eq!(later.1, "deferred", "{states:?}");
    assert!(
        later.2.contains("exited 75") && later.2.contains("busy"),
        "{later:?}"
    );
    let broken = states.iter().find(|s| s.0.starts_with("broken")).unwrap();
    assert_eq!(broken.1, "failed", "{states:?}");
    let got = server.wait_messages(1, WAIT);
    assert_eq!(got[0].mail_from, "");
    assert_eq!(got[0].rcpt_tos, ["s@example.org"]);
    let text = String::from_utf8_lossy(&got[0].data);
    assert!(text.contains("Status: 5.3.0"), "{text}");
    assert!(text.contains("exited 1: no such mailbox here"), "{text}");
}

#[test]
fn a_pipe_past_its_time_limit_is_killed_and_deferred() {
    let w = local_world("pipe_timeout = 1s");
    write_aliases(&w, "slow: \"|echo started; sleep 600\"\n");
    w.send_ok(&["-f", "s@example.org", "slow"], b"Subject: p\n\nbody\n");
    let started = std::time::Instant::now();
    queue_run(&w);
    assert!(
        started.elapsed() < Duration::from_secs(300),
        "the run did not wait for sleep"
    );
    let states = recipient_states(&w);
    assert_eq!(states[0].1, "deferred", "{states:?}");
    assert!(states[0].2.contains("ran longer than 1s"), "{states:?}");
}

#[test]
fn a_file_target_is_appended_mbox_style_as_pipe_user() {
    let w = local_world("");
    let log = w.dir.path().join("out").join("archive");
    write_aliases(&w, &format!("archive: {}\n", log.display()));
    for i in 0..2 {
        w.send_ok(
            &["-f", "s@example.org", "archive"],
            format!("Subject: a{i}\n\nFrom x\n").as_bytes(),
        );
    }
    queue_run(&w);
    let got = python_mbox(&log);
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[1].1, ">From x\n");
    assert_eq!(fs::metadata(&log).unwrap().uid(), pipe_user().uid);
}

#[test]
fn include_files_expand_and_partial_success_is_never_repeated() {
    let dir = tempfile::tempdir().unwrap();
    let server = SmtpServer::start(dir.path(), &[]);
    let w = world_with_server(&server, "");
    let u = me();
    let list = w.dir.path().join("team.list");
    // One command fails for now; the mailbox and the remote members must
    // not get a second copy when it is retried.
    let flag = w.dir.path().join("out").join("allow");
    fs::write(
        &list,
        format!(
            "{}, one@x.test\ntwo@x.test\n\"|test -e {} || exit 75\"\n",
            u.name,
            flag.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&list, fs::Permissions::from_mode(0o644)).unwrap();
    write_aliases(&w, &format!("team: :include:{}\n", list.display()));
    w.send_ok(&["-f", "s@example.org", "team"], b"Subject: t\n\nbody\n");
    queue_run(&w);
    let got = server.wait_messages(1, WAIT);
    assert_eq!(got[0].rcpt_tos, ["one@x.test", "two@x.test"]);
    assert_eq!(recipient_states_of_original(&w), "deferred");
    fs::write(&flag, b"").unwrap();
    assert!(wait_for(WAIT, || {
        queue_run(&w);
        w.queue_ids().is_empty()
    }));
    assert_eq!(server.messages().len(), 1, "remote members got one copy");
    assert_eq!(
        python_mbox(&mailbox(&w, &u.name)).len(),
        1,
        "one mailbox copy"
    );
}

/// The status of the recipient "team" wherever it is queued.
fn recipient_states_of_original(w: &World) -> String {
    for m in w.mailq_json() {
        for r in m["recipients"].as_array().unwrap() {
            if r["address"].as_str().unwrap().starts_with("team") {
                return r["status"].as_str().unwrap().to_string();
            }
        }
    }
    panic!("team not queued");
}

#[test]
fn a_message_already_delivered_here_bounces_as_a_loop() {
    let dir = tempfile::tempdir().unwrap();
    let server = SmtpServer::start(dir.path(), &[]);
    let w = world_with_server(&server, "max_hops = 5");
    let u = me();
    let own = format!(
        "Delivered-To: {}@{}\nSubject: l\n\nbody\n",
        u.name,
        common::HOSTNAME
    );
    w.send_ok(&["-f", "s@example.org", &u.name], own.as_bytes());
    let hops = format!("{}Subject: h\n\nbody\n", "Received: by relay\n".repeat(6));
    w.send_ok(&["-f", "s@example.org", &u.name], hops.as_bytes());
    queue_run(&w);
    let got = server.wait_messages(2, WAIT);
    for m in &got {
        let text = String::from_utf8_lossy(&m.data);
        assert!(text.contains("Status: 5.4.6"), "{text}");
    }
    assert!(!mailbox(&w, &u.name).exists(), "nothing delivered");
}

#[test]
fn concurrent_runners_wait_for_a_reader_holding_the_lock() {
    let w = local_world("max_connections = 4");
    let u = me();
    let mbox = mailbox(&w, &u.name);
    fs::write(&mbox, b"").unwrap();
    fs::set_permissions(&mbox, fs::Permissions::from_mode(0o660)).unwrap();
    // A reader the way mutt and mailx lock: NAME.lock, then fcntl.
    let mut reader = Command::new("python3")
        .arg("-c")
        .arg(
            "import fcntl, os, sys\n\
             lock = sys.argv[1] + '.lock'\n\
             fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)\n\
             f = open(sys.argv[1], 'rb+')\n\
             fcntl.lockf(f, fcntl.LOCK_EX)\n\
             size = os.fstat(f.fileno()).st_size\n\
             print('locked', flush=True)\n\
             sys.stdin.readline()\n\
             print('size', size, os.fstat(f.fileno()).st_size, flush=True)\n\
             os.unlink(lock)\n",
        )
        .arg(&mbox)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(reader.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "locked");
    const N: usize = 12;
    let body = |i: usize| format!("{}\nFrom line {i}\n", format!("message {i} ").repeat(500));
    for i in 0..N {
        w.send_ok(
            &["-f", "s@example.org", &u.name],
            format!("Subject: c{i}\n\n{}", body(i)).as_bytes(),
        );
    }
    // Several runners at once, all blocked on the reader's lock.
    let runners: Vec<_> = (0..3)
        .map(|_| {
            w.command("sendmail")
                .arg("-q")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    // Wait until runners hold claims on queued messages (flocks on the
    // queue files, seen in /proc/locks): they are then inside delivery,
    // stuck behind the reader's lock.
    assert!(
        wait_for(WAIT, || claimed_queue_files(&w) >= 3),
        "runners never claimed messages"
    );
    writeln!(reader.stdin.take().unwrap()).unwrap();
    let sizes = lines.next().unwrap().unwrap();
    let parts: Vec<&str> = sizes.split(' ').collect();
    assert_eq!(
        parts[1], parts[2],
        "nothing written while the reader held the lock"
    );
    reader.wait().unwrap();
    for mut r in runners {
        r.wait().unwrap();
    }
    assert!(wait_for(WAIT, || {
        w.queue_ids().is_empty() || {
            queue_run(&w);
            false
        }
    }));
    let got = python_mbox(&mbox);
    assert_eq!(got.len(), N, "every message once");
    let mut seen: Vec<usize> = got
        .iter()
        .map(|(head, b)| {
            let i: usize = head.rsplit_once("| c").unwrap().1.parse().unwrap();
            assert_eq!(
                b,
                &body(i).replace("\nFrom ", "\n>From "),
                "message {i} intact"
            );
            i
        })
        .collect();
    seen.sort();
    assert_eq!(seen, (0..N).collect::<Vec<_>>());
}

/// How many queue files some process holds a flock on (a claim).
fn claimed_queue_files(w: &World) -> usize {
    let inodes: Vec<u64> = w
        .queue_ids()
        .iter()
        .filter_map(|id| fs::metadata(w.spool.join("queue").join(id)).ok())
        .map(|m| m.ino())
        .collect();
    let locks = fs::read_to_string("/proc/locks").unwrap_or_default();
    let mut held: Vec<u64> = locks
        .lines()
        .filter(|l| l.contains("FLOCK") && !l.contains("->"))
        .filter_map(|l| {
            l.split_whitespace()
                .nth(5)?
                .rsplit(':')
                .next()?
                .parse()
                .ok()
        })
        .filter(|ino| inodes.contains(ino))
        .collect();
    held.sort();
    held.dedup();
    held.len()
}

#[test]
fn delivery_as_another_user_drops_to_that_user() {
    if !root_or_skip("delivering as another user needs root (CI runs these as root)") {
        return;
    }
    let name = "spoolmail-t1";
    if User::lookup(name).unwrap().is_none() {
        let out = Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--home-dir",
                "/nonexistent",
                name,
            ])
            .output()
            .unwrap();
        assert_success(&out);
    }
    let other = User::lookup(name).unwrap().unwrap();
    let w = local_world("");
    // A .forward of theirs with a command and a \copy: the command runs
    // as them, the mailbox is theirs.
    let script = recording_script(&w, "theirs", "exit 0");
    let forward = write_forward(
        &w,
        name,
        &format!("\\{name}, \"|{}\"\n", script.display()),
        0o644,
    );
    std::os::unix::fs::chown(&forward, Some(other.uid), None).unwrap();
    let mail_gid = fs::metadata(w.dir.path().join("mail")).unwrap().gid();
    fs::set_permissions(
        w.dir.path().join("mail"),
        fs::Permissions::from_mode(0o2775),
    )
    .unwrap();
    w.send_ok(&["-f", "s@example.org", name], b"Subject: other\n\nbody\n");
    queue_run(&w);
    assert!(w.queue_ids().is_empty(), "{:?}", w.mailq_json());
    let mbox = mailbox(&w, name);
    let meta = fs::metadata(&mbox).unwrap();
    assert_eq!(meta.uid(), other.uid, "mailbox owned by its user");
    assert_eq!(meta.gid(), mail_gid, "and the mail directory's group");
    assert_eq!(meta.mode() & 0o777, 0o660);
    assert!(
        !w.dir
            .path()
            .join("mail")
            .join(format!("{name}.lock"))
            .exists()
    );
    let text = fs::read_to_string(w.dir.path().join("out/theirs")).unwrap();
    assert_eq!(
        text.lines().next(),
        Some(other.uid.to_string().as_str()),
        "{text}"
    );
}

#[test]
fn a_runner_that_is_not_root_delivers_its_own_mail_and_leaves_the_rest_to_root() {
    if !root_or_skip("running the queue as another user needs root (CI runs these as root)") {
        return;
    }
    let nobody = User::lookup("nobody").unwrap().unwrap();
    let w = local_world("");
    w.stage_for_other_users();
    // The whole world belongs to nobody, who submits and runs the queue.
    let out = Command::new("chown")
        .arg("-R")
        .arg(format!("{}:{}", nobody.uid, nobody.gid))
        .arg(w.dir.path())
        .output()
        .unwrap();
    assert_success(&out);
    let as_nobody = |args: &[&str], stdin: &[u8]| {
        let mut cmd = Command::new("setpriv");
        cmd.arg(format!("--reuid={}", nobody.uid))
            .arg(format!("--regid={}", nobody.gid))
            .arg("--clear-groups")
            .arg(w.bin.join("sendmail"))
            .arg("-C")
            .arg(&w.config)
            .args(args);
        common::run_with_stdin(&mut cmd, stdin)
    };
    assert_success(&as_nobody(
        &["-odq", "-f", "s@example.org", "nobody", "root"],
        b"Subject: both\n\nbody\n",
    ));
    assert_success(&as_nobody(&["-q"], b""));
    assert_eq!(
        python_mbox(&mailbox(&w, "nobody")).len(),
        1,
        "its own mailbox"
    );
    assert!(!mailbox(&w, "root").exists(), "root's mailbox untouched");
    let states = recipient_states(&w);
    let root = states.iter().find(|s| s.0.starts_with("root")).unwrap();
    assert_eq!(root.1, "deferred", "{states:?}");
    assert!(root.2.contains("waits for a queue run by root"), "{root:?}");
    // Due at once for root, not after the retry backoff.
    let q = w.mailq_json();
    let next = q[0]["recipients"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["address"].as_str().unwrap().starts_with("root"))
        .unwrap()["next_attempt"]
        .as_u64();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(next.is_none_or(|t| t <= now), "{q:?}");
    // And root is asked for a run at once (spoolmail-maildrop.path fires
    // on a non-empty maildrop).
    let kicks = |w: &World| {
        fs::read_dir(w.spool.join("maildrop"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with("kick.")
            })
            .count()
    };
    assert_eq!(kicks(&w), 1, "a kick for root");
    queue_run(&w);
    assert_eq!(kicks(&w), 0, "root's run took the kick away");
    assert!(w.queue_ids().is_empty(), "{:?}", w.mailq_json());
    assert_eq!(python_mbox(&mailbox(&w, "root")).len(), 1);
    assert_eq!(
        python_mbox(&mailbox(&w, "nobody")).len(),
        1,
        "not delivered twice"
    );
}

#[test]
fn an_aliases_file_newer_than_its_compiled_form_is_warned_about_and_the_compiled_one_used() {
    let w = local_world("");
    let u = me();
    write_aliases(&w, &format!("postmaster: {}\n", u.name));
    // Edited afterwards, newaliases forgotten: the compiled form still rules.
    let source = w.dir.path().join("aliases");
    fs::write(&source, "postmaster: elsewhere@x.test\n").unwrap();
    let later = std::time::SystemTime::now() + Duration::from_secs(60);
    fs::File::options()
        .write(true)
        .open(&source)
        .unwrap()
        .set_modified(later)
        .unwrap();
    w.send_ok(
        &["-f", "s@example.org", "postmaster"],
        b"Subject: a\n\nbody\n",
    );
    let out = w.sendmail(&["-v", "-q"], b"");
    assert_success(&out);
    assert!(stderr(&out).contains("run newaliases"), "{}", stderr(&out));
    assert_eq!(python_mbox(&mailbox(&w, &u.name)).len(), 1);
}
