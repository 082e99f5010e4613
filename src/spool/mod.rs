//! The spool: the only code that touches the spool directory.
//!
//! Layout under the root (root 0751, subdirectories 0770, files 0640; S6):
//!
//! | dir        | holds                                                         |
//! |------------|---------------------------------------------------------------|
//! | `tmp/`     | `ID`: messages being written ([`Draft`]); leftovers are crash garbage |
//! | `queue/`   | `ID`: committed messages, immutable (S3); format in [`envelope`] |
//! | `state/`   | `ID`: delivery state as JSON ([`DeliveryState`]), replaced atomically; `ID.tmp-PID` while being replaced |
//! | `hosts/`   | per-destination locks and status (owned by the runner); submission counters ([`SubmissionCounters`]) |
//! | `schedule/` | `T/ID`: empty files, message ID has work from unix time T on; `0/` due at once ([`schedule`]) |
//! | `window/` | `ID`: a hard link to `queue/ID` while a runner waits for the reply to its final dot (RFC 1047; [`window`]) |
//! | `corrupt/` | queue files that failed verification and refused drops: never delivered; removed by root's queue run after `corrupt_max_age` or beyond its size caps ([`Spool::sweep_corrupt`]) |
//! | `maildrop/` | 1733: messages from callers without the spool group ([`maildrop`]), picked up by root |
//! | `maildrop-tmp/` | 1733: those messages while they are written |
//!
//! Lifecycle: [`Spool::begin`] creates `tmp/ID` with `O_EXCL`;
//! [`Draft::commit`] renames it into `queue/` without replacing (the commit
//! point, S1) and files it under `schedule/0/`; a runner finds it there,
//! [`Spool::claim`]s it (an exclusive flock on
//! `queue/ID`, held for the whole transaction, D1), records progress with
//! [`Spool::write_state`], and finally [`Spool::remove`]s it.
//!
//! Every file read back is hostile: names must be valid [`QueueId`]s, files
//! are opened with `O_NOFOLLOW`, must be regular, and queue files must pass
//! the framing check (version line, envelope, exact trailer, length) before
//! anything in them is trusted.
//!
//! The spool stores and decides nothing: what may be queued, held or
//! counted against whom is decided by its callers, who hand it finished
//! envelopes and states. Its maintenance — the sweeps of what crashes
//! and kills leave — is apart from the store, in [`sweep`].

mod counters;
mod draft;
pub mod durable;
pub(crate) mod envelope;
mod group_commit;
mod held;
mod id;
pub mod layout;
mod maildrop;
mod monitor;
mod note;
mod page;
mod removals;
mod schedule;
mod state;
mod sweep;
mod window;

pub use counters::{Counted, Counter, CounterError, SubmissionCounters};
use draft::DirSync;
pub use draft::{Committed, DataWriter, Draft, HeldClaim};
pub use envelope::Envelope;
pub use id::QueueId;
pub use maildrop::{DropFile, MAILDROP, MAILDROP_MODE, MAILDROP_TMP, Refusal, begin_drop};
pub use monitor::CorruptUsage;
pub use page::Page;
use page::Smallest;
pub use schedule::{NOW_BUCKET, Repairs, SCHEDULE, bucket_for};
pub use state::{DeliveryState, RecipientState, RecipientStatus, STATE_VERSION, TlsApplied};
pub use window::{WINDOW, WindowTicket};

use std::fs::{self, DirBuilder, File, OpenOptions, TryLockError};
use std::io::{self, BufReader, Read};
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use crate::error::{Error, Kind, Result};
use envelope::{ReadError, TRAILER_LEN};

/// Mode of the spool root: the group may list and enter; others may only
/// pass through to the maildrop (S6).
const ROOT_MODE: u32 = 0o751;
/// Mode of the subdirectories: the setgid group writes into them.
const DIR_MODE: u32 = 0o770;
/// The subdirectories, all created together.
const SUBDIRS: [&str; 7] = ["tmp", "queue", "state", HOSTS, "corrupt", SCHEDULE, WINDOW];
/// The directory of per-destination locks and status files and of the
/// submission counters.
const HOSTS: &str = "hosts";
/// Buffer for reading an envelope block when the data is not wanted.
const ENVELOPE_BUFFER: usize = 8 * 1024;
/// Buffer for streaming message data to the runner.
const DATA_BUFFER: usize = 64 * 1024;
/// Largest state file written or read back (hostile files must not
/// exhaust memory). It holds every state the spool can write: free texts
/// are cut ([`DeliveryState::bound_texts`]), which leaves under 4 KiB
/// per recipient at worst, and [`MAX_STATE_RECIPIENTS`] of them — under
/// 40 MiB — leave room for local deliveries done. [`Spool::write_state`] refuses to write a
/// state above it, so no state it wrote is ever unreadable.
pub const MAX_STATE_BYTES: u64 = 64 << 20;
/// The most recipients one message's state is sized for: a state of
/// this many, each at its worst, stays under half of [`MAX_STATE_BYTES`]
/// (a test keeps it so). Whoever limits the recipients of a message
/// keeps its limit at or below this.
pub const MAX_STATE_RECIPIENTS: usize = 10_000;
/// Attempts at finding a free tmp/ID before giving up.
const BEGIN_ATTEMPTS: u32 = 16;

