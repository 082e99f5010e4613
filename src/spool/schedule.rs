//! The schedule: when each queued message next has work, kept where a
//! directory listing sees it, so that finding what is due costs in
//! proportion to what is due — not to the queue (S8, docs/architecture.md).
//!
//! `schedule/T/ID` is an empty file: message ID has work from unix time
//! T on. `schedule/0/` holds what is due at once (a message just
//! committed, a notice, an entry put back by [`Spool::reconcile_schedule`]).
//! A run lists `schedule/`, then only the buckets whose time has come.
//!
//! The schedule is an index, never the truth: the queue file says whether
//! a message exists, its state file when each recipient is due. Entries
//! are written without fsync; whatever a crash leaves is repaired:
//! - an entry for a message that is gone is removed when it comes due;
//! - an entry earlier than the state costs one state read, after which
//!   the entry moves to the state's time;
//! - an entry later than the state is the one deliberate case (a
//!   destination in the unreachable cache: the message waits for it
//!   without a state write of its own); it is never later than that;
//! - a message with no entry at all is found by root's and the spool
//!   group's explicit queue runs (`sendmail -q`, the systemd timer),
//!   which compare the listings of `queue/` and `schedule/` — directory
//!   reads only, no file opened — and file it under 0.
//!
//! Bucket directories are made by whichever runner needs them, so an
//! ordinary user's runner (setgid, with that user's uid) may own one,
//! and could rename entries between the buckets it owns. Root's run
//! therefore moves every entry of a bucket root does not own back to 0
//! (each costs one state read, then is filed under a bucket root makes),
//! which bounds any such meddling to the interval of root's runs.

use std::fs::{self, DirBuilder, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;

use super::page::{Page, Smallest};
use super::{DIR_MODE, QueueId, Spool};
use crate::error::{Error, Result};

/// The schedule directory under the spool root.
pub const SCHEDULE: &str = "schedule";
/// The bucket of messages due at once.
pub const NOW_BUCKET: u64 = 0;
/// The coarsest bucket width, in seconds: a message is looked at at most
/// this long after its time (retry intervals are 30 minutes or more).
const MAX_GRAIN: u64 = 64;

/// The bucket of a message next due at `due` (unix seconds), seen at
/// `now`: 0 when due already, else `due` rounded *up* to a power-of-two
/// grain of about a sixteenth of the wait (1 s to [`MAX_GRAIN`]) — never
/// looked at early (a wasted state read), at most 1/16 of the wait late,
/// and at most one directory per 64 s of future.
pub fn bucket_for(due: u64, now: u64) -> u64 {
    if due <= now {
        return NOW_BUCKET;
    }
    let wide = ((due - now) / 16).clamp(1, MAX_GRAIN);
    let grain = 1u64 << (63 - wide.leading_zeros());
    // Saturating: a time read back from a state file is not trusted to
    // be sane.
    due.div_ceil(grain).saturating_mul(grain)
}

/// One bucket as listed: its time and whether root owns its directory.
struct Bucket {
    at: u64,
    root_owned: bool,
}

/// What [`Spool::reconcile_schedule`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Repairs {
    /// Queued messages that had no entry, now filed as due.
    pub missing: usize,
    /// Entries of buckets root does not own, moved to 0.
    pub untrusted: usize,
    /// Entries whose message is gone, removed.
    pub stale: usize,
}

