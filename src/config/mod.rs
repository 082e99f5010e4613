//! The configuration file (`/etc/spoolmail/spoolmail.conf`, or `-C FILE`).
//!
//! Syntax: `key = value` lines, `#` comments (a whole line, or after
//! white space at the end of a line), blank lines. Every key the project
//! uses is defined here with its default, so that all three faces and the
//! runner read one [`Config`]. Anything unknown, repeated or malformed is
//! an error naming the file and line (exit 78): a typo must not silently
//! fall back to a default. The value parsers every line shares live in
//! [`values`]; [`relay`] and [`route`] parse their lines with those and
//! import nothing of this file (no cycle). Below `accept/` and
//! `runner/`, which read the settings: nothing here imports them.

pub mod check;
pub mod dkim;
pub mod relay;
pub mod route;
pub mod show;
pub mod values;

use crate::address::Address;
use crate::error::{Error, Result};
use relay::{Policy, RelayList};
use route::Route;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
pub use values::{SmarthostTls, parse_duration};
use values::{
    absolute_path, clip, count, domain_pattern, home_template, hostname, list, optional,
    parse_size, port, positive, sender_address, smarthost_tls, syslog_name, yes_no,
};

/// Where the configuration lives unless `-C` says otherwise.
pub const DEFAULT_PATH: &str = "/etc/spoolmail/spoolmail.conf";

/// TLS policy for MX delivery (the `tls` key; issue 26's
/// `mx_tls_policy` values extend it rather than add a second key that
/// could contradict it). The destination-published policies apply where
/// the destination publishes one and fall back to opportunistic TLS
/// elsewhere; delivery through a relay or route never uses them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsPolicy {
    /// Never STARTTLS.
    None,
    /// STARTTLS when offered; plain text when the handshake fails.
    Opportunistic,
    /// STARTTLS required, certificate and name verified.
    Required,
    /// MTA-STS (RFC 8461) where the recipient domain publishes a policy.
    MtaSts,
    /// DANE (RFC 7672) where the MX host publishes TLSA records.
    Dane,
    /// DANE where the MX host publishes TLSA records, else MTA-STS where
    /// the domain publishes a policy (RFC 8461 §2: DANE takes precedence).
    DaneThenMtaSts,
}

impl TlsPolicy {
    /// The value as written in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            TlsPolicy::None => "none",
            TlsPolicy::Opportunistic => "opportunistic",
            TlsPolicy::Required => "required",
            TlsPolicy::MtaSts => "mta-sts",
            TlsPolicy::Dane => "dane",
            TlsPolicy::DaneThenMtaSts => "dane-then-mta-sts",
        }
    }

    /// Whether MTA-STS policies are looked up for MX delivery.
    pub fn uses_mta_sts(self) -> bool {
        matches!(self, TlsPolicy::MtaSts | TlsPolicy::DaneThenMtaSts)
    }

    /// Whether DANE (TLSA records) is looked up for MX delivery.
    pub fn uses_dane(self) -> bool {
        matches!(self, TlsPolicy::Dane | TlsPolicy::DaneThenMtaSts)
    }
}

/// Where local mail is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailboxFormat {
    /// `mail_spool_dir/USER`, mbox format.
    Mbox,
    /// `~/Maildir/`.
    Maildir,
}

/// What masquerading does with an envelope sender the caller named
/// (`-f`, `-r`, `MAIL FROM` in `-bs`, the sender of a maildrop file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SenderOverride {
    /// `keep`: a named sender is never rewritten (dma's MASQUERADE).
    Keep,
    /// `local`: rewritten when it is a local address (the default), so
    /// that mailutils' `-f user@host` is masqueraded like the login.
    Local,
    /// `always`: rewritten whatever its domain.
    Always,
}

/// The header fields `masquerade_headers` may name (canonical spelling).
pub const MASQUERADE_HEADER_FIELDS: [&str; 5] =
    ["From", "Sender", "Reply-To", "Resent-From", "Resent-Sender"];

