//! RFC 5321 mailbox addresses: the [`Address`] type and every parser that
//! turns caller-supplied text (command-line recipients, the `-f`/`-r`
//! sender, `-t` header fields) into one.
//!
//! Invariant owned here: an [`Address`] value is always valid. Its local
//! part is an RFC 5321 Dot-string or Quoted-string (RFC 6531 UTF-8
//! allowed), its domain (if any) a host name or an address literal, it
//! holds no control character and never starts with `-`, and it fits the
//! RFC 5321 length limits. Code further down (SMTP, local delivery, pipes)
//! may therefore put an address on a wire or in an argv without
//! re-checking it. All input is hostile: nothing here panics, whatever
//! the bytes.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use crate::error::{Error, Result};

/// RFC 5321 §4.5.3.1.1: at most 64 octets of local part.
const MAX_LOCAL: usize = 64;
/// RFC 5321 §4.5.3.1.2: at most 255 octets of domain.
const MAX_DOMAIN: usize = 255;
/// RFC 5321 §4.5.3.1.3 limits a path to 256 octets including the angle
/// brackets, which leaves 254 for the address itself.
const MAX_ADDRESS: usize = 254;
/// RFC 1035: a DNS label is at most 63 octets.
const MAX_LABEL: usize = 63;
/// How much of a rejected input an error message quotes, in characters:
/// enough to recognise it, short enough to keep the message one short line.
const SHOWN_INPUT: usize = 100;

/// A validated envelope address: a local part and, unless it is a bare
/// local name such as `root`, a domain.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Address {
    /// Dot-string or Quoted-string, quotes kept as received.
    local: String,
    /// Host name (trailing dot removed) or address literal with brackets.
    domain: Option<String>,
}

impl Address {
    /// One address: "user@example.com", "<user@example.com>", or a bare
    /// local name "root" (no domain; local delivery later). A source route
    /// ("<@a,@b:user@c>") is accepted and dropped, as RFC 5321 §C allows.
    /// Display names are not accepted here; see [`parse_list`].
    pub fn parse(s: &str) -> Result<Address> {
        parse_address(s).map_err(|reason| invalid(s, &reason))
    }

    /// The local part, as stored (a Quoted-string keeps its quotes).
    pub fn local_part(&self) -> &str {
        &self.local
    }

    /// The domain, or `None` for a bare local name.
    pub fn domain(&self) -> Option<&str> {
        self.domain.as_deref()
    }

    /// True when the address has a domain.
    pub fn is_qualified(&self) -> bool {
        self.domain.is_some()
    }

    /// Adds "@hostname" to a bare local name; a qualified address is
    /// returned unchanged. The hostname comes from the configuration or
    /// the system, not from the caller, so it is trusted; a trailing dot
    /// is removed, and an empty hostname leaves the address unqualified
    /// rather than producing "user@".
    pub fn qualified(&self, hostname: &str) -> Address {
        let hostname = hostname.strip_suffix('.').unwrap_or(hostname);
        if self.domain.is_some() || hostname.is_empty() {
            return self.clone();
        }
        Address {
            local: self.local.clone(),
            domain: Some(hostname.to_string()),
        }
    }

    /// True when local part or domain has non-ASCII (needs SMTPUTF8).
    pub fn needs_smtputf8(&self) -> bool {
        !self.local.is_ascii() || self.domain.as_deref().is_some_and(|d| !d.is_ascii())
    }
}

impl fmt::Display for Address {
    /// "local@domain" or "local", never with angle brackets. The output
    /// parses back to the same [`Address`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.local)?;
        if let Some(domain) = &self.domain {
            write!(f, "@{domain}")?;
        }
        Ok(())
    }
}

/// A command-line recipient argument: sendmail accepts several addresses
/// separated by commas, and RFC 5322 forms such as "Full Name <user@host>".
/// Returns every address (validated with Address rules). Empty list items
/// are skipped; an argument with no address at all is an error.
pub fn parse_list(s: &str) -> Result<Vec<Address>> {
    reject_option_like(s)?;
    let found = parse_mailboxes(s)?;
    if found.is_empty() {
        return Err(invalid(s, "no address"));
    }
    Ok(found)
}

/// The envelope sender of -f/-r: "" or "<>" is the null sender
/// (Ok(None)); otherwise as Address::parse (also "Name <addr>" accepted).
pub fn parse_sender(s: &str) -> Result<Option<Address>> {
    let trimmed = s.trim();
    if trimmed.is_empty() || trimmed == "<>" {
        return Ok(None);
    }
    reject_option_like(s)?;
    let mut found = parse_mailboxes(trimmed)?;
    match found.len() {
        0 => Err(invalid(s, "no address")),
        1 => Ok(found.pop()),
        _ => Err(invalid(s, "more than one address")),
    }
}

