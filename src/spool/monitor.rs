//! What monitoring reads from the spool besides the messages: when
//! root's last complete queue run ended, and what `corrupt/` holds.
//!
//! The queue run's record is `hosts/queue-run.stamp`: the unix time the
//! run ended, in decimal, and a newline. It is replaced whole (written
//! beside, renamed over) but not fsynced: losing it in a power cut
//! costs the time of one run, never a message, and the next run writes
//! it again. Who counts as "root's complete run" is decided by the
//! runner; the spool only keeps the time. Read back as hostile: opened
//! without following a symlink, a regular file, at most
//! [`STAMP_MAX_BYTES`] read, anything but a number is "no record".

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};

use super::{Spool, durable};
use crate::error::{Error, Result};

/// In `hosts/`: the time root's last complete queue run ended.
const QUEUE_RUN_STAMP: &str = "queue-run.stamp";
/// The most of the stamp read back: a unix time and a newline fit.
const STAMP_MAX_BYTES: u64 = 32;

/// What `corrupt/` holds of the files counted: their number and their
/// sizes added up (as [`Spool::sweep_corrupt`] counts them against
/// `corrupt_max_files` and `corrupt_max_size`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CorruptUsage {
    /// Entries in `corrupt/`.
    pub files: u64,
    /// Their lengths, added up.
    pub bytes: u64,
}

impl Spool {
    /// Records that root's queue run ended complete at `unix` (seconds).
    pub fn record_queue_run(&self, unix: u64) -> Result<()> {
        durable::replace_file_unsynced(
            &self.hosts_dir(),
            QUEUE_RUN_STAMP,
            format!("{unix}\n").as_bytes(),
        )
    }

    /// When root's last complete queue run ended (unix seconds), as
    /// [`Spool::record_queue_run`] recorded it; None when there is no
    /// record, or none that can be read.
    pub fn last_queue_run(&self) -> Option<u64> {
        let file: File = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(self.hosts_dir().join(QUEUE_RUN_STAMP))
            .ok()?;
        if !file.metadata().ok()?.is_file() {
            return None;
        }
        let mut text = String::new();
        file.take(STAMP_MAX_BYTES).read_to_string(&mut text).ok()?;
        text.strip_suffix('\n')?.parse().ok()
    }

    /// What `corrupt/` holds of the entries whose owner `counts` accepts
    /// (a queue file or a refused drop belongs to the user who wrote it).
    /// One readdir and one lstat per entry; a missing `corrupt/` holds
    /// nothing.
    pub fn corrupt_usage(&self, counts: impl Fn(u32) -> bool) -> Result<CorruptUsage> {
        let entries = match fs::read_dir(&self.corrupt) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(CorruptUsage::default()),
            Err(e) => {
                return Err(Error::io(
                    format_args!("reading {}", self.corrupt.display()),
                    &e,
                ));
            }
        };
        let mut usage = CorruptUsage::default();
        for entry in entries.flatten() {
            // Gone meanwhile (a sweep): not counted.
            let Ok(meta) = entry.path().symlink_metadata() else {
                continue;
            };
            if counts(meta.uid()) {
                usage.files += 1;
                usage.bytes = usage.bytes.saturating_add(meta.len());
            }
        }
        Ok(usage)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_queue_run_stamp_reads_back_what_was_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        assert_eq!(spool.last_queue_run(), None);
        spool.record_queue_run(1_700_000_000).unwrap();
        assert_eq!(spool.last_queue_run(), Some(1_700_000_000));
        spool.record_queue_run(1_700_000_300).unwrap();
        assert_eq!(spool.last_queue_run(), Some(1_700_000_300));
        let stamp = spool.hosts_dir().join(QUEUE_RUN_STAMP);
        fs::write(&stamp, "soon\n").unwrap();
        assert_eq!(spool.last_queue_run(), None, "not a number: no record");
        fs::write(&stamp, "1".repeat(64) + "\n").unwrap();
        assert_eq!(spool.last_queue_run(), None, "cut at 32 bytes: no record");
        fs::remove_file(&stamp).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", &stamp).unwrap();
        assert_eq!(spool.last_queue_run(), None, "a symlink is not followed");
    }

    #[test]
    fn corrupt_usage_counts_the_files_of_the_owners_asked_for() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        assert_eq!(
            spool.corrupt_usage(|_| true).unwrap(),
            CorruptUsage::default()
        );
        let corrupt = dir.path().join("corrupt");
        fs::write(corrupt.join("a"), [0u8; 10]).unwrap();
        fs::write(corrupt.join("b.drop"), [0u8; 5]).unwrap();
        let all = spool.corrupt_usage(|_| true).unwrap();
        assert_eq!(
            all,
            CorruptUsage {
                files: 2,
                bytes: 15
            }
        );
        let me = nix::unistd::geteuid().as_raw();
        assert_eq!(spool.corrupt_usage(|uid| uid == me).unwrap(), all);
        assert_eq!(
            spool.corrupt_usage(|uid| uid != me).unwrap(),
            CorruptUsage::default()
        );
    }
}
