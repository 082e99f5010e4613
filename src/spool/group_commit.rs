//! Group commit of one directory: the threads of a process that have
//! each changed an entry in it and need that change durable share one
//! `fsync` of the directory, instead of one each.
//!
//! The protocol is a ticket and two counters under a mutex. A caller
//! takes a ticket *after* its change (the link, the unlink) has returned,
//! so every ticket issued before a sync begins names a change that the
//! sync covers. The first caller to find no sync running starts one for
//! every ticket issued so far and syncs for all of them; a caller that
//! arrives while a sync runs waits for it to end, then for the next one
//! (its change may have missed the one in flight), which the first of
//! the waiters starts. N callers arriving together therefore cost one or
//! two syncs, not N, and nobody returns before a sync that began after
//! its own change has completed.
//!
//! Only the threads of one process share a sync here. Across processes
//! nothing more is needed: each process syncs after its own changes, so
//! its own guarantee never depends on another's; and on a journalling
//! file system (ext4, XFS) an fsync commits the running journal
//! transaction, which holds every process's changes made before it —
//! so the runners of a spool that dot at the same moment share the disk
//! flush anyway, and a later fsync that finds its changes already
//! committed returns at once.
//!
//! A sync that fails fails every ticket it was meant to cover (and none
//! is retried: after a failed fsync Linux may report the next one clean
//! with the data still lost); the callers decide what to do instead.

use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::sync::{Condvar, Mutex, MutexGuard};

/// A change made and not yet known to be durable: issued by
/// [`GroupCommit::issue`], redeemed by [`GroupCommit::wait`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a change is durable only once waited for"]
pub struct Ticket(u64);

/// The shared syncs of one directory.
pub struct GroupCommit {
    dir: PathBuf,
    progress: Mutex<Progress>,
    synced: Condvar,
}

#[derive(Default)]
struct Progress {
    /// Tickets issued: changes made and waiting to be durable.
    issued: u64,
    /// Every ticket up to this one is covered by a completed sync.
    durable: u64,
    /// The highest ticket a failed sync was meant to cover, and why.
    failed: Option<(u64, io::ErrorKind, String)>,
    /// A sync is running (its caller holds `dir_file`).
    syncing: bool,
    /// The directory, opened at the first sync and kept.
    dir_file: Option<File>,
    /// Syncs made (the tests count them).
    syncs: u64,
}

impl std::fmt::Debug for GroupCommit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GroupCommit({})", self.dir.display())
    }
}

