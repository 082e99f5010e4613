//! MTA-STS (RFC 8461): what a recipient domain publishes, read as the
//! RFC says — the `_mta-sts` TXT record that announces a policy and
//! names its version (§3.1), the policy file itself (§3.2), and which MX
//! hosts a policy allows (§4.1). Parsing only: fetching the policy over
//! HTTPS, caching it for `max_age` and applying it to MX delivery are
//! the delivery's (issue 26 item 2); this module decides nothing about
//! the network and is fed bytes.
//!
//! Everything here is input from the network, so every parser refuses
//! what the RFC does not allow rather than guessing: a domain whose
//! record or policy is malformed is treated as having no policy (§3.1,
//! §3.2), which is what the RFC requires of a sender.

/// The longest policy file read (RFC 8461 §3.3: senders may limit it; 64
/// KiB as the RFC suggests).
pub const MAX_POLICY: usize = 64 * 1024;
/// The longest `max_age` allowed (RFC 8461 §3.2: 31557600, one year).
pub const MAX_AGE_LIMIT: u64 = 31_557_600;

/// How a policy is to be applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Deliver only to MX hosts the policy names, over TLS with a
    /// certificate valid for the host; otherwise do not deliver.
    Enforce,
    /// Deliver as without a policy; report what would have failed.
    Testing,
    /// The domain withdrew its policy.
    None,
}

/// A domain's MTA-STS policy (RFC 8461 §3.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// How it is applied.
    pub mode: Mode,
    /// The MX patterns, lower case, without a trailing dot: a host name,
    /// or `*.` and a domain (one leftmost label).
    pub mx: Vec<String>,
    /// How long the policy may be cached, in seconds.
    pub max_age: u64,
}

/// The policy ID announced by a domain's `_mta-sts` TXT records, or None
/// when the domain announces no usable policy: records not starting with
/// `v=STSv1` are discarded, and anything but exactly one remaining,
/// well-formed record means no policy (RFC 8461 §3.1).
pub fn announced_id(records: &[Vec<u8>]) -> Option<String> {
    let ours: Vec<&[u8]> = records
        .iter()
        .map(Vec::as_slice)
        .filter(|r| r.starts_with(b"v=STSv1"))
        .collect();
    let [record] = ours.as_slice() else {
        return None;
    };
    let text = std::str::from_utf8(record).ok()?;
    let mut fields = text.split(';').map(str::trim).filter(|f| !f.is_empty());
    if fields.next()? != "v=STSv1" {
        return None;
    }
    let mut id = None;
    for field in fields {
        let (key, value) = field.split_once('=')?;
        if key.is_empty()
            || !key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
        {
            return None;
        }
        if key == "id" {
            // sts-id = 1*32(ALPHA / DIGIT)
            let ok =
                (1..=32).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_alphanumeric());
            if !ok || id.is_some() {
                return None;
            }
            id = Some(value.to_string());
        }
    }
    id
}

/// Reads a policy file (RFC 8461 §3.2): `key: value` lines ending in LF
/// or CRLF; `version: STSv1`, `mode` and `max_age` required once each,
/// `mx` one or more times (none allowed only in mode none); other keys
/// ignored. Err says what is wrong; a sender then has no policy.
pub fn parse_policy(text: &[u8]) -> Result<Policy, String> {
    if text.len() > MAX_POLICY {
        return Err(format!("policy over {MAX_POLICY} octets"));
    }
    let text = std::str::from_utf8(text).map_err(|_| "policy is not UTF-8".to_string())?;
    let (mut version, mut mode, mut max_age) = (None, None, None);
    let mut mx = Vec::new();
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() {
            continue;
        }
        let (key, value) = line
            .split_once(':')
            .ok_or_else(|| format!("not a key: value line: {line:?}"))?;
        let (key, value) = (key.trim(), value.trim());
        match key {
            "version" => {
                once(&version, key)?;
                version = Some(value.to_string());
            }
            "mode" => {
                once(&mode, key)?;
                mode = Some(match value {
                    "enforce" => Mode::Enforce,
                    "testing" => Mode::Testing,
                    "none" => Mode::None,
                    _ => return Err(format!("unknown mode {value:?}")),
                });
            }
            "max_age" => {
                once(&max_age, key)?;
                // max-age-value = 1*10(DIGIT)
                if value.is_empty()
                    || value.len() > 10
                    || !value.bytes().all(|b| b.is_ascii_digit())
                {
                    return Err(format!("max_age {value:?} is not a number of seconds"));
                }
                let seconds: u64 = value.parse().map_err(|_| format!("max_age {value:?}"))?;
                if seconds > MAX_AGE_LIMIT {
                    return Err(format!("max_age {seconds} over {MAX_AGE_LIMIT}"));
                }
                max_age = Some(seconds);
            }
            "mx" => mx.push(mx_pattern(value)?),
            // RFC 8461 §3.2: unknown keys are ignored (extensions).
            _ => {}
        }
    }
    if version.as_deref() != Some("STSv1") {
        return Err("no version: STSv1".to_string());
    }
    let mode = mode.ok_or("no mode")?;
    let max_age = max_age.ok_or("no max_age")?;
    if mx.is_empty() && mode != Mode::None {
        return Err("no mx".to_string());
    }
    Ok(Policy { mode, mx, max_age })
}

