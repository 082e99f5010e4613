//! The RFC 1047 window marker: `window/ID`, a hard link to `queue/ID`,
//! present from the start of a transaction (made before MAIL, durable
//! before the final dot) until the outcome of that transaction is
//! durable.
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
//! Durability: the link is on disk before the dot goes out, its removal
//! need not be. A link that a power cut undoes would leave the queue file
//! without its flag, and the retry would re-send a message the server
//! may have had without saying so: the one duplicate the project does not
//! allow. So [`Spool::window_made_durable`] (and [`Spool::open_window`])
//! return only once an fsync of `window/` that began after the link has
//! completed. The workers of a
//! run that are about to send their final dots share that fsync
//! ([`GroupCommit`](super::group_commit::GroupCommit)): N dots at once
//! cost one or two syncs, not N. Runners in other processes sync for
//! their own links; on ext4 each directory fsync commits the journal
//! transaction holding every link made before it, so simultaneous
//! runners share the disk flush too. Undoing the link's *removal*, by
//! contrast, only leaves a spurious flag on a message whose outcome is
//! durable (the next claim sets `possibly_delivered`, `mailq` says
//! "possibly delivered"; the removal of a delivered message unlinks its
//! queue file durably first, and a link whose queue file is gone is
//! swept by the queue runs' sweep): never a loss and never an unflagged
//! duplicate, so closing stays one unsynced unlink. Neither loses a
//! message or a recipient's recorded outcome: the marker is never written
//! over the state.
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

/// A window link made and not yet known to be durable
/// ([`Spool::link_window`]).
#[derive(Debug)]
#[must_use = "the link is a flag only once durable"]
pub struct WindowTicket(super::group_commit::Ticket);

impl Spool {
    /// Opens the window of the claimed message: links `queue/ID` as
    /// `window/ID` and returns once the link is durable (a shared fsync
    /// of `window/`, see the module's comment). A link already there (an
    /// earlier transaction of the same attempt whose outcome was not
    /// written: every recipient so far was delivered) is the same window.
    /// An error means no durable marker was made: the caller uses the
    /// state file's (a link made but not synced is still closed with the
    /// claim's window).
    pub fn open_window(&self, claim: &Claim) -> io::Result<()> {
        self.window_made_durable(self.link_window(claim)?)
    }

    /// The first half of [`Spool::open_window`]: links `queue/ID` as
    /// `window/ID` and returns at once, with the ticket that
    /// [`Spool::window_made_durable`] redeems before the final dot. Made
    /// when the transaction begins (before MAIL), the link's sync runs
    /// while the commands and the data go out, and is often done — by
    /// another worker's sync that began after it — when the dot is due.
    /// A link whose transaction fails before the dot is closed with its
    /// outcome like any other; one a crash leaves there flags a message
    /// that was not sent, which costs a spurious "possibly delivered",
    /// never a duplicate unflagged.
    pub fn link_window(&self, claim: &Claim) -> io::Result<WindowTicket> {
        let name = claim.id().as_str();
        match fs::hard_link(self.queue.join(name), self.window.join(name)) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
            _ => {}
        }
        claim.window_linked.set(true);
        Ok(WindowTicket(self.window_sync.issue()))
    }

    /// Whether the link `ticket` stands for is durable already (then
    /// [`Spool::window_made_durable`] returns at once): the caller may
    /// send the final dot with the data's last block.
    pub fn window_is_durable(&self, ticket: &WindowTicket) -> bool {
        self.window_sync.is_durable(ticket.0)
    }

    /// Returns once the link `ticket` stands for is durable (a sync of
    /// `window/` that began after the link has completed). Err: no
    /// durable marker was made; the caller uses the state file's.
    pub fn window_made_durable(&self, ticket: WindowTicket) -> io::Result<()> {
        self.window_sync.wait(ticket.0)
    }

    /// Closes the claimed message's window, opened by this claim or left
    /// open by a runner that died: its outcome is durable now. Not
    /// synced: a power cut that undoes it leaves a spurious flag, never a
    /// missing one. A link already gone is not an error; any other
    /// failure leaves a spurious flag at worst, so it is logged.
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