/// Every mailbox in an RFC 5322 address list (a command-line argument or
/// an unfolded To/Cc/Bcc value): comma-separated, with display names,
/// comments and groups. Unlike [`parse_list`], an empty list is fine
/// ("undisclosed-recipients:;" names nobody).
///
/// This is a small hand-written scanner rather than `mailparse::addrparse`
/// because that one insists on an '@' in every mailbox (so "root" and
/// "Cron Daemon <root>" fail), does not skip empty list items, and cannot
/// read an unbracketed quoted local part; bare local names are what cron
/// and fail2ban send.
pub(crate) fn parse_mailboxes(s: &str) -> Result<Vec<Address>> {
    // A display name or comment is thrown away, so it cannot smuggle
    // anything further; still, line breaks and NULs in a recipient list
    // are never innocent.
    if s.chars().any(|c| c.is_control() && c != '\t') {
        return Err(invalid(s, "contains a control character"));
    }
    let bytes = s.as_bytes();
    let mut list = MailboxList::default();
    // The first problem wins: the scanner reads to the end regardless.
    let mut trouble: Option<Error> = None;
    scan_address_list(bytes, |piece| {
        if trouble.is_none() {
            trouble = list
                .take(piece, bytes)
                .map_err(|why| match why {
                    Why::Address(e) => e,
                    Why::Text(what) => invalid(s, what),
                })
                .err();
        }
    });
    match trouble {
        Some(e) => Err(e),
        None => Ok(list.found),
    }
}

/// Why a list did not parse: one of its addresses, or its shape.
enum Why {
    Address(Error),
    Text(&'static str),
}

/// The mailboxes of a list as [`parse_mailboxes`] builds them from the
/// scanner's pieces.
#[derive(Default)]
struct MailboxList {
    found: Vec<Address>,
    /// The current mailbox's text outside comments and angle brackets:
    /// the addr-spec itself, or the display name when an angle-addr
    /// follows.
    item: Vec<u8>,
    /// The text between `<` and `>`, once one was opened.
    angle: Option<Vec<u8>>,
    /// The angle address was closed: only a separator, a comment or
    /// space may follow.
    closed: bool,
    /// The item holds an '@' (so a ':' belongs to the address: a source
    /// route, or text the address rules will refuse), kept as bytes are
    /// added rather than searched for: a long name followed by a long run
    /// of ':' (hostile headers are up to 256 KiB) costs one pass.
    at: bool,
    in_group: bool,
}

impl MailboxList {
    fn take(&mut self, piece: ListPiece, bytes: &[u8]) -> std::result::Result<(), Why> {
        match piece {
            ListPiece::Byte { in_angle: true, at } => self.angle_text().push(bytes[at]),
            ListPiece::Gap { in_angle: true } => self.angle_text().push(b' '),
            // A comment separates words as white space does.
            ListPiece::Gap { in_angle: false } => self.item.push(b' '),
            ListPiece::Byte { .. } | ListPiece::OpenAngle { .. } | ListPiece::GroupName
                if self.closed =>
            {
                return Err(Why::Text("text after '>'"));
            }
            ListPiece::Byte { at, .. } => {
                self.at |= bytes[at] == b'@';
                self.item.push(bytes[at]);
            }
            ListPiece::OpenAngle { .. } => self.angle = Some(Vec::new()),
            ListPiece::CloseAngle { .. } => self.closed = true,
            // "name: a, b;" opens a group, unless the colon belongs to an
            // address (a source route has an '@' first).
            ListPiece::GroupName if self.in_group || self.at => self.item.push(b':'),
            ListPiece::GroupName => {
                self.item.clear();
                self.at = false;
                self.in_group = true;
            }
            ListPiece::End => self.finish()?,
            ListPiece::GroupEnd => self.in_group = false,
            // An unterminated group still names its members (mail readers
            // are lenient), but nothing else may be left open.
            ListPiece::Unterminated(what) => return Err(Why::Text(what)),
        }
        Ok(())
    }

    fn angle_text(&mut self) -> &mut Vec<u8> {
        self.angle.get_or_insert_with(Vec::new)
    }

