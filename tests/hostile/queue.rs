//! Whose mail a queue run touches, and who can hold the slots and claims
//! everyone needs (issue 15).

use std::time::{Duration, Instant};

use crate::common::{self, Setup, smtpd::SmtpServer};
use crate::site::Site;

/// The fixture itself: an ordinary user queues through the setgid
/// binary at the default configuration path, and the queue file is the
/// spool group's, not the user's.
#[test]
fn site_queues_mail_from_an_ordinary_user() {
    let Some(site) = Site::new("smoke", "") else {
        return;
    };
    let out = site.run(
        Some(&site.alice),
        "sendmail",
        &["-odq", "-t", "-i"],
        b"To: someone@example.org\nSubject: hi\n\nbody\n",
    );
    common::assert_success(&out);
    let ids = site.queue_ids();
    assert_eq!(ids.len(), 1, "{ids:?}");
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(site.spool.join("queue").join(&ids[0])).unwrap();
    assert_eq!(
        meta.gid(),
        nix::unistd::Group::from_name("mail")
            .unwrap()
            .unwrap()
            .gid
            .as_raw()
    );
    let listed = site.run(Some(&site.alice), "mailq", &[], b"");
    common::assert_success(&listed);
    assert!(String::from_utf8_lossy(&listed.stdout).contains(&ids[0]));
    let hidden = site.run(Some(&site.mallory), "mailq", &[], b"");
    assert!(!String::from_utf8_lossy(&hidden.stdout).contains(&ids[0]));
}

/// Mallory's `sendmail -q` — plain, verbose, and forced with every
/// selector — must neither deliver, claim, print nor force Alice's
/// mail; root's run then delivers it, and the bounce it makes for her
/// is hers (her uid), not the runner's.
#[test]
fn a_users_queue_run_cannot_deliver_claim_show_or_force_anyone_elses_mail() {
    let Some(site) = Site::new("qrun", "") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = SmtpServer::start(
        dir.path(),
        &[
            "--rcpt-reply",
            "nobody@example.org=550 5.1.1 no such user",
            "--rcpt-reply",
            "alice@example.org=451 4.3.0 try later",
        ],
    );
    site.set_config(Setup::smarthost(server.port).line("retry_min = 1s").text());
    let out = site.run(
        Some(&site.alice),
        "sendmail",
        &[
            "-odq",
            "-f",
            "alice@example.org",
            "friend@example.org",
            "nobody@example.org",
        ],
        b"Subject: private\n\nfor friend's eyes\n",
    );
    common::assert_success(&out);
    let ids = site.queue_ids();
    assert_eq!(ids.len(), 1);
    let id = ids[0].clone();
    for args in [
        vec!["-q"],
        vec!["-q", "-v"],
        vec!["-qRexample.org", "-v"],
        vec!["-qSalice", "-v"],
        vec!["-v", &format!("-qI{id}")],
    ] {
        let out = site.run(Some(&site.mallory), "sendmail", &args, b"");
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !said.contains(&id) && !said.contains("friend@"),
            "mallory's {args:?} showed alice's mail: {said}"
        );
    }
    assert_eq!(
        server.connections(),
        0,
        "mallory's runs connected for alice"
    );
    assert!(
        !site.spool.join("state").join(&id).exists(),
        "mallory's runs attempted alice's message"
    );
    // Root's run delivers it; the failure notice for nobody@ is Alice's.
    common::assert_success(&site.as_root("sendmail", &["-q"], b""));
    assert_eq!(
        server
            .wait_messages(1, std::time::Duration::from_secs(30))
            .len(),
        1
    );
    let hers = site.mailq_json(Some(&site.alice));
    // mailq shows an ordinary user only the messages with their uid.
    assert!(
        hers.iter().any(|m| m["sender"] == ""),
        "alice's mailq shows her bounce: {hers:?}"
    );
    let his = site.mailq_json(Some(&site.mallory));
    assert!(his.is_empty(), "mallory sees: {his:?}");
}