/// The spool at one root directory.
#[derive(Debug, Clone)]
pub struct Spool {
    root: PathBuf,
    tmp: PathBuf,
    queue: PathBuf,
    state: PathBuf,
    corrupt: PathBuf,
    schedule: PathBuf,
    window: PathBuf,
    /// Set for a queue run's workers: removals share their fsyncs.
    group_sync: Option<std::sync::Arc<removals::GroupSync>>,
    /// The fsyncs of `window/`, shared by every clone: the workers of a
    /// run about to send their final dots share them ([`window`]).
    window_sync: std::sync::Arc<group_commit::GroupCommit>,
}

/// A committed message as listed: its envelope (with size), its state if
/// a runner has written one, and whether a runner holds its claim now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedMessage {
    /// The envelope, `size` filled from the trailer.
    pub envelope: Envelope,
    /// The delivery state; None until a runner first writes one, or when
    /// it cannot be read (then `state_error` says why).
    pub state: Option<DeliveryState>,
    /// Why the state file could not be read: the state is unknown (the
    /// message stays in the queue; it is not set aside for this).
    pub state_error: Option<String>,
    /// A runner holds the flock now (read from `/proc/locks`, or probed
    /// with a non-blocking shared lock: see `held.rs`).
    pub claimed: bool,
    /// The queue file has a second link: a runner opened the RFC 1047
    /// window ([`window`]) and has not closed it — it is in it now
    /// (`claimed`), or it died there.
    pub window_open: bool,
}

impl QueuedMessage {
    /// The recipients still to do (queued or deferred), each with its
    /// status: from the state, or all of the envelope's as queued while
    /// there is no state.
    pub fn open_recipients(&self) -> Vec<(&str, RecipientStatus)> {
        match &self.state {
            Some(state) => state
                .recipients
                .iter()
                .filter(|r| {
                    matches!(
                        r.status,
                        RecipientStatus::Queued | RecipientStatus::Deferred
                    )
                })
                .map(|r| (r.address.as_str(), r.status))
                .collect(),
            None => self
                .envelope
                .recipients
                .iter()
                .map(|a| (a.as_str(), RecipientStatus::Queued))
                .collect(),
        }
    }
}

/// A reader over exactly the message data of a queue file.
pub struct MessageData {
    inner: DataReader,
}

/// A queue file opened for the data alone, or a claimed one's
/// descriptor shared with its claim.
enum DataReader {
    Opened(io::Take<BufReader<File>>),
    Claimed(io::Take<BufReader<ClaimedFile>>),
}

/// The claim's own descriptor read at an offset of our own (pread): no
/// duplicate descriptor, no seek, no close per message, and no offset
/// shared with another reader of the claim.
struct ClaimedFile {
    file: Arc<File>,
    at: u64,
}

impl Read for ClaimedFile {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read_at(buf, self.at)?;
        self.at += n as u64;
        Ok(n)
    }
}

/// An exclusive flock on `queue/ID`, held until dropped or passed to
/// [`Spool::remove`] (D1).
#[derive(Debug)]
pub struct Claim {
    id: QueueId,
    /// The locked queue file; shared with the claim's data reader
    /// ([`Spool::claimed_data`]).
    _file: Arc<File>,
    /// The queue file's length, from the lstat made after the lock (a
    /// committed queue file never changes).
    len: u64,
    /// Where the data starts and how long it is (set by
    /// [`Spool::claim_message`]).
    data_at: u64,
    size: u64,
    /// The queue file had a second link when claimed: a window left
    /// open, since this time ([`Claim::window_left_open`]).
    window_since: Option<u64>,
    /// `window/ID` may exist: left open before this claim, or opened by
    /// it ([`Spool::open_window`]), and not closed since.
    window_linked: std::cell::Cell<bool>,
}

/// How reading a spool file went wrong, before it becomes an [`Error`].
enum Trouble {
    /// The file vanished (a runner removed it meanwhile): not an error.
    Gone,
    /// The file failed verification: quarantine it.
    Corrupt(String),
    /// I/O trouble: the file may be fine.
    Io(Error),
}

