//! The spoolmail binary: a thin `main` that hardens the process, picks the
//! face from argv[0], runs it, and turns the one typed error into the one
//! exit code (the only place where exit codes are decided).

use spoolmail::accept::submit;
use spoolmail::cli::{self, DeliveryMode, Face, Invocation, Mode};
use spoolmail::config::{self, Config};
use spoolmail::error::{Error, Kind, Result};
use spoolmail::privilege::Scope;
use spoolmail::queue::mailq;
use spoolmail::{local, logging, privilege, runner, spool};
use std::io::Write;
use std::path::Path;
use std::time::SystemTime;

fn main() {
    privilege::harden();
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == local::HELPER_FLAG)
    {
        // The local delivery helper a root runner starts as a user.
        let args: Vec<String> = std::env::args_os()
            .skip(2)
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        std::process::exit(match local::helper_main(&args) {
            Ok(()) => 0,
            Err(err) => {
                say(format_args!("spoolmail: {err}"));
                err.kind().exit_code()
            }
        });
    }
    let mut args = std::env::args_os();
    let argv0 = args
        .next()
        .map(|a| a.to_string_lossy().into_owned())
        .unwrap_or_default();
    let face = Face::from_argv0(&argv0);
    // A panic is a bug, but before the commit point it must still look
    // like temporary trouble to the caller, so the message is retried.
    std::panic::set_hook(Box::new(move |info| {
        say(format_args!("{}: internal error: {info}", face.name()));
        std::process::exit(Kind::TempFail.exit_code());
    }));
    let code = match run(face, args) {
        Ok(()) => 0,
        Err(err) => {
            say(format_args!("{}: {err}", face.name()));
            // stderr already has the line; syslog gets it too.
            log::error!(target: logging::SYSLOG_ONLY, "{err}");
            err.kind().exit_code()
        }
    };
    std::process::exit(code);
}

/// The resolver crate, as `--version` names it. A test compares it with
/// the dependency in Cargo.toml.
const RESOLVER: &str = "hickory-resolver 0.26";

/// What `--version` (and `-bV`) prints: the version, and on a second line
/// what it was built with — the TLS library as linked (its own version
/// string, read at run time) and the resolver.
fn version() -> String {
    format!(
        "spoolmail {}\nbuilt with {} (native-tls), {RESOLVER}\n",
        env!("CARGO_PKG_VERSION"),
        openssl::version::version()
    )
}

/// Writes `text` to stdout; a write error (a closed pipe) is an error.
fn print_out(text: &str) -> Result<()> {
    std::io::stdout()
        .write_all(text.as_bytes())
        .map_err(|e| Error::io("writing to standard output", &e))
}

/// One line on stderr. Never panics: a caller may give us a full or
/// closed stderr (`2>/dev/full`, a pipe nobody reads), and the exit code
/// must still be the one the error calls for (`eprintln!` would panic,
/// and the panic hook's own message would abort the process).
fn say(line: std::fmt::Arguments) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

fn run(face: Face, args: std::env::ArgsOs) -> Result<()> {
    let args: Vec<String> = args
        .map(|a| {
            a.into_string()
                .map_err(|a| Error::usage(format!("argument {a:?} is not valid UTF-8")))
        })
        .collect::<Result<_>>()?;
    let inv = cli::parse(face, &args)?;
    logging::init(face.name(), inv.verbose);
    for ignored in &inv.ignored {
        log::debug!("option {ignored} accepted and ignored");
    }
    // Neither needs the configuration: they work before there is one.
    match inv.mode {
        Mode::Help => return print_out(&cli::help(face)),
        Mode::Version => return print_out(&version()),
        _ => {}
    }
    let config = load_config(&inv)?;
    logging::configure(&config.syslog_name, config.syslog_socket.clone());
    match &inv.mode {
        Mode::Deliver => deliver(&inv, &config),
        Mode::PrintQueue => print_queue(&inv, &config),
        Mode::Administer(action) => administer(&inv, *action, &config),
        Mode::InitAliases => new_aliases(face, &config),
        Mode::Smtp => smtp_session(&inv, &config),
        Mode::Verify => verify(&inv, &config),
        Mode::QueueRun(run) => {
            let spool = spool::Spool::open(&config.spool)?;
            let selection = runner::Selection {
                filters: run.filters.clone(),
                scope: Scope::of_caller(spool.group()),
            };
            runner::run_queue(&spool, &config, &selection, run.interval)
        }
        Mode::DkimKeygen(keygen) => {
            let (record, path) =
                runner::dkim::generate(&config, &keygen.domain, &keygen.selector, keygen.ed25519)?;
            say(format_args!(
                "spoolmail: key written to {}; publish this record:",
                path.display()
            ));
            print_out(&record)
        }
        Mode::ShowConfig { non_default } => show_config(&inv, *non_default),
        Mode::CheckConfig { network } => check_config(&inv, &config, *network),
        Mode::Help | Mode::Version => unreachable!("answered before the configuration is read"),
        Mode::Unsupported(flag) => Err(Error::new(
            Kind::Unavailable,
            format!("{flag} is not supported by spoolmail"),
        )),
    }
}

