//! Submission counters: how many messages and how many recipients each
//! uid has submitted in each clock hour, kept in the spool's `hosts/`.
//!
//! The store only: it counts, reads back and forgets; what a count
//! allows is decided above it (the brake, `max_messages_per_hour`).
//!
//! On disk, one file per uid, hour and thing counted:
//! `rate-uUID-HOUR.messages` and `rate-uUID-HOUR.recipients`, where HOUR
//! is unix time / 3600 (the README documents these names). A count is
//! the file's length: adding N appends N bytes in one `O_APPEND` write —
//! no lock, no fsync, so a counter lost in a power cut costs an hour's
//! count, never a message, and two writers never lose each other's
//! bytes. Files are made 0660 (the setgid group writes them), opened
//! without following a symlink and without blocking on a FIFO, and only
//! a regular file is a counter.
//!
//! Nothing here creates `hosts/`: a counter whose directory is missing
//! cannot be opened, and the caller decides what that means.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The start of every counter's name.
const PREFIX: &str = "rate-u";
/// Seconds in the hour a counter covers.
const HOUR_SECS: u64 = 3600;
/// Mode of a new counter: the spool group adds to it.
const COUNTER_MODE: u32 = 0o660;

/// What a counter counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counted {
    /// Messages submitted.
    Messages,
    /// Recipients of the messages submitted.
    Recipients,
}

impl Counted {
    /// The name, as in the counter's file name (`messages`, `recipients`).
    pub fn name(self) -> &'static str {
        match self {
            Counted::Messages => "messages",
            Counted::Recipients => "recipients",
        }
    }

    fn from_name(name: &str) -> Option<Counted> {
        match name {
            "messages" => Some(Counted::Messages),
            "recipients" => Some(Counted::Recipients),
            _ => None,
        }
    }
}

/// The submission counters of one spool.
#[derive(Debug, Clone)]
pub struct SubmissionCounters {
    dir: PathBuf,
}

/// One counter, open for adding to.
#[derive(Debug)]
pub struct Counter {
    file: File,
    path: PathBuf,
}

/// A counter that could not be opened, read or added to: which one and
/// why. Displays as `PATH: ERROR`.
#[derive(Debug)]
pub struct CounterError {
    path: PathBuf,
    error: io::Error,
}

impl super::Spool {
    /// This spool's submission counters. Opens nothing.
    pub fn submission_counters(&self) -> SubmissionCounters {
        SubmissionCounters {
            dir: self.hosts_dir(),
        }
    }
}

impl SubmissionCounters {
    /// The counters of the spool at `root`, for a caller that has no
    /// [`Spool`](super::Spool) open (a submission). Opens nothing.
    pub fn of_spool_at(root: &Path) -> SubmissionCounters {
        SubmissionCounters {
            dir: root.join(super::HOSTS),
        }
    }

    /// Opens (creating it at 0) the counter of `what` for `uid` in the
    /// clock hour of `now` (unix seconds).
    pub fn open(&self, uid: u32, what: Counted, now: u64) -> Result<Counter, CounterError> {
        let path = self
            .dir
            .join(format!("{PREFIX}{uid}-{}.{}", now / HOUR_SECS, what.name()));
        match open_counter(&path) {
            Ok(file) => Ok(Counter { file, path }),
            Err(error) => Err(CounterError { path, error }),
        }
    }

    /// The counts of the clock hour of `now` (unix seconds), one entry
    /// per uid that has any, by uid: (uid, messages, recipients).
    /// Unreadable entries count as absent.
    pub fn this_hour(&self, now: u64) -> Vec<(u32, u64, u64)> {
        let hour = now / HOUR_SECS;
        let mut counts: std::collections::BTreeMap<u32, (u64, u64)> = Default::default();
        let Ok(entries) = fs::read_dir(&self.dir) else {
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
                Counted::Messages => slot.0 = meta.size(),
                Counted::Recipients => slot.1 = meta.size(),
            }
        }
        counts
            .into_iter()
            .map(|(uid, (m, r))| (uid, m, r))
            .collect()
    }

    /// Removes the counters of hours before the clock hour of `now`
    /// (unix seconds): nothing reads them again. Failures are ignored
    /// (the next sweep tries again).
    pub fn sweep(&self, now: u64) {
        let hour = now / HOUR_SECS;
        let Ok(entries) = fs::read_dir(&self.dir) else {
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
}

impl Counter {
    /// The count so far.
    pub fn count(&self) -> Result<u64, CounterError> {
        self.file
            .metadata()
            .map(|meta| meta.len())
            .map_err(|error| self.error(error))
    }

    /// Adds `n`: one write of `n` bytes, appended whole.
    pub fn add(&mut self, n: u64) -> Result<(), CounterError> {
        match self.file.write_all(&vec![b'.'; n as usize]) {
            Ok(()) => Ok(()),
            Err(error) => Err(self.error(error)),
        }
    }

    fn error(&self, error: io::Error) -> CounterError {
        CounterError {
            path: self.path.clone(),
            error,
        }
    }
}

impl CounterError {
    /// Why: the system's error.
    pub fn cause(&self) -> &io::Error {
        &self.error
    }
}

impl std::fmt::Display for CounterError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.error)
    }
}

