//! Test certificates made with openssl(1): a test CA and leaves it
//! issues, for the SMTP and HTTPS peers of the DANE and MTA-STS tests.

use std::path::Path;
use std::process::Command;

/// Runs openssl in `dir` with `args`; panics on failure.
pub fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A test CA (`ca.pem`) and, for each of `names`, a key (`NAME.key`) and
/// a chain file (`NAME.chain`: the certificate the CA issued for NAME,
/// then the CA's) for aiosmtpd's STARTTLS.
pub fn issue(dir: &Path, names: &[&str]) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec![
        "req", "-x509", "-days", "2", "-keyout", "ca.key", "-out", "ca.pem",
    ];
    ca.extend(ec);
    ca.extend([
        "-subj",
        "/CN=spoolmail DANE test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    openssl(dir, &ca);
    for name in names {
        let (key, csr, crt) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.crt"),
        );
        let subject = format!("/CN={name}");
        let mut req = vec!["req", "-keyout", &key, "-out", &csr, "-subj", &subject];
        req.extend(ec);
        openssl(dir, &req);
        let ext = dir.join(format!("{name}.ext"));
        std::fs::write(&ext, format!("subjectAltName=DNS:{name}\n")).unwrap();
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-out",
                &crt,
                "-extfile",
                ext.to_str().unwrap(),
            ],
        );
        let chain = [
            std::fs::read(dir.join(&crt)).unwrap(),
            std::fs::read(dir.join("ca.pem")).unwrap(),
        ]
        .concat();
        std::fs::write(dir.join(format!("{name}.chain")), chain).unwrap();
    }
}
