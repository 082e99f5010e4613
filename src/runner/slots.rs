//! Connection slots: lock files in the spool's `hosts/` directory (D7).
//!
//! A slot is an exclusive flock on one of `count` files named
//! `PREFIX.slot-N`. Whoever holds one may run (runner slots), hold an SMTP
//! connection (global connection slots) or connect to a destination
//! (per-destination slots); the lock dies with its holder, so a killed
//! runner never leaks a slot. Because the files are shared by every
//! process on the machine, any number of concurrent `sendmail` processes
//! opens at most `count` connections.
//!
//! A holder may be stopped (SIGSTOP) by the user it runs for, and then
//! holds its slot for as long as that user likes. Two rules keep that
//! from stalling anybody else: an ordinary user's runners may take only
//! their [`Share`] of a pool (the lower half of its slots), so root's and
//! the other users' runs always find the rest; and nobody waits for a
//! slot without a deadline.

use std::fs::{File, OpenOptions, TryLockError};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// Mode of the slot files: the spool group shares them.
const SLOT_MODE: u32 = 0o660;

/// A held slot; released when dropped.
#[derive(Debug)]
pub struct Slot {
    _file: File,
    index: u32,
}

impl Slot {
    /// Which of the slot files this is (for logs and tests).
    pub fn index(&self) -> u32 {
        self.index
    }
}

/// Opens (creating if needed) a slot file. flock needs no write access,
/// so an existing one is opened read-only: a slot file root created is
/// still usable by a runner that only holds the spool group. A new one
/// gets exactly SLOT_MODE, whatever the umask.
fn open_slot(dir: &Path, prefix: &str, index: u32) -> Result<File> {
    let path = dir.join(format!("{prefix}.slot-{index}"));
    let flags = libc::O_NOFOLLOW | libc::O_CLOEXEC;
    let err = |e: std::io::Error| Error::io(format_args!("opening {}", path.display()), &e);
    let existing = || {
        OpenOptions::new()
            .read(true)
            .custom_flags(flags)
            .open(&path)
    };
    match existing() {
        Ok(file) => return Ok(file),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    match OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(SLOT_MODE)
        .custom_flags(flags)
        .open(&path)
    {
        Ok(file) => {
            use std::os::unix::fs::PermissionsExt;
            let _ = file.set_permissions(std::fs::Permissions::from_mode(SLOT_MODE));
            Ok(file)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => existing().map_err(err),
        Err(e) => Err(err(e)),
    }
}

/// How much of a pool a runner may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Share {
    /// Root's and the spool group's runners: every slot.
    Whole,
    /// An ordinary user's runners: half the slots (at least one).
    User,
}

impl Share {
    /// How many of `count` slots this share may take.
    pub fn of(self, count: u32) -> u32 {
        let count = count.max(1);
        match self {
            Share::Whole => count,
            Share::User => (count / 2).max(1),
        }
    }
}

/// Takes a free slot among `count`, without waiting. Ok(None) when all
/// are held. The search starts at a random index so that processes do
/// not all queue up on slot 0.
pub fn try_acquire(dir: &Path, prefix: &str, count: u32) -> Result<Option<Slot>> {
    try_acquire_shared(dir, prefix, count, Share::Whole)
}

/// [`try_acquire`] within `share` of the pool: the slots an ordinary
/// user's runners may take are the first [`Share::of`] of them.
pub fn try_acquire_shared(
    dir: &Path,
    prefix: &str,
    count: u32,
    share: Share,
) -> Result<Option<Slot>> {
    let count = share.of(count);
    let start = rand::random_range(0..count);
    for k in 0..count {
        let index = (start + k) % count;
        let file = open_slot(dir, prefix, index)?;
        match file.try_lock() {
            Ok(()) => return Ok(Some(Slot { _file: file, index })),
            Err(TryLockError::WouldBlock) => continue,
            Err(TryLockError::Error(e)) => {
                return Err(Error::io(format_args!("locking slot {prefix}"), &e));
            }
        }
    }
    Ok(None)
}

/// Takes a slot of `share` among `count`, waiting for one until `limit`
/// has passed: Ok(None) then. Polls (from 5 ms, backing off to 250 ms)
/// rather than blocking in flock, whose holder may be a stopped process.
pub fn acquire_within(
    dir: &Path,
    prefix: &str,
    count: u32,
    share: Share,
    limit: Duration,
) -> Result<Option<Slot>> {
    let deadline = Instant::now() + limit;
    let mut pause = Duration::from_millis(5);
    loop {
        if let Some(slot) = try_acquire_shared(dir, prefix, count, share)? {
            return Ok(Some(slot));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        std::thread::sleep(pause.min(left));
        pause = (pause * 2).min(Duration::from_millis(250));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_count_slots_are_held_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let a = try_acquire(dir.path(), "runner", 2).unwrap().unwrap();
        let b = try_acquire(dir.path(), "runner", 2).unwrap().unwrap();
        assert_ne!(a.index(), b.index());
        assert!(try_acquire(dir.path(), "runner", 2).unwrap().is_none());
        drop(a);
        assert!(try_acquire(dir.path(), "runner", 2).unwrap().is_some());
    }

    #[test]
    fn prefixes_are_independent() {
        let dir = tempfile::tempdir().unwrap();
        let _a = try_acquire(dir.path(), "dest-a.example", 1)
            .unwrap()
            .unwrap();
        assert!(
            try_acquire(dir.path(), "dest-b.example", 1)
                .unwrap()
                .is_some()
        );
        assert!(
            try_acquire(dir.path(), "dest-a.example", 1)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn acquire_within_waits_for_a_release() {
        let dir = tempfile::tempdir().unwrap();
        let held = try_acquire(dir.path(), "x", 1).unwrap().unwrap();
        let path = dir.path().to_path_buf();
        let waiter = std::thread::spawn(move || {
            acquire_within(&path, "x", 1, Share::Whole, Duration::from_secs(60))
                .unwrap()
                .map(|s| s.index())
        });
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            !waiter.is_finished(),
            "acquire returned while the slot was held"
        );
        drop(held);
        assert_eq!(waiter.join().unwrap(), Some(0));
    }

    #[test]
    fn acquire_within_gives_up_at_its_limit() {
        let dir = tempfile::tempdir().unwrap();
        let _held = try_acquire(dir.path(), "x", 1).unwrap().unwrap();
        let got = acquire_within(dir.path(), "x", 1, Share::Whole, Duration::from_millis(100));
        assert!(got.unwrap().is_none());
    }

    #[test]
    fn a_users_share_leaves_the_rest_of_the_pool_free() {
        let dir = tempfile::tempdir().unwrap();
        let mut users = Vec::new();
        while let Some(s) = try_acquire_shared(dir.path(), "p", 4, Share::User).unwrap() {
            users.push(s);
        }
        assert_eq!(users.len(), 2, "a user's share of 4 is 2");
        let a = try_acquire(dir.path(), "p", 4).unwrap().unwrap();
        let b = try_acquire(dir.path(), "p", 4).unwrap().unwrap();
        assert!(a.index() >= 2 && b.index() >= 2);
        assert!(try_acquire(dir.path(), "p", 4).unwrap().is_none());
        assert_eq!(Share::User.of(1), 1);
        assert_eq!(Share::User.of(3), 1);
        assert_eq!(Share::Whole.of(3), 3);
    }
}
