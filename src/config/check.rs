//! `spoolmail --check-config`: what the configuration names but the
//! parser cannot see, and which today is found only when mail is
//! deferred. Each password file exists and is readable by root and the
//! mail group and by nobody else (a 0600 root-only file makes every
//! ordinary user's runner defer its mail); `tls_ca_file` holds PEM
//! certificates; `dnssec_trust_anchor` holds DNSKEY records; every
//! relay name resolves (the system resolver, as the
//! runner's transport uses, within a deadline); the compiled aliases are
//! not older than the aliases file. One [`Problem`] each, with the line
//! of the file that named it. What the spool's layout should be is the
//! spool's to say (`spool::Spool::layout_problems`), and the network
//! probe of each relay the runner's (`runner::probe`); `main` glues them.

use std::net::ToSocketAddrs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::{Config, Written, relay};

/// The group the runner of an ordinary user has (the setgid binary's),
/// as postinst sets it up: `mail`, or root's group on a system without one.
pub const RUNNER_GROUP: &str = "mail";

/// How long all the relay names together may take to resolve.
pub const RESOLVE_DEADLINE: Duration = Duration::from_secs(10);

/// One thing found wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The line of the file that set what is wrong (None: a default).
    pub line: Option<usize>,
    /// The key it concerns.
    pub key: String,
    /// What is wrong, and what to do.
    pub text: String,
}

impl Problem {
    /// `ORIGIN:LINE: key: text`, or `key: text` for a default.
    pub fn render(&self, origin: &str) -> String {
        match self.line {
            Some(line) => format!("{origin}:{line}: {}: {}", self.key, self.text),
            None => format!("{}: {}", self.key, self.text),
        }
    }
}

/// The gid of [`RUNNER_GROUP`] (0 without one: postinst then leaves the
/// spool to root alone).
pub fn runner_group() -> u32 {
    nix::unistd::Group::from_name(RUNNER_GROUP)
        .ok()
        .flatten()
        .map_or(0, |g| g.gid.as_raw())
}

/// The line that set `key`, if the file sets it.
pub fn line_of(written: &[Written], key: &str) -> Option<usize> {
    written.iter().find(|w| w.key == key).map(|w| w.line)
}

/// Every offline check of the configuration. `compiled_aliases`: where
/// `newaliases` writes the compiled form of `config.aliases`; `group`:
/// the runner's group ([`runner_group`]).
pub fn offline(
    config: &Config,
    written: &[Written],
    compiled_aliases: &Path,
    group: u32,
) -> Vec<Problem> {
    let mut problems = Vec::new();
    for (path, line, key) in password_files(config, written) {
        if let Err(text) = password_file(&path, group) {
            problems.push(Problem { line, key, text });
        }
    }
    if let Some(path) = &config.tls_ca_file
        && let Err(text) = ca_file(path)
    {
        problems.push(Problem {
            line: line_of(written, "tls_ca_file"),
            key: "tls_ca_file".to_string(),
            text,
        });
    }
    if let Some(path) = &config.dnssec_trust_anchor
        && let Err(text) = trust_anchor(path)
    {
        problems.push(Problem {
            line: line_of(written, "dnssec_trust_anchor"),
            key: "dnssec_trust_anchor".to_string(),
            text,
        });
    }
    problems.extend(relay_names(config, written));
    if let Err(text) = aliases_compiled(&config.aliases, compiled_aliases) {
        problems.push(Problem {
            line: line_of(written, "aliases"),
            key: "aliases".to_string(),
            text,
        });
    }
    problems
}

/// The password files the configuration names, each once: (path, the
/// line naming it, its key).
fn password_files(config: &Config, written: &[Written]) -> Vec<(PathBuf, Option<usize>, String)> {
    let mut files: Vec<(PathBuf, Option<usize>, String)> = Vec::new();
    if let Some(path) = &config.auth_password_file {
        files.push((
            path.clone(),
            line_of(written, "auth_password_file"),
            "auth_password_file".to_string(),
        ));
    }
    for w in written.iter().filter(|w| w.key == "relay") {
        if let Ok((_, options)) = relay::parse_options(&w.value)
            && let Some(path) = options.auth_password_file
            && !files.iter().any(|(p, _, _)| *p == path)
        {
            files.push((path, Some(w.line), "relay".to_string()));
        }
    }
    files
}

/// Whether a password file is as the runner needs it: a regular file,
/// owner root, group `group` with read access, nothing for others, a
/// password on its first line. Err: what is wrong (never the password).
pub fn password_file(path: &Path, group: u32) -> Result<(), String> {
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => format!("{shown} does not exist"),
        _ => format!("{shown}: {e}"),
    })?;
    if !meta.is_file() {
        return Err(format!("{shown} is not a regular file"));
    }
    let (mode, uid, gid) = (meta.mode() & 0o7777, meta.uid(), meta.gid());
    let owners = format!(
        "mode {mode:04o} {}:{}",
        crate::privilege::user_name(uid),
        crate::privilege::group_name(gid)
    );
    let wanted = format!("make it 0640 root:{}", crate::privilege::group_name(group));
    if mode & 0o007 != 0 {
        return Err(format!(
            "{shown}: {owners}: every user can read the password; {wanted}"
        ));
    }
    if uid != 0 {
        return Err(format!(
            "{shown}: {owners}: owned by {}, who can read and change the password; {wanted}",
            crate::privilege::user_name(uid)
        ));
    }
    if gid != group || mode & 0o040 == 0 {
        return Err(format!(
            "{shown}: {owners}: the runner of an ordinary user (group {}) cannot read it, \
             so their mail waits with every relay recorded unreachable; {wanted}",
            crate::privilege::group_name(group)
        ));
    }
    // Only root can look inside (anyone else was shown enough above).
    if nix::unistd::geteuid().is_root() {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{shown}: {e}"))?;
        if text.lines().next().unwrap_or("").is_empty() {
            return Err(format!("{shown}: the first line (the password) is empty"));
        }
    }
    Ok(())
}

