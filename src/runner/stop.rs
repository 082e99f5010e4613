//! When a queue run stops starting work: past its deadline
//! (`queue_run_limit`) or on SIGTERM. What is in hand is finished — a
//! transaction is never cut between the final dot and its reply (RFC
//! 1047), a mailbox never half written — but no new message, host
//! transaction or local delivery is begun; what was not begun is due at
//! once for the next run. systemd's `TimeoutStartSec=` on the queue
//! service sends the SIGTERM (to the main process only, `KillMode=mixed`),
//! and `TimeoutStopSec=` leaves the transactions in flight their time.
//!
//! SIGTERM is blocked in every thread of the run and taken by one thread
//! of its own with sigwait(2): a handler would interrupt the system calls
//! of the workers (a socket read with a timeout is not restarted, nor is
//! poll), which is exactly the reply wait it must not disturb. Children
//! started with `Command` get an empty signal mask back from std.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, Once};
use std::time::{Duration, Instant};

use nix::sys::signal::{SigSet, Signal};

/// SIGTERM arrived: the process starts nothing new, in any run.
static SIGNALLED: AtomicBool = AtomicBool::new(false);
/// This run is past its deadline (reset when a new run starts).
static PAST_DEADLINE: AtomicBool = AtomicBool::new(false);
/// Wakes a repeating run's pause between runs when SIGTERM arrives.
static WAKE: (Mutex<()>, Condvar) = (Mutex::new(()), Condvar::new());

/// Takes SIGTERM as "finish what is in hand, start nothing new" for the
/// rest of this process. Call before the workers start (they inherit the
/// blocked mask).
pub fn take_sigterm() {
    static INSTALLED: Once = Once::new();
    INSTALLED.call_once(|| {
        let mut set = SigSet::empty();
        set.add(Signal::SIGTERM);
        if let Err(e) = set.thread_block() {
            log::warn!("blocking SIGTERM: {e}; it ends the run as usual");
            return;
        }
        let spawned = std::thread::Builder::new()
            .name("sigterm".into())
            .spawn(move || {
                while let Ok(signal) = set.wait() {
                    if signal == Signal::SIGTERM && !SIGNALLED.swap(true, Ordering::SeqCst) {
                        log::warn!(
                            "SIGTERM: the queue run finishes what is in hand and starts nothing new"
                        );
                        let _guard = WAKE.0.lock();
                        WAKE.1.notify_all();
                    }
                }
            });
        if let Err(e) = spawned {
            // Nobody would take it: let it end the process as before.
            let _ = set.thread_unblock();
            log::warn!("no SIGTERM thread ({e}); it ends the run as usual");
        }
    });
}

/// A run's bound on starting work.
#[derive(Debug, Clone, Copy)]
pub struct Deadline(Option<Instant>);

impl Deadline {
    /// A run started now that starts nothing after `limit` (zero: no
    /// limit but SIGTERM).
    pub fn starting_now(limit: Duration) -> Deadline {
        PAST_DEADLINE.store(false, Ordering::SeqCst);
        Deadline((!limit.is_zero()).then(|| Instant::now() + limit))
    }

    /// No limit but SIGTERM (a submission's runner, `-odi`).
    pub fn none() -> Deadline {
        Deadline(None)
    }

    /// Whether the run must start nothing more; the first look past the
    /// deadline says so once in the log, and tells [`stopping`].
    pub fn passed(&self) -> bool {
        if stopping() {
            return true;
        }
        if !self.expired_at(Instant::now()) {
            return false;
        }
        if !PAST_DEADLINE.swap(true, Ordering::SeqCst) {
            log::info!(
                "queue_run_limit reached: the run finishes what is in hand and starts nothing new"
            );
        }
        true
    }

    fn expired_at(&self, now: Instant) -> bool {
        self.0.is_some_and(|at| now >= at)
    }
}

/// Whether SIGTERM arrived (a repeating run ends after this one).
pub fn signalled() -> bool {
    SIGNALLED.load(Ordering::SeqCst)
}

/// The pause of a repeating run (`-q30m`) between runs: `interval`, or
/// until SIGTERM (blocked, it would not end a plain sleep). False when
/// SIGTERM came: no further run.
pub fn pause(interval: Duration) -> bool {
    let deadline = Instant::now() + interval;
    let mut guard = WAKE.0.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        if signalled() {
            return false;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return true;
        }
        guard = match WAKE.1.wait_timeout(guard, left) {
            Ok((g, _)) => g,
            Err(p) => p.into_inner().0,
        };
    }
}

/// Whether no new transaction or delivery may begin (SIGTERM, or the
/// run's deadline seen passed).
pub fn stopping() -> bool {
    SIGNALLED.load(Ordering::SeqCst) || PAST_DEADLINE.load(Ordering::SeqCst)
}

#[cfg(test)]
mod tests {
    use super::*;

    // The process-wide flags are left alone: other tests' runs in this
    // process would stop starting work.
    #[test]
    fn a_deadline_passes_at_its_instant_and_none_never() {
        let now = Instant::now();
        let at = Deadline(Some(now + Duration::from_secs(60)));
        assert!(!at.expired_at(now));
        assert!(at.expired_at(now + Duration::from_secs(60)));
        assert!(!Deadline::none().expired_at(now + Duration::from_secs(1 << 30)));
        let zero = Duration::ZERO;
        assert!(!Deadline((!zero.is_zero()).then_some(now)).expired_at(now));
    }
}
