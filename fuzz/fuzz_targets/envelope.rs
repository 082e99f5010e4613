//! The queue file's envelope block and trailer (spool/envelope.rs), as a
//! runner or a root pickup reads them back from disk: read_envelope on
//! any bytes, parse_trailer on the last TRAILER_LEN bytes.
//!
//! Asserts: the data offset lies within the input; what is read passes
//! check_values (so it can be written again); write → read gives back
//! the same envelope and offset, and writing is canonical (a second
//! write is byte-identical); a trailer that parses is exactly
//! trailer(size). And the block read where it lies in the buffer (the
//! usual case) and read line by line (a 1-byte buffer) agree, error or
//! not.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spoolmail::fuzzing::{
    TRAILER_LEN, check_values, parse_trailer, read_envelope, trailer, write_envelope,
};

fuzz_target!(|data: &[u8]| {
    let in_place = format!("{:?}", read_envelope(&mut &data[..]));
    let by_line = format!(
        "{:?}",
        read_envelope(&mut std::io::BufReader::with_capacity(1, data))
    );
    assert_eq!(in_place, by_line);
    if let Ok((env, offset)) = read_envelope(&mut &data[..]) {
        assert!(offset <= data.len() as u64);
        assert!(data.starts_with(spoolmail::fuzzing::VERSION_LINE));
        assert_eq!(data[offset as usize - 1], b'\n');
        assert_eq!(check_values(&env), Ok(()));
        let mut written = Vec::new();
        write_envelope(&mut written, &env).unwrap();
        let (back, back_offset) = read_envelope(&mut &written[..])
            .unwrap_or_else(|_| panic!("written envelope does not read back: {written:?}"));
        assert_eq!(back, env);
        assert_eq!(back_offset, written.len() as u64);
        let mut again = Vec::new();
        write_envelope(&mut again, &back).unwrap();
        assert_eq!(again, written);
    }
    if data.len() >= TRAILER_LEN {
        let tail: &[u8; TRAILER_LEN] = data[data.len() - TRAILER_LEN..].try_into().unwrap();
        if let Some(size) = parse_trailer(tail) {
            assert_eq!(&trailer(size), tail);
        }
    }
});
