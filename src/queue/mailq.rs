//! The mailq face: prints the queue, read through [`Spool::list_each`]:
//! each message is printed as soon as its files are read, so memory does
//! not grow with the queue and the first line shows at once (S8).
//!
//! Owns no files. The text listing follows sendmail's and Postfix's
//! `mailq` closely enough for eyes and simple scripts:
//!
//! ```text
//! -----Queue ID----- --Size-- ----Arrival Time---- --Sender/Recipient--
//! 01HF3Z8Q2M4K7XWT*       12 Mon Nov 23 06:50     <alice@example.org>
//!                                                  (possibly delivered: reply to final dot lost; retry may duplicate)
//!                                                  <bob@example.net> deferred
//!                                                    (451 4.7.1 greylisted)
//! \t\tTotal requests: 1
//! -- 1 Kbytes in 1 Request.
//! ```
//!
//! The two summary lines are sendmail's and Postfix's, each exactly as
//! that MTA prints it, so that what parses either finds its own: the
//! monitoring plugin `check_mailq` counts the first with `-M sendmail`
//! and reads only the last with `-M postfix` (its size is the sum of the
//! messages' sizes in KiB, rounded up, as Postfix counts it).
//!
//! `*` after the ID means a runner holds the message now, `!` that an
//! administrator put it on hold (`mailq --hold`), as in Postfix.
//! An empty queue prints exactly `Mail queue is empty`. With `--json`, one
//! JSON object per message per line instead, for scripts.
//!
//! Everything printed comes from spool files and is hostile: the text
//! listing replaces control (and bidi-override) characters with `?` so a
//! crafted address cannot rewrite the operator's terminal. Message content
//! is never printed.

use crate::clock::local_time;
use std::fmt::Write as _;
use std::io::Write;
use std::rc::Rc;
use std::time::SystemTime;

use serde::Serialize;
use serde_json::value::RawValue;
use std::collections::HashMap;

use crate::error::{Error, Result};
use crate::privilege::Scope;
use crate::spool::{QueuedMessage, RecipientStatus, Spool, TlsApplied};

/// The column header of the text listing.
const HEADER: &str = "-----Queue ID----- --Size-- ----Arrival Time---- --Sender/Recipient--";
/// Recipients and notes start under the sender column.
const INDENT: &str = "                                                 ";

/// Prints the queue: the sendmail-style listing, or one JSON object per
/// line when `json`: only the messages in the caller's `scope` (an
/// ordinary user sees their own mail, never whom other users write
/// to). With `waits`, a recipient never tried because its destination
/// is in the unreachable cache says so. `now`
/// is the clock those waits are read against.
pub fn print(
    spool: &Spool,
    json: bool,
    scope: Scope,
    mut waits: Option<&mut crate::runner::Waits>,
    out: &mut dyn Write,
    now: SystemTime,
) -> Result<()> {
    let now = crate::clock::unix_seconds(now);
    let mut waiting =
        |sender: &str, address: &str| waits.as_mut().and_then(|w| w.of(sender, address, now));
    let written = |e: std::io::Error| Error::io("writing the queue listing", &e);
    // Large writes: a listing of 100,000 messages is tens of megabytes.
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
    let mut shown = 0usize;
    let mut bytes = 0u64;
    // One buffer for every entry, and the arrival times of one minute
    // formatted once: a listing of 100,000 messages allocates little.
    let mut text = String::new();
    let mut times = MinuteClock::default();
    let mut encoded = EncodedWaits::default();
    spool.list_each(|m| {
        if !scope.includes(m.envelope.uid) {
            return Ok(());
        }
        text.clear();
        match json {
            true => json_line(&mut text, &mut encoded, &m, &mut waiting)?,
            false => {
                if shown == 0 {
                    text.push_str(HEADER);
                    text.push('\n');
                }
                entry(
                    &mut text,
                    &m,
                    times.format(m.envelope.arrival),
                    &mut waiting,
                );
            }
        }
        shown += 1;
        bytes = bytes.saturating_add(m.envelope.size);
        out.write_all(text.as_bytes()).map_err(written)
    })?;
    if !json {
        let end = match shown {
            0 => "Mail queue is empty\n".to_owned(),
            n => format!(
                "\t\tTotal requests: {n}\n-- {} Kbytes in {n} Request{}.\n",
                bytes.div_ceil(1024),
                if n == 1 { "" } else { "s" }
            ),
        };
        out.write_all(end.as_bytes()).map_err(written)?;
    }
    out.flush().map_err(written)
}

