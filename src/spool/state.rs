//! Per-message delivery state: `state/ID`, one JSON document, written only
//! by the runner holding the message's claim and replaced atomically
//! (write `state/ID.tmp-PID`, fsync, rename, fsync `state/`; S3).
//!
//! No state file exists when a message is committed; its absence means
//! "every recipient queued, nothing attempted". The `version` field lets a
//! later format be told apart; readers refuse versions they do not know.

use serde::{Deserialize, Serialize};

use super::envelope::Envelope;

/// The state-file format version this code reads and writes.
pub const STATE_VERSION: u32 = 1;

/// Longest stored `last_error`, in bytes of its JSON encoding: an SMTP
/// reply line is at most 512 octets (RFC 5321 §4.5.3.1.5); what a server
/// sends beyond that helps no reader of mailq or of a bounce.
pub const MAX_ERROR_JSON: usize = 1024;
/// Longest stored `relay`, in bytes of its JSON encoding (a host name,
/// an address and a port).
const MAX_RELAY_JSON: usize = 512;
/// Longest stored `dsn_status`, in bytes of its JSON encoding ("5.1.1").
const MAX_DSN_STATUS_JSON: usize = 64;
/// Marks a text cut to fit.
const CUT_MARK: &str = " [...]";

/// Delivery state of one message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryState {
    /// Format version ([`STATE_VERSION`]).
    pub version: u32,
    /// One entry per recipient (D2: a delivered one is never retried).
    pub recipients: Vec<RecipientState>,
    /// An attempt died in the RFC 1047 window (final dot sent, reply not
    /// read): a retry may duplicate the message (D4).
    pub possibly_delivered: bool,
    /// When the final dot was sent and no reply has been recorded yet
    /// (unix seconds): the RFC 1047 window is open.
    pub final_dot_sent: Option<u64>,
    /// The delay warning DSN has gone out.
    pub delay_warned: bool,
    /// Notices (their queue IDs) recorded here as sent — the recipients
    /// marked `notified`, `delay_warned` set — before they were moved
    /// from tmp/ into the queue: a runner that dies in between leaves
    /// them sealed in tmp/, and the next attempt queues them
    /// (`Spool::commit_leftover`). So a notice goes out once: never
    /// twice, never not at all, whenever the runner is killed.
    #[serde(default)]
    pub pending_notices: Vec<String>,
    /// Held by an administrator (`mailq --hold`): never attempted, never
    /// expired, until released (`mailq --release`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub held: bool,
    /// An administrator asked for an attempt now (`mailq --requeue`): the
    /// next attempt ignores retry times and the unreachable cache, as a
    /// forced run does, once.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub requeued: bool,
}

/// Delivery state of one recipient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecipientState {
    /// The recipient address as in the envelope.
    pub address: String,
    /// Where delivery to it stands.
    pub status: RecipientStatus,
    /// Delivery attempts so far.
    pub attempts: u32,
    /// The last temporary or permanent error, for mailq and the bounce.
    pub last_error: Option<String>,
    /// Not before this time (unix seconds) is the next attempt due.
    pub next_attempt: Option<u64>,
    /// When it was last tried (unix seconds).
    pub last_attempt: Option<u64>,
    /// RFC 3463 status of the last outcome ("5.1.1"), for the DSN.
    #[serde(default)]
    pub dsn_status: Option<String>,
    /// The server that gave the last outcome ("mx.example.com[192.0.2.1]:25").
    #[serde(default)]
    pub relay: Option<String>,
    /// Which TLS policy applied to the last SMTP attempt (issue 26):
    /// absent for local delivery, and in state files written before
    /// the field existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsApplied>,
    /// A failure notice (DSN) for this recipient has been committed: a
    /// later pass must not send a second one.
    #[serde(default)]
    pub notified: bool,
    /// Local deliveries this recipient expanded to that are done (keys
    /// like `mailbox:alice`): a retry for the others skips them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub local_done: Vec<String>,
}

