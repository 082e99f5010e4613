//! DKIM signing (RFC 6376; RSA-SHA256 and Ed25519-SHA256, RFC 8463;
//! relaxed/relaxed), done by the runner where the bytes are final
//! (issue 26): the session hands over the form it sends to each server
//! (`smtp::sent_form`: converted to 7-bit MIME for a server without
//! 8BITMIME, CRLF, folded, not dot-stuffed) and this module signs it.
//!
//! - The signing domain is the `From:` header's domain — of the stored
//!   message, masqueraded at submission — matched against the `dkim`
//!   lines ([`crate::config::dkim::Signing::for_domain`]).
//! - The key is read once per attempt ([`for_message`]), by the runner
//!   (root or the spool's group): a key readable by everyone is refused
//!   as OpenDKIM does, and a key that cannot be used makes the message
//!   wait (4.3.5) unless `dkim_required = no` — never sent unsigned when
//!   signing was configured.
//! - Memory does not grow with the message (S5): the header section is
//!   read first (a pass that stops at its end) to choose the signed
//!   fields, then the whole sent form streams through mail-auth's
//!   canonicaliser and body hash; only the header section is held.
//! - Signed fields: OpenDKIM's default set, those present in the
//!   message, and `From` once more (oversigned: a second `From:` added
//!   on the way breaks the signature).
//!
//! Cryptography and canonicalisation are mail-auth's (Stalwart's), with
//! its pure-Rust backend; key generation (`--dkim-keygen`) uses OpenSSL,
//! linked already for TLS.

use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use mail_auth::common::crypto::{Ed25519Key, RsaKey, Sha256, SigningKey};
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::{Canonicalization, DkimSigner};
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;

use crate::config::Config;
use crate::config::dkim::{Algorithm, Signing};

/// The header fields signed when present: OpenDKIM's default set.
pub const SIGNED_FIELDS: &[&str] = &[
    "From",
    "Sender",
    "Reply-To",
    "Subject",
    "Date",
    "Message-ID",
    "To",
    "Cc",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
    "Content-ID",
    "Content-Description",
    "Resent-Date",
    "Resent-From",
    "Resent-Sender",
    "Resent-To",
    "Resent-Cc",
    "Resent-Message-ID",
    "In-Reply-To",
    "References",
    "List-Id",
    "List-Help",
    "List-Unsubscribe",
    "List-Subscribe",
    "List-Post",
    "List-Owner",
    "List-Archive",
];

/// The most of a header section read to find `From:` or held to sign.
const MAX_HEADER: usize = 1 << 20;

/// A message's signer: its signing domain's line and key.
pub struct Signer {
    signing: Signing,
    /// The private key (PKCS#8 or PKCS#1 DER), checked when read.
    key: PrivateKeyDer<'static>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Signer(d={} s={})",
            self.signing.domain, self.signing.selector
        )
    }
}

/// Why a message that must be signed cannot be: its key.
#[derive(Debug)]
pub struct KeyError(pub String);

