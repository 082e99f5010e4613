//! The retry schedule (D5): `retry_min`, doubling, capped at `retry_max`.
//!
//! With the defaults (30 min, 3 h) a deferred message is retried after
//! 30 min, 1 h, 2 h, then every 3 h: a second attempt within the first
//! hour, then every 2–3 hours, never sooner than `retry_min`.

use std::time::Duration;

/// The wait before the next attempt, after `attempts` attempts (≥ 1).
pub fn retry_delay(attempts: u32, min: Duration, max: Duration) -> Duration {
    let doublings = attempts.saturating_sub(1).min(32);
    let delay = min.saturating_mul(1u32 << doublings.min(31));
    delay.min(max).max(min)
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
    }

    #[test]
    fn huge_attempt_counts_do_not_overflow() {
        assert_eq!(retry_delay(u32::MAX, MIN, MAX), MAX);
    }
}
