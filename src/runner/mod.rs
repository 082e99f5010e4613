//! The delivery runner: everything between the commit point and the
//! recipient's server (RFC 1123 §5.3.1.1, RFC 1047; the invariants D1–D8 of docs/architecture.md).
//!
//! Three ways in:
//! - [`spawn_detached`]: after `sendmail` commits a message it forks a
//!   detached runner (`-odb`, the default) and exits at once;
//! - [`deliver_now`]: `-odi`/`-odf` deliver in the foreground;
//! - [`run_queue`]: `sendmail -q[…]` runs the due messages, with up to
//!   `max_connections` workers, once or every interval.
//!
//! A worker first takes one of `max_connections` global slots (lock files
//! in `hosts/`, [`slots`]); without one it leaves: the holders will see
//! its message. No wake-up is lost because a worker that gives its slot
//! back looks at the queue once more *after* releasing it: a message
//! committed while all slots were busy is either seen by that last look
//! or its own runner found a slot free.

mod attempt;
pub mod backoff;
pub mod bounce;
pub mod dane;
pub mod dkim;
pub mod dns;
pub mod hosts;
mod local;
pub mod mta_sts;
mod outcome;
pub mod probe;
mod record;
pub mod relays;
pub mod slots;
mod stop;
mod sts_policy;
mod tls_policy;
mod transport;
pub mod verify;
mod worklist;

pub use backoff::retry_delay;
pub use record::Tally;

use std::time::{Duration, SystemTime};

use crate::clock::unix_now;
use crate::config::Config;
use crate::error::Result;
use crate::privilege::{QueueFilter, Scope};
use crate::spool::{Envelope, HeldClaim, NOW_BUCKET, QueueId, Spool};

use transport::Transport;
use worklist::{Item, WorkList};

/// Prefix of the runner slot files in `hosts/` of root's and the spool
/// group's runs; an ordinary user's runs have their own pool,
/// `runner-uUID`, of half the size (their share), so that no user's
/// runners, however many or however stalled, take anybody else's.
const RUNNER_SLOTS: &str = "runner";

/// The longest a runner waits for a slot before it gives up on the
/// message for now (the holders' transactions are bounded by the SMTP
/// timeouts; a stopped holder must not hold us for longer than this).
pub const SLOT_WAIT: Duration = Duration::from_secs(300);

/// What a worker needs: the spool and the configuration, and what the
/// workers of one run learn together.
pub struct Context<'a> {
    /// The spool.
    pub spool: &'a Spool,
    /// The configuration.
    pub config: &'a Config,
    /// Mailboxes and files found locked past `mailbox_lock_wait` in this
    /// run: later deliveries to them in the same run are deferred at
    /// once, so a mailbox its owner keeps locked costs the run one lock
    /// wait, not one per message queued to it.
    pub busy_boxes: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl<'a> Context<'a> {
    /// A new run's context.
    pub fn new(spool: &'a Spool, config: &'a Config) -> Context<'a> {
        Context {
            spool,
            config,
            busy_boxes: Default::default(),
        }
    }
}

/// Which messages a queue run takes.
#[derive(Debug, Clone)]
pub struct Selection {
    /// `-qI`/`-qR`/`-qS` filters, all of which must match. A filtered run
    /// is a sysadmin asking for those messages now: it ignores retry
    /// times and the unreachable cache.
    pub filters: Vec<QueueFilter>,
    /// Whose messages: an ordinary user's run takes only their own
    /// ([`Scope`]).
    pub scope: Scope,
}

/// Why a recipient that was not tried is waiting: every hop of its
/// destination is in the unreachable cache (D6) until `until`. `mailq`
/// shows it, since such a recipient gets no state of its own. Remembers
/// each hop it looked up.
pub struct Waits<'a> {
    config: &'a Config,
    hosts_dir: std::path::PathBuf,
    /// Each hop looked up (all against the same `now`).
    seen: std::collections::HashMap<hosts::Hop, Option<hosts::HostStatus>>,
    /// Each destination's answer, as said: a backlog behind one
    /// unreachable smarthost asks the same question for every line.
    said: std::collections::HashMap<hosts::Destination, Option<std::rc::Rc<str>>>,
}

