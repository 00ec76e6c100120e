//! Bad input gets one line on stderr, a documented exit code, and leaves
//! nothing half-created.
#![allow(clippy::unwrap_used)]

mod common;

use common::{make_vm, Coord};

const MIB: u64 = 1 << 20;

/// Run, expect exit `code`, return the one stderr line.
fn fails(c: &Coord, args: &[&str], code: i32) -> String {
    let out = c.run(args);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{args:?}: one line expected, got {err:?}");
    assert!(lines[0].starts_with("error: "), "{err}");
    lines[0].to_owned()
}

fn no_replicas(c: &Coord) {
    assert_eq!(c.json(&["replica", "list", "--json"]), serde_json::json!([]));
}

fn file_dest(c: &Coord) -> String {
    let d = c.path().join("dest");
    std::fs::create_dir_all(&d).unwrap();
    format!("file:{}", d.display())
}

#[test]
fn unknown_replica() {
    let c = Coord::new(false);
    for cmd in
        [&["run", "ghost", "--quiet"][..], &["runs", "ghost"], &["points", "ghost"], &["replica", "show", "ghost"]]
    {
        let e = fails(&c, cmd, 2);
        assert!(e.contains("no replica named \"ghost\""), "{e}");
    }
}

#[test]
fn malformed_vm_toml_and_missing_disks() {
    let c = Coord::new(false);
    let dest = file_dest(&c);
    let vm = c.path().join("vm");
    std::fs::create_dir(&vm).unwrap();
    std::fs::write(vm.join("vm.toml"), "name = \"x\"\n[[disks]]\nname = \"os\"\npath = 7\n").unwrap();
    let e = fails(&c, &["replica", "create", "r", "--vm", vm.to_str().unwrap(), "--to", &dest], 2);
    assert!(e.contains("vm.toml"), "{e}");
    std::fs::write(vm.join("vm.toml"), "name = \"x\"\n[[disks]]\nname = \"os\"\npath = \"nothere.img\"\n").unwrap();
    let e = fails(&c, &["replica", "create", "r", "--vm", vm.to_str().unwrap(), "--to", &dest], 2);
    assert!(e.contains("disk os") && e.contains("nothere.img"), "{e}");
    let e = fails(&c, &["replica", "create", "r", "--vm", c.path().join("novm").to_str().unwrap(), "--to", &dest], 2);
    assert!(e.contains("novm"), "{e}");
    no_replicas(&c);
}

#[test]
fn disk_vanishes_after_create() {
    let c = Coord::new(false);
    let dest = file_dest(&c);
    let vm = make_vm(c.path(), "v1", &[("os", 8 * MIB, &[(0, MIB)])]);
    c.json(&["replica", "create", "r", "--vm", vm.to_str().unwrap(), "--to", &dest, "--json"]);
    std::fs::rename(vm.join("os.img"), c.path().join("os.img")).unwrap();
    // The first run's preflight finds it, before anything is made.
    let e = fails(&c, &["run", "r", "--quiet"], 1);
    assert!(e.contains("preflight: source of r") && e.contains("os.img"), "{e}");
    assert!(c.leftovers().1.is_empty());
    // A later run (no preflight) fails reading the VM.
    std::fs::rename(c.path().join("os.img"), vm.join("os.img")).unwrap();
    c.json(&["run", "r", "--json"]);
    std::fs::remove_file(vm.join("os.img")).unwrap();
    let e = fails(&c, &["run", "r", "--quiet"], 1);
    assert!(e.contains("read-vm") && e.contains("os.img"), "{e}");
    let (runs, snaps) = c.leftovers();
    // The successful run's snapshot is kept for the next diff.
    let kept: Vec<_> = snaps.iter().filter(|p| p.is_file()).collect();
    assert!(runs.is_empty() && kept.len() == 1, "{runs:?} {snaps:?}");
    let h = c.json(&["runs", "r", "--json"]);
    assert_eq!(h[0]["run"]["status"], "failed");
}

#[test]
fn unreachable_destination_fails_before_any_snapshot() {
    let c = Coord::new(false);
    let port = common::azurite::free_port();
    let dest = format!("pageblob:http://127.0.0.1:{port}/devstoreaccount1/dr");
    let vm = make_vm(c.path(), "v2", &[("os", 8 * MIB, &[(0, MIB)])]);
    c.json(&["replica", "create", "r", "--vm", vm.to_str().unwrap(), "--to", &dest, "--json"]);
    let e = fails(&c, &["run", "r", "--quiet"], 1);
    assert!(e.contains("unreachable"), "{e}");
    let (runs, snaps) = c.leftovers();
    assert!(runs.is_empty() && snaps.is_empty(), "{runs:?} {snaps:?}");
}

