//! `spoolmail --show-config` (Postfix's `postconf`): the configuration
//! as the program sees it, printed as a configuration file.
//!
//! Every key of [`KEYS`] (the order of docs/configuration.md's table),
//! one `key = value` line each with its effective value; `relay` and
//! `route` lines as the file writes them, in file order, each relay list
//! followed by comment lines saying what each of its relays resolved to.
//! With `--non-default` (`postconf -n`) only the lines the file sets,
//! each with a trailing `# FILE:LINE`. The output is itself a valid
//! configuration that parses to the same [`Config`] (a test checks it),
//! so it can be saved and edited. A password is never printed: only the
//! password file's path, and whether the runner can read it.

use std::path::Path;
use std::time::Duration;

use super::check;
use super::relay::{Policy, RelayList};
use super::route::Action;
use super::values::SmarthostTls;
use super::{Config, MailboxFormat, SenderOverride, Written};

/// Every key, in the order of docs/configuration.md's table (a test
/// checks the two agree).
pub const KEYS: &[&str] = &[
    "spool",
    "hostname",
    "local_domains",
    "smarthost",
    "smarthost_policy",
    "relay",
    "route",
    "smarthost_tls",
    "auth_user",
    "auth_password_file",
    "tls_ca_file",
    "tls",
    "resolver",
    "dnssec_trust_anchor",
    "smtp_port",
    "retry_min",
    "retry_max",
    "queue_lifetime",
    "delay_warning",
    "max_connections",
    "max_host_connections",
    "smtp_recipient_limit",
    "max_message_size",
    "max_recipients",
    "aliases",
    "mail_spool_dir",
    "mailbox",
    "maildir",
    "forward_path",
    "pipe_user",
    "pipe_timeout",
    "mailbox_timeout",
    "mailbox_lock_wait",
    "max_hops",
    "expansion_limit",
    "queue_run_limit",
    "connect_timeout",
    "command_timeout",
    "data_timeout",
    "final_dot_timeout",
    "tmp_max_age",
    "corrupt_max_age",
    "corrupt_max_size",
    "corrupt_max_files",
    "max_messages_per_hour",
    "max_recipients_per_hour",
    "rate_limit_exempt",
    "syslog_name",
    "syslog_socket",
    "masquerade_domain",
    "sender_address",
    "masquerade_local",
    "masquerade_envelope",
    "masquerade_headers",
    "masquerade_sender_override",
    "dkim",
    "dkim_required",
];

/// The whole effective configuration. `origin` names the file read;
/// `written` its lines (for `relay`, `route` and `smarthost`, printed as
/// written); `group` the runner's group, for the password files' notes.
pub fn effective(config: &Config, written: &[Written], origin: &str, group: u32) -> String {
    let mut out = format!(
        "# the effective configuration: {origin}, and the defaults for what it does not set\n"
    );
    for key in KEYS {
        match *key {
            "relay" | "route" | "dkim" => {
                let lines: Vec<&Written> = written.iter().filter(|w| w.key == *key).collect();
                if lines.is_empty() {
                    out.push_str(&format!("# {key}: none\n"));
                }
                for w in lines {
                    out.push_str(&format!("{key} = {}\n", w.value));
                    if *key == "route" {
                        route_notes(config, w.line, group, &mut out);
                    }
                }
            }
            "smarthost" => {
                let value = written
                    .iter()
                    .find(|w| w.key == "smarthost")
                    .map_or("", |w| w.value.as_str());
                out.push_str(&setting("smarthost", value));
                if let Some(list) = &config.smarthost {
                    relay_notes(list, group, &mut out);
                }
            }
            "auth_password_file" => {
                let value = config
                    .auth_password_file
                    .as_deref()
                    .map(|p| format!("{}  # {}", p.display(), password_note(p, group)))
                    .unwrap_or_default();
                out.push_str(&setting(key, &value));
            }
            _ => out.push_str(&setting(key, &value(config, key))),
        }
    }
    out
}