    /// Ends the mailbox being read: validates its address, if it has one.
    fn finish(&mut self) -> std::result::Result<(), Why> {
        let text = String::from_utf8_lossy(&std::mem::take(&mut self.item)).into_owned();
        let inner = self.angle.take();
        let had_angle = inner.is_some();
        (self.closed, self.at) = (false, false);
        let address = match inner {
            // The text before "<...>" was a display name; it is not needed.
            Some(inner) => without_fws(&String::from_utf8_lossy(&inner)),
            None => without_fws(&text),
        };
        if had_angle || !address.is_empty() {
            self.found
                .push(Address::parse(&address).map_err(Why::Address)?);
        }
        Ok(())
    }
}

/// An addr-spec as a header writes it, its comments already replaced by
/// a space, without the folding white space RFC 5322 §3.4.1 allows around
/// its parts — `user (x) @ example.com` and the obsolete `user . name @
/// example . com`, as real mailers still send them, are `user@example.com`
/// and `user.name@example.com`. White space between two words is kept
/// (as one space), so a phrase that is not an address ("John Smith")
/// still fails as one. Quoted strings and domain literals are copied as
/// they are.
pub(crate) fn without_fws(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut gap = false;
    let mut chars = s.chars();
    let separator = |c: char| matches!(c, '.' | '@' | '<' | '>' | ':' | ',');
    while let Some(c) = chars.next() {
        if c.is_whitespace() {
            gap = true;
            continue;
        }
        if std::mem::take(&mut gap) && !out.is_empty() && !out.ends_with(separator) && !separator(c)
        {
            out.push(' ');
        }
        match c {
            '"' => {
                // The quoted string as it is (None: unterminated, left
                // for the address rules to refuse).
                let _ = copy_quoted(&mut chars, &mut out);
            }
            '[' => {
                out.push('[');
                let _ = copy_until(&mut chars, ']', &mut out);
            }
            _ => out.push(c),
        }
    }
    out
}

/// A path of an SMTP command (`-bs`): `<user@example.com>`, where a
/// client may still write RFC 5322 comments and white space inside the
/// brackets (`<user(x)@example.com>`); they are dropped as a header's
/// would be. A comment that does not end leaves the path as it was, for
/// the address rules to refuse.
pub(crate) fn path_without_cfws(path: &str) -> String {
    let mut text = String::with_capacity(path.len());
    let mut chars = path.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                let _ = copy_quoted(&mut chars, &mut text);
            }
            '(' => {
                if skip_comment(&mut chars).is_none() {
                    return path.to_string();
                }
                text.push(' ');
            }
            _ => text.push(c),
        }
    }
    without_fws(&text)
}

/// One piece of a header's address list, as [`scan_address_list`] reads
/// it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ListPiece {
    /// A significant byte at this offset: part of a word, of a quoted
    /// string or of a domain literal (its quotes and brackets included),
    /// inside an angle address or not.
    Byte { at: usize, in_angle: bool },
    /// White space, or the start of a comment: a break between words.
    Gap { in_angle: bool },
    /// The `<` at this offset opened an angle address.
    OpenAngle { at: usize },
    /// The `>` at this offset closed it.
    CloseAngle { at: usize },
    /// A `,` or `;` outside an angle address, or the end of a value that
    /// leaves nothing open: the mailbox being read ends.
    End,
    /// A `:` outside an angle address: what came before it was a
    /// group's name, not a mailbox.
    GroupName,
    /// The `;` (just after its [`ListPiece::End`]) closed a group.
    GroupEnd,
    /// The value ended inside a comment, a quoted string, a domain
    /// literal or an angle address (the innermost one named), in place of
    /// a final [`ListPiece::End`].
    Unterminated(&'static str),
}

/// Reads a raw header field value (folded, bytes) as an RFC 5322 address
/// list, calling `each` for every piece in order: the one scanner for
/// code that must find the mailboxes of a field *in place* to rewrite it
/// byte for byte (qualification, masquerading), so that what counts as
/// a separator, a quoted string, a comment or a domain literal is decided
/// once, as [`parse_mailboxes`] decides it:
///
/// - a line break is nothing (the value is read unfolded, so `\<LF>"`
///   escapes the quote after the break);
/// - comments nest, and `\` escapes in comments and quoted strings;
/// - `[` opens a domain literal up to the next `]`, inside an angle
///   address too (RFC 5322 dtext includes `>`, `,` and `:`);
/// - `,` `;` `:` separate only outside angle addresses, quotes, literals
///   and comments; a second `<` inside an angle address is a byte.
///
/// A value that ends inside an angle address, a comment, a quoted string
/// or a literal gets no final [`ListPiece::End`] but
/// [`ListPiece::Unterminated`]: its last mailbox is not one the address
/// parser reads.
pub(crate) fn scan_address_list(value: &[u8], mut each: impl FnMut(ListPiece)) {
    let mut in_angle = false;
    let mut comment = 0usize;
    let (mut quoted, mut literal, mut escaped) = (false, false, false);
    for (at, &b) in value.iter().enumerate() {
        if b == b'\n' {
            continue;
        }
        let byte = ListPiece::Byte { at, in_angle };
        if escaped {
            escaped = false;
            if comment == 0 {
                each(byte);
            }
            continue;
        }
        if comment > 0 {
            match b {
                b'\\' => escaped = true,
                b'(' => comment += 1,
                b')' => comment -= 1,
                _ => {}
            }
            continue;
        }
        if literal {
            literal = b != b']';
            each(byte);
            continue;
        }
        if quoted {
            match b {
                b'\\' => escaped = true,
                b'"' => quoted = false,
                _ => {}
            }
            each(byte);
            continue;
        }
        match b {
            b'(' => {
                comment = 1;
                each(ListPiece::Gap { in_angle });
            }
            b'"' => {
                quoted = true;
                each(byte);
            }
            b'[' => {
                literal = true;
                each(byte);
            }
            b'<' if !in_angle => {
                in_angle = true;
                each(ListPiece::OpenAngle { at });
            }
            b'>' if in_angle => {
                in_angle = false;
                each(ListPiece::CloseAngle { at });
            }
            b',' if !in_angle => each(ListPiece::End),
            b';' if !in_angle => {
                each(ListPiece::End);
                each(ListPiece::GroupEnd);
            }
            b':' if !in_angle => each(ListPiece::GroupName),
            b' ' | b'\t' | b'\r' => each(ListPiece::Gap { in_angle }),
            _ => each(byte),
        }
    }
    each(if comment > 0 {
        ListPiece::Unterminated("unterminated comment")
    } else if quoted {
        ListPiece::Unterminated("unterminated quoted string")
    } else if literal {
        ListPiece::Unterminated("'[' without ']'")
    } else if in_angle {
        ListPiece::Unterminated("'<' without '>'")
    } else {
        ListPiece::End
    });
}

