//! `mailq --metrics` (issue 23): a queue built to a known shape — mail
//! queued, deferred by a real SMTP server's 451, held by `mailq --hold`,
//! possibly delivered (the server drops the link after the final dot:
//! the RFC 1047 window), a file in `corrupt/` — and its metrics read by
//! a real Prometheus text parser (Python's `prometheus_client`, pip
//! package `prometheus-client`), checked against that shape and against
//! `mailq --json`. An ordinary user's metrics count their own mail only
//! (the hostile suite's site: a setgid install with two accounts).

mod common;

#[allow(dead_code)]
#[path = "hostile/site.rs"]
mod site;

use std::collections::BTreeMap;
use std::process::Command;

use common::smtpd::SmtpServer;
use common::*;
use serde_json::Value;

const MSG: &[u8] = b"Subject: metrics\n\nbody\n";

/// The parser: every family with its type and samples, as JSON.
const PARSER: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
families = []
for f in text_string_to_metric_families(sys.stdin.read()):
    families.append({
        "name": f.name, "type": f.type, "help": f.documentation,
        "samples": [{"name": s.name, "labels": s.labels, "value": s.value}
                    for s in f.samples],
    })
print(json.dumps(families))
"#;

/// The metrics as `prometheus_client` read them.
struct Metrics {
    families: Vec<Value>,
    text: String,
}

impl Metrics {
    /// Parses `text` with `prometheus_client` (which fails on anything
    /// the format does not allow).
    fn parse(text: &str) -> Metrics {
        let out = run_with_stdin(
            Command::new("python3").args(["-c", PARSER]),
            text.as_bytes(),
        );
        assert!(
            out.status.success(),
            "prometheus_client could not parse it (pip install prometheus-client): {}\n{text}",
            String::from_utf8_lossy(&out.stderr)
        );
        Metrics {
            families: serde_json::from_slice(&out.stdout).expect("the parser's JSON"),
            text: text.to_string(),
        }
    }

    /// The samples of the family `name`: labels and value.
    fn samples(&self, name: &str) -> Vec<(BTreeMap<String, String>, f64)> {
        let family = self
            .families
            .iter()
            .find(|f| f["name"] == name)
            .unwrap_or_else(|| panic!("no family {name} in\n{}", self.text));
        assert_eq!(family["type"], "gauge", "{name}");
        assert!(
            !family["help"].as_str().unwrap_or("").is_empty(),
            "{name} has a HELP"
        );
        family["samples"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                assert_eq!(s["name"], name);
                let labels = s["labels"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                    .collect();
                (labels, s["value"].as_f64().unwrap())
            })
            .collect()
    }

    /// The value of the one sample of `name` with exactly `labels`.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.samples(name)
            .into_iter()
            .find(|(l, _)| *l == want)
            .map(|(_, v)| v)
    }

    /// The value of `name{state="STATE"}`.
    fn by_state(&self, name: &str, state: &str) -> f64 {
        self.get(name, &[("state", state)])
            .unwrap_or_else(|| panic!("{name}{{state={state}}} in\n{}", self.text))
    }
}

fn metrics(w: &World) -> Metrics {
    let out = w.run("mailq", &["--metrics"], b"");
    assert_success(&out);
    Metrics::parse(&String::from_utf8(out.stdout).expect("UTF-8"))
}

fn now() -> f64 {
    spoolmail::clock::unix_now() as f64
}

