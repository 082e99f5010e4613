//! The retry schedule (D5): `retry_min`, doubling, capped at `retry_max`,
//! each step spread by a jitter.
//!
//! The step ([`retry_delay`]) after 1, 2, 3, 4 … attempts is, with the
//! defaults (30 min, 3 h), 30 min, 1 h, 2 h, then every 3 h.
//!
//! The jitter (issue 27): hosts that failed together — a fleet behind
//! one relay pair, during the relays' outage — must not all retry
//! together, at every step. So the delay is drawn uniformly from 20 %
//! before the step to one step after it ([`JITTER`]), cut to
//! `[retry_min, retry_max]`: 30–60 min, 48 min–2 h, 96 min–3 h, then
//! 144 min–3 h by default. Never sooner than `retry_min` after the
//! failure, never later than `retry_max`; uniform within what is left,
//! so that no bound collects a spike. Why so wide after the first
//! failure: the fleet's failures of an outage fall within the outage,
//! and their first retries must cover more than that to arrive at the
//! relays flat (benches/fleet: ±20 % left a peak of 4 times the mean in
//! the hour after recovery, this one under 2).
//!
//! A message's draw is a hash of its queue ID (whose last characters
//! are random), its recipient and its attempt count: stable (the same
//! state always gives the same time, and a test can compute it), and
//! independent between hosts and messages. A hop's record (D6) draws
//! from the machine's random source: it is one per host.

use std::time::Duration;

use crate::config::Config;

/// How far a retry delay may move from its step, in percent of the
/// step: up to `earlier` before it, up to `later` after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Jitter {
    /// Percent of the step a delay may be shorter.
    pub earlier: u32,
    /// Percent of the step a delay may be longer.
    pub later: u32,
}

/// The runner's jitter: from 20 % before the step to one step after it.
pub const JITTER: Jitter = Jitter {
    earlier: 20,
    later: 100,
};

/// No jitter: the step itself (the schedule before issue 27).
pub const NO_JITTER: Jitter = Jitter {
    earlier: 0,
    later: 0,
};

/// The step: the wait before the next attempt after `attempts` attempts
/// (≥ 1), without jitter.
pub fn retry_delay(attempts: u32, min: Duration, max: Duration) -> Duration {
    let doublings = attempts.saturating_sub(1).min(32);
    let delay = min.saturating_mul(1u32 << doublings.min(31));
    delay.min(max).max(min)
}

/// The range a jittered delay after `attempts` attempts is drawn from:
/// the step, less `jitter.earlier` and plus `jitter.later` percent of
/// it, within `[min, max]` (when `max < min`, `min` alone: no retry
/// comes sooner).
pub fn jitter_bounds(
    attempts: u32,
    min: Duration,
    max: Duration,
    jitter: Jitter,
) -> (Duration, Duration) {
    let step = retry_delay(attempts, min, max);
    let part = |percent: u32| step.saturating_mul(percent) / 100;
    let low = step.saturating_sub(part(jitter.earlier.min(100))).max(min);
    let high = step.saturating_add(part(jitter.later)).min(max).max(low);
    (low, high)
}

/// The delay after `attempts` attempts that `draw` (any value, uniform
/// over u64) picks within [`jitter_bounds`], to the second.
/// [`NO_JITTER`] gives the step itself.
pub fn jittered_delay(
    attempts: u32,
    min: Duration,
    max: Duration,
    jitter: Jitter,
    draw: u64,
) -> Duration {
    let (low, high) = jitter_bounds(attempts, min, max, jitter);
    let width = high.as_secs() - low.as_secs();
    // Whole seconds: a retry time is a unix second. Low and high are
    // whole seconds whenever min and max are (config durations are).
    let offset = (u128::from(draw) * (u128::from(width) + 1)) >> 64;
    (low + Duration::from_secs(offset as u64)).min(high.max(low))
}

/// The draw for `key` (a queue ID and recipient) at its `attempts`th
/// attempt: FNV-1a, then a 64-bit finaliser (splitmix64) so that keys
/// differing in one character draw far apart.
pub fn draw_for(key: &str, attempts: u32) -> u64 {
    let hash = key
        .bytes()
        .chain(attempts.to_le_bytes())
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
    let mut z = hash.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// What a recipient's retry time is drawn for: its message's queue ID
/// and the recipient (the draw's key), and when the message expires
/// (arrival + `queue_lifetime`, unix seconds).
#[derive(Debug, Clone, Copy)]
pub struct RetryFor<'a> {
    /// The queue ID.
    pub id: &'a str,
    /// The message's `queue_lifetime` runs out at this time.
    pub expires: u64,
}

/// When a recipient deferred at `now` after `attempts` attempts is next
/// due: `now` plus its [`jittered_delay`] (draw: [`draw_for`] its queue
/// ID and address), but not after its message expires — the attempt
/// then bounces it — unless that is sooner than `retry_min`: no retry
/// ever comes sooner than that.
pub fn next_attempt(
    now: u64,
    attempts: u32,
    address: &str,
    retry: RetryFor,
    config: &Config,
) -> u64 {
    let key = format!("{} {address}", retry.id);
    next_attempt_drawn(
        now,
        attempts,
        draw_for(&key, attempts),
        retry.expires,
        config,
        JITTER,
    )
}

