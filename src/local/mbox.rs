//! Appending one message to an mbox mailbox the way mail readers expect
//! (mutt, mailx, procmail): a `From sender date` separator line, body
//! lines starting with "From " escaped as ">From ", a blank line after
//! the message; a `NAME.lock` dotlock (stale ones older than
//! [`STALE_LOCK`] removed) plus an fcntl write lock while writing; and
//! never a half-written message: on any error the file is truncated back
//! to the size it had.
//!
//! Local delivery (aliases, users, permissions) decides which file and as
//! whom; this module only writes safely into it.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::error::{Error, Kind, Result};

/// A dotlock older than this belongs to a dead process (procmail and
/// mutt use similar limits).
pub const STALE_LOCK: Duration = Duration::from_secs(300);
/// Mode of a mailbox spoolmail creates: the user and the mail group.
pub const MAILBOX_MODE: u32 = 0o660;

/// How to append.
pub struct Append<'a> {
    /// The mailbox file.
    pub path: &'a Path,
    /// The envelope sender ("" for the null sender).
    pub sender: &'a str,
    /// Header fields put on top of the message (`Return-Path:`,
    /// `Delivered-To:`), each ending in LF.
    pub header: &'a [u8],
    /// Give up waiting for the locks after this long (the recipient is
    /// then deferred).
    pub lock_timeout: Duration,
    /// Take a `NAME.lock` dotlock too (mailboxes: yes; a file named in
    /// /etc/aliases, whose directory may not be writable: no).
    pub dotlock: bool,
    /// Mode of the file when it is created.
    pub mode: u32,
    /// The uid that must own an existing file (a mailbox belongs to its
    /// user; one planted by someone else is not written).
    pub owner: Option<u32>,
}

/// Appends `message` (LF line ends, as stored in the spool). Returns the
/// bytes written. A lock that cannot be had in time is a TempFail.
pub fn append(spec: &Append, message: &mut dyn Read, now: SystemTime) -> Result<u64> {
    let what = |verb: &str| format!("{verb} {}", spec.path.display());
    // Workers of one runner queue up here without polling; the file locks
    // below are for the other processes.
    let _turn = InProcess::acquire(spec.path, spec.lock_timeout)?;
    let _dotlock = match spec.dotlock {
        true => Some(DotLock::acquire(spec.path, spec.lock_timeout)?),
        false => None,
    };
    let file = open_or_create(spec).map_err(|e| Error::io(what("opening"), &e))?;
    let meta = file.metadata().map_err(|e| Error::io(what("stat"), &e))?;
    // A hard link or a device instead of a mailbox would let whoever
    // planted it make us write elsewhere.
    if !meta.is_file() || meta.nlink() != 1 {
        return Err(Error::new(
            Kind::NoPermission,
            format!("{}: not a plain mailbox file", spec.path.display()),
        ));
    }
    if let Some(owner) = spec.owner
        && meta.uid() != owner
    {
        return Err(Error::new(
            Kind::NoPermission,
            format!(
                "{}: owned by uid {}, not by its user (uid {owner})",
                spec.path.display(),
                meta.uid()
            ),
        ));
    }
    fcntl_lock(&file, spec.lock_timeout).map_err(|e| match e.kind() {
        io::ErrorKind::WouldBlock => Error::temp(format!("{}: mailbox busy", spec.path.display())),
        _ => Error::io(what("locking"), &e),
    })?;
    let start = file
        .metadata()
        .map_err(|e| Error::io(what("stat"), &e))?
        .len();
    match write_message(&file, start, spec, message, now) {
        Ok(written) => Ok(written),
        Err(e) => {
            // Never leave half a message for the next reader.
            let _ = file.set_len(start);
            let _ = file.sync_all();
            Err(Error::io(what("writing"), &e))
        }
    }
}

