//! A large backlog (issue 10, S8): what `mailq` and a queue run with
//! nothing due cost when the next hop is down and the queue holds N
//! deferred messages.
//!
//! For each N of `BENCH_BACKLOG_N` (comma-separated, default 1000,10000)
//! fills a queue of N messages, every one with the state file and the
//! schedule entry a deferred message has (next attempt an hour away), on
//! tmpfs when there is one (`/dev/shm`: the fill is setup, and a busy
//! queue's files are in the page cache anyway). Then measures, as whole
//! processes:
//! - one plain `sendmail` call (a runner forked, as PHP's `mail()` does):
//!   CPU of the caller and its runner per submission, beside the same on
//!   an empty queue;
//! - `mailq` and `mailq --json`: time to the first line, total, peak RSS;
//! - `sendmail -q` with nothing due: total, CPU, peak RSS;
//!
//! and compares them with the floor measured in the same run: one process
//! reading the directories and every queue and state file once. Then a
//! queue run of N due messages for a smarthost that accepts and hangs
//! up: connections made, fsyncs (strace -c); and `mailq` over what that
//! leaves (every recipient untried, waiting on the unreachable cache)
//! against that queue's floor.
//! `BENCH_BACKLOG_OTHER=PATH` runs the same with another spoolmail binary
//! too (an older build, to see what a change did); `BENCH_BACKLOG_KEEP=1`
//! keeps each backlog (its path is printed) for profiling by hand.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use spoolmail::spool::{DeliveryState, NOW_BUCKET, QueueId, RecipientStatus, Spool, bucket_for};

mod common;
#[path = "../tests/common/hang_up.rs"]
mod hang_up;

/// What one listing cost.
struct Run {
    first_line: Duration,
    total: Duration,
    bytes: usize,
    maxrss_kib: i64,
}

/// Submissions timed per size (caller and the runner it forks).
const SUBMISSIONS: usize = 20;

fn main() {
    let sizes = sizes();
    let parent = match Path::new("/dev/shm").is_dir() {
        true => PathBuf::from("/dev/shm"),
        false => common::bench_base_dir(),
    };
    // The detached runners of the submissions become our children, so
    // that their CPU can be counted.
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    let ours = PathBuf::from(env!("CARGO_BIN_EXE_spoolmail"));
    let other = std::env::var_os("BENCH_BACKLOG_OTHER").map(PathBuf::from);
    let binaries: Vec<(&str, PathBuf)> = [Some(("", ours)), other.map(|o| ("other ", o))]
        .into_iter()
        .flatten()
        .collect();

    let mut baseline = Vec::new();
    for (who, binary) in &binaries {
        let empty = Backlog::fill(&parent, 0);
        let cpu = submissions(binary, &empty);
        println!(
            "backlog: {who}one plain sendmail, empty queue: CPU {:>7.2} ms per submission (caller + runner)",
            cpu.as_secs_f64() * 1000.0
        );
        baseline.push(cpu);
    }
    for n in sizes {
        let backlog = Backlog::fill(&parent, n);
        let floor = (0..ROUNDS)
            .map(|_| read_every_file(&backlog.spool_dir))
            .min()
            .expect("rounds");
        println!(
            "backlog: N={n}: floor: readdir and read every queue and state file once {:>8.3} s (best of {ROUNDS})",
            floor.as_secs_f64()
        );
        for ((who, binary), base) in binaries.iter().zip(&baseline) {
            let cpu = submissions(binary, &backlog);
            println!(
                "backlog: N={n}: {who}one plain sendmail: CPU {:>7.2} ms per submission ({:.2}x the empty queue)",
                cpu.as_secs_f64() * 1000.0,
                cpu.as_secs_f64() / base.as_secs_f64()
            );
            listings(&format!("N={n}: {who}"), binary, &backlog.config, floor);
            // Twice: the first run of an hour also sweeps state/ for
            // leftovers (it lists state/ and queue/); the others do not.
            for which in ["first", "next"] {
                let run = queue_run(binary, &backlog.config);
                println!(
                    "backlog: N={n}: {who}sendmail -q, nothing due ({which} run): total {:>7.3} s ({:.2}x the floor), CPU {:.3} s, peak RSS {} KiB",
                    run.total.as_secs_f64(),
                    run.total.as_secs_f64() / floor.as_secs_f64(),
                    run.cpu.as_secs_f64(),
                    run.maxrss_kib
                );
            }
        }
        let spool = Spool::open(&backlog.spool_dir).expect("spool");
        assert!(
            spool.queued_ids().expect("ids").len() >= n,
            "nothing was due: the backlog is still queued"
        );
        drop(backlog);
        for (who, binary) in &binaries {
            unreachable(who, binary, &parent, n);
        }
    }
}

