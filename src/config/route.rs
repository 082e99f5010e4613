//! The routing table: `route = …` lines of the config, in file order.
//!
//! ```text
//! route = RECIPIENT [from SENDER] -> mx
//! route = RECIPIENT [from SENDER] -> local
//! route = RECIPIENT [from SENDER] -> relay HOST[:PORT], … [failover|spread]
//! route = RECIPIENT [from SENDER] -> error CODE [X.Y.Z] TEXT
//! ```
//!
//! A pattern is `*` (any domain), `example.com` (that domain) or
//! `*.example.com` (its subdomains, not itself). The first route whose
//! recipient pattern matches the recipient's domain, and whose sender
//! pattern (if any) matches the envelope sender's, decides; a recipient
//! no route matches goes as without a table (local domains locally, else
//! the smarthost, else MX). Local domains and bare names never consult
//! the table. Parsing and matching only; the runner acts on the answer.

use super::relay::{self, Entry, Policy};
use super::values;

/// A domain pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    /// `*`: every domain.
    Any,
    /// `example.com`: that domain (lowercased).
    Exact(String),
    /// `*.example.com`: its subdomains (the suffix `.example.com`).
    Subdomains(String),
}

impl Pattern {
    /// Whether `domain` (any case) matches.
    pub fn matches(&self, domain: &str) -> bool {
        let domain = domain.strip_suffix('.').unwrap_or(domain);
        match self {
            Pattern::Any => true,
            Pattern::Exact(d) => domain.eq_ignore_ascii_case(d),
            Pattern::Subdomains(suffix) => {
                domain.len() > suffix.len()
                    && domain.is_char_boundary(domain.len() - suffix.len())
                    && domain[domain.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
            }
        }
    }

    fn parse(word: &str) -> Result<Pattern, String> {
        if word == "*" {
            return Ok(Pattern::Any);
        }
        let (sub, name) = match word.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, word),
        };
        let name = values::hostname(name)
            .map_err(|_| format!("expected *, DOMAIN or *.DOMAIN, got {:?}", clip(word)))?
            .to_ascii_lowercase();
        Ok(match sub {
            true => Pattern::Subdomains(format!(".{name}")),
            false => Pattern::Exact(name),
        })
    }
}

/// What a route does with the recipients it matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action<L> {
    /// MX delivery, even when a smarthost is set.
    Mx,
    /// Local delivery (aliases, mailboxes), whatever the domain.
    Local,
    /// Through this relay list (entries as written until the config
    /// resolves them: `L` is `Vec<Entry>` then `RelayList`).
    Relay(L),
    /// Fail (5xx) or defer (4xx) at once with this reply.
    Error {
        /// The reply code.
        code: u16,
        /// The RFC 3463 status.
        status: String,
        /// The text.
        text: String,
    },
}

/// One line of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route<L> {
    /// Matched against the recipient's domain.
    pub recipient: Pattern,
    /// Matched against the envelope sender's domain, when given.
    pub sender: Option<Pattern>,
    /// What to do.
    pub action: Action<L>,
    /// The config line it came from (for logs).
    pub line: usize,
}

impl<L> Route<L> {
    /// Whether this route takes a recipient of `domain` from `sender`.
    pub fn matches(&self, sender: &str, domain: &str) -> bool {
        self.recipient.matches(domain)
            && self.sender.as_ref().is_none_or(|p| {
                sender
                    .rsplit_once('@')
                    .is_some_and(|(_, sender_domain)| p.matches(sender_domain))
            })
    }
}

fn clip(s: &str) -> &str {
    values::clip(s)
}

/// Parses the value of a `route =` line (from config line `line`).
pub fn parse(value: &str, line: usize) -> Result<Route<(Vec<Entry>, Policy)>, String> {
    let (lhs, rhs) = value
        .split_once("->")
        .ok_or_else(|| "expected \"PATTERN [from PATTERN] -> ACTION\"".to_string())?;
    let words: Vec<&str> = lhs.split_whitespace().collect();
    let (recipient, sender) = match words[..] {
        [r] => (Pattern::parse(r)?, None),
        [r, "from", s] => (Pattern::parse(r)?, Some(Pattern::parse(s)?)),
        _ => {
            return Err(format!(
                "expected \"PATTERN [from PATTERN]\" before ->, got {:?}",
                clip(lhs.trim())
            ));
        }
    };
    let rhs = rhs.trim();
    let (verb, rest) = rhs.split_once(char::is_whitespace).unwrap_or((rhs, ""));
    let rest = rest.trim();
    let action = match verb {
        "mx" | "local" if !rest.is_empty() => {
            return Err(format!(
                "{verb} takes nothing after it, got {:?}",
                clip(rest)
            ));
        }
        "mx" => Action::Mx,
        "local" => Action::Local,
        "relay" => {
            let (list, policy) = match rest.rsplit_once(char::is_whitespace) {
                Some((list, word)) if word == "failover" || word == "spread" => {
                    (list, relay::parse_policy(word)?)
                }
                _ => (rest, Policy::Failover),
            };
            Action::Relay((relay::parse_entries(list)?, policy))
        }
        "error" => parse_error(rest)?,
        _ => {
            return Err(format!(
                "expected mx, local, relay or error after ->, got {:?}",
                clip(verb)
            ));
        }
    };
    Ok(Route {
        recipient,
        sender,
        action,
        line,
    })
}

