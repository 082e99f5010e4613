//! What the setgid process takes from its caller's environment (issue
//! 15).

use crate::common::smtpd::{SmtpServer, self_signed_cert};
use crate::site::Site;

const MESSAGE: &[u8] = b"To: friend@example.org\nSubject: over TLS\n\nbody\n";

/// OpenSSL honours `SSL_CERT_FILE`: if the setgid runner kept the
/// caller's, the caller would choose which certificate authority vouches
/// for the smarthost — and receive the relay password and everyone's
/// mail. The runner must trust only the system store and `tls_ca_file`.
#[test]
fn a_callers_ssl_cert_file_cannot_choose_whom_the_setgid_runner_trusts() {
    let Some(site) = Site::new("env", "") else {
        return;
    };
    // Mallory's own certificate authority: a self-signed certificate for
    // the smarthost's name, readable by him.
    let (cert, key) = self_signed_cert(&site.base, "localhost");
    let server = SmtpServer::start(
        &site.base,
        &["--starttls", cert.to_str().unwrap(), key.to_str().unwrap()],
    );
    site.set_config(&format!(
        "smarthost = localhost:{}\nsmarthost_tls = starttls\nretry_min = 1s",
        server.port
    ));
    let mine = site.mallory.home.join("ca.pem");
    std::fs::copy(&cert, &mine).unwrap();
    let out = crate::common::run_with_stdin(
        &mut site.shell(
            Some(&site.mallory),
            &format!(
                "SSL_CERT_FILE={0} SSL_CERT_DIR={1} exec sendmail -odi -t -i",
                mine.display(),
                site.mallory.home.display()
            ),
        ),
        MESSAGE,
    );
    assert_eq!(
        out.status.code(),
        Some(75),
        "the smarthost's certificate must not verify: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        server.messages().is_empty(),
        "mail went over TLS verified by the caller's CA"
    );
    assert_eq!(site.queue_ids().len(), 1, "the message waits in the queue");
}
