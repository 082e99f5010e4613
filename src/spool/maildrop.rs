//! The maildrop: how a caller without the spool group's rights still
//! hands over a message safely — PHP-FPM and other services running with
//! systemd's `NoNewPrivileges=yes`, where the setgid bit is ignored.
//!
//! `maildrop/` (mode 1733: anyone may create files, nobody but root may
//! list it, the sticky bit keeps users off each other's files) receives
//! the same queue-file format as `queue/`, written as `.ID`, fsynced,
//! renamed to `ID` and made durable with syncfs (the writer cannot open
//! the directory to fsync it). Only then does `sendmail` exit 0.
//!
//! A queue run by root picks the files up: each is verified like any
//! queue file (framing, trailer, size), its addresses are checked again,
//! its uid is taken from the file's owner (never from what it says), and
//! it is committed into `queue/` under the same ID — so a pickup cut
//! short by a crash and repeated finds the message already there and
//! only removes the drop, never queues it twice.

use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::address;
use crate::error::{Error, Result};

use super::draft::{DirSync, Draft};
use super::{Envelope, QueueId, Spool, Trouble, durable};

/// The maildrop directory's name under the spool root.
pub const MAILDROP: &str = "maildrop";
/// Mode of the maildrop: sticky, writable and searchable by all, listable
/// by none but its owner.
pub const MAILDROP_MODE: u32 = 0o1733;
/// Mode of a drop file: its writer's alone until root picks it up.
const DROP_MODE: u32 = 0o600;
/// Prefix of the empty files that ask root for a queue run.
const KICK_PREFIX: &str = "kick.";
/// A `.ID` file older than this is a dead writer's leftover.
const STALE_PARTIAL: Duration = Duration::from_secs(24 * 3600);

/// Starts a message in the maildrop of the spool at `root`, for a caller
/// who cannot write the queue itself.
pub fn begin_drop(root: &Path, now: SystemTime) -> Result<Draft> {
    let dir = root.join(MAILDROP);
    for _ in 0..16 {
        let id = QueueId::generate(now);
        let partial = dir.join(format!(".{id}"));
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

    /// Moves every complete drop into the queue (root only: nobody else
    /// may remove other users' files from the sticky maildrop). Returns
    /// the IDs queued. A drop that fails verification goes to corrupt/.
    pub fn pickup_maildrop(&self, max_size: u64, now: SystemTime) -> Result<Vec<QueueId>> {
        let dir = self.root.join(MAILDROP);
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(format_args!("listing {}", dir.display()), &e)),
        };
        let mut queued = Vec::new();
        let mut removed_any = false;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = dir.join(&name);
            if let Some(partial) = name.strip_prefix('.') {
                // Still being written, or abandoned by a killed writer.
                let stale = fs::symlink_metadata(&path)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|m| now.duration_since(m).ok())
                    .is_some_and(|age| age > STALE_PARTIAL);
                if stale && QueueId::parse(partial).is_some() {
                    log::warn!("{}: removing an abandoned partial drop", path.display());
                    removed_any |= fs::remove_file(&path).is_ok();
                }
                continue;
            }
            if name.starts_with(KICK_PREFIX) {
                removed_any |= fs::remove_file(&path).is_ok();
                continue;
            }
            let Some(id) = QueueId::parse(&name) else {
                log::warn!("{}: not a drop file name; removed", path.display());
                removed_any |= fs::remove_file(&path).is_ok();
                continue;
            };
            match self.pick_up(&path, &id, max_size) {
                Ok(Some(id)) => queued.push(id),
                Ok(None) => {}
                Err(Trouble::Corrupt(why)) => {
                    log::error!(
                        "{}: refused drop ({why}); moved to corrupt/",
                        path.display()
                    );
                    self.set_aside(&path, &format!("{id}.drop"));
                    continue;
                }
                Err(Trouble::Gone) => continue,
                Err(Trouble::Io(e)) => {
                    log::error!("{}: {e}; left for the next run", path.display());
                    continue;
                }
            }
            removed_any |= fs::remove_file(&path).is_ok();
        }
        if removed_any {
            durable::fsync_dir(&dir)?;
        }
        Ok(queued)
    }

    /// Verifies one drop and commits it to the queue under its own ID.
    /// Ok(None): it was queued by an earlier, interrupted pickup.
    fn pick_up(
        &self,
        path: &Path,
        id: &QueueId,
        max_size: u64,
    ) -> std::result::Result<Option<QueueId>, Trouble> {
        let corrupt = |why: String| Trouble::Corrupt(why);
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(path)
            .map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => Trouble::Gone,
                _ => corrupt(format!("cannot open: {e}")),
            })?;
        let meta = file
            .metadata()
            .map_err(|e| Trouble::Io(Error::io("stat", &e)))?;
        if !meta.is_file() || meta.nlink() != 1 {
            return Err(corrupt("not a plain file with one link".into()));
        }
        if max_size > 0 && meta.len() > max_size.saturating_add(1 << 20) {
            return Err(corrupt(format!(
                "{} bytes: larger than max_message_size",
                meta.len()
            )));
        }
        let (claimed, mut data) = self.verify_queue_file(id, file, meta.len(), 64 * 1024)?;
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
        if !claimed.sender.is_empty() {
            address::parse_sender(&claimed.sender)
                .map_err(|e| corrupt(format!("sender: {}", e.message())))?;
        }
        if claimed.recipients.is_empty() {
            return Err(corrupt("no recipients".into()));
        }
        for r in &claimed.recipients {
            address::Address::parse(r)
                .map_err(|e| corrupt(format!("recipient: {}", e.message())))?;
        }
        let envelope = Envelope {
            uid,
            user,
            size: 0,
            ..claimed.clone()
        };
        let io = |e: Error| Trouble::Io(e);
        let mut draft = self.begin_with_id(id).map_err(io)?;
        draft.write_envelope(&envelope).map_err(io)?;
        let out = draft.data();
        io::copy(&mut (&mut data).take(claimed.size), out)
            .and_then(|_| out.flush())
            .map_err(|e| io(Error::io("copying a drop into the queue", &e)))?;
        match draft.commit() {
            Ok(committed) => {
                log::info!("{id}: picked up from the maildrop, uid={uid}");
                Ok(Some(committed.id))
            }
            Err(_) if self.queue.join(id.as_str()).exists() => Ok(None),
            Err(e) => Err(io(e)),
        }
    }
}
