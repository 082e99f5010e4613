//! Delivery status notifications (RFC 3464, D8): failure and delay
//! notices, sent from the null sender so that they can never bounce in
//! turn, and committed to the spool through the normal draft/commit path
//! (S1) before the original is removed.
//!
//! A notice about an internationalised address or message follows RFC
//! 6533: `message/global-delivery-status` with the `utf-8` address type
//! for a non-ASCII address, `message/global` or `message/global-headers`
//! for an original with UTF-8 header fields. Its body type is its own,
//! not the original's: found when it is sent (crate::smtp::scan), which
//! also declares SMTPUTF8 and BODY=8BITMIME where its content needs them.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::accept::message;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::spool::{Draft, Envelope, MessageData, QueueId, Spool};

/// What the notice says happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Delivery failed for good.
    Failed,
    /// Delivery is late and still being tried.
    Delayed,
}

impl Action {
    fn word(self) -> &'static str {
        match self {
            Action::Failed => "failed",
            Action::Delayed => "delayed",
        }
    }
}

/// One recipient's line in the notice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientReport {
    /// The recipient address.
    pub recipient: String,
    /// RFC 3463 status ("5.1.1").
    pub status: String,
    /// The server that gave the outcome.
    pub remote_mta: Option<String>,
    /// "smtp; 550 5.1.1 no such user".
    pub diagnostic: Option<String>,
    /// When it was last tried (unix seconds).
    pub last_attempt: Option<u64>,
}

/// Longest value copied into a notice from elsewhere (a server reply, an
/// address): a notice must stay readable and its lines legal.
const MAX_VALUE: usize = 900;

/// Whether the original's sender gets this kind of notice. Never for the
/// null sender (a bounce is never bounced, D8); with NOTIFY given (-N),
/// only the kinds it names (NEVER: none); without it, failures and delays.
pub fn wanted(original: &Envelope, action: Action) -> bool {
    if original.sender.is_empty() {
        return false;
    }
    let Some(notify) = &original.dsn_notify else {
        return true;
    };
    let wanted_word = match action {
        Action::Failed => "FAILURE",
        Action::Delayed => "DELAY",
    };
    notify
        .split(',')
        .any(|w| w.trim().eq_ignore_ascii_case(wanted_word))
}

/// Writes a notice about `reports` to the original's sender, complete
/// and fsynced but not yet queued ([`Draft::seal`]): the caller records
/// it in the original's state, then commits it. Ok(None) when the sender
/// does not get one ([`wanted`]).
pub fn prepare(
    spool: &Spool,
    config: &Config,
    original: &Envelope,
    original_data: MessageData,
    action: Action,
    reports: &[RecipientReport],
    now: SystemTime,
) -> Result<Option<Draft>> {
    if !wanted(original, action) {
        log::info!(
            "{}: no {} notice: sender <{}>, NOTIFY={}",
            original.id,
            action.word(),
            original.sender,
            original.dsn_notify.as_deref().unwrap_or("default")
        );
        return Ok(None);
    }
    let mut draft = spool.begin(now)?;
    let id = draft.id().clone();
    let envelope = Envelope {
        id: id.clone(),
        arrival: crate::clock::unix_seconds(now),
        sender: String::new(),
        recipients: vec![original.sender.clone()],
        // The notice belongs to whoever sent the original: it shows in
        // their `mailq`, and only their queue runs (or root's) touch it,
        // whoever's runner happened to make it.
        uid: original.uid,
        user: "MAILER-DAEMON".to_string(),
        // Its own content decides (see the module comment).
        body_type: None,
        dsn_notify: None,
        dsn_ret: None,
        envid: None,
        // A notice about a forwarded copy goes where the copy's chain
        // says it must not be expanded again: a loop's notice is never
        // forwarded back into the loop.
        chain: original.chain.clone(),
        size: 0,
    };
    draft.write_envelope(&envelope)?;
    // Whether the original has UTF-8 header fields: returned as
    // message/global(-headers) then. A pass of its own over the original
    // (notices are rare); unreadable, it counts as not.
    let international = spool
        .open_data(&original.id)
        .ok()
        .and_then(|mut data| crate::smtp::scan(&mut data).ok())
        .is_some_and(|c| c.eight_bit_header);
    let full = original
        .dsn_ret
        .as_deref()
        .is_some_and(|r| r.eq_ignore_ascii_case("full"));
    write_notice(
        draft.data(),
        config,
        original,
        original_data,
        action,
        reports,
        &id,
        Returned {
            full,
            international,
        },
        now,
    )
    .map_err(|e| Error::io("writing a delivery status notice", &e))?;
    draft.seal()?;
    Ok(Some(draft))
}

