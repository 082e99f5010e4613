//! MTA-STS (RFC 8461) for delivery straight to MX, end to end (issue 26):
//! the built binary with `tls = mta-sts` against a real DNS server
//! (tests/peers/dns.py) publishing `_mta-sts` TXT records, a real HTTPS
//! server (tests/peers/https.py: Python's http.server with ssl) serving
//! the policy on port 443, and a real SMTP server (aiosmtpd) with
//! STARTTLS, its certificates from a test CA that `tls_ca_file` trusts.
//!
//! The policy is fetched from port 443, so each test runs in a network
//! namespace of its own (its thread unshares one, as
//! tests/peers/opendkim-verify.sh does with unshare(1)): its own
//! loopback, no port shared with anything else on the machine, and
//! every peer and spoolmail itself started from that thread inside it.
//! DNS needs no namespace trick: `resolver` points spoolmail at the
//! test server. Needs root; skipped with a line otherwise.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::dns::DnsServer;
use common::netns::in_own_network;
use common::smtpd::SmtpServer;
use common::syslog::SyslogReceiver;
use common::*;

/// Why the tests that serve a policy skip without root.
const SKIP: &str = "the MTA-STS tests serve HTTPS on port 443 in a network namespace";

const MSG: &[u8] = b"Subject: sts\n\nbody\n";
const WAIT: std::time::Duration = std::time::Duration::from_secs(20);

/// Runs openssl with `args`, asserting success.
fn openssl(args: &[&str]) {
    let status = Command::new("openssl")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl");
    assert!(status.success(), "openssl {args:?}");
}

/// A test CA in `dir`, and certificates it signs.
struct Ca {
    dir: PathBuf,
}

impl Ca {
    fn new(dir: &Path) -> Ca {
        let (cert, key) = (dir.join("ca.crt"), dir.join("ca.key"));
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=spoolmail test CA",
            "-keyout",
            key.to_str().unwrap(),
            "-out",
            cert.to_str().unwrap(),
        ]);
        Ca {
            dir: dir.to_path_buf(),
        }
    }

    fn root(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// A certificate for `name` signed by the CA: (cert, key).
    fn issue(&self, name: &str) -> (PathBuf, PathBuf) {
        let (cert, key) = (
            self.dir.join(format!("{name}.crt")),
            self.dir.join(format!("{name}.key")),
        );
        let (ca_cert, ca_key) = (self.root(), self.dir.join("ca.key"));
        openssl(&[
            "req",
            "-x509",
            "-CA",
            ca_cert.to_str().unwrap(),
            "-CAkey",
            ca_key.to_str().unwrap(),
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN={name}"),
            "-addext",
            &format!("subjectAltName=DNS:{name}"),
            "-addext",
            "basicConstraints=critical,CA:FALSE",
            "-keyout",
            key.to_str().unwrap(),
            "-out",
            cert.to_str().unwrap(),
        ]);
        (cert, key)
    }
}

/// tests/peers/https.py serving the policy in `policy` (read at each
/// request) on 127.0.0.1:443; killed on drop.
struct PolicyServer {
    child: Child,
    log: PathBuf,
}

impl PolicyServer {
    fn start(ca: &Ca, dir: &Path, policy: &Path) -> PolicyServer {
        PolicyServer::start_as(ca, dir, policy, "mta-sts.sts.test")
    }

    /// [`PolicyServer::start`] with a certificate for `name`.
    fn start_as(ca: &Ca, dir: &Path, policy: &Path, name: &str) -> PolicyServer {
        let (cert, key) = ca.issue(name);
        let log = dir.join("https.log");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/https.py");
        let mut cmd = Command::new("python3");
        cmd.arg(script)
            .arg("--cert")
            .arg(cert)
            .arg("--key")
            .arg(key)
            .arg("--policy")
            .arg(policy)
            .arg("--log")
            .arg(&log);
        let (child, port) = start_peer(&mut cmd, "tests/peers/https.py");
        assert_eq!(port, 443);
        PolicyServer { child, log }
    }

    /// Policy requests received so far.
    fn fetches(&self) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with("GET /.well-known/mta-sts.txt mta-sts.sts.test"))
            .count()
    }
}

impl Drop for PolicyServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A policy file for sts.test.
fn policy(mode: &str, mx: &str, max_age: u64) -> String {
    format!("version: STSv1\r\nmode: {mode}\r\nmx: {mx}\r\nmax_age: {max_age}\r\n")
}

