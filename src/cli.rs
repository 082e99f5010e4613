//! The command line: argv[0] dispatch and the sendmail option table.
//!
//! Every option sendmail 8 and Postfix's sendmail accept is listed in
//! [`OPTIONS`] with what spoolmail does with it; nothing is silently
//! dropped, and an option not in the table is a usage error (64). The
//! arguments are hostile (PHP's fifth `mail()` parameter lands here), so:
//! no argument may carry CR or LF (it could end up on an SMTP line or in a
//! header), `-X`/`-D` never open their file, and options that would point
//! a privileged process at another queue or alias file (`-oQ`, `-oA`) are
//! ignored.

use crate::error::{Error, Result};
/// What the command line may ask of queued mail: defined next to the
/// rule of whose mail a caller may touch, which `runner/` and `queue/` apply.
pub use crate::privilege::{AdminAction, QueueFilter};
use getopts::{HasArg, Occur, Options};
use std::path::PathBuf;
use std::time::Duration;

/// Which face of the binary argv[0] selected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Face {
    /// `sendmail` (and any other name): accept a message.
    Sendmail,
    /// `mailq`: the same as `sendmail -bp`.
    Mailq,
    /// `newaliases`: the same as `sendmail -bi`.
    Newaliases,
}

impl Face {
    /// The face for a program name (the basename of argv[0] is used).
    pub fn from_argv0(argv0: &str) -> Face {
        match argv0.rsplit('/').next().unwrap_or(argv0) {
            "mailq" => Face::Mailq,
            "newaliases" => Face::Newaliases,
            _ => Face::Sendmail,
        }
    }

    /// The name used in messages.
    pub fn name(self) -> &'static str {
        match self {
            Face::Sendmail => "sendmail",
            Face::Mailq => "mailq",
            Face::Newaliases => "newaliases",
        }
    }
}

/// What the invocation asks for (`-b…`, `-q`, `-I`, or the face).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// `-bm` (the default): read a message from stdin and queue it.
    Deliver,
    /// `-bp` / `mailq`: list the queue.
    PrintQueue,
    /// `-bi` / `-I` / `newaliases`: compile the aliases file.
    InitAliases,
    /// `-bs`: an SMTP dialogue on stdin/stdout.
    Smtp,
    /// `-q…`: process the queue.
    QueueRun(QueueRun),
    /// `mailq --delete|--hold|--release ID… | ALL`: act on queued messages.
    Administer(AdminAction),
    /// `--help`: what this face does, its options grouped as in the manual.
    Help,
    /// `--version`, `-bV` (Exim's): the version and what it was built with.
    Version,
    /// `--show-config` (Postfix's `postconf`): print the effective
    /// configuration; with `--non-default` (`postconf -n`) only what the
    /// file sets, each with its line.
    ShowConfig {
        /// `--non-default`.
        non_default: bool,
    },
    /// `--check-config`: report what would fail only at delivery, one
    /// line per problem (exit 78 if any).
    CheckConfig {
        /// `--network`: also connect to each relay and log in (no mail sent).
        network: bool,
    },
    /// `-bv ADDRESS…`: say where each address would go (aliases,
    /// `.forward`, routes, MX) without queueing anything.
    Verify,
    /// A mode spoolmail does not provide (`-bd`, `-bt`, …), with its flag.
    Unsupported(String),
    /// `--dkim-keygen DOMAIN SELECTOR [--ed25519]`: write a DKIM key and
    /// print the DNS record to publish (issue 26).
    DkimKeygen(DkimKeygen),
}

/// What `--dkim-keygen` makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DkimKeygen {
    /// The signing domain.
    pub domain: String,
    /// The selector.
    pub selector: String,
    /// An Ed25519 key (`--ed25519`) rather than RSA 2048.
    pub ed25519: bool,
}

/// When to deliver (`-od?`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryMode {
    /// `-odb` (default): queue, then deliver in a detached background runner.
    Background,
    /// `-odq`, `-odd`: queue only; a later queue run delivers.
    Queue,
    /// `-odi`: deliver in the foreground and exit with the outcome.
    Interactive,
    /// `-odf`: like `-odi` (the foreground, sendmail's "fork-less" mode).
    Foreground,
}

/// How errors are reported (`-oe?`). spoolmail always reports a failure
/// to accept the message by its exit code and a line on stderr, whatever
/// the mode, because PHP, mailx and mailutils rely on the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorMode {
    /// `-oep` (default): print errors.
    Print,
    /// `-oem`: mail errors back.
    Mail,
    /// `-oew`: write errors to the terminal or mail them.
    Write,
    /// `-oeq`: quiet, exit status only.
    Quiet,
    /// `-oee`: mail errors back and exit 0 (Berkeley's "BerkNet" mode).
    Exit,
}

/// A `-q` request: run once, or every `interval`, restricted by `filters`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct QueueRun {
    /// `-q15m`: keep running a pass at this interval (for a service).
    pub interval: Option<Duration>,
    /// Every filter must match (sendmail ANDs them too).
    pub filters: Vec<QueueFilter>,
}

/// A parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    /// The face argv[0] selected.
    pub face: Face,
    /// What to do.
    pub mode: Mode,
    /// `-C FILE`: another configuration file.
    pub config_path: Option<PathBuf>,
    /// `-t`: take recipients from the headers.
    pub extract_recipients: bool,
    /// `-i`/`-oi`: a lone "." does not end the message.
    pub ignore_dots: bool,
    /// `-f`/`-r`: the envelope sender, as given (validated later).
    pub sender: Option<String>,
    /// `-F`: the sender's full name, for an added `From:`.
    pub full_name: Option<String>,
    /// `-od?`.
    pub delivery: DeliveryMode,
    /// `-oe?`.
    pub error_mode: ErrorMode,
    /// `-B`: the body type, upper case (`7BIT`, `8BITMIME`, `BINARYMIME`).
    pub body_type: Option<String>,
    /// `-N`: DSN notify conditions, lower case, comma-separated.
    pub dsn_notify: Option<String>,
    /// `-R`: DSN return, `full` or `hdrs`.
    pub dsn_ret: Option<String>,
    /// `-V`: the DSN envelope ID.
    pub envid: Option<String>,
    /// `-v`: log to stderr too.
    pub verbose: bool,
    /// `--json` (mailq): one JSON object per message.
    pub json: bool,
    /// `--summary` (mailq): the queue's shape, as qshape prints it.
    pub summary: bool,
    /// `--metrics` (mailq): the queue's numbers for Prometheus.
    pub metrics: bool,
    /// Recipients on the command line, as given (each may hold a comma list).
    pub recipients: Vec<String>,
    /// `--recipient X`/`--sender X` with an administrative action: only
    /// the messages they match (all of them).
    pub admin_filters: Vec<QueueFilter>,
    /// Options that were accepted and ignored, for `-v`.
    pub ignored: Vec<String>,
}

