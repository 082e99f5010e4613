//! Queue IDs: the names of the files in `tmp/`, `queue/` and `state/`.
//!
//! An ID is 16 characters of Crockford base32
//! (`0123456789ABCDEFGHJKMNPQRSTVWXYZ`, ASCII-ascending): 11 characters of
//! microseconds since the Unix epoch, then 5 random characters. Because the
//! alphabet is ASCII-ascending and the time comes first with a fixed width,
//! string order is arrival order, so `ls queue/` and `mailq` sort by age.
//!
//! Uniqueness across concurrent processes, PID reuse and clock steps comes
//! from three layers: 25 random bits per microsecond, `O_EXCL` on `tmp/ID`
//! (the caller retries with a fresh ID) and a no-replace rename into
//! `queue/`. No counter or PID is needed, so [`QueueId::generate`] is a pure
//! function of the clock it is given plus the kernel's randomness.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

/// Crockford base32, in ASCII order so that string order equals numeric order.
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
/// Characters carrying the timestamp (55 bits: microseconds until year 3111).
const TIME_CHARS: usize = 11;
/// Characters carrying randomness (25 bits).
const RANDOM_CHARS: usize = 5;
/// The length of every queue ID.
pub const ID_LEN: usize = TIME_CHARS + RANDOM_CHARS;

/// Unique, time-sortable queue ID (see the module comment for the format).
/// Held inline (no allocation): a queue run with a backlog keeps a
/// hundred thousand of them.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct QueueId([u8; ID_LEN]);

impl QueueId {
    /// A fresh ID for a message arriving at `now`. Times before the epoch
    /// count as the epoch: a badly wrong clock still yields a valid ID.
    pub fn generate(now: SystemTime) -> QueueId {
        let micros = now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        let mut id = String::with_capacity(ID_LEN);
        push_base32(&mut id, micros, TIME_CHARS);
        push_base32(&mut id, random_bits(now), RANDOM_CHARS);
        QueueId::parse(&id).expect("generated from the alphabet, ID_LEN long")
    }

    /// Parses a name read back from the spool. Directory entries are
    /// hostile, so anything but exactly 16 alphabet characters is refused.
    pub fn parse(s: &str) -> Option<QueueId> {
        // A match, not ALPHABET.contains: every name of a directory
        // listing goes through here, and a search per byte showed.
        let valid = s.len() == ID_LEN && s.bytes().all(in_alphabet);
        valid.then(|| QueueId(s.as_bytes().try_into().expect("ID_LEN bytes")))
    }

    /// The ID as text (also the file name).
    pub fn as_str(&self) -> &str {
        // Only parse() makes one, from alphabet (ASCII) characters.
        std::str::from_utf8(&self.0).expect("an ID is ASCII")
    }
}

impl fmt::Debug for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("QueueId").field(&self.as_str()).finish()
    }
}

/// Whether `b` is in [`ALPHABET`] (Crockford: digits and capitals but
/// I, L, O and U).
fn in_alphabet(b: u8) -> bool {
    matches!(b, b'0'..=b'9' | b'A'..=b'H' | b'J' | b'K' | b'M' | b'N' | b'P'..=b'T' | b'V'..=b'Z')
}

impl fmt::Display for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Appends the low `chars * 5` bits of `value`, most significant first,
/// so that a fixed width keeps string order equal to numeric order.
fn push_base32(out: &mut String, value: u64, chars: usize) {
    for i in (0..chars).rev() {
        let digit = (value >> (5 * i)) & 31;
        out.push(ALPHABET[digit as usize] as char);
    }
}

/// 25 bits from the kernel. GRND_NONBLOCK because an MTA must not hang at
/// early boot; if getrandom fails we fall back to pid ^ time, which is
/// still covered by O_EXCL and the no-replace rename.
fn random_bits(now: SystemTime) -> u64 {
    let mut buf = [0u8; 4];
    // SAFETY: buf is valid for writes of buf.len() bytes.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), libc::GRND_NONBLOCK) };
    let bits = if n == buf.len() as isize {
        u32::from_ne_bytes(buf) as u64
    } else {
        let nanos = now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos() as u64)
            .unwrap_or(0);
        std::process::id() as u64 ^ nanos ^ (nanos >> 25)
    };
    bits & ((1 << (5 * RANDOM_CHARS)) - 1)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_alphabet_check_is_the_alphabet() {
        for b in 0..=255u8 {
            assert_eq!(super::in_alphabet(b), super::ALPHABET.contains(&b), "{b}");
        }
    }

    use super::*;
    use std::collections::HashSet;
    use std::time::Duration;

    #[test]
    fn ids_are_sixteen_alphabet_chars_and_parse_back() {
        let id = QueueId::generate(SystemTime::now());
        assert_eq!(id.as_str().len(), ID_LEN);
        assert_eq!(QueueId::parse(id.as_str()), Some(id.clone()));
        assert_eq!(id.to_string(), id.as_str());
    }

    #[test]
    fn ids_sort_by_time() {
        let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut prev = QueueId::generate(t);
        for step in [1u64, 2, 1000, 1_000_000, 86_400_000_000] {
            let next = QueueId::generate(t + Duration::from_micros(step));
            assert!(prev < next, "{prev} !< {next}");
            prev = next;
        }
    }

    #[test]
    fn ten_thousand_ids_are_unique() {
        let ids: HashSet<QueueId> = (0..10_000)
            .map(|_| QueueId::generate(SystemTime::now()))
            .collect();
        assert_eq!(ids.len(), 10_000);
    }

    #[test]
    fn ids_from_several_threads_are_unique() {
        let threads: Vec<_> = (0..8)
            .map(|_| {
                std::thread::spawn(|| {
                    (0..2_000)
                        .map(|_| QueueId::generate(SystemTime::now()))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut all = HashSet::new();
        for t in threads {
            for id in t.join().unwrap() {
                assert!(all.insert(id), "duplicate id");
            }
        }
        assert_eq!(all.len(), 16_000);
    }

    #[test]
    fn hostile_names_are_refused() {
        for bad in [
            "",
            "0123456789ABCDE",
            "0123456789ABCDEFG",
            "0123456789abcdef",
            "0123456789ABCDEI",
            "0123456789ABCDEU",
            "../../etc/passwd",
            "0123456789ABCD.F",
            "0123456789ABCDÉ",
        ] {
            assert_eq!(QueueId::parse(bad), None, "{bad:?}");
        }
        assert!(QueueId::parse("0123456789ABCDEZ").is_some());
    }

    #[test]
    fn times_before_the_epoch_still_give_a_valid_id() {
        let id = QueueId::generate(UNIX_EPOCH - Duration::from_secs(5));
        assert!(id.as_str().starts_with("00000000000"));
        assert!(QueueId::parse(id.as_str()).is_some());
    }
}
