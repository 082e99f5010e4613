//! The RFC 1047 window marker: `window/ID`, a hard link to `queue/ID`,
//! present from just before a runner sends the final dot until the
//! outcome of that transaction is durable.
//!
//! A runner killed inside the window leaves the link behind; the queue
//! file then has two links, which is what every reader looks at: the
//! next claim ([`Claim::window_left_open`]) sets the message's possibly
//! delivered flag durably and closes the window, and `mailq` reports the
//! message possibly delivered from the link count alone (the fstat it
//! makes anyway), before any retry.
//!
//! Why a link and not a state file: it allocates no inode and writes no
//! data. A marker written as a new state file (create, write, rename)
//! per delivered message cost a third of a queue run's throughput, most
//! of it in the file system allocating inodes among the ones the run had
//! just freed. A link is one directory entry, and closing it is one
//! unlink of a name whose inode lives on.
//!
//! Durability, chosen: neither the link nor its removal is fsynced. A
//! power cut can undo either. Undoing the link loses only the flag: a
//! retry of a message the server may have had goes unflagged (an fsync
//! here, on every message's path, would halve the delivery rate for the
//! one case of a power cut inside a window of milliseconds). Undoing the
//! removal leaves a spurious flag on a message whose outcome is durable.
//! Neither loses a message or a recipient's recorded outcome: the marker
//! is never written over the state.
//!
//! Who may make it: the owner of the queue file or root
//! (`fs.protected_hardlinks`). A runner that cannot (a member of the
//! spool group running another user's message, a spool from before
//! `window/` existed) falls back to the marker in the state file
//! ([`DeliveryState::final_dot_sent`](super::DeliveryState)), which is
//! still read.

use std::fs;
use std::io;

use super::{Claim, Spool};

/// The directory of window links.
pub const WINDOW: &str = "window";

impl Spool {
    /// Opens the window of the claimed message: links `queue/ID` as
    /// `window/ID`. A link already there (an earlier transaction of the
    /// same attempt whose outcome was not written: every recipient so
    /// far was delivered) is the same window. An error means no marker
    /// was made: the caller uses the state file's.
    pub fn open_window(&self, claim: &Claim) -> io::Result<()> {
        let name = claim.id().as_str();
        match fs::hard_link(self.queue.join(name), self.window.join(name)) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
            _ => {}
        }
        claim.window_linked.set(true);
        Ok(())
    }

    /// Closes the claimed message's window, opened by this claim or left
    /// open by a runner that died: its outcome is durable now. A link
    /// already gone is not an error; any other failure leaves a spurious
    /// flag at worst, so it is logged.
    pub fn close_window(&self, claim: &Claim) {
        if !claim.in_window() {
            return;
        }
        claim.window_linked.set(false);
        let path = self.window.join(claim.id().as_str());
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => log::warn!("removing {}: {e}", path.display()),
        }
    }
}

impl Claim {
    /// When a window this claim's message is in was opened (unix time,
    /// from the queue file's ctime, which the link set), if a runner
    /// left it open: it died between the final dot and the durable
    /// outcome. Read from the claim's own fstat, made after the lock.
    pub fn window_left_open(&self) -> Option<u64> {
        self.window_since
    }

    /// Whether `window/ID` may exist: opened by this claim, or left open
    /// before it (and not closed since).
    pub(super) fn in_window(&self) -> bool {
        self.window_linked.get()
    }
}
