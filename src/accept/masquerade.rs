//! Masquerading: local senders leave this host under the organisation's
//! domain (`root@web01.internal` → `root@example.com`), or as one fixed
//! address, because relays (Gmail, SES, a corporate smarthost) refuse
//! `MAIL FROM:<www-data@web01.internal>`.
//!
//! Applied once, in the cleanup step every door calls (`sendmail`, `-bs`,
//! and again to the envelope at the maildrop pickup) — never in delivery. So what the
//! spool holds is what goes out, and mail that local delivery generates
//! (forwards with their `owner-` senders, bounces from `<>`) is never
//! rewritten: it does not pass through here. Postfix's cleanup does the
//! same.
//!
//! What this module owns:
//! - Which addresses are local: bare names, the hostname, `localhost`
//!   and the `masquerade_local` names and `*.domain` patterns.
//! - The envelope rule: the null sender `<>` is never rewritten; the
//!   caller's own login always is (when `masquerade_envelope = yes`); a
//!   sender the caller named (`-f`) follows `masquerade_sender_override`.
//! - The header rule: in the fields `masquerade_headers` names, the
//!   addr-spec of each local mailbox is rewritten — only its domain
//!   (or, with `sender_address`, only the addr-spec) — and every other
//!   byte (display names, comments, groups, folding, other mailboxes)
//!   stays as it was. An addr-spec that is not one unbroken token the
//!   address parser accepts is left alone, and so is a whole field the
//!   address parser cannot read, before or after: a field is never made
//!   worse.
//!
//! Headers are hostile input (the binary is setgid): the scanner
//! (`address::scan_address_list`, shared with qualification) is one
//! pass over a field the header reader has already bounded, with no
//! recursion, plus one address-parser pass before and after; it cannot
//! panic on any bytes.
//!
//! Masquerading gives a caller no sender it could not name before: it
//! keeps the local part (or uses the administrator's fixed address), and
//! the trace (`Received: … from userid UID`, the envelope's uid and user)
//! still says who submitted the message.

use std::ops::Range;

use crate::address::{self, Address, ListPiece, scan_address_list};
use crate::config::{Config, SenderOverride};
use crate::error::{Error, Result};

/// What a local sender becomes.
#[derive(Debug, Clone, Copy)]
enum Target<'a> {
    /// `masquerade_domain`: the local part stays, the domain is this.
    Domain(&'a str),
    /// `sender_address`: this whole address.
    Fixed(&'a Address),
}

/// The masquerading rules of one configuration.
#[derive(Debug, Clone, Copy)]
pub struct Masquerade<'a> {
    config: &'a Config,
    target: Target<'a>,
}

