//! Removals that share their directory fsync (group commit), for a queue
//! run with several workers.
//!
//! A finished message's removal must be durable (a power cut that undoes
//! it would deliver the message again), and its state file may go only
//! after that (D2: never a queue file without its state). Done inline,
//! every removal waits for its own fsync of `queue/`, and the workers of
//! a run spend their time waiting for the disk one after the other. Here
//! a worker unlinks the queue file and goes on with its next message;
//! one thread fsyncs `queue/` for every unlink made so far, then removes
//! their state files. Each removal still becomes durable within one
//! fsync of its unlink — the window a power cut can undo is no longer
//! than inline — but no worker waits for it.

use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use super::durable;

/// What the workers asked for and what the syncing thread has done.
#[derive(Default)]
struct Pending {
    /// Unlinks made (a counter).
    requested: u64,
    /// Unlinks covered by a completed fsync.
    synced: u64,
    /// State files (and open RFC 1047 window links) to remove once their
    /// queue file's removal is synced.
    states: Vec<PathBuf>,
    /// No more requests: the thread ends when it has caught up.
    stop: bool,
    /// The thread is waiting for requests: a new one must wake it. While
    /// it syncs it looks at the counters again before it waits, so a
    /// removal then needs no wake-up (a system call per message saved).
    idle: bool,
}

struct Shared {
    pending: Mutex<Pending>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The syncing thread of one queue run; dropping it waits until every
/// removal requested is durable and its state file gone.
pub struct GroupSync {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for GroupSync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GroupSync")
    }
}

impl GroupSync {
    /// Starts the thread that fsyncs `queue_dir`.
    pub fn start(queue_dir: PathBuf) -> std::io::Result<GroupSync> {
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending::default()),
            changed: Condvar::new(),
        });
        let theirs = shared.clone();
        let thread = std::thread::Builder::new()
            .name("queue-sync".into())
            .spawn(move || sync_loop(&theirs, &queue_dir))?;
        Ok(GroupSync {
            shared,
            thread: Some(thread),
        })
    }

    /// The queue file of a message has been unlinked: make that durable,
    /// then remove `state_file` and the message's `window` link if any.
    pub fn removed(&self, state_file: PathBuf, window: Option<PathBuf>) {
        let mut pending = self.shared.lock();
        pending.requested += 1;
        pending.states.push(state_file);
        pending.states.extend(window);
        if pending.idle {
            self.shared.changed.notify_all();
        }
    }
}

impl Drop for GroupSync {
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.changed.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn sync_loop(shared: &Shared, queue_dir: &std::path::Path) {
    // `queue/`, opened at the first sync and kept for the run (an open
    // and a close per sync saved); after a failed sync it is opened
    // afresh.
    let mut dir: Option<std::fs::File> = None;
    loop {
        let (target, states) = {
            let mut pending = shared.lock();
            while pending.requested == pending.synced && !pending.stop {
                pending.idle = true;
                pending = shared
                    .changed
                    .wait(pending)
                    .unwrap_or_else(|p| p.into_inner());
            }
            pending.idle = false;
            if pending.requested == pending.synced {
                return;
            }
            (pending.requested, std::mem::take(&mut pending.states))
        };
        // Every unlink counted in `target` happened before this fsync.
        let synced = match dir.take() {
            Some(file) => file.sync_all().map(|()| file),
            None => durable::open_dir(queue_dir).and_then(|f| f.sync_all().map(|()| f)),
        };
        match synced {
            Ok(file) => dir = Some(file),
            Err(e) => log::error!(
                "fsync {}: {e}: the removal of delivered messages may not survive a power cut",
                queue_dir.display()
            ),
        }
        for state in states {
            match std::fs::remove_file(&state) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => log::warn!("removing {}: {e}", state.display()),
            }
        }
        let mut pending = shared.lock();
        pending.synced = target;
        shared.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_file_goes_once_the_run_ends() {
        let dir = tempfile::tempdir().unwrap();
        let states: Vec<PathBuf> = (0..50).map(|i| dir.path().join(format!("s{i}"))).collect();
        for s in &states {
            std::fs::write(s, b"{}").unwrap();
        }
        let sync = GroupSync::start(dir.path().to_path_buf()).unwrap();
        std::thread::scope(|scope| {
            for chunk in states.chunks(10) {
                let sync = &sync;
                scope.spawn(move || {
                    for s in chunk {
                        sync.removed(s.clone(), None);
                    }
                });
            }
        });
        drop(sync);
        assert!(states.iter().all(|s| !s.exists()));
    }
}
