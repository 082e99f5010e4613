//! Logging: the `log` facade, sent to syslog on the mail facility (where
//! sysadmins look for mail logs), and to stderr as well with `-v`.
//!
//! Each record goes out under a Postfix-style identity, `NAME/SERVICE`
//! (`spoolmail/pickup`, `spoolmail/smtp`, …), because the tools that
//! summarise mail logs (pflogsumm, logwatch) key on the service part:
//! what a line counts as (received, delivered, deferred, bounced) depends
//! on which service logged it as much as on its fields. The service is
//! the record's target when it names one ([`service`]), otherwise it
//! follows from the module that logged it ([`service_of`]).
//!
//! Logging must never cost a message: when there is no syslog socket (a
//! container, a chroot) records go nowhere (or only to stderr), a write
//! error is ignored, and nothing here panics. The socket is opened on the
//! first record, not at start-up, so a run that logs nothing pays nothing.

use log::{Level, LevelFilter, Log, Metadata, Record};
use std::borrow::Cow;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;
use syslog::{Facility, Formatter3164, LoggerBackend};

type Syslog = syslog::Logger<LoggerBackend, Formatter3164>;

/// Records with this target go to syslog only, never to stderr: used for
/// lines that the caller already printed to stderr in its own words.
pub const SYSLOG_ONLY: &str = "syslog-only";

/// The default first part of every identity (`syslog_name`).
pub const DEFAULT_NAME: &str = "spoolmail";

/// The services a record can name as its target, with Postfix's names
/// for the same jobs (log tools know those names).
pub mod service {
    /// A message accepted from a local caller (`uid=… from=<…>`).
    pub const PICKUP: &str = "pickup";
    /// Writing a message into the queue.
    pub const CLEANUP: &str = "cleanup";
    /// The queue runner: what enters and leaves the queue.
    pub const QMGR: &str = "qmgr";
    /// Delivery over SMTP.
    pub const SMTP: &str = "smtp";
    /// Local delivery: mailboxes, aliases, pipes, forwards.
    pub const LOCAL: &str = "local";
    /// Delivery status notifications to senders.
    pub const BOUNCE: &str = "bounce";
    /// Queue administration (`mailq --delete` …).
    pub const POSTSUPER: &str = "postsuper";
    /// `sendmail -bs`.
    pub const SMTPD: &str = "smtpd";
    /// Recipients an `error` route refuses.
    pub const ERROR: &str = "error";

    pub(super) const ALL: [&str; 9] = [
        PICKUP, CLEANUP, QMGR, SMTP, LOCAL, BOUNCE, POSTSUPER, SMTPD, ERROR,
    ];
}

/// Which service a record of `target` belongs to: the target itself when
/// it names a service, else the service of the module that logged it
/// (longest prefix first), else `face` (the program as called).
pub fn service_of<'a>(target: &'a str, face: &'a str) -> &'a str {
    if let Some(named) = service::ALL.iter().find(|s| **s == target) {
        return named;
    }
    // Module paths as `log` gives them, most specific first.
    const MODULES: [(&str, &str); 12] = [
        ("spoolmail::runner::transport", service::SMTP),
        ("spoolmail::runner::local", service::LOCAL),
        ("spoolmail::spool::draft", service::CLEANUP),
        ("spoolmail::spool::maildrop", service::PICKUP),
        ("spoolmail::smtp", service::SMTP),
        ("spoolmail::dns", service::SMTP),
        ("spoolmail::local", service::LOCAL),
        ("spoolmail::bounce", service::BOUNCE),
        ("spoolmail::admin", service::POSTSUPER),
        ("spoolmail::smtpd", service::SMTPD),
        ("spoolmail::runner", service::QMGR),
        ("spoolmail::spool", service::QMGR),
    ];
    MODULES
        .iter()
        .find(|(module, _)| {
            target
                .strip_prefix(module)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
        })
        .map_or(face, |(_, service)| service)
}

/// Logs a message's entry into the queue as Postfix does, in the two
/// lines pflogsumm counts: `pickup` says who handed it in (a message
/// "received"; `note` adds to it, e.g. ` orig_from=<…>` when the sender
/// was masqueraded), `qmgr` gives its sender, size and recipient count.
pub fn received(id: &str, uid: u32, sender: &str, note: &str, size: u64, nrcpt: usize) {
    log::info!(target: service::PICKUP, "{id}: uid={uid} from=<{sender}>{note}");
    queued(id, sender, size, nrcpt);
}

