//! What an ordinary user can do with the input faces of the setgid
//! binary (issue 15): `sendmail -bs` fed without limit or with a
//! smuggled second envelope, `newaliases` on a source
//! only the mail group may read, the compiled aliases' permissions, and
//! `-C` naming something that is not a configuration file.

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::common;
use crate::site::{Account, Site, shell_quote};

/// A bound on the peak resident memory far below the 100 MB the attacks
/// below send, far above what a session needs (a few MB).
const MAX_RSS_KIB: u64 = 50 * 1024;

/// What [`run_measured`] saw.
struct Measured {
    status: i32,
    stdout: String,
    stderr: String,
    /// Peak resident set of `sendmail -bs` (and anything it waited
    /// for), in KiB, as GNU time reports it from wait4.
    max_rss_kib: u64,
}

/// Pipes the output of the shell command `feed` into `sendmail -bs -odq`
/// run as `who`, and measures the peak memory of the session. GNU time
/// measures the binary alone: wait4 on the test's own child would also
/// count the test process's memory, which the child inherits. `timeout`
/// guards a hang, an address-space limit an unbounded reader (so that
/// the test fails instead of the machine). None when GNU time is missing.
fn run_measured(site: &Site, who: &Account, feed: &str) -> Option<Measured> {
    if !Path::new("/usr/bin/time").exists() {
        eprintln!("skipped: needs GNU time (/usr/bin/time) to measure memory");
        return None;
    }
    let report = who.home.join("maxrss");
    let out = site.sh(
        Some(who),
        &format!(
            "ulimit -v 2000000; {{ {feed}; }} | /usr/bin/time -o {} -f %M timeout 120 sendmail -bs -odq",
            shell_quote(&report.display().to_string())
        ),
    );
    let text = std::fs::read_to_string(&report).unwrap_or_default();
    // The last line: GNU time puts "Command exited with…" before it.
    let max_rss_kib = text
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("GNU time's report: {text:?}"));
    Some(Measured {
        status: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        max_rss_kib,
    })
}

/// The reply codes of a `-bs` session's output, in order.
fn codes(stdout: &str) -> Vec<&str> {
    stdout
        .lines()
        .filter(|l| l.as_bytes().get(3) != Some(&b'-'))
        .map(|l| l.get(..3).unwrap_or(l))
        .collect()
}

#[test]
fn a_100mb_bs_command_line_stays_in_bounded_memory() {
    let Some(site) = Site::new("bsline", "") else {
        return;
    };
    let Some(run) = run_measured(
        &site,
        &site.mallory,
        "printf 'EHLO x\\r\\nMAIL FROM:<'; head -c 100000000 /dev/zero | tr '\\0' a; \
         printf '@example.org>\\r\\nNOOP\\r\\nQUIT\\r\\n'",
    ) else {
        return;
    };
    assert_eq!(run.status, 0, "{}", run.stderr);
    assert_eq!(
        codes(&run.stdout),
        ["220", "250", "500", "250", "221"],
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("500 5.5.2"), "{}", run.stdout);
    assert!(
        run.max_rss_kib < MAX_RSS_KIB,
        "peak RSS {} KiB for a 100 MB line",
        run.max_rss_kib
    );
}

#[test]
fn an_endless_bs_line_stays_in_bounded_memory() {
    let Some(site) = Site::new("bszero", "") else {
        return;
    };
    // Zeros and no newline at all, until the input ends.
    let Some(run) = run_measured(&site, &site.mallory, "head -c 100000000 /dev/zero") else {
        return;
    };
    assert_eq!(codes(&run.stdout), ["220", "500"], "{}", run.stdout);
    assert!(
        run.max_rss_kib < MAX_RSS_KIB,
        "peak RSS {} KiB for 100 MB without a newline",
        run.max_rss_kib
    );
}

#[test]
fn an_endless_data_line_stays_in_bounded_memory() {
    let Some(site) = Site::new("bsdata", "") else {
        return;
    };
    let Some(run) = run_measured(
        &site,
        &site.mallory,
        "printf 'HELO x\\r\\nMAIL FROM:<m@example.org>\\r\\nRCPT TO:<r@example.com>\\r\\nDATA\\r\\n'; \
         head -c 100000000 /dev/zero; printf '\\r\\n.\\r\\nQUIT\\r\\n'",
    ) else {
        return;
    };
    let codes = codes(&run.stdout);
    assert_eq!(codes.len(), 7, "{}", run.stdout);
    assert_eq!(codes[..4], ["220", "250", "250", "250"], "{}", run.stdout);
    assert_eq!(codes[4], "354", "{}", run.stdout);
    assert!(codes[5].starts_with('5'), "refused: {}", run.stdout);
    assert_eq!(codes[6], "221", "{}", run.stdout);
    assert!(
        run.max_rss_kib < MAX_RSS_KIB,
        "peak RSS {} KiB for a 100 MB data line",
        run.max_rss_kib
    );
    assert!(site.queue_ids().is_empty());
    assert!(crate::site::names(&site.spool.join("tmp")).is_empty());
}

