//! What one expansion did, step by step, in the order the walk took:
//! each alias, `.forward` and `:include:` followed (with what it names,
//! as written), each list file this process could not read, and each
//! delivery and address elsewhere it reached. Delivery ignores it;
//! `sendmail -bv` shows it, filtered by who asks (`runner::verify`).
//!
//! Recorded by the same walk that delivery uses ([`super::expand_in`]),
//! so what is shown is what a delivery would do — with this process's
//! rights: a list file only its user may read is an [`What::Unread`]
//! step unless the process is that user or root.

use std::path::PathBuf;

use super::Delivery;
use super::aliases::Target;
use super::user::User;

/// One step of an expansion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// How deep in the walk: 0 for the address asked about, one more
    /// for each alias, `.forward` or `:include:` it went through. Every
    /// step after a list's step that is deeper than it came from that
    /// list (or from what it names).
    pub depth: usize,
    /// What was done.
    pub what: What,
}

/// What one step of an expansion did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum What {
    /// An alias of the aliases file, and its targets as written.
    Alias { name: String, targets: Vec<String> },
    /// A user's `.forward`, and its targets as written.
    Forward { user: User, targets: Vec<String> },
    /// An `:include:` file, read as `reader`, and its targets.
    Include {
        path: PathBuf,
        reader: User,
        targets: Vec<String>,
    },
    /// A list file this process may not read with its user's rights
    /// (a delivery waits for root's queue run for it): `user`'s
    /// `.forward` (`path` None), or an `:include:` file.
    Unread { user: User, path: Option<PathBuf> },
    /// A local delivery, the first time the walk reached it.
    Local(Delivery),
    /// An address elsewhere, the first time the walk reached it.
    Remote(String),
}

/// A target as a list file would write it.
pub fn written(target: &Target) -> String {
    match target {
        Target::Address(a) => a.clone(),
        Target::Local(name) => format!("\\{name}"),
        Target::Pipe(command) => format!("\"|{command}\""),
        Target::File(path) => path.display().to_string(),
        Target::Include(path) => format!(":include:{}", path.display()),
    }
}

/// Every target of a list, as written.
pub fn written_all(targets: &[Target]) -> Vec<String> {
    targets.iter().map(written).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_shown_as_written() {
        let t = [
            Target::Address("a@x.test".into()),
            Target::Local("root".into()),
            Target::Pipe("/bin/cat".into()),
            Target::File("/var/log/x".into()),
            Target::Include("/etc/list".into()),
        ];
        assert_eq!(
            written_all(&t),
            [
                "a@x.test",
                "\\root",
                "\"|/bin/cat\"",
                "/var/log/x",
                ":include:/etc/list"
            ]
        );
    }
}
