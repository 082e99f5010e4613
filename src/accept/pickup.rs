//! Root's pickup: the maildrop's door into the queue (Postfix's pickup).
//!
//! A caller the queue is closed to (the setgid bit ignored under
//! `NoNewPrivileges`) writes its message as a drop (`spool::begin_drop`);
//! a queue run by root empties the maildrop ([`pickup_maildrop`]). The
//! spool lists the drops, opens and verifies each like any queue file
//! (framing, trailer, size) and clears away what is not a drop; this
//! door gathers a drop's envelope — trusting nothing it says about
//! itself that the kernel can say instead — and hands it to the
//! [`cleanup`](crate::accept::cleanup) step every door uses. So a drop
//! is held to `max_message_size` and `max_recipients`, its addresses are
//! checked again, its sender masqueraded, the brake applied, and it gets
//! the trace a direct submission gets — `Received: by HOST (spoolmail,
//! from userid UID)` with the uid of the file's owner, on top of
//! whatever the writer forged below it (sendmail adds none to a drop;
//! the pickup is its trace, as Postfix's pickup is).
//!
//! Where the pickup differs from a caller's door, it says so here: the
//! uid is the file's owner's, the arrival is clamped to the file's
//! ctime, a sender masquerading cannot rewrite is kept (its writer was
//! told 0 already), the data is kept as written (S3, S4), and past the
//! brake the message is held rather than refused.

use std::time::SystemTime;

use crate::accept::cleanup::{Cleanup, Content, Door, GivenSender, Handed, Refused};
use crate::address;
use crate::config::Config;
use crate::error::Result;
use crate::spool::{QueueId, Refusal, Spool};

/// How long before its file's ctime a drop's own arrival time may be:
/// the writer stamps it before reading stdin, and renames the file after.
const ARRIVAL_SLACK: u64 = 60;

/// Moves every complete drop into the queue and clears the maildrop of
/// junk (root only). Returns the IDs queued. A drop larger than
/// `max_message_size` or with more than `max_recipients` recipients is
/// refused and removed (a user must not grow root's files without
/// bound); one failing verification goes to corrupt/. See
/// [`Spool::empty_maildrop`] for what becomes of everything else.
pub fn pickup_maildrop(spool: &Spool, config: &Config, now: SystemTime) -> Result<Vec<QueueId>> {
    spool.empty_maildrop(config.tmp_max_age, now, |path, id| {
        pick_up(spool, path, id, config, now)
    })
}

/// Verifies one drop and commits it to the queue under its own ID.
/// Ok(None): it was queued by an earlier, interrupted pickup.
fn pick_up(
    spool: &Spool,
    path: &std::path::Path,
    id: &QueueId,
    config: &Config,
    now: SystemTime,
) -> std::result::Result<Option<QueueId>, Refusal> {
    let max_size = config.max_message_size;
    let drop = spool.open_drop(path)?;
    // The envelope of max_recipients recipients fits in the slack.
    if max_size > 0 && drop.len() > max_size.saturating_add(1 << 20) {
        return Err(Refusal::Remove(format!(
            "{} bytes: larger than max_message_size",
            drop.len()
        )));
    }
    // What the writer says about itself is not evidence: the file's
    // owner is, and so is its ctime.
    let (uid, written) = (drop.owner(), drop.changed());
    let (claimed, data) = spool.read_drop(id, drop)?;
    if max_size > 0 && claimed.size > max_size {
        return Err(Refusal::Remove(format!(
            "{} bytes of data: larger than max_message_size",
            claimed.size
        )));
    }
    if spool.is_queued(id) {
        return Ok(None);
    }
    let user = nix::unistd::User::from_uid(uid.into())
        .ok()
        .flatten()
        .map_or_else(|| format!("uid{uid}"), |u| u.name);
    let sender = match claimed.sender.is_empty() {
        true => None,
        false => address::parse_sender(&claimed.sender)
            .map_err(|e| Refusal::Quarantine(format!("sender: {}", e.message())))?,
    };
    // The same envelope rule as a direct submission, whoever wrote the
    // file (a caller with a -C config of its own writes drops too): the
    // sender counts as one the caller named with -f. What our own
    // sendmail masqueraded already stays as it is (the rewrite is
    // idempotent). A rewrite that cannot be made (too long for RFC 5321)
    // keeps the sender: the writer was told 0 already, and a message is
    // not thrown away for its sender's length.
    let given = || GivenSender {
        address: sender.clone(),
        text: claimed.sender.clone(),
        named: true,
    };
    let cleanup = Cleanup::new(config, given()).unwrap_or_else(|e| {
        log::warn!("{id}: sender kept as it is: {e}");
        Cleanup::unrewritten(config, given())
    });
    // The writer's arrival time is not evidence either: a forged old one
    // would expire at once and bounce. The file's ctime is the kernel's
    // (its rename into the maildrop, or a later change by its owner,
    // never earlier), so the arrival is kept only within a minute before
    // it and never in the future.
    let unix_now = crate::clock::unix_seconds(now);
    let arrival = match claimed.arrival {
        a if a.saturating_add(ARRIVAL_SLACK) < written || a > unix_now => written.min(unix_now),
        a => a,
    };
    let handed = Handed {
        uid,
        user,
        recipients: claimed.recipients,
        body_type: claimed.body_type,
        dsn_notify: claimed.dsn_notify,
        dsn_ret: claimed.dsn_ret,
        envid: claimed.envid,
        arrival,
    };
    let draft = spool.begin_pickup(id).map_err(Refusal::Io)?;
    let content = Content::AsWritten {
        data,
        size: claimed.size,
    };
    match cleanup.commit(Door::Pickup { spool }, draft, handed, content, now) {
        Ok(accepted) => Ok(Some(accepted.id)),
        Err(Refused::TooManyRecipients(count)) => Err(Refusal::Remove(format!(
            "{count} recipients: more than max_recipients ({})",
            config.max_recipients
        ))),
        Err(Refused::NoRecipients) => Err(Refusal::Quarantine("no recipients".into())),
        Err(Refused::Recipient(e)) => {
            Err(Refusal::Quarantine(format!("recipient: {}", e.message())))
        }
        Err(Refused::Envid(_)) => Err(Refusal::Quarantine(
            "envid: not 1 to 100 printable ASCII characters".into(),
        )),
        // A commit that failed because an earlier pickup got there first.
        Err(Refused::Other(_)) if spool.is_queued(id) => Ok(None),
        Err(Refused::Other(e)) => Err(Refusal::Io(e)),
    }
}