impl RecipientState {
    /// A recipient nobody has tried yet: Queued, 0 attempts, nothing
    /// recorded.
    pub fn queued(address: String) -> RecipientState {
        RecipientState {
            address,
            status: RecipientStatus::Queued,
            attempts: 0,
            last_error: None,
            next_attempt: None,
            last_attempt: None,
            dsn_status: None,
            relay: None,
            tls: None,
            notified: false,
            local_done: Vec::new(),
        }
    }
}

/// Where delivery to one recipient stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecipientStatus {
    /// Not tried yet.
    Queued,
    /// Tried; failed temporarily; will be retried.
    Deferred,
    /// Delivered; never to be tried again.
    Delivered,
    /// Failed permanently; will be (or has been) bounced.
    Failed,
}

/// Which TLS policy applied to one SMTP delivery attempt: the `tls=`
/// of the log line, `mailq` and the state file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TlsApplied {
    /// Plain text: no TLS was configured, offered or negotiated.
    None,
    /// TLS negotiated, the peer not authenticated.
    Opportunistic,
    /// TLS with the certificate verified for the host name (PKIX):
    /// `tls = required`, or a relay's verified TLS.
    Verified,
    /// The destination's MTA-STS policy in `enforce` mode (RFC 8461).
    MtaSts,
    /// The MX host's DANE TLSA records (RFC 7672).
    Dane,
}

impl TlsApplied {
    /// The name in the log line, `mailq` and the state file.
    pub fn as_str(self) -> &'static str {
        match self {
            TlsApplied::None => "none",
            TlsApplied::Opportunistic => "opportunistic",
            TlsApplied::Verified => "verified",
            TlsApplied::MtaSts => "mta-sts",
            TlsApplied::Dane => "dane",
        }
    }
}

impl RecipientStatus {
    /// The lowercase name used in mailq and the state file.
    pub fn as_str(self) -> &'static str {
        match self {
            RecipientStatus::Queued => "queued",
            RecipientStatus::Deferred => "deferred",
            RecipientStatus::Delivered => "delivered",
            RecipientStatus::Failed => "failed",
        }
    }
}

impl DeliveryState {
    /// Whether it records anything a lost state file would lose: a final
    /// outcome, a local target done, a notice sent. (A state without any
    /// says no more than "unknown": everything is still to do.)
    pub fn holds_outcomes(&self) -> bool {
        self.delay_warned
            || !self.pending_notices.is_empty()
            || self.recipients.iter().any(|r| {
                matches!(
                    r.status,
                    RecipientStatus::Delivered | RecipientStatus::Failed
                ) || r.notified
                    || !r.local_done.is_empty()
            })
    }

    /// The earliest unix time at which a recipient is due (0: one is due
    /// at once); None when every recipient is final. Where the schedule
    /// files the message.
    pub fn next_due(&self) -> Option<u64> {
        if self.held {
            return None;
        }
        self.recipients
            .iter()
            .filter_map(|r| match r.status {
                RecipientStatus::Queued => Some(0),
                RecipientStatus::Deferred => Some(r.next_attempt.unwrap_or(0)),
                RecipientStatus::Delivered | RecipientStatus::Failed => None,
            })
            .min()
    }

    /// The state of a message nobody has tried yet: all recipients Queued,
    /// 0 attempts.
    pub fn initial(envelope: &Envelope) -> DeliveryState {
        DeliveryState {
            version: STATE_VERSION,
            recipients: envelope
                .recipients
                .iter()
                .map(|address| RecipientState::queued(address.clone()))
                .collect(),
            possibly_delivered: false,
            final_dot_sent: None,
            delay_warned: false,
            pending_notices: Vec::new(),
            held: false,
            requeued: false,
        }
    }
}

impl DeliveryState {
    /// Cuts the free texts a server or a local delivery gave us
    /// (`last_error`, `relay`, `dsn_status`) to a fixed bound, so that
    /// the encoded state grows with the number of recipients only, never
    /// with what a remote server chose to say (item 7: a 4xx text per
    /// recipient once made a state file the reader refused).
    pub fn bound_texts(&mut self) {
        for r in &mut self.recipients {
            cut_json(&mut r.last_error, MAX_ERROR_JSON);
            cut_json(&mut r.relay, MAX_RELAY_JSON);
            cut_json(&mut r.dsn_status, MAX_DSN_STATUS_JSON);
        }
    }
}

