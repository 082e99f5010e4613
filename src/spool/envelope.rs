//! The envelope and the queue-file framing (format version 1).
//!
//! A queue file is, byte for byte:
//!
//! ```text
//! SPOOLMAIL-QUEUE 1\n          version line; anything else is a foreign file
//! id 01HF3Z8Q2M4K7XWT\n        key SP value LF; the value is the rest of the line
//! arrival 1700000000\n         unix seconds
//! sender user@example.org\n    "sender " (empty value) is the null sender <>
//! uid 1000\n
//! user alice\n
//! body-type 8BITMIME\n         optional (-B)
//! notify SUCCESS,FAILURE\n     optional (-N)
//! ret hdrs\n                   optional (-R)
//! envid abc123\n               optional (-V)
//! chain user:alice alias:l\n     optional: what expanded into this copy
//! rcpt bob@example.net\n       one line per recipient, in order
//! \n                           blank line: the message data starts after it
//! <message data, any bytes>
//! \n.END 00000000000000001234\n  trailer: LF, ".END ", data size as 20 digits, LF
//! ```
//!
//! Values never contain CR, LF or NUL (refused when writing). Keys other
//! than `rcpt` appear at most once; `id`, `arrival`, `sender`, `uid` and
//! `user` are required. The trailer has a fixed length ([`TRAILER_LEN`]), so
//! a reader verifies a file without reading its data: file length must equal
//! data offset + size + trailer length and the trailer bytes must be exact.
//! A half-written, truncated, extended or foreign file fails that check.

use std::io::{self, BufRead, Read, Write};

use super::id::QueueId;

/// The first line of every version-1 queue file.
pub const VERSION_LINE: &[u8] = b"SPOOLMAIL-QUEUE 1\n";
/// What precedes the size in the trailer.
const TRAILER_HEAD: &[u8] = b"\n.END ";
/// Digits of the size in the trailer: u64::MAX has 20.
const SIZE_DIGITS: usize = 20;
/// Length of the trailer: "\n.END " + 20 digits + "\n".
pub const TRAILER_LEN: usize = TRAILER_HEAD.len() + SIZE_DIGITS + 1;
/// Upper bound on the envelope block we are willing to read back: enough
/// for tens of thousands of recipients, small enough that a hostile file
/// cannot exhaust memory.
const MAX_ENVELOPE_BYTES: u64 = 16 << 20;

/// The envelope, stored at the head of the queue file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The message's queue ID (must equal the draft's ID when written).
    pub id: QueueId,
    /// Arrival time, unix seconds.
    pub arrival: u64,
    /// Envelope sender; "" is the null sender `<>`.
    pub sender: String,
    /// Envelope recipients as given (validated upstream; never CR/LF).
    pub recipients: Vec<String>,
    /// Submitting user's uid.
    pub uid: u32,
    /// Submitting user's login name.
    pub user: String,
    /// Body type, e.g. "8BITMIME" (-B).
    pub body_type: Option<String>,
    /// DSN NOTIFY (-N).
    pub dsn_notify: Option<String>,
    /// DSN RET (-R): "full" or "hdrs".
    pub dsn_ret: Option<String>,
    /// DSN ENVID (-V).
    pub envid: Option<String>,
    /// A forwarded copy (or a notice about one): the aliases and
    /// `.forward`s (`alias:NAME`, `user:NAME`) that made it, none of
    /// which expands it again (loop protection for local delivery).
    /// Entries are single words.
    pub chain: Vec<String>,
    /// Message data size in bytes: known at commit, read from the trailer;
    /// ignored when writing.
    pub size: u64,
}

