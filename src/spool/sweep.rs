//! Maintenance: what cleans up after crashes, kills and hostile drops,
//! apart from the message store it tidies. Nothing here is on a
//! message's path: a queue run calls these between its work (root's run
//! for corrupt/), `sendmail` never does, and each may be skipped or cut
//! short without losing a message or a recipient's outcome.
//!
//! The contract with the store: a sweep removes only what no store
//! operation will finish — a draft older than `max_age` (tmp/), a
//! state write or a state whose message is gone (state/), a window link
//! whose queue file is gone (window/), what corrupt/ holds past its
//! bounds — and never a committed queue file. Ages count from each
//! file's own times (its mtime; in corrupt/ its ctime, set by the move
//! there), so that a writer still at work is not swept from under
//! itself. The schedule's repair is the schedule's
//! ([`Spool::reconcile_schedule`]); the submission counters sweep
//! themselves ([`SubmissionCounters::sweep`](super::SubmissionCounters::sweep));
//! the maildrop's leftovers are the maildrop's.

use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::{QueueId, Spool, durable, id};
use crate::error::{Error, Result};

/// How often a queue run looks for stray state files.
const STATE_SWEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(3600);
/// In `hosts/`: its mtime is when state/ was last swept.
const STATE_SWEEP_STAMP: &str = "state-swept.stamp";

impl Spool {
    /// Removes files in tmp/ older than `max_age`: drafts of processes
    /// that crashed or were killed before their commit (never a committed
    /// message: those live in queue/). Then the same in state/: a runner's
    /// `ID.tmp-PID` left by a kill before its rename, and state files whose
    /// message is gone (a removal cut short between its two unlinks).
    /// Returns how many went.
    pub fn sweep_tmp(&self, max_age: std::time::Duration, now: SystemTime) -> Result<usize> {
        let swept = self.sweep_drafts_and_windows(max_age, now)?;
        Ok(swept + self.sweep_state(max_age, now, None))
    }

    /// [`Spool::sweep_tmp`] but for state/, which a queue run sweeps
    /// after its schedule repair, with the repair's listing of `queue/`.
    pub fn sweep_drafts_and_windows(
        &self,
        max_age: std::time::Duration,
        now: SystemTime,
    ) -> Result<usize> {
        Ok(self.sweep_drafts(max_age, now)? + self.sweep_windows())
    }

