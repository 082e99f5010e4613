//! The Rust side of tests/peers/dns.py: a real DNS server on loopback
//! serving the records a test gives (`"example.test MX 10 mx.example.test"`).

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command};

/// A running DNS server; killed on drop.
pub struct DnsServer {
    pub addr: SocketAddr,
    child: Child,
}

impl DnsServer {
    /// Serves `records`; names in `servfail` answer SERVFAIL.
    pub fn start(records: &[&str], servfail: &[&str]) -> DnsServer {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/dns.py");
        let mut cmd = Command::new("python3");
        cmd.arg(&script);
        for r in records {
            cmd.arg("--record").arg(r);
        }
        for s in servfail {
            cmd.arg("--servfail").arg(s);
        }
        let (child, port) = super::start_peer(&mut cmd, "tests/peers/dns.py (pip install dnslib)");
        DnsServer {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            child,
        }
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