/// How the original goes back: whole or its header (RET), and whether
/// its header fields are UTF-8 (RFC 6532).
struct Returned {
    full: bool,
    international: bool,
}

#[allow(clippy::too_many_arguments)]
fn write_notice(
    out: &mut dyn Write,
    config: &Config,
    original: &Envelope,
    original_data: MessageData,
    action: Action,
    reports: &[RecipientReport],
    id: &QueueId,
    returned: Returned,
    now: SystemTime,
) -> io::Result<()> {
    let full = returned.full;
    // RFC 6533 §6.2: the global report type once any field is UTF-8.
    let global = reports.iter().any(|r| {
        !r.recipient.is_ascii()
            || !r.status.is_ascii()
            || r.remote_mta.as_ref().is_some_and(|m| !m.is_ascii())
            || r.diagnostic.as_ref().is_some_and(|d| !d.is_ascii())
    }) || original.envid.as_ref().is_some_and(|e| !e.is_ascii());
    // RFC 6522 §3: the report type is the second part's subtype.
    let report_type = if global {
        "global-delivery-status"
    } else {
        "delivery-status"
    };
    let status_type = if global {
        "message/global-delivery-status"
    } else {
        "message/delivery-status"
    };
    let host = clean(&config.hostname);
    let boundary = format!("{}/{}.{:08x}", id, host, rand::random::<u32>());
    let subject = match action {
        Action::Failed => "Undelivered Mail Returned to Sender",
        Action::Delayed => "Delayed Mail (still being retried)",
    };
    out.write_all(&message::received_field(
        &config.hostname,
        original.uid,
        id.as_str(),
        now,
    ))?;
    write!(
        out,
        "From: Mail Delivery System <MAILER-DAEMON@{host}>\n\
         To: <{}>\n\
         Subject: {subject}\n",
        clean(&original.sender)
    )?;
    out.write_all(&message::date_field(now))?;
    out.write_all(&message::message_id_field(id.as_str(), &config.hostname))?;
    write!(
        out,
        "Auto-Submitted: auto-replied\n\
         MIME-Version: 1.0\n\
         Content-Type: multipart/report; report-type={report_type};\n\
         \tboundary=\"{boundary}\"\n\
         \n\
         This is a MIME-encapsulated message.\n\
         \n\
         --{boundary}\n\
         Content-Description: Notification\n\
         Content-Type: text/plain; charset=utf-8\n\
         \n"
    )?;
    match action {
        Action::Failed => write!(
            out,
            "This is the mail system at {host}.\n\n\
             Your message could not be delivered to the recipients below,\n\
             for the reasons given. It is returned {}.\n\n",
            if full {
                "attached"
            } else {
                "in part (its header) below"
            }
        )?,
        Action::Delayed => write!(
            out,
            "This is the mail system at {host}.\n\n\
             Your message has not been delivered yet to the recipients below.\n\
             It is still being retried: nothing needs doing now. If it cannot\n\
             be delivered in the end, you will be told.\n\n"
        )?,
    }
    for r in reports {
        write!(out, "<{}>: ", clean(&r.recipient))?;
        match &r.diagnostic {
            Some(d) => writeln!(out, "{}", clean(d))?,
            None => writeln!(out, "status {}", clean(&r.status))?,
        }
    }
    write!(
        out,
        "\n--{boundary}\n\
         Content-Description: Delivery report\n\
         Content-Type: {status_type}\n\
         \n\
         Reporting-MTA: dns; {host}\n\
         X-Spoolmail-Queue-ID: {}\n",
        original.id
    )?;
    if let Some(envid) = &original.envid {
        writeln!(out, "Original-Envelope-Id: {}", clean(envid))?;
    }
    writeln!(out, "Arrival-Date: {}", date(original.arrival))?;
    for r in reports {
        write!(
            out,
            "\nFinal-Recipient: {}\nAction: {}\nStatus: {}\n",
            typed_address(&r.recipient),
            action.word(),
            status_code(&r.status, action)
        )?;
        if let Some(mta) = &r.remote_mta {
            writeln!(out, "Remote-MTA: dns; {}", clean(mta))?;
        }
        if let Some(d) = &r.diagnostic {
            writeln!(out, "Diagnostic-Code: {}", clean(d))?;
        }
        if let Some(t) = r.last_attempt {
            writeln!(out, "Last-Attempt-Date: {}", date(t))?;
        }
    }
    let (description, content_type) = match (full, returned.international) {
        (true, false) => ("Undelivered Message", "message/rfc822"),
        // RFC 6532 §3.7, RFC 6533 §6.3.
        (true, true) => ("Undelivered Message", "message/global"),
        (false, false) => ("Undelivered Message Headers", "text/rfc822-headers"),
        (false, true) => ("Undelivered Message Headers", "message/global-headers"),
    };
    write!(
        out,
        "\n--{boundary}\n\
         Content-Description: {description}\n\
         Content-Type: {content_type}\n\
         \n"
    )?;
    copy_original(original_data, out, full)?;
    write!(out, "\n--{boundary}--\n")
}