/// Checks that no value holds CR, LF or NUL; returns the offending key.
/// Such a value is a bug upstream (addresses are validated there), and
/// writing it would let one field forge others.
pub fn check_values(env: &Envelope) -> Result<(), &'static str> {
    let optional = [
        ("body-type", &env.body_type),
        ("notify", &env.dsn_notify),
        ("ret", &env.dsn_ret),
        ("envid", &env.envid),
    ];
    let mut all = [("sender", Some(&env.sender)), ("user", Some(&env.user))]
        .into_iter()
        .chain(optional.into_iter().map(|(k, v)| (k, v.as_ref())))
        .chain(env.recipients.iter().map(|r| ("rcpt", Some(r))));
    if env
        .chain
        .iter()
        .any(|e| e.is_empty() || e.bytes().any(|b| b.is_ascii_whitespace() || b == 0))
    {
        return Err("chain");
    }
    match all.find(|(_, v)| v.is_some_and(|v| v.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0)))) {
        Some((key, _)) => Err(key),
        None => Ok(()),
    }
}

/// Writes the version line and the envelope block, up to and including the
/// blank line. Call [`check_values`] first.
pub fn write_envelope(out: &mut impl Write, env: &Envelope) -> io::Result<()> {
    out.write_all(VERSION_LINE)?;
    writeln!(out, "id {}\narrival {}", env.id, env.arrival)?;
    writeln!(
        out,
        "sender {}\nuid {}\nuser {}",
        env.sender, env.uid, env.user
    )?;
    let optional = [
        ("body-type", &env.body_type),
        ("notify", &env.dsn_notify),
        ("ret", &env.dsn_ret),
        ("envid", &env.envid),
    ];
    for (key, value) in optional {
        if let Some(v) = value {
            writeln!(out, "{key} {v}")?;
        }
    }
    if !env.chain.is_empty() {
        writeln!(out, "chain {}", env.chain.join(" "))?;
    }
    for r in &env.recipients {
        writeln!(out, "rcpt {r}")?;
    }
    out.write_all(b"\n")
}

/// The fixed-length trailer for `size` bytes of data.
pub fn trailer(size: u64) -> [u8; TRAILER_LEN] {
    let mut t = [0u8; TRAILER_LEN];
    let text = format!("\n.END {size:020}\n");
    t.copy_from_slice(text.as_bytes());
    t
}

