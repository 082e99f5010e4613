//! The sendmail face: one message from stdin to the spool.
//!
//! Order matters here. Everything that can be refused without reading
//! stdin (options, sender, command-line recipients) is checked first, so
//! a bad call costs nothing. Then the header section is read, the
//! envelope is settled, and the message is streamed into a draft in
//! `tmp/`. Only `Draft::commit` makes it visible in `queue/`: before that
//! line every error leaves the queue as it was and maps to a non-zero
//! exit; after it the message is safe and the caller gets 0 (RFC 1047).
//! The rules themselves (limits, addresses, masquerading, the brake, the
//! trace, the log line) are the cleanup step's, shared with `-bs` and
//! root's pickup: this door only gathers what the caller gave.

use crate::accept::cleanup::{
    Cleanup, Content, Door, GivenSender, Handed, Refused, recipient_limit,
};
use crate::accept::message::{Intake, IntakeOptions};
use crate::address::{self, Address};
use crate::cli::{DeliveryMode, Invocation};
use crate::config::Config;
use crate::error::{Error, Kind, Result};
use crate::privilege;
use crate::spool::{HeldClaim, QueueId, Spool};
use std::io::Read;
use std::time::SystemTime;

/// The user who called sendmail, from the password database (never from
/// the environment, which a setgid program cannot trust).
#[derive(Debug, Clone)]
pub struct Caller {
    /// Real uid.
    pub uid: u32,
    /// Login name.
    pub login: String,
    /// Full name from the GECOS field, if any.
    pub full_name: Option<String>,
}

impl Caller {
    /// Looks up the real uid of this process.
    pub fn current() -> Result<Caller> {
        let uid = nix::unistd::getuid();
        let no_entry = || {
            Error::new(
                Kind::NoUser,
                format!("who are you? uid {uid} has no password entry"),
            )
        };
        let user = match nix::unistd::User::from_uid(uid) {
            Ok(Some(user)) => user,
            Ok(None) => {
                // glibc answers "not found" when one NSS source failed and
                // the next had no entry ("files systemd": /etc/passwd could
                // not be opened, nss-systemd knows nothing of the uid), and
                // errno is gone by then. A temporary failure of the files
                // source shows again when /etc/passwd is opened now.
                if let Err(e) = std::fs::File::open("/etc/passwd")
                    && matches!(
                        e.raw_os_error(),
                        Some(libc::EMFILE | libc::ENFILE | libc::EIO | libc::ENOMEM)
                    )
                {
                    return Err(Error::temp(format!(
                        "looking up uid {uid} in the password database: /etc/passwd: {e}"
                    )));
                }
                return Err(no_entry());
            }
            // getpwuid_r(3): these mean "not found"; anything else (EMFILE,
            // EIO, ENOMEM, …) is trouble with the lookup itself, which a
            // retry may not meet: temporary, not "who are you?".
            Err(
                nix::errno::Errno::ENOENT
                | nix::errno::Errno::ESRCH
                | nix::errno::Errno::EBADF
                | nix::errno::Errno::EPERM,
            ) => return Err(no_entry()),
            Err(e) => {
                return Err(Error::temp(format!(
                    "looking up uid {uid} in the password database: {e}"
                )));
            }
        };
        let gecos = user.gecos.to_string_lossy().into_owned();
        Ok(Caller {
            uid: uid.as_raw(),
            full_name: full_name_from_gecos(&gecos, &user.name),
            login: user.name,
        })
    }
}

/// The BSD convention: the full name is the first comma-separated field,
/// with `&` standing for the capitalised login name.
fn full_name_from_gecos(gecos: &str, login: &str) -> Option<String> {
    let first = gecos.split(',').next().unwrap_or("").trim();
    if first.is_empty() {
        return None;
    }
    let mut capitalised = String::new();
    let mut chars = login.chars();
    if let Some(c) = chars.next() {
        capitalised.extend(c.to_uppercase());
        capitalised.push_str(chars.as_str());
    }
    Some(first.replace('&', &capitalised))
}