/// How an option takes its argument.
#[derive(Debug, Clone, Copy)]
pub enum Arg {
    /// A flag.
    No,
    /// `-xVALUE` or `-x VALUE`.
    Yes,
    /// Only attached: `-xVALUE` or `-x`.
    Maybe,
}

/// One row of the option table: the option, its argument, what spoolmail does.
pub struct OptionSpec {
    /// The option letter, or a long name.
    pub name: &'static str,
    /// Its argument.
    pub arg: Arg,
    /// What spoolmail does with it (the option table of docs/command-line.md comes from here).
    pub effect: &'static str,
}

/// The sendmail command line, one row per option.
pub const OPTIONS: &[OptionSpec] = &[
    OptionSpec {
        name: "t",
        arg: Arg::No,
        effect: "recipients from To/Cc/Bcc (the Resent- set when present) plus the command line; Bcc removed",
    },
    OptionSpec {
        name: "i",
        arg: Arg::No,
        effect: "a line with a lone \".\" does not end the message (same as -oi)",
    },
    OptionSpec {
        name: "f",
        arg: Arg::Yes,
        effect: "envelope sender (\"<>\" or \"\" for the null sender); unqualified names get @hostname",
    },
    OptionSpec {
        name: "r",
        arg: Arg::Yes,
        effect: "obsolete synonym of -f",
    },
    OptionSpec {
        name: "F",
        arg: Arg::Yes,
        effect: "sender's full name, used in an added From: header",
    },
    OptionSpec {
        name: "b",
        arg: Arg::Yes,
        effect: "mode: -bm deliver (default), -bp list the queue, -bi newaliases, -bs SMTP on stdin/stdout (below), -bV the version, -bv verify the recipients (where each would go; nothing is queued); -bd -bD -bt -bh -bH -bP -bl: not supported (69)",
    },
    OptionSpec {
        name: "q",
        arg: Arg::Maybe,
        effect: "queue run: -q once, -q15m every 15 minutes, -qI/-qR/-qS substring filters on ID/recipient/sender",
    },
    OptionSpec {
        name: "o",
        arg: Arg::Yes,
        effect: "-oi as -i; -od[bqdif] delivery mode; -oe[pmwqe] error mode; -oQ, -oA and all others accepted and ignored",
    },
    OptionSpec {
        name: "O",
        arg: Arg::Yes,
        effect: "-O Name=value: IgnoreDots, DeliveryMode, ErrorMode as their -o forms; all others accepted and ignored",
    },
    OptionSpec {
        name: "C",
        arg: Arg::Yes,
        effect: "configuration file; a non-root caller of a setgid binary loses the privilege first",
    },
    OptionSpec {
        name: "B",
        arg: Arg::Yes,
        effect: "body type: 7BIT, 8BITMIME or BINARYMIME (stored, announced over SMTP)",
    },
    OptionSpec {
        name: "N",
        arg: Arg::Yes,
        effect: "DSN notify: never, or a list of success, failure, delay",
    },
    OptionSpec {
        name: "R",
        arg: Arg::Yes,
        effect: "DSN return: full or hdrs",
    },
    OptionSpec {
        name: "V",
        arg: Arg::Yes,
        effect: "DSN envelope ID (printable ASCII, at most 100 characters)",
    },
    OptionSpec {
        name: "v",
        arg: Arg::No,
        effect: "verbose: log lines go to stderr too",
    },
    OptionSpec {
        name: "X",
        arg: Arg::Yes,
        effect: "traffic log file: accepted and ignored; the file is never opened (CVE-2016-10033)",
    },
    OptionSpec {
        name: "D",
        arg: Arg::Yes,
        effect: "debug output file: accepted and ignored; the file is never opened",
    },
    OptionSpec {
        name: "d",
        arg: Arg::Yes,
        effect: "debug flags: accepted and ignored",
    },
    OptionSpec {
        name: "h",
        arg: Arg::Yes,
        effect: "initial hop count: accepted and ignored (loops are caught by counting Received:)",
    },
    OptionSpec {
        name: "L",
        arg: Arg::Yes,
        effect: "syslog tag: accepted and ignored (a caller may not change the log identity)",
    },
    OptionSpec {
        name: "A",
        arg: Arg::Yes,
        effect: "-Ac/-Am configuration choice: accepted and ignored",
    },
    OptionSpec {
        name: "M",
        arg: Arg::Yes,
        effect: "macro definition: accepted and ignored",
    },
    OptionSpec {
        name: "p",
        arg: Arg::Yes,
        effect: "protocol and host: accepted and ignored",
    },
    OptionSpec {
        name: "Q",
        arg: Arg::Maybe,
        effect: "quarantine: accepted and ignored",
    },
    OptionSpec {
        name: "I",
        arg: Arg::No,
        effect: "same as -bi",
    },
    OptionSpec {
        name: "n",
        arg: Arg::No,
        effect: "do not expand aliases: accepted and ignored",
    },
    OptionSpec {
        name: "m",
        arg: Arg::No,
        effect: "me too: accepted and ignored",
    },
    OptionSpec {
        name: "U",
        arg: Arg::No,
        effect: "initial user submission: accepted and ignored",
    },
    OptionSpec {
        name: "G",
        arg: Arg::No,
        effect: "gateway submission: accepted and ignored",
    },
    OptionSpec {
        name: "c",
        arg: Arg::No,
        effect: "hold expensive connections: accepted and ignored",
    },
    OptionSpec {
        name: "s",
        arg: Arg::No,
        effect: "save From lines: accepted and ignored",
    },
    OptionSpec {
        name: "q-bare",
        arg: Arg::No,
        effect: "internal: a bare -q",
    },
    OptionSpec {
        name: "Q-bare",
        arg: Arg::No,
        effect: "internal: a bare -Q",
    },
    OptionSpec {
        name: "json",
        arg: Arg::No,
        effect: "with -bp/mailq: one JSON object per queued message",
    },
    OptionSpec {
        name: "summary",
        arg: Arg::No,
        effect: "with -bp/mailq: recipients to deliver per domain by message age, as Postfix's qshape (with --json: one object)",
    },
    OptionSpec {
        name: "metrics",
        arg: Arg::No,
        effect: "with -bp/mailq: the queue's numbers in the Prometheus text format: messages and recipients by state, oldest age, deferred per domain, the brake, corrupt/, the last queue run",
    },
    OptionSpec {
        name: "delete",
        arg: Arg::No,
        effect: "with -bp/mailq: remove the messages named (IDs, or ALL) from the queue (postsuper -d, exim -Mrm)",
    },
    OptionSpec {
        name: "hold",
        arg: Arg::No,
        effect: "with -bp/mailq: hold the messages named: never delivered nor expired until released (postsuper -h)",
    },
    OptionSpec {
        name: "release",
        arg: Arg::No,
        effect: "with -bp/mailq: release held messages, due at once (postsuper -H)",
    },
    OptionSpec {
        name: "recipient",
        arg: Arg::Yes,
        effect: "with --delete/--hold/--release/--requeue/--return: only messages with a recipient containing X (case ignored); no IDs needed",
    },
    OptionSpec {
        name: "sender",
        arg: Arg::Yes,
        effect: "with --delete/--hold/--release/--requeue/--return: only messages whose sender contains X (case ignored); no IDs needed",
    },
    OptionSpec {
        name: "requeue",
        arg: Arg::No,
        effect: "with -bp/mailq: attempt the messages named now, retry times and the unreachable cache ignored (postsuper -r, exim -M)",
    },
    OptionSpec {
        name: "return",
        arg: Arg::No,
        effect: "with -bp/mailq: return the messages named to their senders now, with a DSN saying so (exim -Mg)",
    },
    // DKIM keys (issue 26).
    OptionSpec {
        name: "dkim-keygen",
        arg: Arg::No,
        effect: "spoolmail --dkim-keygen DOMAIN SELECTOR: write a 2048-bit RSA key for the dkim line of DOMAIN (its key= path, else /etc/spoolmail/dkim/DOMAIN.SELECTOR.key; 0640 root:mail when run as root; never over an existing file) and print the DNS TXT record to publish",
    },
    OptionSpec {
        name: "ed25519",
        arg: Arg::No,
        effect: "with --dkim-keygen: an Ed25519 key (RFC 8463) instead of RSA",
    },
    OptionSpec {
        name: "show-config",
        arg: Arg::No,
        effect: "print every configuration key with its effective value, as a valid configuration file (postconf); passwords never shown",
    },
    OptionSpec {
        name: "non-default",
        arg: Arg::No,
        effect: "with --show-config: only the keys the file sets, each with its file:line (postconf -n)",
    },
    OptionSpec {
        name: "check-config",
        arg: Arg::No,
        effect: "check what fails only at delivery (password files, tls_ca_file, relay names, compiled aliases, the spool's modes): one line per problem, exit 0 or 78",
    },
    OptionSpec {
        name: "network",
        arg: Arg::No,
        effect: "with --check-config: also connect to each relay, EHLO, TLS and AUTH as configured, QUIT (no mail is sent), and compare each DKIM key with the record published in DNS",
    },
    OptionSpec {
        name: "help",
        arg: Arg::No,
        effect: "print what this face does and its options, grouped as in the manual page, and exit 0",
    },
    OptionSpec {
        name: "version",
        arg: Arg::No,
        effect: "print the version and what it was built with (TLS library, resolver) and exit 0; -bV is the same",
    },
];