/// Every setting of spoolmail, with defaults filled in. The configuration
/// table of docs/configuration.md and spoolmail.conf(5) document each key.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `spool`: the spool directory.
    pub spool: PathBuf,
    /// `hostname`: this host's name (HELO, Message-ID, unqualified addresses).
    pub hostname: String,
    /// `local_domains`: domains delivered locally.
    pub local_domains: Vec<String>,
    /// `smarthost` (with `smarthost_policy` and the `relay` lines): relay
    /// every non-local message through this list instead of MX delivery.
    pub smarthost: Option<RelayList>,
    /// `smarthost_tls`: TLS mode towards the smarthost.
    pub smarthost_tls: SmarthostTls,
    /// `auth_user`: SMTP AUTH user for the smarthost.
    pub auth_user: Option<String>,
    /// `auth_password_file`: file holding the SMTP AUTH password.
    pub auth_password_file: Option<PathBuf>,
    /// `tls`: TLS policy for MX delivery.
    pub tls: TlsPolicy,
    /// `tls_ca_file`: extra trusted root certificate (PEM) for verified TLS,
    /// beside the system roots (a private CA in front of a smarthost).
    pub tls_ca_file: Option<PathBuf>,
    /// `resolver`: DNS server to ask (None: /etc/resolv.conf).
    pub resolver: Option<SocketAddr>,
    /// `dnssec_trust_anchor`: DNSKEY records (zone-file form) that DANE's
    /// DNSSEC validation trusts instead of the root's built-in keys — for
    /// tests and private roots (None: the IANA root keys).
    pub dnssec_trust_anchor: Option<PathBuf>,
    /// `smtp_port`: port for MX delivery.
    pub smtp_port: u16,
    /// `retry_min`: first retry delay and lower bound of every retry.
    pub retry_min: Duration,
    /// `retry_max`: upper bound of the retry delay.
    pub retry_max: Duration,
    /// `queue_lifetime`: give up and bounce after this long.
    pub queue_lifetime: Duration,
    /// `delay_warning`: send a delay DSN after this long.
    pub delay_warning: Duration,
    /// `max_connections`: global bound on concurrent deliveries.
    pub max_connections: u32,
    /// `max_host_connections`: bound per destination.
    pub max_host_connections: u32,
    /// `smtp_recipient_limit`: recipients per SMTP transaction.
    pub smtp_recipient_limit: usize,
    /// `max_message_size`: largest accepted message in bytes (0: no limit).
    pub max_message_size: u64,
    /// `aliases`: the aliases file.
    pub aliases: PathBuf,
    /// `mail_spool_dir`: where mbox mailboxes live.
    pub mail_spool_dir: PathBuf,
    /// `mailbox`: local mailbox format.
    pub mailbox: MailboxFormat,
    /// `maildir`: the Maildir of a user when `mailbox = maildir`; `~` is
    /// the user's home directory, `%u` the user name.
    pub maildir: String,
    /// `forward_path`: the user's forward file, same expansions.
    pub forward_path: String,
    /// `pipe_user`: the unprivileged user that runs /etc/aliases pipes and files.
    pub pipe_user: String,
    /// `pipe_timeout`: time limit for a pipe delivery.
    pub pipe_timeout: Duration,
    /// `mailbox_timeout`: time limit for writing one message into a
    /// mailbox, Maildir or file through the helper that runs as the user.
    pub mailbox_timeout: Duration,
    /// `mailbox_lock_wait`: how long one mailbox or file delivery waits
    /// for the mailbox's locks before the recipient is deferred ("busy"),
    /// so that a mailbox its owner keeps locked does not hold a worker
    /// (Postfix gives up after 20 tries a second apart).
    pub mailbox_lock_wait: Duration,
    /// `max_hops`: Received:/Delivered-To: count that means a mail loop.
    pub max_hops: u32,
    /// `expansion_limit`: the most targets (addresses, names, commands,
    /// files, includes, repeats counted) one recipient's expansion may
    /// reach; list files read are held to a tenth of it, their lines to
    /// ten times it.
    pub expansion_limit: usize,
    /// `queue_run_limit`: a queue run starts no new message after this
    /// long (the ones in hand are finished); 0: no limit.
    pub queue_run_limit: Duration,
    /// `connect_timeout`: SMTP connection timeout.
    pub connect_timeout: Duration,
    /// `command_timeout`: SMTP reply timeout for commands (RFC 5321: 5 min).
    pub command_timeout: Duration,
    /// `data_timeout`: SMTP timeout per data block (RFC 5321: 3 min).
    pub data_timeout: Duration,
    /// `final_dot_timeout`: wait for the reply to the final dot (RFC 1047, RFC 5321: 10 min).
    pub final_dot_timeout: Duration,
    /// `tmp_max_age`: age after which files left in tmp/ (and abandoned
    /// partial drops in maildrop-tmp/) are swept.
    pub tmp_max_age: Duration,
    /// `max_recipients`: envelope recipients per message, at submission
    /// and at maildrop pickup (1 to [`MAX_RECIPIENTS_CEILING`]).
    pub max_recipients: usize,
    /// `corrupt_max_age`: how long a file stays in corrupt/ before root's
    /// queue run removes it.
    pub corrupt_max_age: Duration,
    /// `corrupt_max_size`: total bytes corrupt/ may hold; beyond it the
    /// oldest files go first (0: no byte cap).
    pub corrupt_max_size: u64,
    /// `corrupt_max_files`: files corrupt/ may hold; beyond it the oldest
    /// go first.
    pub corrupt_max_files: usize,
    /// `max_messages_per_hour`: messages one user may submit in a clock
    /// hour (0: no limit); the brake of `accept/ratelimit.rs` applies it.
    pub max_messages_per_hour: u64,
    /// `max_recipients_per_hour`: envelope recipients one user may submit
    /// in a clock hour, all messages together (0: no limit).
    pub max_recipients_per_hour: u64,
    /// `rate_limit_exempt`: user names the two limits do not apply to
    /// (root never counts).
    pub rate_limit_exempt: Vec<String>,
    /// `syslog_name`: the first part of every syslog identity
    /// (`NAME/smtp[pid]`); see [`crate::logging`].
    pub syslog_name: String,
    /// `syslog_socket`: the syslog socket (`None`: the system's).
    pub syslog_socket: Option<PathBuf>,
    /// `masquerade_domain`: local senders become `user@` this domain
    /// (applied by `accept/masquerade.rs`).
    pub masquerade_domain: Option<String>,
    /// `sender_address`: local senders become this one address instead.
    pub sender_address: Option<Address>,
    /// `masquerade_local`: sender domains that count as local beside the
    /// hostname and `localhost` (lower case; `*.x` for any name under x).
    pub masquerade_local: Vec<String>,
    /// `masquerade_envelope`: whether the envelope sender is rewritten.
    pub masquerade_envelope: bool,
    /// `masquerade_headers`: which header fields are rewritten, from
    /// [`MASQUERADE_HEADER_FIELDS`].
    pub masquerade_headers: Vec<&'static str>,
    /// `masquerade_sender_override`: the policy for a sender given with `-f`.
    pub masquerade_sender_override: SenderOverride,
    /// `route` lines, in file order: the first that matches decides.
    pub routes: Vec<Route<RelayList>>,
    /// `dkim` lines: the signing domains, one line each.
    pub dkim: Vec<dkim::Signing>,
    /// `dkim_required`: a message whose signing domain's key cannot be
    /// read waits (yes) or goes unsigned (no).
    pub dkim_required: bool,
}

impl Config {
    /// The first relay of the smarthost list as (host, port), if any.
    pub fn smarthost_first(&self) -> Option<(String, u16)> {
        let first = self.smarthost.as_ref()?.relays.first()?;
        Some((first.host.clone(), first.port))
    }
}

/// The highest `max_recipients` accepted: the delivery state of a message
/// holds one entry per recipient, and the spool reads back at most
/// `spool::MAX_STATE_BYTES` of it (a few KiB per recipient at worst).
pub const MAX_RECIPIENTS_CEILING: usize = 10_000;

