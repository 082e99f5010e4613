//! The delivery state file `state/ID` as the spool reads it back
//! (Spool::read_state: O_NOFOLLOW open, size bound, serde_json of
//! DeliveryState, version check), on any bytes written to a scratch
//! spool.
//!
//! Asserts: reading never panics; it accepts exactly what serde accepts
//! with the known version; an accepted state written back with
//! write_state reads back equal to itself with its texts bounded.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use spoolmail::spool::{DeliveryState, QueueId, STATE_VERSION, Spool};

struct Scratch {
    spool: Spool,
    id: QueueId,
    path: std::path::PathBuf,
}

fn scratch() -> &'static Scratch {
    static SCRATCH: OnceLock<Scratch> = OnceLock::new();
    SCRATCH.get_or_init(|| {
        let root = spoolmail_fuzz::scratch_dir("state").join("spool");
        let spool = Spool::open(&root).unwrap();
        let id = QueueId::parse("01HF3Z8Q2M4K7XWT").expect("a valid queue id");
        let path = root.join("state").join(id.as_str());
        Scratch { spool, id, path }
    })
}

fuzz_target!(|data: &[u8]| {
    let s = scratch();
    std::fs::write(&s.path, data).unwrap();
    let read = s.spool.read_state(&s.id);
    let direct = serde_json::from_slice::<DeliveryState>(data)
        .ok()
        .filter(|st| st.version == STATE_VERSION);
    match read {
        Ok(Some(state)) => {
            assert_eq!(Some(&state), direct.as_ref());
            let mut bounded = state.clone();
            bounded.bound_texts();
            if s.spool.write_state(&s.id, &state).is_ok() {
                let back = s.spool.read_state(&s.id).unwrap().unwrap();
                assert_eq!(back, bounded);
            }
        }
        Ok(None) => panic!("a state file that exists read as absent"),
        Err(e) => {
            assert!(direct.is_none(), "refused a valid state: {}", e.message());
        }
    }
    let _ = std::fs::remove_file(&s.path);
});
