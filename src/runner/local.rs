//! Delivering to one local recipient: check for a mail loop, expand it
//! (aliases, .forward, :include:), forward what goes elsewhere, and
//! deliver each local target — mailbox, Maildir, command, file — as the
//! user it belongs to. Every target done is recorded in the recipient's
//! state at once, so that a retry (one target deferred) never delivers
//! the others twice.
//!
//! Each user's local deliveries — mailbox, Maildir, file and command
//! alike — run at most [`slots::users_part`] of `max_connections` at once
//! (`local-uUID` slots in `hosts/`), whoever's runner starts them: the
//! rest are deferred, due again at the next run, not waited for. And a
//! mailbox whose lock is not had within `mailbox_lock_wait` is deferred
//! as busy. So a user who keeps their mailbox locked, or whose commands
//! never end, holds at most half of root's workers, each for a bounded
//! time, and stalls only their own mail.

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::time::SystemTime;

use crate::config::{Config, MailboxFormat};
use crate::error::Result;
use crate::local::aliases::Aliases;
use crate::local::pipe::{self, Ended};
use crate::local::store::{self, Store};
use crate::local::user::{Credentials, Power, power_over};
use crate::local::{self, Delivery, Forwarded, RunAs, User, loops};
use crate::spool::{Claim, DeliveryState, Envelope};

use super::Context;
use super::outcome::Outcome;
use super::record::{Tally, persist};
use super::slots::{self, Slot};