/// Copies the rest of a quoted string (the opening quote already read)
/// into `out`, quotes and backslashes included; `None` if unterminated.
fn copy_quoted(chars: &mut std::str::Chars<'_>, out: &mut String) -> Option<()> {
    out.push('"');
    loop {
        let c = chars.next()?;
        out.push(c);
        match c {
            '\\' => out.push(chars.next()?),
            '"' => return Some(()),
            _ => {}
        }
    }
}

/// Copies characters up to and including `end`; `None` if it never comes.
fn copy_until(chars: &mut std::str::Chars<'_>, end: char, out: &mut String) -> Option<()> {
    loop {
        let c = chars.next()?;
        out.push(c);
        if c == end {
            return Some(());
        }
    }
}

/// Skips a (nested) RFC 5322 comment, the '(' already read; `None` if
/// unterminated.
fn skip_comment(chars: &mut std::str::Chars<'_>) -> Option<()> {
    let mut depth = 1usize;
    loop {
        match chars.next()? {
            '\\' => {
                chars.next()?;
            }
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    return Some(());
                }
            }
            _ => {}
        }
    }
}

/// An argument that starts with '-' is an option that slipped through
/// (or an attempt at option injection into a later program): never an
/// address.
fn reject_option_like(s: &str) -> Result<()> {
    if s.trim_start().starts_with('-') {
        return Err(invalid(s, "starts with '-'"));
    }
    Ok(())
}

/// The one error shape for a bad address: kind Data (65), one short line.
fn invalid(input: &str, reason: &str) -> Error {
    let shown = match input.char_indices().nth(SHOWN_INPUT) {
        Some((end, _)) => format!("{:?}...", &input[..end]),
        None => format!("{input:?}"),
    };
    Error::data(format!("invalid address {shown}: {reason}"))
}

/// The rules of [`Address::parse`]; the error is the reason only.
fn parse_address(s: &str) -> std::result::Result<Address, String> {
    if s.is_empty() {
        return Err("empty address".into());
    }
    if s.starts_with('-') {
        return Err("starts with '-'".into());
    }
    if s.chars().any(char::is_control) {
        return Err("contains a control character".into());
    }
    if s.contains(char::REPLACEMENT_CHARACTER) {
        // What lossy decoding leaves of invalid UTF-8: no real mailbox.
        return Err("contains invalid UTF-8".into());
    }
    let mut rest = match s.strip_prefix('<') {
        Some(inner) => inner.strip_suffix('>').ok_or("'<' without '>'")?,
        None if s.ends_with('>') => return Err("'>' without '<'".into()),
        None => s,
    };
    if rest.starts_with('@') {
        rest = drop_source_route(rest)?;
    }
    if rest.is_empty() {
        return Err("empty address".into());
    }
    if rest.starts_with('-') {
        return Err("starts with '-'".into());
    }
    let (local, domain) = split_local_part(rest)?;
    check_local_part(local)?;
    let domain = match domain {
        Some(d) => Some(check_domain(d)?),
        None => None,
    };
    if local.len() > MAX_LOCAL {
        return Err(format!("local part longer than {MAX_LOCAL} octets"));
    }
    let total = local.len() + domain.as_ref().map_or(0, |d| d.len() + 1);
    if total > MAX_ADDRESS {
        return Err(format!("longer than {MAX_ADDRESS} octets"));
    }
    Ok(Address {
        local: local.to_string(),
        domain: domain.map(str::to_string),
    })
}