/// Every state of a known queue, counted as it was made, and agreeing
/// with `mailq --json`; `sendmail -bp --metrics` is the same.
#[test]
fn metrics_count_a_known_queue_by_state() {
    let dir = tempfile::tempdir().unwrap();
    let server = SmtpServer::start(
        dir.path(),
        &[
            "--rcpt-reply",
            "d1@busy.test=451 4.3.0 try later",
            "--rcpt-reply",
            "d2@busy.test=451 4.3.0 try later",
            "--rcpt-reply",
            "d3@slow.test=450 4.2.0 mailbox busy",
        ],
    );
    let dropper = SmtpServer::start(dir.path(), &["--drop-after-dot"]);
    let w = Setup::smarthost(server.port)
        .plain_relay(dropper.port)
        .route_to_relay("drop.test", dropper.port)
        .line("max_messages_per_hour = 100\nmax_recipients_per_hour = 500")
        .world();

    // Nothing yet: every state at 0, the families all there.
    let empty = metrics(&w);
    for state in ["queued", "deferred", "held", "possibly_delivered"] {
        assert_eq!(empty.by_state("spoolmail_queue_messages", state), 0.0);
        assert_eq!(empty.by_state("spoolmail_queue_recipients", state), 0.0);
    }
    assert_eq!(
        empty.get("spoolmail_queue_oldest_message_age_seconds", &[]),
        Some(0.0)
    );
    assert_eq!(
        empty.get("spoolmail_last_queue_run_timestamp_seconds", &[]),
        Some(0.0),
        "no run recorded yet"
    );

    // Root's complete run on the empty queue records its end; anyone
    // else's run records nothing.
    let before = now();
    assert_success(&w.sendmail(&["-q"], b""));
    let after = now();
    let run = metrics(&w)
        .get("spoolmail_last_queue_run_timestamp_seconds", &[])
        .unwrap();
    if is_root() {
        assert!(
            before <= run && run <= after,
            "{before} <= {run} <= {after}"
        );
    } else {
        assert_eq!(run, 0.0, "not root: no record");
    }

    // Deferred: two recipients at busy.test (the third delivered), one
    // at slow.test.
    let out = w.sendmail(
        &["-odi", "d1@busy.test", "d2@busy.test", "ok@fine.test"],
        MSG,
    );
    assert_eq!(out.status.code(), Some(75), "{out:?}");
    let out = w.sendmail(&["-odi", "d3@slow.test"], MSG);
    assert_eq!(out.status.code(), Some(75), "{out:?}");
    // Possibly delivered: the link dropped after the final dot.
    let out = w.sendmail(&["-odi", "p@drop.test"], MSG);
    assert_eq!(out.status.code(), Some(75), "{out:?}");
    // Queued (after the runners above: none of them takes these), and
    // one of them held.
    w.send_ok(&["q1@a.test", "q2@b.test"], MSG);
    let held = w.send_ok(&["h@held.test"], MSG);
    assert_success(&w.run("mailq", &["--hold", &held], b""));
    // A file set aside in corrupt/.
    std::fs::write(w.spool.join("corrupt").join("X.drop"), [b'x'; 123]).unwrap();

    let before = now();
    let m = metrics(&w);
    let after = now();
    for (state, messages, recipients) in [
        ("queued", 1.0, 2.0),
        ("deferred", 2.0, 3.0),
        ("held", 1.0, 1.0),
        ("possibly_delivered", 1.0, 1.0),
    ] {
        assert_eq!(
            m.by_state("spoolmail_queue_messages", state),
            messages,
            "{state}: {}",
            m.text
        );
        assert_eq!(
            m.by_state("spoolmail_queue_recipients", state),
            recipients,
            "{state}: {}",
            m.text
        );
    }
    let deferred = m.samples("spoolmail_queue_deferred_recipients");
    let mut per_domain: Vec<(String, f64)> = deferred
        .into_iter()
        .map(|(l, v)| (l["domain"].clone(), v))
        .collect();
    per_domain.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        per_domain,
        [
            ("busy.test".to_string(), 2.0),
            ("slow.test".to_string(), 1.0)
        ]
    );

    // The same queue as `mailq --json` lists it.
    let json = w.mailq_json();
    assert_eq!(json.len(), 5);
    let count = |key: &str| json.iter().filter(|m| m[key] == true).count() as f64;
    assert_eq!(
        count("held"),
        m.by_state("spoolmail_queue_messages", "held")
    );
    assert_eq!(
        count("possibly_delivered"),
        m.by_state("spoolmail_queue_messages", "possibly_delivered")
    );
    let bytes: u64 = json.iter().map(|m| m["size"].as_u64().unwrap()).sum();
    assert_eq!(m.get("spoolmail_queue_size_bytes", &[]), Some(bytes as f64));
    let oldest = json
        .iter()
        .map(|m| m["arrival_time"].as_u64().unwrap())
        .min()
        .unwrap() as f64;
    let age = m
        .get("spoolmail_queue_oldest_message_age_seconds", &[])
        .unwrap();
    assert!(
        before - oldest <= age && age <= after - oldest,
        "{age} between {} and {}",
        before - oldest,
        after - oldest
    );

    assert_eq!(m.get("spoolmail_corrupt_files", &[]), Some(1.0));
    assert_eq!(m.get("spoolmail_corrupt_size_bytes", &[]), Some(123.0));
    assert_eq!(
        m.get("spoolmail_brake_limit_per_hour", &[("counted", "messages")]),
        Some(100.0)
    );
    assert_eq!(
        m.get(
            "spoolmail_brake_limit_per_hour",
            &[("counted", "recipients")]
        ),
        Some(500.0)
    );
    // Root is not counted by the brake; anyone else is, once per message.
    let submitted: f64 = m
        .samples("spoolmail_brake_submitted_messages")
        .iter()
        .map(|(_, v)| v)
        .sum();
    assert_eq!(submitted, if is_root() { 0.0 } else { 5.0 }, "{}", m.text);

    let bp = w.sendmail(&["-bp", "--metrics"], b"");
    assert_success(&bp);
    let bp = Metrics::parse(&String::from_utf8(bp.stdout).unwrap());
    for state in ["queued", "deferred", "held", "possibly_delivered"] {
        assert_eq!(
            bp.by_state("spoolmail_queue_recipients", state),
            m.by_state("spoolmail_queue_recipients", state)
        );
    }
}