/// What a committed submission produced.
#[derive(Debug)]
pub struct Submitted {
    /// The queue ID.
    pub id: QueueId,
    /// The stored message size in bytes.
    pub size: u64,
    /// The number of envelope recipients.
    pub recipients: usize,
    /// Committed to the maildrop, not the queue: only a queue run by root
    /// can deliver it.
    pub dropped: bool,
    /// The message's claim, for a caller that delivers it at once
    /// (`-odi`/`-odf`).
    pub held: Option<HeldClaim>,
}

/// Accepts one message from `input` according to `inv` and commits it to
/// the spool through [`cleanup`](crate::accept::cleanup). Returns only
/// after the commit point (S1).
pub fn submit(
    inv: &Invocation,
    config: &Config,
    caller: &Caller,
    input: impl Read,
    now: SystemTime,
) -> Result<Submitted> {
    let caller_address = Address::parse(&caller.login)
        .map_err(|e| Error::new(Kind::NoUser, e.message().to_string()))?
        .qualified(&config.hostname);
    let sender: Option<Address> = match &inv.sender {
        Some(given) => address::parse_sender(given)?.map(|a| a.qualified(&config.hostname)),
        None => Some(caller_address.clone()),
    };
    // The sender is settled (masqueraded) before stdin is read: a bad
    // one costs nothing.
    let cleanup = Cleanup::new(
        config,
        GivenSender {
            text: sender.as_ref().map(ToString::to_string).unwrap_or_default(),
            address: sender.clone(),
            named: inv.sender.is_some(),
        },
    )?;

    let mut recipients: Vec<Address> = Vec::new();
    for arg in &inv.recipients {
        recipients.extend(address::parse_list(arg)?);
    }
    if recipients.is_empty() && !inv.extract_recipients {
        return Err(Error::usage(format!(
            "no recipients given (use -t to read them from the headers); {}",
            crate::cli::USAGE
        )));
    }
    // Refused before stdin is read, when the command line alone is too long.
    dedup(&mut recipients);
    check_recipient_count(recipients.len(), config)?;

    // A draft that is dropped on any error path removes its tmp file: the
    // queue never sees half a message (S2).
    let (draft, dropped) = begin(config, now)?;
    // A caller that waits for the delivery holds the message's claim
    // from its commit on: a queue runner listing the queue in between
    // would otherwise take it, and the caller be told only "deferred".
    let held = match inv.delivery {
        DeliveryMode::Interactive | DeliveryMode::Foreground if !dropped => {
            Some(draft.hold_claim()?)
        }
        _ => None,
    };
    let mut intake = Intake::new(
        input,
        IntakeOptions {
            ignore_dots: inv.ignore_dots,
            max_size: config.max_message_size,
            ..IntakeOptions::default()
        },
    );
    let header = intake.read_header()?;
    if inv.extract_recipients {
        // Postfix semantics: header recipients plus the command line.
        let mut from_header = header.recipients()?;
        from_header.append(&mut recipients);
        recipients = from_header;
    }
    dedup(&mut recipients);

    let handed = Handed {
        uid: caller.uid,
        user: caller.login.clone(),
        recipients: recipients.iter().map(ToString::to_string).collect(),
        body_type: inv.body_type.clone(),
        dsn_notify: inv.dsn_notify.clone(),
        dsn_ret: inv.dsn_ret.clone(),
        envid: inv.envid.clone(),
        arrival: crate::clock::unix_seconds(now),
    };
    // An added From: is written from the sender as given (the header rule
    // then treats it as any other From: field); for the null sender it is
    // MAILER-DAEMON, as Postfix writes it, not the caller.
    let (full_name, from) = match sender {
        Some(sender) => (
            inv.full_name
                .clone()
                .or_else(name_from_environment)
                .or_else(|| caller.full_name.clone()),
            sender,
        ),
        None => (
            None,
            Address::parse("MAILER-DAEMON")
                .map_err(|e| Error::new(Kind::Software, e.message().to_string()))?
                .qualified(&config.hostname),
        ),
    };
    let content = Content::Fresh {
        header,
        intake,
        full_name,
        from,
    };
    let door = Door::Caller {
        into_maildrop: dropped,
    };
    let accepted = cleanup
        .commit(door, draft, handed, content, now)
        .map_err(|refused| match refused {
            Refused::TooManyRecipients(count) => recipient_count_error(count, config),
            Refused::NoRecipients => Error::usage("no recipient addresses found in the header"),
            Refused::Recipient(e) | Refused::Envid(e) | Refused::Other(e) => e,
        })?;
    Ok(Submitted {
        id: accepted.id,
        size: accepted.size,
        recipients: accepted.recipients,
        dropped,
        held,
    })
}

