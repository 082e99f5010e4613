//! The shared test helper: a fresh directory per test holding a spool, a
//! config file and argv[0] links (`sendmail`, `mailq`, `newaliases`) to
//! the built binary, so every test runs the real program end to end.

#![allow(dead_code)]

pub mod certs;
pub mod dkim;
pub mod dns;
pub mod hang_up;
pub mod netns;
pub mod setup;
pub mod signed_dns;
pub mod smtpd;
pub mod stage;
pub mod syslog;

use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

// Not every test file builds a config: the re-export is unused in some.
#[allow(unused_imports)]
pub use setup::{REFUSING_SMARTHOST, Setup};

/// The hostname every test config uses.
pub const HOSTNAME: &str = "test.example";

/// One test's world.
pub struct World {
    pub dir: tempfile::TempDir,
    pub spool: PathBuf,
    pub config: PathBuf,
    pub bin: PathBuf,
}

impl World {
    /// A world with the default test config.
    pub fn new() -> World {
        World::with_config("")
    }

    /// A world whose config has `extra` appended (key = value lines).
    pub fn with_config(extra: &str) -> World {
        let dir = tempfile::Builder::new()
            .prefix("spoolmail-test")
            .tempdir()
            .expect("tempdir");
        let spool = dir.path().join("spool");
        let config = dir.path().join("spoolmail.conf");
        // Tests that do not set up a route of their own get a smarthost
        // that refuses at once: a delivery attempt defers quickly and
        // never reaches the network.
        let route = if extra.contains("smarthost") || extra.contains("resolver") {
            ""
        } else {
            REFUSING_SMARTHOST
        };
        std::fs::write(
            &config,
            format!(
                "# written by tests/common\nspool = {}\nhostname = {HOSTNAME}\naliases = {}\nmail_spool_dir = {}\n{route}{extra}\n",
                spool.display(),
                dir.path().join("aliases").display(),
                dir.path().join("mail").display(),
            ),
        )
        .expect("write config");
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).expect("bin dir");
        for face in ["sendmail", "mailq", "newaliases"] {
            symlink(env!("CARGO_BIN_EXE_spoolmail"), bin.join(face)).expect("link");
        }
        World {
            dir,
            spool,
            config,
            bin,
        }
    }

    /// Makes the world usable by other users: the faces point at a copy
    /// of the binary inside the world (the built one may sit in a
    /// directory only its owner can enter, as a clone in root's 0700
    /// home does), and the world's directory is searchable by all. For
    /// tests that run the binary as another uid.
    pub fn stage_for_other_users(&self) {
        use std::os::unix::fs::PermissionsExt;
        let copy = self.bin.join("spoolmail");
        stage::copy_executable(stage::binary(), &copy);
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
        for face in ["sendmail", "mailq", "newaliases"] {
            let link = self.bin.join(face);
            std::fs::remove_file(&link).expect("unlink face");
            symlink("spoolmail", &link).expect("link");
        }
        for dir in [self.dir.path(), &self.bin] {
            let mode = std::fs::metadata(dir).unwrap().permissions().mode();
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode | 0o755)).unwrap();
        }
    }

    /// A command for one face (`sendmail`, `mailq`, `newaliases`) with
    /// `-C config` already given.
    pub fn command(&self, face: &str) -> Command {
        let mut cmd = Command::new(self.bin.join(face));
        cmd.arg("-C").arg(&self.config);
        cmd
    }

    /// Runs a face with `args`, feeding `stdin`.
    pub fn run(&self, face: &str, args: &[&str], stdin: &[u8]) -> Output {
        run_with_stdin(self.command(face).args(args), stdin)
    }

    /// Runs `sendmail -C config -odq args`, feeding `stdin`: the intake
    /// tests look at the queue, so no runner may take the message away
    /// (a later `-od…` in `args` still wins, as on sendmail's command line).
    pub fn sendmail(&self, args: &[&str], stdin: &[u8]) -> Output {
        let mut argv = vec!["-odq"];
        argv.extend_from_slice(args);
        self.run("sendmail", &argv, stdin)
    }

    /// Runs `sendmail -C config args` as a caller would: the default
    /// delivery mode forks a background runner.
    pub fn sendmail_delivering(&self, args: &[&str], stdin: &[u8]) -> Output {
        self.run("sendmail", args, stdin)
    }

    /// Starts `sendmail -f SENDER RECIPIENT` for each recipient at once
    /// (the default background delivery), feeding each `stdin`, and
    /// asserts every one exited 0: a burst of callers.
    pub fn sendmail_burst(&self, sender: &str, recipients: &[String], stdin: &[u8]) {
        let children: Vec<_> = recipients
            .iter()
            .map(|r| {
                let mut child = self
                    .command("sendmail")
                    .args(["-f", sender, r])
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("spawn sendmail");
                child.stdin.take().unwrap().write_all(stdin).unwrap();
                child
            })
            .collect();
        for child in children {
            assert_success(&child.wait_with_output().unwrap());
        }
    }

    /// Runs sendmail and asserts it exited 0; returns the new queue ID.
    pub fn send_ok(&self, args: &[&str], stdin: &[u8]) -> String {
        let before = self.queue_ids();
        let out = self.sendmail(args, stdin);
        assert_success(&out);
        let after = self.queue_ids();
        let new: Vec<_> = after.iter().filter(|i| !before.contains(i)).collect();
        assert_eq!(new.len(), 1, "exactly one new queue file: {after:?}");
        new[0].clone()
    }

    /// The IDs of the files in queue/, sorted.
    pub fn queue_ids(&self) -> Vec<String> {
        list_dir(&self.spool.join("queue"))
    }

    /// The names of the files in tmp/.
    pub fn tmp_files(&self) -> Vec<String> {
        list_dir(&self.spool.join("tmp"))
    }

    /// The stored message data of a queued message, through the library.
    pub fn data(&self, id: &str) -> Vec<u8> {
        use std::io::Read;
        let spool = spoolmail::spool::Spool::open(&self.spool).expect("open spool");
        let id = spoolmail::spool::QueueId::parse(id).expect("valid id");
        let mut data = Vec::new();
        spool
            .open_data(&id)
            .expect("open data")
            .read_to_end(&mut data)
            .expect("read data");
        data
    }

    /// The envelope of a queued message, through the library.
    pub fn envelope(&self, id: &str) -> spoolmail::spool::Envelope {
        let spool = spoolmail::spool::Spool::open(&self.spool).expect("open spool");
        let id = spoolmail::spool::QueueId::parse(id).expect("valid id");
        spool.read_envelope(&id).expect("read envelope")
    }

    /// Points the world's smarthost at loopback `port` (the config is a
    /// file; each run reads it afresh). The destination stays the same:
    /// its unreachable record, if any, still holds.
    pub fn repoint(&self, port: u16) {
        let text = std::fs::read_to_string(&self.config).unwrap();
        let text: String = text
            .lines()
            .map(|l| match l.starts_with("smarthost =") {
                true => format!("smarthost = 127.0.0.1:{port}\n"),
                false => format!("{l}\n"),
            })
            .collect();
        std::fs::write(&self.config, text).unwrap();
    }

    /// `mailq --json` parsed into values.
    pub fn mailq_json(&self) -> Vec<serde_json::Value> {
        let out = self.run("mailq", &["--json"], b"");
        assert_success(&out);
        String::from_utf8(out.stdout)
            .expect("utf-8")
            .lines()
            .map(|l| serde_json::from_str(l).expect("json line"))
            .collect()
    }
}