impl<'a> Waits<'a> {
    /// Lookups in `spool`'s destination records.
    pub fn new(config: &'a Config, spool: &Spool) -> Waits<'a> {
        Waits {
            config,
            hosts_dir: spool.hosts_dir(),
            seen: std::collections::HashMap::new(),
            said: std::collections::HashMap::new(),
        }
    }

    /// "HOP unreachable until TIME: ERROR" when every hop of the
    /// destination of mail from `sender` to `address` is not to be
    /// tried before a time after `now` (the hop named is the first to
    /// be retried).
    pub fn of(&mut self, sender: &str, address: &str, now: u64) -> Option<std::rc::Rc<str>> {
        let hosts::Routing::Remote(dest) = hosts::route_of(self.config, sender, address) else {
            return None;
        };
        if let Some(said) = self.said.get(&dest) {
            return said.clone();
        }
        let said = self.look_up(&dest, now).map(std::rc::Rc::from);
        self.said.insert(dest, said.clone());
        said
    }

    /// [`Waits::of`] for the destination `dest`, from the hops' records.
    fn look_up(&mut self, dest: &hosts::Destination, now: u64) -> Option<String> {
        let mut first: Option<(hosts::Hop, hosts::HostStatus)> = None;
        // The order does not matter here: all of them or none.
        for (hop, _) in relays::hops(self.config, dest, "") {
            let status = self
                .seen
                .entry(hop.clone())
                .or_insert_with(|| hosts::unreachable(&self.hosts_dir, &hop, now))
                .clone()?;
            if first
                .as_ref()
                .is_none_or(|(_, s)| status.unreachable_until < s.unreachable_until)
            {
                first = Some((hop, status));
            }
        }
        let (hop, status) = first?;
        Some(format!(
            "{hop} unreachable until {}: {}",
            crate::clock::local_time(status.unreachable_until),
            status.last_error
        ))
    }
}

impl Selection {
    /// The selection of a run by the calling user with `filters`: the
    /// caller's [`Scope`] over `spool`.
    pub fn for_caller(spool: &Spool, filters: Vec<QueueFilter>) -> Selection {
        Selection {
            filters,
            scope: Scope::of_caller(spool.group()),
        }
    }

    fn forced(&self) -> bool {
        !self.filters.is_empty()
    }

    /// The runner slot pool of this run: (prefix, count).
    fn runner_pool(&self, config: &Config) -> (String, u32) {
        match self.scope {
            Scope::Every => (RUNNER_SLOTS.to_string(), config.max_connections.max(1)),
            Scope::Own(uid) => (
                format!("{RUNNER_SLOTS}-u{uid}"),
                slots::users_part(config.max_connections),
            ),
        }
    }

    /// How much of the shared connection pools this run may take: an
    /// ordinary user's run, that user's quota of the users' half.
    fn share(&self) -> slots::Share {
        match self.scope {
            Scope::Every => slots::Share::Whole,
            Scope::Own(uid) => slots::Share::User(uid),
        }
    }

    /// Whether this run may even look at `id` (before any claim: a claim
    /// held on someone else's message, by a process its owner can stop,
    /// would stall their mail).
    fn may_touch(&self, spool: &Spool, id: &QueueId) -> bool {
        match self.scope {
            Scope::Every => true,
            Scope::Own(uid) => spool.owner_uid(id) == Some(uid),
        }
    }

    fn matches(&self, envelope: &Envelope) -> bool {
        if !self.scope.includes(envelope.uid) {
            return false;
        }
        self.filters
            .iter()
            .all(|f| f.matches(envelope.id.as_str(), &envelope.sender, &envelope.recipients))
    }
}

/// Seconds a held message's schedule entry is put off each time a run
/// comes across it ([`crate::queue::admin`]: a release files it as due at once).
pub(crate) const HELD_RECHECK: u64 = 86_400;

/// Forks a detached runner for the message just committed and returns
/// in the parent at once. The child leaves the caller's session and
/// process group and points its standard streams at /dev/null, so PHP,
/// cron or a shell reading sendmail's output never waits for delivery
/// (RFC 1123 §5.3.1.1). If fork fails the message simply waits for the
/// next queue run; the caller's exit status is not affected.
pub fn spawn_detached(spool: &Spool, config: &Config, first: &QueueId) {
    // SAFETY: sendmail is single-threaded here; the child only runs Rust
    // code of this process and exits.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Parent { .. }) => {}
        Ok(nix::unistd::ForkResult::Child) => {
            detach();
            return_large_blocks();
            let ctx = Context::new(spool, config);
            let selection = Selection::for_caller(spool, Vec::new());
            // The message just committed first (filed under 0 by its
            // commit), then whatever the schedule says is due.
            let list = WorkList::new(
                Some(Item {
                    id: first.clone(),
                    bucket: Some(NOW_BUCKET),
                    waits_for: None,
                }),
                false,
            );
            if let Err(e) = work(&ctx, &selection, &list, stop::Deadline::none()) {
                log::error!("runner: {e}");
            }
            std::process::exit(0);
        }
        Err(e) => {
            log::warn!("{first}: cannot fork a runner ({e}); it waits for the next queue run")
        }
    }
}

