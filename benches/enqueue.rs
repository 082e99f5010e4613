//! Enqueue benchmark: the cost of one `spoolmail -odq` process per message,
//! against the physical floor measured in the same run on the same disk.
//!
//! The floor is this very binary re-executed with `SPOOLMAIL_BENCH_FLOOR`
//! set: a separate process per message that reads stdin and does exactly the
//! durable-write sequence (create O_EXCL in `tmp/`, write, fsync, rename into
//! `queue/`, fsync `queue/`) and nothing else. Both sides are spawned, fed
//! and reaped the same way, in alternating batches so that noise (other
//! processes, writeback, thermal) lands on both.
//!
//! It deliberately does not link the spoolmail library: it measures the
//! installed face, process start-up included, as a caller would see it.
//!
//! Run with `cargo bench --bench enqueue`; `BENCH_N` sets the number of
//! messages per side (default 300; 10 when run as a smoke test by
//! `cargo test --all-targets`, which does not pass `--bench`). Targets are
//! printed as PASS/MISS and never asserted: machines are noisy. Correctness (every child exits 0, every
//! message lands in `queue/`) is asserted.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{self, Command, Stdio};

// Only what does not link the spoolmail library: the floor is this
// binary re-executed, and a floor carrying the library's relocated tables
// (190 page faults at start, against 62 without) is no floor. What the
// library's parts cost on the submission path is measured by
// `cargo bench --bench submission` instead.
#[path = "common/wait.rs"]
mod common;
#[path = "common/message.rs"]
mod message;
use message::{MESSAGE_SIZE, message};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Environment variable that turns this binary into the floor program; its
/// value is the floor spool directory.
const FLOOR_ENV: &str = "SPOOLMAIL_BENCH_FLOOR";
/// Messages per side unless `BENCH_N` says otherwise.
const DEFAULT_N: usize = 300;
/// Messages per side in test mode: a smoke run that checks correctness.
const TEST_MODE_N: usize = 10;
/// Consecutive runs of one side before switching to the other.
const BATCH: usize = 10;
/// Unmeasured runs per side before measuring (page cache, binary loading).
const WARMUP: usize = 2;
/// Target: spoolmail median (and mean) at most this many times the floor
/// (issue 25).
const TARGET_RATIO: f64 = 1.4;
/// Target: page faults (minor and major) of one spoolmail enqueue
/// process, median (issue 25).
const TARGET_FAULTS: i64 = 120;
/// Target: peak RSS of any spoolmail enqueue process, in KiB.
const TARGET_RSS_KIB: i64 = 4096;

fn main() {
    // Checked first, before anything else runs: the floor must stay minimal.
    if let Some(dir) = std::env::var_os(FLOOR_ENV) {
        floor(Path::new(&dir));
    }

    let n = match std::env::var("BENCH_N") {
        Ok(v) => v
            .parse::<usize>()
            .ok()
            .filter(|&n| n > 0)
            .unwrap_or_else(|| panic!("BENCH_N={v:?} is not a positive integer")),
        // `cargo bench` passes --bench; `cargo test --all-targets` does not.
        Err(_) if std::env::args().any(|a| a == "--bench") => DEFAULT_N,
        Err(_) => TEST_MODE_N,
    };

    let base = bench_base_dir();
    fs::create_dir_all(&base).unwrap_or_else(|e| panic!("create {}: {e}", base.display()));
    let work = tempfile::Builder::new()
        .prefix("enqueue-")
        .tempdir_in(&base)
        .unwrap_or_else(|e| panic!("tempdir in {}: {e}", base.display()));

    let floor_spool = work.path().join("floor");
    for sub in ["tmp", "queue"] {
        fs::create_dir_all(floor_spool.join(sub)).expect("create floor spool");
    }
    // spoolmail creates its own spool (tmp/ queue/ state/ hosts/ corrupt/).
    let spool = work.path().join("spoolmail");
    let config = work.path().join("spoolmail.conf");
    fs::write(
        &config,
        format!("spool = {}\nhostname = bench.example\n", spool.display()),
    )
    .expect("write config");

    let floor_cmd = Side {
        program: std::env::current_exe().expect("current_exe").into(),
        args: Vec::new(),
        env: Some((FLOOR_ENV.into(), floor_spool.clone().into())),
    };
    let spoolmail_cmd = Side {
        program: env!("CARGO_BIN_EXE_spoolmail").into(),
        args: vec![
            "-C".into(),
            config.clone().into(),
            "-odq".into(),
            "-i".into(),
            "recipient@example.com".into(),
        ],
        env: None,
    };

    for i in 0..WARMUP {
        let msg = message(usize::MAX - i);
        floor_cmd.run(&msg);
        spoolmail_cmd.run(&msg);
    }

    let mut floor_samples = Vec::with_capacity(n);
    let mut spoolmail_samples = Vec::with_capacity(n);
    let mut next = 0;
    let mut round = 0;
    while next < n {
        let end = (next + BATCH).min(n);
        // Alternate which side opens the round, so neither always follows
        // the other's writeback.
        let order: [(&Side, &mut Vec<Sample>); 2] = if round % 2 == 0 {
            [
                (&floor_cmd, &mut floor_samples),
                (&spoolmail_cmd, &mut spoolmail_samples),
            ]
        } else {
            [
                (&spoolmail_cmd, &mut spoolmail_samples),
                (&floor_cmd, &mut floor_samples),
            ]
        };
        for (side, samples) in order {
            for i in next..end {
                samples.push(side.run(&message(i)));
            }
        }
        next = end;
        round += 1;
    }

    let expected = n + WARMUP;
    assert_queue_count(&floor_spool.join("queue"), expected, "floor");
    assert_queue_count(&spool.join("queue"), expected, "spoolmail");

    let floor_stats = Stats::of(&floor_samples);
    let spoolmail_stats = Stats::of(&spoolmail_samples);
    report(n, &base, &floor_stats, &spoolmail_stats);
}

