//! Submission where the setgid bit is ignored (systemd's
//! `NoNewPrivileges=yes`, `setpriv --no-new-privs`): the message goes
//! through the maildrop and a queue run by root moves it into the queue,
//! trusting nothing the dropping user wrote about themselves. Needs root
//! (a setgid copy of the binary, switching users); prints why it is
//! skipped otherwise.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{HOSTNAME, REFUSING_SMARTHOST, root_or_skip, run_with_stdin};

/// Why each test here is skipped when not run as root.
const NEEDS_ROOT: &str = "a setgid copy and switching users need root (CI runs this as root)";

/// A spool laid out as postinst lays it out, a setgid copy of the binary
/// and a config, under a directory every user may traverse.
struct Installed {
    _base: tempfile::TempDir,
    bin: PathBuf,
    spool: PathBuf,
    conf: PathBuf,
}

fn installed() -> Installed {
    let base = tempfile::Builder::new()
        .prefix("spoolmail-maildrop")
        .tempdir_in("/var/tmp")
        .unwrap();
    fs::set_permissions(base.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let mail = nix::unistd::Group::from_name("mail")
        .unwrap()
        .expect("group mail");
    let root = Some(nix::unistd::Uid::from_raw(0));
    let bin = base.path().join("sendmail");
    common::stage::copy_executable(common::stage::binary(), &bin);
    nix::unistd::chown(&bin, root, Some(mail.gid)).unwrap();
    fs::set_permissions(&bin, fs::Permissions::from_mode(0o2755)).unwrap();
    let spool = base.path().join("spool");
    common::lay_out_spool(&spool, mail.gid.as_raw());
    let conf = base.path().join("spoolmail.conf");
    fs::write(
        &conf,
        format!(
            "spool = {}\nhostname = {HOSTNAME}\n{REFUSING_SMARTHOST}",
            spool.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&conf, fs::Permissions::from_mode(0o644)).unwrap();
    Installed {
        _base: base,
        bin,
        spool,
        conf,
    }
}

fn nobody() -> nix::unistd::User {
    nix::unistd::User::from_name("nobody")
        .unwrap()
        .expect("nobody")
}

/// Runs the setgid copy as nobody with `-C` (which from a non-root caller
/// gives up the setgid group, as the kernel does under NoNewPrivileges;
/// `no_new_privs` adds the real thing). The setgid path with the default
/// config is exercised by the installed package in compat/.
fn as_nobody(i: &Installed, no_new_privs: bool, args: &[&str], stdin: &[u8]) -> Output {
    let n = nobody();
    let mut cmd = Command::new("setpriv");
    cmd.arg(format!("--reuid={}", n.uid))
        .arg(format!("--regid={}", n.gid))
        .arg("--clear-groups");
    if no_new_privs {
        cmd.arg("--no-new-privs");
    }
    cmd.arg(&i.bin).arg("-C").arg(&i.conf).args(args);
    run_with_stdin(&mut cmd, stdin)
}

/// Writes `bytes` to `path` as nobody, as a user forging a drop would.
fn nobody_writes(path: &Path, bytes: &[u8]) -> Output {
    let mut cmd = Command::new("setpriv");
    cmd.arg(format!("--reuid={}", nobody().uid))
        .arg(format!("--regid={}", nobody().gid))
        .args(["--clear-groups", "sh", "-c"])
        .arg(format!("cat > {}", path.display()));
    run_with_stdin(&mut cmd, bytes)
}

/// One message from nobody to someone@example.com, left in the maildrop
/// (under NoNewPrivileges): its ID and its path, for a test to forge.
fn nobodys_drop(i: &Installed) -> (String, PathBuf) {
    let out = as_nobody(i, true, &["someone@example.com"], b"Subject: x\n\nbody\n");
    assert!(out.status.success());
    let dropped = names(&i.spool.join("maildrop"));
    assert_eq!(dropped.len(), 1, "{dropped:?}");
    let path = i.spool.join("maildrop").join(&dropped[0]);
    (dropped[0].clone(), path)
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn queue_run(i: &Installed) {
    let out = Command::new(&i.bin)
        .args(["-C", i.conf.to_str().unwrap(), "-q"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn envelope_line(i: &Installed, id: &str, key: &str) -> String {
    let text = fs::read_to_string(i.spool.join("queue").join(id)).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key} ")))
        .unwrap()
        .to_string()
}

#[test]
fn without_the_setgid_bit_mail_goes_through_the_maildrop_and_root_queues_it() {
    if !root_or_skip(NEEDS_ROOT) {
        return;
    }
    let i = installed();
    // -C from a non-root caller drops the setgid privilege as well: that
    // path and NoNewPrivileges meet the same closed queue.
    let out = as_nobody(
        &i,
        true,
        &["-t"],
        b"To: someone@example.com\nSubject: nnp\n\nbody\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(names(&i.spool.join("queue")).is_empty());
    let dropped = names(&i.spool.join("maildrop"));
    assert_eq!(dropped.len(), 1, "{dropped:?}");
    let drop_file = i.spool.join("maildrop").join(&dropped[0]);
    let meta = fs::metadata(&drop_file).unwrap();
    assert_eq!(meta.uid(), nobody().uid.as_raw());
    assert_eq!(meta.mode() & 0o777, 0o600, "only its writer can read it");

    queue_run(&i);
    assert!(names(&i.spool.join("maildrop")).is_empty(), "picked up");
    let queued = names(&i.spool.join("queue"));
    assert_eq!(queued, dropped, "queued under the same ID");
    assert_eq!(
        envelope_line(&i, &queued[0], "uid"),
        nobody().uid.to_string()
    );
    assert_eq!(envelope_line(&i, &queued[0], "rcpt"), "someone@example.com");
}

#[test]
fn a_forged_drop_gets_its_writers_uid_and_garbage_goes_to_corrupt() {
    if !root_or_skip(NEEDS_ROOT) {
        return;
    }
    let i = installed();
    let (dropped, path) = nobodys_drop(&i);
    // The user rewrites their own drop to claim to be root.
    let forged = fs::read_to_string(&path)
        .unwrap()
        .replace(&format!("uid {}\n", nobody().uid), "uid 0\n")
        .replace("user nobody\n", "user root\n");
    assert!(nobody_writes(&path, forged.as_bytes()).status.success());
    // And drops garbage under a valid-looking name.
    let garbage = i.spool.join("maildrop").join("1K10E00000000000");
    assert!(
        nobody_writes(&garbage, b"rcpt victim@example.com\n")
            .status
            .success()
    );

    queue_run(&i);
    let queued = names(&i.spool.join("queue"));
    assert_eq!(queued, [dropped], "only the well-formed drop is queued");
    assert_eq!(
        envelope_line(&i, &queued[0], "uid"),
        nobody().uid.to_string()
    );
    assert_eq!(envelope_line(&i, &queued[0], "user"), "nobody");
    assert!(names(&i.spool.join("maildrop")).is_empty());
    assert_eq!(names(&i.spool.join("corrupt")), ["1K10E00000000000.drop"]);
}

#[test]
fn a_drop_gets_one_trace_naming_its_writers_uid() {
    if !root_or_skip(NEEDS_ROOT) {
        return;
    }
    let i = installed();
    let out = as_nobody(&i, true, &["someone@example.com"], b"Subject: x\n\nbody\n");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    queue_run(&i);
    let queued = names(&i.spool.join("queue"));
    assert_eq!(queued.len(), 1);
    let text = fs::read_to_string(i.spool.join("queue").join(&queued[0])).unwrap();
    let traces: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("Received:"))
        .collect();
    assert_eq!(
        traces.len(),
        1,
        "one trace, added by the pickup: {traces:?}"
    );
    assert!(
        traces[0].ends_with(&format!(" (spoolmail, from userid {})", nobody().uid)),
        "{traces:?}"
    );
}

#[test]
fn past_the_hourly_limit_a_drop_is_queued_on_hold() {
    if !root_or_skip(NEEDS_ROOT) {
        return;
    }
    let i = installed();
    let conf = fs::read_to_string(&i.conf).unwrap();
    fs::write(&i.conf, format!("{conf}max_messages_per_hour = 2\n")).unwrap();
    // Under NoNewPrivileges the caller cannot reach the counters: it gets
    // 0 for all three, and the brake applies at the pickup.
    for n in 0..3 {
        let body = format!("To: someone@example.com\nSubject: m{n}\n\nbody\n");
        let out = as_nobody(&i, true, &["-t"], body.as_bytes());
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    queue_run(&i);
    assert!(names(&i.spool.join("maildrop")).is_empty(), "all picked up");
    let queued = names(&i.spool.join("queue"));
    assert_eq!(queued.len(), 3, "{queued:?}");
    let spool = spoolmail::spool::Spool::open(&i.spool).unwrap();
    let held: Vec<&String> = queued
        .iter()
        .filter(|id| {
            let id = spoolmail::spool::QueueId::parse(id).unwrap();
            spool.read_state(&id).unwrap().is_some_and(|s| s.held)
        })
        .collect();
    assert_eq!(held.len(), 1, "one past the limit of 2 is held: {queued:?}");
    // IDs sort by time: the last one written is the one held.
    assert_eq!(held[0], &queued[2]);
    // A second run leaves it held (and counts nothing more).
    queue_run(&i);
    let id = spoolmail::spool::QueueId::parse(held[0]).unwrap();
    assert!(spool.read_state(&id).unwrap().unwrap().held);
    assert!(i.spool.join("queue").join(held[0]).exists());
}

#[test]
fn the_pickup_masquerades_the_envelope_as_a_submission_would() {
    if !root_or_skip(NEEDS_ROOT) {
        return;
    }
    let i = installed();
    // Written while the config masquerades nothing (as a caller's own -C
    // config may): the drop holds the host's own addresses.
    let out = as_nobody(
        &i,
        true,
        &["-f", "www-data@web01.internal", "-t"],
        b"To: someone@example.com\nFrom: www-data@web01.internal\n\nbody\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = as_nobody(&i, true, &["-f", "<>", "someone@example.com"], b"\nnull\n");
    assert!(out.status.success());
    let mut conf = fs::read_to_string(&i.conf).unwrap();
    conf.push_str("masquerade_domain = example.com\nmasquerade_local = *.internal\n");
    fs::write(&i.conf, conf).unwrap();

    queue_run(&i);
    let queued = names(&i.spool.join("queue"));
    assert_eq!(queued.len(), 2, "{queued:?}");
    let mut senders: Vec<String> = queued
        .iter()
        .map(|id| envelope_line(&i, id, "sender"))
        .collect();
    senders.sort();
    // The null sender stays null; the local one is masqueraded.
    assert_eq!(senders, ["", "www-data@example.com"]);
    // The message itself is as the writer left it (S3, S4).
    let stored: String = queued
        .iter()
        .map(|id| fs::read_to_string(i.spool.join("queue").join(id)).unwrap())
        .collect();
    assert!(
        stored.contains("\nFrom: www-data@web01.internal\n"),
        "{stored}"
    );
}

#[test]
fn a_drop_naming_an_invalid_recipient_goes_to_corrupt() {
    if !root_or_skip(NEEDS_ROOT) {
        return;
    }
    let i = installed();
    let (dropped, path) = nobodys_drop(&i);
    // The user rewrites their drop to name a recipient no sendmail
    // would have taken (an option for a pipe's argv, say).
    let forged = fs::read_to_string(&path)
        .unwrap()
        .replace("rcpt someone@example.com\n", "rcpt -oQ/tmp@example.com\n");
    assert!(forged.contains("rcpt -oQ/tmp@example.com\n"));
    assert!(nobody_writes(&path, forged.as_bytes()).status.success());
    queue_run(&i);
    assert!(names(&i.spool.join("queue")).is_empty(), "not queued");
    assert_eq!(names(&i.spool.join("corrupt")), [format!("{dropped}.drop")]);
}

#[test]
fn a_drops_forged_arrival_and_expansion_chain_are_not_trusted() {
    if !root_or_skip(NEEDS_ROOT) {
        return;
    }
    let i = installed();
    let (dropped, path) = nobodys_drop(&i);
    let text = fs::read_to_string(&path).unwrap();
    let arrival = text
        .lines()
        .find_map(|l| l.strip_prefix("arrival "))
        .unwrap()
        .to_string();
    // An arrival five years old would expire and bounce at once; a chain
    // is the loop guard only a runner writes.
    let forged = text
        .replace(&format!("arrival {arrival}\n"), "arrival 1600000000\n")
        .replace(
            "rcpt someone@example.com\n",
            "chain user:nobody\nrcpt someone@example.com\n",
        );
    assert!(forged.contains("arrival 1600000000\n") && forged.contains("chain user:nobody\n"));
    assert!(nobody_writes(&path, forged.as_bytes()).status.success());
    queue_run(&i);
    assert_eq!(
        names(&i.spool.join("queue")),
        std::slice::from_ref(&dropped)
    );
    let queued: u64 = envelope_line(&i, &dropped, "arrival").parse().unwrap();
    assert!(
        queued >= arrival.parse::<u64>().unwrap(),
        "the forged arrival was kept: {queued}"
    );
    let text = fs::read_to_string(i.spool.join("queue").join(&dropped)).unwrap();
    assert!(!text.contains("\nchain "), "the forged chain was kept");
}

#[test]
fn a_drop_with_an_envid_minus_v_would_refuse_goes_to_corrupt() {
    if !root_or_skip(NEEDS_ROOT) {
        return;
    }
    let i = installed();
    let (dropped, path) = nobodys_drop(&i);
    let long = "x".repeat(300);
    let forged = fs::read_to_string(&path).unwrap().replace(
        "rcpt someone@example.com\n",
        &format!("envid {long}\nrcpt someone@example.com\n"),
    );
    assert!(nobody_writes(&path, forged.as_bytes()).status.success());
    queue_run(&i);
    assert!(names(&i.spool.join("queue")).is_empty(), "not queued");
    assert_eq!(names(&i.spool.join("corrupt")), [format!("{dropped}.drop")]);
}
