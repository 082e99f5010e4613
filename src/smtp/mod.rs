//! The SMTP client session (RFC 5321): greeting, EHLO (HELO fallback),
//! STARTTLS (RFC 3207) with native-tls, AUTH PLAIN/LOGIN (RFC 4954),
//! PIPELINING (RFC 2920), SIZE (RFC 1870), 8BITMIME, SMTPUTF8 (RFC 6531),
//! DSN parameters (RFC 3461), and one transaction per call with a reply
//! per recipient. The RFC 5321 §4.5.3.2 timeouts are deadlines: each
//! bounds a whole reply (the greeting, a command's reply, the reply to
//! the final dot, which waits the longest: RFC 1047) or the whole TLS
//! handshake, however slowly a server trickles it; writes are bounded
//! per block. See `stream`.

mod auth;
pub mod dane;
mod data;
pub use data::{content_size, sent_form};
pub mod downgrade;
pub use downgrade::{Content, Scanner, eight_bit_in_part_headers, scan};
pub(crate) mod reply;
mod stream;

pub use reply::Reply;

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use reply::{ParseError, ReplyParser};
use stream::{Conn, Stream, Timed};

/// The timeouts of each stage.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// Establishing the TCP connection.
    pub connect: Duration,
    /// Any command's whole reply, the greeting and the whole TLS
    /// handshake (5 min); also each write of commands.
    pub command: Duration,
    /// Each block of message data written (3 min).
    pub data_block: Duration,
    /// The whole reply to the final dot (10 min, RFC 1047).
    pub final_dot: Duration,
}

/// How the session uses TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// No TLS at all.
    Plain,
    /// STARTTLS when offered, certificate not verified; a refused
    /// STARTTLS (logged) means going on in plain text, a failed handshake
    /// reconnecting without TLS. A handshake that outlasts the command
    /// timeout is a timeout: no second connection to so slow a server.
    Opportunistic,
    /// STARTTLS mandatory, certificate and name verified.
    StarttlsVerified,
    /// TLS from the first byte (port 465), verified.
    Implicit,
    /// DANE (RFC 7672): STARTTLS mandatory, the certificate checked
    /// against [`ClientSettings::tlsa`] (encrypted without
    /// authentication when that holds no usable record); never plain
    /// text, never a PKIX check.
    Dane,
}

/// SMTP AUTH credentials.
#[derive(Clone)]
pub struct Credentials {
    /// The user name.
    pub user: String,
    /// The password.
    pub password: String,
}

/// Everything a session needs besides the address.
#[derive(Clone)]
pub struct ClientSettings {
    /// Our name in EHLO/HELO.
    pub helo_name: String,
    /// TLS use.
    pub security: Security,
    /// AUTH credentials, sent only over TLS.
    pub credentials: Option<Credentials>,
    /// An extra trusted root (PEM) for verified TLS.
    pub ca_file: Option<PathBuf>,
    /// The MX host's DNSSEC-secure TLSA records, for [`Security::Dane`]
    /// (unusable ones are set aside: [`dane::usable`]).
    pub tlsa: Vec<dane::Tlsa>,
    /// Names besides the server name that a DANE-TA leaf may carry: the
    /// MX host's own name when the TLSA records were found at its CNAME
    /// expansion (RFC 7672 §3.2.2). Empty otherwise.
    pub dane_names: Vec<String>,
    /// Timeouts.
    pub timeouts: Timeouts,
}

/// What went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The TCP connection could not be made.
    Connect,
    /// A stage's timeout expired.
    Timeout,
    /// The link broke.
    Io,
    /// TLS could not be set up as required.
    Tls,
    /// The server spoke something that is not SMTP.
    Protocol,
    /// A 4xx/5xx to the greeting, EHLO, STARTTLS, AUTH, MAIL or DATA.
    Rejected,
    /// The server's SIZE limit is below the message size.
    TooBig,
    /// An address needs SMTPUTF8 and the server does not offer it.
    NoSmtputf8,
    /// The message has 8-bit header fields and the server offers no
    /// 8BITMIME: they cannot be made 7-bit without changing them.
    Unconvertible,
    /// Credentials are configured but cannot be used safely (no TLS) or
    /// at all (no common mechanism), or were refused.
    AuthUnavailable,
}

/// A failed session step.
#[derive(Debug, Clone)]
pub struct SmtpError {
    /// What kind of failure.
    pub kind: ErrorKind,
    /// The server's reply, when one caused it.
    pub reply: Option<Reply>,
    /// A one-line description.
    pub message: String,
    /// The final dot had been sent: the server may have the message.
    pub after_final_dot: bool,
    /// The link broke during the RCPTs after the server had answered 452
    /// (too many recipients): how many it had taken by then. A server
    /// that counts 452s as errors drops a client that pipelined more
    /// than it takes; the next transactions should ask for this many.
    pub rcpt_taken: Option<usize>,
}

