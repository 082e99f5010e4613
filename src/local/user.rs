//! Who a local delivery acts as, and whether this process may become them.
//!
//! A runner started by an ordinary user (the one `sendmail` forks) can
//! only deliver as that user; a queue run started by root can deliver as
//! anyone, and then always drops to the user in a child process before
//! touching anything the user controls (their home, their Maildir, their
//! commands). Nothing runs commands or writes files as root.

use std::io;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;

use nix::unistd::{Gid, Uid};

/// A local account, from the password database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
}

impl User {
    /// The account called `name`. Ok(None): no such user. Err: the
    /// lookup itself failed (NSS trouble), which must defer, not bounce.
    pub fn lookup(name: &str) -> Result<Option<User>, String> {
        match nix::unistd::User::from_name(name) {
            Ok(found) => Ok(found.map(User::from)),
            Err(e) => Err(format!("looking up user {name}: {e}")),
        }
    }

    /// The account with `uid`, if any.
    pub fn by_uid(uid: u32) -> Option<User> {
        nix::unistd::User::from_uid(Uid::from_raw(uid))
            .ok()
            .flatten()
            .map(User::from)
    }

    /// A per-user path from a template: a leading `~` is the home
    /// directory, `%u` the user name.
    pub fn path(&self, template: &str) -> PathBuf {
        let expanded = template.replace("%u", &self.name);
        match expanded.strip_prefix('~') {
            Some(rest) => {
                let mut home = self.home.as_os_str().to_owned();
                home.push(rest);
                PathBuf::from(home)
            }
            None => PathBuf::from(expanded),
        }
    }
}

impl From<nix::unistd::User> for User {
    fn from(u: nix::unistd::User) -> User {
        User {
            name: u.name,
            uid: u.uid.as_raw(),
            gid: u.gid.as_raw(),
            home: u.dir,
        }
    }
}

/// How this process can act as a given user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Power {
    /// It already is that user.
    Same,
    /// It is root and can switch to the user (in a child).
    Root,
    /// Neither: only a root queue run can deliver this.
    None,
}

/// This process's power over `uid`.
pub fn power_over(uid: u32) -> Power {
    let euid = nix::unistd::geteuid().as_raw();
    if euid == uid {
        Power::Same
    } else if euid == 0 {
        Power::Root
    } else {
        Power::None
    }
}

/// The credentials a child drops to, gathered before the fork (the
/// group list needs the password database, which must not be read
/// between fork and exec).
#[derive(Debug, Clone)]
pub struct Credentials {
    uid: Uid,
    gid: Gid,
    groups: Vec<Gid>,
}

impl Credentials {
    /// `user` with `primary_gid` as its group (the mail group for mbox
    /// delivery, so the mailbox and its dotlock can be created in
    /// /var/mail) and its own supplementary groups.
    pub fn of(user: &User, primary_gid: u32) -> io::Result<Credentials> {
        let name = std::ffi::CString::new(user.name.as_str()).map_err(io::Error::other)?;
        let groups =
            nix::unistd::getgrouplist(&name, Gid::from_raw(user.gid)).map_err(io::Error::from)?;
        Ok(Credentials {
            uid: Uid::from_raw(user.uid),
            gid: Gid::from_raw(primary_gid),
            groups,
        })
    }
}

/// How this process can read a file as `user`: Ok(None) with its own
/// credentials less any set-id group (it is that user), Ok(Some) by
/// switching to theirs (root), Err when it cannot (only root's run can).
pub fn reading_as(user: &User) -> Result<Option<Credentials>, String> {
    match power_over(user.uid) {
        Power::Same => Ok(None),
        Power::Root => Credentials::of(user, user.gid)
            .map(Some)
            .map_err(|e| format!("groups of {}: {e}", user.name)),
        Power::None => Err(format!(
            "reading a file as {} waits for a queue run by root",
            user.name
        )),
    }
}

