//! Failover, drills, cutover and failback (issue 19): recovery points become
//! running VMs through the ARM simulator (disks imported from points
//! promoted on Azurite, a VM of them, its instance view), and VM folders on
//! the local provider that a new replica syncs back.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use common::azure::*;
use common::{armsim, make_vm, poke, Coord};
use serde_json::Value;

const DRILL_SUBNET: &str =
    "/subscriptions/s1/resourceGroups/dr/providers/Microsoft.Network/virtualNetworks/v/subnets/drill";
const APP_SUBNET: &str =
    "/subscriptions/s1/resourceGroups/dr/providers/Microsoft.Network/virtualNetworks/v/subnets/apps";

fn ok(out: std::process::Output) -> Value {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn same(a: &Path, b: &Path) -> bool {
    std::fs::read(a).unwrap() == std::fs::read(b).unwrap()
}

/// The bytes Azure's Import copied into a managed disk (the simulator's file).
fn imported(f: &Fixture, disk_id: &str) -> std::path::PathBuf {
    f.sim
        .with(|s| s.files.get(&disk_id.to_ascii_lowercase()).cloned())
        .unwrap_or_else(|| panic!("no bytes for {disk_id}"))
}

/// Whether a blob still exists at the destination (Azurite).
fn exists(url: &str) -> bool {
    let container = url.split('/').nth(4).unwrap();
    let key = diskferry_blob::sas::AccountKey::new(common::azurite::ACCOUNT, common::azurite::KEY);
    let sas = key.container_sas(container, time::OffsetDateTime::now_utc()).unwrap();
    let r = reqwest::blocking::Client::new().head(format!("{url}?{sas}")).send().unwrap();
    r.status().is_success()
}

/// Resources in the simulator tagged with `tag`.
fn tagged(f: &Fixture, tag: &str) -> Vec<String> {
    f.sim.with(|s| {
        s.resources
            .values()
            .filter(|r| r["tags"][tag].is_string())
            .map(|r| format!("{}/{}", r["type"].as_str().unwrap_or("?"), r["name"].as_str().unwrap_or("?")))
            .collect()
    })
}

#[test]
fn a_drill_leaves_replication_running_and_a_failover_ends_it() {
    let f = Fixture::new("fo-azure");
    let account = f.storage_account();
    f.create("web", &[]);
    assert_eq!(f.json(&["run", "web", "--json"])["run"]["status"], "succeeded");
    let point1 = f.coord.path().join("os-at-point-1.img");
    std::fs::copy(&f.os, &point1).unwrap();
    poke(&f.os, 9 * MIB, MIB, 41);
    assert_eq!(f.json(&["run", "web", "--json"])["run"]["status"], "succeeded");

    // A drill from point 1, in the drill subnet.
    let target = ["--to", "azure:dr", "--storage-account", account];
    let mut args = vec!["failover", "web", "--test", "--point", "1", "--subnet", DRILL_SUBNET, "--json"];
    args.extend_from_slice(&["--vm-size", "Standard_D2s_v5"]);
    args.extend_from_slice(&target);
    let drill = ok(f.cmd(&args));
    assert_eq!((drill["drill"].as_bool(), drill["state"].as_str()), (Some(true), Some("running")), "{drill}");
    assert_eq!(drill["point"]["generations"], serde_json::json!({"lun0": 1, "os": 1}), "{drill}");
    assert_eq!(drill["agent"], "Ready", "{drill}");
    let steps: Vec<&str> = drill["steps"].as_array().unwrap().iter().map(|s| s["step"].as_str().unwrap()).collect();
    assert_eq!(steps, ["import", "import", "create-vm", "running"]);
    let vm = f
        .sim
        .resource(
            drill["resources"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r.as_str().unwrap().contains("/virtualMachines/"))
                .unwrap()
                .as_str()
                .unwrap(),
        )
        .unwrap();
    assert_eq!(vm["tags"]["diskferry-drill"], drill["id"], "{vm}");
    assert_eq!(vm["properties"]["hardwareProfile"]["vmSize"], "Standard_D2s_v5", "the size asked for");
    let sp = &vm["properties"]["storageProfile"];
    assert_eq!(sp["dataDisks"].as_array().unwrap().len(), 1);
    let nic_subnet = f.bodies("/virtualMachines/web-web1-drill").pop().unwrap()["properties"]["networkProfile"]
        ["networkInterfaceConfigurations"][0]["properties"]["ipConfigurations"][0]["properties"]["subnet"]["id"]
        .clone();
    assert_eq!(nic_subnet, DRILL_SUBNET);
    // The drill's OS disk holds point 1, not today's disk.
    let os_id = sp["osDisk"]["managedDisk"]["id"].as_str().unwrap();
    assert!(common::identical(&point1, &imported(&f, os_id)), "the drill's OS disk is point 1");
    // The blob promoted for the import was named by the drill, and is gone.
    let uri = f.sim.resource(os_id).unwrap()["properties"]["creationData"]["sourceUri"].as_str().unwrap().to_owned();
    assert!(uri.contains(drill["id"].as_str().unwrap()) && uri.ends_with("os.g1.vhd"), "{uri}");
    assert!(!exists(&uri), "{uri} is left at the destination");
    // Replication goes on during the drill.
    assert_eq!(f.json(&["run", "web", "--json"])["run"]["status"], "succeeded");
    let list = f.json(&["drill", "list", "--json"]);
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    // Cleaned, completely.
    ok(f.cmd(&["drill", "clean", drill["id"].as_str().unwrap(), "--json"]));
    assert!(tagged(&f, "diskferry-drill").is_empty(), "{:?}", tagged(&f, "diskferry-drill"));
    assert!(f.json(&["drill", "list", "--json"]).as_array().unwrap().is_empty());

    // The real failover, from the newest point.
    let mut args = vec!["failover", "web", "--subnet", APP_SUBNET, "--json"];
    args.extend_from_slice(&target);
    let fo = ok(f.cmd(&args));
    assert_eq!((fo["drill"].as_bool(), fo["state"].as_str()), (Some(false), Some("running")), "{fo}");
    assert_eq!(fo["point"]["generations"]["os"], 3, "{fo}");
    assert!(
        fo["point"]["created_unix_ms"].as_i64().unwrap() > 0 && fo["data_loss_window_secs"].as_f64().unwrap() >= 0.0
    );
    assert_eq!(fo["vm"], "web-web1-failover", "the replica names it");
    let vm = f
        .sim
        .resource(&format!("{}/providers/Microsoft.Compute/virtualMachines/web-web1-failover", armsim::rg_path("dr")));
    assert_eq!(vm.unwrap()["properties"]["hardwareProfile"]["vmSize"], "Standard_D4s_v5", "the source's size");
    // A drill named like a VM that exists is refused, and the VM is untouched.
    let mut args = vec!["failover", "web", "--test", "--vm-name", "web-web1-failover", "--subnet", DRILL_SUBNET];
    args.extend_from_slice(&target);
    let clash = f.cmd(&args);
    assert_eq!(clash.status.code(), Some(2), "{}", String::from_utf8_lossy(&clash.stderr));
    assert!(String::from_utf8_lossy(&clash.stderr).contains("exists already"));
    let vm = f
        .sim
        .resource(&format!("{}/providers/Microsoft.Compute/virtualMachines/web-web1-failover", armsim::rg_path("dr")));
    assert_eq!(vm.unwrap()["properties"]["provisioningState"], "Succeeded", "the existing VM stays");
    // Its replica syncs no more: runs are refused, and say why.
    let again = f.cmd(&["run", "web"]);
    assert_eq!(again.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("failed over"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
}

#[test]
fn a_failover_whose_second_disk_fails_to_import_leaves_nothing() {
    let f = Fixture::new("fo-undo");
    let account = f.storage_account();
    f.create("web", &[]);
    assert_eq!(f.json(&["run", "web", "--json"])["run"]["status"], "succeeded");
    // What cannot work is refused before anything is made.
    let bad = f.cmd(&["failover", "web", "--to", "azure:dr", "--subnet", APP_SUBNET]);
    assert_eq!(bad.status.code(), Some(2), "{}", String::from_utf8_lossy(&bad.stderr));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--storage-account"));
    f.fail_next("PUT", "/disks/web-web1-failover-os", "InternalError", None);
    let out =
        f.cmd(&["failover", "web", "--to", "azure:dr", "--storage-account", account, "--subnet", APP_SUBNET, "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("InternalError") && err.contains("what it made is deleted"), "{err}");
    assert!(tagged(&f, "diskferry-failover").is_empty(), "{:?}", tagged(&f, "diskferry-failover"));
    // A VM that cannot be created (quota): its disks, the VM left Failed
    // and the NIC Azure made for it all go.
    f.fail_next("PUT", "/virtualMachines/web-web1-failover", "OperationNotAllowed", None);
    let out =
        f.cmd(&["failover", "web", "--to", "azure:dr", "--storage-account", account, "--subnet", APP_SUBNET, "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("OperationNotAllowed") && err.contains("what it made is deleted"), "{err}");
    assert!(tagged(&f, "diskferry-failover").is_empty(), "{:?}", tagged(&f, "diskferry-failover"));
    // The same with the VM rolled back by Azure and only its NIC left.
    f.sim.with(|s| s.orphan_nic = true);
    f.fail_next("PUT", "/virtualMachines/web-web1-failover", "OperationNotAllowed", None);
    let out =
        f.cmd(&["failover", "web", "--to", "azure:dr", "--storage-account", account, "--subnet", APP_SUBNET, "--json"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(tagged(&f, "diskferry-failover").is_empty(), "{:?}", tagged(&f, "diskferry-failover"));
    // Not failed over: it still syncs.
    assert_eq!(f.json(&["run", "web", "--json"])["run"]["status"], "succeeded");
}

#[test]
fn cutover_stops_the_source_for_the_final_run_only_and_reports_the_downtime() {
    let f = Fixture::new("fo-cutover");
    let account = f.storage_account();
    f.create("mig", &[]);
    assert_eq!(f.json(&["run", "mig", "--json"])["run"]["status"], "succeeded");
    let before = f.sim.with(|s| s.log.len());
    assert!(f.sim.with(|s| !s.log.iter().any(|l| l.contains("/deallocate"))), "not stopped while it replicated");
    poke(&f.data, 2 * MIB, 4096, 61);
    let c = ok(f.cmd(&[
        "cutover",
        "mig",
        "--to",
        "azure:dr",
        "--storage-account",
        account,
        "--subnet",
        APP_SUBNET,
        "--json",
    ]));
    assert_eq!(c["failover"]["state"], "running", "{c}");
    assert!(c["downtime_secs"].as_f64().unwrap() >= c["final_run_seconds"].as_f64().unwrap());
    let log: Vec<String> = f.sim.with(|s| s.log[before..].to_vec());
    let at = |pat: &str| log.iter().position(|l| l.contains(pat));
    let (stop, snap) = (at("/web1/deallocate").unwrap(), at("/snapshots/df-").unwrap());
    assert!(stop < snap, "{log:?}");
    assert_eq!(at("/web1/start"), None, "the source stays stopped: {log:?}");
    // The VM it made holds the final point: the source as it was stopped.
    let vm = f
        .sim
        .resource(&format!("{}/providers/Microsoft.Compute/virtualMachines/mig-web1-failover", armsim::rg_path("dr")))
        .unwrap();
    let data = &vm["properties"]["storageProfile"]["dataDisks"][0]["managedDisk"]["id"];
    assert!(common::identical(&f.data, &imported(&f, data.as_str().unwrap())));
}

#[test]
fn a_local_failover_is_a_vm_folder_that_replicates_back() {
    let c = Coord::new(true);
    let vm = make_vm(c.path(), "app", &[("os", 16 * MIB, &[(0, MIB)]), ("lun0", 8 * MIB, &[(MIB, MIB)])]);
    let dest = c.container("fo-local");
    c.json(&["replica", "create", "app", "--vm", vm.to_str().unwrap(), "--to", &dest, "--json"]);
    assert_eq!(c.json(&["run", "app", "--json"])["run"]["status"], "succeeded");
    let at1 = c.path().join("os-1.img");
    std::fs::copy(vm.join("os.img"), &at1).unwrap();
    poke(&vm.join("os.img"), 3 * MIB, 4096, 9);
    assert_eq!(c.json(&["run", "app", "--json"])["run"]["status"], "succeeded");
    let site = c.path().join("site-b");
    std::fs::create_dir(&site).unwrap();

    // A drill of point 1: a VM folder, listed, and cleaned away.
    let d = c.json(&["failover", "app", "--test", "--point", "1", "--to", site.to_str().unwrap(), "--json"]);
    assert_eq!((d["state"].as_str(), d["drill"].as_bool()), (Some("ready"), Some(true)), "{d}");
    let folder = Path::new(d["resources"][0].as_str().unwrap()).to_owned();
    assert!(same(&at1, &folder.join("os.img")), "the drill holds point 1");
    c.json(&["drill", "clean", "app", "--json"]);
    assert!(!folder.exists());
    // An expired drill goes with gc.
    let d = c.json(&["failover", "app", "--test", "--to", site.to_str().unwrap(), "--json"]);
    let folder = Path::new(d["resources"][0].as_str().unwrap()).to_owned();
    c.sql("UPDATE failovers SET expires_at = 1 WHERE drill = 1");
    let gc = c.json(&["gc", "--json"]);
    assert!(gc["deleted"].as_array().unwrap().iter().any(|x| x[0] == "drill"), "{gc}");
    assert!(!folder.exists());

    // The failover: a VM folder of the newest point, the replica done.
    let fo = c.json(&["failover", "app", "--to", site.to_str().unwrap(), "--json"]);
    let new_vm = Path::new(fo["resources"][0].as_str().unwrap()).to_owned();
    for disk in ["os", "lun0"] {
        assert!(same(&vm.join(format!("{disk}.img")), &new_vm.join(format!("{disk}.img"))), "{disk}");
    }
    assert_eq!(c.run(&["run", "app"]).status.code(), Some(2));
    // Failback: the failed-over VM replicated back to the first destination.
    poke(&new_vm.join("lun0.img"), 5 * MIB, 4096, 13);
    c.json(&["replica", "create", "back", "--vm", new_vm.to_str().unwrap(), "--to", &dest, "--json"]);
    let back = c.json(&["run", "back", "--json"]);
    assert_eq!(back["run"]["status"], "succeeded", "{back}");
    let out = c.path().join("back");
    std::fs::create_dir(&out).unwrap();
    c.json(&["import", "back", "--to", out.to_str().unwrap(), "--json"]);
    assert!(common::identical(&new_vm.join("lun0.img"), &out.join("lun0.vhd")));
}

#[test]
fn a_plan_brings_groups_up_in_order() {
    let c = Coord::new(false);
    let dest = c.path().join("dest");
    std::fs::create_dir(&dest).unwrap();
    let to = format!("file:{}", dest.display());
    for name in ["db", "web", "api"] {
        let vm = make_vm(c.path(), &format!("{name}-vm"), &[("os", 8 * MIB, &[(0, MIB)])]);
        c.json(&["replica", "create", name, "--vm", vm.to_str().unwrap(), "--to", &to, "--json"]);
        assert_eq!(c.json(&["run", name, "--json"])["run"]["status"], "succeeded");
    }
    let plan = c.path().join("plan.toml");
    std::fs::write(&plan, "[[group]]\nreplicas = [\"db\"]\n[[group]]\nreplicas = [\"web\", \"api\"]\n").unwrap();
    let site = c.path().join("site-b");
    std::fs::create_dir(&site).unwrap();
    let r = c.json(&["failover", "--plan", plan.to_str().unwrap(), "--to", site.to_str().unwrap(), "--json"]);
    let groups: Vec<Vec<&str>> = r["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g.as_array().unwrap().iter().map(|v| v["replica"].as_str().unwrap()).collect())
        .collect();
    assert_eq!(groups, [vec!["db"], vec!["web", "api"]], "{r}");
    for vm in ["db-db-vm-failover", "web-web-vm-failover", "api-api-vm-failover"] {
        assert!(site.join(vm).join("vm.toml").is_file(), "{vm}");
    }
    // A plan naming a replica that does not exist changes nothing.
    std::fs::write(&plan, "[[group]]\nreplicas = [\"nosuch\"]\n").unwrap();
    assert_eq!(
        c.run(&["failover", "--plan", plan.to_str().unwrap(), "--to", site.to_str().unwrap()]).status.code(),
        Some(2)
    );
}

#[test]
fn a_cutover_that_fails_starts_the_source_again() {
    let f = Fixture::new("fo-cut-fail");
    let account = f.storage_account();
    f.create("mig", &[]);
    assert_eq!(f.json(&["run", "mig", "--json"])["run"]["status"], "succeeded");
    f.fail_next("PUT", "/virtualMachines/mig-web1-failover", "OperationNotAllowed", None);
    let out = f.cmd(&["cutover", "mig", "--to", "azure:dr", "--storage-account", account, "--subnet", APP_SUBNET]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("started again"), "{err}");
    let log = f.sim.with(|s| s.log.clone());
    let stop = log.iter().rposition(|l| l.contains("/web1/deallocate")).unwrap();
    assert!(log[stop..].iter().any(|l| l.contains("/web1/start")), "the source runs again: {log:?}");
    assert_eq!(f.sim.resource(&armsim::vm_id("prod", "web1")).unwrap()["powerState"], "running");
    assert!(tagged(&f, "diskferry-failover").is_empty());
    // Not failed over: the replica still syncs.
    assert_eq!(f.json(&["run", "mig", "--json"])["run"]["status"], "succeeded");
}
