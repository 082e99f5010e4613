//! One delivery attempt of one claimed message: pick the recipients that
//! are due, group them by destination (one transaction per destination,
//! D3), record every outcome as soon as it is known (D2), guard the RFC
//! 1047 window (D4), then bounce, warn or remove (D5, D8).

use std::collections::BTreeMap;
use std::io;
use std::time::{Duration, SystemTime};

use crate::clock::unix_seconds;

use crate::error::Result;
use crate::local;
use crate::runner::bounce::{self, Action, RecipientReport};
use crate::smtp::{ErrorKind, TransactionEnvelope};
use crate::spool::{
    Claim, DeliveryState, Draft, Envelope, QueueId, RecipientStatus, Spool, TlsApplied,
    WindowTicket,
};

use super::Context;
use super::backoff::RetryFor;
use super::hosts::{Destination, Routing};
use super::outcome::{self, Outcome, Reached, Via};
use super::record::{Tally, persist};
use super::transport::Transport;

/// Whether a recipient is due now (`forced`: whatever its retry time).
fn due(r: &crate::spool::RecipientState, now: u64, forced: bool) -> bool {
    match r.status {
        RecipientStatus::Queued => true,
        RecipientStatus::Deferred => forced || r.next_attempt.is_none_or(|t| t <= now),
        RecipientStatus::Delivered | RecipientStatus::Failed => false,
    }
}

/// Whether a message with this state (None: never tried) has work now:
/// a recipient due, or a notice owed.
pub fn has_work(state: Option<&DeliveryState>, now: u64) -> bool {
    state.is_none_or(|s| {
        !s.held && (s.recipients.iter().any(|r| due(r, now, false)) || needs_finishing(s))
    })
}