/// Refuses a message with more envelope recipients than `max_recipients`
/// allows: kind Data (exit 65, EX_DATAERR), since the message itself is
/// at fault and a caller retrying it unchanged would fail for ever.
pub fn check_recipient_count(count: usize, config: &Config) -> Result<()> {
    recipient_limit(count, config).map_err(|_| recipient_count_error(count, config))
}

/// What a caller is told of a message over the recipient limit.
fn recipient_count_error(count: usize, config: &Config) -> Error {
    Error::data(format!(
        "too many recipients: {count} (max_recipients is {}); split the list or use an alias",
        config.max_recipients
    ))
}

/// A draft in the queue, or — for a caller the queue is closed to (the
/// setgid bit ignored under NoNewPrivileges) — in the maildrop, which
/// a queue run by root empties into the queue. True: the maildrop.
fn begin(config: &Config, now: SystemTime) -> Result<(crate::spool::Draft, bool)> {
    match Spool::open(&config.spool).and_then(|spool| spool.begin(now)) {
        Ok(draft) => Ok((draft, false)),
        Err(e) if e.kind() == Kind::NoPermission => {
            match crate::spool::begin_drop(&config.spool, now) {
                Ok(draft) => {
                    log::debug!("the queue is closed to this caller ({e}): using the maildrop");
                    Ok((draft, true))
                }
                Err(_) => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

/// Postfix honours `NAME` for the full name; a privileged process must not
/// read its caller's environment, so it is used only when unprivileged
/// (the environment itself is cleared at start-up: see `privilege`).
fn name_from_environment() -> Option<String> {
    privilege::caller_name().filter(|n| !n.trim().is_empty() && !n.chars().any(char::is_control))
}

/// Removes repeated recipients, keeping the first occurrence.
fn dedup(recipients: &mut Vec<Address>) {
    let mut seen = std::collections::HashSet::new();
    recipients.retain(|r| seen.insert(r.to_string().to_ascii_lowercase()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn more_recipients_than_max_recipients_is_a_data_error() {
        let config = Config {
            max_recipients: 2,
            ..Config::default()
        };
        assert!(check_recipient_count(2, &config).is_ok());
        let e = check_recipient_count(3, &config).unwrap_err();
        assert_eq!(e.kind().exit_code(), 65);
        assert!(e.message().contains("max_recipients is 2"));
        assert!(!e.message().contains('\n'), "one line");
    }

    #[test]
    fn gecos_full_name() {
        assert_eq!(
            full_name_from_gecos("Jane Doe,Room 1,555", "jane").as_deref(),
            Some("Jane Doe")
        );
        assert_eq!(
            full_name_from_gecos("& Smith", "bob").as_deref(),
            Some("Bob Smith")
        );
        assert_eq!(full_name_from_gecos(",,,", "x"), None);
        assert_eq!(full_name_from_gecos("", "x"), None);
    }
}
