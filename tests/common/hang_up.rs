//! A listener that accepts every connection and hangs up at once, counting
//! them: an unreachable-looking SMTP destination whose connection attempts
//! can be counted. Shared by the tests and the backlog benchmark.

use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Connections accepted so far by a [`hang_up_listener`].
#[derive(Clone)]
pub struct Accepted(Arc<AtomicUsize>);

impl Accepted {
    pub fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

/// Starts the listener on a free loopback port; returns the port and its
/// counter. The thread lives as long as the process.
pub fn hang_up_listener() -> (u16, Accepted) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding a loopback port");
    let port = listener.local_addr().expect("its address").port();
    let accepted = Accepted(Arc::new(AtomicUsize::new(0)));
    let counter = accepted.0.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            counter.fetch_add(1, Ordering::SeqCst);
            drop(conn);
        }
    });
    (port, accepted)
}