impl std::fmt::Display for KeyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The signer of the stored message `data` (its header section is
/// read): Ok(None) when no `dkim` line covers its `From:` domain, or
/// when its key cannot be used and `dkim_required = no` (logged).
pub fn for_message(
    config: &Config,
    id: &str,
    data: &mut dyn Read,
) -> Result<Option<Signer>, KeyError> {
    if config.dkim.is_empty() {
        return Ok(None);
    }
    let header = read_header(data).map_err(|e| KeyError(format!("reading {id}: {e}")))?;
    let Some(domain) = from_domain(&header) else {
        return Ok(None);
    };
    let Some(signing) = Signing::for_domain(&config.dkim, &domain) else {
        return Ok(None);
    };
    match read_key(signing) {
        Ok(key) => Ok(Some(Signer {
            signing: signing.clone(),
            key,
        })),
        Err(e) if config.dkim_required => {
            log::error!(
                "{id}: DKIM key {} for {}: {e}: the message waits (dkim_required = yes)",
                signing.key.display(),
                signing.domain
            );
            Err(KeyError(format!(
                "the DKIM key for {} cannot be used: {e}",
                signing.domain
            )))
        }
        Err(e) => {
            log::warn!(
                "{id}: DKIM key {} for {}: {e}: sent unsigned (dkim_required = no)",
                signing.key.display(),
                signing.domain
            );
            Ok(None)
        }
    }
}

/// `--check-config`: what is wrong with each `dkim` line's key, as
/// (the line's index in `config.dkim`, what is wrong): what
/// [`for_message`] would refuse (missing, unreadable, readable by
/// everyone, of the wrong type or size), and a key the runner of an
/// ordinary user (group `group`) cannot read, whose mail would wait for
/// root's queue run.
pub fn key_problems(config: &Config, group: u32) -> Vec<(usize, String)> {
    let mut problems = Vec::new();
    for (i, signing) in config.dkim.iter().enumerate() {
        let shown = signing.key.display();
        if let Err(e) = read_key(signing) {
            problems.push((i, format!("{shown}: {e}")));
            continue;
        }
        if let Ok(meta) = std::fs::metadata(&signing.key)
            && (meta.uid() != 0 || meta.gid() != group || meta.mode() & 0o040 == 0)
        {
            problems.push((
                i,
                format!(
                    "{shown}: mode {:04o} uid {} gid {}: the runner of an ordinary user (gid {group}) cannot read it, so their mail from {} waits; make it 0640 root:mail",
                    meta.mode() & 0o7777,
                    meta.uid(),
                    meta.gid(),
                    signing.domain
                ),
            ));
        }
    }
    problems
}

/// `--check-config --network`: for each `dkim` line (by index), whether
/// the key published at `SELECTOR._domainkey.DOMAIN` is the key the line
/// signs with, and what was found — a receiver verifies against the
/// published record, so a mismatch (a key rotated on one side only, a
/// record never published, a typo in the selector) fails every
/// signature this host makes.
pub fn published_checks(
    config: &Config,
    resolver: &super::dns::Resolver,
) -> Vec<(usize, bool, String)> {
    let mut found = Vec::new();
    for (i, signing) in config.dkim.iter().enumerate() {
        let name = format!("{}._domainkey.{}", signing.selector, signing.domain);
        let (ok, what) = match public_key(signing) {
            Err(e) => (false, format!("the key {}: {e}", signing.key.display())),
            Ok(ours) => match resolver.txt(&name) {
                Err(e) => (false, format!("no answer: {e}")),
                Ok(records) => compare_published(signing, &ours, &records),
            },
        };
        found.push((i, ok, format!("dkim {name}: {what}")));
    }
    found
}

/// Our public key as a DKIM record's `p=` carries it: the
/// SubjectPublicKeyInfo DER of an RSA key, the raw 32 octets of an
/// Ed25519 key (RFC 8463 §4).
fn public_key(signing: &Signing) -> Result<Vec<u8>, String> {
    let pkey = load_key(signing)?.0;
    match signing.algorithm {
        Algorithm::RsaSha256 => pkey.public_key_to_der(),
        Algorithm::Ed25519Sha256 => pkey.raw_public_key(),
    }
    .map_err(|e| e.to_string())
}

/// Whether one of the TXT `records` is a DKIM key record (RFC 6376
/// §3.6.1) for `signing`'s algorithm with the key `ours`.
fn compare_published(signing: &Signing, ours: &[u8], records: &[Vec<u8>]) -> (bool, String) {
    use base64::Engine;
    let k_wanted = match signing.algorithm {
        Algorithm::RsaSha256 => "rsa",
        Algorithm::Ed25519Sha256 => "ed25519",
    };
    let keys: Vec<(String, String)> = records
        .iter()
        .filter_map(|r| {
            let text = String::from_utf8_lossy(r);
            let tags: Vec<(String, String)> = text
                .split(';')
                .filter_map(|t| t.split_once('='))
                .map(|(k, v)| (k.trim().to_string(), v.split_whitespace().collect()))
                .collect();
            let tag = |name: &str| tags.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
            if tag("v").is_some_and(|v| v != "DKIM1") {
                return None;
            }
            Some((tag("k").unwrap_or_else(|| "rsa".into()), tag("p")?))
        })
        .collect();
    if keys.is_empty() {
        return (false, "no DKIM key record published: receivers cannot verify a signature; publish what --dkim-keygen printed".into());
    }
    let engine = base64::engine::general_purpose::STANDARD;
    for (k, p) in &keys {
        if p.is_empty() {
            return (false, "the published record is revoked (empty p=)".into());
        }
        if k == k_wanted && engine.decode(p).is_ok_and(|d| d == ours) {
            return (
                true,
                format!("published, the key of {} ({k})", signing.key.display()),
            );
        }
    }
    (
        false,
        format!(
            "the published key is not the key of {} ({k_wanted}): every signature would fail verification",
            signing.key.display()
        ),
    )
}

/// Reads and checks the key of `signing`: not readable by everyone, of
/// the configured algorithm, RSA of 2048 bits or more.
fn read_key(signing: &Signing) -> Result<PrivateKeyDer<'static>, String> {
    let (_, pem) = load_key(signing)?;
    let key = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| e.to_string())?;
    // Checked by the signing library too, now rather than per message.
    match signing.algorithm {
        Algorithm::RsaSha256 => RsaKey::<Sha256>::from_key_der(key.clone_key())
            .map(drop)
            .map_err(|e| e.to_string())?,
        Algorithm::Ed25519Sha256 => ed25519(&key).map(drop)?,
    }
    Ok(key)
}

