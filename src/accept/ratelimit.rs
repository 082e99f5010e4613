//! A brake on runaway senders: per-user submission counts per clock hour
//! (`max_messages_per_hour`, `max_recipients_per_hour`). A compromised
//! web application calling `mail()` 100,000 times gets exit 75 at the
//! limit — PHP's `mail()` returns false, nothing is lost or queued — and
//! syslog names the user.
//!
//! The counts are the spool's submission counters
//! ([`SubmissionCounters`]: one pair of files per uid and hour in
//! `hosts/`, written through the setgid group like everything else
//! there; a counter lost in a power cut costs an hour's count, never a
//! message). This module holds the policy: who is counted, against
//! which limit, and what is refused. The check reads a count first, so
//! two concurrent submissions may both pass at the edge: the limit is
//! exact to within the number of simultaneous callers. Counters of past
//! hours are removed by queue runs ([`SubmissionCounters::sweep`]).
//!
//! A limit that is set fails closed: a counter that cannot be opened,
//! read or written (a caller starting us with `ulimit -n 5`, a full
//! disk) refuses the submission with EX_TEMPFAIL, so that a caller who
//! can starve us of descriptors cannot starve the brake instead.

use crate::config::Config;
use crate::error::{Error, Kind, Result};
use crate::spool::{Counted, CounterError, SubmissionCounters};

/// Counts one submission of `recipients` recipients by `uid` (`login`)
/// in the hour of `now` (unix seconds), or refuses it (EX_TEMPFAIL) when
/// it would pass a limit, or when a counter it needs cannot be opened,
/// read or written (EX_TEMPFAIL too: fail closed). Root and the exempt
/// users are not counted.
pub fn admit(
    config: &Config,
    counters: &SubmissionCounters,
    uid: u32,
    login: &str,
    recipients: usize,
    now: u64,
) -> Result<()> {
    let limits = [
        (Counted::Messages, config.max_messages_per_hour, 1),
        (
            Counted::Recipients,
            config.max_recipients_per_hour,
            recipients as u64,
        ),
    ];
    if limits.iter().all(|&(_, max, _)| max == 0)
        || uid == 0
        || config.rate_limit_exempt.iter().any(|u| u == login)
    {
        return Ok(());
    }
    let mut opened = Vec::new();
    for (counted, max, adding) in limits.into_iter().filter(|&(_, max, _)| max > 0) {
        let what = counted.name();
        let uncounted = |e: CounterError| cannot_count(&e, what, login, uid);
        let counter = counters.open(uid, counted, now).map_err(uncounted)?;
        let so_far = counter.count().map_err(uncounted)?;
        if so_far.saturating_add(adding) > max {
            log::warn!(
                "{login} (uid {uid}) refused: {so_far} {what} this hour, max_{what}_per_hour is {max}"
            );
            return Err(Error::new(
                Kind::TempFail,
                format!(
                    "{login} has submitted {so_far} {what} this hour (max_{what}_per_hour = {max}); try again later"
                ),
            ));
        }
        opened.push((counter, adding, what));
    }
    for (mut counter, adding, what) in opened {
        // A failure after another counter was added to leaves that one a
        // little high: the brake errs on the side of refusing.
        counter
            .add(adding)
            .map_err(|e| cannot_count(&e, what, login, uid))?;
    }
    Ok(())
}

/// The refusal when a counter cannot be used: temporary (75), whatever
/// the errno (descriptors, space and permissions all come back), logged
/// with the user it stopped.
fn cannot_count(trouble: &CounterError, what: &str, login: &str, uid: u32) -> Error {
    log::warn!(
        "{login} (uid {uid}) refused: {trouble}: cannot count {what} against max_{what}_per_hour"
    );
    Error::new(
        Kind::TempFail,
        format!(
            "cannot count this submission against max_{what}_per_hour ({}); try again later",
            trouble.cause()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    /// Submission counters in a temporary spool with its `hosts/`.
    fn counters() -> (tempfile::TempDir, SubmissionCounters) {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("hosts")).unwrap();
        let counters = SubmissionCounters::of_spool_at(dir.path());
        (dir, counters)
    }

    fn config(messages: u64, recipients: u64) -> Config {
        Config {
            max_messages_per_hour: messages,
            max_recipients_per_hour: recipients,
            rate_limit_exempt: vec!["cron".into()],
            ..Config::default()
        }
    }

    #[test]
    fn the_limits_count_per_user_and_hour() {
        let (_dir, counters) = counters();
        let c = config(3, 5);
        let hour = 1_000 * 3600;
        for _ in 0..2 {
            admit(&c, &counters, 1000, "www", 2, hour).unwrap();
        }
        // 4 recipients so far: 2 more would be 6 > 5.
        let refused = admit(&c, &counters, 1000, "www", 2, hour).unwrap_err();
        assert_eq!(refused.kind(), Kind::TempFail);
        admit(&c, &counters, 1000, "www", 1, hour).unwrap();
        // 3 messages: the fourth is refused.
        assert!(admit(&c, &counters, 1000, "www", 0, hour).is_err());
        // Another user, root, an exempt user: not limited by www's count.
        admit(&c, &counters, 1001, "other", 1, hour).unwrap();
        admit(&c, &counters, 0, "root", 100, hour).unwrap();
        admit(&c, &counters, 1002, "cron", 100, hour).unwrap();
        assert_eq!(counters.this_hour(hour), vec![(1000, 3, 5), (1001, 1, 1)]);
        // The next hour starts afresh; the sweep removes the old counts.
        admit(&c, &counters, 1000, "www", 1, hour + 3600).unwrap();
        counters.sweep(hour + 3600);
        assert_eq!(counters.this_hour(hour), vec![]);
        assert_eq!(counters.this_hour(hour + 3600), vec![(1000, 1, 1)]);
    }

    #[test]
    fn a_counter_that_cannot_be_opened_refuses_when_a_limit_is_set() {
        let dir = tempfile::tempdir().unwrap();
        let gone = SubmissionCounters::of_spool_at(&dir.path().join("no-such-spool"));
        let refused = admit(&config(3, 0), &gone, 1000, "www", 1, 0).unwrap_err();
        assert_eq!(refused.kind(), Kind::TempFail);
        assert!(refused.message().contains("max_messages_per_hour"));
        // No limit, nothing to count: accepted.
        admit(&config(0, 0), &gone, 1000, "www", 1, 0).unwrap();
    }

    #[test]
    fn no_limit_means_no_counter() {
        let (dir, counters) = counters();
        admit(&config(0, 0), &counters, 1000, "www", 3, 0).unwrap();
        assert_eq!(fs::read_dir(dir.path().join("hosts")).unwrap().count(), 0);
    }
}
