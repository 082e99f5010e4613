//! Which relay of a list a message tries first: the order the list's
//! policy gives (failover: as written; spread: starting at the entry a
//! hash of the queue ID picks). The transport then skips the entries in
//! the unreachable cache and fails over along this order.

use crate::config::Config;
use crate::config::relay::{Policy, Relay, RelayList};

use super::hosts::{Destination, Hop};

/// A hop with the relay settings it is reached with (None: MX).
pub type Candidate<'a> = (Hop, Option<&'a Relay>);

/// The hops of `dest` in the order the message `id` tries them. A lone
/// smarthost keeps the [`Hop::Smarthost`] key it always had.
pub fn hops<'a>(config: &'a Config, dest: &Destination, id: &str) -> Vec<Candidate<'a>> {
    let list = match dest {
        Destination::Domain(d) => return vec![(Hop::Domain(d.clone()), None)],
        Destination::Smarthost => match &config.smarthost {
            Some(list) if list.relays.len() == 1 => {
                return vec![(Hop::Smarthost, Some(&list.relays[0]))];
            }
            Some(list) => list,
            None => return Vec::new(),
        },
        Destination::Route(index) => match config.routes.get(*index).map(|r| &r.action) {
            Some(crate::config::route::Action::Relay(list)) => list,
            _ => return Vec::new(),
        },
    };
    order(list, id)
        .into_iter()
        .map(|r| (Hop::Relay(r.host.clone(), r.port), Some(r)))
        .collect()
}

/// The entries of `list` in the order a message with queue ID `id`
/// tries them.
pub fn order<'l>(list: &'l RelayList, id: &str) -> Vec<&'l Relay> {
    let mut rest: Vec<&Relay> = list.relays.iter().collect();
    match list.policy {
        Policy::Failover => rest,
        // An order drawn from a hash of the ID, not a counter: the same
        // message always tries the same relays in the same order (a
        // retry goes where the first attempt went while it is up), and
        // no shared state is written per message. A whole order, not a
        // starting point: the share of a relay that is down spreads over
        // all the others, not onto the one written after it.
        Policy::Spread => {
            let mut hash = fnv1a(id.as_bytes());
            let mut ordered = Vec::with_capacity(rest.len());
            while !rest.is_empty() {
                let n = rest.len() as u64;
                ordered.push(rest.remove((hash % n) as usize));
                hash /= n;
            }
            ordered
        }
    }
}

/// FNV-1a, 64 bits: stable across builds and platforms, unlike std's
/// hasher, and queue IDs differ in their last characters, which it
/// spreads well.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SmarthostTls;

    fn list(policy: Policy) -> RelayList {
        let relay = |host: &str| Relay {
            host: host.into(),
            port: 25,
            tls: SmarthostTls::None,
            auth: None,
            max_connections: 1,
        };
        RelayList {
            relays: vec![relay("a"), relay("b"), relay("c")],
            policy,
        }
    }

    #[test]
    fn failover_keeps_the_written_order() {
        let l = list(Policy::Failover);
        let hosts: Vec<_> = order(&l, "X").iter().map(|r| r.host.as_str()).collect();
        assert_eq!(hosts, ["a", "b", "c"]);
    }

    #[test]
    fn spread_starts_everywhere_and_shares_out_each_fallback() {
        let l = list(Policy::Spread);
        // How often each relay comes first, and second after each first.
        let mut firsts = [0usize; 3];
        let mut seconds = [[0usize; 3]; 3];
        for i in 0..600 {
            let o = order(&l, &format!("1A2B3C{i:04}"));
            let k: Vec<usize> = o
                .iter()
                .map(|r| (r.host.as_bytes()[0] - b'a') as usize)
                .collect();
            let mut sorted = k.clone();
            sorted.sort();
            assert_eq!(sorted, [0, 1, 2], "every relay once: {k:?}");
            firsts[k[0]] += 1;
            seconds[k[0]][k[1]] += 1;
        }
        assert!(firsts.iter().all(|&n| n > 120), "{firsts:?}");
        // When the first is down, its share goes to both others.
        for (first, row) in seconds.iter().enumerate() {
            for (second, &n) in row.iter().enumerate() {
                assert!(first == second || n > 40, "{seconds:?}");
            }
        }
        assert_eq!(order(&l, "same"), order(&l, "same"));
    }
}
