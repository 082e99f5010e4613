//! spoolmail: a sendmail-compatible mail transfer agent.
//!
//! One binary, three faces chosen by argv[0]: `sendmail` (accept a
//! message and commit it to the spool), `mailq` (list the queue) and
//! `newaliases` (compile the aliases file). See DESIGN.md for the map.

pub mod address;
pub mod admin;
pub mod bounce;
pub mod cli;
pub mod config;
pub mod dns;
pub mod error;
pub mod local;
pub mod logging;
pub mod mailq;
pub mod masquerade;
pub mod message;
pub mod privilege;
pub mod qualify;
pub mod ratelimit;
pub mod relay;
pub mod route;
pub mod runner;
pub mod smtp;
pub mod smtpd;
pub mod spool;
pub mod submit;
pub mod summary;

/// Internal parsers re-exported for the fuzz targets in `fuzz/` (they
/// read outside input but live in private modules). Not a stable API.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::smtp::reply::{MAX_LINES, ParseError, ReplyParser};
    pub use crate::spool::envelope::{
        ReadError, TRAILER_LEN, VERSION_LINE, check_values, parse_trailer, read_envelope, trailer,
        write_envelope,
    };
}