/// Starts a test peer (`tests/peers/*.py`) and waits, up to 30 s, for the
/// "READY <port>" line it prints once listening. Returns it with its port.
pub fn start_peer(cmd: &mut Command, what: &str) -> (std::process::Child, u16) {
    use std::io::BufRead;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {what}: {e}"));
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("{what} did not say READY within 30 s"));
    let port = line
        .strip_prefix("READY ")
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("{what} said {line:?}, not READY <port>"));
    (child, port)
}

/// Runs `cmd` with `stdin` written to it (in a thread, so a child that
/// exits early cannot deadlock us).
pub fn run_with_stdin(cmd: &mut Command, stdin: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut pipe = child.stdin.take().expect("stdin");
    let input = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        // A child that refuses early closes the pipe: EPIPE is expected then.
        let _ = pipe.write_all(&input);
    });
    let out = child.wait_with_output().expect("wait");
    writer.join().expect("writer thread");
    out
}

fn list_dir(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
}

/// Asserts exit 0, showing stderr when not.
pub fn assert_success(out: &Output) {
    assert!(
        out.status.success(),
        "expected success, got {:?}; stderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Asserts the exit code and that stderr is exactly one non-empty line.
pub fn assert_exit(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "one line on stderr, got: {err:?}");
}

/// Polls `cond` until it holds or `timeout` passes.
pub fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    cond()
}