/// "@a,@b:user@c" → "user@c". The route is obsolete and ignored (RFC 5321
/// §C), but it must still look like one.
fn drop_source_route(s: &str) -> std::result::Result<&str, String> {
    let (route, mailbox) = s.split_once(':').ok_or("source route without ':'")?;
    for hop in route.split(',') {
        let domain = hop.strip_prefix('@').ok_or("malformed source route")?;
        check_domain(domain).map_err(|reason| format!("source route: {reason}"))?;
    }
    Ok(mailbox)
}

/// Splits "local@domain" (or a bare "local") where the local part ends:
/// after the closing quote of a Quoted-string, else at the first '@'
/// (a Dot-string cannot contain one).
fn split_local_part(s: &str) -> std::result::Result<(&str, Option<&str>), String> {
    if s.starts_with('"') {
        let end = quoted_string_end(s)?;
        let (local, rest) = s.split_at(end);
        return match rest.strip_prefix('@') {
            Some(domain) => Ok((local, Some(domain))),
            None if rest.is_empty() => Ok((local, None)),
            None => Err("text after the quoted local part".into()),
        };
    }
    Ok(match s.split_once('@') {
        Some((local, domain)) => (local, Some(domain)),
        None => (s, None),
    })
}

/// The byte index just past the closing quote of the Quoted-string that
/// starts `s`, checking its content (RFC 5321 qtextSMTP and
/// quoted-pairSMTP, plus RFC 6531 UTF-8).
fn quoted_string_end(s: &str) -> std::result::Result<usize, String> {
    let mut chars = s.char_indices().skip(1);
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => {
                if i == 1 {
                    // Valid in RFC 5321, but no mailbox anyone means.
                    return Err("empty quoted local part".into());
                }
                return Ok(i + 1);
            }
            '\\' => match chars.next() {
                Some((_, ' '..='~')) => {}
                _ => return Err("bad quoted pair in local part".into()),
            },
            ' '..='~' => {}
            c if !c.is_ascii() => {}
            _ => return Err("bad character in quoted local part".into()),
        }
    }
    Err("unterminated quoted local part".into())
}

/// RFC 5321 atext (RFC 5322 §3.2.3), extended by RFC 6531 to any
/// non-ASCII character; control characters were rejected before.
fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c) || !c.is_ascii()
}

/// Letters, digits and '-' (RFC 1035), or any non-ASCII character but
/// white space for a U-label; control characters were rejected before.
fn is_label_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || (!c.is_ascii() && !c.is_whitespace())
}

/// A Quoted-string was checked while it was split off; a Dot-string is
/// checked here.
fn check_local_part(local: &str) -> std::result::Result<(), String> {
    if local.starts_with('"') {
        return Ok(());
    }
    if local.is_empty() {
        return Err("empty local part".into());
    }
    if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
        return Err("misplaced '.' in local part".into());
    }
    if let Some(c) = local.chars().find(|&c| c != '.' && !is_atext(c)) {
        if c.is_whitespace() {
            return Err("space outside quotes".into());
        }
        return Err(format!("bad character {c:?} in local part"));
    }
    Ok(())
}

