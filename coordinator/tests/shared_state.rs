//! The coordinator's shared state in PostgreSQL, as an operator points it
//! there: over TLS to a server that refuses plain connections, its
//! certificate verified (PGSSLROOTCERT); an untrusted certificate is a
//! clear error; the URL's password never shows, in errors or in --help.
#![allow(clippy::unwrap_used)]

mod common;

use common::Coord;

#[test]
fn tls_to_postgres_is_verified_and_the_password_never_shows() {
    let c = Coord::new(false);
    let (url, ca) = diskferry_testkit::postgres::tls_database(c.path());
    // The server trusts every user on loopback; the password is only there to be hidden.
    let with_password = url.replacen("diskferry@", "diskferry:s3cret-pw@", 1);
    let run = |url: &str, ca: Option<&std::path::Path>, args: &[&str]| {
        let mut cmd = c.cmd();
        cmd.env("DISKFERRY_STATE_URL", url).env_remove("PGSSLROOTCERT");
        if let Some(ca) = ca {
            cmd.env("PGSSLROOTCERT", ca);
        }
        cmd.args(args).output().unwrap()
    };
    // Not trusted: one clear error, exit 1, no password.
    let out = run(&format!("{with_password}?sslmode=require"), None, &["replica", "list"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("PGSSLROOTCERT") && err.contains("certificate"), "{err}");
    eprintln!("untrusted: {}", err.trim());
    assert!(!err.contains("s3cret-pw"), "{err}");
    // Without TLS the server refuses (its pg_hba.conf): the error is the server's.
    let out = run(&format!("{with_password}?sslmode=disable"), None, &["replica", "list"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("pg_hba.conf") && !err.contains("s3cret-pw"), "{err}");
    eprintln!("no TLS: {}", err.trim());
    // Trusted: it works, over TLS (the only way this server lets anyone in),
    // with the default sslmode (prefer) too.
    let vm = common::make_vm(c.path(), "vm1", &[("os", 1 << 20, &[(0, 4096)])]);
    let dest = format!("file:{}", c.path().display());
    for (url, args) in [
        (
            format!("{with_password}?sslmode=require"),
            vec!["replica", "create", "a", "--vm", vm.to_str().unwrap(), "--to", &dest],
        ),
        (with_password.clone(), vec!["replica", "list", "--json"]),
    ] {
        let out = run(&url, Some(&ca), &args);
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let out = run(&with_password, Some(&ca), &["replica", "list", "--json"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"a\""));
    // --help names the variable, never its value.
    let out = run(&with_password, None, &["--help"]);
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("DISKFERRY_STATE_URL") && !help.contains("s3cret-pw"), "{help}");
    // A URL that is not PostgreSQL's is bad input, said as such.
    let out = run("mysql://x@y/z", None, &["replica", "list"]);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
}