/// Whether the tests run as root (some checks need it).
pub fn is_root() -> bool {
    // SAFETY: cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The guard of a check that needs root: true when running as root;
/// otherwise says on stderr that the check is skipped and `why` (what
/// needs root), and returns false. A skip is a line, never a silent pass.
pub fn root_or_skip(why: &str) -> bool {
    let root = is_root();
    if !root {
        eprintln!("skipped: {why}");
    }
    root
}

/// Splits stored message data into (header text, body bytes).
pub fn split_message(data: &[u8]) -> (String, Vec<u8>) {
    let pos = data
        .windows(2)
        .position(|w| w == b"\n\n")
        .expect("blank line after the header");
    (
        String::from_utf8_lossy(&data[..pos + 1]).into_owned(),
        data[pos + 2..].to_vec(),
    )
}

/// The value of the first header named `name` (case-insensitive), unfolded.
pub fn header_value(header: &str, name: &str) -> Option<String> {
    let mut lines = header.lines().peekable();
    while let Some(line) = lines.next() {
        if let Some((n, v)) = line.split_once(':')
            && n.eq_ignore_ascii_case(name)
        {
            let mut value = v.trim().to_string();
            while let Some(next) = lines.peek() {
                if next.starts_with([' ', '\t']) {
                    value.push(' ');
                    value.push_str(next.trim());
                    lines.next();
                } else {
                    break;
                }
            }
            return Some(value);
        }
    }
    None
}

/// Convenience for `OsStr` arguments.
pub fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

/// The spool as the package's postinst lays it out: each directory under
/// the spool root and its mode (owner root, group mail).
pub const POSTINST_SPOOL: &[(&str, u32)] = &[
    ("", 0o751),
    ("tmp", 0o770),
    ("queue", 0o770),
    ("state", 0o770),
    ("hosts", 0o770),
    ("corrupt", 0o770),
    ("schedule", 0o770),
    ("schedule/0", 0o770),
    ("window", 0o770),
    ("maildrop", 0o1733),
    ("maildrop-tmp", 0o1733),
];

/// Creates the spool at `spool` as postinst does ([`POSTINST_SPOOL`]),
/// group `gid`. Needs root.
pub fn lay_out_spool(spool: &std::path::Path, gid: u32) {
    use std::os::unix::fs::PermissionsExt;
    for (sub, mode) in POSTINST_SPOOL {
        let d = spool.join(sub);
        std::fs::create_dir_all(&d).unwrap();
        nix::unistd::chown(
            &d,
            Some(nix::unistd::Uid::from_raw(0)),
            Some(nix::unistd::Gid::from_raw(gid)),
        )
        .unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(*mode)).unwrap();
    }
}