impl Spool {
    /// Opens the spool at `root`. One stat when the directories exist;
    /// when `root/schedule/0` is missing, creates root (0751) and the
    /// subdirectories (0770). Operations that later meet a missing
    /// directory create them too.
    pub fn open(root: &Path) -> Result<Spool> {
        let spool = Spool {
            root: root.to_path_buf(),
            tmp: root.join("tmp"),
            queue: root.join("queue"),
            state: root.join("state"),
            corrupt: root.join("corrupt"),
            schedule: root.join(SCHEDULE),
            window: root.join(WINDOW),
            group_sync: None,
            window_sync: std::sync::Arc::new(group_commit::GroupCommit::new(root.join(WINDOW))),
        };
        // window/ is the newest part of the layout: a spool from an
        // older version gains it (and schedule/0) here.
        let probe = spool.window.clone();
        match fs::metadata(&probe) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if let Err(e) = spool.create_dirs() {
                    // An installed spool whose package has not made them
                    // yet (only root may): runs then list the queue as
                    // before ([`Spool::due_page`]) and mark the RFC
                    // 1047 window in the state file.
                    if !spool.queue.is_dir() {
                        return Err(e);
                    }
                    log::warn!("{e}; queue runs work without it until it exists");
                }
            }
            Err(e) => return Err(Error::io(format_args!("{}", probe.display()), &e)),
        }
        Ok(spool)
    }

    /// This spool, for the workers of one queue run: their removals
    /// share the fsync of `queue/` ([`removals`]). Every removal is
    /// durable, and its state file gone, once the last clone is dropped.
    /// Without the thread it needs, removals stay inline.
    pub fn with_group_sync(&self) -> Spool {
        let mut spool = self.clone();
        match removals::GroupSync::start(self.queue.clone()) {
            Ok(sync) => spool.group_sync = Some(std::sync::Arc::new(sync)),
            Err(e) => log::warn!("no thread for shared fsyncs ({e}): each removal syncs alone"),
        }
        spool
    }

    /// The spool's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Creates whatever part of the layout is missing, with exact modes
    /// (the umask is the caller's and not trusted).
    fn create_dirs(&self) -> Result<()> {
        let make = |path: &Path, mode: u32| -> Result<()> {
            match DirBuilder::new().mode(mode).create(path) {
                Ok(()) => {
                    fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode))
                        .map_err(|e| Error::io(format_args!("chmod {}", path.display()), &e))
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
                Err(e) => Err(Error::io(format_args!("creating {}", path.display()), &e)),
            }
        };
        make(&self.root, ROOT_MODE)?;
        for sub in SUBDIRS {
            make(&self.root.join(sub), DIR_MODE)?;
        }
        make(&self.schedule.join(NOW_BUCKET.to_string()), DIR_MODE)?;
        make(&self.root.join(MAILDROP), MAILDROP_MODE)?;
        make(&self.root.join(MAILDROP_TMP), MAILDROP_MODE)?;
        Ok(())
    }

    /// Runs `op`; if it meets ENOENT (a directory is missing), creates the
    /// layout and runs it once more.
    fn retry_missing<T>(&self, mut op: impl FnMut() -> io::Result<T>) -> Result<io::Result<T>> {
        match op() {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.create_dirs()?;
                Ok(op())
            }
            other => Ok(other),
        }
    }

    /// Starts a new message: creates tmp/ID with
    /// O_CREAT|O_EXCL|O_NOFOLLOW|O_CLOEXEC, mode 0640 (retrying with a new
    /// ID on EEXIST).
    pub fn begin(&self, now: SystemTime) -> Result<Draft> {
        for _ in 0..BEGIN_ATTEMPTS {
            let id = QueueId::generate(now);
            match self.create_draft(&id)? {
                Ok(draft) => return Ok(draft),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(self.creating_error(&id, &e)),
            }
        }
        Err(Error::temp("no free queue ID in tmp/"))
    }

    /// Starts a draft under a given ID (a maildrop pickup keeps the ID
    /// the writer chose, which makes a repeated pickup harmless).
    fn begin_with_id(&self, id: &QueueId) -> Result<Draft> {
        // A leftover of an interrupted pickup of this very message.
        let _ = fs::remove_file(self.tmp.join(id.as_str()));
        self.create_draft(id)?
            .map_err(|e| self.creating_error(id, &e))
    }

    /// Creates tmp/ID for a draft that commits into queue/ID (the layout
    /// is made first when missing).
    fn create_draft(&self, id: &QueueId) -> Result<io::Result<Draft>> {
        self.retry_missing(|| {
            Draft::create(
                id.clone(),
                self.tmp.join(id.as_str()),
                self.queue.join(id.as_str()),
                DirSync::Dir(self.queue.clone()),
                durable::FILE_MODE,
            )
            .map(|draft| draft.filed_under(self.schedule.join(NOW_BUCKET.to_string())))
        })
    }

    fn creating_error(&self, id: &QueueId, e: &io::Error) -> Error {
        Error::io(
            format_args!("creating {}", self.tmp.join(id.as_str()).display()),
            e,
        )
    }

    /// The IDs of every committed message, sorted (oldest first). Names
    /// that are not valid IDs are skipped with a warning. One readdir, no
    /// file opened; queue runs pick their work from the schedule instead
    /// ([`Spool::due_page`]) and list `queue/` only when forced, to
    /// repair the schedule, or for `mailq`.
    pub fn queued_ids(&self) -> Result<Vec<QueueId>> {
        let mut ids = Vec::new();
        self.each_queued(|id| ids.push(id))?;
        ids.sort();
        Ok(ids)
    }

    /// A page of [`Spool::queued_ids`]: up to `limit` IDs past `after`,
    /// in order, those `skip` rules out left aside — for a forced run,
    /// whose work is the whole queue, without holding the whole queue.
    pub fn queued_page(
        &self,
        after: Option<&QueueId>,
        limit: usize,
        skip: impl Fn(&QueueId) -> bool,
    ) -> Result<Page<QueueId>> {
        let mut page = Smallest::new(limit);
        self.each_queued(|id| {
            if after.is_none_or(|after| id > *after) && !skip(&id) {
                page.push(id);
            }
        })?;
        Ok(page.into_page())
    }

    /// Calls `found` with the ID of each file in `queue/`, in directory
    /// order; other names are logged and skipped.
    fn each_queued(&self, mut found: impl FnMut(QueueId)) -> Result<()> {
        let entries = match fs::read_dir(&self.queue) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => {
                return Err(Error::io(
                    format_args!("reading {}", self.queue.display()),
                    &e,
                ));
            }
        };
        for entry in entries {
            let entry = entry
                .map_err(|e| Error::io(format_args!("reading {}", self.queue.display()), &e))?;
            let name = entry.file_name();
            match name.to_str().and_then(QueueId::parse) {
                Some(id) => found(id),
                None => log::warn!(
                    "{}: skipping {:?}: not a queue ID",
                    self.queue.display(),
                    name
                ),
            }
        }
        Ok(())
    }

    /// The IDs that have a state file, sorted (temporary files of a state
    /// being replaced skipped); None when state/ cannot be listed.
    fn state_ids(&self) -> Option<Vec<QueueId>> {
        let mut ids: Vec<QueueId> = fs::read_dir(&self.state)
            .ok()?
            .flatten()
            .filter_map(|e| e.file_name().to_str().and_then(QueueId::parse))
            .collect();
        ids.sort_unstable();
        Some(ids)
    }

    /// The directory of per-destination locks and status files, owned by
    /// the runner (created with the rest of the layout).
    pub fn hosts_dir(&self) -> PathBuf {
        self.root.join(HOSTS)
    }

    /// Every committed message, sorted by ID, with its state if any. Names
    /// that are not valid IDs are skipped with a warning; queue files that
    /// fail verification are moved to corrupt/ with an error log and
    /// skipped. A state file that cannot be read is logged and listed as
    /// unknown (`state_error`): a valid queue file is never set aside
    /// because of its state. A missing queue/ means an empty list.
    pub fn list(&self) -> Result<Vec<QueuedMessage>> {
        let mut messages = Vec::new();
        self.list_each(|m| {
            messages.push(m);
            Ok(())
        })?;
        Ok(messages)
    }

    /// [`Spool::list`] one message at a time, oldest first: `each` gets
    /// every message as soon as its files are read, so a listing of a
    /// queue of any length holds one message in memory (the sorted IDs
    /// aside) and shows its first line at once.
    pub fn list_each(&self, mut each: impl FnMut(QueuedMessage) -> Result<()>) -> Result<()> {
        // Each file is opened relative to its directory (openat), not by
        // walking the whole path again for each of 100,000 files.
        let mut dirs = ListDirs {
            queue: open_dir(&self.queue).ok(),
            state: open_dir(&self.state).ok(),
            with_state: self.state_ids(),
            held: held::Held::new(),
        };
        for id in self.queued_ids()? {
            if let Some(message) = self.list_one(&mut dirs, &id)? {
                each(message)?;
            }
        }
        Ok(())
    }

    /// One message as listed (None: gone, or set aside as corrupt).
    fn list_one(&self, dirs: &mut ListDirs, id: &QueueId) -> Result<Option<QueuedMessage>> {
        let path = self.queue.join(id.as_str());
        let mut window_open = false;
        let mut claimed = false;
        let found = open_regular_with_metadata(dirs.queue.as_ref(), &path);
        let reader = match found.and_then(|(file, meta)| {
            window_open = meta.nlink() > 1;
            claimed = dirs.held.claimed(&file, &meta);
            self.verify_queue_file(id, file, meta.len(), ENVELOPE_BUFFER)
        }) {
            Ok(r) => r,
            Err(Trouble::Gone) => return Ok(None),
            Err(Trouble::Corrupt(why)) => {
                self.quarantine(id, &why);
                return Ok(None);
            }
            Err(Trouble::Io(e)) => return Err(e),
        };
        let state = match &dirs.with_state {
            Some(ids) if ids.binary_search(id).is_err() => Ok(None),
            _ => self.load_state_in(dirs.state.as_ref(), id),
        };
        let (state, state_error) = match state {
            Ok(state) => (state, None),
            Err(Trouble::Gone) => (None, None),
            Err(Trouble::Corrupt(why)) => {
                log::error!(
                    "{}: unreadable state file ({why}); the state of {id} is unknown",
                    self.state.join(id.as_str()).display()
                );
                (None, Some(why))
            }
            Err(Trouble::Io(e)) => {
                log::error!("{e}; the state of {id} is unknown");
                (None, Some(e.message().to_string()))
            }
        };
        let (envelope, _file) = reader;
        Ok(Some(QueuedMessage {
            envelope,
            state,
            state_error,
            claimed,
            window_open,
        }))
    }

    /// The envelope of `queue/ID`, with its size. A file that fails
    /// verification is moved to corrupt/ and reported with kind Data.
    pub fn read_envelope(&self, id: &QueueId) -> Result<Envelope> {
        self.checked(id, ENVELOPE_BUFFER)
            .map(|(envelope, _)| envelope)
    }

    /// A reader over exactly the message data of `queue/ID` (for the
    /// runner). Verified like [`Spool::read_envelope`].
    pub fn open_data(&self, id: &QueueId) -> Result<MessageData> {
        let (envelope, reader) = self.checked(id, DATA_BUFFER)?;
        Ok(MessageData {
            inner: DataReader::Opened(reader.take(envelope.size)),
        })
    }

    /// Opens and verifies `queue/ID`, quarantining it when corrupt.
    fn checked(&self, id: &QueueId, buffer: usize) -> Result<(Envelope, BufReader<File>)> {
        let path = self.queue.join(id.as_str());
        match self.open_queue_file(id, buffer) {
            Ok(found) => Ok(found),
            Err(Trouble::Gone) => Err(Error::io(
                format_args!("{}", path.display()),
                &io::Error::from_raw_os_error(libc::ENOENT),
            )),
            Err(Trouble::Corrupt(why)) => {
                self.quarantine(id, &why);
                Err(Error::data(format!("{}: corrupt: {why}", path.display())))
            }
            Err(Trouble::Io(e)) => Err(e),
        }
    }

    /// Opens `queue/ID`, reads the envelope block and checks the framing
    /// (see [`envelope`]); returns the envelope with its size and a reader
    /// positioned at the first data byte. The data itself is not read.
    fn open_queue_file(
        &self,
        id: &QueueId,
        buffer: usize,
    ) -> std::result::Result<(Envelope, BufReader<File>), Trouble> {
        self.open_queue_file_in(None, id, buffer)
    }

    /// [`Spool::open_queue_file`], relative to `queue/`'s descriptor
    /// when there is one.
    fn open_queue_file_in(
        &self,
        dir: Option<&File>,
        id: &QueueId,
        buffer: usize,
    ) -> std::result::Result<(Envelope, BufReader<File>), Trouble> {
        let path = self.queue.join(id.as_str());
        let (file, len) = open_regular_in(dir, &path)?;
        self.verify_queue_file(id, file, len, buffer)
    }

    /// Reads the envelope block of an open queue file (from its current
    /// offset, the start) and checks the framing; the reader is left at
    /// the first byte of the data.
    fn verify_queue_file<F: Read + std::borrow::Borrow<File>>(
        &self,
        id: &QueueId,
        file: F,
        len: u64,
        buffer: usize,
    ) -> std::result::Result<(Envelope, BufReader<F>), Trouble> {
        let io_err = |e: io::Error| {
            let path = self.queue.join(id.as_str());
            Trouble::Io(Error::io(format_args!("reading {}", path.display()), &e))
        };
        let mut reader = BufReader::with_capacity(buffer, file);
        let (mut envelope, offset) = match envelope::read_envelope(&mut reader) {
            Ok(found) => found,
            Err(ReadError::Corrupt(why)) => return Err(Trouble::Corrupt(why)),
            Err(ReadError::Io(e)) => return Err(io_err(e)),
        };
        if envelope.id != *id {
            return Err(Trouble::Corrupt(format!(
                "envelope id {} does not match the name",
                envelope.id
            )));
        }
        let Some(trailer_at) = len.checked_sub(TRAILER_LEN as u64).filter(|&t| t >= offset) else {
            return Err(Trouble::Corrupt(
                "truncated: no room for the end marker".into(),
            ));
        };
        let mut trailer = [0u8; TRAILER_LEN];
        // A small file is in the reader's buffer to its end already (most
        // are: a cron mail, a PHP form): no second read for the trailer.
        let buffered = reader.buffer();
        match (trailer_at - offset) as usize {
            at if offset + buffered.len() as u64 == len => {
                trailer.copy_from_slice(&buffered[at..at + TRAILER_LEN]);
            }
            _ => reader
                .get_ref()
                .borrow()
                .read_exact_at(&mut trailer, trailer_at)
                .map_err(io_err)?,
        }
        let Some(size) = envelope::parse_trailer(&trailer) else {
            return Err(Trouble::Corrupt("missing end marker".into()));
        };
        if offset.checked_add(size) != Some(trailer_at) {
            return Err(Trouble::Corrupt(format!(
                "size mismatch: end marker says {size}, file holds {}",
                trailer_at - offset
            )));
        }
        envelope.size = size;
        Ok((envelope, reader))
    }

    /// Moves a queue file (and its state, if any) that failed verification
    /// to corrupt/: never delivered, never silently deleted.
    fn quarantine(&self, id: &QueueId, why: &str) {
        let from = self.queue.join(id.as_str());
        log::error!(
            "{}: corrupt queue file ({why}); moving it to {}",
            from.display(),
            self.corrupt.display()
        );
        self.set_aside(&from, id.as_str());
        let state = self.state.join(id.as_str());
        if fs::symlink_metadata(&state).is_ok() {
            self.set_aside(&state, &format!("{id}.state"));
        }
    }

    /// Renames `from` into corrupt/ under `name` (or `name.N` if taken).
    /// Failures are logged, not returned: listing must go on, and the file
    /// is skipped either way.
    fn set_aside(&self, from: &Path, name: &str) {
        let mut result = Ok(());
        for n in 0..100 {
            let to = match n {
                0 => self.corrupt.join(name),
                n => self.corrupt.join(format!("{name}.{n}")),
            };
            result = self
                .retry_missing(|| durable::rename_noreplace(from, &to))
                .unwrap_or_else(|e| Err(io::Error::other(e.to_string())));
            match &result {
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                _ => break,
            }
        }
        match result {
            Ok(()) => {
                let _ = durable::fsync_dir(&self.corrupt);
            }
            // Another lister moved it first: nothing left to do.
            Err(e)
                if e.kind() == io::ErrorKind::NotFound && fs::symlink_metadata(from).is_err() => {}
            Err(e) => log::error!(
                "moving {} to {}: {e}",
                from.display(),
                self.corrupt.display()
            ),
        }
    }

    /// The delivery state of `ID`, or None when no state file exists yet.
    /// A state file that cannot be read or parsed is an error of kind
    /// Data and is left where it is: the state is unknown, the queue file
    /// untouched (the caller decides what an unknown state means).
    pub fn read_state(&self, id: &QueueId) -> Result<Option<DeliveryState>> {
        let path = self.state.join(id.as_str());
        match self.load_state(id) {
            Ok(state) => Ok(state),
            Err(Trouble::Gone) => Ok(None),
            Err(Trouble::Corrupt(why)) => {
                Err(Error::data(format!("{}: corrupt: {why}", path.display())))
            }
            Err(Trouble::Io(e)) => Err(e),
        }
    }

    fn load_state(&self, id: &QueueId) -> std::result::Result<Option<DeliveryState>, Trouble> {
        self.load_state_in(None, id)
    }

    /// [`Spool::load_state`], relative to `state/`'s descriptor when there
    /// is one.
    fn load_state_in(
        &self,
        dir: Option<&File>,
        id: &QueueId,
    ) -> std::result::Result<Option<DeliveryState>, Trouble> {
        let path = self.state.join(id.as_str());
        let (mut file, len) = match open_regular_in(dir, &path) {
            Err(Trouble::Gone) => return Ok(None),
            other => other?,
        };
        if len > MAX_STATE_BYTES {
            return Err(Trouble::Corrupt("state file too large".into()));
        }
        // A state file is never written in place (it is replaced by a
        // rename), so the inode we hold keeps the size fstat gave: one
        // read of exactly that many bytes, usually one system call.
        let mut bytes = vec![0u8; len as usize];
        file.read_exact(&mut bytes)
            .map_err(|e| Trouble::Io(Error::io(format_args!("reading {}", path.display()), &e)))?;
        let state: DeliveryState =
            serde_json::from_slice(&bytes).map_err(|e| Trouble::Corrupt(e.to_string()))?;
        if state.version != STATE_VERSION {
            return Err(Trouble::Corrupt(format!(
                "unknown state version {}",
                state.version
            )));
        }
        Ok(Some(state))
    }

    /// Replaces the delivery state of `ID`: write state/ID.tmp-PID, fsync,
    /// rename, fsync state/ (S3). Call it while holding the claim.
    pub fn write_state(&self, id: &QueueId, state: &DeliveryState) -> Result<()> {
        let bytes = encode_state(id, state)?;
        match durable::replace_file(&self.state, id.as_str(), &bytes) {
            Err(e) if e.kind() == Kind::CantCreate => {
                self.create_dirs()?;
                durable::replace_file(&self.state, id.as_str(), &bytes)
            }
            other => other,
        }
    }

    /// Like [`Spool::write_state`] without the fsyncs: atomic, survives the
    /// runner being killed; a power cut may leave the file empty (the
    /// rename can reach the journal before the data). Only for the RFC
    /// 1047 window marker of a state that holds no final outcome
    /// ([`DeliveryState::holds_outcomes`]): an empty or unreadable state
    /// reads as "unknown" (every recipient retried, flagged possibly
    /// delivered), so its loss costs nothing the marker did not say —
    /// never a message, never a recipient's outcome.
    pub fn mark_state(&self, id: &QueueId, state: &DeliveryState) -> Result<()> {
        let bytes = encode_state(id, state)?;
        durable::replace_file_unsynced(&self.state, id.as_str(), &bytes)
    }

    /// Queues `tmp/ID` left sealed ([`Draft::seal`]) by a process that
    /// died before its commit: Ok(true) when it was there, complete, and
    /// is now in `queue/`; Ok(false) when there is nothing to finish (it
    /// was committed, or never sealed). A file that is not a complete
    /// queue file is removed (it was never acknowledged to anyone).
    pub fn commit_leftover(&self, id: &QueueId) -> Result<bool> {
        let tmp = self.tmp.join(id.as_str());
        let (file, len) = match open_regular(&tmp) {
            Ok(found) => found,
            Err(Trouble::Gone) => return Ok(false),
            Err(Trouble::Corrupt(why)) => {
                log::error!("{}: {why}; removed", tmp.display());
                let _ = fs::remove_file(&tmp);
                return Ok(false);
            }
            Err(Trouble::Io(e)) => return Err(e),
        };
        if let Err(trouble) = self.verify_queue_file(id, file, len, ENVELOPE_BUFFER) {
            return match trouble {
                Trouble::Io(e) => Err(e),
                Trouble::Gone => Ok(false),
                Trouble::Corrupt(why) => {
                    log::error!("{}: incomplete ({why}); removed", tmp.display());
                    let _ = fs::remove_file(&tmp);
                    Ok(false)
                }
            };
        }
        let dest = self.queue.join(id.as_str());
        match durable::rename_noreplace(&tmp, &dest) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let _ = fs::remove_file(&tmp);
                return Ok(false);
            }
            Err(e) => return Err(Error::io(format_args!("renaming {}", tmp.display()), &e)),
        }
        durable::fsync_dir(&self.queue)?;
        if let Err(e) = self.schedule(id, NOW_BUCKET) {
            log::warn!("{e}; the next queue run files it");
        }
        Ok(true)
    }

    /// The group of `queue/` (the spool's group, `mail` when installed).
    pub fn group(&self) -> Option<u32> {
        fs::metadata(&self.queue).ok().map(|m| m.gid())
    }

    /// The owner of `queue/ID` (None: gone). A message submitted directly
    /// is owned by its submitter (the setgid process runs with the
    /// caller's uid); one committed by root (maildrop pickups, root's
    /// notices) by root. One `lstat`, no open: what a restricted queue run
    /// looks at before it would claim a message.
    pub fn owner_uid(&self, id: &QueueId) -> Option<u32> {
        fs::symlink_metadata(self.queue.join(id.as_str()))
            .ok()
            .map(|m| m.uid())
    }

    /// Takes the non-blocking exclusive flock on queue/ID for a whole
    /// transaction (D1). Ok(None) when another process holds it, or when
    /// the message was removed before we got the lock. A `mailq` probing
    /// the message at that instant (the first file of its listing, or
    /// each where `/proc/locks` cannot be trusted) also yields None (its
    /// shared lock lasts microseconds); the runner simply tries again on
    /// its next pass.
    pub fn claim(&self, id: &QueueId) -> Result<Option<Claim>> {
        let path = self.queue.join(id.as_str());
        let (file, opened) = match open_regular_with_metadata(None, &path) {
            Ok(found) => found,
            Err(Trouble::Gone) => return Ok(None),
            Err(Trouble::Corrupt(why)) => {
                self.quarantine(id, &why);
                return Err(Error::data(format!("{}: corrupt: {why}", path.display())));
            }
            Err(Trouble::Io(e)) => return Err(e),
        };
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Ok(None),
            Err(TryLockError::Error(e)) => {
                return Err(Error::io(format_args!("locking {}", path.display()), &e));
            }
        }
        // The previous holder may have removed the message between our
        // open and our lock: then we hold a lock on a dead inode. The
        // name's lstat, made after the lock, tells: the same inode as the
        // one opened (whose device and number the open's fstat gave; they
        // cannot change) is still queued, and being that inode, its link
        // count and ctime are the ones a second fstat would give now — no
        // second fstat.
        match fs::symlink_metadata(&path) {
            Ok(now) if now.ino() == opened.ino() && now.dev() == opened.dev() => {
                Ok(Some(Claim::new(id, file, &now)))
            }
            _ => Ok(None),
        }
    }

    /// The claim a submission took before its commit
    /// ([`Draft::hold_claim`]), with the verified envelope, as
    /// [`Spool::claim_message`] gives them. None when the message is not
    /// queued under its ID (its commit failed).
    pub fn claim_held(&self, held: HeldClaim) -> Result<Option<(Claim, Envelope)>> {
        let path = self.queue.join(held.id.as_str());
        let opened = held.file.metadata().map_err(|e| {
            Error::io(
                format_args!("reading the metadata of {}", path.display()),
                &e,
            )
        })?;
        match fs::symlink_metadata(&path) {
            Ok(now) if now.ino() == opened.ino() && now.dev() == opened.dev() => {
                self.verified(Claim::new(&held.id, held.file, &now))
            }
            _ => Ok(None),
        }
    }

    /// Whether `id` is queued and no runner holds it: a shared lock,
    /// tried and dropped. Unlike taking the claim and dropping it, two
    /// such probes never refuse each other, so two runners each asking
    /// this of the same message before they stop cannot both be told
    /// "held" and both leave it (a runner's claim still refuses the
    /// probe, and the probe the claim, for microseconds: the claimant
    /// asks this again before it stops).
    pub fn claimable(&self, id: &QueueId) -> bool {
        match open_regular_with_metadata(None, &self.queue.join(id.as_str())) {
            Ok((file, _)) => file.try_lock_shared().is_ok(),
            Err(_) => false,
        }
    }

    /// [`Spool::claim`] and the verified envelope, read through the
    /// claim's own descriptor: a runner opens each queue file once.
    pub fn claim_message(&self, id: &QueueId) -> Result<Option<(Claim, Envelope)>> {
        match self.claim(id)? {
            Some(claim) => self.verified(claim),
            None => Ok(None),
        }
    }

    /// The envelope of a claimed message, verified and read through the
    /// claim's own descriptor.
    fn verified(&self, mut claim: Claim) -> Result<Option<(Claim, Envelope)>> {
        let id = claim.id.clone();
        let path = self.queue.join(id.as_str());
        // Read through the claim's own descriptor (no duplicate, no second
        // fstat): the data starts where the envelope block ends, which is
        // the file's length less the data and the trailer.
        let verified = self
            .verify_queue_file(&id, &*claim._file, claim.len, ENVELOPE_BUFFER)
            .map(|(envelope, _)| envelope);
        match verified {
            Ok(envelope) => {
                claim.data_at = claim.len - envelope.size - envelope::TRAILER_LEN as u64;
                claim.size = envelope.size;
                Ok(Some((claim, envelope)))
            }
            Err(Trouble::Gone) => Ok(None),
            Err(Trouble::Corrupt(why)) => {
                drop(claim);
                self.quarantine(&id, &why);
                Err(Error::data(format!("{}: corrupt: {why}", path.display())))
            }
            Err(Trouble::Io(e)) => Err(e),
        }
    }

    /// The message data of a message claimed with
    /// [`Spool::claim_message`], read through the claim's own descriptor
    /// at offsets of its own (no path lookup, no second verification).
    pub fn claimed_data(&self, claim: &Claim) -> Result<MessageData> {
        let file = ClaimedFile {
            file: claim._file.clone(),
            at: claim.data_at,
        };
        // No larger than the data: the buffer is zeroed before its first
        // fill (a `read` into it must see initialized memory), and a
        // delivery reads the data once or twice, so 64 KiB cleared each
        // time for a 3 KB message was most of a runner's memset.
        let capacity = usize::try_from(claim.size)
            .unwrap_or(DATA_BUFFER)
            .clamp(1, DATA_BUFFER);
        Ok(MessageData {
            inner: DataReader::Claimed(BufReader::with_capacity(capacity, file).take(claim.size)),
        })
    }

    /// Removes a claimed, finished message and releases the claim. The
    /// queue file goes first and queue/ is fsynced, then the state file:
    /// a crash in between leaves an orphan state file (harmless, nothing
    /// lists it) rather than a queue file without its state, which would
    /// be delivered again to recipients already done (D2). The state
    /// file's removal is not fsynced: if a power cut undoes it, an orphan
    /// is all that remains. In a queue run ([`Spool::with_group_sync`])
    /// the fsync and the state file's removal are done by the run's
    /// syncing thread, in the same order.
    pub fn remove(&self, claim: Claim) -> Result<()> {
        let id = claim.id();
        let queue_path = self.queue.join(id.as_str());
        let state_path = self.state.join(id.as_str());
        fs::remove_file(&queue_path)
            .map_err(|e| Error::io(format_args!("removing {}", queue_path.display()), &e))?;
        // The window, if open, closes with the state file: after the
        // removal is durable, so that a power cut that undoes the removal
        // finds the message still flagged.
        let window = claim.in_window().then(|| self.window.join(id.as_str()));
        if let Some(sync) = &self.group_sync {
            // The state file goes after the shared fsync.
            sync.removed(state_path, window);
            drop(claim);
            return Ok(());
        }
        durable::fsync_dir(&self.queue)?;
        if let Some(window) = window {
            let _ = fs::remove_file(window);
        }
        match fs::remove_file(&state_path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(Error::io(
                    format_args!("removing {}", state_path.display()),
                    &e,
                ));
            }
        }
        drop(claim);
        Ok(())
    }
}