/// The DNS of sts.test: its MX, the policy host, and (with `id`) the
/// `_mta-sts` record announcing a policy.
fn dns(id: Option<&str>) -> DnsServer {
    let record = id.map(|id| format!("_mta-sts.sts.test TXT \"v=STSv1; id={id}\""));
    let mut records = vec![
        "sts.test MX 10 mx.sts.test",
        "mx.sts.test A 127.0.0.1",
        "mta-sts.sts.test A 127.0.0.1",
    ];
    records.extend(record.as_deref());
    DnsServer::start(&records, &[])
}

/// Everything one case needs: the CA, the MX (STARTTLS with a
/// certificate for `mx_cert_name`), the log, and spoolmail's world.
struct Case {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    ca: Ca,
    mx: SmtpServer,
    syslog: SyslogReceiver,
    world: World,
}

impl Case {
    fn new(dns: &DnsServer, mx_cert_name: &str) -> Case {
        Case::with(dns, mx_cert_name, "")
    }

    /// [`Case::new`] with `extra` configuration lines.
    fn with(dns: &DnsServer, mx_cert_name: &str, extra: &str) -> Case {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let ca = Ca::new(&dir);
        let (cert, key) = ca.issue(mx_cert_name);
        let mx = SmtpServer::start(
            &dir,
            &["--starttls", cert.to_str().unwrap(), key.to_str().unwrap()],
        );
        let syslog = SyslogReceiver::start(&dir);
        let world = World::with_config(&format!(
            "resolver = {}\nsmtp_port = {}\ntls = mta-sts\ntls_ca_file = {}\nretry_min = 1h\n{}{}",
            dns.addr,
            mx.port,
            ca.root().display(),
            syslog.config_line(),
            extra.replace("MX_PORT", &mx.port.to_string()),
        ));
        Case {
            _dir: tmp,
            dir,
            ca,
            mx,
            syslog,
            world,
        }
    }

    /// Serves `policy(mode, mx, max_age)` from a file of its own over
    /// HTTPS as mta-sts.sts.test: the file (which the test may rewrite)
    /// and the server.
    fn serve_policy(&self, mode: &str, mx: &str, max_age: u64) -> (PathBuf, PolicyServer) {
        let file = self.dir.join("policy");
        std::fs::write(&file, policy(mode, mx, max_age)).unwrap();
        let server = PolicyServer::start(&self.ca, &self.dir, &file);
        (file, server)
    }

    /// Sends one message to bob@sts.test, delivering at once (-odi):
    /// the exit code.
    fn send(&self) -> i32 {
        let out = self.world.run(
            "sendmail",
            &["-odi", "-f", "s@example.org", "bob@sts.test"],
            MSG,
        );
        out.status.code().unwrap_or(-1)
    }

    /// The log lines about bob@sts.test's outcomes, once `n` are there.
    fn outcomes(&self, n: usize) -> Vec<String> {
        let lines = self.syslog.wait_lines(WAIT, |lines| {
            lines
                .iter()
                .filter(|l| l.contains("to=<bob@sts.test>"))
                .count()
                >= n
        });
        lines
            .into_iter()
            .filter(|l| l.contains("to=<bob@sts.test>"))
            .collect()
    }

    /// The one cached policy file in the spool's hosts/.
    fn cached_policy_file(&self) -> PathBuf {
        let cache: Vec<PathBuf> = std::fs::read_dir(self.world.spool.join("hosts"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with("sts-"))
            .collect();
        assert_eq!(cache.len(), 1, "{cache:?}");
        cache[0].clone()
    }

    /// The one cached policy, as stored.
    fn cached_policy(&self) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(self.cached_policy_file()).unwrap()).unwrap()
    }

    /// Moves the cached policy's fetch time `secs` back (its age, not a
    /// sleep).
    fn age_cached_policy(&self, secs: u64) {
        let mut cached = self.cached_policy();
        cached["fetched"] = (cached["fetched"].as_u64().unwrap() - secs).into();
        std::fs::write(
            self.cached_policy_file(),
            serde_json::to_vec(&cached).unwrap(),
        )
        .unwrap();
    }

    /// Every log line containing `what`.
    fn log_lines(&self, what: &str) -> Vec<String> {
        self.syslog
            .lines()
            .into_iter()
            .filter(|l| l.contains(what))
            .collect()
    }
}

