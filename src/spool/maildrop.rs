//! The maildrop: how a caller without the spool group's rights still
//! hands over a message safely — PHP-FPM and other services running with
//! systemd's `NoNewPrivileges=yes`, where the setgid bit is ignored.
//!
//! `maildrop/` (mode 1733: anyone may create files, nobody but root may
//! list it, the sticky bit keeps users off each other's files) receives
//! the same queue-file format as `queue/`, written in `maildrop-tmp/`
//! (1733 too), fsynced, renamed to `maildrop/ID` and made durable with
//! syncfs (the writer cannot open the directories to fsync them). Only
//! then does `sendmail` exit 0.
//!
//! Partial files live apart so that `maildrop/` holds only what root's
//! pickup removes at once — complete drops, requests, junk: the path
//! unit that runs root's queue while `maildrop/` is not empty comes to
//! rest after every run, whatever a user leaves half-written. A spool
//! without `maildrop-tmp/` (laid out by hand) gets one at root's next
//! pickup; until then writers fall back to a `.ID` in `maildrop/`.
//!
//! A queue run by root picks the files up: each is verified like any
//! queue file (framing, trailer, size), held to `max_message_size` and
//! `max_recipients`, its addresses are checked again, its uid is taken
//! from the file's owner (never from what it says) and the message gets
//! the trace a direct submission gets — `Received: by HOST (spoolmail,
//! from userid UID)` with the owner's uid, on top of whatever the writer
//! forged below it (sendmail adds none to a drop; the pickup is its
//! trace, as Postfix's pickup is). It is committed into `queue/` under
//! the same ID — so a pickup cut short by a crash and repeated finds the
//! message already there and only removes the drop, never queues it
//! twice. Whatever else lands in the maildrop is removed, so that the
//! directory empties and the path unit that watches it comes to rest.

use std::fs::{self, OpenOptions, TryLockError};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::accept::message;
use crate::address;
use crate::config::Config;
use crate::error::{Error, Result};

use super::draft::{DirSync, Draft};
use super::{Envelope, QueueId, Spool, Trouble, durable};

/// How long before its file's ctime a drop's own arrival time may be:
/// the writer stamps it before reading stdin, and renames the file after.
const ARRIVAL_SLACK: u64 = 60;

/// The maildrop directory's name under the spool root.
pub const MAILDROP: &str = "maildrop";
/// Where drops are written before their rename into the maildrop.
pub const MAILDROP_TMP: &str = "maildrop-tmp";
/// Mode of the maildrop: sticky, writable and searchable by all, listable
/// by none but its owner.
pub const MAILDROP_MODE: u32 = 0o1733;
/// Mode of a drop file: its writer's alone until root picks it up.
const DROP_MODE: u32 = 0o600;
/// Prefix of the empty files that ask root for a queue run.
const KICK_PREFIX: &str = "kick.";

/// Starts a message in the maildrop of the spool at `root`, for a caller
/// who cannot write the queue itself.
pub fn begin_drop(root: &Path, now: SystemTime) -> Result<Draft> {
    let dir = root.join(MAILDROP);
    // A spool laid out before maildrop-tmp/ existed: the partial file is
    // `.ID` in the maildrop itself, as it used to be.
    let tmp_dir = Some(root.join(MAILDROP_TMP)).filter(|d| d.is_dir());
    for _ in 0..16 {
        let id = QueueId::generate(now);
        let partial = match &tmp_dir {
            Some(tmp) => tmp.join(id.as_str()),
            None => dir.join(format!(".{id}")),
        };
        let done = dir.join(id.as_str());
        match Draft::create(
            id.clone(),
            partial.clone(),
            done,
            DirSync::FileSystem,
            DROP_MODE,
        ) {
            Ok(draft) => return Ok(draft),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(Error::io(
                    format_args!("creating {}", partial.display()),
                    &e,
                ));
            }
        }
    }
    Err(Error::temp("no free queue ID in the maildrop"))
}