    /// Stray files in state/ older than `max_age` (see [`Spool::sweep_tmp`]),
    /// at most every `STATE_SWEEP_INTERVAL`. `queued` is a sorted listing
    /// of `queue/` already made by this run (None: listed here). Taken
    /// before state/ is listed, it may miss a message committed since:
    /// that message's state is younger than `max_age`, and stays.
    pub fn sweep_state(
        &self,
        max_age: std::time::Duration,
        now: SystemTime,
        queued: Option<&[QueueId]>,
    ) -> usize {
        // What it finds is the rare leftover of a kill: looked for at
        // most every STATE_SWEEP_INTERVAL, not on every queue run (it
        // lists state/ and queue/, which grow with the backlog).
        let stamp = self.hosts_dir().join(STATE_SWEEP_STAMP);
        if let Ok(meta) = fs::symlink_metadata(&stamp)
            && !older_than(&meta, STATE_SWEEP_INTERVAL, now)
        {
            return 0;
        }
        let _ = fs::remove_file(&stamp);
        let _ = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(durable::FILE_MODE)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&stamp);
        let Ok(entries) = fs::read_dir(&self.state) else {
            return 0;
        };
        // Names first: with a backlog nearly every state file belongs to
        // a queued message, and those need no stat at all.
        let names: Vec<std::ffi::OsString> = entries.flatten().map(|e| e.file_name()).collect();
        let listed;
        let queued = match queued {
            Some(queued) => queued,
            None => match self.queued_ids() {
                Ok(ids) => {
                    listed = ids;
                    &listed[..]
                }
                Err(_) => return 0,
            },
        };
        let mut swept = 0;
        for name in names {
            let Some(text) = name.to_str() else {
                continue;
            };
            let stray = match text.split_at_checked(id::ID_LEN) {
                Some((_, rest)) if rest.starts_with(".tmp-") => "an unfinished state write",
                _ => match QueueId::parse(text) {
                    Some(id) if queued.binary_search(&id).is_err() => {
                        "the state of a message no longer queued"
                    }
                    _ => continue,
                },
            };
            let path = self.state.join(&name);
            let Ok(meta) = path.symlink_metadata() else {
                continue;
            };
            // Not before max_age: a state may be written an instant
            // before its message's commit is visible to our listing.
            if !older_than(&meta, max_age, now) || meta.is_dir() {
                continue;
            }
            if fs::remove_file(&path).is_ok() {
                log::info!("swept {}: {stray}", path.display());
                swept += 1;
            }
        }
        swept
    }

    /// The tmp/ part of [`Spool::sweep_tmp`].
    fn sweep_drafts(&self, max_age: std::time::Duration, now: SystemTime) -> Result<usize> {
        let entries = match fs::read_dir(&self.tmp) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => {
                return Err(Error::io(
                    format_args!("reading {}", self.tmp.display()),
                    &e,
                ));
            }
        };
        let mut swept = 0;
        for entry in entries.flatten() {
            let Ok(meta) = entry.path().symlink_metadata() else {
                continue;
            };
            let old = older_than(&meta, max_age, now);
            if old && !meta.is_dir() && fs::remove_file(entry.path()).is_ok() {
                log::info!(
                    "swept {}: left by a crashed sendmail",
                    entry.path().display()
                );
                swept += 1;
            }
        }
        Ok(swept)
    }

    /// Bounds corrupt/ (root's queue run): removes every file that has
    /// been there longer than `max_age`, then, while it holds more than
    /// `max_bytes` (0: no byte cap) or `max_files`, the oldest — refused
    /// maildrop files (`*.drop`, which users can make at will) before
    /// queue and state files (evidence of our own trouble), and among the
    /// drops those of the user with the most first, so that one user's
    /// refused drops push out their own before anybody else's. Age counts
    /// from the move into corrupt/ (ctime: a rename sets it, no user can
    /// set it back). One log line per file removed. Returns how many went.
    pub fn sweep_corrupt(
        &self,
        max_age: std::time::Duration,
        max_bytes: u64,
        max_files: usize,
        now: SystemTime,
    ) -> Result<usize> {
        let entries = match fs::read_dir(&self.corrupt) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => {
                return Err(Error::io(
                    format_args!("reading {}", self.corrupt.display()),
                    &e,
                ));
            }
        };
        struct Held {
            path: PathBuf,
            changed: i64,
            bytes: u64,
            drop: bool,
            dir: bool,
            owner: u32,
        }
        let horizon = now
            .checked_sub(max_age)
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(i64::MIN, |d| d.as_secs() as i64);
        let mut swept = 0;
        let mut kept = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(meta) = path.symlink_metadata() else {
                continue;
            };
            let held = Held {
                drop: path.extension().is_some_and(|x| x == "drop"),
                changed: meta.ctime(),
                bytes: meta.len(),
                dir: meta.is_dir(),
                owner: meta.uid(),
                path,
            };
            if held.changed < horizon {
                if remove_entry(&held.path, held.dir) {
                    log::info!(
                        "removed {}: in corrupt/ longer than corrupt_max_age",
                        held.path.display()
                    );
                    swept += 1;
                }
            } else {
                kept.push(held);
            }
        }
        let mut bytes: u64 = kept.iter().map(|h| h.bytes).sum();
        let mut files = kept.len();
        // Drops first — the drops of whoever has most of them first —
        // then oldest first.
        let mut drops_of: std::collections::HashMap<u32, usize> = Default::default();
        for held in kept.iter().filter(|h| h.drop) {
            *drops_of.entry(held.owner).or_default() += 1;
        }
        kept.sort_by_key(|h| {
            let theirs = if h.drop { drops_of[&h.owner] } else { 0 };
            (!h.drop, std::cmp::Reverse(theirs), h.changed)
        });
        for held in kept {
            if files <= max_files && (max_bytes == 0 || bytes <= max_bytes) {
                break;
            }
            if remove_entry(&held.path, held.dir) {
                log::warn!(
                    "removed {}: corrupt/ is over corrupt_max_size or corrupt_max_files",
                    held.path.display()
                );
                swept += 1;
            }
            files -= 1;
            bytes -= held.bytes;
        }
        Ok(swept)
    }

    /// Removes what in `window/` is not the open window of a queued
    /// message: links whose queue file is gone (a runner killed between
    /// a removal and the window's), and any name that is not an ID. The
    /// directory holds one entry per transaction in flight, so this is
    /// cheap on every run. Returns how many went.
    pub(super) fn sweep_windows(&self) -> usize {
        let Ok(entries) = fs::read_dir(&self.window) else {
            return 0;
        };
        let mut swept = 0;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let queued = name
                .to_str()
                .and_then(QueueId::parse)
                .is_some_and(|id| fs::symlink_metadata(self.queue.join(id.as_str())).is_ok());
            if queued {
                continue;
            }
            let path = entry.path();
            let gone = match entry.file_type() {
                Ok(t) if t.is_dir() => fs::remove_dir_all(&path),
                _ => fs::remove_file(&path),
            };
            if gone.is_ok() {
                log::info!(
                    "swept {}: not the window of a queued message",
                    path.display()
                );
                swept += 1;
            }
        }
        swept
    }
}

/// Removes a file (or a directory tree that should not be there) from
/// corrupt/; a failure is logged. True when it went.
fn remove_entry(path: &Path, dir: bool) -> bool {
    let removed = if dir {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    };
    match removed {
        Ok(()) => true,
        Err(e) if e.kind() == io::ErrorKind::NotFound => false,
        Err(e) => {
            log::error!("removing {}: {e}", path.display());
            false
        }
    }
}

/// Whether a file was last modified more than `max_age` before `now`.
fn older_than(meta: &fs::Metadata, max_age: std::time::Duration, now: SystemTime) -> bool {
    meta.modified()
        .ok()
        .and_then(|m| now.duration_since(m).ok())
        .is_some_and(|age| age > max_age)
}