#[test]
fn enforce_delivers_to_a_listed_mx_over_verified_tls() {
    in_own_network(SKIP, || {
        let dns = dns(Some("20260101"));
        let case = Case::new(&dns, "mx.sts.test");
        let (_, https) = case.serve_policy("enforce", "mx.sts.test", 86400);
        assert_eq!(case.send(), 0);
        let got = case.mx.messages();
        assert_eq!(got.len(), 1);
        assert!(got[0].tls, "delivered over TLS");
        let lines = case.outcomes(1);
        println!("{}", lines[0]);
        assert!(lines[0].contains("status=sent"), "{lines:?}");
        assert!(lines[0].ends_with(", tls=mta-sts"), "{lines:?}");
        assert_eq!(https.fetches(), 1);
        let fetched = case.log_lines("MTA-STS policy id 20260101 fetched");
        assert_eq!(fetched.len(), 1, "{fetched:?}");
        println!("{}", fetched[0]);
    });
}

#[test]
fn enforce_refuses_an_mx_not_in_the_policy_without_connecting() {
    in_own_network(SKIP, || {
        let dns = dns(Some("20260101"));
        let case = Case::new(&dns, "mx.sts.test");
        let (_, _https) = case.serve_policy("enforce", "mx1.elsewhere.test", 86400);
        assert_eq!(case.send(), 75, "deferred");
        assert_eq!(case.mx.connections(), 0, "the MX was never connected to");
        let lines = case.outcomes(1);
        println!("{}", lines[0]);
        assert!(lines[0].contains("status=deferred"), "{lines:?}");
        assert!(
            lines[0].contains("MTA-STS policy of sts.test (id 20260101) in enforce mode"),
            "{lines:?}"
        );
        assert!(lines[0].ends_with(", tls=mta-sts"), "{lines:?}");
        let q = case.world.mailq_json();
        let r = &q[0]["recipients"][0];
        assert_eq!(r["status"], "deferred");
        assert_eq!(r["tls"], "mta-sts");
        assert!(
            r["last_error"]
                .as_str()
                .unwrap()
                .contains("not in its mx list (mx1.elsewhere.test)"),
            "{r}"
        );
        let text = String::from_utf8(case.world.run("mailq", &[], b"").stdout).unwrap();
        println!("{text}");
        assert!(
            text.contains("<bob@sts.test> deferred tls=mta-sts"),
            "{text}"
        );
    });
}

#[test]
fn enforce_defers_when_the_mx_certificate_is_not_for_its_name() {
    in_own_network(SKIP, || {
        let dns = dns(Some("20260101"));
        // Signed by the trusted CA, but for another name.
        let case = Case::new(&dns, "wrong.sts.test");
        let (_, _https) = case.serve_policy("enforce", "mx.sts.test", 86400);
        assert_eq!(case.send(), 75, "deferred");
        assert!(case.mx.messages().is_empty(), "nothing delivered");
        let lines = case.outcomes(1);
        println!("{}", lines[0]);
        assert!(lines[0].contains("status=deferred"), "{lines:?}");
        assert!(
            lines[0].contains("required by the MTA-STS policy of sts.test"),
            "{lines:?}"
        );
        assert!(lines[0].ends_with(", tls=mta-sts"), "{lines:?}");
        let q = case.world.mailq_json();
        assert_eq!(q[0]["recipients"][0]["tls"], "mta-sts");
    });
}

#[test]
fn testing_mode_delivers_despite_the_bad_certificate_and_says_so_once() {
    in_own_network(SKIP, || {
        let dns = dns(Some("20260101"));
        let case = Case::new(&dns, "wrong.sts.test");
        let (_, _https) = case.serve_policy("testing", "mx.sts.test", 86400);
        assert_eq!(case.send(), 0);
        let got = case.mx.messages();
        assert_eq!(got.len(), 1);
        assert!(got[0].tls, "still over (unauthenticated) TLS");
        let lines = case.outcomes(1);
        println!("{}", lines[0]);
        assert!(lines[0].contains("status=sent"), "{lines:?}");
        assert!(lines[0].ends_with(", tls=opportunistic"), "{lines:?}");
        let reported = case.log_lines("enforcing it would refuse this host");
        assert_eq!(reported.len(), 1, "{reported:?}");
        println!("{}", reported[0]);
        assert!(
            reported[0].contains("MTA-STS policy of sts.test (id 20260101) in testing mode"),
            "{reported:?}"
        );
    });
}

