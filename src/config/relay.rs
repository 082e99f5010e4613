//! Relay lists: where `smarthost` and a route's `relay` send mail.
//!
//! A list is `host[:port]` entries separated by commas or spaces, tried
//! by a policy: `failover` (in the order written) or `spread` (each
//! message starts at the entry a hash of its queue ID picks, then the
//! others in order). Each entry may have its own TLS mode, AUTH
//! credentials and connection limit, given on a `relay = ENTRY option=…`
//! line; what it does not set comes from `smarthost_tls`, `auth_user`,
//! `auth_password_file` and `max_connections`. Parsing only: the runner
//! decides which entry a message goes to (`runner::transport`).

use std::path::PathBuf;

use super::values::{self, SmarthostTls};

/// How a list's entries share the mail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// The first reachable entry, in the order written.
    Failover,
    /// The entry a hash of the queue ID picks, the others after it.
    Spread,
}

/// SMTP AUTH credentials of a relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auth {
    /// The user name.
    pub user: String,
    /// The file whose first line is the password.
    pub password_file: PathBuf,
}

/// One relay of a list, with its settings resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relay {
    /// Host name or IP address.
    pub host: String,
    /// Port (25, or 465 for implicit TLS, unless written).
    pub port: u16,
    /// TLS mode towards it.
    pub tls: SmarthostTls,
    /// AUTH credentials, if any.
    pub auth: Option<Auth>,
    /// Connections to it at once, machine-wide.
    pub max_connections: u32,
}

impl std::fmt::Display for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.host.contains(':') {
            true => write!(f, "[{}]:{}", self.host, self.port),
            false => write!(f, "{}:{}", self.host, self.port),
        }
    }
}

/// A relay list with its policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayList {
    /// The entries, in the order written (at least one).
    pub relays: Vec<Relay>,
    /// How they share the mail.
    pub policy: Policy,
}

/// One entry as written, before its settings are resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The entry exactly as written (`host` or `host:port`): what a
    /// `relay =` line names.
    pub written: String,
    /// Host name or IP address.
    pub host: String,
    /// The port, when written.
    pub port: Option<u16>,
}

/// Settings of a `relay = ENTRY key=value…` line; None: the default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    /// `tls=starttls|tls|none`.
    pub tls: Option<SmarthostTls>,
    /// `auth_user=NAME`.
    pub auth_user: Option<String>,
    /// `auth_password_file=/PATH`.
    pub auth_password_file: Option<PathBuf>,
    /// `max_connections=N`.
    pub max_connections: Option<u32>,
}

/// What every entry gets unless its `relay =` line says otherwise.
pub struct Defaults<'a> {
    /// `smarthost_tls`.
    pub tls: SmarthostTls,
    /// `auth_user` and `auth_password_file`.
    pub auth: Option<Auth>,
    /// `max_connections`.
    pub max_connections: u32,
    /// The `relay =` lines: (entry as written, its options).
    pub options: &'a [(String, Options)],
}

type Parsed<T> = std::result::Result<T, String>;

/// Parses `h1[:port], h2 …` (commas and/or spaces), at least one entry,
/// none twice.
pub fn parse_entries(value: &str) -> Parsed<Vec<Entry>> {
    let mut entries: Vec<Entry> = Vec::new();
    for written in value.split([',', ' ', '\t']).filter(|s| !s.is_empty()) {
        let (host, port) = values::host_and_port(written)?;
        if entries.iter().any(|e| e.written == written) {
            return Err(format!("{written:?} is listed twice"));
        }
        entries.push(Entry {
            written: written.to_string(),
            host,
            port,
        });
    }
    if entries.is_empty() {
        return Err("expected host[:port], …".to_string());
    }
    Ok(entries)
}

/// `failover` or `spread`.
pub fn parse_policy(value: &str) -> Parsed<Policy> {
    match value {
        "failover" => Ok(Policy::Failover),
        "spread" => Ok(Policy::Spread),
        _ => Err(format!(
            "expected failover or spread, got {:?}",
            values::clip(value)
        )),
    }
}

