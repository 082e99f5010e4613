//! A fleet behind one relay pair after an outage (issue 27), at a small
//! size: the simulation (benches/fleet/sim.rs, spoolmail's own
//! schedule, backoff and relay-health code on a virtual clock) shows
//! the jitter spreading the recovery, every message delivered, none
//! retried sooner than `retry_min` nor outside the jitter's bounds; and
//! the timer unit that spreads the fleet's queue runs parses.

#[path = "../benches/fleet/sim.rs"]
#[allow(dead_code)]
mod sim;

use std::process::Command;

/// 1,000 hosts, relays scaled as the bench's 10,000 with 40 each.
fn small(jitter: bool) -> sim::Report {
    sim::run(&sim::Scenario::issue(1000, 4, jitter))
}

#[test]
fn jitter_spreads_the_recovery_and_delivers_everything_on_schedule() {
    let (before, after) = (small(false), small(true));
    let scenario = sim::Scenario::issue(1000, 4, true);
    let window = scenario.recovery();
    let ratio = |r: &sim::Report| {
        let (peak, mean) = r.per_minute_peak_mean(&window);
        let (speak, smean) = r.per_second_peak_mean(&window);
        assert!(mean > 0.0 && smean > 0.0, "attempts in the recovery hour");
        (peak as f64 / mean, speak as f64 / smean)
    };
    let (b, a) = (ratio(&before), ratio(&after));
    eprintln!("peak/mean per minute, per second: before {b:?}, after {a:?}");
    assert!(a.0 * 4.0 < b.0, "per minute: after {a:?}, before {b:?}");
    assert!(a.1 * 10.0 < b.1, "per second: after {a:?}, before {b:?}");
    // The issue asks for 2 at its size (10,000 hosts: the bench finds
    // 1.92); this smaller fleet's minutes are noisier (2.13).
    assert!(a.0 < 2.5, "{a:?}");
    // Every message delivered, none retried early or off its bounds.
    assert_eq!(after.delivered, after.submitted);
    assert!(after.deferrals > 0, "the outage deferred mail");
    assert_eq!(after.out_of_bounds, 0);
    let retry_min = spoolmail::config::Config::default().retry_min.as_secs();
    assert!(
        after.min_retry_wait.is_some_and(|w| w >= retry_min),
        "{:?}",
        after.min_retry_wait
    );
    // A due message waits at most one timer interval for its run.
    assert!(after.max_late < sim::TIMER, "{}", after.max_late);
    // Before: the whole fleet's timers in the same second.
    let (peak, _) = before.per_second_peak_mean(&window);
    assert!(peak >= 100, "{peak}");
}

#[test]
fn the_simulation_is_deterministic() {
    let scenario = sim::Scenario::issue(50, 1, true);
    let (one, two) = (sim::run(&scenario), sim::run(&scenario));
    assert_eq!(one.minutes, two.minutes);
    assert_eq!(one.delivered, one.submitted);
}

#[test]
fn the_timer_spreads_hosts_over_its_interval() {
    let root = env!("CARGO_MANIFEST_DIR");
    let unit = std::fs::read_to_string(format!("{root}/packaging/spoolmail-queue.timer")).unwrap();
    let keys: Vec<&str> = unit.lines().filter(|l| !l.starts_with('#')).collect();
    for line in [
        "OnCalendar=*:0/5",
        "RandomizedDelaySec=5min",
        "FixedRandomDelay=true",
        "AccuracySec=1s",
        "Persistent=true",
    ] {
        assert!(keys.contains(&line), "{line} in the timer: {unit}");
    }
    // The simulation's timer is this one.
    assert_eq!(sim::TIMER, 300);
    // systemd parses it, the new keys included (Debian's systemd 252).
    let Ok(version) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("skipped: no systemd-analyze (apt-get install systemd)");
        return;
    };
    assert!(version.status.success());
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("spoolmail-queue.timer"), &unit).unwrap();
    // The service as packaged, but runnable here: verify checks that
    // the command exists.
    let service =
        std::fs::read_to_string(format!("{root}/packaging/spoolmail-queue.service")).unwrap();
    let service: String = service
        .lines()
        .map(|l| match l.starts_with("ExecStart=") {
            true => "ExecStart=/bin/true\n".to_string(),
            false => format!("{l}\n"),
        })
        .collect();
    std::fs::write(dir.path().join("spoolmail-queue.service"), service).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "./spoolmail-queue.timer"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let said =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{said}");
    assert!(!said.contains("Unknown key"), "{said}");
    assert!(
        !said.contains("timer"),
        "nothing to say about the timer: {said}"
    );
}
