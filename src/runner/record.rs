//! What an attempt records, shared by the remote and the local halves
//! of the runner ([`super::attempt`], [`super::local`]): the durable
//! state after each outcome (D2) and the tally the caller sees.

use crate::error::Result;
use crate::spool::{DeliveryState, QueueId, RecipientStatus};

use super::Context;

/// What became of a message's recipients, for `-odi`'s exit status.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tally {
    /// Recipients delivered (now or earlier).
    pub delivered: usize,
    /// Recipients still waiting for a retry.
    pub deferred: usize,
    /// Recipients that failed permanently.
    pub failed: usize,
    /// The last error seen, for the caller's one-line message.
    pub last_error: Option<String>,
    /// Whether anything was attempted (false: nothing was due).
    pub attempted: bool,
    /// Messages this attempt committed — delivery status notices and
    /// forwarded copies for aliases: `-odi` hands them to a background
    /// runner.
    pub notices: Vec<QueueId>,
}

/// Writes the state durably (D2), unless every recipient is delivered:
/// then the message's removal, which follows at once, is the record.
/// True when it wrote.
pub(super) fn persist(ctx: &Context, id: &QueueId, state: &DeliveryState) -> Result<bool> {
    if state
        .recipients
        .iter()
        .all(|r| r.status == RecipientStatus::Delivered)
    {
        return Ok(false);
    }
    ctx.spool.write_state(id, state).map(|()| true)
}
