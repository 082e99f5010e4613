//! What the spoolmail library's optional parts cost, set beside the
//! enqueue they would add to: the per-user hourly limits' check and count
//! (on the submission path when configured), and DKIM signing (never on
//! it: the runner signs). The median enqueue they are compared with is
//! measured here, on the same disk: `sendmail -odq` processes, as in
//! `cargo bench --bench enqueue` (which must not link the library; see
//! there).
//!
//! Run with `cargo bench --bench submission`; `BENCH_N` sets the number
//! of enqueues and of rounds of each measurement (default 60; 5 when run
//! as a smoke test by `cargo test --all-targets`). Targets are printed,
//! never asserted.

mod common;
#[path = "common/message.rs"]
mod message;

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{bench_base_dir, env_number};
use message::{MESSAGE_SIZE, message};

const DEFAULT_N: usize = 60;
const TEST_MODE_N: usize = 5;
/// Unmeasured enqueues first (page cache, binary loading).
const WARMUP: usize = 2;

fn main() {
    let n = env_number("BENCH_N").unwrap_or_else(|| {
        if std::env::args().any(|a| a == "--bench") {
            DEFAULT_N
        } else {
            TEST_MODE_N
        }
    });
    let base = bench_base_dir();
    std::fs::create_dir_all(&base).expect("bench dir");
    let work = tempfile::Builder::new()
        .prefix("submission-")
        .tempdir_in(&base)
        .expect("tempdir");
    let spool = work.path().join("spool");
    let config = work.path().join("spoolmail.conf");
    std::fs::write(
        &config,
        format!("spool = {}\nhostname = bench.example\n", spool.display()),
    )
    .expect("write config");
    let enqueue = median_enqueue(&config, n);
    println!(
        "submission: median enqueue {:.3} ms ({n} `sendmail -odq` of {MESSAGE_SIZE} bytes)",
        enqueue.as_secs_f64() * 1e3
    );
    rate_limit_cost(&spool, n, enqueue);
    dkim_signing_cost(work.path(), n, enqueue);
}

/// The median wall time of `n` `sendmail -odq` processes, each spawned,
/// fed one message and reaped.
fn median_enqueue(config: &Path, n: usize) -> Duration {
    let mut walls: Vec<Duration> = (0..n + WARMUP)
        .map(|i| {
            let start = Instant::now();
            let mut child = Command::new(env!("CARGO_BIN_EXE_spoolmail"))
                .arg("-C")
                .arg(config)
                .args(["-odq", "-i", "recipient@example.com"])
                .stdin(Stdio::piped())
                .spawn()
                .expect("spawn spoolmail");
            child
                .stdin
                .take()
                .expect("piped stdin")
                .write_all(&message(i))
                .expect("feed the message");
            let status = child.wait().expect("wait");
            assert!(status.success(), "sendmail -odq: {status}");
            start.elapsed()
        })
        .skip(WARMUP)
        .collect();
    walls.sort();
    walls[walls.len() / 2]
}

/// What DKIM signing (issue 26) costs, and where: a submission never
/// signs (the runner does, where the bytes are final), so a `dkim` line
/// adds nothing to the enqueue above; this is the runner's cost per 2 KB
/// message, both passes (header, then the whole message through the
/// canonicaliser and the hash) and the signature, for each algorithm.
fn dkim_signing_cost(work: &Path, n: usize, enqueue: Duration) {
    use spoolmail::runner::dkim::{MessageSigner, for_message, generate};
    use spoolmail::smtp::SentFormSigner;
    for (name, ed25519) in [("Ed25519-SHA256", true), ("RSA-SHA256 2048", false)] {
        let key = work.join(format!("bench.{name}.key").replace(' ', "-"));
        let algorithm = if ed25519 {
            "ed25519-sha256"
        } else {
            "rsa-sha256"
        };
        let line = format!(
            "bench.example selector=s1 key={} algorithm={algorithm}",
            key.display()
        );
        let config = spoolmail::config::Config {
            dkim: vec![spoolmail::config::dkim::parse(&line).expect("dkim line")],
            ..spoolmail::config::Config::default()
        };
        generate(&config, "bench.example", "s1", ed25519).expect("--dkim-keygen");
        let msg = message(0);
        let signer = for_message(&config, "bench", &mut &msg[..])
            .expect("key")
            .expect("a dkim line covers the From: domain");
        let open = || -> std::io::Result<Box<dyn Read>> {
            Ok(Box::new(std::io::Cursor::new(msg.clone())))
        };
        let signing = MessageSigner {
            signer: &signer,
            open: &open,
        };
        let rounds = n.max(10);
        let start = Instant::now();
        for _ in 0..rounds {
            signing
                .signature(&mut |src, out| spoolmail::smtp::sent_form(src, None, out))
                .expect("signed");
        }
        let each = start.elapsed() / rounds as u32;
        println!(
            "DKIM {name}: {:.3} ms per {MESSAGE_SIZE}-byte message, in the runner (never on the caller's path; the median enqueue is {:.3} ms); Ed25519 target < 0.5 ms",
            each.as_secs_f64() * 1e3,
            enqueue.as_secs_f64() * 1e3
        );
    }
}

/// What the per-user hourly limits add to one submission when they are
/// on (`max_messages_per_hour`, `max_recipients_per_hour`): the check and
/// count made just before the commit, for an ordinary user (root is
/// never counted, and this benchmark's `sendmail` runs as its caller),
/// measured here on the same disk and set beside the median enqueue.
fn rate_limit_cost(spool: &Path, n: usize, enqueue: Duration) {
    let counters = spoolmail::spool::SubmissionCounters::of_spool_at(spool);
    let config = spoolmail::config::Config {
        max_messages_per_hour: u64::MAX,
        max_recipients_per_hour: u64::MAX,
        ..spoolmail::config::Config::default()
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let start = std::time::Instant::now();
    for _ in 0..n {
        spoolmail::accept::ratelimit::admit(&config, &counters, 60_000, "bench", 1, now)
            .expect("admitted");
    }
    let each = start.elapsed() / n as u32;
    println!(
        "rate limit check and count (both limits on): {:.1} us per submission, {:.2}% of the median enqueue ({:.3} ms); target < 5%",
        each.as_secs_f64() * 1e6,
        100.0 * each.as_secs_f64() / enqueue.as_secs_f64(),
        enqueue.as_secs_f64() * 1000.0
    );
}