/// The floor program: stdin to `dir/queue/NAME` durably, then exit 0.
/// Any failure exits 75 (EX_TEMPFAIL) with a message on stderr.
fn floor(dir: &Path) -> ! {
    fn run(dir: &Path) -> std::io::Result<()> {
        let mut msg = Vec::with_capacity(MESSAGE_SIZE);
        std::io::stdin().lock().read_to_end(&mut msg)?;
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let name = format!("{nanos}.{}", process::id());
        let tmp = dir.join("tmp").join(&name);
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o640)
            .open(&tmp)?;
        f.write_all(&msg)?;
        f.sync_all()?;
        drop(f);
        let queue = dir.join("queue");
        fs::rename(&tmp, queue.join(&name))?;
        File::open(&queue)?.sync_all()?;
        Ok(())
    }
    match run(dir) {
        Ok(()) => process::exit(0),
        Err(e) => {
            eprintln!("bench floor: {}: {e}", dir.display());
            process::exit(75)
        }
    }
}

/// Where the spools live: Cargo's per-target scratch directory for benches,
/// else `target/` (both on the build tree's filesystem).
fn bench_base_dir() -> PathBuf {
    match option_env!("CARGO_TARGET_TMPDIR") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"),
    }
}

/// One side of the comparison: how to start one enqueue process.
struct Side {
    program: OsString,
    args: Vec<OsString>,
    env: Option<(OsString, OsString)>,
}

/// One measured enqueue: wall time from spawn to reap, and peak RSS.
#[derive(Clone, Copy)]
struct Sample {
    wall: Duration,
    maxrss_kib: i64,
    /// Page faults, minor and major (from the child's rusage).
    faults: i64,
}

impl Side {
    /// Spawns one process, feeds it `msg` on stdin, reaps it with wait4 and
    /// returns its cost; panics with its stderr unless it exited 0.
    fn run(&self, msg: &[u8]) -> Sample {
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some((k, v)) = &self.env {
            cmd.env(k, v);
        }

        let start = Instant::now();
        #[expect(
            clippy::zombie_processes,
            reason = "reaped with wait4 below, to get its rusage"
        )]
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {:?}: {e}", self.program));
        {
            let mut stdin = child.stdin.take().expect("piped stdin");
            if let Err(e) = stdin.write_all(msg) {
                // A child that exits early closes its stdin; its exit status
                // and stderr (below) say why.
                eprintln!("writing to {:?}: {e}", self.program);
            }
        } // stdin closed here: end of message.
        // Drain stderr before reaping so a chatty child cannot block on a
        // full pipe; it hits EOF when the child exits.
        let mut stderr = Vec::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_end(&mut stderr);
        }
        let (status, rusage) = common::wait4(child.id());
        let wall = start.elapsed();

        if !status.success() {
            panic!(
                "{:?} {:?} failed ({status}); stderr:\n{}",
                self.program,
                self.args,
                String::from_utf8_lossy(&stderr)
            );
        }
        Sample {
            wall,
            maxrss_kib: rusage.ru_maxrss,
            faults: rusage.ru_minflt + rusage.ru_majflt,
        }
    }
}

