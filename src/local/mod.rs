//! Local recipients: what an address on this host expands to — the
//! compiled `/etc/aliases`, `~/.forward`, `:include:` files — and the
//! pieces that deliver it (mailboxes, Maildirs, files, commands), each as
//! the user it belongs to.
//!
//! An expansion's addresses elsewhere are forwarded the way Postfix's
//! local(8) does it: a new message with those recipients is committed
//! to the spool (sender `owner-NAME` when that alias exists) — one per
//! owner of the files that named them, with that owner's uid, held to
//! their limits ([`forward`]), and carrying the chain of aliases and
//! `.forward`s that made it, none of which expands it again.
//!
//! The files are hostile (a user writes their `.forward` and what it
//! includes): each is read at most once per expansion, by device and
//! inode, and an expansion is bounded as a whole ([`Budget`]); past the
//! bound it is abandoned, never delivered in part.

pub mod aliases;
pub mod loops;
pub mod maildir;
pub mod mbox;
pub mod pipe;
pub mod store;
pub mod trace;
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
use trace::What;

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

/// Whom a forwarded copy belongs to: it is listed to them, theirs to
/// act on, and counted against their limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopyOwner {
    /// Named by /etc/aliases (or a root-owned include it names): the
    /// original's sender, as before the expansion.
    Sender,
    /// Named by this user's `.forward` (or what it includes, or what an
    /// alias reached from it names), or by an `:include:` they own that
    /// /etc/aliases names.
    User(User),
}

/// Addresses elsewhere that one owner's files named: one copy each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forwarding {
    /// Whose copy it is.
    pub owner: CopyOwner,
    /// Its recipients, each once.
    pub addresses: Vec<String>,
}

/// What expanding one local recipient gave.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Expansion {
    /// Addresses in other domains, to forward to, by owner.
    pub remote: Vec<Forwarding>,
    /// Local deliveries, each once.
    pub local: Vec<Delivery>,
    /// The alias name whose `owner-` alias is the error sender.
    pub owner: Option<String>,
    /// The message's chain and every alias and `.forward` (`alias:NAME`,
    /// `user:NAME`) on the way to an address elsewhere: the copies carry
    /// it, and none of them is expanded again for them.
    pub chain: Vec<String>,
    /// Some(why): the expansion passed its bound ([`Budget`]) and was
    /// abandoned as a whole.
    pub over_limit: Option<String>,
    /// What the walk did, in order (what `sendmail -bv` shows; delivery
    /// acts on the fields above only).
    pub steps: Vec<trace::Step>,
}

impl Expansion {
    /// Whether the expansion names nothing to deliver to, here or
    /// elsewhere (an alias of a missing `:include:`, say): the recipient
    /// fails (5.1.1).
    pub fn delivers_nothing(&self) -> bool {
        self.remote.is_empty() && self.local.is_empty()
    }

    /// Every address elsewhere, whoever's.
    pub fn remote_addresses(&self) -> impl Iterator<Item = &String> {
        self.remote.iter().flat_map(|f| f.addresses.iter())
    }
}

/// Most entries a copy's chain keeps (each at most a short name).
const MAX_CHAIN: usize = 1000;

/// The work one recipient's expansion may do (hostile input: a
/// `.forward` and its includes are the user's to write): targets reached
/// (repeats counted), list files read, lines read. Each list file is
/// read at most once anyway (by device and inode), whatever it is called.
#[derive(Debug, Clone, Copy)]
struct Budget {
    targets: usize,
    files: usize,
    lines: usize,
}

