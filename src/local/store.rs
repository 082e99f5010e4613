//! Writing a message into a mailbox, a Maildir or a file as the user it
//! belongs to.
//!
//! When the runner already is that user it writes an mbox itself. In
//! every other case it re-executes this binary (`/proc/self/exe
//! --local-delivery KIND PATH SENDER`) in a child that has switched to
//! the user: the child gives up every privilege it could hold (the
//! setgid group included) before it looks at its arguments, so the
//! internal entry point lets nobody do more than they could on their own.

use std::io::{self, Read};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use super::{maildir, mbox};
use crate::error::{Error, Kind, Result};
use crate::privilege;

use super::pipe::{self, Ended};
use super::user::{self, Credentials};

/// The argument that selects the internal delivery entry point.
pub const HELPER_FLAG: &str = "--local-delivery";

/// How long the helper waits for a mailbox's locks before deferring
/// when its caller does not say (the runner passes `mailbox_lock_wait`).
pub const LOCK_TIMEOUT: Duration = Duration::from_secs(60);

/// Where a message is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Store {
    /// An mbox mailbox (`mail_spool_dir/USER`): dotlock, owned by the user.
    Mbox(PathBuf),
    /// A Maildir.
    Maildir(PathBuf),
    /// A file named in an alias or .forward: appended mbox-style.
    File(PathBuf),
}

impl Store {
    fn parts(&self) -> (&'static str, &Path) {
        match self {
            Store::Mbox(p) => ("mbox", p),
            Store::Maildir(p) => ("maildir", p),
            Store::File(p) => ("file", p),
        }
    }
}

/// Appends to an mbox in this process (the runner is the mailbox's
/// user), waiting up to `lock_wait` for its locks.
pub fn mbox_here(
    path: &Path,
    owner: u32,
    sender: &str,
    header: &[u8],
    message: &mut dyn Read,
    lock_wait: Duration,
) -> Result<()> {
    let spec = mbox::Append {
        path,
        sender,
        header,
        lock_timeout: lock_wait,
        dotlock: true,
        mode: mbox::MAILBOX_MODE,
        owner: Some(owner),
    };
    mbox::append(&spec, message, SystemTime::now()).map(|_| ())
}

/// Writes through a child running as `creds` (None: this process's real
/// user, without its setgid group). The child runs as the recipient, who
/// may stop or slow it: at `time_limit` its process group is killed and
/// the delivery is temporary trouble — a root queue run never waits on a
/// user's whim. It waits up to `lock_wait` for a mailbox's or file's
/// locks.
pub fn through_child(
    store: &Store,
    creds: Option<Credentials>,
    sender: &str,
    header: &[u8],
    message: &mut (dyn Read + Send),
    time_limit: Duration,
    lock_wait: Duration,
) -> Result<()> {
    let (kind, path) = store.parts();
    let mut command = Command::new("/proc/self/exe");
    command
        .arg0("spoolmail")
        .arg(HELPER_FLAG)
        .arg(kind)
        .arg(path)
        .arg(sender)
        .arg(lock_wait.as_millis().to_string())
        .env_clear()
        .current_dir("/");
    user::run_as(&mut command, creds);
    let deadline = Instant::now() + time_limit;
    let ended = pipe::run_until(command, header, message, deadline)
        .map_err(|e| Error::io("starting the local delivery helper", &e))?;
    let first_line = |said: &str| {
        let said = said.lines().next().unwrap_or("").trim();
        said.strip_prefix("spoolmail: ").unwrap_or(said).to_string()
    };
    match ended {
        Ended::Exited(0, _) => Ok(()),
        Ended::Exited(code, said) => Err(Error::new(
            Kind::from_exit_code(code),
            match first_line(&said) {
                s if s.is_empty() => format!("local delivery to {} exited {code}", path.display()),
                s => s,
            },
        )),
        Ended::Killed(signal, _) => Err(Error::temp(format!(
            "local delivery to {} was killed by signal {signal}",
            path.display()
        ))),
        Ended::TimedOut(_) => Err(Error::temp(format!(
            "local delivery to {} took longer than {}s and was killed",
            path.display(),
            time_limit.as_secs()
        ))),
    }
}

/// The helper's side: `--local-delivery KIND PATH SENDER [LOCK_WAIT_MS]`,
/// the message on stdin.
pub fn helper_main(args: &[String]) -> Result<()> {
    // First of all: no more power than whoever started us.
    privilege::drop_privilege()?;
    let usage = || {
        Error::usage(format!(
            "{HELPER_FLAG} takes KIND PATH SENDER [LOCK_WAIT_MS] (internal use)"
        ))
    };
    let (kind, path, sender, lock_wait) = match args {
        [kind, path, sender] => (kind, path, sender, LOCK_TIMEOUT),
        [kind, path, sender, ms] => {
            let ms = ms.parse().map_err(|_| usage())?;
            (kind, path, sender, Duration::from_millis(ms))
        }
        _ => return Err(usage()),
    };
    let path = Path::new(path);
    if !path.is_absolute() {
        return Err(Error::usage(format!(
            "{HELPER_FLAG}: {} is not absolute",
            path.display()
        )));
    }
    let mut input = io::stdin().lock();
    let me = nix::unistd::getuid().as_raw();
    match kind.as_str() {
        "mbox" => mbox_here(path, me, sender, b"", &mut input, lock_wait),
        "file" => {
            let spec = mbox::Append {
                path,
                sender,
                header: b"",
                lock_timeout: lock_wait,
                dotlock: false,
                mode: 0o600,
                owner: None,
            };
            mbox::append(&spec, &mut input, SystemTime::now()).map(|_| ())
        }
        "maildir" => maildir::deliver(path, b"", &mut input).map(|_| ()),
        other => Err(Error::usage(format!(
            "{HELPER_FLAG}: unknown kind {other:?}"
        ))),
    }
}