/// The one-line usage message of the sendmail face.
pub const USAGE: &str = "usage: sendmail [-t] [-i] [-f sender] [-F name] [-odb|-odq|-odi] [-C config] [-bm|-bp|-bi|-bs] [-q[interval]] [--] [recipient ...]";

/// The option groups of `--help`, in the order of the sendmail(8) manual
/// page; which faces show each group. Every option of [`OPTIONS`] is in
/// exactly one group (a test checks it), so a new option cannot be left
/// out of the help.
const HELP_GROUPS: &[(&str, &[Face], &[&str])] = &[
    (
        "The message",
        &[Face::Sendmail],
        &["t", "i", "f", "r", "F", "B", "N", "R", "V"],
    ),
    ("What to do", &[Face::Sendmail], &["b", "I", "q", "q-bare"]),
    (
        "How",
        &[Face::Sendmail, Face::Mailq, Face::Newaliases],
        &["o", "O", "C", "v"],
    ),
    (
        "The queue (mailq, -bp)",
        &[Face::Sendmail, Face::Mailq],
        &[
            "json",
            "summary",
            "metrics",
            "delete",
            "hold",
            "release",
            "requeue",
            "return",
            "recipient",
            "sender",
        ],
    ),
    (
        "Accepted and ignored (for compatibility)",
        &[Face::Sendmail],
        &[
            "X", "D", "d", "h", "L", "A", "M", "p", "Q", "Q-bare", "n", "m", "U", "G", "c", "s",
        ],
    ),
    ("DKIM keys", &[Face::Sendmail], &["dkim-keygen", "ed25519"]),
    (
        "The configuration (spoolmail --show-config, --check-config)",
        &[Face::Sendmail],
        &["show-config", "non-default", "check-config", "network"],
    ),
    (
        "This program",
        &[Face::Sendmail, Face::Mailq, Face::Newaliases],
        &["help", "version"],
    ),
];

