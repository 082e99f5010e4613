//! `sendmail -bs`: any bytes as the client's side of the dialogue,
//! through smtpd::serve with a scratch spool (commands, paths and their
//! parameters, PIPELINING, DATA with dot unstuffing and the end-of-data
//! rule, the commit of each message).
//!
//! Asserts: the output is a sequence of CRLF-ended reply lines, each
//! "DDD " or "DDD-" with a 2xx-5xx code, the first a 220; every message
//! committed was announced through the callback, reads back from the
//! spool, and holds only valid addresses.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use spoolmail::address::{self, Address};
use spoolmail::cli::{self, Face, Invocation};
use spoolmail::config::Config;
use spoolmail::accept::smtpd;
use spoolmail::spool::{QueueId, Spool};
use spoolmail::accept::submit::Caller;
use spoolmail_fuzz::empty_dir;

struct Scratch {
    spool: Spool,
    config: Config,
    inv: Invocation,
    caller: Caller,
    root: PathBuf,
}

fn scratch() -> &'static Scratch {
    static SCRATCH: OnceLock<Scratch> = OnceLock::new();
    SCRATCH.get_or_init(|| {
        let root = spoolmail_fuzz::scratch_dir("smtpd").join("spool");
        let spool = Spool::open(&root).unwrap();
        let config = Config {
            spool: root.clone(),
            hostname: "host.example".into(),
            max_message_size: 64 * 1024,
            max_recipients: 50,
            ..Config::default()
        };
        let inv = cli::parse(Face::Sendmail, &["-bs".to_string()]).expect("-bs parses");
        let caller = Caller {
            uid: nix::unistd::getuid().as_raw(),
            login: "fuzz".into(),
            full_name: Some("Fuzz Er".into()),
        };
        Scratch {
            spool,
            config,
            inv,
            caller,
            root,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let s = scratch();
    let mut output = Vec::new();
    let mut announced: Vec<QueueId> = Vec::new();
    let result = smtpd::serve(
        &s.inv,
        &s.config,
        &s.caller,
        data,
        &mut output,
        &mut |id: &QueueId| announced.push(id.clone()),
    );
    assert!(output.starts_with(b"220 "), "{output:?}");
    assert!(output.ends_with(b"\r\n"));
    for line in output.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        assert!(line.ends_with(b"\r") && line.len() >= 5, "{line:?}");
        assert!(line[..3].iter().all(u8::is_ascii_digit), "{line:?}");
        assert!((b'2'..=b'5').contains(&line[0]), "{line:?}");
        assert!(line[3] == b' ' || line[3] == b'-', "{line:?}");
        assert!(!line[..line.len() - 1].contains(&b'\r'), "{line:?}");
    }
    let ids = result.unwrap_or_else(|e| panic!("session failed: {}", e.message()));
    assert_eq!(ids, announced);
    for id in &ids {
        let env = s
            .spool
            .read_envelope(id)
            .expect("a committed message reads back");
        assert!(!env.recipients.is_empty());
        for r in &env.recipients {
            Address::parse(r).expect("queued recipient parses");
        }
        if !env.sender.is_empty() {
            address::parse_sender(&env.sender).expect("queued sender parses");
        }
    }
    for sub in ["queue", "state", "corrupt", "tmp"] {
        empty_dir(&s.root.join(sub));
    }
});
