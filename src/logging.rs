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
//! Nothing from outside can close or fake a field, nor hide what a line
//! says (issue 20): the Postfix-shaped records — `to=<…>, relay=…,
//! status=… (…)` and `from=<…>` — write addresses through [`address`]
//! (`\`, `<`, `>`, `,`, `=` escaped, so the `<…>` cannot be closed)
//! and replies through [`text`] (`\`, `=` escaped, so no `name=` field
//! can appear in them), and go out under a [`fields`] target. Every
//! other record is free text, and whatever it quotes (a server's reply,
//! a file's name) cannot carry a field either: an `=` after a letter,
//! digit or `_` is escaped in it. In every record a line break becomes a
//! space and any other non-printing character — controls, the bidi
//! overrides and invisible format characters that `mailq` also refuses
//! to print raw, spaces other than the plain one — is escaped, as `\xHH`
//! (ASCII) or `\u{HHHH}`.
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

/// The targets of the Postfix-shaped records, whose fields were escaped
/// when the line was made ([`address`], [`text`]): the service's name
/// and [`FIELDS`]. Only these keep their `name=` fields.
pub mod fields {
    /// A `pickup` record with fields.
    pub const PICKUP: &str = "pickup+fields";
    /// A `qmgr` record with fields.
    pub const QMGR: &str = "qmgr+fields";
    /// An `smtp` record with fields.
    pub const SMTP: &str = "smtp+fields";
    /// A `local` record with fields.
    pub const LOCAL: &str = "local+fields";
    /// An `error` record with fields.
    pub const ERROR: &str = "error+fields";
}

/// What a [`fields`] target ends with.
const FIELDS: &str = "+fields";

/// `address` as a log field between `<` and `>`: nothing in it can end
/// the field or start another.
pub fn address(address: &str) -> Cow<'_, str> {
    escape(address, &['\\', '<', '>', ',', '='])
}

/// `text` (a server's reply, a reason) as the last, parenthesised field
/// of a record: no `name=` field can appear in it.
pub fn text(text: &str) -> Cow<'_, str> {
    escape(text, &['\\', '='])
}

/// Whether `c` shows as itself on a terminal and in a log viewer: not a
/// control, not a space other than the plain one, not a bidi control
/// that reorders what the eye reads, not an invisible format character.
fn printing(c: char) -> bool {
    if c.is_ascii() {
        return !c.is_ascii_control();
    }
    !(c.is_control()
        || c.is_whitespace()
        || matches!(c,
            '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}'
            | '\u{17B4}' | '\u{17B5}' | '\u{180B}'..='\u{180F}'
            | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}' | '\u{3164}' | '\u{FEFF}' | '\u{FFA0}'
            | '\u{FFF0}'..='\u{FFFB}' | '\u{E0000}'..='\u{E0FFF}'))
}

/// Appends `c` escaped: `\xHH` for ASCII, `\u{HHHH}` beyond.
fn push_escaped(out: &mut String, c: char) {
    use std::fmt::Write as _;
    let _ = match c.is_ascii() {
        true => write!(out, "\\x{:02x}", c as u32),
        false => write!(out, "\\u{{{:04x}}}", c as u32),
    };
}

/// `value` with the non-printing characters and those of `special`
/// escaped (borrowed when there is none: nearly always).
fn escape<'a>(value: &'a str, special: &[char]) -> Cow<'a, str> {
    let plain = |c: char| printing(c) && !special.contains(&c);
    if value.chars().all(plain) {
        return Cow::Borrowed(value);
    }
    let mut out = String::with_capacity(value.len() + 8);
    for c in value.chars() {
        match plain(c) {
            true => out.push(c),
            false => push_escaped(&mut out, c),
        }
    }
    Cow::Owned(out)
}

/// A record's text as the one line that goes out: line breaks become
/// spaces, other non-printing characters are escaped, and unless the
/// record has `fields` (its own were escaped when it was made), an `=`
/// after a letter, digit or `_` too, so that nothing it quotes can pass
/// for a field.
fn one_line(line: &str, fields: bool) -> Cow<'_, str> {
    let field_like = |prev: Option<char>, c: char| {
        !fields && c == '=' && prev.is_some_and(|p| p.is_ascii_alphanumeric() || p == '_')
    };
    let mut prev = None;
    let clean = line.chars().all(|c| {
        let ok = printing(c) && !field_like(prev, c);
        prev = Some(c);
        ok
    });
    if clean {
        return Cow::Borrowed(line);
    }
    let mut out = String::with_capacity(line.len() + 8);
    let mut prev = None;
    for c in line.chars() {
        match c {
            '\r' | '\n' => out.push(' '),
            _ if printing(c) && !field_like(prev, c) => out.push(c),
            _ => push_escaped(&mut out, c),
        }
        prev = Some(c);
    }
    Cow::Owned(out)
}