/// A filtered run is not a complete one: it records nothing.
#[test]
fn a_filtered_queue_run_is_not_recorded() {
    let w = World::new();
    assert_success(&w.sendmail(&["-qIXYZ"], b""));
    assert_eq!(
        metrics(&w).get("spoolmail_last_queue_run_timestamp_seconds", &[]),
        Some(0.0)
    );
}

/// `--metrics` goes alone with the listing: not with `--json`, not with
/// a message to send.
#[test]
fn metrics_go_with_the_listing_only() {
    let w = World::new();
    assert_exit(&w.run("mailq", &["--metrics", "--json"], b""), 64);
    assert_exit(&w.sendmail(&["--metrics", "a@example.com"], MSG), 64);
    assert!(w.queue_ids().is_empty());
}

/// An ordinary user's metrics count their own mail — their messages,
/// their brake counts, their files in corrupt/ — and root's everyone's.
#[test]
fn an_ordinary_users_metrics_count_their_own_mail() {
    let Some(site) = site::Site::new("metric", "max_messages_per_hour = 100") else {
        return;
    };
    let (alice, mallory) = (&site.alice, &site.mallory);
    let queued = site.run(
        Some(alice),
        "sendmail",
        &["-odq", "one@a.test", "two@a.test"],
        MSG,
    );
    assert_success(&queued);
    // Deferred: the site's smarthost refuses every connection. Mallory's
    // runner takes only his own message.
    let deferred = site.run(Some(mallory), "sendmail", &["-odi", "three@m.test"], MSG);
    assert_eq!(deferred.status.code(), Some(75), "{deferred:?}");
    let corrupt = site.spool.join("corrupt");
    for (name, owner, size) in [("A.drop", alice.uid, 10), ("M.drop", mallory.uid, 20)] {
        let path = corrupt.join(name);
        std::fs::write(&path, vec![b'x'; size]).unwrap();
        nix::unistd::chown(&path, Some(nix::unistd::Uid::from_raw(owner)), None).unwrap();
    }
    let read = |who| {
        let out = site.run(who, "mailq", &["--metrics"], b"");
        assert_success(&out);
        Metrics::parse(&String::from_utf8(out.stdout).unwrap())
    };

    let own = read(Some(alice));
    assert_eq!(own.by_state("spoolmail_queue_messages", "queued"), 1.0);
    assert_eq!(own.by_state("spoolmail_queue_recipients", "queued"), 2.0);
    assert_eq!(own.by_state("spoolmail_queue_messages", "deferred"), 0.0);
    assert!(
        own.samples("spoolmail_queue_deferred_recipients")
            .is_empty(),
        "not whom Mallory writes to: {}",
        own.text
    );
    let users: Vec<String> = own
        .samples("spoolmail_brake_submitted_messages")
        .into_iter()
        .map(|(l, v)| format!("{}={v}", l["user"]))
        .collect();
    assert_eq!(users, [format!("{}=1", alice.name)], "{}", own.text);
    assert_eq!(own.get("spoolmail_corrupt_files", &[]), Some(1.0));
    assert_eq!(own.get("spoolmail_corrupt_size_bytes", &[]), Some(10.0));
    assert!(!own.text.contains("m.test"), "{}", own.text);
    assert!(!own.text.contains(&mallory.name), "{}", own.text);

    let all = read(None);
    assert_eq!(all.by_state("spoolmail_queue_messages", "queued"), 1.0);
    assert_eq!(all.by_state("spoolmail_queue_messages", "deferred"), 1.0);
    assert_eq!(all.by_state("spoolmail_queue_recipients", "queued"), 2.0);
    assert_eq!(
        all.get(
            "spoolmail_queue_deferred_recipients",
            &[("domain", "m.test")]
        ),
        Some(1.0)
    );
    assert_eq!(all.samples("spoolmail_brake_submitted_messages").len(), 2);
    assert_eq!(all.get("spoolmail_corrupt_files", &[]), Some(2.0));
    assert_eq!(all.get("spoolmail_corrupt_size_bytes", &[]), Some(30.0));
}