impl Claim {
    /// The claim of `id` through `file`, locked, whose queue name `now`
    /// is the lstat of, made after the lock.
    fn new(id: &QueueId, file: File, now: &fs::Metadata) -> Claim {
        Claim {
            id: id.clone(),
            _file: Arc::new(file),
            len: now.len(),
            data_at: 0,
            size: 0,
            window_since: (now.nlink() > 1).then(|| now.ctime().max(0) as u64),
            window_linked: std::cell::Cell::new(now.nlink() > 1),
        }
    }

    /// The claimed message.
    pub fn id(&self) -> &QueueId {
        &self.id
    }

    /// The note the acceptance step kept with the message
    /// ([`Draft::note_content`]), if it has one; the spool does not read
    /// it.
    pub fn content_note(&self) -> Option<Vec<u8>> {
        note::read(&self._file)
    }
}

impl Read for MessageData {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.inner {
            DataReader::Opened(r) => r.read(buf),
            DataReader::Claimed(r) => r.read(buf),
        }
    }
}

impl MessageData {
    /// Bytes of data not yet read.
    pub fn remaining(&self) -> u64 {
        match &self.inner {
            DataReader::Opened(r) => r.limit(),
            DataReader::Claimed(r) => r.limit(),
        }
    }
}

/// Encodes a state for `state/ID` with its free texts cut to their bound;
/// refuses (kind Software, the old state staying in place) a state the
/// reader would not take back.
fn encode_state(id: &QueueId, state: &DeliveryState) -> Result<Vec<u8>> {
    let mut bounded = state.clone();
    bounded.bound_texts();
    let bytes = serde_json::to_vec(&bounded)
        .map_err(|e| Error::new(Kind::Software, format!("encoding state: {e}")))?;
    if bytes.len() as u64 > MAX_STATE_BYTES {
        return Err(Error::new(
            Kind::Software,
            format!(
                "{id}: delivery state of {} bytes exceeds {MAX_STATE_BYTES}: not written",
                bytes.len()
            ),
        ));
    }
    Ok(bytes)
}

