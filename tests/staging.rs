//! The helpers that put executables where tests run them (issue 21).
//! Exec fails with ETXTBSY while any process holds the file open for
//! writing; in a test binary, other threads fork all the time.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How a test puts an executable in place (the unit under test).
fn write_script(path: &Path) {
    std::fs::write(path, "#!/bin/sh\nexit 0\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn copy_true(path: &Path) {
    std::fs::copy("/bin/true", path).unwrap();
}

/// Threads that write an executable and run it at once, while other
/// threads spawn children the whole time (as the tests of one binary
/// do): not one run may find its file busy.
#[test]
fn an_executable_put_in_place_while_other_threads_spawn_is_never_busy() {
    let dir = tempfile::tempdir().unwrap();
    let stop = AtomicBool::new(false);
    let deadline = Instant::now() + Duration::from_secs(20);
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    let _ = Command::new("true").status();
                }
            });
        }
        let writers: Vec<_> = (0..4)
            .map(|t| {
                let dir = dir.path();
                s.spawn(move || {
                    let mut busy = 0;
                    for i in 0..200 {
                        let path = dir.join(format!("x{t}-{i}"));
                        match i % 2 {
                            0 => write_script(&path),
                            _ => copy_true(&path),
                        }
                        match Command::new(&path).status() {
                            Ok(status) => assert!(status.success()),
                            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) => busy += 1,
                            Err(e) => panic!("{}: {e}", path.display()),
                        }
                        if Instant::now() > deadline {
                            break;
                        }
                    }
                    busy
                })
            })
            .collect();
        let busy: usize = writers.into_iter().map(|w| w.join().unwrap()).sum();
        stop.store(true, Ordering::Relaxed);
        assert_eq!(busy, 0, "runs that found their file busy (ETXTBSY)");
    });
}