/// One attempt at the claimed message, found in schedule bucket `bucket`
/// (None: not known). The claim is released (or the message removed) on
/// return, after the message's schedule entry has moved to its next due
/// time (or gone with it).
pub fn attempt(
    ctx: &Context,
    transport: &mut Transport,
    claim: Claim,
    envelope: Envelope,
    forced: bool,
    now: SystemTime,
    bucket: Option<u64>,
) -> Result<Tally> {
    let spool = ctx.spool;
    let id = claim.id().clone();
    let now_s = unix_seconds(now);
    let mut state = match spool.read_state(&id) {
        Ok(Some(state)) => state,
        Ok(None) => DeliveryState::initial(&envelope),
        Err(e) if e.kind() == crate::error::Kind::Data => {
            // The queue file is sound; only its state cannot be read (a
            // power cut, a disk error). State unknown: every recipient
            // not known delivered is tried again, and the message is
            // flagged, since some may have had their copy already.
            log::warn!(
                "{id}: {e}: delivery state unknown; every recipient is retried: possible duplicate"
            );
            let mut state = DeliveryState::initial(&envelope);
            state.possibly_delivered = true;
            state
        }
        Err(e) => return Err(e),
    };
    if state.held {
        // Held by an administrator: not even a forced run delivers it,
        // and it does not age out while held.
        log::info!("{id}: held: not delivered until released");
        // Looked at again a day later, as a run that reads the state
        // before claiming files it (a release files it as due at once).
        let later = crate::spool::bucket_for(now_s + super::HELD_RECHECK, now_s);
        if bucket.is_some()
            && let Err(e) = spool.reschedule(&id, bucket, later)
        {
            log::warn!("{id}: {e}");
        }
        return Ok(Tally::default());
    }
    // Asked for now by an administrator: this attempt is a forced one.
    let forced = forced || std::mem::take(&mut state.requeued);
    let left_open = state.final_dot_sent.take().or(claim.window_left_open());
    if let Some(at) = left_open {
        // A runner died between sending the final dot and recording the
        // outcome (RFC 1047): the server may have the message. The flag
        // is durable before the marker goes.
        state.possibly_delivered = true;
        log::warn!(
            "{id}: an attempt at {} ended after the final dot without a reply: possibly delivered (RFC 1047)",
            crate::clock::local_time(at)
        );
        spool.write_state(&id, &state)?;
        spool.close_window(&claim);
    }
    let due_now: Vec<usize> = (0..state.recipients.len())
        .filter(|&i| due(&state.recipients[i], now_s, forced))
        .collect();
    let mut tally = Tally::default();
    if due_now.is_empty() && !needs_finishing(&state) {
        file_next(spool, &id, &state, &BTreeMap::new(), bucket, now_s);
        return Ok(tally);
    }
    tally.attempted = !due_now.is_empty();
    if state.possibly_delivered && !due_now.is_empty() {
        log::warn!(
            "{id}: retrying a message that was possibly delivered already: possible duplicate"
        );
    }
    let age = Duration::from_secs(now_s.saturating_sub(envelope.arrival));
    // Recipients left as they were because their destination is in the
    // unreachable cache, and until when (D6): no state written for them.
    let mut waiting: BTreeMap<usize, u64> = BTreeMap::new();
    if age >= ctx.config.queue_lifetime {
        for &i in &due_now {
            let r = &state.recipients[i];
            let reason = format!(
                "delivery time expired after {} days; last error: {}",
                age.as_secs() / 86400,
                r.last_error.as_deref().unwrap_or("none")
            );
            apply_via(
                ctx,
                &id,
                &mut state,
                i,
                &Outcome::failed("4.4.7", reason),
                Via::Queue,
                now_s,
                age,
            );
        }
    } else {
        let mut groups: BTreeMap<Destination, Vec<usize>> = BTreeMap::new();
        let mut locals = Vec::new();
        let mut refused = false;
        for &i in &due_now {
            match super::hosts::route_of(ctx.config, &envelope.sender, &state.recipients[i].address)
            {
                Routing::Remote(dest) => groups.entry(dest).or_default().push(i),
                Routing::Local => locals.push(i),
                // An `error` route: the configured reply is the outcome,
                // recorded with the others (a failure bounces below).
                Routing::Refused(outcome) => {
                    apply_via(ctx, &id, &mut state, i, &outcome, Via::Route, now_s, age);
                    refused = true;
                }
            }
        }
        if refused {
            persist(ctx, &id, &state)?;
        }
        // DKIM (issue 26): the signing domain's key is read once per
        // attempt; one that cannot be used makes the remote recipients
        // wait (unless dkim_required = no), never go unsigned.
        let signer = match groups.is_empty() || ctx.config.dkim.is_empty() {
            true => None,
            false => match super::dkim::for_message(
                ctx.config,
                id.as_str(),
                &mut spool.claimed_data(&claim)?,
            ) {
                Ok(signer) => signer,
                Err(e) => {
                    let outcome = Outcome::deferred("4.3.5", e.to_string());
                    for i in std::mem::take(&mut groups).into_values().flatten() {
                        let nowhere = Reached::default();
                        apply(ctx, &id, &mut state, i, &outcome, nowhere, now_s, age);
                    }
                    persist(ctx, &id, &state)?;
                    None
                }
            },
        };
        // Remote recipients first: a local command may run for
        // pipe_timeout, and the others of the message must not wait for
        // it (nor for its user, who may stall it on purpose).
        for (dest, indices) in groups {
            if super::stop::stopping() {
                // The run is ending (SIGTERM, queue_run_limit): no new
                // transaction; these are due at once for the next run.
                waiting.extend(indices.into_iter().map(|i| (i, now_s)));
                continue;
            }
            let target = Target {
                dest: &dest,
                forced,
                now: now_s,
                arrival: envelope.arrival,
            };
            let waits = match transport.waits_for(&dest, id.as_str(), now_s, !forced) {
                Some(until) => Some(until),
                None => deliver_to(
                    ctx,
                    transport,
                    &claim,
                    &envelope,
                    &mut state,
                    &target,
                    indices.clone(),
                    signer.as_ref(),
                )?,
            };
            if let Some(until) = waits {
                // D6 at no cost to the message: no attempt was made, so
                // nothing about it changed — no state write, no fsync.
                // Its schedule entry follows the destination's retry time.
                log::debug!("{id}: {dest} is unreachable until {until}: waiting for it");
                waiting.extend(indices.into_iter().map(|i| (i, until)));
            }
        }
        if !locals.is_empty() {
            // A local delivery holds no SMTP connection slot.
            transport.close();
            match local::load(ctx.config) {
                Ok(aliases) => {
                    for i in locals {
                        if super::stop::stopping() {
                            // As above: nothing local is begun either.
                            waiting.insert(i, now_s);
                            continue;
                        }
                        let done = super::local::deliver(
                            ctx,
                            &claim,
                            &envelope,
                            &mut state,
                            i,
                            aliases.as_ref(),
                            now,
                            &mut tally,
                        )?;
                        apply_via(
                            ctx,
                            &id,
                            &mut state,
                            i,
                            &done.outcome,
                            Via::Local,
                            now_s,
                            age,
                        );
                        if done.retry_now {
                            // Due again for the next queue run (by root,
                            // which is asked for at once when only it can
                            // deliver).
                            state.recipients[i].next_attempt = Some(now_s);
                        }
                        if done.needs_root {
                            ctx.spool.kick_root(&id);
                        }
                        persist(ctx, &id, &state)?;
                    }
                }
                Err(e) => {
                    // Never deliver a local name as if there were no
                    // aliases: it waits — for root's run, at once, when
                    // it is only this runner that may not read them.
                    log::error!("aliases: {e}");
                    let for_root = !nix::unistd::geteuid().is_root();
                    let outcome = Outcome::deferred(
                        "4.3.0",
                        format!("the compiled aliases cannot be read: {e}"),
                    );
                    for i in locals {
                        apply_via(ctx, &id, &mut state, i, &outcome, Via::Local, now_s, age);
                        if for_root {
                            state.recipients[i].next_attempt = Some(now_s);
                        }
                    }
                    if for_root {
                        ctx.spool.kick_root(&id);
                    }
                    persist(ctx, &id, &state)?;
                }
            }
        }
    }
    finish(
        ctx, claim, &envelope, state, now, &mut tally, bucket, &waiting,
    )?;
    Ok(tally)
}