/// One `key = value` line; `key =` for an empty value (no trailing blank).
fn setting(key: &str, value: &str) -> String {
    match value.is_empty() {
        true => format!("{key} =\n"),
        false => format!("{key} = {value}\n"),
    }
}

/// Only the lines the file sets, in the order of [`KEYS`] (`relay` and
/// `route` lines in file order), each with `# ORIGIN:LINE`.
pub fn non_default(written: &[Written], origin: &str, group: u32) -> String {
    let mut out = format!("# the settings of {origin}\n");
    for key in KEYS {
        for w in written.iter().filter(|w| w.key == *key) {
            let mut note = format!("{origin}:{}", w.line);
            if let Some(path) = password_file_of(w) {
                note.push_str(&format!("; {}", password_note(Path::new(&path), group)));
            }
            out.push_str(&format!("{} = {}  # {note}\n", w.key, w.value));
        }
    }
    out
}

/// The password file a line names: `auth_password_file`'s value, or a
/// `relay` line's `auth_password_file=` option.
fn password_file_of(w: &Written) -> Option<String> {
    match w.key.as_str() {
        "auth_password_file" if !w.value.is_empty() => Some(w.value.clone()),
        "relay" => w
            .value
            .split_whitespace()
            .find_map(|word| word.strip_prefix("auth_password_file="))
            .map(str::to_string),
        _ => None,
    }
}

/// Whether the runner (root, and group `group` for everyone else's
/// runner) can read the password file, in a few words; never its content.
fn password_note(path: &Path, group: u32) -> String {
    match check::password_file(path, group) {
        Ok(()) => "readable by the runner (root and the mail group) only".to_string(),
        Err(problem) => format!("PROBLEM: {problem}"),
    }
}

/// Comment lines for a relay list: each relay as resolved.
fn relay_notes(list: &RelayList, group: u32, out: &mut String) {
    let policy = match list.policy {
        Policy::Failover => "failover",
        Policy::Spread => "spread",
    };
    for relay in &list.relays {
        let tls = match relay.tls {
            SmarthostTls::Starttls => "starttls",
            SmarthostTls::Tls => "tls",
            SmarthostTls::None => "none",
        };
        let auth = match &relay.auth {
            Some(auth) => format!(
                "auth_user={} auth_password_file={} ({})",
                auth.user,
                auth.password_file.display(),
                password_note(&auth.password_file, group)
            ),
            None => "no auth".to_string(),
        };
        out.push_str(&format!(
            "#   {relay} ({policy}): tls={tls} {auth} max_connections={}\n",
            relay.max_connections
        ));
    }
}

/// The notes of the route on `line`, when it relays.
fn route_notes(config: &Config, line: usize, group: u32, out: &mut String) {
    for route in config.routes.iter().filter(|r| r.line == line) {
        if let Action::Relay(list) = &route.action {
            relay_notes(list, group, out);
        }
    }
}

