//! Local recipients: alias expansion (the compiled `/etc/aliases`).
//!
//! An alias that expands to addresses elsewhere is forwarded the way
//! Postfix's local(8) does it: a new message with the expanded recipients
//! is committed to the spool (sender `owner-NAME` when that alias exists)
//! and the original recipient is done. Mailboxes, pipes, files and
//! `:include:` are local delivery proper, which comes later; until then a
//! recipient whose expansion needs them waits in the queue.

use std::collections::BTreeSet;
use std::io::{self, Write};
use std::time::SystemTime;

use crate::aliases::{self, Aliases, Target};
use crate::config::Config;
use crate::error::Result;
use crate::spool::{Envelope, QueueId, Spool};

/// Deepest alias nesting followed (sendmail stops at 10 as well).
const MAX_DEPTH: usize = 10;

/// What expanding one local recipient gave.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Expansion {
    /// Addresses in other domains, to forward to.
    pub remote: Vec<String>,
    /// Targets that need local delivery (mailboxes, pipes, files,
    /// includes), with the user name for plain local users.
    pub local: Vec<Target>,
    /// The alias name whose `owner-` alias is the error sender.
    pub owner: Option<String>,
}

/// Whether `address` is delivered on this host: no domain, or one of
/// `local_domains`.
pub fn is_local(config: &Config, address: &str) -> bool {
    match address.rsplit_once('@') {
        None => true,
        Some((_, domain)) => config
            .local_domains
            .iter()
            .any(|d| d.eq_ignore_ascii_case(domain)),
    }
}

/// Whether `user` has a password entry (a mailbox owner). A lookup that
/// fails for another reason (NSS trouble) counts as existing: the
/// recipient then waits instead of bouncing.
pub fn user_exists(user: &str) -> bool {
    !matches!(nix::unistd::User::from_name(user), Ok(None))
}

fn local_part(address: &str) -> String {
    address
        .rsplit_once('@')
        .map_or(address, |(l, _)| l)
        .to_ascii_lowercase()
}

/// Expands the local recipient `address` through `aliases`, recursively,
/// each name at most once (an alias that names itself means the user).
pub fn expand(config: &Config, aliases: &Aliases, address: &str) -> Expansion {
    let mut out = Expansion::default();
    let mut seen = BTreeSet::new();
    let name = local_part(address);
    if aliases.entries.contains_key(&format!("owner-{name}")) {
        out.owner = Some(name.clone());
    }
    walk(config, aliases, &name, 0, &mut seen, &mut out);
    out
}

fn walk(
    config: &Config,
    aliases: &Aliases,
    name: &str,
    depth: usize,
    seen: &mut BTreeSet<String>,
    out: &mut Expansion,
) {
    let targets = match aliases.entries.get(name) {
        Some(t) if depth < MAX_DEPTH && seen.insert(name.to_string()) => t,
        // Not an alias, a loop back to itself, or too deep: the user.
        _ => {
            out.local.push(Target::Local(name.to_string()));
            return;
        }
    };
    for target in targets {
        match target {
            Target::Address(a) if is_local(config, a) => {
                walk(config, aliases, &local_part(a), depth + 1, seen, out)
            }
            Target::Address(a) => {
                if !out.remote.contains(a) {
                    out.remote.push(a.clone());
                }
            }
            other => out.local.push(other.clone()),
        }
    }
}

/// The compiled aliases, with a warning when the source is newer (the
/// sysadmin edited it and forgot `newaliases`). None: no aliases at all.
pub fn load(config: &Config) -> Result<Option<Aliases>> {
    let compiled = aliases::load_compiled(&config.aliases)?;
    if compiled.is_some() {
        let modified = |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        if let (Some(source), Some(built)) = (
            modified(&config.aliases),
            modified(&aliases::compiled_path(&config.aliases)),
        ) && source > built
        {
            log::warn!(
                "{} is newer than its compiled form: run newaliases",
                config.aliases.display()
            );
        }
    }
    Ok(compiled)
}

/// Commits a copy of `original` for `recipients` (the forwarding of an
/// alias), through the normal draft/commit path. The sender is
/// `owner-NAME@hostname` when such an alias exists, else the original's.
pub fn forward(
    spool: &Spool,
    config: &Config,
    original: &Envelope,
    expansion: &Expansion,
    now: SystemTime,
) -> Result<QueueId> {
    let mut draft = spool.begin(now)?;
    let sender = match &expansion.owner {
        Some(name) if !original.sender.is_empty() => format!("owner-{name}@{}", config.hostname),
        _ => original.sender.clone(),
    };
    let envelope = Envelope {
        id: draft.id().clone(),
        arrival: original.arrival,
        sender,
        recipients: expansion.remote.clone(),
        uid: original.uid,
        user: original.user.clone(),
        body_type: original.body_type.clone(),
        dsn_notify: original.dsn_notify.clone(),
        dsn_ret: original.dsn_ret.clone(),
        envid: original.envid.clone(),
        size: 0,
    };
    draft.write_envelope(&envelope)?;
    let mut data = spool.open_data(&original.id)?;
    let out = draft.data();
    io::copy(&mut data, out)
        .and_then(|_| out.flush())
        .map_err(|e| crate::error::Error::io("copying a forwarded message", &e))?;
    Ok(draft.commit()?.id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config {
            hostname: "host.example".into(),
            local_domains: vec!["host.example".into(), "localhost".into()],
            ..Config::default()
        }
    }

    fn aliases(text: &str) -> Aliases {
        aliases::parse(text, "test").unwrap().0
    }

    #[test]
    fn nested_aliases_reach_remote_addresses_once() {
        let a = aliases("root: admins\nadmins: a@x.test, b@x.test, ops\nops: b@x.test, c@y.test\n");
        let e = expand(&config(), &a, "root@host.example");
        assert_eq!(e.remote, ["a@x.test", "b@x.test", "c@y.test"]);
        assert!(e.local.is_empty());
    }

    #[test]
    fn a_loop_ends_at_the_user_and_unknown_names_are_users() {
        let a = aliases("a: b\nb: a, x@x.test\n");
        let e = expand(&config(), &a, "a");
        assert_eq!(e.remote, ["x@x.test"]);
        assert_eq!(e.local, [Target::Local("a".into())]);
        let e = expand(&config(), &a, "alice");
        assert_eq!(e.local, [Target::Local("alice".into())]);
    }

    #[test]
    fn owner_alias_is_noticed() {
        let a = aliases("list: x@x.test\nowner-list: admin\n");
        assert_eq!(expand(&config(), &a, "list").owner.as_deref(), Some("list"));
    }

    #[test]
    fn users_are_looked_up() {
        assert!(user_exists("root"));
        assert!(!user_exists("no-such-user-spoolmail-test"));
    }

    #[test]
    fn locality_follows_local_domains() {
        let c = config();
        assert!(is_local(&c, "root"));
        assert!(is_local(&c, "root@LOCALHOST"));
        assert!(!is_local(&c, "root@elsewhere.example"));
    }
}
