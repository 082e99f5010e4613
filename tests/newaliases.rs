//! `newaliases` (and `sendmail -bi`) end to end: the built binary on an
//! aliases file in the test's own directory (the config's `aliases`).

mod common;

use common::*;

fn aliases_path(w: &World) -> std::path::PathBuf {
    w.dir.path().join("aliases")
}

#[test]
fn newaliases_compiles_and_prints_the_sendmail_summary() {
    let w = World::new();
    std::fs::write(
        aliases_path(&w),
        "# comment\npostmaster: root\nroot: alice,\n  \\bob\nlog: /var/log/x\n",
    )
    .unwrap();
    let out = w.run("newaliases", &[], b"");
    assert_success(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.trim_end(),
        format!(
            "{}: 3 aliases, longest 11 bytes, 25 bytes total",
            aliases_path(&w).display()
        )
    );
    let compiled = std::fs::read_to_string(w.dir.path().join("aliases.spoolmail.json")).unwrap();
    assert!(compiled.contains("\"postmaster\""), "{compiled}");
    // sendmail -bi is the same thing.
    let out = w.sendmail(&["-bi"], b"");
    assert_success(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("3 aliases"));
}

#[test]
fn errors_are_reported_with_line_numbers_and_nothing_is_compiled() {
    let w = World::new();
    std::fs::write(aliases_path(&w), "good: root\n").unwrap();
    assert_success(&w.run("newaliases", &[], b""));
    let compiled = w.dir.path().join("aliases.spoolmail.json");
    let before = std::fs::read(&compiled).unwrap();
    std::fs::write(
        aliases_path(&w),
        "good: root\nno colon\nbad: <x\ninc: :include:relative/path\n",
    )
    .unwrap();
    let out = w.run("newaliases", &[], b"");
    assert_eq!(out.status.code(), Some(65));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let path = aliases_path(&w).display().to_string();
    for line in [2, 3, 4] {
        assert!(
            stderr.contains(&format!("{path}:{line}: ")),
            "line {line}: {stderr}"
        );
    }
    assert!(stderr.contains("3 error(s)"), "{stderr}");
    assert_eq!(
        std::fs::read(&compiled).unwrap(),
        before,
        "compiled form unchanged"
    );
}

#[test]
fn a_missing_aliases_file_exits_66() {
    let w = World::new();
    let out = w.run("newaliases", &[], b"");
    assert_exit(&out, 66);
}

#[test]
fn the_compiled_aliases_are_no_more_readable_than_their_source() {
    use std::os::unix::fs::PermissionsExt;
    let w = World::new();
    let source = aliases_path(&w);
    std::fs::write(&source, "billing: \"|/usr/bin/bill --password hunter2\"\n").unwrap();
    let compiled = w.dir.path().join("aliases.spoolmail.json");
    for mode in [0o600, 0o640, 0o644] {
        std::fs::set_permissions(&source, std::fs::Permissions::from_mode(mode)).unwrap();
        assert_success(&w.run("newaliases", &[], b""));
        let got = std::fs::metadata(&compiled).unwrap().permissions().mode() & 0o7777;
        assert_eq!(got, mode, "source {mode:o}, compiled {got:o}");
    }
}
