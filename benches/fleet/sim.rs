//! A fleet of hosts behind one relay pair, on a virtual clock (issue 27).
//!
//! Each virtual host runs spoolmail's own schedule and relay-health
//! code, not a copy of its formulas: the relay order of a message
//! (`relays::hops`, spread policy, from a configuration parsed by
//! `config::parse`), a deferred recipient's next attempt
//! (`backoff::next_attempt`, what the runner records), an unreachable
//! relay's record (`backoff::hop_retry`), and the concurrency to a relay
//! after each answer (`hosts::concurrency_after`, `busy_holds_back`).
//! What is modelled around them: each host's queue runs (the timer, and
//! a runner at every submission, which also takes what is due), its
//! per-relay connections (each carries messages one after the other),
//! and two relays that each take `capacity` sessions at once, answer 421
//! to the next, and refuse everything while down.
//!
//! `jitter: false` is the code before issue 27: every host's timer at
//! :00, :05 …, retry steps and hop records without jitter, and a 421 to
//! a connection recorded like an unreachable relay. `jitter: true` is
//! the code now: the timer's fixed per-host offset (systemd's
//! `FixedRandomDelay`, a hash of the machine), the jitter, and the
//! concurrency rule.
//!
//! Simplifications: a session is `message_secs` per message and nothing
//! else; a host's workers are bounded per relay by its slots only; a
//! relay is down by refusing at once (no connect timeouts).

use std::ops::Range;

use spoolmail::config::Config;
use spoolmail::runner::backoff::{self, RetryFor};
use spoolmail::runner::hosts::{self, Answer, Destination, Hop, HostStatus};
use spoolmail::runner::relays;

/// Seconds between two timer runs of one host.
pub const TIMER: u64 = 300;

/// What is simulated.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Virtual hosts.
    pub hosts: usize,
    /// Messages each host submits, at random times in `submit`.
    pub per_host: usize,
    /// When the messages are submitted (virtual seconds).
    pub submit: Range<u64>,
    /// Sessions each relay takes at once; it answers 421 beyond.
    pub capacity: u32,
    /// Seconds a session spends on one message.
    pub message_secs: u64,
    /// The first relay is down during this.
    pub first_down: Range<u64>,
    /// Both relays are down during this; recovery at its end.
    pub both_down: Range<u64>,
    /// The simulation stops here.
    pub horizon: u64,
    /// The code of issue 27 (true), or the code before it (false).
    pub jitter: bool,
}

impl Scenario {
    /// The issue's scenario with `hosts` hosts and relays of
    /// `capacity`: 10 messages per host submitted during the outage,
    /// one relay down for an hour, then both for 20 minutes.
    pub fn issue(hosts: usize, capacity: u32, jitter: bool) -> Scenario {
        Scenario {
            hosts,
            per_host: 10,
            submit: 0..4800,
            capacity,
            message_secs: 2,
            first_down: 0..3600,
            both_down: 3600..4800,
            horizon: 12 * 3600,
            jitter,
        }
    }

    /// The hour after both relays are back.
    pub fn recovery(&self) -> Range<u64> {
        self.both_down.end..self.both_down.end + 3600
    }

    fn relay_down(&self, relay: usize, t: u64) -> bool {
        self.both_down.contains(&t) || (relay == 0 && self.first_down.contains(&t))
    }
}

/// One minute's figures.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Minute {
    /// Connection attempts at each relay.
    pub attempts: [u64; 2],
    /// Of which answered 421 (too many connections).
    pub busy: u64,
    /// Of which refused (relay down).
    pub refused: u64,
    /// Messages delivered (their session ended).
    pub delivered: u64,
}

/// What a run found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Per minute of the simulation.
    pub minutes: Vec<Minute>,
    /// Connection attempts at both relays, per second.
    pub per_second: Vec<u32>,
    /// Messages submitted, and delivered by the horizon.
    pub submitted: usize,
    /// Delivered by the horizon.
    pub delivered: usize,
    /// The last delivery (virtual seconds).
    pub last_delivery: u64,
    /// Deferrals recorded (a recipient's attempt failed).
    pub deferrals: u64,
    /// The shortest wait after a deferral before the next attempt.
    pub min_retry_wait: Option<u64>,
    /// Deferrals whose retry time was outside the documented bounds
    /// (`backoff::jitter_bounds` from the failure).
    pub out_of_bounds: u64,
    /// The longest a due message waited past its retry time for a run
    /// that attempts it (its relay's record aside).
    pub max_late: u64,
    /// Times a host cut its concurrency to a relay after a 421.
    pub concurrency_cuts: u64,
}