impl GroupCommit {
    /// Syncs of `dir`; nothing is opened until the first.
    pub fn new(dir: PathBuf) -> GroupCommit {
        GroupCommit {
            dir,
            progress: Mutex::new(Progress::default()),
            synced: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Progress> {
        self.progress.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Returns once the change the caller has just made in the directory
    /// is durable: a sync that began after this call has completed (the
    /// caller's own, or one it shared). Err: that sync failed.
    #[cfg(test)]
    pub fn commit(&self) -> io::Result<()> {
        self.wait(self.issue())
    }

    /// Takes a ticket for the change the caller has just made in the
    /// directory, without waiting: [`GroupCommit::wait`] with it later
    /// returns once the change is durable. Between the two the caller
    /// does other work, and a sync another caller starts meanwhile may
    /// cover the change by then (the window link is made before MAIL and
    /// waited for before the final dot).
    pub fn issue(&self) -> Ticket {
        let mut progress = self.lock();
        progress.issued += 1;
        Ticket(progress.issued)
    }

    /// Whether the change `ticket` was issued for is durable already (a
    /// sync that began after it has completed): [`GroupCommit::wait`]
    /// would return at once.
    pub fn is_durable(&self, Ticket(ticket): Ticket) -> bool {
        self.lock().durable >= ticket
    }

    /// Returns once the change `ticket` was issued for is durable.
    pub fn wait(&self, ticket: Ticket) -> io::Result<()> {
        self.wait_by(ticket, &|file: &mut Option<File>| {
            if file.is_none() {
                *file = Some(super::durable::open_dir(&self.dir)?);
            }
            file.as_ref().map_or(Ok(()), File::sync_all)
        })
    }

    /// How many syncs have been made.
    #[cfg(test)]
    fn syncs(&self) -> u64 {
        self.lock().syncs
    }

    /// [`GroupCommit::commit`] with `sync` as the sync (the tests' way
    /// of holding one open).
    #[cfg(test)]
    fn commit_by(&self, sync: &dyn Fn(&mut Option<File>) -> io::Result<()>) -> io::Result<()> {
        self.wait_by(self.issue(), sync)
    }

    /// [`GroupCommit::wait`] with `sync` as the sync.
    fn wait_by(
        &self,
        Ticket(ticket): Ticket,
        sync: &dyn Fn(&mut Option<File>) -> io::Result<()>,
    ) -> io::Result<()> {
        let mut progress = self.lock();
        loop {
            if progress.durable >= ticket {
                return Ok(());
            }
            if let Some((upto, kind, why)) = &progress.failed
                && *upto >= ticket
            {
                return Err(io::Error::new(*kind, why.clone()));
            }
            if progress.syncing {
                progress = self
                    .synced
                    .wait(progress)
                    .unwrap_or_else(|p| p.into_inner());
                continue;
            }
            // Nobody is syncing: this caller syncs for every ticket
            // issued so far, the lock released meanwhile so that later
            // callers can take theirs.
            progress.syncing = true;
            let target = progress.issued;
            let mut file = progress.dir_file.take();
            drop(progress);
            let result = sync(&mut file);
            progress = self.lock();
            progress.syncing = false;
            progress.syncs += 1;
            match result {
                Ok(()) => {
                    progress.durable = progress.durable.max(target);
                    progress.dir_file = file;
                }
                Err(e) => {
                    // The descriptor is not reused: the next sync opens
                    // the directory afresh.
                    let why = format!("fsync {}: {e}", self.dir.display());
                    progress.failed = Some((target, e.kind(), why));
                }
            }
            self.synced.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc;

    #[test]
    fn one_caller_syncs_once_per_commit() {
        let dir = tempfile::tempdir().unwrap();
        let sync = GroupCommit::new(dir.path().to_path_buf());
        sync.commit().unwrap();
        sync.commit().unwrap();
        assert_eq!(sync.syncs(), 2);
    }

    #[test]
    fn callers_that_arrive_during_a_sync_share_the_next_one() {
        let dir = tempfile::tempdir().unwrap();
        let commit = Arc::new(GroupCommit::new(dir.path().to_path_buf()));
        // The first sync blocks until released; the syncs are counted.
        let (release, held) = mpsc::channel::<()>();
        let held = Mutex::new(held);
        let started = Arc::new(AtomicUsize::new(0));
        let first = {
            let (commit, started) = (commit.clone(), started.clone());
            let held = Arc::new(held);
            std::thread::spawn(move || {
                commit.commit_by(&|_| {
                    started.fetch_add(1, Ordering::SeqCst);
                    held.lock().unwrap().recv().unwrap();
                    Ok(())
                })
            })
        };
        wait_for(|| started.load(Ordering::SeqCst) == 1);
        // Eight callers change the directory while that sync runs.
        let late: Vec<_> = (0..8)
            .map(|_| {
                let (commit, started) = (commit.clone(), started.clone());
                std::thread::spawn(move || {
                    commit.commit_by(&|_| {
                        started.fetch_add(1, Ordering::SeqCst);
                        Ok(())
                    })
                })
            })
            .collect();
        wait_for(|| commit.lock().issued == 9);
        release.send(()).unwrap();
        first.join().unwrap().unwrap();
        for t in late {
            t.join().unwrap().unwrap();
        }
        // One sync for the first, one shared by the eight.
        assert_eq!(started.load(Ordering::SeqCst), 2);
        assert_eq!(commit.syncs(), 2);
    }

    /// Polls `done` with a deadline.
    fn wait_for(done: impl Fn() -> bool) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !done() {
            assert!(std::time::Instant::now() < deadline, "timed out");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    #[test]
    fn a_ticket_covered_by_a_sync_made_meanwhile_waits_for_none() {
        let dir = tempfile::tempdir().unwrap();
        let sync = GroupCommit::new(dir.path().to_path_buf());
        let early = sync.issue();
        // Another caller's sync, begun after the early change.
        sync.commit().unwrap();
        assert_eq!(sync.syncs(), 1);
        sync.wait(early).unwrap();
        assert_eq!(sync.syncs(), 1, "already durable: no sync of its own");
        // A ticket nobody's sync covered gets one.
        let late = sync.issue();
        sync.wait(late).unwrap();
        assert_eq!(sync.syncs(), 2);
    }

    #[test]
    fn a_failed_sync_fails_its_callers() {
        let dir = tempfile::tempdir().unwrap();
        let sync = GroupCommit::new(dir.path().join("missing"));
        let err = sync.commit().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(err.to_string().contains("missing"), "{err}");
    }
}