fn open_counter(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(COUNTER_MODE)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)
        .and_then(|file| {
            // Only a regular file is a counter (O_NOFOLLOW already
            // refused a symlink).
            match file.metadata()?.file_type().is_file() {
                true => Ok(file),
                false => Err(io::Error::other("not a regular file")),
            }
        })
}

/// `rate-uUID-HOUR.WHAT` → (uid, hour, what).
fn parse_name(name: &str) -> Option<(u32, u64, Counted)> {
    let rest = name.strip_prefix(PREFIX)?;
    let (stem, what) = rest.rsplit_once('.')?;
    let (uid, hour) = stem.split_once('-')?;
    let what = Counted::from_name(what)?;
    Some((uid.parse().ok()?, hour.parse().ok()?, what))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counters() -> (tempfile::TempDir, SubmissionCounters) {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join(super::super::HOSTS)).unwrap();
        let counters = SubmissionCounters::of_spool_at(dir.path());
        (dir, counters)
    }

    #[test]
    fn a_count_is_the_length_of_a_file_named_by_uid_hour_and_what() {
        let (dir, counters) = counters();
        let now = 1_000 * 3600 + 59;
        let mut messages = counters.open(1000, Counted::Messages, now).unwrap();
        assert_eq!(messages.count().unwrap(), 0);
        messages.add(1).unwrap();
        counters
            .open(1000, Counted::Recipients, now)
            .unwrap()
            .add(3)
            .unwrap();
        // A second opening adds to the same file.
        counters
            .open(1000, Counted::Messages, now)
            .unwrap()
            .add(1)
            .unwrap();
        assert_eq!(messages.count().unwrap(), 2);
        let hosts = dir.path().join("hosts");
        let len = |name: &str| fs::metadata(hosts.join(name)).unwrap().len();
        assert_eq!(len("rate-u1000-1000.messages"), 2);
        assert_eq!(len("rate-u1000-1000.recipients"), 3);
        assert_eq!(counters.this_hour(now), vec![(1000, 2, 3)]);
    }

    #[test]
    fn the_sweep_removes_past_hours_and_nothing_else() {
        let (dir, counters) = counters();
        let hour = 1_000 * 3600;
        counters.open(7, Counted::Messages, hour).unwrap();
        counters
            .open(7, Counted::Recipients, hour + 3600)
            .unwrap()
            .add(1)
            .unwrap();
        let hosts = dir.path().join("hosts");
        fs::write(hosts.join("dest-smarthost.status"), b"").unwrap();
        fs::write(hosts.join("rate-u7-999.other"), b"").unwrap();
        counters.sweep(hour + 3600);
        let mut left: Vec<String> = fs::read_dir(&hosts)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "dest-smarthost.status",
                "rate-u7-1001.recipients",
                "rate-u7-999.other"
            ]
        );
        assert_eq!(counters.this_hour(hour), vec![]);
        assert_eq!(counters.this_hour(hour + 3600), vec![(7, 0, 1)]);
    }

    #[test]
    fn only_a_regular_file_in_an_existing_directory_is_a_counter() {
        let (dir, counters) = counters();
        let hosts = dir.path().join("hosts");
        std::os::unix::fs::symlink("/dev/null", hosts.join("rate-u1-0.messages")).unwrap();
        fs::create_dir(hosts.join("rate-u1-0.recipients")).unwrap();
        let symlink = counters.open(1, Counted::Messages, 0).unwrap_err();
        assert_eq!(symlink.cause().raw_os_error(), Some(libc::ELOOP));
        assert!(counters.open(1, Counted::Recipients, 0).is_err());
        let missing = SubmissionCounters::of_spool_at(&dir.path().join("none"));
        let error = missing.open(1, Counted::Messages, 0).unwrap_err();
        assert_eq!(error.cause().kind(), io::ErrorKind::NotFound);
        assert!(error.to_string().starts_with(&format!(
            "{}/none/hosts/rate-u1-0.messages: ",
            dir.path().display()
        )));
    }
}