/// Err when a key that may appear once already has.
fn once<T>(slot: &Option<T>, key: &str) -> Result<(), String> {
    match slot {
        Some(_) => Err(format!("{key} given twice")),
        None => Ok(()),
    }
}

/// An `mx` value: a host name or `*.` and a domain, checked label by
/// label, lower case, without a trailing dot.
fn mx_pattern(value: &str) -> Result<String, String> {
    let pattern = value.trim_end_matches('.').to_ascii_lowercase();
    let name = pattern.strip_prefix("*.").unwrap_or(&pattern);
    let labels_ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            (1..=63).contains(&l.len())
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        });
    if !labels_ok {
        return Err(format!("mx {value:?} is not a host name or *.domain"));
    }
    Ok(pattern)
}

impl Policy {
    /// Whether the MX host `host` is one the policy allows (RFC 8461
    /// §4.1): equal to a pattern, or, for `*.domain`, exactly one label
    /// more than the domain. Case and a trailing dot do not matter.
    pub fn allows(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.mx
            .iter()
            .any(|pattern| match pattern.strip_prefix("*.") {
                Some(domain) => host
                    .split_once('.')
                    .is_some_and(|(first, rest)| !first.is_empty() && rest == domain),
                None => *pattern == host,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn txt(records: &[&str]) -> Option<String> {
        let records: Vec<Vec<u8>> = records.iter().map(|r| r.as_bytes().to_vec()).collect();
        announced_id(&records)
    }

    #[test]
    fn the_txt_record_announces_one_policy_id_or_none() {
        // RFC 8461 §3.1's example.
        assert_eq!(
            txt(&["v=STSv1; id=20160831085700Z;"]).as_deref(),
            Some("20160831085700Z")
        );
        assert_eq!(
            txt(&["v=STSv1;id=abc", "v=spf1 -all"]).as_deref(),
            Some("abc")
        );
        // Extensions are allowed and ignored.
        assert_eq!(txt(&["v=STSv1; id=abc; ext=1"]).as_deref(), Some("abc"));
        for bad in [
            &["v=STSv1; id=a", "v=STSv1; id=b"][..], // two records: none
            &["v=STSv1;"],                           // no id
            &["v=STSv1; id="],
            &["v=STSv1; id=has-dash"],
            &["v=STSv1; id=000000000000000000000000000000000"], // 33 characters
            &["v=STSv1; id=a; id=b"],
            &["id=a; v=STSv1"],
            &["v=STSv10; id=a"],
            &["v=STSv1; garbage"],
            &[],
        ] {
            assert_eq!(txt(bad), None, "{bad:?}");
        }
    }

    const RFC_EXAMPLE: &str = "version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\nmx: backupmx.example.com\r\nmax_age: 604800\r\n";

    #[test]
    fn the_rfc_policy_reads_back() {
        let policy = parse_policy(RFC_EXAMPLE.as_bytes()).unwrap();
        assert_eq!(policy.mode, Mode::Enforce);
        assert_eq!(policy.max_age, 604_800);
        assert_eq!(
            policy.mx,
            ["mail.example.com", "*.example.net", "backupmx.example.com"]
        );
        // LF endings, unknown keys, and mode none without mx.
        let lf = "version: STSv1\nmode: none\nmax_age: 0\nextension: yes\n";
        assert_eq!(parse_policy(lf.as_bytes()).unwrap().mode, Mode::None);
    }

    #[test]
    fn a_malformed_policy_is_no_policy() {
        for bad in [
            "mode: enforce\nmx: a.example\nmax_age: 1\n", // no version
            "version: STSv2\nmode: enforce\nmx: a.example\nmax_age: 1\n", // another version
            "version: STSv1\nmode: strict\nmx: a.example\nmax_age: 1\n", // unknown mode
            "version: STSv1\nmode: enforce\nmax_age: 1\n", // no mx
            "version: STSv1\nmode: enforce\nmx: a.example\n", // no max_age
            "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: -1\n",
            "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 31557601\n",
            "version: STSv1\nmode: enforce\nmode: testing\nmx: a.example\nmax_age: 1\n",
            "version: STSv1\nmode: enforce\nmx: *.*.example\nmax_age: 1\n",
            "version: STSv1\nmode: enforce\nmx: a..example\nmax_age: 1\n",
            "version: STSv1\nmode: enforce\nmx: a.example\nmax_age 1\n",
        ] {
            assert!(parse_policy(bad.as_bytes()).is_err(), "{bad:?}");
        }
        let huge = format!("{RFC_EXAMPLE}{}", "x: y\n".repeat(MAX_POLICY / 5));
        assert!(parse_policy(huge.as_bytes()).is_err());
        assert!(parse_policy(b"version: STSv1\nmode: \xff\n").is_err());
    }

    #[test]
    fn mx_hosts_match_exactly_or_one_label_under_a_wildcard() {
        let policy = parse_policy(RFC_EXAMPLE.as_bytes()).unwrap();
        for allowed in [
            "mail.example.com",
            "MAIL.Example.COM.",
            "mx1.example.net",
            "backupmx.example.com",
        ] {
            assert!(policy.allows(allowed), "{allowed}");
        }
        // RFC 8461 §4.1: the wildcard is one label, leftmost.
        for refused in [
            "example.net",
            "a.b.example.net",
            "mail.example.org",
            "xmail.example.com",
            "",
        ] {
            assert!(!policy.allows(refused), "{refused}");
        }
    }
}
