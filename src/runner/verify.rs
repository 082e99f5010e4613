//! `sendmail -bv ADDRESS…`: where each address would go, said the way
//! sendmail 8 says it, with nothing queued and nothing delivered.
//!
//! Nothing here decides a route or an expansion of its own: a local
//! address is expanded by delivery's own walk ([`local::expand_in`],
//! with its limits and the rights it reads list files with), and every
//! address is routed by the runner's own [`route_of`], relay order
//! ([`relays::hops`]) and MX resolution ([`Resolver`], the
//! configured `resolver`). So the answer is what a delivery would do now.
//!
//! Who sees what is [`Scope`], the one rule of `privilege` (root and the
//! spool's group: everything; anyone else: what is theirs). The walk
//! reads a list file only with the rights of the user it belongs to, so
//! an ordinary caller's walk cannot read another user's `.forward` or an
//! `:include:` only its owner or root may read: such a file is shown as
//! deliverable to its user, never opened. And in an ordinary caller's
//! scope, a list another user answers for is shown the same way even if
//! this process read it, as is an `:include:` the caller could not read
//! with their own rights: what is inside is never printed for them.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;

use crate::config::Config;
use crate::config::relay::{Policy, RelayList};
use crate::config::route::Action;
use crate::error::{Error, Result};
use crate::local::aliases::Aliases;
use crate::local::trace::{Step, What};
use crate::local::{self, Delivery, RunAs, User};
use crate::privilege::Scope;

use super::dns::{MxHost, Resolver, RouteError};
use super::hosts::{Destination, Hop, Routing, route_of};
use super::outcome::Outcome;
use super::relays;

/// How far an address routed back here by a `route = … -> local` is
/// followed (each hop is a new expansion, as a forwarded copy's is).
const MAX_REROUTES: usize = 10;

/// What verifying the addresses found, worst last: the exit status of
/// `sendmail -bv` is the worst one's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    /// Every address is deliverable (exit 0).
    Deliverable,
    /// Some would wait: DNS trouble, a 4xx `error` route (exit 75).
    Deferred,
    /// Some would fail: a 5xx `error` route, a domain without mail
    /// hosts, an expansion over its limit (exit 69).
    Undeliverable,
    /// Some name no user or alias (exit 67).
    UnknownUser,
    /// Some address is malformed (exit 65).
    Malformed,
}

impl Verdict {
    /// The error `main` exits with (None: exit 0).
    pub fn error(self, first_problem: &str) -> Option<Error> {
        use crate::error::Kind;
        let kind = match self {
            Verdict::Deliverable => return None,
            Verdict::Deferred => Kind::TempFail,
            Verdict::Undeliverable => Kind::Unavailable,
            Verdict::UnknownUser => Kind::NoUser,
            Verdict::Malformed => Kind::Data,
        };
        Some(Error::new(kind, first_problem.to_string()))
    }
}

/// What `sendmail -bv` was asked.
pub struct Request<'a> {
    /// The arguments, each an address or a comma-separated list.
    pub addresses: &'a [String],
    /// The envelope sender a message from the caller would have (routes
    /// may match on it).
    pub sender: &'a str,
    /// Who asks: what of the expansion they may see.
    pub scope: Scope,
    /// `-v`: show the MX lookup too.
    pub verbose: bool,
}

/// The verdict and the first address that was not deliverable.
pub struct Report {
    /// The worst of all the addresses.
    pub verdict: Verdict,
    /// The first problem's line, for stderr and the exit.
    pub first_problem: Option<String>,
}

/// Verifies each address of `request`, writing one line per step and
/// per final destination to `out`.
pub fn verify(
    config: &Config,
    aliases: Option<&Aliases>,
    request: &Request,
    out: &mut dyn Write,
) -> Result<Report> {
    let empty = Aliases::default();
    let mut verifier = Verifier {
        config,
        aliases: aliases.unwrap_or(&empty),
        request,
        resolver: None,
        routed: BTreeSet::new(),
        lines: Vec::new(),
        verdict: Verdict::Deliverable,
        first_problem: None,
    };
    for argument in request.addresses {
        // Each argument gets its whole answer, whatever the others had.
        verifier.routed.clear();
        match crate::address::parse_list(argument) {
            Ok(list) => {
                for address in list {
                    verifier.route(&address.to_string(), &[], 0);
                }
            }
            Err(e) => verifier.line(Verdict::Malformed, format!("{argument}... {e}")),
        }
        // Written as each argument is done: a slow DNS answer for the
        // next one does not hold back what is known.
        for line in verifier.lines.drain(..) {
            writeln!(out, "{line}").map_err(|e| Error::io("writing to standard output", &e))?;
        }
    }
    Ok(Report {
        verdict: verifier.verdict,
        first_problem: verifier.first_problem,
    })
}

