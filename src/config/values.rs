//! The value parsers every configuration line shares: durations,
//! sizes, yes/no, counts, host names, `host:port`, paths, TLS modes.
//! Each takes one value as written and returns it parsed, or an error
//! message that quotes at most 60 characters of it ([`clip`]). Used by
//! the main parser (`config/mod.rs`) and by the relay and route parsers
//! alike, which need nothing else of it.

use std::path::PathBuf;
use std::time::Duration;

use crate::address::Address;

/// TLS mode for the smarthost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmarthostTls {
    /// STARTTLS, verified.
    Starttls,
    /// Implicit TLS (port 465), verified.
    Tls,
    /// Plain text.
    None,
}

/// At most 60 characters of `s`, for error messages.
pub fn clip(s: &str) -> &str {
    match s.char_indices().nth(60) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// The items of a list value, separated by commas and/or blanks.
pub fn list(value: &str) -> impl Iterator<Item = &str> {
    value.split([',', ' ', '\t']).filter(|d| !d.is_empty())
}

/// `yes` or `no`.
pub fn yes_no(value: &str) -> std::result::Result<bool, String> {
    match value {
        "yes" => Ok(true),
        "no" => Ok(false),
        _ => Err(format!("expected yes or no, got {:?}", clip(value))),
    }
}

/// A host name, or `*.` and a host name (any name under it), lower case.
pub fn domain_pattern(value: &str) -> std::result::Result<String, String> {
    let (star, name) = match value.strip_prefix("*.") {
        Some(rest) => ("*.", rest),
        None => ("", value),
    };
    let name = hostname(name)
        .map_err(|_| format!("expected a host name or *.domain, got {:?}", clip(value)))?;
    Ok(format!("{star}{}", name.to_ascii_lowercase()))
}

/// One full address with a domain: the fixed sender (never `<>`, never a
/// bare name, which would be masqueraded again).
pub fn sender_address(value: &str) -> std::result::Result<Address, String> {
    match Address::parse(value) {
        Ok(a) if a.is_qualified() && !value.starts_with('<') => Ok(a),
        _ => Err(format!(
            "expected an address such as noreply@example.com, got {:?}",
            clip(value)
        )),
    }
}

/// `starttls`, `tls` or `none`.
pub fn smarthost_tls(value: &str) -> std::result::Result<SmarthostTls, String> {
    match value {
        "starttls" => Ok(SmarthostTls::Starttls),
        "tls" => Ok(SmarthostTls::Tls),
        "none" => Ok(SmarthostTls::None),
        _ => Err(format!(
            "expected starttls, tls or none, got {:?}",
            clip(value)
        )),
    }
}

/// A per-user path: absolute, or starting with `~/` (the user's home).
pub fn home_template(value: &str) -> std::result::Result<String, String> {
    if value.starts_with('/') || value.starts_with("~/") {
        Ok(value.to_string())
    } else {
        Err(format!(
            "expected an absolute path or one starting with ~/, got {:?}",
            clip(value)
        ))
    }
}

/// `f`'s value, or None for an empty value (a setting left unset).
pub fn optional<T>(
    value: &str,
    f: impl FnOnce(&str) -> std::result::Result<T, String>,
) -> std::result::Result<Option<T>, String> {
    if value.is_empty() {
        Ok(None)
    } else {
        f(value).map(Some)
    }
}

/// A syslog identity's first part: log tools split `NAME/SERVICE[PID]:`
/// on `/`, `[` and `:`, so a name holds none of those, nor spaces.
pub fn syslog_name(value: &str) -> std::result::Result<String, String> {
    let ok = (1..=32).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    match ok {
        true => Ok(value.to_string()),
        false => Err(format!(
            "expected 1 to 32 letters, digits, '.', '_' or '-', got {:?}",
            clip(value)
        )),
    }
}

/// A path starting with `/`.
pub fn absolute_path(value: &str) -> std::result::Result<PathBuf, String> {
    if value.starts_with('/') {
        Ok(PathBuf::from(value))
    } else {
        Err(format!("expected an absolute path, got {:?}", clip(value)))
    }
}

/// A DNS host name (letters, digits and hyphens in dot-separated
/// labels), without a trailing dot.
pub fn hostname(value: &str) -> std::result::Result<String, String> {
    let value = value.strip_suffix('.').unwrap_or(value);
    let ok = !value.is_empty()
        && value.len() <= 253
        && value.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if ok {
        Ok(value.to_string())
    } else {
        Err(format!("expected a host name, got {:?}", clip(value)))
    }
}

/// A TCP port, 1 to 65535.
pub fn port(value: &str) -> std::result::Result<u16, String> {
    match value.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(format!("expected a port number, got {:?}", clip(value))),
    }
}

