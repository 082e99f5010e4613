//! Queue administration: `mailq --delete|--hold|--release ID… | ALL`,
//! what `postsuper -d/-h/-H` and `exim -Mrm` do for Postfix and Exim.
//!
//! Each message is acted on under its claim (the runner's flock, D1): an
//! action never touches a message a runner is delivering. It waits up to
//! [`CLAIM_WAIT`] for the claim, then leaves the message as it is and
//! says it was busy. Root and members of the spool's group act on every
//! message; anyone else only on the messages they submitted (the owner
//! of the queue file, which is the uid recorded at submission) — the
//! same scope as their queue runs ([`crate::runner::caller_scope`]).
//!
//! A hold is a flag in the message's state, written durably like any
//! state: a queue run, forced or not, never attempts a held message and
//! never expires it; its schedule entry is put off by a day at a time.
//! A release clears the flag and files the message as due at once.

use std::time::{Duration, Instant};

use crate::cli::AdminAction;
use crate::error::{Error, Kind, Result};
use crate::spool::{Claim, DeliveryState, NOW_BUCKET, QueueId, Spool};

/// How long an action waits for a runner to let go of a message.
pub const CLAIM_WAIT: Duration = Duration::from_secs(10);

/// How each message named fared.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Acted on.
    pub done: Vec<QueueId>,
    /// Not in the queue (or not a queue ID).
    pub unknown: Vec<String>,
    /// Another user's message.
    pub denied: Vec<QueueId>,
    /// A runner held it for all of [`CLAIM_WAIT`].
    pub busy: Vec<QueueId>,
}

/// Acts on the messages `targets` names (queue IDs, or `ALL`) on behalf
/// of a caller whose scope is `owner` (None: every message) and who is
/// called `who` in the log. Prints one line per message on `out`.
pub fn administer(
    spool: &Spool,
    action: AdminAction,
    targets: &[String],
    owner: Option<u32>,
    who: &str,
    out: &mut dyn std::io::Write,
) -> Result<Report> {
    let mut report = Report::default();
    let mut ids = Vec::new();
    for target in targets {
        if target == "ALL" {
            // Every message the caller may act on: an ordinary user's
            // ALL is their own mail (others' is not even listed to them).
            let queued = spool.queued_ids()?;
            ids.extend(
                queued
                    .into_iter()
                    .filter(|id| owner.is_none_or(|caller| spool.owner_uid(id) == Some(caller))),
            );
        } else {
            match QueueId::parse(target) {
                Some(id) => ids.push(id),
                None => report.unknown.push(target.clone()),
            }
        }
    }
    ids.sort();
    ids.dedup();
    let written = |e: std::io::Error| Error::io("writing the report", &e);
    for id in ids {
        let owned = spool.owner_uid(&id);
        let Some(uid) = owned else {
            report.unknown.push(id.to_string());
            continue;
        };
        if owner.is_some_and(|caller| caller != uid) {
            // Another user's message: said as "no such message" would
            // hide nothing (IDs are not secret), so it is said plainly.
            writeln!(out, "{id}: not yours: left alone").map_err(written)?;
            report.denied.push(id);
            continue;
        }
        let Some(claim) = claim_within(spool, &id, CLAIM_WAIT)? else {
            match spool.owner_uid(&id) {
                None => report.unknown.push(id.to_string()),
                Some(_) => {
                    writeln!(out, "{id}: a runner is delivering it: left alone")
                        .map_err(written)?;
                    report.busy.push(id);
                }
            }
            continue;
        };
        let what = act(spool, action, claim)?;
        log::info!("{id}: {what} by {who}");
        writeln!(out, "{id}: {what}").map_err(written)?;
        report.done.push(id);
    }
    for unknown in &report.unknown {
        writeln!(out, "{unknown}: no such message in the queue").map_err(written)?;
    }
    Ok(report)
}

/// The exit status of a report: 0 when every message named was acted on;
/// otherwise the most telling failure (busy: try again, 75; another
/// user's: 77; not queued: 66).
pub fn outcome(report: &Report) -> Result<()> {
    let (kind, what) = if !report.busy.is_empty() {
        (Kind::TempFail, "busy: try again")
    } else if !report.denied.is_empty() {
        (Kind::NoPermission, "not yours")
    } else if !report.unknown.is_empty() {
        (Kind::NoInput, "not in the queue")
    } else {
        return Ok(());
    };
    let left = report.busy.len() + report.denied.len() + report.unknown.len();
    Err(Error::new(
        kind,
        format!("{left} message(s) left alone ({what})"),
    ))
}

/// Takes the claim on `id`, waiting up to `limit` for a runner to let go.
/// None: gone, or still held at the limit.
fn claim_within(spool: &Spool, id: &QueueId, limit: Duration) -> Result<Option<Claim>> {
    let deadline = Instant::now() + limit;
    let mut pause = Duration::from_millis(10);
    loop {
        if let Some(claim) = spool.claim(id)? {
            return Ok(Some(claim));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || spool.owner_uid(id).is_none() {
            return Ok(None);
        }
        std::thread::sleep(pause.min(left));
        pause = (pause * 2).min(Duration::from_millis(250));
    }
}

/// Does `action` to the claimed message; what was done, for the log.
fn act(spool: &Spool, action: AdminAction, claim: Claim) -> Result<&'static str> {
    let id = claim.id().clone();
    match action {
        AdminAction::Delete => {
            spool.remove(claim)?;
            // Its schedule entry, wherever it is, is removed when it
            // comes due (an entry whose message is gone).
            Ok("removed")
        }
        AdminAction::Hold | AdminAction::Release => {
            let hold = action == AdminAction::Hold;
            let mut state = match spool.read_state(&id)? {
                Some(state) => state,
                None => DeliveryState::initial(&spool.read_envelope(&id)?),
            };
            if state.held == hold {
                return Ok(if hold { "already held" } else { "not held" });
            }
            state.held = hold;
            spool.write_state(&id, &state)?;
            if !hold {
                // Due at once; the entry a held message had (put off a
                // day at a time) only costs a look when it comes due.
                spool.schedule(&id, NOW_BUCKET)?;
            }
            drop(claim);
            Ok(if hold { "held" } else { "released" })
        }
    }
}

/// Seconds a held message's schedule entry is put off each time a run
/// comes across it.
pub const HELD_RECHECK: u64 = 86_400;