impl Spool {
    /// Asks for a queue run by root without waiting for the timer: an
    /// empty `maildrop/kick.ID` makes the maildrop non-empty, which starts
    /// `spoolmail-maildrop.path`'s service; the pickup removes it. Used by
    /// a runner that met a delivery only root can make (another user's
    /// mailbox). Best effort: without systemd the timer still comes.
    pub fn kick_root(&self, id: &QueueId) {
        let path = self.root.join(MAILDROP).join(format!("{KICK_PREFIX}{id}"));
        let _ = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(DROP_MODE)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path);
    }

    /// Moves every complete drop into the queue and clears the maildrop
    /// of junk (root only: nobody else may remove other users' files from
    /// the sticky maildrop). Returns the IDs queued.
    ///
    /// Per entry:
    /// - `ID`, a plain file: verified and queued ([`Spool::pick_up`]);
    ///   larger than `max_message_size` or with more than
    ///   `max_recipients` recipients it is refused and removed (a user
    ///   must not grow root's files without bound); failing verification,
    ///   it goes to corrupt/ (bounded by [`Spool::sweep_corrupt`]).
    /// - `.` names: partial files belong in `maildrop-tmp/`; removed.
    /// - in `maildrop-tmp/`: partial drops, removed once their status has
    ///   not changed for `tmp_max_age` (ctime, which a user cannot set
    ///   back); anything else there at once.
    /// - `kick.ID`, an empty file: a request for this very run; removed.
    /// - anything else (other names, `.` names that are not IDs,
    ///   directories, links, FIFOs): junk, removed at once with a log
    ///   line, so the directory empties and the path unit rests.
    ///
    /// Two root runs never pick up at once (a flock on the maildrop,
    /// which only root may open): a second one finds it busy and skips.
    pub fn pickup_maildrop(&self, config: &Config, now: SystemTime) -> Result<Vec<QueueId>> {
        let dir = self.root.join(MAILDROP);
        let lock = match OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&dir)
        {
            Ok(lock) => lock,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(format_args!("opening {}", dir.display()), &e)),
        };
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                log::info!("{}: another queue run is picking up", dir.display());
                return Ok(Vec::new());
            }
            Err(TryLockError::Error(e)) => {
                return Err(Error::io(format_args!("locking {}", dir.display()), &e));
            }
        }
        let entries = fs::read_dir(&dir)
            .map_err(|e| Error::io(format_args!("listing {}", dir.display()), &e))?;
        let mut queued = Vec::new();
        let mut removed_any = false;
        // In the order they were written (IDs sort by time): past an
        // hourly limit, the latest are the ones held.
        let mut names: Vec<std::ffi::OsString> = entries.flatten().map(|e| e.file_name()).collect();
        names.sort_unstable();
        for file_name in names {
            let name = file_name.to_string_lossy().into_owned();
            let path = dir.join(&file_name);
            let Ok(meta) = fs::symlink_metadata(&path) else {
                continue;
            };
            let plain = meta.file_type().is_file();
            if name.starts_with('.') {
                // Partial drops are written in maildrop-tmp/; a `.` name
                // here (an old writer's partial file, or a user's attempt
                // to keep the directory non-empty) goes at once: a writer
                // cut off gets an error, not a 0, so nothing is lost.
                removed_any |= junk(&path, &meta, "a partial file outside maildrop-tmp/");
                continue;
            }
            if let Some(kicked) = name.strip_prefix(KICK_PREFIX) {
                if plain && meta.len() == 0 && QueueId::parse(kicked).is_some() {
                    // Its request is this run.
                    removed_any |= remove_junk(&path, &meta);
                } else {
                    removed_any |= junk(&path, &meta, "not a queue-run request");
                }
                continue;
            }
            let Some(id) = QueueId::parse(&name) else {
                removed_any |= junk(&path, &meta, "not a drop file name");
                continue;
            };
            if !plain {
                removed_any |= junk(&path, &meta, "not a plain file");
                continue;
            }
            match self.pick_up(&path, &id, config, now) {
                Ok(Some(id)) => queued.push(id),
                Ok(None) => {}
                Err(Refusal::Remove(why)) => {
                    // syslog: the user's message is refused for good.
                    log::error!(
                        "{}: refused drop from uid {} ({why}); removed",
                        path.display(),
                        meta.uid()
                    );
                }
                Err(Refusal::Quarantine(why)) => {
                    log::error!(
                        "{}: refused drop from uid {} ({why}); moved to corrupt/",
                        path.display(),
                        meta.uid()
                    );
                    self.set_aside(&path, &format!("{id}.drop"));
                    continue;
                }
                Err(Refusal::Gone) => continue,
                Err(Refusal::Io(e)) => {
                    log::error!("{}: {e}; left for the next run", path.display());
                    continue;
                }
            }
            removed_any |= fs::remove_file(&path).is_ok();
        }
        if removed_any {
            durable::fsync_dir(&dir)?;
        }
        self.sweep_partial_drops(config.tmp_max_age, now);
        Ok(queued)
    }

    /// Removes from `maildrop-tmp/` the partial drops whose status has not
    /// changed for `max_age` (a writer killed before its rename: the
    /// caller never got 0), and at once anything that is not a plain file
    /// with an ID for a name. Best effort, with a log line each.
    fn sweep_partial_drops(&self, max_age: Duration, now: SystemTime) {
        let dir = self.root.join(MAILDROP_TMP);
        if let Err(e) = fs::create_dir(&dir).and_then(|()| {
            fs::set_permissions(
                &dir,
                std::os::unix::fs::PermissionsExt::from_mode(MAILDROP_MODE),
            )
        }) && e.kind() != io::ErrorKind::AlreadyExists
        {
            log::warn!("{}: {e}", dir.display());
        }
        let Ok(entries) = fs::read_dir(&dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = dir.join(entry.file_name());
            let Ok(meta) = fs::symlink_metadata(&path) else {
                continue;
            };
            let is_partial = meta.file_type().is_file()
                && entry
                    .file_name()
                    .to_str()
                    .and_then(QueueId::parse)
                    .is_some();
            if !is_partial {
                junk(&path, &meta, "not a partial drop");
            } else if age(&meta, now) > max_age {
                log::warn!("{}: removing an abandoned partial drop", path.display());
                remove_junk(&path, &meta);
            }
        }
    }

    /// Verifies one drop and commits it to the queue under its own ID,
    /// with the trace a direct submission gets: a `Received:` line naming
    /// the uid of the file's owner. Ok(None): it was queued by an earlier,
    /// interrupted pickup.
    fn pick_up(
        &self,
        path: &Path,
        id: &QueueId,
        config: &Config,
        now: SystemTime,
    ) -> std::result::Result<Option<QueueId>, Refusal> {
        let max_size = config.max_message_size;
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(path)
            .map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => Refusal::Gone,
                _ => Refusal::Remove(format!("cannot open: {e}")),
            })?;
        let meta = file
            .metadata()
            .map_err(|e| Refusal::Io(Error::io("stat", &e)))?;
        if !meta.is_file() || meta.nlink() != 1 {
            return Err(Refusal::Remove("not a plain file with one link".into()));
        }
        // The envelope of max_recipients recipients fits in the slack.
        if max_size > 0 && meta.len() > max_size.saturating_add(1 << 20) {
            return Err(Refusal::Remove(format!(
                "{} bytes: larger than max_message_size",
                meta.len()
            )));
        }
        let (claimed, mut data) = self.verify_queue_file(id, file, meta.len(), 64 * 1024)?;
        if max_size > 0 && claimed.size > max_size {
            return Err(Refusal::Remove(format!(
                "{} bytes of data: larger than max_message_size",
                claimed.size
            )));
        }
        if claimed.recipients.len() > config.max_recipients {
            return Err(Refusal::Remove(format!(
                "{} recipients: more than max_recipients ({})",
                claimed.recipients.len(),
                config.max_recipients
            )));
        }
        if self.queue.join(id.as_str()).exists() {
            return Ok(None);
        }
        // What the writer says about itself is not evidence: the file's
        // owner is.
        let uid = meta.uid();
        let user = nix::unistd::User::from_uid(uid.into())
            .ok()
            .flatten()
            .map_or_else(|| format!("uid{uid}"), |u| u.name);
        let quarantine = Refusal::Quarantine;
        let sender = match claimed.sender.is_empty() {
            true => None,
            false => address::parse_sender(&claimed.sender)
                .map_err(|e| quarantine(format!("sender: {}", e.message())))?,
        };
        // The same envelope rule as a direct submission, whoever wrote
        // the file (a caller with a -C config of its own writes drops
        // too): the sender counts as one the caller named with -f. What
        // our own sendmail masqueraded already stays as it is (the
        // rewrite is idempotent). Headers are kept as written (S3, S4).
        // A rewrite that cannot be made (too long for RFC 5321) keeps
        // the sender: the writer was told 0 already, and a message is
        // not thrown away for its sender's length.
        let sender = match crate::accept::masquerade::Masquerade::new(config)
            .map(|m| m.envelope_sender(sender.as_ref(), true))
        {
            Some(Ok(masqueraded)) => masqueraded.map(|a| a.to_string()).unwrap_or_default(),
            Some(Err(e)) => {
                log::warn!("{id}: sender kept as it is: {e}");
                claimed.sender.clone()
            }
            None => claimed.sender.clone(),
        };
        if claimed.recipients.is_empty() {
            return Err(quarantine("no recipients".into()));
        }
        for r in &claimed.recipients {
            address::Address::parse(r)
                .map_err(|e| quarantine(format!("recipient: {}", e.message())))?;
        }
        if sender != claimed.sender {
            log::info!(
                "{id}: sender <{}> masqueraded as <{sender}>",
                claimed.sender
            );
        }
        // An ENVID is checked as `-V` checks it: it goes out on the wire
        // (RFC 3461) and into notices.
        if let Some(envid) = &claimed.envid {
            crate::cli::parse_envid(envid)
                .map_err(|_| quarantine("envid: not 1 to 100 printable ASCII characters".into()))?;
        }
        // The writer's arrival time is not evidence either: a forged old
        // one would expire at once and bounce. The file's ctime is the
        // kernel's (its rename into the maildrop, or a later change by
        // its owner, never earlier), so the arrival is kept only within
        // a minute before it and never in the future.
        let written = u64::try_from(meta.ctime()).unwrap_or(0);
        let unix_now = crate::clock::unix_seconds(now);
        let arrival = match claimed.arrival {
            a if a.saturating_add(ARRIVAL_SLACK) < written || a > unix_now => written.min(unix_now),
            a => a,
        };
        let envelope = Envelope {
            uid,
            user,
            sender,
            arrival,
            // What expanded into a copy (the loop guard of forwarded
            // mail) is ours to write, never a caller's: a forged chain
            // could only stop expansions, but it is not evidence.
            chain: Vec::new(),
            size: 0,
            ..claimed.clone()
        };
        let io = |e: Error| Refusal::Io(e);
        // The brake on runaway senders (max_messages_per_hour…) for mail
        // that bypassed it: its writer got 0 long ago and cannot be told
        // to try later, so past the limit the message is queued on hold
        // for the administrator (`mailq --release` or `--delete`). The
        // held state is written before the message is visible in queue/,
        // so no runner ever sees it unheld.
        let hosts = self.hosts_dir();
        let nrcpt = envelope.recipients.len();
        let over_limit =
            crate::accept::ratelimit::admit(config, &hosts, uid, &envelope.user, nrcpt, unix_now)
                .err();
        if over_limit.is_some() {
            let mut state = super::DeliveryState::initial(&envelope);
            state.held = true;
            self.write_state(id, &state).map_err(io)?;
        }
        let mut draft = self.begin_with_id(id).map_err(io)?;
        draft.write_envelope(&envelope).map_err(io)?;
        let out = draft.data();
        let received = message::received_field(&config.hostname, uid, id.as_str(), now);
        out.write_all(&received)
            .and_then(|()| io::copy(&mut (&mut data).take(claimed.size), out))
            .and_then(|_| out.flush())
            .map_err(|e| io(Error::io("copying a drop into the queue", &e)))?;
        match draft.commit() {
            Ok(committed) => {
                crate::logging::received(
                    id.as_str(),
                    uid,
                    &envelope.sender,
                    "",
                    committed.size,
                    envelope.recipients.len(),
                );
                if let Some(why) = over_limit {
                    log::warn!(
                        "{id}: held: {}; `mailq --release {id}` lets it go",
                        why.message()
                    );
                }
                Ok(Some(committed.id))
            }
            Err(_) if self.queue.join(id.as_str()).exists() => Ok(None),
            Err(e) => Err(io(e)),
        }
    }
}

