//! spoolmail: a sendmail-compatible mail transfer agent.
//!
//! One binary, three faces chosen by argv[0]: `sendmail` (accept a
//! message and commit it to the spool), `mailq` (list the queue) and
//! `newaliases` (compile the aliases file). See docs/architecture.md for the map.

pub mod accept;
pub mod address;
pub mod cli;
pub mod clock;
pub mod config;
pub mod error;
pub mod local;
pub mod logging;
pub mod privilege;
pub mod queue;
pub mod runner;
pub mod smtp;
pub mod spool;

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
