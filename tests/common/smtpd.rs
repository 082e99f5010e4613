//! The Rust side of tests/peers/smtpd.py: start a real SMTP server (aiosmtpd)
//! on loopback with the faults a test asks for, and read what it received.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;

/// One message the server received.
#[derive(Debug, Clone)]
pub struct Received {
    pub mail_from: String,
    pub rcpt_tos: Vec<String>,
    pub data: Vec<u8>,
    pub tls: bool,
    pub auth_user: Option<String>,
    pub mail_options: Vec<String>,
}

/// A running server; killed on drop.
pub struct SmtpServer {
    pub port: u16,
    log: PathBuf,
    child: Child,
}

static SERIAL: AtomicUsize = AtomicUsize::new(0);

impl SmtpServer {
    /// Starts `tests/peers/smtpd.py` with `args`, its log in `dir`, and
    /// waits until it listens.
    pub fn start(dir: &Path, args: &[&str]) -> SmtpServer {
        let n = SERIAL.fetch_add(1, Ordering::SeqCst);
        let log = dir.join(format!("smtpd-{}-{n}.jsonl", std::process::id()));
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/smtpd.py");
        let mut cmd = Command::new("python3");
        cmd.arg(&script).arg("--log").arg(&log).args(args);
        let (child, port) =
            super::start_peer(&mut cmd, "tests/peers/smtpd.py (pip install aiosmtpd)");
        SmtpServer { port, log, child }
    }

    fn events(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Messages accepted (a 2xx to the final dot, link not dropped).
    pub fn messages(&self) -> Vec<Received> {
        self.events()
            .into_iter()
            .filter(|e| e["event"] == "message")
            .filter(|e| {
                e["dropped"] != true && e["reply"].as_str().is_some_and(|r| r.starts_with('2'))
            })
            .map(|e| Received {
                // aiosmtpd reports the null sender as "<>".
                mail_from: e["mail_from"]
                    .as_str()
                    .map(|s| if s == "<>" { "" } else { s })
                    .unwrap_or("")
                    .to_string(),
                rcpt_tos: strings(&e["rcpt_tos"]),
                data: base64::engine::general_purpose::STANDARD
                    .decode(e["data_b64"].as_str().unwrap_or(""))
                    .unwrap_or_default(),
                tls: e["tls"] == true,
                auth_user: e["auth_user"].as_str().map(String::from),
                mail_options: strings(&e["mail_options"]),
            })
            .collect()
    }

    /// Polls until at least `n` messages arrived; panics after `deadline`.
    pub fn wait_messages(&self, n: usize, deadline: Duration) -> Vec<Received> {
        let start = Instant::now();
        loop {
            let got = self.messages();
            if got.len() >= n {
                return got;
            }
            if start.elapsed() > deadline {
                panic!(
                    "waited {deadline:?} for {n} messages, got {}: {got:?}",
                    got.len()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Every recipient of the messages accepted so far, sorted.
    pub fn recipients(&self) -> Vec<String> {
        let mut r: Vec<String> = self
            .messages()
            .into_iter()
            .flat_map(|m| m.rcpt_tos)
            .collect();
        r.sort();
        r
    }

    /// RCPTs refused with 452 for being over `--max-rcpt`.
    pub fn rcpt_refusals(&self) -> usize {
        self.events()
            .iter()
            .filter(|e| e["event"] == "rcpt_refused")
            .count()
    }

    /// The MAIL commands the server accepted: (sender, parameters).
    pub fn mail_commands(&self) -> Vec<(String, Vec<String>)> {
        self.events()
            .iter()
            .filter(|e| e["event"] == "mail")
            .map(|e| {
                (
                    e["address"].as_str().unwrap_or_default().to_string(),
                    strings(&e["options"]),
                )
            })
            .collect()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.events()
            .iter()
            .filter(|e| e["event"] == "connect")
            .count()
    }

    /// The most connections open at once.
    pub fn max_concurrent(&self) -> usize {
        self.events()
            .iter()
            .filter(|e| e["event"] == "connect")
            .filter_map(|e| e["concurrent"].as_u64())
            .max()
            .unwrap_or(0) as usize
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A JSON array of strings as a Vec (empty when it is not one).
fn strings(value: &serde_json::Value) -> Vec<String> {
    value
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// A self-signed certificate and key for `name`, made with openssl.
pub fn self_signed_cert(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let cert = dir.join(format!("{name}.crt"));
    let key = dir.join(format!("{name}.key"));
    let status = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .arg("-subj")
        .arg(format!("/CN={name}"))
        .arg("-addext")
        .arg(format!("subjectAltName=DNS:{name}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl");
    assert!(status.success(), "openssl req failed");
    (cert, key)
}