/// [`next_attempt`] with its draw and jitter given: what the fleet
/// simulation (benches/fleet.rs) calls, with and without the jitter.
pub fn next_attempt_drawn(
    now: u64,
    attempts: u32,
    draw: u64,
    expires: u64,
    config: &Config,
    jitter: Jitter,
) -> u64 {
    let delay = jittered_delay(attempts, config.retry_min, config.retry_max, jitter, draw);
    let earliest = now.saturating_add(config.retry_min.as_secs());
    now.saturating_add(delay.as_secs())
        .min(expires.max(earliest))
}

/// Until when a hop found unreachable at `now` for the `failures`th time
/// in a row is not tried again (D6): the same jittered schedule, drawn
/// by `draw` (the machine's random source in the runner).
pub fn hop_retry(now: u64, failures: u32, draw: u64, config: &Config, jitter: Jitter) -> u64 {
    let delay = jittered_delay(failures, config.retry_min, config.retry_max, jitter, draw);
    now.saturating_add(delay.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(30 * 60);
    const MAX: Duration = Duration::from_secs(3 * 3600);

    #[test]
    fn doubles_from_min_up_to_max() {
        let delays: Vec<u64> = (1..=6)
            .map(|n| retry_delay(n, MIN, MAX).as_secs() / 60)
            .collect();
        assert_eq!(delays, [30, 60, 120, 180, 180, 180]);
    }

    #[test]
    fn never_below_min_even_when_max_is_smaller() {
        assert_eq!(retry_delay(1, MIN, Duration::from_secs(1)), MIN);
        assert_eq!(retry_delay(0, MIN, MAX), MIN);
        let (low, high) = jitter_bounds(1, MIN, Duration::from_secs(1), JITTER);
        assert_eq!((low, high), (MIN, MIN));
    }

    #[test]
    fn huge_attempt_counts_do_not_overflow() {
        assert_eq!(retry_delay(u32::MAX, MIN, MAX), MAX);
        assert!(jittered_delay(u32::MAX, MIN, MAX, JITTER, u64::MAX) <= MAX);
    }

    #[test]
    fn the_documented_ranges() {
        let minutes: Vec<(u64, u64)> = (1..=5)
            .map(|n| {
                let (l, h) = jitter_bounds(n, MIN, MAX, JITTER);
                (l.as_secs() / 60, h.as_secs() / 60)
            })
            .collect();
        assert_eq!(
            minutes,
            [(30, 60), (48, 120), (96, 180), (144, 180), (144, 180)]
        );
        // Without jitter, the step itself.
        for n in 1..=6 {
            let step = retry_delay(n, MIN, MAX);
            assert_eq!(jitter_bounds(n, MIN, MAX, NO_JITTER), (step, step));
            assert_eq!(jittered_delay(n, MIN, MAX, NO_JITTER, u64::MAX), step);
        }
    }

    #[test]
    fn draws_reach_both_ends_and_spread_between() {
        let (low, high) = jitter_bounds(2, MIN, MAX, JITTER);
        assert_eq!(jittered_delay(2, MIN, MAX, JITTER, 0), low);
        assert_eq!(jittered_delay(2, MIN, MAX, JITTER, u64::MAX), high);
        // 1,000 queue IDs: every sixth of the range gets its share.
        let mut sixths = [0u32; 6];
        let width = (high - low).as_secs() + 1;
        for i in 0..1000 {
            let d = jittered_delay(2, MIN, MAX, JITTER, draw_for(&format!("ID{i:05} r@x"), 2));
            sixths[((d - low).as_secs() * 6 / width) as usize] += 1;
        }
        assert!(
            sixths.iter().all(|&n| (120..=215).contains(&n)),
            "{sixths:?}"
        );
    }

    #[test]
    fn a_retry_may_be_cut_to_the_expiry_never_below_retry_min() {
        let config = Config {
            retry_min: MIN,
            retry_max: MAX,
            ..Config::default()
        };
        let now = 1_000_000;
        let far = u64::MAX;
        let t = next_attempt_drawn(now, 3, u64::MAX, far, &config, JITTER);
        assert_eq!(t, now + 180 * 60);
        assert_eq!(
            next_attempt_drawn(now, 3, u64::MAX, now + 100 * 60, &config, JITTER),
            now + 100 * 60
        );
        assert_eq!(
            next_attempt_drawn(now, 3, u64::MAX, now + 10, &config, JITTER),
            now + 30 * 60
        );
    }

    proptest::proptest! {
        #[test]
        fn jitter_stays_within_retry_min_and_retry_max(
            attempts in 0u32..40,
            min_s in 0u64..100_000,
            extra in 0u64..1_000_000,
            earlier in 0u32..=150,
            later in 0u32..=300,
            draw: u64,
            now in 0u64..4_000_000_000,
            id in "[A-Z0-9]{16}",
        ) {
            let (min, max) = (Duration::from_secs(min_s), Duration::from_secs(min_s + extra));
            let jitter = Jitter { earlier, later };
            let d = jittered_delay(attempts, min, max, jitter, draw);
            proptest::prop_assert!(min <= d && d <= max, "{d:?} outside {min:?}..{max:?}");
            let (low, high) = jitter_bounds(attempts, min, max, jitter);
            proptest::prop_assert!(low <= d && d <= high);
            let config = Config { retry_min: min, retry_max: max, ..Config::default() };
            let at = next_attempt(now, attempts, "r@x.test", RetryFor { id: &id, expires: u64::MAX }, &config);
            proptest::prop_assert!(now + min_s <= at && at <= now + min_s + extra);
            let hop = hop_retry(now, attempts, draw, &config, JITTER);
            proptest::prop_assert!(now + min_s <= hop && hop <= now + min_s + extra);
        }
    }
}