/// A body with `<LF>.<LF>` followed by a whole second transaction (as a
/// web form's text could carry it) commits one message, from the real
/// sender to the real recipient, with the smuggled lines in its body.
#[test]
fn a_bare_lf_dot_cannot_smuggle_a_second_envelope() {
    let Some(site) = Site::new("smuggle", "") else {
        return;
    };
    let session = format!(
        "EHLO x\r\nMAIL FROM:<{m}@example.org>\r\nRCPT TO:<someone@example.org>\r\nDATA\r\n\
         Subject: hi\r\n\r\nhello\n.\nMAIL FROM:<root@{host}>\r\nRCPT TO:<{a}>\r\nDATA\r\n\
         Subject: from root\r\n\r\nsmuggled\r\n.\r\nQUIT\r\n",
        m = site.mallory.name,
        a = site.alice.name,
        host = common::HOSTNAME,
    );
    let out = site.run(
        Some(&site.mallory),
        "sendmail",
        &["-bs", "-odq"],
        session.as_bytes(),
    );
    common::assert_success(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        codes(&stdout),
        ["220", "250", "250", "250", "354", "250", "221"],
        "{stdout}"
    );
    let ids = site.queue_ids();
    assert_eq!(ids.len(), 1, "one message: {ids:?}");
    let spool = spoolmail::spool::Spool::open(&site.spool).unwrap();
    let id = spoolmail::spool::QueueId::parse(&ids[0]).unwrap();
    let envelope = spool.read_envelope(&id).unwrap();
    assert_eq!(envelope.recipients, ["someone@example.org"]);
    assert_eq!(
        envelope.sender,
        format!("{}@example.org", site.mallory.name)
    );
    let mut data = Vec::new();
    spool
        .open_data(&id)
        .unwrap()
        .read_to_end(&mut data)
        .unwrap();
    let data = String::from_utf8_lossy(&data);
    assert!(
        data.contains(&format!("\n.\nMAIL FROM:<root@{}>\n", common::HOSTNAME)),
        "{data}"
    );
}

/// The aliases source, root:mail 0640, with a password in it.
fn secret_aliases(site: &Site, text: &str) -> std::path::PathBuf {
    let path = site.etc.join("aliases");
    std::fs::write(&path, text).unwrap();
    let mail = nix::unistd::Group::from_name("mail").unwrap().unwrap().gid;
    nix::unistd::chown(&path, Some(nix::unistd::Uid::from_raw(0)), Some(mail)).unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o640)).unwrap();
    path
}

const SECRET: &str = "Hunter2Secret";

#[test]
fn newaliases_by_an_ordinary_user_reveals_nothing_of_a_mail_group_source() {
    let Some(site) = Site::new("newali", "") else {
        return;
    };
    let source = secret_aliases(
        &site,
        &format!("postmaster: root\nbackup: \"|/usr/local/bin/backup --password={SECRET}\"\n"),
    );
    let compiled = spoolmail::local::aliases::compiled_path(&source);
    let before = std::fs::read(&compiled).unwrap();
    let out = site.run(Some(&site.mallory), "newaliases", &[], b"");
    let shown = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{shown}");
    assert!(!shown.contains("aliases, longest"), "no summary: {shown}");
    assert_eq!(std::fs::read(&compiled).unwrap(), before);
    // A broken source is quoted in errors: not to this caller.
    secret_aliases(
        &site,
        &format!("{SECRET} no colon\nbad: <{SECRET}\nbackup: \"|/bin/b {SECRET}\"\n"),
    );
    let out = site.run(Some(&site.mallory), "newaliases", &[], b"");
    let shown = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{shown}");
    assert!(!shown.contains(SECRET), "{shown}");
    // Root is unaffected: it sees its own errors.
    let out = site.as_root("newaliases", &[], b"");
    assert_eq!(out.status.code(), Some(65));
    assert!(String::from_utf8_lossy(&out.stderr).contains(SECRET));
}

#[test]
fn the_compiled_aliases_are_no_more_readable_than_their_source() {
    let Some(site) = Site::new("alimode", "") else {
        return;
    };
    let source = secret_aliases(
        &site,
        &format!("backup: \"|/usr/local/bin/backup --password={SECRET}\"\n"),
    );
    let out = site.as_root("newaliases", &[], b"");
    common::assert_success(&out);
    let compiled = spoolmail::local::aliases::compiled_path(&source);
    let meta = std::fs::metadata(&compiled).unwrap();
    let src = std::fs::metadata(&source).unwrap();
    assert_eq!(
        (meta.mode() & 0o7777, meta.uid(), meta.gid()),
        (0o640, src.uid(), src.gid()),
        "compiled like its source"
    );
    let out = site.sh(
        Some(&site.mallory),
        &format!("cat {}", shell_quote(&compiled.display().to_string())),
    );
    assert!(!out.status.success());
    assert!(!String::from_utf8_lossy(&out.stdout).contains(SECRET));
}

/// Runs `sendmail -C path -bp` as the attacker, with a guard against a
/// hang (timeout: 124) and against an unbounded read (address space).
fn config_from(site: &Site, path: &Path) -> std::process::Output {
    site.sh(
        Some(&site.mallory),
        &format!(
            "ulimit -v 1000000; exec timeout 30 sendmail -C {} -bp",
            shell_quote(&path.display().to_string())
        ),
    )
}

#[test]
fn a_dash_c_config_that_is_not_a_small_regular_file_is_refused() {
    let Some(site) = Site::new("confc", "") else {
        return;
    };
    let fifo = site.mallory.home.join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    nix::unistd::chown(
        &fifo,
        Some(nix::unistd::Uid::from_raw(site.mallory.uid)),
        Some(nix::unistd::Gid::from_raw(site.mallory.gid)),
    )
    .unwrap();
    let big = site.mallory.home.join("big.conf");
    site.write_as(
        &site.mallory,
        &big,
        &"# a comment line\n".repeat(70_000),
        0o644,
    );
    for (path, why) in [
        (Path::new("/dev/zero"), "not a regular file"),
        (fifo.as_path(), "not a regular file"),
        (site.mallory.home.as_path(), "not a regular file"),
        (big.as_path(), "larger than 1 MiB"),
    ] {
        let out = config_from(&site, path);
        common::assert_exit(&out, 78);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(why), "{}: {stderr}", path.display());
    }
}
