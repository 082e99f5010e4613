//! The spool against its own users (issue 15): what
//! a drop may claim, how many recipients and bytes a user may make root
//! carry, and what is left lying in the maildrop and corrupt/.

use std::fs;
use std::time::SystemTime;

use spoolmail::spool::QueueId;

use crate::common::{self, HOSTNAME};
use crate::site::{Account, Site, names};

/// A queue file in the spool's format (as `sendmail` writes it into the
/// maildrop), claiming to come from root, for `recipients`, with `data`.
fn forged_drop(id: &QueueId, recipients: &[String], data: &[u8]) -> Vec<u8> {
    let mut file = format!(
        "SPOOLMAIL-QUEUE 1\nid {id}\narrival 1700000000\nsender root@{HOSTNAME}\nuid 0\nuser root\n"
    )
    .into_bytes();
    for r in recipients {
        file.extend_from_slice(format!("rcpt {r}\n").as_bytes());
    }
    file.push(b'\n');
    file.extend_from_slice(data);
    file.extend_from_slice(format!("\n.END {:020}\n", data.len()).as_bytes());
    file
}

/// Writes `bytes` to `maildrop/NAME` as `who`, as an attacker can.
fn drop_as(site: &Site, who: &Account, name: &str, bytes: &[u8]) {
    let path = site.spool.join("maildrop").join(name);
    let script = format!(
        "cat > {}",
        crate::site::shell_quote(&path.to_string_lossy())
    );
    common::assert_success(&common::run_with_stdin(
        &mut site.shell(Some(who), &script),
        bytes,
    ));
}

/// Root's queue run, limited to the pickup and the sweeps: the filter
/// matches no queue ID, so nothing is delivered.
fn root_pickup(site: &Site) {
    common::assert_success(&site.as_root("sendmail", &["-qInomatch"], b""));
}

/// The message data of `queue/ID`: after the envelope block, before the
/// end marker ("\n.END " and 20 digits and "\n").
fn queued_data(site: &Site, id: &str) -> String {
    let bytes = fs::read(site.spool.join("queue").join(id)).unwrap();
    let (_, data) = common::split_message(&bytes);
    String::from_utf8_lossy(&data[..data.len() - 27]).into_owned()
}

#[test]
fn a_forged_maildrop_trace_gets_the_real_owners_uid_on_top() {
    let Some(site) = Site::new("sp05", "") else {
        return;
    };
    let id = QueueId::generate(SystemTime::now());
    let forged = format!(
        "Received: by {HOSTNAME} (spoolmail, from userid 0)\n\tid {id}; Mon, 1 Jan 2024 00:00:00 +0000\n\
         From: root <root@{HOSTNAME}>\nSubject: password reset\n\nsend me your password\n"
    );
    let drop = forged_drop(
        &id,
        &[format!("{}@{HOSTNAME}", site.alice.name)],
        forged.as_bytes(),
    );
    drop_as(&site, &site.mallory, id.as_str(), &drop);
    root_pickup(&site);
    assert_eq!(site.queue_ids(), [id.to_string()], "queued under its ID");
    let data = queued_data(&site, id.as_str());
    // The host named is the configured one once the queue run hands the
    // pickup its configuration (src/spool's tests check it); the uid is
    // what must hold.
    let top = data.lines().next().unwrap_or_default();
    assert!(
        top.starts_with("Received: by ")
            && top.ends_with(&format!(" (spoolmail, from userid {})", site.mallory.uid)),
        "{data}"
    );
    assert!(data.ends_with(&forged), "the drop below the trace: {data}");

    // The same drop once more (as after a pickup cut short): no second
    // copy, no second trace.
    drop_as(&site, &site.mallory, id.as_str(), &drop);
    root_pickup(&site);
    assert_eq!(site.queue_ids(), [id.to_string()]);
    assert_eq!(queued_data(&site, id.as_str()), data);
    assert!(names(&site.spool.join("maildrop")).is_empty());
}

#[test]
fn more_recipients_than_max_recipients_are_refused_at_submission() {
    let Some(site) = Site::new("sp07a", "") else {
        return;
    };
    let many: Vec<String> = (0..1001).map(|n| format!("u{n}@example.org")).collect();
    let message = format!("To: {}\nSubject: spam\n\nx\n", many.join(",\n "));
    let out = site.run(
        Some(&site.mallory),
        "sendmail",
        &["-odq", "-t"],
        message.as_bytes(),
    );
    common::assert_exit(&out, 65);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("max_recipients"), "{stderr}");
    assert!(site.queue_ids().is_empty());

    // The command line, refused before stdin is read.
    site.set_config("max_recipients = 3");
    let args = [
        "-odq",
        "a@example.org",
        "b@example.org",
        "c@example.org",
        "d@example.org",
    ];
    let out = site.run(Some(&site.mallory), "sendmail", &args, b"x\n");
    common::assert_exit(&out, 65);
    assert!(site.queue_ids().is_empty());
    let out = site.run(Some(&site.mallory), "sendmail", &args[..4], b"x\n");
    common::assert_success(&out);
    assert_eq!(site.queue_ids().len(), 1);
}