/// Files the message (still claimed) under the bucket of its next due
/// time: the earliest of its recipients' retry times, a waiting
/// recipient's being its destination's.
fn file_next(
    spool: &crate::spool::Spool,
    id: &QueueId,
    state: &DeliveryState,
    waiting: &BTreeMap<usize, u64>,
    from: Option<u64>,
    now: u64,
) {
    let due = state
        .recipients
        .iter()
        .enumerate()
        .filter_map(|(i, r)| match r.status {
            RecipientStatus::Delivered | RecipientStatus::Failed => None,
            _ if waiting.contains_key(&i) => waiting.get(&i).copied(),
            RecipientStatus::Queued => Some(now),
            RecipientStatus::Deferred => Some(r.next_attempt.unwrap_or(now)),
        })
        .min();
    let Some(due) = due else {
        return;
    };
    if let Err(e) = spool.reschedule(id, from, crate::spool::bucket_for(due, now)) {
        // The entry stays where it was (due): a wasted look later.
        log::warn!("{id}: {e}");
    }
}

/// A state with failures not yet notified still owes a bounce even when
/// nothing is due (the runner died before sending it), and one with
/// notices recorded but perhaps not queued must queue them.
fn needs_finishing(state: &DeliveryState) -> bool {
    !state.pending_notices.is_empty()
        || state
            .recipients
            .iter()
            .any(|r| r.status == RecipientStatus::Failed && !r.notified)
        || state.recipients.iter().all(|r| {
            matches!(
                r.status,
                RecipientStatus::Delivered | RecipientStatus::Failed
            )
        })
}

/// Records and logs one recipient's outcome over SMTP (through the relay
/// and TLS policy `at` says).
#[allow(clippy::too_many_arguments)]
fn apply(
    ctx: &Context,
    id: &QueueId,
    state: &mut DeliveryState,
    index: usize,
    outcome: &Outcome,
    at: Reached,
    now: u64,
    age: Duration,
) {
    apply_via(ctx, id, state, index, outcome, Via::Smtp(at), now, age);
}

/// Records and logs one recipient's outcome, taken `via`.
#[allow(clippy::too_many_arguments)]
fn apply_via(
    ctx: &Context,
    id: &QueueId,
    state: &mut DeliveryState,
    index: usize,
    outcome: &Outcome,
    via: Via,
    now: u64,
    age: Duration,
) {
    let r = &mut state.recipients[index];
    let at = match via {
        Via::Smtp(at) => at,
        Via::Local | Via::Queue | Via::Route => Reached::default(),
    };
    // The retry time is drawn for this message, and cut to its expiry.
    let retry = RetryFor {
        id: id.as_str(),
        expires: now
            .saturating_sub(age.as_secs())
            .saturating_add(ctx.config.queue_lifetime.as_secs()),
    };
    outcome::record(r, outcome, at, now, ctx.config, retry);
    outcome::log(id.as_str(), &r.address, via, age, outcome);
}

/// Where one group of recipients goes, and how.
struct Target<'a> {
    dest: &'a Destination,
    /// Ignore the unreachable cache (a filtered run, -odi).
    forced: bool,
    /// Unix seconds of this attempt.
    now: u64,
    /// The message's arrival (unix seconds).
    arrival: u64,
}

