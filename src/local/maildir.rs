//! Delivering one message into a Maildir (the protocol of
//! <https://cr.yp.to/proto/maildir.html>): write `tmp/UNIQUE`, fsync, link
//! it to `new/UNIQUE`, remove the tmp name, fsync `new/`. A reader never
//! sees a partial message, and a crash leaves at most a file in `tmp/`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};

static SEQUENCE: AtomicU32 = AtomicU32::new(0);

/// Writes `header` then `message` into the Maildir `dir` (created, with
/// missing parents and its tmp/new/cur, when missing). Returns the path in `new/`.
pub fn deliver(dir: &Path, header: &[u8], message: &mut dyn Read) -> Result<PathBuf> {
    for sub in ["", "tmp", "new", "cur"] {
        let path = dir.join(sub);
        // The Maildir itself may be missing with its parents (a template
        // such as /srv/mail/%u/Maildir/): made as the user, private.
        match fs::DirBuilder::new()
            .mode(0o700)
            .recursive(sub.is_empty())
            .create(&path)
        {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::io(format_args!("creating {}", path.display()), &e)),
        }
    }
    let name = unique_name();
    let tmp = dir.join("tmp").join(&name);
    let new = dir.join("new").join(&name);
    let result = write_tmp(&tmp, header, message)
        .and_then(|()| fs::hard_link(&tmp, &new))
        .and_then(|()| File::open(dir.join("new"))?.sync_all());
    let _ = fs::remove_file(&tmp);
    match result {
        Ok(()) => Ok(new),
        Err(e) => {
            let _ = fs::remove_file(&new);
            Err(Error::io(
                format_args!("delivering to {}", dir.display()),
                &e,
            ))
        }
    }
}

fn write_tmp(tmp: &Path, header: &[u8], message: &mut dyn Read) -> io::Result<()> {
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(tmp)?;
    let mut out = BufWriter::with_capacity(64 * 1024, &file);
    out.write_all(header)?;
    io::copy(message, &mut out)?;
    out.flush()?;
    drop(out);
    file.sync_all()
}

/// `SECONDS.MMICROSECONDSPPIDQSEQ.HOST`: unique on this host as the
/// protocol asks (the pid and a per-process sequence number separate
/// deliveries within one microsecond).
fn unique_name() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into())
        .replace('/', "\\057")
        .replace(':', "\\072");
    format!(
        "{}.M{}P{}Q{}.{}",
        now.as_secs(),
        now.subsec_micros(),
        std::process::id(),
        SEQUENCE.fetch_add(1, Ordering::Relaxed),
        host
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_lands_in_new_whole_and_tmp_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let md = dir.path().join("Maildir");
        let a = deliver(
            &md,
            b"Delivered-To: a@x\n",
            &mut &b"Subject: 1\n\nFrom x\n"[..],
        )
        .unwrap();
        let b = deliver(&md, b"", &mut &b"Subject: 2\n\n"[..]).unwrap();
        assert_ne!(a, b);
        assert_eq!(
            fs::read(&a).unwrap(),
            b"Delivered-To: a@x\nSubject: 1\n\nFrom x\n"
        );
        assert_eq!(fs::read_dir(md.join("tmp")).unwrap().count(), 0);
        assert_eq!(fs::read_dir(md.join("new")).unwrap().count(), 2);
        assert!(md.join("cur").is_dir());
    }

    #[test]
    fn a_failed_read_leaves_nothing_behind() {
        struct Breaks;
        impl Read for Breaks {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("disk gone"))
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let md = dir.path().join("Maildir");
        let e = deliver(&md, b"", &mut Breaks).unwrap_err();
        assert!(e.message().contains("disk gone"), "{e}");
        assert_eq!(fs::read_dir(md.join("tmp")).unwrap().count(), 0);
        assert_eq!(fs::read_dir(md.join("new")).unwrap().count(), 0);
    }
}