/// Opens the mailbox, creating it with exactly `spec.mode` (the umask a
/// hardened process runs with would otherwise take the group's write
/// bit, which the mail group needs).
fn open_or_create(spec: &Append) -> io::Result<File> {
    let flags = libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK;
    match OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(spec.mode)
        .custom_flags(flags)
        .open(spec.path)
    {
        Ok(file) => {
            use std::os::unix::fs::PermissionsExt;
            file.set_permissions(fs::Permissions::from_mode(spec.mode))?;
            Ok(file)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(flags)
            .open(spec.path),
        Err(e) => Err(e),
    }
}

fn write_message(
    file: &File,
    start: u64,
    spec: &Append,
    message: &mut dyn Read,
    now: SystemTime,
) -> io::Result<u64> {
    use std::io::Seek;
    let mut handle = file;
    handle.seek(io::SeekFrom::Start(start))?;
    let mut out = BufWriter::with_capacity(64 * 1024, handle);
    let sender = if spec.sender.is_empty() {
        "MAILER-DAEMON"
    } else {
        spec.sender
    };
    let mut written = 0u64;
    let separator = format!("From {sender} {}\n", crate::clock::asctime_utc(now));
    out.write_all(separator.as_bytes())?;
    written += separator.len() as u64;
    out.write_all(spec.header)?;
    written += spec.header.len() as u64;
    let mut reader = BufReader::new(message);
    let mut line = Vec::with_capacity(1024);
    let mut ended_with_newline = true;
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        if line.starts_with(b"From ") {
            out.write_all(b">")?;
            written += 1;
        }
        out.write_all(&line)?;
        written += line.len() as u64;
        ended_with_newline = line.ends_with(b"\n");
    }
    let tail: &[u8] = if ended_with_newline { b"\n" } else { b"\n\n" };
    out.write_all(tail)?;
    written += tail.len() as u64;
    out.flush()?;
    drop(out);
    file.sync_data()?;
    Ok(written)
}

/// An fcntl write lock on the whole file, polled until `timeout`: the
/// lock procmail, mutt and mailx take too (F_SETLK, not flock).
fn fcntl_lock(file: &File, timeout: Duration) -> io::Result<()> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::ZERO;
    loop {
        // SAFETY: a zeroed flock is valid; the fields are set below.
        let mut fl: libc::flock = unsafe { std::mem::zeroed() };
        fl.l_type = libc::F_WRLCK as libc::c_short;
        fl.l_whence = libc::SEEK_SET as libc::c_short;
        // SAFETY: valid descriptor and pointer for the call's duration.
        if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETLK, &fl) } == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if !matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EACCES)) {
            return Err(e);
        }
        if Instant::now() >= deadline {
            return Err(io::Error::from(io::ErrorKind::WouldBlock));
        }
        pause = backoff(pause);
    }
}

/// Sleeps a little longer each time, from 1 ms up to 50 ms: runners
/// queued behind one another on a busy mailbox get in quickly, a reader
/// holding it for minutes costs a poll every 50 ms. Returns the next
/// pause.
fn backoff(pause: Duration) -> Duration {
    let pause = pause.clamp(Duration::from_millis(1), Duration::from_millis(50));
    std::thread::sleep(pause);
    (pause * 2).min(Duration::from_millis(50))
}

/// The mailboxes this process is writing to, and a wake-up for whoever
/// waits for one of them.
static BUSY: (Mutex<Vec<PathBuf>>, Condvar) = (Mutex::new(Vec::new()), Condvar::new());

/// This process's turn at one mailbox; given back on drop.
struct InProcess {
    path: PathBuf,
}

impl InProcess {
    fn acquire(path: &Path, timeout: Duration) -> Result<InProcess> {
        let deadline = Instant::now() + timeout;
        let (busy, wake) = &BUSY;
        let mut list = busy.lock().unwrap_or_else(|p| p.into_inner());
        while list.iter().any(|p| p == path) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::temp(format!("{}: mailbox busy", path.display())));
            }
            list = wake
                .wait_timeout(list, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        list.push(path.to_path_buf());
        Ok(InProcess {
            path: path.to_path_buf(),
        })
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        let (busy, wake) = &BUSY;
        let mut list = busy.lock().unwrap_or_else(|p| p.into_inner());
        list.retain(|p| p != &self.path);
        wake.notify_all();
    }
}