impl Budget {
    fn of(config: &Config) -> Budget {
        let limit = config.expansion_limit.max(1);
        Budget {
            targets: limit,
            files: (limit / 10).max(1),
            lines: limit.saturating_mul(10),
        }
    }
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

/// Expands the local recipient `address` of a message that carries no
/// chain: see [`expand_in`].
pub fn expand(config: &Config, aliases: &Aliases, address: &str) -> Expansion {
    expand_in(config, aliases, address, &[])
}

/// Expands the local recipient `address`: aliases recursively (each name
/// at most once: an alias that comes back to itself means the user),
/// then users' `.forward` files, then `:include:` files. An alias or
/// `.forward` in `chain` (the message is a copy it made) counts as seen
/// already: it is not expanded again (the alias means the user, the
/// `.forward` the mailbox). The walk stops at the work bound: then
/// `over_limit` says why and nothing of it may be delivered.
pub fn expand_in(config: &Config, aliases: &Aliases, address: &str, chain: &[String]) -> Expansion {
    let name = local_part(address);
    let mut walker = Walker {
        config,
        aliases,
        seen_aliases: BTreeSet::new(),
        seen_forwards: BTreeSet::new(),
        seen_files: BTreeSet::new(),
        budget: Budget::of(config),
        path: Vec::new(),
        too_deep: 0,
        out: Expansion {
            chain: chain.to_vec(),
            ..Expansion::default()
        },
    };
    for entry in chain {
        if let Some(alias) = entry.strip_prefix("alias:") {
            walker.seen_aliases.insert(alias.to_string());
        } else if let Some(user) = entry.strip_prefix("user:") {
            walker.seen_forwards.insert(user.to_string());
        }
    }
    walker.name(&name, 0, &CopyOwner::Sender);
    if walker.too_deep > 0 && walker.out.over_limit.is_none() {
        // One line for the whole walk, however many includes it skipped.
        log::warn!(
            "{address}: {} :include: file(s) nested more than {MAX_DEPTH} deep skipped",
            walker.too_deep
        );
    }
    if walker.out.over_limit.is_some() {
        // Abandoned as a whole: nothing of a half walk is delivered.
        walker.out.remote.clear();
        walker.out.local.clear();
        walker.out.steps.clear();
    }
    walker.out.chain.truncate(MAX_CHAIN);
    walker.out
}

struct Walker<'a> {
    config: &'a Config,
    aliases: &'a Aliases,
    seen_aliases: BTreeSet<String>,
    seen_forwards: BTreeSet<String>,
    /// List files read, by (device, inode): each at most once.
    seen_files: BTreeSet<(u64, u64)>,
    /// What is left of the work bound.
    budget: Budget,
    /// The aliases and `.forward`s the walk is inside, outermost first.
    path: Vec<String>,
    /// `:include:`s skipped for depth (logged once at the end).
    too_deep: usize,
    out: Expansion,
}

