//! Typed errors. Every failure in spoolmail is an [`Error`] carrying a
//! [`Kind`]; only `main` turns a kind into a process exit code, so the
//! exit-code table (docs/command-line.md) and the code cannot drift apart.

use std::fmt;
use std::io;

/// What went wrong, as far as the caller of `sendmail` needs to know.
/// Each kind maps to exactly one sysexits(3) code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Bad command line: unknown option, missing recipients (EX_USAGE, 64).
    Usage,
    /// Bad input data: malformed address or header, message too large (EX_DATAERR, 65).
    Data,
    /// An input file does not exist or cannot be read (EX_NOINPUT, 66).
    NoInput,
    /// The calling user is unknown (EX_NOUSER, 67).
    NoUser,
    /// A service that is not (yet) available in this mode (EX_UNAVAILABLE, 69).
    Unavailable,
    /// An internal error: a bug (EX_SOFTWARE, 70).
    Software,
    /// The spool cannot be created or is missing (EX_CANTCREAT, 73).
    CantCreate,
    /// Temporary trouble: disk full, I/O error, interrupted; try again later (EX_TEMPFAIL, 75).
    TempFail,
    /// Permission denied (EX_NOPERM, 77).
    NoPermission,
    /// The configuration file is wrong (EX_CONFIG, 78).
    Config,
}

impl Kind {
    /// The kind a child's sysexits status means (unknown codes: TempFail,
    /// so that nothing is bounced on a guess).
    pub fn from_exit_code(code: i32) -> Kind {
        match code {
            64 => Kind::Usage,
            65 => Kind::Data,
            66 => Kind::NoInput,
            67 => Kind::NoUser,
            69 => Kind::Unavailable,
            70 => Kind::Software,
            73 => Kind::CantCreate,
            77 => Kind::NoPermission,
            78 => Kind::Config,
            _ => Kind::TempFail,
        }
    }

    /// The sysexits(3) code for this kind.
    pub fn exit_code(self) -> i32 {
        match self {
            Kind::Usage => 64,
            Kind::Data => 65,
            Kind::NoInput => 66,
            Kind::NoUser => 67,
            Kind::Unavailable => 69,
            Kind::Software => 70,
            Kind::CantCreate => 73,
            Kind::TempFail => 75,
            Kind::NoPermission => 77,
            Kind::Config => 78,
        }
    }
}

/// A failure with its kind and a one-line, human-readable reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    kind: Kind,
    message: String,
}

/// The result type used throughout spoolmail.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// An error of the given kind; `message` must be one line.
    pub fn new(kind: Kind, message: impl Into<String>) -> Error {
        let message: String = message.into();
        // One line on stderr, whatever the message was built from.
        let message = message.replace(['\r', '\n'], " ");
        Error { kind, message }
    }

    /// A command-line error (64).
    pub fn usage(message: impl Into<String>) -> Error {
        Error::new(Kind::Usage, message)
    }

    /// A bad-data error (65).
    pub fn data(message: impl Into<String>) -> Error {
        Error::new(Kind::Data, message)
    }

    /// A temporary failure (75).
    pub fn temp(message: impl Into<String>) -> Error {
        Error::new(Kind::TempFail, message)
    }

    /// A configuration error (78).
    pub fn config(message: impl Into<String>) -> Error {
        Error::new(Kind::Config, message)
    }

    /// Classifies an I/O error met while doing `what` (e.g. "writing tmp/ID").
    /// Permission problems are 77, a missing spool is 73, and everything
    /// else — disk full, quota, file too large, I/O errors, interrupted
    /// calls — is temporary (75): the caller should try again later.
    pub fn io(what: impl fmt::Display, err: &io::Error) -> Error {
        let kind = match err.raw_os_error() {
            Some(libc::EACCES) | Some(libc::EPERM) | Some(libc::EROFS) => Kind::NoPermission,
            Some(libc::ENOENT) | Some(libc::ENOTDIR) => Kind::CantCreate,
            _ => Kind::TempFail,
        };
        Error::new(kind, format!("{what}: {err}"))
    }

    /// The kind of this error.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The one-line reason.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The same error with more context in front of its message.
    pub fn context(self, what: impl fmt::Display) -> Error {
        Error {
            kind: self.kind,
            message: format!("{what}: {}", self.message),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_full_is_temporary() {
        let e = Error::io("writing", &io::Error::from_raw_os_error(libc::ENOSPC));
        assert_eq!(e.kind().exit_code(), 75);
    }

    #[test]
    fn file_too_large_is_temporary() {
        let e = Error::io("writing", &io::Error::from_raw_os_error(libc::EFBIG));
        assert_eq!(e.kind().exit_code(), 75);
    }

    #[test]
    fn permission_denied_is_noperm() {
        let e = Error::io("opening", &io::Error::from_raw_os_error(libc::EACCES));
        assert_eq!(e.kind().exit_code(), 77);
    }

    #[test]
    fn messages_are_one_line() {
        let e = Error::usage("a\r\nb");
        assert_eq!(e.message(), "a  b");
    }
}