/// `mailq` and `mailq --json` over a backlog, each against `floor` (the
/// same backlog's files read once).
fn listings(what: &str, binary: &Path, config: &Path, floor: Duration) {
    for (label, json) in [("mailq", false), ("mailq --json", true)] {
        let run = (0..ROUNDS)
            .map(|_| list(binary, config, json))
            .min_by_key(|run| run.total)
            .expect("rounds");
        println!(
            "backlog: {what}{label:<13} first line {:>8.1} ms ({:.1}% of the run), total {:>7.3} s ({:.2}x the floor; best of {ROUNDS}; target <= {MAILQ_TARGET}x), {} bytes, peak RSS {} KiB",
            run.first_line.as_secs_f64() * 1000.0,
            100.0 * run.first_line.as_secs_f64() / run.total.as_secs_f64(),
            run.total.as_secs_f64(),
            run.total.as_secs_f64() / floor.as_secs_f64(),
            run.bytes,
            run.maxrss_kib
        );
    }
}

/// Issue 25's target for a listing: at most this many times the floor.
const MAILQ_TARGET: f64 = 1.3;

/// The floor and each listing are measured this many times and the
/// fastest run kept: on a shared machine the noise only ever adds.
const ROUNDS: usize = 3;

/// The sizes to measure: `BENCH_BACKLOG_N`, comma-separated (default
/// 1000,10000; docs/testing.md's figures add 100000).
fn sizes() -> Vec<usize> {
    let text = std::env::var("BENCH_BACKLOG_N").unwrap_or_else(|_| "1000,10000".into());
    text.split(',')
        .map(|n| {
            n.trim()
                .parse()
                .unwrap_or_else(|_| panic!("BENCH_BACKLOG_N={text:?}: not a list of sizes"))
        })
        .collect()
}

/// A queue of N deferred messages, each with the state and the schedule
/// entry a runner leaves after a deferral (next attempt an hour away),
/// and a config whose smarthost refuses at once.
struct Backlog {
    _dir: tempfile::TempDir,
    spool_dir: PathBuf,
    config: PathBuf,
}

impl Backlog {
    fn fill(parent: &Path, n: usize) -> Backlog {
        let dir = tempfile::Builder::new()
            .prefix("spoolmail-bench-backlog")
            .tempdir_in(parent)
            .expect("bench dir");
        let spool_dir = dir.path().join("spool");
        let fill = Instant::now();
        // Through the spool library: the same commit and state code the
        // binary runs.
        common::fill_queue(&spool_dir, n, "someone@example.org", &[b'x'; 2048]);
        let spool = Spool::open(&spool_dir).expect("spool");
        for id in spool.queued_ids().expect("ids") {
            deferred_state(&spool, &id);
        }
        if n > 0 {
            println!(
                "backlog: N={n}: {n} deferred messages in {} (fill, not measured: {:.1} s)",
                parent.display(),
                fill.elapsed().as_secs_f64()
            );
        }
        let config = dir.path().join("spoolmail.conf");
        fs::write(
            &config,
            format!(
                "spool = {}\nsmarthost = 127.0.0.1:1\nsmarthost_tls = none\nretry_min = 1h\n",
                spool_dir.display()
            ),
        )
        .expect("config");
        let dir = match std::env::var_os("BENCH_BACKLOG_KEEP") {
            // Kept for profiling by hand (its config is spoolmail.conf).
            Some(_) if n > 0 => {
                let kept = dir.keep();
                println!("backlog: N={n}: kept in {}", kept.display());
                tempfile::TempDir::new_in(&kept).expect("placeholder")
            }
            _ => dir,
        };
        Backlog {
            _dir: dir,
            spool_dir,
            config,
        }
    }
}