/// Opens a spool file read-only without following symlinks (and without
/// blocking on a FIFO), and checks it is a regular file. Returns it with
/// its length.
fn open_regular(path: &Path) -> std::result::Result<(File, u64), Trouble> {
    open_regular_in(None, path)
}

/// The directories a listing opens its files in.
struct ListDirs {
    queue: Option<File>,
    state: Option<File>,
    /// The IDs with a state file when the listing began, sorted (None:
    /// state/ could not be listed, so each is looked for). A message that
    /// was never tried — the whole of a backlog behind an unreachable
    /// smarthost — then costs no failed open of its state file.
    with_state: Option<Vec<QueueId>>,
    /// Which queue files runners hold.
    held: held::Held,
}

/// Opens a directory to open files in (O_PATH: no read access needed).
fn open_dir(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(path)
}

/// [`open_regular`]; with `dir`, the file named by `path`'s last
/// component is opened relative to `dir` (openat), `path` only names it
/// in errors.
fn open_regular_in(dir: Option<&File>, path: &Path) -> std::result::Result<(File, u64), Trouble> {
    open_regular_with_metadata(dir, path).map(|(file, meta)| (file, meta.len()))
}

/// [`open_regular_in`], returning the file's whole fstat.
fn open_regular_with_metadata(
    dir: Option<&File>,
    path: &Path,
) -> std::result::Result<(File, fs::Metadata), Trouble> {
    use nix::fcntl::OFlag;
    let flags = OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
    let file = match (dir, path.file_name()) {
        (Some(dir), Some(name)) => openat(dir, name, flags | OFlag::O_RDONLY),
        _ => OpenOptions::new()
            .read(true)
            .custom_flags(flags.bits())
            .open(path),
    };
    let file = match file {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(Trouble::Gone),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(Trouble::Corrupt("symlink".into()));
        }
        // A socket: opening it fails instead of reaching the type check.
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {
            return Err(Trouble::Corrupt("not a regular file".into()));
        }
        Err(e) => {
            return Err(Trouble::Io(Error::io(
                format_args!("opening {}", path.display()),
                &e,
            )));
        }
    };
    let meta = file
        .metadata()
        .map_err(|e| Trouble::Io(Error::io(format_args!("{}", path.display()), &e)))?;
    if !meta.file_type().is_file() {
        return Err(Trouble::Corrupt("not a regular file".into()));
    }
    Ok((file, meta))
}

/// openat(2) of `name` in `dir`.
fn openat(dir: &File, name: &std::ffi::OsStr, flags: nix::fcntl::OFlag) -> io::Result<File> {
    nix::fcntl::openat(dir, name, flags, nix::sys::stat::Mode::empty())
        .map(File::from)
        .map_err(io::Error::from)
}

#[cfg(test)]
mod tests;