#[test]
fn a_maildrop_file_over_the_limits_is_refused_at_pickup() {
    let Some(site) = Site::new("sp07b", "max_message_size = 64k") else {
        return;
    };
    let many: Vec<String> = (0..1001).map(|n| format!("u{n}@example.org")).collect();
    let crowded = QueueId::generate(SystemTime::now());
    drop_as(
        &site,
        &site.mallory,
        crowded.as_str(),
        &forged_drop(&crowded, &many, b"Subject: x\n\nx\n"),
    );
    let big = QueueId::generate(SystemTime::now());
    drop_as(
        &site,
        &site.mallory,
        big.as_str(),
        &forged_drop(&big, &many[..1], &vec![b'x'; 65 * 1024]),
    );
    root_pickup(&site);
    assert!(site.queue_ids().is_empty(), "{:?}", site.queue_ids());
    assert!(names(&site.spool.join("maildrop")).is_empty());
    assert!(
        names(&site.spool.join("corrupt")).is_empty(),
        "nothing of it kept in root's files"
    );
}

#[test]
fn an_oversized_state_file_never_moves_the_message_to_corrupt() {
    let Some(site) = Site::new("sp07c", "") else {
        return;
    };
    let out = site.run(
        Some(&site.alice),
        "sendmail",
        &["-odq", "someone@example.org"],
        b"Subject: hi\n\nbody\n",
    );
    common::assert_success(&out);
    let ids = site.queue_ids();
    assert_eq!(ids.len(), 1);
    // What the reader once refused: a state over its old 16 MiB limit.
    let state = site.spool.join("state").join(&ids[0]);
    fs::write(&state, vec![b'{'; 17 << 20]).unwrap();
    for who in [Some(&site.alice), None] {
        let listed = site.run(who, "mailq", &[], b"");
        common::assert_success(&listed);
        assert!(String::from_utf8_lossy(&listed.stdout).contains(&ids[0]));
    }
    assert_eq!(site.queue_ids(), ids);
    assert!(names(&site.spool.join("corrupt")).is_empty());
    assert!(state.exists());
    // State unknown: the next run delivers it, once.
    let dir = tempfile::tempdir().unwrap();
    let server = crate::common::smtpd::SmtpServer::start(dir.path(), &[]);
    site.set_config(common::Setup::smarthost(server.port).text());
    common::assert_success(&site.as_root("sendmail", &["-q"], b""));
    assert_eq!(server.messages().len(), 1);
    assert!(site.queue_ids().is_empty());
}

#[test]
fn junk_in_the_maildrop_is_removed_by_roots_pickup() {
    let Some(site) = Site::new("sp11a", "") else {
        return;
    };
    let id = QueueId::generate(SystemTime::now());
    let other = QueueId::generate(SystemTime::now());
    let partial = QueueId::generate(SystemTime::now());
    // A fresh `.ID` would be "still being written" were partial files
    // kept here: it must not keep the directory (and the path unit) busy.
    // The symlinks point at a root-owned file of this test's own (not at
    // /etc/passwd, which the other tests' useradd and userdel change
    // while this one runs).
    let victim = site.base.join("root-only");
    site.write_root(&victim, "root's own\n", 0, 0o644);
    let script = format!(
        "cd {} && mkdir kick.dir && touch kick.dir/f && ln -s {victim} kick.dir/l && \
         touch .non-ID not-an-ID kick.{id} .{partial} && ln -s {victim} {id} && mkfifo {other}",
        site.spool.join("maildrop").display(),
        victim = victim.display()
    );
    common::assert_success(&site.sh(Some(&site.mallory), &script));
    root_pickup(&site);
    assert!(
        names(&site.spool.join("maildrop")).is_empty(),
        "{:?}",
        names(&site.spool.join("maildrop"))
    );
    assert!(names(&site.spool.join("corrupt")).is_empty());
    assert_eq!(fs::read_to_string(&victim).unwrap(), "root's own\n");
    assert!(victim.exists(), "the symlinks' target is untouched");
}

#[test]
fn a_flood_of_garbage_drops_keeps_corrupt_within_its_file_cap() {
    let Some(site) = Site::new("sp11b", "") else {
        return;
    };
    // The default cap is 1000 files; a flood of garbage drops past it.
    let mut script = format!("cd {} && ", site.spool.join("maildrop").display());
    for _ in 0..1010 {
        let id = QueueId::generate(SystemTime::now());
        script.push_str(&format!("echo garbage > {id} && "));
    }
    script.push_str("true");
    common::assert_success(&site.sh(Some(&site.mallory), &script));
    root_pickup(&site);
    let kept = names(&site.spool.join("corrupt"));
    assert!(kept.len() <= 1000, "{} files in corrupt/", kept.len());
    assert!(names(&site.spool.join("maildrop")).is_empty());
}
