//! S1–S6 under stress: kills, full disks, size limits, big messages,
//! file modes, bad configuration. Each failure must leave the queue as it
//! was and exit with the right sysexits code.

mod common;

use common::*;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::time::Duration;

#[test]
fn killed_mid_stdin_leaves_queue_unchanged() {
    let w = World::new();
    w.send_ok(&["a@example.com"], b"Subject: earlier\n\nx\n");
    let before = w.queue_ids();
    let mut child = w
        .command("sendmail")
        .args(["-odq", "a@example.com"])
        .stdin(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"Subject: half\n\n").unwrap();
    stdin.write_all(&vec![b'y'; 256 * 1024]).unwrap();
    // The draft exists in tmp/ once the header has been read.
    assert!(
        wait_for(Duration::from_secs(10), || !w.tmp_files().is_empty()),
        "sendmail started writing its draft"
    );
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    assert!(!status.success());
    assert_eq!(w.queue_ids(), before, "queue unchanged");
}

#[test]
fn stdin_closed_early_is_a_complete_message() {
    // EOF is the end of a message; it is not an error.
    let w = World::new();
    let id = w.send_ok(&["a@example.com"], b"Subject: eof\n\npartial line");
    assert!(w.data(&id).ends_with(b"partial line\n"));
}

fn sendmail_with_fsize_limit(w: &World, limit: u64, input: &[u8]) -> std::process::Output {
    let mut cmd = w.command("sendmail");
    cmd.args(["-odq", "a@example.com"]);
    // SAFETY: setrlimit is async-signal-safe; nothing else runs in pre_exec.
    unsafe {
        cmd.pre_exec(move || {
            let lim = libc::rlimit {
                rlim_cur: limit,
                rlim_max: limit,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    run_with_stdin(&mut cmd, input)
}

#[test]
fn write_failure_exits_75_and_leaves_queue_unchanged() {
    let w = World::new();
    w.send_ok(&["a@example.com"], b"Subject: earlier\n\nx\n");
    let before = w.queue_ids();
    let mut big = b"Subject: too big for the disk\n\n".to_vec();
    big.extend(std::iter::repeat_n(b'z', 512 * 1024));
    let out = sendmail_with_fsize_limit(&w, 64 * 1024, &big);
    assert_exit(&out, 75);
    assert_eq!(w.queue_ids(), before);
    assert!(
        w.tmp_files().is_empty(),
        "draft removed: {:?}",
        w.tmp_files()
    );
    // Below the limit the same process setup works: the failure was the size.
    let out = sendmail_with_fsize_limit(&w, 64 * 1024, b"Subject: small\n\nx\n");
    assert_success(&out);
}

#[test]
fn disk_full_exits_75_and_leaves_queue_unchanged() {
    if !root_or_skip("mounting a small tmpfs needs root (CI runs as root)") {
        return;
    }
    let w = World::new();
    let mnt = w.dir.path().join("small");
    std::fs::create_dir(&mnt).unwrap();
    let status = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=256k", "tmpfs"])
        .arg(&mnt)
        .status()
        .unwrap();
    if !status.success() {
        eprintln!("skipped: cannot mount tmpfs here (no CAP_SYS_ADMIN?)");
        return;
    }
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _guard = Unmount(mnt.clone());
    let spool = mnt.join("spool");
    std::fs::write(
        &w.config,
        format!("spool = {}\nhostname = {HOSTNAME}\n", spool.display()),
    )
    .unwrap();
    assert_success(&w.sendmail(&["a@example.com"], b"Subject: fits\n\nx\n"));
    let ids_before: Vec<String> = std::fs::read_dir(spool.join("queue"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let mut big = b"Subject: too big\n\n".to_vec();
    big.extend(std::iter::repeat_n(b'z', 1024 * 1024));
    let out = w.sendmail(&["-odq", "a@example.com"], &big);
    assert_exit(&out, 75);
    let ids_after: Vec<String> = std::fs::read_dir(spool.join("queue"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(ids_before, ids_after);
    assert_eq!(std::fs::read_dir(spool.join("tmp")).unwrap().count(), 0);
}

#[test]
fn queue_files_are_not_world_readable() {
    let w = World::new();
    let id = w.send_ok(&["a@example.com"], b"Subject: private\n\nsecret\n");
    let mode = std::fs::metadata(w.spool.join("queue").join(&id))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o007, 0, "queue file mode {mode:o}");
    assert_eq!(
        mode & 0o022,
        0,
        "queue file not writable by group/others: {mode:o}"
    );
    for dir in ["queue", "tmp", "state"] {
        let mode = std::fs::metadata(w.spool.join(dir))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o007, 0, "{dir}/ mode {mode:o}");
    }
    // Others may pass through the root to the maildrop, never list either.
    let mode = |dir: &str| {
        std::fs::metadata(w.spool.join(dir))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    };
    assert_eq!(mode("") & 0o007, 0o001, "spool root");
    assert_eq!(mode("maildrop"), 0o1733, "maildrop");
    assert_eq!(mode("maildrop-tmp"), 0o1733, "maildrop-tmp");
}

#[test]
fn hostile_umask_does_not_widen_queue_file_modes() {
    let w = World::new();
    let mut cmd = w.command("sendmail");
    cmd.arg("a@example.com");
    // SAFETY: umask is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            libc::umask(0);
            Ok(())
        });
    }
    assert_success(&run_with_stdin(&mut cmd, b"Subject: x\n\ny\n"));
    let id = &w.queue_ids()[0];
    let mode = std::fs::metadata(w.spool.join("queue").join(id))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o027, 0, "mode {mode:o}");
}

#[test]
fn large_message_streams_in_bounded_memory() {
    // S5: 68 MiB through sendmail; its peak RSS must stay small. GNU time
    // measures it: the kernel's figure for a child of this test process
    // (wait4's ru_maxrss) keeps the peak of the memory the child ran in
    // before its exec, which here is this test process — grown by
    // whatever the other tests of the binary do meanwhile (a panic's
    // backtrace took it past 80 MiB). time's own child starts from time.
    let time = std::path::Path::new("/usr/bin/time");
    if !time.exists() {
        eprintln!("skipped: needs GNU time (/usr/bin/time, Debian's package time)");
        return;
    }
    let w = World::with_config("max_message_size = 0");
    let report = w.dir.path().join("peak-rss-kib");
    let mut child = std::process::Command::new(time)
        .args(["-f", "%M", "-o"])
        .arg(&report)
        .arg(w.bin.join("sendmail"))
        .arg("-C")
        .arg(&w.config)
        .args(["-odq", "-i", "a@example.com"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        stdin.write_all(b"Subject: big\n\n").unwrap();
        let line = [b"0123456789abcdef".repeat(4).as_slice(), b"\n"].concat();
        let chunk = line.repeat(1024); // 65 KiB
        for _ in 0..1024 {
            stdin.write_all(&chunk).unwrap();
        }
        // One 4 MiB line without a newline: line length must not matter either.
        stdin.write_all(&vec![b'L'; 4 << 20]).unwrap();
    });
    writer.join().unwrap();
    assert_success(&child.wait_with_output().unwrap());
    let report = std::fs::read_to_string(&report).unwrap();
    let max_rss_kib: u64 = report.trim().parse().expect("time's %M");
    assert!(
        max_rss_kib < 16 * 1024,
        "peak RSS {max_rss_kib} KiB for a 68 MiB message: memory grows with size"
    );
    let ids = w.queue_ids();
    assert_eq!(ids.len(), 1);
    assert!(w.envelope(&ids[0]).size > 68_000_000);
}

#[test]
fn unknown_config_key_exits_78_naming_the_line() {
    let w = World::with_config("no_such_key = 1");
    let out = w.sendmail(&["a@example.com"], b"x\n");
    assert_exit(&out, 78);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no_such_key"), "{err}");
    let text = std::fs::read_to_string(&w.config).unwrap();
    let line = 1 + text
        .lines()
        .position(|l| l.starts_with("no_such_key"))
        .unwrap();
    assert!(
        err.contains(&format!(":{line}:")),
        "line number {line}: {err}"
    );
    assert!(!w.spool.join("queue").exists() || w.queue_ids().is_empty());
}

#[test]
fn bad_config_value_exits_78() {
    let w = World::with_config("retry_min = soon");
    let out = w.sendmail(&["a@example.com"], b"x\n");
    assert_exit(&out, 78);
    assert!(String::from_utf8_lossy(&out.stderr).contains("retry_min"));
}

#[test]
fn missing_config_file_given_with_c_exits_78() {
    let w = World::new();
    let out = run_with_stdin(
        std::process::Command::new(w.bin.join("sendmail")).args([
            "-C",
            "/nonexistent/spoolmail.conf",
            "a@example.com",
        ]),
        b"x\n",
    );
    assert_exit(&out, 78);
}

#[test]
fn unwritable_spool_exits_77_with_a_clear_error_and_no_message() {
    let w = World::new();
    w.send_ok(&["a@example.com"], b"x\n");
    // Root ignores directory permissions: as root, run sendmail as nobody
    // in a world that nobody owns, from a copy of the binary nobody can
    // reach.
    let as_user = is_root().then(|| {
        w.stage_for_other_users();
        let nobody = nix::unistd::User::from_name("nobody")
            .unwrap()
            .expect("nobody");
        let status = std::process::Command::new("chown")
            .arg("-R")
            .arg(format!("{}:{}", nobody.uid, nobody.gid))
            .arg(w.dir.path())
            .status()
            .unwrap();
        assert!(status.success());
        nobody
    });
    // Neither the queue nor the maildrop (the fallback of callers the
    // queue is closed to) can take the message.
    let tmp = w.spool.join("tmp");
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o500)).unwrap();
    let maildrop = w.spool.join("maildrop");
    std::fs::set_permissions(&maildrop, std::fs::Permissions::from_mode(0o500)).unwrap();
    let mut cmd = w.command("sendmail");
    cmd.arg("a@example.com");
    if let Some(user) = &as_user {
        cmd.uid(user.uid.as_raw()).gid(user.gid.as_raw());
    }
    let out = run_with_stdin(&mut cmd, b"y\n");
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o770)).unwrap();
    std::fs::set_permissions(&maildrop, std::fs::Permissions::from_mode(0o1733)).unwrap();
    assert_exit(&out, 77);
    assert!(String::from_utf8_lossy(&out.stderr).contains("ermission denied"));
    assert_eq!(w.queue_ids().len(), 1);
}

