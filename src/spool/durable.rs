//! Durable file-system primitives: the only places where the spool's
//! crash-safety rules (tmp + fsync + rename + fsync dir) are spelled out.
//!
//! Anything that must survive a crash goes through these helpers, so the
//! ordering of fsyncs and renames is reviewed once, not at every call site.

use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::error::{Error, Result};

/// Mode of every file the spool writes: owner and group (the setgid
/// runner) may read, nobody else (S6).
pub const FILE_MODE: u32 = 0o640;

/// Makes the directory entries in `path` (creations, renames, unlinks)
/// durable. Without it a rename can be lost on power failure even though
/// the file data itself was fsynced.
pub fn fsync_dir(path: &Path) -> Result<()> {
    let dir =
        open_dir(path).map_err(|e| Error::io(format_args!("opening {}", path.display()), &e))?;
    dir.sync_all()
        .map_err(|e| Error::io(format_args!("fsync {}", path.display()), &e))
}

/// Opens the directory `path` for an fsync of its entries.
pub fn open_dir(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(path)
}

/// Flushes the whole file system holding `file` (syncfs): what makes a
/// rename durable in a directory the caller may write but not open.
pub fn sync_file_system(file: &std::fs::File) -> Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid descriptor for the duration of the call.
    if unsafe { libc::syncfs(file.as_raw_fd()) } == 0 {
        Ok(())
    } else {
        Err(Error::io("syncfs", &std::io::Error::last_os_error()))
    }
}

/// Atomically replaces `dir/name` with `bytes` (mode 0640): writes
/// `dir/name.tmp-PID`, fsyncs it, renames it over `name` and fsyncs `dir`.
/// A reader sees the old content or the new, never a mix; after Ok the new
/// content survives a crash. On error the temporary file is removed.
pub fn replace_file(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    replace(dir, name, bytes, true)?;
    fsync_dir(dir)
}

/// Like [`replace_file`] but without any fsync: the replacement is atomic
/// and survives the process being killed, not a power cut. For records
/// whose loss only costs information, never a message (the RFC 1047
/// window marker), where two fsyncs per message would halve throughput.
pub fn replace_file_unsynced(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    replace(dir, name, bytes, false)
}

fn replace(dir: &Path, name: &str, bytes: &[u8], sync: bool) -> Result<()> {
    let tmp = dir.join(format!("{name}.tmp-{}", std::process::id()));
    let dest = dir.join(name);
    let result = write_file(&tmp, bytes, sync).and_then(|()| {
        fs::rename(&tmp, &dest)
            .map_err(|e| Error::io(format_args!("renaming {}", tmp.display()), &e))
    });
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(())
}

/// Writes `bytes` to a fresh `path` (truncating a leftover of a crashed
/// process with our PID), sets mode 0640 regardless of the umask, fsyncs
/// when `sync`.
fn write_file(path: &Path, bytes: &[u8], sync: bool) -> Result<()> {
    let what = |verb: &str| format!("{verb} {}", path.display());
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(FILE_MODE)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| Error::io(what("creating"), &e))?;
    set_mode(&file, FILE_MODE).map_err(|e| Error::io(what("chmod"), &e))?;
    file.write_all(bytes)
        .map_err(|e| Error::io(what("writing"), &e))?;
    if sync {
        file.sync_all().map_err(|e| Error::io(what("fsync"), &e))?;
    }
    Ok(())
}

/// Sets the exact mode on an open file: the caller's umask is not trusted
/// (a setgid sendmail inherits it from whoever runs it).
pub fn set_mode(file: &File, mode: u32) -> io::Result<()> {
    file.set_permissions(fs::Permissions::from_mode(mode))
}

/// Renames `from` to `to` unless `to` exists (EEXIST then). Uses
/// renameat2(RENAME_NOREPLACE); on kernels or file systems without it
/// (EINVAL, ENOSYS) falls back to link() + unlink(), which gives the same
/// guarantee because link() never replaces.
pub fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    let c_from = c_path(from)?;
    let c_to = c_path(to)?;
    // SAFETY: both pointers are valid NUL-terminated strings for the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            c_from.as_ptr(),
            libc::AT_FDCWD,
            c_to.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EINVAL) | Some(libc::ENOSYS) => {
            fs::hard_link(from, to)?;
            if let Err(e) = fs::remove_file(from) {
                // The file is already safely at `to`; a stray second link
                // in tmp/ is swept with the other crash leftovers.
                log::warn!("unlinking {} after link: {e}", from.display());
            }
            Ok(())
        }
        _ => Err(err),
    }
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replace_file_replaces_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        replace_file(dir.path(), "x", b"one").unwrap();
        replace_file(dir.path(), "x", b"two").unwrap();
        assert_eq!(fs::read(dir.path().join("x")).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
        let mode = fs::metadata(dir.path().join("x"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, FILE_MODE);
    }

    #[test]
    fn rename_noreplace_refuses_to_replace() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        fs::write(&a, "a").unwrap();
        fs::write(&b, "b").unwrap();
        let err = rename_noreplace(&a, &b).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EEXIST));
        assert_eq!(fs::read(&b).unwrap(), b"b");
        fs::remove_file(&b).unwrap();
        rename_noreplace(&a, &b).unwrap();
        assert!(!a.exists());
        assert_eq!(fs::read(&b).unwrap(), b"a");
    }
}