/// A count, 0 allowed (0: no limit).
pub fn count(value: &str) -> std::result::Result<u64, String> {
    value
        .parse::<u64>()
        .map_err(|_| format!("expected a number (0: no limit), got {:?}", clip(value)))
}

/// A number of at least 1.
pub fn positive(value: &str) -> std::result::Result<u32, String> {
    match value.parse::<u32>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("expected a positive number, got {:?}", clip(value))),
    }
}

/// `host`, `host:port`, `[v6addr]`, `[v6addr]:port`: the host, and the
/// port when one is written.
pub fn host_and_port(value: &str) -> std::result::Result<(String, Option<u16>), String> {
    if let Some(rest) = value.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("unclosed [ in {:?}", clip(value)))?;
        host.parse::<std::net::Ipv6Addr>()
            .map_err(|_| format!("bad IPv6 address {:?}", clip(host)))?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(port(p)?),
            None if after.is_empty() => None,
            None => return Err(format!("expected [ipv6]:port, got {:?}", clip(value))),
        };
        return Ok((host.to_string(), port));
    }
    let (host, p) = match value.rsplit_once(':') {
        Some((h, p)) => (h, Some(port(p)?)),
        None => (value, None),
    };
    if host.parse::<std::net::Ipv4Addr>().is_ok() {
        return Ok((host.to_string(), p));
    }
    Ok((hostname(host)?, p))
}

/// `30s`, `30m`, `3h`, `5d`, `1w`, or a bare number of seconds.
pub fn parse_duration(value: &str) -> std::result::Result<Duration, String> {
    let scale = |unit: &str| match unit {
        "" | "s" => Some(1),
        "m" => Some(60),
        "h" => Some(3600),
        "d" => Some(86400),
        "w" => Some(7 * 86400),
        _ => None,
    };
    scaled_number(value, scale)
        .map(Duration::from_secs)
        .ok_or_else(|| {
            format!(
                "expected a duration such as 30s, 30m, 3h, 5d, got {:?}",
                clip(value)
            )
        })
}

/// A byte count with an optional `k`, `M` or `G` suffix (powers of 1024).
pub fn parse_size(value: &str) -> std::result::Result<u64, String> {
    let scale = |unit: &str| match unit {
        "" => Some(1),
        "k" | "K" => Some(1024),
        "M" => Some(1024 * 1024),
        "G" => Some(1024 * 1024 * 1024),
        _ => None,
    };
    scaled_number(value, scale).ok_or_else(|| {
        format!(
            "expected a size such as 10485760, 10M or 512k, got {:?}",
            clip(value)
        )
    })
}

/// Digits followed by a unit that `scale` knows, multiplied out without overflow.
fn scaled_number(value: &str, scale: impl Fn(&str) -> Option<u64>) -> Option<u64> {
    let (digits, unit) = match value.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => value.split_at(i),
        None => (value, ""),
    };
    digits.parse::<u64>().ok()?.checked_mul(scale(unit)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `host`, `host:port`, `[v6addr]:port`; the port defaults to 25.
    fn host_port(value: &str) -> std::result::Result<(String, u16), String> {
        host_and_port(value).map(|(h, p)| (h, p.unwrap_or(25)))
    }

    #[test]
    fn host_port_forms() {
        assert_eq!(host_port("relay").unwrap(), ("relay".to_string(), 25));
        assert_eq!(host_port("[::1]:2525").unwrap(), ("::1".to_string(), 2525));
        assert_eq!(
            host_port("127.0.0.1:26").unwrap(),
            ("127.0.0.1".to_string(), 26)
        );
        assert!(host_port("relay:0").is_err());
        assert!(host_port("[::1").is_err());
    }

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("45").unwrap(), Duration::from_secs(45));
        assert_eq!(parse_duration("2w").unwrap(), Duration::from_secs(1209600));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("99999999999999999999d").is_err());
        assert_eq!(parse_size("0").unwrap(), 0);
        assert_eq!(parse_size("512k").unwrap(), 524288);
        assert_eq!(parse_size("1G").unwrap(), 1 << 30);
    }
}
