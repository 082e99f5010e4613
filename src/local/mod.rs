//! Local recipients: what an address on this host expands to — the
//! compiled `/etc/aliases`, `~/.forward`, `:include:` files — and the
//! pieces that deliver it (mailboxes, Maildirs, files, commands), each as
//! the user it belongs to.
//!
//! An expansion's addresses elsewhere are forwarded the way Postfix's
//! local(8) does it: one new message with those recipients is committed
//! to the spool (sender `owner-NAME` when that alias exists).

pub mod aliases;
pub mod loops;
pub mod maildir;
pub mod mbox;
pub mod pipe;
pub mod store;
pub mod user;

use std::collections::BTreeSet;
use std::fs::OpenOptions;
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::config::Config;
use crate::error::Result;
use crate::spool::{Envelope, QueueId, Spool};
use aliases::{Aliases, Target};

pub use store::{HELPER_FLAG, helper_main};
pub use user::User;

/// Deepest alias nesting followed (sendmail stops at 10 as well).
const MAX_DEPTH: usize = 10;
/// Largest `.forward` or `:include:` file read.
const MAX_LIST_FILE: u64 = 64 * 1024;

/// Whom a command or file delivery runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunAs {
    /// The user whose `.forward` (or `:include:` file) named it.
    User(User),
    /// `pipe_user`: targets from /etc/aliases, and root's own.
    PipeUser,
}

impl RunAs {
    fn name<'a>(&'a self, config: &'a Config) -> &'a str {
        match self {
            RunAs::User(u) => &u.name,
            RunAs::PipeUser => &config.pipe_user,
        }
    }
}

/// Whose rights read a list file (`.forward`, `:include:`): never the
/// runner's own, which may be root's or hold the spool group.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ReadAs {
    /// The user whose `.forward` led here: everything it includes is
    /// read as them (sendmail's rule), and what it names runs as them.
    User(User),
    /// An `:include:` named in /etc/aliases: read as the file's owner,
    /// or as `pipe_user` when root owns it — never as root.
    Owner,
}

/// One local thing an expansion asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// The user's mailbox (mbox or Maildir, per `mailbox`).
    Mailbox(User),
    /// `|command`.
    Pipe { command: String, run_as: RunAs },
    /// `/path`: appended mbox-style.
    File { path: PathBuf, run_as: RunAs },
    /// A name that is neither an alias nor a user: bounces (5.1.1).
    Unknown(String),
    /// Expansion could not be finished (a lookup or a file read failed):
    /// try again later.
    Trouble(String),
    /// A file only its user may read (a `.forward`, an `:include:`)
    /// stands in the way and this runner is not that user: root's queue
    /// run will read it as them.
    NeedsRoot(String),
}

impl Delivery {
    /// A stable name for the delivery state: a target once delivered is
    /// skipped when the recipient is retried for another target's sake.
    pub fn key(&self, config: &Config) -> String {
        match self {
            Delivery::Mailbox(u) => format!("mailbox:{}", u.name),
            Delivery::Pipe { command, run_as } => {
                format!("pipe:{}:{command}", run_as.name(config))
            }
            Delivery::File { path, run_as } => {
                format!("file:{}:{}", run_as.name(config), path.display())
            }
            Delivery::Unknown(n) => format!("unknown:{n}"),
            Delivery::Trouble(t) => format!("trouble:{t}"),
            Delivery::NeedsRoot(t) => format!("needs-root:{t}"),
        }
    }
}

/// What expanding one local recipient gave.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Expansion {
    /// Addresses in other domains, to forward to.
    pub remote: Vec<String>,
    /// Local deliveries, each once.
    pub local: Vec<Delivery>,
    /// The alias name whose `owner-` alias is the error sender.
    pub owner: Option<String>,
}

/// Whether `address` is delivered on this host: no domain, or one of
/// `local_domains`.
pub fn is_local(config: &Config, address: &str) -> bool {
    match address.rsplit_once('@') {
        None => true,
        Some((_, domain)) => config
            .local_domains
            .iter()
            .any(|d| d.eq_ignore_ascii_case(domain)),
    }
}

