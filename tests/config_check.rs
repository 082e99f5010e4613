//! `spoolmail --show-config [--non-default]` and `spoolmail --check-config
//! [--network]`, end to end with the built binary: the shown
//! configuration parses back to the same settings and never holds a
//! password; each broken input the check knows gives its one line and
//! exit 78, a clean installation exit 0; the network probe against the
//! test SMTP server (aiosmtpd with STARTTLS and AUTH) logs in, reports a
//! wrong password and a certificate that does not verify, and sends no
//! mail.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, SystemTime};

use common::smtpd::SmtpServer;
use common::*;
use spoolmail::config::{self, Config};

/// The password every test's password file holds.
const PASSWORD: &str = "s3cret-Pa55";

/// The gid of the group `mail` (the runner's group), 0 without one.
fn mail_gid() -> u32 {
    config::check::runner_group()
}

/// Runs the sendmail face with `-C config` and `args`.
fn run(w: &World, args: &[&str]) -> Output {
    w.run("sendmail", args, b"")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The config as the program reads it, the routes' line numbers aside
/// (they say where a route was read, not what it does).
fn settings(config: Result<Config, spoolmail::error::Error>) -> Config {
    let mut config = config.unwrap_or_else(|e| panic!("{e}"));
    config.routes.iter_mut().for_each(|r| r.line = 0);
    config
}

/// A password file at `path` holding [`PASSWORD`], with `mode` and
/// owner root, group `gid`.
fn password_file(path: &Path, mode: u32, gid: u32) {
    std::fs::write(path, format!("{PASSWORD}\n")).unwrap();
    nix::unistd::chown(path, Some(0.into()), Some(gid.into())).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A world with nothing for `--check-config` to find: the spool laid out
/// as postinst does, the aliases compiled, a smarthost with AUTH whose
/// password file is 0640 root:mail. `extra` comes first: it may set the
/// smarthost and its TLS. Needs root.
fn clean_world(dir: &Path, extra: &str) -> (World, PathBuf) {
    let pass = dir.join("relay.pass");
    password_file(&pass, 0o640, mail_gid());
    let smarthost = match extra.contains("smarthost =") {
        true => "",
        false => "smarthost = 127.0.0.1:2\n",
    };
    let w = Setup::default()
        .line(extra)
        .line(&format!(
            "{smarthost}auth_user = relayuser\nauth_password_file = {}",
            pass.display()
        ))
        .world();
    lay_out_spool(&w.spool, mail_gid());
    std::fs::write(w.dir.path().join("aliases"), "postmaster: root\n").unwrap();
    assert_success(&w.run("newaliases", &[], b""));
    (w, pass)
}

/// The line of the world's config file that sets `key`.
fn line_of(w: &World, key: &str) -> usize {
    let text = std::fs::read_to_string(&w.config).unwrap();
    text.lines()
        .position(|l| l.starts_with(&format!("{key} =")))
        .unwrap_or_else(|| panic!("{key} is not set"))
        + 1
}

/// Runs `--check-config`, asserts exit 78 and exactly one problem line,
/// and returns it.
fn the_one_problem(w: &World) -> String {
    let out = run(w, &["--check-config"]);
    assert_exit(&out, 78);
    let text = stdout(&out);
    assert_eq!(text.lines().count(), 1, "one problem line: {text}");
    text.trim_end().to_string()
}

#[test]
fn show_config_prints_every_key_in_table_order_and_parses_back() {
    let dir = tempfile::tempdir().unwrap();
    let pass = dir.path().join("pass");
    std::fs::write(&pass, format!("{PASSWORD}\n")).unwrap();
    let w = Setup::default()
        .line(&format!(
            "smarthost = a.example:587, b.example\nsmarthost_policy = spread\n\
             auth_user = me\nauth_password_file = {}\n\
             relay = b.example tls=tls max_connections=3\n\
             route = *.corp.example -> relay 10.0.0.5\n\
             route = old.example -> error 550 5.1.2 gone\n\
             retry_min = 90s\nmasquerade_domain = example.com\n\
             dkim = example.com selector=s1 key=/nonexistent/example.com.s1.key",
            pass.display()
        ))
        .world();
    let out = run(&w, &["--show-config"]);
    assert_success(&out);
    let shown = stdout(&out);
    assert!(!shown.contains(PASSWORD), "no password: {shown}");
    assert_eq!(
        settings(config::parse(&shown, "shown")),
        settings(config::load(&w.config, true)),
        "{shown}"
    );
    // Every key, each once (relay and route: one line each as written),
    // in the order of the key table.
    let keys: Vec<String> = config::written(&shown).into_iter().map(|l| l.key).collect();
    let mut order: Vec<&str> = Vec::new();
    for key in &keys {
        if order.last() != Some(&key.as_str()) {
            order.push(key);
        }
    }
    assert_eq!(order, config::show::KEYS, "{shown}");
    assert_eq!(keys.iter().filter(|k| *k == "route").count(), 2);
    let first = shown
        .find("\nroute = *.corp.example -> relay 10.0.0.5\n")
        .unwrap();
    let second = shown
        .find("\nroute = old.example -> error 550 5.1.2 gone\n")
        .unwrap();
    assert!(first < second, "in file order: {shown}");
    assert!(
        shown[first..second].contains("\n#   10.0.0.5:25 (failover): tls=starttls auth_user=me")
    );
    assert!(shown.contains("\nretry_min = 90s\n") && shown.contains("\nretry_max = 3h\n"));
    assert!(shown.contains(&format!("\nauth_password_file = {}  # ", pass.display())));
    assert!(shown.contains("#   b.example:465 (spread): tls=tls auth_user=me"));
}

#[test]
fn non_default_prints_what_the_file_sets_with_its_lines() {
    let w = Setup::default()
        .line("smarthost = relay.example:587\nroute = x.example -> mx\nmax_hops = 30")
        .world();
    let out = run(&w, &["--show-config", "--non-default"]);
    assert_success(&out);
    let shown = stdout(&out);
    let origin = w.config.display().to_string();
    let file = std::fs::read_to_string(&w.config).unwrap();
    let set = config::written(&file);
    // A header line, then one line per line the file sets.
    assert_eq!(shown.lines().count(), set.len() + 1, "{shown}");
    for line in &set {
        let expected = format!("{} = {}  # {origin}:{}", line.key, line.value, line.line);
        assert!(shown.contains(&expected), "{expected} in {shown}");
    }
    assert!(!shown.contains("retry_min"), "a default is not shown");
    assert_eq!(
        settings(config::parse(&shown, "shown")),
        settings(config::load(&w.config, true))
    );
}

#[test]
fn a_clean_installation_has_nothing_to_report() {
    if !root_or_skip("the spool's owners and the password file's group need root") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (w, _) = clean_world(dir.path(), "");
    let out = run(&w, &["--check-config"]);
    assert_success(&out);
    assert_eq!(stdout(&out), "");
}

#[test]
fn a_missing_password_file_is_reported_at_its_line() {
    if !root_or_skip("the spool's owners need root") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (w, pass) = clean_world(dir.path(), "");
    std::fs::remove_file(&pass).unwrap();
    assert_eq!(
        the_one_problem(&w),
        format!(
            "{}:{}: auth_password_file: {} does not exist",
            w.config.display(),
            line_of(&w, "auth_password_file"),
            pass.display()
        )
    );
}

#[test]
fn a_password_file_every_user_can_read_is_reported() {
    if !root_or_skip("the password file's owner needs root") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (w, pass) = clean_world(dir.path(), "");
    std::fs::set_permissions(&pass, std::fs::Permissions::from_mode(0o644)).unwrap();
    let line = the_one_problem(&w);
    assert!(
        line.starts_with(&format!(
            "{}:{}: auth_password_file: {}: mode 0644 root:",
            w.config.display(),
            line_of(&w, "auth_password_file"),
            pass.display()
        )),
        "{line}"
    );
    assert!(line.contains("every user can read the password"), "{line}");
}

#[test]
fn a_root_only_password_file_is_reported() {
    if !root_or_skip("the password file's owner needs root") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (w, pass) = clean_world(dir.path(), "");
    password_file(&pass, 0o600, 0);
    let line = the_one_problem(&w);
    assert!(
        line.starts_with(&format!(
            "{}:{}: auth_password_file: {}: mode 0600 root:root: the runner of an ordinary user",
            w.config.display(),
            line_of(&w, "auth_password_file"),
            pass.display()
        )),
        "{line}"
    );
    assert!(line.contains("cannot read it"), "{line}");
}

#[test]
fn a_ca_file_that_is_not_pem_is_reported() {
    if !root_or_skip("the spool's owners need root") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, "-----BEGIN CERTIFICATE-----\nnot base64 at all\n").unwrap();
    let (w, _) = clean_world(dir.path(), &format!("tls_ca_file = {}", ca.display()));
    let line = the_one_problem(&w);
    assert!(
        line.starts_with(&format!(
            "{}:{}: tls_ca_file: {}: ",
            w.config.display(),
            line_of(&w, "tls_ca_file"),
            ca.display()
        )),
        "{line}"
    );
    // A good certificate in its place is no problem.
    let (cert, _) = common::smtpd::self_signed_cert(dir.path(), "localhost");
    std::fs::copy(&cert, &ca).unwrap();
    assert_success(&run(&w, &["--check-config"]));
}

#[test]
fn a_trust_anchor_that_is_not_dnskey_records_is_reported() {
    if !root_or_skip("the spool's owners need root") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let anchor = dir.path().join("anchor");
    std::fs::write(&anchor, ". IN DS 20326 8 2 E06D44B80B8F1D39\n").unwrap();
    let (w, _) = clean_world(
        dir.path(),
        &format!("dnssec_trust_anchor = {}", anchor.display()),
    );
    let line = the_one_problem(&w);
    assert!(
        line.starts_with(&format!(
            "{}:{}: dnssec_trust_anchor: {}: not DNSKEY records",
            w.config.display(),
            line_of(&w, "dnssec_trust_anchor"),
            anchor.display()
        )),
        "{line}"
    );
    // A DNSKEY record in its place is no problem.
    std::fs::write(
        &anchor,
        ". IN DNSKEY 257 3 13 AfWT1Wy0nLEztyc9EpO1WtrWTbyrqv0Vr9GNXd69Fqu3lyiAWD9GW9zgC5TCAeZEuQJplkkNr4bmcu0WkDnl8w==\n",
    )
    .unwrap();
    assert_success(&run(&w, &["--check-config"]));
}

#[test]
fn a_relay_name_that_does_not_resolve_is_reported() {
    if !root_or_skip("the spool's owners need root") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (w, _) = clean_world(dir.path(), "smarthost = relay.nosuchname.invalid:587");
    let line = the_one_problem(&w);
    assert!(
        line.starts_with(&format!(
            "{}:{}: smarthost: relay relay.nosuchname.invalid does not resolve",
            w.config.display(),
            line_of(&w, "smarthost")
        )),
        "{line}"
    );
}

#[test]
fn stale_compiled_aliases_are_reported() {
    if !root_or_skip("the spool's owners need root") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (w, _) = clean_world(dir.path(), "");
    let source = w.dir.path().join("aliases");
    // The source edited after newaliases ran: the compiled file is the
    // older of the two.
    let earlier = SystemTime::now() - Duration::from_secs(60);
    std::fs::File::options()
        .append(true)
        .open(w.dir.path().join("aliases.spoolmail.json"))
        .unwrap()
        .set_modified(earlier)
        .unwrap();
    let line = the_one_problem(&w);
    assert_eq!(
        line,
        format!(
            "{}:{}: aliases: {}.spoolmail.json is older than {}, so its changes are not in effect: run newaliases",
            w.config.display(),
            line_of(&w, "aliases"),
            source.display(),
            source.display()
        )
    );
    assert_success(&w.run("newaliases", &[], b""));
    assert_success(&run(&w, &["--check-config"]));
}

#[test]
fn a_spool_directory_with_a_wrong_mode_is_reported() {
    if !root_or_skip("the spool's owners need root") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (w, _) = clean_world(dir.path(), "");
    let queue = w.spool.join("queue");
    std::fs::set_permissions(&queue, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(
        the_one_problem(&w),
        format!(
            "{}:{}: spool: {} has mode 0755, expected 0770",
            w.config.display(),
            line_of(&w, "spool"),
            queue.display()
        )
    );
}

/// An SMTP server with STARTTLS (a self-signed certificate for
/// "localhost") requiring AUTH as relayuser with [`PASSWORD`], and the
/// certificate.
fn tls_auth_server(dir: &Path) -> (SmtpServer, PathBuf) {
    let (cert, key) = common::smtpd::self_signed_cert(dir, "localhost");
    let credentials = format!("relayuser:{PASSWORD}");
    let server = SmtpServer::start(
        dir,
        &[
            "--starttls",
            cert.to_str().unwrap(),
            key.to_str().unwrap(),
            "--require-auth",
            &credentials,
        ],
    );
    (server, cert)
}

/// Runs `--check-config --network` and returns its exit code and stdout;
/// the lines go to the test's output too (for the record).
fn network_check(w: &World) -> (i32, String) {
    let out = run(w, &["--check-config", "--network"]);
    let text = stdout(&out);
    eprint!("--check-config --network:\n{text}");
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn network_check_logs_in_and_sends_nothing() {
    if !root_or_skip("the spool's owners need root") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (server, cert) = tls_auth_server(dir.path());
    let extra = Setup::verified_smarthost(server.port, "starttls", &cert);
    let (w, _) = clean_world(dir.path(), extra.text());
    let (code, text) = network_check(&w);
    assert_eq!(code, 0, "{text}");
    assert_eq!(
        text,
        format!(
            "relay localhost:{}: 127.0.0.1: 220 greeting, EHLO ok, STARTTLS, certificate verified for localhost, AUTH accepted for relayuser\n",
            server.port
        )
    );
    assert!(!text.contains(PASSWORD));
    assert!(server.connections() >= 1, "it connected");
    assert!(server.messages().is_empty(), "no mail sent");
    assert!(server.mail_commands().is_empty(), "no MAIL command");
}

#[test]
fn network_check_reports_a_wrong_password() {
    if !root_or_skip("the spool's owners need root") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (server, cert) = tls_auth_server(dir.path());
    let extra = Setup::verified_smarthost(server.port, "starttls", &cert);
    let (w, pass) = clean_world(dir.path(), extra.text());
    std::fs::write(&pass, "not-the-password\n").unwrap();
    let (code, text) = network_check(&w);
    assert_eq!(code, 78, "{text}");
    let prefix = format!(
        "relay localhost:{}: AUTH failed at 127.0.0.1: ",
        server.port
    );
    assert!(text.starts_with(&prefix), "{text}");
    assert!(text.contains("535"), "the server's reply: {text}");
    assert_eq!(text.lines().count(), 1);
    assert!(server.messages().is_empty());
}

#[test]
fn network_check_reports_a_certificate_that_does_not_verify() {
    if !root_or_skip("the spool's owners need root") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (server, _cert) = tls_auth_server(dir.path());
    // No tls_ca_file: the self-signed certificate is trusted by nothing.
    let extra = format!(
        "smarthost = localhost:{}\nsmarthost_tls = starttls",
        server.port
    );
    let (w, _) = clean_world(dir.path(), &extra);
    let (code, text) = network_check(&w);
    assert_eq!(code, 78, "{text}");
    let prefix = format!("relay localhost:{}: TLS failed at 127.0.0.1: ", server.port);
    assert!(text.starts_with(&prefix), "{text}");
    assert!(!text.contains("AUTH accepted"), "{text}");
    assert!(server.messages().is_empty());
}
