//! DANE for MX delivery (RFC 7672), end to end: a DNSSEC-signed test
//! zone served by a real NSD (tests/peers/signed_dns.py), TLSA records
//! matching or not the STARTTLS certificate of a real aiosmtpd.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use common::World;
use common::certs::issue;
use common::signed_dns::SignedDns;
use common::smtpd::SmtpServer;
use common::syslog::SyslogReceiver;
use openssl::sha::sha256;
use openssl::x509::X509;
use spoolmail::runner::dane::{HostPolicy, Validator};
use spoolmail::smtp::dane::Tlsa;
use spoolmail::smtp::{ClientSettings, ErrorKind, Security, Session, SmtpError, Timeouts};

/// The deadline of a validator's decision in these tests.
fn deadline() -> std::time::Instant {
    std::time::Instant::now() + Duration::from_secs(20)
}

const TLSA_X: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

#[test]
fn validator_sees_secure_insecure_and_bogus() {
    let dir = tempfile::tempdir().unwrap();
    let Some(dns) = SignedDns::start(
        dir.path(),
        &[
            "example.test. 60 IN MX 10 mx.example.test.",
            "mx.example.test. 60 IN A 127.0.0.1",
            &format!("_25._tcp.mx.example.test. 60 IN TLSA 3 1 1 {TLSA_X}"),
            "bogus.test. 60 IN MX 10 mx.bogus.test.",
            "mx.bogus.test. 60 IN A 127.0.0.1",
            &format!("_25._tcp.mx.bogus.test. 60 IN TLSA 3 1 1 {TLSA_X}"),
            "none.test. 60 IN MX 10 mx.none.test.",
            "mx.none.test. 60 IN A 127.0.0.1",
        ],
        &[
            "unsigned.test. 60 IN MX 10 mx.unsigned.test.",
            "mx.unsigned.test. 60 IN A 127.0.0.1",
            &format!("_25._tcp.mx.unsigned.test. 60 IN TLSA 3 1 1 {TLSA_X}"),
        ],
        &["_25._tcp.mx.bogus.test."],
    ) else {
        return;
    };
    let v = Validator::new(Some(dns.addr), Duration::from_secs(5), Some(&dns.anchor)).unwrap();
    let secure = v.policy("example.test", "mx.example.test", 25, deadline());
    println!("secure: {secure:?}");
    let bogus = v.policy("bogus.test", "mx.bogus.test", 25, deadline());
    println!("bogus: {bogus:?}");
    let none = v.policy("none.test", "mx.none.test", 25, deadline());
    println!("none: {none:?}");
    let unsigned = v.policy("unsigned.test", "mx.unsigned.test", 25, deadline());
    println!("unsigned: {unsigned:?}");
    assert!(
        matches!(secure, HostPolicy::Dane(ref d)
            if d.records.len() == 1 && d.base == "mx.example.test"
                && d.addresses == ["127.0.0.1".parse::<std::net::IpAddr>().unwrap()]),
        "{secure:?}"
    );
    assert!(matches!(bogus, HostPolicy::Defer(_)), "{bogus:?}");
    assert!(matches!(none, HostPolicy::NoDane(_)), "{none:?}");
    assert!(matches!(unsigned, HostPolicy::NoDane(_)), "{unsigned:?}");
}

/// The MX host name every test's certificates and records use.
const MX: &str = "mx.example.test";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn cert(dir: &Path, file: &str) -> X509 {
    X509::from_pem(&std::fs::read(dir.join(file)).unwrap()).unwrap()
}

/// TLSA 3 1 1 data: SHA-256 of the certificate's public key (SPKI).
fn spki_sha256(dir: &Path, file: &str) -> Vec<u8> {
    sha256(
        &cert(dir, file)
            .public_key()
            .unwrap()
            .public_key_to_der()
            .unwrap(),
    )
    .to_vec()
}

/// TLSA 2 0 1 data: SHA-256 of the whole certificate.
fn cert_sha256(dir: &Path, file: &str) -> Vec<u8> {
    sha256(&cert(dir, file).to_der().unwrap()).to_vec()
}

