//! Running a `|command` delivery: `/bin/sh -c COMMAND` as the user it
//! belongs to, the message on stdin, a clean environment (SENDER,
//! RECIPIENT, USER, HOME, …: never the caller's), stdout and stderr kept
//! (the start of it) for the bounce, and a time limit after which the
//! command's whole process group is killed.

use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::path::Path;
use std::process::{ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

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
    let deadline = Instant::now() + job.timeout;
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
            Path::new("/")
        });
    user::run_as(&mut command, job.creds.clone());
    run_until(command, header, message, deadline)
}

/// Runs `command` — which must run in its own session (as
/// [`user::run_as`] arranges) — with `header` then `message` on its stdin
/// and its stdout and stderr kept, and kills its whole process group when
/// it is still running at `deadline`: whatever the child does (read
/// nothing, hang, be stopped with SIGSTOP by the user it runs as), the
/// caller gets control back by then. Err: it could not be started.
pub fn run_until(
    mut command: Command,
    header: &[u8],
    message: &mut (dyn Read + Send),
    deadline: Instant,
) -> io::Result<Ended> {
    let (output_reader, output_writer) = io::pipe()?;
    command
        .stdin(Stdio::piped())
        .stdout(output_writer.try_clone()?)
        .stderr(output_writer);
    let mut child = command.spawn()?;
    // Our copies of the write end must go, or reading never ends.
    drop(command);
    let pid = child.id() as i32;
    let output = Output::collect(output_reader);
    let stdin = child.stdin.take();
    let (done_tx, done_rx) = mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let status = child.wait();
        let _ = done_tx.send(());
        status
    });
    let fed_in_time = match stdin {
        Some(pipe) => feed(pipe, pid, header, message, deadline),
        None => true,
    };
    let timed_out = !fed_in_time
        || done_rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .is_err();
    if timed_out {
        // SAFETY: kill(2) on the command's own process group (setsid).
        unsafe { libc::kill(-pid, libc::SIGKILL) };
    }
    let status = waiter
        .join()
        .map_err(|_| io::Error::other("waiting for the command panicked"))??;
    let text = output.text();
    use std::os::unix::process::ExitStatusExt;
    Ok(if timed_out {
        Ended::TimedOut(text)
    } else if let Some(code) = status.code() {
        Ended::Exited(code, text)
    } else {
        Ended::Killed(status.signal().unwrap_or(0), text)
    })
}

/// Writes the message to the command's stdin without ever blocking past
/// `deadline` (a command that reads nothing must not hang the runner).
/// False: the deadline passed, or the message could not be read — then
/// the command (process group `pid`) is killed *before* its input is
/// closed, so that it never takes a truncated message for a whole one. A
/// command that closes its input early is not an error (EPIPE ends the
/// feeding).
fn feed(
    pipe: ChildStdin,
    pid: i32,
    header: &[u8],
    message: &mut dyn Read,
    deadline: Instant,
) -> bool {
    let fd = pipe.as_fd();
    if nix::fcntl::fcntl(
        fd,
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    )
    .is_err()
    {
        return true;
    }
    let mut pipe = pipe;
    let mut pending = header.to_vec();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if pending.is_empty() {
            match message.read(&mut buf) {
                Ok(0) => return true,
                Ok(n) => pending.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    // SAFETY: kill(2) on the command's own process group.
                    unsafe { libc::kill(-pid, libc::SIGKILL) };
                    return false;
                }
            }
        }
        match pipe.write(&pending) {
            Ok(n) => {
                pending.drain(..n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return false;
                }
                let ms = left.as_millis().min(60_000) as u16;
                let mut fds = [PollFd::new(pipe.as_fd(), PollFlags::POLLOUT)];
                let _ = poll(&mut fds, PollTimeout::from(ms));
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return true,
        }
    }
}

/// The command's stdout and stderr, drained to the end in a thread (a
/// command must never block on a full pipe), the start of it kept.
struct Output {
    kept: Arc<Mutex<Vec<u8>>>,
    done: mpsc::Receiver<()>,
}

impl Output {
    fn collect(mut reader: io::PipeReader) -> Output {
        let kept = Arc::new(Mutex::new(Vec::new()));
        let (tx, done) = mpsc::channel();
        let shared = Arc::clone(&kept);
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let mut kept = shared.lock().unwrap_or_else(|p| p.into_inner());
                let room = OUTPUT_KEPT.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
            let _ = tx.send(());
        });
        Output { kept, done }
    }

    /// What was kept. A daemon the command left behind may still hold
    /// the pipe: it gets a second, not forever.
    fn text(self) -> String {
        let _ = self.done.recv_timeout(Duration::from_secs(1));
        let kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        String::from_utf8_lossy(&kept).trim().to_string()
    }
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
    fn a_chatty_command_is_drained_and_its_output_start_kept() {
        let u = me();
        let ended = run(
            &job("yes | head -c 1000000; exit 0", &u),
            b"",
            &mut &b""[..],
        )
        .unwrap();
        match ended {
            Ended::Exited(0, text) => assert_eq!(text.len(), OUTPUT_KEPT - 1),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_command_that_neither_reads_nor_exits_is_killed_at_the_limit() {
        let u = me();
        let mut j = job("exec sleep 600", &u);
        j.timeout = Duration::from_millis(500);
        let big = vec![b'x'; 4 << 20];
        let started = std::time::Instant::now();
        let ended = run(&j, b"", &mut &big[..]).unwrap();
        assert_eq!(ended, Ended::TimedOut(String::new()));
        assert!(started.elapsed() < Duration::from_secs(60));
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
