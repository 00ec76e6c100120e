//! The run lifecycle end to end on the `local` provider: real snapshot
//! files, real agent worker processes, real Azurite page blobs, imports
//! checked with qemu-img.
#![allow(clippy::unwrap_used)]

mod common;

use common::{identical, make_vm, poke, Coord};

const MIB: u64 = 1 << 20;

fn disk_of<'a>(run: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    run["disks"].as_array().unwrap().iter().find(|d| d["disk"] == name).unwrap()
}

#[test]
fn replicate_change_replicate_import_on_azurite() {
    let c = Coord::new(true);
    let os_extents: &[(u64, u64)] = &[(0, MIB), (5 * MIB, 3 * MIB), (40 * MIB, 2 * MIB)];
    let data_extents: &[(u64, u64)] = &[(2 * MIB, MIB), (20 * MIB, 4 * MIB)];
    let vm = make_vm(c.path(), "web1", &[("os", 64 * MIB, os_extents), ("data", 32 * MIB, data_extents)]);
    let dest = c.container("e2e");
    c.json(&["replica", "create", "web", "--vm", vm.to_str().unwrap(), "--to", &dest, "--json"]);

    let first = c.json(&["run", "web", "--json"]);
    assert_eq!(first["run"]["status"], "succeeded", "{first}");
    let os = disk_of(&first, "os");
    assert_eq!((os["generation"].as_u64(), os["full_sync"].as_bool()), (Some(1), Some(true)));
    // Only the non-zero chunks travel (plus the 512-byte footer).
    assert_eq!(os["bytes_sent"].as_u64().unwrap(), 6 * MIB + 512);
    assert_eq!(disk_of(&first, "data")["bytes_sent"].as_u64().unwrap(), 5 * MIB + 512);

    // Change two chunks of os, one of data; zero one chunk of os.
    poke(&vm.join("os.img"), 10 * MIB, 4096, 91);
    poke(&vm.join("os.img"), 41 * MIB + 7, 100, 92);
    poke(&vm.join("data.img"), 30 * MIB, MIB, 93);
    std::fs::OpenOptions::new()
        .write(true)
        .open(vm.join("os.img"))
        .and_then(|f| {
            use std::os::unix::fs::FileExt;
            f.write_all_at(&vec![0u8; MIB as usize], 0)
        })
        .unwrap();
    let second = c.json(&["run", "web", "--json"]);
    assert_eq!(second["run"]["status"], "succeeded", "{second}");
    let os = disk_of(&second, "os");
    assert_eq!((os["generation"].as_u64(), os["full_sync"].as_bool()), (Some(2), Some(false)));
    // Only the changed chunks: the footer of generation 1 stays in place.
    assert_eq!(os["bytes_sent"].as_u64().unwrap(), 2 * MIB, "only the two changed chunks of os");
    assert_eq!(disk_of(&second, "data")["bytes_sent"].as_u64().unwrap(), MIB);

    // Recovery points per disk, from the destination.
    let points = c.json(&["points", "web", "--json"]);
    let gens: Vec<u64> = points["os"].as_array().unwrap().iter().map(|p| p["generation"].as_u64().unwrap()).collect();
    assert_eq!(gens, vec![1, 2]);

    // Import the newest point: equal to the source as of the second run and
    // to the snapshot that run kept.
    let out = c.path().join("import");
    std::fs::create_dir(&out).unwrap();
    c.json(&["import", "web", "--to", out.to_str().unwrap(), "--json"]);
    assert!(identical(&vm.join("os.img"), &out.join("os.vhd")));
    assert!(identical(&vm.join("data.img"), &out.join("data.vhd")));
    let show = c.json(&["replica", "show", "web", "--json"]);
    let snaps = show["snapshots"].as_array().unwrap();
    assert_eq!(snaps.len(), 2, "one retained snapshot per disk: {show}");
    for s in snaps {
        assert_eq!(s["run_id"], second["run"]["id"]);
        let disk = s["disk"].as_str().unwrap();
        assert!(identical(std::path::Path::new(s["name"].as_str().unwrap()), &out.join(format!("{disk}.vhd"))));
    }
    // Import of the first point equals the first state? Check it differs from now.
    let old = c.path().join("old");
    std::fs::create_dir(&old).unwrap();
    c.json(&["import", "web", "--point", "1", "--to", old.to_str().unwrap(), "--json"]);
    assert!(!identical(&vm.join("os.img"), &old.join("os.vhd")));

    // Nothing temporary is left: no worker folder, no agent, only the kept snapshots.
    let (runs, snapshots) = c.leftovers();
    assert!(runs.is_empty(), "{runs:?}");
    assert_eq!(snapshots.iter().filter(|p| p.is_file()).count(), 2, "{snapshots:?}");
    assert!(c.agents().is_empty());
    let history = c.json(&["runs", "web", "--json"]);
    assert_eq!(history.as_array().unwrap().len(), 2);
}