/// Makes the forked child independent of its caller.
fn detach() {
    let _ = nix::unistd::setsid();
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        use std::os::fd::AsRawFd;
        for fd in 0..3 {
            // SAFETY: dup2 onto the standard descriptors, which this
            // process owns; `null` stays open until after the calls.
            unsafe { libc::dup2(null.as_raw_fd(), fd) };
        }
    }
}

/// `-odi`/`-odf`: delivers the message `id` in this process, waiting for
/// a global slot if all are busy, and reports what became of it. `held`:
/// the claim the submission took before its commit
/// ([`crate::spool::Draft::hold_claim`]); without it the message is
/// claimed here, and may already be in another runner's hands.
pub fn deliver_now(
    spool: &Spool,
    config: &Config,
    id: &QueueId,
    held: Option<HeldClaim>,
) -> Result<Tally> {
    let ctx = Context::new(spool, config);
    let selection = Selection::for_caller(spool, Vec::new());
    let (pool, count) = selection.runner_pool(config);
    let slot = slots::acquire_within(
        &spool.hosts_dir(),
        &pool,
        count,
        slots::Share::Whole,
        SLOT_WAIT,
    )?;
    let Some(_slot) = slot else {
        return Ok(Tally {
            deferred: 1,
            last_error: Some("every runner slot stayed busy; it waits in the queue".into()),
            ..Tally::default()
        });
    };
    let claimed = match held {
        Some(held) => spool.claim_held(held)?,
        None => spool.claim_message(id)?,
    };
    let Some((claim, envelope)) = claimed else {
        // A queue runner took it first; it is in good hands.
        return Ok(Tally {
            deferred: 1,
            last_error: Some("being delivered by another runner".into()),
            ..Tally::default()
        });
    };
    let mut transport = Transport::new(config, spool.hosts_dir(), selection.share());
    let tally = attempt::attempt(
        &ctx,
        &mut transport,
        claim,
        envelope,
        true,
        SystemTime::now(),
        Some(NOW_BUCKET),
    )?;
    transport.close();
    Ok(tally)
}

/// `sendmail -q…`: delivers every due (or, with filters, every matching)
/// message with up to `max_connections` workers, then returns; with an
/// `interval`, repeats until SIGTERM. Each run starts no new message
/// after `queue_run_limit`, nor anything after SIGTERM ([`stop`]): what
/// is in hand is finished, the rest waits, due, for the next run.
pub fn run_queue(
    spool: &Spool,
    config: &Config,
    selection: &Selection,
    interval: Option<Duration>,
) -> Result<()> {
    stop::take_sigterm();
    return_large_blocks();
    loop {
        let deadline = stop::Deadline::starting_now(config.queue_run_limit);
        if let Err(e) = spool.sweep_drafts_and_windows(config.tmp_max_age, SystemTime::now()) {
            log::warn!("sweeping tmp/: {e}");
        }
        if nix::unistd::geteuid().is_root() {
            // Mail from callers the queue is closed to; only root may
            // take other users' files out of the sticky maildrop.
            match crate::accept::pickup::pickup_maildrop(spool, config, SystemTime::now()) {
                Ok(ids) if !ids.is_empty() => {
                    log::info!("{} message(s) picked up from the maildrop", ids.len())
                }
                Ok(_) => {}
                Err(e) => log::warn!("maildrop: {e}"),
            }
            spool.submission_counters().sweep(unix_now());
            // Whatever `tls` says now: caches of an earlier setting
            // expire too.
            sts_policy::sweep(&spool.hosts_dir(), unix_now());
            // After the pickup, which may have set refused drops aside.
            if let Err(e) = spool.sweep_corrupt(
                config.corrupt_max_age,
                config.corrupt_max_size,
                config.corrupt_max_files,
                SystemTime::now(),
            ) {
                log::warn!("sweeping corrupt/: {e}");
            }
        }
        let mut queued = None;
        if selection.scope == Scope::Every {
            // Messages the schedule lost (a crash between a commit and
            // its entry, a power cut): found by comparing directory
            // listings, no file opened. An ordinary user's run leaves
            // this to root's.
            match spool.reconcile_schedule(nix::unistd::geteuid().is_root()) {
                Ok((r, listed)) => {
                    if r != crate::spool::Repairs::default() {
                        log::info!(
                            "schedule repaired: {} message(s) without an entry, {} stale entries, {} entries moved out of buckets root does not own",
                            r.missing,
                            r.stale,
                            r.untrusted
                        );
                    }
                    queued = Some(listed);
                }
                Err(e) => log::warn!("repairing the schedule: {e}"),
            }
        }
        // With the queue listing the repair made, if it made one.
        spool.sweep_state(config.tmp_max_age, SystemTime::now(), queued.as_deref());
        drop(queued);
        run_once(spool, config, selection, deadline)?;
        record_complete_run(spool, selection);
        match interval {
            Some(interval) if stop::pause(interval) => {}
            _ => return Ok(()),
        }
    }
}

