//! Shared helpers for the fuzz targets: a chunked reader (a pipe that
//! splits its data anywhere), a scratch spool per process, and a header
//! field's value as the address parser reads it.

use std::io::{self, Read};
use std::path::PathBuf;

/// A reader returning its data in the given chunk sizes (cycled; 0 counts
/// as 1), as a pipe may: a CR and its LF can arrive in different reads.
pub struct Chunked<'a> {
    data: &'a [u8],
    sizes: Vec<usize>,
    turn: usize,
}

impl<'a> Chunked<'a> {
    /// `data` read `sizes` bytes at a time.
    pub fn new(data: &'a [u8], sizes: &[usize]) -> Self {
        Chunked {
            data,
            sizes: if sizes.is_empty() {
                vec![1]
            } else {
                sizes.to_vec()
            },
            turn: 0,
        }
    }
}

impl Read for Chunked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = self.sizes[self.turn % self.sizes.len()].max(1);
        self.turn += 1;
        let n = want.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

/// A fresh directory for this process's scratch spool, removed and
/// recreated empty: under `SPOOLMAIL_FUZZ_SCRATCH` when set (fuzz/run.sh
/// gives each of its runs its own, which it removes), else on tmpfs when
/// the machine has one (fsync is then cheap).
pub fn scratch_dir(name: &str) -> PathBuf {
    let base = if let Some(dir) = std::env::var_os("SPOOLMAIL_FUZZ_SCRATCH") {
        PathBuf::from(dir)
    } else if std::path::Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let dir = base.join(format!("spoolmail-fuzz-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("creating the scratch directory");
    dir
}

/// Removes every entry of `dir` (not the directory itself).
pub fn empty_dir(dir: &std::path::Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() && !p.is_symlink() {
                let _ = std::fs::remove_dir_all(&p);
            } else {
                let _ = std::fs::remove_file(&p);
            }
        }
    }
}

/// The unfolded value after the first ':' of a raw header field, as
/// Header::get and Header::recipients read it (line breaks removed,
/// lossy UTF-8, outer blanks trimmed); None without a ':'.
pub fn field_value(raw: &[u8]) -> Option<String> {
    let colon = raw.iter().position(|&b| b == b':')?;
    let v: Vec<u8> = raw[colon + 1..]
        .iter()
        .copied()
        .filter(|&b| b != b'\n')
        .collect();
    Some(
        String::from_utf8_lossy(&v)
            .trim_matches([' ', '\t'])
            .to_string(),
    )
}