struct Verifier<'a> {
    config: &'a Config,
    aliases: &'a Aliases,
    request: &'a Request<'a>,
    /// Made on the first MX lookup.
    resolver: Option<Resolver>,
    /// Addresses routed already for this argument: each is said once
    /// (a loop of routes and aliases ends).
    routed: BTreeSet<String>,
    lines: Vec<String>,
    verdict: Verdict,
    first_problem: Option<String>,
}

impl Verifier<'_> {
    /// One line of output, and what it means for the exit status.
    fn line(&mut self, verdict: Verdict, text: String) {
        if verdict != Verdict::Deliverable && self.first_problem.is_none() {
            self.first_problem = Some(text.clone());
        }
        self.verdict = self.verdict.max(verdict);
        self.lines.push(text);
    }

    fn deliverable(&mut self, text: String) {
        self.line(Verdict::Deliverable, text)
    }

    /// Where `address` goes, as the runner would route it; `chain` is
    /// what a forwarded copy to it would carry.
    fn route(&mut self, address: &str, chain: &[String], reroutes: usize) {
        if !self.routed.insert(address.to_ascii_lowercase()) {
            return;
        }
        match route_of(self.config, self.request.sender, address) {
            Routing::Local if reroutes <= MAX_REROUTES => self.local(address, chain, reroutes),
            Routing::Local => self.line(
                Verdict::Undeliverable,
                format!("{address}... routed back here more than {MAX_REROUTES} times"),
            ),
            Routing::Remote(Destination::Domain(domain)) => self.mx(address, &domain),
            Routing::Remote(dest) => self.relays(address, &dest),
            Routing::Refused(outcome) => {
                let (verdict, reply) = match outcome {
                    Outcome::Deferred { reason, .. } => (Verdict::Deferred, reason),
                    Outcome::Failed { reason, .. } => (Verdict::Undeliverable, reason),
                    Outcome::Delivered { reply, .. } => (Verdict::Deliverable, reply),
                };
                self.line(verdict, format!("{address}... {reply}"))
            }
        }
    }

    /// A local address: delivery's own expansion, shown step by step as
    /// far as the caller may see it.
    fn local(&mut self, address: &str, chain: &[String], reroutes: usize) {
        let expansion = local::expand_in(self.config, self.aliases, address, chain);
        if let Some(why) = &expansion.over_limit {
            return self.line(
                Verdict::Undeliverable,
                format!("{address}... expansion limit reached ({why}): nothing would be delivered"),
            );
        }
        if expansion.delivers_nothing() {
            return self.line(
                Verdict::Undeliverable,
                format!("{address}... expands to nothing deliverable"),
            );
        }
        // Steps deeper than this come from a list the caller may not see.
        let mut hidden_below: Option<usize> = None;
        for step in &expansion.steps {
            match hidden_below {
                Some(depth) if step.depth > depth => continue,
                _ => hidden_below = None,
            }
            if let Some(user) = self.private(step) {
                hidden_below = Some(step.depth);
                self.deliverable(format!(
                    "{}... deliverable: mailer local, user {}",
                    shown_list(step, user),
                    user.name
                ));
                continue;
            }
            match &step.what {
                What::Alias { name, targets } => {
                    self.deliverable(format!("{name}... aliased to {}", targets.join(", ")))
                }
                What::Forward { user, targets } => self.deliverable(format!(
                    "{}... forwarded to {}",
                    user.name,
                    targets.join(", ")
                )),
                What::Include { path, targets, .. } => self.deliverable(format!(
                    ":include:{}... includes {}",
                    path.display(),
                    targets.join(", ")
                )),
                What::Unread { user, .. } => {
                    hidden_below = Some(step.depth);
                    self.deliverable(format!(
                        "{}... deliverable: mailer local, user {}",
                        shown_list(step, user),
                        user.name
                    ))
                }
                What::Local(delivery) => self.delivery(address, delivery),
                What::Remote(elsewhere) => self.route(elsewhere, &expansion.chain, reroutes + 1),
            }
        }
    }

    /// The user a list step belongs to when the caller may not see
    /// inside it (see the module comment), else None.
    fn private<'s>(&self, step: &'s Step) -> Option<&'s User> {
        let Scope::Own(uid) = self.request.scope else {
            return None;
        };
        match &step.what {
            What::Forward { user, .. } if user.uid != uid => Some(user),
            What::Include { path, reader, .. }
                if reader.uid != uid && !readable_by_caller(path) =>
            {
                Some(reader)
            }
            _ => None,
        }
    }

    fn delivery(&mut self, address: &str, delivery: &Delivery) {
        let run_as = |r: &RunAs| match r {
            RunAs::User(u) => u.name.clone(),
            RunAs::PipeUser => self.config.pipe_user.clone(),
        };
        match delivery {
            Delivery::Mailbox(user) => self.deliverable(format!(
                "{}... deliverable: mailer local, user {}",
                user.name, user.name
            )),
            Delivery::Pipe { command, run_as: r } => self.deliverable(format!(
                "\"|{command}\"... deliverable: mailer prog, user {}",
                run_as(r)
            )),
            Delivery::File { path, run_as: r } => self.deliverable(format!(
                "{}... deliverable: mailer file, user {}",
                path.display(),
                run_as(r)
            )),
            Delivery::Unknown(name) => {
                self.line(Verdict::UnknownUser, format!("{name}... User unknown"))
            }
            Delivery::Trouble(why) => {
                self.line(Verdict::Deferred, format!("{address}... deferred: {why}"))
            }
            // Shown by its What::Unread step.
            Delivery::NeedsRoot(_) => {}
        }
    }

    /// A relay list's destination: the relays in the order a message
    /// tries them.
    fn relays(&mut self, address: &str, dest: &Destination) {
        let hops = relays::hops(self.config, dest, "");
        let names: Vec<String> = hops
            .iter()
            .filter_map(|(hop, relay)| match (hop, relay) {
                (_, Some(r)) => Some(host_port(&r.host, r.port)),
                (Hop::Relay(host, port), None) => Some(host_port(host, *port)),
                _ => None,
            })
            .collect();
        let Some((first, rest)) = names.split_first() else {
            return self.line(
                Verdict::Undeliverable,
                format!("{address}... no relay for {dest}"),
            );
        };
        let how = match list_of(self.config, dest).map(|l| l.policy) {
            _ if rest.is_empty() => String::new(),
            Some(Policy::Spread) => format!(" (spread with: {})", rest.join(", ")),
            _ => format!(" (failover: {})", rest.join(", ")),
        };
        self.deliverable(format!(
            "{address}... deliverable: mailer esmtp, relay {first}{how}"
        ));
    }

    /// A domain's MX hosts, looked up as the transport does.
    fn mx(&mut self, address: &str, domain: &str) {
        if self.resolver.is_none() {
            let timeout = self
                .config
                .command_timeout
                .min(super::transport::DNS_TIMEOUT);
            match Resolver::new(self.config.resolver, timeout) {
                Ok(r) => self.resolver = Some(r),
                Err(e) => {
                    return self.line(Verdict::Deferred, format!("{address}... deferred: {e}"));
                }
            }
        }
        let resolver = self.resolver.as_ref().expect("made above");
        match resolver.mx_hosts(domain) {
            Ok(hosts) => {
                if self.request.verbose {
                    for host in &hosts {
                        let line = mx_line(domain, host);
                        self.deliverable(line);
                    }
                }
                match hosts.first() {
                    Some(first) => self.deliverable(format!(
                        "{address}... deliverable: mailer esmtp, host {}{}",
                        first.name,
                        preference(domain, first)
                    )),
                    None => self.line(
                        Verdict::Deferred,
                        format!("{address}... deferred: {domain}: no mail host found"),
                    ),
                }
            }
            Err(RouteError::Permanent { message, .. }) => self.line(
                Verdict::Undeliverable,
                format!("{address}... Host unknown: {message}"),
            ),
            Err(RouteError::Temporary { message }) => self.line(
                Verdict::Deferred,
                format!("{address}... deferred: {message}"),
            ),
        }
    }
}