/// `NAME.lock`, created with O_EXCL; removed on drop.
struct DotLock {
    path: PathBuf,
}

impl DotLock {
    fn acquire(mailbox: &Path, timeout: Duration) -> Result<DotLock> {
        let mut name = mailbox.as_os_str().to_owned();
        name.push(".lock");
        let path = PathBuf::from(name);
        let deadline = Instant::now() + timeout;
        let mut pause = Duration::ZERO;
        loop {
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o644)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&path)
            {
                Ok(mut f) => {
                    let _ = writeln!(f, "{}", std::process::id());
                    return Ok(DotLock { path });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    let stale = fs::symlink_metadata(&path)
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|m| SystemTime::now().duration_since(m).ok())
                        .is_some_and(|age| age > STALE_LOCK);
                    if stale {
                        log::warn!("{}: removing a stale lock", path.display());
                        let _ = fs::remove_file(&path);
                        continue;
                    }
                }
                Err(e) => {
                    return Err(Error::io(format_args!("creating {}", path.display()), &e));
                }
            }
            if Instant::now() >= deadline {
                return Err(Error::temp(format!(
                    "{}: mailbox locked",
                    mailbox.display()
                )));
            }
            pause = backoff(pause);
        }
    }
}

impl Drop for DotLock {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec<'a>(path: &'a Path, sender: &'a str) -> Append<'a> {
        Append {
            path,
            sender,
            header: b"Delivered-To: alice@host.example\n",
            lock_timeout: Duration::from_millis(300),
            dotlock: true,
            mode: MAILBOX_MODE,
            owner: None,
        }
    }

    const NOW: u64 = 1_795_491_193; // Tue Nov 24 2026 03:33:13 UTC

    fn at() -> SystemTime {
        std::time::UNIX_EPOCH + Duration::from_secs(NOW)
    }

    #[test]
    fn separator_escaping_and_blank_line() {
        let dir = tempfile::tempdir().unwrap();
        let mbox = dir.path().join("alice");
        let msg = b"Subject: one\n\nFrom here on\nnot From here\n>From kept\n";
        append(&spec(&mbox, "bob@example.org"), &mut &msg[..], at()).unwrap();
        append(
            &spec(&mbox, ""),
            &mut &b"Subject: two\n\nno newline"[..],
            at(),
        )
        .unwrap();
        let text = fs::read_to_string(&mbox).unwrap();
        assert_eq!(
            text,
            "From bob@example.org Tue Nov 24 03:33:13 2026\n\
             Delivered-To: alice@host.example\n\
             Subject: one\n\n>From here on\nnot From here\n>From kept\n\n\
             From MAILER-DAEMON Tue Nov 24 03:33:13 2026\n\
             Delivered-To: alice@host.example\n\
             Subject: two\n\nno newline\n\n"
        );
        assert!(!dir.path().join("alice.lock").exists(), "dotlock removed");
    }

    #[test]
    fn a_failed_write_leaves_the_mailbox_as_it_was() {
        struct Breaks(usize);
        impl Read for Breaks {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.0 == 0 {
                    return Err(io::Error::other("disk gone"));
                }
                let n = buf.len().min(self.0).min(100);
                buf[..n].fill(b'x');
                self.0 -= n;
                Ok(n)
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let mbox = dir.path().join("alice");
        append(&spec(&mbox, "a@b.example"), &mut &b"S: 1\n\nok\n"[..], at()).unwrap();
        let before = fs::read(&mbox).unwrap();
        let e = append(&spec(&mbox, "a@b.example"), &mut Breaks(100_000), at()).unwrap_err();
        assert!(e.message().contains("disk gone"), "{e}");
        assert_eq!(fs::read(&mbox).unwrap(), before);
    }

    #[test]
    fn a_held_dotlock_defers_and_a_stale_one_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let mbox = dir.path().join("alice");
        let lock = dir.path().join("alice.lock");
        fs::write(&lock, b"123\n").unwrap();
        let e = append(&spec(&mbox, "a@b.example"), &mut &b"S: x\n\n"[..], at()).unwrap_err();
        assert_eq!(e.kind(), Kind::TempFail);
        assert!(lock.exists(), "someone else's lock is left alone");
        let old = SystemTime::now() - Duration::from_secs(3600);
        File::options()
            .write(true)
            .open(&lock)
            .unwrap()
            .set_modified(old)
            .unwrap();
        append(&spec(&mbox, "a@b.example"), &mut &b"S: x\n\n"[..], at()).unwrap();
        assert!(!lock.exists());
    }

