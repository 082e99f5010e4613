//! Reaping a child with its resource usage. Free of the spoolmail
//! library: the enqueue benchmark, whose floor is this very binary
//! re-executed, includes it alone (see benches/enqueue.rs).

use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

/// Reaps `pid` with wait4(2), retrying on EINTR; the rusage is the child's.
pub fn wait4(pid: u32) -> (ExitStatus, libc::rusage) {
    let pid = libc::pid_t::try_from(pid).expect("pid fits pid_t");
    let mut status: libc::c_int = 0;
    // SAFETY: rusage is plain old data; all-zero is a valid value.
    let mut rusage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: pid is our own unreaped child; both pointers are valid.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut rusage) };
        if r == pid {
            return (ExitStatus::from_raw(status), rusage);
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            panic!("wait4({pid}): {err}");
        }
    }
}
