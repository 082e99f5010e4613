//! The work of one queue run, shared by its workers (S8): one listing of
//! what is due at a time — not one per worker and pass — and the set of
//! IDs already taken in this run, so that no message is attempted twice
//! in it.
//!
//! What is due comes from the schedule ([`Spool::due_page`]): a
//! listing of the due buckets, whatever the size of the queue. A forced
//! run (`-qI`/`-qR`/`-qS`: due or not) and a spool without a schedule
//! list `queue/` instead.
//!
//! The list is read again when it is used up (messages committed in the
//! meantime are found that way), but only if the previous listing led to
//! at least one claim: a listing of nothing but messages other runners
//! hold would otherwise be read again and again.
//!
//! A message whose sender already has their share of the run's workers
//! busy is *postponed*: set aside once, handed out again only when
//! nothing else is listed, to a worker that then waits for that share
//! (it has nothing else to do). So one user's slow mail never stands
//! between the run and anybody else's, and no worker spins on it.

use std::collections::{HashSet, VecDeque};
use std::sync::{Mutex, MutexGuard};

use crate::error::Result;
use crate::spool::{QueueId, Spool};

/// One message handed out, with the schedule bucket it was found in
/// (None: found in `queue/`, its entry not known).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// The message.
    pub id: QueueId,
    /// Its schedule bucket.
    pub bucket: Option<u64>,
    /// Some(uid): postponed because uid's share of the workers was busy;
    /// whoever takes it waits for that share.
    pub waits_for: Option<u32>,
}

/// Shared by the workers of one run.
pub struct WorkList {
    inner: Mutex<Work>,
}

struct Work {
    /// Listed, not yet handed out.
    pending: VecDeque<Item>,
    /// Set aside for their sender's share of the workers: handed out
    /// when `pending` is empty, before the next listing.
    postponed: VecDeque<Item>,
    /// Handed out in this run (and not given back as busy).
    taken: HashSet<QueueId>,
    /// Some worker claimed a message since the last listing.
    progress: bool,
    /// The work has been listed at least once.
    listed: bool,
    /// List every queued message, due or not.
    everything: bool,
    /// Where the pass over the due list has got to: the last key of a
    /// page cut short, from which the next listing goes on. None: the
    /// next listing starts a new pass.
    resume: Option<(u64, QueueId)>,
    /// How many messages one listing hands out at most ([`PAGE`]).
    page: usize,
}

impl WorkList {
    /// An empty list; `first` (the message a submission just committed)
    /// is handed out before anything else. `everything`: a forced run's
    /// list, every queued message.
    pub fn new(first: Option<Item>, everything: bool) -> WorkList {
        WorkList {
            inner: Mutex::new(Work {
                pending: first.into_iter().collect(),
                postponed: VecDeque::new(),
                taken: HashSet::new(),
                progress: false,
                listed: false,
                everything,
                resume: None,
                page: PAGE,
            }),
        }
    }

    /// The same list handing out at most `page` messages a listing.
    #[cfg(test)]
    fn paged(self, page: usize) -> WorkList {
        self.lock().page = page;
        self
    }

