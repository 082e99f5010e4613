//! Process hygiene for a binary that may be installed setgid.
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