impl SmtpError {
    fn new(kind: ErrorKind, message: impl Into<String>) -> SmtpError {
        SmtpError {
            kind,
            reply: None,
            message: message.into(),
            after_final_dot: false,
            rcpt_taken: None,
        }
    }

    fn rejected(what: &str, reply: Reply) -> SmtpError {
        SmtpError {
            kind: ErrorKind::Rejected,
            message: format!("{what} refused: {}", reply.one_line()),
            reply: Some(reply),
            after_final_dot: false,
            rcpt_taken: None,
        }
    }

    fn io(what: &str, e: &io::Error) -> SmtpError {
        let kind = match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => ErrorKind::Timeout,
            io::ErrorKind::InvalidData => ErrorKind::Protocol,
            _ => ErrorKind::Io,
        };
        let message = match kind {
            ErrorKind::Timeout => format!("timeout {what}"),
            _ => format!("{e} {what}"),
        };
        SmtpError::new(kind, message)
    }

    /// Whether retrying cannot help: a 5xx reply, a message over the
    /// server's size limit, SMTPUTF8 needed but not offered.
    pub fn is_permanent(&self) -> bool {
        match self.kind {
            ErrorKind::TooBig | ErrorKind::NoSmtputf8 | ErrorKind::Unconvertible => true,
            ErrorKind::Rejected => self.reply.as_ref().is_some_and(Reply::is_permanent),
            _ => false,
        }
    }
}

impl fmt::Display for SmtpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for SmtpError {}

/// One transaction's envelope.
pub struct TransactionEnvelope<'a> {
    /// The sender; "" is the null sender `<>`.
    pub sender: &'a str,
    /// The recipients.
    pub recipients: &'a [String],
    /// The message's size as SIZE= declares it: its content in wire form
    /// ([`data::content_size`]), not the stored size.
    pub size: u64,
    /// BODY=8BITMIME when offered: declared so (-B8BITMIME). 8-bit
    /// content found by the scan in `content` is declared too.
    pub eight_bit: bool,
    /// The SMTPUTF8 parameter (required).
    pub smtputf8: bool,
    /// RET= when DSN is offered.
    pub dsn_ret: Option<&'a str>,
    /// ENVID= when DSN is offered.
    pub envid: Option<&'a str>,
    /// NOTIFY= on each RCPT when DSN is offered.
    pub dsn_notify: Option<&'a str>,
    /// What [`scan`] found in the data (None: not scanned, sent as it
    /// is): decides BODY=8BITMIME, SMTPUTF8 for 8-bit header fields
    /// where offered, and conversion to 7-bit MIME ([`downgrade`]).
    pub content: Option<&'a Content>,
    /// Signs the message as it goes to this server (DKIM); None: sent
    /// unsigned.
    pub signer: Option<&'a dyn SentFormSigner>,
}

/// Signs a message in the form it is sent (DKIM, issue 26). The session
/// knows that form — converted to 7-bit MIME or not, which depends on
/// the server ([`sent_form`]); the signer owns the data, which it reads
/// a first time for the signature, and the key.
pub trait SentFormSigner {
    /// The header field to put before the message ("DKIM-Signature:
    /// …\r\n", folded, CRLF line endings). `sent_form` writes the
    /// sent form of the stored message given to it into the sink given.
    fn signature(
        &self,
        sent_form: &mut dyn FnMut(&mut dyn Read, &mut dyn Write) -> io::Result<u64>,
    ) -> Result<Vec<u8>, String>;
}

/// The replies of one transaction.
#[derive(Debug)]
pub struct TransactionResult {
    /// One reply per recipient, in order.
    pub rcpt: Vec<Reply>,
    /// The reply to the final dot; None when no data was sent.
    pub data: Option<Reply>,
    /// The reply to DATA when it was not 354.
    pub data_command: Option<Reply>,
}

/// An open SMTP session, ready for transactions.
pub struct Session {
    conn: Conn,
    peer: SocketAddr,
    server_name: String,
    timeouts: Timeouts,
    /// EHLO keywords (upper case) with their parameters.
    extensions: Vec<(String, String)>,
    tls: bool,
    /// A transaction was left open (refused MAIL, refused DATA, an error):
    /// the next one needs an RSET first.
    dirty: bool,
    /// A TLS handshake failed: the link is in no state for QUIT.
    handshake_failed: bool,
}

impl Session {
    /// Connects to `addr` and gets the session ready: greeting, EHLO,
    /// STARTTLS as `settings` say, AUTH when credentials are set.
    /// `server_name` is the name TLS verification checks.
    pub fn connect(
        addr: SocketAddr,
        server_name: &str,
        settings: &ClientSettings,
    ) -> Result<Session, SmtpError> {
        match Session::open(addr, server_name, settings, true) {
            Err(e) if e.kind == ErrorKind::Tls && settings.security == Security::Opportunistic => {
                // Opportunistic TLS (RFC 3207 §4.1 allows going on in
                // plain text): the handshake failed, so a fresh
                // connection without STARTTLS.
                log::warn!(
                    "{server_name}[{}]:{}: {e}; delivering without TLS",
                    addr.ip(),
                    addr.port()
                );
                Session::open(addr, server_name, settings, false)
            }
            other => other,
        }
    }

