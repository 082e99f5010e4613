//! Logging: the `log` facade, sent to syslog on the mail facility (where
//! sysadmins look for mail logs), and to stderr as well with `-v`.
//!
//! Logging must never cost a message: when there is no syslog socket (a
//! container, a chroot) records go nowhere (or only to stderr), a write
//! error is ignored, and nothing here panics. The socket is opened on the
//! first record, not at start-up, so a run that logs nothing pays nothing.

use log::{Level, LevelFilter, Log, Metadata, Record};
use std::io::Write;
use std::sync::Mutex;
use syslog::{Facility, Formatter3164, LoggerBackend};

type Syslog = syslog::Logger<LoggerBackend, Formatter3164>;

/// Records with this target go to syslog only, never to stderr: used for
/// lines that the caller already printed to stderr in its own words.
pub const SYSLOG_ONLY: &str = "syslog-only";

struct MailLog {
    ident: String,
    verbose: bool,
    /// `None` before the first record; `Some(None)` when syslog is absent.
    syslog: Mutex<Option<Option<Syslog>>>,
}

impl MailLog {
    fn send(&self, level: Level, line: &str) {
        let Ok(mut guard) = self.syslog.lock() else {
            return;
        };
        let conn = guard.get_or_insert_with(|| {
            syslog::unix(Formatter3164 {
                facility: Facility::LOG_MAIL,
                hostname: None,
                process: self.ident.clone(),
                pid: std::process::id(),
            })
            .ok()
        });
        if let Some(conn) = conn {
            // A lost log line is better than a lost message: ignore errors.
            let _ = match level {
                Level::Error => conn.err(line),
                Level::Warn => conn.warning(line),
                Level::Info => conn.info(line),
                Level::Debug | Level::Trace => conn.debug(line),
            };
        }
    }
}

impl Log for MailLog {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= Level::Info || (self.verbose && metadata.level() <= Level::Debug)
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        // One line per record, whatever the message held.
        let line = record.args().to_string().replace(['\r', '\n'], " ");
        if record.level() <= Level::Info {
            self.send(record.level(), &line);
        }
        if self.verbose && record.target() != SYSLOG_ONLY {
            let _ = writeln!(std::io::stderr(), "{}: {line}", self.ident);
        }
    }

    fn flush(&self) {}
}

/// Installs the logger. Never fails; a second call changes nothing.
pub fn init(ident: &str, verbose: bool) {
    let logger = MailLog {
        ident: ident.to_string(),
        verbose,
        syslog: Mutex::new(None),
    };
    if log::set_boxed_logger(Box::new(logger)).is_ok() {
        log::set_max_level(if verbose {
            LevelFilter::Debug
        } else {
            LevelFilter::Info
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_twice_and_logging_without_syslog_do_not_panic() {
        init("spoolmail-test", false);
        init("spoolmail-test", true);
        log::info!("a line\nwith a break");
        log::error!(target: SYSLOG_ONLY, "error line");
    }
}
