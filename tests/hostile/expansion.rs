//! Work one user's list files cause, and whom it is charged to (issue
//! 20): an `:include:` tree cannot stall root's queue run, a
//! `.forward` fan-out is held to its owner's limits, a forwarding loop
//! through routes stays small, and a forward's copy belongs to the
//! `.forward`'s owner.

use std::process::Stdio;
use std::time::Duration;

use crate::common::{self, Setup, syslog::SyslogReceiver};
use crate::site::{Account, Site};
use crate::tools::run_within;

/// The recipient addresses of one `mailq --json` message.
fn recipients(m: &serde_json::Value) -> Vec<String> {
    m["recipients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["address"].as_str().unwrap().to_string())
        .collect()
}

/// `who` sends one message to `to`, queued only.
fn send(site: &Site, who: &Account, to: &str) {
    let out = site.run(
        Some(who),
        "sendmail",
        &["-odq", "-f", "mallory@example.org", to],
        b"Subject: hello\n\nhello\n",
    );
    common::assert_success(&out);
}

/// Root's queue run, which must end: a hung one fails the test.
fn root_run(site: &Site) {
    let run = run_within(
        &mut site.shell(None, "exec sendmail -q"),
        Duration::from_secs(120),
    );
    let run = run.expect("root's queue run did not finish");
    common::assert_success(&run);
}

/// Mallory's `:include:` file names itself five times under different
/// spellings (nine levels deep that is 5^9 reads), then many distinct
/// files: root's queue run must still end, having read each file once
/// and stopped at the work bound with one log line.
#[test]
fn an_include_tree_naming_itself_is_read_once_per_file_within_a_bound() {
    let Some(site) = Site::new("xinc", "") else {
        return;
    };
    let log = SyslogReceiver::start(&site.base);
    site.set_config(&format!("retry_min = 1s\n{}", log.config_line()));
    let home = site.mallory.home.display().to_string();
    let spellings: Vec<String> = (0..5)
        .map(|n| format!(":include:{home}/{}inc", "./".repeat(n)))
        .collect();
    let inc = site.mallory.home.join("inc");
    site.write_as(
        &site.mallory,
        &inc,
        &format!("{}\nfar@example.net\n", spellings.join(", ")),
        0o600,
    );
    let forward = site.mallory.home.join(".forward");
    site.write_as(&site.mallory, &forward, &spellings[0], 0o600);
    send(&site, &site.mallory, &site.mallory.name);
    root_run(&site);
    let copies: Vec<_> = site
        .mailq_json(None)
        .into_iter()
        .filter(|m| recipients(m).contains(&"far@example.net".to_string()))
        .collect();
    assert_eq!(copies.len(), 1, "one forwarded copy: {copies:?}");
    assert_eq!(recipients(&copies[0]), ["far@example.net"]);
    // Work that shows: a line per include step filled the log.
    let lines = log.lines();
    assert!(
        lines.len() < 50,
        "{} log lines for one message, the first: {:#?}",
        lines.len(),
        &lines[..lines.len().min(6)]
    );

    // Distinct files, more than an expansion may read: refused as a
    // whole, with one line in the log, not one per file.
    let mut list = String::new();
    for n in 0..150 {
        let path = site.mallory.home.join(format!("part{n}"));
        site.write_as(&site.mallory, &path, &format!("p{n}@example.net\n"), 0o600);
        list.push_str(&format!(":include:{}\n", path.display()));
    }
    site.write_as(&site.mallory, &inc, &list, 0o600);
    send(&site, &site.mallory, &site.mallory.name);
    root_run(&site);
    let lines = log.wait_lines(Duration::from_secs(10), |lines| {
        lines.iter().any(|l| l.contains("expansion limit"))
    });
    let limit_lines = lines
        .iter()
        .filter(|l| l.contains("expansion limit"))
        .count();
    assert_eq!(limit_lines, 1, "one line for the bound: {lines:#?}");
    let fanned: Vec<_> = site
        .mailq_json(None)
        .into_iter()
        .filter(|m| recipients(m).iter().any(|r| r.starts_with("p1@")))
        .collect();
    assert!(fanned.is_empty(), "a copy past the bound: {fanned:?}");
}

/// One counted one-recipient message must not become a queued copy to
/// more addresses than `max_recipients`, nor pass the hourly brake of
/// the `.forward`'s owner: refused, or held for the administrator.
#[test]
fn a_forward_fanning_out_is_held_to_its_owners_limits() {
    let Some(site) = Site::new(
        "xfan",
        "retry_min = 1s\nmax_recipients = 10\nmax_recipients_per_hour = 5",
    ) else {
        return;
    };
    let forward = site.mallory.home.join(".forward");
    let many: Vec<String> = (0..30).map(|n| format!("r{n}@example.net")).collect();
    site.write_as(&site.mallory, &forward, &many.join(", "), 0o600);
    send(&site, &site.mallory, &site.mallory.name);
    root_run(&site);
    for m in site.mailq_json(None) {
        assert!(
            recipients(&m).len() <= 10,
            "a copy to {} addresses, past max_recipients",
            recipients(&m).len()
        );
    }
    // Within max_recipients, past the hourly count (1 + 1 + 8 > 5).
    let some: Vec<String> = (0..8).map(|n| format!("s{n}@example.net")).collect();
    site.write_as(&site.mallory, &forward, &some.join(", "), 0o600);
    send(&site, &site.mallory, &site.mallory.name);
    root_run(&site);
    let copies: Vec<_> = site
        .mailq_json(None)
        .into_iter()
        .filter(|m| recipients(m).contains(&"s0@example.net".to_string()))
        .collect();
    assert!(
        copies.iter().all(|m| m["held"] == true),
        "a copy past the hourly brake, not held"
    );
    assert_eq!(copies.len(), 1, "the copy is kept, on hold");
}

/// Mallory's `.forward` names four addresses a `*.loop.test -> local`
/// route brings back here. Per-address loop detection let that grow
/// factorially (and forwarded each loop notice again); a copy must never
/// be expanded again by the `.forward` that made it.
#[test]
fn a_forwarding_loop_through_a_local_route_stays_small() {
    let Some(site) = Site::new("xloop", "") else {
        return;
    };
    let log = SyslogReceiver::start(&site.base);
    site.set_config(
        Setup::default()
            .line("retry_min = 1s")
            .route("*.loop.test -> local")
            .line(&log.config_line())
            .text(),
    );
    let name = &site.mallory.name;
    let forward = site.mallory.home.join(".forward");
    let targets: Vec<String> = ["a", "b", "c", "d"]
        .iter()
        .map(|d| format!("{name}@{d}.loop.test"))
        .collect();
    site.write_as(&site.mallory, &forward, &targets.join(", "), 0o600);
    let out = site.run(
        Some(&site.mallory),
        "sendmail",
        &["-odq", name],
        b"Subject: round\n\nround\n",
    );
    common::assert_success(&out);
    root_run(&site);
    // What the first run made (copies, notices) the second delivers.
    root_run(&site);
    // Every message the loop made shows in the log under its queue ID.
    let mut ids: Vec<String> = log
        .lines()
        .iter()
        .filter_map(|l| l.split_once("]: ").map(|(_, rest)| rest))
        .filter_map(|rest| rest.split_once(": ").map(|(id, _)| id.to_string()))
        .filter(|id| id.len() == 16 && id.bytes().all(|b| b.is_ascii_alphanumeric()))
        .collect();
    ids.sort();
    ids.dedup();
    assert!(
        ids.len() <= 2,
        "{} messages made of one: {:?}",
        ids.len(),
        &ids[..ids.len().min(5)]
    );
    let mailbox = std::fs::read_to_string(site.mail_dir.join(name)).unwrap_or_default();
    let copies = mailbox.lines().filter(|l| l.starts_with("From ")).count();
    assert!(
        copies <= targets.len(),
        "{copies} copies in the mailbox for one message"
    );
}

/// The copy Alice's private `.forward` makes of Mallory's message is
/// Alice's: listed to her and hers to delete, never listed to Mallory.
#[test]
fn a_copy_made_by_a_forward_belongs_to_the_forwards_owner_not_the_sender() {
    let Some(site) = Site::new("xown", "retry_min = 1s") else {
        return;
    };
    let forward = site.alice.home.join(".forward");
    site.write_as(&site.alice, &forward, "hidden-target@example.net\n", 0o600);
    send(&site, &site.mallory, &site.alice.name);
    root_run(&site);
    let all = site.mailq_json(None);
    let copy = all
        .iter()
        .find(|m| recipients(m).contains(&"hidden-target@example.net".to_string()))
        .expect("the forwarded copy is queued");
    let id = copy["id"].as_str().unwrap().to_string();
    let his = site.run(Some(&site.mallory), "mailq", &["--json"], b"");
    assert!(
        !String::from_utf8_lossy(&his.stdout).contains("hidden-target"),
        "mallory's mailq shows alice's forwarding target"
    );
    let out = site.run(Some(&site.mallory), "mailq", &["--delete", &id], b"");
    assert_eq!(out.status.code(), Some(77), "{out:?}");
    let hers = site.run(Some(&site.alice), "mailq", &["--json"], b"");
    assert!(
        String::from_utf8_lossy(&hers.stdout).contains(&id),
        "alice's mailq does not list her copy"
    );
    let out = site.run(Some(&site.alice), "mailq", &["--delete", &id], b"");
    common::assert_success(&out);
    assert!(!site.queue_ids().contains(&id), "alice could not delete it");
}

/// The queue service's time limit must not cut a delivery in half:
/// SIGTERM to root's run (what systemd sends at `TimeoutStartSec=`)
/// lets the delivery in hand finish and be recorded, begins nothing
/// after it, and the run ends with 0.
#[test]
fn a_run_cut_short_by_sigterm_finishes_the_delivery_in_hand_and_starts_nothing_new() {
    let Some(site) = Site::new("xterm", "retry_min = 1s\nmax_connections = 2") else {
        return;
    };
    let home = site.mallory.home.display().to_string();
    let forward = site.mallory.home.join(".forward");
    site.write_as(
        &site.mallory,
        &forward,
        &format!("\"|touch {home}/started; sleep 2; cat > {home}/got\"\n"),
        0o600,
    );
    // Mallory's command first, then Alice's mailbox, in one message.
    let out = site.run(
        Some(&site.mallory),
        "sendmail",
        &["-odq", &site.mallory.name, &site.alice.name],
        b"Subject: slow\n\nslow\n",
    );
    common::assert_success(&out);
    let mut run = site
        .shell(None, "exec sendmail -q")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = site.mallory.home.join("started");
    assert!(
        common::wait_for(Duration::from_secs(60), || started.exists()),
        "the command never started"
    );
    let pid = nix::unistd::Pid::from_raw(run.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let ended = common::wait_for(Duration::from_secs(60), || {
        run.try_wait().unwrap().is_some()
    });
    if !ended {
        let _ = run.kill();
    }
    let status = run.wait().unwrap();
    assert!(ended, "the run did not end after SIGTERM");
    assert_eq!(status.code(), Some(0), "the run was cut: {status:?}");
    let got = std::fs::read_to_string(site.mallory.home.join("got")).unwrap_or_default();
    assert!(
        got.contains("slow"),
        "the delivery in hand was not finished"
    );
    let left = site.mailq_json(None);
    assert_eq!(left.len(), 1, "{left:?}");
    let statuses: Vec<(String, String)> = left[0]["recipients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["address"].as_str().unwrap().to_string(),
                r["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let of = |name: &str| {
        statuses
            .iter()
            .find(|(a, _)| a == name || a.starts_with(&format!("{name}@")))
            .map(|(_, s)| s.clone())
    };
    assert_eq!(
        of(&site.mallory.name).as_deref(),
        Some("delivered"),
        "{statuses:?}"
    );
    assert_ne!(
        of(&site.alice.name).as_deref(),
        Some("delivered"),
        "begun after SIGTERM"
    );
    assert!(
        !site.mail_dir.join(&site.alice.name).exists(),
        "begun after SIGTERM"
    );
}

/// A repeating run (`-q1h`) ends at SIGTERM once what it holds is done,
/// not after its pause (SIGTERM is blocked in it, so a plain sleep
/// would not end).
#[test]
fn a_repeating_run_ends_at_sigterm_in_its_pause() {
    let Some(site) = Site::new("xpause", "") else {
        return;
    };
    let log = SyslogReceiver::start(&site.base);
    site.set_config(&format!("retry_min = 1s\n{}", log.config_line()));
    send(&site, &site.mallory, "far@example.net");
    let mut run = site
        .shell(None, "exec sendmail -q1h")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The first run is over when the message's deferral is logged.
    let lines = log.wait_lines(Duration::from_secs(60), |lines| {
        lines.iter().any(|l| l.contains("status=deferred"))
    });
    assert!(
        lines.iter().any(|l| l.contains("status=deferred")),
        "{lines:#?}"
    );
    let pid = nix::unistd::Pid::from_raw(run.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let ended = common::wait_for(Duration::from_secs(30), || {
        run.try_wait().unwrap().is_some()
    });
    if !ended {
        let _ = run.kill();
    }
    let status = run.wait().unwrap();
    assert!(ended, "the repeating run slept on after SIGTERM");
    assert_eq!(status.code(), Some(0), "{status:?}");
}
