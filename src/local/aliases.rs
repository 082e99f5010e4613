//! The aliases file (`/etc/aliases`, sendmail syntax) and its compiled
//! form, written by `newaliases`.
//!
//! ```text
//! # comment
//! postmaster: root
//! root:       alice, \bob, /var/log/root.mbox
//! support:    "|/usr/local/bin/ticket --queue support",
//!             :include:/etc/mail/support.list
//! "two words": alice
//! ```
//!
//! A line starting with white space continues the previous entry; names
//! are case-insensitive; a target is an address, `\user` (deliver to the
//! user, no further alias expansion), `"|command"`, `/path/to/file`, or
//! `:include:/path`. The file is hostile input like any other: every
//! problem is reported with its line number and nothing is compiled.
//!
//! The compiled form is `PATH.spoolmail.json` beside the source, written
//! atomically (temp file, fsync, rename); expansion at delivery time reads
//! it, never the source. It carries the source's permissions: the same
//! mode, owner and group when they can be given (always for root), and
//! never more than the source allows — a password in a 0600 or 0640
//! source must not become world-readable by compiling it.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::address::Address;
use crate::error::{Error, Kind, Result};
use crate::spool::durable;

/// Largest aliases file read: a hostile or broken file must not exhaust
/// memory.
const MAX_SOURCE: u64 = 16 << 20;
/// Format version of the compiled file.
const COMPILED_VERSION: u32 = 1;

/// One right-hand-side item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "value", rename_all = "lowercase")]
pub enum Target {
    /// An address (local name or user@domain), expanded further.
    Address(String),
    /// `\user`: the local user, not expanded again.
    Local(String),
    /// `"|command"`: the message on the command's stdin.
    Pipe(String),
    /// `/path`: appended to the file.
    File(PathBuf),
    /// `:include:/path`: more targets, one list per line, from that file.
    Include(PathBuf),
}

/// A parsed aliases file: name (lowercase) → targets.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Aliases {
    /// Format version ([`COMPILED_VERSION`]).
    pub version: u32,
    /// The aliases.
    pub entries: BTreeMap<String, Vec<Target>>,
}

/// What `newaliases` reports: sendmail's summary figures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Number of aliases.
    pub count: usize,
    /// Length of the longest right-hand side, in bytes.
    pub longest: usize,
    /// Total length of all right-hand sides, in bytes.
    pub total: usize,
    /// Warnings (duplicates), with line numbers.
    pub warnings: Vec<String>,
}

impl Summary {
    /// sendmail's line: "N aliases, longest L bytes, T bytes total".
    pub fn line(&self, path: &Path) -> String {
        format!(
            "{}: {} aliases, longest {} bytes, {} bytes total",
            path.display(),
            self.count,
            self.longest,
            self.total
        )
    }
}

/// The compiled file beside `source`.
pub fn compiled_path(source: &Path) -> PathBuf {
    let mut name = source.as_os_str().to_owned();
    name.push(".spoolmail.json");
    PathBuf::from(name)
}

/// Parses aliases `text` read from `origin`. Err holds every error, each
/// as "origin:LINE: message".
pub fn parse(text: &str, origin: &str) -> std::result::Result<(Aliases, Summary), Vec<String>> {
    let mut errors = Vec::new();
    let mut aliases = Aliases {
        version: COMPILED_VERSION,
        entries: BTreeMap::new(),
    };
    let mut summary = Summary {
        count: 0,
        longest: 0,
        total: 0,
        warnings: Vec::new(),
    };
    let mut first_seen: BTreeMap<String, usize> = BTreeMap::new();
    for (line_no, entry) in logical_lines(text) {
        let at = |msg: String| format!("{origin}:{line_no}: {msg}");
        let (name, rhs) = match split_name(&entry) {
            Ok(found) => found,
            Err(msg) => {
                errors.push(at(msg));
                continue;
            }
        };
        let mut targets = Vec::new();
        let errors_before = errors.len();
        for item in split_targets(rhs) {
            match parse_target(&item) {
                Ok(Some(t)) => targets.push(t),
                Ok(None) => {}
                Err(msg) => errors.push(at(msg)),
            }
        }
        if errors.len() > errors_before {
            continue;
        }
        if targets.is_empty() {
            errors.push(at(format!("alias \"{name}\" has no targets")));
            continue;
        }
        let rhs_len = rhs.trim().len();
        summary.longest = summary.longest.max(rhs_len);
        summary.total += rhs_len;
        if let Some(first) = first_seen.get(&name) {
            // sendmail warns and keeps the last one.
            summary.warnings.push(at(format!(
                "duplicate alias \"{name}\" (first on line {first}); this one wins"
            )));
        } else {
            first_seen.insert(name.clone(), line_no);
        }
        aliases.entries.insert(name, targets);
    }
    summary.count = aliases.entries.len();
    if errors.is_empty() {
        Ok((aliases, summary))
    } else {
        Err(errors)
    }
}

