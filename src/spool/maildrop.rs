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

use crate::config::Config;
use crate::error::{Error, Result};
use crate::{address, message};

use super::draft::{DirSync, Draft};
use super::{Envelope, QueueId, Spool, Trouble, durable};

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
        let sender = match crate::masquerade::Masquerade::new(config)
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
        let envelope = Envelope {
            uid,
            user,
            sender,
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
        let unix_now = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let hosts = self.hosts_dir();
        let nrcpt = envelope.recipients.len();
        let over_limit =
            crate::ratelimit::admit(config, &hosts, uid, &envelope.user, nrcpt, unix_now).err();
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
/// removed without following symlinks (std's `remove_dir_all` opens each
/// level with `O_NOFOLLOW`), so a user's links lead root nowhere.
fn remove_junk(path: &Path, meta: &fs::Metadata) -> bool {
    let removed = if meta.is_dir() {
        fs::remove_dir_all(path)
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
