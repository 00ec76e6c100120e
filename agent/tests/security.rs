//! What an attacker without a token cannot do to a relay receiver (issue 17):
//! stall it with idle connections. The receiver runs with 1,024 file
//! descriptors (set on its process); 2,000 connections that never send a
//! byte, then a real sync through it, which must end identical.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Read;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use diskferry_testkit::relay::{token_file, Receiver};

#[test]
fn two_thousand_idle_connections_do_not_stop_a_real_sync() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let rx = Receiver::start(d.path(), &format!("file:{}", root.display()), 0, None, &[], &[]);
    let limit = libc::rlimit { rlim_cur: 1024, rlim_max: 1024 };
    // SAFETY: prlimit reads `limit` and writes nothing (old limit: null).
    let set = unsafe { libc::prlimit(rx.child.id() as libc::pid_t, libc::RLIMIT_NOFILE, &limit, std::ptr::null_mut()) };
    assert_eq!(set, 0, "prlimit: {}", std::io::Error::last_os_error());

    let mut idle = Vec::new();
    for _ in 0..2000 {
        idle.push(TcpStream::connect(("127.0.0.1", rx.port)).unwrap());
    }
    let src = d.path().join("disk.img");
    make_image(&src, 32 * MIB, &[(0, 8 * MIB, 3), (20 * MIB, 4 * MIB, 4)]);
    let started = Instant::now();
    let out = agent()
        .args(["sync", src.to_str().unwrap(), "--to", &rx.url("d0"), "--json", "--retry-for", "90"])
        .arg("--relay-token-file")
        .arg(token_file(d.path()))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(identical(&src, &root.join("d0.vhd")));
    // The receiver's copy of the disk is its owner's alone.
    for f in ["d0.vhd", "d0.vhd.manifest"] {
        use std::os::unix::fs::PermissionsExt;
        let m = std::fs::metadata(root.join(f)).unwrap().permissions().mode() & 0o777;
        assert_eq!(m, 0o600, "{f}");
    }
    eprintln!("the sync ended {:?} after 2,000 idle connections", started.elapsed());
    // The receiver let go of them: a connection that sent nothing is closed.
    let s = &mut idle[0];
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    assert_eq!(s.read(&mut [0u8; 16]).unwrap_or(0), 0, "an idle connection is still open");
}

/// A receiver whose token file is `tokens` (mode 600): its base URL.
fn receiver_with(dir: &std::path::Path, root: &std::path::Path, tokens: &str) -> (std::process::Child, String) {
    use std::io::BufRead;
    use std::os::unix::fs::PermissionsExt;
    let file = dir.join("receiver.tokens");
    std::fs::write(&file, tokens).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut child = std::process::Command::new(diskferry_testkit::process::agent_bin())
        .args(["receive", "--listen", "127.0.0.1:0", "--root", &format!("file:{}", root.display())])
        .arg("--token-file")
        .arg(&file)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let base = line.split_whitespace().nth(2).unwrap_or_default().to_owned();
    assert!(base.starts_with("http://"), "receiver did not start: {line:?}");
    (child, base)
}

#[test]
fn a_relay_token_writes_only_its_own_disks_and_forces_only_if_allowed() {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let (web, db) = ("token-of-the-web-vm-0123456789", "token-of-the-db-vm-0123456789ab");
    let (mut rx, base) = receiver_with(d.path(), &root, &format!("{web} disks=web-*\n{db} disks=db allow=force\n"));
    let src = d.path().join("disk.img");
    make_image(&src, 8 * MIB, &[(0, 2 * MIB, 3)]);
    let sync = |token: &str, disk: &str, extra: &[&str]| {
        let t = d.path().join(format!("{disk}.{}.token", token.len()));
        std::fs::write(&t, token).unwrap();
        std::fs::set_permissions(&t, std::fs::Permissions::from_mode(0o600)).unwrap();
        agent()
            .args(["sync", src.to_str().unwrap(), "--to", &format!("relay:{base}/{disk}"), "--retry-for", "5"])
            .arg("--relay-token-file")
            .arg(&t)
            .args(extra)
            .output()
            .unwrap()
    };
    let err = |o: &std::process::Output| String::from_utf8_lossy(&o.stderr).into_owned();
    let o = sync(web, "web-os", &[]);
    assert!(o.status.success(), "{}", err(&o));
    assert!(identical(&src, &root.join("web-os.vhd")));
    // Another VM's disk: refused, and nothing written.
    let o = sync(web, "db", &[]);
    assert!(!o.status.success() && err(&o).contains("may not write disk db"), "{}", err(&o));
    assert!(!root.join("db.vhd").exists());
    // --force only with allow=force.
    let o = sync(web, "web-os", &["--force"]);
    assert!(!o.status.success() && err(&o).contains("may not pass --force"), "{}", err(&o));
    let o = sync(db, "db", &["--force"]);
    assert!(o.status.success(), "{}", err(&o));
    rx.kill().unwrap();
    rx.wait().unwrap();
}
