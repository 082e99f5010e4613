//! A drop file in `maildrop/` as root's queue run picks it up
//! (accept::pickup::pickup_maildrop: file checks, queue-file verification of the
//! framing, trailer and size, limits, address re-validation, the copy
//! into `queue/` with its Received line), on any bytes written to
//! `maildrop/ID` of a scratch spool.
//!
//! Asserts: the pickup succeeds as a run (a bad drop is refused, not an
//! error); the maildrop is empty afterwards; a drop is queued only when
//! its framing verifies (read_envelope + trailer agree with the file
//! length) and its addresses are valid; the queued message reads back
//! with the drop's recipients, the caller's uid, and its data is the
//! Received line followed by exactly the drop's data.
#![no_main]

use std::io::Read;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, UNIX_EPOCH};

use libfuzzer_sys::fuzz_target;
use spoolmail::address::{self, Address};
use spoolmail::config::Config;
use spoolmail::fuzzing::{TRAILER_LEN, parse_trailer, read_envelope};
use spoolmail::spool::{MAILDROP, QueueId, Spool};
use spoolmail_fuzz::empty_dir;

struct Scratch {
    spool: Spool,
    config: Config,
    id: QueueId,
    root: PathBuf,
}

fn scratch() -> &'static Scratch {
    static SCRATCH: OnceLock<Scratch> = OnceLock::new();
    SCRATCH.get_or_init(|| {
        let root = spoolmail_fuzz::scratch_dir("maildrop").join("spool");
        let spool = Spool::open(&root).unwrap();
        let config = Config {
            spool: root.clone(),
            hostname: "host.example".into(),
            ..Config::default()
        };
        let id = QueueId::parse("01HF3Z8Q2M4K7XWT").expect("a valid queue id");
        Scratch {
            spool,
            config,
            id,
            root,
        }
    })
}

/// The data the framing of `bytes` delimits, when it verifies.
fn framed_data(bytes: &[u8]) -> Option<&[u8]> {
    let (_, offset) = read_envelope(&mut &bytes[..]).ok()?;
    let trailer_at = bytes.len().checked_sub(TRAILER_LEN)?;
    let size = parse_trailer(bytes[trailer_at..].try_into().ok()?)?;
    (offset.checked_add(size)? == trailer_at as u64).then(|| &bytes[offset as usize..trailer_at])
}

fuzz_target!(|data: &[u8]| {
    let s = scratch();
    let drop_path = s.root.join(MAILDROP).join(s.id.as_str());
    std::fs::write(&drop_path, data).unwrap();
    let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let queued = spoolmail::accept::pickup::pickup_maildrop(&s.spool, &s.config, now)
        .unwrap_or_else(|e| panic!("pickup failed: {}", e.message()));
    assert_eq!(
        std::fs::read_dir(s.root.join(MAILDROP)).unwrap().count(),
        0,
        "the maildrop is not empty after a pickup"
    );
    let queue_file = s.root.join("queue").join(s.id.as_str());
    if queued.is_empty() {
        assert!(!queue_file.exists());
    } else {
        assert_eq!(queued, [s.id.clone()]);
        let dropped = framed_data(data).expect("queued a drop whose framing does not verify");
        let env = s
            .spool
            .read_envelope(&s.id)
            .expect("the queued file reads back");
        let (claimed, _) = read_envelope(&mut &data[..]).unwrap();
        assert_eq!(env.recipients, claimed.recipients);
        assert!(!env.recipients.is_empty());
        for r in &env.recipients {
            Address::parse(r).expect("queued recipient parses");
        }
        if !env.sender.is_empty() {
            address::parse_sender(&env.sender).expect("queued sender parses");
        }
        assert_eq!(env.uid, nix::unistd::getuid().as_raw());
        let mut stored = Vec::new();
        s.spool
            .open_data(&s.id)
            .unwrap()
            .read_to_end(&mut stored)
            .unwrap();
        assert!(stored.starts_with(b"Received: "));
        assert!(
            stored.ends_with(dropped),
            "the drop's data was not kept exactly"
        );
    }
    for sub in ["queue", "state", "corrupt", "tmp", "maildrop-tmp"] {
        empty_dir(&s.root.join(sub));
    }
});
