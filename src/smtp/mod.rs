#![allow(dead_code, unused_variables)]
use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
pub struct Timeouts {
    pub connect: Duration,
    pub command: Duration,
    pub data_block: Duration,
    pub final_dot: Duration,
}
pub enum Security {
    Plain,
    Opportunistic,
    StarttlsVerified,
    Implicit,
}
pub struct Credentials {
    pub user: String,
    pub password: String,
}
pub struct ClientSettings {
    pub helo_name: String,
    pub security: Security,
    pub credentials: Option<Credentials>,
    pub ca_file: Option<PathBuf>,
    pub timeouts: Timeouts,
}
pub struct Reply {
    pub code: u16,
    pub lines: Vec<String>,
}
impl Reply {
    pub fn is_positive(&self) -> bool {
        todo!()
    }
    pub fn enhanced_status(&self) -> Option<String> {
        todo!()
    }
    pub fn one_line(&self) -> String {
        todo!()
    }
}
#[derive(Debug)]
pub enum ErrorKind {
    Connect,
    Timeout,
    Io,
    Tls,
    Protocol,
    Rejected,
    TooBig,
    NoSmtputf8,
    AuthUnavailable,
}
#[derive(Debug)]
pub struct SmtpError {
    pub kind: ErrorKind,
    pub reply: Option<Reply>,
    pub message: String,
    pub after_final_dot: bool,
}
impl std::fmt::Display for SmtpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        todo!()
    }
}
impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        todo!()
    }
}
pub struct TransactionEnvelope<'a> {
    pub sender: &'a str,
    pub recipients: &'a [String],
    pub size: u64,
    pub eight_bit: bool,
    pub smtputf8: bool,
    pub dsn_ret: Option<&'a str>,
    pub envid: Option<&'a str>,
    pub dsn_notify: Option<&'a str>,
}
pub struct TransactionResult {
    pub rcpt: Vec<Reply>,
    pub data: Option<Reply>,
    pub data_command: Option<Reply>,
}
pub struct Session;
impl Session {
    pub fn connect(
        addr: SocketAddr,
        server_name: &str,
        settings: &ClientSettings,
    ) -> Result<Session, SmtpError> {
        todo!()
    }
    pub fn send(
        &mut self,
        envelope: &TransactionEnvelope,
        data: &mut dyn Read,
        before_final_dot: &mut dyn FnMut() -> std::io::Result<()>,
    ) -> Result<TransactionResult, SmtpError> {
        todo!()
    }
    pub fn reset(&mut self) -> Result<(), SmtpError> {
        todo!()
    }
    pub fn quit(self) {}
}
