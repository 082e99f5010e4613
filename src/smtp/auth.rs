//! SASL encodings for AUTH PLAIN (RFC 4616) and LOGIN.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// The PLAIN initial response: base64 of "\0user\0password".
pub fn plain(user: &str, password: &str) -> String {
    let mut raw = Vec::with_capacity(user.len() + password.len() + 2);
    raw.push(0);
    raw.extend_from_slice(user.as_bytes());
    raw.push(0);
    raw.extend_from_slice(password.as_bytes());
    STANDARD.encode(raw)
}

/// One LOGIN response: base64 of the text.
pub fn encode(text: &str) -> String {
    STANDARD.encode(text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_matches_rfc_4616_example() {
        // RFC 4616 §4: "\0tim\0tanstaaftanstaaf".
        assert_eq!(
            plain("tim", "tanstaaftanstaaf"),
            "AHRpbQB0YW5zdGFhZnRhbnN0YWFm"
        );
        assert_eq!(encode("tim"), "dGlt");
    }
}
