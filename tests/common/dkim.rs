//! DKIM keys and independent verifiers for the tests (issue 26): a key
//! made by the built binary's `--dkim-keygen`, and a received message
//! checked against the DNS record it printed by Python's dkimpy
//! (tests/peers/dkimcheck.py) and, as root, OpenDKIM's library
//! (tests/peers/opendkim-verify.sh, in namespaces of its own).

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{assert_success, is_root};

/// A signing domain's key and DNS record, made by `--dkim-keygen`.
pub struct Key {
    pub record: PathBuf,
    pub line: String,
}

/// Makes a key for `domain` with `--dkim-keygen` in `dir`, with the
/// config line naming it.
pub fn keygen(dir: &Path, domain: &str, selector: &str, ed25519: bool) -> Key {
    let path = dir.join(format!("{domain}.{selector}.key"));
    let algorithm = if ed25519 {
        "ed25519-sha256"
    } else {
        "rsa-sha256"
    };
    let line = format!(
        "dkim = {domain} selector={selector} key={} algorithm={algorithm}",
        path.display()
    );
    let conf = dir.join(format!("keygen-{domain}-{selector}.conf"));
    std::fs::write(&conf, format!("{line}\n")).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_spoolmail"));
    cmd.arg("-C")
        .arg(&conf)
        .args(["--dkim-keygen", domain, selector]);
    if ed25519 {
        cmd.arg("--ed25519");
    }
    let out = cmd.output().unwrap();
    assert_success(&out);
    let record = dir.join(format!("{domain}.{selector}.txt"));
    std::fs::write(&record, &out.stdout).unwrap();
    Key { record, line }
}

/// What the independent verifiers said of one message.
pub struct Verdicts {
    /// (verifier, passed) for each verifier that ran.
    pub each: Vec<(&'static str, bool)>,
    /// What they printed.
    pub report: String,
}

impl Verdicts {
    /// Every verifier that ran passed the signature.
    pub fn pass(&self) -> bool {
        self.each.iter().all(|(_, ok)| *ok)
    }

    /// Every verifier that ran failed it.
    pub fn fail(&self) -> bool {
        self.each.iter().all(|(_, ok)| !*ok)
    }
}

/// What each independent verifier says of `message`, the public key
/// taken from `record` (the zone-file line `--dkim-keygen` printed):
/// dkimpy always; OpenDKIM's library too when running as root (its
/// check needs namespaces of its own: tests/peers/opendkim-verify.sh).
pub fn verify(message: &[u8], record: &Path) -> Verdicts {
    let (ok, report) = dkimpy_verify(message, record);
    let mut verdicts = Verdicts {
        each: vec![("dkimpy", ok)],
        report,
    };
    if is_root() {
        let name = record_name(record);
        let (ok, said) = opendkim_verify(message, record, &name);
        verdicts.each.push(("opendkim", ok));
        verdicts.report.push_str(&format!(
            "opendkim-testmsg: {}\n",
            if said.trim().is_empty() {
                "pass (silent)"
            } else {
                said.trim()
            }
        ));
    } else {
        verdicts
            .report
            .push_str("opendkim-testmsg: skipped (its check needs root)\n");
    }
    verdicts
}

/// What dkimpy says of `message` with the public key of `record`.
pub fn dkimpy_verify(message: &[u8], record: &Path) -> (bool, String) {
    let file = record.with_extension(format!("msg{}", message.len()));
    let (status, text) = run_check(
        "python3",
        "tests/peers/dkimcheck.py",
        &file,
        message,
        record.as_os_str(),
    );
    assert!(
        text.contains("dkim: pass") || text.contains("dkim: fail"),
        "the verifier ran (pip install dkimpy): {text}"
    );
    (status.success(), text)
}

/// Writes `message` to `file` and runs `interpreter SCRIPT FILE ARG`
/// (SCRIPT under the crate's root): its status and everything it said.
fn run_check(
    interpreter: &str,
    script: &str,
    file: &Path,
    message: &[u8],
    arg: &OsStr,
) -> (std::process::ExitStatus, String) {
    std::fs::write(file, message).unwrap();
    let out = Command::new(interpreter)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join(script))
        .arg(file)
        .arg(arg)
        .output()
        .unwrap_or_else(|e| panic!("{interpreter} {script}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status, text)
}

/// The DNS name a record file `--dkim-keygen` printed is for
/// (`SEL._domainkey.DOMAIN`, without the trailing dot).
fn record_name(record: &Path) -> String {
    let text = std::fs::read_to_string(record).unwrap();
    let name = text.split_whitespace().next().expect("a record line");
    assert!(name.contains("._domainkey."), "{text}");
    name.trim_end_matches('.').to_string()
}

/// The TXT record `--dkim-keygen` printed (zone-file form), as the test
/// DNS server takes it: `NAME TXT "…" "…"`.
pub fn zone_line(record: &Path, name: &str) -> String {
    let text = std::fs::read_to_string(record).unwrap();
    let strings: Vec<&str> = text.split('"').skip(1).step_by(2).collect();
    assert!(!strings.is_empty(), "{text}");
    format!("{name} TXT \"{}\"", strings.join("\" \""))
}

/// What OpenDKIM's library says of `message`, the key looked up in DNS
/// at `name` from `record` (tests/peers/opendkim-verify.sh: its own
/// network namespace, a DNS server on 127.0.0.1:53 there). Needs root
/// and opendkim-testmsg.
pub fn opendkim_verify(message: &[u8], record: &Path, name: &str) -> (bool, String) {
    let file = record.with_extension(format!("opendkim{}", message.len()));
    let zone = zone_line(record, name);
    let (status, text) = run_check(
        "sh",
        "tests/peers/opendkim-verify.sh",
        &file,
        message,
        OsStr::new(&zone),
    );
    // 127: no opendkim-testmsg; 2: the script's DNS server did not
    // start. Neither is a verdict, and a "fail" expected must not pass
    // on it.
    assert!(
        !matches!(status.code(), Some(127) | Some(2)),
        "OpenDKIM's check did not run (apt-get install opendkim-tools iproute2): {text}"
    );
    (status.success(), text)
}