impl<'a> Masquerade<'a> {
    /// The rules of `config`; None when it masquerades nothing (neither
    /// `masquerade_domain` nor `sender_address` is set).
    pub fn new(config: &'a Config) -> Option<Masquerade<'a>> {
        let target = match (&config.masquerade_domain, &config.sender_address) {
            (Some(domain), _) => Target::Domain(domain),
            (None, Some(fixed)) => Target::Fixed(fixed),
            (None, None) => return None,
        };
        Some(Masquerade { config, target })
    }

    /// Whether `address` is one of this host's own: a bare name, the
    /// hostname, `localhost`, or a `masquerade_local` name or pattern
    /// (`*.internal`: any name ending in `.internal`). Case is ignored.
    pub fn is_local(&self, address: &Address) -> bool {
        let Some(domain) = address.domain() else {
            return true;
        };
        let domain = domain.to_ascii_lowercase();
        if domain == "localhost" || domain.eq_ignore_ascii_case(&self.config.hostname) {
            return true;
        }
        self.config
            .masquerade_local
            .iter()
            .any(|pattern| match pattern.strip_prefix('*') {
                // "*.internal" keeps its dot: "xinternal" is no match.
                Some(suffix) => domain.ends_with(suffix) && domain.len() > suffix.len(),
                None => domain == *pattern,
            })
    }

    /// What `address` becomes; None when the result would not be a valid
    /// address (a 64-octet local part and a long domain can exceed 254).
    fn rewritten(&self, address: &Address) -> Option<Address> {
        match self.target {
            Target::Domain(domain) => {
                Address::parse(&format!("{}@{domain}", address.local_part())).ok()
            }
            Target::Fixed(fixed) => Some(fixed.clone()),
        }
    }

    /// The envelope sender to store for `sender` (None: the null sender,
    /// which is never rewritten). `given`: the caller named it (`-f`,
    /// `-r`, `MAIL FROM`, a maildrop file) rather than it being the
    /// caller's login. A rewrite that would make an invalid address is
    /// refused (Data, 65) rather than sending what the relay refuses.
    pub fn envelope_sender(
        &self,
        sender: Option<&Address>,
        given: bool,
    ) -> Result<Option<Address>> {
        let Some(sender) = sender else {
            return Ok(None);
        };
        let rewrite = self.config.masquerade_envelope
            && match (given, self.config.masquerade_sender_override) {
                (true, SenderOverride::Keep) => false,
                (true, SenderOverride::Always) => true,
                (true, SenderOverride::Local) | (false, _) => self.is_local(sender),
            };
        if !rewrite {
            return Ok(Some(sender.clone()));
        }
        self.rewritten(sender).map(Some).ok_or_else(|| {
            Error::data(format!(
                "masquerading the sender <{sender}> makes an address longer than RFC 5321 allows"
            ))
        })
    }

    /// Whether the field named `name` is one `masquerade_headers` lists.
    pub fn covers_field(&self, name: &[u8]) -> bool {
        self.config
            .masquerade_headers
            .iter()
            .any(|f| name.eq_ignore_ascii_case(f.as_bytes()))
    }

    /// The raw field (`Name: value\n`, maybe folded) with its local
    /// mailboxes masqueraded; None when the field is not one to rewrite
    /// or nothing in it changed.
    pub fn header_field(&self, raw: &[u8]) -> Option<Vec<u8>> {
        let colon = raw.iter().position(|&b| b == b':')?;
        if !self.covers_field(&raw[..colon]) {
            return None;
        }
        let value = &raw[colon + 1..];
        // A field the address parser cannot read is left as it is: the
        // scanner below then has nothing it could agree with.
        let before = address::parse_mailboxes(&unfolded(value)).ok()?;
        let mut edits: Vec<(Range<usize>, String)> = Vec::new();
        for spec in addr_specs(value) {
            if let Some(edit) = self.edit(&value[spec.clone()]) {
                let (within, text) = edit;
                edits.push((spec.start + within.start..spec.start + within.end, text));
            }
        }
        if edits.is_empty() {
            return None;
        }
        let mut out = raw.to_vec();
        // Back to front: earlier offsets stay right.
        for (range, text) in edits.into_iter().rev() {
            out.splice(colon + 1 + range.start..colon + 1 + range.end, text.bytes());
        }
        // The belt to the scanner's braces: the field must still read as
        // as many mailboxes, or it is sent as it came.
        let after = address::parse_mailboxes(&unfolded(&out[colon + 1..])).ok()?;
        (after.len() == before.len()).then_some(out)
    }

    /// For one addr-spec token: the bytes (a range within it) to replace
    /// and their replacement, when it is a local address.
    fn edit(&self, token: &[u8]) -> Option<(Range<usize>, String)> {
        let text = std::str::from_utf8(token).ok()?;
        let address = Address::parse(text).ok()?;
        if !self.is_local(&address) {
            return None;
        }
        let new = self.rewritten(&address)?;
        let (range, replacement) = match self.target {
            Target::Domain(domain) => match domain_start(token) {
                Some(start) => (start..token.len(), domain.to_string()),
                None => (token.len()..token.len(), format!("@{domain}")),
            },
            Target::Fixed(fixed) => (0..token.len(), fixed.to_string()),
        };
        // The result must read back as the address meant, or the field
        // is left as it was.
        let mut result = text.to_string();
        result.replace_range(range.clone(), &replacement);
        (Address::parse(&result).ok()? == new).then_some((range, replacement))
    }
}

/// A field value as the address parser reads it (Header::recipients):
/// line breaks removed, lossy UTF-8.
fn unfolded(value: &[u8]) -> String {
    let bytes: Vec<u8> = value.iter().copied().filter(|&b| b != b'\n').collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Where the domain of an addr-spec token starts: after its last `@`
/// outside quoted strings and domain literals. None for a bare name.
fn domain_start(token: &[u8]) -> Option<usize> {
    let (mut quoted, mut literal, mut escaped) = (false, false, false);
    let mut at = None;
    for (i, &b) in token.iter().enumerate() {
        if escaped {
            escaped = false;
        } else if quoted {
            match b {
                b'\\' => escaped = true,
                b'"' => quoted = false,
                _ => {}
            }
        } else if literal {
            literal = b != b']';
        } else {
            match b {
                b'"' => quoted = true,
                b'[' => literal = true,
                b'@' => at = Some(i + 1),
                _ => {}
            }
        }
    }
    at
}

/// One unbroken run of significant bytes (outside comments and blanks).
#[derive(Default)]
struct Token {
    range: Option<Range<usize>>,
    /// A blank or comment came after the token started.
    gap: bool,
    /// Significant bytes came after such a gap: not one token.
    broken: bool,
}

impl Token {
    fn byte(&mut self, i: usize) {
        match &mut self.range {
            None => self.range = Some(i..i + 1),
            Some(range) => {
                self.broken |= self.gap;
                range.end = i + 1;
            }
        }
    }

    fn gap(&mut self) {
        self.gap |= self.range.is_some();
    }

    fn whole(self) -> Option<Range<usize>> {
        self.range.filter(|_| !self.broken)
    }
}

/// One mailbox of an address list being scanned.
#[derive(Default)]
struct Item {
    /// The text outside angle brackets: the addr-spec when there are no
    /// brackets, the display name when there are.
    text: Token,
    /// The text inside `<…>`.
    angle: Option<Token>,
    /// Something the address parser refuses (text after `>`, a second
    /// `<`): the item is left alone.
    bad: bool,
}

impl Item {
    fn byte(&mut self, i: usize, in_angle: bool) {
        match (&mut self.angle, in_angle) {
            (Some(angle), true) => angle.byte(i),
            (Some(_), false) => self.bad = true,
            (None, _) => self.text.byte(i),
        }
    }

    fn gap(&mut self, in_angle: bool) {
        match (&mut self.angle, in_angle) {
            (Some(angle), true) => angle.gap(),
            (Some(_), false) => {}
            (None, _) => self.text.gap(),
        }
    }

    /// The addr-spec's range, if it is one unbroken token.
    fn finish(self) -> Option<Range<usize>> {
        if self.bad {
            return None;
        }
        self.angle.unwrap_or(self.text).whole()
    }
}

/// The byte ranges (into `value`) of every addr-spec that is one unbroken
/// token: `a@b` in `Name <a@b>`, in `a@b (comment)`, in a group. The
/// value is read as the address parser reads it, unfolded: a line break
/// is nothing (the blank after it separates).
fn addr_specs(value: &[u8]) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut item = Item::default();
    scan_address_list(value, |piece| match piece {
        ListPiece::Byte { at, in_angle } => item.byte(at, in_angle),
        ListPiece::Gap { in_angle } => item.gap(in_angle),
        ListPiece::OpenAngle { .. } => {
            item.bad |= item.angle.is_some();
            item.angle = Some(Token::default());
        }
        ListPiece::CloseAngle { .. } => {}
        ListPiece::End => {
            if let Some(range) = std::mem::take(&mut item).finish() {
                out.push(range);
            }
        }
        // A group's name ends here: it is not an address.
        ListPiece::GroupName => item = Item::default(),
        // The End before it closed the mailbox; an unfinished one is
        // not an address.
        ListPiece::GroupEnd | ListPiece::Unterminated(_) => {}
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> Config {
        let text =
            format!("hostname = web01.internal\nmasquerade_local = *.corp.example, db1\n{extra}");
        crate::config::parse(&text, "t.conf").unwrap()
    }

    fn domain_config() -> Config {
        config("masquerade_domain = example.com\n")
    }

    fn field(config: &Config, raw: &str) -> String {
        let m = Masquerade::new(config).unwrap();
        match m.header_field(raw.as_bytes()) {
            Some(v) => String::from_utf8(v).unwrap(),
            None => raw.to_string(),
        }
    }

    fn a(s: &str) -> Address {
        Address::parse(s).unwrap()
    }

    #[test]
    fn off_unless_a_domain_or_an_address_is_set() {
        assert!(Masquerade::new(&config("")).is_none());
        assert!(Masquerade::new(&domain_config()).is_some());
        assert!(Masquerade::new(&config("sender_address = n@example.com\n")).is_some());
    }

    #[test]
    fn local_is_bare_the_hostname_localhost_and_the_listed_names() {
        let c = domain_config();
        let m = Masquerade::new(&c).unwrap();
        for local in [
            "root",
            "root@web01.internal",
            "root@WEB01.Internal",
            "x@localhost",
            "x@db1",
            "x@a.corp.example",
            "x@b.a.corp.example",
        ] {
            assert!(m.is_local(&a(local)), "{local}");
        }
        for foreign in [
            "x@corp.example",
            "x@xcorp.example",
            "x@example.com",
            "x@web01.internal.evil",
            "x@[192.0.2.1]",
            "x@db1.example",
        ] {
            assert!(!m.is_local(&a(foreign)), "{foreign}");
        }
    }

    #[test]
    fn the_envelope_follows_the_override_policy() {
        let local = a("www-data@web01.internal");
        let foreign = a("bounce@shop.example");
        for (policy, given_local, given_foreign) in [
            ("keep", "www-data@web01.internal", "bounce@shop.example"),
            ("local", "www-data@example.com", "bounce@shop.example"),
            ("always", "www-data@example.com", "bounce@example.com"),
        ] {
            let c = config(&format!(
                "masquerade_domain = example.com\nmasquerade_sender_override = {policy}\n"
            ));
            let m = Masquerade::new(&c).unwrap();
            let got = |s: &Address, given| m.envelope_sender(Some(s), given).unwrap().unwrap();
            assert_eq!(got(&local, true).to_string(), given_local, "{policy}");
            assert_eq!(got(&foreign, true).to_string(), given_foreign, "{policy}");
            // The login is masqueraded whatever the policy.
            assert_eq!(got(&local, false).to_string(), "www-data@example.com");
            assert_eq!(m.envelope_sender(None, true).unwrap(), None, "<> stays");
        }
    }

    #[test]
    fn the_fixed_address_replaces_local_senders() {
        let c = config("sender_address = noreply@example.com\n");
        let m = Masquerade::new(&c).unwrap();
        let got = m.envelope_sender(Some(&a("root@web01.internal")), false);
        assert_eq!(got.unwrap().unwrap().to_string(), "noreply@example.com");
        let kept = m.envelope_sender(Some(&a("x@shop.example")), true);
        assert_eq!(kept.unwrap().unwrap().to_string(), "x@shop.example");
        assert_eq!(
            field(&c, "From: root@web01.internal (Cron Daemon)\n"),
            "From: noreply@example.com (Cron Daemon)\n"
        );
        assert_eq!(
            field(&c, "From: \"Web\" <www-data@web01.internal>\n"),
            "From: \"Web\" <noreply@example.com>\n"
        );
    }

    #[test]
    fn masquerade_envelope_no_leaves_the_envelope() {
        let c = config("masquerade_domain = example.com\nmasquerade_envelope = no\n");
        let m = Masquerade::new(&c).unwrap();
        let got = m.envelope_sender(Some(&a("root@web01.internal")), false);
        assert_eq!(got.unwrap().unwrap().to_string(), "root@web01.internal");
    }

    #[test]
    fn a_rewrite_too_long_for_rfc_5321_is_a_data_error() {
        let long = "d".repeat(60);
        let c = config(&format!(
            "masquerade_domain = {long}.{long}.{long}.example\n"
        ));
        let m = Masquerade::new(&c).unwrap();
        let sender = a(&format!("{}@web01.internal", "u".repeat(64)));
        let e = m.envelope_sender(Some(&sender), false).unwrap_err();
        assert_eq!(e.kind().exit_code(), 65);
        // In a header it is left as it was.
        let raw = format!("From: {sender}\n");
        assert_eq!(field(&c, &raw), raw);
    }

    #[test]
    fn only_the_domain_of_local_mailboxes_changes() {
        let c = domain_config();
        for (before, after) in [
            ("From: root@web01.internal\n", "From: root@example.com\n"),
            (
                "From: root@web01.internal (Cron Daemon)\n",
                "From: root@example.com (Cron Daemon)\n",
            ),
            (
                "From: \"Jane, Ops\" <jane@web01.internal>\n",
                "From: \"Jane, Ops\" <jane@example.com>\n",
            ),
            (
                "Reply-To: a@db1, b@shop.example, Team: c@x.corp.example, d@gmail.com;\n",
                "Reply-To: a@example.com, b@shop.example, Team: c@example.com, d@gmail.com;\n",
            ),
            (
                "Sender: Web\n\t<www-data@web01.internal>\n",
                "Sender: Web\n\t<www-data@example.com>\n",
            ),
            ("FROM: jane\n", "FROM: jane@example.com\n"),
            (
                "From: \"root@web01.internal\" <x@shop.example>\n",
                "From: \"root@web01.internal\" <x@shop.example>\n",
            ),
            (
                "From: \"a@b\"@web01.internal\n",
                "From: \"a@b\"@example.com\n",
            ),
            (
                "From: =?UTF-8?B?SsO2cmc=?= <j@localhost >\n",
                "From: =?UTF-8?B?SsO2cmc=?= <j@example.com >\n",
            ),
        ] {
            assert_eq!(field(&c, before), after);
        }
    }

    #[test]
    fn other_fields_and_odd_values_are_left_alone() {
        let c = domain_config();
        for raw in [
            "To: root@web01.internal\n",
            "Cc: root@web01.internal\n",
            "From: <>\n",
            "From: undisclosed:;\n",
            "From: root @ web01.internal\n",
            "From: root@(c)web01.internal\n",
            "From: <root@web01.internal> trailing\n",
            "From: <<root@web01.internal>>\n",
            "From: \"unterminated <root@web01.internal>\n",
            "From: (unterminated root@web01.internal\n",
            "From: root@[192.0.2.1]\n",
            "From: Name root@web01.internal\n",
            "From: \"folded\n local\"@web01.internal\n",
            "From: no colon anywhere",
            "From:",
            "",
        ] {
            assert_eq!(field(&c, raw), raw, "{raw:?}");
        }
        let headers_off = config("masquerade_domain = example.com\nmasquerade_headers = none\n");
        assert_eq!(
            field(&headers_off, "From: r@localhost\n"),
            "From: r@localhost\n"
        );
        let resent = config("masquerade_domain = example.com\nmasquerade_headers = resent-from\n");
        assert_eq!(field(&resent, "From: r@localhost\n"), "From: r@localhost\n");
        assert_eq!(
            field(&resent, "Resent-From: r@localhost\n"),
            "Resent-From: r@example.com\n"
        );
    }

    #[test]
    fn masquerading_twice_changes_nothing_more() {
        let c = domain_config();
        let once = field(&c, "From: a@db1, \"B\" <b@web01.internal>\n");
        assert_eq!(field(&c, &once), once);
    }

    #[test]
    fn hostile_values_cost_one_pass_and_never_panic() {
        let c = domain_config();
        let m = Masquerade::new(&c).unwrap();
        let mut raw = b"From: ".to_vec();
        for _ in 0..20_000 {
            raw.extend_from_slice(b"a@db1,((\\\"<[");
        }
        raw.push(b'\n');
        let _ = m.header_field(&raw);
        let mut many = b"From: ".to_vec();
        for _ in 0..20_000 {
            many.extend_from_slice(b"a@db1,");
        }
        let out = m.header_field(&many).unwrap();
        assert_eq!(out.len(), many.len() + 20_000 * ("example.com".len() - 3));
        for bytes in [
            &b"From: \xff@db1\n"[..],
            b"From: \"\\",
            b"From: <",
            b"From: [\\",
        ] {
            let _ = m.header_field(bytes);
        }
    }
}