/// Delivers `indices` (recipients of one destination) in as few
/// transactions as the server allows: one, unless it answers 452 "too
/// many recipients", in which case the rest follow in further
/// transactions on the same connection. Ok(Some(until)): nothing was
/// attempted and nothing recorded, the destination being in the
/// unreachable cache until then.
#[allow(clippy::too_many_arguments)]
fn deliver_to(
    ctx: &Context,
    transport: &mut Transport,
    claim: &Claim,
    envelope: &Envelope,
    state: &mut DeliveryState,
    target: &Target,
    indices: Vec<usize>,
    signer: Option<&super::dkim::Signer>,
) -> Result<Option<u64>> {
    let (dest, forced, now) = (target.dest, target.forced, target.now);
    let spool = ctx.spool;
    let id = &envelope.id;
    let age = Duration::from_secs(now.saturating_sub(envelope.arrival));
    transport.begin_message();
    if let Err(outcome) = transport
        .connection(dest, id.as_str(), now, !forced)
        .map(drop)
    {
        if let Some(until) = transport.refused_until() {
            return Ok(Some(until));
        }
        let failed = Tried::failed(transport);
        for i in indices {
            apply(ctx, id, state, i, &outcome, failed.reached(), now, age);
        }
        return record(ctx, claim, state).map(|()| None);
    }
    let conn = transport.open_connection();
    let mut relay = Tried::of(conn);
    // SIZE= is what the server will count (RFC 1870: CRLF line endings,
    // no quoting dots), which differs from the stored size by a CR per
    // line; the same finding has 8-bit content, NULs and long lines
    // (issue 24): BODY=8BITMIME, and conversion to 7-bit MIME where
    // needed, follow from it (see crate::smtp::downgrade). It is what
    // the acceptance step found and kept with the file, when the note is
    // about these very octets; else one pass over the message (a file
    // without a note: a notice, a copy, an older version's).
    let reading = |e: io::Error| crate::error::Error::io(format_args!("reading {id}"), &e);
    let noted = claim
        .content_note()
        .and_then(|note| crate::smtp::Content::from_note(&note))
        .filter(|c| c.octets == envelope.size);
    let mut content = match noted {
        Some(content) => content,
        None => crate::smtp::scan(&mut spool.claimed_data(claim)?).map_err(reading)?,
    };
    if !conn.session.offers("8BITMIME") {
        // Only then does an 8-bit part header matter: a second pass, for
        // 8-bit MIME messages only.
        content.eight_bit_part_header =
            crate::smtp::eight_bit_in_part_headers(&mut spool.claimed_data(claim)?, &content)
                .map_err(reading)?;
    }
    let size = match conn.session.offers("SIZE") {
        true => content.size,
        false => envelope.size,
    };
    let open = || -> io::Result<Box<dyn io::Read + '_>> {
        spool
            .claimed_data(claim)
            .map(|d| Box::new(d) as Box<dyn io::Read>)
            .map_err(|e| io::Error::other(e.to_string()))
    };
    let message_signer = signer.map(|signer| super::dkim::MessageSigner {
        signer,
        open: &open,
    });
    let mut pending = indices;
    let mut limit = ctx.config.smtp_recipient_limit.max(1);
    // One new connection after a server dropped us for asking too much.
    let mut reconnected = false;
    while !pending.is_empty() {
        let conn = transport.open_connection();
        // At most `smtp_recipient_limit` per transaction (Postfix's client
        // sends 50): a server's own limit, and its error count, are never
        // reached by a long list; the rest follow on the same connection.
        let cut = ascii_first(&mut pending, state, conn.session.offers("SMTPUTF8"));
        let rest = pending.split_off(pending.len().min(limit).min(cut));
        let recipients: Vec<String> = pending
            .iter()
            .map(|&i| state.recipients[i].address.clone())
            .collect();
        let txn = TransactionEnvelope {
            sender: &envelope.sender,
            recipients: &recipients,
            size,
            eight_bit: envelope
                .body_type
                .as_deref()
                .is_some_and(|b| b.eq_ignore_ascii_case("8BITMIME")),
            smtputf8: !envelope.sender.is_ascii() || recipients.iter().any(|r| !r.is_ascii()),
            dsn_ret: envelope.dsn_ret.as_deref(),
            envid: envelope.envid.as_deref(),
            dsn_notify: envelope.dsn_notify.as_deref(),
            content: Some(&content),
            signer: message_signer
                .as_ref()
                .map(|s| s as &dyn crate::smtp::SentFormSigner),
        };
        // A signer reads the data first, through a reader of its own on
        // the claim's descriptor: the data sent is opened after it.
        let mut data: Box<dyn io::Read> = match message_signer {
            Some(_) => Box::new(OpenedOnRead {
                open: &open,
                data: None,
            }),
            None => Box::new(spool.claimed_data(claim)?),
        };
        let result = {
            // The RFC 1047 window opens here: marked before the dot goes
            // out, so that a runner killed before the outcome is recorded
            // leaves a trace — a link (see crate::spool's window module),
            // durable before the dot, closed once the outcome is durable.
            // The link is made now, as the transaction begins, and its
            // sync is waited for only before the dot: the commands and
            // the data go out meanwhile.
            //
            // Where no link can be made (or made durable), the marker goes
            // into the state file, durably too: a marker a power cut can
            // undo would let the retry go unflagged.
            let mark_window = |link: Option<io::Result<WindowTicket>>| -> io::Result<()> {
                let made = match link {
                    Some(Ok(ticket)) => spool.window_made_durable(ticket),
                    Some(Err(e)) => Err(e),
                    None => spool.open_window(claim),
                };
                match made {
                    Ok(()) => return Ok(()),
                    Err(e) => log::debug!("{id}: no window link ({e}): marking the state file"),
                }
                state.final_dot_sent = Some(now);
                spool
                    .write_state(id, state)
                    .map_err(|e| io::Error::other(e.to_string()))
            };
            let mut gate = WindowGate {
                spool,
                link: Some(spool.link_window(claim)),
                mark: mark_window,
            };
            conn.session.send(&txn, &mut data, &mut gate)
        };
        conn.last_used = std::time::Instant::now();
        state.final_dot_sent = None;
        match result {
            Ok(result) => {
                let accepted_any = result.rcpt.iter().any(|r| r.is_positive());
                let final_reply = result.data.as_ref().or(result.data_command.as_ref());
                let delivered = final_reply.is_some_and(|r| r.is_positive());
                let closing = result
                    .rcpt
                    .iter()
                    .chain(final_reply)
                    .find(|r| r.code == 421);
                if let Some(reply) = closing
                    && !delivered
                    && transport.can_fail_over(dest)
                {
                    // Nothing of this transaction was delivered and the
                    // relay is closing: the same recipients go to the
                    // next relay of the list, in this attempt.
                    transport.fail_over(&reply.one_line());
                    pending.extend(rest);
                    let closed =
                        Outcome::from_reply(reply.code, reply.enhanced_status(), reply.one_line());
                    let failed = Failed {
                        pending: &pending,
                        relay: &relay,
                        outcome: &closed,
                    };
                    match next_relay(ctx, transport, claim, state, target, &failed)? {
                        Some(next) => relay = next,
                        None => return Ok(None),
                    }
                    continue;
                }
                let mut next = Vec::new();
                for (k, &i) in pending.iter().enumerate() {
                    let rcpt = &result.rcpt[k];
                    let outcome = if rcpt.is_positive() {
                        match final_reply {
                            Some(reply) => Outcome::from_reply(
                                reply.code,
                                reply.enhanced_status(),
                                reply.one_line(),
                            ),
                            None => Outcome::deferred("4.4.2", "no reply to DATA"),
                        }
                    } else if rcpt.code == 452 && accepted_any {
                        // Too many recipients (RFC 5321 §4.5.3.1.10): the
                        // rest go in the next transaction.
                        next.push(i);
                        continue;
                    } else {
                        Outcome::from_reply(rcpt.code, rcpt.enhanced_status(), rcpt.one_line())
                    };
                    apply(ctx, id, state, i, &outcome, relay.reached(), now, age);
                }
                record(ctx, claim, state)?;
                if !next.is_empty() {
                    // The server said how many it takes: later
                    // transactions ask no more of it (each 452 counts as
                    // an error at Postfix, which drops a client after 20).
                    let taken = result.rcpt.iter().filter(|r| r.is_positive()).count();
                    limit = limit.min(taken.max(1));
                }
                next.extend(rest);
                pending = next;
            }
            Err(e) if e.after_final_dot => {
                state.possibly_delivered = true;
                log::warn!(
                    "{id}: {relay}: {e} after the final dot, before the reply: possibly delivered (RFC 1047); the retry may duplicate it"
                );
                let outcome = Outcome::deferred(
                    "4.4.2",
                    format!("{e} after the final dot: possibly delivered"),
                );
                // Only this transaction's recipients: the rest were never
                // tried, and stay due as they were.
                for &i in &pending {
                    apply(ctx, id, state, i, &outcome, relay.reached(), now, age);
                }
                transport.discard();
                return record(ctx, claim, state).map(|()| None);
            }
            Err(e) if e.rcpt_taken.is_some() && !reconnected => {
                // The link broke during the RCPTs after a 452: a server
                // that counts refused RCPTs as errors (Postfix does,
                // beyond smtpd_recipient_overshoot_limit) dropped us for
                // pipelining more than it takes. Nothing of this
                // transaction was delivered (no DATA): the same
                // recipients go again at once, over a new connection, in
                // transactions no larger than what it took.
                let taken = e.rcpt_taken.unwrap_or(1).max(1);
                log::info!(
                    "{id}: {relay}: {e} after the server took {taken} recipient(s); reconnecting with {taken} per transaction"
                );
                transport.discard();
                reconnected = true;
                limit = limit.min(taken);
                pending.extend(rest);
                if let Err(outcome) = transport
                    .connection(dest, id.as_str(), now, !forced)
                    .map(drop)
                {
                    let failed = Tried::failed(transport);
                    for &i in &pending {
                        apply(ctx, id, state, i, &outcome, failed.reached(), now, age);
                    }
                    return record(ctx, claim, state).map(|()| None);
                }
                relay = Tried::of(transport.open_connection());
            }
            Err(e)
                if e.kind == ErrorKind::Rejected
                    && e.reply.as_ref().is_some_and(|r| r.code == 421)
                    && transport.can_fail_over(dest) =>
            {
                // The relay is closing (a 421 to MAIL or DATA): nothing
                // was delivered; the next relay of the list takes the
                // same recipients in this attempt.
                transport.fail_over(&e.to_string());
                pending.extend(rest);
                let closed = match &e.reply {
                    Some(r) => Outcome::from_reply(r.code, r.enhanced_status(), r.one_line()),
                    None => Outcome::deferred("4.4.2", e.to_string()),
                };
                let failed = Failed {
                    pending: &pending,
                    relay: &relay,
                    outcome: &closed,
                };
                match next_relay(ctx, transport, claim, state, target, &failed)? {
                    Some(next) => relay = next,
                    None => return Ok(None),
                }
            }
            Err(e) => {
                let outcome = match (&e.kind, &e.reply) {
                    (ErrorKind::Rejected, Some(reply)) => {
                        Outcome::from_reply(reply.code, reply.enhanced_status(), reply.one_line())
                    }
                    (ErrorKind::TooBig, _) => Outcome::failed("5.3.4", e.to_string()),
                    (ErrorKind::NoSmtputf8, _) => Outcome::failed("5.6.7", e.to_string()),
                    // RFC 3463: conversion required but not supported.
                    (ErrorKind::Unconvertible, _) => Outcome::failed("5.6.3", e.to_string()),
                    _ => Outcome::deferred("4.4.2", e.to_string()),
                };
                // A refusal of the message itself (its sender, its size,
                // SMTPUTF8) holds for every recipient; a broken link only
                // for this transaction's — the rest were never tried.
                let message_level = matches!(
                    e.kind,
                    ErrorKind::Rejected
                        | ErrorKind::TooBig
                        | ErrorKind::NoSmtputf8
                        | ErrorKind::Unconvertible
                );
                if message_level {
                    pending.extend(rest);
                }
                for &i in &pending {
                    apply(ctx, id, state, i, &outcome, relay.reached(), now, age);
                }
                if !matches!(
                    e.kind,
                    ErrorKind::Rejected
                        | ErrorKind::TooBig
                        | ErrorKind::NoSmtputf8
                        | ErrorKind::Unconvertible
                ) {
                    transport.discard();
                }
                return record(ctx, claim, state).map(|()| None);
            }
        }
    }
    Ok(None)
}

