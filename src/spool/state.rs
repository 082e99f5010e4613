//! Per-message delivery state: `state/ID`, one JSON document, written only
//! by the runner holding the message's claim and replaced atomically
//! (write `state/ID.tmp-PID`, fsync, rename, fsync `state/`; S3).
//!
//! No state file exists when a message is committed; its absence means
//! "every recipient queued, nothing attempted". The `version` field lets a
//! later format be told apart; readers refuse versions they do not know.

use serde::{Deserialize, Serialize};

use crate::spool::envelope::Envelope;

/// The state-file format version this code reads and writes.
pub const STATE_VERSION: u32 = 1;

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
    /// A failure notice (DSN) for this recipient has been committed: a
    /// later pass must not send a second one.
    #[serde(default)]
    pub notified: bool,
    /// Local deliveries this recipient expanded to that are done (keys
    /// like `mailbox:alice`): a retry for the others skips them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub local_done: Vec<String>,
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
    /// The state of a message nobody has tried yet: all recipients Queued,
    /// 0 attempts.
    pub fn initial(envelope: &Envelope) -> DeliveryState {
        DeliveryState {
            version: STATE_VERSION,
            recipients: envelope
                .recipients
                .iter()
                .map(|address| RecipientState {
                    address: address.clone(),
                    status: RecipientStatus::Queued,
                    attempts: 0,
                    last_error: None,
                    next_attempt: None,
                    last_attempt: None,
                    dsn_status: None,
                    relay: None,
                    notified: false,
                    local_done: Vec::new(),
                })
                .collect(),
            possibly_delivered: false,
            final_dot_sent: None,
            delay_warned: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_serialises_lowercase() {
        let json = serde_json::to_string(&RecipientStatus::Deferred).unwrap();
        assert_eq!(json, "\"deferred\"");
        assert_eq!(RecipientStatus::Deferred.as_str(), "deferred");
    }
}
