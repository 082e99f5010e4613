//! Property tests for the conversion of 8-bit mail to 7-bit MIME
//! (spoolmail::smtp::downgrade, issue 24): for any message — 8-bit,
//! NULs, long lines, no MIME, nested multiparts and embedded messages —
//! the converted form is 7-bit with no line over 998 octets, and a real
//! MIME decoder (the mailparse crate, not ours) reads the same content
//! out of it as out of the original, part for part.

use proptest::prelude::*;
use spoolmail::smtp::downgrade::{convert, scan};

/// A MIME body as generated: a leaf with its lines (any octets but CR
/// and LF) and its declared encoding, a multipart, or an embedded
/// message.
#[derive(Debug, Clone)]
enum Tree {
    Leaf {
        lines: Vec<Vec<u8>>,
        encoding: Option<&'static str>,
    },
    Multipart(Vec<Tree>),
    Message(Box<Tree>),
}

fn line() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        // Mostly text, some UTF-8, some of anything.
        4 => proptest::collection::vec(
            prop_oneof![
                6 => 0x20u8..0x7f,
                1 => Just(b'\t'),
                2 => 0x80u8..=0xff,
                1 => Just(0u8),
                1 => Just(b'='),
            ],
            0..120,
        ),
        1 => "[a-z\u{e9}\u{1F600} ]{900,1400}".prop_map(String::into_bytes),
    ]
    .prop_map(|mut l| {
        l.retain(|&b| b != b'\r' && b != b'\n');
        // No line of the content may look like a delimiter.
        if l.starts_with(b"--") {
            l.insert(0, b'x');
        }
        l
    })
}

fn tree() -> impl Strategy<Value = Tree> {
    let leaf = (
        proptest::collection::vec(line(), 0..8),
        prop_oneof![
            Just(None),
            Just(Some("7bit")),
            Just(Some("8bit")),
            Just(Some("binary"))
        ],
    )
        .prop_map(|(lines, encoding)| Tree::Leaf { lines, encoding });
    leaf.prop_recursive(3, 12, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 1..4).prop_map(Tree::Multipart),
            inner.prop_map(|t| Tree::Message(Box::new(t))),
        ]
    })
}

/// The part's header fields and body (no final newline).
fn render(tree: &Tree, depth: usize, out: &mut Vec<u8>) {
    match tree {
        Tree::Leaf { lines, encoding } => {
            out.extend_from_slice(b"Content-Type: text/plain; charset=utf-8\n");
            if let Some(e) = encoding {
                out.extend_from_slice(format!("Content-Transfer-Encoding: {e}\n").as_bytes());
            }
            out.push(b'\n');
            out.extend_from_slice(&lines.join(&b'\n'));
        }
        Tree::Multipart(parts) => {
            let b = format!("=_b{depth}_x");
            out.extend_from_slice(
                format!("Content-Type: multipart/mixed;\n boundary=\"{b}\"\n\npreamble \u{e9}\n")
                    .as_bytes(),
            );
            for p in parts {
                out.extend_from_slice(format!("--{b}\n").as_bytes());
                render(p, depth + 1, out);
                out.push(b'\n');
            }
            out.extend_from_slice(format!("--{b}--\nepilogue\n").as_bytes());
        }
        Tree::Message(inner) => {
            out.extend_from_slice(
                b"Content-Type: message/rfc822\nContent-Transfer-Encoding: 8bit\n\n",
            );
            out.extend_from_slice(b"Subject: inner\nMIME-Version: 1.0\n");
            render(inner, depth + 1, out);
        }
    }
}

/// The decoded leaves of a parsed message, in order, line endings as LF
/// (the generated content holds no CR).
fn leaves(mail: &mailparse::ParsedMail, out: &mut Vec<Vec<u8>>) {
    let ctype = mail.ctype.mimetype.to_ascii_lowercase();
    if !mail.subparts.is_empty() {
        for p in &mail.subparts {
            leaves(p, out);
        }
    } else if ctype == "message/rfc822" {
        let raw = mail.get_body_raw().expect("body");
        let inner = mailparse::parse_mail(&raw).expect("embedded message");
        leaves(&inner, out);
    } else if ctype.starts_with("multipart/") {
        // An empty multipart: nothing to compare.
    } else {
        let body = mail.get_body_raw().expect("decodable body");
        out.push(lf(&body));
    }
}