#[test]
fn loop_devices_as_temp_disks_to_a_file_destination() {
    if !common::can_loop() {
        eprintln!("skipped: needs root and losetup");
        return;
    }
    let c = Coord::new(false);
    let vm = make_vm(c.path(), "db1", &[("os", 16 * MIB, &[(MIB, 2 * MIB)])]);
    let dest = c.path().join("dest");
    std::fs::create_dir(&dest).unwrap();
    c.json(&[
        "replica",
        "create",
        "db",
        "--vm",
        vm.to_str().unwrap(),
        "--to",
        &format!("file:{}", dest.display()),
        "--json",
    ]);
    let r = c.json(&["--loop", "run", "db", "--json"]);
    assert_eq!(r["run"]["status"], "succeeded", "{r}");
    poke(&vm.join("os.img"), 9 * MIB, 10, 5);
    let r = c.json(&["--loop", "run", "db", "--json"]);
    assert_eq!(disk_of(&r, "os")["bytes_sent"].as_u64().unwrap(), MIB);
    assert!(identical(&vm.join("os.img"), &dest.join("db/os.vhd")));
    assert!(c.loops().is_empty(), "loop devices left: {:?}", c.loops());
}

#[test]
fn two_replicas_at_once_do_not_interfere() {
    let c = Coord::new(true);
    let a = make_vm(c.path(), "vma", &[("os", 48 * MIB, &[(0, 8 * MIB)])]);
    let b = make_vm(c.path(), "vmb", &[("os", 40 * MIB, &[(4 * MIB, 8 * MIB), (30 * MIB, MIB)])]);
    let dest = c.container("two");
    c.json(&["replica", "create", "ra", "--vm", a.to_str().unwrap(), "--to", &dest, "--json"]);
    c.json(&["replica", "create", "rb", "--vm", b.to_str().unwrap(), "--to", &dest, "--json"]);
    let ha = c.cmd().args(["run", "ra", "--json"]).output();
    let pb = c.cmd().args(["run", "rb", "--json"]).stdout(std::process::Stdio::piped()).spawn().unwrap();
    let (oa, ob) = (ha.unwrap(), pb.wait_with_output().unwrap());
    assert!(oa.status.success() && ob.status.success(), "{}", String::from_utf8_lossy(&oa.stderr));
    let out = c.path().join("imp");
    for (r, vm) in [("ra", &a), ("rb", &b)] {
        let dir = out.join(r);
        std::fs::create_dir_all(&dir).unwrap();
        c.json(&["import", r, "--to", dir.to_str().unwrap(), "--json"]);
        assert!(identical(&vm.join("os.img"), &dir.join("os.vhd")), "{r}");
    }
    // A run of a replica that is already running is refused (exit 3).
    let mut paused = c.start_paused(&["run", "ra"], "after-snapshot");
    let busy = c.run(&["run", "ra"]);
    assert_eq!(busy.status.code(), Some(3), "{}", String::from_utf8_lossy(&busy.stderr));
    assert!(String::from_utf8_lossy(&busy.stderr).contains("already running"));
    common::kill(&mut paused);
    c.json(&["gc", "--json"]);
}

