//! Property tests for the two parsers that see hostile input first:
//! addresses (argv, header fields) and the message on stdin. They check
//! that nothing panics on arbitrary input, that a parsed address prints
//! back to itself, and that the streaming intake agrees with a simple
//! line-based model of the same rules, however the input is chunked.

use std::io::{self, Read};

use proptest::prelude::*;
use spoolmail::accept::message::{Intake, IntakeOptions};
use spoolmail::address::{self, Address};

/// A reader that returns its data in the given chunk sizes (cycled), as a
/// pipe does: a CR and its LF may arrive in different reads.
struct Chunked {
    data: Vec<u8>,
    pos: usize,
    sizes: Vec<usize>,
    turn: usize,
}

impl Read for Chunked {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = self
            .sizes
            .get(self.turn % self.sizes.len().max(1))
            .copied()
            .unwrap_or(1);
        self.turn += 1;
        let n = want.max(1).min(buf.len()).min(self.data.len() - self.pos);
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Header as written plus body as copied; the error if intake failed.
fn run_intake(data: &[u8], sizes: &[usize], ignore_dots: bool) -> Result<Vec<u8>, String> {
    let reader = Chunked {
        data: data.to_vec(),
        pos: 0,
        sizes: sizes.to_vec(),
        turn: 0,
    };
    let options = IntakeOptions {
        ignore_dots,
        ..IntakeOptions::default()
    };
    let mut intake = Intake::new(reader, options);
    let header = intake.read_header().map_err(|e| e.to_string())?;
    let _ = header.recipients();
    let mut out = Vec::new();
    header.write_to(&mut out).map_err(|e| e.to_string())?;
    intake.copy_body(&mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

/// The reference model of canonical line endings: CRLF → LF, a CR at the
/// very end ends the line, any other CR stays; a final LF is added.
fn canonical(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len() + 1);
    let mut i = 0;
    while i < input.len() {
        if input[i] == b'\r' && (i + 1 == input.len() || input[i + 1] == b'\n') {
            out.push(b'\n');
            i += if i + 1 == input.len() { 1 } else { 2 };
            continue;
        }
        out.push(input[i]);
        i += 1;
    }
    if out.last().is_some_and(|&b| b != b'\n') {
        out.push(b'\n');
    }
    out
}

/// The reference model of the whole intake with `-i`, line by line:
/// an mbox From_ first line is dropped; field lines (and their
/// continuations) form the header until an empty line (dropped) or a
/// line that is not a field; Bcc and Resent-Bcc fields are removed.
fn model(input: &[u8]) -> Vec<u8> {
    let text = canonical(input);
    let lines: Vec<&[u8]> = text.split_inclusive(|&b| b == b'\n').collect();
    let mut i = 0;
    if lines.first().is_some_and(|l| l.starts_with(b"From ")) {
        i = 1;
    }
    let mut fields: Vec<Vec<u8>> = Vec::new();
    let mut body: &[&[u8]] = &[];
    while i < lines.len() {
        let line = lines[i];
        if line == b"\n" {
            body = &lines[i + 1..];
            break;
        }
        let is_continuation = matches!(line[0], b' ' | b'\t');
        let name_len = line.iter().position(|&b| b == b':');
        if is_continuation && !fields.is_empty() {
            fields.last_mut().unwrap().extend_from_slice(line);
        } else if name_len.is_some_and(|n| {
            (1..=998).contains(&n) && line[..n].iter().all(|&b| (33..=126).contains(&b))
        }) {
            fields.push(line.to_vec());
        } else {
            body = &lines[i..];
            break;
        }
        i += 1;
    }
    let mut out = Vec::new();
    for field in fields {
        let name = &field[..field.iter().position(|&b| b == b':').unwrap()];
        if !name.eq_ignore_ascii_case(b"bcc") && !name.eq_ignore_ascii_case(b"resent-bcc") {
            out.extend_from_slice(&field);
        }
    }
    for line in body {
        out.extend_from_slice(line);
    }
    out
}

/// Message-like bytes: the pieces that drive the state machines (line
/// endings, dots, field names, From_, blanks) mixed with arbitrary bytes.
fn message_bytes() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(b"\r".to_vec()),
        Just(b"\n".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b".".to_vec()),
        Just(b"..".to_vec()),
        Just(b" ".to_vec()),
        Just(b"\t".to_vec()),
        Just(b":".to_vec()),
        Just(b"From ".to_vec()),
        Just(b"To: a@x.example, root".to_vec()),
        Just(b"Bcc: b@x.example".to_vec()),
        Just(b"bcc:".to_vec()),
        Just(b"Resent-Bcc: c@x.example".to_vec()),
        Just(b"Subject".to_vec()),
        "[a-zA-Z0-9]{1,6}".prop_map(String::into_bytes),
        any::<u8>().prop_map(|b| vec![b]),
    ];
    prop::collection::vec(piece, 0..40).prop_map(|pieces| pieces.concat())
}

