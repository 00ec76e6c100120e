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
        _ => start_private(),
    })
}

/// A new, empty database for one test: its URL.
pub fn database(test: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
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

fn start_private() -> String {
    let st = Command::new("bash").arg(repo().join("scripts/postgres.sh")).arg("install").status().unwrap();
    assert!(st.success(), "scripts/postgres.sh install failed");
    let out = Command::new("bash").arg(repo().join("scripts/postgres.sh")).arg("bindir").output().unwrap();
    let bin = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    remove_orphans();
    let dir = PathBuf::from(format!("/tmp/diskferry-pg-test.{}", std::process::id()));
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
        // SAFETY: prctl in the child before exec only sets a flag of the
        // child itself (after its uid change, which would clear it).
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = cmd.spawn().expect("postgres did not start");
        tx.send(()).unwrap();
        let _ = child.wait();
    });
    rx.recv().unwrap();
    let url = format!("postgres://diskferry@127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ok = Command::new("psql")
            .args([&format!("{url}/postgres"), "-qAtc", "SELECT 1"])
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
        let Some(pid) = name.strip_prefix("diskferry-pg-test.") else { continue };
        if !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}
