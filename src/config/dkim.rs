//! DKIM signing domains: the `dkim = DOMAIN selector=S key=/PATH
//! [algorithm=rsa-sha256|ed25519-sha256] [subdomains=yes]` lines, one per
//! signing domain, and which of them signs a message whose `From:` is in
//! a given domain ([`Signing::for_domain`]). Parsing only: the runner
//! reads the key and signs (`runner::dkim`).

use std::path::PathBuf;

use super::values::{self, clip};

/// The signature algorithm of a signing domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// `rsa-sha256` (RFC 6376 §3.3.2), the default.
    RsaSha256,
    /// `ed25519-sha256` (RFC 8463).
    Ed25519Sha256,
}

impl Algorithm {
    /// The name as the `a=` tag and the configuration write it.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::RsaSha256 => "rsa-sha256",
            Algorithm::Ed25519Sha256 => "ed25519-sha256",
        }
    }
}

/// One `dkim =` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signing {
    /// The signing domain (`d=`), lower case.
    pub domain: String,
    /// The selector (`s=`).
    pub selector: String,
    /// The private key's file (PEM, PKCS#8 or PKCS#1 for RSA).
    pub key: PathBuf,
    /// The algorithm the key is for.
    pub algorithm: Algorithm,
    /// Whether a `From:` in a subdomain of `domain` is signed with it too.
    pub subdomains: bool,
}

impl Signing {
    /// Whether this line signs mail whose `From:` domain is `domain`
    /// (any case): the domain itself, or a name under it when
    /// `subdomains=yes`.
    pub fn covers(&self, domain: &str) -> bool {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        domain == self.domain
            || (self.subdomains
                && domain
                    .strip_suffix(self.domain.as_str())
                    .is_some_and(|head| head.ends_with('.') && head.len() > 1))
    }

    /// The line that signs mail from `domain`: the exact domain first,
    /// else the longest parent that takes its subdomains.
    pub fn for_domain<'a>(lines: &'a [Signing], domain: &str) -> Option<&'a Signing> {
        lines
            .iter()
            .filter(|s| s.covers(domain))
            .max_by_key(|s| s.domain.len())
    }
}

/// Parses the value of a `dkim =` line.
pub fn parse(value: &str) -> Result<Signing, String> {
    let mut words = value.split_whitespace();
    let domain = words
        .next()
        .ok_or_else(|| "expected DOMAIN selector=S key=/PATH".to_string())?;
    let domain = values::hostname(domain)?.to_ascii_lowercase();
    let (mut selector, mut key, mut algorithm, mut subdomains) = (None, None, None, None);
    for word in words {
        let (name, v) = word
            .split_once('=')
            .ok_or_else(|| format!("expected name=value, got {:?}", clip(word)))?;
        let twice = || format!("{name} is given twice");
        match name {
            "selector" => {
                // A selector is a DNS label sequence (RFC 6376 §3.1).
                let s = values::hostname(v)
                    .map_err(|_| format!("expected a selector, got {:?}", clip(v)))?;
                selector.replace(s).map_or(Ok(()), |_| Err(twice()))?
            }
            "key" => key
                .replace(values::absolute_path(v)?)
                .map_or(Ok(()), |_| Err(twice()))?,
            "algorithm" => {
                let a = match v {
                    "rsa-sha256" => Algorithm::RsaSha256,
                    "ed25519-sha256" => Algorithm::Ed25519Sha256,
                    _ => {
                        return Err(format!(
                            "expected rsa-sha256 or ed25519-sha256, got {:?}",
                            clip(v)
                        ));
                    }
                };
                algorithm.replace(a).map_or(Ok(()), |_| Err(twice()))?
            }
            "subdomains" => subdomains
                .replace(values::yes_no(v)?)
                .map_or(Ok(()), |_| Err(twice()))?,
            _ => return Err(format!("unknown option {:?}", clip(name))),
        }
    }
    Ok(Signing {
        domain,
        selector: selector.ok_or("selector= is missing")?,
        key: key.ok_or("key= is missing")?,
        algorithm: algorithm.unwrap_or(Algorithm::RsaSha256),
        subdomains: subdomains.unwrap_or(false),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_with_every_option() {
        let s = parse(
            "Example.ORG selector=mail2026 key=/etc/spoolmail/dkim/example.org.mail2026.key algorithm=ed25519-sha256 subdomains=yes",
        )
        .unwrap();
        assert_eq!(s.domain, "example.org");
        assert_eq!(s.selector, "mail2026");
        assert_eq!(
            s.key,
            PathBuf::from("/etc/spoolmail/dkim/example.org.mail2026.key")
        );
        assert_eq!(s.algorithm, Algorithm::Ed25519Sha256);
        assert!(s.subdomains);
        let plain = parse("example.org selector=s key=/k").unwrap();
        assert_eq!(plain.algorithm, Algorithm::RsaSha256, "the default");
        assert!(!plain.subdomains, "the default");
    }

    #[test]
    fn malformed_lines_are_refused() {
        for bad in [
            "",
            "example.org key=/k",
            "example.org selector=s",
            "example.org selector=s key=relative",
            "example.org selector=s key=/k algorithm=rsa-sha1",
            "example.org selector=s key=/k subdomains=maybe",
            "example.org selector=s key=/k colour=blue",
            "example.org selector=s selector=t key=/k",
            "exa_mple.org selector=s key=/k",
            "example.org selector=a;b key=/k",
            "example.org selector",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} was taken");
        }
    }

    #[test]
    fn a_subdomain_matches_its_parent_only_when_asked() {
        let lines = [
            parse("example.org selector=s key=/a").unwrap(),
            parse("corp.example selector=s key=/b subdomains=yes").unwrap(),
            parse("eu.corp.example selector=t key=/c").unwrap(),
        ];
        let key = |d: &str| Signing::for_domain(&lines, d).map(|s| s.key.clone());
        assert_eq!(key("EXAMPLE.org"), Some(PathBuf::from("/a")));
        assert_eq!(key("mail.example.org"), None, "subdomains not asked for");
        assert_eq!(key("corp.example"), Some(PathBuf::from("/b")));
        assert_eq!(key("host.corp.example"), Some(PathBuf::from("/b")));
        assert_eq!(key("eu.corp.example"), Some(PathBuf::from("/c")), "longest");
        assert_eq!(key("xcorp.example"), None, "not a subdomain");
        assert_eq!(key("other.test"), None);
    }
}