/// Makes every large allocation of a runner its own mapping, given back
/// to the system when freed. glibc otherwise raises its mapping
/// threshold to the largest block freed so far, after which the queue's
/// listings (megabytes at a hundred thousand messages) and the work
/// list's pages land in the heaps of the workers' arenas and stay
/// resident to the run's end, one copy per worker that ever listed:
/// measured at 100k, 22–29 MB peak against 12 MB with this.
fn return_large_blocks() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only tunes the allocator, before the workers start.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

/// Records the end of root's run for monitoring (`mailq --metrics`)
/// when it was complete: the whole queue (no filter), not cut short by
/// `queue_run_limit` or SIGTERM. A failure costs the record, not the run.
fn record_complete_run(spool: &Spool, selection: &Selection) {
    let whole = selection.scope == Scope::Every && selection.filters.is_empty();
    if whole
        && nix::unistd::geteuid().is_root()
        && !stop::stopping()
        && let Err(e) = spool.record_queue_run(unix_now())
    {
        log::warn!("recording the queue run's end: {e}");
    }
}

fn run_once(
    spool: &Spool,
    config: &Config,
    selection: &Selection,
    deadline: stop::Deadline,
) -> Result<()> {
    // Dropped at the end of this function, which waits for the last
    // removals to be durable.
    let spool = &spool.with_group_sync();
    let ctx = Context::new(spool, config);
    let list = WorkList::new(None, selection.forced());
    let workers = selection.runner_pool(config).1 as usize;
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                let (ctx, list) = (&ctx, &list);
                scope.spawn(move || work(ctx, selection, list, deadline))
            })
            .collect();
        let mut first_error = Ok(());
        for handle in handles {
            let result = handle.join().unwrap_or_else(|_| {
                Err(crate::error::Error::new(
                    crate::error::Kind::Software,
                    "a queue-run worker panicked",
                ))
            });
            if first_error.is_ok() {
                first_error = result;
            }
        }
        first_error
    })
}

/// One worker: take a runner slot, deliver what the run's shared work
/// list hands out (the message just committed first, for a submission's
/// runner) until it has nothing more, give the slot back, look once more
/// (the lost wake-up guard), repeat — until `deadline`: then the message
/// in hand is finished and none is taken after it.
fn work(
    ctx: &Context,
    selection: &Selection,
    list: &WorkList,
    deadline: stop::Deadline,
) -> Result<()> {
    let hosts_dir = ctx.spool.hosts_dir();
    let mut transport = Transport::new(ctx.config, hosts_dir.clone(), selection.share());
    let (pool, count) = selection.runner_pool(ctx.config);
    loop {
        let Some(slot) = slots::try_acquire(&hosts_dir, &pool, count)? else {
            return Ok(());
        };
        while !deadline.passed() {
            let Some(item) = list.next(ctx.spool)? else {
                break;
            };
            take(ctx, &mut transport, &item, selection, list);
        }
        transport.close();
        drop(slot);
        if deadline.passed() || !anything_left(ctx, selection, list)? {
            return Ok(());
        }
        list.rewind();
    }
}

