//! `mailq --metrics`: the queue's numbers in the Prometheus text
//! exposition format (version 0.0.4: `# HELP`, `# TYPE`, one sample a
//! line), for node_exporter's textfile collector or any scraper:
//!
//! ```text
//! # HELP spoolmail_queue_messages Messages in the queue, by state.
//! # TYPE spoolmail_queue_messages gauge
//! spoolmail_queue_messages{state="queued"} 3
//! spoolmail_queue_messages{state="deferred"} 12
//! ```
//!
//! Every metric is a gauge: what the queue holds now, and the brake's
//! counts of this clock hour (which start again at 0 each hour, so they
//! are not counters and carry no `_total`). The families, in order:
//! messages and recipients by state, the queue's bytes, the age of its
//! oldest message, deferred recipients per domain (the
//! [`TOP_DOMAINS`] with most, the rest added up under [`OTHER`]), the
//! brake's counts and limits, `corrupt/`'s files and bytes, and when
//! root's last complete queue run ended. docs/logging.md lists them.
//!
//! A message is in one state, the first that applies: `held` (an
//! administrator's `mailq --hold`), `possibly_delivered` (the RFC 1047
//! window: as `mailq` and `--json` say it), `deferred` (a recipient was
//! tried and failed temporarily), else `queued`. A recipient still to
//! deliver takes its message's state when that is held or possibly
//! delivered, else its own (queued or deferred); recipients delivered
//! or failed are done and not counted, as in `--summary`.
//!
//! Cost follows the work (S8): one pass over `queue/` and `state/`
//! through [`Spool::list_each`], as `mailq` makes, one readdir of
//! `corrupt/` and of the brake's counters. Memory holds one message at
//! a time and a count per domain with deferred recipients: it grows
//! with the number of distinct such domains, not of messages (as
//! `--summary`'s table does), and only the top [`TOP_DOMAINS`] are
//! printed. An ordinary user's numbers are of their own mail
//! ([`Scope`]): their messages, their brake counts, the files of
//! `corrupt/` they wrote.
//!
//! Label values are hostile text (a recipient's domain, a user name):
//! they are escaped as the format requires, and a domain's control
//! characters are shown as `?`, as `--summary` shows them.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::privilege::Scope;
use crate::spool::{CorruptUsage, QueuedMessage, RecipientStatus, Spool};

use super::mailq::{held, possibly_delivered};
use super::summary::domain_of;

/// How many domains get a series of their own in
/// `spoolmail_queue_deferred_recipients`: those with most deferred
/// recipients (ties by name). Bounded, so that a queue to many domains
/// cannot make a metric of thousands of series.
pub const TOP_DOMAINS: usize = 20;
/// The domain label of the deferred recipients of every other domain. In
/// parentheses, as `--summary`'s `(local)`: no domain is spelled so.
pub const OTHER: &str = "(other)";

/// The state a message or a recipient still to deliver is counted in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Queued,
    Deferred,
    Held,
    PossiblyDelivered,
}

/// Every state, in the order of the output.
const STATES: [State; 4] = [
    State::Queued,
    State::Deferred,
    State::Held,
    State::PossiblyDelivered,
];

impl State {
    /// The `state` label's value.
    fn name(self) -> &'static str {
        match self {
            State::Queued => "queued",
            State::Deferred => "deferred",
            State::Held => "held",
            State::PossiblyDelivered => "possibly_delivered",
        }
    }
}

/// What one pass over the queue counts.
#[derive(Debug, Default)]
struct Tally {
    /// Messages, by [`State`] (indexed as [`STATES`]).
    messages: [u64; 4],
    /// Recipients still to deliver, by [`State`].
    recipients: [u64; 4],
    /// The messages' sizes, added up.
    bytes: u64,
    /// The earliest arrival (unix seconds).
    oldest: Option<u64>,
    /// Deferred recipients per domain (one entry per distinct domain).
    deferred: HashMap<String, u64>,
}

