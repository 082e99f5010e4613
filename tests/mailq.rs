//! The mailq face: the sendmail-style listing and `--json`, which must
//! agree with each other and with what sendmail queued.

mod common;

use common::*;

#[test]
fn empty_queue_says_so() {
    let w = World::new();
    let out = w.run("mailq", &[], b"");
    assert_success(&out);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "Mail queue is empty\n"
    );
    assert!(w.mailq_json().is_empty());
}

#[test]
fn a_reader_that_stops_early_ends_the_listing_silently() {
    // `mailq | head -1`: the reader goes away; mailq ends by SIGPIPE as
    // any program printing a listing does, with nothing on stderr.
    use std::os::unix::process::ExitStatusExt;
    let w = World::new();
    let id = w.send_ok(
        &["-f", "s@example.com", "a@example.com"],
        b"Subject: x\n\ny\n",
    );
    for args in [&[][..], &["--json"][..]] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = w
            .command("mailq")
            .args(args)
            .stdout(writer)
            .stderr(std::process::Stdio::piped())
            .output()
            .unwrap();
        assert_eq!(
            out.status.signal(),
            Some(libc::SIGPIPE),
            "{args:?}: {out:?}"
        );
        assert!(
            out.stderr.is_empty(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(w.queue_ids(), [id]);
}

#[test]
fn bp_is_the_same_as_mailq() {
    let w = World::new();
    w.send_ok(
        &["-f", "s@example.com", "a@example.com"],
        b"Subject: x\n\ny\n",
    );
    let mailq = w.run("mailq", &[], b"");
    let bp = w.sendmail(&["-bp"], b"");
    assert_success(&mailq);
    assert_success(&bp);
    assert_eq!(mailq.stdout, bp.stdout);
}

#[test]
fn listing_shows_each_message_with_its_recipients() {
    let w = World::new();
    let id1 = w.send_ok(
        &["-f", "alice@example.com", "x@example.net", "y@example.org"],
        b"Subject: 1\n\none\n",
    );
    let id2 = w.send_ok(&["-f", "<>", "root"], b"Subject: 2\n\ntwo\n");
    let out = w.run("mailq", &[], b"");
    assert_success(&out);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains(&id1) && text.contains(&id2), "{text}");
    assert!(text.contains("<alice@example.com>"), "{text}");
    assert!(text.contains("<>"), "null sender shown as <>: {text}");
    for r in ["x@example.net", "y@example.org", "root"] {
        assert!(text.contains(r), "{r} in {text}");
    }
    assert!(text.contains("Total requests: 2"), "{text}");
    // The message content never appears in the listing.
    assert!(!text.contains("Subject"), "{text}");
}

#[test]
fn json_parses_and_agrees_with_the_text_listing() {
    let w = World::new();
    let id1 = w.send_ok(
        &["-f", "alice@example.com", "x@example.net", "y@example.org"],
        b"Subject: 1\n\none\n",
    );
    let id2 = w.send_ok(&["root"], b"Subject: 2\n\ntwo two\n");
    let json = w.mailq_json();
    assert_eq!(json.len(), 2);
    let text = String::from_utf8(w.run("mailq", &[], b"").stdout).unwrap();
    for (obj, id) in json.iter().zip([&id1, &id2]) {
        assert_eq!(obj["id"], id.as_str());
        let env = w.envelope(id);
        assert_eq!(obj["size"].as_u64(), Some(env.size));
        assert_eq!(obj["sender"].as_str(), Some(env.sender.as_str()));
        assert_eq!(obj["arrival_time"].as_u64(), Some(env.arrival));
        assert_eq!(obj["possibly_delivered"], false);
        let rcpts = obj["recipients"].as_array().unwrap();
        assert_eq!(rcpts.len(), env.recipients.len());
        for (r, addr) in rcpts.iter().zip(&env.recipients) {
            assert_eq!(r["address"].as_str(), Some(addr.as_str()));
            assert_eq!(r["status"], "queued");
            assert_eq!(r["attempts"], 0);
            assert!(r["last_error"].is_null());
            assert!(r.get("next_attempt").is_some());
            assert!(text.contains(addr.as_str()));
        }
        // The text line for the message carries the same ID and size.
        let line = text
            .lines()
            .find(|l| l.starts_with(id.as_str()))
            .expect("id line");
        assert!(
            line.split_whitespace().any(|f| f == env.size.to_string()),
            "{line}"
        );
    }
}

#[test]
fn mailq_honours_c() {
    let w = World::new();
    w.send_ok(&["a@example.com"], b"x\n");
    let other = World::new();
    let out = w.run("mailq", &[], b"");
    assert!(String::from_utf8_lossy(&out.stdout).contains("a@example.com"));
    let out = other.run("mailq", &[], b"");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "Mail queue is empty\n"
    );
}

#[test]
fn json_is_valid_for_hostile_recipients() {
    let w = World::new();
    w.send_ok(&["\"quoted \\\" local\"@example.com"], b"x\n");
    let json = w.mailq_json();
    assert_eq!(
        json[0]["recipients"][0]["address"],
        "\"quoted \\\" local\"@example.com"
    );
}

/// `mailq --summary` (issue 14): recipients still to deliver, per domain,
/// by message age, as qshape shows them; `--json` says the same.
#[test]
fn summary_counts_recipients_per_domain_and_age() {
    let w = World::new();
    w.send_ok(
        &[
            "-odq",
            "-f",
            "s@example.com",
            "a@B.test",
            "b@b.test",
            "c@a.test",
        ],
        b"Subject: x\n\ny\n",
    );
    w.send_ok(
        &["-odq", "-f", "s@example.com", "d@b.test"],
        b"Subject: x\n\ny\n",
    );
    let out = w.run("mailq", &["--summary"], b"");
    assert_success(&out);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let rows: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows[0][..3], ["T", "5", "10"], "{text}");
    assert_eq!(
        rows[1][..3],
        ["TOTAL", "4", "4"],
        "all younger than 5 minutes: {text}"
    );
    assert_eq!(rows[2][..3], ["b.test", "3", "3"], "{text}");
    assert_eq!(rows[3][..3], ["a.test", "1", "1"], "{text}");
    assert_eq!(rows.len(), 4, "{text}");
    let out = w.run("mailq", &["--summary", "--json"], b"");
    assert_success(&out);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["total"]["total"], 4, "{json}");
    assert_eq!(json["domains"]["b.test"]["by_age"][0], 3, "{json}");
    assert_eq!(json["age_minutes"][9], serde_json::Value::Null, "{json}");
}
