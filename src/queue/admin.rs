//! Queue administration: `mailq --delete|--hold|--release|--requeue|
//! --return ID… | ALL`, what `postsuper -d/-h/-H/-r` and `exim
//! -Mrm/-Mf/-Mt/-M/-Mg` do for Postfix and Exim.
//!
//! Each message is acted on under its claim (the runner's flock, D1): an
//! action never touches a message a runner is delivering. It waits up to
//! [`CLAIM_WAIT`] for the claim, then leaves the message as it is and
//! says it was busy. Who may act on which message is the caller's
//! [`Scope`], the one rule `mailq` lists them by: root and members of the
//! spool's group act on every message; anyone else only on the messages
//! with their uid in the envelope (their submissions, the copies their
//! `.forward` made, the notices about their mail).
//!
//! A hold is a flag in the message's state, written durably like any
//! state: a queue run, forced or not, never attempts a held message and
//! never expires it; its schedule entry is put off by a day at a time.
//! A release clears the flag and files the message as due at once.
//! A requeue makes every recipient not yet final due now and flags the
//! state so that the next attempt is a forced one (retry times and the
//! unreachable cache ignored). A return fails every recipient not yet
//! final with `5.0.0 returned by the administrator`; the runner started
//! after it sends the failure DSN the way it sends any (D8) and removes
//! the message.

use std::time::{Duration, Instant};

use crate::error::{Error, Kind, Result};
use crate::privilege::{AdminAction, QueueFilter, Scope};
use crate::spool::{Claim, DeliveryState, NOW_BUCKET, QueueId, RecipientStatus, Spool};

/// Whether `id` is in the caller's `scope`: the rule its listing
/// follows. The envelope is read without the claim: it never changes (S3).
fn in_scope(spool: &Spool, id: &QueueId, scope: Scope) -> bool {
    scope == Scope::Every
        || spool
            .read_envelope(id)
            .is_ok_and(|envelope| scope.includes(envelope.uid))
}

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

/// What an administrator asks for.
#[derive(Debug)]
pub struct Request<'a> {
    pub action: AdminAction,
    /// Queue IDs, `ALL`, or `-` (IDs read from `input`, one per line or
    /// separated by white space, as `postsuper -d -` takes them). None
    /// with filters: `ALL`.
    pub targets: &'a [String],
    /// `--recipient`/`--sender`: of the messages named, only those all
    /// of these match.
    pub filters: &'a [QueueFilter],
}

/// Does `request` on behalf of a caller whose scope is `scope` and who
/// is called `who` in the log. Prints one line
/// per message on `out`.
pub fn administer(
    spool: &Spool,
    request: &Request,
    scope: Scope,
    who: &str,
    input: &mut dyn std::io::Read,
    out: &mut dyn std::io::Write,
) -> Result<Report> {
    let mut report = Report::default();
    let mut ids = Vec::new();
    let all = [String::from("ALL")];
    let mut targets: Vec<String> = match request.targets.is_empty() {
        true => all.to_vec(),
        false => request.targets.to_vec(),
    };
    if let Some(at) = targets.iter().position(|t| t == "-") {
        let mut text = String::new();
        input
            .read_to_string(&mut text)
            .map_err(|e| Error::io("reading queue IDs from standard input", &e))?;
        targets.splice(at..=at, text.split_whitespace().map(str::to_owned));
    }
    for target in &targets {
        if target == "ALL" {
            // Every message the caller may act on: an ordinary user's
            // ALL is their own mail (others' is not even listed to them).
            let queued = spool.queued_ids()?;
            ids.extend(queued.into_iter().filter(|id| in_scope(spool, id, scope)));
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
    let action = request.action;
    for id in ids {
        if spool.owner_uid(&id).is_none() {
            report.unknown.push(id.to_string());
            continue;
        }
        if !in_scope(spool, &id, scope) {
            // Another user's message: said as "no such message" would
            // hide nothing (IDs are not secret), so it is said plainly.
            writeln!(out, "{id}: not yours: left alone").map_err(written)?;
            report.denied.push(id);
            continue;
        }
        if !request.filters.is_empty() {
            // Only now, the message being the caller's to act on: a
            // match on another's would tell whom they write to. Read
            // without the claim: the envelope never changes (S3).
            match spool.read_envelope(&id) {
                Ok(envelope)
                    if request.filters.iter().all(|f| {
                        f.matches(envelope.id.as_str(), &envelope.sender, &envelope.recipients)
                    }) => {}
                Ok(_) => continue,
                Err(_) => {
                    report.unknown.push(id.to_string());
                    continue;
                }
            }
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
        let what = act(spool, action, claim, who)?;
        log::info!("{id}: {what} by {who}");
        writeln!(out, "{id}: {what}").map_err(written)?;
        report.done.push(id);
    }
    for unknown in &report.unknown {
        writeln!(out, "{unknown}: no such message in the queue").map_err(written)?;
    }
    // The count, as postsuper gives it ("Deleted: 3 messages").
    let past = match action {
        AdminAction::Delete => "removed",
        AdminAction::Hold => "held",
        AdminAction::Release => "released",
        AdminAction::Requeue => "requeued",
        AdminAction::Return => "returned",
    };
    writeln!(out, "{} message(s) {past}", report.done.len()).map_err(written)?;
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

/// Does `action` to the claimed message on behalf of `who`; what was
/// done, for the log.
fn act(spool: &Spool, action: AdminAction, claim: Claim, who: &str) -> Result<&'static str> {
    let id = claim.id().clone();
    if action == AdminAction::Delete {
        spool.remove(claim)?;
        // Its schedule entry, wherever it is, is removed when it comes
        // due (an entry whose message is gone).
        return Ok("removed");
    }
    let mut state = match spool.read_state(&id)? {
        Some(state) => state,
        None => DeliveryState::initial(&spool.read_envelope(&id)?),
    };
    let open = |status: RecipientStatus| {
        matches!(status, RecipientStatus::Queued | RecipientStatus::Deferred)
    };
    let done = match action {
        AdminAction::Delete => unreachable!("removed above"),
        AdminAction::Hold if state.held => return Ok("already held"),
        AdminAction::Release if !state.held => return Ok("not held"),
        AdminAction::Hold | AdminAction::Release => {
            state.held = action == AdminAction::Hold;
            if state.held { "held" } else { "released" }
        }
        AdminAction::Requeue => {
            let now = crate::clock::unix_now();
            for r in state.recipients.iter_mut().filter(|r| open(r.status)) {
                r.next_attempt = Some(now);
            }
            state.requeued = true;
            "requeued for an attempt now"
        }
        AdminAction::Return => {
            for r in state.recipients.iter_mut().filter(|r| open(r.status)) {
                r.status = RecipientStatus::Failed;
                r.dsn_status = Some("5.0.0".into());
                r.last_error = Some(format!("returned by the administrator ({who})"));
                r.next_attempt = None;
            }
            // Returned is returned, held or not.
            state.held = false;
            "returned to the sender"
        }
    };
    spool.write_state(&id, &state)?;
    if !state.held {
        // Due at once; an older entry (a held message's, put off a day
        // at a time) only costs a look when it comes due.
        spool.schedule(&id, NOW_BUCKET)?;
    }
    drop(claim);
    Ok(done)
}