/// One recipient as shown: from the state file when there is one, else
/// from the envelope with nothing attempted yet.
struct Shown<'a> {
    address: &'a str,
    status: RecipientStatus,
    attempts: u32,
    last_error: Option<&'a str>,
    next_attempt: Option<u64>,
    /// The relay (`host[ip]:port`) it last went to or failed at.
    relay: Option<&'a str>,
    /// The TLS policy that applied to its last SMTP attempt.
    tls: Option<TlsApplied>,
}

fn recipients(m: &QueuedMessage) -> Vec<Shown<'_>> {
    match &m.state {
        Some(state) => state
            .recipients
            .iter()
            .map(|r| Shown {
                address: &r.address,
                status: r.status,
                attempts: r.attempts,
                last_error: r.last_error.as_deref(),
                next_attempt: r.next_attempt,
                relay: r.relay.as_deref(),
                tls: r.tls,
            })
            .collect(),
        None => m
            .envelope
            .recipients
            .iter()
            .map(|address| Shown {
                address,
                status: RecipientStatus::Queued,
                attempts: 0,
                last_error: None,
                next_attempt: None,
                relay: None,
                tls: None,
            })
            .collect(),
    }
}

/// Possibly delivered: the RFC 1047 flag; or the window's marker (the
/// queue file's second link, or the state file's older form) left by a
/// runner that no longer holds the message (it died between the final
/// dot and the recorded outcome: the flag is only set by the next
/// attempt); or a state that cannot be read (unknown: some recipients
/// may have had their copy).
pub(super) fn possibly_delivered(m: &QueuedMessage) -> bool {
    let marked = m.window_open || m.state.as_ref().is_some_and(|s| s.final_dot_sent.is_some());
    m.state_error.is_some()
        || m.state.as_ref().is_some_and(|s| s.possibly_delivered)
        || (marked && !m.claimed)
}

/// Put on hold by an administrator.
pub(super) fn held(m: &QueuedMessage) -> bool {
    m.state.as_ref().is_some_and(|s| s.held)
}

/// One message of the sendmail-style text listing, appended to `s`;
/// `arrival` is its arrival time as shown.
fn entry(
    s: &mut String,
    m: &QueuedMessage,
    arrival: &str,
    waiting: &mut dyn FnMut(&str, &str) -> Option<Rc<str>>,
) {
    let env = &m.envelope;
    let mark = match (m.claimed, held(m)) {
        (true, _) => "*",
        (false, true) => "!",
        (false, false) => "",
    };
    // Pushed piece by piece, not formatted with padding: at a hundred
    // thousand messages the formatting machinery showed in the profile.
    let start = s.len();
    s.push_str(env.id.as_str());
    s.push_str(mark);
    pad_to(s, start + 18);
    s.push(' ');
    let size_at = s.len();
    // Writing to a String cannot fail.
    let _ = write!(s, "{}", env.size);
    let width = s.len() - size_at;
    if width < 8 {
        s.insert_str(size_at, &"        "[width..]);
    }
    s.push(' ');
    let arrival_at = s.len();
    s.push_str(arrival);
    pad_to(s, arrival_at + 20);
    s.push_str(" <");
    s.push_str(&clean(&env.sender));
    s.push_str(">\n");
    if m.state_error.is_some() {
        let _ = writeln!(
            s,
            "{INDENT}(delivery state unknown: every recipient will be retried; possibly delivered)"
        );
    } else if possibly_delivered(m) {
        let _ = writeln!(
            s,
            "{INDENT}(possibly delivered: reply to final dot lost; retry may duplicate)"
        );
    }
    if held(m) {
        let _ = writeln!(s, "{INDENT}(on hold: not delivered until released)");
    }
    for r in recipients(m) {
        s.push_str(INDENT);
        s.push('<');
        s.push_str(&clean(r.address));
        s.push_str("> ");
        s.push_str(r.status.as_str());
        if let Some(relay) = r.relay {
            s.push_str(" relay=");
            s.push_str(&clean(relay));
        }
        // Which TLS policy the last attempt had, for a recipient still
        // waiting: what an administrator asks of a deferral (issue 26).
        if let (RecipientStatus::Deferred, Some(tls)) = (r.status, r.tls) {
            s.push_str(" tls=");
            s.push_str(tls.as_str());
        }
        s.push('\n');
        if let Some(e) = r.last_error {
            s.push_str(INDENT);
            s.push_str("  (");
            s.push_str(&clean(e));
            s.push_str(")\n");
        } else if let Some(wait) = queued_waiting(&env.sender, &r, waiting) {
            s.push_str(INDENT);
            s.push_str("  (waiting: ");
            s.push_str(&clean(&wait));
            s.push_str(")\n");
        }
    }
}