impl Walker<'_> {
    /// A local delivery reached at `depth`, kept once.
    fn push(&mut self, d: Delivery, depth: usize) {
        if !self.out.local.contains(&d) {
            self.record(depth, What::Local(d.clone()));
            self.out.local.push(d);
        }
    }

    fn record(&mut self, depth: usize, what: What) {
        self.out.steps.push(trace::Step { depth, what });
    }

    /// Whether the walk must stop: the bound was passed earlier, or is
    /// now by one more target.
    fn spent(&mut self) -> bool {
        if self.out.over_limit.is_some() {
            return true;
        }
        match self.budget.targets.checked_sub(1) {
            Some(left) => {
                self.budget.targets = left;
                false
            }
            None => self.stop(format!(
                "more than expansion_limit ({}) targets",
                self.config.expansion_limit
            )),
        }
    }

    fn stop(&mut self, why: String) -> bool {
        self.out.over_limit.get_or_insert(why);
        true
    }

    /// Whether the budget allows one more list file; stops the walk
    /// when it does not.
    fn may_read_a_file(&mut self) -> bool {
        if self.budget.files == 0 {
            self.stop(format!(
                "more than {} list files",
                Budget::of(self.config).files
            ));
            return false;
        }
        true
    }

    /// Counts a list file just read (`file`, its device and inode, is
    /// not read again in this walk) and its `lines`. Past the budget's
    /// lines the walk stops (false) — unless `is_forward`: a `.forward`
    /// is where the walk starts, and its lines only use up what is left.
    fn charge_file(&mut self, file: (u64, u64), lines: usize, is_forward: bool) -> bool {
        self.seen_files.insert(file);
        self.budget.files -= 1;
        if lines > self.budget.lines && !is_forward {
            self.stop(format!(
                "more than {} lines of list files",
                Budget::of(self.config).lines
            ));
            return false;
        }
        self.budget.lines = self.budget.lines.saturating_sub(lines);
        true
    }

    /// An address elsewhere, named by a file of `owner`'s: the path that
    /// led to it joins the chain its copy carries.
    fn remote(&mut self, address: &str, owner: &CopyOwner, depth: usize) {
        if self.out.remote_addresses().any(|a| a == address) {
            return;
        }
        self.record(depth, What::Remote(address.to_string()));
        for entry in &self.path {
            if !self.out.chain.contains(entry) {
                self.out.chain.push(entry.clone());
            }
        }
        match self.out.remote.iter_mut().find(|f| &f.owner == owner) {
            Some(f) => f.addresses.push(address.to_string()),
            None => self.out.remote.push(Forwarding {
                owner: owner.clone(),
                addresses: vec![address.to_string()],
            }),
        }
    }

    /// A local name: an alias, else a user (and their .forward).
    fn name(&mut self, name: &str, depth: usize, owner: &CopyOwner) {
        if self.spent() {
            return;
        }
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
                self.path.push(chain_entry("alias", name));
                let written = trace::written_all(targets);
                self.record(
                    depth,
                    What::Alias {
                        name: name.to_string(),
                        targets: written,
                    },
                );
                for t in targets {
                    self.target(t, depth + 1, &RunAs::PipeUser, &ReadAs::Owner, owner);
                }
                self.path.pop();
            }
            _ => self.user(name, depth, true, owner),
        }
    }

    fn user(&mut self, name: &str, depth: usize, follow_forward: bool, owner: &CopyOwner) {
        let user = match User::lookup(name) {
            Ok(Some(u)) => u,
            Ok(None) => return self.push(Delivery::Unknown(name.to_string()), depth),
            Err(e) => return self.push(Delivery::Trouble(e), depth),
        };
        if follow_forward && depth < MAX_DEPTH && self.seen_forwards.insert(user.name.clone()) {
            match self.forward_targets(&user) {
                Forward::Targets(targets) => {
                    // Root's commands and files run as pipe_user, never as root.
                    let run_as = match user.uid {
                        0 => RunAs::PipeUser,
                        _ => RunAs::User(user.clone()),
                    };
                    // The first user's file on the way owns the copies.
                    let owner = match owner {
                        CopyOwner::Sender => CopyOwner::User(user.clone()),
                        mine => mine.clone(),
                    };
                    self.path.push(chain_entry("user", &user.name));
                    let written = trace::written_all(&targets);
                    self.record(
                        depth,
                        What::Forward {
                            user: user.clone(),
                            targets: written,
                        },
                    );
                    let read_as = ReadAs::User(user);
                    for t in &targets {
                        self.target(t, depth + 1, &run_as, &read_as, &owner);
                    }
                    self.path.pop();
                    return;
                }
                Forward::NeedsRoot(why) => {
                    self.record(depth, What::Unread { user, path: None });
                    return self.push(Delivery::NeedsRoot(why), depth);
                }
                Forward::None => {}
            }
        }
        self.push(Delivery::Mailbox(user), depth);
    }

    fn target(
        &mut self,
        target: &Target,
        depth: usize,
        run_as: &RunAs,
        read_as: &ReadAs,
        owner: &CopyOwner,
    ) {
        if self.out.over_limit.is_some() {
            return;
        }
        match target {
            Target::Address(a) if is_local(self.config, a) => {
                self.name(&local_part(a), depth, owner)
            }
            _ if self.spent() => {}
            Target::Address(a) => self.remote(a, owner, depth),
            Target::Local(name) => self.user(&name.to_ascii_lowercase(), depth, false, owner),
            Target::Pipe(command) => self.push(
                Delivery::Pipe {
                    command: command.clone(),
                    run_as: run_as.clone(),
                },
                depth,
            ),
            Target::File(path) => self.push(
                Delivery::File {
                    path: path.clone(),
                    run_as: run_as.clone(),
                },
                depth,
            ),
            Target::Include(path) if depth < MAX_DEPTH => {
                self.include(path, depth, run_as, read_as, owner)
            }
            Target::Include(_) => self.too_deep += 1,
        }
    }
}

/// `KIND:NAME` for a chain, or the path's own marker when the name
/// cannot be one word (a quoted alias name with spaces): such an entry
/// matches nothing, and the hop count still ends a loop through it.
fn chain_entry(kind: &str, name: &str) -> String {
    match name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        true => format!("{kind}:?"),
        false => format!("{kind}:{name}"),
    }
}