impl Report {
    /// Peak and mean of the attempts per minute in `window`.
    pub fn per_minute_peak_mean(&self, window: &Range<u64>) -> (u64, f64) {
        let minutes: Vec<u64> = (window.start / 60..window.end / 60)
            .map(|m| {
                self.minutes
                    .get(m as usize)
                    .map_or(0, |x| x.attempts.iter().sum())
            })
            .collect();
        peak_mean(&minutes)
    }

    /// Peak and mean of the attempts per second in `window`.
    pub fn per_second_peak_mean(&self, window: &Range<u64>) -> (u64, f64) {
        let seconds: Vec<u64> = window
            .clone()
            .map(|s| u64::from(self.per_second.get(s as usize).copied().unwrap_or(0)))
            .collect();
        peak_mean(&seconds)
    }
}

fn peak_mean(values: &[u64]) -> (u64, f64) {
    let peak = values.iter().copied().max().unwrap_or(0);
    let mean = values.iter().sum::<u64>() as f64 / values.len().max(1) as f64;
    (peak, mean)
}

/// A message of a virtual host (one recipient).
struct Message {
    id: String,
    address: String,
    submitted: u64,
    delivered: bool,
    attempts: u32,
    /// Due from this time (its recipient's next attempt).
    next_attempt: u64,
    /// Left waiting until then for a relay's record (no attempt made,
    /// nothing recorded: the schedule entry follows the record).
    waits_until: u64,
    /// The last deferral, if any.
    failed_at: Option<u64>,
}

struct Host {
    name: String,
    /// Its timer's offset in the 5 minutes.
    offset: u64,
    messages: Vec<Message>,
    /// Its record of each relay (D6), as the runner keeps it in hosts/.
    records: [Option<HostStatus>; 2],
}

struct RelayLoad {
    open: u32,
    /// Sessions ending at each second.
    ends: Vec<u32>,
}

/// Runs `scenario`.
pub fn run(scenario: &Scenario) -> Report {
    let config = spoolmail::config::parse(
        "smarthost = relay-a.test:25, relay-b.test:25\n\
         smarthost_policy = spread\nsmarthost_tls = none\n",
        "fleet simulation",
    )
    .expect("the simulation's configuration parses");
    let hops: Vec<Hop> = vec![
        Hop::Relay("relay-a.test".into(), 25),
        Hop::Relay("relay-b.test".into(), 25),
    ];
    let configured = config.max_connections;
    let jitter = match scenario.jitter {
        true => backoff::JITTER,
        false => backoff::NO_JITTER,
    };
    let expiry = config.queue_lifetime.as_secs();
    let horizon = scenario.horizon;
    let span = scenario
        .submit
        .end
        .saturating_sub(scenario.submit.start)
        .max(1);

    // Hosts, with their messages' submission times drawn from their names.
    let mut submissions: Vec<(u64, usize)> = Vec::new();
    let mut fleet: Vec<Host> = (0..scenario.hosts)
        .map(|h| {
            let name = format!("web{h:05}.fleet.test");
            let offset = match scenario.jitter {
                true => backoff::draw_for(&name, 0) % TIMER,
                false => 0,
            };
            let messages = (0..scenario.per_host)
                .map(|m| {
                    let id = format!("{:05X}{:03X}SIM{:05}", h, m, h ^ (m * 7919));
                    let at = scenario.submit.start + backoff::draw_for(&id, 0) % span;
                    submissions.push((at, h));
                    Message {
                        id,
                        address: format!("report{m}@example.org"),
                        submitted: at,
                        delivered: false,
                        attempts: 0,
                        next_attempt: at,
                        waits_until: 0,
                        failed_at: None,
                    }
                })
                .collect();
            Host {
                name,
                offset,
                messages,
                records: [None, None],
            }
        })
        .collect();
    submissions.sort_unstable();
    // Hosts by timer offset.
    let mut by_offset: Vec<Vec<usize>> = vec![Vec::new(); TIMER as usize];
    for (h, host) in fleet.iter().enumerate() {
        by_offset[host.offset as usize].push(h);
    }

    let mut relays: Vec<RelayLoad> = (0..2)
        .map(|_| RelayLoad {
            open: 0,
            ends: vec![0; horizon as usize + 1],
        })
        .collect();
    let mut report = Report {
        minutes: vec![Minute::default(); (horizon / 60) as usize + 1],
        per_second: vec![0; horizon as usize + 1],
        submitted: scenario.hosts * scenario.per_host,
        ..Report::default()
    };
    let mut next_submission = 0;
    for t in 0..horizon {
        for relay in relays.iter_mut() {
            relay.open -= relay.ends[t as usize];
        }
        // Runners started by submissions this second, then the timers.
        let mut runs: Vec<usize> = Vec::new();
        while next_submission < submissions.len() && submissions[next_submission].0 == t {
            runs.push(submissions[next_submission].1);
            next_submission += 1;
        }
        runs.extend_from_slice(&by_offset[(t % TIMER) as usize]);
        for h in runs {
            let run = Run {
                scenario,
                config: &config,
                hops: &hops,
                configured,
                jitter,
                expiry,
                t,
            };
            run.host(&mut fleet[h], &mut relays, &mut report);
        }
    }
    report.delivered = fleet
        .iter()
        .flat_map(|h| &h.messages)
        .filter(|m| m.delivered)
        .count();
    report
}