/// Pads `s` with spaces to `len` bytes (a column of ASCII text).
fn pad_to(s: &mut String, len: usize) {
    while s.len() < len {
        s.push(' ');
    }
}

/// One message in the JSON listing; field order is the output order.
#[derive(Serialize)]
struct JsonMessage<'a> {
    id: &'a str,
    arrival_time: u64,
    size: u64,
    sender: &'a str,
    recipients: Vec<JsonRecipient<'a>>,
    possibly_delivered: bool,
    claimed: bool,
    held: bool,
}

#[derive(Serialize)]
struct JsonRecipient<'a> {
    address: &'a str,
    status: RecipientStatus,
    attempts: u32,
    last_error: Option<&'a str>,
    next_attempt: Option<u64>,
    /// The relay it last went to or failed at (`host[ip]:port`);
    /// absent when none was reached.
    #[serde(skip_serializing_if = "Option::is_none")]
    relay: Option<&'a str>,
    /// The TLS policy of its last SMTP attempt (`mta-sts`, `dane`,
    /// `verified`, `opportunistic`, `none`); absent when none was made.
    #[serde(skip_serializing_if = "Option::is_none")]
    tls: Option<TlsApplied>,
    /// Not tried: its destination is in the unreachable cache.
    #[serde(skip_serializing_if = "Option::is_none")]
    waiting: Option<&'a RawValue>,
}

/// Why a recipient nobody tried yet waits, if it does.
fn queued_waiting(
    sender: &str,
    r: &Shown,
    waiting: &mut dyn FnMut(&str, &str) -> Option<Rc<str>>,
) -> Option<Rc<str>> {
    match (r.status, r.last_error) {
        (RecipientStatus::Queued, None) => waiting(sender, r.address),
        _ => None,
    }
}

/// One message as one JSON object and a newline, appended to `out`
/// (serde_json escapes control characters, so values are shown raw).
fn json_line(
    out: &mut String,
    encoded: &mut EncodedWaits,
    m: &QueuedMessage,
    waiting: &mut dyn FnMut(&str, &str) -> Option<Rc<str>>,
) -> Result<()> {
    let shown = recipients(m);
    let waits: Vec<Option<Rc<str>>> = shown
        .iter()
        .map(|r| queued_waiting(&m.envelope.sender, r, waiting))
        .collect();
    for wait in waits.iter().flatten() {
        encoded.add(wait);
    }
    let line = JsonMessage {
        id: m.envelope.id.as_str(),
        arrival_time: m.envelope.arrival,
        size: m.envelope.size,
        sender: &m.envelope.sender,
        recipients: shown
            .into_iter()
            .zip(&waits)
            .map(|(r, wait)| JsonRecipient {
                address: r.address,
                status: r.status,
                attempts: r.attempts,
                last_error: r.last_error,
                next_attempt: r.next_attempt,
                relay: r.relay,
                tls: r.tls,
                waiting: wait.as_ref().map(|w| encoded.get(w)),
            })
            .collect(),
        possibly_delivered: possibly_delivered(m),
        claimed: m.claimed,
        held: held(m),
    };
    let mut bytes = std::mem::take(out).into_bytes();
    let encoded = serde_json::to_writer(&mut bytes, &line)
        .map_err(|e| Error::new(crate::error::Kind::Software, format!("encoding JSON: {e}")));
    bytes.push(b'\n');
    // serde_json writes UTF-8 only (a `str` in, escapes out).
    *out = String::from_utf8(bytes).unwrap_or_default();
    encoded
}

