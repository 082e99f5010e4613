//! The DKIM signing key (issue 26): root:mail 0640, read by the runner,
//! which holds the mail group even when an ordinary user's sendmail
//! started it. Mallory tries every way a setgid binary could hand him
//! the key's text: reading it, naming it as the configuration, as an
//! `:include:` of his `.forward` (mail to himself, then root's queue run
//! and `-bv`), and the configuration checks. No output, no mailbox, no
//! queue listing may hold any piece of it. The control: a copy of the
//! same key he may read, included the same way, does show up — so the
//! search finds a leak when there is one.

use std::path::Path;

use crate::common;
use crate::site::{Site, shell_quote};

/// Every 16-character window of the key's base64 body: any one of them
/// in an output is a piece of the key.
fn key_pieces(key: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(key).unwrap();
    let body: String = text
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<Vec<_>>()
        .concat();
    assert!(body.len() > 1000, "an RSA key's body: {}", body.len());
    body.as_bytes()
        .windows(16)
        .step_by(4)
        .map(|w| String::from_utf8(w.to_vec()).unwrap())
        .collect()
}

/// The first piece of the key found in `seen`, if any.
fn leaked<'a>(pieces: &'a [String], seen: &str) -> Option<&'a str> {
    pieces
        .iter()
        .find(|p| seen.contains(p.as_str()))
        .map(String::as_str)
}

fn said(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Everything Mallory can look at after mail to himself was tried: his
/// mailbox, his queue listing, and a root queue run's own output.
fn what_mallory_sees(site: &Site) -> String {
    let mallory = site.mallory.name.clone();
    let mut seen = said(&site.run(Some(&site.mallory), "mailq", &["--json"], b""));
    seen.push_str(&said(&site.run(
        Some(&site.mallory),
        "sendmail",
        &["-bv", &mallory],
        b"",
    )));
    seen.push_str(&std::fs::read_to_string(site.mail_dir.join(&mallory)).unwrap_or_default());
    seen
}

/// Mallory's `.forward` becomes `:include:PATH`; he mails himself, his
/// own runner delivers, then root's queue run: what all of it showed.
fn include_in_forward(site: &Site, path: &str) -> String {
    let mallory = site.mallory.name.clone();
    site.write_as(
        &site.mallory,
        &site.mallory.home.join(".forward"),
        &format!(":include:{path}\n"),
        0o644,
    );
    let mut seen = said(&site.run(
        Some(&site.mallory),
        "sendmail",
        &["-odi", &mallory],
        b"Subject: key?\n\nbody\n",
    ));
    seen.push_str(&said(&site.as_root("sendmail", &["-q"], b"")));
    seen.push_str(&what_mallory_sees(site));
    seen
}

#[test]
fn the_dkim_key_reaches_no_ordinary_user_by_any_face_of_the_setgid_binary() {
    let key_in_ns = "/etc/spoolmail/dkim/example.org.s1.key";
    let line = format!("dkim = example.org selector=s1 key={key_in_ns}");
    let Some(site) = Site::new("dkimkey", &line) else {
        return;
    };
    let out = site.as_root("sendmail", &["--dkim-keygen", "example.org", "s1"], b"");
    common::assert_success(&out);
    let key = site.etc.join("dkim/example.org.s1.key");
    let pieces = key_pieces(&key);

    // Read it, or have the binary read it as its configuration.
    let mut seen = said(&site.sh(
        Some(&site.mallory),
        &format!(
            "cat {key_in_ns}; cat {}",
            shell_quote(&key.display().to_string())
        ),
    ));
    for args in [
        vec!["-C", key_in_ns, "-bp"],
        vec!["-C", key_in_ns, "--show-config"],
        vec!["-C", key_in_ns, "--check-config"],
        vec!["--show-config"],
        vec!["--check-config"],
    ] {
        seen.push_str(&said(&site.run(
            Some(&site.mallory),
            "sendmail",
            &args,
            b"",
        )));
    }
    assert!(
        leaked(&pieces, &seen).is_none(),
        "a piece of the key: {seen}"
    );

    // His .forward includes the key: mail to himself, delivered by his
    // own runner, then by root's queue run.
    let seen = include_in_forward(&site, key_in_ns);
    assert!(
        leaked(&pieces, &seen).is_none(),
        "a piece of the key: {seen}"
    );

    // The control: a copy he may read, included the same way, is
    // expanded into addresses that his mailbox, listing or -bv show.
    let copy = site.mallory.home.join("copy.key");
    let text = std::fs::read_to_string(&key).unwrap();
    site.write_as(&site.mallory, &copy, &text, 0o600);
    let seen = include_in_forward(&site, &copy.display().to_string());
    assert!(
        leaked(&pieces, &seen).is_some(),
        "the search finds a key he could read: {seen}"
    );
}
