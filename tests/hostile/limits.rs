//! Resource limits against the brakes and the sweeps (issue 20):
//! what a process short of descriptors must still do —
//! refuse a message it cannot count, remove a tree it cannot hold open.

use crate::common;
use crate::site::{Account, Site, names};

/// A user over `max_recipients_per_hour` must not get a message
/// through by running sendmail with so few descriptors (`ulimit -n 5`:
/// the standard three, the draft and the messages counter) that the
/// recipients counter cannot be opened: a limit that is set and cannot
/// be checked refuses (75), it does not wave the message through.
#[test]
fn a_sender_with_too_few_descriptors_to_check_the_hourly_limit_is_refused() {
    let limits = "max_messages_per_hour = 100\nmax_recipients_per_hour = 2";
    let Some(site) = Site::new("lbrake", limits) else {
        return;
    };
    let out = site.run(
        Some(&site.mallory),
        "sendmail",
        &["-odq", "a@example.org", "b@example.org"],
        b"Subject: first\n\nat the limit\n",
    );
    common::assert_success(&out);
    assert_eq!(site.queue_ids().len(), 1);
    let out = starved(&site, &site.mallory, "c@example.org");
    common::assert_exit(&out, 75);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("_per_hour"), "{said}");
    assert_eq!(site.queue_ids().len(), 1, "nothing more was queued");
    // Alice has sent nothing this hour, but her counter cannot be read
    // either: refused too, never counted as nothing.
    let out = starved(&site, &site.alice, "d@example.org");
    common::assert_exit(&out, 75);
    assert_eq!(site.queue_ids().len(), 1);
}

/// `sendmail -odq RECIPIENT` as `who`, with 5 descriptors at most.
fn starved(site: &Site, who: &Account, recipient: &str) -> std::process::Output {
    common::run_with_stdin(
        &mut site.shell(
            Some(who),
            &format!("ulimit -n 5 && exec sendmail -odq {recipient}"),
        ),
        b"Subject: more\n\ncounted or refused\n",
    )
}

/// A directory tree deeper than root's run has descriptors
/// (1,500 levels under systemd's default `LimitNOFILE` of 1024) left in
/// the maildrop by a user is removed all the same, without following the
/// links in it: otherwise the maildrop never empties and the path unit
/// that watches it fires for ever.
#[test]
fn a_maildrop_tree_deeper_than_roots_descriptors_is_removed_without_following_links() {
    let Some(site) = Site::new("ldeep", "") else {
        return;
    };
    let victim = site.base.join("root-only");
    site.write_root(&victim, "root's own\n", 0, 0o644);
    let deep = "d/".repeat(1500);
    let script = format!(
        "cd {maildrop} && mkdir -p {deep} && touch {deep}f && ln -s {victim} {deep}l && \
         mkdir -p wide/a/b wide/c && touch wide/a/b/f wide/c/f",
        maildrop = site.spool.join("maildrop").display(),
        victim = victim.display()
    );
    common::assert_success(&site.sh(Some(&site.mallory), &script));
    let out = site.sh(None, "ulimit -n 1024 && exec sendmail -qInomatch");
    common::assert_success(&out);
    assert!(
        names(&site.spool.join("maildrop")).is_empty(),
        "left in the maildrop: {:?}",
        names(&site.spool.join("maildrop"))
    );
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "root's own\n");
}