/// An aiosmtpd offering STARTTLS with `name`'s chain.
fn server(dir: &Path, name: &str) -> SmtpServer {
    let chain = dir.join(format!("{name}.chain"));
    let key = dir.join(format!("{name}.key"));
    SmtpServer::start(
        dir,
        &["--starttls", chain.to_str().unwrap(), key.to_str().unwrap()],
    )
}

fn dane_settings(tlsa: Vec<Tlsa>) -> ClientSettings {
    let t = Duration::from_secs(10);
    ClientSettings {
        helo_name: "client.test".into(),
        security: Security::Dane,
        credentials: None,
        ca_file: None,
        tlsa,
        dane_names: Vec::new(),
        timeouts: Timeouts {
            connect: t,
            command: t,
            data_block: t,
            final_dot: t,
        },
    }
}

fn tlsa(usage: u8, selector: u8, matching: u8, data: Vec<u8>) -> Tlsa {
    Tlsa {
        usage,
        selector,
        matching,
        data,
    }
}

/// A DANE session to `server` as the MX host [`MX`] with `records`.
fn session(server: &SmtpServer, records: Vec<Tlsa>) -> Result<Session, SmtpError> {
    let addr = SocketAddr::from(([127, 0, 0, 1], server.port));
    Session::connect(addr, MX, &dane_settings(records))
}

#[test]
fn dane_ee_matching_the_leaf_key_authenticates() {
    let dir = tempfile::tempdir().unwrap();
    issue(dir.path(), &[MX]);
    let s = server(dir.path(), MX);
    let data = spki_sha256(dir.path(), &format!("{MX}.crt"));
    let session = session(&s, vec![tlsa(3, 1, 1, data)]).expect("DANE-EE 3 1 1 matches");
    assert!(session.tls_active());
    session.quit();
}

#[test]
fn dane_ee_ignores_the_name_in_the_certificate() {
    // RFC 7672 §3.1.1: DANE-EE binds the key, not a name.
    let dir = tempfile::tempdir().unwrap();
    issue(dir.path(), &["other.test"]);
    let s = server(dir.path(), "other.test");
    let data = spki_sha256(dir.path(), "other.test.crt");
    let session = session(&s, vec![tlsa(3, 1, 1, data)]).expect("DANE-EE ignores names");
    assert!(session.tls_active());
    session.quit();
}

/// A self-signed certificate for `name` that expired yesterday, and its
/// key, as `NAME.chain` and `NAME.key` in `dir` (openssl(1) cannot date
/// one in the past).
fn expired(dir: &Path, name: &str) {
    use openssl::asn1::Asn1Time;
    use openssl::ec::{EcGroup, EcKey};
    use openssl::hash::MessageDigest;
    use openssl::nid::Nid;
    use openssl::pkey::PKey;
    use openssl::x509::{X509Builder, X509NameBuilder};
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
    let key = PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap();
    let mut subject = X509NameBuilder::new().unwrap();
    subject.append_entry_by_text("CN", name).unwrap();
    let subject = subject.build();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let mut b = X509Builder::new().unwrap();
    b.set_version(2).unwrap();
    b.set_subject_name(&subject).unwrap();
    b.set_issuer_name(&subject).unwrap();
    b.set_pubkey(&key).unwrap();
    b.set_not_before(&Asn1Time::from_unix(now - 3 * 86400).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::from_unix(now - 86400).unwrap())
        .unwrap();
    b.sign(&key, MessageDigest::sha256()).unwrap();
    let cert = b.build();
    std::fs::write(dir.join(format!("{name}.chain")), cert.to_pem().unwrap()).unwrap();
    std::fs::write(dir.join(format!("{name}.crt")), cert.to_pem().unwrap()).unwrap();
    std::fs::write(
        dir.join(format!("{name}.key")),
        key.private_key_to_pem_pkcs8().unwrap(),
    )
    .unwrap();
}