/// What `--help` prints for `face`: what the face does, its options in
/// the manual's groups, and where the manual is.
pub fn help(face: Face) -> String {
    let (what, manual) = match face {
        Face::Sendmail => (
            "sendmail reads one message on stdin, commits it to the spool and hands it to a background runner.",
            "sendmail(8), spoolmail.conf(5), spoolmail(8)",
        ),
        Face::Mailq => (
            "mailq lists the queue (sendmail -bp) and acts on it: mailq --delete|--hold|--release|--requeue|--return ID...|ALL|-",
            "mailq(1), sendmail(8), spoolmail(8)",
        ),
        Face::Newaliases => (
            "newaliases checks /etc/aliases and compiles it for local delivery (sendmail -bi).",
            "newaliases(8), aliases(5), spoolmail(8)",
        ),
    };
    let mut out = String::new();
    if face == Face::Sendmail {
        out.push_str(USAGE);
        out.push('\n');
    }
    out.push_str(what);
    out.push('\n');
    for (title, faces, names) in HELP_GROUPS {
        if !faces.contains(&face) {
            continue;
        }
        out.push_str(&format!("\n{title}:\n"));
        for spec in OPTIONS.iter().filter(|s| names.contains(&s.name)) {
            if spec.name.ends_with("-bare") {
                continue;
            }
            let (dash, value) = match (spec.name.len(), spec.arg) {
                (1, Arg::No) => ("-", ""),
                (1, Arg::Yes) => ("-", " X"),
                (1, Arg::Maybe) => ("-", "[X]"),
                (_, Arg::No) => ("--", ""),
                (_, _) => ("--", " X"),
            };
            let flag = format!("{dash}{}{value}", spec.name);
            out.push_str(&format!("  {flag:<14} {}\n", spec.effect.replace('\\', "")));
        }
    }
    out.push_str(&format!("\nThe manual: {manual}.\n"));
    out
}

fn options() -> Options {
    let mut opts = Options::new();
    for spec in OPTIONS {
        let (short, long) = if spec.name.len() == 1 {
            (spec.name, "")
        } else {
            ("", spec.name)
        };
        let (has_arg, hint) = match spec.arg {
            Arg::No => (HasArg::No, ""),
            Arg::Yes => (HasArg::Yes, "VALUE"),
            Arg::Maybe => (HasArg::Maybe, "VALUE"),
        };
        opts.opt(short, long, spec.effect, hint, has_arg, Occur::Multi);
    }
    opts
}

/// Parses the arguments after argv[0] for the given face.
pub fn parse(face: Face, args: &[String]) -> Result<Invocation> {
    // Refuse CR and LF anywhere: an argument may end up on an SMTP command
    // line (-f, -N, -V, recipients) or in a header (-F), where a line break
    // would let the caller inject commands or headers.
    if let Some(bad) = args.iter().find(|a| a.contains(['\r', '\n'])) {
        return Err(Error::usage(format!(
            "argument {:?} contains a line break",
            truncate(bad, 60)
        )));
    }
    // getopts would let a bare "-q" swallow the next argument as its value;
    // sendmail's -q takes its value only attached ("-q15m"), so a bare -q
    // (or -Q) is rewritten to a flag of its own before parsing.
    let mut rewritten: Vec<String> = Vec::with_capacity(args.len());
    let mut options_ended = false;
    for arg in args {
        let arg = match arg.as_str() {
            "--" => {
                options_ended = true;
                arg.clone()
            }
            "-q" if !options_ended => "--q-bare".to_string(),
            "-Q" if !options_ended => "--Q-bare".to_string(),
            _ => arg.clone(),
        };
        rewritten.push(arg);
    }
    let matches = options()
        .parse(&rewritten)
        .map_err(|e| Error::usage(format!("{e}; {USAGE}")))?;

    let mut inv = Invocation {
        face,
        mode: match face {
            Face::Sendmail => Mode::Deliver,
            Face::Mailq => Mode::PrintQueue,
            Face::Newaliases => Mode::InitAliases,
        },
        config_path: None,
        extract_recipients: matches.opt_present("t"),
        ignore_dots: matches.opt_present("i"),
        sender: None,
        full_name: last(&matches, "F"),
        delivery: DeliveryMode::Background,
        error_mode: ErrorMode::Print,
        body_type: None,
        dsn_notify: None,
        dsn_ret: None,
        envid: None,
        verbose: matches.opt_present("v"),
        json: matches.opt_present("json"),
        summary: matches.opt_present("summary"),
        metrics: matches.opt_present("metrics"),
        recipients: matches.free.clone(),
        admin_filters: Vec::new(),
        ignored: Vec::new(),
    };
    let actions: Vec<AdminAction> = [
        ("delete", AdminAction::Delete),
        ("hold", AdminAction::Hold),
        ("release", AdminAction::Release),
        ("requeue", AdminAction::Requeue),
        ("return", AdminAction::Return),
    ]
    .into_iter()
    .filter(|(name, _)| matches.opt_present(name))
    .map(|(_, action)| action)
    .collect();
    inv.sender = last(&matches, "f").or_else(|| last(&matches, "r"));
    if let Some(path) = last(&matches, "C") {
        if path.is_empty() {
            return Err(Error::usage("-C needs a file name"));
        }
        inv.config_path = Some(PathBuf::from(path));
    }
    for mode in matches.opt_strs("b") {
        inv.mode = parse_mode(&mode)?;
    }
    if matches.opt_present("I") {
        inv.mode = Mode::InitAliases;
    }
    if matches.opt_present("q") || matches.opt_present("q-bare") {
        let mut run = QueueRun::default();
        for value in matches.opt_strs("q") {
            parse_queue_option(&value, &mut run)?;
        }
        inv.mode = Mode::QueueRun(run);
    }
    for value in matches.opt_strs("o") {
        apply_short_option(&value, &mut inv)?;
    }
    for value in matches.opt_strs("O") {
        apply_long_option(&value, &mut inv)?;
    }
    if let Some(body) = last(&matches, "B") {
        inv.body_type = Some(parse_body_type(&body)?);
    }
    if let Some(notify) = last(&matches, "N") {
        inv.dsn_notify = Some(parse_notify(&notify)?);
    }
    if let Some(ret) = last(&matches, "R") {
        inv.dsn_ret = Some(parse_ret(&ret)?);
    }
    if let Some(envid) = last(&matches, "V") {
        inv.envid = Some(parse_envid(&envid)?);
    }
    if let Some(&action) = actions.first() {
        // The free arguments name messages here, not recipients.
        if actions.len() > 1 || !matches!(inv.mode, Mode::PrintQueue) {
            return Err(Error::usage(format!(
                "--delete, --hold, --release, --requeue and --return go alone, with mailq or -bp; {USAGE}"
            )));
        }
        inv.admin_filters.extend(
            matches
                .opt_strs("recipient")
                .into_iter()
                .map(QueueFilter::Recipient),
        );
        inv.admin_filters.extend(
            matches
                .opt_strs("sender")
                .into_iter()
                .map(QueueFilter::Sender),
        );
        if inv.recipients.is_empty() && inv.admin_filters.is_empty() {
            return Err(Error::usage(
                "name the messages: queue IDs, - to read them from stdin, ALL for every message, or --recipient/--sender",
            ));
        }
        inv.mode = Mode::Administer(action);
    } else if inv.summary && !matches!(inv.mode, Mode::PrintQueue) {
        return Err(Error::usage(format!(
            "--summary goes with mailq or -bp; {USAGE}"
        )));
    } else if matches.opt_present("recipient") || matches.opt_present("sender") {
        return Err(Error::usage(format!(
            "--recipient and --sender select messages for --delete, --hold, --release, --requeue or --return; {USAGE}"
        )));
    }
    for name in [
        "X", "D", "d", "h", "L", "A", "M", "p", "Q", "Q-bare", "n", "m", "U", "G", "c", "s",
    ] {
        if matches.opt_present(name) {
            inv.ignored.push(format!("-{name}"));
        }
    }
    // DKIM keys (issue 26): the free arguments are the domain and selector.
    if matches.opt_present("dkim-keygen") {
        let [domain, selector] = matches.free.as_slice() else {
            return Err(Error::usage(
                "usage: spoolmail --dkim-keygen DOMAIN SELECTOR [--ed25519]",
            ));
        };
        inv.mode = Mode::DkimKeygen(DkimKeygen {
            domain: domain.clone(),
            selector: selector.clone(),
            ed25519: matches.opt_present("ed25519"),
        });
        inv.recipients.clear();
    } else if matches.opt_present("ed25519") {
        return Err(Error::usage("--ed25519 goes with --dkim-keygen"));
    }
    config_mode(&matches, &mut inv)?;
    // Asking what the program is wins over anything else on the line:
    // nothing is read, queued or listed.
    if matches.opt_present("version") {
        inv.mode = Mode::Version;
    }
    if matches.opt_present("help") {
        inv.mode = Mode::Help;
    }
    check_metrics(&inv)?;
    Ok(inv)
}

