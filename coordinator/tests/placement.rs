//! Where a run's agent runs (issue 18, item 3), on the `azure` provider
//! against the ARM simulator: with `placement = "auto"`, a run whose
//! snapshot diff is empty or small boots nothing — an agent on the
//! coordinator's host reads the snapshots over HTTPS (the simulator serves
//! Get Page Ranges and ranged Get Blob on the SAS Grant Access gave) — and
//! still makes a recovery point; a large diff boots a worker VM.
#![allow(clippy::unwrap_used)]

mod common;

use common::azure::*;
use common::poke;
use serde_json::Value;

/// `PUT`s of worker VMs and of disks the simulator has seen so far.
fn vms_and_disks(f: &Fixture) -> (usize, usize) {
    f.sim.with(|s| {
        let puts = |part: &str| s.log.iter().filter(|l| l.starts_with("PUT") && l.contains(part)).count();
        (puts("/virtualMachines/df-"), puts("/disks/df-"))
    })
}

fn run(f: &Fixture) -> Value {
    let out = f.cmd(&["run", "web", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    no_secret(&out);
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["run"]["status"], "succeeded", "{r}");
    r
}

fn points(f: &Fixture) -> usize {
    let p = f.json(&["points", "web", "--json"]);
    p["os"].as_array().map_or(0, Vec::len)
}

#[test]
fn small_diffs_sync_here_without_a_vm_and_large_ones_boot_one() {
    let f = Fixture::new("az-place");
    let config = std::fs::read_to_string(&f.coord.config).unwrap();
    std::fs::write(&f.coord.config, config.replace("[run]\n", "[run]\nplacement = \"auto\"\nhere_max_mib = 8\n"))
        .unwrap();
    f.create("web", &[]);

    // The first run has no diff: a worker VM reads everything.
    let r1 = run(&f);
    assert_eq!(vms_and_disks(&f).0, 1, "the first run boots a worker");
    assert!(r1["run"]["worker"].as_str().unwrap_or_default().contains("no snapshot diff"), "{r1}");
    assert_eq!(points(&f), 1);

    // Nothing changed: no VM, no disk, nothing read, and still a point.
    let before = vms_and_disks(&f);
    let served = f.sim.with(|s| s.bytes_served);
    let r2 = run(&f);
    assert_eq!(vms_and_disks(&f), before, "an empty diff boots nothing");
    assert!(r2["run"]["worker"].as_str().unwrap_or_default().contains("auto: a diff of 0.0 MiB"), "{r2}");
    for d in r2["disks"].as_array().unwrap() {
        assert_eq!((d["generation"].as_u64(), d["bytes_read"].as_u64()), (Some(2), Some(0)), "{d}");
    }
    // Nothing was read but, per disk whose last page was written, the 512
    // bytes that may be a VHD footer (a managed disk's export ends in one).
    let probed = f.sim.with(|s| s.bytes_served) - served;
    assert!(probed <= 2 * 512, "{probed} bytes read for no change");
    assert_eq!(points(&f), 2, "a point in time with no change is still a point");
    assert_eq!(r2["run"]["placement"], "here", "{r2}");
    assert_eq!(r1["run"]["placement"], "vm", "{r1}");
    // Each disk was snapshotted at its own instant (the source ran), and
    // its points say so.
    let p = f.json(&["points", "web", "--json"]);
    assert!(p["os"].as_array().unwrap().iter().all(|x| x["consistency"] == "per-disk"), "{p}");
    assert_eq!(r2["run"]["consistency"], "per-disk", "{r2}");
    only_retained_snapshots(&f);

    // A small change: read here over HTTPS, only the changed chunks.
    poke(&f.os, 30 * MIB, MIB, 99);
    poke(&f.data, 0, 64 * 1024, 98);
    let r3 = run(&f);
    assert_eq!(vms_and_disks(&f), before, "a small diff boots nothing");
    let served3 = f.sim.with(|s| s.bytes_served) - served - probed;
    assert!((64 * 1024..=2 * MIB).contains(&served3), "{served3} bytes read for two changed chunks");
    for d in r3["disks"].as_array().unwrap() {
        assert_eq!((d["generation"].as_u64(), d["full_sync"].as_bool()), (Some(3), Some(false)), "{d}");
    }
    assert_eq!(f.sim.with(|s| s.grants.len()), 0, "read access is revoked");
    only_retained_snapshots(&f);
    f.import_and_compare("web");
    let runs = f.coord.state.join("runs");
    let left: Vec<_> = std::fs::read_dir(&runs).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default();
    assert!(left.is_empty(), "the agent's folders (with their SAS URLs) are removed: {left:?}");

    // A change larger than here_max_mib: a worker VM again.
    poke(&f.os, 4 * MIB, 12 * MIB, 97);
    let r4 = run(&f);
    assert_eq!(vms_and_disks(&f).0, before.0 + 1, "a large diff boots a worker");
    assert!(r4["run"]["worker"].as_str().unwrap_or_default().contains("over here_max_mib 8"), "{r4}");
    only_retained_snapshots(&f);
    f.import_and_compare("web");
}

#[test]
fn a_coordinator_killed_while_its_agent_runs_here_leaves_gc_a_clean_sweep() {
    let f = Fixture::new("az-place-kill");
    let config = std::fs::read_to_string(&f.coord.config).unwrap();
    std::fs::write(&f.coord.config, config.replace("[run]\n", "[run]\nplacement = \"here\"\n")).unwrap();
    f.create("web", &[]);
    // Killed once its agent here started: the agent (its own process group)
    // and the read grants outlive it.
    let mut child = f.coord.start_paused(&["run", "web"], "after-start-worker");
    assert!(f.sim.with(|s| s.grants.len()) >= 1, "the snapshots were granted");
    let folders = std::fs::read_dir(f.coord.state.join("runs")).unwrap().count();
    assert_eq!(folders, 1, "the agent's folder (with its SAS URLs)");
    child.kill().unwrap();
    child.wait().unwrap();
    let gc = f.json(&["gc", "--json"]);
    assert!(gc["failed"].as_array().unwrap().is_empty(), "{gc}");
    assert_eq!(f.sim.with(|s| s.grants.len()), 0, "gc revokes what the dead run was granted");
    assert!(f.coord.agents().is_empty(), "gc stops the agent here");
    let left: Vec<_> = std::fs::read_dir(f.coord.state.join("runs")).unwrap().flatten().map(|e| e.path()).collect();
    assert!(left.is_empty(), "gc removes the agent's folder: {left:?}");
    only_retained_snapshots(&f);
    // And the replica runs again, exactly.
    let r = run(&f);
    assert_eq!(r["run"]["placement"], "here", "{r}");
    f.import_and_compare("web");
}
