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
//! A holder may be stopped (SIGSTOP), or sit on a connection to a server
//! that never answers, for as long as the user it runs for likes. Three
//! rules keep that from stalling anybody else ([`Share`]):
//!
//! - root's and the spool group's runs may take any slot of a pool;
//! - ordinary users' runners, all of them together, only the lower half
//!   of it ([`users_part`]), so root's runs always find the upper half
//!   and the pool's bound stays the machine's bound whatever the number
//!   of users (no pool is multiplied by them);
//! - and each user only their own quota of that half ([`user_quota`]:
//!   all of it but one slot), counted in a pool of their own,
//!   `PREFIX=uUID` (a `=` is in no destination's key, so no domain can
//!   name another user's pool). A user's runner holds a slot of their
//!   quota *and* one of the users' half: one user's stuck connections
//!   always leave a slot of the half to the others.
//!
//! A pool of one or two slots has a users' half of one, which the first
//! user to take it holds (with `max_host_connections = 2`, users reach
//! one destination one connection at a time); several accounts of one
//! attacker together can still fill the users' half, never root's. And
//! nobody waits for a slot without a deadline.

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
    /// For an ordinary user's runner: the slot of their own quota held
    /// with it.
    _quota: Option<File>,
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

/// Who takes a slot, and so how much of a shared pool they may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Share {
    /// Root's and the spool group's runners: every slot.
    Whole,
    /// The runners of the ordinary user with this uid: a slot of their
    /// own quota and one of the users' half (see the module comment).
    User(u32),
}

/// How many slots of a pool of `count` the ordinary users' runners may
/// hold all together: the lower half, at least one. Also the size of
/// each user's own pools (`runner-uUID`, local deliveries).
pub fn users_part(count: u32) -> u32 {
    (count.max(1) / 2).max(1)
}

/// How many slots of a shared pool of `count` one ordinary user may
/// hold: every slot of the users' part but one (at least one), so that
/// one user never holds all of it when it has two or more.
pub fn user_quota(count: u32) -> u32 {
    users_part(count).saturating_sub(1).max(1)
}

/// The pool that counts `uid`'s slots of the pool `prefix`.
fn quota_prefix(prefix: &str, uid: u32) -> String {
    format!("{prefix}=u{uid}")
}

/// Takes a free slot among `count`, without waiting. Ok(None) when all
/// are held. The search starts at a random index so that processes do
/// not all queue up on slot 0.
pub fn try_acquire(dir: &Path, prefix: &str, count: u32) -> Result<Option<Slot>> {
    try_acquire_shared(dir, prefix, count, Share::Whole)
}

/// [`try_acquire`] as `share` may: for an ordinary user, a slot of
/// their quota ([`user_quota`], in `PREFIX=uUID`) and one of the first
/// [`users_part`] slots of the pool, both or neither.
pub fn try_acquire_shared(
    dir: &Path,
    prefix: &str,
    count: u32,
    share: Share,
) -> Result<Option<Slot>> {
    match share {
        Share::Whole => take(dir, prefix, count.max(1)),
        Share::User(uid) => {
            let Some(quota) = take(dir, &quota_prefix(prefix, uid), user_quota(count))? else {
                return Ok(None);
            };
            // Without a slot of the pool the quota's is given back.
            Ok(take(dir, prefix, users_part(count))?.map(|slot| Slot {
                _quota: Some(quota._file),
                ..slot
            }))
        }
    }
}

/// Takes a free slot among the first `count` of the pool `prefix`.
fn take(dir: &Path, prefix: &str, count: u32) -> Result<Option<Slot>> {
    let start = rand::random_range(0..count);
    for k in 0..count {
        let index = (start + k) % count;
        let file = open_slot(dir, prefix, index)?;
        match file.try_lock() {
            Ok(()) => {
                return Ok(Some(Slot {
                    _file: file,
                    index,
                    _quota: None,
                }));
            }
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
        for uid in [1000, 1001, 1002] {
            while let Some(s) = try_acquire_shared(dir.path(), "p", 8, Share::User(uid)).unwrap() {
                users.push(s);
            }
        }
        assert_eq!(users.len(), 4, "all users together: half of 8");
        let roots: Vec<_> = (0..4)
            .map(|_| try_acquire(dir.path(), "p", 8).unwrap().unwrap())
            .collect();
        assert!(roots.iter().all(|s| s.index() >= 4), "root's half is free");
        assert!(try_acquire(dir.path(), "p", 8).unwrap().is_none());
    }

    #[test]
    fn one_users_quota_leaves_a_slot_to_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let mallory = Share::User(1001);
        let held: Vec<_> =
            std::iter::from_fn(|| try_acquire_shared(dir.path(), "smtp", 4, mallory).unwrap())
                .collect();
        assert_eq!(held.len(), 1, "one user's quota of 4 is 1");
        let alice = try_acquire_shared(dir.path(), "smtp", 4, Share::User(1000)).unwrap();
        assert!(alice.is_some(), "the other user still gets a slot");
        // The quota is counted in a pool of the user's own, which no
        // destination's key can name.
        assert!(flocked_any(dir.path(), "smtp=u1001"));
    }

    #[test]
    fn a_quota_slot_is_given_back_when_the_pool_is_full() {
        let dir = tempfile::tempdir().unwrap();
        let _a = try_acquire_shared(dir.path(), "d", 2, Share::User(1000))
            .unwrap()
            .unwrap();
        assert!(
            try_acquire_shared(dir.path(), "d", 2, Share::User(1001))
                .unwrap()
                .is_none()
        );
        assert!(
            !flocked_any(dir.path(), "d=u1001"),
            "1001's quota slot was released"
        );
        assert!(
            try_acquire(dir.path(), "d", 2).unwrap().is_some(),
            "root's half"
        );
    }

    #[test]
    fn share_arithmetic() {
        // (pool, users' part, one user's quota)
        for (count, part, quota) in [
            (0, 1, 1),
            (1, 1, 1),
            (2, 1, 1),
            (3, 1, 1),
            (4, 2, 1),
            (6, 3, 2),
            (10, 5, 4),
            (11, 5, 4),
        ] {
            assert_eq!(users_part(count), part, "users' part of {count}");
            assert_eq!(user_quota(count), quota, "a user's quota of {count}");
        }
    }

    /// Whether some slot of `prefix` in `dir` is held (by a probe that
    /// takes and gives back each).
    fn flocked_any(dir: &Path, prefix: &str) -> bool {
        (0..8).any(|i| {
            let path = dir.join(format!("{prefix}.slot-{i}"));
            path.exists() && File::open(&path).unwrap().try_lock().is_err()
        })
    }
}