/// The key file of `signing`, checked (not readable by everyone, of the
/// configured algorithm, RSA of 2048 bits or more): parsed, and its PEM.
fn load_key(
    signing: &Signing,
) -> Result<(openssl::pkey::PKey<openssl::pkey::Private>, Vec<u8>), String> {
    let path: &Path = &signing.key;
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let meta = file.metadata().map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file".to_string());
    }
    if meta.mode() & 0o004 != 0 {
        return Err(format!(
            "readable by everyone (mode {:o}): chmod 0640, owner root:mail",
            meta.mode() & 0o7777
        ));
    }
    let mut pem = Vec::new();
    file.take(64 * 1024)
        .read_to_end(&mut pem)
        .map_err(|e| e.to_string())?;
    let pkey = openssl::pkey::PKey::private_key_from_pem(&pem)
        .map_err(|_| "not a PEM private key".to_string())?;
    match (signing.algorithm, pkey.id()) {
        (Algorithm::RsaSha256, openssl::pkey::Id::RSA) if pkey.bits() < 2048 => {
            return Err(format!(
                "an RSA key of {} bits: 2048 at least (RFC 8301)",
                pkey.bits()
            ));
        }
        (Algorithm::RsaSha256, openssl::pkey::Id::RSA) => {}
        (Algorithm::Ed25519Sha256, openssl::pkey::Id::ED25519) => {}
        (a, _) => return Err(format!("not a key for {}", a.name())),
    }
    Ok((pkey, pem))
}

fn ed25519(key: &PrivateKeyDer<'_>) -> Result<Ed25519Key, String> {
    match key {
        // OpenSSL writes Ed25519 keys as PKCS#8 v1 (no public key inside);
        // ring's strict reader wants v2, its lenient one derives the
        // public key from the seed.
        PrivateKeyDer::Pkcs8(der) => {
            Ed25519Key::from_pkcs8_maybe_unchecked_der(der.secret_pkcs8_der())
                .map_err(|e| e.to_string())
        }
        _ => Err("an Ed25519 key must be PKCS#8".to_string()),
    }
}