/// Mallory's `.forward` runs `sleep 30` and he queues ten messages to
/// himself, then runs the queue in the background: his runners may stall
/// his own mail, not anybody else's. Alice's `-odi` must go through at
/// once and root's queue run must deliver her queued mail meanwhile.
#[test]
fn a_forward_that_never_ends_stalls_only_its_owners_runners() {
    let Some(site) = Site::new("slots", "") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = SmtpServer::start(dir.path(), &[]);
    site.set_config(
        Setup::smarthost(server.port)
            .line("max_connections = 3")
            .text(),
    );
    let forward = site.mallory.home.join(".forward");
    site.write_as(&site.mallory, &forward, "\"|exec sleep 30\"\n", 0o600);
    for _ in 0..10 {
        let out = site.run(
            Some(&site.mallory),
            "sendmail",
            &["-odq", &site.mallory.name],
            b"Subject: stall\n\nx\n",
        );
        common::assert_success(&out);
    }
    let mut stall = site
        .shell(Some(&site.mallory), "exec sendmail -q")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let sleeping = || {
        std::process::Command::new("pgrep")
            .args(["-U", &site.mallory.uid.to_string(), "-x", "sleep"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    assert!(
        common::wait_for(Duration::from_secs(30), sleeping),
        "mallory's runners never reached their commands"
    );
    // Alice's queued message, for root's run.
    let out = site.run(
        Some(&site.alice),
        "sendmail",
        &["-odq", "queued@example.org"],
        b"Subject: queued\n\nq\n",
    );
    common::assert_success(&out);
    let started = Instant::now();
    let out = site.run(
        Some(&site.alice),
        "sendmail",
        &["-odi", "now@example.org"],
        b"Subject: now\n\nn\n",
    );
    let took = started.elapsed();
    common::assert_success(&out);
    let mut root = site
        .shell(None, "exec sendmail -q")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Both of Alice's messages arrive while Mallory's commands still run
    // (each sleeps 30 s).
    let got = server.wait_messages(2, Duration::from_secs(20));
    let still_stalled = sleeping();
    let elapsed = started.elapsed();
    let _ = stall.kill();
    let _ = stall.wait();
    let _ = root.wait();
    let to: Vec<String> = got.iter().flat_map(|m| m.rcpt_tos.clone()).collect();
    assert!(
        to.contains(&"now@example.org".to_string())
            && to.contains(&"queued@example.org".to_string()),
        "delivered while mallory stalled: {to:?}"
    );
    assert!(
        still_stalled && took < Duration::from_secs(20) && elapsed < Duration::from_secs(25),
        "alice's -odi took {took:?}, both arrived after {elapsed:?}, mallory's commands ran: {still_stalled}"
    );
}

/// Issue 14: an ordinary user's `mailq --delete/--hold/--release` acts
/// on their own messages only; another user's stays as it was.
#[test]
fn a_users_delete_hold_and_release_touch_only_their_own_mail() {
    let Some(site) = Site::new("qadm", "") else {
        return;
    };
    site.set_config(Setup::smarthost(9).text());
    for who in [&site.alice, &site.mallory] {
        let out = site.run(
            Some(who),
            "sendmail",
            &["-odq", "someone@example.org"],
            b"Subject: mine\n\nmine\n",
        );
        common::assert_success(&out);
    }
    let ids = site.queue_ids();
    assert_eq!(ids.len(), 2);
    let owner = |id: &str| {
        std::os::unix::fs::MetadataExt::uid(
            &std::fs::metadata(site.spool.join("queue").join(id)).unwrap(),
        )
    };
    let alices = ids
        .iter()
        .find(|id| owner(id) == site.alice.uid)
        .expect("alice's message")
        .as_str();
    for action in ["--hold", "--delete"] {
        let out = site.run(Some(&site.mallory), "mailq", &[action, alices], b"");
        assert_eq!(out.status.code(), Some(77), "{action}: {out:?}");
    }
    // No oracle: a selector on alice's message answers the same whether
    // her recipients match it or not.
    let probe = |pattern: &str| {
        let out = site.run(
            Some(&site.mallory),
            "mailq",
            &["--hold", "--recipient", pattern, alices],
            b"",
        );
        (out.status.code(), out.stdout)
    };
    let (matching, not_matching) = (probe("someone@"), probe("nobody-at-all"));
    assert_eq!(matching.0, Some(77));
    assert_eq!(matching, not_matching, "whom alice writes to shows");
    // ALL is mallory's own mail: not a word about alice's.
    let out = site.run(Some(&site.mallory), "mailq", &["--delete", "ALL"], b"");
    common::assert_success(&out);
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains(alices),
        "{out:?}"
    );
    assert_eq!(
        site.queue_ids(),
        vec![alices.to_string()],
        "only mallory's went"
    );
    let state = site.spool.join("state").join(alices);
    assert!(
        std::fs::read_to_string(&state).map_or(true, |s| !s.contains("\"held\"")),
        "alice's message was not held"
    );
    let out = site.run(Some(&site.alice), "mailq", &["--hold", alices], b"");
    common::assert_success(&out);
    assert!(
        std::fs::read_to_string(&state)
            .unwrap()
            .contains("\"held\":true")
    );
}

/// Issue 14, the brake: a user's submissions stop at
/// `max_messages_per_hour` with exit 75 and nothing queued; an exempt
/// user is not counted; a new hour accepts again; root's
/// `mailq --summary` shows the count.
#[test]
fn a_runaway_sender_stops_at_the_hourly_limit() {
    let Some(site) = Site::new("rate", "") else {
        return;
    };
    site.set_config(
        Setup::smarthost(9)
            .line(&format!(
                "max_messages_per_hour = 3\nrate_limit_exempt = {}",
                site.alice.name
            ))
            .text(),
    );
    let send = |who| {
        site.run(
            Some(who),
            "sendmail",
            &["-odq", "someone@example.org"],
            b"Subject: again\n\nand again\n",
        )
    };
    for _ in 0..3 {
        common::assert_success(&send(&site.mallory));
    }
    let refused = send(&site.mallory);
    assert_eq!(refused.status.code(), Some(75), "{refused:?}");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("max_messages_per_hour"), "{stderr}");
    assert_eq!(
        site.queue_ids().len(),
        3,
        "nothing queued for the refused one"
    );
    for _ in 0..4 {
        common::assert_success(&send(&site.alice));
    }
    let summary = site.as_root("mailq", &["--summary"], b"");
    let text = String::from_utf8_lossy(&summary.stdout);
    assert!(
        text.contains(&format!(
            "submitted this hour by {} (uid {}): 3 message(s)",
            site.mallory.name, site.mallory.uid
        )),
        "{text}"
    );
    assert!(!text.contains(&site.alice.name), "exempt: {text}");
    // A new hour: the counters of this one are an hour old.
    let hosts = site.spool.join("hosts");
    for entry in std::fs::read_dir(&hosts).unwrap().flatten() {
        let name = entry.file_name().into_string().unwrap();
        if let Some(rest) = name.strip_prefix(&format!("rate-u{}-", site.mallory.uid)) {
            let (hour, what) = rest.split_once('.').unwrap();
            let earlier = hour.parse::<u64>().unwrap() - 1;
            let to = hosts.join(format!("rate-u{}-{earlier}.{what}", site.mallory.uid));
            std::fs::rename(entry.path(), to).unwrap();
        }
    }
    common::assert_success(&send(&site.mallory));
}