    #[test]
    fn symlinks_and_hard_links_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("elsewhere");
        fs::write(&target, b"").unwrap();
        let link = dir.path().join("alice");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(append(&spec(&link, "a@b.example"), &mut &b"S: x\n\n"[..], at()).is_err());
        let hard = dir.path().join("bob");
        fs::hard_link(&target, &hard).unwrap();
        let e = append(&spec(&hard, "a@b.example"), &mut &b"S: x\n\n"[..], at()).unwrap_err();
        assert_eq!(e.kind(), Kind::NoPermission);
        assert_eq!(fs::read(&target).unwrap(), b"");
    }

    #[test]
    fn a_mailbox_owned_by_someone_else_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mbox = dir.path().join("alice");
        fs::write(&mbox, b"").unwrap();
        let mut spec = spec(&mbox, "a@b.example");
        let mine = nix::unistd::geteuid().as_raw();
        spec.owner = Some(mine + 1);
        let e = append(&spec, &mut &b"S: x\n\n"[..], at()).unwrap_err();
        assert_eq!(e.kind(), Kind::NoPermission);
        spec.owner = Some(mine);
        append(&spec, &mut &b"S: x\n\n"[..], at()).unwrap();
    }

    #[test]
    fn concurrent_appends_never_interleave() {
        let dir = tempfile::tempdir().unwrap();
        let mbox = dir.path().join("alice");
        std::thread::scope(|s| {
            for t in 0..4 {
                let mbox = &mbox;
                s.spawn(move || {
                    for i in 0..10 {
                        let body =
                            format!("Subject: {t}-{i}\n\n{}\n", format!("{t}{i} ").repeat(2000));
                        let mut spec = spec(mbox, "a@b.example");
                        spec.lock_timeout = Duration::from_secs(30);
                        append(&spec, &mut body.as_bytes(), SystemTime::now()).unwrap();
                    }
                });
            }
        });
        let text = fs::read_to_string(&mbox).unwrap();
        let messages: Vec<&str> = text.split("\nFrom a@b.example ").collect();
        assert_eq!(messages.len(), 40);
        for m in messages {
            let subject = m.split("Subject: ").nth(1).unwrap().lines().next().unwrap();
            let (t, i) = subject.split_once('-').unwrap();
            let body = m.split("\n\n").nth(1).unwrap().trim_end_matches('\n');
            let expected = format!("{t}{i} ").repeat(2000);
            assert!(body == expected, "message {subject} intact");
        }
    }

    #[test]
    fn python_mailbox_reads_every_message_back() {
        let Ok(status) = std::process::Command::new("python3")
            .arg("-c")
            .arg("1")
            .status()
        else {
            eprintln!("skipped: no python3");
            return;
        };
        assert!(status.success());
        let dir = tempfile::tempdir().unwrap();
        let mbox = dir.path().join("alice");
        for i in 0..3 {
            let msg = format!("Subject: m{i}\n\nFrom the start\nline {i}\n");
            append(&spec(&mbox, "a@b.example"), &mut msg.as_bytes(), at()).unwrap();
        }
        let out = std::process::Command::new("python3")
            .arg("-c")
            .arg(
                "import mailbox,sys\n\
                 for m in mailbox.mbox(sys.argv[1]):\n    \
                 print(m['Subject'], m.get_payload().splitlines())",
            )
            .arg(&mbox)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let listing = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            listing,
            "m0 ['>From the start', 'line 0']\n\
             m1 ['>From the start', 'line 1']\n\
             m2 ['>From the start', 'line 2']\n"
        );
    }
}
