//! The spool's directories as the package's postinst makes them, and the
//! check that they still are (`spoolmail --check-config`): the root
//! 0751, the store's subdirectories 0770, the maildrop's two 1733, every
//! one owned by root and the spool's group. A wrong mode is found here
//! rather than at the first message it breaks (a 0700 `queue/` refuses
//! every ordinary caller; a world-readable one breaks S6).

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::{MAILDROP, MAILDROP_TMP, SCHEDULE, Spool, WINDOW};

/// Each directory under the root (`""`: the root itself) and its mode,
/// as debian/spoolmail.postinst and packaging/install.sh make them.
pub const LAYOUT: &[(&str, u32)] = &[
    ("", super::ROOT_MODE),
    ("tmp", super::DIR_MODE),
    ("queue", super::DIR_MODE),
    ("state", super::DIR_MODE),
    ("hosts", super::DIR_MODE),
    ("corrupt", super::DIR_MODE),
    (SCHEDULE, super::DIR_MODE),
    ("schedule/0", super::DIR_MODE),
    (WINDOW, super::DIR_MODE),
    (MAILDROP, super::maildrop::MAILDROP_MODE),
    (MAILDROP_TMP, super::maildrop::MAILDROP_MODE),
];

impl Spool {
    /// What differs from [`LAYOUT`] under `root`, owner root and group
    /// `group`: one line per directory (missing, not a directory, its
    /// mode, its owner, written `owners(uid, gid)`: the spool does not
    /// know user names). Reads only; creates and repairs nothing.
    pub fn layout_problems(
        root: &Path,
        group: u32,
        owners: &dyn Fn(u32, u32) -> String,
    ) -> Vec<String> {
        let mut problems = Vec::new();
        for (sub, mode) in LAYOUT {
            let path = match *sub {
                "" => root.to_path_buf(),
                sub => root.join(sub),
            };
            let shown = path.display();
            let meta = match std::fs::symlink_metadata(&path) {
                Ok(meta) => meta,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    problems.push(format!("{shown} is missing (mode {mode:04o} expected)"));
                    // Without the root, the rest is missing too: one line says it.
                    if sub.is_empty() {
                        return problems;
                    }
                    continue;
                }
                Err(e) => {
                    problems.push(format!("{shown}: {e}"));
                    continue;
                }
            };
            if !meta.is_dir() {
                problems.push(format!("{shown} is not a directory"));
                continue;
            }
            let found = meta.mode() & 0o7777;
            if found != *mode {
                problems.push(format!("{shown} has mode {found:04o}, expected {mode:04o}"));
            }
            if (meta.uid(), meta.gid()) != (0, group) {
                problems.push(format!(
                    "{shown} is owned by {}, expected {}",
                    owners(meta.uid(), meta.gid()),
                    owners(0, group)
                ));
            }
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_spool_is_one_problem() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("spool");
        assert_eq!(
            Spool::layout_problems(&root, 0, &|u, g| format!("{u}:{g}")),
            [format!(
                "{} is missing (mode 0751 expected)",
                root.display()
            )]
        );
    }

    #[test]
    fn a_wrong_mode_and_a_missing_directory_are_named() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let gid = nix::unistd::getegid().as_raw();
        for (sub, mode) in LAYOUT.iter().filter(|(sub, _)| *sub != "window") {
            let path = root.join(sub);
            std::fs::create_dir_all(&path).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(*mode)).unwrap();
        }
        std::fs::set_permissions(root.join("queue"), std::fs::Permissions::from_mode(0o700))
            .unwrap();
        // The owner is root only when the test runs as root: its lines
        // are not what this test is about.
        let problems: Vec<String> = Spool::layout_problems(root, gid, &|u, g| format!("{u}:{g}"))
            .into_iter()
            .filter(|p| !p.contains("owned by"))
            .collect();
        assert_eq!(
            problems,
            [
                format!(
                    "{} has mode 0700, expected 0770",
                    root.join("queue").display()
                ),
                format!(
                    "{} is missing (mode 0770 expected)",
                    root.join("window").display()
                ),
            ]
        );
    }
}