/// Checks a domain and returns its stored form (one trailing dot removed).
fn check_domain(domain: &str) -> std::result::Result<&str, String> {
    if let Some(literal) = domain.strip_prefix('[') {
        let inner = literal
            .strip_suffix(']')
            .ok_or("'[' without ']' in domain")?;
        let valid = match inner.get(..5) {
            Some(tag) if tag.eq_ignore_ascii_case("IPv6:") => inner
                .get(5..)
                .is_some_and(|ip| ip.parse::<Ipv6Addr>().is_ok()),
            _ => inner.parse::<Ipv4Addr>().is_ok(),
        };
        if !valid {
            return Err("bad address literal".into());
        }
        return Ok(domain);
    }
    // "example.com." is the same (absolute) name; store it once.
    let domain = domain.strip_suffix('.').unwrap_or(domain);
    if domain.is_empty() {
        return Err("empty domain".into());
    }
    if domain.len() > MAX_DOMAIN {
        return Err(format!("domain longer than {MAX_DOMAIN} octets"));
    }
    for label in domain.split('.') {
        if label.is_empty() {
            return Err("empty label in domain".into());
        }
        if label.len() > MAX_LABEL {
            return Err(format!("domain label longer than {MAX_LABEL} octets"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("domain label starts or ends with '-'".into());
        }
        // U-labels (RFC 6531) are allowed as they come; IDNA conversion is
        // left to whoever needs an A-label.
        if let Some(c) = label.chars().find(|&c| !is_label_char(c)) {
            if c.is_whitespace() {
                return Err("space outside quotes".into());
            }
            return Err(format!("bad character {c:?} in domain"));
        }
    }
    Ok(domain)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Kind;

    fn ok(s: &str) -> Address {
        Address::parse(s).unwrap_or_else(|e| panic!("{s:?} rejected: {e}"))
    }

    fn rejected(s: &str) -> String {
        match Address::parse(s) {
            Ok(a) => panic!("{s:?} accepted as {a}"),
            Err(e) => {
                assert_eq!(e.kind(), Kind::Data);
                e.message().to_string()
            }
        }
    }

    /// A group's ':' is one only when no '@' came before it in the item
    /// (an '@' in quotes counts, as it always did); the look for it is
    /// incremental, which must not change the answer.
    #[test]
    fn a_colon_after_an_at_opens_no_group() {
        let got = parse_mailboxes("Team: a@b.example, c@d.example;").unwrap();
        assert_eq!(got.len(), 2);
        assert!(parse_mailboxes("a@b.example: c@d.example").is_err());
        assert!(parse_mailboxes("\"a@\"x: y@z.example").is_err());
        let got = parse_mailboxes("x, T: y@z.example;, U: w@v.example;").unwrap();
        assert_eq!(got.len(), 3);
        let hostile = format!("{}@{}", "x".repeat(100_000), ":".repeat(100_000));
        assert!(parse_mailboxes(&hostile).is_err());
    }

    #[test]
    fn plain_address_splits_into_local_part_and_domain() {
        let a = ok("user@example.com");
        assert_eq!(a.local_part(), "user");
        assert_eq!(a.domain(), Some("example.com"));
        assert!(a.is_qualified());
        assert_eq!(a.to_string(), "user@example.com");
    }

    #[test]
    fn angle_brackets_are_removed() {
        let a = ok("<user@example.com>");
        assert_eq!(a, ok("user@example.com"));
        assert_eq!(a.to_string(), "user@example.com");
        rejected("<user@example.com");
        rejected("user@example.com>");
        rejected("<>");
    }

    #[test]
    fn bare_local_name_has_no_domain() {
        let a = ok("root");
        assert_eq!(a.local_part(), "root");
        assert_eq!(a.domain(), None);
        assert!(!a.is_qualified());
        assert_eq!(a.to_string(), "root");
        assert_eq!(ok("<fail2ban>").to_string(), "fail2ban");
    }

    #[test]
    fn qualified_adds_the_hostname_only_to_bare_names() {
        assert_eq!(
            ok("root").qualified("host.example").to_string(),
            "root@host.example"
        );
        assert_eq!(
            ok("root").qualified("host.example.").to_string(),
            "root@host.example"
        );
        assert_eq!(
            ok("a@b.example").qualified("host.example").to_string(),
            "a@b.example"
        );
        assert_eq!(ok("root").qualified(""), ok("root"));
    }

    #[test]
    fn dot_string_rules() {
        ok("first.last@example.com");
        ok("a!#$%&'*+-/=?^_`{|}~z@example.com");
        assert!(rejected(".user@example.com").contains("'.'"));
        rejected("user.@example.com");
        rejected("us..er@example.com");
        rejected("us(er@example.com");
        rejected("us,er@example.com");
    }

    #[test]
    fn quoted_local_part_keeps_its_quotes() {
        let a = ok("\"john doe\"@example.com");
        assert_eq!(a.local_part(), "\"john doe\"");
        assert_eq!(a.to_string(), "\"john doe\"@example.com");
        assert_eq!(ok(&a.to_string()), a);
        let b = ok(r#""a\"b\\c@d"@example.com"#);
        assert_eq!(b.local_part(), r#""a\"b\\c@d""#);
        ok("\"bare quoted\"");
    }

    #[test]
    fn quoted_local_part_never_holds_line_breaks_or_nul() {
        rejected("\"a\rb\"@example.com");
        rejected("\"a\nb\"@example.com");
        rejected("\"a\\\nb\"@example.com");
        rejected("\"a\0b\"@example.com");
        rejected("\"unterminated@example.com");
        rejected("\"a\"b@example.com");
        rejected("\"\"@example.com");
    }

    #[test]
    fn utf8_is_allowed_and_needs_smtputf8() {
        let a = ok("jörg@bücher.example");
        assert!(a.needs_smtputf8());
        assert!(ok("用户@例子.广告").needs_smtputf8());
        assert!(ok("jörg").needs_smtputf8());
        assert!(!ok("user@example.com").needs_smtputf8());
        rejected("a\u{FFFD}b@example.com");
    }

    #[test]
    fn domain_label_rules() {
        ok("a@x-y.example");
        ok("a@123.example");
        rejected("a@-x.example");
        rejected("a@x-.example");
        rejected("a@x..example");
        rejected("a@.example");
        rejected("a@x_y.example");
        rejected("a@b@c.example");
        let label = "x".repeat(63);
        ok(&format!("a@{label}.example"));
        assert!(rejected(&format!("a@{label}x.example")).contains("label"));
    }

    #[test]
    fn trailing_dot_in_domain_is_removed() {
        assert_eq!(ok("a@example.com.").domain(), Some("example.com"));
        rejected("a@example.com..");
        rejected("a@.");
    }

    #[test]
    fn address_literals_are_checked_as_ip_addresses() {
        assert_eq!(ok("a@[192.0.2.1]").domain(), Some("[192.0.2.1]"));
        ok("a@[IPv6:2001:db8::1]");
        ok("a@[ipv6:::1]");
        rejected("a@[192.0.2.256]");
        rejected("a@[2001:db8::1]");
        rejected("a@[IPv6:192.0.2.1]");
        rejected("a@[example.com]");
        rejected("a@[192.0.2.1");
    }

    #[test]
    fn length_limits() {
        let local = "l".repeat(64);
        ok(&format!("{local}@example.com"));
        assert!(rejected(&format!("{local}l@example.com")).contains("64"));
        // 4 labels of 63 + 3 dots = 255 octets: the longest domain.
        let label = "d".repeat(63);
        let domain = format!("{label}.{label}.{label}.{label}");
        assert_eq!(domain.len(), 255);
        assert!(rejected(&format!("a@{domain}")).contains("254"));
        assert!(rejected(&format!("a@{domain}x")).contains("255"));
        // local 64 + '@' + domain 189 = 254 fits; one more does not.
        let d189 = format!("{label}.{label}.{}", "d".repeat(61));
        assert_eq!(d189.len(), 189);
        ok(&format!("{local}@{d189}"));
        rejected(&format!("{local}@{d189}x"));
    }

    #[test]
    fn control_characters_are_rejected_everywhere() {
        for c in ['\r', '\n', '\0', '\t', '\x7f', '\x01', '\x1b', '\u{85}'] {
            let msg = rejected(&format!("us{c}er@example.com"));
            assert!(msg.contains("control"), "{msg}");
            rejected(&format!("user@exa{c}mple.com"));
            rejected(&format!("\"us{c}er\"@example.com"));
        }
    }

    #[test]
    fn spaces_outside_quotes_are_rejected() {
        assert!(rejected("us er@example.com").contains("space"));
        assert!(rejected("user@exa mple.com").contains("space"));
        rejected(" user@example.com");
        rejected("user@example.com ");
        rejected("user @example.com");
    }

    #[test]
    fn leading_dash_is_rejected_against_option_injection() {
        assert!(rejected("-X/tmp/x").contains("'-'"));
        rejected("-oi");
        rejected("<-x@example.com>");
        rejected("<@a.example:-x@example.com>");
        ok("x-@example.com");
    }

    #[test]
    fn at_sign_needs_both_sides() {
        assert!(rejected("@example.com").contains("source route"));
        assert!(rejected("user@").contains("empty domain"));
        rejected("@");
        rejected("");
    }

    #[test]
    fn source_route_is_dropped() {
        assert_eq!(
            ok("<@a.example,@b.example:user@c.example>").to_string(),
            "user@c.example"
        );
        rejected("<@a.example,b.example:user@c.example>");
        rejected("<@-bad:user@c.example>");
        rejected("<@a.example:>");
    }

    #[test]
    fn error_is_one_short_data_line_with_truncated_input() {
        let long = format!("{}\n@x", "é".repeat(500));
        let e = Address::parse(&long).unwrap_err();
        assert_eq!(e.kind(), Kind::Data);
        assert!(e.message().starts_with("invalid address \""));
        assert!(e.message().len() < 300, "{}", e.message());
        assert!(!e.message().contains('\n'));
        assert_eq!(
            Address::parse("a b").unwrap_err().message(),
            "invalid address \"a b\": space outside quotes"
        );
    }

    #[test]
    fn list_takes_commas_display_names_and_bare_names() {
        let v = parse_list("a@x.example, Full Name <b@y.example>,root").unwrap();
        let shown: Vec<String> = v.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["a@x.example", "b@y.example", "root"]);
        let v = parse_list("\"Doe, John\" <j@d.example>, Cron Daemon <root>").unwrap();
        assert_eq!(v, [ok("j@d.example"), ok("root")]);
        let v = parse_list("root (Cron Daemon), \"x y\"@z.example").unwrap();
        assert_eq!(v, [ok("root"), ok("\"x y\"@z.example")]);
        assert_eq!(parse_list("a@[IPv6:::1]").unwrap(), [ok("a@[IPv6:::1]")]);
    }

    #[test]
    fn list_skips_empty_items() {
        let v = parse_list(",a@x.example,, ,b@x.example,").unwrap();
        assert_eq!(v, [ok("a@x.example"), ok("b@x.example")]);
    }

    #[test]
    fn list_expands_groups() {
        let v = parse_list("team: a@x.example, b@x.example; c@x.example").unwrap();
        assert_eq!(v, [ok("a@x.example"), ok("b@x.example"), ok("c@x.example")]);
        assert!(
            parse_mailboxes("undisclosed-recipients:;")
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn list_without_any_address_is_an_error() {
        for s in ["", " , ,", "undisclosed-recipients:;"] {
            let e = parse_list(s).unwrap_err();
            assert_eq!(e.kind(), Kind::Data);
            assert!(e.message().contains("no address"), "{}", e.message());
        }
    }

    #[test]
    fn list_validates_every_address() {
        assert!(parse_list("a@x.example, b c@x.example").is_err());
        assert!(parse_list("Name <a@-x.example>").is_err());
        assert!(parse_list("Name <a@x.example> trailing").is_err());
        assert!(parse_list("Name <a@x.example").is_err());
        assert!(parse_list("-oi").is_err());
        assert!(parse_list("a@x.example\n, b@x.example").is_err());
        assert!(parse_list("Name\0 <a@x.example>").is_err());
        assert!(parse_list("(unterminated a@x.example").is_err());
    }

    #[test]
    fn sender_null_forms() {
        assert_eq!(parse_sender("").unwrap(), None);
        assert_eq!(parse_sender("<>").unwrap(), None);
        assert_eq!(parse_sender(" <> ").unwrap(), None);
    }

    #[test]
    fn sender_forms() {
        assert_eq!(
            parse_sender("bounce@x.example").unwrap(),
            Some(ok("bounce@x.example"))
        );
        assert_eq!(
            parse_sender("<bounce@x.example>").unwrap(),
            Some(ok("bounce@x.example"))
        );
        assert_eq!(
            parse_sender("Bounce Handler <b@x.example>").unwrap(),
            Some(ok("b@x.example"))
        );
        assert_eq!(parse_sender("fail2ban").unwrap(), Some(ok("fail2ban")));
        assert_eq!(
            parse_sender("<@r.example:u@x.example>").unwrap(),
            Some(ok("u@x.example"))
        );
    }

    #[test]
    fn sender_must_be_one_valid_address() {
        assert!(parse_sender("a@x.example, b@x.example").is_err());
        assert!(parse_sender("-X/tmp/x").is_err());
        assert!(parse_sender("a b").is_err());
        assert!(parse_sender("g:;").is_err());
    }

    fn mailboxes(s: &str) -> Vec<String> {
        parse_mailboxes(s)
            .unwrap_or_else(|e| panic!("{s:?}: {e}"))
            .iter()
            .map(Address::to_string)
            .collect()
    }

    #[test]
    fn comments_and_folding_white_space_are_not_part_of_a_header_address() {
        let one = |s: &str| assert_eq!(mailboxes(s), ["user@example.com"], "{s:?}");
        one("Name <user(comment)@example.com(host)>");
        one("user(comment)@example.com(host)");
        one("user (comment) @ example.com");
        one("Name < user @ example.com > (trailing)");
        one("(leading) user@example.com");
        one("Name <user@(a (nested) one)example.com>");
        one("Name (with <brackets>, and commas) <user@example.com>");
        assert_eq!(
            mailboxes("first . last @ example . com"),
            ["first.last@example.com"]
        );
        assert_eq!(
            mailboxes("team: a(x)@example.com, b @ example.com (y);"),
            ["a@example.com", "b@example.com"]
        );
        assert_eq!(
            mailboxes("\"quoted (not a comment)\"@example.com"),
            ["\"quoted (not a comment)\"@example.com"]
        );
        assert_eq!(
            mailboxes("user@[192.0.2.1] (literal)"),
            ["user@[192.0.2.1]"]
        );
        assert_eq!(mailboxes("root (Cron Daemon)"), ["root"]);
        // A phrase is still not an address.
        assert!(parse_mailboxes("John Smith").is_err());
        assert!(parse_mailboxes("Name <user(unterminated@example.com>").is_err());
    }

    #[test]
    fn an_smtp_path_loses_its_comments_too() {
        assert_eq!(path_without_cfws("user(c)@example.com"), "user@example.com");
        assert_eq!(
            path_without_cfws(" user @ example.com "),
            "user@example.com"
        );
        assert_eq!(path_without_cfws("\"a (b)\"@x.test"), "\"a (b)\"@x.test");
        assert_eq!(path_without_cfws(""), "");
        assert_eq!(
            path_without_cfws("user(x@y"),
            "user(x@y",
            "unterminated: as it was"
        );
    }
}
