//! Qualifying bare local names in address header fields, as sendmail and
//! Postfix do for locally submitted mail: `To: root` leaves this host as
//! `To: root@HOSTNAME`, so that a reply from elsewhere comes back here
//! instead of going to the replier's own `root`.
//!
//! Only what is certainly a bare local name is touched — an angle address
//! without `@` (`Bob <bob>`) or a lone local part (`root`); display
//! names, comments, quoting, folding and group names stay byte for byte.
//! The field is read by `address::scan_address_list`, the scanner
//! masquerading uses too, so both agree with the address parser on what
//! a mailbox is.

use crate::address::{Address, ListPiece, scan_address_list};

/// Fields holding address lists (Bcc is never written at all).
const ADDRESS_FIELDS: [&str; 9] = [
    "From",
    "Sender",
    "Reply-To",
    "To",
    "Cc",
    "Resent-From",
    "Resent-Sender",
    "Resent-To",
    "Resent-Cc",
];

/// Whether a field with this name holds addresses to qualify.
pub fn is_address_field(name: &[u8]) -> bool {
    ADDRESS_FIELDS
        .iter()
        .any(|f| name.eq_ignore_ascii_case(f.as_bytes()))
}

/// The raw field (`Name: value\n`, maybe folded) with `@hostname` added
/// to every bare local name; None when nothing needed it.
pub fn qualify_field(raw: &[u8], hostname: &str) -> Option<Vec<u8>> {
    let colon = raw.iter().position(|&b| b == b':')?;
    if hostname.is_empty() {
        return None;
    }
    let inserts = bare_names(&raw[colon + 1..]);
    if inserts.is_empty() {
        return None;
    }
    let mut out = raw.to_vec();
    let at = format!("@{hostname}");
    for pos in inserts.into_iter().rev() {
        let pos = colon + 1 + pos;
        out.splice(pos..pos, at.bytes());
    }
    Some(out)
}

/// One address-list item being scanned.
#[derive(Default)]
struct Item {
    /// Significant text outside comments (for the lone-local-part case).
    text: Vec<u8>,
    /// Just after the last significant byte.
    end: usize,
    /// Content of an angle address and where `@hostname` goes in it:
    /// just after its last significant byte (not at the '>', which may
    /// follow blanks or a comment: `<bob >` becomes `<bob@host >`).
    angle: Option<(Vec<u8>, usize)>,
}

/// Offsets (into `value`) where `@hostname` belongs.
fn bare_names(value: &[u8]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut item = Item::default();
    let mut angle: Option<(Vec<u8>, usize)> = None;
    let finish = |item: &mut Item, out: &mut Vec<usize>| {
        let item = std::mem::take(item);
        if let Some((inside, close)) = item.angle {
            if is_bare(&inside) {
                out.push(close);
            }
        } else if is_bare(&item.text) {
            out.push(item.end);
        }
    };
    scan_address_list(value, |piece| match piece {
        ListPiece::Byte { at, .. } => push(&mut item, &mut angle, value[at], at),
        ListPiece::Gap { .. } => {}
        ListPiece::OpenAngle { at } => angle = Some((Vec::new(), at + 1)),
        ListPiece::CloseAngle { at } => {
            item.angle = angle.take();
            item.end = at + 1;
        }
        ListPiece::End => finish(&mut item, &mut out),
        // A group's name ends here: it is not an address.
        ListPiece::GroupName => item = Item::default(),
        // The End before it closed the mailbox; an unfinished one is
        // not an address.
        ListPiece::GroupEnd | ListPiece::Unterminated(_) => {}
    });
    out
}

/// Keeps a significant byte.
fn push(item: &mut Item, angle: &mut Option<(Vec<u8>, usize)>, b: u8, i: usize) {
    match angle {
        Some((inside, end)) => {
            inside.push(b);
            *end = i + 1;
        }
        None => {
            item.text.push(b);
            item.end = i + 1;
        }
    }
}

