//! Cleanup: the one step between a door and `Draft::commit`.
//!
//! Every door — `sendmail` on stdin, `sendmail -bs`, root's pickup of the
//! maildrop — gathers its caller's envelope and bytes in its own way and
//! hands them here, where the rules that decide what is queued are
//! applied once, in one order: the recipient limit, the address checks,
//! qualification, masquerading, the brake, the `Received:` trace, the
//! commit and the log line. A rule written here cannot be dropped from
//! one door and kept in another (commit 5ad3d37 had to restore the
//! recipient checks a second copy of these rules had lost).
//!
//! Where the doors rightly differ, the difference is an input: the
//! [`Door`] (a caller waiting for its answer is refused past the brake;
//! a drop, whose writer was told 0 long ago, is held), the [`Content`]
//! (a caller's header is completed and rewritten; a drop's data is kept
//! as written, S3/S4), the arrival time and the uid, which the door
//! decides (the pickup trusts the drop file's owner and ctime, never
//! what the drop says).

use std::io::{self, Read, Write};
use std::time::SystemTime;

use crate::accept::masquerade::Masquerade;
use crate::accept::message::{self, Header, Intake};
use crate::address::Address;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::spool::{DeliveryState, Draft, Envelope, QueueId, Spool};

/// The door a message came in by, where the rules ask which.
#[derive(Clone, Copy)]
pub enum Door<'s> {
    /// `sendmail` reading stdin or speaking `-bs`: the caller waits for
    /// the answer, so a message past the brake is refused (75: try
    /// later). `into_maildrop`: the draft is a drop (the queue is closed
    /// to this caller); it gets neither trace nor count here, as root's
    /// pickup gives it both with the uid of the file's owner — what a
    /// drop says about itself is not evidence, and its writer cannot
    /// open the brake's counters (they fail closed).
    Caller {
        /// The draft is in the maildrop, not the queue.
        into_maildrop: bool,
    },
    /// Root's pickup of a drop: its writer got 0 long ago and cannot be
    /// told to try later, so past the brake the message is queued on
    /// hold for the administrator (`mailq --release` or `--delete`).
    Pickup {
        /// The spool the held state is written to.
        spool: &'s Spool,
    },
}

/// The envelope sender as a door found it.
pub struct GivenSender {
    /// Parsed; None: the null sender.
    pub address: Option<Address>,
    /// As it is stored when nothing rewrites it.
    pub text: String,
    /// The caller named it (`-f`, `-r`, `MAIL FROM`, a drop) rather than
    /// it being the caller's login: masquerading treats the two apart.
    pub named: bool,
}

/// The rest of the envelope a door gathered.
pub struct Handed {
    /// Whose message it is: the uid the trace, the log and the brake name.
    pub uid: u32,
    /// That uid's login name.
    pub user: String,
    /// The envelope recipients, as they will be stored.
    pub recipients: Vec<String>,
    /// `BODY=` (`-B`).
    pub body_type: Option<String>,
    /// DSN `NOTIFY=` (`-N`).
    pub dsn_notify: Option<String>,
    /// DSN `RET=` (`-R`).
    pub dsn_ret: Option<String>,
    /// DSN `ENVID=` (`-V`).
    pub envid: Option<String>,
    /// Arrival, unix seconds: now for a caller; for a drop, what its
    /// file's ctime allows.
    pub arrival: u64,
}

/// The message itself, as the door has it.
pub enum Content<R: Read> {
    /// A caller's header section, read already: completed (From, Date,
    /// Message-ID when missing), qualified and masqueraded here; then the
    /// rest of the message, streamed from the intake.
    Fresh {
        /// The header section as read.
        header: Header,
        /// The rest of the message.
        intake: Intake<R>,
        /// The full name for a missing From: field.
        full_name: Option<String>,
        /// The address for a missing From: field: the sender as given.
        from: Address,
    },
    /// A drop's data, kept byte for byte as written (S3, S4): `size`
    /// bytes from `data`.
    AsWritten {
        /// Positioned at the first byte of the data.
        data: R,
        /// How many bytes of it are the message.
        size: u64,
    },
}