#[test]
fn no_policy_published_means_opportunistic_tls() {
    in_own_network(SKIP, || {
        let dns = dns(None);
        // A certificate no policy vouches for: opportunistic TLS takes it.
        let case = Case::new(&dns, "wrong.sts.test");
        assert_eq!(case.send(), 0);
        let got = case.mx.messages();
        assert_eq!(got.len(), 1);
        assert!(got[0].tls);
        let lines = case.outcomes(1);
        println!("{}", lines[0]);
        assert!(lines[0].ends_with("tls=opportunistic"), "{lines:?}");
        assert!(case.log_lines("MTA-STS").is_empty());
    });
}

#[test]
fn the_cache_is_used_then_refetched_after_max_age_or_a_new_id() {
    in_own_network(SKIP, || {
        let first_dns = dns(Some("one"));
        let case = Case::new(&first_dns, "mx.sts.test");
        let (file, https) = case.serve_policy("enforce", "mx.sts.test", 600);

        // Fetched once, then taken from the cache while the id holds.
        assert_eq!(case.send(), 0);
        assert_eq!(case.send(), 0);
        assert_eq!(https.fetches(), 1, "the second delivery used the cache");
        assert_eq!(case.cached_policy()["id"], "one");

        // max_age passed (the fetch time moved back, not a sleep): the
        // policy is fetched again, and the new one, which no longer
        // lists the MX, applies.
        case.age_cached_policy(601);
        std::fs::write(&file, policy("enforce", "mx2.sts.test", 600)).unwrap();
        assert_eq!(case.send(), 75, "the refetched policy refuses the MX");
        assert_eq!(https.fetches(), 2, "refetched after max_age");
        assert_eq!(case.mx.messages().len(), 2);

        // A new id is fetched at once, before max_age. (The new DNS
        // server announces it; the config points at it.)
        let second_dns = dns(Some("two"));
        let text = std::fs::read_to_string(&case.world.config).unwrap();
        let text = text.replace(
            &format!("resolver = {}", first_dns.addr),
            &format!("resolver = {}", second_dns.addr),
        );
        std::fs::write(&case.world.config, text).unwrap();
        std::fs::write(&file, policy("enforce", "mx.sts.test", 600)).unwrap();
        assert_eq!(case.send(), 0, "the policy of id two lists the MX again");
        assert_eq!(https.fetches(), 3, "refetched for the new id");

        // A fetch that fails leaves the unexpired cached policy in force
        // (RFC 8461 §5.1): id three announced, nothing served.
        let third_dns = dns(Some("three"));
        let text = std::fs::read_to_string(&case.world.config).unwrap();
        let text = text.replace(
            &format!("resolver = {}", second_dns.addr),
            &format!("resolver = {}", third_dns.addr),
        );
        std::fs::write(&case.world.config, text).unwrap();
        std::fs::remove_file(&file).unwrap();
        assert_eq!(case.send(), 0, "delivered under the cached policy");
        assert_eq!(https.fetches(), 4);
        let lines = case.outcomes(5);
        for l in &lines {
            println!("{l}");
        }
        assert!(lines[4].contains("status=sent") && lines[4].ends_with(", tls=mta-sts"));
        let failed = case.log_lines("MTA-STS policy id three not fetched");
        assert_eq!(failed.len(), 1, "{failed:?}");
        println!("{}", failed[0]);
    });
}

#[test]
fn an_expired_cached_policy_that_cannot_be_refetched_is_no_policy() {
    // RFC 8461 §5.1: no valid policy fetched and no unexpired one cached
    // means delivering as though the domain published none. The cached
    // policy would refuse the MX; once past its max_age, with the policy
    // server gone, it must not.
    in_own_network(SKIP, || {
        let dns = dns(Some("one"));
        let case = Case::new(&dns, "mx.sts.test");
        let (file, https) = case.serve_policy("enforce", "mx2.sts.test", 600);
        assert_eq!(case.send(), 75, "the fresh policy refuses the MX");
        assert_eq!(case.mx.connections(), 0);
        assert_eq!(case.cached_policy()["id"], "one");

        case.age_cached_policy(601);
        std::fs::remove_file(&file).unwrap();
        assert_eq!(case.send(), 0, "the expired policy no longer applies");
        assert_eq!(https.fetches(), 2, "a refetch was tried");
        assert_eq!(case.mx.messages().len(), 1);
        let lines = case.outcomes(2);
        println!("{}", lines[1]);
        assert!(
            lines[1].contains("status=sent") && lines[1].ends_with(", tls=opportunistic"),
            "{lines:?}"
        );
        let failed = case.log_lines("MTA-STS policy id one not fetched");
        assert_eq!(failed.len(), 1, "{failed:?}");
    });
}

