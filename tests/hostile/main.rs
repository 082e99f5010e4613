//! The hostile local user (issue 15): an ordinary account attacks a
//! setgid install laid out as the package's postinst does. One test per
//! attack, named by the attack and what comes of it (e.g.
//! `an_include_tree_naming_itself_is_read_once_per_file_within_a_bound`),
//! each run as the unprivileged user against the real binary, each able
//! to fail: it asserts what the attacker must *not* get. Needs root
//! (accounts, setgid, mount namespaces); skipped with a line otherwise.
//!
//! Modules by area: `local` (:include:/.forward, the delivery helper),
//! `queue` (whose mail a queue run touches, slots and claims),
//! `environment` (what the setgid process takes from its caller),
//! `spool` (maildrop trace, recipient limits, corrupt/ and maildrop
//! junk), `session` (`-bs` input, newaliases, `-C`), `client` (what the
//! SMTP client sends and how long a hostile server may hold it),
//! `expansion` (include trees, fan-out and loops of list files, SIGTERM
//! to a long run), `fairness` (a silent DNS zone, a silent server, a
//! locked mailbox: whose slots and workers they hold), `limits` (too few
//! descriptors against the brake and the maildrop sweep), `relaylog`
//! (a relay's 421, look-alike domains, forged log fields), `combined`
//! (the slow attacks at once), `dkim` (the signing key, which the
//! setgid runner reads), `verify` (what `sendmail -bv` shows of
//! others' files). `site` is the fixture (accounts, a
//! setgid install), `tools` the attackers' means (a lock held, a silent
//! zone or server).

#[path = "../common/mod.rs"]
mod common;
#[allow(dead_code)]
mod site;

mod client;
mod combined;
mod dkim;
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
mod verify;