/// Parses a plain target list — a `.forward` or `:include:` file: any
/// number of lines, each a comma-separated list of targets, `#` comments.
/// Returns the targets and the errors ("origin:LINE: message"); a bad
/// item is skipped, the others still count.
pub fn parse_list(text: &str, origin: &str) -> (Vec<Target>, Vec<String>) {
    let mut targets = Vec::new();
    let mut errors = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if line.trim_start().starts_with('#') {
            continue;
        }
        for item in split_targets(line) {
            match parse_target(&item) {
                Ok(Some(t)) => targets.push(t),
                Ok(None) => {}
                Err(msg) => errors.push(format!("{origin}:{}: {msg}", i + 1)),
            }
        }
    }
    (targets, errors)
}

/// Joins continuation lines (starting with space or tab) to their entry
/// and drops comments and blank lines. Yields (first line number, text).
fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut out: Vec<(usize, String)> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if line.trim_start().starts_with('#') || line.trim().is_empty() {
            continue;
        }
        if line.starts_with([' ', '\t'])
            && let Some(last) = out.last_mut()
        {
            last.1.push(' ');
            last.1.push_str(line.trim());
            continue;
        }
        out.push((i + 1, line.to_string()));
    }
    out
}

/// Splits `name: rest`, the name possibly quoted; returns it lowercased.
fn split_name(entry: &str) -> std::result::Result<(String, &str), String> {
    let entry = entry.trim_start();
    let (name, rest) = if let Some(quoted) = entry.strip_prefix('"') {
        let end = quoted
            .find('"')
            .ok_or_else(|| "unterminated quoted name".to_string())?;
        let rest = quoted[end + 1..].trim_start();
        (&quoted[..end], rest)
    } else {
        let end = entry
            .find(':')
            .ok_or_else(|| format!("missing ':' in {:?}", clip(entry)))?;
        (entry[..end].trim_end(), &entry[end..])
    };
    let rest = rest
        .strip_prefix(':')
        .ok_or_else(|| format!("missing ':' after the name {:?}", clip(name)))?;
    if name.is_empty() {
        return Err("empty alias name".into());
    }
    if name.chars().any(|c| c.is_control() || c == '@') {
        return Err(format!("bad alias name {:?}", clip(name)));
    }
    Ok((name.to_ascii_lowercase(), rest))
}