#[test]
fn dane_ee_ignores_the_dates_of_the_certificate() {
    // RFC 7672 §3.1.1: an expired certificate whose digest is published
    // is as good as the record; here the whole certificate (3 0 1).
    let dir = tempfile::tempdir().unwrap();
    expired(dir.path(), MX);
    let s = server(dir.path(), MX);
    let data = cert_sha256(dir.path(), &format!("{MX}.crt"));
    let session = session(&s, vec![tlsa(3, 0, 1, data)]).expect("DANE-EE ignores dates");
    assert!(session.tls_active());
    session.quit();
}

#[test]
fn a_certificate_matching_no_record_is_a_tlsa_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    issue(dir.path(), &[MX]);
    let s = server(dir.path(), MX);
    let e = session(&s, vec![tlsa(3, 1, 1, vec![0xab; 32])])
        .err()
        .expect("no match");
    assert_eq!(e.kind, ErrorKind::Tls);
    assert!(e.message.contains("TLSA mismatch"), "{}", e.message);
    assert!(
        s.mail_commands().is_empty(),
        "nothing sent after the failed handshake"
    );
}

#[test]
fn dane_ta_of_the_issuing_ca_authenticates_a_leaf_naming_the_mx_host() {
    let dir = tempfile::tempdir().unwrap();
    issue(dir.path(), &[MX]);
    let s = server(dir.path(), MX);
    let data = cert_sha256(dir.path(), "ca.pem");
    let session = session(&s, vec![tlsa(2, 0, 1, data)]).expect("DANE-TA 2 0 1 matches");
    assert!(session.tls_active());
    session.quit();
}

#[test]
fn dane_ta_refuses_a_leaf_that_does_not_name_the_mx_host() {
    // RFC 7672 §3.2.2: with DANE-TA the name is checked.
    let dir = tempfile::tempdir().unwrap();
    issue(dir.path(), &["other.test"]);
    let s = server(dir.path(), "other.test");
    let data = cert_sha256(dir.path(), "ca.pem");
    let e = session(&s, vec![tlsa(2, 0, 1, data)])
        .err()
        .expect("wrong name");
    assert_eq!(e.kind, ErrorKind::Tls);
    assert!(e.message.contains("TLSA mismatch"), "{}", e.message);
}

#[test]
fn published_records_without_starttls_are_refused_not_sent_in_plain_text() {
    let dir = tempfile::tempdir().unwrap();
    let s = SmtpServer::start(dir.path(), &[]);
    let e = session(&s, vec![tlsa(3, 1, 1, vec![0xab; 32])])
        .err()
        .expect("no STARTTLS");
    assert_eq!(e.kind, ErrorKind::Tls);
    assert_eq!(
        e.message,
        "STARTTLS not offered but DANE TLSA records published"
    );
    assert!(s.mail_commands().is_empty());
}

#[test]
fn only_unusable_records_still_make_tls_mandatory() {
    // RFC 7672 §2.2: a PKIX-EE record is unusable; TLS is still required,
    // unauthenticated.
    let dir = tempfile::tempdir().unwrap();
    issue(dir.path(), &[MX]);
    let s = server(dir.path(), MX);
    let session = session(&s, vec![tlsa(1, 1, 1, vec![0xab; 32])]).expect("encrypted");
    assert!(session.tls_active());
    session.quit();
    let plain = SmtpServer::start(dir.path(), &[]);
    assert!(session_err(&plain, vec![tlsa(1, 1, 1, vec![0xab; 32])]));
}

fn session_err(server: &SmtpServer, records: Vec<Tlsa>) -> bool {
    session(server, records).is_err()
}

// End to end: the built binary with `tls = dane`, the signed zone in NSD
// (trusted through `dnssec_trust_anchor`) and an aiosmtpd with STARTTLS.

const MSG: &[u8] = b"Subject: dane\n\nbody\n";
const WAIT: Duration = Duration::from_secs(20);

/// One end-to-end case: the MX host's server, its signed zone, the log
/// and spoolmail's world.
struct Case {
    dir: tempfile::TempDir,
    mx: SmtpServer,
    _dns: SignedDns,
    /// The resolver in front of the signed zone, when the case has one.
    front: Option<common::dns::DnsServer>,
    syslog: SyslogReceiver,
    world: World,
}