impl Tally {
    /// Counts one message.
    fn add(&mut self, m: &QueuedMessage) {
        let whole = if held(m) {
            Some(State::Held)
        } else if possibly_delivered(m) {
            Some(State::PossiblyDelivered)
        } else {
            None
        };
        let mut deferred = false;
        let mut count = |address: &str, status: RecipientStatus| {
            let state = whole.unwrap_or(match status {
                RecipientStatus::Deferred => State::Deferred,
                _ => State::Queued,
            });
            self.recipients[state as usize] += 1;
            if state == State::Deferred {
                deferred = true;
                *self.deferred.entry(domain_of(address)).or_default() += 1;
            }
        };
        for (address, status) in m.open_recipients() {
            count(address, status);
        }
        let state = whole.unwrap_or(match deferred {
            true => State::Deferred,
            false => State::Queued,
        });
        self.messages[state as usize] += 1;
        self.bytes = self.bytes.saturating_add(m.envelope.size);
        let arrival = m.envelope.arrival;
        self.oldest = Some(self.oldest.map_or(arrival, |o| o.min(arrival)));
    }

    /// The [`TOP_DOMAINS`] domains with most deferred recipients, most
    /// first (ties by name), and the deferred recipients of all others.
    fn top_deferred(&self) -> (Vec<(&str, u64)>, u64) {
        let mut domains: Vec<(&str, u64)> = self
            .deferred
            .iter()
            .map(|(d, &n)| (d.as_str(), n))
            .collect();
        domains.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        let rest = domains.split_off(domains.len().min(TOP_DOMAINS));
        (domains, rest.iter().map(|&(_, n)| n).sum())
    }
}

/// One user's submissions in this clock hour: uid, login (if known),
/// messages, recipients.
type Submitter = (u32, Option<String>, u64, u64);

/// Everything printed, gathered first.
struct Snapshot {
    tally: Tally,
    submitters: Vec<Submitter>,
    /// `max_messages_per_hour`, `max_recipients_per_hour` (0: no limit).
    limits: (u64, u64),
    corrupt: CorruptUsage,
    last_queue_run: Option<u64>,
    /// Unix seconds.
    now: u64,
}

/// Prints the metrics of the messages in the caller's `scope` as of
/// `now` (unix seconds). Everything is gathered before anything is
/// written, so a failure prints nothing (a textfile is never left half
/// written by `mailq --metrics > f.tmp && mv f.tmp f`).
pub fn print(
    spool: &Spool,
    config: &Config,
    scope: Scope,
    out: &mut dyn Write,
    now: u64,
) -> Result<()> {
    let mut tally = Tally::default();
    spool.list_each(|m| {
        if scope.includes(m.envelope.uid) {
            tally.add(&m);
        }
        Ok(())
    })?;
    let submitters = spool
        .submission_counters()
        .this_hour(now)
        .into_iter()
        .filter(|&(uid, _, _)| scope.includes(uid))
        .map(|(uid, messages, recipients)| {
            let login = nix::unistd::User::from_uid(uid.into())
                .ok()
                .flatten()
                .map(|u| u.name);
            (uid, login, messages, recipients)
        })
        .collect();
    let snapshot = Snapshot {
        tally,
        submitters,
        limits: (config.max_messages_per_hour, config.max_recipients_per_hour),
        corrupt: spool.corrupt_usage(|uid| scope.includes(uid))?,
        last_queue_run: spool.last_queue_run(),
        now,
    };
    out.write_all(render(&snapshot).as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| Error::io("writing the metrics", &e))
}

