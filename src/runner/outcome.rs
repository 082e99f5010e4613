//! What one delivery attempt did for one recipient, how it is recorded in
//! the message's state (D2) and how it is logged.

use std::time::Duration;

use crate::config::Config;
use crate::spool::{RecipientState, RecipientStatus, TlsApplied};

use super::backoff::{RetryFor, next_attempt};

/// How an attempt ended for one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The server took responsibility (250 to the final dot).
    Delivered { dsn: String, reply: String },
    /// Temporary trouble: try again later.
    Deferred { dsn: String, reason: String },
    /// Permanent failure: bounce.
    Failed { dsn: String, reason: String },
}

impl Outcome {
    /// The outcome a server reply means: 2xx delivered, 4xx deferred,
    /// anything else failed. The RFC 3463 status is the reply's own when
    /// it gives one, else the class default.
    pub fn from_reply(code: u16, enhanced: Option<String>, text: String) -> Outcome {
        match code {
            200..=299 => Outcome::Delivered {
                dsn: enhanced.unwrap_or_else(|| "2.0.0".into()),
                reply: text,
            },
            400..=499 => Outcome::Deferred {
                dsn: enhanced.unwrap_or_else(|| "4.0.0".into()),
                reason: text,
            },
            _ => Outcome::Failed {
                dsn: enhanced.unwrap_or_else(|| "5.0.0".into()),
                reason: text,
            },
        }
    }

    /// A temporary failure with our own reason (no server reply).
    pub fn deferred(dsn: &str, reason: impl Into<String>) -> Outcome {
        Outcome::Deferred {
            dsn: dsn.into(),
            reason: reason.into(),
        }
    }

    /// A permanent failure with our own reason.
    pub fn failed(dsn: &str, reason: impl Into<String>) -> Outcome {
        Outcome::Failed {
            dsn: dsn.into(),
            reason: reason.into(),
        }
    }

    fn dsn(&self) -> &str {
        match self {
            Outcome::Delivered { dsn, .. }
            | Outcome::Deferred { dsn, .. }
            | Outcome::Failed { dsn, .. } => dsn,
        }
    }

    fn status_word(&self) -> &'static str {
        match self {
            Outcome::Delivered { .. } => "sent",
            Outcome::Deferred { .. } => "deferred",
            Outcome::Failed { .. } => "bounced",
        }
    }

    fn text(&self) -> &str {
        match self {
            Outcome::Delivered { reply, .. } => reply,
            Outcome::Deferred { reason, .. } | Outcome::Failed { reason, .. } => reason,
        }
    }
}

/// Applies `outcome` to one recipient's state: one more attempt, and for
/// a deferral the next attempt time from the backoff (jittered, drawn
/// for `retry`'s message).
pub fn record(
    recipient: &mut RecipientState,
    outcome: &Outcome,
    at: Reached,
    now: u64,
    config: &Config,
    retry: RetryFor,
) {
    recipient.attempts = recipient.attempts.saturating_add(1);
    recipient.last_attempt = Some(now);
    recipient.dsn_status = Some(outcome.dsn().to_string());
    recipient.relay = at.relay.map(str::to_string);
    recipient.tls = at.tls;
    match outcome {
        Outcome::Delivered { .. } => {
            recipient.status = RecipientStatus::Delivered;
            recipient.last_error = None;
            recipient.next_attempt = None;
        }
        Outcome::Deferred { reason, .. } => {
            recipient.status = RecipientStatus::Deferred;
            recipient.last_error = Some(reason.clone());
            let at = next_attempt(now, recipient.attempts, &recipient.address, retry, config);
            recipient.next_attempt = Some(at);
        }
        Outcome::Failed { reason, .. } => {
            recipient.status = RecipientStatus::Failed;
            recipient.last_error = Some(reason.clone());
            recipient.next_attempt = None;
        }
    }
}

