//! `sendmail -bv ADDRESS…` (issue 23): where each address would go, said
//! as sendmail 8 says it, with nothing queued. The real binary against a
//! real aliases file, relay lists, routes and a real DNS server
//! (tests/peers/dns.py) for MX delivery; exit 0 when every address is
//! deliverable, 67 for an unknown user, 65 for a malformed address.
//! What an ordinary user may see of another's files is in the hostile
//! suite (tests/hostile/verify.rs).

mod common;

use std::fs;
use std::process::Output;

use common::dns::DnsServer;
use common::*;

/// `sendmail -bv ARGS…` in `w`, with nothing on stdin.
fn verify(w: &World, args: &[&str]) -> Output {
    let mut all = vec!["-bv"];
    all.extend_from_slice(args);
    let out = w.sendmail(&all, b"");
    assert!(w.queue_ids().is_empty(), "-bv queued something");
    out
}

/// The lines `-bv` printed.
fn lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

fn write_aliases(w: &World, text: &str) {
    fs::write(w.dir.path().join("aliases"), text).unwrap();
    assert_success(&w.run("newaliases", &[], b""));
}

#[test]
fn a_local_user_is_deliverable_to_its_mailbox() {
    let w = World::new();
    let out = verify(&w, &["root"]);
    assert_success(&out);
    assert_eq!(
        lines(&out),
        ["root... deliverable: mailer local, user root"]
    );
}

#[test]
fn an_alias_to_a_user_shows_the_step_and_the_user() {
    let w = World::new();
    write_aliases(&w, "postmaster: root\n");
    let out = verify(&w, &[&format!("postmaster@{HOSTNAME}")]);
    assert_success(&out);
    assert_eq!(
        lines(&out),
        [
            "postmaster... aliased to root",
            "root... deliverable: mailer local, user root"
        ]
    );
}

#[test]
fn an_alias_to_a_list_shows_each_member_where_it_goes() {
    let w = Setup::smarthost(2525).line("pipe_user = nobody").world();
    let log = w.dir.path().join("team.log");
    write_aliases(
        &w,
        &format!(
            "team: root, far@remote.example, \"|/bin/cat\", {}\n",
            log.display()
        ),
    );
    let out = verify(&w, &["team"]);
    assert_success(&out);
    assert_eq!(
        lines(&out),
        [
            format!(
                "team... aliased to root, far@remote.example, \"|/bin/cat\", {}",
                log.display()
            ),
            "root... deliverable: mailer local, user root".to_string(),
            "far@remote.example... deliverable: mailer esmtp, relay 127.0.0.1:2525".to_string(),
            "\"|/bin/cat\"... deliverable: mailer prog, user nobody".to_string(),
            format!("{}... deliverable: mailer file, user nobody", log.display()),
        ]
    );
}

#[test]
fn an_unknown_local_user_exits_67() {
    let w = World::new();
    write_aliases(&w, "list: root, sm-no-such-user\n");
    let out = verify(&w, &["sm-no-such-user@localhost"]);
    assert_exit(&out, 67);
    assert_eq!(lines(&out), ["sm-no-such-user... User unknown"]);
    // One unknown member of a list is enough; the others are still said.
    let out = verify(&w, &["list", "root"]);
    assert_exit(&out, 67);
    let got = lines(&out);
    assert!(
        got.contains(&"sm-no-such-user... User unknown".to_string()),
        "{got:?}"
    );
    assert_eq!(
        got.iter()
            .filter(|l| *l == "root... deliverable: mailer local, user root")
            .count(),
        2,
        "{got:?}"
    );
}

#[test]
fn an_alias_that_expands_to_nothing_is_not_deliverable() {
    let w = World::new();
    let missing = w.dir.path().join("no-such-list");
    write_aliases(&w, &format!("empty: :include:{}\n", missing.display()));
    let out = verify(&w, &["empty"]);
    assert_exit(&out, 69);
    assert_eq!(lines(&out), ["empty... expands to nothing deliverable"]);
}

#[test]
fn a_malformed_address_exits_65_and_the_others_are_still_verified() {
    let w = World::new();
    let out = verify(&w, &["root", "a@@b.example"]);
    assert_exit(&out, 65);
    let got = lines(&out);
    assert_eq!(got[0], "root... deliverable: mailer local, user root");
    assert!(got[1].starts_with("a@@b.example... "), "{got:?}");
}

#[test]
fn a_remote_domain_goes_to_the_relay_list_in_failover_order() {
    let w = Setup::smarthosts(&[2525, 2526, 2527]).world();
    let out = verify(&w, &["x@example.com"]);
    assert_success(&out);
    assert_eq!(
        lines(&out),
        [
            "x@example.com... deliverable: mailer esmtp, relay 127.0.0.1:2525 \
          (failover: 127.0.0.1:2526, 127.0.0.1:2527)"
        ]
    );
}