impl Default for Config {
    fn default() -> Config {
        let hostname = system_hostname();
        Config {
            spool: PathBuf::from("/var/spool/spoolmail"),
            local_domains: vec![hostname.clone(), "localhost".to_string()],
            hostname,
            smarthost: None,
            smarthost_tls: SmarthostTls::Starttls,
            auth_user: None,
            auth_password_file: None,
            tls: TlsPolicy::Opportunistic,
            tls_ca_file: None,
            resolver: None,
            dnssec_trust_anchor: None,
            smtp_port: 25,
            retry_min: Duration::from_secs(30 * 60),
            retry_max: Duration::from_secs(3 * 3600),
            queue_lifetime: Duration::from_secs(5 * 86400),
            delay_warning: Duration::from_secs(4 * 3600),
            max_connections: 10,
            max_host_connections: 2,
            smtp_recipient_limit: 100,
            max_message_size: 50 * 1024 * 1024,
            aliases: PathBuf::from("/etc/aliases"),
            mail_spool_dir: PathBuf::from("/var/mail"),
            mailbox: MailboxFormat::Mbox,
            maildir: "~/Maildir/".to_string(),
            forward_path: "~/.forward".to_string(),
            pipe_user: "nobody".to_string(),
            pipe_timeout: Duration::from_secs(3600),
            mailbox_timeout: Duration::from_secs(300),
            mailbox_lock_wait: Duration::from_secs(20),
            max_hops: 50,
            expansion_limit: 1000,
            queue_run_limit: Duration::from_secs(25 * 60),
            connect_timeout: Duration::from_secs(30),
            command_timeout: Duration::from_secs(5 * 60),
            data_timeout: Duration::from_secs(3 * 60),
            final_dot_timeout: Duration::from_secs(10 * 60),
            tmp_max_age: Duration::from_secs(36 * 3600),
            max_recipients: 1000,
            corrupt_max_age: Duration::from_secs(30 * 86400),
            corrupt_max_size: 100 * 1024 * 1024,
            corrupt_max_files: 1000,
            max_messages_per_hour: 0,
            max_recipients_per_hour: 0,
            rate_limit_exempt: Vec::new(),
            syslog_name: crate::logging::DEFAULT_NAME.to_string(),
            syslog_socket: None,
            masquerade_domain: None,
            sender_address: None,
            masquerade_local: Vec::new(),
            masquerade_envelope: true,
            masquerade_headers: vec!["From", "Sender", "Reply-To"],
            masquerade_sender_override: SenderOverride::Local,
            routes: Vec::new(),
            dkim: Vec::new(),
            dkim_required: true,
        }
    }
}

/// Loads `path`. When `required` is false a missing file means "all defaults".
/// Only a regular file of at most 1 MiB is read: `-C /dev/zero` or a
/// FIFO is refused at once (exit 78), never read without end or waited on.
pub fn load(path: &Path, required: bool) -> Result<Config> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    /// A real configuration is a few KiB.
    const MAX_FILE: u64 = 1 << 20;
    let cannot = |e: std::io::Error| {
        Error::config(format!("cannot read config file {}: {e}", path.display()))
    };
    // O_NONBLOCK so that opening a FIFO does not wait for a writer. No
    // O_NOFOLLOW: the default path may well be a symlink (configuration
    // management), and a non-root caller's `-C` is opened without the
    // setgid privilege, so following a link gains nothing.
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
    {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
            return Ok(Config::default());
        }
        Err(e) => return Err(cannot(e)),
    };
    if !file.metadata().map_err(cannot)?.is_file() {
        return Err(Error::config(format!(
            "config file {}: not a regular file",
            path.display()
        )));
    }
    let mut bytes = Vec::new();
    file.take(MAX_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(cannot)?;
    if bytes.len() as u64 > MAX_FILE {
        return Err(Error::config(format!(
            "config file {}: larger than 1 MiB",
            path.display()
        )));
    }
    let text = String::from_utf8(bytes)
        .map_err(|_| Error::config(format!("{}: not valid UTF-8", path.display())))?;
    parse(&text, &path.display().to_string())
}

/// Parses config text; `origin` names the file in error messages.
pub fn parse(text: &str, origin: &str) -> Result<Config> {
    let mut config = Config::default();
    let mut seen: Vec<String> = Vec::new();
    let mut hostname_set = false;
    let mut local_domains_set = false;
    let mut lists = Lists::default();
    for (index, raw) in text.lines().enumerate() {
        let at = |msg: String| Error::config(format!("{origin}:{}: {msg}", index + 1));
        let line = strip_comment(raw).trim();
        if line.is_empty() {
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| at(format!("expected \"key = value\", got {:?}", clip(line))))?;
        let (key, value) = (key.trim(), value.trim());
        if value.chars().any(char::is_control) {
            return Err(at(format!("{key}: control character in value")));
        }
        // `route`, `relay` and `dkim` lines are a table: one per line, repeated.
        if !REPEATED.contains(&key) && seen.iter().any(|k| k == key) {
            return Err(at(format!("duplicate key \"{}\"", clip(key))));
        }
        match lists.take(key, value, index + 1) {
            Some(taken) => taken,
            None => set(&mut config, key, value),
        }
        .map_err(|msg| at(format!("{key}: {msg}")))?;
        hostname_set |= key == "hostname";
        local_domains_set |= key == "local_domains";
        seen.push(key.to_string());
    }
    if hostname_set && !local_domains_set {
        config.local_domains = vec![config.hostname.clone(), "localhost".to_string()];
    }
    check(&config).map_err(|msg| Error::config(format!("{origin}: {msg}")))?;
    lists
        .resolve(&mut config)
        .map_err(|(line, msg)| Error::config(format!("{origin}:{line}: {msg}")))?;
    Ok(config)
}

/// One `key = value` line as the file writes it: what `--show-config
/// --non-default` prints and where `--check-config` points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// The key.
    pub key: String,
    /// The value, comment stripped and trimmed.
    pub value: String,
    /// Its line number (1-based).
    pub line: usize,
}

/// The `key = value` lines of `text`, in file order, read as [`parse`]
/// reads them; a line that is not one is left out ([`parse`] refuses it).
pub fn written(text: &str) -> Vec<Written> {
    text.lines()
        .enumerate()
        .filter_map(|(index, raw)| {
            let (key, value) = strip_comment(raw).trim().split_once('=')?;
            Some(Written {
                key: key.trim().to_string(),
                value: value.trim().to_string(),
                line: index + 1,
            })
        })
        .collect()
}

