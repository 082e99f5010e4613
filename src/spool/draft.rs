//! A message being written: `tmp/ID`, from creation to the commit point.
//!
//! The draft owns its tmp file: it is created with `O_EXCL`, written
//! through one 64 KiB buffer (envelope block, data, trailer), and either
//! renamed into `queue/` by [`Draft::commit`] or unlinked when the draft is
//! dropped. So nothing half-written ever appears in `queue/` (S2).

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::PathBuf;

use super::durable;
use super::envelope::{self, Envelope};
use super::id::QueueId;
use crate::error::{Error, Kind, Result};

/// Size of the write buffer: large enough that a typical message is a
/// handful of write(2) calls.
/// How the rename that commits a draft is made durable.
#[derive(Debug, Clone)]
pub(super) enum DirSync {
    /// fsync the directory renamed into (queue/).
    Dir(PathBuf),
    /// syncfs: for the maildrop, a directory its writers cannot open.
    FileSystem,
}

const BUFFER_SIZE: usize = 64 * 1024;

/// A message being written in `tmp/`. Dropping it without commit unlinks
/// the tmp file.
pub struct Draft {
    id: QueueId,
    tmp_path: PathBuf,
    queue_path: PathBuf,
    sync: DirSync,
    writer: DataWriter,
    envelope_written: bool,
    /// The tmp file is gone (renamed away): Drop must not unlink it.
    finished: bool,
    /// Complete and fsynced in tmp/ ([`Draft::seal`]): kept on Drop, for
    /// [`Spool::commit_leftover`](super::Spool::commit_leftover) to finish.
    sealed: bool,
    /// The schedule bucket the committed message is filed under (a
    /// queue commit; a maildrop file has none).
    bucket: Option<PathBuf>,
}

/// The writer for the message data: counts the bytes it accepts, so the
/// trailer can record the size. Write errors surface as `io::Error`; after
/// one, the draft refuses to commit.
pub struct DataWriter {
    out: BufWriter<File>,
    size: u64,
    failed: Option<String>,
}

/// The exclusive flock on a draft's file, taken before its commit and
/// kept across it (the lock belongs to the inode, whatever its name): a
/// caller that delivers its own message at once (`-odi`) holds it from
/// the moment the message appears in `queue/`, so no queue runner
/// listing the queue meanwhile takes it from under the caller. Turned
/// into a [`Claim`](super::Claim) by
/// [`Spool::claim_held`](super::Spool::claim_held).
#[derive(Debug)]
pub struct HeldClaim {
    pub(super) id: QueueId,
    /// A read-only descriptor of the draft's inode, locked.
    pub(super) file: File,
}

/// A message safely in `queue/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    /// Its queue ID.
    pub id: QueueId,
    /// Its data size in bytes.
    pub size: u64,
}

