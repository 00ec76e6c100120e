//! Replicas whose disks are consistent with each other without stopping the
//! source (issue 18, item 1): one VM restore point a run, through the ARM
//! simulator's restore points (the spec's examples as answers, its rules:
//! `armsim/restore_points.rs`), the data plane on Azurite, a real agent.
//!
//! The simulator's guest writes every disk of its VM together between two
//! per-disk snapshot requests (a database's data and log); a restore point
//! copies all disks at once. So the first 8 bytes of each disk of a
//! recovery point tell whether its disks are from one instant.
#![allow(clippy::unwrap_used)]

mod common;

use common::armsim;
use common::azure::*;
use common::poke;
use serde_json::Value;

/// The guest's counter at the start of each disk of `replica`'s newest
/// point: (os, lun0).
fn counters(f: &Fixture, replica: &str) -> (u64, u64) {
    let out = f.coord.path().join(format!("import-{}", rand_suffix()));
    std::fs::create_dir_all(&out).unwrap();
    let o = f.cmd(&["import", replica, "--to", out.to_str().unwrap()]);
    assert!(o.status.success(), "import: {}", String::from_utf8_lossy(&o.stderr));
    let head = |disk: &str| {
        let b = std::fs::read(out.join(format!("{disk}.vhd"))).unwrap();
        u64::from_le_bytes(b[..8].try_into().unwrap())
    };
    let got = (head("os"), head("lun0"));
    std::fs::remove_dir_all(&out).unwrap();
    got
}