/// The coordinator keeps no secret: a SAS in a destination is refused (it
/// would land in the state database and in every worker's job), and the
/// state folder never holds the storage key the agent gets from the environment.
#[test]
fn no_secret_reaches_the_coordinator_state() {
    let c = Coord::new(true);
    let vm = make_vm(c.path(), "v4", &[("os", 8 * MIB, &[(0, MIB)])]);
    let dest = c.container("nosecret");
    let e = fails(
        &c,
        &[
            "replica",
            "create",
            "r",
            "--vm",
            vm.to_str().unwrap(),
            "--to",
            &format!("{dest}?sv=2020-12-06&sig=TOPSECRET"),
        ],
        2,
    );
    assert!(e.contains("carries a SAS") && !e.contains("TOPSECRET"), "{e}");
    no_replicas(&c);
    c.json(&["replica", "create", "r", "--vm", vm.to_str().unwrap(), "--to", &dest, "--json"]);
    // Keep the worker's job and status around to inspect them: pause after the sync.
    let mut paused = c.start_paused(&["run", "r"], "after-sync");
    let key = common::azurite::KEY;
    let mut seen = 0;
    for f in common::walk(&c.state) {
        if f.is_file() {
            let bytes = std::fs::read(&f).unwrap();
            let text = String::from_utf8_lossy(&bytes);
            assert!(
                !text.contains(key) && !text.contains("AccountKey") && !text.contains("sig="),
                "{} holds a secret",
                f.display()
            );
            seen += 1;
        }
    }
    assert!(seen >= 3, "state db, job and status inspected ({seen} files)");
    common::kill(&mut paused);
    c.json(&["gc", "--json"]);
}

#[test]
fn bad_schedule_destination_name_and_config() {
    let c = Coord::new(false);
    let dest = file_dest(&c);
    let vm = make_vm(c.path(), "v3", &[("os", 8 * MIB, &[(0, MIB)])]);
    let vm = vm.to_str().unwrap();
    let e = fails(&c, &["replica", "create", "r", "--vm", vm, "--to", &dest, "--schedule", "every day"], 2);
    assert!(e.contains("schedule") && e.contains("cron"), "{e}");
    let e = fails(&c, &["replica", "create", "r", "--vm", vm, "--to", "s3://bucket"], 2);
    assert!(e.contains("pageblob:") && e.contains("file:"), "{e}");
    let e = fails(&c, &["replica", "create", "r", "--vm", vm, "--to", "file:/no/such/folder"], 2);
    assert!(e.contains("no such folder"), "{e}");
    let e = fails(&c, &["replica", "create", "bad name", "--vm", vm, "--to", &dest], 2);
    assert!(e.contains("replica name"), "{e}");
    let e = fails(&c, &["replica", "create", "r", "--vm", vm, "--to", &dest, "--chunk-size", "3MiB"], 2);
    assert!(e.contains("chunk size"), "{e}");
    no_replicas(&c);
    c.json(&["replica", "create", "r", "--vm", vm, "--to", &dest, "--json"]);
    let e = fails(&c, &["replica", "create", "r", "--vm", vm, "--to", &dest], 2);
    assert!(e.contains("already exists"), "{e}");

    std::fs::write(&c.config, "[storage]\nconcurrancy = 4\n").unwrap();
    let e = fails(&c, &["replica", "list"], 2);
    assert!(e.contains("concurrancy"), "{e}");
}

#[test]
fn a_broken_state_database_is_a_failure_not_bad_input() {
    // The replica exists; its table is unreadable: the database's error is the
    // coordinator's failure (exit 1), never the user's bad input (exit 2).
    let c = Coord::new(false);
    let dest = file_dest(&c);
    let vm = make_vm(c.path(), "vm1", &[("os", 4 * MIB, &[(0, MIB)])]);
    let out = c.run(&["replica", "create", "r1", "--vm", vm.to_str().unwrap(), "--to", &dest]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    c.sql("ALTER TABLE replicas RENAME TO replicas_lost");
    for cmd in [&["replica", "show", "r1"][..], &["run", "r1", "--quiet"], &["points", "r1"]] {
        let e = fails(&c, cmd, 1);
        assert!(e.contains("replicas"), "{cmd:?}: {e}");
    }
}
