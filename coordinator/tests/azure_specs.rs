//! The `azure` provider where the published REST specs and Azure's
//! documented behaviour say it must do more than a lenient simulator asks:
//! the size of the worker, the type of its disks, snapshots not yet usable,
//! snapshots a SAS cannot read, diffs in segments, NICs Azure names, Trusted
//! Launch and supported capabilities (issue 16). The simulator checks every
//! body against the SDK's models (`armsim/spec.rs`).
#![allow(clippy::unwrap_used)]

mod common;

use common::armsim::{self, FailRule};
use common::azure::*;
use common::poke;
use serde_json::{json, Value};

fn os_disk() -> String {
    armsim::disk_id("prod", "web1-os")
}

fn data_disk() -> String {
    armsim::disk_id("prod", "web1-data0")
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn the_worker_size_is_the_first_that_fits_and_the_run_says_what_it_allows() {
    let f = Fixture::new("az-size");
    // No premium disks; Arm64; then one that fits.
    f.set("vm_sizes", r#"["Standard_D4_v5", "Standard_D4ps_v5", "Standard_D4s_v5"]"#);
    f.create("web", &[]);
    let run = f.json(&["run", "web", "--json"]);
    assert_eq!(run["run"]["status"], "succeeded", "{run}");
    assert_eq!(run["run"]["worker"], "Standard_D4s_v5: 8 data disks, 145 MB/s, 6400 IOPS uncached", "{run}");
    let vm = f.bodies("/virtualMachines/df-").pop().unwrap();
    assert_eq!(vm["properties"]["hardwareProfile"]["vmSize"], "Standard_D4s_v5");
    // The temporary disks are premium SSDs, not the Standard_LRS (HDD) a
    // disk made this way gets without a type.
    for d in vm["properties"]["storageProfile"]["dataDisks"].as_array().unwrap() {
        assert_eq!(d["managedDisk"]["storageAccountType"], "Premium_LRS", "{d}");
    }
    let runs = f.json(&["runs", "web", "--json"]);
    assert!(runs.to_string().contains("Standard_D4s_v5: 8 data disks"), "{runs}");

    // No configured size fits: refused before any VM is asked for, with why.
    f.set("vm_sizes", r#"["Standard_D4_v5"]"#);
    let puts = f.bodies("/virtualMachines/df-").len();
    let out = f.cmd(&["run", "web", "--json"]);
    assert!(!out.status.success());
    let run: Value = serde_json::from_slice(&out.stdout).unwrap();
    let e = run["run"]["error"].as_str().unwrap_or_default();
    assert!(e.contains("Standard_D4_v5 takes no premium disks") && e.contains("vm_sizes"), "{e}");
    assert_eq!(f.bodies("/virtualMachines/df-").len(), puts, "no VM was asked for");
    // A restricted size is passed over.
    f.set("vm_sizes", r#"["Standard_D8s_v5", "Standard_D4s_v5"]"#);
    f.sim.with(|s| s.restricted_sizes = vec!["Standard_D8s_v5".into()]);
    let run = f.json(&["run", "web", "--json"]);
    assert!(run["run"]["worker"].as_str().unwrap_or_default().starts_with("Standard_D4s_v5"), "{run}");
}

#[test]
fn snapshots_of_premium_v2_disks_ask_for_instant_access_and_are_waited_for() {
    let f = Fixture::new("az-pending");
    f.edit(&data_disk(), |d| d["sku"] = json!({"name": "PremiumV2_LRS"}));
    f.create("web", &[]);
    let run = f.json(&["run", "web", "--json"]);
    assert_eq!(run["run"]["status"], "succeeded", "{run}");
    let snaps = f.bodies("/snapshots/df-");
    let ask = |disk: &str| {
        snaps.iter().find(|b| b["tags"]["diskferry-disk"] == disk).unwrap()["properties"]["creationData"]
            ["instantAccessDurationMinutes"]
            .clone()
    };
    assert_eq!(ask("lun0"), 60, "{snaps:?}");
    assert_eq!(ask("os"), Value::Null, "a Premium_LRS disk's snapshot needs no instant access");

    // Where instant access is not had, the snapshot is Pending a while:
    // the run waits (a worker's disk made from a Pending snapshot is refused).
    f.sim.with(|s| {
        s.instant_access = false;
        s.pending_gets = 3;
    });
    poke(&f.data, 0, 4096, 5);
    let run = f.json(&["run", "web", "--json"]);
    assert_eq!(run["run"]["status"], "succeeded", "{run}");
    // ... at most snapshot_ready_secs.
    f.sim.with(|s| s.pending_gets = 1_000_000);
    f.set("snapshot_ready_secs", "1");
    let out = f.cmd(&["run", "web", "--json"]);
    let run: Value = serde_json::from_slice(&out.stdout).unwrap();
    let e = run["run"]["error"].as_str().unwrap_or_default();
    assert!(e.contains("still Pending") && e.contains("snapshot_ready_secs"), "{e}");
}

#[test]
fn a_snapshot_a_sas_cannot_read_is_not_diffed_and_the_run_says_why() {
    let f = Fixture::new("az-aad");
    f.create("web", &[]);
    assert_eq!(f.json(&["run", "web", "--json"])["run"]["status"], "succeeded");
    // A policy makes every new snapshot's data access Entra-only.
    f.sim.with(|s| s.snapshot_defaults = json!({"dataAccessAuthMode": "AzureActiveDirectory"}));
    poke(&f.os, 30 * MIB, MIB, 9);
    let grants_before = f.sim.with(|s| s.log.iter().filter(|l| l.contains("/beginGetAccess")).count());
    let out = f.cmd(&["run", "web", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("dataAccessAuthMode is AzureActiveDirectory"), "{}", stderr(&out));
    let grants = f.sim.with(|s| s.log.iter().filter(|l| l.contains("/beginGetAccess")).count());
    assert_eq!(grants, grants_before, "no read access was asked for a snapshot a SAS cannot read");
    f.import_and_compare("web");
}

#[test]
fn changed_ranges_are_asked_for_a_segment_at_a_time() {
    let f = Fixture::new("az-segments");
    // One request over more than 8 MiB times out, as over a large,
    // fragmented snapshot; diskferry asks 4 MiB at a time.
    f.sim.with(|s| s.diff_max_span = Some(8 * MIB));
    f.set("diff_segment_bytes", &(4 * MIB).to_string());
    f.create("web", &[]);
    assert_eq!(f.json(&["run", "web", "--json"])["run"]["status"], "succeeded");
    poke(&f.os, 30 * MIB, MIB, 99);
    poke(&f.data, 0, 64 * 1024, 98);
    let out = f.cmd(&["run", "web", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("no range hint"), "{}", stderr(&out));
    let (diffs, user_data) = f.sim.with(|s| (s.diffs, s.user_data.clone()));
    // 40 MiB and 24 MiB disks: ten and six segments.
    assert!(diffs >= 16, "{diffs} page range requests");
    let job = job_of(user_data.values().last().unwrap());
    assert_eq!(job["disks"][0]["hint"]["ranges"], json!([[30 * MIB, MIB]]), "{job}");
}

#[test]
fn a_half_created_workers_nic_is_found_by_its_tags() {
    let f = Fixture::new("az-nic");
    f.create("web", &[]);
    // The VM's creation fails and rolls back; the NIC Azure named stays.
    f.sim.with(|s| {
        s.orphan_nic = true;
        s.fail = vec![FailRule {
            method: "PUT",
            path: "/virtualMachines/df-".into(),
            code: "AllocationFailed",
            sync_status: None,
        }];
    });
    let out = f.cmd(&["run", "web", "--json"]);
    assert!(!out.status.success());
    let nics: Vec<String> =
        f.sim.names(WORK, "").into_iter().filter(|n| n.starts_with("Microsoft.Network/networkInterfaces/")).collect();
    assert!(nics.is_empty(), "left behind: {nics:?}");
    let deleted =
        f.sim.with(|s| s.log.iter().any(|l| l.starts_with("DELETE") && l.contains("toBeCreatedNetworkInterface")));
    assert!(deleted, "the NIC was deleted by the id Azure gave it");
}

#[test]
fn trusted_launch_and_capabilities_travel_to_the_imported_disk_and_vm() {
    let f = Fixture::new("az-tl");
    let caps = json!({"architecture": "x64", "diskControllerTypes": "SCSI, NVMe", "acceleratedNetwork": true});
    f.edit(&armsim::vm_id("prod", "web1"), |v| {
        v["properties"]["securityProfile"] =
            json!({"securityType": "TrustedLaunch", "uefiSettings": {"secureBootEnabled": true, "vTpmEnabled": true}})
    });
    f.edit(&os_disk(), |d| {
        d["properties"]["hyperVGeneration"] = "V2".into();
        d["properties"]["securityProfile"] = json!({"securityType": "TrustedLaunch"});
        d["properties"]["supportedCapabilities"] = caps.clone();
    });
    let out = f.migrate(f.storage_account());
    assert!(out.status.success(), "{}", stderr(&out));
    let out: Value = serde_json::from_slice(&out.stdout).unwrap();
    let vm = f.sim.resource(out["vm"].as_str().unwrap()).unwrap();
    assert_eq!(vm["properties"]["securityProfile"]["securityType"], "TrustedLaunch", "{vm}");
    assert_eq!(vm["properties"]["securityProfile"]["uefiSettings"]["vTpmEnabled"], true, "{vm}");
    let os =
        f.sim.resource(vm["properties"]["storageProfile"]["osDisk"]["managedDisk"]["id"].as_str().unwrap()).unwrap();
    assert_eq!(os["properties"]["securityProfile"]["securityType"], "TrustedLaunch", "{os}");
    assert_eq!(os["properties"]["hyperVGeneration"], "V2", "{os}");
    assert_eq!(os["properties"]["supportedCapabilities"], caps, "{os}");
}