/// The effective value of a one-value `key`, written as the file would
/// write it.
fn value(c: &Config, key: &str) -> String {
    let path = |p: &Option<std::path::PathBuf>| {
        p.as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    };
    match key {
        "spool" => c.spool.display().to_string(),
        "hostname" => c.hostname.clone(),
        "local_domains" => c.local_domains.join(", "),
        "smarthost_policy" => match c.smarthost.as_ref().map(|l| l.policy) {
            Some(Policy::Spread) => "spread",
            _ => "failover",
        }
        .to_string(),
        "smarthost_tls" => match c.smarthost_tls {
            SmarthostTls::Starttls => "starttls",
            SmarthostTls::Tls => "tls",
            SmarthostTls::None => "none",
        }
        .to_string(),
        "auth_user" => c.auth_user.clone().unwrap_or_default(),
        "tls_ca_file" => path(&c.tls_ca_file),
        "tls" => c.tls.as_str().to_string(),
        "resolver" => c.resolver.map(|r| r.to_string()).unwrap_or_default(),
        "dnssec_trust_anchor" => path(&c.dnssec_trust_anchor),
        "smtp_port" => c.smtp_port.to_string(),
        "retry_min" => duration(c.retry_min),
        "retry_max" => duration(c.retry_max),
        "queue_lifetime" => duration(c.queue_lifetime),
        "delay_warning" => duration(c.delay_warning),
        "max_connections" => c.max_connections.to_string(),
        "max_host_connections" => c.max_host_connections.to_string(),
        "smtp_recipient_limit" => c.smtp_recipient_limit.to_string(),
        "max_message_size" => size(c.max_message_size),
        "max_recipients" => c.max_recipients.to_string(),
        "aliases" => c.aliases.display().to_string(),
        "mail_spool_dir" => c.mail_spool_dir.display().to_string(),
        "mailbox" => match c.mailbox {
            MailboxFormat::Mbox => "mbox",
            MailboxFormat::Maildir => "maildir",
        }
        .to_string(),
        "maildir" => c.maildir.clone(),
        "forward_path" => c.forward_path.clone(),
        "pipe_user" => c.pipe_user.clone(),
        "pipe_timeout" => duration(c.pipe_timeout),
        "mailbox_timeout" => duration(c.mailbox_timeout),
        "mailbox_lock_wait" => duration(c.mailbox_lock_wait),
        "max_hops" => c.max_hops.to_string(),
        "expansion_limit" => c.expansion_limit.to_string(),
        "queue_run_limit" => duration(c.queue_run_limit),
        "connect_timeout" => duration(c.connect_timeout),
        "command_timeout" => duration(c.command_timeout),
        "data_timeout" => duration(c.data_timeout),
        "final_dot_timeout" => duration(c.final_dot_timeout),
        "tmp_max_age" => duration(c.tmp_max_age),
        "corrupt_max_age" => duration(c.corrupt_max_age),
        "corrupt_max_size" => size(c.corrupt_max_size),
        "corrupt_max_files" => c.corrupt_max_files.to_string(),
        "max_messages_per_hour" => c.max_messages_per_hour.to_string(),
        "max_recipients_per_hour" => c.max_recipients_per_hour.to_string(),
        "rate_limit_exempt" => c.rate_limit_exempt.join(", "),
        "syslog_name" => c.syslog_name.clone(),
        "syslog_socket" => path(&c.syslog_socket),
        "masquerade_domain" => c.masquerade_domain.clone().unwrap_or_default(),
        "sender_address" => c
            .sender_address
            .as_ref()
            .map(|a| a.to_string())
            .unwrap_or_default(),
        "masquerade_local" => c.masquerade_local.join(", "),
        "masquerade_envelope" => if c.masquerade_envelope { "yes" } else { "no" }.to_string(),
        "masquerade_headers" => match c.masquerade_headers.is_empty() {
            true => "none".to_string(),
            false => c
                .masquerade_headers
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect::<Vec<_>>()
                .join(", "),
        },
        "masquerade_sender_override" => match c.masquerade_sender_override {
            SenderOverride::Keep => "keep",
            SenderOverride::Local => "local",
            SenderOverride::Always => "always",
        }
        .to_string(),
        "dkim_required" => match c.dkim_required {
            true => "yes",
            false => "no",
        }
        .to_string(),
        _ => unreachable!("{key} is printed by effective()"),
    }
}

/// A duration in the largest unit that writes it exactly (`30m`, `5d`).
fn duration(d: Duration) -> String {
    let secs = d.as_secs();
    for (unit, scale) in [("d", 86400), ("h", 3600), ("m", 60)] {
        if secs > 0 && secs.is_multiple_of(scale) {
            return format!("{}{unit}", secs / scale);
        }
    }
    format!("{secs}s")
}

/// A size in the largest unit that writes it exactly (`50M`, `512k`).
fn size(bytes: u64) -> String {
    for (unit, scale) in [("G", 1u64 << 30), ("M", 1 << 20), ("k", 1 << 10)] {
        if bytes > 0 && bytes.is_multiple_of(scale) {
            return format!("{}{unit}", bytes / scale);
        }
    }
    bytes.to_string()
}

