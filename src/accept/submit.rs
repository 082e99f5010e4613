//! The sendmail face: one message from stdin to the spool.
//!
//! Order matters here. Everything that can be refused without reading
//! stdin (options, sender, command-line recipients) is checked first, so
//! a bad call costs nothing. Then the header section is read, the
//! envelope is settled, and the message is streamed into a draft in
//! `tmp/`. Only `Draft::commit` makes it visible in `queue/`: before that
//! line every error leaves the queue as it was and maps to a non-zero
//! exit; after it the message is safe and the caller gets 0 (RFC 1047).

use crate::accept::masquerade::Masquerade;
use crate::accept::message::{self, Intake, IntakeOptions};
use crate::address::{self, Address};
use crate::cli::Invocation;
use crate::config::Config;
use crate::error::{Error, Kind, Result};
use crate::privilege;
use crate::spool::{Envelope, QueueId, Spool};
use std::io::{Read, Write};
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
}

/// Accepts one message from `input` according to `inv` and commits it to
/// the spool. Returns only after the commit point (S1).
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
    // The envelope sender as it is stored and sent: masqueraded here, at
    // submission, so that the spool holds what goes out and mail that
    // local delivery makes later (forwards, bounces) is never rewritten.
    let masquerade = Masquerade::new(config);
    let envelope_sender = match &masquerade {
        Some(m) => m.envelope_sender(sender.as_ref(), inv.sender.is_some())?,
        None => sender.clone(),
    };

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
    let (mut draft, dropped) = begin(config, now)?;
    let mut intake = Intake::new(
        input,
        IntakeOptions {
            ignore_dots: inv.ignore_dots,
            max_size: config.max_message_size,
            ..IntakeOptions::default()
        },
    );
    let mut header = intake.read_header()?;
    if inv.extract_recipients {
        // Postfix semantics: header recipients plus the command line.
        let mut from_header = header.recipients()?;
        from_header.append(&mut recipients);
        recipients = from_header;
    }
    dedup(&mut recipients);
    if recipients.is_empty() {
        return Err(Error::usage("no recipient addresses found in the header"));
    }
    check_recipient_count(recipients.len(), config)?;

    let envelope = Envelope {
        id: draft.id().clone(),
        arrival: crate::clock::unix_seconds(now),
        sender: envelope_sender
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        recipients: recipients.iter().map(ToString::to_string).collect(),
        uid: caller.uid,
        user: caller.login.clone(),
        body_type: inv.body_type.clone(),
        dsn_notify: inv.dsn_notify.clone(),
        dsn_ret: inv.dsn_ret.clone(),
        envid: inv.envid.clone(),
        chain: Vec::new(),
        size: 0,
    };
    draft.write_envelope(&envelope)?;

    let mut added: Vec<u8> = Vec::new();
    if !header.contains("From") {
        let name = inv
            .full_name
            .clone()
            .or_else(name_from_environment)
            .or_else(|| caller.full_name.clone());
        // Written from the sender as given; the header rule below then
        // treats it as any other From: field.
        let from = sender.as_ref().unwrap_or(&caller_address);
        let field = message::from_field(name.as_deref(), from);
        match masquerade.as_ref().and_then(|m| m.header_field(&field)) {
            Some(masqueraded) => added.extend(masqueraded),
            None => added.extend(field),
        }
    }
    if !header.contains("Date") {
        added.extend(message::date_field(now));
    }
    if !header.contains("Message-ID") {
        added.extend(message::message_id_field(
            draft.id().as_str(),
            &config.hostname,
        ));
    }
    let out = draft.data();
    if !dropped {
        // A drop gets its trace from root's pickup, with the uid of the
        // file's owner: what a drop says about itself is not evidence.
        let received =
            message::received_field(&config.hostname, caller.uid, envelope.id.as_str(), now);
        out.write_all(&received)
            .map_err(|e| Error::io("writing the queue file", &e))?;
    }
    header.qualify(&config.hostname);
    // After qualification, so that a bare `From: root` is `root@hostname`
    // by now and masqueraded like any local address.
    if let Some(m) = &masquerade {
        header.masquerade(m);
    }
    header.write_to(out)?;
    out.write_all(&added)
        .and_then(|()| out.write_all(b"\n"))
        .map_err(|e| Error::io("writing the queue file", &e))?;
    intake.copy_body(out)?;

    // Counted last, when nothing else can refuse it: a message refused
    // here (75: the caller tries again later) leaves nothing queued. A
    // drop is not counted here: its writer cannot open hosts/ (the
    // counters fail closed), and root's pickup counts it, holding what
    // passes the limit.
    if !dropped {
        crate::accept::ratelimit::admit(
            config,
            &crate::spool::hosts_dir_of(&config.spool),
            caller.uid,
            &caller.login,
            recipients.len(),
            crate::clock::unix_seconds(now),
        )?;
    }
    let committed = draft.commit()?;
    // From here on the message is safe: it is fsynced and renamed into
    // queue/, and the directory is fsynced. Nothing below may fail the call.
    let (id, size) = (committed.id, committed.size);
    crate::logging::received(
        id.as_str(),
        caller.uid,
        &envelope.sender,
        &masqueraded_from(sender.as_ref(), envelope_sender.as_ref()),
        size,
        recipients.len(),
    );
    Ok(Submitted {
        id,
        size,
        recipients: recipients.len(),
        dropped,
    })
}

/// ` orig_from=<…>` for the pickup log line when masquerading changed
/// the envelope sender: the log keeps what the caller gave.
pub fn masqueraded_from(given: Option<&Address>, stored: Option<&Address>) -> String {
    match given {
        Some(given) if Some(given) != stored => format!(
            " orig_from=<{}>",
            crate::logging::address(&given.to_string())
        ),
        _ => String::new(),
    }
}

/// Refuses a message with more envelope recipients than `max_recipients`
/// allows: kind Data (exit 65, EX_DATAERR), since the message itself is
/// at fault and a caller retrying it unchanged would fail for ever.
pub fn check_recipient_count(count: usize, config: &Config) -> Result<()> {
    if count > config.max_recipients {
        return Err(Error::data(format!(
            "too many recipients: {count} (max_recipients is {}); split the list or use an alias",
            config.max_recipients
        )));
    }
    Ok(())
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
    fn the_log_keeps_the_sender_masquerading_replaced() {
        let a = |s: &str| Address::parse(s).unwrap();
        let (given, stored) = (a("root@web01.internal"), a("root@example.com"));
        assert_eq!(
            masqueraded_from(Some(&given), Some(&stored)),
            " orig_from=<root@web01.internal>"
        );
        assert_eq!(masqueraded_from(Some(&given), Some(&given)), "");
        assert_eq!(masqueraded_from(None, None), "", "<> is never rewritten");
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