/// A valid local part with no domain, as the address parser decides it:
/// an '@' inside a quoted local part (`"a@b"`) does not make a domain.
/// White space is what the address parser takes for it, Unicode's
/// included (a no-break space pasted before a name): an item of nothing
/// else names no one.
fn is_bare(text: &[u8]) -> bool {
    std::str::from_utf8(text)
        .ok()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .and_then(|t| Address::parse(t).ok())
        .is_some_and(|a| a.domain().is_none())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(field: &str) -> String {
        match qualify_field(field.as_bytes(), "h.example") {
            Some(v) => String::from_utf8(v).unwrap(),
            None => field.to_string(),
        }
    }

    /// Found by the long qualify fuzz run: a backslash before a line
    /// break escapes the first byte after it (the value is read with its
    /// line breaks removed), here a quote: the quoted string goes on,
    /// and the names after it are still bare.
    #[test]
    fn a_backslash_before_a_line_break_escapes_what_follows_it() {
        assert_eq!(
            q("To: t,\"a\\\n\"b, c\", d\n"),
            "To: t@h.example,\"a\\\n\"b, c\"@h.example, d@h.example\n"
        );
    }

    #[test]
    fn unicode_white_space_alone_is_not_a_name() {
        // Found by the qualify fuzz target: the group held only a no-break
        // space, which the qualifier took for a name while the address
        // parser takes it for white space.
        let field = "To: \u{a0}%,:\u{a0} ;0%;\n";
        assert_eq!(q(field), "To: \u{a0}%@h.example,:\u{a0} ;0%@h.example;\n");
        let value = q(field).trim_start_matches("To: ").trim_end().to_string();
        let got = crate::address::parse_list(&value).unwrap();
        assert_eq!(got.len(), 2);
    }

    #[test]
    fn bare_names_get_the_hostname_and_the_rest_stays() {
        assert_eq!(q("To: root\n"), "To: root@h.example\n");
        assert_eq!(
            q("To: root, Bob <bob>, x@y.example (X), \"a, b\" <c@d>\n"),
            "To: root@h.example, Bob <bob@h.example>, x@y.example (X), \"a, b\" <c@d>\n"
        );
        assert_eq!(
            q("Cc: alice (the boss)\n"),
            "Cc: alice@h.example (the boss)\n"
        );
        assert_eq!(
            q("To: first,\n\tsecond\n"),
            "To: first@h.example,\n\tsecond@h.example\n"
        );
    }

    #[test]
    fn groups_empty_and_odd_values_are_left_alone() {
        for field in [
            "To: undisclosed-recipients:;\n",
            "To: \n",
            "From: <>\n",
            "To: Team: a@b.example;\n",
            "To: \"unterminated\n",
            "To: x@y.example\n",
        ] {
            assert_eq!(q(field), field);
        }
        assert_eq!(q("To: Team: a, b@c;\n"), "To: Team: a@h.example, b@c;\n");
    }

    /// fuzz/regressions/qualify/angle-with-trailing-blank: the hostname
    /// went before the '>', after the blank, making `<dc @host>` of a
    /// valid `<dc >`.
    #[test]
    fn hostname_goes_after_the_last_byte_inside_the_angle() {
        assert_eq!(q("To: <dc >\n"), "To: <dc@h.example >\n");
        assert_eq!(q("To: Bob <bob (x)>\n"), "To: Bob <bob@h.example (x)>\n");
        let fuzzed = include_bytes!("../../fuzz/regressions/qualify/angle-with-trailing-blank");
        let out = qualify_field(fuzzed, "h.example").unwrap();
        assert!(out.ends_with(b"@<dc@h.example >\n"), "{out:?}");
    }

    /// fuzz/regressions/qualify/domain-literal-spans-commas: a '[' outside
    /// quotes opens a domain literal up to the next ']' for the address
    /// parser, so the names inside are not list items and must not be
    /// qualified (that made a parsable field unparsable).
    #[test]
    fn a_domain_literal_is_one_piece() {
        assert_eq!(q("To: x[a, b]y: c\n"), "To: x[a, b]y: c@h.example\n");
        assert_eq!(q("To: root@[192.0.2.1]\n"), "To: root@[192.0.2.1]\n");
        assert_eq!(q("To: [a, b\n"), "To: [a, b\n");
        let fuzzed = include_bytes!("../../fuzz/regressions/qualify/domain-literal-spans-commas");
        let out = qualify_field(fuzzed, "h.example").unwrap();
        assert!(out.ends_with(b": roC@h.example"), "{out:?}");
        assert_eq!(out.len(), fuzzed.len() + "@h.example".len());
    }

    /// One scanner with masquerading (`address::scan_address_list`): a
    /// '[' inside an angle address opens a domain literal too, as the
    /// address parser reads it (RFC 5322 dtext holds '>' and ','). This
    /// qualifier used to close the angle address at the '>' inside the
    /// literal and qualify `y`, which the parser reads as part of an
    /// unterminated angle address.
    #[test]
    fn a_domain_literal_inside_an_angle_address_is_one_piece() {
        assert_eq!(q("To: <x[>], y\n"), "To: <x[>], y\n");
        assert!(crate::address::parse_list("<x[>], y").is_err());
        assert_eq!(
            q("To: Bob <bob>, <c@[192.0.2.1]>, d\n"),
            "To: Bob <bob@h.example>, <c@[192.0.2.1]>, d@h.example\n"
        );
    }

    /// fuzz/regressions/qualify/quoted-at-is-bare: a quoted local part
    /// holding '@' (and folded) has no domain, for the address parser as
    /// here: it was left unqualified.
    #[test]
    fn an_at_inside_quotes_is_still_a_bare_name() {
        assert_eq!(q("To: \"a@b\"\n"), "To: \"a@b\"@h.example\n");
        assert_eq!(q("To: X <\"a@b\">\n"), "To: X <\"a@b\"@h.example>\n");
        // Folded inside the quotes: read unfolded, as recipients() does.
        assert_eq!(q("To: \"a\n b\"\n"), "To: \"a\n b\"@h.example\n");
        let fuzzed = include_bytes!("../../fuzz/regressions/qualify/quoted-at-is-bare");
        let out = qualify_field(fuzzed, "h.example").unwrap();
        assert!(out.ends_with(b"Ky\"@h.example>\n"), "{out:?}");
    }
}