/// Splits a right-hand side at commas outside double quotes.
fn split_targets(rhs: &str) -> Vec<String> {
    let mut items = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    let mut escaped = false;
    for c in rhs.chars() {
        match c {
            _ if escaped => {
                current.push(c);
                escaped = false;
            }
            '\\' if quoted => {
                current.push(c);
                escaped = true;
            }
            '"' => {
                quoted = !quoted;
                current.push(c);
            }
            ',' if !quoted => items.push(std::mem::take(&mut current)),
            _ => current.push(c),
        }
    }
    items.push(current);
    items
        .into_iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

fn parse_target(item: &str) -> std::result::Result<Option<Target>, String> {
    let unquoted = match item.strip_prefix('"') {
        Some(inner) => inner
            .strip_suffix('"')
            .ok_or_else(|| format!("unterminated quote in {:?}", clip(item)))?,
        None => item,
    };
    if unquoted.chars().any(char::is_control) {
        return Err(format!("control character in {:?}", clip(item)));
    }
    if let Some(command) = unquoted.strip_prefix('|') {
        let command = command.trim();
        if command.is_empty() {
            return Err("empty pipe command".into());
        }
        return Ok(Some(Target::Pipe(command.to_string())));
    }
    if let Some(path) = unquoted.strip_prefix(":include:") {
        let path = path.trim();
        if !path.starts_with('/') {
            return Err(format!(
                ":include: needs an absolute path, got {:?}",
                clip(path)
            ));
        }
        return Ok(Some(Target::Include(PathBuf::from(path))));
    }
    if unquoted.starts_with('/') {
        return Ok(Some(Target::File(PathBuf::from(unquoted))));
    }
    if let Some(user) = unquoted.strip_prefix('\\') {
        let address = Address::parse(user)
            .map_err(|e| format!("bad local user {:?}: {}", clip(user), e.message()))?;
        if address.domain().is_some() {
            return Err(format!("\\{} must be a local user name", clip(user)));
        }
        return Ok(Some(Target::Local(address.to_string())));
    }
    let address = Address::parse(item)
        .map_err(|e| format!("bad address {:?}: {}", clip(item), e.message()))?;
    Ok(Some(Target::Address(address.to_string())))
}

fn clip(s: &str) -> &str {
    match s.char_indices().nth(60) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// `newaliases`: reads `source`, and when it parses without error writes
/// the compiled form atomically. The inner Err lists every error in the
/// file ("origin:LINE: message"); then nothing was written.
pub fn compile(source: &Path) -> Result<std::result::Result<Summary, Vec<String>>> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(source)
        .map_err(|e| {
            let kind = match e.kind() {
                std::io::ErrorKind::NotFound => Kind::NoInput,
                std::io::ErrorKind::PermissionDenied => Kind::NoPermission,
                _ => Kind::TempFail,
            };
            Error::new(kind, format!("cannot open {}: {e}", source.display()))
        })?;
    let meta = file
        .metadata()
        .map_err(|e| Error::io(format_args!("reading {}", source.display()), &e))?;
    if !meta.is_file() {
        return Err(Error::new(
            Kind::NoInput,
            format!("{}: not a regular file", source.display()),
        ));
    }
    let mut bytes = Vec::new();
    file.take(MAX_SOURCE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(format_args!("reading {}", source.display()), &e))?;
    if bytes.len() as u64 > MAX_SOURCE {
        return Err(Error::data(format!(
            "{}: larger than 16 MiB",
            source.display()
        )));
    }
    let text = String::from_utf8_lossy(&bytes);
    let (aliases, summary) = match parse(&text, &source.display().to_string()) {
        Ok(parsed) => parsed,
        Err(errors) => return Ok(Err(errors)),
    };
    let json = serde_json::to_vec(&aliases)
        .map_err(|e| Error::new(Kind::Software, format!("encoding aliases: {e}")))?;
    write_atomically(&compiled_path(source), &json, &meta)?;
    Ok(Ok(summary))
}

/// Reads the compiled form beside `source`; None when there is none.
pub fn load_compiled(source: &Path) -> Result<Option<Aliases>> {
    let path = compiled_path(source);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(format_args!("reading {}", path.display()), &e)),
    };
    let aliases: Aliases = serde_json::from_slice(&bytes)
        .map_err(|e| Error::data(format!("{}: {e}", path.display())))?;
    if aliases.version != COMPILED_VERSION {
        return Err(Error::data(format!(
            "{}: unknown version {} (run newaliases)",
            path.display(),
            aliases.version
        )));
    }
    Ok(Some(aliases))
}

/// Temp file beside `dest` (O_EXCL, mode 0600 until its owner is set),
/// given the permissions of `source` ([`copy_permissions`]), fsync,
/// rename, fsync of the directory: a reader sees the old file or the new
/// one, and never one more open than the source.
fn write_atomically(dest: &Path, bytes: &[u8], source: &fs::Metadata) -> Result<()> {
    let dir = dest.parent().unwrap_or(Path::new("/"));
    let tmp = PathBuf::from(format!("{}.tmp-{}", dest.display(), std::process::id()));
    let result = (|| -> std::io::Result<()> {
        let _ = fs::remove_file(&tmp);
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)?;
        copy_permissions(&f, source)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, dest)
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io(format_args!("writing {}", dest.display()), &e));
    }
    durable::fsync_dir(dir)
}

/// Gives `file` the owner, group and permission bits (no set-ID or
/// sticky bits) of `source`, as far as the caller may: root always can;
/// anyone else keeps their own uid, and gets the source's group only if
/// they belong to it. When the group could not be given, the group bits
/// are cleared, so the file is never readable by more than the source.
fn copy_permissions(file: &fs::File, source: &fs::Metadata) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    if std::os::unix::fs::fchown(file, Some(source.uid()), Some(source.gid())).is_err() {
        let _ = std::os::unix::fs::fchown(file, None, Some(source.gid()));
    }
    let mut mode = source.mode() & 0o777;
    if file.metadata()?.gid() != source.gid() {
        mode &= !0o070;
    }
    durable::set_mode(file, mode)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