#[cfg(test)]
mod tests {
    use super::super::{parse, written};
    use super::*;

    const RICH: &str = "\
spool = /tmp/spool
hostname = mx.example.org
smarthost = a.example:587, b.example
smarthost_policy = spread
auth_user = me
auth_password_file = /nonexistent/p
relay = b.example tls=tls auth_user=b auth_password_file=/nonexistent/b max_connections=2
route = *.corp.example -> relay 10.0.0.5, 10.0.0.6:26 spread
route = * from brand.example -> mx
route = old.example -> error 550 5.7.1 gone
tls = required
resolver = [::1]:5353
retry_min = 90s
max_message_size = 1536k
masquerade_domain = example.com
masquerade_headers = none
masquerade_envelope = no
rate_limit_exempt = alice bob
syslog_socket = /dev/log
dkim = example.org selector=s1 key=/etc/spoolmail/dkim/example.org.s1.key
dkim = example.net selector=e1 key=/nonexistent/e algorithm=ed25519-sha256 subdomains=yes
dkim_required = no
";

    /// The configuration without the routes' line numbers, which say
    /// where a route was read, not what it does.
    fn settings(text: &str) -> Config {
        let mut config = parse(text, "t").unwrap_or_else(|e| panic!("{e}: {text}"));
        config.routes.iter_mut().for_each(|r| r.line = 0);
        config
    }

    #[test]
    fn the_effective_configuration_parses_back_to_the_same_config() {
        for text in [RICH, "", "hostname = h.example\n"] {
            let config = parse(text, "t").unwrap();
            let shown = effective(&config, &written(text), "t", 8);
            assert_eq!(settings(&shown), settings(text), "{shown}");
            let keys: Vec<&str> =
                written(&shown)
                    .into_iter()
                    .map(|w| w.key)
                    .fold(Vec::new(), |mut keys, k| {
                        let k: &str = KEYS.iter().find(|x| **x == k).unwrap();
                        if !keys.contains(&k) {
                            keys.push(k);
                        }
                        keys
                    });
            let expected: Vec<&str> = KEYS
                .iter()
                .copied()
                .filter(|k| shown.lines().any(|l| l.starts_with(&format!("{k} ="))))
                .collect();
            assert_eq!(keys, expected, "in the order of the table");
        }
    }

    #[test]
    fn the_settings_alone_parse_back_and_say_where_they_are() {
        let shown = non_default(&written(RICH), "/etc/s.conf", 8);
        assert_eq!(settings(&shown), settings(RICH));
        assert!(shown.contains("smarthost = a.example:587, b.example  # /etc/s.conf:3\n"));
        assert!(shown.contains("route = * from brand.example -> mx  # /etc/s.conf:9\n"));
        assert!(shown.contains("auth_password_file = /nonexistent/p  # /etc/s.conf:6; PROBLEM:"));
        assert_eq!(shown.lines().count(), RICH.lines().count() + 1);
    }

    #[test]
    fn durations_and_sizes_are_written_exactly() {
        assert_eq!(duration(Duration::from_secs(0)), "0s");
        assert_eq!(duration(Duration::from_secs(90)), "90s");
        assert_eq!(duration(Duration::from_secs(5 * 86400)), "5d");
        assert_eq!(duration(Duration::from_secs(36 * 3600)), "36h");
        assert_eq!(size(0), "0");
        assert_eq!(size(50 << 20), "50M");
        assert_eq!(size(1000), "1000");
    }

    /// [`KEYS`] is the key table of docs/configuration.md, in its order.
    #[test]
    fn the_keys_are_the_documented_table_in_order() {
        let doc = include_str!("../../docs/configuration.md");
        let section = doc.split("\n## Configuration\n").nth(1).unwrap();
        let section = section.split("\n## ").next().unwrap();
        let table: Vec<&str> = section
            .lines()
            .filter_map(|l| l.strip_prefix("| `"))
            .filter_map(|l| l.split_once('`').map(|(k, _)| k))
            .collect();
        assert_eq!(table, KEYS);
    }
}