/// What stands between spoolmail and the signed zone's NSD: nothing, or
/// a forwarding resolver (tests/peers/dns.py --forward) answering
/// SERVFAIL for `servfail` (where "{port}" stands for the MX's port)
/// and `forged` records to queries without the
/// DO bit.
#[derive(Default)]
struct Front<'a> {
    servfail: Vec<String>,
    forged: Vec<&'a str>,
}

impl Case {
    /// An MX [`MX`] for example.test (and mx.unsigned.test for
    /// unsigned.test) serving `cert_name`'s chain over STARTTLS (or no
    /// STARTTLS when None), its TLSA records from `tlsa` — each a
    /// function of the directory holding the certificates, giving "U S M
    /// HEX" — in the signed zone; `tamper` the TLSA name to break. None
    /// when NSD or ldnsutils is missing.
    fn start(
        cert_name: Option<&str>,
        tlsa: &[&dyn Fn(&Path) -> String],
        tamper: bool,
    ) -> Option<Case> {
        let records = |dir: &Path, port: u16| {
            let owner = format!("_{port}._tcp.{MX}.");
            let mut signed = vec![
                "example.test. 60 IN MX 10 mx.example.test.".to_string(),
                "mx.example.test. 60 IN A 127.0.0.1".to_string(),
            ];
            signed.extend(
                tlsa.iter()
                    .map(|t| format!("{owner} 60 IN TLSA {}", t(dir))),
            );
            signed
        };
        Case::with(cert_name, &records, tamper, None)
    }

    /// [`Case::start`] with the signed zone's records made by `records`
    /// (of the certificates' directory and the MX's port), and `front`
    /// between spoolmail and NSD when Some.
    fn with(
        cert_name: Option<&str>,
        records: &dyn Fn(&Path, u16) -> Vec<String>,
        tamper: bool,
        front: Option<Front>,
    ) -> Option<Case> {
        let dir = tempfile::tempdir().unwrap();
        issue(dir.path(), &[MX, "other.test"]);
        let mx = match cert_name {
            Some(name) => server(dir.path(), name),
            None => SmtpServer::start(dir.path(), &[]),
        };
        let owner = format!("_{}._tcp.{MX}.", mx.port);
        let signed = records(dir.path(), mx.port);
        // In the unsigned zone, records that would not match: an
        // insecure zone's TLSA records are not DANE's to use.
        let unsigned = [
            "unsigned.test. 60 IN MX 10 mx.unsigned.test.".to_string(),
            "mx.unsigned.test. 60 IN A 127.0.0.1".to_string(),
            format!(
                "_{}._tcp.mx.unsigned.test. 60 IN TLSA 3 1 1 {}",
                mx.port,
                "ab".repeat(32)
            ),
        ];
        let signed: Vec<&str> = signed.iter().map(String::as_str).collect();
        let unsigned: Vec<&str> = unsigned.iter().map(String::as_str).collect();
        let tampered = [owner.as_str()];
        let dns = SignedDns::start(
            dir.path(),
            &signed,
            &unsigned,
            if tamper { &tampered } else { &[] },
        )?;
        let front = front.map(|f| {
            // "{port}" in a name stands for the MX's port.
            let servfail: Vec<String> = f
                .servfail
                .iter()
                .map(|n| n.replace("{port}", &mx.port.to_string()))
                .collect();
            let servfail: Vec<&str> = servfail.iter().map(String::as_str).collect();
            common::dns::DnsServer::start_front(dns.addr, &servfail, &f.forged)
        });
        let resolver = front.as_ref().map_or(dns.addr, |f| f.addr);
        let syslog = SyslogReceiver::start(dir.path());
        let world = World::with_config(&format!(
            "resolver = {}\nsmtp_port = {}\ntls = dane\ndnssec_trust_anchor = {}\nretry_min = 1h\n{}",
            resolver,
            mx.port,
            dns.anchor.display(),
            syslog.config_line(),
        ));
        Some(Case {
            dir,
            mx,
            _dns: dns,
            front,
            syslog,
            world,
        })
    }