/// Why a drop was not queued.
enum Refusal {
    /// Refused for what it is (too large, too many recipients, not a
    /// plain file): removed with a log line.
    Remove(String),
    /// Failed verification: kept in corrupt/ for a human, within its bounds.
    Quarantine(String),
    /// Vanished meanwhile.
    Gone,
    /// I/O trouble on our side: left for the next run.
    Io(Error),
}

impl From<Trouble> for Refusal {
    fn from(t: Trouble) -> Refusal {
        match t {
            Trouble::Gone => Refusal::Gone,
            Trouble::Corrupt(why) => Refusal::Quarantine(why),
            Trouble::Io(e) => Refusal::Io(e),
        }
    }
}

/// How long since the status of the file last changed (ctime: every
/// write moves it, and no user can set it back).
fn age(meta: &fs::Metadata, now: SystemTime) -> Duration {
    let changed = UNIX_EPOCH + Duration::new(meta.ctime().max(0) as u64, 0);
    now.duration_since(changed).unwrap_or_default()
}

/// Removes a maildrop entry that is neither a drop nor a request, with a
/// log line saying why. True when it went.
fn junk(path: &Path, meta: &fs::Metadata, why: &str) -> bool {
    log::warn!(
        "{}: {why} (owner uid {}); removed from the maildrop",
        path.display(),
        meta.uid()
    );
    remove_junk(path, meta)
}