/// The message data, opened at its first read (see [`deliver_to`]).
struct OpenedOnRead<'a> {
    open: &'a dyn Fn() -> io::Result<Box<dyn io::Read + 'a>>,
    data: Option<Box<dyn io::Read + 'a>>,
}

impl io::Read for OpenedOnRead<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let data = match &mut self.data {
            Some(data) => data,
            None => self.data.insert((self.open)()?),
        };
        data.read(buf)
    }
}

/// Where the next transaction ends for the SMTPUTF8 rule (issue 24):
/// to a server without SMTPUTF8, the ASCII recipients (of an ASCII
/// sender) go first and in transactions of their own — the UTF-8 ones,
/// which that server cannot take (5.6.7), must not take them down too.
/// Reorders `pending` (ASCII first) in that case; else `pending.len()`.
fn ascii_first(pending: &mut [usize], state: &DeliveryState, smtputf8_offered: bool) -> usize {
    if smtputf8_offered {
        return pending.len();
    }
    let ascii = |i: &usize| state.recipients[*i].address.is_ascii();
    pending.sort_by_key(|i| !ascii(i));
    match pending.iter().take_while(|i| ascii(i)).count() {
        0 => pending.len(),
        n => n,
    }
}

/// What a relay of a list answered 421 to: the recipients of the
/// transaction, that relay, and the outcome its reply means.
struct Failed<'a> {
    pending: &'a [usize],
    relay: &'a Tried,
    outcome: &'a Outcome,
}