/// Why the step refused a message. Each door says it in its own words
/// and acts on it its own way (an exit code, an SMTP reply, a drop
/// removed or set aside).
#[derive(Debug)]
pub enum Refused {
    /// More envelope recipients than `max_recipients`: this many.
    TooManyRecipients(usize),
    /// No envelope recipient at all.
    NoRecipients,
    /// A recipient that is not an address.
    Recipient(Error),
    /// An ENVID that `-V` would refuse.
    Envid(Error),
    /// Anything else: the brake (75), trouble writing, the commit.
    Other(Error),
}

impl From<Error> for Refused {
    fn from(e: Error) -> Refused {
        Refused::Other(e)
    }
}

/// What a committed message is.
#[derive(Debug)]
pub struct Accepted {
    /// Its queue ID.
    pub id: QueueId,
    /// The stored message size in bytes.
    pub size: u64,
    /// The number of envelope recipients.
    pub recipients: usize,
}

/// The recipient limit: Err(max) when `count` recipients are more than
/// `max_recipients` allows.
pub fn recipient_limit(count: usize, config: &Config) -> std::result::Result<(), usize> {
    match count > config.max_recipients {
        true => Err(config.max_recipients),
        false => Ok(()),
    }
}

/// ` orig_from=<…>` for the pickup log line when masquerading changed
/// the envelope sender: the log keeps what the caller gave.
pub fn masqueraded_from(given: Option<&Address>, stored: Option<&Address>) -> String {
    match given {
        Some(given) if Some(given) != stored => format!(
            " orig_from=<{}>",
            crate::logging::address(&given.to_string())
        ),
        _ => String::new(),
    }
}

/// The queue file's data writer, with every octet written to it also
/// fed to the content scanner: what is scanned is exactly what is
/// stored.
struct Scanned<'w, W: Write> {
    out: &'w mut W,
    scanner: crate::smtp::Scanner,
}

impl<W: Write> Write for Scanned<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.out.write(buf)?;
        self.scanner.feed(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// One message on its way through: the sender is settled when it is
/// made (a door may refuse early on it, before reading its caller's
/// bytes); [`Cleanup::commit`] does the rest.
pub struct Cleanup<'a> {
    config: &'a Config,
    masquerade: Option<Masquerade<'a>>,
    given: GivenSender,
    /// The envelope sender as stored (masqueraded or not).
    stored: Option<Address>,
    stored_text: String,
}