/// How one local target went.
enum Step {
    Done(String),
    /// Temporary trouble: retry on the usual schedule.
    Defer(String),
    /// Only a queue run by root can deliver it: retry as soon as one runs.
    NeedsRoot(String),
    /// The local deliveries of its user already take their share of the
    /// runners: retry at the next run, no backoff.
    Busy(String),
    Fail(&'static str, String),
}

/// What delivering a local recipient gave: the outcome to record, and
/// whether it waits only for a root queue run (then it is due again at
/// once instead of after a backoff).
pub struct LocalResult {
    pub outcome: Outcome,
    pub needs_root: bool,
    /// Due again at once (waits for root, or for a local delivery slot),
    /// not after a backoff.
    pub retry_now: bool,
}

/// Delivers recipient `index` of the claimed message.
#[allow(clippy::too_many_arguments)]
pub fn deliver(
    ctx: &Context,
    claim: &Claim,
    envelope: &Envelope,
    state: &mut DeliveryState,
    index: usize,
    aliases: Option<&Aliases>,
    now: SystemTime,
    tally: &mut Tally,
) -> Result<LocalResult> {
    let config = ctx.config;
    let address = state.recipients[index].address.clone();
    let delivered_to = match address.contains('@') {
        true => address.clone(),
        false => format!("{address}@{}", config.hostname),
    };
    let result = |outcome| LocalResult {
        outcome,
        needs_root: false,
        retry_now: false,
    };
    let mut data = ctx.spool.claimed_data(claim)?;
    match loops::check(&mut data, &delivered_to, config.max_hops) {
        Ok(Some(why)) => return Ok(result(Outcome::failed("5.4.6", why))),
        Ok(None) => {}
        Err(e) => {
            return Ok(result(Outcome::deferred(
                "4.3.0",
                format!("reading the message: {e}"),
            )));
        }
    }
    let empty = Aliases::default();
    let expansion = local::expand_in(config, aliases.unwrap_or(&empty), &address, &envelope.chain);
    if let Some(why) = &expansion.over_limit {
        // The files are the user's to write: retrying cannot help, and
        // this is the one log line the bound gets (the outcome's).
        return Ok(result(Outcome::failed(
            "5.2.4",
            format!("{address}: expansion limit reached ({why}): nothing delivered"),
        )));
    }
    if expansion.delivers_nothing() {
        return Ok(result(Outcome::failed(
            "5.1.1",
            format!("{address} expands to nothing deliverable"),
        )));
    }
    let header = format!(
        "Return-Path: <{}>\nDelivered-To: {delivered_to}\n",
        envelope.sender
    );
    let pending: Vec<&Delivery> = expansion
        .local
        .iter()
        .filter(|d| !state.recipients[index].local_done.contains(&d.key(config)))
        .collect();
    let mut steps = Vec::new();
    let hosts_dir = ctx.spool.hosts_dir();
    for (n, copy) in expansion.remote.iter().enumerate() {
        // One copy per owner. "forward" alone: a state written before
        // copies had owners, when one copy took every address.
        let key = match &copy.owner {
            local::CopyOwner::Sender => "forward:sender".to_string(),
            local::CopyOwner::User(u) => format!("forward:u{}", u.uid),
        };
        let done = &state.recipients[index].local_done;
        if done.iter().any(|k| *k == key || k == "forward") {
            steps.push(Step::Done("forwarded earlier".into()));
            continue;
        }
        let mut data = ctx.spool.claimed_data(claim)?;
        let field = format!("Delivered-To: {delivered_to}\n");
        let made = local::forward(
            ctx.spool,
            config,
            envelope,
            expansion.owner.as_deref(),
            copy,
            &expansion.chain,
            field.as_bytes(),
            &mut data,
            now,
        )?;
        // The addresses stay out of the original's state and notices:
        // they may come from a private .forward of someone else's.
        let count = copy.addresses.len();
        let step = match made {
            Forwarded::Queued(id) => {
                tally.notices.push(id.clone());
                Step::Done(format!("forwarded as {id} to {count} address(es)"))
            }
            // Why it is held is its owner's business (their hourly count).
            Forwarded::Held(id, _) => Step::Done(format!("forwarded as {id}, on hold")),
            Forwarded::Refused(why) => {
                steps.push(Step::Fail("5.5.3", why));
                continue;
            }
        };
        let more = n + 1 < expansion.remote.len() || !pending.is_empty();
        mark_done(ctx, claim, state, index, &key, more)?;
        steps.push(step);
    }
    for (n, delivery) in pending.iter().enumerate() {
        let key = delivery.key(config);
        let target = Target {
            config,
            hosts_dir: &hosts_dir,
            busy_boxes: &ctx.busy_boxes,
            sender: &envelope.sender,
            recipient: &delivered_to,
            header: header.as_bytes(),
        };
        let mut data = ctx.spool.claimed_data(claim)?;
        let step = target.deliver(delivery, &mut data);
        if let Step::Done(_) = step {
            // On disk at once when another target follows (a crash
            // before the recipient's outcome is recorded must not
            // repeat this one); the last one is saved with that outcome.
            let more = n + 1 < pending.len();
            mark_done(ctx, claim, state, index, &key, more)?;
        }
        steps.push(step);
    }
    Ok(summarise(steps))
}

fn mark_done(
    ctx: &Context,
    claim: &Claim,
    state: &mut DeliveryState,
    index: usize,
    key: &str,
    save_now: bool,
) -> Result<()> {
    state.recipients[index].local_done.push(key.to_string());
    match save_now {
        true => persist(ctx, claim.id(), state).map(drop),
        false => Ok(()),
    }
}

/// One outcome for the recipient: deferred while any target waits,
/// else failed when any target failed, else delivered.
fn summarise(steps: Vec<Step>) -> LocalResult {
    let mut done = Vec::new();
    let mut waiting = Vec::new();
    let mut needs_root = true;
    let mut root_asked = false;
    let mut failed = Vec::new();
    let mut fail_dsn = "5.0.0";
    for step in steps {
        match step {
            Step::Done(text) => done.push(text),
            Step::Defer(text) => {
                needs_root = false;
                waiting.push(text)
            }
            Step::NeedsRoot(text) => {
                root_asked = true;
                waiting.push(text)
            }
            Step::Busy(text) => waiting.push(text),
            Step::Fail(dsn, text) => {
                fail_dsn = dsn;
                failed.push(text)
            }
        }
    }
    if !waiting.is_empty() {
        waiting.extend(failed.iter().map(|f| format!("failed: {f}")));
        // Only waiting for root (or a free local delivery slot): due
        // again at once. Anything else waiting: the usual backoff.
        return LocalResult {
            outcome: Outcome::deferred("4.3.0", waiting.join("; ")),
            needs_root: needs_root && root_asked,
            retry_now: needs_root,
        };
    }
    let outcome = if failed.is_empty() {
        Outcome::Delivered {
            dsn: "2.0.0".into(),
            reply: done.join("; "),
        }
    } else {
        Outcome::failed(fail_dsn, failed.join("; "))
    };
    LocalResult {
        outcome,
        needs_root: false,
        retry_now: false,
    }
}

/// What every target of one recipient shares.
struct Target<'a> {
    config: &'a Config,
    /// The spool's `hosts/`, where the local delivery slots of each user
    /// live.
    hosts_dir: &'a std::path::Path,
    /// What this run found locked ([`Context::busy_boxes`]).
    busy_boxes: &'a std::sync::Mutex<std::collections::HashSet<String>>,
    sender: &'a str,
    recipient: &'a str,
    /// `Return-Path:` and `Delivered-To:`, put on top of each copy.
    header: &'a [u8],
}