fn local_part(address: &str) -> String {
    address
        .rsplit_once('@')
        .map_or(address, |(l, _)| l)
        .to_ascii_lowercase()
}

/// Expands the local recipient `address`: aliases recursively (each name
/// at most once: an alias that comes back to itself means the user),
/// then users' `.forward` files, then `:include:` files.
pub fn expand(config: &Config, aliases: &Aliases, address: &str) -> Expansion {
    let name = local_part(address);
    let mut walker = Walker {
        config,
        aliases,
        seen_aliases: BTreeSet::new(),
        seen_forwards: BTreeSet::new(),
        out: Expansion::default(),
    };
    walker.name(&name, 0);
    walker.out
}

struct Walker<'a> {
    config: &'a Config,
    aliases: &'a Aliases,
    seen_aliases: BTreeSet<String>,
    seen_forwards: BTreeSet<String>,
    out: Expansion,
}

impl Walker<'_> {
    fn push(&mut self, d: Delivery) {
        if !self.out.local.contains(&d) {
            self.out.local.push(d);
        }
    }

    /// A local name: an alias, else a user (and their .forward).
    fn name(&mut self, name: &str, depth: usize) {
        let aliases = self.aliases;
        match aliases.entries.get(name) {
            Some(targets) if depth < MAX_DEPTH && self.seen_aliases.insert(name.to_string()) => {
                // The outermost alias with an owner- alias receives the
                // errors of what it expands to (a mailing list's owner).
                if self.out.owner.is_none()
                    && aliases.entries.contains_key(&format!("owner-{name}"))
                {
                    self.out.owner = Some(name.to_string());
                }
                for t in targets {
                    self.target(t, depth + 1, &RunAs::PipeUser, &ReadAs::Owner);
                }
            }
            _ => self.user(name, depth, true),
        }
    }

    fn user(&mut self, name: &str, depth: usize, follow_forward: bool) {
        let user = match User::lookup(name) {
            Ok(Some(u)) => u,
            Ok(None) => return self.push(Delivery::Unknown(name.to_string())),
            Err(e) => return self.push(Delivery::Trouble(e)),
        };
        if follow_forward && depth < MAX_DEPTH && self.seen_forwards.insert(user.name.clone()) {
            match forward_targets(self.config, &user) {
                Forward::Targets(targets) => {
                    // Root's commands and files run as pipe_user, never as root.
                    let run_as = match user.uid {
                        0 => RunAs::PipeUser,
                        _ => RunAs::User(user.clone()),
                    };
                    let read_as = ReadAs::User(user);
                    for t in &targets {
                        self.target(t, depth + 1, &run_as, &read_as);
                    }
                    return;
                }
                Forward::NeedsRoot(why) => return self.push(Delivery::NeedsRoot(why)),
                Forward::None => {}
            }
        }
        self.push(Delivery::Mailbox(user));
    }

    fn target(&mut self, target: &Target, depth: usize, run_as: &RunAs, read_as: &ReadAs) {
        match target {
            Target::Address(a) if is_local(self.config, a) => self.name(&local_part(a), depth),
            Target::Address(a) => {
                if !self.out.remote.contains(a) {
                    self.out.remote.push(a.clone());
                }
            }
            Target::Local(name) => self.user(&name.to_ascii_lowercase(), depth, false),
            Target::Pipe(command) => self.push(Delivery::Pipe {
                command: command.clone(),
                run_as: run_as.clone(),
            }),
            Target::File(path) => self.push(Delivery::File {
                path: path.clone(),
                run_as: run_as.clone(),
            }),
            Target::Include(path) if depth < MAX_DEPTH => {
                self.include(path, depth, run_as, read_as)
            }
            Target::Include(path) => {
                log::warn!(":include:{}: aliases nested too deeply", path.display())
            }
        }
    }
}