/// The JSON form of each waiting reason, made once: a backlog behind one
/// unreachable destination repeats the same reason on every line, and
/// escaping it anew each time showed in the profile. Keyed by the
/// reason's allocation, which [`crate::runner::Waits`] shares between
/// all the recipients of one destination (the `Rc` kept here keeps the
/// key from being reused).
#[derive(Default)]
struct EncodedWaits {
    made: HashMap<*const u8, (Rc<str>, Box<RawValue>)>,
}

impl EncodedWaits {
    fn add(&mut self, wait: &Rc<str>) {
        self.made.entry(wait.as_ptr()).or_insert_with(|| {
            let json = serde_json::to_string(&**wait).unwrap_or_default();
            let raw = RawValue::from_string(json)
                .unwrap_or_else(|_| RawValue::from_string("null".into()).expect("JSON null"));
            (wait.clone(), raw)
        });
    }

    /// The JSON of a reason [`EncodedWaits::add`] was given.
    fn get(&self, wait: &Rc<str>) -> &RawValue {
        &self.made[&wait.as_ptr()].1
    }
}

/// [`local_time`] of the last minute asked for, kept: a queue's arrival
/// times come in order, many in the same minute.
#[derive(Default)]
struct MinuteClock {
    minute: Option<u64>,
    shown: String,
}

impl MinuteClock {
    fn format(&mut self, unix: u64) -> &str {
        let minute = unix / 60;
        if self.minute != Some(minute) {
            self.minute = Some(minute);
            self.shown = local_time(unix);
        }
        &self.shown
    }
}

