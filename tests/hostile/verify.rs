//! `sendmail -bv` (issue 23) and what an ordinary user may learn from it:
//! never the inside of another user's `.forward`, nor of an alias
//! `:include:` they could not read — shown as deliverable to its user.
//! Root sees the whole expansion. Each test asks as Mallory and as root
//! and checks both: the secret must be absent for one and present for
//! the other (so the test fails when the walk is not shown at all).

use crate::common::{self, HOSTNAME};
use crate::site::Site;

/// `sendmail -bv ADDRESS` as `who` (None: root): (exit code, stdout).
fn verify(site: &Site, who: Option<&crate::site::Account>, address: &str) -> (i32, String) {
    let out = site.run(who, "sendmail", &["-bv", address], b"");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let code = out.status.code().unwrap_or(-1);
    assert!(
        out.stderr.is_empty() || code != 0,
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (code, stdout)
}

/// Alice forwards to a private address in a `.forward` anyone could
/// read (0644): Mallory's `-bv` says only that she is deliverable.
#[test]
fn another_users_forward_is_not_shown_to_an_ordinary_user() {
    let Some(site) = Site::new("bvfw", "") else {
        return;
    };
    let alice = site.alice.name.clone();
    site.write_as(
        &site.alice,
        &site.alice.home.join(".forward"),
        "fwdsecret0451@hidden.example\n",
        0o644,
    );
    let (code, seen) = verify(&site, Some(&site.mallory), &alice);
    assert_eq!(code, 0, "{seen}");
    assert!(
        !seen.contains("fwdsecret0451"),
        "alice's .forward leaked: {seen}"
    );
    assert_eq!(
        seen.trim_end(),
        format!("{alice}... deliverable: mailer local, user {alice}")
    );
    let (code, seen) = verify(&site, None, &format!("{alice}@{HOSTNAME}"));
    assert_eq!(code, 0, "{seen}");
    assert!(
        seen.contains(&format!(
            "{alice}... forwarded to fwdsecret0451@hidden.example"
        )),
        "root sees the whole expansion: {seen}"
    );
    assert!(seen.contains("fwdsecret0451@hidden.example... deliverable: mailer esmtp"));
    assert!(site.queue_ids().is_empty(), "-bv queued something");
}

/// Mallory's own `.forward` is his to see.
#[test]
fn ones_own_forward_is_shown_to_an_ordinary_user() {
    let Some(site) = Site::new("bvown", "") else {
        return;
    };
    let mallory = site.mallory.name.clone();
    site.write_as(
        &site.mallory,
        &site.mallory.home.join(".forward"),
        "mine0451@elsewhere.example\n",
        0o600,
    );
    let (code, seen) = verify(&site, Some(&site.mallory), &mallory);
    assert_eq!(code, 0, "{seen}");
    assert!(
        seen.contains(&format!(
            "{mallory}... forwarded to mine0451@elsewhere.example"
        )),
        "{seen}"
    );
}

/// An alias names an `:include:` file of Alice's that only she may read
/// (0600): Mallory's `-bv` of the alias shows the alias and that the list
/// is deliverable, nothing of what it holds; root's shows its members.
#[test]
fn an_alias_include_the_caller_cannot_read_is_not_shown() {
    let Some(site) = Site::new("bvinc", "") else {
        return;
    };
    let list = site.alice.home.join("private-list");
    site.write_as(&site.alice, &list, "incsecret0451@hidden.example\n", 0o600);
    std::fs::write(
        site.etc.join("aliases"),
        format!("postmaster: root\nlist: :include:{}\n", list.display()),
    )
    .unwrap();
    common::assert_success(&site.as_root("newaliases", &[], b""));
    let (code, seen) = verify(&site, Some(&site.mallory), "list");
    assert_eq!(code, 0, "{seen}");
    assert!(
        !seen.contains("incsecret0451"),
        "the include leaked: {seen}"
    );
    assert_eq!(
        seen.lines().collect::<Vec<_>>(),
        [
            format!("list... aliased to :include:{}", list.display()),
            format!(
                ":include:{}... deliverable: mailer local, user {}",
                list.display(),
                site.alice.name
            ),
        ]
    );
    let (code, seen) = verify(&site, None, "list");
    assert_eq!(code, 0, "{seen}");
    assert!(
        seen.contains(&format!(
            ":include:{}... includes incsecret0451@hidden.example",
            list.display()
        )),
        "root sees the whole expansion: {seen}"
    );
}