#[test]
fn migrate_in_one_command_then_delete_the_replica() {
    let c = Coord::new(false);
    let vm = make_vm(c.path(), "legacy1", &[("os", 24 * MIB, &[(MIB, 3 * MIB)]), ("data", 8 * MIB, &[(0, MIB)])]);
    let dest = c.path().join("dest");
    let out = c.path().join("out");
    std::fs::create_dir(&dest).unwrap();
    std::fs::create_dir(&out).unwrap();
    let to = format!("file:{}", dest.display());
    let imported =
        c.json(&["migrate", "--vm", vm.to_str().unwrap(), "--to", &to, "--import-to", out.to_str().unwrap(), "--json"]);
    assert_eq!(imported["run"]["status"], "succeeded", "{imported}");
    assert_eq!(imported["imported"].as_array().unwrap().len(), 2, "{imported}");
    assert!(identical(&vm.join("os.img"), &out.join("os.vhd")));
    assert!(identical(&vm.join("data.img"), &out.join("data.vhd")));
    let list = c.json(&["replica", "list", "--json"]);
    assert_eq!(list[0]["name"], "migrate-legacy1");

    // Deleting the replica removes its history and retained snapshots, not the destination's data.
    let out = c.run(&["replica", "delete", "migrate-legacy1"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(c.json(&["replica", "list", "--json"]), serde_json::json!([]));
    let (_, snaps) = c.leftovers();
    assert!(snaps.iter().all(|p| p.is_dir()), "{snaps:?}");
    assert!(dest.join("migrate-legacy1/os.vhd").is_file());
}

#[test]
fn one_replica_two_destinations() {
    let c = Coord::new(true);
    let vm = make_vm(c.path(), "img1", &[("os", 32 * MIB, &[(0, 2 * MIB), (17 * MIB, MIB)])]);
    let files = c.path().join("dest");
    std::fs::create_dir(&files).unwrap();
    let to_file = format!("file:{}", files.display());
    let to_blob = c.container("two-dest");
    c.json(&["replica", "create", "img", "--vm", vm.to_str().unwrap(), "--to", &to_blob, "--to", &to_file, "--json"]);
    let first = c.json(&["run", "img", "--json"]);
    assert_eq!(first["run"]["status"], "succeeded", "{first}");
    let rows = first["disks"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "one row per destination: {first}");
    // The disk was read once: the run's bytes read are one disk's data, not two.
    assert_eq!(first["run"]["bytes_read"].as_u64().unwrap(), 3 * MIB);
    assert_eq!(first["run"]["bytes_sent"].as_u64().unwrap(), 2 * (3 * MIB) + 512, "both destinations got the data");
    poke(&vm.join("os.img"), 30 * MIB, 10, 4);
    let second = c.json(&["run", "img", "--json"]);
    for d in second["disks"].as_array().unwrap() {
        assert_eq!((d["generation"].as_u64(), d["full_sync"].as_bool()), (Some(2), Some(false)), "{d}");
    }
    for n in ["1", "2"] {
        let out = c.path().join(format!("import{n}"));
        std::fs::create_dir(&out).unwrap();
        c.json(&["import", "img", "--dest", n, "--to", out.to_str().unwrap(), "--json"]);
        assert!(identical(&vm.join("os.img"), &out.join("os.vhd")), "destination {n}");
    }
    let out = c.run(&["points", "img", "--dest", "3"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_replica_through_a_relay_receiver() {
    use std::io::BufRead;
    let c = Coord::new(false);
    let vm = make_vm(c.path(), "app", &[("os", 48 * MIB, &[(0, 2 * MIB), (30 * MIB, MIB)])]);
    let root = c.path().join("region-b");
    std::fs::create_dir(&root).unwrap();
    let token = "relay-token-for-the-coordinator-test";
    let tfile = c.path().join("relay.token");
    std::fs::write(&tfile, token).unwrap();
    // The receiver refuses a token file others may read.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&tfile, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut rx = std::process::Command::new(common::agent_bin())
        .args(["receive", "--listen", "127.0.0.1:0", "--root"])
        .arg(format!("file:{}", root.display()))
        .arg("--token-file")
        .arg(&tfile)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(rx.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let base = line.split_whitespace().nth(2).unwrap().to_owned();
    let run = |args: &[&str]| c.cmd().env("DISKFERRY_RELAY_TOKEN", token).args(args).output().unwrap();
    let ok = |args: &[&str]| {
        let o = run(args);
        assert!(o.status.success(), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()
    };
    ok(&["replica", "create", "app", "--vm", vm.to_str().unwrap(), "--to", &format!("relay:{base}"), "--json"]);
    let first = ok(&["run", "app", "--json"]);
    assert_eq!(first["run"]["status"], "succeeded", "{first}");
    assert!(identical(&vm.join("os.img"), &root.join("app.os.vhd")));
    poke(&vm.join("os.img"), 31 * MIB, 4096, 5);
    let second = ok(&["run", "app", "--json"]);
    let os = disk_of(&second, "os");
    assert_eq!((os["generation"].as_u64(), os["full_sync"].as_bool()), (Some(2), Some(false)), "{second}");
    assert!(identical(&vm.join("os.img"), &root.join("app.os.vhd")));
    // Its recovery points live at the receiver: said plainly, nothing done.
    let o = run(&["points", "app"]);
    assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("is a relay"));
    // Without the token in the worker's environment the run fails, and says why.
    let o = c.cmd().env_remove("DISKFERRY_RELAY_TOKEN").args(["run", "app", "--json"]).output().unwrap();
    assert!(!o.status.success());
    assert!(!String::from_utf8_lossy(&o.stdout).contains(token));
    let _ = rx.kill();
    let _ = rx.wait();
}