    fn open(
        addr: SocketAddr,
        server_name: &str,
        settings: &ClientSettings,
        try_tls: bool,
    ) -> Result<Session, SmtpError> {
        let timeouts = settings.timeouts;
        let tcp = TcpStream::connect_timeout(&addr, timeouts.connect)
            .map_err(|e| SmtpError::new(ErrorKind::Connect, format!("connect to {addr}: {e}")))?;
        // Commands are small and each waits for a reply: Nagle would only
        // add latency.
        let _ = tcp.set_nodelay(true);
        let conn = Conn::new(
            Stream::Plain(Timed::new(tcp, timeouts.command)),
            timeouts.command,
        );
        let mut session = Session {
            conn,
            peer: addr,
            server_name: server_name.to_string(),
            timeouts,
            extensions: Vec::new(),
            tls: false,
            dirty: false,
            handshake_failed: false,
        };
        if settings.security == Security::Implicit {
            session.handshake(settings, true)?;
        }
        match session.set_up(settings, try_tls) {
            Ok(()) => Ok(session),
            Err(e) => {
                // RFC 5321 §4.1.1.10: the client ends with QUIT, not by
                // closing — after a refused greeting (§3.1), EHLO,
                // STARTTLS or AUTH, and when TLS is required but not
                // offered, the server is waiting for a command. Not after
                // a broken link, a timeout, garbage or a failed TLS
                // handshake: the stream is in no state to carry one.
                if e.kind != ErrorKind::Io
                    && e.kind != ErrorKind::Timeout
                    && e.kind != ErrorKind::Protocol
                    && !session.handshake_failed
                {
                    session.send_quit();
                }
                Err(e)
            }
        }
    }

    /// After the TCP connection (and an implicit TLS handshake): the
    /// greeting, EHLO, STARTTLS and AUTH as `settings` say.
    fn set_up(&mut self, settings: &ClientSettings, try_tls: bool) -> Result<(), SmtpError> {
        let session = self;
        let timeouts = settings.timeouts;
        let greeting = session.read_reply("reading the greeting", timeouts.command)?;
        if greeting.code != 220 {
            return Err(SmtpError::rejected("greeting", greeting));
        }
        session.ehlo(&settings.helo_name)?;
        match settings.security {
            Security::Plain | Security::Implicit => {}
            Security::Opportunistic => {
                if try_tls && session.offers("STARTTLS") {
                    session.starttls(settings, false)?;
                }
            }
            Security::StarttlsVerified => {
                if !session.offers("STARTTLS") {
                    return Err(SmtpError::new(
                        ErrorKind::Tls,
                        "TLS is required but the server does not offer STARTTLS",
                    ));
                }
                session.starttls(settings, true)?;
            }
            Security::Dane => {
                if !session.offers("STARTTLS") {
                    // RFC 7672 §2.2: published TLSA records make TLS
                    // mandatory; a missing STARTTLS may be stripped.
                    return Err(SmtpError::new(
                        ErrorKind::Tls,
                        "STARTTLS not offered but DANE TLSA records published",
                    ));
                }
                session.starttls(settings, true)?;
            }
        }
        if let Some(credentials) = &settings.credentials {
            session.authenticate(credentials)?;
        }
        Ok(())
    }

    /// The address connected to.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The server's name as given to [`Session::connect`].
    pub fn server_name(&self) -> &str {
        &self.server_name
    }

    /// Whether the session runs over TLS.
    pub fn tls_active(&self) -> bool {
        self.tls
    }

    /// Whether the last transaction ended cleanly (final reply read, or
    /// reset): the next MAIL needs no RSET first.
    pub fn is_clean(&self) -> bool {
        !self.dirty
    }