/// Removes a file, link or directory tree from the maildrop. A tree is
/// removed by [`remove_tree`]: without following symlinks, and with the
/// same few descriptors at any depth.
fn remove_junk(path: &Path, meta: &fs::Metadata) -> bool {
    let removed = if meta.is_dir() {
        remove_tree(path)
    } else {
        fs::remove_file(path)
    };
    match removed {
        Ok(()) => true,
        Err(e) => {
            log::error!("removing {}: {e}", path.display());
            false
        }
    }
}

/// How many unlinks and renames one tree may cost a run: a user racing
/// to refill a tree as it is emptied cannot keep root's run busy for
/// ever. What is left waits for the next run.
const TREE_BUDGET: u64 = 1_000_000;

/// Removes the directory `path` and everything under it without holding
/// a descriptor per level (std's `remove_dir_all` does: a user's tree of
/// 1,500 levels outlived root's runs under systemd's 1024). Only `path`
/// and one directory below it are ever open: an entry of `path` that is
/// a non-empty directory has its own entries moved up into `path` under
/// fresh short names (`.N`, never replacing anything) and is removed
/// empty; so every level rises until it is gone, each entry is moved at
/// most once per level, and no name grows. Nothing is followed: each
/// directory is opened with `O_NOFOLLOW`, and a symlink is unlinked like
/// a file. A user may change the tree meanwhile (it is theirs): whatever
/// is there is removed, within [`TREE_BUDGET`].
fn remove_tree(path: &Path) -> io::Result<()> {
    use nix::dir::Dir;
    use nix::fcntl::{OFlag, RenameFlags, open, openat, renameat2};
    use nix::sys::stat::Mode;
    use nix::unistd::{UnlinkatFlags, unlinkat};

    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let top = open(path, flags, Mode::empty())?;
    let mut spent = 0u64;
    let mut fresh = 0u64;
    let mut spend = || {
        spent += 1;
        match spent > TREE_BUDGET {
            true => Err(io::Error::other(format!(
                "more than {TREE_BUDGET} entries: the rest is left for the next run"
            ))),
            false => Ok(()),
        }
    };
    // Ok(true): gone (or vanished meanwhile); Ok(false): a directory.
    let unlink = |dir: &std::os::fd::OwnedFd, name: &std::ffi::CStr| -> io::Result<bool> {
        match unlinkat(dir, name, UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(nix::errno::Errno::ENOENT) => Ok(true),
            Err(nix::errno::Errno::EISDIR) => Ok(false),
            Err(e) => Err(e.into()),
        }
    };
    let is_dot = |name: &std::ffi::CStr| matches!(name.to_bytes(), b"." | b"..");
    loop {
        // A pass over `path`: files go, empty directories go, the others
        // are flattened by one level. Passes repeat until one finds
        // nothing (what was moved up meanwhile is met by the next pass).
        let mut reader = Dir::openat(&top, ".", flags, Mode::empty())?;
        let mut found = false;
        for entry in reader.iter() {
            let entry = entry?;
            let name = entry.file_name();
            if is_dot(name) {
                continue;
            }
            found = true;
            spend()?;
            if unlink(&top, name)? {
                continue;
            }
            match unlinkat(&top, name, UnlinkatFlags::RemoveDir) {
                Ok(()) | Err(nix::errno::Errno::ENOENT) => continue,
                Err(nix::errno::Errno::ENOTEMPTY | nix::errno::Errno::EEXIST) => {}
                Err(e) => return Err(e.into()),
            }
            // A symlink or a file swapped in meanwhile: ELOOP or ENOTDIR,
            // and the next pass unlinks it.
            let sub = match openat(&top, name, flags, Mode::empty()) {
                Ok(sub) => sub,
                Err(nix::errno::Errno::ENOENT | nix::errno::Errno::ELOOP) => continue,
                Err(nix::errno::Errno::ENOTDIR) => continue,
                Err(e) => return Err(e.into()),
            };
            let mut below = Dir::openat(&sub, ".", flags, Mode::empty())?;
            for child in below.iter() {
                let child = child?;
                let child_name = child.file_name();
                if is_dot(child_name) {
                    continue;
                }
                spend()?;
                if unlink(&sub, child_name)? {
                    continue;
                }
                loop {
                    fresh += 1;
                    let up = format!(".{fresh}");
                    match renameat2(
                        &sub,
                        child_name,
                        &top,
                        up.as_str(),
                        RenameFlags::RENAME_NOREPLACE,
                    ) {
                        Ok(()) | Err(nix::errno::Errno::ENOENT) => break,
                        Err(nix::errno::Errno::EEXIST) => spend()?,
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            // Empty now, unless its owner filled it again: then the next
            // pass meets it once more.
            match unlinkat(&top, name, UnlinkatFlags::RemoveDir) {
                Ok(())
                | Err(nix::errno::Errno::ENOENT)
                | Err(nix::errno::Errno::ENOTEMPTY | nix::errno::Errno::EEXIST) => {}
                Err(e) => return Err(e.into()),
            }
        }
        if !found {
            break;
        }
    }
    drop(top);
    fs::remove_dir(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deep, wide, with links out and names like the ones the removal
    /// gives what it moves up: all gone, nothing outside touched.
    #[test]
    fn remove_tree_removes_any_shape_and_follows_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("keep"), "keep").unwrap();
        let tree = dir.path().join("tree");
        let mut deep = tree.clone();
        for _ in 0..300 {
            deep.push("d");
        }
        fs::create_dir_all(&deep).unwrap();
        fs::write(deep.join("f"), "x").unwrap();
        std::os::unix::fs::symlink(&outside, deep.join("l")).unwrap();
        for taken in [".1", ".2", "d/.1"] {
            fs::create_dir_all(tree.join(taken).join("x/y")).unwrap();
        }
        std::os::unix::fs::symlink(&outside, tree.join("link")).unwrap();
        remove_tree(&tree).unwrap();
        assert!(!tree.exists());
        assert_eq!(fs::read_to_string(outside.join("keep")).unwrap(), "keep");
    }

    #[test]
    fn remove_tree_refuses_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        fs::create_dir(&target).unwrap();
        fs::write(target.join("keep"), "keep").unwrap();
        std::os::unix::fs::symlink(&target, dir.path().join("link")).unwrap();
        assert!(remove_tree(&dir.path().join("link")).is_err());
        assert!(target.join("keep").exists());
    }
}