#[cfg(test)]
mod tests {
    //! Moved from spool/tests.rs with the pickup: the same tests.
    use super::*;
    use crate::spool::{Envelope, MAILDROP, MAILDROP_TMP, begin_drop};
    use std::fs;
    use std::io::{Read, Write};
    use std::path::Path;
    use std::time::Duration;

    /// A spool in a fresh temporary directory (kept alive by the guard).
    fn spool() -> (tempfile::TempDir, Spool) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("spool");
        (dir, Spool::open(&root).unwrap())
    }

    /// The sorted names in `dir`.
    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// A config for pickups: a fixed host name, defaults otherwise.
    fn pickup_config() -> Config {
        Config {
            hostname: "host.example".into(),
            ..Config::default()
        }
    }

    /// Writes a drop through the maildrop writer with `recipients` and
    /// `data`, claiming uid 4242 ("root"); returns its ID.
    fn drop_message(spool: &Spool, recipients: usize, data: &[u8]) -> QueueId {
        let mut draft = begin_drop(spool.root(), SystemTime::now()).unwrap();
        // The envelope a `sendmail -B 8BITMIME -V a-drop` would write.
        let env = Envelope {
            id: draft.id().clone(),
            recipients: (0..recipients)
                .map(|n| format!("user{n}@example.com"))
                .collect(),
            sender: "alice@example.org".into(),
            uid: 4242,
            user: "root".into(),
            arrival: 1_700_000_000,
            envid: Some("a-drop".into()),
            body_type: Some("8BITMIME".into()),
            dsn_notify: None,
            dsn_ret: None,
            size: 0,
            chain: Vec::new(),
        };
        draft.write_envelope(&env).unwrap();
        draft.data().write_all(data).unwrap();
        draft.commit().unwrap().id
    }

    const FORGED: &[u8] = b"Received: by host.example (spoolmail, from userid 4242)\n\tid X; now\n\
    From: root <root@host.example>\nSubject: urgent\n\nplease\n";

    /// Item 5: the pickup adds the trace of the file's owner on top, as a
    /// direct submission does, whatever the drop claims.
    #[test]
    fn pickup_adds_the_owner_uid_trace_and_a_repeat_is_a_no_op() {
        let (_dir, spool) = spool();
        let id = drop_message(&spool, 1, FORGED);
        let drop_path = spool.root().join(MAILDROP).join(id.as_str());
        let dropped = fs::read(&drop_path).unwrap();
        let config = pickup_config();
        assert_eq!(
            pickup_maildrop(&spool, &config, SystemTime::now()).unwrap(),
            vec![id.clone()]
        );
        let mut data = Vec::new();
        spool
            .open_data(&id)
            .unwrap()
            .read_to_end(&mut data)
            .unwrap();
        let me = nix::unistd::getuid().as_raw();
        let expected =
            format!("Received: by host.example (spoolmail, from userid {me})\n\tid {id}; ");
        assert!(
            data.starts_with(expected.as_bytes()),
            "{}",
            String::from_utf8_lossy(&data)
        );
        assert!(data.ends_with(FORGED), "the rest as written");
        let env = spool.read_envelope(&id).unwrap();
        assert_eq!(env.uid, me);
        assert_eq!(env.size, data.len() as u64);

        // The same drop again (a pickup cut short before removing it).
        fs::write(&drop_path, &dropped).unwrap();
        assert!(
            pickup_maildrop(&spool, &config, SystemTime::now())
                .unwrap()
                .is_empty()
        );
        let mut again = Vec::new();
        spool
            .open_data(&id)
            .unwrap()
            .read_to_end(&mut again)
            .unwrap();
        assert_eq!(again, data, "queued once, traced once");
        assert!(names(&spool.root().join(MAILDROP)).is_empty());
    }

    /// Item 7: a drop over the recipient or size limit is refused and
    /// removed: nothing of it stays in root's files.
    #[test]
    fn pickup_removes_drops_over_the_limits() {
        let (_dir, spool) = spool();
        let config = Config {
            max_recipients: 10,
            max_message_size: 100,
            ..pickup_config()
        };
        drop_message(&spool, 11, b"Subject: many\n\nx\n");
        drop_message(&spool, 1, &[b'x'; 101]);
        let fits = drop_message(&spool, 10, &[b'x'; 10]);
        assert_eq!(
            pickup_maildrop(&spool, &config, SystemTime::now()).unwrap(),
            vec![fits.clone()]
        );
        assert_eq!(names(&spool.root().join("queue")), vec![fits.to_string()]);
        assert!(names(&spool.root().join(MAILDROP)).is_empty());
        assert!(names(&spool.root().join("corrupt")).is_empty());
    }

    /// Item 11: whatever is not a drop leaves the maildrop, so it empties.
    #[test]
    fn pickup_clears_maildrop_junk() {
        let (_dir, spool) = spool();
        let drop_dir = spool.root().join(MAILDROP);
        let id = QueueId::generate(SystemTime::now());
        let outside = spool.root().join("outside");
        fs::write(&outside, "keep").unwrap();
        fs::create_dir(drop_dir.join("kick.d")).unwrap();
        fs::write(drop_dir.join("kick.d").join("f"), "x").unwrap();
        std::os::unix::fs::symlink(&outside, drop_dir.join("kick.d").join("link")).unwrap();
        fs::write(drop_dir.join(format!("kick.{id}")), "").unwrap();
        fs::write(drop_dir.join(".non-ID"), "x").unwrap();
        fs::write(drop_dir.join("not-an-id"), "x").unwrap();
        std::os::unix::fs::symlink(
            &outside,
            drop_dir.join(QueueId::generate(SystemTime::now()).as_str()),
        )
        .unwrap();
        fs::create_dir(drop_dir.join(QueueId::generate(SystemTime::now()).as_str())).unwrap();
        let dotted = drop_dir.join(format!(".{}", QueueId::generate(SystemTime::now())));
        fs::write(&dotted, "a partial outside maildrop-tmp/").unwrap();
        let tmp_dir = spool.root().join(MAILDROP_TMP);
        let partial = tmp_dir.join(QueueId::generate(SystemTime::now()).as_str());
        fs::write(&partial, "being written").unwrap();
        fs::write(tmp_dir.join("not-an-id"), "x").unwrap();

        let config = pickup_config();
        let now = SystemTime::now();
        assert!(pickup_maildrop(&spool, &config, now).unwrap().is_empty());
        assert!(
            names(&drop_dir).is_empty(),
            "the maildrop empties: {:?}",
            names(&drop_dir)
        );
        assert_eq!(
            names(&tmp_dir),
            vec![partial.file_name().unwrap().to_str().unwrap()],
            "only the drop being written stays"
        );
        assert_eq!(
            fs::read_to_string(&outside).unwrap(),
            "keep",
            "links not followed"
        );
        let later = now + config.tmp_max_age + Duration::from_secs(60);
        pickup_maildrop(&spool, &config, later).unwrap();
        assert!(names(&tmp_dir).is_empty(), "an abandoned partial goes too");
        assert!(names(&drop_dir).is_empty(), "an abandoned partial goes too");
        assert!(names(&spool.root().join("corrupt")).is_empty());
    }
}