#[test]
fn setgid_binary_drops_privilege_for_c_from_non_root() {
    if !root_or_skip("installing a setgid copy and switching user needs root") {
        return;
    }
    // A world under a directory every user may traverse.
    let base = tempfile::Builder::new()
        .prefix("spoolmail-setgid")
        .tempdir_in("/var/tmp")
        .unwrap();
    std::fs::set_permissions(base.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let group = nix::unistd::Group::from_name("mail")
        .unwrap()
        .expect("group mail exists on Debian");
    let nobody = nix::unistd::User::from_name("nobody")
        .unwrap()
        .expect("nobody");
    let bin = base.path().join("sendmail");
    common::stage::copy_executable(common::stage::binary(), &bin);
    nix::unistd::chown(&bin, Some(nix::unistd::Uid::from_raw(0)), Some(group.gid)).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o2755)).unwrap();
    // The spool belongs to the mail group and is closed to others: only
    // the group privilege lets a user write into it.
    let spool = base.path().join("spool");
    for sub in ["", "tmp", "queue", "state", "hosts", "corrupt"] {
        let d = spool.join(sub);
        std::fs::create_dir_all(&d).unwrap();
        nix::unistd::chown(&d, Some(nix::unistd::Uid::from_raw(0)), Some(group.gid)).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o770)).unwrap();
    }
    let conf = base.path().join("spoolmail.conf");
    std::fs::write(
        &conf,
        format!("spool = {}\nhostname = {HOSTNAME}\n", spool.display()),
    )
    .unwrap();
    std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o644)).unwrap();

    let mut cmd = std::process::Command::new(&bin);
    cmd.args(["-C", conf.to_str().unwrap(), "-v", "a@example.com"])
        .uid(nobody.uid.as_raw())
        .gid(nobody.gid.as_raw());
    // (std drops supplementary groups itself when root sets a uid.)
    let out = run_with_stdin(&mut cmd, b"Subject: x\n\ny\n");
    // Without the spool group's rights the spool is closed: refused, nothing queued.
    assert_eq!(
        out.status.code(),
        Some(77),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("privilege dropped"));
    assert_eq!(std::fs::read_dir(spool.join("queue")).unwrap().count(), 0);
}