/// Where an SMTP attempt got to: the relay (`host[ip]:port`) once one
/// was tried, and which TLS policy applied once one was decided.
#[derive(Clone, Copy, Debug, Default)]
pub struct Reached<'a> {
    /// The relay connected to, or last failed at.
    pub relay: Option<&'a str>,
    /// The TLS policy that applied (`tls=` in the log line).
    pub tls: Option<TlsApplied>,
}

/// What took a recipient's outcome: the service its log line goes out
/// under and the relay it names (Postfix's `relay=local` for local
/// delivery, `none` where nothing was connected to).
#[derive(Clone, Copy, Debug)]
pub enum Via<'a> {
    /// The SMTP client, with where it got to.
    Smtp(Reached<'a>),
    /// Local delivery.
    Local,
    /// The queue runner itself (a message that expired).
    Queue,
    /// An `error` route: refused by the configuration.
    Route,
}

impl Via<'_> {
    /// The target of its log line: the service, with fields.
    fn service(self) -> &'static str {
        use crate::logging::fields;
        match self {
            Via::Smtp(_) => fields::SMTP,
            Via::Local => fields::LOCAL,
            Via::Queue => fields::QMGR,
            Via::Route => fields::ERROR,
        }
    }

    fn relay(self) -> &'static str {
        match self {
            Via::Local => "local",
            Via::Smtp(_) | Via::Queue | Via::Route => "none",
        }
    }
}

/// The syslog line of one recipient outcome, in the shape sysadmins grep
/// for and pflogsumm reads: `ID: to=<…>, relay=host[ip]:port, delay=…,
/// dsn=…, status=sent|deferred|bounced (…)`, and for an SMTP attempt
/// whose TLS policy was decided `, tls=…` after it (at the end, where
/// pflogsumm's pattern, which reads up to the status word, does not
/// look; the reply text cannot fake it, its `=` being escaped). The
/// recipient, the relay (a name from DNS) and the reply come from
/// outside: escaped, so that none can end its field or fake another
/// (issue 20).
pub fn log_line(id: &str, recipient: &str, via: Via, delay: Duration, outcome: &Outcome) -> String {
    use crate::logging::{address, text};
    let (relay, tls) = match via {
        Via::Smtp(at) => (at.relay.unwrap_or(via.relay()), at.tls),
        _ => (via.relay(), None),
    };
    let mut line = format!(
        "{id}: to=<{}>, relay={}, delay={}, dsn={}, status={} ({})",
        address(recipient),
        address(relay),
        delay.as_secs(),
        text(outcome.dsn()),
        outcome.status_word(),
        text(outcome.text())
    );
    if let Some(tls) = tls {
        line.push_str(", tls=");
        line.push_str(tls.as_str());
    }
    line
}