/// Parses the value of a `relay =` line: `ENTRY key=value…`.
pub fn parse_options(value: &str) -> Parsed<(String, Options)> {
    let mut words = value.split_whitespace();
    let entry = words
        .next()
        .ok_or_else(|| "expected host[:port] key=value…".to_string())?;
    values::host_and_port(entry)?;
    let mut options = Options::default();
    for word in words {
        let (key, v) = word
            .split_once('=')
            .ok_or_else(|| format!("expected key=value, got {:?}", values::clip(word)))?;
        let twice = match key {
            "tls" => options.tls.replace(values::smarthost_tls(v)?).is_some(),
            "auth_user" if !v.is_empty() => options.auth_user.replace(v.to_string()).is_some(),
            "auth_password_file" => options
                .auth_password_file
                .replace(values::absolute_path(v)?)
                .is_some(),
            "max_connections" => options
                .max_connections
                .replace(values::positive(v)?)
                .is_some(),
            _ => {
                return Err(format!(
                    "unknown relay option {:?} (tls, auth_user, auth_password_file, max_connections)",
                    values::clip(key)
                ));
            }
        };
        if twice {
            return Err(format!("{key} given twice"));
        }
    }
    if options.auth_user.is_some() != options.auth_password_file.is_some() {
        return Err("auth_user and auth_password_file go together".to_string());
    }
    Ok((entry.to_string(), options))
}

/// The list `entries` with each entry's settings resolved: its `relay =`
/// line's, else `defaults`. Implicit TLS without a written port means
/// port 465 (RFC 8314), as for a lone smarthost.
pub fn resolve(entries: &[Entry], policy: Policy, defaults: &Defaults) -> RelayList {
    let relays = entries
        .iter()
        .map(|e| {
            let own = defaults
                .options
                .iter()
                .find(|(written, _)| *written == e.written)
                .map(|(_, o)| o.clone())
                .unwrap_or_default();
            let tls = own.tls.unwrap_or(defaults.tls);
            let auth = match (own.auth_user, own.auth_password_file) {
                (Some(user), Some(password_file)) => Some(Auth {
                    user,
                    password_file,
                }),
                _ => defaults.auth.clone(),
            };
            Relay {
                host: e.host.clone(),
                port: e.port.unwrap_or(match tls {
                    SmarthostTls::Tls => 465,
                    _ => 25,
                }),
                tls,
                auth,
                max_connections: own.max_connections.unwrap_or(defaults.max_connections),
            }
        })
        .collect();
    RelayList { relays, policy }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_split_on_commas_and_spaces() {
        let e = parse_entries("a.example:587, b.example  [::1]:26,c").unwrap();
        let got: Vec<_> = e.iter().map(|e| (e.host.as_str(), e.port)).collect();
        assert_eq!(
            got,
            [
                ("a.example", Some(587)),
                ("b.example", None),
                ("::1", Some(26)),
                ("c", None)
            ]
        );
        assert!(parse_entries(" , ").is_err());
        assert!(parse_entries("a:1, a:1").unwrap_err().contains("twice"));
        assert!(parse_entries("a:0").is_err());
    }

    #[test]
    fn options_parse_strictly() {
        let (entry, o) = parse_options(
            "b.example:587 tls=tls auth_user=me auth_password_file=/p max_connections=3",
        )
        .unwrap();
        assert_eq!(entry, "b.example:587");
        assert_eq!(o.tls, Some(SmarthostTls::Tls));
        assert_eq!(o.auth_user.as_deref(), Some("me"));
        assert_eq!(o.max_connections, Some(3));
        assert!(parse_options("b tls=maybe").is_err());
        assert!(
            parse_options("b colour=red")
                .unwrap_err()
                .contains("unknown")
        );
        assert!(
            parse_options("b auth_user=me")
                .unwrap_err()
                .contains("together")
        );
        assert!(
            parse_options("b tls=none tls=tls")
                .unwrap_err()
                .contains("twice")
        );
        assert!(parse_options("b max_connections=0").is_err());
        assert!(parse_options("").is_err());
    }

    #[test]
    fn resolve_takes_the_entrys_own_settings_over_the_defaults() {
        let entries = parse_entries("a, b").unwrap();
        let options = vec![("b".to_string(), parse_options("b tls=tls").unwrap().1)];
        let defaults = Defaults {
            tls: SmarthostTls::Starttls,
            auth: None,
            max_connections: 7,
            options: &options,
        };
        let list = resolve(&entries, Policy::Spread, &defaults);
        assert_eq!(list.relays[0].port, 25);
        assert_eq!(list.relays[0].tls, SmarthostTls::Starttls);
        assert_eq!(list.relays[1].port, 465, "implicit TLS has its own port");
        assert_eq!(list.relays[1].max_connections, 7);
        assert_eq!(list.relays[1].to_string(), "b:465");
    }
}