/// `--show-config [--non-default]` and `--check-config [--network]`:
/// each goes alone (no recipients, no other mode); the second option of
/// each pair only with its first.
fn config_mode(matches: &getopts::Matches, inv: &mut Invocation) -> Result<()> {
    let (show, check) = (
        matches.opt_present("show-config"),
        matches.opt_present("check-config"),
    );
    if matches.opt_present("non-default") && !show {
        return Err(Error::usage(format!(
            "--non-default goes with --show-config; {USAGE}"
        )));
    }
    if matches.opt_present("network") && !check {
        return Err(Error::usage(format!(
            "--network goes with --check-config; {USAGE}"
        )));
    }
    if !show && !check {
        return Ok(());
    }
    let default_mode = match inv.face {
        Face::Sendmail => Mode::Deliver,
        Face::Mailq => Mode::PrintQueue,
        Face::Newaliases => Mode::InitAliases,
    };
    if (show && check) || inv.mode != default_mode || !inv.recipients.is_empty() {
        return Err(Error::usage(format!(
            "--show-config and --check-config go alone (with -C and -v); {USAGE}"
        )));
    }
    inv.mode = match show {
        true => Mode::ShowConfig {
            non_default: matches.opt_present("non-default"),
        },
        false => Mode::CheckConfig {
            network: matches.opt_present("network"),
        },
    };
    Ok(())
}

/// `--metrics` lists the queue in a format of its own: with mailq or
/// `-bp` only, and not with another format (`--json`, `--summary`).
fn check_metrics(inv: &Invocation) -> Result<()> {
    if !inv.metrics || matches!(inv.mode, Mode::Help | Mode::Version) {
        return Ok(());
    }
    if !matches!(inv.mode, Mode::PrintQueue) || inv.json || inv.summary {
        return Err(Error::usage(format!(
            "--metrics goes alone with mailq or -bp; {USAGE}"
        )));
    }
    Ok(())
}

