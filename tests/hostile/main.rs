//! The hostile local user (issue 15): an ordinary account attacks a
//! setgid install laid out as the package's postinst does. One named test
//! per attack (`itemNN_…`, after the list), each run as the
//! unprivileged user against the real binary, each able to fail: it
//! asserts what the attacker must *not* get. Needs root (accounts,
//! setgid, mount namespaces); skipped with a line otherwise.
//!
//! Modules by area: `local` (:include:/.forward, the delivery helper),
//! `queue` (whose mail a queue run touches, slots and claims),
//! `environment` (what the setgid process takes from its caller),
//! `spool` (maildrop trace, recipient limits, corrupt/ and maildrop
//! junk), `session` (`-bs` input, newaliases, `-C`), `client` (what the
//! SMTP client sends and how long a hostile server may hold it).

#[path = "../common/mod.rs"]
mod common;
#[allow(dead_code)]
mod site;

mod client;
mod combined;
mod environment;
mod expansion;
mod fairness;
mod limits;
mod local;
mod queue;
mod relaylog;
mod scope;
mod session;
mod spool;
mod tools;