/// The exposition of `s`.
fn render(s: &Snapshot) -> String {
    let mut e = Exposition::default();
    let t = &s.tally;
    e.family(
        "spoolmail_queue_messages",
        "Messages in the queue, by state (held, else possibly_delivered, else deferred, else queued).",
    );
    for state in STATES {
        let n = t.messages[state as usize];
        e.sample("spoolmail_queue_messages", &[("state", state.name())], n);
    }
    e.family(
        "spoolmail_queue_recipients",
        "Recipients still to deliver, by state (their message's when held or possibly_delivered).",
    );
    for state in STATES {
        let n = t.recipients[state as usize];
        e.sample("spoolmail_queue_recipients", &[("state", state.name())], n);
    }
    e.family(
        "spoolmail_queue_size_bytes",
        "Sizes of the queued messages, added up.",
    );
    e.sample("spoolmail_queue_size_bytes", &[], t.bytes);
    e.family(
        "spoolmail_queue_oldest_message_age_seconds",
        "Age of the oldest queued message (0: the queue is empty).",
    );
    let age = t.oldest.map_or(0, |at| s.now.saturating_sub(at));
    e.sample("spoolmail_queue_oldest_message_age_seconds", &[], age);
    e.family(
        "spoolmail_queue_deferred_recipients",
        "Deferred recipients per recipient domain: the 20 domains with most, the rest under (other).",
    );
    let (top, rest) = t.top_deferred();
    for (domain, n) in top {
        e.sample(
            "spoolmail_queue_deferred_recipients",
            &[("domain", domain)],
            n,
        );
    }
    if rest > 0 {
        e.sample(
            "spoolmail_queue_deferred_recipients",
            &[("domain", OTHER)],
            rest,
        );
    }
    for (name, what, pick) in [
        (
            "spoolmail_brake_submitted_messages",
            "Messages each user submitted in this clock hour, as max_messages_per_hour counts them.",
            (|s: &Submitter| s.2) as fn(&Submitter) -> u64,
        ),
        (
            "spoolmail_brake_submitted_recipients",
            "Recipients each user submitted in this clock hour, as max_recipients_per_hour counts them.",
            |s: &Submitter| s.3,
        ),
    ] {
        e.family(name, what);
        for sub in &s.submitters {
            let uid = sub.0.to_string();
            let user = sub.1.as_deref().unwrap_or("");
            e.sample(name, &[("uid", &uid), ("user", user)], pick(sub));
        }
    }
    e.family(
        "spoolmail_brake_limit_per_hour",
        "The brake's limits per user and clock hour (0: no limit).",
    );
    for (counted, limit) in [("messages", s.limits.0), ("recipients", s.limits.1)] {
        e.sample(
            "spoolmail_brake_limit_per_hour",
            &[("counted", counted)],
            limit,
        );
    }
    e.family(
        "spoolmail_corrupt_files",
        "Files set aside in corrupt/ (never delivered; bounded by corrupt_max_files).",
    );
    e.sample("spoolmail_corrupt_files", &[], s.corrupt.files);
    e.family(
        "spoolmail_corrupt_size_bytes",
        "Sizes of the files in corrupt/, added up (bounded by corrupt_max_size).",
    );
    e.sample("spoolmail_corrupt_size_bytes", &[], s.corrupt.bytes);
    e.family(
        "spoolmail_last_queue_run_timestamp_seconds",
        "When root's last complete queue run ended, unix time (0: none recorded).",
    );
    e.sample(
        "spoolmail_last_queue_run_timestamp_seconds",
        &[],
        s.last_queue_run.unwrap_or(0),
    );
    e.text
}

/// The text being built, a family and its samples at a time.
#[derive(Default)]
struct Exposition {
    text: String,
}

impl Exposition {
    /// Starts the family `name`: its `# HELP` and `# TYPE` lines.
    fn family(&mut self, name: &str, help: &str) {
        // Writing to a String cannot fail.
        let _ = writeln!(
            self.text,
            "# HELP {name} {}\n# TYPE {name} gauge",
            escape_help(help)
        );
    }

    /// One sample of the family started last.
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: u64) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (label, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{label}=\"{}\"", escape_label(value));
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {value}");
    }
}

