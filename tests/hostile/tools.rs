//! What the attacks of the hostile suite use: a command run to its end
//! or killed at a deadline, a server that never greets, a DNS zone whose
//! MX names never answer, a mailbox its owner keeps locked.

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::{self, dns::DnsServer};
use crate::site::{Account, Site};

/// Runs `cmd` to its end, or kills it after `limit` (a deadline that
/// fails a hung test, not a measure of speed): Some(output) when it
/// ended in time.
pub fn run_within(cmd: &mut Command, limit: Duration) -> Option<Output> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while start.elapsed() < limit {
        if child.try_wait().unwrap().is_some() {
            return Some(child.wait_with_output().unwrap());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// Kills `child` and reaps it.
pub fn stop(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// A listener that accepts connections and never says a word (no
/// greeting); its port and the connections it holds.
pub fn silent_server() -> (u16, Arc<Mutex<Vec<TcpStream>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let held = Arc::new(Mutex::new(Vec::new()));
    let keep = held.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            keep.lock().unwrap().push(conn);
        }
    });
    (port, held)
}

/// A DNS server whose zone `hostile.test` publishes twenty MX names
/// whose queries are never answered.
pub fn never_answering_zone() -> DnsServer {
    let names: Vec<String> = (1..=20).map(|n| format!("m{n:02}.hostile.test")).collect();
    let records: Vec<String> = names
        .iter()
        .map(|n| format!("hostile.test MX 10 {n}"))
        .collect();
    let records: Vec<&str> = records.iter().map(String::as_str).collect();
    let dropped: Vec<&str> = names.iter().map(String::as_str).collect();
    DnsServer::start_hostile(&records, &[], &dropped)
}

/// `who` creates `mailbox` and keeps it locked (lockf, as mail readers
/// lock) until the returned process is stopped; returns once the lock
/// is held.
pub fn keep_locked(site: &Site, who: &Account, mailbox: &Path) -> Child {
    site.write_as(who, mailbox, "", 0o600);
    let locked = who.home.join("locked");
    let locker = site.spawn_quiet(
        Some(who),
        &format!(
            "exec python3 -c 'import fcntl,sys,time; f=open(sys.argv[1],\"a\"); \
             fcntl.lockf(f, fcntl.LOCK_EX); open(sys.argv[2],\"w\"); time.sleep(600)' {} {}",
            mailbox.display(),
            locked.display()
        ),
    );
    assert!(
        common::wait_for(Duration::from_secs(30), || locked.exists()),
        "the mailbox was never locked"
    );
    locker
}