/// The header section of `data` (up to the empty line), at most
/// [`MAX_HEADER`] octets of it.
fn read_header(data: &mut dyn Read) -> io::Result<Vec<u8>> {
    let mut header = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = match data.read(&mut buf) {
            Ok(0) => return Ok(header),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let start = header.len().saturating_sub(3);
        header.extend_from_slice(&buf[..n]);
        if let Some(end) = header_end(&header[start..]) {
            header.truncate(start + end);
            return Ok(header);
        }
        if header.len() > MAX_HEADER {
            return Ok(header);
        }
    }
}

/// Where the empty line that ends a header section ends, in LF or CRLF
/// form.
fn header_end(bytes: &[u8]) -> Option<usize> {
    let lf = bytes.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    let crlf = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4);
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The domain of the first address of the `From:` field, lower case.
fn from_domain(header: &[u8]) -> Option<String> {
    let (headers, _) = mailparse::parse_headers(header).ok()?;
    let from = headers
        .iter()
        .find(|h| h.get_key_ref().eq_ignore_ascii_case("from"))?;
    let list = mailparse::addrparse_header(from).ok()?;
    let addr = match list.iter().next()? {
        mailparse::MailAddr::Single(single) => single.addr.clone(),
        mailparse::MailAddr::Group(group) => group.addrs.first()?.addr.clone(),
    };
    let (_, domain) = addr.rsplit_once('@')?;
    Some(domain.trim_end_matches('>').to_ascii_lowercase())
}

/// The names of the fields of `header` to sign: those of
/// [`SIGNED_FIELDS`] present, then `From` again.
fn fields_to_sign(header: &[u8]) -> Vec<&'static str> {
    let mut present: Vec<&'static str> = Vec::new();
    for line in header.split(|&b| b == b'\n') {
        if line.first().is_none_or(|b| b.is_ascii_whitespace()) {
            continue;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = String::from_utf8_lossy(&line[..colon]);
        let name = name.trim();
        if let Some(f) = SIGNED_FIELDS
            .iter()
            .find(|f| f.eq_ignore_ascii_case(name))
            .filter(|f| !present.contains(f))
        {
            present.push(f);
        }
    }
    if present.contains(&"From") {
        present.push("From");
    }
    present
}

/// A sink that keeps the header section and then stops the pass.
struct HeaderOnly {
    header: Vec<u8>,
    complete: bool,
}

impl Write for HeaderOnly {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let start = self.header.len().saturating_sub(3);
        self.header.extend_from_slice(buf);
        if let Some(end) = header_end(&self.header[start..]) {
            self.header.truncate(start + end);
            self.complete = true;
            return Err(io::Error::other("header section read"));
        }
        if self.header.len() > MAX_HEADER {
            return Err(io::Error::other("header section over 1 MiB"));
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The signing stream as a sink for the second pass.
struct Feed<'a, T: SigningKey>(mail_auth::dkim::DkimSigningStream<'a, T>);

impl<T: SigningKey> Write for Feed<'_, T> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Signer {
    /// The signing domain.
    pub fn domain(&self) -> &str {
        &self.signing.domain
    }

    fn sign_with<T: SigningKey>(
        &self,
        key: T,
        fields: &[&str],
        pass: &mut dyn FnMut(&mut dyn Write) -> io::Result<u64>,
    ) -> Result<Vec<u8>, String>
    where
        <<T as SigningKey>::Hasher as mail_auth::common::crypto::HashImpl>::Context:
            mail_auth::common::crypto::HashContext,
    {
        let signer = DkimSigner::from_key(key)
            .domain(self.signing.domain.clone())
            .selector(self.signing.selector.clone())
            .headers(fields.iter().copied())
            .header_canonicalization(Canonicalization::Relaxed)
            .body_canonicalization(Canonicalization::Relaxed);
        let mut feed = Feed(signer.sign_streaming());
        pass(&mut feed).map_err(|e| e.to_string())?;
        let signature = feed.0.finish().map_err(|e| e.to_string())?;
        Ok(signature.to_header().into_bytes())
    }
}