    /// Whether the server offered the EHLO keyword.
    pub fn offers(&self, keyword: &str) -> bool {
        self.extensions
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case(keyword))
    }

    fn parameter(&self, keyword: &str) -> Option<&str> {
        self.extensions
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(keyword))
            .map(|(_, p)| p.as_str())
    }

    /// Reads one whole reply, which must be complete within `limit`.
    fn read_reply(&mut self, what: &str, limit: Duration) -> Result<Reply, SmtpError> {
        self.conn.set_deadline(Instant::now() + limit);
        let mut parser = ReplyParser::default();
        loop {
            let line = self.conn.read_line().map_err(|e| SmtpError::io(what, &e))?;
            match parser.line(&line) {
                Ok(Some(reply)) => return Ok(reply),
                Ok(None) => continue,
                Err(e) => {
                    let detail = match e {
                        ParseError::Garbled(text) => format!("garbled reply {text:?}"),
                        ParseError::CodeChanged => "reply code changed mid-reply".into(),
                        ParseError::TooLong => "reply too long".into(),
                    };
                    return Err(SmtpError::new(
                        ErrorKind::Protocol,
                        format!("{detail} {what}"),
                    ));
                }
            }
        }
    }

    fn command(&mut self, line: &str, what: &str) -> Result<Reply, SmtpError> {
        self.send_line(line)?;
        self.conn
            .flush()
            .map_err(|e| SmtpError::io(&format!("sending {what}"), &e))?;
        self.read_reply(&format!("after {what}"), self.timeouts.command)
    }

    fn send_line(&mut self, line: &str) -> Result<(), SmtpError> {
        self.conn
            .write_all(line.as_bytes())
            .and_then(|()| self.conn.write_all(b"\r\n"))
            .map_err(|e| SmtpError::io("sending a command", &e))
    }

    fn ehlo(&mut self, helo_name: &str) -> Result<(), SmtpError> {
        let reply = self.command(&format!("EHLO {helo_name}"), "EHLO")?;
        if reply.code == 250 {
            self.extensions = reply
                .lines
                .iter()
                .skip(1)
                .map(|l| {
                    let (k, p) = l.split_once(' ').unwrap_or((l.as_str(), ""));
                    (k.to_ascii_uppercase(), p.trim().to_string())
                })
                .collect();
            return Ok(());
        }
        if !reply.is_permanent() {
            return Err(SmtpError::rejected("EHLO", reply));
        }
        // An old server: HELO, and no extensions at all.
        let reply = self.command(&format!("HELO {helo_name}"), "HELO")?;
        if reply.code != 250 {
            return Err(SmtpError::rejected("HELO", reply));
        }
        self.extensions.clear();
        Ok(())
    }

    fn connector(
        settings: &ClientSettings,
        verify: bool,
    ) -> Result<native_tls::TlsConnector, SmtpError> {
        let tls_error = |e: String| SmtpError::new(ErrorKind::Tls, e);
        let mut builder = native_tls::TlsConnector::builder();
        builder.min_protocol_version(Some(native_tls::Protocol::Tlsv12));
        if verify {
            if let Some(path) = &settings.ca_file {
                let pem = std::fs::read(path)
                    .map_err(|e| tls_error(format!("reading {}: {e}", path.display())))?;
                let cert = native_tls::Certificate::from_pem(&pem)
                    .map_err(|e| tls_error(format!("{}: {e}", path.display())))?;
                builder.add_root_certificate(cert);
            }
        } else {
            // Opportunistic TLS protects against passive eavesdropping
            // only; MX certificates are rarely verifiable (RFC 7435).
            builder.danger_accept_invalid_certs(true);
            builder.danger_accept_invalid_hostnames(true);
        }
        builder
            .build()
            .map_err(|e| tls_error(format!("TLS setup: {e}")))
    }

    fn handshake(&mut self, settings: &ClientSettings, verify: bool) -> Result<(), SmtpError> {
        let limit = self.timeouts.command;
        let placeholder = Stream::Plain(Timed::new(
            self.tcp_clone()
                .map_err(|e| SmtpError::io("before the TLS handshake", &e))?,
            limit,
        ));
        let Stream::Plain(mut timed) = std::mem::replace(&mut self.conn.stream, placeholder) else {
            return Err(SmtpError::new(ErrorKind::Protocol, "TLS is already active"));
        };
        // The whole handshake, not each read of it, within the limit.
        let deadline = Instant::now() + limit;
        timed.set_deadline(deadline);
        if settings.security == Security::Dane {
            return self.dane_handshake(settings, timed, deadline);
        }
        let connector = Session::connector(settings, verify)?;
        let tls = connector.connect(&self.server_name, timed).map_err(|e| {
            self.handshake_failed = true;
            if Instant::now() >= deadline {
                SmtpError::new(
                    ErrorKind::Timeout,
                    format!("timeout in the TLS handshake with {}", self.server_name),
                )
            } else {
                SmtpError::new(
                    ErrorKind::Tls,
                    format!("TLS handshake with {}: {e}", self.server_name),
                )
            }
        })?;
        self.conn.stream = Stream::Tls(Box::new(tls));
        self.tls = true;
        Ok(())
    }

    /// The STARTTLS handshake of [`Security::Dane`], by `deadline`: a
    /// certificate that matches no usable TLSA record is refused (RFC
    /// 7672 §2.2: defer, never plain text).
    fn dane_handshake(
        &mut self,
        settings: &ClientSettings,
        timed: Timed,
        deadline: Instant,
    ) -> Result<(), SmtpError> {
        let records = dane::usable(&settings.tlsa);
        match dane::handshake(timed, &self.server_name, &settings.dane_names, &records) {
            Ok(tls) => {
                self.conn.stream = Stream::Dane(Box::new(tls));
                self.tls = true;
                Ok(())
            }
            Err(failure) => {
                self.handshake_failed = true;
                Err(match failure {
                    dane::Failure::Mismatch(why) => SmtpError::new(
                        ErrorKind::Tls,
                        format!("TLSA mismatch with {}: {why}", self.server_name),
                    ),
                    dane::Failure::Handshake(_) if Instant::now() >= deadline => SmtpError::new(
                        ErrorKind::Timeout,
                        format!("timeout in the TLS handshake with {}", self.server_name),
                    ),
                    dane::Failure::Handshake(why) => SmtpError::new(
                        ErrorKind::Tls,
                        format!("TLS handshake with {}: {why}", self.server_name),
                    ),
                })
            }
        }
    }

    fn tcp_clone(&self) -> io::Result<TcpStream> {
        self.conn.stream.tcp().try_clone()
    }

    fn starttls(&mut self, settings: &ClientSettings, verify: bool) -> Result<(), SmtpError> {
        let reply = self.command("STARTTLS", "STARTTLS")?;
        if reply.code != 220 {
            if settings.security == Security::Opportunistic {
                // Allowed (RFC 3207 §4.1, RFC 7435), but an attacker on
                // the path strips TLS exactly this way: say so.
                log::warn!(
                    "{}[{}]:{}: STARTTLS refused: {}; delivering without TLS",
                    self.server_name,
                    self.peer.ip(),
                    self.peer.port(),
                    reply.one_line()
                );
                return Ok(());
            }
            return Err(SmtpError {
                kind: ErrorKind::Tls,
                message: format!("STARTTLS refused: {}", reply.one_line()),
                reply: Some(reply),
                after_final_dot: false,
                rcpt_taken: None,
            });
        }
        if self.conn.has_unread() {
            // Plain-text bytes after 220 would be taken as replies inside
            // TLS: a command injection (CVE-2011-0411).
            return Err(SmtpError::new(
                ErrorKind::Protocol,
                "data after the STARTTLS reply (injection attempt?)",
            ));
        }
        self.handshake(settings, verify)?;
        // RFC 3207 §4.2: forget what was learnt before TLS.
        self.extensions.clear();
        self.ehlo(&settings.helo_name)
    }

    fn authenticate(&mut self, credentials: &Credentials) -> Result<(), SmtpError> {
        if !self.tls {
            return Err(SmtpError::new(
                ErrorKind::AuthUnavailable,
                "not sending AUTH credentials over a connection without TLS",
            ));
        }
        let mechanisms: Vec<String> = self
            .parameter("AUTH")
            .unwrap_or("")
            .split_whitespace()
            .map(str::to_ascii_uppercase)
            .collect();
        let reply = if mechanisms.iter().any(|m| m == "PLAIN") {
            let token = auth::plain(&credentials.user, &credentials.password);
            self.command(&format!("AUTH PLAIN {token}"), "AUTH PLAIN")?
        } else if mechanisms.iter().any(|m| m == "LOGIN") {
            let first = self.command("AUTH LOGIN", "AUTH LOGIN")?;
            if first.code != 334 {
                return Err(auth_refused(first));
            }
            let second = self.command(&auth::encode(&credentials.user), "the AUTH user")?;
            if second.code != 334 {
                return Err(auth_refused(second));
            }
            self.command(&auth::encode(&credentials.password), "the AUTH password")?
        } else {
            return Err(SmtpError::new(
                ErrorKind::AuthUnavailable,
                format!(
                    "the server offers no AUTH mechanism we use (PLAIN, LOGIN): {:?}",
                    mechanisms.join(" ")
                ),
            ));
        };
        if reply.code != 235 {
            return Err(auth_refused(reply));
        }
        Ok(())
    }

    /// One transaction; see [`TransactionResult`]. `before_final_dot` is
    /// waited for after the last data byte is written and before the
    /// final dot: the data is flushed first unless the gate is already
    /// open, and then the data's last block and the dot share one write.
    pub fn send(
        &mut self,
        envelope: &TransactionEnvelope,
        data: &mut dyn Read,
        before_final_dot: &mut dyn FinalDotGate,
    ) -> Result<TransactionResult, SmtpError> {
        if envelope.smtputf8 && !self.offers("SMTPUTF8") {
            return Err(SmtpError::new(
                ErrorKind::NoSmtputf8,
                "an address needs SMTPUTF8, which the server does not offer",
            ));
        }
        if let Some(limit) = self
            .parameter("SIZE")
            .and_then(|p| p.parse::<u64>().ok())
            .filter(|&l| l > 0)
            && envelope.size > limit
        {
            return Err(SmtpError::new(
                ErrorKind::TooBig,
                format!(
                    "message of {} bytes exceeds the server's limit of {limit}",
                    envelope.size
                ),
            ));
        }
        let convert = match envelope.content {
            Some(content) => self.must_convert(content)?,
            None => false,
        };
        // Signed before MAIL, in a pass of its own over the data: the
        // SIZE= declared counts the signature too.
        let signature = match envelope.signer {
            Some(signer) => {
                let converted = match (convert, envelope.content) {
                    (true, Some(content)) => Some((content, self.offers("8BITMIME"))),
                    _ => None,
                };
                let field = signer
                    .signature(&mut |src, out| sent_form(src, converted, out))
                    .map_err(|e| SmtpError::new(ErrorKind::Io, format!("DKIM signing: {e}")))?;
                Some(field)
            }
            None => None,
        };
        let signature_len = signature.as_ref().map_or(0, |s| s.len() as u64);
        self.dirty = true;
        let mail = self.mail_command(envelope, signature_len);
        let rcpts: Vec<String> = envelope
            .recipients
            .iter()
            .map(|r| self.rcpt_command(r, envelope))
            .collect();
        self.conn.set_write_limit(self.timeouts.command);

        let (rcpt_replies, data_reply) = if self.offers("PIPELINING") {
            let mut commands = Vec::with_capacity(rcpts.len() + 2);
            commands.push(mail);
            commands.extend(rcpts);
            commands.push("DATA".to_string());
            let mut replies = self.pipeline(&commands)?;
            let data_reply = if replies.len() == commands.len() {
                replies.pop()
            } else {
                None
            };
            let mail_reply = replies.remove(0);
            if !mail_reply.is_positive() {
                match data_reply {
                    Some(data_reply) => self.abandon_data(&data_reply)?,
                    None => self.reset()?,
                }
                return Err(SmtpError::rejected("MAIL", mail_reply));
            }
            // MAIL accepted: every command went out and was answered.
            let Some(data_reply) = data_reply else {
                return Err(SmtpError::new(ErrorKind::Protocol, "no reply to DATA"));
            };
            if !replies.iter().any(Reply::is_positive) {
                // RFC 2920 §3.1: a 354 after all RCPTs failed still needs
                // a data section; an empty one, then RSET.
                self.abandon_data(&data_reply)?;
                return Ok(TransactionResult {
                    rcpt: replies,
                    data: None,
                    data_command: None,
                });
            }
            (replies, data_reply)
        } else {
            let mail_reply = self.command(&mail, "MAIL")?;
            if !mail_reply.is_positive() {
                return Err(SmtpError::rejected("MAIL", mail_reply));
            }
            let mut replies = Vec::with_capacity(rcpts.len());
            for r in &rcpts {
                let reply = self.command(r, "RCPT")?;
                let full = reply.code == 452;
                replies.push(reply);
                if full {
                    // As in [`Session::pipeline`]: no more once the
                    // server said it takes no more.
                    replies.resize_with(rcpts.len(), not_sent_over_limit);
                    break;
                }
            }
            if !replies.iter().any(Reply::is_positive) {
                let _ = self.reset();
                return Ok(TransactionResult {
                    rcpt: replies,
                    data: None,
                    data_command: None,
                });
            }
            let data_reply = self.command("DATA", "DATA")?;
            (replies, data_reply)
        };
        if data_reply.code != 354 {
            return Ok(TransactionResult {
                rcpt: rcpt_replies,
                data: None,
                data_command: Some(data_reply),
            });
        }

        self.conn.set_write_limit(self.timeouts.data_block);
        if let Some(field) = &signature {
            self.conn
                .write_all(field)
                .map_err(|e| SmtpError::io("sending the message data", &e))?;
        }
        let encoded = match envelope.content {
            Some(content) if convert => {
                let eight_bit_ok = self.offers("8BITMIME");
                data::encode_converted(data, content, eight_bit_ok, &mut self.conn)
            }
            _ => data::encode(data, &mut self.conn),
        };
        // The tail of the data waits in the buffer for the dot — one
        // write, and one segment for the server to read, less per
        // message — when the gate is open already, or when the tail is
        // small: a few kilobytes gain nothing from going out while the
        // gate is waited for, as a large tail on a slow link does.
        let dot_at_once = self.conn.buffered() <= SMALL_TAIL || before_final_dot.open_now();
        encoded
            .and_then(|_| match dot_at_once {
                true => Ok(()),
                false => self.conn.flush(),
            })
            .map_err(|e| SmtpError::io("sending the message data", &e))?;
        if let Err(e) = before_final_dot.wait() {
            // The window could not be recorded: do not open it. Dropping
            // the link without a dot makes the server discard the data.
            let _ = self
                .tcp_clone()
                .map(|s| s.shutdown(std::net::Shutdown::Both));
            return Err(SmtpError::new(
                ErrorKind::Io,
                format!("not sending the final dot: {e}"),
            ));
        }
        let dot = self
            .conn
            .write_all(b".\r\n")
            .and_then(|()| self.conn.flush());
        let reply = dot
            .map_err(|e| SmtpError::io("sending the final dot", &e))
            .and_then(|()| {
                self.read_reply(
                    "waiting for the reply to the final dot",
                    self.timeouts.final_dot,
                )
            })
            .map_err(|mut e| {
                e.after_final_dot = true;
                e
            })?;
        self.dirty = false;
        self.conn.set_write_limit(self.timeouts.command);
        Ok(TransactionResult {
            rcpt: rcpt_replies,
            data: Some(reply),
            data_command: None,
        })
    }

    /// Sends `commands` (MAIL, the RCPTs, DATA) pipelined (RFC 2920) and
    /// returns their replies in order. Never more than [`PIPELINE_WINDOW`]
    /// commands or [`PIPELINE_WINDOW_BYTES`] are unanswered: sending all
    /// of a large transaction before reading a reply deadlocks once both
    /// sides' socket buffers are full (the server blocked writing replies
    /// we do not read, we blocked writing commands it does not read). A
    /// transaction within one window goes in one write, as before. Once
    /// MAIL is refused nothing more is sent, and the replies are fewer
    /// than the commands. Once a RCPT is answered 452 (too many
    /// recipients, RFC 5321 §4.5.3.1.10) no further RCPT goes out — each
    /// would only be another 452, which Postfix counts towards dropping
    /// the client — and those not sent get a 452 of our own, so that the
    /// caller sends them in its next transaction.
    fn pipeline(&mut self, commands: &[String]) -> Result<Vec<Reply>, SmtpError> {
        let data_at = commands.len() - 1;
        let mut replies: Vec<Reply> = Vec::with_capacity(commands.len());
        let mut sent = 0;
        let mut unanswered_bytes = 0;
        let mut stop = false;
        // A RCPT was answered 452; then the RCPTs from `skipped.start`
        // on were never sent.
        let mut full = false;
        let mut skipped: Option<std::ops::Range<usize>> = None;
        loop {
            let mut wrote = false;
            while !stop && sent < commands.len() {
                if full && skipped.is_none() && (1..data_at).contains(&sent) {
                    skipped = Some(sent..data_at);
                    sent = data_at;
                }
                let size = commands[sent].len() + 2;
                let unanswered = sent - replies.len();
                if unanswered > 0
                    && (unanswered >= PIPELINE_WINDOW
                        || unanswered_bytes + size > PIPELINE_WINDOW_BYTES)
                {
                    break;
                }
                self.send_line(&commands[sent])?;
                unanswered_bytes += size;
                sent += 1;
                wrote = true;
            }
            if wrote {
                self.conn
                    .flush()
                    .map_err(|e| SmtpError::io("sending the envelope", &e))?;
            }
            // Read until half the window is free (all of it when nothing
            // more goes out), then fill it again in one write.
            loop {
                if let Some(range) = &skipped
                    && replies.len() == range.start
                {
                    replies.extend(range.clone().map(|_| not_sent_over_limit()));
                }
                if replies.len() == sent {
                    if stop || sent == commands.len() {
                        return Ok(replies);
                    }
                    break;
                }
                let what = match replies.len() {
                    0 => "after MAIL",
                    n if n == data_at => "after DATA",
                    _ => "after RCPT",
                };
                let reply = match self.read_reply(what, self.timeouts.command) {
                    Ok(reply) => reply,
                    Err(mut e) => {
                        if full {
                            e.rcpt_taken =
                                Some(replies.iter().skip(1).filter(|r| r.is_positive()).count());
                        }
                        return Err(e);
                    }
                };
                unanswered_bytes -= commands[replies.len()].len() + 2;
                if replies.is_empty() && !reply.is_positive() {
                    stop = true;
                }
                if reply.code == 452 && (1..data_at).contains(&replies.len()) {
                    full = true;
                }
                replies.push(reply);
                let unanswered = sent - replies.len();
                let more = !stop && sent < commands.len();
                if more
                    && unanswered <= PIPELINE_WINDOW / 2
                    && unanswered_bytes <= PIPELINE_WINDOW_BYTES / 2
                {
                    break;
                }
            }
        }
    }

    /// After a pipelined DATA that should not carry data: if the server
    /// said 354 anyway, an empty data section ends it; then RSET.
    fn abandon_data(&mut self, data_reply: &Reply) -> Result<(), SmtpError> {
        if data_reply.code == 354 {
            let _ = self.command(".", "an empty data section")?;
        }
        self.reset()
    }

    /// MAIL FROM with its parameters; `added` octets (a signature) go
    /// before the data.
    fn mail_command(&self, envelope: &TransactionEnvelope, added: u64) -> String {
        let mut mail = format!("MAIL FROM:<{}>", envelope.sender);
        if self.offers("SIZE") {
            mail.push_str(&format!(" SIZE={}", envelope.size + added));
        }
        let content = envelope.content;
        if (envelope.eight_bit || content.is_some_and(Content::eight_bit))
            && self.offers("8BITMIME")
        {
            // RFC 6152 §3: 8-bit data is declared where it may go.
            mail.push_str(" BODY=8BITMIME");
        }
        if envelope.smtputf8
            || (content.is_some_and(|c| c.eight_bit_header) && self.offers("SMTPUTF8"))
        {
            // RFC 6531 §3.4: UTF-8 header fields (RFC 6532) too.
            mail.push_str(" SMTPUTF8");
        }
        if self.offers("DSN") {
            if let Some(ret) = envelope.dsn_ret {
                let ret = if ret.eq_ignore_ascii_case("full") {
                    "FULL"
                } else {
                    "HDRS"
                };
                mail.push_str(&format!(" RET={ret}"));
            }
            if let Some(envid) = envelope.envid {
                mail.push_str(&format!(" ENVID={}", xtext(envid)));
            }
        }
        mail
    }

    /// Whether the data must go converted to 7-bit MIME: 8-bit content
    /// to a server without 8BITMIME (RFC 6152 §3), a NUL (never allowed
    /// in SMTP data without BINARYMIME), a line over 998 octets in a MIME
    /// message (an encoding carries it whole where a split would change
    /// it). 8-bit header fields without 8BITMIME cannot be converted: an
    /// error before MAIL.
    fn must_convert(&self, content: &Content) -> Result<bool, SmtpError> {
        let eight_bit_ok = self.offers("8BITMIME");
        if content.eight_bit_header && !eight_bit_ok {
            return Err(SmtpError::new(
                ErrorKind::Unconvertible,
                "the message has 8-bit header fields and the server offers no 8BITMIME: they cannot be converted to 7-bit",
            ));
        }
        if content.eight_bit_part_header && !eight_bit_ok {
            return Err(SmtpError::new(
                ErrorKind::Unconvertible,
                "the message has 8-bit header fields in a MIME part and the server offers no 8BITMIME: they cannot be converted to 7-bit",
            ));
        }
        Ok((content.eight_bit_body && !eight_bit_ok)
            || content.nul
            || (content.long_line && content.mime))
    }

    fn rcpt_command(&self, recipient: &str, envelope: &TransactionEnvelope) -> String {
        let mut rcpt = format!("RCPT TO:<{recipient}>");
        if self.offers("DSN")
            && let Some(notify) = envelope.dsn_notify
            && notify.split(',').all(|n| {
                ["NEVER", "SUCCESS", "FAILURE", "DELAY"]
                    .contains(&n.trim().to_ascii_uppercase().as_str())
            })
        {
            rcpt.push_str(&format!(" NOTIFY={}", notify.to_ascii_uppercase()));
        }
        rcpt
    }

    /// RSET: abandons any transaction; also proves the link is alive.
    pub fn reset(&mut self) -> Result<(), SmtpError> {
        self.conn.set_write_limit(self.timeouts.command);
        let reply = self.command("RSET", "RSET")?;
        if reply.is_positive() {
            self.dirty = false;
            Ok(())
        } else {
            Err(SmtpError::rejected("RSET", reply))
        }
    }

    /// QUIT and close; errors do not matter any more.
    pub fn quit(mut self) {
        self.send_quit();
    }

    fn send_quit(&mut self) {
        self.timeouts.command = QUIT_TIMEOUT.min(self.timeouts.command);
        self.conn.set_write_limit(self.timeouts.command);
        let _ = self.command("QUIT", "QUIT");
        match &mut self.conn.stream {
            Stream::Tls(tls) => {
                let _ = tls.shutdown();
            }
            Stream::Dane(tls) => {
                let _ = tls.shutdown();
            }
            Stream::Plain(_) => {}
        }
    }
}

