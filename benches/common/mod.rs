//! What the benchmarks share: their size from the environment, where
//! they work, and a queue filled straight through the spool library.

#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use spoolmail::spool::{Envelope, Spool};

mod wait;
pub use wait::wait4;

/// A positive integer from the environment, if set.
pub fn env_number(name: &str) -> Option<usize> {
    let v = std::env::var(name).ok()?;
    Some(
        v.parse::<usize>()
            .ok()
            .filter(|&n| n > 0)
            .unwrap_or_else(|| panic!("{name}={v:?} is not a positive integer")),
    )
}

/// Where benchmarks make their directories (the target dir: a real disk).
pub fn bench_base_dir() -> PathBuf {
    match option_env!("CARGO_TARGET_TMPDIR") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"),
    }
}

/// Commits `n` copies of `message` for `recipient` (setup, not measured).
pub fn fill_queue(dir: &Path, n: usize, recipient: &str, message: &[u8]) {
    let spool = Spool::open(dir).expect("open spool");
    for _ in 0..n {
        let mut draft = spool.begin(SystemTime::now()).expect("begin");
        let envelope = Envelope {
            id: draft.id().clone(),
            arrival: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_secs(),
            sender: "sender@bench.test".into(),
            recipients: vec![recipient.into()],
            uid: 0,
            user: "bench".into(),
            body_type: None,
            dsn_notify: None,
            dsn_ret: None,
            envid: None,
            chain: Vec::new(),
            size: 0,
        };
        draft.write_envelope(&envelope).expect("envelope");
        draft.data().write_all(message).expect("data");
        draft.commit().expect("commit");
    }
}

/// Times `sendmail -C config -q` and checks that it emptied the queue of
/// `spool` (the listing is shown when it did not). Returns the time and
/// the run's peak RSS in KiB.
pub fn drain_queue_rss(config: &Path, spool: &Path) -> (Duration, i64) {
    let (took, rusage) = drain_queue_usage(config, spool);
    (took, rusage.ru_maxrss)
}

/// CPU seconds of a `timeval`.
pub fn seconds(t: libc::timeval) -> f64 {
    t.tv_sec as f64 + t.tv_usec as f64 / 1e6
}

/// [`drain_queue_rss`] with the run's whole rusage (its system and user
/// time too).
pub fn drain_queue_usage(config: &Path, spool: &Path) -> (Duration, libc::rusage) {
    let sendmail = || {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_spoolmail"));
        cmd.arg("-C").arg(config);
        cmd
    };
    let start = Instant::now();
    #[allow(
        clippy::zombie_processes,
        reason = "reaped with wait4 below, to get its rusage"
    )]
    let child = sendmail()
        .arg("-q")
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("run sendmail");
    let (status, rusage) = wait4(child.id());
    let took = start.elapsed();
    assert!(status.success(), "sendmail -q failed");
    let left = std::fs::read_dir(spool.join("queue"))
        .expect("queue")
        .count();
    if left > 0 {
        panic!(
            "{left} messages left in the queue after the run:\n{}",
            String::from_utf8_lossy(&sendmail().arg("-bp").output().expect("mailq").stdout)
        );
    }
    (took, rusage)
}

/// [`drain_queue_rss`], the time only.
pub fn drain_queue(config: &Path, spool: &Path) -> Duration {
    drain_queue_rss(config, spool).0
}
