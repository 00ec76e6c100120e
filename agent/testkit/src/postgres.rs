//! A real PostgreSQL for the coordinator's shared-state tests: the server
//! named by `DISKFERRY_TEST_POSTGRES` (`scripts/test.sh` starts one cluster
//! for the whole run with `scripts/postgres.sh start`), else a private
//! cluster for this test process: `initdb` in `/tmp/diskferry-pg-test.PID`,
//! `postgres` on a free loopback port, killed when the process exits
//! (PR_SET_PDEATHSIG), its folder removed by the next process that finds
//! it orphaned. Each test gets a database of its own.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, OnceLock};
use std::time::{Duration, Instant};

use crate::process::free_port;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The server, `postgres://diskferry@127.0.0.1:PORT` (no database).
pub fn server() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| match std::env::var("DISKFERRY_TEST_POSTGRES") {
        Ok(url) if !url.is_empty() => url.trim_end_matches('/').to_owned(),
        _ => start_private("", None),
    })
}

/// A second private server that speaks TLS only (plain connections are
/// refused by its pg_hba.conf), with a self-signed certificate for
/// 127.0.0.1: (a database's URL, the certificate's PEM file).
pub fn tls_database(dir: &Path) -> (String, PathBuf) {
    static URL: OnceLock<(String, PathBuf)> = OnceLock::new();
    let (server, ca) = URL.get_or_init(|| {
        let (cert, key) = crate::relay::self_signed(dir);
        let keep = PathBuf::from(format!("/tmp/diskferry-pg-test.{}-ca.pem", std::process::id()));
        std::fs::copy(&cert, &keep).unwrap();
        (start_private("-tls", Some((&cert, &key))), keep)
    });
    let name = format!("df_tls_{}", N.fetch_add(1, Ordering::Relaxed));
    let out = Command::new("psql")
        .args([&format!("{server}/postgres?sslmode=require"), "-v", "ON_ERROR_STOP=1", "-qAtc"])
        .arg(format!("CREATE DATABASE {name}"))
        .output()
        .unwrap();
    assert!(out.status.success(), "psql: {}", String::from_utf8_lossy(&out.stderr));
    (format!("{server}/{name}"), ca.clone())
}

static N: AtomicUsize = AtomicUsize::new(0);

/// A new, empty database for one test: its URL.
pub fn database(test: &str) -> String {
    let clean: String =
        test.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' }).take(30).collect();
    let name = format!("df_{clean}_{}_{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
    psql(&format!("CREATE DATABASE {name}"));
    format!("{}/{name}", server())
}

/// Run one statement on the server's `postgres` database.
pub fn psql(sql: &str) {
    let out = Command::new("psql")
        .args([&format!("{}/postgres", server()), "-v", "ON_ERROR_STOP=1", "-qAtc", sql])
        .output()
        .expect("psql not found (scripts/postgres.sh install)");
    assert!(out.status.success(), "psql {sql:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Run `sql` on database `url`; its output, one row a line.
pub fn query(url: &str, sql: &str) -> String {
    let out = Command::new("psql").args([url, "-v", "ON_ERROR_STOP=1", "-qAtc", sql]).output().expect("psql");
    assert!(out.status.success(), "psql {sql:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// (uid, gid) of the `postgres` user when running as root: initdb and the
/// server refuse root.
fn run_as() -> Option<(u32, u32)> {
    // SAFETY: geteuid has no preconditions and touches no memory.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    let line = passwd.lines().find(|l| l.starts_with("postgres:")).expect("no postgres user (install postgresql)");
    let f: Vec<&str> = line.split(':').collect();
    Some((f[2].parse().unwrap(), f[3].parse().unwrap()))
}

fn as_pg(cmd: &mut Command) -> &mut Command {
    if let Some((uid, gid)) = run_as() {
        cmd.uid(uid).gid(gid);
    }
    cmd
}

/// A private cluster for this process (`suffix` tells two apart), with
/// TLS only when given a (certificate, key).
fn start_private(suffix: &str, tls: Option<(&Path, &Path)>) -> String {
    let st = Command::new("bash").arg(repo().join("scripts/postgres.sh")).arg("install").status().unwrap();
    assert!(st.success(), "scripts/postgres.sh install failed");
    let out = Command::new("bash").arg(repo().join("scripts/postgres.sh")).arg("bindir").output().unwrap();
    let bin = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    remove_orphans();
    let dir = PathBuf::from(format!("/tmp/diskferry-pg-test.{}{suffix}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    if let Some((uid, gid)) = run_as() {
        std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).unwrap();
    }
    let data = dir.join("data");
    let out = as_pg(Command::new(bin.join("initdb")).arg("-D").arg(&data))
        .args(["-U", "diskferry", "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync"])
        .output()
        .unwrap();
    assert!(out.status.success(), "initdb: {}", String::from_utf8_lossy(&out.stderr));
    if let Some((cert, key)) = tls {
        let (c, k) = (data.join("server.crt"), data.join("server.key"));
        std::fs::copy(cert, &c).unwrap();
        std::fs::copy(key, &k).unwrap();
        std::fs::set_permissions(&k, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        if let Some((uid, gid)) = run_as() {
            for f in [&c, &k] {
                std::os::unix::fs::chown(f, Some(uid), Some(gid)).unwrap();
            }
        }
        let conf = data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf).unwrap();
        text.push_str("\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n");
        std::fs::write(&conf, text).unwrap();
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostnossl all all 127.0.0.1/32 reject\n",
        )
        .unwrap();
    }
    let port = free_port();
    let (tx, rx) = mpsc::channel();
    let (bin2, dir2) = (bin.clone(), dir.clone());
    // The server dies with the thread that started it: this one lives as
    // long as the process.
    std::thread::spawn(move || {
        let mut cmd = Command::new(bin2.join("postgres"));
        as_pg(&mut cmd).arg("-D").arg(dir2.join("data")).args(["-h", "127.0.0.1", "-p", &port.to_string(), "-k"]);
        cmd.arg(&dir2)
            .args(["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"])
            .args(["-c", "max_connections=300"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        crate::process::die_with_parent(&mut cmd);
        let mut child = cmd.spawn().expect("postgres did not start");
        tx.send(()).unwrap();
        let _ = child.wait();
    });
    rx.recv().unwrap();
    let url = format!("postgres://diskferry@127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let probe = if tls.is_some() { format!("{url}/postgres?sslmode=require") } else { format!("{url}/postgres") };
    loop {
        let ok = Command::new("psql")
            .args([&probe, "-qAtc", "SELECT 1"])
            .stderr(Stdio::null())
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return url;
        }
        assert!(Instant::now() < deadline, "postgres did not start in {}", dir.display());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Remove the clusters of test processes that are gone.
fn remove_orphans() {
    let Ok(entries) = std::fs::read_dir("/tmp") else { return };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix("diskferry-pg-test.") else { continue };
        let pid: String = rest.chars().take_while(char::is_ascii_digit).collect();
        if !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(e.path());
            let _ = std::fs::remove_file(e.path());
        }
    }
}