    /// Sends one message to `rcpt`, delivering at once: the exit code.
    fn send(&self, rcpt: &str) -> i32 {
        let out = self
            .world
            .run("sendmail", &["-odi", "-f", "s@example.org", rcpt], MSG);
        out.status.code().unwrap_or(-1)
    }

    /// Sends one message to `rcpt` and checks it was delivered, once,
    /// with `tls=TLS` on its log line.
    fn assert_delivered(&self, rcpt: &str, tls: &str) {
        assert_eq!(self.send(rcpt), 0);
        assert_eq!(self.mx.messages().len(), 1);
        let line = self.outcome(rcpt);
        assert!(
            line.contains("status=sent") && line.ends_with(&format!(", tls={tls}")),
            "{line}"
        );
    }

    /// The first log line about `rcpt`'s outcome.
    fn outcome(&self, rcpt: &str) -> String {
        let to = format!("to=<{rcpt}>");
        let lines = self
            .syslog
            .wait_lines(WAIT, |lines| lines.iter().any(|l| l.contains(&to)));
        let line = lines
            .into_iter()
            .find(|l| l.contains(&to))
            .expect("an outcome line");
        println!("{line}");
        line
    }
}

fn ee_record(dir: &Path) -> String {
    format!("3 1 1 {}", hex(&spki_sha256(dir, &format!("{MX}.crt"))))
}

fn ta_record(dir: &Path) -> String {
    format!("2 0 1 {}", hex(&cert_sha256(dir, "ca.pem")))
}

fn wrong_record(_: &Path) -> String {
    format!("3 1 1 {}", "ab".repeat(32))
}

#[test]
fn tlsa_3_1_1_matching_the_certificate_delivers_with_tls_dane() {
    let Some(case) = Case::start(Some(MX), &[&ee_record], false) else {
        return;
    };
    assert_eq!(case.send("bob@example.test"), 0);
    let got = case.mx.messages();
    assert_eq!(got.len(), 1);
    assert!(got[0].tls, "delivered over TLS");
    let line = case.outcome("bob@example.test");
    assert!(line.contains("status=sent"), "{line}");
    assert!(line.ends_with(", tls=dane"), "{line}");
}

#[test]
fn tlsa_not_matching_defers_and_sends_nothing() {
    let Some(case) = Case::start(Some(MX), &[&wrong_record], false) else {
        return;
    };
    assert_eq!(case.send("bob@example.test"), 75, "deferred");
    assert!(case.mx.mail_commands().is_empty(), "no MAIL, no DATA");
    assert!(case.mx.messages().is_empty());
    let line = case.outcome("bob@example.test");
    assert!(line.contains("status=deferred"), "{line}");
    assert!(line.contains("TLSA mismatch"), "{line}");
    assert!(line.ends_with(", tls=dane"), "{line}");
    assert_eq!(case.world.queue_ids().len(), 1, "still queued");
    let q = case.world.mailq_json();
    assert_eq!(q[0]["recipients"][0]["tls"], "dane", "{q:?}");
}

#[test]
fn dane_ta_of_the_issuing_ca_delivers() {
    let Some(case) = Case::start(Some(MX), &[&ta_record], false) else {
        return;
    };
    case.assert_delivered("bob@example.test", "dane");
}

#[test]
fn dane_ta_with_a_leaf_not_naming_the_mx_host_defers() {
    let Some(case) = Case::start(Some("other.test"), &[&ta_record], false) else {
        return;
    };
    assert_eq!(case.send("bob@example.test"), 75, "deferred");
    assert!(case.mx.mail_commands().is_empty(), "no MAIL, no DATA");
    let line = case.outcome("bob@example.test");
    assert!(
        line.contains("status=deferred") && line.contains("TLSA mismatch"),
        "{line}"
    );
}

#[test]
fn tlsa_published_but_no_starttls_defers() {
    let Some(case) = Case::start(None, &[&ee_record], false) else {
        return;
    };
    assert_eq!(case.send("bob@example.test"), 75, "deferred");
    assert!(
        case.mx.mail_commands().is_empty(),
        "never sent in plain text"
    );
    let line = case.outcome("bob@example.test");
    assert!(
        line.contains("STARTTLS not offered but DANE TLSA records published"),
        "{line}"
    );
}

