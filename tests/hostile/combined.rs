//! The four slow attacks of issue 20 at once: Mallory has an
//! `:include:` tree that names itself under five spellings, a domain
//! whose twenty MX names never answer, runners sitting on a server that
//! never greets, and her own mailbox locked with mail queued to it.
//! Root's queue run must still deliver Alice's mail — one message
//! through the healthy smarthost, one to her own mailbox — while every
//! attack is in place, and must itself end. The figures (how long each
//! of Alice's messages took, how long root's run took) are printed, not
//! judged: the machines are shared and noisy; the deadlines only fail a
//! stalled run.

use std::time::{Duration, Instant};

use crate::common::{self, Setup, smtpd::SmtpServer};
use crate::site::Site;
use crate::tools::{keep_locked, never_answering_zone, silent_server, stop};

/// Far more than a delivery needs on a loaded machine, far less than an
/// unbounded attack stalls root's run (minutes to hours).
const VICTIM_LIMIT: Duration = Duration::from_secs(60);

/// Mallory's recipients that root's `mailq --json` shows attempted
/// (her own runners' work on the silent server aside).
fn mallorys_attempted(site: &Site) -> Vec<String> {
    let mut attempted = Vec::new();
    for m in site.mailq_json(None) {
        if m["sender"].as_str() != Some("mallory@example.org") {
            continue;
        }
        for r in m["recipients"].as_array().unwrap() {
            if r["address"]
                .as_str()
                .is_some_and(|a| a.ends_with("@stuck.test"))
            {
                continue;
            }
            if r["attempts"].as_u64().unwrap_or(0) > 0 || r["status"] != "queued" {
                attempted.push(format!("{} {}: {}", m["id"], r["address"], r["status"]));
            }
        }
    }
    attempted
}

#[test]
fn four_slow_attacks_at_once_leave_roots_run_delivering_everyone_elses_mail() {
    let dir = tempfile::tempdir().unwrap();
    let server = SmtpServer::start(dir.path(), &[]);
    let (stuck_port, stuck) = silent_server();
    let dns = never_answering_zone();
    // command_timeout bounds how long the silent server holds a
    // connection (5 minutes by default): shortened so that root's run
    // ends within the test; every other setting is the default.
    let Some(site) = Site::new(
        "call",
        Setup::smarthost(server.port)
            .route("hostile.test -> mx")
            .route_to_relay("stuck.test", stuck_port)
            .line(&format!(
                "resolver = {}\nmax_connections = 4\ncommand_timeout = 20s",
                dns.addr
            ))
            .text(),
    ) else {
        return;
    };
    let mallory = &site.mallory;
    let alice = &site.alice;

    // The locked mailbox: her mailbox stays locked for the whole test.
    let mailbox = site.mail_dir.join(&mallory.name);
    let mut locker = keep_locked(&site, mallory, &mailbox);

    // The include tree: her .forward includes a list that names itself
    // under five spellings (5^9 reads, nine levels deep, without the bounds), and
    // keeps a copy in her locked mailbox.
    let home = mallory.home.display().to_string();
    let spellings: Vec<String> = (0..5)
        .map(|n| format!(":include:{home}/{}inc", "./".repeat(n)))
        .collect();
    site.write_as(
        mallory,
        &mallory.home.join("inc"),
        &format!("{}\nfar@example.net\n", spellings.join(", ")),
        0o600,
    );
    site.write_as(
        mallory,
        &mallory.home.join(".forward"),
        &format!("\\{}, {}", mallory.name, spellings[0]),
        0o600,
    );
    let mallory_sends = |args: &[&str], subject: &str| {
        let mut argv = vec!["-f", "mallory@example.org"];
        argv.extend_from_slice(args);
        let out = site.run(
            Some(mallory),
            "sendmail",
            &argv,
            format!("Subject: {subject}\n\nx\n").as_bytes(),
        );
        common::assert_success(&out);
    };
    for _ in 0..8 {
        mallory_sends(
            &["-odq", &mallory.name],
            "to my locked box, via my include tree",
        );
    }
    // The silent zone: six messages to the zone that never answers.
    for _ in 0..6 {
        mallory_sends(&["-odq", "x@hostile.test"], "resolve me");
    }
    // The silent server: her own runners sit on the silent server.
    for _ in 0..4 {
        mallory_sends(&["x@stuck.test"], "stuck");
    }
    assert!(
        common::wait_for(Duration::from_secs(30), || !stuck
            .lock()
            .unwrap()
            .is_empty()),
        "mallory's runners never reached the silent server"
    );

    // Alice's two messages, queued for root's run.
    for (to, subject) in [("friend@example.org", "remote"), (&*alice.name, "local")] {
        let out = site.run(
            Some(alice),
            "sendmail",
            &["-odq", "-f", "alice@example.org", to],
            format!("Subject: {subject}\n\nhello alice\n").as_bytes(),
        );
        common::assert_success(&out);
    }

    let started = Instant::now();
    let mut root = site.spawn_quiet(None, "exec sendmail -q");
    let alices_box = site.mail_dir.join(&alice.name);
    let (mut remote, mut local) = (None, None);
    let all_arrived = common::wait_for(VICTIM_LIMIT, || {
        if remote.is_none()
            && server
                .recipients()
                .contains(&"friend@example.org".to_string())
        {
            remote = Some(started.elapsed());
        }
        if local.is_none()
            && std::fs::read_to_string(&alices_box).is_ok_and(|t| t.contains("hello alice"))
        {
            local = Some(started.elapsed());
        }
        remote.is_some() && local.is_some()
    });
    let run_on = root.try_wait().unwrap().is_none();
    // What root's run had finished of mallory's when alice's mail was
    // in: nothing, if her mail took only her share of the workers (the
    // others went to alice's at once); without that share, alice's
    // waited until workers came free of mallory's deferrals.
    let mallorys_done: Vec<String> = if all_arrived {
        mallorys_attempted(&site)
    } else {
        Vec::new()
    };
    assert!(
        all_arrived,
        "alice's mail under the four attacks: remote {remote:?}, local {local:?} \
         (limit {VICTIM_LIMIT:?})"
    );
    assert!(
        mallorys_done.is_empty(),
        "alice's mail waited for root's run to finish attempts of mallory's: {mallorys_done:?}"
    );
    // Every attack was still in place when alice's mail went.
    assert!(
        locker.try_wait().unwrap().is_none(),
        "mallory's lock was gone"
    );
    assert!(
        !stuck.lock().unwrap().is_empty(),
        "the silent server held nothing"
    );

    // Root's run itself ends: its waits are bounded (command_timeout on
    // the silent server, the resolution deadline, the lock wait).
    let ended = common::wait_for(Duration::from_secs(240), || {
        root.try_wait().unwrap().is_some()
    });
    let run_took = started.elapsed();
    if !ended {
        stop(root);
    }
    stop(locker);
    assert!(ended, "root's queue run did not end within 240 s");
    assert!(
        dns.queries()
            .iter()
            .any(|(n, _)| n.ends_with(".hostile.test")),
        "root's run never looked at mallory's zone"
    );
    eprintln!(
        "four slow attacks at once: alice's remote message after {:?}, her local one after {:?} \
         (root's run still going: {run_on}); root's -q took {run_took:?}",
        remote.unwrap(),
        local.unwrap()
    );
}
