//! Whose queued mail a caller sees and acts on (issue 22): one rule for
//! `mailq` (text, `--json`, `--summary`), `sendmail -q` and the admin
//! actions. Root and members of the spool's group (`mail`) have every
//! message; an ordinary user only the messages with their uid. The
//! binary is setgid `mail`, so every caller's *effective* gid is `mail`:
//! only the real gid and the supplementary groups may count.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::{self, smtpd::SmtpServer};
use crate::site::{Account, Site};

/// Adds `who` to the `mail` group as a supplementary group (what
/// `setpriv --init-groups` gives their next command), again while
/// another process holds the lock on /etc/group.
fn join_mail_group(who: &Account) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = Command::new("usermod")
            .args(["-a", "-G", "mail", &who.name])
            .output()
            .expect("running usermod");
        let err = String::from_utf8_lossy(&out.stderr);
        if out.status.success() {
            return;
        }
        let locked = err.contains("cannot lock") || err.contains("try again later");
        assert!(
            locked && Instant::now() < deadline,
            "usermod -aG mail {}: {err}",
            who.name
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Queues a message from `who` (None: root) to `rcpts` and returns its ID.
fn queue(site: &Site, who: Option<&Account>, rcpts: &[&str]) -> String {
    let before = site.queue_ids();
    let mut args = vec!["-odq"];
    args.extend_from_slice(rcpts);
    common::assert_success(&site.run(who, "sendmail", &args, b"Subject: scope\n\nx\n"));
    let new: Vec<String> = site
        .queue_ids()
        .into_iter()
        .filter(|id| !before.contains(id))
        .collect();
    assert_eq!(new.len(), 1, "{new:?}");
    new[0].clone()
}

/// The IDs `who`'s `mailq` (text) lists, of `ids`.
fn listed_text(site: &Site, who: Option<&Account>, ids: &[&String]) -> Vec<String> {
    let out = site.run(who, "mailq", &[], b"");
    common::assert_success(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    ids.iter()
        .filter(|id| text.contains(id.as_str()))
        .map(|id| id.to_string())
        .collect()
}

/// The IDs `who`'s `mailq --json` lists, sorted.
fn listed_json(site: &Site, who: Option<&Account>) -> Vec<String> {
    let mut ids: Vec<String> = site
        .mailq_json(who)
        .iter()
        .map(|m| m["id"].as_str().expect("an id").to_string())
        .collect();
    ids.sort();
    ids
}

/// `who`'s `mailq --summary --json`: (recipients in total, domains,
/// uids of the submitters listed).
fn summary(site: &Site, who: Option<&Account>) -> (u64, Vec<String>, Vec<u64>) {
    let out = site.run(who, "mailq", &["--summary", "--json"], b"");
    common::assert_success(&out);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("summary JSON");
    let total = json["total"]["total"].as_u64().expect("a total");
    let domains = json["domains"]
        .as_object()
        .expect("domains")
        .keys()
        .cloned()
        .collect();
    let mut uids: Vec<u64> = json["submitted_this_hour"]
        .as_array()
        .expect("submitters")
        .iter()
        .map(|s| s["uid"].as_u64().expect("a uid"))
        .collect();
    uids.sort();
    (total, domains, uids)
}

/// `mailq`, `mailq --json` and `mailq --summary`: Alice sees only her
/// message, Mallory only his — until he joins the `mail` group, when he
/// sees both, as root does.
#[test]
fn mailq_shows_an_ordinary_user_their_own_and_the_mail_group_everything() {
    // A rate limit, so that the summary lists this hour's submitters.
    let Some(site) = Site::new("scopemq", "max_messages_per_hour = 100") else {
        return;
    };
    let (alice, mallory) = (&site.alice, &site.mallory);
    let a = queue(&site, Some(alice), &["one@a.test"]);
    let m = queue(&site, Some(mallory), &["two@m.test", "three@m.test"]);
    let mut both = vec![a.clone(), m.clone()];
    both.sort();
    let ids = [&a, &m];
    let (alice_uid, mallory_uid) = (u64::from(alice.uid), u64::from(mallory.uid));
    let mut both_uids = vec![alice_uid, mallory_uid];
    both_uids.sort();

    assert_eq!(listed_text(&site, Some(alice), &ids), [a.as_str()]);
    assert_eq!(listed_json(&site, Some(alice)), [a.as_str()]);
    assert_eq!(
        summary(&site, Some(alice)),
        (1, vec!["a.test".to_string()], vec![alice_uid])
    );
    assert_eq!(listed_text(&site, Some(mallory), &ids), [m.as_str()]);
    assert_eq!(listed_json(&site, Some(mallory)), [m.as_str()]);
    assert_eq!(
        summary(&site, Some(mallory)),
        (2, vec!["m.test".to_string()], vec![mallory_uid])
    );

    let everything = (
        3,
        vec!["a.test".to_string(), "m.test".to_string()],
        both_uids.clone(),
    );
    assert_eq!(listed_text(&site, None, &ids), both);
    assert_eq!(listed_json(&site, None), both);
    assert_eq!(summary(&site, None), everything);

    join_mail_group(mallory);
    assert_eq!(
        listed_text(&site, Some(mallory), &ids),
        both,
        "a member of the mail group sees every message in mailq"
    );
    assert_eq!(listed_json(&site, Some(mallory)), both);
    assert_eq!(summary(&site, Some(mallory)), everything);
    // Alice is still an ordinary user.
    assert_eq!(listed_json(&site, Some(alice)), [a.as_str()]);
}

/// Whether root's `mailq --json` shows the message `id` on hold.
fn held(site: &Site, id: &str) -> bool {
    site.mailq_json(None)
        .iter()
        .find(|m| m["id"] == id)
        .unwrap_or_else(|| panic!("{id} is no longer queued"))["held"]
        .as_bool()
        .expect("a held flag")
}

/// The admin actions: Alice's `--hold ALL` holds only her message and
/// naming Mallory's is refused (77); a member of the `mail` group, and
/// root, act on anybody's.
#[test]
fn admin_actions_reach_an_ordinary_users_own_and_the_mail_groups_every_message() {
    let Some(site) = Site::new("scopeadm", "") else {
        return;
    };
    let (alice, mallory) = (&site.alice, &site.mallory);
    let a = queue(&site, Some(alice), &["one@a.test"]);
    let m = queue(&site, Some(mallory), &["two@m.test"]);
    let r = queue(&site, None, &["three@r.test"]);

    common::assert_success(&site.run(Some(alice), "mailq", &["--hold", "ALL"], b""));
    assert!(held(&site, &a), "alice held her own message");
    assert!(
        !held(&site, &m) && !held(&site, &r),
        "alice's ALL is her own"
    );
    let refused = site.run(Some(alice), "mailq", &["--hold", &m], b"");
    assert_eq!(refused.status.code(), Some(77), "{refused:?}");
    assert!(!held(&site, &m), "alice held mallory's message");

    join_mail_group(mallory);
    common::assert_success(&site.run(Some(mallory), "mailq", &["--hold", &a, &r], b""));
    assert!(
        held(&site, &r),
        "a member of the mail group holds root's message"
    );
    common::assert_success(&site.run(Some(mallory), "mailq", &["--release", "ALL"], b""));
    assert!(
        !held(&site, &a) && !held(&site, &r),
        "a member of the mail group's ALL is every message"
    );

    common::assert_success(&site.as_root("mailq", &["--hold", &a, &m], b""));
    assert!(held(&site, &a) && held(&site, &m), "root holds anybody's");
}

/// `sendmail -q`: Alice's run delivers only her message; a member of the
/// `mail` group's run delivers everybody's; so does root's.
#[test]
fn queue_runs_take_an_ordinary_users_own_and_the_mail_groups_every_message() {
    let Some(site) = Site::new("scopeq", "") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = SmtpServer::start(dir.path(), &[]);
    site.set_config(&format!(
        "smarthost = 127.0.0.1:{}\nsmarthost_tls = none",
        server.port
    ));
    let (alice, mallory) = (&site.alice, &site.mallory);
    let a = queue(&site, Some(alice), &["one@a.test"]);
    let m = queue(&site, Some(mallory), &["two@m.test"]);
    let r = queue(&site, None, &["three@r.test"]);

    common::assert_success(&site.run(Some(alice), "sendmail", &["-q"], b""));
    let mut left = vec![m.clone(), r.clone()];
    left.sort();
    assert!(!left.contains(&a));
    assert_eq!(site.queue_ids(), left, "alice's run took only her message");
    server.wait_messages(1, Duration::from_secs(30));
    assert_eq!(server.recipients(), ["one@a.test"]);

    join_mail_group(mallory);
    common::assert_success(&site.run(Some(mallory), "sendmail", &["-q"], b""));
    assert!(
        site.queue_ids().is_empty(),
        "a member of the mail group's run takes every message: {:?}",
        site.queue_ids()
    );
    server.wait_messages(3, Duration::from_secs(30));
    assert_eq!(
        server.recipients(),
        ["one@a.test", "three@r.test", "two@m.test"]
    );

    let a2 = queue(&site, Some(alice), &["four@a.test"]);
    common::assert_success(&site.as_root("sendmail", &["-q"], b""));
    assert!(
        !site.queue_ids().contains(&a2),
        "root's run takes anybody's message"
    );
    assert_eq!(server.wait_messages(4, Duration::from_secs(30)).len(), 4);
}