# the usual
postmaster: root
MAILER-DAEMON: postmaster
root: alice, \\bob,
\t/var/log/root.mbox
support: \"|/usr/local/bin/ticket --queue support, urgent\",
  :include:/etc/mail/support.list
\"two words\": alice@example.org
";

    #[test]
    fn parses_every_kind_of_target() {
        let (a, s) = parse(SAMPLE, "aliases").unwrap();
        assert_eq!(s.count, 5);
        assert_eq!(a.entries["postmaster"], [Target::Address("root".into())]);
        assert_eq!(
            a.entries["mailer-daemon"],
            [Target::Address("postmaster".into())]
        );
        assert_eq!(
            a.entries["root"],
            [
                Target::Address("alice".into()),
                Target::Local("bob".into()),
                Target::File("/var/log/root.mbox".into())
            ]
        );
        assert_eq!(
            a.entries["support"],
            [
                Target::Pipe("/usr/local/bin/ticket --queue support, urgent".into()),
                Target::Include("/etc/mail/support.list".into())
            ]
        );
        assert_eq!(
            a.entries["two words"],
            [Target::Address("alice@example.org".into())]
        );
    }

    #[test]
    fn summary_counts_right_hand_sides() {
        let (_, s) = parse("a: b\nc: d, e\n", "x").unwrap();
        assert_eq!((s.count, s.longest, s.total), (2, 4, 5));
        assert_eq!(
            s.line(Path::new("/etc/aliases")),
            "/etc/aliases: 2 aliases, longest 4 bytes, 5 bytes total"
        );
    }

    #[test]
    fn every_error_is_reported_with_its_line() {
        let text =
            "ok: root\nno colon here\nbad: <unclosed\nempty:\n:nameless\ninc: :include:relative\n";
        let errors = parse(text, "/etc/aliases").unwrap_err();
        let lines: Vec<&str> = errors
            .iter()
            .map(|e| e.split(':').nth(1).unwrap())
            .collect();
        assert_eq!(lines, ["2", "3", "4", "5", "6"], "{errors:#?}");
        assert!(errors[0].starts_with("/etc/aliases:2: missing ':'"));
    }

    #[test]
    fn duplicates_warn_and_the_last_wins() {
        let (a, s) = parse("x: a\nx: b\n", "f").unwrap();
        assert_eq!(a.entries["x"], [Target::Address("b".into())]);
        assert_eq!(s.warnings.len(), 1);
        assert!(s.warnings[0].starts_with("f:2: duplicate alias"));
    }

    #[test]
    fn compile_writes_the_compiled_form_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("aliases");
        fs::write(&src, SAMPLE).unwrap();
        let s = compile(&src).unwrap().unwrap();
        assert_eq!(s.count, 5);
        let loaded = load_compiled(&src).unwrap().unwrap();
        assert_eq!(loaded.entries.len(), 5);
        // A broken source leaves the compiled form as it was.
        fs::write(&src, "broken line\n").unwrap();
        let errors = compile(&src).unwrap().unwrap_err();
        assert_eq!(errors.len(), 1);
        assert_eq!(load_compiled(&src).unwrap().unwrap(), loaded);
        let leftovers: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
            .collect();
        assert!(leftovers.is_empty());
    }

    #[test]
    fn the_compiled_form_is_no_more_readable_than_its_source() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("aliases");
        fs::write(&src, "secret: /var/lib/x\n").unwrap();
        for mode in [0o600, 0o640, 0o644, 0o400] {
            fs::set_permissions(&src, fs::Permissions::from_mode(mode)).unwrap();
            compile(&src).unwrap().unwrap();
            let got = fs::metadata(compiled_path(&src)).unwrap().permissions();
            assert_eq!(got.mode() & 0o7777, mode, "source {mode:o}");
        }
    }

    #[test]
    fn a_missing_source_is_no_input() {
        let dir = tempfile::tempdir().unwrap();
        let e = compile(&dir.path().join("nope")).unwrap_err();
        assert_eq!(e.kind(), Kind::NoInput);
        assert_eq!(e.kind().exit_code(), 66);
    }
}