/// A [`Signer`] bound to the message it signs, which it reads again for
/// each pass.
pub struct MessageSigner<'a> {
    /// The signer.
    pub signer: &'a Signer,
    /// Opens the stored message from its start.
    pub open: &'a dyn Fn() -> io::Result<Box<dyn Read + 'a>>,
}

impl crate::smtp::SentFormSigner for MessageSigner<'_> {
    fn signature(
        &self,
        sent_form: &mut dyn FnMut(&mut dyn Read, &mut dyn Write) -> io::Result<u64>,
    ) -> Result<Vec<u8>, String> {
        // First pass: the header section as sent, for the fields to sign.
        let mut only = HeaderOnly {
            header: Vec::new(),
            complete: false,
        };
        let mut data = (self.open)().map_err(|e| e.to_string())?;
        match sent_form(&mut data, &mut only) {
            Ok(_) => {}
            Err(_) if only.complete => {}
            Err(e) => return Err(e.to_string()),
        }
        let fields = fields_to_sign(&only.header);
        if fields.is_empty() {
            return Err("the message has no From: field".to_string());
        }
        // Second pass: all of it through the canonicaliser and hashes.
        let mut pass = |out: &mut dyn Write| {
            let mut data = (self.open)()?;
            sent_form(&mut data, out)
        };
        let key = self.signer.key.clone_key();
        match self.signer.signing.algorithm {
            Algorithm::RsaSha256 => {
                let key = RsaKey::<Sha256>::from_key_der(key).map_err(|e| e.to_string())?;
                self.signer.sign_with(key, &fields, &mut pass)
            }
            Algorithm::Ed25519Sha256 => {
                let key = ed25519(&key)?;
                self.signer.sign_with(key, &fields, &mut pass)
            }
        }
    }
}

/// Where `--dkim-keygen` writes a key unless a `dkim` line names one.
pub const KEY_DIR: &str = "/etc/spoolmail/dkim";

/// `spoolmail --dkim-keygen DOMAIN SELECTOR [--ed25519]`: writes a new
/// private key (PKCS#8 PEM; RSA 2048 or Ed25519) to the `key=` path of
/// the `dkim` line of `domain` with that selector, else to
/// `KEY_DIR/DOMAIN.SELECTOR.key` — never over an existing file; mode
/// 0640, and owner root:mail when run as root — and returns the DNS
/// record to publish, in zone-file form, and the path written.
pub fn generate(
    config: &Config,
    domain: &str,
    selector: &str,
    ed25519: bool,
) -> crate::error::Result<(String, std::path::PathBuf)> {
    use crate::error::Error;
    use openssl::pkey::PKey;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let domain = crate::config::values::hostname(domain)
        .map_err(|e| Error::usage(format!("--dkim-keygen: the domain: {e}")))?
        .to_ascii_lowercase();
    let selector = crate::config::values::hostname(selector)
        .map_err(|e| Error::usage(format!("--dkim-keygen: the selector: {e}")))?;
    let path = config
        .dkim
        .iter()
        .find(|s| s.domain == domain && s.selector == selector)
        .map(|s| s.key.clone())
        .unwrap_or_else(|| Path::new(KEY_DIR).join(format!("{domain}.{selector}.key")));
    let crypto = |e: openssl::error::ErrorStack| Error::temp(format!("key generation: {e}"));
    let (pkey, k, public) = if ed25519 {
        let pkey = PKey::generate_ed25519().map_err(crypto)?;
        let public = pkey.raw_public_key().map_err(crypto)?;
        (pkey, "ed25519", public)
    } else {
        let rsa = openssl::rsa::Rsa::generate(2048).map_err(crypto)?;
        let pkey = PKey::from_rsa(rsa).map_err(crypto)?;
        let public = pkey.public_key_to_der().map_err(crypto)?;
        (pkey, "rsa", public)
    };
    let pem = pkey.private_key_to_pem_pkcs8().map_err(crypto)?;
    if let Some(dir) = path.parent()
        && !dir.exists()
    {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir.display(), &e))?;
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o750));
    }
    let io = |e: io::Error| Error::io(path.display(), &e);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
        .map_err(io)?;
    if nix::unistd::geteuid().is_root() {
        let mail = nix::unistd::Group::from_name("mail")
            .ok()
            .flatten()
            .map(|g| g.gid);
        nix::unistd::fchown(&file, Some(nix::unistd::Uid::from_raw(0)), mail)
            .map_err(|e| io(e.into()))?;
    }
    file.set_permissions(std::fs::Permissions::from_mode(0o640))
        .map_err(io)?;
    file.write_all(&pem)
        .and_then(|()| file.sync_all())
        .map_err(io)?;
    Ok((txt_record(&domain, &selector, k, &public), path))
}