impl Walker<'_> {
    /// An `:include:` file: read with the rights `read_as` says, its
    /// targets followed — in a user's context as that user, from
    /// /etc/aliases as the file's owner (pipe_user for root's files).
    fn include(&mut self, path: &Path, depth: usize, run_as: &RunAs, read_as: &ReadAs) {
        let (reader, owner, run_as) = match read_as {
            ReadAs::User(user) => (user.clone(), None, run_as.clone()),
            ReadAs::Owner => {
                let owner = match std::fs::symlink_metadata(path) {
                    Ok(meta) => meta.uid(),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return,
                    Err(e) => {
                        return self.push(Delivery::Trouble(format!("{}: {e}", path.display())));
                    }
                };
                let reader = match owner {
                    0 => User::lookup(&self.config.pipe_user).ok().flatten(),
                    uid => User::by_uid(uid),
                };
                let Some(reader) = reader else {
                    return self.push(Delivery::Trouble(format!(
                        "{}: no account to read it as",
                        path.display()
                    )));
                };
                let run_as = match owner {
                    0 => RunAs::PipeUser,
                    _ => RunAs::User(reader.clone()),
                };
                (reader, Some(owner), run_as)
            }
        };
        match read_list_as(&reader, path, owner) {
            Ok(Some(targets)) => {
                let read_as = ReadAs::User(reader);
                for t in &targets {
                    self.target(t, depth + 1, &run_as, &read_as);
                }
            }
            Ok(None) => {}
            Err(ListTrouble::NeedsRoot(why)) => self.push(Delivery::NeedsRoot(why)),
            Err(ListTrouble::Unsafe(why)) => self.push(Delivery::Trouble(why)),
        }
    }
}

/// What a user's `.forward` says.
enum Forward {
    /// Forward to these.
    Targets(Vec<Target>),
    /// No usable `.forward` (none, empty, or unsafe: ignored with a
    /// warning, as sendmail and Postfix do): the mailbox.
    None,
    /// Only root's queue run may read it as its user.
    NeedsRoot(String),
}

/// The user's `.forward` targets, read with the user's own rights, when
/// the file exists and is safe: a regular file owned by the user that
/// neither group nor others can write.
fn forward_targets(config: &Config, user: &User) -> Forward {
    let path = user.path(&config.forward_path);
    match read_list_as(user, &path, Some(user.uid)) {
        Ok(Some(targets)) if !targets.is_empty() => Forward::Targets(targets),
        Ok(_) => Forward::None,
        Err(ListTrouble::NeedsRoot(why)) => Forward::NeedsRoot(why),
        Err(ListTrouble::Unsafe(e)) => {
            log::warn!("{e}; delivering to the mailbox of {}", user.name);
            Forward::None
        }
    }
}

/// Why a list file was not read.
enum ListTrouble {
    /// It exists but is unsafe or unreadable (as its reader).
    Unsafe(String),
    /// This runner cannot take the reader's rights.
    NeedsRoot(String),
}

/// Reads a list file with `reader`'s rights only (this thread's
/// filesystem identity borrowed for the read): Ok(None) when it does not
/// exist (for them).
fn read_list_as(
    reader: &User,
    path: &Path,
    owner: Option<u32>,
) -> std::result::Result<Option<Vec<Target>>, ListTrouble> {
    let creds = user::reading_as(reader).map_err(ListTrouble::NeedsRoot)?;
    let read = user::with_fs_identity(creds.as_ref(), || read_list(path, owner)).map_err(|e| {
        ListTrouble::Unsafe(format!(
            "{}: reading as {}: {e}",
            path.display(),
            reader.name
        ))
    })?;
    match read {
        Ok(found) => Ok(found.map(|(targets, _)| targets)),
        Err(why) => Err(ListTrouble::Unsafe(why)),
    }
}