/// Whether `path` holds at least one PEM certificate, all of them valid.
fn ca_file(path: &Path) -> Result<(), String> {
    let shown = path.display();
    let bytes = std::fs::read(path).map_err(|e| format!("{shown}: {e}"))?;
    match openssl::x509::X509::stack_from_pem(&bytes) {
        Ok(certs) if !certs.is_empty() => Ok(()),
        Ok(_) => Err(format!("{shown}: no PEM certificate in it")),
        Err(e) => Err(format!("{shown}: not PEM certificates: {e}")),
    }
}

/// Whether `path` holds DNSKEY records DANE's validation can trust (as
/// `runner::dane` reads it: one that does not defers every DANE
/// delivery).
fn trust_anchor(path: &Path) -> Result<(), String> {
    use hickory_resolver::proto::dnssec::TrustAnchors;
    let shown = path.display();
    match TrustAnchors::from_file(path) {
        Ok(_) => Ok(()),
        Err(e) => Err(format!("{shown}: not DNSKEY records: {e}")),
    }
}

/// A relay name being resolved: host, port, the line and key naming
/// it, and where its answer comes.
type Asked<'a> = (
    String,
    u16,
    Option<usize>,
    &'a str,
    mpsc::Receiver<Result<(), String>>,
);

/// Every relay name of the smarthost list and the routes that does not
/// resolve within [`RESOLVE_DEADLINE`] (all asked at once).
fn relay_names(config: &Config, written: &[Written]) -> Vec<Problem> {
    let mut lists: Vec<(&relay::RelayList, Option<usize>, &str)> = Vec::new();
    if let Some(list) = &config.smarthost {
        lists.push((list, line_of(written, "smarthost"), "smarthost"));
    }
    for route in &config.routes {
        if let super::route::Action::Relay(list) = &route.action {
            lists.push((list, Some(route.line), "route"));
        }
    }
    let mut asked: Vec<Asked> = Vec::new();
    for (list, line, key) in lists {
        for r in &list.relays {
            if asked.iter().any(|(h, p, ..)| *h == r.host && *p == r.port) {
                continue;
            }
            let (tx, rx) = mpsc::channel();
            let (host, port) = (r.host.clone(), r.port);
            // A thread per name: getaddrinfo has no timeout of its own,
            // and a name that hangs must not hold up the others.
            std::thread::spawn(move || {
                let found = (host.as_str(), port)
                    .to_socket_addrs()
                    .map_err(|e| e.to_string())
                    .and_then(|mut a| match a.next() {
                        Some(_) => Ok(()),
                        None => Err("no address".to_string()),
                    });
                let _ = tx.send(found);
            });
            asked.push((r.host.clone(), r.port, line, key, rx));
        }
    }
    let deadline = Instant::now() + RESOLVE_DEADLINE;
    let mut problems = Vec::new();
    for (host, _, line, key, rx) in asked {
        let wait = deadline.saturating_duration_since(Instant::now());
        let text = match rx.recv_timeout(wait) {
            Ok(Ok(())) => continue,
            Ok(Err(e)) => format!("relay {host} does not resolve: {e}"),
            Err(_) => format!(
                "relay {host} does not resolve within {}s",
                RESOLVE_DEADLINE.as_secs()
            ),
        };
        problems.push(Problem {
            line,
            key: key.to_string(),
            text,
        });
    }
    problems
}

/// Whether the compiled aliases exist and are not older than the
/// source (no source: nothing to compile).
fn aliases_compiled(source: &Path, compiled: &Path) -> Result<(), String> {
    let Ok(source_meta) = std::fs::metadata(source) else {
        return Ok(());
    };
    let compiled_meta = std::fs::metadata(compiled).map_err(|_| {
        format!(
            "{} is not compiled ({} is missing): run newaliases",
            source.display(),
            compiled.display()
        )
    })?;
    let modified = |m: &std::fs::Metadata| (m.mtime(), m.mtime_nsec());
    if modified(&compiled_meta) < modified(&source_meta) {
        return Err(format!(
            "{} is older than {}, so its changes are not in effect: run newaliases",
            compiled.display(),
            source.display()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::{parse, written};
    use super::*;

    #[test]
    fn a_problem_names_its_line_when_the_file_set_it() {
        let p = Problem {
            line: Some(4),
            key: "tls_ca_file".into(),
            text: "x".into(),
        };
        assert_eq!(p.render("/etc/s.conf"), "/etc/s.conf:4: tls_ca_file: x");
        let p = Problem { line: None, ..p };
        assert_eq!(p.render("/etc/s.conf"), "tls_ca_file: x");
    }

    #[test]
    fn password_files_are_found_with_their_lines() {
        let text = "smarthost = a.example, b.example\nauth_user = u\nauth_password_file = /p/a\n\
                    relay = b.example auth_user=v auth_password_file=/p/b\n";
        let config = parse(text, "t").unwrap();
        let files = password_files(&config, &written(text));
        assert_eq!(
            files,
            [
                (PathBuf::from("/p/a"), Some(3), "auth_password_file".into()),
                (PathBuf::from("/p/b"), Some(4), "relay".into()),
            ]
        );
    }

    #[test]
    fn a_missing_password_file_is_a_problem() {
        let e = password_file(Path::new("/nonexistent/pw"), 8).unwrap_err();
        assert_eq!(e, "/nonexistent/pw does not exist");
    }
}