/// Streams the original (S5): all of it, or its header section only.
fn copy_original(data: MessageData, out: &mut dyn Write, full: bool) -> io::Result<()> {
    let mut reader = BufReader::new(data);
    if full {
        io::copy(&mut reader, out)?;
        return Ok(());
    }
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader
            .by_ref()
            .take(64 * 1024)
            .read_until(b'\n', &mut line)?
            == 0
        {
            return Ok(());
        }
        if line == b"\n" {
            return Ok(());
        }
        out.write_all(&line)?;
        if line.last() != Some(&b'\n') {
            out.write_all(b"\n")?;
        }
    }
}

/// The status a DSN may carry for `action`: a failure's status must be
/// 5.x.x or 4.x.x (RFC 3464 §2.3.4; 4.4.7 for an expired message), a
/// delay's 4.x.x; anything malformed becomes the class default.
fn status_code(status: &str, action: Action) -> String {
    let ok = status.split('.').count() == 3
        && status
            .split('.')
            .all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()));
    match action {
        Action::Failed if ok && (status.starts_with('5') || status.starts_with('4')) => {
            status.to_string()
        }
        Action::Failed => "5.0.0".to_string(),
        Action::Delayed if ok && status.starts_with('4') => status.to_string(),
        Action::Delayed => "4.0.0".to_string(),
    }
}

/// A value from outside (a server reply, an address) made safe for one
/// header-like line: no control characters, bounded length.
fn clean(value: &str) -> String {
    value
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_VALUE)
        .collect()
}

