//! A large backlog (issue 10, S8): what `mailq` and a queue run with
//! nothing due cost when the next hop is down and the queue holds N
//! deferred messages.
//!
//! Fills a queue of N messages (`BENCH_BACKLOG_N`, default 20000), every
//! one with the state file a deferred message has (next attempt an hour
//! away), on tmpfs when there is one (`/dev/shm`: the fill is setup, and
//! a busy queue's files are in the page cache anyway). Then times, as
//! whole processes: `mailq` and `mailq --json` (time to the first line,
//! total, peak RSS) and `sendmail -q` with nothing due (total, CPU, peak
//! RSS); and compares them with the floor measured in the same run: one
//! process reading every queue and state file once. `BENCH_BACKLOG_OTHER=
//! PATH` runs the same with another spoolmail binary too (an older build,
//! to see what a change did).

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use spoolmail::spool::{DeliveryState, QueueId, RecipientStatus, Spool};

mod common;

/// What one listing cost.
struct Run {
    first_line: Duration,
    total: Duration,
    bytes: usize,
    maxrss_kib: i64,
}

fn main() {
    let n = common::env_number("BENCH_BACKLOG_N").unwrap_or(20_000);
    let parent = match Path::new("/dev/shm").is_dir() {
        true => PathBuf::from("/dev/shm"),
        false => common::bench_base_dir(),
    };
    let dir = tempfile::Builder::new()
        .prefix("spoolmail-bench-backlog")
        .tempdir_in(&parent)
        .expect("bench dir");
    let spool_dir = dir.path().join("spool");
    let fill = Instant::now();
    common::fill_queue(&spool_dir, n, "someone@example.org", &[b'x'; 2048]);
    let spool = Spool::open(&spool_dir).expect("spool");
    for id in spool.queued_ids().expect("ids") {
        deferred_state(&spool, &id);
    }
    println!(
        "backlog: {n} deferred messages in {} (fill, not measured: {:.1} s)",
        parent.display(),
        fill.elapsed().as_secs_f64()
    );
    let config = dir.path().join("spoolmail.conf");
    // The smarthost is a closed port: nothing is due anyway.
    fs::write(
        &config,
        format!("spool = {}\nsmarthost = 127.0.0.1:1\n", spool_dir.display()),
    )
    .expect("config");
    let floor = read_every_file(&spool_dir);
    println!(
        "backlog: floor: read every queue and state file once {:>8.3} s",
        floor.as_secs_f64()
    );
    let ours = PathBuf::from(env!("CARGO_BIN_EXE_spoolmail"));
    let other = std::env::var_os("BENCH_BACKLOG_OTHER").map(PathBuf::from);
    let binaries = [Some(("", ours)), other.map(|o| ("other ", o))];
    for (who, binary) in binaries.into_iter().flatten() {
        for (label, json) in [("mailq", false), ("mailq --json", true)] {
            let run = list(&binary, &config, json);
            let label = format!("{who}{label}");
            println!(
                "backlog: {label:<19} first line {:>8.1} ms, total {:>7.3} s ({:.2}x the floor), {} bytes, peak RSS {} KiB",
                run.first_line.as_secs_f64() * 1000.0,
                run.total.as_secs_f64(),
                run.total.as_secs_f64() / floor.as_secs_f64(),
                run.bytes,
                run.maxrss_kib
            );
        }
        let run = queue_run(&binary, &config);
        println!(
            "backlog: {who}sendmail -q, nothing due: total {:>7.3} s ({:.2}x the floor), CPU {:.3} s, peak RSS {} KiB",
            run.total.as_secs_f64(),
            run.total.as_secs_f64() / floor.as_secs_f64(),
            run.cpu.as_secs_f64(),
            run.maxrss_kib
        );
        assert_eq!(
            spool.queued_ids().expect("ids").len(),
            n,
            "nothing was due: the queue is as it was"
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

/// A deferred recipient's state, as a runner leaves it.
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