/// Bytes `c` takes inside a JSON string, at most (serde_json writes
/// control characters as `\uXXXX` or two-byte escapes).
fn json_len(c: char) -> usize {
    match c {
        '"' | '\\' => 2,
        c if (c as u32) < 0x20 => 6,
        c => c.len_utf8(),
    }
}

/// Cuts `text` so that its JSON encoding (without the quotes) takes at
/// most `max` bytes, at a character boundary, marking the cut.
fn cut_json(text: &mut Option<String>, max: usize) {
    let Some(t) = text else { return };
    if t.chars().map(json_len).sum::<usize>() <= max {
        return;
    }
    let budget = max - CUT_MARK.len();
    let mut used = 0;
    let mut end = 0;
    for (i, c) in t.char_indices() {
        used += json_len(c);
        if used > budget {
            break;
        }
        end = i + c.len_utf8();
    }
    t.truncate(end);
    t.push_str(CUT_MARK);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_final_outcomes_make_a_state_worth_keeping() {
        let env = super::super::envelope::tests::sample();
        let mut state = DeliveryState::initial(&env);
        assert!(!state.holds_outcomes());
        state.recipients[0].status = RecipientStatus::Deferred;
        state.recipients[0].attempts = 3;
        state.possibly_delivered = true;
        assert!(!state.holds_outcomes(), "retried anyway when unknown");
        state.recipients[0].status = RecipientStatus::Delivered;
        assert!(state.holds_outcomes());
        let mut state = DeliveryState::initial(&env);
        state.recipients[0].local_done.push("mailbox:root".into());
        assert!(state.holds_outcomes());
    }

    #[test]
    fn long_texts_are_cut_to_their_json_bound() {
        let mut state = DeliveryState {
            recipients: vec![RecipientState {
                status: RecipientStatus::Deferred,
                attempts: 1,
                last_error: Some("\r\n\"é".repeat(10_000)),
                dsn_status: Some("4".repeat(1000)),
                relay: Some("r".repeat(100_000)),
                ..RecipientState::queued("a@example.org".into())
            }],
            ..DeliveryState::initial(&super::super::envelope::tests::sample())
        };
        state.bound_texts();
        let r = &state.recipients[0];
        let encoded = |t: &Option<String>| serde_json::to_string(t).unwrap().len() - 2;
        assert!(encoded(&r.last_error) <= MAX_ERROR_JSON);
        assert!(r.last_error.as_ref().unwrap().ends_with(CUT_MARK));
        assert!(encoded(&r.relay) <= MAX_RELAY_JSON);
        assert!(encoded(&r.dsn_status) <= MAX_DSN_STATUS_JSON);
        // Short texts are left alone.
        let mut short = Some("451 4.7.1 try later\r\n".to_string());
        cut_json(&mut short, MAX_ERROR_JSON);
        assert_eq!(short.as_deref(), Some("451 4.7.1 try later\r\n"));
    }

    #[test]
    fn tls_is_optional_and_named_as_logged() {
        // A state file written before the field existed still reads.
        let old = r#"{"address":"a@x","status":"deferred","attempts":1,"last_error":"x",
            "next_attempt":5,"last_attempt":1,"dsn_status":"4.0.0","relay":"r","notified":false}"#;
        let r: RecipientState = serde_json::from_str(old).unwrap();
        assert_eq!(r.tls, None);
        // And one without it writes nothing for it.
        assert!(!serde_json::to_string(&r).unwrap().contains("tls"));
        for t in [
            TlsApplied::None,
            TlsApplied::Opportunistic,
            TlsApplied::Verified,
            TlsApplied::MtaSts,
            TlsApplied::Dane,
        ] {
            let json = serde_json::to_string(&t).unwrap();
            assert_eq!(json, format!("\"{}\"", t.as_str()));
        }
    }

    #[test]
    fn status_serialises_lowercase() {
        let json = serde_json::to_string(&RecipientStatus::Deferred).unwrap();
        assert_eq!(json, "\"deferred\"");
        assert_eq!(RecipientStatus::Deferred.as_str(), "deferred");
    }
}