/// Which service a record of `target` belongs to: the target itself when
/// it names a service, else the service of the module that logged it
/// (longest prefix first), else `face` (the program as called).
pub fn service_of<'a>(target: &'a str, face: &'a str) -> &'a str {
    if let Some(named) = service::ALL.iter().find(|s| **s == target) {
        return named;
    }
    // Module paths as `log` gives them, most specific first.
    const MODULES: [(&str, &str); 14] = [
        ("spoolmail::runner::transport", service::SMTP),
        // The TLS policy of MX delivery (MTA-STS fetches, testing-mode
        // reports) is the SMTP client's, as Postfix's smtp(8) logs it.
        ("spoolmail::runner::sts_policy", service::SMTP),
        ("spoolmail::runner::tls_policy", service::SMTP),
        ("spoolmail::runner::local", service::LOCAL),
        ("spoolmail::spool::draft", service::CLEANUP),
        ("spoolmail::spool::maildrop", service::PICKUP),
        ("spoolmail::runner::dns", service::SMTP),
        ("spoolmail::runner::bounce", service::BOUNCE),
        ("spoolmail::smtp", service::SMTP),
        ("spoolmail::local", service::LOCAL),
        ("spoolmail::queue::admin", service::POSTSUPER),
        ("spoolmail::accept::smtpd", service::SMTPD),
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
    log::info!(
        target: fields::PICKUP,
        "{id}: uid={uid} from=<{}>{note}",
        address(sender)
    );
    queued(id, sender, size, nrcpt);
}

/// The `qmgr` line of a message entering the queue: its sender, size and
/// recipient count (alone for a notice the runner writes: nobody handed
/// it in).
pub fn queued(id: &str, sender: &str, size: u64, nrcpt: usize) {
    log::info!(
        target: fields::QMGR,
        "{id}: from=<{}>, size={size}, nrcpt={nrcpt} (queue active)",
        address(sender)
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
        let (target, fields) = match record.target().strip_suffix(FIELDS) {
            Some(service) => (service, true),
            None => (record.target(), false),
        };
        let text = record.args().to_string();
        // One line per record, whatever the message held, and nothing
        // in it that is not what it looks like.
        let line = one_line(&text, fields);
        if record.level() <= Level::Info {
            let service = service_of(target, &self.face);
            Self::send(record.level(), service, &line);
        }
        if self.verbose && target != SYSLOG_ONLY {
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
    fn addresses_cannot_close_their_field() {
        let a = r#""x>, relay=r[192.0.2.1]:25, status=sent ("@example.org"#;
        let shown = address(a);
        assert!(!shown.contains(['>', '<', ',', '=']), "{shown}");
        assert_eq!(
            shown,
            r#""x\x3e\x2c relay\x3dr[192.0.2.1]:25\x2c status\x3dsent ("@example.org"#
        );
        assert_eq!(
            address("plain.user+tag@example.org"),
            "plain.user+tag@example.org"
        );
        assert!(matches!(address("a@b"), Cow::Borrowed(_)));
        // The escape character is escaped too: what is shown reads back.
        assert_eq!(address(r"a\x3e@b"), r"a\x5cx3e@b");
    }

    #[test]
    fn non_printing_characters_are_escaped() {
        assert_eq!(
            address("invoice\u{202e}fdp.exe@example.org"),
            r"invoice\u{202e}fdp.exe@example.org"
        );
        assert_eq!(
            text("451 busy\u{2066}\x1b[2J\u{a0}\u{200b} later"),
            r"451 busy\u{2066}\x1b[2J\u{00a0}\u{200b} later"
        );
        // Letters of any script are printing.
        assert_eq!(address("bücher@bücher.example"), "bücher@bücher.example");
        assert_eq!(
            text("250 2.0.0 Ok: queued (Größe 3)"),
            "250 2.0.0 Ok: queued (Größe 3)"
        );
    }

    #[test]
    fn replies_cannot_carry_a_field() {
        assert_eq!(
            text("250 ok to=<a@b>, relay=x, status=sent (y)"),
            r"250 ok to\x3d<a@b>, relay\x3dx, status\x3dsent (y)"
        );
    }

    #[test]
    fn free_text_records_cannot_carry_a_field() {
        assert_eq!(
            one_line(
                "ID: deferred: 451 x to=<a@b>, status=sent\r\n(y = 2)",
                false
            ),
            r"ID: deferred: 451 x to\x3d<a@b>, status\x3dsent  (y = 2)"
        );
        // A record with fields keeps them (its values were escaped).
        let line = "ID: to=<a@b>, relay=none, status=deferred (x\u{202e})";
        assert_eq!(
            one_line(line, true),
            r"ID: to=<a@b>, relay=none, status=deferred (x\u{202e})"
        );
        assert!(matches!(one_line("ID: removed", false), Cow::Borrowed(_)));
    }

    #[test]
    fn records_are_filed_under_the_service_that_logged_them() {
        assert_eq!(service_of("smtp", "sendmail"), "smtp");
        assert_eq!(service_of(service::BOUNCE, "sendmail"), "bounce");
        assert_eq!(service_of("spoolmail::runner::transport", "x"), "smtp");
        assert_eq!(service_of("spoolmail::runner::sts_policy", "x"), "smtp");
        assert_eq!(service_of("spoolmail::runner::attempt", "x"), "qmgr");
        assert_eq!(service_of("spoolmail::runner", "x"), "qmgr");
        assert_eq!(service_of("spoolmail::local::mbox", "x"), "local");
        assert_eq!(service_of("spoolmail::spool::draft", "x"), "cleanup");
        assert_eq!(service_of("spoolmail::queue::admin", "x"), "postsuper");
        // A prefix is a whole module, not the start of a name.
        assert_eq!(service_of("spoolmail::accept::smtpd", "x"), "smtpd");
        assert_eq!(service_of("spoolmail::spoolish", "sendmail"), "sendmail");
        assert_eq!(service_of("spoolmail", "newaliases"), "newaliases");
        assert_eq!(service_of(SYSLOG_ONLY, "sendmail"), "sendmail");
    }
}