impl Target<'_> {
    fn deliver(&self, delivery: &Delivery, data: &mut (dyn Read + Send)) -> Step {
        match delivery {
            Delivery::Unknown(name) => Step::Fail("5.1.1", format!("{name}: no such user here")),
            Delivery::Trouble(why) => Step::Defer(why.clone()),
            Delivery::NeedsRoot(why) => Step::NeedsRoot(why.clone()),
            Delivery::Mailbox(user) => self.mailbox(user, data),
            Delivery::Pipe { command, run_as } => match self.resolve(run_as) {
                Ok(user) => self.pipe(command, &user, data),
                Err(step) => step,
            },
            Delivery::File { path, run_as } => match self.resolve(run_as) {
                Ok(user) => {
                    let what = format!("file {}", path.display());
                    self.through_child(&user, user.gid, Store::File(path.clone()), &what, data)
                }
                Err(step) => step,
            },
        }
    }

    /// The account a command or file runs as: never root.
    fn resolve(&self, run_as: &RunAs) -> std::result::Result<User, Step> {
        let user = match run_as {
            RunAs::User(u) => u.clone(),
            RunAs::PipeUser => match User::lookup(&self.config.pipe_user) {
                Ok(Some(u)) => u,
                Ok(None) => {
                    return Err(Step::Defer(format!(
                        "pipe_user {} does not exist",
                        self.config.pipe_user
                    )));
                }
                Err(e) => return Err(Step::Defer(e)),
            },
        };
        if user.uid == 0 {
            return Err(Step::Defer(format!(
                "refusing to run a command or write a file as root ({})",
                user.name
            )));
        }
        Ok(user)
    }

    fn mailbox(&self, user: &User, data: &mut (dyn Read + Send)) -> Step {
        match self.config.mailbox {
            MailboxFormat::Mbox => {
                let path = self.config.mail_spool_dir.join(&user.name);
                let what = format!("mailbox {}", path.display());
                match power_over(user.uid) {
                    Power::Same => {
                        let _slot = match self.local_slot(user, &what) {
                            Ok(slot) => slot,
                            Err(step) => return step,
                        };
                        let wait = self.config.mailbox_lock_wait;
                        match store::mbox_here(
                            &path,
                            user.uid,
                            self.sender,
                            self.header,
                            data,
                            wait,
                        ) {
                            Ok(()) => Step::Done(format!("delivered to {what}")),
                            Err(e) => self.trouble(&what, e.message().to_string()),
                        }
                    }
                    // The mail group, so the mailbox and its dotlock can be
                    // made in a directory like Debian's /var/mail (root:mail
                    // 2775).
                    _ => {
                        let gid = std::fs::metadata(&self.config.mail_spool_dir)
                            .map_or(user.gid, |m| m.gid());
                        self.through_child(user, gid, Store::Mbox(path), &what, data)
                    }
                }
            }
            MailboxFormat::Maildir => {
                let path = user.path(&self.config.maildir);
                let what = format!("maildir {}", path.display());
                self.through_child(user, user.gid, Store::Maildir(path), &what, data)
            }
        }
    }

    fn through_child(
        &self,
        user: &User,
        gid: u32,
        store_at: Store,
        what: &str,
        data: &mut (dyn Read + Send),
    ) -> Step {
        let creds = match self.credentials(user, gid) {
            Ok(c) => c,
            Err(step) => return step,
        };
        let _slot = match self.local_slot(user, what) {
            Ok(slot) => slot,
            Err(step) => return step,
        };
        let (limit, wait) = (self.config.mailbox_timeout, self.config.mailbox_lock_wait);
        match store::through_child(
            &store_at,
            creds,
            self.sender,
            self.header,
            data,
            limit,
            wait,
        ) {
            Ok(()) => Step::Done(format!("delivered to {what}")),
            Err(e) => self.trouble(what, format!("{what}: {}", e.message())),
        }
    }

    /// The deferral of a delivery to `what` that failed with `reason`;
    /// a mailbox found locked (by its owner, a reader) gets a log line
    /// saying it is busy.
    fn trouble(&self, what: &str, reason: String) -> Step {
        // The lock waits' own words (local::mbox), which the helper's
        // exit status cannot carry.
        if reason.ends_with("mailbox busy") || reason.ends_with("mailbox locked") {
            self.lock_busy().insert(what.to_string());
            log::info!(
                "{what} busy (locked for longer than {}s): {} deferred",
                self.config.mailbox_lock_wait.as_secs(),
                self.recipient
            );
        }
        Step::Defer(reason)
    }

    fn lock_busy(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<String>> {
        self.busy_boxes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One of `user`'s local delivery slots (`local-uUID`, at most
    /// [`slots::users_part`] of `max_connections` at once, whoever's
    /// runner delivers), held while delivering to `what`; Step::Busy when
    /// all are taken. Root's own deliveries need none.
    fn local_slot(&self, user: &User, what: &str) -> std::result::Result<Option<Slot>, Step> {
        if self.lock_busy().contains(what) {
            return Err(Step::Defer(format!(
                "{what} busy (found locked earlier in this run)"
            )));
        }
        if user.uid == 0 {
            return Ok(None);
        }
        let share = slots::users_part(self.config.max_connections);
        match slots::try_acquire(self.hosts_dir, &format!("local-u{}", user.uid), share) {
            Ok(Some(slot)) => Ok(Some(slot)),
            Ok(None) => {
                log::info!(
                    "{what}: {share} local deliveries as {} already running; {} waits for the next run",
                    user.name,
                    self.recipient
                );
                Err(Step::Busy(format!(
                    "{share} local deliveries as {} already running: {what} waits",
                    user.name
                )))
            }
            Err(e) => Err(Step::Defer(e.message().to_string())),
        }
    }

    /// None: run as ourselves; Some: switch (root); Err: we cannot.
    fn credentials(&self, user: &User, gid: u32) -> std::result::Result<Option<Credentials>, Step> {
        match power_over(user.uid) {
            Power::Same => Ok(None),
            Power::Root => Credentials::of(user, gid)
                .map(Some)
                .map_err(|e| Step::Defer(format!("groups of {}: {e}", user.name))),
            Power::None => Err(Step::NeedsRoot(format!(
                "delivery as {} waits for a queue run by root",
                user.name
            ))),
        }
    }

    fn pipe(&self, command: &str, user: &User, data: &mut (dyn Read + Send)) -> Step {
        let creds = match self.credentials(user, user.gid) {
            Ok(c) => c,
            Err(step) => return step,
        };
        // Commands that never end (until pipe_timeout) stall their own
        // user's mail, and hold no more than half of root's queue run.
        let _slot = match self.local_slot(user, &format!("command {command}")) {
            Ok(slot) => slot,
            Err(step) => return step,
        };
        let job = pipe::Job {
            command,
            user,
            creds,
            sender: self.sender,
            recipient: self.recipient,
            timeout: self.config.pipe_timeout,
        };
        let said = |output: &str| match output.is_empty() {
            true => String::new(),
            false => format!(": {}", output.replace('\n', " / ")),
        };
        match pipe::run(&job, self.header, data) {
            Ok(Ended::Exited(0, _)) => Step::Done(format!("delivered to command {command}")),
            Ok(Ended::Exited(75, out)) => Step::Defer(format!(
                "command {command} exited 75 (try again later){}",
                said(&out)
            )),
            Ok(Ended::Exited(code, out)) => Step::Fail(
                "5.3.0",
                format!("command {command} exited {code}{}", said(&out)),
            ),
            Ok(Ended::Killed(signal, out)) => Step::Defer(format!(
                "command {command} killed by signal {signal}{}",
                said(&out)
            )),
            Ok(Ended::TimedOut(out)) => Step::Defer(format!(
                "command {command} ran longer than {}s and was killed{}",
                self.config.pipe_timeout.as_secs(),
                said(&out)
            )),
            Err(e) => Step::Defer(format!("starting command {command}: {e}")),
        }
    }
}