/// [`load`], and the file's lines as written (none when it is absent and
/// not `required`): for `--show-config` and `--check-config`.
pub fn load_written(path: &Path, required: bool) -> Result<(Config, Vec<Written>)> {
    let config = load(path, required)?;
    let lines = match std::fs::read_to_string(path) {
        Ok(text) => written(&text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => Vec::new(),
        Err(e) => {
            return Err(Error::config(format!(
                "cannot read config file {}: {e}",
                path.display()
            )));
        }
    };
    Ok((config, lines))
}

/// Keys that may be given on several lines.
const REPEATED: &[&str] = &["route", "relay", "dkim"];

/// The relay lists and the routing table as written, kept until the
/// whole file is read: an entry's settings (`relay` lines, the
/// `smarthost_*` and `auth_*` defaults) may come after it.
#[derive(Default)]
struct Lists {
    smarthost: Option<Vec<relay::Entry>>,
    policy: Option<Policy>,
    /// `relay` lines: entry as written, its options, the line.
    options: Vec<(String, relay::Options, usize)>,
    routes: Vec<Route<(Vec<relay::Entry>, Policy)>>,
}

impl Lists {
    /// Takes the keys of the relay lists and routes (None: not one).
    fn take(&mut self, key: &str, value: &str, line: usize) -> Option<Setting> {
        let taken = match key {
            "smarthost" => optional(value, relay::parse_entries).map(|e| self.smarthost = e),
            "smarthost_policy" => relay::parse_policy(value).map(|p| self.policy = Some(p)),
            "relay" => relay::parse_options(value).and_then(|(entry, options)| {
                match self.options.iter().find(|(e, _, _)| *e == entry) {
                    Some((_, _, first)) => {
                        Err(format!("{entry} has a relay line already (line {first})"))
                    }
                    None => {
                        self.options.push((entry, options, line));
                        Ok(())
                    }
                }
            }),
            "route" => route::parse(value, line).map(|r| self.routes.push(r)),
            _ => return None,
        };
        Some(taken)
    }

    /// Resolves every list's entries into `config`. Err: (line, reason).
    fn resolve(self, config: &mut Config) -> std::result::Result<(), (usize, String)> {
        let options: Vec<(String, relay::Options)> = self
            .options
            .iter()
            .map(|(e, o, _)| (e.clone(), o.clone()))
            .collect();
        let auth = match (&config.auth_user, &config.auth_password_file) {
            (Some(user), Some(path)) => Some(relay::Auth {
                user: user.clone(),
                password_file: path.clone(),
            }),
            _ => None,
        };
        let defaults = relay::Defaults {
            tls: config.smarthost_tls,
            auth,
            max_connections: config.max_connections,
            options: &options,
        };
        let mut named: Vec<&str> = Vec::new();
        if let Some(entries) = &self.smarthost {
            let policy = self.policy.unwrap_or(Policy::Failover);
            config.smarthost = Some(relay::resolve(entries, policy, &defaults));
            named.extend(entries.iter().map(|e| e.written.as_str()));
        }
        for r in &self.routes {
            let action = match &r.action {
                route::Action::Relay((entries, policy)) => {
                    named.extend(entries.iter().map(|e| e.written.as_str()));
                    route::Action::Relay(relay::resolve(entries, *policy, &defaults))
                }
                route::Action::Mx => route::Action::Mx,
                route::Action::Local => route::Action::Local,
                route::Action::Error { code, status, text } => route::Action::Error {
                    code: *code,
                    status: status.clone(),
                    text: text.clone(),
                },
            };
            config.routes.push(Route {
                recipient: r.recipient.clone(),
                sender: r.sender.clone(),
                action,
                line: r.line,
            });
        }
        // A relay line for an entry no list has is a typo: its settings
        // would silently go nowhere.
        for (entry, _, line) in &self.options {
            if !named.contains(&entry.as_str()) {
                return Err((
                    *line,
                    format!(
                        "relay: {entry} is in no relay list (smarthost or route), as written there"
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// A `#` starts a comment at the start of a line or after white space, so
/// that values such as a password file path may still contain `#`.
fn strip_comment(line: &str) -> &str {
    let bytes = line.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'#' && (i == 0 || bytes[i - 1].is_ascii_whitespace()) {
            return &line[..i];
        }
    }
    line
}

type Setting = std::result::Result<(), String>;

fn set(c: &mut Config, key: &str, value: &str) -> Setting {
    match key {
        "spool" => c.spool = absolute_path(value)?,
        "hostname" => c.hostname = hostname(value)?,
        "local_domains" => {
            c.local_domains = value
                .split([',', ' ', '\t'])
                .filter(|d| !d.is_empty())
                .map(|d| hostname(d).map(|h| h.to_ascii_lowercase()))
                .collect::<std::result::Result<_, _>>()?
        }
        "smarthost_tls" => c.smarthost_tls = smarthost_tls(value)?,
        "auth_user" => c.auth_user = optional(value, |v| Ok(v.to_string()))?,
        "auth_password_file" => c.auth_password_file = optional(value, absolute_path)?,
        "tls" => {
            c.tls = match value {
                "none" => TlsPolicy::None,
                "opportunistic" => TlsPolicy::Opportunistic,
                "required" => TlsPolicy::Required,
                "mta-sts" => TlsPolicy::MtaSts,
                "dane" => TlsPolicy::Dane,
                "dane-then-mta-sts" => TlsPolicy::DaneThenMtaSts,
                _ => {
                    return Err(format!(
                        "expected none, opportunistic, required, mta-sts, dane or dane-then-mta-sts, got {:?}",
                        clip(value)
                    ));
                }
            }
        }
        "tls_ca_file" => c.tls_ca_file = optional(value, absolute_path)?,
        "dnssec_trust_anchor" => c.dnssec_trust_anchor = optional(value, absolute_path)?,
        "resolver" => {
            c.resolver = optional(value, |v| {
                v.parse::<SocketAddr>()
                    .map_err(|_| format!("expected ip:port, got {:?}", clip(v)))
            })?
        }
        "smtp_port" => c.smtp_port = port(value)?,
        "retry_min" => c.retry_min = parse_duration(value)?,
        "retry_max" => c.retry_max = parse_duration(value)?,
        "queue_lifetime" => c.queue_lifetime = parse_duration(value)?,
        "delay_warning" => c.delay_warning = parse_duration(value)?,
        "max_connections" => c.max_connections = positive(value)?,
        "max_host_connections" => c.max_host_connections = positive(value)?,
        "smtp_recipient_limit" => c.smtp_recipient_limit = positive(value)? as usize,
        "max_message_size" => c.max_message_size = parse_size(value)?,
        "aliases" => c.aliases = absolute_path(value)?,
        "mail_spool_dir" => c.mail_spool_dir = absolute_path(value)?,
        "mailbox" => {
            c.mailbox = match value {
                "mbox" => MailboxFormat::Mbox,
                "maildir" => MailboxFormat::Maildir,
                _ => return Err(format!("expected mbox or maildir, got {:?}", clip(value))),
            }
        }
        "maildir" => c.maildir = home_template(value)?,
        "forward_path" => c.forward_path = home_template(value)?,
        "pipe_user" => {
            if value.is_empty() || value == "root" || value.contains(['/', ':', ' ']) {
                return Err(format!(
                    "expected an unprivileged user name, got {:?}",
                    clip(value)
                ));
            }
            c.pipe_user = value.to_string()
        }
        "pipe_timeout" => c.pipe_timeout = parse_duration(value)?,
        "mailbox_timeout" => c.mailbox_timeout = parse_duration(value)?,
        "mailbox_lock_wait" => c.mailbox_lock_wait = parse_duration(value)?,
        "max_hops" => c.max_hops = positive(value)?,
        "expansion_limit" => c.expansion_limit = positive(value)? as usize,
        "queue_run_limit" => c.queue_run_limit = parse_duration(value)?,
        "connect_timeout" => c.connect_timeout = parse_duration(value)?,
        "command_timeout" => c.command_timeout = parse_duration(value)?,
        "data_timeout" => c.data_timeout = parse_duration(value)?,
        "final_dot_timeout" => c.final_dot_timeout = parse_duration(value)?,
        "tmp_max_age" => c.tmp_max_age = parse_duration(value)?,
        "max_recipients" => {
            c.max_recipients = match value.parse::<usize>() {
                Ok(n) if (1..=MAX_RECIPIENTS_CEILING).contains(&n) => n,
                _ => {
                    return Err(format!(
                        "expected a number from 1 to {MAX_RECIPIENTS_CEILING}, got {:?}",
                        clip(value)
                    ));
                }
            }
        }
        "corrupt_max_age" => c.corrupt_max_age = parse_duration(value)?,
        "corrupt_max_size" => c.corrupt_max_size = parse_size(value)?,
        "corrupt_max_files" => c.corrupt_max_files = positive(value)? as usize,
        "max_messages_per_hour" => c.max_messages_per_hour = count(value)?,
        "max_recipients_per_hour" => c.max_recipients_per_hour = count(value)?,
        "rate_limit_exempt" => {
            c.rate_limit_exempt = value
                .split([',', ' ', '\t'])
                .filter(|n| !n.is_empty())
                .map(str::to_owned)
                .collect()
        }
        "syslog_name" => c.syslog_name = syslog_name(value)?,
        "syslog_socket" => c.syslog_socket = optional(value, absolute_path)?,
        "masquerade_domain" => {
            c.masquerade_domain = optional(value, |v| hostname(v).map(|h| h.to_ascii_lowercase()))?
        }
        "sender_address" => c.sender_address = optional(value, sender_address)?,
        "masquerade_local" => {
            c.masquerade_local = list(value)
                .map(domain_pattern)
                .collect::<std::result::Result<_, _>>()?
        }
        "masquerade_envelope" => c.masquerade_envelope = yes_no(value)?,
        "masquerade_headers" => c.masquerade_headers = masquerade_headers(value)?,
        "masquerade_sender_override" => {
            c.masquerade_sender_override = match value {
                "keep" => SenderOverride::Keep,
                "local" => SenderOverride::Local,
                "always" => SenderOverride::Always,
                _ => {
                    return Err(format!(
                        "expected keep, local or always, got {:?}",
                        clip(value)
                    ));
                }
            }
        }
        "dkim" => {
            let line = dkim::parse(value)?;
            if c.dkim.iter().any(|d| d.domain == line.domain) {
                return Err(format!("{} has a dkim line already", line.domain));
            }
            c.dkim.push(line)
        }
        "dkim_required" => c.dkim_required = yes_no(value)?,
        _ => return Err("unknown key".to_string()),
    }
    Ok(())
}

/// Cross-checks between keys, after the whole file is read.
fn check(c: &Config) -> Setting {
    if c.retry_max < c.retry_min {
        return Err("retry_max is shorter than retry_min".to_string());
    }
    if c.queue_lifetime < c.retry_min {
        return Err("queue_lifetime is shorter than retry_min".to_string());
    }
    if c.auth_user.is_some() != c.auth_password_file.is_some() {
        return Err("auth_user and auth_password_file go together".to_string());
    }
    // Two answers to "what does root@host become?": refuse to guess.
    if c.masquerade_domain.is_some() && c.sender_address.is_some() {
        return Err("masquerade_domain and sender_address exclude each other: set one".to_string());
    }
    Ok(())
}

/// `from, sender, reply-to` (any case, any of [`MASQUERADE_HEADER_FIELDS`]),
/// or `none`.
fn masquerade_headers(value: &str) -> std::result::Result<Vec<&'static str>, String> {
    if value == "none" {
        return Ok(Vec::new());
    }
    let mut out: Vec<&'static str> = Vec::new();
    for item in list(value) {
        let field = MASQUERADE_HEADER_FIELDS
            .iter()
            .find(|f| f.eq_ignore_ascii_case(item))
            .ok_or_else(|| {
                format!(
                    "expected none or a list of from, sender, reply-to, resent-from, resent-sender; got {:?}",
                    clip(item)
                )
            })?;
        if !out.contains(field) {
            out.push(field);
        }
    }
    if out.is_empty() {
        return Err("expected none or a list of header names".to_string());
    }
    Ok(out)
}

/// The system host name, or "localhost" when it cannot be had.
fn system_hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .and_then(|h| hostname(&h).ok())
        .unwrap_or_else(|| "localhost".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        parse(text, "t.conf").unwrap_err().message().to_string()
    }

    #[test]
    fn defaults() {
        let c = parse("", "t.conf").unwrap();
        assert_eq!(c.spool, PathBuf::from("/var/spool/spoolmail"));
        assert_eq!(c.retry_min, Duration::from_secs(1800));
        assert_eq!(c.retry_max, Duration::from_secs(10800));
        assert_eq!(c.queue_lifetime, Duration::from_secs(432000));
        assert_eq!(c.delay_warning, Duration::from_secs(14400));
        assert_eq!(c.final_dot_timeout, Duration::from_secs(600));
        assert_eq!(c.tls, TlsPolicy::Opportunistic);
        assert_eq!(c.smtp_port, 25);
        assert!(c.local_domains.contains(&"localhost".to_string()));
        assert_eq!(c.max_message_size, 52428800);
        assert_eq!(c.max_recipients, 1000);
        assert_eq!(c.corrupt_max_age, Duration::from_secs(30 * 86400));
        assert_eq!(c.corrupt_max_size, 100 << 20);
        assert_eq!(c.corrupt_max_files, 1000);
    }

    #[test]
    fn every_key_parses() {
        let text = "\
# comment
spool = /tmp/spool   # trailing comment
hostname = mx.example.org
local_domains = example.org, example.net
smarthost = relay.example.org:587
smarthost_tls = tls
auth_user = me
auth_password_file = /etc/spoolmail/pass#word
tls = required
resolver = 127.0.0.1:5353
smtp_port = 2525
retry_min = 30s
retry_max = 2h
queue_lifetime = 1d
delay_warning = 90m
max_connections = 4
max_host_connections = 1
max_message_size = 10M
aliases = /etc/mail/aliases
mail_spool_dir = /var/spool/mail
mailbox = maildir
pipe_user = mailpipe
pipe_timeout = 600
max_hops = 30
expansion_limit = 200
queue_run_limit = 10m
connect_timeout = 10s
command_timeout = 1m
data_timeout = 2m
final_dot_timeout = 10m
tmp_max_age = 2d
max_recipients = 50
corrupt_max_age = 7d
corrupt_max_size = 10M
corrupt_max_files = 20
";
        let c = parse(text, "t.conf").unwrap();
        assert_eq!(c.spool, PathBuf::from("/tmp/spool"));
        assert_eq!(c.hostname, "mx.example.org");
        assert_eq!(c.local_domains, vec!["example.org", "example.net"]);
        assert_eq!(
            c.smarthost_first(),
            Some(("relay.example.org".to_string(), 587))
        );
        assert_eq!(c.smarthost_tls, SmarthostTls::Tls);
        assert_eq!(
            c.auth_password_file,
            Some(PathBuf::from("/etc/spoolmail/pass#word"))
        );
        assert_eq!(c.tls, TlsPolicy::Required);
        assert_eq!(c.resolver, Some("127.0.0.1:5353".parse().unwrap()));
        assert_eq!(c.smtp_port, 2525);
        assert_eq!(c.retry_min, Duration::from_secs(30));
        assert_eq!(c.queue_lifetime, Duration::from_secs(86400));
        assert_eq!(c.max_message_size, 10 * 1024 * 1024);
        assert_eq!(c.mailbox, MailboxFormat::Maildir);
        assert_eq!(c.pipe_timeout, Duration::from_secs(600));
        assert_eq!(c.max_hops, 30);
        assert_eq!(c.expansion_limit, 200);
        assert_eq!(c.queue_run_limit, Duration::from_secs(600));
        assert_eq!(c.tmp_max_age, Duration::from_secs(172800));
        assert_eq!(c.max_recipients, 50);
        assert_eq!(c.corrupt_max_age, Duration::from_secs(7 * 86400));
        assert_eq!(c.corrupt_max_size, 10 << 20);
        assert_eq!(c.corrupt_max_files, 20);
    }

    #[test]
    fn tls_takes_the_published_policies() {
        for policy in [
            TlsPolicy::None,
            TlsPolicy::Opportunistic,
            TlsPolicy::Required,
            TlsPolicy::MtaSts,
            TlsPolicy::Dane,
            TlsPolicy::DaneThenMtaSts,
        ] {
            let c = parse(&format!("tls = {}", policy.as_str()), "t.conf").unwrap();
            assert_eq!(c.tls, policy);
        }
        assert!(TlsPolicy::DaneThenMtaSts.uses_dane() && TlsPolicy::DaneThenMtaSts.uses_mta_sts());
        assert!(!TlsPolicy::Dane.uses_mta_sts() && !TlsPolicy::MtaSts.uses_dane());
    }

    #[test]
    fn hostname_sets_local_domains_default() {
        let c = parse("hostname = a.example", "t.conf").unwrap();
        assert_eq!(c.local_domains, vec!["a.example", "localhost"]);
    }

    #[test]
    fn smarthost_forms() {
        // The forms of one host:port value: see values.rs. Issue 12, defect 3: implicit TLS without a port means 465, in
        // either order; a given port is kept.
        for text in [
            "smarthost = relay.example\nsmarthost_tls = tls\n",
            "smarthost_tls = tls\nsmarthost = relay.example\n",
        ] {
            let c = parse(text, "t.conf").unwrap();
            assert_eq!(
                c.smarthost_first(),
                Some(("relay.example".to_string(), 465))
            );
        }
        let c = parse("smarthost = relay.example:2465\nsmarthost_tls = tls\n", "t").unwrap();
        assert_eq!(
            c.smarthost_first(),
            Some(("relay.example".to_string(), 2465))
        );
        let c = parse("smarthost = [::1]\nsmarthost_tls = tls\n", "t").unwrap();
        assert_eq!(c.smarthost_first(), Some(("::1".to_string(), 465)));
        let c = parse("smarthost = relay.example\n", "t").unwrap();
        assert_eq!(c.smarthost_first(), Some(("relay.example".to_string(), 25)));
    }

    #[test]
    fn errors_name_file_and_line() {
        assert_eq!(err("\n\nfoo = 1"), "t.conf:3: foo: unknown key");
        assert!(err("spool = relative/path").starts_with("t.conf:1: spool:"));
        assert!(err("just words").starts_with("t.conf:1: expected"));
        assert!(err("smtp_port = 25\nsmtp_port = 26").starts_with("t.conf:2: duplicate key"));
        assert!(err("retry_min = soon").contains("retry_min"));
        assert!(err("tls = maybe").contains("opportunistic"));
        assert!(err("tls = MTA-STS").contains("dane-then-mta-sts"));
        assert!(err("max_connections = 0").contains("positive"));
        assert!(err("max_message_size = 10X").contains("size"));
        assert!(err("hostname = bad_host!").contains("host name"));
        assert!(err("resolver = localhost").contains("ip:port"));
        assert!(err("pipe_user = root").contains("unprivileged"));
        assert!(err("max_recipients = 0").contains("1 to 10000"));
        assert!(err("max_recipients = 10001").contains("1 to 10000"));
        assert!(err("corrupt_max_files = 0").contains("positive"));
    }

    #[test]
    fn masquerading_keys() {
        let c = parse("", "t.conf").unwrap();
        assert_eq!(c.masquerade_domain, None);
        assert_eq!(c.sender_address, None);
        assert!(c.masquerade_envelope);
        assert_eq!(c.masquerade_headers, ["From", "Sender", "Reply-To"]);
        assert_eq!(c.masquerade_sender_override, SenderOverride::Local);
        let c = parse(
            "masquerade_domain = Example.COM\nmasquerade_local = web01, *.Internal  db.corp\nmasquerade_envelope = no\nmasquerade_headers = from,REPLY-TO from\nmasquerade_sender_override = always\n",
            "t.conf",
        )
        .unwrap();
        assert_eq!(c.masquerade_domain.as_deref(), Some("example.com"));
        assert_eq!(c.masquerade_local, ["web01", "*.internal", "db.corp"]);
        assert!(!c.masquerade_envelope);
        assert_eq!(c.masquerade_headers, ["From", "Reply-To"]);
        assert_eq!(c.masquerade_sender_override, SenderOverride::Always);
        let c = parse(
            "sender_address = noreply@example.com\nmasquerade_headers = none",
            "t",
        )
        .unwrap();
        assert_eq!(c.sender_address.unwrap().to_string(), "noreply@example.com");
        assert!(c.masquerade_headers.is_empty());
    }

    #[test]
    fn masquerading_errors_name_file_and_line() {
        assert!(
            err("\nmasquerade_domain = bad_domain!").starts_with("t.conf:2: masquerade_domain:")
        );
        assert!(
            err("masquerade_local = *.ok, *bad")
                .starts_with("t.conf:1: masquerade_local: expected a host name or *.domain")
        );
        assert!(err("masquerade_envelope = maybe").contains("yes or no"));
        assert!(err("masquerade_headers = from, to").contains("\"to\""));
        assert!(err("masquerade_headers = ,").contains("none"));
        assert!(err("masquerade_sender_override = sometimes").contains("keep, local or always"));
        for bad in [
            "root",
            "<>",
            "<a@b.example>",
            "a@",
            "two@a.example three@b.example",
        ] {
            assert!(
                err(&format!("sender_address = {bad}"))
                    .starts_with("t.conf:1: sender_address: expected an address"),
                "{bad}"
            );
        }
        assert!(
            err("masquerade_domain = example.com\nsender_address = n@example.com")
                .contains("exclude each other")
        );
    }

    #[test]
    fn dkim_lines_are_a_table_one_per_domain() {
        let c = parse(
            "dkim = example.org selector=s key=/k1\ndkim = example.net selector=e key=/k2 algorithm=ed25519-sha256\ndkim_required = no\n",
            "t",
        )
        .unwrap();
        assert_eq!(c.dkim.len(), 2);
        assert!(!c.dkim_required);
        assert!(Config::default().dkim_required, "required by default");
        let e = parse(
            "dkim = example.org selector=s key=/k1\ndkim = EXAMPLE.org selector=t key=/k2\n",
            "t",
        )
        .unwrap_err();
        assert!(e.to_string().contains("t:2:"), "{e}");
        assert!(parse("dkim = example.org key=/k\n", "t").is_err());
    }

    #[test]
    fn relay_lists_and_routes() {
        let c = parse(
            "smarthost = a.example:587, b.example\nsmarthost_policy = spread\n\
             auth_user = me\nauth_password_file = /etc/p\n\
             relay = b.example tls=tls auth_user=b auth_password_file=/etc/b max_connections=2\n\
             route = *.corp.example -> relay 10.0.0.5, 10.0.0.6:26 spread\n\
             route = * from brand.example -> mx\n\
             route = old.example -> error 550 5.7.1 gone\n",
            "t.conf",
        )
        .unwrap();
        let list = c.smarthost.as_ref().unwrap();
        assert_eq!(list.policy, Policy::Spread);
        let (a, b) = (&list.relays[0], &list.relays[1]);
        assert_eq!((a.port, a.tls), (587, SmarthostTls::Starttls));
        assert_eq!(a.auth.as_ref().unwrap().user, "me", "the defaults");
        assert_eq!((b.port, b.tls), (465, SmarthostTls::Tls), "its own");
        assert_eq!(b.auth.as_ref().unwrap().user, "b");
        assert_eq!((a.max_connections, b.max_connections), (10, 2));
        assert_eq!(c.routes.len(), 3);
        assert_eq!(c.routes[0].line, 6);
        let route::Action::Relay(list) = &c.routes[0].action else {
            panic!("a relay route")
        };
        assert_eq!(list.relays[1].port, 26);
        // One smarthost as before: failover, its port, the defaults.
        let c = parse("smarthost = r.example:2525\n", "t").unwrap();
        assert_eq!(c.smarthost.unwrap().policy, Policy::Failover);
    }

    #[test]
    fn bad_relay_and_route_lines_name_their_line() {
        assert!(err("\nroute = x.example -> nowhere").starts_with("t.conf:2: route: expected mx"));
        assert!(
            err("route = x.example -> mx\n\nroute = y.example mx").starts_with("t.conf:3: route:")
        );
        assert!(err("smarthost = a, a").starts_with("t.conf:1: smarthost:"));
        assert!(err("smarthost_policy = random").contains("failover or spread"));
        assert!(err("relay = a tls=tls").starts_with("t.conf:1: relay: a is in no relay list"));
        assert!(
            err("smarthost = a\nrelay = a tls=tls\nrelay = a tls=none")
                .starts_with("t.conf:3: relay: a has a relay line already (line 2)")
        );
        assert!(err("smarthost = a:25\nrelay = a tls=none").contains("as written"));
        assert!(err("route = x -> error 550").starts_with("t.conf:1: route: error"));
    }

    /// The README's setups are valid configurations: every code block
    /// that starts with the file's path parses.
    #[test]
    fn readme_setups_parse() {
        let readme = include_str!("../../README.md");
        let blocks: Vec<&str> = readme
            .split("```")
            .skip(1)
            .step_by(2)
            .filter(|b| {
                b.trim_start()
                    .starts_with("# /etc/spoolmail/spoolmail.conf")
            })
            .collect();
        assert_eq!(blocks.len(), 3, "the README's three setups");
        for block in blocks {
            parse(block, "README").unwrap_or_else(|e| panic!("{e}: {block}"));
        }
    }

    /// The worked configurations in docs/configuration.md's "Relays and
    /// routes" section are valid configs.
    #[test]
    fn readme_relay_examples_parse() {
        let readme = include_str!("../../docs/configuration.md");
        let section = readme
            .split("## Relays and routes")
            .nth(1)
            .and_then(|s| s.split("\n## ").next())
            .expect("a Relays and routes section");
        let blocks: Vec<&str> = section.split("```").skip(1).step_by(2).collect();
        let configs: Vec<&&str> = blocks
            .iter()
            .filter(|b| b.contains("smarthost ="))
            .collect();
        assert_eq!(configs.len(), 2, "two worked configurations");
        for block in configs {
            let c = parse(block, "README").unwrap_or_else(|e| panic!("{e}: {block}"));
            assert!(c.smarthost.is_some());
        }
    }

    #[test]
    fn cross_checks() {
        assert!(err("retry_min = 2h\nretry_max = 1h").contains("retry_max"));
        assert!(
            err("retry_min = 2d\nretry_max=3d\nqueue_lifetime = 1d").contains("queue_lifetime")
        );
        assert!(err("auth_user = me").contains("auth_password_file"));
    }

    #[test]
    fn missing_file() {
        let c = load(Path::new("/nonexistent/spoolmail.conf"), false).unwrap();
        assert_eq!(c, Config::default());
        let e = load(Path::new("/nonexistent/spoolmail.conf"), true).unwrap_err();
        assert_eq!(e.kind().exit_code(), 78);
    }
}

#[cfg(test)]
mod readme {
    /// The keys `set` knows, read from its source: the arms of its
    /// outer match (eight spaces in, a string pattern).
    fn keys_in_code() -> Vec<&'static str> {
        let source = include_str!("mod.rs");
        // The match arms of `set` (one value per key) and of `Lists::take`
        // (the relay lists and routes, read whole before they resolve).
        let between = |from: &str, to: &str, indent: &'static str| {
            let start = source.find(from).unwrap_or_else(|| panic!("{from}"));
            let end = source[start..].find(to).unwrap_or_else(|| panic!("{to}")) + start;
            source[start..end]
                .lines()
                .filter_map(move |l| l.strip_prefix(indent))
                .filter_map(|l| l.split_once("\" =>").map(|(key, _)| key))
        };
        between("\nfn set(", "\nfn check(", "        \"")
            .chain(between("    fn take(", "    fn resolve(", "            \""))
            .collect()
    }

    /// The keys of docs/configuration.md's configuration table, in order.
    fn keys_in_readme() -> Vec<&'static str> {
        let readme = include_str!("../../docs/configuration.md");
        let start = readme
            .find("\n## Configuration\n")
            .expect("## Configuration");
        let section = &readme[start + 1..];
        let end = section[1..].find("\n## ").map_or(section.len(), |i| i + 1);
        section[..end]
            .lines()
            .filter_map(|l| l.strip_prefix("| `"))
            .filter_map(|l| l.split_once('`').map(|(key, _)| key))
            .collect()
    }

    /// Every key has a row in docs/configuration.md's configuration table, and
    /// every row names a key: the two cannot drift apart.
    #[test]
    fn readme_lists_every_config_key() {
        let (code, readme) = (keys_in_code(), keys_in_readme());
        assert!(code.len() > 40, "the key list was read: {code:?}");
        for key in &code {
            assert!(
                readme.contains(key),
                "docs/configuration.md has no row for {key}"
            );
        }
        for key in &readme {
            assert!(
                code.contains(key),
                "docs/configuration.md documents an unknown key {key}"
            );
        }
    }

    /// spoolmail.conf(5) describes every key (an item `.B key` or
    /// `.BR key …` of its own, or named in a combined item), and names no
    /// key the code does not know.
    #[test]
    fn the_manual_page_describes_every_config_key() {
        let page = include_str!("../../packaging/man/spoolmail.conf.5");
        let items: Vec<&str> = page
            .lines()
            .filter(|l| l.starts_with(".B ") || l.starts_with(".BR ") || l.starts_with(".BI "))
            .collect();
        let named = |key: &str| {
            items.iter().any(|l| {
                l.split(|c: char| c.is_whitespace() || c == '"' || c == ',')
                    .any(|w| w == key)
            })
        };
        let missing: Vec<&str> = keys_in_code().into_iter().filter(|k| !named(k)).collect();
        assert!(
            missing.is_empty(),
            "spoolmail.conf(5) has no item for {missing:?}"
        );
    }

    /// The `#key = default` lines of the shipped conffile: (key, value).
    fn conffile_defaults() -> Vec<(&'static str, &'static str)> {
        include_str!("../../packaging/spoolmail.conf")
            .lines()
            .filter_map(|l| l.strip_prefix('#'))
            .filter(|l| l.starts_with(|c: char| c.is_ascii_lowercase()))
            .filter_map(|l| l.split_once(" ="))
            .map(|(key, value)| (key, value.trim()))
            .collect()
    }

    /// packaging/spoolmail.conf names every key once, commented out, and
    /// no key the code does not know.
    #[test]
    fn the_conffile_lists_every_key() {
        let listed: Vec<&str> = conffile_defaults().into_iter().map(|(k, _)| k).collect();
        let code = keys_in_code();
        for key in &code {
            let times = listed.iter().filter(|k| *k == key).count();
            assert_eq!(
                times, 1,
                "packaging/spoolmail.conf lists {key} {times} times"
            );
        }
        for key in &listed {
            assert!(
                code.contains(key),
                "packaging/spoolmail.conf lists an unknown key {key}"
            );
        }
    }

    /// Uncommenting every `#key = default` line of the conffile gives a
    /// configuration that parses to the defaults (the keys whose default
    /// is empty — "unset" or "the system's" — stay commented).
    #[test]
    fn the_conffile_defaults_are_the_defaults() {
        let text: String = conffile_defaults()
            .into_iter()
            .filter(|(_, value)| !value.is_empty())
            .map(|(key, value)| format!("{key} = {value}\n"))
            .collect();
        assert!(text.lines().count() >= 40, "{text}");
        let config = super::parse(&text, "spoolmail.conf").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config, super::Config::default());
    }
}