/// Where a transaction went (or its connection failed): the relay and
/// the TLS policy that applied, owned so that the transport can be used
/// meanwhile.
#[derive(Clone, Debug)]
struct Tried {
    relay: Option<String>,
    tls: Option<TlsApplied>,
}

impl std::fmt::Display for Tried {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.relay.as_deref().unwrap_or("none"))
    }
}

impl Tried {
    /// The hop of an open connection.
    fn of(conn: &super::transport::Connection) -> Tried {
        Tried {
            relay: Some(conn.relay.clone()),
            tls: Some(conn.tls),
        }
    }

    /// Where the last failed [`Transport::connection`] got to.
    fn failed(transport: &Transport) -> Tried {
        Tried {
            relay: transport.failed_at().map(str::to_string),
            tls: transport.failed_tls(),
        }
    }

    /// As recorded and logged.
    fn reached(&self) -> Reached<'_> {
        Reached {
            relay: self.relay.as_deref(),
            tls: self.tls,
        }
    }
}

/// After a relay of a list answered 421 ([`Transport::fail_over`]): a
/// connection to the next one for the recipients of `failed`, whose
/// name is returned. None when there is none to be had: the deferral is
/// then recorded for them — the 421 itself when no other relay was
/// tried (each was closed to this message or in the unreachable cache),
/// so that the message waits for its own retry time (its backoff), the
/// last relay's failure to connect otherwise.
fn next_relay(
    ctx: &Context,
    transport: &mut Transport,
    claim: &Claim,
    state: &mut DeliveryState,
    target: &Target,
    failed: &Failed,
) -> Result<Option<Tried>> {
    let id = claim.id();
    // The relay answered (421): whatever window the transaction opened
    // (RFC 1047) is closed with nothing delivered.
    ctx.spool.close_window(claim);
    match transport.connection(target.dest, id.as_str(), target.now, !target.forced) {
        Ok(conn) => Ok(Some(Tried::of(conn))),
        Err(outcome) => {
            let (outcome, at) = match transport.refused_until() {
                Some(_) => (failed.outcome, failed.relay.clone()),
                None => {
                    let tried = Tried::failed(transport);
                    match tried.relay {
                        Some(_) => (&outcome, tried),
                        None => (&outcome, failed.relay.clone()),
                    }
                }
            };
            let age = Duration::from_secs(target.now.saturating_sub(target.arrival));
            for &i in failed.pending {
                apply(ctx, id, state, i, outcome, at.reached(), target.now, age);
            }
            record(ctx, claim, state).map(|()| None)
        }
    }
}

