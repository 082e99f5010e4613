//! The manual pages in `packaging/man/` against the code, and the answers
//! every face gives before it reads a configuration: `--version`, `-bV`,
//! `--help`.
//!
//! The pages are hand-written roff; what can drift from the code is
//! checked here: every option of the command line's own table
//! (`spoolmail::cli::OPTIONS`) is documented on `sendmail(8)` (the queue's
//! long options on `mailq(1)`), every option a page documents exists, and
//! `groff -man -ww -z` has nothing to say about any page. And every
//! link between the README and the pages of `docs/` leads to a file and a
//! heading that exist.

use std::path::{Path, PathBuf};
use std::process::Command;

use spoolmail::cli::OPTIONS;

fn man_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/man")
}

fn page(name: &str) -> String {
    std::fs::read_to_string(man_dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The OPTIONS section of a page (up to the next `.SH`).
fn options_section(text: &str) -> &str {
    let start = text.find("\n.SH OPTIONS\n").expect("an OPTIONS section");
    let rest = &text[start + 1..];
    let end = rest[1..].find("\n.SH ").map_or(rest.len(), |i| i + 1);
    &rest[..end]
}

/// Does `text` name the option `-NAME` / `--NAME` (roff's `\-`), not as
/// the start of a longer one?
fn names(text: &str, name: &str) -> bool {
    let flag = if name.len() == 1 {
        format!("\\-{name}")
    } else {
        format!("\\-\\-{name}")
    };
    text.match_indices(&flag).any(|(at, _)| {
        let before = text[..at].chars().last();
        let after = text[at + flag.len()..].chars().next();
        // `\-\-json` contains `\-json`'s text; `\-bm` starts with `\-b`.
        before != Some('-')
            && (name.len() == 1 || !after.is_some_and(|c| c.is_ascii_alphanumeric() || c == '-'))
    })
}

#[test]
fn every_option_of_the_command_line_is_on_a_manual_page() {
    let sendmail = page("sendmail.8");
    let mailq = page("mailq.1");
    let mut missing = Vec::new();
    for spec in OPTIONS.iter().filter(|s| !s.name.ends_with("-bare")) {
        let documented = names(options_section(&sendmail), spec.name)
            || (spec.name.len() > 1 && names(options_section(&mailq), spec.name));
        if !documented {
            missing.push(spec.name);
        }
    }
    assert!(
        missing.is_empty(),
        "options not in sendmail(8) or mailq(1): {missing:?}"
    );
}

#[test]
fn every_option_a_page_documents_exists() {
    for name in ["sendmail.8", "mailq.1", "newaliases.8"] {
        let text = page(name);
        for line in options_section(&text).lines() {
            // The item lines: `.B \-t`, `.BR \-i ", " \-oi`, `.BI \-f " sender…`.
            if !(line.starts_with(".B ") || line.starts_with(".BR ") || line.starts_with(".BI ")) {
                continue;
            }
            for word in line.split(|c: char| c.is_whitespace() || c == '"') {
                // A bare `\-` is standard input, not an option.
                let Some(flag) = word.strip_prefix("\\-").filter(|f| !f.is_empty()) else {
                    continue;
                };
                let option = match flag.strip_prefix("\\-") {
                    Some(long) => long.trim_end_matches(|c: char| !c.is_ascii_alphanumeric()),
                    // A letter, perhaps with its value attached (`-bm`, `-oi`, `-q15m`).
                    None => &flag[..flag.chars().next().map_or(0, char::len_utf8)],
                };
                assert!(
                    OPTIONS.iter().any(|s| s.name == option),
                    "{name} documents {word}, which is not an option: {line}"
                );
            }
        }
    }
}

#[test]
fn groff_has_nothing_to_say_about_any_page() {
    if Command::new("groff").arg("--version").output().is_err() {
        eprintln!("skipped: groff is not installed (apt-get install groff-base)");
        return;
    }
    let mut pages: Vec<_> = std::fs::read_dir(man_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    pages.sort();
    assert!(pages.len() >= 5, "the five pages: {pages:?}");
    for path in pages {
        let out = Command::new("groff")
            .args(["-man", "-ww", "-z"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(out.status.success(), "groff failed on {}", path.display());
        assert!(
            out.stderr.is_empty(),
            "groff -man -ww -z {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A directory with the binary under each face's name.
fn faces() -> (tempfile::TempDir, [PathBuf; 3]) {
    let dir = tempfile::tempdir().unwrap();
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_spoolmail"));
    let paths = ["sendmail", "mailq", "newaliases"].map(|face| {
        let path = dir.path().join(face);
        std::os::unix::fs::symlink(&bin, &path).unwrap();
        path
    });
    (dir, paths)
}

/// `dependency = "x.y.z"` of Cargo.toml, as `x.y`.
fn dependency_version(name: &str) -> String {
    let manifest =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml")).unwrap();
    let line = manifest
        .lines()
        .find(|l| l.starts_with(&format!("{name} = ")))
        .unwrap_or_else(|| panic!("{name} in Cargo.toml"));
    let version = line.split('"').nth(1).unwrap();
    version.splitn(3, '.').take(2).collect::<Vec<_>>().join(".")
}

#[test]
fn version_on_every_face_names_the_tls_library_and_the_resolver() {
    let (_dir, faces) = faces();
    // The TLS library's own name for itself, as the system reports it.
    let openssl = Command::new("openssl").arg("version").output().ok();
    for face in &faces {
        for args in [
            &["--version"][..],
            &["-bV"],
            &["-C", "/nonexistent/spoolmail.conf", "--version"],
        ] {
            let out = Command::new(face).args(args).output().unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            assert_eq!(
                out.status.code(),
                Some(0),
                "{} {args:?}: {text} {}",
                face.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            let lines: Vec<&str> = text.lines().collect();
            assert_eq!(lines.len(), 2, "{text}");
            assert_eq!(lines[0], format!("spoolmail {}", env!("CARGO_PKG_VERSION")));
            assert!(lines[1].starts_with("built with OpenSSL "), "{text}");
            assert!(
                lines[1].contains(&format!(
                    "hickory-resolver {}",
                    dependency_version("hickory-resolver")
                )),
                "{text}"
            );
            if let Some(openssl) = &openssl {
                // `OpenSSL 3.0.19 27 Jan 2026 (Library: …)`: the same library.
                let system = String::from_utf8_lossy(&openssl.stdout);
                let version = system.split_whitespace().nth(1).unwrap_or("?");
                assert!(
                    lines[1].contains(&format!("OpenSSL {version} ")),
                    "{text} vs {system}"
                );
            }
        }
    }
}

#[test]
fn help_on_every_face_says_what_it_does_and_points_at_the_manual() {
    let (_dir, faces) = faces();
    let expect = [
        ("sendmail(8)", "  -t "),
        ("mailq(1)", "  --hold"),
        ("newaliases(8)", "  --version"),
    ];
    for (face, (manual, option)) in faces.iter().zip(expect) {
        let out = Command::new(face).arg("--help").output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{}: {text}", face.display());
        assert!(text.contains(manual), "{}: {text}", face.display());
        assert!(text.contains(option), "{}: {text}", face.display());
    }
}

/// GitHub's anchor for a heading: lower case, punctuation dropped,
/// spaces to hyphens.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

#[test]
fn every_link_between_the_readme_and_docs_leads_somewhere() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.push(root.join("README.md"));
    let mut broken = Vec::new();
    let mut links = 0;
    for doc in &docs {
        let text = std::fs::read_to_string(doc).unwrap();
        for (at, _) in text.match_indices("](") {
            let rest = &text[at + 2..];
            let Some(end) = rest.find(')') else { continue };
            let target = &rest[..end];
            if target.contains("://") || target.starts_with("mailto:") || target.contains(' ') {
                continue;
            }
            links += 1;
            let (file, anchor) = target.split_once('#').unwrap_or((target, ""));
            let file = if file.is_empty() {
                doc.clone()
            } else {
                doc.parent().unwrap().join(file)
            };
            let Ok(linked) = std::fs::read_to_string(&file) else {
                broken.push(format!("{}: {target}: no such file", doc.display()));
                continue;
            };
            let found = anchor.is_empty()
                || linked
                    .lines()
                    .filter_map(|l| {
                        l.trim_start_matches('#')
                            .strip_prefix(' ')
                            .filter(|_| l.starts_with('#'))
                    })
                    .any(|h| slug(h) == anchor);
            if !found {
                broken.push(format!("{}: {target}: no such heading", doc.display()));
            }
        }
    }
    assert!(links > 20, "the links were read: {links}");
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}