#[test]
fn caller_without_password_entry_exits_67() {
    if !root_or_skip("running as a uid with no password entry needs root") {
        return;
    }
    let w = World::new();
    w.stage_for_other_users();
    let status = std::process::Command::new("chmod")
        .args(["-R", "a+rwX"])
        .arg(w.dir.path())
        .status()
        .unwrap();
    assert!(status.success());
    let mut cmd = w.command("sendmail");
    cmd.arg("a@example.com").uid(54321).gid(54321);
    let out = run_with_stdin(&mut cmd, b"Subject: x\n\ny\n");
    assert_exit(&out, 67);
    assert!(w.queue_ids().is_empty());
}

/// Issue 11, defect 5: with stderr full (`2>/dev/full`) the message that
/// cannot be printed must not turn a usage error into an abort (134).
#[test]
fn an_unwritable_stderr_still_gets_the_right_exit_code() {
    let w = World::new();
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let out = w
        .command("sendmail")
        .arg("--no-such-option")
        .stdin(std::process::Stdio::null())
        .stderr(full)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    assert!(w.queue_ids().is_empty());
}

/// Issue 11, defect 6: a password database that cannot be read right now
/// (EMFILE injected on /etc/passwd by strace) is temporary trouble (75),
/// not "who are you?" (67), which a caller would never retry. Runs as
/// `daemon`, an account only /etc/passwd knows (unlike root, which
/// nss-systemd would answer itself). Needs root and strace.
#[test]
fn a_failing_password_lookup_is_temporary() {
    if !root_or_skip("running as the daemon account needs root") {
        return;
    }
    let has_strace = std::process::Command::new("strace")
        .arg("-V")
        .output()
        .is_ok();
    let daemon = nix::unistd::User::from_name("daemon").ok().flatten();
    let (true, Some(daemon)) = (has_strace, daemon) else {
        eprintln!("skipped: needs strace and the daemon account");
        return;
    };
    let w = World::new();
    w.stage_for_other_users();
    let mut cmd = std::process::Command::new("strace");
    cmd.args([
        "-f",
        "-o",
        "/dev/null",
        "-P",
        "/etc/passwd",
        "-e",
        "trace=openat",
    ])
    .args(["-e", "inject=openat:error=EMFILE", "setpriv"])
    .arg(format!("--reuid={}", daemon.uid))
    .arg(format!("--regid={}", daemon.gid))
    .arg("--clear-groups")
    .arg(w.bin.join("sendmail"))
    .arg("-C")
    .arg(&w.config)
    .args(["-odq", "someone@example.com"]);
    let out = run_with_stdin(&mut cmd, b"Subject: x\n\nbody\n");
    assert_exit(&out, 75);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("password database"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
