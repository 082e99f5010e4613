//! Local delivery benchmark: `sendmail -q` draining N queued messages for
//! the user running it into their mbox (then, second run, their Maildir),
//! against floors measured in the same run on the same disk: N bare
//! appends of the same message to one file, each followed by fdatasync
//! (the least a durable mbox delivery must do), the same plus the unlink
//! and directory fsync that taking a message off a durable queue costs,
//! and N bare
//! write+fsync+rename of a new file plus an fsync of its directory (the least a Maildir delivery must
//! do).
//!
//! `BENCH_LOCAL_N` (default 2000; 100 when run by `cargo test
//! --all-targets`) sets the size. Figures are printed, never asserted;
//! correctness (every message in the mailbox, the queue empty) is.

mod common;

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{bench_base_dir, drain_queue, env_number, fill_queue};

const DEFAULT_N: usize = 2000;
const TEST_MODE_N: usize = 100;

fn main() {
    let n = env_number("BENCH_LOCAL_N").unwrap_or_else(|| {
        if std::env::args().any(|a| a == "--bench") {
            DEFAULT_N
        } else {
            TEST_MODE_N
        }
    });
    let user = spoolmail::local::User::by_uid(nix::unistd::geteuid().as_raw())
        .expect("a password entry for the user running the benchmark");
    let base = bench_base_dir();
    fs::create_dir_all(&base).expect("bench dir");
    let work = tempfile::Builder::new()
        .prefix("local-")
        .tempdir_in(&base)
        .expect("tempdir");
    let message = message();
    println!(
        "local: {n} messages of {} bytes to {}'s mailbox",
        message.len(),
        user.name
    );

    let append_floor = floor_append(&work.path().join("floor.mbox"), &message, n);
    let queued_floor = floor_queued_append(&work.path().join("floor-queue"), &message, n);
    let maildir_floor = floor_maildir(&work.path().join("floor-maildir"), &message, n);
    let mbox = drain(work.path(), "mbox", &user.name, &message, n);
    let maildir = drain(work.path(), "maildir", &user.name, &message, n);

    let mbox_file = work.path().join("mbox/mail").join(&user.name);
    let text = fs::read(&mbox_file).expect("the mailbox");
    let count = text
        .split(|&b| b == b'\n')
        .filter(|l| l.starts_with(b"From sender@bench.test "))
        .count();
    assert_eq!(count, n, "every message in the mbox, once");
    let new = work
        .path()
        .join("maildir/maildirs")
        .join(&user.name)
        .join("new");
    assert_eq!(
        fs::read_dir(new).expect("new/").count(),
        n,
        "every message in new/"
    );

    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    let line = |label: &str, d: Duration| {
        println!(
            "local: {label:<44} {:>8.0} msg/s ({:.2} s)",
            rate(d),
            d.as_secs_f64()
        )
    };
    line("floor: append + fdatasync", append_floor);
    line(
        "floor: that + unlink a queue file + fsync dir",
        queued_floor,
    );
    line("spoolmail -q into the mbox", mbox);
    line("floor: write + fsync + rename + fsync dir", maildir_floor);
    line("spoolmail -q into the Maildir", maildir);
    println!(
        "local: mbox ratio to its floors: {:.2} (append only), {:.2} (with the queue's removal)",
        rate(mbox) / rate(append_floor),
        rate(mbox) / rate(queued_floor)
    );
    println!(
        "local: Maildir ratio to its floor: {:.2}",
        rate(maildir) / rate(maildir_floor)
    );
}

/// Fills a queue for `user` and times `sendmail -q` delivering it with
/// `mailbox = FORMAT`.
fn drain(dir: &Path, format: &str, user: &str, message: &[u8], n: usize) -> Duration {
    let world = dir.join(format);
    fs::create_dir_all(world.join("mail")).expect("mail dir");
    let spool = world.join("spool");
    fill_queue(&spool, n, user, message);
    let config = world.join("spoolmail.conf");
    fs::write(
        &config,
        format!(
            "spool = {}\nhostname = mta.bench.example\nmail_spool_dir = {}\nmailbox = {format}\n\
             maildir = {}/maildirs/%u/\nforward_path = {}/forward/%u\naliases = {}/aliases\n",
            spool.display(),
            world.join("mail").display(),
            world.display(),
            world.display(),
            world.display()
        ),
    )
    .expect("config");
    drain_queue(&config, &spool)
}

fn floor_append(path: &Path, message: &[u8], n: usize) -> Duration {
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("floor file");
    let start = Instant::now();
    for _ in 0..n {
        file.write_all(message).expect("append");
        file.sync_data().expect("fdatasync");
    }
    start.elapsed()
}

/// The append floor plus what taking a message off a durable queue costs
/// at least: unlinking its file and fsyncing the directory.
fn floor_queued_append(dir: &Path, message: &[u8], n: usize) -> Duration {
    let queue = dir.join("queue");
    fs::create_dir_all(&queue).expect("queue dir");
    for i in 0..n {
        fs::write(queue.join(i.to_string()), message).expect("queue file");
    }
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("mbox"))
        .expect("floor file");
    let queue_dir = fs::File::open(&queue).expect("open queue dir");
    let start = Instant::now();
    for i in 0..n {
        file.write_all(message).expect("append");
        file.sync_data().expect("fdatasync");
        fs::remove_file(queue.join(i.to_string())).expect("unlink");
        queue_dir.sync_all().expect("fsync queue dir");
    }
    start.elapsed()
}

fn floor_maildir(dir: &Path, message: &[u8], n: usize) -> Duration {
    fs::create_dir_all(dir.join("tmp")).expect("tmp");
    fs::create_dir_all(dir.join("new")).expect("new");
    let start = Instant::now();
    for i in 0..n {
        let tmp = dir.join("tmp").join(i.to_string());
        let mut f = fs::File::create(&tmp).expect("create");
        f.write_all(message).expect("write");
        f.sync_all().expect("fsync");
        fs::rename(&tmp, dir.join("new").join(i.to_string())).expect("rename");
        fs::File::open(dir.join("new"))
            .and_then(|d| d.sync_all())
            .expect("fsync new/");
    }
    start.elapsed()
}

/// A typical cron report: a few headers and 2 KB of text.
fn message() -> Vec<u8> {
    let mut m =
        b"From: root (Cron Daemon)\nTo: root\nSubject: Cron <root@host> run-parts\n\n".to_vec();
    let line = b"run-parts: /etc/cron.daily/logrotate exited with return code 0\n";
    while m.len() < 2048 {
        m.extend_from_slice(line);
    }
    m
}
