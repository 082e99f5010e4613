//! `tls = dane-then-mta-sts` end to end (issue 26): one destination
//! whose signed zone publishes TLSA records gets DANE (`tls=dane`), and
//! one without DNSSEC whose policy MTA-STS publishes gets MTA-STS
//! (`tls=mta-sts`) — in one run of the built binary against the signed
//! zone in a real NSD (tests/peers/signed_dns.py: example.test signed,
//! unsigned.test delegated without DS), the policy over HTTPS on port
//! 443 (tests/peers/https.py) and one aiosmtpd with STARTTLS as the MX
//! of both.
//!
//! Port 443 needs a network namespace of the test's own (as
//! tests/mta_sts.rs): root only, skipped with a line otherwise.

mod common;

use std::path::Path;
use std::process::Command;

use common::certs::issue;
use common::netns::in_own_network;
use common::signed_dns::SignedDns;
use common::smtpd::SmtpServer;
use common::syslog::SyslogReceiver;
use common::{World, start_peer};
use openssl::sha::sha256;
use openssl::x509::X509;

const MSG: &[u8] = b"Subject: dane then mta-sts\n\nbody\n";
const WAIT: std::time::Duration = std::time::Duration::from_secs(20);

/// The MX host of unsigned.test, named by its MTA-STS policy; the same
/// server is example.test's MX, authenticated there by DANE.
const STS_MX: &str = "mx.unsigned.test";
const POLICY_HOST: &str = "mta-sts.unsigned.test";

/// TLSA 3 1 1 data of `name`'s certificate in `dir`, in hex.
fn spki_sha256_hex(dir: &Path, name: &str) -> String {
    let cert = X509::from_pem(&std::fs::read(dir.join(format!("{name}.crt"))).unwrap()).unwrap();
    let spki = cert.public_key().unwrap().public_key_to_der().unwrap();
    sha256(&spki).iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn dane_where_tlsa_records_are_signed_and_mta_sts_where_a_policy_is_published() {
    in_own_network(
        "dane-then-mta-sts serves HTTPS on port 443 in a network namespace",
        both_policies,
    );
}

fn both_policies() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    issue(dir, &[STS_MX, POLICY_HOST]);
    let chain = dir.join(format!("{STS_MX}.chain"));
    let key = dir.join(format!("{STS_MX}.key"));
    let mx = SmtpServer::start(
        dir,
        &["--starttls", chain.to_str().unwrap(), key.to_str().unwrap()],
    );
    let signed = [
        "example.test. 60 IN MX 10 mx.example.test.".to_string(),
        "mx.example.test. 60 IN A 127.0.0.1".to_string(),
        format!(
            "_{}._tcp.mx.example.test. 60 IN TLSA 3 1 1 {}",
            mx.port,
            spki_sha256_hex(dir, STS_MX)
        ),
    ];
    let unsigned = [
        "unsigned.test. 60 IN MX 10 mx.unsigned.test.",
        "mx.unsigned.test. 60 IN A 127.0.0.1",
        "mta-sts.unsigned.test. 60 IN A 127.0.0.1",
        "_mta-sts.unsigned.test. 60 IN TXT \"v=STSv1; id=20260101\"",
    ];
    let signed: Vec<&str> = signed.iter().map(String::as_str).collect();
    let Some(dns) = SignedDns::start(dir, &signed, &unsigned, &[]) else {
        return;
    };
    let policy = dir.join("policy");
    std::fs::write(
        &policy,
        format!("version: STSv1\r\nmode: enforce\r\nmx: {STS_MX}\r\nmax_age: 86400\r\n"),
    )
    .unwrap();
    let https_log = dir.join("https.log");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/https.py");
    let mut cmd = Command::new("python3");
    cmd.arg(script)
        .arg("--cert")
        .arg(dir.join(format!("{POLICY_HOST}.chain")))
        .arg("--key")
        .arg(dir.join(format!("{POLICY_HOST}.key")))
        .arg("--policy")
        .arg(&policy)
        .arg("--log")
        .arg(&https_log);
    let (mut https, port) = start_peer(&mut cmd, "tests/peers/https.py");
    assert_eq!(port, 443);

    let syslog = SyslogReceiver::start(dir);
    let world = World::with_config(&format!(
        "resolver = {}\nsmtp_port = {}\ntls = dane-then-mta-sts\ndnssec_trust_anchor = {}\ntls_ca_file = {}\nretry_min = 1h\n{}",
        dns.addr,
        mx.port,
        dns.anchor.display(),
        dir.join("ca.pem").display(),
        syslog.config_line(),
    ));
    for rcpt in ["bob@example.test", "carol@unsigned.test"] {
        let out = world.run("sendmail", &["-odi", "-f", "s@example.org", rcpt], MSG);
        assert_eq!(out.status.code(), Some(0), "{rcpt}: {out:?}");
    }
    let lines = syslog.wait_lines(WAIT, |lines| {
        lines.iter().filter(|l| l.contains("status=sent")).count() >= 2
    });
    let outcome = |rcpt: &str| {
        let to = format!("to=<{rcpt}>");
        let line = lines
            .iter()
            .find(|l| l.contains(&to) && l.contains("status="))
            .cloned()
            .unwrap_or_else(|| panic!("no outcome for {rcpt}: {lines:?}"));
        println!("{line}");
        line
    };
    let dane = outcome("bob@example.test");
    assert!(
        dane.contains("status=sent") && dane.ends_with(", tls=dane"),
        "{dane}"
    );
    let sts = outcome("carol@unsigned.test");
    assert!(
        sts.contains("status=sent") && sts.ends_with(", tls=mta-sts"),
        "{sts}"
    );
    let got = mx.messages();
    assert_eq!(got.len(), 2);
    assert!(got.iter().all(|m| m.tls), "both over TLS");
    // The policy was fetched for unsigned.test only: DANE decided
    // example.test, whose zone publishes no policy anyway.
    let fetched = std::fs::read_to_string(&https_log).unwrap_or_default();
    assert_eq!(
        fetched
            .lines()
            .filter(|l| l.starts_with("GET /.well-known/mta-sts.txt"))
            .count(),
        1,
        "{fetched}"
    );
    let _ = https.kill();
    let _ = https.wait();
}
