//! What a user's `.forward`, `:include:` files and local deliveries can
//! make a privileged runner do (issue 15).

use std::process::Stdio;
use std::time::Duration;

use crate::common;
use crate::site::Site;
use crate::tools::run_within;

/// The recipient stops (SIGSTOP) the helper that writes into their
/// mailbox as them: root's queue run must still end — the helper killed
/// at `mailbox_timeout`, the recipient deferred — instead of waiting for
/// ever (under a oneshot systemd service no later run could start).
#[test]
fn a_recipient_stopping_their_delivery_helper_cannot_hang_roots_queue_run() {
    let Some(site) = Site::new("stop", "mailbox_timeout = 2s\nretry_min = 1s") else {
        return;
    };
    let out = site.run(
        Some(&site.alice),
        "sendmail",
        &["-odq", &site.mallory.name],
        b"Subject: hello\n\nhi\n",
    );
    common::assert_success(&out);
    // Mallory holds a lock on his mailbox, so the helper lingers long
    // enough to be caught, waits for it and stops it.
    let mailbox = site.mail_dir.join(&site.mallory.name);
    let locked = site.mallory.home.join("locked");
    site.write_as(&site.mallory, &mailbox, "", 0o600);
    let mut stopper = site
        .shell(
            Some(&site.mallory),
            &format!(
                "python3 -c 'import fcntl,sys,time; f=open(sys.argv[1],\"a\"); \
                 fcntl.lockf(f, fcntl.LOCK_EX); open(sys.argv[2],\"w\"); time.sleep(120)' {} {} &\n\
                 until pkill -STOP -u \"$(id -u)\" -f '^spoolmail --local-delivery'; do sleep 0.02; done",
                mailbox.display(),
                locked.display()
            ),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(common::wait_for(Duration::from_secs(30), || locked.exists()));
    let run = run_within(
        &mut site.shell(None, "exec sendmail -q"),
        Duration::from_secs(60),
    );
    let stopped = stopper.try_wait().unwrap().is_some();
    let _ = stopper.kill();
    let _ = stopper.wait();
    assert!(stopped, "the helper was never seen (and stopped)");
    let run = run.expect("root's queue run hung on a stopped helper");
    common::assert_success(&run);
    let listed = site.as_root("mailq", &["--json"], b"");
    let text = String::from_utf8_lossy(&listed.stdout);
    assert!(
        text.contains("\"deferred\"") && text.contains("killed"),
        "the recipient is deferred with the reason: {text}"
    );
}

/// Every byte under the spool, and root's `mailq --json`: where a leaked
/// line would surface (a notice's Diagnostic-Code, a deferral reason).
fn spool_and_mailq_contain(site: &Site, needle: &str) -> bool {
    fn walk(dir: &std::path::Path, needle: &[u8]) -> bool {
        std::fs::read_dir(dir).is_ok_and(|entries| {
            entries.filter_map(|e| e.ok()).any(|e| {
                let path = e.path();
                match path.is_dir() {
                    true => walk(&path, needle),
                    false => std::fs::read(&path)
                        .is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle)),
                }
            })
        })
    }
    let listed = site.as_root("mailq", &["--json"], b"");
    walk(&site.spool, needle.as_bytes()) || String::from_utf8_lossy(&listed.stdout).contains(needle)
}

/// Mallory's `.forward` is `:include:PATH`; then he mails himself.
fn mallory_includes(site: &Site, path: &std::path::Path, runner: Option<&crate::site::Account>) {
    let forward = site.mallory.home.join(".forward");
    let line = format!(":include:{}\n", path.display());
    site.write_as(&site.mallory, &forward, &line, 0o600);
    mallory_mails_himself(site, runner);
}

/// Mallory sends himself a message (the failure notice would go to a
/// remote address of his, so it stays in the queue to be read); then
/// `runner` (Mallory with the setgid group, or root) runs the queue.
fn mallory_mails_himself(site: &Site, runner: Option<&crate::site::Account>) {
    let out = site.run(
        Some(&site.mallory),
        "sendmail",
        &["-odq", "-f", "mallory@example.org", &site.mallory.name],
        b"Subject: me\n\nhello me\n",
    );
    common::assert_success(&out);
    common::assert_success(&site.run(runner, "sendmail", &["-q"], b""));
}

/// `:include:` of a file only the spool group may read (0640 root:mail,
/// like `auth_password_file`) from a `.forward`: the setgid runner must
/// read it with Mallory's rights, not the group's, and no line of it may
/// come back in a notice, a state file or mailq.
#[test]
fn a_forward_include_of_a_mail_group_file_reads_nothing_of_it() {
    let Some(site) = Site::new("incg", "retry_min = 1s") else {
        return;
    };
    let secret = site.etc.join("relay-password");
    site.write_root(&secret, "groupsecret0451\n", crate::site::mail_gid(), 0o640);
    mallory_includes(&site, &secret, Some(&site.mallory));
    assert!(
        !spool_and_mailq_contain(&site, "groupsecret0451"),
        "the spool group's file leaked through mallory's :include:"
    );
}

/// The same with a file only root may read: root's queue run reads a
/// user's includes as that user, never as root.
#[test]
fn a_forward_include_of_a_root_only_file_reads_nothing_of_it() {
    let Some(site) = Site::new("incr", "retry_min = 1s") else {
        return;
    };
    let secret = site.base.join("root-only");
    site.write_root(&secret, "rootsecret0451\n", 0, 0o600);
    mallory_includes(&site, &secret, None);
    assert!(
        !spool_and_mailq_contain(&site, "rootsecret0451"),
        "root's file leaked through mallory's :include:"
    );
}

/// Mallory includes a file of Alice's that names a path of hers (as a
/// shell history naming a script would): what an include from a
/// `.forward` names runs as the forward's owner, so root's run must not
/// append to Alice's script as Alice.
#[test]
fn a_forward_including_another_users_file_runs_what_it_names_as_the_forward_owner() {
    let Some(site) = Site::new("incx", "retry_min = 1s") else {
        return;
    };
    let script = site.alice.home.join("backup.sh");
    site.write_as(&site.alice, &script, "#!/bin/sh\necho backup\n", 0o755);
    let notes = site.alice.home.join("notes");
    site.write_as(
        &site.alice,
        &notes,
        &format!("{}\n", script.display()),
        0o644,
    );
    mallory_includes(&site, &notes, None);
    assert_eq!(
        std::fs::read_to_string(&script).unwrap(),
        "#!/bin/sh\necho backup\n",
        "alice's script was written to on mallory's behalf"
    );
}

/// An `:include:` in /etc/aliases is read as its owner — pipe_user when
/// root owns it — never as root: a root-only file stays unread.
#[test]
fn an_aliases_include_of_a_root_only_file_is_never_read_as_root() {
    let Some(site) = Site::new("inca", "retry_min = 1s") else {
        return;
    };
    let secret = site.base.join("root-list");
    site.write_root(&secret, "aliassecret0451\n", 0, 0o600);
    std::fs::write(
        site.etc.join("aliases"),
        format!("postmaster: root\nlist: :include:{}\n", secret.display()),
    )
    .unwrap();
    common::assert_success(&site.as_root("newaliases", &[], b""));
    let out = site.run(
        Some(&site.mallory),
        "sendmail",
        &["-odq", "-f", "mallory@example.org", "list"],
        b"Subject: to the list\n\nhi\n",
    );
    common::assert_success(&out);
    common::assert_success(&site.as_root("sendmail", &["-q"], b""));
    assert!(
        !spool_and_mailq_contain(&site, "aliassecret0451"),
        "a root-only include was read as root"
    );
}
