//! `mailq --summary`: the shape of the queue, as Postfix's `qshape`
//! prints it — recipients still to deliver (queued or deferred), per
//! recipient domain, by the age of their message in minutes.
//!
//! ```text
//!                          T    5   10   20   40   80  160  320  640 1280 1280+
//!                 TOTAL    5    2    0    0    0    0    0    3    0    0     0
//!           example.org    3    0    0    0    0    0    0    3    0    0     0
//!           example.net    2    2    0    0    0    0    0    0    0    0     0
//! ```
//!
//! A column holds the recipients whose message is younger than its
//! heading (and at least as old as the previous one); `T` is the total.
//! Local names (no domain) count under `(local)`. Domains are sorted by
//! their total, largest first. Then, when `max_messages_per_hour` or
//! `max_recipients_per_hour` counts anything, each user's submissions of
//! this hour ([`crate::accept::ratelimit`]). With `--json`, one object instead. Read
//! through [`Spool::list_each`], so memory grows with the number of
//! domains, not of messages.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::privilege::Scope;
use crate::spool::Spool;

/// Upper bounds of the age columns, in minutes (qshape's defaults); the
/// last column holds everything older.
pub const BUCKETS: [u64; 10] = [5, 10, 20, 40, 80, 160, 320, 640, 1280, u64::MAX];

/// Counts per domain: total, then one per age column.
#[derive(Default, Clone, Serialize)]
struct Row {
    total: u64,
    by_age: [u64; BUCKETS.len()],
}

impl Row {
    fn add(&mut self, column: usize) {
        self.total += 1;
        self.by_age[column] += 1;
    }
}

#[derive(Serialize)]
struct JsonSummary<'a> {
    /// Upper bounds of the age columns in minutes (null: no bound).
    age_minutes: Vec<Option<u64>>,
    total: &'a Row,
    domains: BTreeMap<&'a str, &'a Row>,
    submitted_this_hour: Vec<Submitter>,
}

/// One user's submissions in this clock hour.
#[derive(Serialize)]
struct Submitter {
    uid: u32,
    user: Option<String>,
    messages: u64,
    recipients: u64,
}

/// Prints the summary of the messages in the caller's `scope` as of
/// `now` (unix seconds): an ordinary user's counts are of their own mail,
/// and the submitters listed only themselves.
pub fn print(spool: &Spool, json: bool, scope: Scope, out: &mut dyn Write, now: u64) -> Result<()> {
    let mut total = Row::default();
    let mut domains: BTreeMap<String, Row> = BTreeMap::new();
    spool.list_each(|m| {
        if !scope.includes(m.envelope.uid) {
            return Ok(());
        }
        let minutes = now.saturating_sub(m.envelope.arrival) / 60;
        let column = BUCKETS
            .iter()
            .position(|&bound| minutes < bound)
            .unwrap_or(BUCKETS.len() - 1);
        for (address, _) in m.open_recipients() {
            total.add(column);
            domains.entry(domain_of(address)).or_default().add(column);
        }
        Ok(())
    })?;
    let submitters: Vec<Submitter> = spool
        .submission_counters()
        .this_hour(now)
        .into_iter()
        .filter(|&(uid, _, _)| scope.includes(uid))
        .map(|(uid, messages, recipients)| Submitter {
            uid,
            user: nix::unistd::User::from_uid(uid.into())
                .ok()
                .flatten()
                .map(|u| u.name),
            messages,
            recipients,
        })
        .collect();
    let text = match json {
        true => {
            let summary = JsonSummary {
                age_minutes: BUCKETS
                    .iter()
                    .map(|&b| (b != u64::MAX).then_some(b))
                    .collect(),
                total: &total,
                domains: domains.iter().map(|(d, r)| (d.as_str(), r)).collect(),
                submitted_this_hour: submitters,
            };
            let mut line = serde_json::to_string(&summary).map_err(|e| {
                Error::new(crate::error::Kind::Software, format!("encoding JSON: {e}"))
            })?;
            line.push('\n');
            line
        }
        false => {
            let mut text = table(&total, &domains);
            for s in &submitters {
                let _ = writeln!(
                    text,
                    "submitted this hour by {} (uid {}): {} message(s), {} recipient(s)",
                    s.user.as_deref().unwrap_or("?"),
                    s.uid,
                    s.messages,
                    s.recipients
                );
            }
            text
        }
    };
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| Error::io("writing the queue summary", &e))
}

/// The domain a recipient counts under: lower case, `(local)` for a bare
/// name; control characters shown as `?` (a domain is hostile text).
pub(super) fn domain_of(address: &str) -> String {
    match address.rsplit_once('@') {
        Some((_, domain)) if !domain.is_empty() => domain
            .chars()
            .map(|c| {
                if c.is_control() {
                    '?'
                } else {
                    c.to_ascii_lowercase()
                }
            })
            .collect(),
        _ => "(local)".to_string(),
    }
}

/// The qshape-style table.
fn table(total: &Row, domains: &BTreeMap<String, Row>) -> String {
    let width = domains
        .keys()
        .map(|d| d.chars().count())
        .max()
        .unwrap_or(0)
        .max(5);
    let mut s = String::new();
    let _ = write!(s, "{:>width$} {:>5}", "", "T");
    for (i, bound) in BUCKETS.iter().enumerate() {
        let heading = match *bound {
            u64::MAX => format!("{}+", BUCKETS[i - 1]),
            b => b.to_string(),
        };
        let _ = write!(s, " {heading:>5}");
    }
    s.push('\n');
    let mut rows: Vec<(&str, &Row)> = domains.iter().map(|(d, r)| (d.as_str(), r)).collect();
    rows.sort_by(|a, b| b.1.total.cmp(&a.1.total).then(a.0.cmp(b.0)));
    for (name, row) in std::iter::once(("TOTAL", total)).chain(rows) {
        let _ = write!(s, "{name:>width$} {:>5}", row.total);
        for n in row.by_age {
            let _ = write!(s, " {n:>5}");
        }
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_are_lower_case_and_bare_names_local() {
        assert_eq!(domain_of("Bob@Example.ORG"), "example.org");
        assert_eq!(domain_of("root"), "(local)");
        assert_eq!(domain_of("\"a@b\"@x.test"), "x.test");
        assert_eq!(domain_of("a@x\u{1b}[2J"), "x?[2j");
    }

    #[test]
    fn the_table_puts_each_recipient_in_its_age_column() {
        let mut total = Row::default();
        let mut domains = BTreeMap::new();
        for (domain, column) in [("a.test", 0), ("b.test", 9), ("b.test", 3)] {
            total.add(column);
            domains
                .entry(domain.to_string())
                .or_insert_with(Row::default)
                .add(column);
        }
        let text = table(&total, &domains);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].trim_start().starts_with("T     5    10"), "{text}");
        assert!(lines[0].ends_with("1280+"), "{text}");
        let cells =
            |line: &str| -> Vec<String> { line.split_whitespace().map(str::to_owned).collect() };
        assert_eq!(
            cells(lines[1]),
            [
                "TOTAL", "3", "1", "0", "0", "1", "0", "0", "0", "0", "0", "1"
            ]
        );
        assert_eq!(
            cells(lines[2])[..2],
            ["b.test", "2"],
            "largest first: {text}"
        );
        assert_eq!(cells(lines[3])[..3], ["a.test", "1", "1"]);
    }
}