/// The `qmgr` line of a message entering the queue: its sender, size and
/// recipient count (alone for a notice the runner writes: nobody handed
/// it in).
pub fn queued(id: &str, sender: &str, size: u64, nrcpt: usize) {
    log::info!(
        target: service::QMGR,
        "{id}: from=<{sender}>, size={size}, nrcpt={nrcpt} (queue active)"
    );
}

/// Where records go, set from the configuration once it is read.
struct Sink {
    /// `syslog_name`: the first part of every identity.
    name: Cow<'static, str>,
    /// `syslog_socket`: `None` for the system's (`/dev/log`).
    socket: Option<PathBuf>,
    /// `None` before the first record; `Some(None)` when syslog is absent.
    conn: Option<Option<Syslog>>,
}

struct MailLog {
    /// The face as called (`sendmail`, `mailq`, `newaliases`): the
    /// service of records no module claims, and the stderr prefix.
    face: String,
    verbose: bool,
}

/// One sink for the process: the logger writes to it, [`configure`] sets
/// it (a static, so configuring needs no handle on the installed logger).
static SINK: Mutex<Sink> = Mutex::new(Sink {
    name: Cow::Borrowed(DEFAULT_NAME),
    socket: None,
    conn: None,
});

impl MailLog {
    fn send(level: Level, service: &str, line: &str) {
        let Ok(mut sink) = SINK.lock() else {
            return;
        };
        let Sink { name, socket, conn } = &mut *sink;
        let conn = conn.get_or_insert_with(|| {
            let formatter = Formatter3164 {
                facility: Facility::LOG_MAIL,
                hostname: None,
                process: String::new(),
                pid: std::process::id(),
            };
            match socket {
                Some(path) => syslog::unix_custom(formatter, path).ok(),
                None => syslog::unix(formatter).ok(),
            }
        });
        if let Some(conn) = conn {
            conn.formatter.process.clear();
            conn.formatter.process.push_str(name);
            conn.formatter.process.push('/');
            conn.formatter.process.push_str(service);
            // A fork keeps the connection: the pid is the logger's own.
            conn.formatter.pid = std::process::id();
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
            let service = service_of(record.target(), &self.face);
            Self::send(record.level(), service, &line);
        }
        if self.verbose && record.target() != SYSLOG_ONLY {
            let _ = writeln!(std::io::stderr(), "{}: {line}", self.face);
        }
    }

    fn flush(&self) {}
}

/// Installs the logger. Never fails; a second call changes nothing.
pub fn init(face: &str, verbose: bool) {
    let logger = MailLog {
        face: face.to_string(),
        verbose,
    };
    if log::set_boxed_logger(Box::new(logger)).is_ok() {
        log::set_max_level(if verbose {
            LevelFilter::Debug
        } else {
            LevelFilter::Info
        });
    }
}

/// Applies the configuration's `syslog_name` and `syslog_socket`. A
/// connection opened before (a record logged while the configuration was
/// read) is dropped, so the next record goes where the configuration says.
pub fn configure(name: &str, socket: Option<PathBuf>) {
    if let Ok(mut sink) = SINK.lock() {
        if sink.name != name || sink.socket != socket {
            sink.conn = None;
        }
        sink.name = Cow::Owned(name.to_string());
        sink.socket = socket;
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

    #[test]
    fn records_are_filed_under_the_service_that_logged_them() {
        assert_eq!(service_of("smtp", "sendmail"), "smtp");
        assert_eq!(service_of(service::BOUNCE, "sendmail"), "bounce");
        assert_eq!(service_of("spoolmail::runner::transport", "x"), "smtp");
        assert_eq!(service_of("spoolmail::runner::attempt", "x"), "qmgr");
        assert_eq!(service_of("spoolmail::runner", "x"), "qmgr");
        assert_eq!(service_of("spoolmail::local::mbox", "x"), "local");
        assert_eq!(service_of("spoolmail::spool::draft", "x"), "cleanup");
        assert_eq!(service_of("spoolmail::admin", "x"), "postsuper");
        // A prefix is a whole module, not the start of a name.
        assert_eq!(service_of("spoolmail::smtpd", "x"), "smtpd");
        assert_eq!(service_of("spoolmail::spoolish", "sendmail"), "sendmail");
        assert_eq!(service_of("spoolmail", "newaliases"), "newaliases");
        assert_eq!(service_of(SYSLOG_ONLY, "sendmail"), "sendmail");
    }
}