/// Claims and attempts one message handed out by the work list. A
/// message with nothing to do now is passed over after one read of its
/// state — no claim, no envelope read (unless the run is forced) — and
/// its schedule entry, early, is moved to the state's time. Errors
/// concern this message only: they are logged and the worker goes on.
fn take(
    ctx: &Context,
    transport: &mut Transport,
    item: &Item,
    selection: &Selection,
    list: &WorkList,
) {
    let id = &item.id;
    if !selection.may_touch(ctx.spool, id) {
        return;
    }
    let now = unix_now();
    // A message filed as due now (just committed, released, a notice) is
    // claimed without that look: it nearly always has work, and the
    // attempt reads its state anyway, once it holds the claim — one
    // state file lookup less per message of a drain.
    if !selection.forced()
        && item.bucket != Some(NOW_BUCKET)
        && let Ok(state) = ctx.spool.read_state(id)
        && !attempt::has_work(state.as_ref(), now)
    {
        // A held message is looked at again a day later (a release
        // files it as due at once).
        let held = state.as_ref().is_some_and(|s| s.held);
        let next = match held {
            true => Some(now + HELD_RECHECK),
            false => state.as_ref().and_then(|s| s.next_due()),
        };
        if let Some(due) = next {
            let to = crate::spool::bucket_for(due, now);
            if let Err(e) = ctx.spool.reschedule(id, item.bucket, to) {
                log::warn!("{id}: {e}");
            }
        }
        return;
    }
    let workers = selection.runner_pool(ctx.config).1;
    // A postponed message: this worker has nothing else to do, so it
    // waits (bounded) for its sender's share before claiming it.
    let mut share = None;
    if let Some(uid) = item.waits_for {
        match slots::acquire_within(
            &ctx.spool.hosts_dir(),
            &worker_share_pool(uid),
            slots::users_part(workers),
            slots::Share::Whole,
            SLOT_WAIT,
        ) {
            Ok(Some(slot)) => share = Some(slot),
            // Still busy: it stays due, for the next run.
            Ok(None) => return,
            Err(e) => return log::error!("{id}: {e}"),
        }
    }
    let (claim, envelope) = match ctx.spool.claim_message(id) {
        Ok(Some(claimed)) => claimed,
        Ok(None) => {
            // Gone (delivered by another runner, or an entry that
            // outlived its message), or held by another runner.
            if ctx.spool.owner_uid(id).is_none() {
                if let Some(bucket) = item.bucket {
                    ctx.spool.unschedule(id, bucket);
                }
            } else {
                list.busy(id);
            }
            return;
        }
        Err(e) => return log::error!("{id}: {e}"),
    };
    // Root's run gives each ordinary sender at most half its workers
    // at once (their messages' DNS deadlines, lock waits and silent
    // servers included), so the other half is always free for
    // everybody else's mail (issue 20). Charged to the envelope's uid:
    // notices and forwarded copies root wrote carry the uid they are
    // about.
    if share.is_none() && selection.scope == Scope::Every && envelope.uid != 0 {
        match slots::try_acquire(
            &ctx.spool.hosts_dir(),
            &worker_share_pool(envelope.uid),
            slots::users_part(workers),
        ) {
            Ok(Some(slot)) => share = Some(slot),
            Ok(None) => {
                drop(claim);
                return list.postpone(item, envelope.uid);
            }
            Err(e) => return log::error!("{id}: {e}"),
        }
    }
    list.claimed();
    let result = if selection.matches(&envelope) {
        attempt::attempt(
            ctx,
            transport,
            claim,
            envelope,
            selection.forced(),
            SystemTime::now(),
            item.bucket,
        )
    } else {
        Ok(Tally::default())
    };
    if let Err(e) = result {
        log::error!("{id}: {e}");
        transport.discard();
    }
    drop(share);
}

/// The pool counting how many of root's workers one sender's messages
/// hold at once (`work-uUID` in `hosts/`: no record, slot or lock of
/// another kind starts so).
fn worker_share_pool(uid: u32) -> String {
    format!("work-u{uid}")
}

/// True when some message not taken in this run has work now and is
/// unclaimed — among the due entries of the schedule (every queued
/// message for a forced run). The claim is probed with a shared lock
/// ([`Spool::claimable`]): a message another runner holds is that
/// runner's business, and counting it would spin; and two runners
/// probing the same message at once must not each see the other's probe
/// as a claim and both stop.
fn anything_left(ctx: &Context, selection: &Selection, list: &WorkList) -> Result<bool> {
    let now = unix_now();
    let mut after = None;
    loop {
        let page = worklist::listing(
            ctx.spool,
            list.everything(),
            now,
            after.as_ref(),
            worklist::PAGE,
            |id| list.taken(id),
        )?;
        for item in page.items {
            let id = &item.id;
            if !selection.may_touch(ctx.spool, id) {
                continue;
            }
            let state = ctx.spool.read_state(id).ok().flatten();
            if (selection.forced() || attempt::has_work(state.as_ref(), now))
                && ctx.spool.claimable(id)
            {
                return Ok(true);
            }
        }
        if page.resume.is_none() {
            return Ok(false);
        }
        after = page.resume;
    }
}