/// Records the outcome of a transaction (D2), then closes its RFC 1047
/// window: the outcome is durable, the marker has done its work. When
/// every recipient is delivered nothing is written and the window stays
/// open until the message's removal, which follows and is the record.
fn record(ctx: &Context, claim: &Claim, state: &DeliveryState) -> Result<()> {
    if persist(ctx, claim.id(), state)? {
        ctx.spool.close_window(claim);
    }
    Ok(())
}

/// After the attempt: failure notices, the delay warning, and removal
/// when every recipient is final.
#[allow(clippy::too_many_arguments)]
fn finish(
    ctx: &Context,
    claim: Claim,
    envelope: &Envelope,
    mut state: DeliveryState,
    now: SystemTime,
    tally: &mut Tally,
    bucket: Option<u64>,
    waiting: &BTreeMap<usize, u64>,
) -> Result<()> {
    let spool = ctx.spool;
    let id = &envelope.id;
    let now_s = unix_seconds(now);
    let mut changed = false;

    // Notices an earlier attempt recorded but may not have queued (it
    // died in between): queued now, from their sealed tmp/ files.
    for pending in std::mem::take(&mut state.pending_notices) {
        changed = true;
        let Some(notice) = QueueId::parse(&pending) else {
            continue;
        };
        if spool.commit_leftover(&notice)? {
            log::info!("{id}: notice {notice} queued after an interrupted attempt");
            tally.notices.push(notice);
        }
    }

    let unnotified: Vec<usize> = (0..state.recipients.len())
        .filter(|&i| {
            let r = &state.recipients[i];
            r.status == RecipientStatus::Failed && !r.notified
        })
        .collect();
    if !unnotified.is_empty() {
        let reports: Vec<RecipientReport> = unnotified
            .iter()
            .map(|&i| report(&state.recipients[i], "5.0.0"))
            .collect();
        let notice = notify(ctx, envelope, Action::Failed, &reports, now)?;
        for i in unnotified {
            state.recipients[i].notified = true;
        }
        send_recorded(ctx, id, &mut state, notice, tally)?;
        changed = true;
    }

    // Queued ones too: a recipient whose destination stayed in the
    // unreachable cache is never marked deferred (it was not tried).
    let deferred: Vec<usize> = (0..state.recipients.len())
        .filter(|&i| {
            matches!(
                state.recipients[i].status,
                RecipientStatus::Deferred | RecipientStatus::Queued
            )
        })
        .collect();
    let age = Duration::from_secs(now_s.saturating_sub(envelope.arrival));
    if !deferred.is_empty() && !state.delay_warned && age >= ctx.config.delay_warning {
        let reports: Vec<RecipientReport> = deferred
            .iter()
            .map(|&i| report(&state.recipients[i], "4.0.0"))
            .collect();
        let notice = notify(ctx, envelope, Action::Delayed, &reports, now)?;
        state.delay_warned = true;
        send_recorded(ctx, id, &mut state, notice, tally)?;
        changed = true;
    }

    for r in &state.recipients {
        match r.status {
            RecipientStatus::Delivered => tally.delivered += 1,
            RecipientStatus::Failed => tally.failed += 1,
            RecipientStatus::Queued | RecipientStatus::Deferred => tally.deferred += 1,
        }
        if r.status != RecipientStatus::Delivered && r.last_error.is_some() {
            tally.last_error = r.last_error.clone();
        }
    }
    if tally.deferred == 0 {
        spool.remove(claim)?;
        log::info!("{id}: removed");
        if let Some(bucket) = bucket {
            spool.unschedule(id, bucket);
        }
    } else {
        if changed {
            spool.write_state(id, &state)?;
        }
        file_next(spool, id, &state, waiting, bucket, unix_seconds(now));
    }
    Ok(())
}

