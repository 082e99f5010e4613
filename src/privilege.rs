//! The caller and what it may do: process hygiene for a binary that may
//! be installed setgid, and the one rule of whose queued mail a caller
//! may see and act on ([`Scope`]), with what a caller may ask of queued
//! mail ([`QueueFilter`], [`AdminAction`]) — kept here, below `runner/`
//! and `queue/`, which both apply them.
//!
//! WARNING — what a hostile caller controls when this binary runs setgid:
//! every argument (PHP's fifth `mail()` parameter), the whole environment
//! (TZ, locale, TMPDIR, HOME, NAME, …), the open file descriptors (0–2 may
//! be closed so that our first `open` lands on fd 1; others may leak
//! files into a child), the umask, resource limits (RLIMIT_FSIZE raises
//! SIGXFSZ in the middle of a write), signals, and the current directory.
//! Hence: fds 0–2 are made valid, every other inherited fd is closed, the
//! umask is set, SIGXFSZ is ignored so a size limit becomes an error
//! instead of a kill, the process is made non-dumpable, the environment is
//! replaced by a fixed safe one before any library can read it (OpenSSL
//! reads `SSL_CERT_FILE`/`SSL_CERT_DIR`, which would let the caller choose
//! whom we trust with the relay's password), and `-C` from a non-root
//! caller drops the privilege before the file is opened.

use std::sync::OnceLock;

use crate::error::{Error, Kind, Result};

/// The only environment a privileged process keeps.
const SAFE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The caller's `NAME` (a full name Postfix and sendmail honour), kept
/// only when the caller is not gaining privilege through us.
static CALLER_NAME: OnceLock<Option<String>> = OnceLock::new();

/// Whether the process runs with more privilege than its caller (setgid or setuid).
pub fn is_privileged() -> bool {
    // SAFETY: these getters cannot fail and touch no memory.
    unsafe { libc::getegid() != libc::getgid() || libc::geteuid() != libc::getuid() }
}

/// Puts the process in a known state before anything else runs.
pub fn harden() {
    // SAFETY: plain system calls on integers; no Rust-managed state involved.
    unsafe {
        // fds 0, 1, 2 must be open, or the spool file we open next could
        // become "stdout" and receive our error messages.
        for fd in 0..3 {
            if libc::fcntl(fd, libc::F_GETFD) == -1 {
                let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
                if null == -1 {
                    // Without /dev/null there is nothing sane left to do.
                    libc::_exit(75);
                }
            }
        }
        // Inherited descriptors beyond stdio are never ours: close them so
        // the detached runner does not keep a caller's pipe open either.
        libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
        // Files we create are restricted by their explicit modes; the umask
        // only tightens, never loosens, what a hostile caller might widen.
        libc::umask(0o027);
        // A caller's RLIMIT_FSIZE must turn into EFBIG (exit 75), not a kill.
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        if is_privileged() {
            // No core dumps or ptrace of a process holding the spool group.
            libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
        }
    }
    let setid = is_privileged();
    let _ = CALLER_NAME.set(match setid {
        true => None,
        false => std::env::var("NAME").ok(),
    });
    if setid || caller_is_root() {
        clear_environment();
    }
}

/// Replaces the environment by `PATH` alone. Runs first thing in `main`,
/// while the process has one thread and before any library has looked.
fn clear_environment() {
    let names: Vec<std::ffi::OsString> = std::env::vars_os().map(|(k, _)| k).collect();
    for name in names {
        // SAFETY: called from `harden`, at the start of `main`, before any
        // other thread exists.
        unsafe { std::env::remove_var(name) };
    }
    // SAFETY: as above.
    unsafe { std::env::set_var("PATH", SAFE_PATH) };
}

/// The caller's `NAME` environment variable, when it may be trusted as
/// the caller's own words (not when the process runs set-id).
pub fn caller_name() -> Option<String> {
    CALLER_NAME.get().cloned().flatten()
}

/// Gives up the setgid (and setuid) privilege for good: used when a
/// non-root caller names its own configuration file with `-C`.
pub fn drop_privilege() -> Result<()> {
    // SAFETY: plain system calls on integers.
    let ok = unsafe {
        let gid = libc::getgid();
        let uid = libc::getuid();
        libc::setresgid(gid, gid, gid) == 0
            && libc::setresuid(uid, uid, uid) == 0
            && libc::getegid() == gid
            && libc::geteuid() == uid
    };
    if ok {
        Ok(())
    } else {
        Err(Error::new(
            Kind::NoPermission,
            "cannot drop the setgid privilege",
        ))
    }
}

/// True when the real caller is root.
pub fn caller_is_root() -> bool {
    // SAFETY: cannot fail.
    unsafe { libc::getuid() == 0 }
}

/// Whose queued mail the caller may see and act on: the one rule behind
/// `mailq` (text, `--json`, `--summary`), `-q` and the admin actions, as
/// sendmail 8's `PrivacyOptions=restrictmailq,restrictqrun`. A caller
/// whose *real* uid is 0, or whose real gid or supplementary groups
/// include the spool's group (the group of its `queue/`, `mail` when
/// installed), has every message; anyone else only the messages whose
/// envelope carries their uid — they never see whom others write to, and
/// their queue run neither claims, delivers, prints nor forces anybody
/// else's mail. Never the effective gid: the binary is setgid to that
/// group, so every caller has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Root or a member of the spool's group: every message.
    Every,
    /// Anyone else: the messages of this uid.
    Own(u32),
}