/// The DNS record of a public key, in zone-file form: the value cut in
/// strings of at most 255 octets (RFC 1035 §3.3.14; RFC 6376 §3.6.2.2).
fn txt_record(domain: &str, selector: &str, k: &str, public: &[u8]) -> String {
    use base64::Engine;
    let value = format!(
        "v=DKIM1; k={k}; p={}",
        base64::engine::general_purpose::STANDARD.encode(public)
    );
    let strings: Vec<String> = value
        .as_bytes()
        .chunks(255)
        .map(|c| format!("\"{}\"", String::from_utf8_lossy(c)))
        .collect();
    format!(
        "{selector}._domainkey.{domain}. IN TXT ( {} )\n",
        strings.join(" ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_from_domain_is_read_from_the_header() {
        assert_eq!(
            from_domain(b"Subject: x\nFrom: \"A, B\" <a@Mail.Example.ORG>\n\n"),
            Some("mail.example.org".to_string())
        );
        assert_eq!(from_domain(b"Subject: x\n\n"), None);
    }

    #[test]
    fn present_fields_are_signed_and_from_twice() {
        let fields = fields_to_sign(
            b"Received: x\r\nfrom: a@b\r\nSubject: s\r\n folded\r\nX-Mailer: m\r\nTo: t@u\r\n\r\n",
        );
        assert_eq!(fields, ["From", "Subject", "To", "From"]);
    }

    #[test]
    fn a_published_record_matches_only_with_the_same_key_and_algorithm() {
        let signing = Signing {
            domain: "example.org".into(),
            selector: "s1".into(),
            key: "/k".into(),
            algorithm: Algorithm::Ed25519Sha256,
            subdomains: false,
        };
        let ours = [7u8; 32];
        let p = "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc="; // 32 x 7
        let check = |records: &[&str]| {
            let records: Vec<Vec<u8>> = records.iter().map(|r| r.as_bytes().to_vec()).collect();
            compare_published(&signing, &ours, &records)
        };
        assert!(check(&[&format!("v=DKIM1; k=ed25519; p={p}")]).0);
        // Split over strings and folded: the value is read without spaces.
        assert!(check(&[&format!("v=DKIM1; k=ed25519; p={} {}", &p[..10], &p[10..])]).0);
        // Another algorithm's record, another key, a revoked one, none.
        assert!(
            !check(&[&format!("v=DKIM1; p={p}")]).0,
            "k= defaults to rsa"
        );
        assert!(!check(&["v=DKIM1; k=ed25519; p=AAAA"]).0);
        assert!(check(&["v=DKIM1; k=ed25519; p="]).1.contains("revoked"));
        assert!(check(&["v=spf1 -all"]).1.contains("no DKIM key record"));
        assert!(check(&[]).1.contains("no DKIM key record"));
    }

    #[test]
    fn the_header_ends_at_the_first_empty_line() {
        assert_eq!(header_end(b"A: b\r\n\r\nbody\n\n"), Some(8));
        assert_eq!(header_end(b"A: b\n\nbody\r\n\r\n"), Some(6));
        assert_eq!(header_end(b"A: b\n"), None);
    }
}
