//! Running a `|command` delivery: `/bin/sh -c COMMAND` as the user it
//! belongs to, the message on stdin, a clean environment (SENDER,
//! RECIPIENT, USER, HOME, …: never the caller's), stdout and stderr kept
//! (the start of it) for the bounce, and a time limit after which the
//! command's whole process group is killed.

use std::io::{self, Read, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use super::user::{self, Credentials, User};

/// This much of a command's output goes into logs and bounces.
const OUTPUT_KEPT: usize = 2048;

/// What to run.
pub struct Job<'a> {
    pub command: &'a str,
    /// Whom it runs as (home directory, environment).
    pub user: &'a User,
    /// Credentials to switch to (a root runner), or None to run as this
    /// process's real user.
    pub creds: Option<Credentials>,
    pub sender: &'a str,
    pub recipient: &'a str,
    pub timeout: Duration,
}

/// How the command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// It exited with this status.
    Exited(i32, String),
    /// A signal killed it.
    Killed(i32, String),
    /// It ran past the time limit and was killed.
    TimedOut(String),
}

/// Runs `job` with `header` then `message` on its stdin. Err: it could
/// not be started at all.
pub fn run(job: &Job, header: &[u8], message: &mut (dyn Read + Send)) -> io::Result<Ended> {
    let (output_reader, output_writer) = io::pipe()?;
    let mut command = Command::new("/bin/sh");
    command
        .arg("-c")
        .arg(job.command)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("SHELL", "/bin/sh")
        .env("HOME", &job.user.home)
        .env("USER", &job.user.name)
        .env("LOGNAME", &job.user.name)
        .env("SENDER", job.sender)
        .env("RECIPIENT", job.recipient)
        .current_dir(if job.user.home.is_dir() {
            job.user.home.as_path()
        } else {
            std::path::Path::new("/")
        })
        .stdin(Stdio::piped())
        .stdout(output_writer.try_clone()?)
        .stderr(output_writer);
    user::run_as(&mut command, job.creds.clone());
    let mut child = command.spawn()?;
    // Our copies of the write end must go, or reading never ends.
    drop(command);
    let pid = child.id() as i32;
    let output = std::thread::spawn(move || {
        let mut kept = Vec::new();
        let _ = output_reader
            .take(OUTPUT_KEPT as u64)
            .read_to_end(&mut kept);
        String::from_utf8_lossy(&kept).trim().to_string()
    });
    let (done_tx, done_rx) = mpsc::channel();
    let mut stdin = child.stdin.take();
    let waiter = std::thread::spawn(move || {
        let status = child.wait();
        let _ = done_tx.send(());
        status
    });
    if let Some(pipe) = stdin.as_mut() {
        // A command that does not read its input is not an error (EPIPE).
        let _ = pipe.write_all(header).and_then(|()| {
            io::copy(message, pipe)?;
            pipe.flush()
        });
    }
    drop(stdin);
    let timed_out = done_rx.recv_timeout(job.timeout).is_err();
    if timed_out {
        // SAFETY: kill(2) on the command's own process group (setsid).
        unsafe { libc::kill(-pid, libc::SIGKILL) };
    }
    let status = waiter
        .join()
        .map_err(|_| io::Error::other("waiting for the command panicked"))??;
    // A daemon the command left behind may hold the pipe: do not wait
    // for it forever.
    let text = output.join().unwrap_or_default();
    use std::os::unix::process::ExitStatusExt;
    Ok(if timed_out {
        Ended::TimedOut(text)
    } else if let Some(code) = status.code() {
        Ended::Exited(code, text)
    } else {
        Ended::Killed(status.signal().unwrap_or(0), text)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> User {
        User::by_uid(nix::unistd::getuid().as_raw()).unwrap()
    }

    fn job<'a>(command: &'a str, user: &'a User) -> Job<'a> {
        Job {
            command,
            user,
            creds: None,
            sender: "s@example.org",
            recipient: "r@example.org",
            timeout: Duration::from_secs(20),
        }
    }

    #[test]
    fn input_environment_and_status_reach_the_caller() {
        let u = me();
        let ended = run(
            &job("cat; echo \"$SENDER $RECIPIENT $USER\"; exit 3", &u),
            b"H: 1\n",
            &mut &b"body\n"[..],
        )
        .unwrap();
        let expected = format!("H: 1\nbody\ns@example.org r@example.org {}", u.name);
        assert_eq!(ended, Ended::Exited(3, expected));
    }

    #[test]
    fn a_command_that_ignores_its_input_still_succeeds() {
        let u = me();
        let big = vec![b'x'; 1 << 20];
        let ended = run(&job("exit 0", &u), b"", &mut &big[..]).unwrap();
        assert_eq!(ended, Ended::Exited(0, String::new()));
    }

    #[test]
    fn the_time_limit_kills_the_command() {
        let u = me();
        let mut j = job("echo started; sleep 30", &u);
        j.timeout = Duration::from_millis(300);
        let started = std::time::Instant::now();
        let ended = run(&j, b"", &mut &b""[..]).unwrap();
        assert_eq!(ended, Ended::TimedOut("started".into()));
        assert!(started.elapsed() < Duration::from_secs(25));
    }
}
