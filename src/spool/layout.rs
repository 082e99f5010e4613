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
    /// mode, its owner). Reads only; creates and repairs nothing.
    pub fn layout_problems(root: &Path, group: u32) -> Vec<String> {
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
                    "{shown} is owned by {}:{}, expected root:{}",
                    user_name(meta.uid()),
                    group_name(meta.gid()),
                    group_name(group)
                ));
            }
        }
        problems
    }
}

fn user_name(uid: u32) -> String {
    nix::unistd::User::from_uid(uid.into())
        .ok()
        .flatten()
        .map_or_else(|| uid.to_string(), |u| u.name)
}

fn group_name(gid: u32) -> String {
    nix::unistd::Group::from_gid(gid.into())
        .ok()
        .flatten()
        .map_or_else(|| gid.to_string(), |g| g.name)
}
