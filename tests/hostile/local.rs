//! What a user's `.forward`, `:include:` files and local deliveries can
//! make a privileged runner do (issue 15, items 1 and 4).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common;
use crate::site::Site;

/// Runs `cmd` to its end, or kills it after `limit`: Some(output) when it
/// ended in time.
fn run_within(cmd: &mut Command, limit: Duration) -> Option<std::process::Output> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while start.elapsed() < limit {
        if child.try_wait().unwrap().is_some() {
            return Some(child.wait_with_output().unwrap());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// The recipient stops (SIGSTOP) the helper that writes into their
/// mailbox as them: root's queue run must still end — the helper killed
/// at `mailbox_timeout`, the recipient deferred — instead of waiting for
/// ever (under a oneshot systemd service no later run could start).
#[test]
fn item04_a_stopped_delivery_helper_cannot_hang_roots_queue_run() {
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
