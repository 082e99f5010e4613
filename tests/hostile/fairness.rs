//! Work one user causes is bounded and charged to that user (issue 20):
//! a hostile DNS zone, connections to a server that
//! never greets, and a mailbox its owner keeps locked each stall the
//! attacker's own mail, never the victim's. Every test asserts what the
//! victim must get — her message delivered while the attack is still in
//! place — with a generous deadline that only a stalled delivery misses.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::common::{self, Setup, smtpd::SmtpServer};
use crate::site::{Account, Site};
use crate::tools::{keep_locked, never_answering_zone, silent_server, stop};

/// How long the victim's message may take: far more than a delivery
/// needs on a loaded machine, far less than the attacks below stall an
/// unfixed spoolmail (minutes).
const VICTIM_LIMIT: Duration = Duration::from_secs(60);

/// Whether any process of `who` runs.
fn running(who: &Account) -> bool {
    std::process::Command::new("pgrep")
        .args(["-U", &who.uid.to_string()])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Whether some process holds a flock on `path` (from /proc/locks, which
/// names the file by device and inode; probing with a lock of our own
/// could take the slot from a runner about to start).
fn flocked(path: &Path) -> bool {
    let Ok(meta) = std::fs::metadata(path) else {
        return false;
    };
    let (major, minor) = (libc::major(meta.dev()), libc::minor(meta.dev()));
    let id = format!("{major:02x}:{minor:02x}:{}", meta.ino());
    std::fs::read_to_string("/proc/locks").is_ok_and(|locks| {
        locks
            .lines()
            .any(|l| l.contains("FLOCK") && l.split_whitespace().any(|w| w == id))
    })
}

/// Whether every one of the `count` slots of the pool `prefix` is held.
fn slots_held(site: &Site, prefix: &str, count: u32) -> bool {
    let hosts = site.spool.join("hosts");
    (0..count).all(|n| flocked(&hosts.join(format!("{prefix}.slot-{n}"))))
}

/// Whether every one of `who`'s runner slots (`runner-uUID`, `count` of
/// them) is held.
fn runner_slots_held(site: &Site, who: &Account, count: u32) -> bool {
    slots_held(site, &format!("runner-u{}", who.uid), count)
}

/// Alice's `sendmail -odi` to friend@example.org, through the healthy
/// smarthost.
fn alice_sends_now(site: &Site) -> Child {
    site.shell(
        Some(&site.alice),
        "exec sendmail -odi -f alice@example.org friend@example.org </dev/null",
    )
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap()
}

/// Polls until `arrived` holds (true) or [`VICTIM_LIMIT`] passes (false);
/// panics at once with its stderr when `sender` fails instead (a broken
/// site, not a stalled delivery).
fn wait_for_victim(mut sender: Child, mut arrived: impl FnMut() -> bool) -> bool {
    let mut failed = None;
    let ok = common::wait_for(VICTIM_LIMIT, || {
        if let Ok(Some(status)) = sender.try_wait()
            && !status.success()
        {
            failed = Some(status);
            return true;
        }
        arrived()
    });
    if let Some(status) = failed {
        let mut said = String::new();
        if let Some(mut err) = sender.stderr.take() {
            use std::io::Read;
            let _ = err.read_to_string(&mut said);
        }
        panic!("alice's sendmail failed ({status}): {said}");
    }
    stop(sender);
    ok
}

/// Mallory's domain publishes twenty MX names whose addresses are never
/// answered, and she queues six messages to it; root's queue run (four
/// workers) spends its time in her zone. Alice's mail through the
/// healthy smarthost must go at once — no connection slot may be held
/// while a destination is resolved — while root's run is still at it.
#[test]
fn a_dns_zone_that_never_answers_holds_no_connection_slot() {
    let dir = tempfile::tempdir().unwrap();
    let server = SmtpServer::start(dir.path(), &[]);
    let dns = never_answering_zone();
    let Some(site) = Site::new(
        "fdns",
        Setup::smarthost(server.port)
            .route("hostile.test -> mx")
            .line(&format!(
                "resolver = {}\nmax_connections = 4\ncommand_timeout = 2s",
                dns.addr
            ))
            .text(),
    ) else {
        return;
    };
    for _ in 0..6 {
        let out = site.run(
            Some(&site.mallory),
            "sendmail",
            &["-odq", "-f", "mallory@example.org", "x@hostile.test"],
            b"Subject: resolve me\n\nx\n",
        );
        common::assert_success(&out);
    }
    let mut root = site.spawn_quiet(None, "exec sendmail -q");
    // Every worker of root's run is at work, and her zone is being read.
    let resolving = || {
        slots_held(&site, "runner", 4)
            && dns
                .queries()
                .iter()
                .any(|(n, _)| n.ends_with(".hostile.test"))
    };
    assert!(
        common::wait_for(Duration::from_secs(30), resolving),
        "root's run never resolved mallory's domain: {:?}",
        dns.queries()
    );
    let started = Instant::now();
    let alice = alice_sends_now(&site);
    let arrived = wait_for_victim(alice, || {
        server
            .recipients()
            .contains(&"friend@example.org".to_string())
    });
    let took = started.elapsed();
    let attack_on = root.try_wait().unwrap().is_none();
    stop(root);
    assert!(
        arrived,
        "alice's message did not arrive within {VICTIM_LIMIT:?} while root's run resolved \
         mallory's domain (DNS queries so far: {})",
        dns.queries().len(),
    );
    assert!(
        attack_on,
        "root's run had finished with mallory's domain before alice's message arrived ({took:?})"
    );
    eprintln!("alice's message arrived after {took:?} while root's run resolved mallory's domain");
}

/// Mallory's mail goes to a server that never greets (held for
/// `command_timeout`, 5 minutes): her runners sit on their connections.
/// Alice's mail to the healthy smarthost must still get a connection
/// slot at once — each user has a share of their own, not one half
/// shared by all of them.
#[test]
fn a_server_that_never_greets_holds_only_its_users_connection_slots() {
    let dir = tempfile::tempdir().unwrap();
    let server = SmtpServer::start(dir.path(), &[]);
    let (stuck_port, stuck) = silent_server();
    let Some(site) = Site::new(
        "fconn",
        Setup::smarthost(server.port)
            .route_to_relay("stuck.test", stuck_port)
            .line("max_connections = 4")
            .text(),
    ) else {
        return;
    };
    for _ in 0..4 {
        let out = site.run(
            Some(&site.mallory),
            "sendmail",
            &["-f", "mallory@example.org", "x@stuck.test"],
            b"Subject: stuck\n\nx\n",
        );
        common::assert_success(&out);
    }
    // Both her runners are at work and the server holds her first
    // connection.
    let stuck_on = || !stuck.lock().unwrap().is_empty();
    assert!(
        common::wait_for(Duration::from_secs(30), || stuck_on()
            && runner_slots_held(&site, &site.mallory, 2)),
        "mallory's runners never reached the silent server"
    );
    let started = Instant::now();
    let alice = alice_sends_now(&site);
    let arrived = wait_for_victim(alice, || {
        server
            .recipients()
            .contains(&"friend@example.org".to_string())
    });
    let took = started.elapsed();
    let attack_on = runner_slots_held(&site, &site.mallory, 2);
    let held = stuck.lock().unwrap().len();
    assert!(
        arrived,
        "alice's message did not arrive within {VICTIM_LIMIT:?} while mallory's runners sat on \
         {held} silent connection(s)"
    );
    assert!(
        attack_on,
        "mallory's runners had given up before alice's message arrived ({took:?})"
    );
    eprintln!("alice's message arrived after {took:?}; mallory held {held} silent connection(s)");
}

/// Mallory keeps her own mailbox locked and queues eight messages to
/// herself; Alice has one message for her own mailbox. Root's queue run
/// (four workers) must deliver Alice's while Mallory still holds her
/// lock: Mallory's deliveries may take only her share of the workers,
/// and a busy mailbox is not waited on by more than that.
#[test]
fn a_mailbox_kept_locked_holds_no_one_elses_delivery() {
    let Some(site) = Site::new("fbox", "max_connections = 4") else {
        return;
    };
    let mailbox = site.mail_dir.join(&site.mallory.name);
    let locker = keep_locked(&site, &site.mallory, &mailbox);
    for _ in 0..8 {
        let out = site.run(
            Some(&site.mallory),
            "sendmail",
            &["-odq", &site.mallory.name],
            b"Subject: to my locked box\n\nx\n",
        );
        common::assert_success(&out);
    }
    let out = site.run(
        Some(&site.alice),
        "sendmail",
        &["-odq", &site.alice.name],
        b"Subject: for alice\n\nhello alice\n",
    );
    common::assert_success(&out);
    let started = Instant::now();
    let root = site.spawn_quiet(None, "exec sendmail -q");
    let alices = site.mail_dir.join(&site.alice.name);
    let arrived = common::wait_for(VICTIM_LIMIT, || {
        std::fs::read_to_string(&alices).is_ok_and(|t| t.contains("hello alice"))
    });
    let took = started.elapsed();
    let attack_on = running(&site.mallory);
    stop(root);
    stop(locker);
    assert!(
        arrived,
        "alice's mail waited more than {VICTIM_LIMIT:?} behind mallory's locked mailbox"
    );
    assert!(
        attack_on,
        "mallory's lock was gone before alice's mail arrived ({took:?})"
    );
    eprintln!("alice's mail arrived after {took:?} while mallory's mailbox stayed locked");
}