impl Draft {
    /// Creates `tmp/ID` exclusively (mode 0640 whatever the umask). The
    /// caller retries with a fresh ID on EEXIST.
    pub(super) fn create(
        id: QueueId,
        tmp_path: PathBuf,
        queue_path: PathBuf,
        sync: DirSync,
        mode: u32,
    ) -> io::Result<Draft> {
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp_path)?;
        // From here on, Drop removes tmp/ID whatever happens.
        let draft = Draft {
            id,
            tmp_path,
            queue_path,
            sync,
            writer: DataWriter {
                out: BufWriter::with_capacity(BUFFER_SIZE, file),
                size: 0,
                failed: None,
            },
            envelope_written: false,
            finished: false,
            sealed: false,
            bucket: None,
        };
        durable::set_mode(draft.writer.out.get_ref(), mode)?;
        Ok(draft)
    }

    /// Files the message, once committed, under the schedule bucket
    /// `bucket` (a directory that exists).
    pub(super) fn filed_under(mut self, bucket: PathBuf) -> Draft {
        self.bucket = Some(bucket);
        self
    }

    /// The ID this message will have in `queue/`.
    pub fn id(&self) -> &QueueId {
        &self.id
    }

    /// Writes the envelope block; call once, before data(). Values
    /// containing CR, LF or NUL, an envelope whose id is not this draft's,
    /// or a second call are refused with kind Software: a bug upstream.
    pub fn write_envelope(&mut self, envelope: &Envelope) -> Result<()> {
        if self.envelope_written || self.writer.size > 0 {
            return Err(Error::new(
                Kind::Software,
                "envelope written twice or after data",
            ));
        }
        if envelope.id != self.id {
            return Err(Error::new(
                Kind::Software,
                "envelope id is not the draft's id",
            ));
        }
        if let Err(key) = envelope::check_values(envelope) {
            return Err(Error::new(
                Kind::Software,
                format!("envelope {key} contains CR, LF or NUL"),
            ));
        }
        envelope::write_envelope(&mut self.writer.out, envelope)
            .map_err(|e| Error::io(format_args!("writing {}", self.tmp_path.display()), &e))?;
        self.envelope_written = true;
        Ok(())
    }

    /// Takes the claim of the message to be, before its commit
    /// ([`HeldClaim`]). The file is opened again read-only (the draft
    /// writes through a write-only descriptor, and a claim reads) and must
    /// be the draft's own inode.
    pub fn hold_claim(&self) -> Result<HeldClaim> {
        let what = |verb: &str| format!("{verb} {}", self.tmp_path.display());
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&self.tmp_path)
            .map_err(|e| Error::io(what("opening"), &e))?;
        let ours = self
            .writer
            .out
            .get_ref()
            .metadata()
            .and_then(|w| file.metadata().map(|r| (w, r)))
            .map(|(w, r)| w.ino() == r.ino() && w.dev() == r.dev())
            .map_err(|e| Error::io(what("reading the metadata of"), &e))?;
        if !ours {
            return Err(Error::temp(format!(
                "{}: replaced under us",
                what("opening")
            )));
        }
        file.try_lock()
            .map_err(|e| Error::temp(format!("{}: {e}", what("locking"))))?;
        Ok(HeldClaim {
            id: self.id.clone(),
            file,
        })
    }

    /// The writer for the message data.
    pub fn data(&mut self) -> &mut DataWriter {
        &mut self.writer
    }

    /// Keeps `note`, a short record of what the data holds, with the
    /// message (see [`super::note`]): before the commit, so that it is
    /// there when the file appears in queue/. A cache, not a part of the
    /// message: false, and nothing else, when it cannot be kept.
    pub fn note_content(&self, note: &[u8]) -> bool {
        super::note::write(self.writer.out.get_ref(), note)
    }

    /// THE COMMIT POINT (S1): writes the trailer, flushes, fsyncs the file,
    /// renames tmp/ID to queue/ID without replacing, fsyncs queue/. Only
    /// after Ok is the message safe. On any error the tmp file is removed
    /// and queue/ is as it was.
    pub fn commit(mut self) -> Result<Committed> {
        let size = self.writer.size;
        if !self.sealed {
            self.write_and_sync()?;
        }
        durable::rename_noreplace(&self.tmp_path, &self.queue_path).map_err(|e| {
            let what = format_args!("renaming {} into queue", self.tmp_path.display());
            Error::io(what, &e)
        })?;
        self.finished = true;
        let synced = match &self.sync {
            DirSync::Dir(dir) => durable::fsync_dir(dir),
            DirSync::FileSystem => durable::sync_file_system(self.writer.out.get_ref()),
        };
        if let Err(e) = synced
            && !self.sealed
        {
            // The rename may not survive a crash, so we must report
            // failure; take the file back out so that the caller's retry
            // does not deliver the message twice (S2). If it cannot be
            // taken back, the message *is* queued and will be delivered:
            // reporting failure then would make the caller send it again,
            // so it counts as committed (durable at the next sync).
            match fs::remove_file(&self.queue_path) {
                Ok(()) => return Err(e),
                Err(undo) => log::error!(
                    "{}: {e}; and taking it back failed ({undo}): it stays queued",
                    self.queue_path.display()
                ),
            }
        }
        // From here on the mail is safe: the caller may exit 0. Its
        // schedule entry is an index: without it the message is found by
        // its own runner or the next full queue run, so a failure here is
        // only logged.
        if let Some(bucket) = &self.bucket
            && let Err(e) = super::schedule::enter(bucket, &self.id)
        {
            log::warn!(
                "{}: filing it in the schedule: {e}; the next queue run does",
                self.id
            );
        }
        Ok(Committed {
            id: self.id.clone(),
            size,
        })
    }

    /// Completes the message in tmp/ — trailer written, data fsynced —
    /// without queueing it: for a message whose existence something else
    /// must record first (a notice, in its original's state). From here
    /// the tmp file is kept even when the draft is dropped, so that
    /// [`Spool::commit_leftover`](super::Spool::commit_leftover) can queue it after a
    /// crash; a sealed draft's commit never takes the file back (what
    /// recorded it counts on it being queued).
    pub fn seal(&mut self) -> Result<()> {
        self.write_and_sync()?;
        self.sealed = true;
        Ok(())
    }

    /// Appends the trailer, flushes the buffer and fsyncs the file data.
    fn write_and_sync(&mut self) -> Result<()> {
        let what = |verb: &str| format!("{verb} {}", self.tmp_path.display());
        if !self.envelope_written {
            return Err(Error::new(Kind::Software, "commit without an envelope"));
        }
        if let Some(e) = &self.writer.failed {
            return Err(Error::temp(format!("{}: {e}", what("writing"))));
        }
        let trailer = envelope::trailer(self.writer.size);
        let out = &mut self.writer.out;
        out.write_all(&trailer)
            .and_then(|()| out.flush())
            .map_err(|e| Error::io(what("writing"), &e))?;
        // fdatasync: the size is covered, the timestamps need not be.
        out.get_ref()
            .sync_data()
            .map_err(|e| Error::io(what("fsync"), &e))
    }
}

impl Drop for Draft {
    fn drop(&mut self) {
        if !self.finished && !self.sealed {
            let _ = fs::remove_file(&self.tmp_path);
        }
    }
}

impl DataWriter {
    /// Data bytes accepted so far (for size limits upstream).
    pub fn size(&self) -> u64 {
        self.size
    }
}

impl Write for DataWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.out.write(buf) {
            Ok(n) => {
                self.size += n as u64;
                Ok(n)
            }
            Err(e) => Err(self.record(e)),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush().map_err(|e| self.record(e))
    }
}

impl DataWriter {
    /// Remembers a real write error: the buffer's content is then unknown,
    /// so a commit must not record a size that may not match the file.
    fn record(&mut self, e: io::Error) -> io::Error {
        if e.kind() != io::ErrorKind::Interrupted {
            self.failed.get_or_insert_with(|| e.to_string());
        }
        e
    }
}
