//! Acceptance: the one way in for every message (Postfix's cleanup).
//!
//! Whatever door a message comes in by — `sendmail` reading stdin,
//! `sendmail -bs` speaking SMTP on stdio, root's pickup of the maildrop —
//! its bytes pass through this room on their way to the spool's
//! `Draft::commit`: the recipient limit, the address checks and
//! qualification, masquerading, the brake, the `Received:` trace and the
//! log line, all in [`cleanup`]. The doors only gather their inputs:
//! [`submit`] (sendmail's stdin), [`smtpd`] (`-bs`, through `submit`),
//! [`pickup`] (root's pickup of the maildrop). See
//! docs/architecture.md, "accept".

pub mod cleanup;
pub mod masquerade;
pub mod message;
pub mod pickup;
pub mod qualify;
pub mod ratelimit;
pub mod smtpd;
pub mod submit;

// Whatever the configuration lets a message have, the spool's state file
// must hold: checked here, where both are known, when the crate builds.
const _: () = assert!(crate::config::MAX_RECIPIENTS_CEILING <= crate::spool::MAX_STATE_RECIPIENTS);
