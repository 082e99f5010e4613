//! The work of one queue run, shared by its workers (S8): one listing of
//! `queue/` at a time — not one per worker and pass — and the set of IDs
//! already taken in this run, so that no message is attempted twice in
//! it.
//!
//! The list is read again when it is used up (messages committed in the
//! meantime are found that way), but only if the previous listing led to
//! at least one claim: a listing of nothing but messages other runners
//! hold would otherwise be read again and again.

use std::collections::{HashSet, VecDeque};
use std::sync::{Mutex, MutexGuard};

use crate::error::Result;
use crate::spool::{QueueId, Spool};

/// Shared by the workers of one run.
pub struct WorkList {
    inner: Mutex<Work>,
}

struct Work {
    /// Listed, not yet handed out.
    pending: VecDeque<QueueId>,
    /// Handed out in this run (and not given back as busy).
    taken: HashSet<QueueId>,
    /// Some worker claimed a message since the last listing.
    progress: bool,
    /// queue/ has been listed at least once.
    listed: bool,
}

impl WorkList {
    /// An empty list; `first` (the message a submission just committed)
    /// is handed out before anything else.
    pub fn new(first: Option<QueueId>) -> WorkList {
        WorkList {
            inner: Mutex::new(Work {
                pending: first.into_iter().collect(),
                taken: HashSet::new(),
                progress: false,
                listed: false,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Work> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next message no worker of this run has taken. None: the run's
    /// work is done (nothing untaken is listed, or the last listing led
    /// to no claim).
    pub fn next(&self, spool: &Spool) -> Result<Option<QueueId>> {
        let mut work = self.lock();
        loop {
            while let Some(id) = work.pending.pop_front() {
                if work.taken.insert(id.clone()) {
                    return Ok(Some(id));
                }
            }
            if work.listed && !work.progress {
                return Ok(None);
            }
            let ids = spool.queued_ids()?;
            let Work { pending, taken, .. } = &mut *work;
            pending.extend(ids.into_iter().filter(|id| !taken.contains(id)));
            work.listed = true;
            work.progress = false;
            if work.pending.is_empty() {
                return Ok(None);
            }
        }
    }

    /// A worker claimed a message: the run made progress, so a later
    /// listing is worth reading.
    pub fn claimed(&self) {
        self.lock().progress = true;
    }

    /// A worker found `id` held by another runner: it may be taken again
    /// in this run (a `mailq` probing it holds it for microseconds).
    pub fn busy(&self, id: &QueueId) {
        self.lock().taken.remove(id);
    }

    /// Whether `id` was taken in this run.
    pub fn taken(&self, id: &QueueId) -> bool {
        self.lock().taken.contains(id)
    }

    /// Starts a new round after the workers gave their slots back: the
    /// next `next` lists queue/ again.
    pub fn rewind(&self) {
        let mut work = self.lock();
        work.progress = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::time::SystemTime;

    fn queue(spool: &Spool) -> QueueId {
        let mut draft = spool.begin(SystemTime::now()).unwrap();
        let env = crate::spool::Envelope {
            id: draft.id().clone(),
            arrival: 1,
            sender: "s@example.org".into(),
            recipients: vec!["r@example.org".into()],
            uid: 0,
            user: "u".into(),
            body_type: None,
            dsn_notify: None,
            dsn_ret: None,
            envid: None,
            size: 0,
        };
        draft.write_envelope(&env).unwrap();
        draft.data().write_all(b"x\n").unwrap();
        draft.commit().unwrap().id
    }

    #[test]
    fn each_message_is_handed_out_once_and_new_ones_are_found() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let a = queue(&spool);
        let list = WorkList::new(None);
        assert_eq!(list.next(&spool).unwrap(), Some(a.clone()));
        list.claimed();
        let b = queue(&spool);
        assert_eq!(list.next(&spool).unwrap(), Some(b));
        // The last listing led to no claim: the run is done.
        assert_eq!(list.next(&spool).unwrap(), None);
        assert!(list.taken(&a));
    }

    #[test]
    fn a_busy_message_is_offered_again_only_after_progress() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let a = queue(&spool);
        let list = WorkList::new(None);
        assert_eq!(list.next(&spool).unwrap(), Some(a.clone()));
        list.busy(&a);
        assert_eq!(list.next(&spool).unwrap(), None, "no spinning on it");
        list.rewind();
        assert_eq!(list.next(&spool).unwrap(), Some(a));
    }
}