/// Creates the empty entry file `dir/ID` (no fsync); one that exists
/// already is the entry. Never opened when it exists: it may be another
/// user's (0640), which a member of the spool's group acting on that
/// user's message may not open for writing.
pub(super) fn enter(dir: &std::path::Path, id: &QueueId) -> io::Result<()> {
    let made = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o640)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(dir.join(id.as_str()));
    match made {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

impl Spool {
    fn bucket_dir(&self, at: u64) -> PathBuf {
        self.schedule.join(at.to_string())
    }

    fn entry(&self, at: u64, id: &QueueId) -> PathBuf {
        self.bucket_dir(at).join(id.as_str())
    }

    /// Makes `schedule/T/` if it is missing (mode 0770 whatever the
    /// umask; the spool layout first if even `schedule/` is missing).
    fn make_bucket(&self, at: u64) -> io::Result<()> {
        let dir = self.bucket_dir(at);
        let made = match DirBuilder::new().mode(DIR_MODE).create(&dir) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.create_dirs()
                    .map_err(|e| io::Error::other(e.to_string()))?;
                DirBuilder::new().mode(DIR_MODE).create(&dir)
            }
            other => other,
        };
        match made {
            Ok(()) => fs::set_permissions(&dir, fs::Permissions::from_mode(DIR_MODE)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Files `id` under bucket `at` (an empty file, no fsync: the
    /// schedule is rebuilt from the queue when a crash loses it).
    pub fn schedule(&self, id: &QueueId, at: u64) -> Result<()> {
        let path = self.entry(at, id);
        let dir = self.bucket_dir(at);
        let create = || enter(&dir, id);
        // A runner may remove an emptied bucket between our mkdir and our
        // create: then make it again.
        let mut result = create();
        for _ in 0..3 {
            match &result {
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                _ => break,
            }
            result = self.make_bucket(at).and_then(|()| create());
        }
        result.map_err(|e| Error::io(format_args!("creating {}", path.display()), &e))
    }

    /// Removes `id`'s entry in bucket `at`, and the bucket when that
    /// emptied it (0 stays).
    pub fn unschedule(&self, id: &QueueId, at: u64) {
        match fs::remove_file(self.entry(at, id)) {
            Ok(()) => self.prune_bucket(at),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => log::warn!("{id}: removing its schedule entry: {e}"),
        }
    }

    /// Moves `id`'s entry from bucket `from` (None: not known; then a
    /// new entry is made and any old one is left to be found stale) to
    /// bucket `to`. One rename when the entry is where it was said to be.
    pub fn reschedule(&self, id: &QueueId, from: Option<u64>, to: u64) -> Result<()> {
        let Some(from) = from else {
            return self.schedule(id, to);
        };
        if from == to {
            return Ok(());
        }
        let target = self.entry(to, id);
        let mut moved = fs::rename(self.entry(from, id), &target);
        if matches!(&moved, Err(e) if e.kind() == io::ErrorKind::NotFound) {
            // The target bucket is missing (or the entry is: then the
            // rename below fails again and a new entry is made).
            moved = self
                .make_bucket(to)
                .and_then(|()| fs::rename(self.entry(from, id), &target));
        }
        match moved {
            Ok(()) => {
                self.prune_bucket(from);
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => self.schedule(id, to),
            Err(e) => Err(Error::io(
                format_args!(
                    "moving {} to {}",
                    self.entry(from, id).display(),
                    target.display()
                ),
                &e,
            )),
        }
    }

    /// Removes bucket `at` if it is empty (a concurrent entry makes the
    /// rmdir fail, which is the point).
    fn prune_bucket(&self, at: u64) {
        if at != NOW_BUCKET {
            let _ = fs::remove_dir(self.bucket_dir(at));
        }
    }

    /// The buckets, sorted by time. Names that are not canonical numbers
    /// are skipped.
    fn buckets(&self) -> Result<Vec<Bucket>> {
        let entries = match fs::read_dir(&self.schedule) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(Error::io(
                    format_args!("reading {}", self.schedule.display()),
                    &e,
                ));
            }
        };
        let mut buckets = Vec::new();
        for entry in entries {
            let entry = entry
                .map_err(|e| Error::io(format_args!("reading {}", self.schedule.display()), &e))?;
            let name = entry.file_name();
            let Some(at) = name
                .to_str()
                .filter(|n| !n.is_empty() && (*n == "0" || !n.starts_with('0')))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            // The uid from the directory entry's own inode (lstat: a
            // symlink is not a bucket).
            let Ok(meta) = fs::symlink_metadata(entry.path()) else {
                continue;
            };
            if meta.is_dir() {
                buckets.push(Bucket {
                    at,
                    root_owned: meta.uid() == 0,
                });
            }
        }
        buckets.sort_by_key(|b| b.at);
        Ok(buckets)
    }

    /// Appends the entries filed under bucket `at` to `out`, sorted by
    /// ID (names that are not IDs skipped). Straight into the caller's
    /// list, with no list of the bucket's own: at a hundred thousand
    /// entries each copy is megabytes of a queue run's peak memory.
    fn push_bucket(&self, at: u64, out: &mut Vec<(u64, QueueId)>) {
        let Ok(entries) = fs::read_dir(self.bucket_dir(at)) else {
            return;
        };
        let start = out.len();
        out.extend(
            entries
                .flatten()
                .filter_map(|e| e.file_name().to_str().and_then(QueueId::parse))
                .map(|id| (at, id)),
        );
        out[start..].sort_unstable_by(|a, b| a.1.cmp(&b.1));
    }

    /// The next page of what is due at `now`: up to `limit` entries in
    /// (bucket, ID) order — oldest bucket first — past `after`, with
    /// those `skip` rules out left aside. One listing of `schedule/`,
    /// then of each due bucket; no file is opened, and memory is the
    /// page's whatever the buckets hold. None when there is no schedule
    /// (a spool laid out before it existed): the caller must look at
    /// the whole queue.
    pub fn due_page(
        &self,
        now: u64,
        after: Option<&(u64, QueueId)>,
        limit: usize,
        skip: impl Fn(&QueueId) -> bool,
    ) -> Result<Option<Page<(u64, QueueId)>>> {
        let buckets = self.buckets()?;
        if buckets.first().is_none_or(|b| b.at != NOW_BUCKET) {
            return Ok(None);
        }
        let mut page = Smallest::new(limit);
        for bucket in buckets.into_iter().take_while(|b| b.at <= now) {
            if after.is_some_and(|(at, _)| bucket.at < *at) {
                continue;
            }
            if page.full() {
                // Every entry of a later bucket sorts after the page.
                page.more_beyond();
                break;
            }
            let Ok(entries) = fs::read_dir(self.bucket_dir(bucket.at)) else {
                continue;
            };
            for id in entries
                .flatten()
                .filter_map(|e| e.file_name().to_str().and_then(QueueId::parse))
            {
                let key = (bucket.at, id);
                if after.is_none_or(|after| key > *after) && !skip(&key.1) {
                    page.push(key);
                }
            }
        }
        Ok(Some(page.into_page()))
    }

    /// Repairs the schedule from the queue (see the module comment):
    /// every queued message without an entry is filed under 0; entries
    /// of messages that are gone are removed; with `as_root`, entries in
    /// buckets root does not own move to 0. Directory listings only.
    /// Also returns the listing of `queue/` it compared against (sorted),
    /// for [`Spool::sweep_state`] after it: one listing of the queue a run.
    pub fn reconcile_schedule(&self, as_root: bool) -> Result<(Repairs, Vec<QueueId>)> {
        let mut repairs = Repairs::default();
        // The schedule first, then the queue: a message committed in
        // between is in the queue listing and perhaps not in ours, which
        // costs a second entry under 0, never a lost one; and an entry
        // whose message is absent from the later listing is truly stale
        // (the queue file goes before its entry).
        let mut listed: Vec<(u64, QueueId)> = Vec::new();
        for bucket in self.buckets()? {
            let start = listed.len();
            self.push_bucket(bucket.at, &mut listed);
            if as_root && !bucket.root_owned && bucket.at != NOW_BUCKET {
                for (at, id) in &mut listed[start..] {
                    self.reschedule(id, Some(bucket.at), NOW_BUCKET)?;
                    repairs.untrusted += 1;
                    *at = NOW_BUCKET;
                }
            }
        }
        // Both sorted by ID, then compared in one walk (no hashing of a
        // hundred thousand names).
        let queued = self.queued_ids()?;
        listed.sort_unstable_by(|a, b| a.1.cmp(&b.1));
        for (at, id) in &listed {
            if queued.binary_search(id).is_err() {
                self.unschedule(id, *at);
                repairs.stale += 1;
            }
        }
        let mut next = listed.iter().map(|(_, id)| id).peekable();
        for id in &queued {
            while next.next_if(|listed| *listed < id).is_some() {}
            if next.peek() != Some(&id) {
                self.schedule(id, NOW_BUCKET)?;
                repairs.missing += 1;
            }
        }
        Ok((repairs, queued))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_never_early_and_little_late() {
        let now = 1_000_000;
        assert_eq!(bucket_for(now - 5, now), NOW_BUCKET);
        assert_eq!(bucket_for(now, now), NOW_BUCKET);
        for wait in [1, 2, 15, 16, 17, 100, 1800, 3600, 86_400, 5 * 86_400] {
            let due = now + wait;
            let at = bucket_for(due, now);
            assert!(at >= due, "early for {wait}");
            let late = at - due;
            assert!(late < MAX_GRAIN, "{late} s late for {wait}");
            assert!(late * 16 <= wait.max(16), "{late} s late for {wait}");
        }
        // Far waits share buckets: one per 64 s.
        assert_eq!(bucket_for(now + 3600, now), bucket_for(now + 3601, now));
        // Absurd times neither overflow nor come early.
        assert_eq!(bucket_for(u64::MAX, now), u64::MAX);
        assert!(bucket_for(u64::MAX - 5, now) >= u64::MAX - 5);
    }
}