#[test]
fn an_unsigned_zone_is_delivered_opportunistically() {
    // Its TLSA record would not match: unsigned, it is not DANE's.
    let Some(case) = Case::start(Some(MX), &[], false) else {
        return;
    };
    case.assert_delivered("bob@unsigned.test", "opportunistic");
}

#[test]
fn a_bogus_tlsa_signature_defers_without_connecting() {
    let Some(case) = Case::start(Some(MX), &[&ee_record], true) else {
        return;
    };
    assert_eq!(case.send("bob@example.test"), 75, "deferred");
    assert_eq!(case.mx.connections(), 0, "the MX was never connected to");
    let line = case.outcome("bob@example.test");
    assert!(
        line.contains("status=deferred") && line.contains("DNSSEC-bogus"),
        "{line}"
    );
    assert!(line.ends_with(", tls=dane"), "{line}");
    assert!(case.dir.path().exists());
}

#[test]
fn a_resolver_that_strips_dnssec_records_defers_rather_than_downgrades() {
    // dns.py knows nothing of DNSSEC: no RRSIG, no DNSKEY. Under a trust
    // anchor that says the root is signed, that is an attack's look.
    let dir = tempfile::tempdir().unwrap();
    let Some(signed) = SignedDns::start(dir.path(), &[], &[], &[]) else {
        return;
    };
    let plain = common::dns::DnsServer::start(
        &[
            "example.test MX 10 mx.example.test",
            "mx.example.test A 127.0.0.1",
        ],
        &[],
    );
    let v = Validator::new(
        Some(plain.addr),
        Duration::from_secs(2),
        Some(&signed.anchor),
    )
    .unwrap();
    let policy = v.policy("example.test", "mx.example.test", 25, deadline());
    println!("{policy:?}");
    assert!(matches!(policy, HostPolicy::Defer(_)), "{policy:?}");
}

#[test]
fn a_cnamed_mx_host_with_one_address_family_is_decided_by_its_records() {
    // RFC 7672 §2.2.2: the end of a signed CNAME chain with only A (or
    // only AAAA) records. The signed proof that the other family is
    // absent, found behind the CNAME, is no reason to defer: the host is
    // DANE-protected at its one family's validated addresses.
    let dir = tempfile::tempdir().unwrap();
    let tlsa = |name: &str| format!("_25._tcp.{name}. 60 IN TLSA 3 1 1 {TLSA_X}");
    let Some(dns) = SignedDns::start(
        dir.path(),
        &[
            "v4.test. 60 IN MX 10 mx.v4.test.",
            "mx.v4.test. 60 IN CNAME real.v4.test.",
            "real.v4.test. 60 IN A 127.0.0.1",
            &tlsa("real.v4.test"),
            "v6.test. 60 IN MX 10 mx.v6.test.",
            "mx.v6.test. 60 IN CNAME real.v6.test.",
            "real.v6.test. 60 IN AAAA ::1",
            &tlsa("real.v6.test"),
        ],
        &[],
        &[],
    ) else {
        return;
    };
    let v = Validator::new(Some(dns.addr), Duration::from_secs(5), Some(&dns.anchor)).unwrap();
    for (domain, host, base, address) in [
        ("v4.test", "mx.v4.test", "real.v4.test", "127.0.0.1"),
        ("v6.test", "mx.v6.test", "real.v6.test", "::1"),
    ] {
        let policy = v.policy(domain, host, 25, deadline());
        println!("{host}: {policy:?}");
        assert!(
            matches!(&policy, HostPolicy::Dane(d)
                if d.base == base
                    && d.records.len() == 1
                    && d.addresses == [address.parse::<std::net::IpAddr>().unwrap()]),
            "{host}: {policy:?}"
        );
    }
}