/// Reads a target list file (`.forward`, `:include:`). Ok(None): it does
/// not exist. Err: it exists but is unsafe or unreadable. The uid
/// returned is the file's owner.
fn read_list(
    path: &Path,
    owner: Option<u32>,
) -> std::result::Result<Option<(Vec<Target>, u32)>, String> {
    let shown = path.display();
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{shown}: {e}")),
    };
    let meta = file.metadata().map_err(|e| format!("{shown}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("{shown}: not a regular file, ignored"));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(format!("{shown}: writable by group or others, ignored"));
    }
    // Not even root's: a root runner reading a user's path must not be
    // led (a symlinked directory) into a root-owned file such as
    // /etc/shadow and quote it in warnings.
    if let Some(uid) = owner
        && meta.uid() != uid
    {
        return Err(format!("{shown}: not owned by its user, ignored"));
    }
    let mut text = String::new();
    file.take(MAX_LIST_FILE)
        .read_to_string(&mut text)
        .map_err(|e| format!("{shown}: {e}"))?;
    let (targets, errors) = aliases::parse_list(&text, &shown.to_string());
    if !errors.is_empty() {
        // Counted, never quoted: a list file's content must not reach a
        // log line (nor a bounce) through its errors.
        log::warn!(
            "{shown}: {} entr{} could not be parsed and {} skipped",
            errors.len(),
            if errors.len() == 1 { "y" } else { "ies" },
            if errors.len() == 1 { "was" } else { "were" }
        );
    }
    Ok(Some((targets, meta.uid())))
}

/// The compiled aliases, with a warning when the source is newer (the
/// sysadmin edited it and forgot `newaliases`). None: no aliases at all.
pub fn load(config: &Config) -> Result<Option<Aliases>> {
    let compiled = aliases::load_compiled(&config.aliases)?;
    if compiled.is_some() {
        let modified = |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        if let (Some(source), Some(built)) = (
            modified(&config.aliases),
            modified(&aliases::compiled_path(&config.aliases)),
        ) && source > built
        {
            log::warn!(
                "{} is newer than its compiled form: run newaliases",
                config.aliases.display()
            );
        }
    }
    Ok(compiled)
}

