//! The helpers that put executables where tests run them (issue 21,
//! tests/common/stage.rs). exec fails with ETXTBSY while any process
//! holds the file open for writing, and in a test binary other threads
//! fork all the time: written by the test process itself (`fs::write`,
//! `fs::copy`), 9 runs in 800 of the test below found their file busy.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

fn write_script(path: &Path) {
    common::stage::write_executable(path, "#!/bin/sh\nexit 0\n", 0o755);
}

fn copy_true(path: &Path) {
    common::stage::copy_executable(Path::new("/bin/true"), path);
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

/// A world staged for other users runs as one even when the built binary
/// sits where they cannot go (a clone in root's 0700 home): every
/// directory on the way to what the faces run is searchable by all, and
/// `nobody` gets sendmail's own answer, not EACCES from exec.
#[test]
fn a_world_staged_for_other_users_is_reachable_by_them() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let w = common::World::new();
    w.stage_for_other_users();
    let target = std::fs::canonicalize(w.bin.join("sendmail")).unwrap();
    assert!(target.starts_with(std::fs::canonicalize(w.dir.path()).unwrap()));
    for dir in target.ancestors().skip(1) {
        let mode = std::fs::metadata(dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o001, 0o001, "{} is closed to others", dir.display());
    }
    if !common::root_or_skip("the run as nobody: switching user needs root") {
        return;
    }
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    let out = Command::new(w.bin.join("sendmail"))
        .arg("--no-such-option")
        .uid(nobody.uid.as_raw())
        .gid(nobody.gid.as_raw())
        .output()
        .expect("nobody can run the staged binary");
    assert_eq!(out.status.code(), Some(64), "{out:?}");
}