/// Queues a sealed notice once the original's state durably says it was
/// sent (recipients `notified`, `delay_warned`, and the notice among
/// `pending_notices`): killed before the record, the notice is redone
/// (its sealed file is only garbage in tmp/); killed after it, the next
/// attempt queues the sealed file. Either way it goes out exactly once.
fn send_recorded(
    ctx: &Context,
    id: &QueueId,
    state: &mut DeliveryState,
    notice: Option<Draft>,
    tally: &mut Tally,
) -> Result<()> {
    let Some(draft) = notice else {
        return Ok(());
    };
    state.pending_notices.push(draft.id().to_string());
    ctx.spool.write_state(id, state)?;
    let committed = draft.commit()?;
    crate::logging::queued(committed.id.as_str(), "", committed.size, 1);
    let queued = committed.id;
    state.pending_notices.retain(|p| p != queued.as_str());
    tally.notices.push(queued);
    Ok(())
}

/// Writes and seals a DSN for `reports` (the bounce module decides
/// whether the sender wants one: never for a bounce, D8).
fn notify(
    ctx: &Context,
    envelope: &Envelope,
    action: Action,
    reports: &[RecipientReport],
    now: SystemTime,
) -> Result<Option<Draft>> {
    if !bounce::wanted(envelope, action) {
        log::info!(
            "{}: no {} notice: the sender is <> or asked for none",
            envelope.id,
            match action {
                Action::Failed => "failure",
                Action::Delayed => "delay",
            }
        );
        return Ok(None);
    }
    let data = ctx.spool.open_data(&envelope.id)?;
    let notice = bounce::prepare(ctx.spool, ctx.config, envelope, data, action, reports, now)?;
    if let Some(dsn) = &notice {
        log::info!(
            target: crate::logging::service::BOUNCE,
            "{}: sender {} notification: {}",
            envelope.id,
            match action {
                Action::Failed => "non-delivery",
                Action::Delayed => "delay",
            },
            dsn.id()
        );
    }
    Ok(notice)
}

fn report(r: &crate::spool::RecipientState, default_status: &str) -> RecipientReport {
    // Whether a server answered: its reply (which starts with its 3-digit
    // code) is the reason, and it was reached through a relay. An `error`
    // route's configured reply, or our own refusal (a message over the
    // server's SIZE), names no Remote-MTA and is not typed "smtp"
    // (issue 24, as Postfix types its own "X-Postfix").
    let server_spoke = r.relay.is_some()
        && r.last_error
            .as_ref()
            .is_some_and(|e| e.len() >= 3 && e.as_bytes()[..3].iter().all(u8::is_ascii_digit));
    let diagnostic = r.last_error.as_ref().map(|e| {
        // A server reply starts with its 3-digit code: RFC 3464 calls
        // that type "smtp"; our own reasons are not server replies.
        if server_spoke {
            format!("smtp; {e}")
        } else {
            format!("X-Spoolmail; {e}")
        }
    });
    RecipientReport {
        recipient: r.address.clone(),
        status: r
            .dsn_status
            .clone()
            .unwrap_or_else(|| default_status.to_string()),
        remote_mta: r
            .relay
            .as_ref()
            .filter(|_| server_spoke)
            .map(|relay| relay.split('[').next().unwrap_or(relay).to_string()),
        diagnostic,
        last_attempt: r.last_attempt,
    }
}

/// The final dot's gate in an SMTP transaction: open once the message's
/// RFC 1047 window link (made as the transaction began) is durable, or,
/// where it cannot be, once `mark` has put the marker in the state file.
struct WindowGate<'s, M> {
    spool: &'s Spool,
    /// The link made before MAIL; taken by the wait.
    link: Option<io::Result<WindowTicket>>,
    /// Waits for the link to be durable or marks the state file.
    mark: M,
}

impl<M> crate::smtp::FinalDotGate for WindowGate<'_, M>
where
    M: FnMut(Option<io::Result<WindowTicket>>) -> io::Result<()>,
{
    /// Open when another worker's shared sync of `window/` has covered
    /// the link already: the dot can go with the data's last block.
    fn open_now(&mut self) -> bool {
        matches!(&self.link, Some(Ok(ticket)) if self.spool.window_is_durable(ticket))
    }

    fn wait(&mut self) -> io::Result<()> {
        (self.mark)(self.link.take())
    }
}
