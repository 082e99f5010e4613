//! Connection slots: lock files in the spool's `hosts/` directory (D7).
//!
//! A slot is an exclusive flock on one of `count` files named
//! `PREFIX.slot-N`. Whoever holds one may run (global slots) or connect to
//! a destination (per-destination slots); the lock dies with its holder,
//! so a killed runner never leaks a slot. Because the files are shared by
//! every process on the machine, any number of concurrent `sendmail`
//! processes opens at most `count` connections.

use std::fs::{File, OpenOptions, TryLockError};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

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

/// Takes a free slot among `count`, without waiting. Ok(None) when all
/// are held. The search starts at a random index so that processes do
/// not all queue up on slot 0.
pub fn try_acquire(dir: &Path, prefix: &str, count: u32) -> Result<Option<Slot>> {
    let count = count.max(1);
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

/// Takes a slot among `count`, waiting for one when all are held. The
/// wait is a blocking flock on one slot chosen at random: its holder is
/// in a transaction bounded by the SMTP timeouts, so the wait is too.
pub fn acquire(dir: &Path, prefix: &str, count: u32) -> Result<Slot> {
    if let Some(slot) = try_acquire(dir, prefix, count)? {
        return Ok(slot);
    }
    let index = rand::random_range(0..count.max(1));
    let file = open_slot(dir, prefix, index)?;
    file.lock()
        .map_err(|e| Error::io(format_args!("locking slot {prefix}"), &e))?;
    Ok(Slot { _file: file, index })
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
    fn acquire_waits_for_a_release() {
        let dir = tempfile::tempdir().unwrap();
        let held = try_acquire(dir.path(), "x", 1).unwrap().unwrap();
        let path = dir.path().to_path_buf();
        let waiter = std::thread::spawn(move || acquire(&path, "x", 1).unwrap().index());
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(
            !waiter.is_finished(),
            "acquire returned while the slot was held"
        );
        drop(held);
        assert_eq!(waiter.join().unwrap(), 0);
    }
}