/// Runs `f` with this thread's filesystem identity — the fsuid, fsgid
/// and supplementary groups the kernel checks when a file is opened —
/// switched to `creds` (None: the real uid and gid, which gives up a
/// setgid group), and switched back afterwards. Linux keeps credentials
/// per thread and the raw system calls change only the calling thread's
/// (glibc's `setgroups` would broadcast to every thread: not used), so
/// the other workers of a queue run are unaffected. Root's file
/// capabilities are dropped by the kernel while the fsuid is not 0.
///
/// For reading what a user controls (`.forward`, `:include:`) with that
/// user's rights only: whatever the file names, the read can reach no
/// more than the user could reach.
pub fn with_fs_identity<T>(creds: Option<&Credentials>, f: impl FnOnce() -> T) -> io::Result<T> {
    // SAFETY: raw credential system calls on integers and on a slice that
    // outlives them; they touch only this thread's credentials.
    unsafe {
        let query = u32::MAX as libc::c_long;
        let old_uid = libc::syscall(libc::SYS_setfsuid, query) as u32;
        let old_gid = libc::syscall(libc::SYS_setfsgid, query) as u32;
        let (uid, gid) = match creds {
            Some(c) => (c.uid.as_raw(), c.gid.as_raw()),
            None => (libc::getuid(), libc::getgid()),
        };
        let old_groups = match creds {
            Some(c) => {
                let old = nix::unistd::getgroups().map_err(io::Error::from)?;
                let list: Vec<libc::gid_t> = c.groups.iter().map(|g| g.as_raw()).collect();
                if libc::syscall(libc::SYS_setgroups, list.len(), list.as_ptr()) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Some(old)
            }
            None => None,
        };
        libc::syscall(libc::SYS_setfsgid, gid as libc::c_long);
        libc::syscall(libc::SYS_setfsuid, uid as libc::c_long);
        let now_uid = libc::syscall(libc::SYS_setfsuid, query) as u32;
        let now_gid = libc::syscall(libc::SYS_setfsgid, query) as u32;
        let result = match (now_uid, now_gid) == (uid, gid) {
            true => Ok(f()),
            false => Err(io::Error::from_raw_os_error(libc::EPERM)),
        };
        libc::syscall(libc::SYS_setfsuid, old_uid as libc::c_long);
        libc::syscall(libc::SYS_setfsgid, old_gid as libc::c_long);
        let restored = libc::syscall(libc::SYS_setfsuid, query) as u32 == old_uid
            && libc::syscall(libc::SYS_setfsgid, query) as u32 == old_gid
            && old_groups.is_none_or(|old| {
                let list: Vec<libc::gid_t> = old.iter().map(|g| g.as_raw()).collect();
                libc::syscall(libc::SYS_setgroups, list.len(), list.as_ptr()) == 0
            });
        if !restored {
            // A worker left with someone else's identity must not go on.
            libc::abort();
        }
        result
    }
}

/// Makes `command` run as `creds` (from root), or — without credentials —
/// as this process's real user and group, giving up a setgid group: what
/// a child runs must never hold the spool's group.
pub fn run_as(command: &mut Command, creds: Option<Credentials>) {
    // SAFETY: the closure makes only async-signal-safe system calls on
    // data prepared before the fork.
    unsafe {
        command.pre_exec(move || {
            match &creds {
                Some(c) => {
                    nix::unistd::setgroups(&c.groups)?;
                    nix::unistd::setresgid(c.gid, c.gid, c.gid)?;
                    nix::unistd::setresuid(c.uid, c.uid, c.uid)?;
                    if nix::unistd::geteuid() != c.uid || nix::unistd::getegid() != c.gid {
                        return Err(io::Error::from_raw_os_error(libc::EPERM));
                    }
                }
                None => {
                    let gid = nix::unistd::getgid();
                    nix::unistd::setresgid(gid, gid, gid)?;
                }
            }
            // Its own session: a time limit kills the whole group.
            nix::unistd::setsid()?;
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_expand_home_and_name() {
        let u = User {
            name: "alice".into(),
            uid: 1000,
            gid: 1000,
            home: "/home/alice".into(),
        };
        assert_eq!(u.path("~/Maildir/"), PathBuf::from("/home/alice/Maildir/"));
        assert_eq!(
            u.path("/var/mail/%u.d/"),
            PathBuf::from("/var/mail/alice.d/")
        );
    }

    #[test]
    fn a_borrowed_identity_applies_to_the_thread_and_is_given_back() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "x").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        // As ourselves nothing changes.
        let own = with_fs_identity(None, || std::fs::read(&secret).is_ok()).unwrap();
        assert!(own);
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        // As nobody, root's 0600 file is out of reach; afterwards it is
        // readable again.
        let nobody = User::lookup("nobody").unwrap().unwrap();
        let creds = Credentials::of(&nobody, nobody.gid).unwrap();
        let groups_before = nix::unistd::getgroups().unwrap();
        let denied = with_fs_identity(Some(&creds), || std::fs::read(&secret)).unwrap();
        assert_eq!(denied.unwrap_err().kind(), io::ErrorKind::PermissionDenied);
        assert!(std::fs::read(&secret).is_ok());
        assert_eq!(nix::unistd::getgroups().unwrap(), groups_before);
    }

    #[test]
    fn root_is_found_and_power_is_judged() {
        let root = User::lookup("root").unwrap().unwrap();
        assert_eq!(root.uid, 0);
        assert_eq!(User::lookup("no-such-user-spoolmail").unwrap(), None);
        let me = nix::unistd::geteuid().as_raw();
        assert_eq!(power_over(me), Power::Same);
    }
}