fn last(matches: &getopts::Matches, name: &str) -> Option<String> {
    matches.opt_strs(name).pop()
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

fn parse_mode(value: &str) -> Result<Mode> {
    Ok(match value {
        "m" => Mode::Deliver,
        "p" => Mode::PrintQueue,
        "i" => Mode::InitAliases,
        "s" => Mode::Smtp,
        "V" => Mode::Version,
        "v" => Mode::Verify,
        "d" | "D" | "t" | "h" | "H" | "P" | "l" | "a" => Mode::Unsupported(format!("-b{value}")),
        _ => {
            return Err(Error::usage(format!(
                "unknown mode -b{}; {USAGE}",
                truncate(value, 20)
            )));
        }
    })
}

fn parse_queue_option(value: &str, run: &mut QueueRun) -> Result<()> {
    if value.is_empty() {
        return Ok(());
    }
    let bad = || Error::usage(format!("bad queue option -q{}", truncate(value, 40)));
    let first = value.chars().next().ok_or_else(bad)?;
    if first.is_ascii_digit() {
        run.interval = Some(parse_interval(value).ok_or_else(bad)?);
        return Ok(());
    }
    let (kind, text) = value.split_at(1);
    // sendmail's "-q!R…" negation is not supported: refuse it rather
    // than silently running the opposite selection.
    if text.is_empty() {
        return Err(bad());
    }
    let filter = match kind {
        "I" => QueueFilter::Id(text.to_string()),
        "R" => QueueFilter::Recipient(text.to_string()),
        "S" => QueueFilter::Sender(text.to_string()),
        _ => return Err(bad()),
    };
    run.filters.push(filter);
    Ok(())
}

/// sendmail intervals: a number with an optional unit (s, m, h, d, w),
/// several may be concatenated ("1h30m"); a bare number is minutes.
fn parse_interval(value: &str) -> Option<Duration> {
    let mut total: u64 = 0;
    let mut number: Option<u64> = None;
    for c in value.chars() {
        if let Some(d) = c.to_digit(10) {
            number = Some(
                number
                    .unwrap_or(0)
                    .checked_mul(10)?
                    .checked_add(u64::from(d))?,
            );
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86400,
            'w' => 7 * 86400,
            _ => return None,
        };
        total = total.checked_add(number.take()?.checked_mul(unit)?)?;
    }
    if let Some(n) = number {
        total = total.checked_add(n.checked_mul(60)?)?;
    }
    (total > 0).then(|| Duration::from_secs(total))
}

fn truthy(rest: &str) -> Result<bool> {
    match rest.to_ascii_lowercase().as_str() {
        "" | "t" | "true" | "y" | "yes" | "1" => Ok(true),
        "f" | "false" | "n" | "no" | "0" => Ok(false),
        _ => Err(Error::usage(format!(
            "bad boolean value {:?}",
            truncate(rest, 20)
        ))),
    }
}

fn parse_delivery_mode(value: &str) -> Result<DeliveryMode> {
    match value {
        "" | "i" | "interactive" => Ok(DeliveryMode::Interactive),
        "b" | "background" => Ok(DeliveryMode::Background),
        "q" | "queue" | "d" | "deferred" => Ok(DeliveryMode::Queue),
        "f" | "foreground" => Ok(DeliveryMode::Foreground),
        _ => Err(Error::usage(format!(
            "unknown delivery mode -od{}",
            truncate(value, 20)
        ))),
    }
}

fn parse_error_mode(value: &str) -> Result<ErrorMode> {
    match value {
        "" | "p" | "print" => Ok(ErrorMode::Print),
        "m" | "mail" => Ok(ErrorMode::Mail),
        "w" | "write" => Ok(ErrorMode::Write),
        "q" | "quiet" => Ok(ErrorMode::Quiet),
        "e" => Ok(ErrorMode::Exit),
        _ => Err(Error::usage(format!(
            "unknown error mode -oe{}",
            truncate(value, 20)
        ))),
    }
}

/// `-oX…`: the single-letter sendmail options.
fn apply_short_option(value: &str, inv: &mut Invocation) -> Result<()> {
    let mut chars = value.chars();
    let letter = chars.next();
    let rest = chars.as_str();
    match letter {
        Some('i') => inv.ignore_dots = truthy(rest)?,
        Some('d') => inv.delivery = parse_delivery_mode(rest)?,
        Some('e') => inv.error_mode = parse_error_mode(rest)?,
        // Everything else (-om, -oL9, -oQ/dir, -oA/file, …) changes nothing
        // here; -oQ and -oA in particular must not redirect a privileged
        // process to another queue or alias file.
        _ => inv.ignored.push(format!("-o{}", truncate(value, 40))),
    }
    Ok(())
}

/// `-O Name=value`: the long sendmail option names.
fn apply_long_option(value: &str, inv: &mut Invocation) -> Result<()> {
    let (name, arg) = value.split_once('=').unwrap_or((value, ""));
    match name.trim().to_ascii_lowercase().as_str() {
        "ignoredots" => inv.ignore_dots = truthy(arg.trim())?,
        "deliverymode" => inv.delivery = parse_delivery_mode(arg.trim())?,
        "errormode" => inv.error_mode = parse_error_mode(arg.trim())?,
        _ => inv.ignored.push(format!("-O{}", truncate(value, 40))),
    }
    Ok(())
}

fn parse_body_type(value: &str) -> Result<String> {
    let upper = value.to_ascii_uppercase();
    match upper.as_str() {
        "7BIT" | "8BITMIME" | "BINARYMIME" => Ok(upper),
        _ => Err(Error::usage(format!(
            "unknown body type -B{}",
            truncate(value, 20)
        ))),
    }
}

fn parse_notify(value: &str) -> Result<String> {
    let lower = value.to_ascii_lowercase();
    let items: Vec<&str> = lower.split(',').map(str::trim).collect();
    let ok = if items == ["never"] {
        true
    } else {
        items
            .iter()
            .all(|i| matches!(*i, "success" | "failure" | "delay"))
    };
    if !ok {
        return Err(Error::usage(format!(
            "bad -N value {:?}: never, or a list of success, failure, delay",
            truncate(value, 40)
        )));
    }
    Ok(items.join(","))
}

fn parse_ret(value: &str) -> Result<String> {
    let lower = value.to_ascii_lowercase();
    match lower.as_str() {
        "full" | "hdrs" => Ok(lower),
        _ => Err(Error::usage(format!(
            "bad -R value {:?}: full or hdrs",
            truncate(value, 20)
        ))),
    }
}

/// Checks an ENVID as `-V` gives it (and as a maildrop drop claims it).
pub(crate) fn parse_envid(value: &str) -> Result<String> {
    // RFC 3461 ENVID: printable ASCII (xtext-encoded on the wire), 100 chars at most.
    if value.is_empty() || value.len() > 100 || !value.bytes().all(|b| (33..=126).contains(&b)) {
        return Err(Error::usage(
            "bad -V value: 1 to 100 printable ASCII characters",
        ));
    }
    Ok(value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Invocation> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        parse(Face::Sendmail, &args)
    }

    #[test]
    fn faces_by_basename() {
        assert_eq!(Face::from_argv0("/usr/bin/mailq"), Face::Mailq);
        assert_eq!(Face::from_argv0("newaliases"), Face::Newaliases);
        assert_eq!(Face::from_argv0("/usr/sbin/sendmail"), Face::Sendmail);
        assert_eq!(Face::from_argv0("spoolmail"), Face::Sendmail);
    }

    #[test]
    fn php_default_command_line() {
        let inv = p(&["-t", "-i", "-fbounce@example.com"]).unwrap();
        assert!(inv.extract_recipients && inv.ignore_dots);
        assert_eq!(inv.sender.as_deref(), Some("bounce@example.com"));
        assert_eq!(inv.mode, Mode::Deliver);
    }

    #[test]
    fn cron_command_line() {
        let inv = p(&["-FCronDaemon", "-i", "-B8BITMIME", "-oem", "root"]).unwrap();
        assert_eq!(inv.full_name.as_deref(), Some("CronDaemon"));
        assert_eq!(inv.body_type.as_deref(), Some("8BITMIME"));
        assert_eq!(inv.error_mode, ErrorMode::Mail);
        assert_eq!(inv.recipients, vec!["root"]);
    }

    #[test]
    fn mutt_command_line_with_double_dash() {
        let inv = p(&[
            "-oem",
            "-oi",
            "-N",
            "failure,delay",
            "-R",
            "hdrs",
            "--",
            "-weird@example.com",
        ])
        .unwrap();
        assert!(inv.ignore_dots);
        assert_eq!(inv.dsn_notify.as_deref(), Some("failure,delay"));
        assert_eq!(inv.dsn_ret.as_deref(), Some("hdrs"));
        assert_eq!(inv.recipients, vec!["-weird@example.com"]);
    }

    #[test]
    fn grouped_flags() {
        let inv = p(&["-ti"]).unwrap();
        assert!(inv.extract_recipients && inv.ignore_dots);
    }

    #[test]
    fn delivery_modes() {
        assert_eq!(p(&["-odq", "a"]).unwrap().delivery, DeliveryMode::Queue);
        assert_eq!(
            p(&["-odi", "a"]).unwrap().delivery,
            DeliveryMode::Interactive
        );
        assert_eq!(
            p(&["-odb", "a"]).unwrap().delivery,
            DeliveryMode::Background
        );
        assert_eq!(
            p(&["-odf", "a"]).unwrap().delivery,
            DeliveryMode::Foreground
        );
        assert_eq!(p(&["a"]).unwrap().delivery, DeliveryMode::Background);
        assert_eq!(
            p(&["-O", "DeliveryMode=q", "a"]).unwrap().delivery,
            DeliveryMode::Queue
        );
        assert!(p(&["-odz", "a"]).is_err());
    }

    #[test]
    fn modes() {
        assert_eq!(p(&["-bp"]).unwrap().mode, Mode::PrintQueue);
        assert_eq!(p(&["-bi"]).unwrap().mode, Mode::InitAliases);
        assert_eq!(p(&["-I"]).unwrap().mode, Mode::InitAliases);
        assert_eq!(p(&["-bs"]).unwrap().mode, Mode::Smtp);
        assert_eq!(p(&["-bd"]).unwrap().mode, Mode::Unsupported("-bd".into()));
        assert!(p(&["-bz"]).is_err());
        let args: Vec<String> = vec![];
        assert_eq!(parse(Face::Mailq, &args).unwrap().mode, Mode::PrintQueue);
    }

    #[test]
    fn queue_runs() {
        assert_eq!(
            p(&["-q"]).unwrap().mode,
            Mode::QueueRun(QueueRun::default())
        );
        let Mode::QueueRun(run) = p(&["-q15m"]).unwrap().mode else {
            panic!()
        };
        assert_eq!(run.interval, Some(Duration::from_secs(900)));
        let Mode::QueueRun(run) = p(&["-q1h30m"]).unwrap().mode else {
            panic!()
        };
        assert_eq!(run.interval, Some(Duration::from_secs(5400)));
        let Mode::QueueRun(run) = p(&["-qIabc", "-qRexample.com", "-qSroot"]).unwrap().mode else {
            panic!()
        };
        assert_eq!(
            run.filters,
            vec![
                QueueFilter::Id("abc".into()),
                QueueFilter::Recipient("example.com".into()),
                QueueFilter::Sender("root".into())
            ]
        );
        assert!(p(&["-qZfoo"]).is_err());
        assert!(p(&["-q!Rfoo"]).is_err());
        // A bare -q does not swallow the next argument.
        let inv = p(&["-q", "-v"]).unwrap();
        assert!(inv.verbose);
        assert_eq!(p(&["-q", "x"]).unwrap().recipients, vec!["x"]);
    }

    #[test]
    fn line_breaks_in_arguments_are_refused() {
        let e = p(&["-f", "a@b\r\nRCPT TO:<x@y>", "c@d"]).unwrap_err();
        assert_eq!(e.kind().exit_code(), 64);
        assert!(p(&["-F", "Name\nBcc: x@y", "c@d"]).is_err());
        assert!(p(&["c@d\n"]).is_err());
    }

    #[test]
    fn unknown_option_is_usage_error() {
        let e = p(&["-Z", "a"]).unwrap_err();
        assert_eq!(e.kind().exit_code(), 64);
        assert!(e.message().contains("usage:"));
    }

    #[test]
    fn dangerous_options_are_ignored() {
        let inv = p(&[
            "-X",
            "/tmp/x.php",
            "-oQ/tmp",
            "-OQueueDirectory=/tmp",
            "a@b",
        ])
        .unwrap();
        assert!(inv.ignored.contains(&"-X".to_string()));
        assert!(inv.ignored.iter().any(|i| i.starts_with("-oQ")));
        assert!(
            inv.ignored
                .iter()
                .any(|i| i.starts_with("-OQueueDirectory"))
        );
    }

    #[test]
    fn dsn_values_are_checked() {
        assert!(p(&["-N", "sometimes", "a"]).is_err());
        assert!(p(&["-R", "body", "a"]).is_err());
        assert!(p(&["-V", "has space", "a"]).is_err());
        assert_eq!(
            p(&["-N", "NEVER", "a"]).unwrap().dsn_notify.as_deref(),
            Some("never")
        );
        assert!(p(&["-B", "9BIT", "a"]).is_err());
    }

    #[test]
    fn config_path() {
        assert_eq!(
            p(&["-C", "/etc/x.conf", "-bp"]).unwrap().config_path,
            Some(PathBuf::from("/etc/x.conf"))
        );
        assert_eq!(
            p(&["-C/etc/y", "a"]).unwrap().config_path,
            Some(PathBuf::from("/etc/y"))
        );
    }

    #[test]
    fn null_sender() {
        assert_eq!(p(&["-f", "<>", "a"]).unwrap().sender.as_deref(), Some("<>"));
        assert_eq!(p(&["-f", "", "a"]).unwrap().sender.as_deref(), Some(""));
        assert_eq!(
            p(&["-r", "x@y", "a"]).unwrap().sender.as_deref(),
            Some("x@y")
        );
    }

    #[test]
    fn mailq_json() {
        let args = vec!["--json".to_string()];
        assert!(parse(Face::Mailq, &args).unwrap().json);
    }

    #[test]
    fn metrics_go_alone_with_mailq_or_bp() {
        let mailq = |args: &[&str]| {
            let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
            parse(Face::Mailq, &args)
        };
        assert!(mailq(&["--metrics"]).unwrap().metrics);
        let bp = p(&["-bp", "--metrics"]).unwrap();
        assert!(bp.metrics && bp.mode == Mode::PrintQueue);
        for refused in [
            mailq(&["--metrics", "--json"]),
            mailq(&["--metrics", "--summary"]),
            mailq(&["--metrics", "--hold", "ALL"]),
            p(&["--metrics", "a@b"]),
            p(&["-q", "--metrics"]),
        ] {
            assert_eq!(refused.unwrap_err().kind().exit_code(), 64);
        }
    }
}

#[cfg(test)]
mod help {
    use super::*;

    /// Every option is in exactly one group of the help, so none can be
    /// left out of it.
    #[test]
    fn every_option_is_in_one_help_group() {
        for spec in OPTIONS {
            let groups = HELP_GROUPS
                .iter()
                .filter(|(_, _, names)| names.contains(&spec.name))
                .count();
            assert_eq!(groups, 1, "-{} is in {groups} help groups", spec.name);
        }
        for (title, _, names) in HELP_GROUPS {
            for name in *names {
                assert!(
                    OPTIONS.iter().any(|s| s.name == *name),
                    "{title}: no option {name}"
                );
            }
        }
    }

    #[test]
    fn each_face_gets_its_own_help() {
        let sendmail = help(Face::Sendmail);
        assert!(sendmail.contains("  -t ") && sendmail.contains("--delete"));
        assert!(sendmail.contains("sendmail(8)"));
        let mailq = help(Face::Mailq);
        assert!(mailq.contains("--hold") && !mailq.contains("  -t "));
        assert!(mailq.contains("mailq(1)"));
        let newaliases = help(Face::Newaliases);
        assert!(newaliases.contains("--version") && !newaliases.contains("--json"));
    }

    #[test]
    fn help_and_version_win_over_the_mode() {
        let p = |face, args: &[&str]| {
            parse(
                face,
                &args.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
            )
            .unwrap()
            .mode
        };
        assert_eq!(p(Face::Sendmail, &["-bs", "--help"]), Mode::Help);
        assert_eq!(p(Face::Mailq, &["--version"]), Mode::Version);
        assert_eq!(p(Face::Newaliases, &["--version"]), Mode::Version);
        assert_eq!(p(Face::Sendmail, &["-bV"]), Mode::Version);
        assert_eq!(p(Face::Sendmail, &["-t", "--version"]), Mode::Version);
    }
}

#[cfg(test)]
mod readme {
    use super::OPTIONS;

    /// The option table of docs/command-line.md comes from OPTIONS; this keeps the
    /// two from drifting apart.
    #[test]
    fn readme_lists_every_option_with_its_effect() {
        let readme = include_str!("../docs/command-line.md");
        for spec in OPTIONS.iter().filter(|s| !s.name.ends_with("-bare")) {
            let dash = if spec.name.len() == 1 { "-" } else { "--" };
            let row = format!("| `{dash}{}", spec.name);
            let line = readme
                .lines()
                .find(|l| l.starts_with(&row))
                .unwrap_or_else(|| {
                    panic!("docs/command-line.md has no row for {dash}{}", spec.name)
                });
            assert!(
                line.contains(&spec.effect.replace('\\', "")),
                "docs/command-line.md's row for {} is out of date",
                spec.name
            );
        }
    }
}

#[cfg(test)]
mod config_mode_tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Mode> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        parse(Face::Sendmail, &args).map(|inv| inv.mode)
    }

    #[test]
    fn show_and_check_config_are_modes_of_their_own() {
        assert_eq!(
            p(&["--show-config"]).unwrap(),
            Mode::ShowConfig { non_default: false }
        );
        assert_eq!(
            p(&["-C", "/x", "--show-config", "--non-default"]).unwrap(),
            Mode::ShowConfig { non_default: true }
        );
        assert_eq!(
            p(&["--check-config"]).unwrap(),
            Mode::CheckConfig { network: false }
        );
        assert_eq!(
            p(&["--check-config", "--network"]).unwrap(),
            Mode::CheckConfig { network: true }
        );
    }

    #[test]
    fn config_options_refuse_what_does_not_go_with_them() {
        for bad in [
            &["--non-default"][..],
            &["--network"],
            &["--show-config", "--check-config"],
            &["--show-config", "root"],
            &["--check-config", "-bp"],
            &["--show-config", "--network"],
        ] {
            assert_eq!(p(bad).unwrap_err().kind().exit_code(), 64, "{bad:?}");
        }
    }
}
