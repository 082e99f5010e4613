//! The Rust side of tests/peers/dns.py: a real DNS server on loopback
//! serving the records a test gives (`"example.test MX 10 mx.example.test"`).

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command};

/// A running DNS server; killed on drop.
pub struct DnsServer {
    pub addr: SocketAddr,
    child: Child,
    /// Where it logs each query ("NAME TYPE" lines), when asked to.
    log: Option<tempfile::NamedTempFile>,
}

impl DnsServer {
    /// Serves `records`; names in `servfail` answer SERVFAIL.
    pub fn start(records: &[&str], servfail: &[&str]) -> DnsServer {
        DnsServer::start_hostile(records, servfail, &[])
    }

    /// [`DnsServer::start`], and queries for the names in `drop` are never
    /// answered (a dead or hostile zone); every query is logged for
    /// [`DnsServer::queries`].
    pub fn start_hostile(records: &[&str], servfail: &[&str], drop: &[&str]) -> DnsServer {
        let log = tempfile::NamedTempFile::new().expect("a query log");
        let mut server = DnsServer::launch(records, servfail, drop, Some(log.path()));
        server.log = Some(log);
        server
    }

    /// A resolver in front of the server at `upstream` (a signed zone's
    /// NSD): names in `servfail` answer SERVFAIL, the records of
    /// `forged` answer only queries without the DO bit, every other
    /// query is forwarded. Queries are logged (a DO query's type ends in
    /// " DO").
    pub fn start_front(upstream: SocketAddr, servfail: &[&str], forged: &[&str]) -> DnsServer {
        let log = tempfile::NamedTempFile::new().expect("a query log");
        let mut extra = vec!["--forward".to_string(), upstream.to_string()];
        for f in forged {
            extra.push("--forge".into());
            extra.push(f.to_string());
        }
        let mut server = DnsServer::launch_with(&[], servfail, &[], Some(log.path()), &extra);
        server.log = Some(log);
        server
    }

    /// The queries received so far, as ("name", "TYPE"); empty unless
    /// started with [`DnsServer::start_hostile`].
    pub fn queries(&self) -> Vec<(String, String)> {
        let Some(log) = &self.log else {
            return Vec::new();
        };
        std::fs::read_to_string(log.path())
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(n, t)| (n.to_string(), t.to_string()))
            .collect()
    }

    fn launch(records: &[&str], servfail: &[&str], drop: &[&str], log: Option<&Path>) -> DnsServer {
        DnsServer::launch_with(records, servfail, drop, log, &[])
    }

    fn launch_with(
        records: &[&str],
        servfail: &[&str],
        drop: &[&str],
        log: Option<&Path>,
        extra: &[String],
    ) -> DnsServer {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/dns.py");
        let mut cmd = Command::new("python3");
        cmd.arg(&script);
        for r in records {
            cmd.arg("--record").arg(r);
        }
        for s in servfail {
            cmd.arg("--servfail").arg(s);
        }
        for d in drop {
            cmd.arg("--drop").arg(d);
        }
        if let Some(log) = log {
            cmd.arg("--log").arg(log);
        }
        cmd.args(extra);
        let (child, port) = super::start_peer(&mut cmd, "tests/peers/dns.py (pip install dnslib)");
        DnsServer {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            child,
            log: None,
        }
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