/// The configuration file `--show-config` and `--check-config` read and
/// name in their lines.
fn config_origin(inv: &Invocation) -> &Path {
    inv.config_path
        .as_deref()
        .unwrap_or(Path::new(config::DEFAULT_PATH))
}

/// `spoolmail --show-config [--non-default]` (Postfix's `postconf` and
/// `postconf -n`): printed as a configuration file that parses back to
/// the same settings.
fn show_config(inv: &Invocation, non_default: bool) -> Result<()> {
    let path = config_origin(inv);
    let (config, written) = config::load_written(path, inv.config_path.is_some())?;
    let origin = path.display().to_string();
    let group = config::check::runner_group();
    print_out(&match non_default {
        true => config::show::non_default(&written, &origin, group),
        false => config::show::effective(&config, &written, &origin, group),
    })
}

/// `spoolmail --check-config [--network]`: every problem found, one line
/// each on stdout (`FILE:LINE: key: …` when the file set it); exit 78
/// when there is one. The configuration's own checks, the spool's layout
/// and, with `--network`, a session with each relay (no mail sent).
fn check_config(inv: &Invocation, config: &Config, network: bool) -> Result<()> {
    let path = config_origin(inv);
    let (_, written) = config::load_written(path, inv.config_path.is_some())?;
    let origin = path.display().to_string();
    let group = config::check::runner_group();
    let compiled = local::aliases::compiled_path(&config.aliases);
    let mut lines: Vec<String> = config::check::offline(config, &written, &compiled, group)
        .iter()
        .map(|p| p.render(&origin))
        .collect();
    let spool_line = config::check::line_of(&written, "spool");
    lines.extend(
        spool::Spool::layout_problems(&config.spool, group, &|uid, gid| {
            format!(
                "{}:{}",
                privilege::user_name(uid),
                privilege::group_name(gid)
            )
        })
        .into_iter()
        .map(|text| {
            config::check::Problem {
                line: spool_line,
                key: "spool".to_string(),
                text,
            }
            .render(&origin)
        }),
    );
    // DKIM keys (issue 26): each as the runner would read it.
    let dkim_lines: Vec<&config::Written> = written.iter().filter(|w| w.key == "dkim").collect();
    for (i, text) in runner::dkim::key_problems(config, group) {
        let problem = config::check::Problem {
            line: dkim_lines.get(i).map(|w| w.line),
            key: "dkim".to_string(),
            text,
        };
        lines.push(problem.render(&origin));
    }
    let mut problems = lines.len();
    let mut out = lines.join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    if network {
        for probe in runner::probe::probe_relays(config) {
            problems += usize::from(!probe.ok);
            out.push_str(&format!("{probe}\n"));
        }
        // Each DKIM key against the record receivers verify with.
        if !config.dkim.is_empty() {
            let resolver =
                runner::dns::Resolver::new(config.resolver, std::time::Duration::from_secs(10))?;
            for (_, ok, text) in runner::dkim::published_checks(config, &resolver) {
                problems += usize::from(!ok);
                out.push_str(&format!("{text}\n"));
            }
        }
    }
    print_out(&out)?;
    match problems {
        0 => Ok(()),
        n => Err(Error::config(format!("{n} problem(s) in {origin}"))),
    }
}

/// `mailq --delete|--hold|--release ID… | ALL`: one line per message on
/// stdout, one syslog line per message acted on; released messages go to
/// a detached runner at once.
fn administer(inv: &Invocation, action: cli::AdminAction, config: &Config) -> Result<()> {
    let spool = spool::Spool::open(&config.spool)?;
    let scope = Scope::of_caller(spool.group());
    let uid = nix::unistd::getuid().as_raw();
    let who = privilege::caller_name().unwrap_or_else(|| format!("uid {uid}"));
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let request = spoolmail::queue::admin::Request {
        action,
        targets: &inv.recipients,
        filters: &inv.admin_filters,
    };
    let report = spoolmail::queue::admin::administer(
        &spool,
        &request,
        scope,
        &who,
        &mut std::io::stdin().lock(),
        &mut out,
    )?;
    out.flush()
        .map_err(|e| Error::io("writing to standard output", &e))?;
    let due_now = matches!(
        action,
        cli::AdminAction::Release | cli::AdminAction::Requeue | cli::AdminAction::Return
    );
    if due_now && let Some(first) = report.done.first() {
        runner::spawn_detached(&spool, config, first);
    }
    spoolmail::queue::admin::outcome(&report)
}