impl<'a> Cleanup<'a> {
    /// Settles the envelope sender: masqueraded here, at submission, so
    /// that the spool holds what goes out and mail that local delivery
    /// makes later (forwards, bounces) is never rewritten. A rewrite
    /// that would make an invalid address is refused (Data, 65).
    pub fn new(config: &'a Config, given: GivenSender) -> Result<Cleanup<'a>> {
        let masquerade = Masquerade::new(config);
        let stored = match &masquerade {
            Some(m) => m.envelope_sender(given.address.as_ref(), given.named)?,
            None => {
                return Ok(Cleanup::unrewritten(config, given));
            }
        };
        let stored_text = stored.as_ref().map(ToString::to_string).unwrap_or_default();
        Ok(Cleanup {
            config,
            masquerade,
            given,
            stored,
            stored_text,
        })
    }

    /// The sender kept as given: for a door that keeps it when
    /// [`Cleanup::new`] cannot rewrite it.
    pub fn unrewritten(config: &'a Config, given: GivenSender) -> Cleanup<'a> {
        Cleanup {
            config,
            masquerade: Masquerade::new(config),
            stored: given.address.clone(),
            stored_text: given.text.clone(),
            given,
        }
    }

    /// Checks the envelope, writes the message into `draft` and commits
    /// it, in the order the module comment gives. Returns only after the
    /// commit point (S1); any refusal leaves the queue as it was (the
    /// draft removes its file when dropped, S2).
    pub fn commit<R: Read>(
        self,
        door: Door<'_>,
        mut draft: Draft,
        handed: Handed,
        content: Content<R>,
        now: SystemTime,
    ) -> std::result::Result<Accepted, Refused> {
        let config = self.config;
        let id = draft.id().clone();

        // The limit and the address checks, whoever wrote the envelope
        // (a drop's writer may have a -C config of its own).
        let count = handed.recipients.len();
        recipient_limit(count, config).map_err(|_| Refused::TooManyRecipients(count))?;
        if count == 0 {
            return Err(Refused::NoRecipients);
        }
        for r in &handed.recipients {
            Address::parse(r).map_err(Refused::Recipient)?;
        }
        // An ENVID goes out on the wire (RFC 3461) and into notices.
        if let Some(envid) = &handed.envid {
            crate::cli::parse_envid(envid).map_err(Refused::Envid)?;
        }
        if matches!(door, Door::Pickup { .. }) && self.stored_text != self.given.text {
            log::info!(
                "{id}: sender <{}> masqueraded as <{}>",
                self.given.text,
                self.stored_text
            );
        }

        let envelope = Envelope {
            id: id.clone(),
            arrival: handed.arrival,
            sender: self.stored_text.clone(),
            recipients: handed.recipients,
            uid: handed.uid,
            user: handed.user,
            body_type: handed.body_type,
            dsn_notify: handed.dsn_notify,
            dsn_ret: handed.dsn_ret,
            envid: handed.envid,
            // What expanded into a copy (the loop guard of forwarded
            // mail) is ours to write, never a caller's: a forged chain
            // could only stop expansions, but it is not evidence.
            chain: Vec::new(),
            size: 0,
        };
        draft.write_envelope(&envelope)?;
        // What the data holds (8-bit, NUL, long lines, MIME, the size on
        // the wire) is found as it is written, and kept with the queue
        // file, as Postfix's cleanup records the body type (issue 24).
        let mut scanned = Scanned {
            out: draft.data(),
            scanner: crate::smtp::Scanner::default(),
        };
        let out = &mut scanned;
        if !matches!(
            door,
            Door::Caller {
                into_maildrop: true
            }
        ) {
            let received =
                message::received_field(&config.hostname, envelope.uid, id.as_str(), now);
            out.write_all(&received)
                .map_err(|e| Error::io("writing the queue file", &e))?;
        }
        match content {
            Content::Fresh {
                mut header,
                mut intake,
                full_name,
                from,
            } => {
                let added = self.added_fields(&header, full_name.as_deref(), &from, &id, now);
                header.qualify(&config.hostname);
                // After qualification, so that a bare `From: root` is
                // `root@hostname` by now and masqueraded like any local
                // address.
                if let Some(m) = &self.masquerade {
                    header.masquerade(m);
                }
                header.write_to(out)?;
                out.write_all(&added)
                    .and_then(|()| out.write_all(b"\n"))
                    .map_err(|e| Error::io("writing the queue file", &e))?;
                intake.copy_body(out)?;
            }
            Content::AsWritten { mut data, size } => {
                io::copy(&mut (&mut data).take(size), out)
                    .and_then(|_| out.flush())
                    .map_err(|e| Error::io("copying a drop into the queue", &e))?;
            }
        }
        let found = scanned.scanner.finish();
        if !draft.note_content(found.note().as_bytes()) {
            log::debug!(
                "{id}: no content note (the spool's file system keeps no user attributes): a delivery reads the message for it"
            );
        }

        // The brake on runaway senders (max_messages_per_hour…), counted
        // last, when nothing else can refuse the message: one refused
        // here leaves nothing queued.
        let unix_now = crate::clock::unix_seconds(now);
        let nrcpt = envelope.recipients.len();
        let admit = |counters: &crate::spool::SubmissionCounters| {
            crate::accept::ratelimit::admit(
                config,
                counters,
                envelope.uid,
                &envelope.user,
                nrcpt,
                unix_now,
            )
        };
        let held = match door {
            Door::Caller {
                into_maildrop: true,
            } => None,
            Door::Caller {
                into_maildrop: false,
            } => {
                admit(&crate::spool::SubmissionCounters::of_spool_at(
                    &config.spool,
                ))?;
                None
            }
            Door::Pickup { spool } => match admit(&spool.submission_counters()) {
                Ok(()) => None,
                Err(why) => {
                    // Written before the message is visible in queue/,
                    // so no runner ever sees it unheld.
                    let mut state = DeliveryState::initial(&envelope);
                    state.held = true;
                    spool.write_state(&id, &state)?;
                    Some(why)
                }
            },
        };

        let committed = draft.commit()?;
        // From here on the message is safe: nothing below may fail it.
        let note = match door {
            Door::Caller { .. } => {
                masqueraded_from(self.given.address.as_ref(), self.stored.as_ref())
            }
            // The pickup named the masquerading in its own line above.
            Door::Pickup { .. } => String::new(),
        };
        crate::logging::received(
            committed.id.as_str(),
            envelope.uid,
            &envelope.sender,
            &note,
            committed.size,
            nrcpt,
        );
        if let Some(why) = held {
            log::warn!(
                "{id}: held: {}; `mailq --release {id}` lets it go",
                why.message()
            );
        }
        Ok(Accepted {
            id: committed.id,
            size: committed.size,
            recipients: nrcpt,
        })
    }

    /// The fields a caller's header lacks: From (from the sender as
    /// given, masqueraded as any other From: field), Date, Message-ID.
    fn added_fields(
        &self,
        header: &Header,
        full_name: Option<&str>,
        from: &Address,
        id: &QueueId,
        now: SystemTime,
    ) -> Vec<u8> {
        let mut added: Vec<u8> = Vec::new();
        if !header.contains("From") {
            let field = message::from_field(full_name, from);
            match self
                .masquerade
                .as_ref()
                .and_then(|m| m.header_field(&field))
            {
                Some(masqueraded) => added.extend(masqueraded),
                None => added.extend(field),
            }
        }
        if !header.contains("Date") {
            added.extend(message::date_field(now));
        }
        if !header.contains("Message-ID") {
            added.extend(message::message_id_field(
                id.as_str(),
                &self.config.hostname,
            ));
        }
        added
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_recipient_limit_is_max_recipients() {
        let config = Config {
            max_recipients: 2,
            ..Config::default()
        };
        assert_eq!(recipient_limit(2, &config), Ok(()));
        assert_eq!(recipient_limit(3, &config), Err(2));
    }

    #[test]
    fn the_log_keeps_the_sender_masquerading_replaced() {
        let a = |s: &str| Address::parse(s).unwrap();
        let (given, stored) = (a("root@web01.internal"), a("root@example.com"));
        assert_eq!(
            masqueraded_from(Some(&given), Some(&stored)),
            " orig_from=<root@web01.internal>"
        );
        assert_eq!(masqueraded_from(Some(&given), Some(&given)), "");
        assert_eq!(masqueraded_from(None, None), "", "<> is never rewritten");
    }

    /// The rules are the step's, not a door's: a caller and a drop meet
    /// the same limit and the same address checks, and a refusal leaves
    /// the queue as it was.
    #[test]
    fn every_door_meets_the_same_limit_and_address_checks() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(&dir.path().join("spool")).unwrap();
        let config = Config {
            max_recipients: 1,
            hostname: "h.example".into(),
            spool: spool.root().to_path_buf(),
            ..Config::default()
        };
        let handed = |recipients: &[&str], envid: Option<&str>| Handed {
            uid: 0,
            user: "root".into(),
            recipients: recipients.iter().map(ToString::to_string).collect(),
            body_type: None,
            dsn_notify: None,
            dsn_ret: None,
            envid: envid.map(Into::into),
            arrival: 0,
        };
        for door in [
            Door::Caller {
                into_maildrop: false,
            },
            Door::Pickup { spool: &spool },
        ] {
            let commit = |handed: Handed| {
                let given = GivenSender {
                    address: None,
                    text: String::new(),
                    named: true,
                };
                let draft = spool.begin(SystemTime::now()).unwrap();
                let content = Content::AsWritten {
                    data: &b"x\n"[..],
                    size: 2,
                };
                Cleanup::new(&config, given).unwrap().commit(
                    door,
                    draft,
                    handed,
                    content,
                    SystemTime::now(),
                )
            };
            assert!(matches!(
                commit(handed(&["a@b.example", "c@d.example"], None)),
                Err(Refused::TooManyRecipients(2))
            ));
            assert!(matches!(
                commit(handed(&[], None)),
                Err(Refused::NoRecipients)
            ));
            assert!(matches!(
                commit(handed(&["a b@c.example"], None)),
                Err(Refused::Recipient(_))
            ));
            assert!(matches!(
                commit(handed(&["a@b.example"], Some("two words"))),
                Err(Refused::Envid(_))
            ));
        }
        let queued = std::fs::read_dir(spool.root().join("queue")).unwrap();
        assert_eq!(queued.count(), 0, "nothing refused is queued");
    }
}