#[test]
fn a_cnamed_mx_host_uses_the_tlsa_records_of_its_expanded_name() {
    // RFC 7672 §2.2.2: mx.example.test is a CNAME for real.example.test
    // in the signed zone; the TLSA records at the expanded name come
    // first (the wrong one at the MX name is not looked at), and the
    // leaf naming the MX name is accepted by DANE-TA (§3.2.2).
    let records = |dir: &Path, port: u16| {
        vec![
            "example.test. 60 IN MX 10 mx.example.test.".to_string(),
            "mx.example.test. 60 IN CNAME real.example.test.".to_string(),
            // IPv4 only: the signed proof of "no AAAA" behind the CNAME
            // (which hickory 0.26 alone takes for bogus) must not defer.
            "real.example.test. 60 IN A 127.0.0.1".to_string(),
            format!(
                "_{port}._tcp.real.example.test. 60 IN TLSA {}",
                ta_record(dir)
            ),
            format!("_{port}._tcp.{MX}. 60 IN TLSA {}", wrong_record(dir)),
        ]
    };
    let Some(case) = Case::with(Some(MX), &records, false, None) else {
        return;
    };
    case.assert_delivered("bob@example.test", "dane");
}

#[test]
fn a_cnamed_mx_host_leading_into_an_unsigned_zone_is_delivered_opportunistically() {
    // RFC 7672 §2.2.2: a signed MX host that is a CNAME into a zone
    // proved unsigned: its address records are not all secure, so DANE
    // does not apply — opportunistic TLS, not a deferral (a mail that
    // could never leave). The record at the MX name would not match:
    // were it used, the delivery would defer.
    let records = |dir: &Path, port: u16| {
        vec![
            "example.test. 60 IN MX 10 mx.example.test.".to_string(),
            "mx.example.test. 60 IN CNAME mx.unsigned.test.".to_string(),
            format!("_{port}._tcp.{MX}. 60 IN TLSA {}", wrong_record(dir)),
        ]
    };
    let Some(case) = Case::with(Some(MX), &records, false, None) else {
        return;
    };
    case.assert_delivered("bob@example.test", "opportunistic");
}

#[test]
fn a_cnamed_mx_host_without_records_at_its_expansion_uses_its_own() {
    // §2.2.2: nothing at the expanded name, so the MX name's records
    // (here not matching: the deferral proves they were used).
    let records = |dir: &Path, port: u16| {
        vec![
            "example.test. 60 IN MX 10 mx.example.test.".to_string(),
            "mx.example.test. 60 IN CNAME real.example.test.".to_string(),
            // Both families here (the case above has IPv4 only).
            "real.example.test. 60 IN A 127.0.0.1".to_string(),
            "real.example.test. 60 IN AAAA ::1".to_string(),
            format!("_{port}._tcp.{MX}. 60 IN TLSA {}", wrong_record(dir)),
        ]
    };
    let Some(case) = Case::with(Some(MX), &records, false, None) else {
        return;
    };
    assert_eq!(case.send("bob@example.test"), 75, "deferred");
    assert!(case.mx.mail_commands().is_empty(), "no MAIL");
    let line = case.outcome("bob@example.test");
    assert!(
        line.contains("status=deferred") && line.ends_with(", tls=dane"),
        "{line}"
    );
    // 127.0.0.1 refused the certificate (the deferral names the last
    // address tried, ::1, where nothing listens).
    let mismatch = case
        .syslog
        .lines()
        .into_iter()
        .find(|l| l.contains("TLSA mismatch with mx.example.test"));
    assert!(mismatch.is_some(), "{:?}", case.syslog.lines());
}

