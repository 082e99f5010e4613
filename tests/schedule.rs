//! The schedule (`schedule/T/ID`, src/spool/schedule.rs) end to end: a
//! run with nothing due reads no message file; whatever the schedule
//! lost or got wrong is repaired without losing or doubling a message;
//! a destination in the unreachable cache costs its waiting messages no
//! write of their own.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::hang_up::hang_up_listener;
use common::smtpd::SmtpServer;
use common::*;

const MSG: &[u8] = b"Subject: schedule test\n\nbody\n";

/// Every `(bucket, id)` entry of the schedule.
fn entries(w: &World) -> Vec<(u64, String)> {
    let mut all = Vec::new();
    for bucket in std::fs::read_dir(w.spool.join("schedule"))
        .unwrap()
        .flatten()
    {
        let at: u64 = bucket.file_name().to_str().unwrap().parse().unwrap();
        for e in std::fs::read_dir(bucket.path()).unwrap().flatten() {
            all.push((at, e.file_name().into_string().unwrap()));
        }
    }
    all.sort();
    all
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Runs `sendmail -q` under `strace -f`, tracing `syscalls`; returns the
/// trace's lines.
fn traced_queue_run(w: &World, syscalls: &str) -> Vec<String> {
    let trace = w.dir.path().join("trace");
    let out = Command::new("strace")
        .arg("-f")
        .arg("-qq")
        .arg("-e")
        .arg(format!("trace={syscalls}"))
        .arg("-o")
        .arg(&trace)
        .arg(w.bin.join("sendmail"))
        .arg("-C")
        .arg(&w.config)
        .arg("-q")
        .output()
        .expect("strace (apt-get install strace)");
    assert_success(&out);
    std::fs::read_to_string(&trace)
        .unwrap()
        .lines()
        .map(String::from)
        .collect()
}

fn set_state_due_now(w: &World, id: &str) {
    let path = w.spool.join("state").join(id);
    let mut state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    for r in state["recipients"].as_array_mut().unwrap() {
        r["next_attempt"] = serde_json::json!(0);
    }
    std::fs::write(&path, serde_json::to_vec(&state).unwrap()).unwrap();
}

/// Renames bucket `from` to `to` (`to` must not exist).
fn move_bucket(w: &World, from: u64, to: u64) {
    let dir = |at: u64| -> PathBuf { w.spool.join("schedule").join(at.to_string()) };
    std::fs::rename(dir(from), dir(to)).unwrap();
}

fn entry_path(spool: &Path, at: u64, id: &str) -> PathBuf {
    spool.join("schedule").join(at.to_string()).join(id)
}

#[test]
fn a_commit_files_the_message_as_due_and_delivery_removes_the_entry() {
    let dir = tempfile::tempdir().unwrap();
    let server = SmtpServer::start(dir.path(), &[]);
    let w = Setup::smarthost(server.port).world();
    let id = w.send_ok(&["-f", "s@example.org", "r@x.test"], MSG);
    assert_eq!(entries(&w), [(0, id.clone())]);
    assert_success(&w.sendmail(&["-q"], b""));
    assert_eq!(server.messages().len(), 1);
    assert!(w.queue_ids().is_empty());
    assert!(entries(&w).is_empty(), "{:?}", entries(&w));
}

#[test]
fn a_queue_run_with_nothing_due_opens_no_queue_or_state_file() {
    let (port, accepted) = hang_up_listener();
    let w = Setup::smarthost(port).line("retry_min = 1h").world();
    let ids: Vec<String> = (0..5)
        .map(|i| w.send_ok(&["-f", "s@example.org", &format!("r{i}@x.test")], MSG))
        .collect();
    assert_success(&w.sendmail(&["-q"], b""));
    assert_eq!(accepted.count(), 1, "one attempt for all");
    // Every message is filed under a future bucket.
    let filed = entries(&w);
    assert_eq!(filed.len(), ids.len(), "{filed:?}");
    assert!(filed.iter().all(|(at, _)| *at > now()), "{filed:?}");

    let trace = traced_queue_run(&w, "open,openat,openat2");
    assert!(
        trace.iter().any(|l| l.contains("spoolmail.conf")),
        "the trace sees the run's opens: {trace:?}"
    );
    let touched: Vec<&String> = trace
        .iter()
        .filter(|l| ids.iter().any(|id| l.contains(id.as_str())))
        .collect();
    assert!(touched.is_empty(), "message files opened: {touched:?}");
    assert_eq!(accepted.count(), 1, "no attempt");
    assert_eq!(w.queue_ids().len(), 5);
}

#[test]
fn a_message_without_a_schedule_entry_is_delivered_by_the_next_queue_run() {
    let dir = tempfile::tempdir().unwrap();
    let server = SmtpServer::start(dir.path(), &[]);
    let w = Setup::smarthost(server.port).world();
    let id = w.send_ok(&["-f", "s@example.org", "r@x.test"], MSG);
    // As a crash between the commit and its entry would leave it.
    std::fs::remove_file(entry_path(&w.spool, 0, &id)).unwrap();
    assert!(entries(&w).is_empty());
    assert_success(&w.sendmail(&["-q"], b""));
    let got = server.messages();
    assert_eq!(got.len(), 1, "delivered once");
    assert_eq!(got[0].rcpt_tos, ["r@x.test"]);
    assert!(w.queue_ids().is_empty());
    assert!(entries(&w).is_empty(), "{:?}", entries(&w));
}

#[test]
fn an_entry_whose_message_is_gone_is_removed() {
    let w = World::new();
    let id = w.send_ok(&["-f", "s@example.org", "r@x.test"], MSG);
    // Gone without its entry (an operator's rm; a removal cut short).
    std::fs::remove_file(w.spool.join("queue").join(&id)).unwrap();
    // And an entry in a bucket long due.
    std::fs::create_dir(w.spool.join("schedule/1000")).unwrap();
    std::fs::write(entry_path(&w.spool, 1000, &id), b"").unwrap();
    assert_success(&w.sendmail(&["-q"], b""));
    assert!(entries(&w).is_empty(), "{:?}", entries(&w));
    assert!(
        !w.spool.join("schedule/1000").exists(),
        "an emptied bucket goes"
    );
}

#[test]
fn an_entry_earlier_than_the_state_costs_one_look_and_moves_to_the_states_time() {
    let (port, accepted) = hang_up_listener();
    let w = Setup::smarthost(port).line("retry_min = 1h").world();
    let id = w.send_ok(&["-f", "s@example.org", "r@x.test"], MSG);
    assert_success(&w.sendmail(&["-q"], b""));
    assert_eq!(accepted.count(), 1);
    let [(later, _)] = entries(&w)[..] else {
        panic!("one entry: {:?}", entries(&w))
    };
    // Its retry: retry_min plus the jitter (1–2 h), rounded up to its
    // bucket (at most a 16th later).
    assert!(later >= now() + 3000, "filed an hour ahead: {later}");
    assert!(
        later <= now() + 2 * 3600 + 2 * 3600 / 16,
        "within 2 hours: {later}"
    );
    // The schedule says due, the state says in an hour.
    std::fs::rename(
        entry_path(&w.spool, later, &id),
        entry_path(&w.spool, 0, &id),
    )
    .unwrap();
    assert_success(&w.sendmail(&["-q"], b""));
    assert_eq!(accepted.count(), 1, "not retried early");
    assert_eq!(entries(&w), [(later, id)], "back at the state's time");
}

#[test]
fn an_entry_later_than_the_state_delays_but_never_loses_the_message() {
    let (port, _) = hang_up_listener();
    let w = Setup::smarthost(port).line("retry_min = 1h").world();
    let id = w.send_ok(&["-f", "s@example.org", "r@x.test"], MSG);
    assert_success(&w.sendmail(&["-q"], b""));
    let [(later, _)] = entries(&w)[..] else {
        panic!("one entry: {:?}", entries(&w))
    };
    // The state says due now, the schedule in an hour.
    set_state_due_now(&w, &id);
    // Now the smarthost works.
    let dir = tempfile::tempdir().unwrap();
    let server = SmtpServer::start(dir.path(), &[]);
    let conf = std::fs::read_to_string(&w.config).unwrap().replace(
        &format!("127.0.0.1:{port}"),
        &format!("127.0.0.1:{}", server.port),
    );
    std::fs::write(&w.config, conf).unwrap();
    // Forget that the old smarthost was unreachable.
    for f in std::fs::read_dir(w.spool.join("hosts")).unwrap().flatten() {
        std::fs::remove_file(f.path()).unwrap();
    }
    assert_success(&w.sendmail(&["-q"], b""));
    assert!(server.messages().is_empty(), "it waits for its entry");
    let q = w.mailq_json();
    assert_eq!(q.len(), 1, "and stays listed");
    // Its time comes.
    move_bucket(&w, later, 1000);
    assert_success(&w.sendmail(&["-q"], b""));
    assert_eq!(server.messages().len(), 1, "delivered once");
    assert!(w.queue_ids().is_empty());
    assert!(entries(&w).is_empty());
    // And a forced run never needed the schedule.
    let id2 = w.send_ok(&["-f", "s@example.org", "r2@x.test"], MSG);
    std::fs::remove_file(entry_path(&w.spool, 0, &id2)).unwrap();
    assert_success(&w.sendmail(&[&format!("-qI{id2}")], b""));
    assert_eq!(server.messages().len(), 2);
}

#[test]
fn messages_waiting_for_an_unreachable_destination_cost_no_state_write() {
    let (port, accepted) = hang_up_listener();
    let w = Setup::smarthost(port)
        .line("retry_min = 1h\nmax_connections = 1")
        .world();
    let ids: Vec<String> = (0..20)
        .map(|i| w.send_ok(&["-f", "s@example.org", &format!("r{i}@x.test")], MSG))
        .collect();
    let trace = traced_queue_run(&w, "fsync,fdatasync,syncfs,sync_file_range");
    assert_eq!(accepted.count(), 1, "one attempt for 20");
    let syncs = trace.iter().filter(|l| l.contains("sync")).count();
    assert!(
        (1..=6).contains(&syncs),
        "the one attempt's records only, not one per message: {syncs} syncs: {trace:?}"
    );
    let states = std::fs::read_dir(w.spool.join("state")).unwrap().count();
    assert_eq!(states, 1, "only the message tried has a state");
    // Each waits for the destination: filed no earlier than its retry.
    let host_retry = entries(&w).iter().map(|(at, _)| *at).min().unwrap();
    assert!(host_retry > now(), "{:?}", entries(&w));
    assert_eq!(entries(&w).len(), ids.len());
    // mailq says why the untried ones wait.
    let q = w.mailq_json();
    let waiting = q
        .iter()
        .filter(|m| {
            m["recipients"][0]["waiting"]
                .as_str()
                .is_some_and(|w| w.starts_with("smarthost unreachable until"))
        })
        .count();
    assert_eq!(waiting, ids.len() - 1, "{q:?}");
    let text = String::from_utf8(w.run("mailq", &[], b"").stdout).unwrap();
    assert_eq!(
        text.matches("(waiting: smarthost unreachable until")
            .count(),
        ids.len() - 1
    );
    // The next run finds nothing due: no connection, no file opened.
    assert_success(&w.sendmail(&["-q"], b""));
    assert_eq!(accepted.count(), 1);
}
