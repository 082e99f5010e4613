//! A site laid out as the package's postinst lays it out, for attacks by
//! ordinary users: two fresh accounts (`alice`, the victim, and
//! `mallory`, the attacker), a setgid `root:mail` 2755 copy of the binary
//! with its `sendmail`/`mailq`/`newaliases` links, the spool with its
//! owners and modes, and a configuration at the *default* path
//! `/etc/spoolmail/spoolmail.conf` — seen only inside a private mount
//! namespace, so that the setgid binary runs exactly as installed (a
//! `-C` from an ordinary user would drop the privilege and prove
//! nothing). Everything is removed on drop: accounts, their processes,
//! files.
//!
//! Needs root; [`Site::new`] returns None (and says why) otherwise.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;
use std::time::Duration;

use crate::common::{self, HOSTNAME};

/// The configuration directory the namespace shows in place of
/// `/etc/spoolmail`.
const ETC_DIR: &str = "/etc/spoolmail";

/// useradd/userdel lock /etc/passwd and fail when another holds it; the
/// tests of one binary take turns. The count says how many sites of this
/// process need `/etc/spoolmail` as a mount point; while there are any,
/// the process holds a shared lock on [`ETC_LOCK`].
static ACCOUNTS: Mutex<(usize, Option<fs::File>)> = Mutex::new((0, None));

/// Other processes (another checkout's suite on the same machine) need
/// the mount point too: each holds this file's lock shared while it has
/// sites, and the one that can take it exclusively at its end — nobody
/// else has sites — removes the mount point, if empty (an installed
/// package's `/etc/spoolmail` never is).
const ETC_LOCK: &str = "/run/lock/spoolmail-hostile-etc.lock";

/// A local account made for one test.
#[derive(Debug, Clone)]
pub struct Account {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
}

/// One installed site; torn down on drop.
pub struct Site {
    /// Everything of the site lives under here (mode 0755).
    pub base: PathBuf,
    /// Directory of the setgid binary and its links (`sendmail`, `mailq`,
    /// `newaliases`).
    pub sbin: PathBuf,
    /// The spool (root:mail, 0751, subdirectories 0770, maildrop and
    /// maildrop-tmp 1733).
    pub spool: PathBuf,
    /// What appears as `/etc/spoolmail` inside the namespace.
    pub etc: PathBuf,
    /// `/var/mail`-like directory (root:mail 2775).
    pub mail_dir: PathBuf,
    /// The victim.
    pub alice: Account,
    /// The attacker.
    pub mallory: Account,
    _dir: tempfile::TempDir,
}

fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("running a setup command");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn chown(path: &Path, uid: u32, gid: u32) {
    nix::unistd::chown(
        path,
        Some(nix::unistd::Uid::from_raw(uid)),
        Some(nix::unistd::Gid::from_raw(gid)),
    )
    .unwrap();
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

impl Site {
    /// A new site for the test `tag` (a few lowercase letters and
    /// digits, unique per test: account names are `smh-TAG-a` and
    /// `smh-TAG-m`). `extra` is appended to the configuration. None when
    /// not root.
    pub fn new(tag: &str, extra: &str) -> Option<Site> {
        if !common::root_or_skip("the hostile-user suite needs root (accounts, setgid, namespaces)")
        {
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix(&format!("spoolmail-hostile-{tag}-"))
            .tempdir_in("/var/tmp")
            .unwrap();
        let base = dir.path().to_path_buf();
        chmod(&base, 0o755);
        let mail = mail_gid();
        let (alice, mallory) = {
            let mut accounts = ACCOUNTS.lock().unwrap_or_else(|p| p.into_inner());
            if accounts.0 == 0 {
                accounts.1 = Some(share_etc_dir());
            }
            accounts.0 += 1;
            (
                make_account(&format!("smh-{tag}-a"), &base),
                make_account(&format!("smh-{tag}-m"), &base),
            )
        };
        let sbin = base.join("sbin");
        fs::create_dir(&sbin).unwrap();
        let bin = sbin.join("spoolmail");
        common::stage::copy_executable(common::stage::binary(), &bin);
        chown(&bin, 0, mail);
        chmod(&bin, 0o2755);
        for face in ["sendmail", "mailq", "newaliases"] {
            std::os::unix::fs::symlink("spoolmail", sbin.join(face)).unwrap();
        }
        let spool = base.join("spool");
        common::lay_out_spool(&spool, mail);
        let mail_dir = base.join("mail");
        fs::create_dir(&mail_dir).unwrap();
        chown(&mail_dir, 0, mail);
        chmod(&mail_dir, 0o2775);
        let etc = base.join("etc");
        fs::create_dir(&etc).unwrap();
        chmod(&etc, 0o755);
        let site = Site {
            base,
            sbin,
            spool,
            etc,
            mail_dir,
            alice,
            mallory,
            _dir: dir,
        };
        site.set_config(extra);
        let aliases = site.etc.join("aliases");
        fs::write(&aliases, "postmaster: root\n").unwrap();
        chmod(&aliases, 0o644);
        let out = site.as_root("newaliases", &[], b"");
        common::assert_success(&out);
        Some(site)
    }

    /// Rewrites the configuration: the site's own settings, then `extra`.
    /// Without a `smarthost` in `extra`, remote mail goes to a closed port.
    pub fn set_config(&self, extra: &str) {
        let conf = self.etc.join("spoolmail.conf");
        let smarthost = match extra.contains("smarthost =") {
            true => "",
            false => common::REFUSING_SMARTHOST,
        };
        fs::write(
            &conf,
            format!(
                "spool = {}\nhostname = {HOSTNAME}\naliases = {}\nmail_spool_dir = {}\n\
                 forward_path = ~/.forward\n{smarthost}{extra}\n",
                self.spool.display(),
                self.etc.join("aliases").display(),
                self.mail_dir.display(),
            ),
        )
        .unwrap();
        chmod(&conf, 0o644);
    }

    /// The command that runs `script` (sh) as `who` (None: root) inside
    /// the namespace where the site's configuration is the default one.
    /// The mount point is made again if something outside the suite took
    /// it away meanwhile (a package purge, a suite of another checkout
    /// that predates [`ETC_LOCK`]).
    pub fn shell(&self, who: Option<&Account>, script: &str) -> Command {
        let inner = match who {
            Some(a) => format!(
                "exec setpriv --reuid={} --regid={} --init-groups --reset-env sh -c \"$1\"",
                a.uid, a.gid
            ),
            None => "exec sh -c \"$1\"".to_string(),
        };
        let mut cmd = Command::new("unshare");
        cmd.args(["-m", "--propagation", "private", "sh", "-c"])
            .arg(format!(
                "mkdir -p {ETC_DIR} && mount --bind {} {ETC_DIR} && cd / && {inner}",
                self.etc.display()
            ))
            .arg("sh")
            .arg(format!(
                "PATH={}:/usr/bin:/bin; export PATH; {script}",
                self.sbin.display()
            ));
        cmd
    }

    /// Runs `face` (`sendmail`, `mailq`, `newaliases`) of the installed
    /// binary as `who`, with `args` and `stdin`.
    pub fn run(&self, who: Option<&Account>, face: &str, args: &[&str], stdin: &[u8]) -> Output {
        let mut script = format!("exec {face}");
        for a in args {
            script.push(' ');
            script.push_str(&shell_quote(a));
        }
        common::run_with_stdin(&mut self.shell(who, &script), stdin)
    }

    /// [`Site::run`] as root.
    pub fn as_root(&self, face: &str, args: &[&str], stdin: &[u8]) -> Output {
        self.run(None, face, args, stdin)
    }

    /// Runs `script` (sh) as `who`, its output returned.
    pub fn sh(&self, who: Option<&Account>, script: &str) -> Output {
        common::run_with_stdin(&mut self.shell(who, script), b"")
    }

    /// Writes `text` to `path` owned by `who` with `mode`.
    pub fn write_as(&self, who: &Account, path: &Path, text: &str, mode: u32) {
        write_owned(path, text, who.uid, who.gid, mode);
    }

    /// Writes `text` to `path` owned by root, group `gid`, with `mode`.
    pub fn write_root(&self, path: &Path, text: &str, gid: u32, mode: u32) {
        write_owned(path, text, 0, gid, mode);
    }

    /// `mailq --json` as `who` (None: root): one object per message.
    pub fn mailq_json(&self, who: Option<&Account>) -> Vec<serde_json::Value> {
        let out = self.run(who, "mailq", &["--json"], b"");
        common::assert_success(&out);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).expect("json line"))
            .collect()
    }

    /// Spawns `script` as `who` (None: root) in the site's namespace,
    /// its input and output discarded.
    pub fn spawn_quiet(&self, who: Option<&Account>, script: &str) -> std::process::Child {
        self.shell(who, script)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    }

    /// IDs in `queue/`, sorted.
    pub fn queue_ids(&self) -> Vec<String> {
        names(&self.spool.join("queue"))
    }

    /// Waits (polling, with a deadline) until no process of the site's
    /// accounts runs; false if some still do after `limit`.
    pub fn wait_idle(&self, limit: Duration) -> bool {
        common::wait_for(limit, || {
            [&self.alice, &self.mallory]
                .iter()
                .all(|a| !processes_of(a.uid))
        })
    }
}