/// What must hold before a transaction's final dot goes out (for the
/// runner: the RFC 1047 window on record, durably). A closure is a gate
/// that is never open before it is waited for.
pub trait FinalDotGate {
    /// Whether the dot may go out without waiting: `wait` would return
    /// at once.
    fn open_now(&mut self) -> bool {
        false
    }

    /// Returns once the dot may go out; Err: it must not.
    fn wait(&mut self) -> io::Result<()>;
}

impl<F: FnMut() -> io::Result<()>> FinalDotGate for F {
    fn wait(&mut self) -> io::Result<()> {
        self()
    }
}

/// A tail of message data this small is held back for the final dot
/// rather than sent while the dot's gate is waited for: well under the
/// ten segments a new TCP connection may send at once (RFC 6928).
const SMALL_TAIL: usize = 8 * 1024;

/// At most this many pipelined commands are unanswered at a time...
const PIPELINE_WINDOW: usize = 100;

/// ...and at most this many bytes of them: well within the smallest
/// socket buffers, so that neither side can block the other.
const PIPELINE_WINDOW_BYTES: usize = 16 * 1024;

/// The reply standing for a RCPT not sent because the server had
/// answered 452 to an earlier one: the recipient waits for the next
/// transaction.
fn not_sent_over_limit() -> Reply {
    Reply {
        code: 452,
        lines: vec!["4.5.3 not sent: the server refused recipients beyond its limit".into()],
    }
}

/// The most QUIT may take: nothing depends on its reply.
const QUIT_TIMEOUT: Duration = Duration::from_secs(5);

fn auth_refused(reply: Reply) -> SmtpError {
    SmtpError {
        kind: ErrorKind::AuthUnavailable,
        message: format!("authentication refused: {}", reply.one_line()),
        reply: Some(reply),
        after_final_dot: false,
        rcpt_taken: None,
    }
}

/// RFC 3461 xtext: printable ASCII except '+' and '=', the rest as +HH.
fn xtext(value: &str) -> String {
    value
        .bytes()
        .map(|b| {
            if (33..=126).contains(&b) && b != b'+' && b != b'=' {
                (b as char).to_string()
            } else {
                format!("+{b:02X}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests;
