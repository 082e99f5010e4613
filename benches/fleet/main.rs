//! The fleet simulation at full size (issue 27): 10,000 hosts × 10
//! messages behind two relays of `BENCH_FLEET_CAPACITY` sessions each
//! (default 40), the first down for an hour, then both for 20 minutes.
//! Prints, per minute, the connection attempts at each relay, the 421s,
//! the refusals and the messages delivered, before issue 27 (no jitter,
//! every timer at :00/:05) and after; then the peak-to-mean ratio of
//! the attempts in the hour after recovery, and whether every message
//! was delivered within its retry schedule. Figures only: nothing here
//! judges them (tests/fleet.rs checks the properties at a small size).
//! `BENCH_FLEET_HOSTS=N` changes the fleet's size.

#[path = "sim.rs"]
mod sim;

use std::time::Instant;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let hosts = env("BENCH_FLEET_HOSTS", 10_000) as usize;
    let capacity = env("BENCH_FLEET_CAPACITY", 40) as u32;
    let started = Instant::now();
    let before_scenario = sim::Scenario::issue(hosts, capacity, false);
    let after_scenario = sim::Scenario::issue(hosts, capacity, true);
    let before = sim::run(&before_scenario);
    let after = sim::run(&after_scenario);
    let s = &after_scenario;
    println!(
        "fleet: {hosts} hosts × {} messages submitted in minutes {}–{}, 2 relays of {capacity} sessions ({} s per message), \
         relay A down minutes {}–{}, both down minutes {}–{}; recovery at minute {}",
        s.per_host,
        s.submit.start / 60,
        s.submit.end / 60,
        s.message_secs,
        s.first_down.start / 60,
        s.first_down.end / 60,
        s.both_down.start / 60,
        s.both_down.end / 60,
        s.both_down.end / 60,
    );
    let last_busy = |r: &sim::Report| {
        r.minutes
            .iter()
            .rposition(|m| m.attempts.iter().sum::<u64>() > 0)
            .unwrap_or(0) as u64
    };
    let to = (last_busy(&before).max(last_busy(&after)) + 2).min(s.horizon / 60);
    print!("{}", sim::table(&before, &after, 0, to));
    let window = s.recovery();
    for (name, r) in [("before", &before), ("after", &after)] {
        let (pm, mm) = r.per_minute_peak_mean(&window);
        let (ps, ms) = r.per_second_peak_mean(&window);
        println!(
            "{name}: recovery hour (minutes {}–{}): attempts per minute peak {pm}, mean {mm:.1}, peak/mean {:.2}; \
             per second peak {ps}, mean {ms:.2}, peak/mean {:.1}",
            window.start / 60,
            window.end / 60,
            pm as f64 / mm.max(f64::MIN_POSITIVE),
            ps as f64 / ms.max(f64::MIN_POSITIVE),
        );
        let attempts: u64 = r
            .minutes
            .iter()
            .map(|m| m.attempts.iter().sum::<u64>())
            .sum();
        let busy: u64 = r.minutes.iter().map(|m| m.busy).sum();
        println!(
            "{name}: delivered {}/{} (last at minute {}), {attempts} connection attempts, {busy} answered 421, \
             {} deferrals ({} outside the jitter bounds), shortest wait after a deferral {} s, \
             longest wait of a due message for a run {} s, {} concurrency cuts",
            r.delivered,
            r.submitted,
            r.last_delivery / 60,
            r.deferrals,
            r.out_of_bounds,
            r.min_retry_wait.map_or("-".to_string(), |w| w.to_string()),
            r.max_late,
            r.concurrency_cuts,
        );
    }
    println!(
        "fleet: simulated in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