fn chunk_sizes() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(1usize..70, 1..8)
}

/// Strings made of the characters that matter to address syntax.
fn address_like() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9@.<>\"\\\\ ,:;()\\[\\]\\-_+é\t\r\n]{0,40}"
}

/// Well-formed addresses of many shapes, so the round trip is exercised.
fn valid_address() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9!#$%&'*+/=?^_`{|}~]{1,8}(\\.[a-zé0-9-]{1,5}){0,2}@[a-z0-9]{1,8}(\\.[a-zü]{2,5}){0,3}\\.?",
        "<[a-z]{1,8}@[a-z]{1,8}\\.example>",
        "\"([a-z @.,]|\\\\[\\\\\"]){1,8}\"@[a-z]{1,8}\\.example",
        "[a-z]{1,12}",
        "[a-z]{1,8}@\\[192\\.0\\.2\\.[1-9][0-9]?\\]",
        "<@[a-z]{1,5}\\.example:[a-z]{1,5}@[a-z]{1,5}\\.example>",
    ]
}

/// RFC 5322 CFWS: nothing, white space, or comments (nested too), with
/// the characters that mean something elsewhere in an address inside.
fn cfws() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        r"[ \t]{1,3}",
        r"[ \t]?\([a-z !.@<>,;:\[\]]{0,8}\)[ \t]?",
        r"\([a-z ]{0,4}\([a-z@<>]{0,4}\)[a-z]{0,3}\)",
    ]
}

/// A dot-atom address and the same address as a header may write it:
/// CFWS around every dot and the '@' (the obsolete forms real mailers
/// still send), around the whole, or inside an angle address after a
/// display name. Returns (plain, written).
fn address_with_cfws() -> impl Strategy<Value = (String, String)> {
    let words = prop::collection::vec("[a-z0-9][a-z0-9+_-]{0,5}", 1..4);
    let labels = prop::collection::vec("[a-z0-9]{1,6}", 1..4);
    let gaps = prop::collection::vec(cfws(), 16);
    (words, labels, gaps, any::<bool>()).prop_map(|(words, labels, gaps, angle)| {
        let mut gap = gaps.into_iter().cycle();
        let plain = format!("{}@{}", words.join("."), labels.join("."));
        let mut written = String::new();
        for (i, w) in words.iter().enumerate() {
            if i > 0 {
                written.push_str(&gap.next().unwrap());
                written.push('.');
            }
            written.push_str(&gap.next().unwrap());
            written.push_str(w);
        }
        written.push_str(&gap.next().unwrap());
        written.push('@');
        for (i, l) in labels.iter().enumerate() {
            if i > 0 {
                written.push_str(&gap.next().unwrap());
                written.push('.');
            }
            written.push_str(&gap.next().unwrap());
            written.push_str(l);
        }
        written.push_str(&gap.next().unwrap());
        let written = match angle {
            true => format!(
                "Some Name{}<{written}>{}",
                gap.next().unwrap(),
                gap.next().unwrap()
            ),
            false => written,
        };
        (plain, written)
    })
}

/// The recipients `-t` reads from a To: field holding `value`.
fn to_field_recipients(value: &str) -> std::result::Result<Vec<Address>, String> {
    let data = format!("To: {value}\n\nbody\n");
    let mut intake = Intake::new(data.as_bytes(), IntakeOptions::default());
    let header = intake.read_header().map_err(|e| e.to_string())?;
    header.recipients().map_err(|e| e.to_string())
}

