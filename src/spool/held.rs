//! Which queue files runners hold, for a listing of the whole queue.
//!
//! A runner's claim is an exclusive flock on the queue file (D1). The
//! plain way to see one is to try a shared lock on each file listed, but
//! at a hundred thousand messages that is a hundred thousand flock calls
//! and as many closes made dearer by the lock they drop: a sixth of
//! `mailq`'s time, measured (issue 25). The kernel lists every lock held
//! in `/proc/locks`, by device and inode; one read of it answers for the
//! whole listing.
//!
//! That list is trusted only once it has shown a lock of our own on a
//! queue file of this spool, found by the device and inode `fstat` gives
//! for it: a file system that reports other numbers there (an overlay
//! whose files show the device of a lower layer, say) then never passes,
//! and each file is asked the plain way. It is read again when it is
//! more than [`FRESH`] old, so a long listing shows claims about as they
//! are when each line is printed, as the per-file check does.

use std::collections::HashSet;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

/// How long one reading of `/proc/locks` stands for the present.
const FRESH: Duration = Duration::from_millis(100);

/// The kernel's list of locks.
const PROC_LOCKS: &str = "/proc/locks";

/// How a listing tells a held queue file from a free one.
pub(super) enum Held {
    /// Not yet decided: the first file asked decides.
    Undecided,
    /// From `/proc/locks`: the (device, inode) of each file under an
    /// exclusive flock, as read at `read_at`.
    Listed {
        exclusive: HashSet<(u64, u64)>,
        read_at: Instant,
    },
    /// A shared lock tried on each file.
    PerFile,
}

impl Held {
    pub(super) fn new() -> Held {
        Held::Undecided
    }

    /// Whether a runner holds `file` now.
    pub(super) fn claimed(&mut self, file: &File, meta: &std::fs::Metadata) -> bool {
        if let Held::Undecided = self {
            *self = decide(file, meta);
        }
        match self {
            Held::Listed { exclusive, read_at } => {
                if read_at.elapsed() > FRESH {
                    match read_exclusive() {
                        Some(fresh) => {
                            *exclusive = fresh;
                            *read_at = Instant::now();
                        }
                        None => *self = Held::PerFile,
                    }
                    return self.claimed(file, meta);
                }
                exclusive.contains(&(meta.dev(), meta.ino()))
            }
            _ => try_shared(file),
        }
    }
}

/// The plain check: a shared lock conflicts only with a runner's
/// exclusive claim; it is dropped with the file.
fn try_shared(file: &File) -> bool {
    matches!(
        file.try_lock_shared(),
        Err(std::fs::TryLockError::WouldBlock)
    )
}

/// Takes a shared lock on `file` (a queue file), and trusts
/// `/proc/locks` if it lists that very lock of ours by the device and
/// inode `fstat` reported. A file a runner holds (the shared lock is
/// refused) leaves the question to the next file.
fn decide(file: &File, meta: &std::fs::Metadata) -> Held {
    match file.try_lock_shared() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => return Held::Undecided,
        Err(_) => return Held::PerFile,
    }
    let ours = std::process::id();
    let text = std::fs::read_to_string(PROC_LOCKS).ok();
    let _ = file.unlock();
    let Some(text) = text else {
        return Held::PerFile;
    };
    let seen = locks(&text).any(|l| {
        l.kind == "FLOCK"
            && l.access == "READ"
            && l.pid == ours
            && l.file == (meta.dev(), meta.ino())
    });
    if !seen {
        return Held::PerFile;
    }
    Held::Listed {
        exclusive: exclusive_of(&text),
        read_at: Instant::now(),
    }
}

fn read_exclusive() -> Option<HashSet<(u64, u64)>> {
    std::fs::read_to_string(PROC_LOCKS)
        .ok()
        .map(|text| exclusive_of(&text))
}

/// The files under an exclusive flock (a claim), waiters left out.
fn exclusive_of(text: &str) -> HashSet<(u64, u64)> {
    locks(text)
        .filter(|l| l.kind == "FLOCK" && l.access == "WRITE")
        .map(|l| l.file)
        .collect()
}

/// One lock held, as `/proc/locks` shows it.
struct Lock<'a> {
    kind: &'a str,
    access: &'a str,
    pid: u32,
    /// (st_dev, st_ino) as `fstat` gives them.
    file: (u64, u64),
}

/// The locks held, from the text of `/proc/locks`: lines such as
/// `1: FLOCK  ADVISORY  WRITE 1234 08:02:131 0 EOF`, the device's major
/// and minor in hex. Lines of waiters (`1: -> FLOCK …`) and lines not
/// of that shape are skipped.
fn locks(text: &str) -> impl Iterator<Item = Lock<'_>> {
    text.lines().filter_map(|line| {
        let mut words = line.split_whitespace().skip(1);
        let kind = words.next().filter(|k| *k != "->")?;
        let _advisory = words.next()?;
        let access = words.next()?;
        let pid = words.next()?.parse().ok()?;
        let mut file = words.next()?.split(':');
        let major = u32::from_str_radix(file.next()?, 16).ok()?;
        let minor = u32::from_str_radix(file.next()?, 16).ok()?;
        let ino = file.next()?.parse().ok()?;
        Some(Lock {
            kind,
            access,
            pid,
            file: (libc::makedev(major, minor), ino),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_locks_lines_are_read_by_device_and_inode() {
        let text = "1: FLOCK  ADVISORY  WRITE 1234 08:02:131 0 EOF\n\
                    1: -> FLOCK  ADVISORY  WRITE 99 08:02:131 0 EOF\n\
                    2: FLOCK  ADVISORY  READ 77 00:2a:5 0 EOF\n\
                    3: POSIX  ADVISORY  WRITE 5 08:02:200 0 EOF\n\
                    garbage\n";
        let all: Vec<_> = locks(text).collect();
        assert_eq!(all.len(), 3, "the waiter and the garbage skipped");
        assert_eq!(all[0].pid, 1234);
        assert_eq!(all[1].file, (libc::makedev(0, 0x2a), 5));
        let exclusive = exclusive_of(text);
        assert_eq!(
            exclusive,
            HashSet::from([(libc::makedev(8, 2), 131)]),
            "only held exclusive flocks: a claim"
        );
    }

    #[test]
    fn a_claim_is_seen_either_way() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q");
        std::fs::write(&path, b"x").unwrap();
        let (a, b) = (File::open(&path).unwrap(), File::open(&path).unwrap());
        let meta = a.metadata().unwrap();
        let mut held = Held::new();
        assert!(!held.claimed(&a, &meta));
        b.lock().unwrap();
        // Whichever way was chosen, the claim shows once read again.
        if let Held::Listed { read_at, .. } = &mut held {
            *read_at -= FRESH * 2;
        }
        assert!(held.claimed(&a, &meta));
        b.unlock().unwrap();
        if let Held::Listed { read_at, .. } = &mut held {
            *read_at -= FRESH * 2;
        }
        assert!(!held.claimed(&a, &meta));
    }
}
