//! A brake on runaway senders: per-user submission counts per clock hour
//! (`max_messages_per_hour`, `max_recipients_per_hour`). A compromised
//! web application calling `mail()` 100,000 times gets exit 75 at the
//! limit — PHP's `mail()` returns false, nothing is lost or queued — and
//! syslog names the user.
//!
//! The counters live in the spool's `hosts/` (written through the setgid
//! group like everything else there), one pair of files per uid and hour:
//! `rate-uUID-HOUR.messages` and `rate-uUID-HOUR.recipients`, where HOUR
//! is unix time / 3600. A count is the file's length: a submission
//! appends one byte per message and one per recipient (`O_APPEND`, no
//! lock, no fsync: a counter lost in a power cut costs an hour's count,
//! never a message). The check reads the length first, so two
//! concurrent submissions may both pass at the edge: the limit is exact
//! to within the number of simultaneous callers. Files of past hours are
//! removed by queue runs ([`sweep`]).
//!
//! A limit that is set fails closed: a counter that cannot be opened,
//! read or written (a caller starting us with `ulimit -n 5`, a full
//! disk) refuses the submission with EX_TEMPFAIL, so that a caller who
//! can starve us of descriptors cannot starve the brake instead.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use crate::config::Config;
use crate::error::{Error, Kind, Result};

const PREFIX: &str = "rate-u";

/// Counts one submission of `recipients` recipients by `uid` (`login`)
/// in the hour of `now` (unix seconds), or refuses it (EX_TEMPFAIL) when
/// it would pass a limit, or when a counter it needs cannot be opened,
/// read or written (EX_TEMPFAIL too: fail closed). Root and the exempt
/// users are not counted.
pub fn admit(
    config: &Config,
    hosts_dir: &Path,
    uid: u32,
    login: &str,
    recipients: usize,
    now: u64,
) -> Result<()> {
    let limits = [
        ("messages", config.max_messages_per_hour, 1),
        (
            "recipients",
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
    let hour = now / 3600;
    let mut counters = Vec::new();
    for (what, max, adding) in limits.into_iter().filter(|&(_, max, _)| max > 0) {
        let path = hosts_dir.join(format!("{PREFIX}{uid}-{hour}.{what}"));
        let uncounted = |e: std::io::Error| cannot_count(&path, what, login, uid, &e);
        let file = open_counter(&path).map_err(uncounted)?;
        let so_far = file.metadata().map_err(uncounted)?.len();
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
        counters.push((file, adding, path, what));
    }
    for (mut file, adding, path, what) in counters {
        // One write of `adding` bytes: appended whole. A failure after
        // another counter was written leaves that one a little high: the
        // brake errs on the side of refusing.
        file.write_all(&vec![b'.'; adding as usize])
            .map_err(|e| cannot_count(&path, what, login, uid, &e))?;
    }
    Ok(())
}

/// The refusal when a counter cannot be used: temporary (75), whatever
/// the errno (descriptors, space and permissions all come back), logged
/// with the user it stopped.
fn cannot_count(path: &Path, what: &str, login: &str, uid: u32, e: &std::io::Error) -> Error {
    log::warn!(
        "{login} (uid {uid}) refused: {}: {e}: cannot count {what} against max_{what}_per_hour",
        path.display()
    );
    Error::new(
        Kind::TempFail,
        format!("cannot count this submission against max_{what}_per_hour ({e}); try again later"),
    )
}

fn open_counter(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o660)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)
        .and_then(|file| {
            // Only a regular file is a counter (O_NOFOLLOW already
            // refused a symlink).
            match file.metadata()?.file_type().is_file() {
                true => Ok(file),
                false => Err(std::io::Error::other("not a regular file")),
            }
        })
}

/// This hour's counts per uid: (uid, messages, recipients), by uid.
pub fn this_hour(hosts_dir: &Path, now: u64) -> Vec<(u32, u64, u64)> {
    let hour = now / 3600;
    let mut counts: std::collections::BTreeMap<u32, (u64, u64)> = Default::default();
    let Ok(entries) = fs::read_dir(hosts_dir) else {
        return Vec::new();
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some((uid, at, what)) = name.to_str().and_then(parse_name) else {
            continue;
        };
        if at != hour {
            continue;
        }
        let Ok(meta) = entry.metadata() else {
            continue;
        };
        let slot = counts.entry(uid).or_default();
        match what {
            "messages" => slot.0 = meta.size(),
            _ => slot.1 = meta.size(),
        }
    }
    counts
        .into_iter()
        .map(|(uid, (m, r))| (uid, m, r))
        .collect()
}

/// Removes the counters of hours before the current one.
pub fn sweep(hosts_dir: &Path, now: u64) {
    let hour = now / 3600;
    let Ok(entries) = fs::read_dir(hosts_dir) else {
        return;
    };
    for entry in entries.flatten() {
        if let Some((_, at, _)) = entry.file_name().to_str().and_then(parse_name)
            && at < hour
        {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// `rate-uUID-HOUR.WHAT` → (uid, hour, what).
fn parse_name(name: &str) -> Option<(u32, u64, &str)> {
    let rest = name.strip_prefix(PREFIX)?;
    let (stem, what) = rest.rsplit_once('.')?;
    let (uid, hour) = stem.split_once('-')?;
    matches!(what, "messages" | "recipients").then_some(())?;
    Some((uid.parse().ok()?, hour.parse().ok()?, what))
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let dir = tempfile::tempdir().unwrap();
        let c = config(3, 5);
        let hour = 1_000 * 3600;
        for _ in 0..2 {
            admit(&c, dir.path(), 1000, "www", 2, hour).unwrap();
        }
        // 4 recipients so far: 2 more would be 6 > 5.
        let refused = admit(&c, dir.path(), 1000, "www", 2, hour).unwrap_err();
        assert_eq!(refused.kind(), Kind::TempFail);
        admit(&c, dir.path(), 1000, "www", 1, hour).unwrap();
        // 3 messages: the fourth is refused.
        assert!(admit(&c, dir.path(), 1000, "www", 0, hour).is_err());
        // Another user, root, an exempt user: not limited by www's count.
        admit(&c, dir.path(), 1001, "other", 1, hour).unwrap();
        admit(&c, dir.path(), 0, "root", 100, hour).unwrap();
        admit(&c, dir.path(), 1002, "cron", 100, hour).unwrap();
        assert_eq!(
            this_hour(dir.path(), hour),
            vec![(1000, 3, 5), (1001, 1, 1)]
        );
        // The next hour starts afresh; the sweep removes the old counts.
        admit(&c, dir.path(), 1000, "www", 1, hour + 3600).unwrap();
        sweep(dir.path(), hour + 3600);
        assert_eq!(this_hour(dir.path(), hour), vec![]);
        assert_eq!(this_hour(dir.path(), hour + 3600), vec![(1000, 1, 1)]);
    }

    #[test]
    fn a_counter_that_cannot_be_opened_refuses_when_a_limit_is_set() {
        let dir = tempfile::tempdir().unwrap();
        let gone = dir.path().join("no-such-hosts-dir");
        let refused = admit(&config(3, 0), &gone, 1000, "www", 1, 0).unwrap_err();
        assert_eq!(refused.kind(), Kind::TempFail);
        assert!(refused.message().contains("max_messages_per_hour"));
        // No limit, nothing to count: accepted.
        admit(&config(0, 0), &gone, 1000, "www", 1, 0).unwrap();
    }

    #[test]
    fn no_limit_means_no_counter() {
        let dir = tempfile::tempdir().unwrap();
        admit(&config(0, 0), dir.path(), 1000, "www", 3, 0).unwrap();
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