/// An address with its RFC 3464 type: `rfc822` when it is ASCII, else
/// RFC 6533's `utf-8` with `\`, `+`, `=` and controls written
/// `\x{HH}` (utf-8-addr-unitext).
fn typed_address(address: &str) -> String {
    let address = clean(address);
    if address.is_ascii() {
        return format!("rfc822; {address}");
    }
    let mut out = String::from("utf-8; ");
    for c in address.chars() {
        match c {
            '\\' | '+' | '=' => out.push_str(&format!("\\x{{{:X}}}", c as u32)),
            c if c.is_control() => out.push_str(&format!("\\x{{{:X}}}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

fn date(unix: u64) -> String {
    crate::clock::rfc5322(UNIX_EPOCH + std::time::Duration::from_secs(unix))
}

#[cfg(test)]
mod tests {

    /// [`prepare`] and commit at once (what the runner does, minus the
    /// record in the original's state between the two).
    fn send(
        spool: &Spool,
        config: &Config,
        original: &Envelope,
        data: MessageData,
        action: Action,
        reports: &[RecipientReport],
        now: SystemTime,
    ) -> Result<Option<QueueId>> {
        match prepare(spool, config, original, data, action, reports, now)? {
            Some(draft) => Ok(Some(draft.commit()?.id)),
            None => Ok(None),
        }
    }
    use super::*;
    use std::time::Duration;

    fn original(spool: &Spool, body: &[u8], ret: Option<&str>, notify: Option<&str>) -> Envelope {
        let now = SystemTime::now();
        let mut draft = spool.begin(now).unwrap();
        let env = Envelope {
            id: draft.id().clone(),
            arrival: 1_700_000_000,
            sender: "alice@example.org".into(),
            recipients: vec!["bob@example.net".into()],
            uid: 1000,
            user: "alice".into(),
            body_type: None,
            dsn_notify: notify.map(String::from),
            dsn_ret: ret.map(String::from),
            envid: Some("env-1".into()),
            chain: Vec::new(),
            size: 0,
        };
        draft.write_envelope(&env).unwrap();
        draft.data().write_all(body).unwrap();
        draft.commit().unwrap();
        env
    }

    fn report() -> RecipientReport {
        RecipientReport {
            recipient: "bob@example.net".into(),
            status: "5.1.1".into(),
            remote_mta: Some("mx.example.net".into()),
            diagnostic: Some("smtp; 550 5.1.1 no such user".into()),
            last_attempt: Some(1_700_000_100),
        }
    }

    /// Commits a notice about `orig` and returns its ID (it must be one).
    fn notice(
        spool: &Spool,
        config: &Config,
        orig: &Envelope,
        action: Action,
        reports: &[RecipientReport],
        now: SystemTime,
    ) -> QueueId {
        let data = spool.open_data(&orig.id).unwrap();
        send(spool, config, orig, data, action, reports, now)
            .unwrap()
            .expect("a notice")
    }

    fn read_notice(spool: &Spool, id: &QueueId) -> (Envelope, Vec<u8>) {
        let env = spool.read_envelope(id).unwrap();
        let mut data = Vec::new();
        spool.open_data(id).unwrap().read_to_end(&mut data).unwrap();
        (env, data)
    }

    const BODY: &[u8] = b"Subject: hi\nFrom: alice@example.org\n\nsecret body\n";

    fn setup() -> (tempfile::TempDir, Spool, Config) {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(&dir.path().join("spool")).unwrap();
        let config = Config {
            hostname: "mta.example.org".into(),
            ..Config::default()
        };
        (dir, spool, config)
    }

    #[test]
    fn a_failure_notice_is_a_three_part_report_from_the_null_sender() {
        let (_dir, spool, config) = setup();
        let orig = original(&spool, BODY, None, None);
        let id = notice(
            &spool,
            &config,
            &orig,
            Action::Failed,
            &[report()],
            SystemTime::now(),
        );
        let (env, bytes) = read_notice(&spool, &id);
        assert_eq!(env.sender, "");
        assert_eq!(env.recipients, ["alice@example.org"]);
        let parsed = mailparse::parse_mail(&bytes).unwrap();
        assert_eq!(parsed.ctype.mimetype, "multipart/report");
        assert_eq!(
            parsed.ctype.params.get("report-type").map(String::as_str),
            Some("delivery-status")
        );
        assert_eq!(parsed.subparts.len(), 3);
        assert_eq!(parsed.subparts[0].ctype.mimetype, "text/plain");
        assert_eq!(parsed.subparts[1].ctype.mimetype, "message/delivery-status");
        assert_eq!(parsed.subparts[2].ctype.mimetype, "text/rfc822-headers");
        let status = parsed.subparts[1].get_body().unwrap();
        assert!(
            status.contains("Reporting-MTA: dns; mta.example.org"),
            "{status}"
        );
        assert!(status.contains("Original-Envelope-Id: env-1"), "{status}");
        assert!(status.contains("Final-Recipient: rfc822; bob@example.net"));
        assert!(status.contains("Action: failed"));
        assert!(status.contains("Status: 5.1.1"));
        assert!(status.contains("Diagnostic-Code: smtp; 550 5.1.1 no such user"));
        let headers = parsed.subparts[2].get_body().unwrap();
        assert!(headers.contains("Subject: hi"));
        assert!(!headers.contains("secret body"), "headers only by default");
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains("Auto-Submitted: auto-replied"));
        assert!(text.contains("From: Mail Delivery System <MAILER-DAEMON@mta.example.org>"));
    }

    #[test]
    fn a_notice_about_a_utf8_address_or_message_is_global() {
        // Issue 24 item 2, RFC 6533.
        let (_dir, spool, config) = setup();
        let body = "Subject: gr\u{fc}\u{df}e\nFrom: alice@example.org\n\nk\u{f6}rper\n";
        for (ret, returned) in [
            (None, "message/global-headers"),
            (Some("full"), "message/global"),
        ] {
            let mut orig = original(&spool, body.as_bytes(), ret, None);
            orig.body_type = Some("8BITMIME".into());
            let mut r = report();
            r.recipient = "\u{fc}nicode+tag@example.net".into();
            let id = notice(
                &spool,
                &config,
                &orig,
                Action::Failed,
                &[r],
                SystemTime::now(),
            );
            let (env, bytes) = read_notice(&spool, &id);
            assert_eq!(env.body_type, None, "its own content decides");
            let parsed = mailparse::parse_mail(&bytes).unwrap();
            assert_eq!(
                parsed.ctype.params.get("report-type").map(String::as_str),
                Some("global-delivery-status")
            );
            assert_eq!(
                parsed.subparts[1].ctype.mimetype,
                "message/global-delivery-status"
            );
            assert_eq!(parsed.subparts[2].ctype.mimetype, returned);
            // mailparse reads a message/global* part as a message of its
            // own: the raw text, then.
            let text = String::from_utf8(bytes.clone()).unwrap();
            assert!(
                text.contains("\nFinal-Recipient: utf-8; \u{fc}nicode\\x{2B}tag@example.net\n"),
                "{text}"
            );
        }
        // ASCII throughout: as before.
        let orig = original(&spool, BODY, None, None);
        let id = notice(
            &spool,
            &config,
            &orig,
            Action::Failed,
            &[report()],
            SystemTime::now(),
        );
        let (_, bytes) = read_notice(&spool, &id);
        let parsed = mailparse::parse_mail(&bytes).unwrap();
        assert_eq!(parsed.subparts[1].ctype.mimetype, "message/delivery-status");
    }

    /// A loop's notice must not go round the loop again: it carries the
    /// chain of the copy it is about.
    #[test]
    fn a_notice_carries_the_chain_of_the_copy_it_is_about() {
        let (_dir, spool, config) = setup();
        let mut orig = original(&spool, BODY, None, None);
        orig.chain = vec!["user:alice".into()];
        let id = notice(
            &spool,
            &config,
            &orig,
            Action::Failed,
            &[report()],
            SystemTime::now(),
        );
        assert_eq!(read_notice(&spool, &id).0.chain, ["user:alice"]);
    }

    #[test]
    fn ret_full_returns_the_whole_message() {
        let (_dir, spool, config) = setup();
        let orig = original(&spool, BODY, Some("FULL"), None);
        let id = notice(
            &spool,
            &config,
            &orig,
            Action::Failed,
            &[report()],
            SystemTime::now(),
        );
        let (_, bytes) = read_notice(&spool, &id);
        let parsed = mailparse::parse_mail(&bytes).unwrap();
        assert_eq!(parsed.subparts[2].ctype.mimetype, "message/rfc822");
        assert!(String::from_utf8_lossy(&bytes).contains("secret body"));
    }

    #[test]
    fn no_notice_for_the_null_sender_or_notify_never() {
        let (_dir, spool, config) = setup();
        let mut orig = original(&spool, BODY, None, Some("NEVER"));
        assert!(!wanted(&orig, Action::Failed));
        let data = spool.open_data(&orig.id).unwrap();
        let before = spool.queued_ids().unwrap().len();
        assert_eq!(
            send(
                &spool,
                &config,
                &orig,
                data,
                Action::Failed,
                &[report()],
                SystemTime::now()
            )
            .unwrap(),
            None
        );
        assert_eq!(spool.queued_ids().unwrap().len(), before);
        orig.dsn_notify = None;
        orig.sender = String::new();
        assert!(!wanted(&orig, Action::Failed));
        assert!(!wanted(&orig, Action::Delayed));
        orig.sender = "a@b.example".into();
        orig.dsn_notify = Some("FAILURE".into());
        assert!(wanted(&orig, Action::Failed));
        assert!(!wanted(&orig, Action::Delayed));
    }

    #[test]
    fn a_hostile_diagnostic_cannot_forge_a_header() {
        let (_dir, spool, config) = setup();
        let orig = original(&spool, BODY, None, None);
        let mut r = report();
        r.diagnostic = Some("smtp; 550 no\r\nX-Forged: yes\nBcc: victim@example.com".into());
        let id = notice(
            &spool,
            &config,
            &orig,
            Action::Failed,
            &[r],
            SystemTime::now(),
        );
        let (_, bytes) = read_notice(&spool, &id);
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            !text
                .lines()
                .any(|l| l.starts_with("X-Forged") || l.starts_with("Bcc:")),
            "{text}"
        );
    }

    #[test]
    fn a_delay_notice_says_delayed() {
        let (_dir, spool, config) = setup();
        let orig = original(&spool, BODY, None, None);
        let mut r = report();
        r.status = "4.4.1".into();
        let data = spool.open_data(&orig.id).unwrap();
        let later = SystemTime::now() + Duration::from_secs(5 * 3600);
        let id = send(&spool, &config, &orig, data, Action::Delayed, &[r], later)
            .unwrap()
            .unwrap();
        let (_, bytes) = read_notice(&spool, &id);
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains("Action: delayed"));
        assert!(text.contains("Status: 4.4.1"));
        assert!(text.contains("Subject: Delayed Mail"));
    }
}
