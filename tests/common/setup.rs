//! The common setups of a test's config, built line by line: the
//! smarthost (a test server on loopback, or a relay list of them), the
//! relays declared in plain text, the routes. A test server speaks plain
//! text on 127.0.0.1 unless it was given a certificate (then it is
//! `localhost`, verified); anything else is added as written with
//! [`Setup::line`].
//!
//! Lines keep the order they were added in (the first matching route
//! wins). The text goes to a [`World`] ([`Setup::world`]) or to any other
//! maker of configs, such as the hostile suite's site ([`Setup::text`]).

use std::path::Path;

use super::World;

/// The smarthost a config gets when it names none: nothing listens on
/// port 1, so a delivery attempt defers at once and never leaves the host.
pub const REFUSING_SMARTHOST: &str = "smarthost = 127.0.0.1:1\n";

/// A test config under construction: `key = value` lines.
#[derive(Clone, Debug, Default)]
pub struct Setup {
    text: String,
}

impl Setup {
    /// Remote mail goes to the test server at loopback `port`, in plain
    /// text (`smarthost_tls = none`).
    pub fn smarthost(port: u16) -> Setup {
        Setup::smarthosts(&[port])
    }

    /// Remote mail goes to the relay list of test servers at loopback
    /// `ports`, in that order, in plain text. The list's policy is the
    /// config's default unless a `smarthost_policy` line is added.
    pub fn smarthosts(ports: &[u16]) -> Setup {
        let list: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        Setup::default().line(&format!(
            "smarthost = {}\nsmarthost_tls = none",
            list.join(", ")
        ))
    }

    /// Remote mail goes to the test server at loopback `port` by the name
    /// `localhost` (the name its test certificate is for), over TLS as
    /// `smarthost_tls = MODE` says (`starttls` or `tls`), verified
    /// against the certificate authority in `ca`.
    pub fn verified_smarthost(port: u16, mode: &str, ca: &Path) -> Setup {
        Setup::default().line(&format!(
            "smarthost = localhost:{port}\nsmarthost_tls = {mode}\ntls_ca_file = {}",
            ca.display()
        ))
    }

    /// Adds the routing rule `rule` (`route = RULE`, e.g.
    /// `"intranet.test -> local"`).
    pub fn route(self, rule: &str) -> Setup {
        self.line(&format!("route = {rule}"))
    }

    /// Adds a route sending the recipients matching `pattern` (a domain,
    /// `*.domain`, `*`, or `* from domain`) to the relay at loopback `port`.
    pub fn route_to_relay(self, pattern: &str, port: u16) -> Setup {
        self.route(&format!("{pattern} -> relay 127.0.0.1:{port}"))
    }

    /// Declares the relay at loopback `port` as a plain-text one
    /// (`relay = 127.0.0.1:PORT tls=none`).
    pub fn plain_relay(self, port: u16) -> Setup {
        self.line(&format!("relay = 127.0.0.1:{port} tls=none"))
    }

    /// Adds `text` (one or more `key = value` lines) as written.
    pub fn line(mut self, text: &str) -> Setup {
        self.text.push_str(text);
        if !text.is_empty() && !text.ends_with('\n') {
            self.text.push('\n');
        }
        self
    }

    /// The config text so far.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// A fresh world with this config.
    pub fn world(&self) -> World {
        World::with_config(&self.text)
    }
}