fn lf(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\r' && bytes.get(i + 1) == Some(&b'\n') {
            i += 1;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

fn converted(message: &[u8]) -> Vec<u8> {
    let content = scan(&mut &message[..]).expect("scan");
    let mut out = Vec::new();
    convert(&mut &message[..], &content, false, &mut out).expect("convert");
    out
}

fn assert_seven_bit(out: &[u8]) {
    assert!(
        out.iter().all(|&b| b < 128 && b != 0),
        "8-bit or NUL in the converted form"
    );
    for l in out.split(|&b| b == b'\n') {
        assert!(l.len() <= 998, "a line of {} octets", l.len());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn a_message_without_mime_converts_and_decodes_back(
        lines in proptest::collection::vec(line(), 0..12)
    ) {
        let mut body = lines.join(&b'\n');
        body.push(b'\n');
        let mut message = b"Subject: no mime\nFrom: a@x.test\n\n".to_vec();
        message.extend_from_slice(&body);
        let out = converted(&message);
        assert_seven_bit(&out);
        let parsed = mailparse::parse_mail(&out).expect("parses");
        let decoded = parsed.get_body_raw().expect("decodes");
        prop_assert_eq!(lf(&decoded), body);
    }

    #[test]
    fn any_bytes_convert_to_7bit_unless_the_top_header_is_8bit(
        input in proptest::collection::vec(
            prop_oneof![
                Just(b"\n".to_vec()),
                Just(b"\r".to_vec()),
                Just(b"--b\n".to_vec()),
                Just(b"Content-Type: multipart/mixed; boundary=b\n".to_vec()),
                Just(b"Content-Type: message/rfc822\n".to_vec()),
                Just(b"Content-Transfer-Encoding: base64\n".to_vec()),
                Just(b"Content-Transfer-Encoding: quoted-printable\n".to_vec()),
                proptest::collection::vec(any::<u8>(), 0..40),
            ],
            0..60,
        )
    ) {
        let message = input.concat();
        let content = scan(&mut &message[..]).expect("scan");
        let mut out = Vec::new();
        convert(&mut &message[..], &content, false, &mut out).expect("convert");
        prop_assert!(!out.contains(&0), "a NUL went through");
        if !content.eight_bit_header {
            prop_assert!(out.is_ascii(), "8-bit went through");
        }
    }

    #[test]
    fn a_mime_message_converts_and_decodes_back_part_for_part(tree in tree()) {
        let mut message = b"Subject: mime\nMIME-Version: 1.0\n".to_vec();
        render(&tree, 0, &mut message);
        message.push(b'\n');
        let out = converted(&message);
        assert_seven_bit(&out);
        let mut want = Vec::new();
        leaves(&mailparse::parse_mail(&message).expect("original parses"), &mut want);
        let mut got = Vec::new();
        leaves(&mailparse::parse_mail(&out).expect("converted parses"), &mut got);
        prop_assert_eq!(got, want);
    }
}

#[test]
fn a_line_longer_than_a_read_piece_converts_and_decodes_back() {
    // Over 64 KiB without a newline: read in pieces, encoded in one go.
    let mut body: Vec<u8> = "\u{e9}t\u{e9} "
        .repeat(40_000)
        .into_bytes()
        .into_iter()
        .chain([0u8, b'x', b' '])
        .collect();
    body.push(b'\n');
    let mut message = b"Subject: long\n\n".to_vec();
    message.extend_from_slice(&body);
    let out = converted(&message);
    assert_seven_bit(&out);
    let parsed = mailparse::parse_mail(&out).expect("parses");
    assert_eq!(lf(&parsed.get_body_raw().unwrap()), body);
}