/// `-v`'s line for one MX host: its preference, name and addresses.
fn mx_line(domain: &str, host: &MxHost) -> String {
    let addresses: Vec<String> = host.addresses.iter().map(|a| a.to_string()).collect();
    match is_implicit(domain, host) {
        true => format!(
            "{domain}: no MX record: its own address {}",
            addresses.join(", ")
        ),
        false => format!(
            "{domain}: MX {} {} [{}]",
            host.preference,
            host.name,
            addresses.join(", ")
        ),
    }
}

/// ` (MX 10)`, or what stands for a domain without MX records.
fn preference(domain: &str, host: &MxHost) -> String {
    match is_implicit(domain, host) {
        true => " (no MX record: the domain's own address)".to_string(),
        false => format!(" (MX {})", host.preference),
    }
}

/// Whether `host` is the domain itself taken as its MX (RFC 5321
/// §5.1: no MX records) or an address literal.
fn is_implicit(domain: &str, host: &MxHost) -> bool {
    host.preference == 0 && host.name.eq_ignore_ascii_case(domain.trim_end_matches('.'))
}

/// How a list step that is not opened is named in its line.
fn shown_list(step: &Step, user: &User) -> String {
    match &step.what {
        What::Include { path, .. }
        | What::Unread {
            path: Some(path), ..
        } => format!(":include:{}", path.display()),
        _ => user.name.clone(),
    }
}