/// `CODE [X.Y.Z] TEXT`: a 4xx or 5xx code, a status of the same class.
fn parse_error<L>(rest: &str) -> Result<Action<L>, String> {
    let mut words = rest.splitn(2, char::is_whitespace);
    let code = words
        .next()
        .and_then(|c| c.parse::<u16>().ok())
        .filter(|c| (400..=599).contains(c))
        .ok_or_else(|| format!("error: expected a 4xx or 5xx code, got {:?}", clip(rest)))?;
    let rest = words.next().unwrap_or("").trim();
    let class = (code / 100).to_string();
    let (status, text) = match rest.split_once(char::is_whitespace).unwrap_or((rest, "")) {
        (s, t) if is_status(s) => {
            if !s.starts_with(&class) {
                return Err(format!("error: status {s} is not of the class of {code}"));
            }
            (s.to_string(), t.trim())
        }
        _ => (format!("{class}.0.0"), rest),
    };
    if text.is_empty() {
        return Err("error: expected a text after the code".to_string());
    }
    Ok(Action::Error {
        code,
        status,
        text: text.to_string(),
    })
}

/// `4.7.1`-shaped (RFC 3463: class.subject.detail).
fn is_status(word: &str) -> bool {
    let parts: Vec<&str> = word.split('.').collect();
    parts.len() == 3
        && (parts[0] == "4" || parts[0] == "5")
        && parts[1..]
            .iter()
            .all(|p| (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        let p = Pattern::parse("*.corp.example").unwrap();
        assert!(p.matches("a.corp.example"));
        assert!(p.matches("B.A.CORP.example"));
        assert!(!p.matches("corp.example"), "subdomains, not itself");
        assert!(!p.matches("xcorp.example"));
        assert!(
            Pattern::parse("Corp.Example")
                .unwrap()
                .matches("corp.example.")
        );
        assert!(Pattern::parse("*").unwrap().matches("anything.example"));
        assert!(Pattern::parse("*.").is_err());
        assert!(Pattern::parse("a*b").is_err());
    }

    #[test]
    fn every_action_parses() {
        let r = parse("*.corp.example from brand.example -> mx", 3).unwrap();
        assert_eq!(r.sender, Some(Pattern::Exact("brand.example".into())));
        assert_eq!(r.action, Action::Mx);
        assert_eq!(r.line, 3);
        assert_eq!(
            parse("x.example -> local", 1).unwrap().action,
            Action::Local
        );
        let r = parse("* -> relay a:587, b spread", 1).unwrap();
        let Action::Relay((entries, policy)) = r.action else {
            panic!("relay")
        };
        assert_eq!(entries.len(), 2);
        assert_eq!(policy, Policy::Spread);
        let r = parse("x.example -> relay a", 1).unwrap();
        assert!(matches!(r.action, Action::Relay((_, Policy::Failover))));
        let r = parse("x.example -> error 550 5.7.1 We do not send there", 1).unwrap();
        assert_eq!(
            r.action,
            Action::Error {
                code: 550,
                status: "5.7.1".into(),
                text: "We do not send there".into()
            }
        );
        let r = parse("x.example -> error 450 try later", 1).unwrap();
        assert!(matches!(r.action, Action::Error { ref status, .. } if status == "4.0.0"));
    }

    #[test]
    fn bad_lines_say_what_is_wrong() {
        for (line, wanted) in [
            ("x.example mx", "->"),
            ("x.example -> smtp", "expected mx"),
            ("x.example y.example -> mx", "from"),
            ("bad_domain! -> mx", "DOMAIN"),
            ("x.example -> mx now", "nothing after"),
            ("x.example -> relay", "host"),
            ("x.example -> error 250 fine", "4xx or 5xx"),
            ("x.example -> error 550 4.7.1 no", "class"),
            ("x.example -> error 550", "text"),
            ("x.example from -> mx", "from"),
        ] {
            let e = parse(line, 1).unwrap_err();
            assert!(e.contains(wanted), "{line}: {e}");
        }
    }

    #[test]
    fn sender_patterns_match_the_senders_domain() {
        let r = parse("* from *.brand.example -> mx", 1).unwrap();
        assert!(r.matches("a@shop.brand.example", "x.example"));
        assert!(!r.matches("a@brand.example", "x.example"));
        assert!(!r.matches("", "x.example"), "the null sender has no domain");
    }
}