    fn lock(&self) -> MutexGuard<'_, Work> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next message no worker of this run has taken. None: the run's
    /// work is done (nothing untaken is listed, or the last listing led
    /// to no claim).
    pub fn next(&self, spool: &Spool) -> Result<Option<Item>> {
        let mut work = self.lock();
        loop {
            while let Some(item) = work.pending.pop_front() {
                if work.taken.insert(item.id.clone()) {
                    return Ok(Some(item));
                }
            }
            if let Some(item) = work.postponed.pop_front() {
                return Ok(Some(item));
            }
            let new_pass = work.resume.is_none();
            if new_pass && work.listed && !work.progress {
                return Ok(None);
            }
            let Work {
                pending,
                taken,
                everything,
                resume,
                page,
                ..
            } = &mut *work;
            let page = listing(
                spool,
                *everything,
                crate::clock::unix_now(),
                resume.as_ref(),
                *page,
                |id| taken.contains(id),
            )?;
            *resume = page.resume;
            *pending = VecDeque::from(page.items);
            work.listed = true;
            if new_pass {
                work.progress = false;
            }
            if work.pending.is_empty() && work.resume.is_none() {
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

    /// A worker found `item`'s sender (`uid`) with their share of the
    /// workers busy: it is handed out again, to wait for that share,
    /// once nothing else is listed. It stays taken meanwhile, so no
    /// listing hands it out twice.
    pub fn postpone(&self, item: &Item, uid: u32) {
        self.lock().postponed.push_back(Item {
            waits_for: Some(uid),
            ..item.clone()
        });
    }

    /// Whether `id` was taken in this run.
    pub fn taken(&self, id: &QueueId) -> bool {
        self.lock().taken.contains(id)
    }

    /// Whether this list holds every queued message (a forced run).
    pub fn everything(&self) -> bool {
        self.lock().everything
    }

    /// Starts a new round after the workers gave their slots back: the
    /// next `next` lists queue/ again.
    pub fn rewind(&self) {
        let mut work = self.lock();
        work.progress = true;
    }
}

/// How many messages one listing hands out at most. The listing still
/// reads every due name (a page is the smallest keys past the last
/// page's end), so a queue of N costs N/PAGE listings; the memory is the
/// page's, whatever N.
pub const PAGE: usize = 16_384;

/// One page of a run's work.
pub struct Listing {
    /// The messages, in order.
    pub items: Vec<Item>,
    /// The key of the last, when the page was cut short: the next
    /// listing goes on from it.
    pub resume: Option<(u64, QueueId)>,
}

/// The next page of what is due at `now` — or, with `everything` or
/// without a schedule, of every queued message — past `after`, without
/// the messages `skip` rules out (those taken in this run).
pub fn listing(
    spool: &Spool,
    everything: bool,
    now: u64,
    after: Option<&(u64, QueueId)>,
    limit: usize,
    skip: impl Fn(&QueueId) -> bool,
) -> Result<Listing> {
    if !everything && let Some(due) = spool.due_page(now, after, limit, &skip)? {
        let resume = due.more.then(|| due.keys.last().cloned()).flatten();
        return Ok(Listing {
            items: due
                .keys
                .into_iter()
                .map(|(bucket, id)| Item {
                    id,
                    bucket: Some(bucket),
                    waits_for: None,
                })
                .collect(),
            resume,
        });
    }
    // The whole queue, in ID order: the bucket of its keys is always 0.
    let queued = spool.queued_page(after.map(|(_, id)| id), limit, &skip)?;
    let resume = queued
        .more
        .then(|| queued.keys.last().map(|id| (0, id.clone())))
        .flatten();
    Ok(Listing {
        items: queued
            .keys
            .into_iter()
            .map(|id| Item {
                id,
                bucket: None,
                waits_for: None,
            })
            .collect(),
        resume,
    })
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
            chain: Vec::new(),
            size: 0,
        };
        draft.write_envelope(&env).unwrap();
        draft.data().write_all(b"x\n").unwrap();
        draft.commit().unwrap().id
    }

    fn due(id: &QueueId) -> Item {
        Item {
            id: id.clone(),
            bucket: Some(crate::spool::NOW_BUCKET),
            waits_for: None,
        }
    }

    #[test]
    fn each_message_is_handed_out_once_and_new_ones_are_found() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let a = queue(&spool);
        let list = WorkList::new(None, false);
        assert_eq!(list.next(&spool).unwrap(), Some(due(&a)));
        list.claimed();
        let b = queue(&spool);
        assert_eq!(list.next(&spool).unwrap(), Some(due(&b)));
        // The last listing led to no claim: the run is done.
        assert_eq!(list.next(&spool).unwrap(), None);
        assert!(list.taken(&a));
    }

    #[test]
    fn a_busy_message_is_offered_again_only_after_progress() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let a = queue(&spool);
        let list = WorkList::new(None, false);
        assert_eq!(list.next(&spool).unwrap(), Some(due(&a)));
        list.busy(&a);
        assert_eq!(list.next(&spool).unwrap(), None, "no spinning on it");
        list.rewind();
        assert_eq!(list.next(&spool).unwrap(), Some(due(&a)));
    }

    #[test]
    fn a_queue_larger_than_a_page_is_handed_out_whole_once_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let mut ids: Vec<QueueId> = (0..7).map(|_| queue(&spool)).collect();
        ids.sort();
        for everything in [false, true] {
            let list = WorkList::new(None, everything).paged(3);
            let mut handed = Vec::new();
            while let Some(item) = list.next(&spool).unwrap() {
                handed.push(item.id);
            }
            assert_eq!(handed, ids, "everything={everything}");
        }
        // A page of messages all busy elsewhere does not hide the next.
        let list = WorkList::new(None, false).paged(3);
        for _ in 0..3 {
            let item = list.next(&spool).unwrap().unwrap();
            list.busy(&item.id);
        }
        assert_eq!(
            list.next(&spool).unwrap().map(|i| i.id),
            Some(ids[3].clone())
        );
    }
}