#[test]
fn a_spread_relay_list_says_so() {
    let w = Setup::smarthosts(&[2525, 2526])
        .line("smarthost_policy = spread")
        .world();
    let out = verify(&w, &["x@example.com"]);
    assert_success(&out);
    let got = lines(&out);
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(
        got[0].starts_with("x@example.com... deliverable: mailer esmtp, relay 127.0.0.1:252")
            && got[0].contains(" (spread with: 127.0.0.1:252"),
        "{got:?}"
    );
}

#[test]
fn a_route_to_a_relay_wins_over_the_smarthost() {
    let w = Setup::smarthost(2525)
        .plain_relay(2600)
        .route_to_relay("*.corp.example", 2600)
        .world();
    let out = verify(&w, &["a@mail.corp.example", "b@example.com"]);
    assert_success(&out);
    assert_eq!(
        lines(&out),
        [
            "a@mail.corp.example... deliverable: mailer esmtp, relay 127.0.0.1:2600",
            "b@example.com... deliverable: mailer esmtp, relay 127.0.0.1:2525",
        ]
    );
}

fn mx_world(dns: &DnsServer) -> World {
    World::with_config(&format!("resolver = {}\n", dns.addr))
}

fn mx_records() -> DnsServer {
    DnsServer::start(
        &[
            "dest.test MX 20 mx2.dest.test",
            "dest.test MX 10 mx1.dest.test",
            "mx1.dest.test A 127.0.0.1",
            "mx2.dest.test A 127.0.0.2",
        ],
        &[],
    )
}

#[test]
fn mx_delivery_names_the_preferred_host() {
    let dns = mx_records();
    let w = mx_world(&dns);
    let out = verify(&w, &["u@dest.test"]);
    assert_success(&out);
    assert_eq!(
        lines(&out),
        ["u@dest.test... deliverable: mailer esmtp, host mx1.dest.test (MX 10)"]
    );
}

#[test]
fn verbose_shows_every_mx_with_its_preference() {
    let dns = mx_records();
    let w = mx_world(&dns);
    let out = verify(&w, &["-v", "u@dest.test"]);
    assert_success(&out);
    assert_eq!(
        lines(&out),
        [
            "dest.test: MX 10 mx1.dest.test [127.0.0.1]",
            "dest.test: MX 20 mx2.dest.test [127.0.0.2]",
            "u@dest.test... deliverable: mailer esmtp, host mx1.dest.test (MX 10)",
        ]
    );
}

#[test]
fn a_domain_that_does_not_exist_is_not_deliverable() {
    let dns = mx_records();
    let w = mx_world(&dns);
    let out = verify(&w, &["u@nowhere.test"]);
    assert_exit(&out, 69);
    assert_eq!(
        lines(&out),
        ["u@nowhere.test... Host unknown: nowhere.test: no such domain"]
    );
}

#[test]
fn an_error_route_answers_with_its_text() {
    let w = Setup::default()
        .route("blocked.example -> error 550 5.7.1 no mail to blocked.example")
        .world();
    let out = verify(&w, &["x@blocked.example"]);
    assert_exit(&out, 69);
    assert_eq!(
        lines(&out),
        ["x@blocked.example... 550 5.7.1 no mail to blocked.example"]
    );
}

#[test]
fn a_forward_of_ones_own_is_followed() {
    // The tests run as root or as an ordinary user: either way the
    // caller's own .forward is theirs to see.
    use std::os::unix::fs::PermissionsExt;
    let forwards = tempfile::tempdir().unwrap();
    let w = Setup::smarthost(2525)
        .line(&format!(
            "forward_path = {}/%u.forward",
            forwards.path().display()
        ))
        .world();
    let me = nix::unistd::User::from_uid(nix::unistd::getuid())
        .unwrap()
        .unwrap()
        .name;
    let forward = forwards.path().join(format!("{me}.forward"));
    fs::write(&forward, format!("far@remote.example, \\{me}\n")).unwrap();
    fs::set_permissions(&forward, fs::Permissions::from_mode(0o600)).unwrap();
    let out = verify(&w, &[&me]);
    assert_success(&out);
    assert_eq!(
        lines(&out),
        [
            format!("{me}... forwarded to far@remote.example, \\{me}"),
            "far@remote.example... deliverable: mailer esmtp, relay 127.0.0.1:2525".to_string(),
            format!("{me}... deliverable: mailer local, user {me}"),
        ]
    );
}

#[test]
fn without_an_address_it_is_a_usage_error() {
    let w = World::new();
    assert_exit(&verify(&w, &[]), 64);
}