/// Replaces characters that could steer a terminal (controls, and the
/// bidi overrides that reorder what the eye reads) with `?`.
fn clean(value: &str) -> std::borrow::Cow<'_, str> {
    // Nearly every value is printable ASCII: shown as it is, no copy.
    if value.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return value.into();
    }
    value
        .chars()
        .map(|c| {
            let bidi = matches!(c, '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}');
            if c.is_control() || bidi { '?' } else { c }
        })
        .collect::<String>()
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::{DeliveryState, Envelope};
    use serde_json::Value;

    /// A spool with two messages: the first untouched, the second deferred
    /// with an error and possibly delivered. Returns their IDs in order.
    fn two_messages() -> (tempfile::TempDir, Spool, Vec<String>) {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let mut ids = Vec::new();
        for (sender, rcpts, data) in [
            (
                "alice@example.org",
                vec!["bob@example.net"],
                &b"Subject: one\n\nsecret body\n"[..],
            ),
            (
                "",
                vec!["carol@example.com", "dave\x1b[2J@example.com"],
                b"x",
            ),
        ] {
            let mut draft = spool.begin(SystemTime::now()).unwrap();
            let env = Envelope {
                id: draft.id().clone(),
                arrival: 1_700_000_000,
                sender: sender.into(),
                recipients: rcpts.into_iter().map(String::from).collect(),
                uid: 1000,
                user: "alice".into(),
                body_type: None,
                dsn_notify: None,
                dsn_ret: None,
                envid: None,
                chain: Vec::new(),
                size: 0,
            };
            draft.write_envelope(&env).unwrap();
            draft.data().write_all(data).unwrap();
            draft.commit().unwrap();
            ids.push(env.id.to_string());
            if sender.is_empty() {
                let mut state = DeliveryState::initial(&env);
                state.recipients[0].status = RecipientStatus::Deferred;
                state.recipients[0].attempts = 2;
                state.recipients[0].last_error = Some("451 4.7.1 try later\r\n".into());
                state.recipients[0].next_attempt = Some(1_700_003_600);
                state.recipients[0].relay = Some("mx.example.com[192.0.2.1]:25".into());
                state.recipients[0].tls = Some(TlsApplied::MtaSts);
                state.possibly_delivered = true;
                spool.write_state(&env.id, &state).unwrap();
            }
        }
        (dir, spool, ids)
    }

    fn run(spool: &Spool, json: bool) -> String {
        let mut out = Vec::new();
        print(spool, json, Scope::Every, None, &mut out, SystemTime::now()).unwrap();
        String::from_utf8(out).unwrap()
    }

    /// A runner killed inside the RFC 1047 window leaves only its marker:
    /// mailq must say "possibly delivered" before any retry sets the flag.
    #[test]
    fn the_window_marker_alone_shows_possibly_delivered() {
        let (_dir, spool, ids) = two_messages();
        let id = crate::spool::QueueId::parse(&ids[0]).unwrap();
        let env = spool.read_envelope(&id).unwrap();
        let mut state = DeliveryState::initial(&env);
        state.final_dot_sent = Some(1_700_000_100);
        spool.mark_state(&id, &state).unwrap();
        let json = run(&spool, true);
        let first: Value = serde_json::from_str(json.lines().next().unwrap()).unwrap();
        assert_eq!(first["possibly_delivered"], true, "{first}");
        assert!(run(&spool, false).contains("possibly delivered"));
    }

    /// The same for the window's link, the marker runners make now: a
    /// message never attempted before has no state file at all.
    #[test]
    fn the_window_link_alone_shows_possibly_delivered() {
        let (_dir, spool, ids) = two_messages();
        let first =
            |json: String| -> Value { serde_json::from_str(json.lines().next().unwrap()).unwrap() };
        assert_eq!(first(run(&spool, true))["possibly_delivered"], false);
        let id = crate::spool::QueueId::parse(&ids[0]).unwrap();
        let claim = spool.claim(&id).unwrap().unwrap();
        spool.open_window(&claim).unwrap();
        let held = first(run(&spool, true));
        assert_eq!(
            held["possibly_delivered"], false,
            "a runner is in the window now: {held}"
        );
        drop(claim);
        let left = first(run(&spool, true));
        assert_eq!(left["possibly_delivered"], true, "{left}");
    }

    #[test]
    fn an_ordinary_user_sees_only_their_own_messages() {
        let (_dir, spool, ids) = two_messages();
        let shown = |uid| {
            let mut out = Vec::new();
            print(
                &spool,
                false,
                Scope::Own(uid),
                None,
                &mut out,
                SystemTime::now(),
            )
            .unwrap();
            String::from_utf8(out).unwrap()
        };
        let own = shown(1000);
        assert!(own.contains(&ids[0]) && own.contains(&ids[1]), "{own}");
        let other = shown(1001);
        assert_eq!(other, "Mail queue is empty\n");
    }

    #[test]
    fn empty_queue_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        assert_eq!(run(&spool, false), "Mail queue is empty\n");
        assert_eq!(run(&spool, true), "");
    }

    #[test]
    fn text_listing_of_two_messages() {
        let (_dir, spool, ids) = two_messages();
        let when = local_time(1_700_000_000);
        let expected = format!(
            "{HEADER}\n\
             {:<18} {:>8} {when:<20} <alice@example.org>\n\
             {INDENT}<bob@example.net> queued\n\
             {:<18} {:>8} {when:<20} <>\n\
             {INDENT}(possibly delivered: reply to final dot lost; retry may duplicate)\n\
             {INDENT}<carol@example.com> deferred relay=mx.example.com[192.0.2.1]:25 tls=mta-sts\n\
             {INDENT}  (451 4.7.1 try later??)\n\
             {INDENT}<dave?[2J@example.com> queued\n\
             \t\tTotal requests: 2\n\
             -- 1 Kbytes in 2 Requests.\n",
            ids[0], 26, ids[1], 1
        );
        let text = run(&spool, false);
        assert_eq!(text, expected);
        assert!(!text.contains("secret"), "message content is never shown");
    }

    #[test]
    fn claimed_messages_are_starred() {
        let (_dir, spool, ids) = two_messages();
        let id = crate::spool::QueueId::parse(&ids[1]).unwrap();
        let _claim = spool.claim(&id).unwrap().unwrap();
        let text = run(&spool, false);
        assert!(text.contains(&format!("\n{}* ", ids[1])), "{text}");
        assert!(text.contains(&format!("\n{} ", ids[0])), "{text}");
        // The first file listed held: the listing learns how to see
        // claims from the next one, and still stars the first.
        drop(_claim);
        let first = crate::spool::QueueId::parse(&ids[0]).unwrap();
        let _claim = spool.claim(&first).unwrap().unwrap();
        let text = run(&spool, false);
        assert!(text.contains(&format!("\n{}* ", ids[0])), "{text}");
        assert!(text.contains(&format!("\n{} ", ids[1])), "{text}");
    }

    #[test]
    fn json_lines_of_two_messages() {
        let (_dir, spool, ids) = two_messages();
        let out = run(&spool, true);
        let lines: Vec<Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(
            lines[0],
            serde_json::json!({
                "id": ids[0], "arrival_time": 1_700_000_000u64, "size": 26, "sender": "alice@example.org",
                "recipients": [{"address": "bob@example.net", "status": "queued", "attempts": 0,
                                "last_error": null, "next_attempt": null}],
                "possibly_delivered": false, "claimed": false, "held": false,
            })
        );
        assert_eq!(
            lines[1],
            serde_json::json!({
                "id": ids[1], "arrival_time": 1_700_000_000u64, "size": 1, "sender": "",
                "recipients": [
                    {"address": "carol@example.com", "status": "deferred", "attempts": 2,
                     "last_error": "451 4.7.1 try later\r\n", "next_attempt": 1_700_003_600u64,
                     "relay": "mx.example.com[192.0.2.1]:25", "tls": "mta-sts"},
                    {"address": "dave\u{1b}[2J@example.com", "status": "queued", "attempts": 0,
                     "last_error": null, "next_attempt": null},
                ],
                "possibly_delivered": true, "claimed": false, "held": false,
            })
        );
    }

    /// What the text listing says about one message.
    #[derive(Debug, PartialEq)]
    struct Seen {
        id: String,
        size: u64,
        sender: String,
        recipients: Vec<(String, String)>,
        possibly_delivered: bool,
    }

    fn parse_text(text: &str) -> Vec<Seen> {
        let mut seen: Vec<Seen> = Vec::new();
        for line in text.lines().skip(1) {
            if line.starts_with("\t\tTotal requests:") || line.starts_with("-- ") {
                continue;
            }
            if !line.starts_with(' ') {
                let words: Vec<&str> = line.split_whitespace().collect();
                seen.push(Seen {
                    id: words[0].trim_end_matches('*').to_owned(),
                    size: words[1].parse().unwrap(),
                    sender: words.last().unwrap().trim_matches(['<', '>']).to_owned(),
                    recipients: Vec::new(),
                    possibly_delivered: false,
                });
                continue;
            }
            let current = seen.last_mut().unwrap();
            let rest = line.trim_start();
            if rest.starts_with("(possibly delivered") {
                current.possibly_delivered = true;
            } else if let Some(r) = rest.strip_prefix('<') {
                // The fields after the status (relay=, tls=) are not compared.
                let r = r.split(" relay=").next().unwrap();
                let (address, status) = r.rsplit_once("> ").unwrap();
                current
                    .recipients
                    .push((address.to_owned(), status.to_owned()));
            }
        }
        seen
    }

    #[test]
    fn json_lines_agree_with_the_text_listing() {
        let (_dir, spool, _ids) = two_messages();
        let from_text = parse_text(&run(&spool, false));
        let from_json: Vec<Seen> = run(&spool, true)
            .lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l).unwrap();
                Seen {
                    id: v["id"].as_str().unwrap().to_owned(),
                    size: v["size"].as_u64().unwrap(),
                    sender: v["sender"].as_str().unwrap().to_owned(),
                    recipients: v["recipients"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|r| {
                            let address = clean(r["address"].as_str().unwrap()).into_owned();
                            (address, r["status"].as_str().unwrap().to_owned())
                        })
                        .collect(),
                    possibly_delivered: v["possibly_delivered"].as_bool().unwrap(),
                }
            })
            .collect();
        assert_eq!(from_text, from_json);
    }

    #[test]
    fn control_characters_become_question_marks() {
        assert_eq!(
            clean("a\x1b]0;pwned\x07b\u{202E}c\u{85}"),
            "a?]0;pwned?b?c?"
        );
    }
}