/// What each recovery point of a disk says it holds, read by the agent from
/// the destination alone.
fn own_record(f: &Fixture, replica: &str, disk: &str) -> Vec<String> {
    let target = format!("{}/{replica}/{disk}.vhd", f.dest);
    let out = std::process::Command::new(common::agent_bin())
        .env("AZURE_STORAGE_CONNECTION_STRING", common::azurite::connection_string())
        .args(["points", &target, "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let pts: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    pts.iter().map(|p| p["consistency"].as_str().unwrap_or("-").to_owned()).collect()
}

fn collection(replica: &str) -> String {
    format!("{}/providers/Microsoft.Compute/restorePointCollections/df-rpc-{replica}", armsim::rg_path(WORK))
}

/// The restore points in a replica's collection, by name.
fn points(f: &Fixture, replica: &str) -> Vec<String> {
    let prefix = format!("{}/restorepoints/", collection(replica).to_ascii_lowercase());
    f.sim.with(|s| {
        s.resources
            .iter()
            .filter(|(k, _)| k.starts_with(&prefix) && !k[prefix.len()..].contains('/'))
            .map(|(_, v)| v["name"].as_str().unwrap().to_owned())
            .collect()
    })
}

fn run(f: &Fixture, replica: &str) -> (Value, String) {
    let out = f.cmd(&["run", replica, "--json"]);
    no_secret(&out);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{stderr}"));
    (v, stderr)
}

#[test]
fn crash_consistency_takes_every_disk_at_one_instant_and_per_disk_does_not() {
    let f = Fixture::new("rp-crash");
    f.set("restore_point_crash_secs", "0");
    f.sim.with(|s| {
        s.guest_writes = true;
        s.restore_point_every = [0, 0];
    });
    f.create("db", &["--consistency", "crash"]);
    f.create("pd", &["--consistency", "per-disk"]);

    // Per-disk: the guest wrote between the two snapshots.
    let (r, _) = run(&f, "pd");
    assert_eq!((r["run"]["status"].as_str(), r["run"]["consistency"].as_str()), (Some("succeeded"), Some("per-disk")));
    let (os, data) = counters(&f, "pd");
    assert_ne!(os, data, "per-disk snapshots are at two instants here");

    // Crash: one restore point, every disk at one instant.
    let (r, stderr) = run(&f, "db");
    assert_eq!(r["run"]["status"], "succeeded", "{r} {stderr}");
    assert_eq!(r["run"]["consistency"], "crash", "{r}");
    assert!(r["run"]["consistency_note"].is_null(), "{r}");
    let (os, data) = counters(&f, "db");
    assert_eq!(os, data, "a restore point holds both disks at one instant");
    assert_eq!(os, f.sim.with(|s| s.guest_counter), "and it is the guest's last write");
    f.import_and_compare("db");
    // Asked for by name, as the spec allows; the worker's disks restored
    // from its disk restore points.
    let asked = f.bodies("/restorePoints/df-");
    assert_eq!(asked.len(), 1);
    assert_eq!(asked[0]["properties"]["consistencyMode"], "CrashConsistent");
    let vm = f.bodies("/virtualMachines/df-").pop().unwrap();
    for d in vm["properties"]["storageProfile"]["dataDisks"].as_array().unwrap() {
        assert_eq!(d["createOption"], "Restore", "{d}");
        assert!(d["sourceResource"]["id"].as_str().unwrap().contains("/diskRestorePoints/"), "{d}");
    }
    let first = points(&f, "db");
    assert_eq!(first.len(), 1);
    let c = f.sim.resource(&collection("db")).unwrap();
    assert_eq!(c["tags"]["diskferry-retained"], first[0].as_str(), "the kept point is named on its collection");
    assert_eq!(c["tags"]["diskferry-replica"], "db");
    let pts = f.json(&["points", "db", "--json"]);
    assert_eq!(pts["os"][0]["consistency"], "crash", "{pts}");
    // The recovery point itself says so (its snapshot's metadata), for a
    // coordinator that no longer has its database.
    assert_eq!(own_record(&f, "db", "lun0"), ["crash"]);
    assert_eq!(own_record(&f, "pd", "os"), ["per-disk"]);

    // The next run is incremental: the diff of two disk restore points
    // hints the worker, the older point goes.
    f.sim.with(|s| s.guest_writes = false);
    poke(&f.data, 0, 64 * 1024, 77);
    let (r, stderr) = run(&f, "db");
    assert_eq!(r["run"]["status"], "succeeded", "{r} {stderr}");
    for d in r["disks"].as_array().unwrap() {
        assert_eq!(d["full_sync"], false, "{d}");
        assert!(d["bytes_read"].as_u64().unwrap() <= MIB, "only the changed chunk is read: {d}");
    }
    let second = points(&f, "db");
    assert_eq!(second.len(), 1, "{second:?}");
    assert_ne!(second, first);
    assert_eq!(f.sim.with(|s| s.grants.len()), 0, "read access is revoked");
    f.import_and_compare("db");
    // Nothing else of db's is left: no worker, no disk, no snapshot.
    let left: Vec<String> =
        f.leftovers().into_iter().filter(|n| !n.starts_with("Microsoft.Compute/snapshots/")).collect();
    let kept = format!("Microsoft.Compute/restorePointCollections/restorePoints/{}", second[0]);
    assert_eq!(left, ["Microsoft.Compute/restorePointCollections/df-rpc-db", kept.as_str()], "{left:?}");
}

#[test]
fn an_application_consistent_point_that_fails_falls_back_to_crash_and_says_why() {
    let f = Fixture::new("rp-app");
    f.set("restore_point_application_secs", "0");
    f.set("restore_point_crash_secs", "0");
    f.sim.with(|s| s.restore_point_every = [0, 0]);
    f.create("db", &["--consistency", "application"]);
    // Without the VM agent, preflight says application consistency cannot
    // be had, and the first run (which runs preflight) stops there.
    f.sim.with(|s| s.no_vm_agent = true);
    let (r, _) = run(&f, "db");
    assert_eq!(r["run"]["status"], "failed", "{r}");
    assert!(r["run"]["error"].as_str().unwrap().contains("application consistency of db"), "{r}");
    // With the VM agent there, a Linux guest without pre/post scripts
    // gets a file-system-consistent point, and the run records that.
    f.sim.with(|s| s.no_vm_agent = false);
    let (r, stderr) = run(&f, "db");
    assert_eq!(r["run"]["status"], "succeeded", "{r} {stderr}");
    assert_eq!((r["run"]["consistency"].as_str(), r["run"]["consistency_note"].as_str()), (Some("filesystem"), None));
    // The agent stops answering: the next application-consistent point
    // fails, is deleted, and a crash-consistent one is taken; the run says why.
    f.sim.with(|s| s.no_vm_agent = true);
    let (r, stderr) = run(&f, "db");
    assert_eq!(r["run"]["status"], "succeeded", "{r} {stderr}");
    assert_eq!(r["run"]["consistency"], "crash", "{r}");
    let note = r["run"]["consistency_note"].as_str().unwrap();
    assert!(note.contains("application-consistent") && note.contains("VMAgentStatusCommunicationError"), "{note}");
    assert!(stderr.contains("VMAgentStatusCommunicationError"), "the run says so: {stderr}");
    // Asked for without a mode (the service's default), then by name.
    let modes: Vec<Value> =
        f.bodies("/restorePoints/df-").iter().map(|b| b["properties"]["consistencyMode"].clone()).collect();
    assert_eq!(modes, [Value::Null, Value::Null, "CrashConsistent".into()]);
    assert_eq!(points(&f, "db").len(), 1, "the failed point is gone, the older one replaced");
    f.import_and_compare("db");
    let pts = f.json(&["points", "db", "--json"]);
    let got: Vec<&str> = pts["os"].as_array().unwrap().iter().map(|p| p["consistency"].as_str().unwrap()).collect();
    assert_eq!(got, ["filesystem", "crash"], "{pts}");
    assert_eq!(own_record(&f, "db", "os"), ["filesystem", "crash"]);
}

#[test]
fn a_restore_point_sooner_than_azure_allows_is_per_disk_snapshots_and_says_so() {
    let f = Fixture::new("rp-often");
    // Azure's hour between crash-consistent points, here and in the simulator.
    f.create("db", &["--consistency", "crash"]);
    let (r, stderr) = run(&f, "db");
    assert_eq!(
        (r["run"]["status"].as_str(), r["run"]["consistency"].as_str()),
        (Some("succeeded"), Some("crash")),
        "{stderr}"
    );
    poke(&f.os, 5 * MIB, 4096, 55);
    let (r, stderr) = run(&f, "db");
    assert_eq!(r["run"]["status"], "succeeded", "{r} {stderr}");
    assert_eq!(r["run"]["consistency"], "per-disk", "{r}");
    let note = r["run"]["consistency_note"].as_str().unwrap();
    assert!(note.contains("restore_point_crash_secs"), "{note}");
    // The diff from the kept restore point to the new snapshots still hints the worker.
    for d in r["disks"].as_array().unwrap() {
        assert_eq!(d["full_sync"], false, "{d}");
    }
    f.import_and_compare("db");
    // The older restore point went, and its emptied collection with it.
    assert!(f.sim.resource(&collection("db")).is_none(), "{:?}", f.leftovers());
    assert_eq!(f.snapshots().len(), 2);
    only_retained_snapshots(&f);

    // The simulator refuses what the coordinator is told to try anyway:
    // the run fails cleanly, nothing of it is left.
    f.set("restore_point_crash_secs", "0");
    let (r, _) = run(&f, "db");
    assert_eq!(r["run"]["status"], "failed", "{r}");
    assert!(r["run"]["error"].as_str().unwrap().contains("429"), "{r}");
    assert_eq!(f.snapshots().len(), 2);
    only_retained_snapshots(&f);
}

#[test]
fn gc_removes_the_restore_point_of_a_dead_run_and_keeps_the_base() {
    let f = Fixture::new("rp-gc");
    f.set("restore_point_crash_secs", "0");
    f.sim.with(|s| s.restore_point_every = [0, 0]);
    f.create("db", &["--consistency", "crash"]);
    assert_eq!(run(&f, "db").0["run"]["status"], "succeeded");
    let base = points(&f, "db");
    // A coordinator killed right after its restore point.
    let mut child = f.coord.start_paused(&["run", "db"], "after-snapshot");
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(points(&f, "db").len(), 2);
    // Read access a dead run held would stop the delete: gc revokes it first.
    let dead: Vec<String> = points(&f, "db").into_iter().filter(|p| !base.contains(p)).collect();
    let drp = f.sim.with(|s| {
        s.resources
            .keys()
            .find(|k| k.contains(&dead[0].to_ascii_lowercase()) && k.contains("/diskrestorepoints/"))
            .cloned()
            .unwrap()
    });
    f.sim.with(|s| s.grants.insert("held".into(), drp));
    let gc = f.json(&["gc", "--json"]);
    assert!(gc["failed"].as_array().unwrap().is_empty(), "{gc}");
    assert_eq!(points(&f, "db"), base, "the dead run's point is gone, the base stays");
    assert_eq!(f.sim.with(|s| s.grants.len()), 0);
    // A coordinator that lost its database keeps it too: its collection's
    // tag names it.
    let fresh = std::path::Path::new(&f.coord.state).with_file_name("state-fresh");
    let out = f.coord.cmd().env("DISKFERRY_STATE_DIR", &fresh).args(["gc", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(points(&f, "db"), base, "the base is kept without the database");
    // The base is still the diff base of the next run.
    poke(&f.data, 3 * MIB, 4096, 44);
    let (r, stderr) = run(&f, "db");
    assert_eq!(r["run"]["status"], "succeeded", "{r} {stderr}");
    for d in r["disks"].as_array().unwrap() {
        assert_eq!(d["full_sync"], false, "{d}");
    }
    f.import_and_compare("db");
}

#[test]
fn a_vm_with_a_disk_restore_points_do_not_take_gets_per_disk_snapshots_and_says_which() {
    let f = Fixture::new("rp-shared");
    f.edit(&armsim::disk_id("prod", "web1-data0"), |d| d["properties"]["maxShares"] = 2.into());
    f.create("db", &["--consistency", "crash"]);
    let (r, stderr) = run(&f, "db");
    assert_eq!(r["run"]["status"], "succeeded", "{r} {stderr}");
    assert_eq!(r["run"]["consistency"], "per-disk", "{r}");
    let note = r["run"]["consistency_note"].as_str().unwrap();
    assert!(note.contains("lun0") && note.contains("shared"), "{note}");
    assert!(f.bodies("/restorePoints/").is_empty(), "no restore point was asked for");
    f.import_and_compare("db");
}
