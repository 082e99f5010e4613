//! Putting executables where tests run them: the built binary copied for
//! another user (a clone in root's 0700 home is out of their reach), and
//! scripts a test writes and then runs, or has the binary run.
//!
//! Every such file is written by a child process, never by the test
//! process itself. exec fails with ETXTBSY while any process holds the
//! file open for writing. A test that wrote the file itself would hold a
//! write descriptor (close-on-exec) for as long as the write takes; a
//! test on another thread that spawns a child in that window gives the
//! child a copy of the descriptor, which the child keeps until its own
//! exec closes it. Should the first test run the file before that child
//! has reached its exec, the run fails with "Text file busy". Written
//! by `cp` or `cat` in a child, the file is never open for writing in
//! the test process, so no fork of it can inherit a descriptor to it,
//! and the writer has exited (its descriptors closed) before the helper
//! returns. Renaming a temporary copy into place would not do: the
//! inherited descriptor still refers to the same file.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

/// The built binary (`target/…/spoolmail`).
pub fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_spoolmail"))
}

/// Copies the executable `src` to `dst` (`cp`, in a child: see the module
/// comment). The copy is the caller's to chown and chmod.
pub fn copy_executable(src: &Path, dst: &Path) {
    let out = Command::new("cp")
        .arg("--")
        .arg(src)
        .arg(dst)
        .output()
        .expect("running cp");
    assert!(
        out.status.success(),
        "cp {} {}: {}",
        src.display(),
        dst.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Writes `text` to `path` (`cat`, in a child: see the module comment)
/// and gives it `mode`: a script to be run.
pub fn write_executable(path: &Path, text: &str, mode: u32) {
    let out = super::run_with_stdin(
        Command::new("sh")
            .args(["-c", "cat > \"$1\"", "sh"])
            .arg(path),
        text.as_bytes(),
    );
    assert!(
        out.status.success(),
        "writing {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}