impl Walker<'_> {
    /// An `:include:` file: read with the rights `read_as` says, its
    /// targets followed — in a user's context as that user, from
    /// /etc/aliases as the file's owner (pipe_user for root's files).
    fn include(
        &mut self,
        path: &Path,
        depth: usize,
        run_as: &RunAs,
        read_as: &ReadAs,
        owner: &CopyOwner,
    ) {
        let (reader, file_owner, run_as, owner) = match read_as {
            ReadAs::User(user) => (user.clone(), None, run_as.clone(), owner.clone()),
            ReadAs::Owner => {
                let file_owner = match std::fs::symlink_metadata(path) {
                    Ok(meta) => meta.uid(),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return,
                    Err(e) => {
                        return self
                            .push(Delivery::Trouble(format!("{}: {e}", path.display())), depth);
                    }
                };
                let reader = match file_owner {
                    0 => User::lookup(&self.config.pipe_user).ok().flatten(),
                    uid => User::by_uid(uid),
                };
                let Some(reader) = reader else {
                    return self.push(
                        Delivery::Trouble(format!("{}: no account to read it as", path.display())),
                        depth,
                    );
                };
                let run_as = match file_owner {
                    0 => RunAs::PipeUser,
                    _ => RunAs::User(reader.clone()),
                };
                // A list a user keeps, named by /etc/aliases, is theirs
                // to answer for; root's stays the sender's.
                let owner = match (owner, file_owner) {
                    (CopyOwner::Sender, uid) if uid != 0 => CopyOwner::User(reader.clone()),
                    (mine, _) => mine.clone(),
                };
                (reader, Some(file_owner), run_as, owner)
            }
        };
        if !self.may_read_a_file() {
            return;
        }
        match read_list_as(&reader, path, file_owner, &self.seen_files) {
            Ok(Listed::Read {
                targets,
                file,
                lines,
            }) => {
                if !self.charge_file(file, lines, false) {
                    return;
                }
                let written = trace::written_all(&targets);
                self.record(
                    depth,
                    What::Include {
                        path: path.to_path_buf(),
                        reader: reader.clone(),
                        targets: written,
                    },
                );
                let read_as = ReadAs::User(reader);
                for t in &targets {
                    self.target(t, depth + 1, &run_as, &read_as, &owner);
                }
            }
            Ok(Listed::Seen | Listed::Missing) => {}
            Err(ListTrouble::NeedsRoot(why)) => {
                let unread = What::Unread {
                    user: reader,
                    path: Some(path.to_path_buf()),
                };
                self.record(depth, unread);
                self.push(Delivery::NeedsRoot(why), depth);
            }
            Err(ListTrouble::Unsafe(why)) => self.push(Delivery::Trouble(why), depth),
        }
    }

    /// The user's `.forward` targets, read with the user's own rights,
    /// when the file exists and is safe: a regular file owned by the user
    /// that neither group nor others can write. It counts as a list file
    /// read, like an include.
    fn forward_targets(&mut self, user: &User) -> Forward {
        let path = user.path(&self.config.forward_path);
        if !self.may_read_a_file() {
            return Forward::None;
        }
        match read_list_as(user, &path, Some(user.uid), &self.seen_files) {
            Ok(Listed::Read {
                targets,
                file,
                lines,
            }) => match self.charge_file(file, lines, true) && !targets.is_empty() {
                true => Forward::Targets(targets),
                false => Forward::None,
            },
            Ok(Listed::Seen | Listed::Missing) => Forward::None,
            Err(ListTrouble::NeedsRoot(why)) => Forward::NeedsRoot(why),
            Err(ListTrouble::Unsafe(e)) => {
                log::warn!("{e}; delivering to the mailbox of {}", user.name);
                Forward::None
            }
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

/// Why a list file was not read.
enum ListTrouble {
    /// It exists but is unsafe or unreadable (as its reader).
    Unsafe(String),
    /// This runner cannot take the reader's rights.
    NeedsRoot(String),
}

/// A list file, as far as it was read.
enum Listed {
    /// Read: its targets, its (device, inode), its line count.
    Read {
        targets: Vec<Target>,
        file: (u64, u64),
        lines: usize,
    },
    /// Read already in this expansion (under this name or another):
    /// not again.
    Seen,
    /// It does not exist (for its reader).
    Missing,
}

/// Reads a list file with `reader`'s rights only (this thread's
/// filesystem identity borrowed for the read), unless a file in `seen`.
fn read_list_as(
    reader: &User,
    path: &Path,
    owner: Option<u32>,
    seen: &BTreeSet<(u64, u64)>,
) -> std::result::Result<Listed, ListTrouble> {
    let creds = user::reading_as(reader).map_err(ListTrouble::NeedsRoot)?;
    let read =
        user::with_fs_identity(creds.as_ref(), || read_list(path, owner, seen)).map_err(|e| {
            ListTrouble::Unsafe(format!(
                "{}: reading as {}: {e}",
                path.display(),
                reader.name
            ))
        })?;
    read.map_err(ListTrouble::Unsafe)
}

/// Reads a target list file (`.forward`, `:include:`), unless it is one
/// in `seen` (checked on the open file, before a byte is read). Err: it
/// exists but is unsafe or unreadable.
fn read_list(
    path: &Path,
    owner: Option<u32>,
    seen: &BTreeSet<(u64, u64)>,
) -> std::result::Result<Listed, String> {
    let shown = path.display();
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Listed::Missing),
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
    let id = (meta.dev(), meta.ino());
    if seen.contains(&id) {
        return Ok(Listed::Seen);
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
    Ok(Listed::Read {
        targets,
        file: id,
        lines: text.lines().count(),
    })
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

/// What became of one forwarded copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Forwarded {
    /// Committed to the queue.
    Queued(QueueId),
    /// Committed on hold: past its owner's hourly limit (why), it waits
    /// for the administrator (`mailq --release` or `--delete`), as a
    /// maildrop file past it does.
    Held(QueueId, String),
    /// Not made: more addresses than `max_recipients` (why).
    Refused(String),
}

/// Commits a copy of `original` for `copy`'s addresses (the forwarding
/// of an alias or .forward), `header` (its `Delivered-To:`) on top,
/// through the normal draft/commit path. The sender is
/// `owner-NAME@hostname` when the expansion found such an alias, else
/// the original's. The copy carries `chain` (no alias or `.forward` in
/// it is expanded for it again) and belongs to `copy.owner`: a user's
/// copy is held to `max_recipients` (refused past it: a submission
/// would be) and counted against their hourly limits (held past them).
#[allow(clippy::too_many_arguments)]
pub fn forward(
    spool: &Spool,
    config: &Config,
    original: &Envelope,
    alias_owner: Option<&str>,
    copy: &Forwarding,
    chain: &[String],
    header: &[u8],
    data: &mut dyn Read,
    now: SystemTime,
) -> Result<Forwarded> {
    let (uid, user) = match &copy.owner {
        CopyOwner::Sender => (original.uid, original.user.clone()),
        CopyOwner::User(u) => (u.uid, u.name.clone()),
    };
    let counted = matches!(copy.owner, CopyOwner::User(_)) && uid != 0;
    if counted && copy.addresses.len() > config.max_recipients {
        // How many is the owner's business: the sender learns the limit.
        return Ok(Forwarded::Refused(format!(
            "the forwarding list of {user} names more addresses than max_recipients ({}) allows",
            config.max_recipients
        )));
    }
    let mut draft = spool.begin(now)?;
    let sender = match alias_owner {
        Some(name) if !original.sender.is_empty() => format!("owner-{name}@{}", config.hostname),
        _ => original.sender.clone(),
    };
    let envelope = Envelope {
        id: draft.id().clone(),
        arrival: original.arrival,
        sender,
        recipients: copy.addresses.clone(),
        uid,
        user: user.clone(),
        body_type: original.body_type.clone(),
        dsn_notify: original.dsn_notify.clone(),
        dsn_ret: original.dsn_ret.clone(),
        envid: original.envid.clone(),
        chain: chain.to_vec(),
        size: 0,
    };
    let over_limit = match counted {
        true => crate::accept::ratelimit::admit(
            config,
            &spool.submission_counters(),
            uid,
            &user,
            copy.addresses.len(),
            crate::clock::unix_seconds(now),
        )
        .err(),
        false => None,
    };
    if over_limit.is_some() {
        // Held before it is visible in queue/: no runner sees it unheld.
        let mut state = crate::spool::DeliveryState::initial(&envelope);
        state.held = true;
        spool.write_state(draft.id(), &state)?;
    }
    draft.write_envelope(&envelope)?;
    let out = draft.data();
    out.write_all(header)
        .and_then(|()| io::copy(data, out))
        .and_then(|_| out.flush())
        .map_err(|e| crate::error::Error::io("copying a forwarded message", &e))?;
    let id = draft.commit()?.id;
    Ok(match over_limit {
        None => Forwarded::Queued(id),
        Some(why) => {
            log::warn!(
                "{id}: held: {}; `mailq --release {id}` lets it go",
                why.message()
            );
            Forwarded::Held(id, why.message().to_string())
        }
    })
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

    fn remote(e: &Expansion) -> Vec<&str> {
        e.remote_addresses().map(String::as_str).collect()
    }

    #[test]
    fn nested_aliases_reach_remote_addresses_once() {
        let a = aliases("root: admins\nadmins: a@x.test, b@x.test, ops\nops: b@x.test, c@y.test\n");
        let e = expand(&config(), &a, "root@host.example");
        assert_eq!(remote(&e), ["a@x.test", "b@x.test", "c@y.test"]);
        assert!(e.local.is_empty());
    }

    #[test]
    fn a_loop_ends_at_the_user_and_unknown_names_bounce() {
        let a = aliases("sm-a: sm-b\nsm-b: sm-a, x@x.test\n");
        let e = expand(&config(), &a, "sm-a");
        assert_eq!(remote(&e), ["x@x.test"]);
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
        assert_eq!(remote(&e), ["far@x.test"]);
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
        assert_eq!(remote(&e), ["far@x.test"]);
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
        assert_eq!(remote(&e), ["a@x.test", "b@x.test", "c@y.test"]);
        std::fs::set_permissions(&list, std::fs::Permissions::from_mode(0o666)).unwrap();
        let e = expand(&config(), &a, "team");
        assert!(
            matches!(&e.local[..], [Delivery::Trouble(t)] if t.contains("writable")),
            "{e:?}"
        );
    }

    /// A list file at `dir/name`, mode 0600.
    fn list_file(dir: &Path, name: &str, text: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        path
    }

    #[test]
    fn a_list_file_is_read_once_whatever_it_is_called() {
        let u = me();
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        // Five spellings of itself: 5^9 reads if each were followed.
        let spellings: Vec<String> = (0..5)
            .map(|n| format!(":include:{d}/{}inc", "./".repeat(n)))
            .collect();
        list_file(
            dir.path(),
            "inc",
            &format!("{}\nfar@x.test\n", spellings.join(", ")),
        );
        let (_f, c) = with_forward(&spellings[1], 0o600);
        let e = expand(&c, &Aliases::default(), &u.name);
        assert_eq!(e.over_limit, None);
        assert_eq!(remote(&e), ["far@x.test"]);
    }

    #[test]
    fn the_work_bound_abandons_the_whole_expansion() {
        let u = me();
        let many: Vec<String> = (0..30).map(|n| format!("r{n}@x.test")).collect();
        let (_f, c) = with_forward(&format!("\\{}, {}", u.name, many.join(", ")), 0o600);
        let c = Config {
            expansion_limit: 20,
            ..c
        };
        let e = expand(&c, &Aliases::default(), &u.name);
        assert!(e.over_limit.unwrap().contains("expansion_limit (20)"));
        assert!(e.remote.is_empty() && e.local.is_empty(), "nothing of it");
        // Files: a tenth of the limit (2), the .forward being one.
        let dir = tempfile::tempdir().unwrap();
        let includes: Vec<String> = (0..3)
            .map(|n| {
                let p = list_file(dir.path(), &format!("l{n}"), &format!("l{n}@x.test"));
                format!(":include:{}", p.display())
            })
            .collect();
        let (_f, c) = with_forward(&includes.join("\n"), 0o600);
        let c = Config {
            expansion_limit: 20,
            ..c
        };
        let e = expand(&c, &Aliases::default(), &u.name);
        assert!(e.over_limit.unwrap().contains("list files"));
        // Lines: ten times the limit.
        let (_f, c) = with_forward(&format!("a@x.test\n{}", "#\n".repeat(300)), 0o600);
        let c = Config {
            expansion_limit: 20,
            ..c
        };
        let e = expand(&c, &Aliases::default(), &u.name);
        assert!(e.over_limit.is_none(), "a .forward's own lines are read");
        let dir = tempfile::tempdir().unwrap();
        let long = list_file(dir.path(), "long", &"#\n".repeat(300));
        let (_f, c) = with_forward(&format!(":include:{}", long.display()), 0o600);
        let c = Config {
            expansion_limit: 20,
            ..c
        };
        let e = expand(&c, &Aliases::default(), &u.name);
        assert!(e.over_limit.unwrap().contains("lines"));
    }

    #[test]
    fn copies_belong_to_the_forwards_owner_and_carry_the_chain() {
        let u = me();
        let (_f, c) = with_forward("far@x.test\n", 0o600);
        let a = aliases(&format!("sm-list: near@y.test, {}\n", u.name));
        let e = expand(&c, &a, "sm-list");
        assert_eq!(
            e.remote,
            [
                Forwarding {
                    owner: CopyOwner::Sender,
                    addresses: vec!["near@y.test".into()],
                },
                Forwarding {
                    owner: CopyOwner::User(u.clone()),
                    addresses: vec!["far@x.test".into()],
                }
            ]
        );
        assert_eq!(e.chain, ["alias:sm-list", &format!("user:{}", u.name)]);
    }

    #[test]
    fn a_copy_is_never_expanded_again_by_what_made_it() {
        let u = me();
        let (_f, c) = with_forward("far@x.test\n", 0o600);
        let chain = [format!("user:{}", u.name)];
        let e = expand_in(&c, &Aliases::default(), &u.name, &chain);
        assert!(e.remote.is_empty());
        assert_eq!(e.local, [Delivery::Mailbox(u.clone())]);
        let a = aliases("sm-list: far@x.test\n");
        let e = expand_in(&c, &a, "sm-list", &["alias:sm-list".to_string()]);
        assert!(e.remote.is_empty(), "the alias means the user now");
        assert_eq!(e.local, [Delivery::Unknown("sm-list".into())]);
    }

    #[test]
    fn a_users_copy_is_held_to_their_limits_and_carries_uid_and_chain() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(&dir.path().join("spool")).unwrap();
        let c = Config {
            max_recipients: 3,
            max_recipients_per_hour: 4,
            ..config()
        };
        let owner = User {
            name: "sm-fwd".into(),
            uid: 4242,
            gid: 4242,
            home: "/nonexistent".into(),
        };
        let original = Envelope {
            id: QueueId::generate(SystemTime::now()),
            arrival: 1_700_000_000,
            sender: "s@x.test".into(),
            recipients: vec!["sm-fwd".into()],
            uid: 1000,
            user: "sender".into(),
            body_type: None,
            dsn_notify: None,
            dsn_ret: None,
            envid: None,
            chain: Vec::new(),
            size: 0,
        };
        let copy = |n: usize| Forwarding {
            owner: CopyOwner::User(owner.clone()),
            addresses: (0..n).map(|i| format!("a{i}@y.test")).collect(),
        };
        let chain = ["user:sm-fwd".to_string()];
        let now = SystemTime::now();
        let forward = |f: &Forwarding| {
            let mut data = &b"Subject: s\n\nbody\n"[..];
            forward(&spool, &c, &original, None, f, &chain, b"", &mut data, now).unwrap()
        };
        assert!(
            matches!(forward(&copy(4)), Forwarded::Refused(why) if why.contains("max_recipients"))
        );
        assert!(spool.queued_ids().unwrap().is_empty(), "nothing made");
        let Forwarded::Queued(id) = forward(&copy(3)) else {
            panic!("within both limits")
        };
        let env = spool.read_envelope(&id).unwrap();
        assert_eq!((env.uid, env.user.as_str()), (4242, "sm-fwd"));
        assert_eq!(env.chain, chain);
        // 3 of 4 this hour: 2 more are past it, queued on hold.
        let Forwarded::Held(id, _) = forward(&copy(2)) else {
            panic!("past the hourly limit")
        };
        assert!(spool.read_state(&id).unwrap().unwrap().held);
        // The sender's own (an alias's) copies are neither held nor counted.
        let theirs = Forwarding {
            owner: CopyOwner::Sender,
            addresses: (0..5).map(|i| format!("b{i}@y.test")).collect(),
        };
        let Forwarded::Queued(id) = forward(&theirs) else {
            panic!("an alias's copy")
        };
        assert_eq!(spool.read_envelope(&id).unwrap().uid, 1000);
    }

    #[test]
    fn chain_entries_are_single_words() {
        assert_eq!(chain_entry("alias", "staff"), "alias:staff");
        assert_eq!(chain_entry("alias", "two words"), "alias:?");
        assert_eq!(chain_entry("user", ""), "user:?");
    }

    #[test]
    fn locality_follows_local_domains() {
        let c = config();
        assert!(is_local(&c, "root"));
        assert!(is_local(&c, "root@LOCALHOST"));
        assert!(!is_local(&c, "root@elsewhere.example"));
    }
}