#[test]
fn dane_connects_to_the_validated_address_not_a_forged_one() {
    // RFC 7672 §2.2.1: the ordinary lookup (no DO bit) is answered with
    // a forged A record, 127.0.0.2; the DNSSEC-validated one says
    // 127.0.0.1. The connection must go to the validated address.
    let forged = "mx.example.test 60 IN A 127.0.0.2";
    let front = Front {
        servfail: Vec::new(),
        forged: vec![forged],
    };
    let records = |dir: &Path, port: u16| {
        vec![
            "example.test. 60 IN MX 10 mx.example.test.".to_string(),
            "mx.example.test. 60 IN A 127.0.0.1".to_string(),
            format!("_{port}._tcp.{MX}. 60 IN TLSA {}", ee_record(dir)),
        ]
    };
    let Some(case) = Case::with(Some(MX), &records, false, Some(front)) else {
        return;
    };
    // Nothing listens at the forged address: a connection there is
    // refused, and the message would be deferred.
    assert_eq!(case.send("bob@example.test"), 0);
    assert_eq!(
        case.mx.messages().len(),
        1,
        "delivered to the validated address"
    );
    let line = case.outcome("bob@example.test");
    assert!(line.contains("status=sent"), "{line}");
    assert!(line.contains("[127.0.0.1]"), "{line}");
    assert!(line.ends_with(", tls=dane"), "{line}");
    // The forgery was really served: the ordinary lookup asked without
    // the DO bit, the validator with it.
    let queries = case.front.as_ref().unwrap().queries();
    println!("{queries:?}");
    assert!(
        queries.contains(&("mx.example.test".into(), "A".into())),
        "{queries:?}"
    );
    assert!(
        queries.contains(&("mx.example.test".into(), "A DO".into())),
        "{queries:?}"
    );
}

#[test]
fn a_tlsa_lookup_failing_in_a_signed_zone_defers_without_connecting() {
    // The resolver answers SERVFAIL for the TLSA name, as a recursive
    // resolver does when the servers of a signed zone fail: DANE must
    // not take that for "no records" and fall back to opportunistic TLS
    // (or plain text).
    let front = Front {
        servfail: vec![format!("_{{port}}._tcp.{MX}")],
        forged: Vec::new(),
    };
    let records = |dir: &Path, port: u16| {
        vec![
            "example.test. 60 IN MX 10 mx.example.test.".to_string(),
            "mx.example.test. 60 IN A 127.0.0.1".to_string(),
            format!("_{port}._tcp.{MX}. 60 IN TLSA {}", ee_record(dir)),
        ]
    };
    let Some(case) = Case::with(Some(MX), &records, false, Some(front)) else {
        return;
    };
    assert_eq!(case.send("bob@example.test"), 75, "deferred");
    assert_eq!(case.mx.connections(), 0, "the MX was never connected to");
    assert!(case.mx.mail_commands().is_empty(), "no MAIL");
    let line = case.outcome("bob@example.test");
    assert!(line.contains("status=deferred"), "{line}");
    assert!(
        line.contains("TLSA lookup failed in a signed zone"),
        "{line}"
    );
    assert!(line.ends_with(", tls=dane"), "{line}");
    assert_eq!(case.world.queue_ids().len(), 1, "still queued");
}

#[test]
fn an_mx_host_the_validated_mx_rrset_does_not_name_is_not_used() {
    // The ordinary lookup (no DO bit) gets a forged MX naming a host in
    // the signed zone without TLSA records: were its own answers all
    // that were checked, DANE would not apply to it and the mail would
    // go with opportunistic TLS. The DNSSEC-secure MX RRset does not
    // name it: deferred, never connected to.
    let front = Front {
        servfail: Vec::new(),
        forged: vec!["example.test 60 IN MX 10 decoy.example.test"],
    };
    let records = |dir: &Path, port: u16| {
        vec![
            "example.test. 60 IN MX 10 mx.example.test.".to_string(),
            "mx.example.test. 60 IN A 127.0.0.1".to_string(),
            "decoy.example.test. 60 IN A 127.0.0.1".to_string(),
            format!("_{port}._tcp.{MX}. 60 IN TLSA {}", ee_record(dir)),
        ]
    };
    let Some(case) = Case::with(Some(MX), &records, false, Some(front)) else {
        return;
    };
    assert_eq!(case.send("bob@example.test"), 75, "deferred");
    assert_eq!(case.mx.connections(), 0, "never connected to");
    let line = case.outcome("bob@example.test");
    assert!(
        line.contains("decoy.example.test: not in the DNSSEC-validated MX RRset of example.test"),
        "{line}"
    );
    assert!(line.ends_with(", tls=dane"), "{line}");
}
