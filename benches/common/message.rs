//! The 2 KB message the enqueue benchmarks submit. Free of the
//! spoolmail library (see benches/common/wait.rs).

use std::process;

/// Size of every message, headers included.
pub const MESSAGE_SIZE: usize = 2048;

/// A ~2 KB message with realistic headers; `i` makes the Message-ID unique.
pub fn message(i: usize) -> Vec<u8> {
    let headers = format!(
        "From: Bench Sender <sender@bench.example>\n\
         To: Recipient <recipient@example.com>\n\
         Subject: Quarterly report, part {i}\n\
         Date: Mon, 02 Jun 2025 09:30:00 +0000\n\
         Message-ID: <bench.{i}.{pid}@bench.example>\n\
         MIME-Version: 1.0\n\
         Content-Type: text/plain; charset=utf-8\n\
         Content-Transfer-Encoding: 8bit\n\
         \n\
         Hello,\n\n",
        pid = process::id(),
    );
    let line = "The numbers for this quarter are in the attached summary below; \
                nothing unusual.\n";
    let mut m = headers.into_bytes();
    while m.len() + line.len() < MESSAGE_SIZE - 32 {
        m.extend_from_slice(line.as_bytes());
    }
    m.extend_from_slice(b"\nRegards,\n-- \nBench\n");
    while m.len() < MESSAGE_SIZE - 1 {
        m.push(b'.');
    }
    m.push(b'\n');
    m
}