#[test]
fn a_policy_server_whose_certificate_is_not_for_its_name_gives_no_policy() {
    in_own_network(SKIP, || {
        let dns = dns(Some("20260101"));
        let case = Case::new(&dns, "mx.sts.test");
        let file = case.dir.join("policy");
        // Were this policy believed, the MX would be refused.
        std::fs::write(&file, policy("enforce", "mx1.elsewhere.test", 86400)).unwrap();
        let _https = PolicyServer::start_as(&case.ca, &case.dir, &file, "www.sts.test");
        assert_eq!(case.send(), 0, "delivered as without a policy");
        let lines = case.outcomes(1);
        println!("{}", lines[0]);
        assert!(lines[0].ends_with(", tls=opportunistic"), "{lines:?}");
        let failed = case.log_lines("MTA-STS policy id 20260101 not fetched");
        assert_eq!(failed.len(), 1, "{failed:?}");
        println!("{}", failed[0]);
    });
}

#[test]
fn a_smarthost_is_not_mx_delivery_and_gets_no_policy() {
    in_own_network(SKIP, || {
        let dns = dns(Some("20260101"));
        // The smarthost is the same server, reached as a relay (its
        // own TLS mode: none here).
        let case = Case::with(
            &dns,
            "mx.sts.test",
            "smarthost = 127.0.0.1:MX_PORT\nsmarthost_tls = none\n",
        );
        let (_, https) = case.serve_policy("enforce", "mx1.elsewhere.test", 86400);
        assert_eq!(case.send(), 0);
        assert_eq!(https.fetches(), 0, "no policy looked for");
        let lines = case.outcomes(1);
        println!("{}", lines[0]);
        assert!(lines[0].ends_with(", tls=none"), "{lines:?}");
    });
}

#[test]
fn roots_queue_run_removes_expired_cached_policies() {
    if !root_or_skip("hosts/ is swept by root's queue run") {
        return;
    }
    let world = World::with_config("tls = mta-sts\n");
    let hosts = world.spool.join("hosts");
    std::fs::create_dir_all(&hosts).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let cache = |domain: &str, fetched: u64| {
        let path = hosts.join(format!("sts-mx+{domain}.policy"));
        let record = serde_json::json!({
            "id": "a1",
            "fetched": fetched,
            "policy": policy("enforce", &format!("mx.{domain}"), 600),
        });
        std::fs::write(&path, serde_json::to_vec(&record).unwrap()).unwrap();
        path
    };
    let expired = cache("old.test", now - 601);
    let fresh = cache("new.test", now - 10);
    let out = world.run("sendmail", &["-q"], b"");
    assert!(out.status.success(), "{out:?}");
    assert!(!expired.exists(), "fetched + max_age past: removed");
    assert!(fresh.exists(), "unexpired: kept");
}

#[test]
fn a_queue_run_looks_up_a_domains_txt_record_once() {
    in_own_network(SKIP, || {
        // The policy refuses the MX: no connection is made, so each
        // message has the MX hosts and the policy decided afresh. The
        // worker's resolver keeps the TXT answer for its TTL (hickory's
        // cache): one query for the run, not one per message.
        let dns = DnsServer::start_hostile(
            &[
                "sts.test MX 10 mx.sts.test",
                "mx.sts.test A 127.0.0.1",
                "mta-sts.sts.test A 127.0.0.1",
                "_mta-sts.sts.test TXT \"v=STSv1; id=20260101\"",
            ],
            &[],
            &[],
        );
        let case = Case::with(&dns, "mx.sts.test", "max_connections = 1\n");
        let (_, _https) = case.serve_policy("enforce", "mx1.elsewhere.test", 86400);
        for _ in 0..3 {
            let out = case.world.run(
                "sendmail",
                &["-odq", "-f", "s@example.org", "bob@sts.test"],
                MSG,
            );
            assert!(out.status.success(), "{out:?}");
        }
        let out = case.world.run("sendmail", &["-q"], b"");
        assert!(out.status.success(), "{out:?}");
        let lines = case.outcomes(3);
        assert!(
            lines.iter().all(|l| l.contains("status=deferred")),
            "{lines:?}"
        );
        let txt: Vec<_> = dns
            .queries()
            .into_iter()
            .filter(|(name, kind)| name == "_mta-sts.sts.test" && kind == "TXT")
            .collect();
        println!("TXT lookups for 3 messages: {}", txt.len());
        assert_eq!(txt.len(), 1, "{txt:?}");
    });
}
