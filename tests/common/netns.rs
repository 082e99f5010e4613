//! A network namespace of a test's own: its own loopback, so a peer can
//! listen on a fixed port (HTTPS on 443 for MTA-STS) without meeting
//! anything else on the machine.

use std::process::Command;

/// Runs `body` on a thread of its own in a new network namespace with
/// loopback up: everything it starts (peers, spoolmail) lives there.
/// Needs root: otherwise says why it skips (`why`) and returns.
pub fn in_own_network(why: &str, body: impl FnOnce() + Send + 'static) {
    if !super::root_or_skip(why) {
        return;
    }
    let result = std::thread::spawn(move || {
        // SAFETY: unshare(2) changes only the calling thread's namespace.
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "unshare: {}", std::io::Error::last_os_error());
        let up = Command::new("ip")
            .args(["link", "set", "lo", "up"])
            .status()
            .expect("ip (iproute2)");
        assert!(up.success(), "ip link set lo up");
        body();
    })
    .join();
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}
