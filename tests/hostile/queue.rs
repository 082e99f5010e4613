//! Whose mail a queue run touches, and who can hold the slots and claims
//! everyone needs (issue 15, items 2 and 3).

use crate::common;
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