/// A label value as the format writes it: backslash, double quote and
/// line feed escaped (`\\`, `\"`, `\n`); everything else as it is.
fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// A `# HELP` text as the format writes it: backslash and line feed
/// escaped (a double quote is itself there).
fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::{DeliveryState, Envelope, QueueId};

    fn message(id: &str, arrival: u64, rcpts: &[&str], size: u64) -> QueuedMessage {
        QueuedMessage {
            envelope: Envelope {
                id: QueueId::parse(id).unwrap(),
                arrival,
                sender: "s@example.org".into(),
                recipients: rcpts.iter().map(|r| r.to_string()).collect(),
                uid: 1000,
                user: "alice".into(),
                body_type: None,
                dsn_notify: None,
                dsn_ret: None,
                envid: None,
                chain: Vec::new(),
                size,
            },
            state: None,
            state_error: None,
            claimed: false,
            window_open: false,
        }
    }

    /// A valid queue ID, the `n`th.
    fn id(n: u8) -> String {
        let any = QueueId::generate(std::time::SystemTime::now()).to_string();
        let mut bytes = any.into_bytes();
        let last = bytes.len() - 1;
        bytes[last] = b'A' + n;
        String::from_utf8(bytes).unwrap()
    }

    fn snapshot(tally: Tally) -> Snapshot {
        Snapshot {
            tally,
            submitters: vec![(1000, Some("alice".into()), 3, 7), (1001, None, 1, 1)],
            limits: (100, 0),
            corrupt: CorruptUsage {
                files: 2,
                bytes: 30,
            },
            last_queue_run: Some(1_700_000_000),
            now: 1_700_000_600,
        }
    }

    /// The value of the sample written exactly as `series` (name and labels).
    fn value(text: &str, series: &str) -> Option<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .map(|v| v.parse().unwrap())
    }

    #[test]
    fn each_message_is_in_one_state_and_its_recipients_follow_it() {
        let mut t = Tally::default();
        t.add(&message(
            &id(0),
            1_700_000_100,
            &["a@x.test", "b@y.test"],
            10,
        ));
        let mut deferred = message(&id(1), 1_700_000_000, &["c@x.test", "d@x.test"], 20);
        let mut state = DeliveryState::initial(&deferred.envelope);
        state.recipients[0].status = RecipientStatus::Deferred;
        state.recipients[1].status = RecipientStatus::Delivered;
        deferred.state = Some(state.clone());
        t.add(&deferred);
        let mut held = message(&id(2), 1_700_000_200, &["e@x.test"], 5);
        let mut held_state = DeliveryState::initial(&held.envelope);
        held_state.held = true;
        held_state.recipients[0].status = RecipientStatus::Deferred;
        held.state = Some(held_state);
        t.add(&held);
        let mut window = message(&id(3), 1_700_000_300, &["f@z.test"], 1);
        window.window_open = true;
        t.add(&window);
        let text = render(&snapshot(t));
        for (state, messages, recipients) in [
            ("queued", 1, 2),
            ("deferred", 1, 1),
            ("held", 1, 1),
            ("possibly_delivered", 1, 1),
        ] {
            let labels = format!("{{state=\"{state}\"}}");
            assert_eq!(
                value(&text, &format!("spoolmail_queue_messages{labels}")),
                Some(messages),
                "{text}"
            );
            assert_eq!(
                value(&text, &format!("spoolmail_queue_recipients{labels}")),
                Some(recipients),
                "{text}"
            );
        }
        assert_eq!(value(&text, "spoolmail_queue_size_bytes"), Some(36));
        assert_eq!(
            value(&text, "spoolmail_queue_oldest_message_age_seconds"),
            Some(600)
        );
        // Only the deferred recipient of a message neither held nor
        // possibly delivered.
        assert_eq!(
            value(
                &text,
                "spoolmail_queue_deferred_recipients{domain=\"x.test\"}"
            ),
            Some(1),
            "{text}"
        );
        assert_eq!(
            text.matches("spoolmail_queue_deferred_recipients{").count(),
            1
        );
    }

    #[test]
    fn the_other_families_say_what_the_snapshot_holds() {
        let text = render(&snapshot(Tally::default()));
        for (series, n) in [
            ("spoolmail_queue_oldest_message_age_seconds", 0),
            (
                "spoolmail_brake_submitted_messages{uid=\"1000\",user=\"alice\"}",
                3,
            ),
            (
                "spoolmail_brake_submitted_recipients{uid=\"1000\",user=\"alice\"}",
                7,
            ),
            (
                "spoolmail_brake_submitted_messages{uid=\"1001\",user=\"\"}",
                1,
            ),
            ("spoolmail_brake_limit_per_hour{counted=\"messages\"}", 100),
            ("spoolmail_brake_limit_per_hour{counted=\"recipients\"}", 0),
            ("spoolmail_corrupt_files", 2),
            ("spoolmail_corrupt_size_bytes", 30),
            ("spoolmail_last_queue_run_timestamp_seconds", 1_700_000_000),
        ] {
            assert_eq!(value(&text, series), Some(n), "{series} in {text}");
        }
    }

    #[test]
    fn every_family_has_help_and_type_before_its_samples() {
        let text = render(&snapshot(Tally::default()));
        let mut current = "";
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                current = rest.split(' ').next().unwrap();
                assert!(current.starts_with("spoolmail_"), "{line}");
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                assert_eq!(rest, format!("{current} gauge"));
            } else {
                let name = line.split(['{', ' ']).next().unwrap();
                assert_eq!(name, current, "a sample of the family announced: {line}");
            }
        }
        assert!(!text.contains("_total"), "no counters: {text}");
    }

    #[test]
    fn the_top_domains_are_kept_and_the_rest_added_up() {
        let mut t = Tally::default();
        for i in 0..25u64 {
            t.deferred.insert(format!("d{i:02}.test"), i + 1);
        }
        let text = render(&snapshot(t));
        let series = text
            .lines()
            .filter(|l| l.starts_with("spoolmail_queue_deferred_recipients{"))
            .count();
        assert_eq!(series, TOP_DOMAINS + 1, "{text}");
        assert_eq!(
            value(
                &text,
                "spoolmail_queue_deferred_recipients{domain=\"d24.test\"}"
            ),
            Some(25)
        );
        assert_eq!(
            value(
                &text,
                "spoolmail_queue_deferred_recipients{domain=\"d04.test\"}"
            ),
            None,
            "the fifth smallest is not in the top 20"
        );
        // d00..d04 hold 1+2+3+4+5.
        assert_eq!(
            value(
                &text,
                "spoolmail_queue_deferred_recipients{domain=\"(other)\"}"
            ),
            Some(15)
        );
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape_label("x\ny"), "x\\ny");
        assert_eq!(escape_label("plain.test"), "plain.test");
        assert_eq!(escape_label("ünï"), "ünï");
        assert_eq!(escape_help("a\\b\nc \"d\""), "a\\\\b\\nc \"d\"");
        let mut e = Exposition::default();
        e.sample("m", &[("domain", "evil\"} 1\nx"), ("user", "\\")], 2);
        assert_eq!(e.text, "m{domain=\"evil\\\"} 1\\nx\",user=\"\\\\\"} 2\n");
        assert_eq!(e.text.lines().count(), 1, "one line whatever the value");
    }

    #[test]
    fn a_hostile_domain_stays_one_series() {
        let mut t = Tally::default();
        let mut m = message(&id(0), 1_700_000_000, &["a@x\"}\n.test"], 1);
        let mut state = DeliveryState::initial(&m.envelope);
        state.recipients[0].status = RecipientStatus::Deferred;
        m.state = Some(state);
        t.add(&m);
        let text = render(&snapshot(t));
        assert!(
            text.contains("spoolmail_queue_deferred_recipients{domain=\"x\\\"}?.test\"} 1\n"),
            "{text}"
        );
    }
}