/// Commits a copy of `original` for the expansion's remote addresses
/// (the forwarding of an alias or .forward), `header` (its
/// `Delivered-To:`) on top, through the normal draft/commit path. The
/// sender is `owner-NAME@hostname` when such an alias exists, else the
/// original's.
pub fn forward(
    spool: &Spool,
    config: &Config,
    original: &Envelope,
    expansion: &Expansion,
    header: &[u8],
    data: &mut dyn Read,
    now: SystemTime,
) -> Result<QueueId> {
    let mut draft = spool.begin(now)?;
    let sender = match &expansion.owner {
        Some(name) if !original.sender.is_empty() => format!("owner-{name}@{}", config.hostname),
        _ => original.sender.clone(),
    };
    let envelope = Envelope {
        id: draft.id().clone(),
        arrival: original.arrival,
        sender,
        recipients: expansion.remote.clone(),
        uid: original.uid,
        user: original.user.clone(),
        body_type: original.body_type.clone(),
        dsn_notify: original.dsn_notify.clone(),
        dsn_ret: original.dsn_ret.clone(),
        envid: original.envid.clone(),
        size: 0,
    };
    draft.write_envelope(&envelope)?;
    let out = draft.data();
    out.write_all(header)
        .and_then(|()| io::copy(data, out))
        .and_then(|_| out.flush())
        .map_err(|e| crate::error::Error::io("copying a forwarded message", &e))?;
    Ok(draft.commit()?.id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config {
            hostname: "host.example".into(),
            local_domains: vec!["host.example".into(), "localhost".into()],
            ..Config::default()
        }
    }

    fn aliases(text: &str) -> Aliases {
        aliases::parse(text, "test").unwrap().0
    }

    #[test]
    fn nested_aliases_reach_remote_addresses_once() {
        let a = aliases("root: admins\nadmins: a@x.test, b@x.test, ops\nops: b@x.test, c@y.test\n");
        let e = expand(&config(), &a, "root@host.example");
        assert_eq!(e.remote, ["a@x.test", "b@x.test", "c@y.test"]);
        assert!(e.local.is_empty());
    }

    #[test]
    fn a_loop_ends_at_the_user_and_unknown_names_bounce() {
        let a = aliases("sm-a: sm-b\nsm-b: sm-a, x@x.test\n");
        let e = expand(&config(), &a, "sm-a");
        assert_eq!(e.remote, ["x@x.test"]);
        assert_eq!(e.local, [Delivery::Unknown("sm-a".into())]);
        let e = expand(&config(), &a, "root");
        assert!(
            matches!(&e.local[..], [Delivery::Mailbox(u)] if u.uid == 0),
            "{e:?}"
        );
    }

    #[test]
    fn owner_alias_is_noticed() {
        let a = aliases("list: x@x.test\nowner-list: admin\n");
        assert_eq!(expand(&config(), &a, "list").owner.as_deref(), Some("list"));
    }

    #[test]
    fn pipes_and_files_from_aliases_run_as_pipe_user() {
        let a = aliases("log: /var/log/x, \"|/bin/cat\", \\root\n");
        let e = expand(&config(), &a, "log");
        assert_eq!(e.local.len(), 3);
        assert!(e.local.contains(&Delivery::Pipe {
            command: "/bin/cat".into(),
            run_as: RunAs::PipeUser
        }));
        assert!(e.local.contains(&Delivery::File {
            path: "/var/log/x".into(),
            run_as: RunAs::PipeUser
        }));
    }

    fn me() -> User {
        User::by_uid(nix::unistd::getuid().as_raw()).unwrap()
    }

    fn with_forward(text: &str, mode: u32) -> (tempfile::TempDir, Config) {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(format!("{}.forward", me().name));
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        let config = Config {
            forward_path: format!("{}/%u.forward", dir.path().display()),
            ..config()
        };
        (dir, config)
    }

    #[test]
    fn a_safe_forward_is_followed_and_backslash_keeps_a_copy() {
        let u = me();
        let (_dir, c) = with_forward(
            &format!("# mine\nfar@x.test, \\{}\n\"|/bin/true\"\n", u.name),
            0o644,
        );
        let e = expand(&c, &Aliases::default(), &u.name);
        assert_eq!(e.remote, ["far@x.test"]);
        let run_as = match u.uid {
            0 => RunAs::PipeUser,
            _ => RunAs::User(u.clone()),
        };
        assert_eq!(
            e.local,
            [
                Delivery::Mailbox(u.clone()),
                Delivery::Pipe {
                    command: "/bin/true".into(),
                    run_as
                }
            ]
        );
    }

    #[test]
    fn a_group_writable_forward_is_ignored() {
        let u = me();
        let (_dir, c) = with_forward("far@x.test\n", 0o664);
        let e = expand(&c, &Aliases::default(), &u.name);
        assert!(e.remote.is_empty());
        assert_eq!(e.local, [Delivery::Mailbox(u)]);
    }

    #[test]
    fn a_forward_naming_its_own_user_means_the_mailbox() {
        let u = me();
        let (_dir, c) = with_forward(&format!("{}, far@x.test\n", u.name), 0o600);
        let e = expand(&c, &Aliases::default(), &u.name);
        assert_eq!(e.remote, ["far@x.test"]);
        assert_eq!(e.local, [Delivery::Mailbox(u)]);
    }

    #[test]
    fn include_files_are_read_and_unsafe_ones_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let list = dir.path().join("list");
        std::fs::write(&list, "a@x.test\nb@x.test, c@y.test\n").unwrap();
        std::fs::set_permissions(&list, std::fs::Permissions::from_mode(0o644)).unwrap();
        let a = aliases(&format!("team: :include:{}\n", list.display()));
        let e = expand(&config(), &a, "team");
        assert_eq!(e.remote, ["a@x.test", "b@x.test", "c@y.test"]);
        std::fs::set_permissions(&list, std::fs::Permissions::from_mode(0o666)).unwrap();
        let e = expand(&config(), &a, "team");
        assert!(
            matches!(&e.local[..], [Delivery::Trouble(t)] if t.contains("writable")),
            "{e:?}"
        );
    }

    #[test]
    fn locality_follows_local_domains() {
        let c = config();
        assert!(is_local(&c, "root"));
        assert!(is_local(&c, "root@LOCALHOST"));
        assert!(!is_local(&c, "root@elsewhere.example"));
    }
}