impl Scope {
    /// The calling process's scope over a spool whose group is
    /// `spool_group` (None: unknown, so no one is a member). Decided once
    /// by each face (`main`) and handed down.
    pub fn of_caller(spool_group: Option<u32>) -> Scope {
        let groups: Vec<u32> = nix::unistd::getgroups()
            .map(|groups| groups.iter().map(|g| g.as_raw()).collect())
            .unwrap_or_default();
        Scope::decide(
            nix::unistd::getuid().as_raw(),
            nix::unistd::getgid().as_raw(),
            &groups,
            spool_group,
        )
    }

    /// The rule itself, on the real `uid`, real `gid` and supplementary
    /// `groups` of a caller.
    pub fn decide(uid: u32, gid: u32, groups: &[u32], spool_group: Option<u32>) -> Scope {
        let member = spool_group.is_some_and(|spool| gid == spool || groups.contains(&spool));
        match uid == 0 || member {
            true => Scope::Every,
            false => Scope::Own(uid),
        }
    }

    /// Whether a message whose envelope carries `uid` is in the scope.
    /// That uid is one only this binary writes: the submitter's, the
    /// owner of the `.forward` or list that made a forwarded copy, the
    /// original's sender for a notice, the file's owner for a maildrop
    /// pickup.
    pub fn includes(self, uid: u32) -> bool {
        match self {
            Scope::Every => true,
            Scope::Own(own) => own == uid,
        }
    }

    /// The one uid the scope is restricted to (None: every message).
    pub fn only_uid(self) -> Option<u32> {
        match self {
            Scope::Every => None,
            Scope::Own(uid) => Some(uid),
        }
    }
}

/// A restriction to some queued messages (`-qI`, `-qR`, `-qS`, and the
/// admin actions' `--recipient`/`--sender`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueFilter {
    /// Queue IDs containing the text.
    Id(String),
    /// Recipients containing the text.
    Recipient(String),
    /// Senders containing the text.
    Sender(String),
}

impl QueueFilter {
    /// Whether the message with queue ID `id`, envelope sender `sender`
    /// and `recipients` is one this filter asks for (`-qI`: the ID
    /// contains the text; `-qR`: a recipient does, `-qS`: the sender
    /// does, case ignored).
    pub fn matches(&self, id: &str, sender: &str, recipients: &[String]) -> bool {
        match self {
            QueueFilter::Id(text) => id.contains(text.as_str()),
            QueueFilter::Recipient(text) => {
                recipients.iter().any(|r| contains_ignore_case(r, text))
            }
            QueueFilter::Sender(text) => contains_ignore_case(sender, text),
        }
    }
}

fn contains_ignore_case(haystack: &str, needle: &str) -> bool {
    haystack
        .to_ascii_lowercase()
        .contains(&needle.to_ascii_lowercase())
}

/// What `mailq --delete/--hold/--release` does to each message named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminAction {
    /// Remove it from the queue (no notice to anyone).
    Delete,
    /// Keep it from delivery and expiry until released.
    Hold,
    /// Make a held message due at once.
    Release,
    /// Attempt it now, retry times and the unreachable cache ignored.
    Requeue,
    /// Fail every recipient not yet final and send the sender a DSN.
    Return,
}

/// The name of user `uid` from the password database, or the number.
pub fn user_name(uid: u32) -> String {
    nix::unistd::User::from_uid(uid.into())
        .ok()
        .flatten()
        .map_or_else(|| uid.to_string(), |u| u.name)
}

/// The name of group `gid` from the group database, or the number.
pub fn group_name(gid: u32) -> String {
    nix::unistd::Group::from_gid(gid.into())
        .ok()
        .flatten()
        .map_or_else(|| gid.to_string(), |g| g.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_and_the_spool_group_have_every_message() {
        const MAIL: u32 = 8;
        // Root, whatever its groups.
        assert_eq!(Scope::decide(0, 0, &[], Some(MAIL)), Scope::Every);
        assert_eq!(Scope::decide(0, 0, &[], None), Scope::Every);
        // The spool's group as the real gid, or as a supplementary group.
        assert_eq!(Scope::decide(1000, MAIL, &[], Some(MAIL)), Scope::Every);
        assert_eq!(
            Scope::decide(1000, 1000, &[27, MAIL], Some(MAIL)),
            Scope::Every
        );
        // Anyone else, and anyone at all when the group is unknown.
        assert_eq!(
            Scope::decide(1000, 1000, &[27], Some(MAIL)),
            Scope::Own(1000)
        );
        assert_eq!(Scope::decide(1000, MAIL, &[MAIL], None), Scope::Own(1000));
    }

    #[test]
    fn a_scope_includes_its_own_uid_or_every_one() {
        assert!(Scope::Every.includes(1234));
        assert!(Scope::Own(1000).includes(1000));
        assert!(!Scope::Own(1000).includes(0));
        assert_eq!(Scope::Every.only_uid(), None);
        assert_eq!(Scope::Own(7).only_uid(), Some(7));
    }

    #[test]
    fn filters_match_by_id_recipient_and_sender() {
        let rcpts = ["Bob@Example.COM".to_string()];
        let matches = |f: QueueFilter| f.matches("1AbCdE", "alice@host", &rcpts);
        assert!(matches(QueueFilter::Id("AbC".into())));
        assert!(!matches(QueueFilter::Id("abc".into())));
        assert!(matches(QueueFilter::Recipient("example.com".into())));
        assert!(matches(QueueFilter::Sender("ALICE".into())));
        assert!(!matches(QueueFilter::Sender("bob".into())));
    }
}