/// One queue run of one host at `t`.
struct Run<'a> {
    scenario: &'a Scenario,
    config: &'a Config,
    hops: &'a [Hop],
    configured: u32,
    jitter: backoff::Jitter,
    expiry: u64,
    t: u64,
}

impl Run<'_> {
    fn host(&self, host: &mut Host, relays: &mut [RelayLoad], report: &mut Report) {
        let t = self.t;
        let minute = (t / 60) as usize;
        // This run's open connections to each relay: when each ends.
        let mut conns: [Vec<u64>; 2] = [Vec::new(), Vec::new()];
        for m in host.messages.iter_mut() {
            if m.delivered || m.submitted > t || m.next_attempt > t || m.waits_until > t {
                continue;
            }
            let due = m.next_attempt.max(m.waits_until);
            report.max_late = report.max_late.max(t - due);
            // The real order of the relays for this queue ID.
            let order: Vec<usize> = relays::hops(self.config, &Destination::Smarthost, &m.id)
                .into_iter()
                .map(|(hop, _)| self.hops.iter().position(|h| *h == hop).expect("a or b"))
                .collect();
            let mut tried = false;
            let mut held_until: Option<u64> = None;
            let mut done_at = None;
            for r in order {
                if let Some(s) = host.records[r].as_ref().filter(|s| s.unreachable_until > t) {
                    held_until = Some(
                        held_until.map_or(s.unreachable_until, |u| u.min(s.unreachable_until)),
                    );
                    continue;
                }
                let limit = host.records[r]
                    .as_ref()
                    .and_then(|s| s.limit)
                    .unwrap_or(self.configured);
                if (conns[r].len() as u32) >= limit {
                    // Every slot of this host for it is busy: the next
                    // free worker's connection carries it.
                    let first = (0..conns[r].len())
                        .min_by_key(|&i| conns[r][i])
                        .expect("limit ≥ 1");
                    conns[r][first] += self.scenario.message_secs;
                    done_at = Some(conns[r][first]);
                    break;
                }
                tried = true;
                report.minutes[minute].attempts[r] += 1;
                report.per_second[t as usize] += 1;
                let answer = if self.scenario.relay_down(r, t) {
                    report.minutes[minute].refused += 1;
                    Answer::Down
                } else if relays[r].open >= self.scenario.capacity {
                    report.minutes[minute].busy += 1;
                    Answer::Busy
                } else {
                    Answer::Accepted
                };
                match answer {
                    Answer::Accepted => {
                        relays[r].open += 1;
                        let end = t + self.scenario.message_secs;
                        conns[r].push(end);
                        done_at = Some(end);
                        let current = host.records[r].as_ref().and_then(|s| s.limit);
                        host.records[r] = match self.scenario.jitter {
                            true => {
                                hosts::concurrency_after(Answer::Accepted, current, self.configured)
                            }
                            false => None,
                        }
                        .map(|limit| HostStatus {
                            unreachable_until: 0,
                            failures: 0,
                            last_error: String::new(),
                            limit: Some(limit),
                        });
                        break;
                    }
                    Answer::Busy if self.scenario.jitter => {
                        let old = host.records[r].take();
                        let current = old.as_ref().and_then(|s| s.limit);
                        if hosts::busy_holds_back(current) {
                            host.records[r] = Some(self.unreachable(&host.name, r, t, old));
                        } else {
                            report.concurrency_cuts += 1;
                            let mut s = old.unwrap_or(HostStatus {
                                unreachable_until: 0,
                                failures: 0,
                                last_error: String::new(),
                                limit: None,
                            });
                            s.limit =
                                hosts::concurrency_after(Answer::Busy, current, self.configured);
                            host.records[r] = Some(s);
                        }
                    }
                    // Before issue 27 a 421 to a connection was a failed
                    // connection like any other.
                    Answer::Busy | Answer::Down => {
                        let old = host.records[r].take();
                        host.records[r] = Some(self.unreachable(&host.name, r, t, old));
                    }
                }
            }
            match (done_at, tried) {
                (Some(end), _) => {
                    m.delivered = true;
                    report.minutes[(end / 60) as usize].delivered += 1;
                    report.last_delivery = report.last_delivery.max(end);
                }
                (None, true) => {
                    // Deferred: what the runner records.
                    m.attempts += 1;
                    report.deferrals += 1;
                    let expires = m.submitted + self.expiry;
                    let next = match self.scenario.jitter {
                        true => backoff::next_attempt(
                            t,
                            m.attempts,
                            &m.address,
                            RetryFor { id: &m.id, expires },
                            self.config,
                        ),
                        false => backoff::next_attempt_drawn(
                            t,
                            m.attempts,
                            0,
                            expires,
                            self.config,
                            backoff::NO_JITTER,
                        ),
                    };
                    let (low, high) = backoff::jitter_bounds(
                        m.attempts,
                        self.config.retry_min,
                        self.config.retry_max,
                        self.jitter,
                    );
                    if next < t + low.as_secs() || next > t + high.as_secs() {
                        report.out_of_bounds += 1;
                    }
                    if let Some(f) = m.failed_at {
                        let wait = t - f;
                        report.min_retry_wait =
                            Some(report.min_retry_wait.map_or(wait, |w| w.min(wait)));
                    }
                    m.failed_at = Some(t);
                    m.next_attempt = next;
                }
                (None, false) => {
                    // Every relay held back by its record: the message
                    // waits for the earliest, no attempt recorded.
                    m.waits_until = held_until.unwrap_or(t + 1);
                }
            }
        }
        for (r, ends) in conns.iter().enumerate() {
            for &end in ends {
                relays[r].ends[(end.min(self.scenario.horizon)) as usize] += 1;
            }
        }
    }

    /// The record of relay `r` found unreachable at `t` (D6), as the
    /// runner writes it; the draw is the host's, as the runner's random
    /// source is.
    fn unreachable(&self, host: &str, r: usize, t: u64, old: Option<HostStatus>) -> HostStatus {
        let failures = old.as_ref().map_or(0, |s| s.failures) + 1;
        let draw = backoff::draw_for(&format!("{host} {r}"), failures);
        HostStatus {
            unreachable_until: backoff::hop_retry(t, failures, draw, self.config, self.jitter),
            failures,
            last_error: String::new(),
            limit: old.and_then(|s| s.limit),
        }
    }
}

/// The per-minute table of `before` and `after` side by side, from
/// minute `from` to `to`.
pub fn table(before: &Report, after: &Report, from: u64, to: u64) -> String {
    use std::fmt::Write as _;
    let mut out = String::from(
        "minute |  before: att A  att B    421  refused  delivered |   after: att A  att B    421  refused  delivered\n",
    );
    for m in from..to {
        let (b, a) = (&before.minutes[m as usize], &after.minutes[m as usize]);
        let _ = writeln!(
            out,
            "{m:>6} | {:>14} {:>6} {:>6} {:>8} {:>10} | {:>14} {:>6} {:>6} {:>8} {:>10}",
            b.attempts[0],
            b.attempts[1],
            b.busy,
            b.refused,
            b.delivered,
            a.attempts[0],
            a.attempts[1],
            a.busy,
            a.refused,
            a.delivered
        );
    }
    out
}