/// CPU per plain `sendmail` call (the default: a runner forked for the
/// message), counting the caller and its runner, over [`SUBMISSIONS`]
/// calls. The smarthost refuses: the first call's runner tries it, the
/// others find it in the unreachable cache.
fn submissions(binary: &Path, backlog: &Backlog) -> Duration {
    let mut cpu = Duration::ZERO;
    for _ in 0..SUBMISSIONS {
        #[allow(
            clippy::zombie_processes,
            reason = "reaped with wait4 below, to get its rusage"
        )]
        let mut child = Command::new(binary)
            .arg("-C")
            .arg(&backlog.config)
            .args(["-f", "php@example.org", "someone@example.org"])
            .stdin(Stdio::piped())
            .spawn()
            .expect("sendmail");
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().expect("stdin");
            stdin
                .write_all(b"Subject: a submission\n\nhello\n")
                .expect("feed sendmail");
        }
        let (status, rusage) = common::wait4(child.id());
        assert!(status.success(), "sendmail failed");
        cpu += rusage_cpu(&rusage);
        // The runner it forked: reparented to us (a subreaper).
        while let Some(rusage) = reap_any() {
            cpu += rusage_cpu(&rusage);
        }
    }
    cpu / SUBMISSIONS as u32
}

/// Waits for any child; None when there is none left.
fn reap_any() -> Option<libc::rusage> {
    let mut status: libc::c_int = 0;
    // SAFETY: rusage is plain old data; all-zero is a valid value.
    let mut rusage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: both pointers are valid for the call.
        let r = unsafe { libc::wait4(-1, &mut status, 0, &mut rusage) };
        if r > 0 {
            return Some(rusage);
        }
        if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return None;
        }
    }
}

fn rusage_cpu(rusage: &libc::rusage) -> Duration {
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    time(rusage.ru_utime) + time(rusage.ru_stime)
}

/// N messages due for a smarthost that accepts and hangs up at once: a
/// queue run's connections and fsyncs (counted by `strace -c`).
fn unreachable(who: &str, binary: &Path, parent: &Path, n: usize) {
    if Command::new("strace").arg("-V").output().is_err() {
        println!("backlog: N={n}: unreachable smarthost: skipped (no strace)");
        return;
    }
    let (port, accepted) = hang_up::hang_up_listener();
    let dir = tempfile::Builder::new()
        .prefix("spoolmail-bench-unreachable")
        .tempdir_in(parent)
        .expect("bench dir");
    let spool_dir = dir.path().join("spool");
    common::fill_queue(&spool_dir, n, "someone@example.org", &[b'x'; 2048]);
    let config = dir.path().join("spoolmail.conf");
    fs::write(
        &config,
        format!(
            "spool = {}\nsmarthost = 127.0.0.1:{port}\nsmarthost_tls = none\nretry_min = 1h\n",
            spool_dir.display()
        ),
    )
    .expect("config");
    let summary = dir.path().join("strace");
    let start = Instant::now();
    let out = Command::new("strace")
        // Only the traced calls stop the process (seccomp): the run
        // keeps its speed at a hundred thousand messages.
        .args([
            "-f",
            "--seccomp-bpf",
            "-c",
            "-e",
            "trace=fsync,fdatasync,syncfs",
            "-o",
        ])
        .arg(&summary)
        .arg(binary)
        .arg("-C")
        .arg(&config)
        .arg("-q")
        .output()
        .expect("strace");
    let took = start.elapsed();
    assert!(out.status.success(), "sendmail -q failed");
    // strace -c: "% time seconds usecs/call calls errors syscall".
    let syncs: usize = fs::read_to_string(&summary)
        .expect("strace summary")
        .lines()
        .filter(|l| l.trim_end().ends_with("sync") || l.contains("fdatasync"))
        .filter_map(|l| l.split_whitespace().nth(3)?.parse::<usize>().ok())
        .sum();
    let spool = Spool::open(&spool_dir).expect("spool");
    assert_eq!(
        spool.queued_ids().expect("ids").len(),
        n,
        "all still queued"
    );
    println!(
        "backlog: N={n}: {who}unreachable smarthost, sendmail -q: {} connection(s), {syncs} fsyncs ({:.2} per 100 deferred), {:.3} s under strace",
        accepted.count(),
        100.0 * syncs as f64 / n as f64,
        took.as_secs_f64()
    );
    // What the queue looks like to an administrator now: every recipient
    // waiting on the smarthost in the unreachable cache, untried.
    let floor = (0..ROUNDS)
        .map(|_| read_every_file(&spool_dir))
        .min()
        .expect("rounds");
    println!(
        "backlog: N={n}: {who}unreachable smarthost: floor {:>8.3} s (best of {ROUNDS})",
        floor.as_secs_f64()
    );
    listings(
        &format!("N={n}: {who}unreachable smarthost, "),
        binary,
        &config,
        floor,
    );
    if std::env::var_os("BENCH_BACKLOG_KEEP").is_some() {
        // The smarthost's port is closed by now: a run would find it
        // unreachable again, as the record says.
        println!(
            "backlog: N={n}: unreachable smarthost: kept in {}",
            dir.keep().display()
        );
    }
}

