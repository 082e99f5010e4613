//! A syslog receiver of the test's own (`tests/peers/syslogd.py`): the
//! world's `syslog_socket` points at it, and it writes the mail log as
//! rsyslog would, for the test and the real log tools to read.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

pub struct SyslogReceiver {
    /// The socket spoolmail writes to.
    pub socket: PathBuf,
    /// The mail log it writes.
    pub log: PathBuf,
    child: Child,
}

impl SyslogReceiver {
    /// Starts the receiver with its socket and log in `dir`.
    pub fn start(dir: &Path) -> SyslogReceiver {
        let socket = dir.join("log.sock");
        let log = dir.join("mail.log");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/syslogd.py");
        let mut cmd = Command::new("python3");
        cmd.arg(&script)
            .arg("--socket")
            .arg(&socket)
            .arg("--out")
            .arg(&log)
            .args(["--host", "logtest"]);
        let (child, _) = super::start_peer(&mut cmd, "tests/peers/syslogd.py");
        SyslogReceiver { socket, log, child }
    }

    /// The config line that sends the world's log here.
    pub fn config_line(&self) -> String {
        format!("syslog_socket = {}\n", self.socket.display())
    }

    /// The lines written so far.
    pub fn lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// The lines once `cond` holds of them (or at the deadline: the caller
    /// asserts on what it got).
    pub fn wait_lines(
        &self,
        deadline: Duration,
        mut cond: impl FnMut(&[String]) -> bool,
    ) -> Vec<String> {
        let mut lines = self.lines();
        super::wait_for(deadline, || {
            lines = self.lines();
            cond(&lines)
        });
        lines
    }
}

impl Drop for SyslogReceiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where Debian's pflogsumm is.
const PFLOGSUMM: &str = "/usr/sbin/pflogsumm";

/// Runs Debian's pflogsumm over `log` with `args`; its "Grand Totals"
/// as (word, count).
pub fn pflogsumm(log: &Path, args: &[&str]) -> Vec<(String, u64)> {
    assert!(
        std::path::Path::new(PFLOGSUMM).exists(),
        "{PFLOGSUMM} is missing: apt-get install pflogsumm (sh .ci/peers.sh does)"
    );
    let out = Command::new("perl")
        .arg(PFLOGSUMM)
        .args(args)
        .arg(log)
        .output()
        .expect("running pflogsumm");
    assert!(
        out.status.success(),
        "pflogsumm: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let totals = text
        .split("Grand Totals")
        .nth(1)
        .expect("a Grand Totals section")
        .split("\n\n\n")
        .next()
        .unwrap_or("");
    totals
        .lines()
        .filter_map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            match words.as_slice() {
                [n, word, ..] => Some((word.to_string(), n.parse().ok()?)),
                _ => None,
            }
        })
        .collect()
}

pub fn total(totals: &[(String, u64)], word: &str) -> u64 {
    totals
        .iter()
        .find(|(w, _)| w == word)
        .unwrap_or_else(|| panic!("no {word:?} in {totals:?}"))
        .1
}
