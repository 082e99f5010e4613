//! Logging to syslog on the mail facility (and to stderr with `-v`).
//! STUB: replaced by the config helper.

/// Sets up the `log` facade. Never fails: without syslog we log nowhere (or only to stderr).
pub fn init(_ident: &str, _verbose: bool) {}