/// The data size a trailer records, or None when the bytes are not an
/// exact trailer.
pub fn parse_trailer(t: &[u8; TRAILER_LEN]) -> Option<u64> {
    let digits = &t[TRAILER_HEAD.len()..TRAILER_LEN - 1];
    let exact = t.starts_with(TRAILER_HEAD)
        && t[TRAILER_LEN - 1] == b'\n'
        && digits.iter().all(u8::is_ascii_digit);
    if !exact {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// Why a queue file's envelope block is unusable.
#[derive(Debug)]
pub enum ReadError {
    /// The file is not a complete version-1 queue file (the reason says why).
    Corrupt(String),
    /// Reading failed (I/O error): the file may be fine.
    Io(io::Error),
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> ReadError {
        ReadError::Io(e)
    }
}

fn corrupt<T>(why: impl Into<String>) -> Result<T, ReadError> {
    Err(ReadError::Corrupt(why.into()))
}

/// Reads the version line and the envelope block from the start of a queue
/// file, leaving `input` positioned at the first byte of data. Returns the
/// envelope (size 0: it lives in the trailer) and the data offset.
pub fn read_envelope(input: &mut impl BufRead) -> Result<(Envelope, u64), ReadError> {
    if let Some(found) = envelope_in_buffer(input)? {
        return Ok(found);
    }
    let mut limited = input.take(MAX_ENVELOPE_BYTES);
    let mut line = Vec::with_capacity(128);
    let mut offset = 0u64;
    let mut next_line = |line: &mut Vec<u8>| -> Result<bool, ReadError> {
        line.clear();
        let n = limited.read_until(b'\n', line)?;
        offset += n as u64;
        if n == 0 || line.last() != Some(&b'\n') {
            return corrupt("truncated envelope");
        }
        line.pop();
        Ok(!line.is_empty())
    };
    next_line(&mut line)?;
    check_version(&line)?;
    let mut fields = Fields::default();
    while next_line(&mut line)? {
        fields.line(&line)?;
    }
    let envelope = fields.finish()?;
    Ok((envelope, offset))
}

/// [`read_envelope`] when the whole block is in `input`'s buffer after
/// one fill (an 8 KiB buffer holds nearly every envelope): parsed where
/// it lies, no line copied. None, with nothing consumed, when the block
/// goes on past the buffer.
fn envelope_in_buffer(input: &mut impl BufRead) -> Result<Option<(Envelope, u64)>, ReadError> {
    let buffered = input.fill_buf()?;
    let block = &buffered[..buffered.len().min(MAX_ENVELOPE_BYTES as usize)];
    let mut lines = block.split_inclusive(|&b| b == b'\n');
    let mut offset = 0usize;
    let mut fields = Fields::default();
    loop {
        let Some(line) = lines.next().filter(|l| l.ends_with(b"\n")) else {
            return Ok(None);
        };
        let text = &line[..line.len() - 1];
        match offset {
            0 => check_version(text)?,
            _ if text.is_empty() => {
                offset += line.len();
                break;
            }
            _ => fields.line(text)?,
        }
        offset += line.len();
    }
    let envelope = fields.finish()?;
    input.consume(offset);
    Ok(Some((envelope, offset as u64)))
}

fn check_version(line: &[u8]) -> Result<(), ReadError> {
    match line == &VERSION_LINE[..VERSION_LINE.len() - 1] {
        true => Ok(()),
        false => corrupt("bad version line"),
    }
}

/// The envelope lines seen so far; duplicates and unknown keys are refused.
#[derive(Default)]
struct Fields {
    id: Option<String>,
    arrival: Option<String>,
    sender: Option<String>,
    uid: Option<String>,
    user: Option<String>,
    body_type: Option<String>,
    notify: Option<String>,
    ret: Option<String>,
    envid: Option<String>,
    chain: Option<String>,
    recipients: Vec<String>,
}

impl Fields {
    /// One `key value` line of the block (without its newline).
    fn line(&mut self, line: &[u8]) -> Result<(), ReadError> {
        let Ok(text) = std::str::from_utf8(line) else {
            return corrupt("envelope line is not UTF-8");
        };
        let Some((key, value)) = text.split_once(' ') else {
            return corrupt(format!("envelope line without value: {text:.40?}"));
        };
        if value.contains(['\r', '\0']) {
            return corrupt("control character in envelope value");
        }
        self.set(key, value)
    }

    fn set(&mut self, key: &str, value: &str) -> Result<(), ReadError> {
        let slot = match key {
            "rcpt" => {
                self.recipients.push(value.to_owned());
                return Ok(());
            }
            "id" => &mut self.id,
            "arrival" => &mut self.arrival,
            "sender" => &mut self.sender,
            "uid" => &mut self.uid,
            "user" => &mut self.user,
            "body-type" => &mut self.body_type,
            "notify" => &mut self.notify,
            "ret" => &mut self.ret,
            "envid" => &mut self.envid,
            "chain" => &mut self.chain,
            _ => return corrupt(format!("unknown envelope key {key:.40?}")),
        };
        if slot.replace(value.to_owned()).is_some() {
            return corrupt(format!("duplicate envelope key {key}"));
        }
        Ok(())
    }

    fn finish(self) -> Result<Envelope, ReadError> {
        fn required(name: &str, v: Option<String>) -> Result<String, ReadError> {
            v.map_or_else(|| corrupt(format!("missing envelope key {name}")), Ok)
        }
        let id = required("id", self.id)?;
        let Some(id) = QueueId::parse(&id) else {
            return corrupt("bad id in envelope");
        };
        let Ok(arrival) = required("arrival", self.arrival)?.parse() else {
            return corrupt("bad arrival time");
        };
        let Ok(uid) = required("uid", self.uid)?.parse() else {
            return corrupt("bad uid");
        };
        Ok(Envelope {
            id,
            arrival,
            sender: required("sender", self.sender)?,
            recipients: self.recipients,
            uid,
            user: required("user", self.user)?,
            body_type: self.body_type,
            dsn_notify: self.notify,
            dsn_ret: self.ret,
            envid: self.envid,
            chain: self
                .chain
                .map(|c| c.split_whitespace().map(str::to_owned).collect())
                .unwrap_or_default(),
            size: 0,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::time::SystemTime;

    pub(crate) fn sample() -> Envelope {
        Envelope {
            id: QueueId::generate(SystemTime::now()),
            arrival: 1_700_000_000,
            sender: String::new(),
            recipients: vec!["\"a b\"@example.org".into(), "root".into()],
            uid: 1000,
            user: "alice".into(),
            body_type: Some("8BITMIME".into()),
            dsn_notify: None,
            dsn_ret: Some("hdrs".into()),
            envid: Some(String::new()),
            chain: vec!["user:alice".into(), "alias:staff".into()],
            size: 0,
        }
    }

    #[test]
    fn envelope_round_trips() {
        let env = sample();
        let mut buf = Vec::new();
        check_values(&env).unwrap();
        write_envelope(&mut buf, &env).unwrap();
        buf.extend_from_slice(b"DATA");
        let mut input = &buf[..];
        let (back, offset) = read_envelope(&mut input).unwrap();
        assert_eq!(back, env);
        assert_eq!(&buf[offset as usize..], b"DATA");
    }

    /// The block read in place (the whole of it in the buffer) and line
    /// by line (a 1-byte buffer) give the same result, error or not.
    #[test]
    fn in_buffer_and_line_by_line_reads_agree() {
        let mut good = Vec::new();
        write_envelope(&mut good, &sample()).unwrap();
        good.extend_from_slice(b"DATA");
        let mut inputs: Vec<Vec<u8>> = vec![good.clone()];
        for cut in [0, 1, 17, good.len() - 5] {
            inputs.push(good[..cut].to_vec());
        }
        for bad in [
            &b"SPOOLMAIL-QUEUE 2\nid x\n\n"[..],
            b"\nSPOOLMAIL-QUEUE 1\n\n",
            b"SPOOLMAIL-QUEUE 1\nbogus 1\n\n",
            b"SPOOLMAIL-QUEUE 1\nuid 1\nuid 1\n\n",
            b"SPOOLMAIL-QUEUE 1\nrcpt a\rb\n\n",
            b"SPOOLMAIL-QUEUE 1\nnovalue\n\n",
        ] {
            inputs.push(bad.to_vec());
        }
        let mut long = b"SPOOLMAIL-QUEUE 1\n".to_vec();
        while long.len() as u64 <= MAX_ENVELOPE_BYTES {
            long.extend_from_slice(b"rcpt someone@example.org\n");
        }
        inputs.push(long);
        let read = |input: &[u8], capacity: usize| {
            let mut reader = std::io::BufReader::with_capacity(capacity, input);
            format!("{:?}", read_envelope(&mut reader))
        };
        for input in &inputs {
            let whole = read(input, input.len().max(1) + 8192);
            assert_eq!(
                whole,
                read(input, 1),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
        assert!(read(&good, 8192).starts_with("Ok("));
    }

    #[test]
    fn line_breaks_in_values_are_refused() {
        for bad in ["a\nb", "a\rb", "a\0b"] {
            let mut env = sample();
            env.recipients.push(bad.into());
            assert_eq!(check_values(&env), Err("rcpt"));
        }
    }

    #[test]
    fn trailer_round_trips_and_rejects_garbage() {
        let t = trailer(1234);
        assert_eq!(t.len(), TRAILER_LEN);
        assert_eq!(parse_trailer(&t), Some(1234));
        assert_eq!(parse_trailer(&trailer(u64::MAX)), Some(u64::MAX));
        let mut bad = t;
        bad[10] = b'x';
        assert_eq!(parse_trailer(&bad), None);
    }

    #[test]
    fn foreign_and_broken_blocks_are_corrupt() {
        for bad in [
            &b"SPOOLMAIL-QUEUE 2\nid x\n\n"[..],
            b"From root Mon\n",
            b"SPOOLMAIL-QUEUE 1\nid 0123456789ABCDEF\narrival 1\n",
            b"SPOOLMAIL-QUEUE 1\nbogus 1\n\n",
            b"SPOOLMAIL-QUEUE 1\nid 0123456789ABCDEF\n\n",
            b"",
        ] {
            let mut input = bad;
            assert!(matches!(
                read_envelope(&mut input),
                Err(ReadError::Corrupt(_))
            ));
        }
    }
}