fn assert_round_trip(a: &Address) {
    let shown = a.to_string();
    let again =
        Address::parse(&shown).unwrap_or_else(|e| panic!("{shown:?} no longer parses: {e}"));
    assert_eq!(&again, a);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn address_parsers_never_panic_on_strings(s in any::<String>()) {
        let _ = Address::parse(&s);
        let _ = address::parse_list(&s);
        let _ = address::parse_sender(&s);
    }

    #[test]
    fn address_parsers_never_panic_on_bytes(b in prop::collection::vec(any::<u8>(), 0..120)) {
        let s = String::from_utf8_lossy(&b);
        let _ = Address::parse(&s);
        let _ = address::parse_list(&s);
        let _ = address::parse_sender(&s);
    }

    #[test]
    fn parsed_addresses_print_back_to_themselves(s in address_like()) {
        if let Ok(a) = Address::parse(&s) {
            assert_round_trip(&a);
        }
        if let Ok(list) = address::parse_list(&s) {
            prop_assert!(!list.is_empty());
            list.iter().for_each(assert_round_trip);
        }
        if let Ok(Some(a)) = address::parse_sender(&s) {
            assert_round_trip(&a);
        }
    }

    #[test]
    fn comments_and_white_space_inside_a_header_address_are_not_part_of_it(
        (plain, written) in address_with_cfws()
    ) {
        let want = Address::parse(&plain).unwrap_or_else(|e| panic!("{plain:?}: {e}"));
        let got = to_field_recipients(&written)
            .unwrap_or_else(|e| panic!("To: {written:?} refused: {e}"));
        prop_assert_eq!(got, vec![want]);
    }

    #[test]
    fn valid_addresses_parse_and_round_trip(s in valid_address()) {
        let a = Address::parse(&s).unwrap_or_else(|e| panic!("{s:?} rejected: {e}"));
        assert_round_trip(&a);
        prop_assert!(!a.to_string().starts_with('-'));
        prop_assert_eq!(address::parse_list(&s).unwrap(), vec![a.clone()]);
        prop_assert_eq!(address::parse_sender(&s).unwrap(), Some(a));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn intake_never_panics_on_arbitrary_bytes(
        data in prop::collection::vec(any::<u8>(), 0..300),
        sizes in chunk_sizes(),
        ignore_dots in any::<bool>(),
    ) {
        let _ = run_intake(&data, &sizes, ignore_dots);
    }

    #[test]
    fn intake_with_ignore_dots_matches_the_model(data in message_bytes(), sizes in chunk_sizes()) {
        let got = run_intake(&data, &sizes, true).unwrap();
        let want = model(&data);
        prop_assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&want),
            "input {:?}",
            String::from_utf8_lossy(&data)
        );
    }

    #[test]
    fn chunking_does_not_change_the_result(
        data in message_bytes(),
        sizes in chunk_sizes(),
        ignore_dots in any::<bool>(),
    ) {
        let whole = run_intake(&data, &[usize::MAX], ignore_dots);
        let chunked = run_intake(&data, &sizes, ignore_dots);
        prop_assert_eq!(whole, chunked);
    }

    #[test]
    fn dot_rule_leaves_no_lone_dot_line(data in message_bytes(), sizes in chunk_sizes()) {
        let got = run_intake(&data, &sizes, false).unwrap();
        prop_assert!(got.split_inclusive(|&b| b == b'\n').all(|line| line != b".\n"));
        prop_assert!(got.is_empty() || got.ends_with(b"\n"));
        if !data.contains(&b'.') {
            prop_assert_eq!(got, run_intake(&data, &sizes, true).unwrap());
        }
    }

    #[test]
    fn recipients_never_panic_on_arbitrary_header_text(
        to in any::<String>(),
        cc in prop::collection::vec(any::<u8>(), 0..120),
        resent in any::<bool>(),
    ) {
        let mut data = Vec::new();
        data.extend_from_slice(if resent { b"Resent-To: " } else { b"To: " });
        data.extend_from_slice(to.as_bytes());
        data.extend_from_slice(b"\nCc: ");
        data.extend_from_slice(&cc);
        data.extend_from_slice(b"\nBcc: ");
        data.extend_from_slice(to.as_bytes());
        data.extend_from_slice(b"\n\nbody\n");
        let mut intake = Intake::new(&data[..], IntakeOptions::default());
        let header = intake.read_header().unwrap();
        if let Ok(found) = header.recipients() {
            found.iter().for_each(assert_round_trip);
        }
    }
}