/// Logs one outcome at the level it deserves, under the service that
/// took it.
pub fn log(id: &str, recipient: &str, via: Via, delay: Duration, outcome: &Outcome) {
    let line = log_line(id, recipient, via, delay, outcome);
    let target = via.service();
    match outcome {
        Outcome::Delivered { .. } => log::info!(target: target, "{line}"),
        Outcome::Deferred { .. } => log::warn!(target: target, "{line}"),
        Outcome::Failed { .. } => log::error!(target: target, "{line}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh() -> RecipientState {
        RecipientState::queued("a@x.example".into())
    }

    #[test]
    fn replies_map_to_outcomes() {
        let o = Outcome::from_reply(250, None, "250 ok".into());
        assert!(matches!(o, Outcome::Delivered { ref dsn, .. } if dsn == "2.0.0"));
        let o = Outcome::from_reply(450, Some("4.2.1".into()), "450 4.2.1 busy".into());
        assert!(matches!(o, Outcome::Deferred { ref dsn, .. } if dsn == "4.2.1"));
        let o = Outcome::from_reply(550, None, "550 no".into());
        assert!(matches!(o, Outcome::Failed { ref dsn, .. } if dsn == "5.0.0"));
    }

    #[test]
    fn deferral_schedules_the_backoff() {
        let config = Config::default();
        let mut r = fresh();
        let retry = RetryFor {
            id: "0123456789ABCDEF",
            expires: u64::MAX,
        };
        // From 20 % before the step to one step after it, never below
        // retry_min (issue 27): the first retry 30–60 min after the
        // failure, the second 48–120 min.
        let jittered = |now, attempts| next_attempt(now, attempts, &r.address, retry, &config);
        let (first, second) = (jittered(1000, 1), jittered(5000, 2));
        assert!(
            (1000 + 30 * 60..=1000 + 60 * 60).contains(&first),
            "{first}"
        );
        assert!(
            (5000 + 48 * 60..=5000 + 120 * 60).contains(&second),
            "{second}"
        );
        record(
            &mut r,
            &Outcome::deferred("4.4.1", "refused"),
            Reached::default(),
            1000,
            &config,
            retry,
        );
        assert_eq!(r.status, RecipientStatus::Deferred);
        assert_eq!(r.attempts, 1);
        assert_eq!(r.next_attempt, Some(first));
        record(
            &mut r,
            &Outcome::deferred("4.4.1", "refused"),
            Reached::default(),
            5000,
            &config,
            retry,
        );
        assert_eq!(r.next_attempt, Some(second));
        record(
            &mut r,
            &Outcome::from_reply(250, None, "250 ok".into()),
            Reached {
                relay: Some("h[1.2.3.4]:25"),
                tls: Some(TlsApplied::MtaSts),
            },
            9000,
            &config,
            retry,
        );
        assert_eq!(r.status, RecipientStatus::Delivered);
        assert_eq!(r.last_error, None);
        assert_eq!(r.relay.as_deref(), Some("h[1.2.3.4]:25"));
        assert_eq!(r.tls, Some(TlsApplied::MtaSts));
    }

    #[test]
    fn log_line_has_the_postfix_shape() {
        let o = Outcome::from_reply(250, Some("2.0.0".into()), "250 2.0.0 queued".into());
        let line = log_line(
            "ID1",
            "a@x.example",
            Via::Smtp(Reached {
                relay: Some("mx.x.example[192.0.2.1]:25"),
                tls: None,
            }),
            Duration::from_secs(3),
            &o,
        );
        assert_eq!(
            line,
            "ID1: to=<a@x.example>, relay=mx.x.example[192.0.2.1]:25, delay=3, dsn=2.0.0, status=sent (250 2.0.0 queued)"
        );
        let line = log_line(
            "ID1",
            "a@x.example",
            Via::Smtp(Reached {
                relay: Some("mx.x.example[192.0.2.1]:25"),
                tls: Some(TlsApplied::Opportunistic),
            }),
            Duration::from_secs(3),
            &o,
        );
        assert!(
            line.ends_with("status=sent (250 2.0.0 queued), tls=opportunistic"),
            "{line}"
        );
        let failed = Outcome::failed("5.1.1", "no such user");
        let line = log_line("ID2", "u@h", Via::Local, Duration::from_secs(0), &failed);
        assert_eq!(
            line,
            "ID2: to=<u@h>, relay=local, delay=0, dsn=5.1.1, status=bounced (no such user)"
        );
        // Nothing from outside ends a field or makes one.
        let deferred = Outcome::deferred("4.3.0", "451 busy, status=sent (x)");
        let line = log_line(
            "ID3",
            "\"x>, status=sent (\"@h",
            Via::Smtp(Reached {
                relay: Some("mx,status=sent[192.0.2.1]:25"),
                tls: None,
            }),
            Duration::from_secs(0),
            &deferred,
        );
        assert_eq!(
            line,
            r#"ID3: to=<"x\x3e\x2c status\x3dsent ("@h>, relay=mx\x2cstatus\x3dsent[192.0.2.1]:25, delay=0, dsn=4.3.0, status=deferred (451 busy, status\x3dsent (x))"#
        );
    }
}
