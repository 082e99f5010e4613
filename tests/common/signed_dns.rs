//! The Rust side of tests/peers/signed_dns.py: a DNSSEC-signed root zone
//! with fresh keys, served by a real NSD on loopback, and the trust
//! anchor a validating resolver needs for it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

/// A running signed DNS; NSD ended on drop.
pub struct SignedDns {
    pub addr: SocketAddr,
    /// The root's key-signing DNSKEY (for `dnssec_trust_anchor`).
    pub anchor: PathBuf,
    child: Child,
}

impl SignedDns {
    /// Serves `signed` in the signed root zone and `unsigned` in the
    /// insecurely delegated zone unsigned.test.; the TLSA records of the
    /// names in `tamper` are changed after signing (bogus). Keys and
    /// zone files go under `dir`. None, with the reason printed, when
    /// NSD or ldnsutils is missing (.ci/peers.sh installs them).
    pub fn start(
        dir: &Path,
        signed: &[&str],
        unsigned: &[&str],
        tamper: &[&str],
    ) -> Option<SignedDns> {
        for tool in ["nsd", "ldns-signzone", "ldns-keygen"] {
            if Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .output()
                .map_or(true, |o| !o.status.success())
            {
                eprintln!("skipped: {tool} not installed (apt-get install nsd ldnsutils)");
                return None;
            }
        }
        let zone_dir = dir.join("dnssec");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/signed_dns.py");
        let mut cmd = Command::new("python3");
        cmd.arg(&script).arg("--dir").arg(&zone_dir);
        for r in signed {
            cmd.arg("--record").arg(r);
        }
        for r in unsigned {
            cmd.arg("--unsigned-record").arg(r);
        }
        for t in tamper {
            cmd.arg("--tamper").arg(t);
        }
        let (child, port) =
            super::start_peer(&mut cmd, "tests/peers/signed_dns.py (nsd, ldnsutils)");
        Some(SignedDns {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            anchor: zone_dir.join("anchor"),
            child,
        })
    }
}

impl Drop for SignedDns {
    fn drop(&mut self) {
        // SIGTERM, not SIGKILL: the script ends NSD on its way out.
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}