/// Panics unless `queue` holds exactly `expected` entries.
fn assert_queue_count(queue: &Path, expected: usize, side: &str) {
    let count = fs::read_dir(queue)
        .unwrap_or_else(|e| panic!("{side}: read {}: {e}", queue.display()))
        .count();
    assert_eq!(
        count,
        expected,
        "{side}: {} holds {count} files, expected {expected}",
        queue.display()
    );
}

/// Summary of one side's samples.
struct Stats {
    mean: Duration,
    median: Duration,
    p95: Duration,
    rss_max: i64,
    rss_median: i64,
    faults_median: i64,
}

impl Stats {
    /// Computes the summary; `samples` must not be empty.
    fn of(samples: &[Sample]) -> Stats {
        let mut walls: Vec<Duration> = samples.iter().map(|s| s.wall).collect();
        walls.sort();
        let mut rss: Vec<i64> = samples.iter().map(|s| s.maxrss_kib).collect();
        rss.sort();
        let total: Duration = walls.iter().sum();
        let mut faults: Vec<i64> = samples.iter().map(|s| s.faults).collect();
        faults.sort();
        Stats {
            mean: total / u32::try_from(walls.len()).expect("sample count fits u32"),
            median: walls[walls.len() / 2],
            p95: walls[percentile_index(walls.len(), 95)],
            rss_max: *rss.last().expect("samples"),
            rss_median: rss[rss.len() / 2],
            faults_median: faults[faults.len() / 2],
        }
    }
}

/// Nearest-rank index of the `p`th percentile in a sorted slice of `len`.
fn percentile_index(len: usize, p: usize) -> usize {
    (len * p).div_ceil(100).clamp(1, len) - 1
}

/// Prints the comparison table and the PASS/MISS lines.
fn report(n: usize, base: &Path, floor: &Stats, spoolmail: &Stats) {
    fn ms(d: Duration) -> String {
        format!("{:.3} ms", d.as_secs_f64() * 1e3)
    }
    fn row(label: &str, s: &Stats) {
        println!(
            "{label:<38}{:>11}{:>11}{:>11}   {} / {} KiB   {}",
            ms(s.mean),
            ms(s.median),
            ms(s.p95),
            s.rss_max,
            s.rss_median,
            s.faults_median
        );
    }
    fn verdict(ok: bool) -> &'static str {
        if ok { "PASS" } else { "MISS" }
    }

    let ratio_median = spoolmail.median.as_secs_f64() / floor.median.as_secs_f64();
    let ratio_mean = spoolmail.mean.as_secs_f64() / floor.mean.as_secs_f64();
    println!();
    println!(
        "enqueue benchmark: N={n} messages of {MESSAGE_SIZE} bytes, same disk ({})",
        base.display()
    );
    println!(
        "{:<38}{:>11}{:>11}{:>11}   peak RSS max/median   page faults (median)",
        "", "mean", "median", "p95"
    );
    row("floor (write+fsync+rename+fsync dir)", floor);
    row("spoolmail -odq", spoolmail);
    let ratio = format!("ratio spoolmail/floor: median {ratio_median:.2}x, mean {ratio_mean:.2}x");
    println!(
        "{ratio:<50}target <= {TARGET_RATIO}x: {}",
        verdict(ratio_median <= TARGET_RATIO && ratio_mean <= TARGET_RATIO)
    );
    let faults = format!(
        "page faults spoolmail: {} (floor {}, {:.2}x)",
        spoolmail.faults_median,
        floor.faults_median,
        spoolmail.faults_median as f64 / floor.faults_median.max(1) as f64
    );
    println!(
        "{faults:<50}target <= {TARGET_FAULTS}: {}",
        verdict(spoolmail.faults_median <= TARGET_FAULTS)
    );
    let rss = format!("peak RSS spoolmail: {} KiB", spoolmail.rss_max);
    println!(
        "{rss:<50}target <= {TARGET_RSS_KIB} KiB: {}",
        verdict(spoolmail.rss_max <= TARGET_RSS_KIB)
    );
    // Linux carries the parent's memory high-water mark into a child's
    // ru_maxrss across exec (fork or vfork alike): no child reads below this.
    println!(
        "(a child's peak RSS is never reported below its parent's: bench process {} KiB)",
        self_hwm_kib()
    );
}

/// Peak RSS of this process's own memory since exec (VmHWM), in KiB, or
/// -1 when unknown. Not getrusage(RUSAGE_SELF): that one also carries the
/// high-water mark inherited from whoever exec'd us (cargo, ~40 MB).
fn self_hwm_kib() -> i64 {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(-1)
}
