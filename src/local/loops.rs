//! Mail loop detection for local delivery: a message that already says it
//! was delivered to this recipient (`Delivered-To:`), or that has been
//! through too many hops (`Received:` plus `Delivered-To:` fields), is a
//! loop and bounces instead of going round again.

use std::io::{self, BufRead, BufReader, Read};

/// Header bytes looked at; a header this large is itself suspect.
const MAX_HEADER: u64 = 1 << 20;

/// Why a message is a loop, or None.
pub fn check(
    message: &mut dyn Read,
    delivered_to: &str,
    max_hops: u32,
) -> io::Result<Option<String>> {
    let mut reader = BufReader::new(message.take(MAX_HEADER));
    let mut line = Vec::new();
    let mut hops = 0u32;
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches(['\r', '\n']);
        if text.is_empty() {
            break;
        }
        let Some((name, value)) = text.split_once(':') else {
            continue;
        };
        if name.eq_ignore_ascii_case("received") {
            hops += 1;
        } else if name.eq_ignore_ascii_case("delivered-to") {
            hops += 1;
            if value.trim().eq_ignore_ascii_case(delivered_to) {
                return Ok(Some(format!(
                    "mail forwarding loop for {delivered_to} (it carries Delivered-To: {delivered_to})"
                )));
            }
        }
    }
    Ok((hops > max_hops).then(|| {
        format!(
            "mail loop: {hops} Received:/Delivered-To: fields, more than the {max_hops} allowed"
        )
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_delivered_to_is_a_loop_in_the_header_only() {
        let msg = b"Received: x\nDelivered-To: Root@Host.example\nSubject: s\n\nbody\n";
        let why = check(&mut &msg[..], "root@host.example", 50).unwrap();
        assert!(why.unwrap().contains("forwarding loop"));
        let msg = b"Subject: s\n\nDelivered-To: root@host.example\n";
        assert_eq!(check(&mut &msg[..], "root@host.example", 50).unwrap(), None);
    }

    #[test]
    fn too_many_hops_is_a_loop() {
        let msg = format!("{}Subject: s\n\nbody\n", "Received: by x\n".repeat(4));
        assert!(check(&mut msg.as_bytes(), "a@b", 3).unwrap().is_some());
        assert_eq!(check(&mut msg.as_bytes(), "a@b", 4).unwrap(), None);
    }
}
