//! A note kept with a queue file: a short record of what its data holds,
//! written by the acceptance step as it writes the data and read by a
//! delivery, which then need not read the message once more to learn it
//! (issue 24: 8-bit content is found at submission, as Postfix's cleanup
//! records it). The spool stores the note and does not read it: its
//! form is its writer's (`smtp::Content::note`).
//!
//! The note is an extended attribute of the queue file, not part of the
//! file's bytes: a queue file stays exactly the version-1 format, so a
//! runner of an older version reads a newer file (and the other way
//! round) without setting it aside as corrupt. It is a cache of a fact
//! the data itself holds: where it is missing — a file system without
//! user attributes, a copy made without them, a crash before the
//! attribute reached the disk (fdatasync need not carry it), a notice
//! or forward written without one — the delivery reads the data as
//! before. So a note is never needed for correctness, and failing to
//! write one is not an error.

use std::fs::File;
use std::os::fd::AsRawFd;

/// The attribute's name. The `user.` namespace: the file's owner (the
/// submitting user, whose own message it describes) or root may set it.
const NAME: &[u8] = b"user.spoolmail.content\0";
/// Longest note read back; a longer attribute is not ours.
const MAX_NOTE: usize = 256;

/// Attaches `note` to the open file `file`; false when the file system
/// takes no user attributes (or anything else refused it).
pub fn write(file: &File, note: &[u8]) -> bool {
    if note.len() > MAX_NOTE {
        return false;
    }
    // SAFETY: NAME is NUL-terminated, `note` is valid for its length, and
    // the descriptor stays open for the call.
    let rc = unsafe {
        libc::fsetxattr(
            file.as_raw_fd(),
            NAME.as_ptr().cast(),
            note.as_ptr().cast(),
            note.len(),
            0,
        )
    };
    rc == 0
}

/// The note attached to the open file `file`, if there is one.
pub fn read(file: &File) -> Option<Vec<u8>> {
    let mut buf = [0u8; MAX_NOTE];
    // SAFETY: NAME is NUL-terminated, `buf` is writable for its length,
    // and the descriptor stays open for the call.
    let n = unsafe {
        libc::fgetxattr(
            file.as_raw_fd(),
            NAME.as_ptr().cast(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    (n > 0).then(|| buf[..n as usize].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_note_reads_back_as_written_and_a_file_without_one_has_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let file = File::create(&path).unwrap();
        assert_eq!(read(&file), None);
        if !write(&file, b"content1 x=1") {
            eprintln!("skipped: no user attributes on this file system");
            return;
        }
        assert_eq!(
            read(&File::open(&path).unwrap()).as_deref(),
            Some(&b"content1 x=1"[..])
        );
        assert!(!write(&file, &[b'x'; MAX_NOTE + 1]), "too long");
    }
}