/// What a queue run cost.
struct QueueRun {
    total: Duration,
    cpu: Duration,
    maxrss_kib: i64,
}

/// `sendmail -q` over the backlog, as a whole process.
fn queue_run(binary: &Path, config: &Path) -> QueueRun {
    let start = Instant::now();
    #[allow(
        clippy::zombie_processes,
        reason = "reaped with wait4 below, to get its rusage"
    )]
    let child = Command::new(binary)
        .arg("-C")
        .arg(config)
        .arg("-q")
        .spawn()
        .expect("sendmail -q");
    let (status, rusage) = common::wait4(child.id());
    let total = start.elapsed();
    assert!(status.success(), "sendmail -q failed");
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    QueueRun {
        total,
        cpu: time(rusage.ru_utime) + time(rusage.ru_stime),
        maxrss_kib: rusage.ru_maxrss,
    }
}

/// A deferred recipient's state and schedule entry, as a runner leaves
/// them.
fn deferred_state(spool: &Spool, id: &QueueId) {
    let envelope = spool.read_envelope(id).expect("envelope");
    let mut state = DeliveryState::initial(&envelope);
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    for r in &mut state.recipients {
        r.status = RecipientStatus::Deferred;
        r.attempts = 3;
        r.last_error = Some("451 4.3.0 the smarthost is down".into());
        r.next_attempt = Some(now + 3600);
    }
    spool.write_state(id, &state).expect("state");
    spool
        .reschedule(id, Some(NOW_BUCKET), bucket_for(now + 3600, now))
        .expect("schedule");
}

/// The floor: every file of queue/ and state/ read once, in this process.
fn read_every_file(spool: &Path) -> Duration {
    let start = Instant::now();
    let mut bytes = 0usize;
    for sub in ["queue", "state"] {
        for entry in fs::read_dir(spool.join(sub)).expect("dir") {
            bytes += fs::read(entry.expect("entry").path()).expect("read").len();
        }
    }
    assert!(bytes > 0);
    start.elapsed()
}

/// Runs the listing, reading its output as it comes.
fn list(binary: &Path, config: &Path, json: bool) -> Run {
    let start = Instant::now();
    let mut cmd = Command::new(binary);
    cmd.arg("-C").arg(config).arg("-bp");
    if json {
        cmd.arg("--json");
    }
    #[allow(
        clippy::zombie_processes,
        reason = "reaped with wait4 below, to get its rusage"
    )]
    let mut child = cmd.stdout(Stdio::piped()).spawn().expect("mailq");
    let mut out = child.stdout.take().expect("stdout");
    let mut buf = vec![0u8; 64 * 1024];
    let mut first_line = None;
    let mut bytes = 0;
    loop {
        let got = out.read(&mut buf).expect("read");
        if got == 0 {
            break;
        }
        if first_line.is_none() && buf[..got].contains(&b'\n') {
            first_line = Some(start.elapsed());
        }
        bytes += got;
    }
    let (status, rusage) = common::wait4(child.id());
    let total = start.elapsed();
    assert!(status.success(), "mailq failed");
    Run {
        first_line: first_line.unwrap_or(total),
        total,
        bytes,
        maxrss_kib: rusage.ru_maxrss,
    }
}