/// `sendmail -bv ADDRESS…`: where each address would go, one line per
/// step on stdout; nothing is read from stdin and nothing is queued. The
/// exit status is the worst address's (0, 75, 69, 67, 65).
fn verify(inv: &Invocation, config: &Config) -> Result<()> {
    if inv.recipients.is_empty() {
        return Err(Error::usage("-bv needs the addresses to verify"));
    }
    // Who sees inside the expansion: the rule mailq uses (the spool's
    // group from queue/; without a spool only root sees everything).
    let group = spool::Spool::open(&config.spool)
        .ok()
        .and_then(|s| s.group());
    let scope = Scope::of_caller(group);
    let uid = nix::unistd::getuid().as_raw();
    let name = local::User::by_uid(uid).map_or_else(|| format!("uid{uid}"), |u| u.name);
    let sender = format!("{name}@{}", config.hostname);
    let aliases = local::load(config)?;
    let request = runner::verify::Request {
        addresses: &inv.recipients,
        sender: &sender,
        scope,
        verbose: inv.verbose,
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let report = runner::verify::verify(config, aliases.as_ref(), &request, &mut out)?;
    out.flush()
        .map_err(|e| Error::io("writing to standard output", &e))?;
    let first = report.first_problem.as_deref().unwrap_or("");
    match report.verdict.error(first) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// `sendmail -bs`: SMTP on stdin/stdout; each committed message goes to
/// a detached runner at once (unless `-odq`).
fn smtp_session(inv: &Invocation, config: &Config) -> Result<()> {
    let caller = submit::Caller::current()?;
    let spool = spool::Spool::open(&config.spool)?;
    let mut start_delivery = |id: &spool::QueueId| {
        if inv.delivery != DeliveryMode::Queue {
            runner::spawn_detached(&spool, config, id);
        }
    };
    spoolmail::accept::smtpd::serve(
        inv,
        config,
        &caller,
        std::io::stdin().lock(),
        std::io::stdout().lock(),
        &mut start_delivery,
    )?;
    Ok(())
}

/// `newaliases` / `sendmail -bi`: compiles the aliases file, printing
/// sendmail's summary line; every error goes to stderr with its line
/// number and nothing is compiled (exit 65). Only root's call keeps the
/// setgid privilege: anyone else reads and writes with their own rights,
/// so a source only the mail group may read (0640 root:mail, passwords
/// in pipe commands) is not opened for them, nor quoted in errors, nor
/// counted in the summary.
fn new_aliases(face: Face, config: &Config) -> Result<()> {
    let path = &config.aliases;
    if privilege::is_privileged() && !privilege::caller_is_root() {
        privilege::drop_privilege()?;
        log::debug!("newaliases by a non-root caller: setgid privilege dropped");
    }
    match spoolmail::local::aliases::compile(path)? {
        Ok(summary) => {
            for warning in &summary.warnings {
                say(format_args!("{}: warning: {warning}", face.name()));
            }
            let line = summary.line(path);
            log::info!("{line}");
            let _ = writeln!(std::io::stdout(), "{line}");
            Ok(())
        }
        Err(errors) => {
            for error in &errors {
                say(format_args!("{}: {error}", face.name()));
            }
            Err(Error::data(format!(
                "{}: {} error(s); the compiled aliases are unchanged",
                path.display(),
                errors.len()
            )))
        }
    }
}

/// Reads the configuration: `-C FILE` (which must exist) or the default
/// path (whose absence means "all defaults", so a fresh install works).
fn load_config(inv: &Invocation) -> Result<Config> {
    match &inv.config_path {
        Some(path) => {
            if privilege::is_privileged() && !privilege::caller_is_root() {
                // The caller chose the file, and with it the spool: it must
                // not get the spool group's rights to go with it.
                privilege::drop_privilege()?;
                log::debug!("-C given by a non-root caller: setgid privilege dropped");
            }
            config::load(path, true)
        }
        None => config::load(Path::new(config::DEFAULT_PATH), false),
    }
}

fn deliver(inv: &Invocation, config: &Config) -> Result<()> {
    let caller = submit::Caller::current()?;
    let mut submitted = {
        let stdin = std::io::stdin().lock();
        submit::submit(inv, config, &caller, stdin, SystemTime::now())?
    };
    if submitted.dropped {
        // Safe on disk; the queue run by root (the systemd path unit and
        // timer) moves it into the queue and delivers it.
        log::info!("{}: handed over through the maildrop", submitted.id);
        return Ok(());
    }
    // The message is committed: from here on nothing may exit non-zero
    // for trouble that is not its delivery's (the caller would send it
    // again). Without the spool, the next queue run delivers it.
    let spool = match spool::Spool::open(&config.spool) {
        Ok(spool) => spool,
        Err(e) => {
            log::warn!("{}: queued; no delivery now: {e}", submitted.id);
            return Ok(());
        }
    };
    match inv.delivery {
        DeliveryMode::Queue => Ok(()),
        DeliveryMode::Background => {
            runner::spawn_detached(&spool, config, &submitted.id);
            Ok(())
        }
        DeliveryMode::Interactive | DeliveryMode::Foreground => {
            // The message is committed: whatever happens below, it is
            // safe in the queue, and the exit status reports the attempt.
            let tally =
                match runner::deliver_now(&spool, config, &submitted.id, submitted.held.take()) {
                    Ok(tally) => tally,
                    Err(e) => {
                        return Err(Error::new(
                            Kind::TempFail,
                            format!("{}: queued, delivery failed: {e}", submitted.id),
                        ));
                    }
                };
            if let Some(first) = tally.notices.first() {
                // Bounces and delay notices go out now, not at the next
                // queue run; the caller does not wait for them.
                runner::spawn_detached(&spool, config, first);
            }
            foreground_status(inv, &submitted.id, &tally)
        }
    }
}

/// The exit status of `-odi`/`-odf`: 0 when every recipient was
/// delivered; 75 when some wait in the queue for a retry; 69 when some
/// failed for good (a bounce went to the sender). With `-oem` errors
/// are mailed, not reported, as in sendmail.
fn foreground_status(inv: &Invocation, id: &spool::QueueId, tally: &runner::Tally) -> Result<()> {
    if matches!(inv.error_mode, cli::ErrorMode::Mail | cli::ErrorMode::Exit) {
        return Ok(());
    }
    let why = tally.last_error.as_deref().unwrap_or("no reason recorded");
    if tally.deferred > 0 {
        Err(Error::new(
            Kind::TempFail,
            format!(
                "{id}: {} recipient(s) deferred, queued for retry: {why}",
                tally.deferred
            ),
        ))
    } else if tally.failed > 0 {
        Err(Error::new(
            Kind::Unavailable,
            format!("{id}: {} recipient(s) failed: {why}", tally.failed),
        ))
    } else {
        Ok(())
    }
}

fn print_queue(inv: &Invocation, config: &Config) -> Result<()> {
    // `mailq | head` ends the listing as it ends any other program's:
    // silently, by SIGPIPE (which the Rust runtime ignores, turning
    // the end of the reader into an error message). A listing has
    // nothing to finish or undo.
    // SAFETY: restores the default disposition; no handler is installed.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let spool = spool::Spool::open(&config.spool)?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    // Root and the spool's group see the whole queue; anyone else only
    // their own mail.
    let scope = Scope::of_caller(spool.group());
    if inv.metrics {
        return print_metrics(&spool, config, scope, &mut out);
    }
    if inv.summary {
        let now = spoolmail::clock::unix_now();
        spoolmail::queue::summary::print(&spool, inv.json, scope, &mut out, now)?;
        return Ok(());
    }
    let mut waits = spoolmail::runner::Waits::new(config, &spool);
    mailq::print(
        &spool,
        inv.json,
        scope,
        Some(&mut waits),
        &mut out,
        SystemTime::now(),
    )?;
    out.flush()
        .map_err(|e| Error::io("writing to standard output", &e))
}

/// `mailq --metrics`: the queue's numbers in the Prometheus text format,
/// of the messages in the caller's `scope`.
fn print_metrics(
    spool: &spool::Spool,
    config: &Config,
    scope: Scope,
    out: &mut dyn Write,
) -> Result<()> {
    let now = spoolmail::clock::unix_now();
    spoolmail::queue::metrics::print(spool, config, scope, out, now)
}
