//! The Rust side of tests/peers/dns.py: a real DNS server on loopback
//! serving the records a test gives (`"example.test MX 10 mx.example.test"`).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

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
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 tests/peers/dns.py (pip install dnslib)");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("dns.py did not say READY within 30 s");
        let port: u16 = line
            .strip_prefix("READY ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("dns.py said {line:?}"));
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
