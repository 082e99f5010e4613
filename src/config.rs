//! The configuration file (`/etc/spoolmail/spoolmail.conf`, or `-C FILE`).
//! STUB: the config helper replaces this file with the real parser.

use crate::error::Result;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the configuration lives unless `-C` says otherwise.
pub const DEFAULT_PATH: &str = "/etc/spoolmail/spoolmail.conf";

/// TLS policy for MX delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsPolicy {
    /// Never STARTTLS.
    None,
    /// STARTTLS when offered; plain text when the handshake fails.
    Opportunistic,
    /// STARTTLS required, certificate and name verified.
    Required,
}

/// TLS mode for the smarthost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmarthostTls {
    /// STARTTLS, verified.
    Starttls,
    /// Implicit TLS (port 465), verified.
    Tls,
    /// Plain text.
    None,
}

/// Where local mail is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailboxFormat {
    /// `mail_spool_dir/USER`, mbox format.
    Mbox,
    /// `~/Maildir/`.
    Maildir,
}

/// Every setting of spoolmail, with defaults filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub spool: PathBuf,
    pub hostname: String,
    pub local_domains: Vec<String>,
    pub smarthost: Option<(String, u16)>,
    pub smarthost_tls: SmarthostTls,
    pub auth_user: Option<String>,
    pub auth_password_file: Option<PathBuf>,
    pub tls: TlsPolicy,
    pub resolver: Option<SocketAddr>,
    pub smtp_port: u16,
    pub retry_min: Duration,
    pub retry_max: Duration,
    pub queue_lifetime: Duration,
    pub delay_warning: Duration,
    pub max_connections: u32,
    pub max_host_connections: u32,
    pub max_message_size: u64,
    pub aliases: PathBuf,
    pub mail_spool_dir: PathBuf,
    pub mailbox: MailboxFormat,
    pub pipe_user: String,
    pub pipe_timeout: Duration,
    pub max_hops: u32,
    pub connect_timeout: Duration,
    pub command_timeout: Duration,
    pub data_timeout: Duration,
    pub final_dot_timeout: Duration,
    pub tmp_max_age: Duration,
}

/// Loads `path`. When `required` is false a missing file means "all defaults".
pub fn load(_path: &Path, _required: bool) -> Result<Config> {
    todo!()
}