/// `host:port`, or `[host]:port` for an IPv6 address.
fn host_port(host: &str, port: u16) -> String {
    match host.contains(':') {
        true => format!("[{host}]:{port}"),
        false => format!("{host}:{port}"),
    }
}

/// The relay list a destination uses.
fn list_of<'c>(config: &'c Config, dest: &Destination) -> Option<&'c RelayList> {
    match dest {
        Destination::Smarthost => config.smarthost.as_ref(),
        Destination::Route(i) => match config.routes.get(*i).map(|r| &r.action) {
            Some(Action::Relay(list)) => Some(list),
            _ => None,
        },
        Destination::Domain(_) => None,
    }
}

/// Whether the caller, with their real uid and groups (not the binary's
/// set-id group), could read `path` themselves.
fn readable_by_caller(path: &Path) -> bool {
    nix::unistd::access(path, nix::unistd::AccessFlags::R_OK).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    fn host(name: &str, preference: u16) -> MxHost {
        MxHost {
            name: name.into(),
            preference,
            addresses: vec!["192.0.2.1".parse::<IpAddr>().unwrap()],
        }
    }

    #[test]
    fn the_worst_verdict_decides_the_exit() {
        assert!(Verdict::Malformed > Verdict::UnknownUser);
        assert!(Verdict::UnknownUser > Verdict::Undeliverable);
        assert!(Verdict::Undeliverable > Verdict::Deferred);
        assert!(Verdict::Deliverable.error("x").is_none());
        assert_eq!(
            Verdict::UnknownUser.error("x").unwrap().kind().exit_code(),
            67
        );
        assert_eq!(
            Verdict::Malformed.error("x").unwrap().kind().exit_code(),
            65
        );
    }

    #[test]
    fn mx_hosts_are_named_with_their_preference() {
        assert_eq!(
            preference("example.com", &host("mx1.example.com", 10)),
            " (MX 10)"
        );
        assert_eq!(
            mx_line("example.com", &host("mx1.example.com", 10)),
            "example.com: MX 10 mx1.example.com [192.0.2.1]"
        );
        assert!(preference("example.com", &host("example.com", 0)).contains("no MX"));
        assert_eq!(host_port("::1", 25), "[::1]:25");
        assert_eq!(host_port("smtp.example", 587), "smtp.example:587");
    }
}