/// The script of `packaging/spoolmail-metrics.service` (what its
/// `sh -c` runs), with the installed `/usr/bin/mailq` replaced by the
/// command line `mailq`.
fn unit_script(mailq: &str) -> String {
    let root = env!("CARGO_MANIFEST_DIR");
    let unit = std::fs::read_to_string(format!("{root}/packaging/spoolmail-metrics.service"))
        .expect("the unit");
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart=/bin/sh -c '"))
        .and_then(|l| l.strip_suffix('\''))
        .expect("ExecStart=/bin/sh -c '...'");
    assert!(exec.contains("/usr/bin/mailq --metrics"), "{exec}");
    exec.replace("/usr/bin/mailq", mailq)
}

/// The unit's own command writes the file whole or not at all: the
/// metrics appear under the name node_exporter reads, no temporary
/// file is left, and when `mailq` fails the last good file stays and
/// the unit fails.
#[test]
fn the_units_command_replaces_the_textfile_whole() {
    let w = World::new();
    w.send_ok(&["a@example.com"], MSG);
    let textfile = w.dir.path().join("textfile");
    std::fs::create_dir(&textfile).unwrap();
    let prom = textfile.join("spoolmail.prom");
    let mailq = format!(
        "{} -C {}",
        w.bin.join("mailq").display(),
        w.config.display()
    );
    let run = |mailq: &str| {
        Command::new("/bin/sh")
            .args(["-c", &unit_script(mailq)])
            .env("METRICS_FILE", &prom)
            .output()
            .unwrap()
    };
    assert_success(&run(&mailq));
    let m = Metrics::parse(&std::fs::read_to_string(&prom).unwrap());
    assert_eq!(m.by_state("spoolmail_queue_messages", "queued"), 1.0);
    let left: Vec<_> = std::fs::read_dir(&textfile).unwrap().flatten().collect();
    assert_eq!(left.len(), 1, "only spoolmail.prom: {left:?}");
    // A configuration mailq cannot read: it fails, prints nothing, and
    // the file is the last good one.
    let broken = w.dir.path().join("missing.conf");
    let failing = format!("{} -C {}", w.bin.join("mailq").display(), broken.display());
    let out = run(&failing);
    assert_eq!(out.status.code(), Some(75), "{out:?}");
    let again = Metrics::parse(&std::fs::read_to_string(&prom).unwrap());
    assert_eq!(again.by_state("spoolmail_queue_messages", "queued"), 1.0);
    assert_eq!(std::fs::read_dir(&textfile).unwrap().count(), 1);
}

/// systemd reads both units without a word (Debian's systemd), their
/// manual pages found.
#[test]
fn the_metrics_units_verify() {
    let Ok(version) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("skipped: no systemd-analyze (apt-get install systemd)");
        return;
    };
    assert!(version.status.success());
    let root = env!("CARGO_MANIFEST_DIR");
    let dir = tempfile::tempdir().unwrap();
    for unit in ["spoolmail-metrics.service", "spoolmail-metrics.timer"] {
        std::fs::copy(format!("{root}/packaging/{unit}"), dir.path().join(unit)).unwrap();
    }
    // The pages its Documentation= names, where man finds them.
    for (page, section) in [("mailq.1", "1"), ("spoolmail.8", "8")] {
        let to = dir.path().join(format!("man/man{section}"));
        std::fs::create_dir_all(&to).unwrap();
        std::fs::copy(format!("{root}/packaging/man/{page}"), to.join(page)).unwrap();
    }
    let out = Command::new("systemd-analyze")
        .args([
            "verify",
            "./spoolmail-metrics.service",
            "./spoolmail-metrics.timer",
        ])
        .env("MANPATH", dir.path().join("man"))
        .current_dir(dir.path())
        .output()
        .unwrap();
    let said =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{said}");
    assert!(said.trim().is_empty(), "nothing to say: {said}");
}