/// Takes [`ETC_LOCK`] shared (waiting while another process removes the
/// mount point) and makes sure `/etc/spoolmail` exists.
fn share_etc_dir() -> fs::File {
    let lock = Path::new(ETC_LOCK);
    fs::create_dir_all(lock.parent().unwrap()).unwrap();
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(lock)
        .unwrap();
    file.lock_shared().unwrap();
    match fs::create_dir(ETC_DIR) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => panic!("{ETC_DIR}: {e}"),
        _ => file,
    }
}

fn write_owned(path: &Path, text: &str, uid: u32, gid: u32, mode: u32) {
    fs::write(path, text).unwrap();
    chown(path, uid, gid);
    chmod(path, mode);
}

/// The gid of the group `mail`.
pub fn mail_gid() -> u32 {
    nix::unistd::Group::from_name("mail")
        .unwrap()
        .expect("group mail")
        .gid
        .as_raw()
}

/// Names in `dir`, sorted (empty when it cannot be read).
pub fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Single-quotes `s` for sh.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

fn processes_of(uid: u32) -> bool {
    Command::new("pgrep")
        .arg("-U")
        .arg(uid.to_string())
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Runs a useradd/userdel command, again while it fails only because
/// another process holds the lock on /etc/passwd or /etc/group (the
/// tests of this binary take turns, but other test binaries, or other
/// checkouts' suites, may run at the same time); up to a minute.
fn run_locked(make: impl Fn() -> Command) -> Output {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let out = make().output().expect("running an account command");
        let err = String::from_utf8_lossy(&out.stderr);
        let locked = err.contains("cannot lock") || err.contains("try again later");
        if out.status.success() || !locked || std::time::Instant::now() > deadline {
            return out;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn make_account(name: &str, base: &Path) -> Account {
    // A leftover from a run that was killed: start clean.
    let _ = run_locked(|| {
        let mut cmd = Command::new("userdel");
        cmd.args(["-f", name]);
        cmd
    });
    let home = base.join(name);
    let out = run_locked(|| {
        let mut cmd = Command::new("useradd");
        cmd.args(["-M", "-U", "-s", "/bin/sh", "-d"])
            .arg(&home)
            .arg(name);
        cmd
    });
    assert!(
        out.status.success(),
        "useradd {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let user = nix::unistd::User::from_name(name)
        .unwrap()
        .expect("new account");
    fs::create_dir(&home).unwrap();
    chown(&home, user.uid.as_raw(), user.gid.as_raw());
    chmod(&home, 0o755);
    Account {
        name: name.to_string(),
        uid: user.uid.as_raw(),
        gid: user.gid.as_raw(),
        home,
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        let mut accounts = ACCOUNTS.lock().unwrap_or_else(|p| p.into_inner());
        for a in [&self.alice, &self.mallory] {
            let _ = Command::new("pkill")
                .args(["-KILL", "-U"])
                .arg(a.uid.to_string())
                .output();
            common::wait_for(Duration::from_secs(5), || !processes_of(a.uid));
            let _ = run_locked(|| {
                let mut cmd = Command::new("userdel");
                cmd.args(["-f", &a.name]);
                cmd
            });
        }
        // Root's detached runners of this site.
        let _ = Command::new("pkill")
            .args(["-KILL", "-f"])
            .arg(self.sbin.display().to_string())
            .output();
        accounts.0 -= 1;
        if accounts.0 == 0
            && let Some(lock) = accounts.1.take()
            && lock.try_lock().is_ok()
        {
            let _ = fs::remove_dir(ETC_DIR);
        }
    }
}
