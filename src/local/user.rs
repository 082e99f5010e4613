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
    fn root_is_found_and_power_is_judged() {
        let root = User::lookup("root").unwrap().unwrap();
        assert_eq!(root.uid, 0);
        assert_eq!(User::lookup("no-such-user-spoolmail").unwrap(), None);
        let me = nix::unistd::geteuid().as_raw();
        assert_eq!(power_over(me), Power::Same);
    }
}
