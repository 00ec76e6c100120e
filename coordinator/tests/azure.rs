//! The `azure` provider end to end: the coordinator binary drives an
//! in-process ARM simulator (snapshots, a worker VM that boots a real agent,
//! deletes, tags), the agent writes page blobs on Azurite, and the results
//! are compared byte for byte with the source disks.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use common::armsim::{self, FailRule};
use common::azure::*;
use common::{azurite, identical, poke};
use serde_json::Value;

#[test]
fn azure_runs_sync_incrementally_through_arm_and_clean_up() {
    let f = Fixture::new("az-e2e");
    // Throttle a share of requests: every 9th is a 429 with Retry-After: 1.
    f.sim.with(|s| {
        s.throttle_every = 9;
        s.retry_after = 1;
    });
    f.create("web", &[]);
    let run = f.json(&["run", "web", "--json"]);
    assert_eq!(run["run"]["status"], "succeeded", "{run}");
    let (throttled, log, user_data) = f.sim.with(|s| (s.throttled, s.log.clone(), s.user_data.clone()));
    assert!(throttled >= 2, "the simulator throttled {throttled} requests");
    // Snapshots were incremental, taken before the worker, which had its
    // disks created inline from them at LUN 0 and 1.
    let snaps = f.snapshots();
    assert_eq!(snaps.len(), 2, "{snaps:?}");
    for s in &snaps {
        assert_eq!(s["properties"]["incremental"], true);
        assert_eq!(s["tags"]["diskferry-replica"], "web");
    }
    let first_put_vm = log.iter().position(|l| l.starts_with("PUT") && l.contains("/virtualMachines/df-")).unwrap();
    assert!(log[..first_put_vm].iter().filter(|l| l.starts_with("PUT") && l.contains("/snapshots/")).count() >= 2);
    assert!(
        log.iter().any(|l| l.starts_with("DELETE") && l.contains("/virtualMachines/df-")),
        "the worker was deleted"
    );
    only_retained_snapshots(&f);
    // The worker's user data: cloud-config with the job, no secret.
    let (_, ud) = user_data.iter().next().unwrap();
    assert!(ud.starts_with("#cloud-config"));
    for secret in [armsim::TOKEN, azurite::KEY, "sig=", "AccountKey"] {
        assert!(!ud.contains(secret), "the user data carries {secret}");
    }
    f.import_and_compare("web");

    // Change the source; the next run is incremental and keeps only its own snapshots.
    let old: Vec<String> = snaps.iter().map(|s| s["name"].as_str().unwrap().to_owned()).collect();
    poke(&f.os, 30 * MIB, MIB, 99);
    poke(&f.data, 0, 64 * 1024, 98);
    let out = f.cmd(&["run", "web", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    no_secret(&out);
    let run2: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(run2["run"]["status"], "succeeded", "{run2}");
    let disks = run2["disks"].as_array().unwrap();
    assert_eq!(disks.len(), 2, "{run2}");
    for d in disks {
        assert_eq!(d["full_sync"], false, "{d}");
        assert!(d["bytes_sent"].as_u64().unwrap() <= 2 * MIB, "{d}");
    }
    // The snapshot diff was the worker's range hint: it read one chunk a disk.
    for d in disks {
        assert_eq!(d["bytes_read"], MIB, "only the hinted chunk is read: {d}");
    }
    let (diffs, grants, user_data) = f.sim.with(|s| (s.diffs, s.grants.len(), s.user_data.clone()));
    assert!(diffs >= 2, "one page range diff per disk");
    assert_eq!(grants, 0, "snapshot access is revoked after the diff");
    let job = job_of(user_data.values().last().unwrap());
    assert_eq!(job["disks"][0]["hint"]["base_generations"], serde_json::json!([1]), "{job}");
    assert_eq!(job["disks"][0]["hint"]["ranges"], serde_json::json!([[30 * MIB, MIB]]), "{job}");
    assert_eq!(job["disks"][1]["read_limit"], 512 * MIB, "[run] read_limit_mib_s reaches the worker: {job}");
    let now: Vec<String> = f.snapshots().iter().map(|s| s["name"].as_str().unwrap().to_owned()).collect();
    assert_eq!(now.len(), 2);
    assert!(now.iter().all(|n| !old.contains(n)), "the older snapshots are deleted: {now:?} vs {old:?}");
    only_retained_snapshots(&f);
    f.import_and_compare("web");

    // No diff this time (access is refused): the worker reads everything
    // and the copy is still exact.
    poke(&f.os, 2 * MIB, 4096, 97);
    f.fail_next("POST", "/beginGetAccess", "AuthorizationFailed", Some(403));
    let out = f.cmd(&["run", "web", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no range hint"), "the coordinator says why");
    no_secret(&out);
    let run3: Value = serde_json::from_slice(&out.stdout).unwrap();
    let os = run3["disks"].as_array().unwrap().iter().find(|d| d["disk"] == "os").unwrap().clone();
    assert!(os["bytes_read"].as_u64().unwrap() > 4 * MIB, "a full read: {os}");
    assert_eq!(f.sim.with(|s| s.grants.len()), 0);
    only_retained_snapshots(&f);
    f.import_and_compare("web");

    // Import as managed disks in the destination's region: the point is
    // promoted to a standalone blob, then imported by ARM.
    let account = f.storage_account();
    let imported = f.json(&["import", "web", "--to", "azure:dr", "--storage-account", account, "--json"]);
    let imported = imported.as_array().unwrap();
    assert_eq!(imported.len(), 2, "{imported:?}");
    for i in imported {
        let disk = f.sim.resource(i["path"].as_str().unwrap()).unwrap();
        assert_eq!(disk["location"], "northeurope");
        let cd = &disk["properties"]["creationData"];
        assert_eq!((cd["createOption"].as_str(), cd["storageAccountId"].as_str()), (Some("Import"), Some(account)));
        let (name, raw) = if i["disk"] == "os" { ("os", &f.os) } else { ("lun0", &f.data) };
        assert_eq!(disk["properties"]["osType"].as_str(), (name == "os").then_some("Linux"), "{disk}");
        // The blob ARM imports holds exactly the recovery point.
        let got = f.coord.path().join(format!("{name}.imported.vhd"));
        std::fs::write(&got, fetch(cd["sourceUri"].as_str().unwrap())).unwrap();
        assert!(identical(raw, &got), "{name}: the imported blob differs from the source");
    }
}

#[test]
fn migrate_to_managed_disks_and_a_vm() {
    let f = Fixture::new("az-migrate");
    // An NVMe worker size: its agent finds the disks under data/by-lun.
    let config = std::fs::read_to_string(&f.coord.config).unwrap();
    std::fs::write(&f.coord.config, format!("{config}vm_size = \"Standard_D4ds_v6\"\n")).unwrap();
    let account = f.storage_account();
    let out = f.migrate(account);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out["run"]["status"], "succeeded", "{out}");
    let workers = f.sim.with(|s| s.user_data.keys().cloned().collect::<Vec<_>>());
    assert_eq!(workers.len(), 1);
    assert!(f.sim.dir.join(&workers[0]).join("dev-disk-azure/data/by-lun/1").exists(), "{workers:?}");
    let vm = f.sim.resource(out["vm"].as_str().unwrap()).unwrap();
    assert_eq!(vm["location"], "northeurope");
    let sp = &vm["properties"]["storageProfile"];
    assert_eq!(sp["osDisk"]["createOption"], "Attach");
    assert_eq!(sp["osDisk"]["osType"], "Linux");
    assert_eq!(sp["dataDisks"][0]["lun"], 0);
    let os = f.sim.resource(sp["osDisk"]["managedDisk"]["id"].as_str().unwrap()).unwrap();
    assert_eq!(os["properties"]["creationData"]["createOption"], "Import");
    let got = f.coord.path().join("migrated-os.vhd");
    std::fs::write(&got, fetch(os["properties"]["creationData"]["sourceUri"].as_str().unwrap())).unwrap();
    assert!(identical(&f.os, &got), "the migrated OS disk differs from the source");
    only_retained_snapshots(&f);
    // Without --subnet, --create-vm is refused before anything runs.
    let bad = f.cmd(&["migrate", "--vm", "prod/web1", "--to", &f.dest, "--import-to", "azure:dr", "--create-vm", "x"]);
    assert_eq!(bad.status.code(), Some(2), "{}", String::from_utf8_lossy(&bad.stderr));
}

#[test]
fn a_failure_at_each_step_leaves_nothing_behind() {
    let f = Fixture::new("az-fail");
    f.create("web", &[]);
    let rule = |method, path: &str, code, sync_status| FailRule { method, path: path.into(), code, sync_status };
    let cases = [
        ("a snapshot fails", rule("PUT", "/snapshots/df-", "SnapshotQuotaExceeded", None)),
        ("the worker VM fails to provision", rule("PUT", "/virtualMachines/df-", "AllocationFailed", None)),
        ("the worker VM is refused", rule("PUT", "/virtualMachines/df-", "OperationNotAllowed", Some(409))),
        ("reading the VM fails", rule("GET", "/virtualMachines/web1", "InternalServerError", Some(400))),
    ];
    for (what, r) in cases {
        let code = r.code;
        f.sim.with(|s| s.fail = vec![r]);
        let out = f.cmd(&["run", "web", "--json"]);
        assert_eq!(out.status.code(), Some(1), "{what}: {}", String::from_utf8_lossy(&out.stderr));
        let run: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(run["run"]["status"], "failed", "{what}: {run}");
        assert!(run["run"]["error"].as_str().unwrap().contains(code), "{what}: {run}");
        assert_eq!(f.leftovers(), Vec::<String>::new(), "{what}: left behind");
        assert_eq!(f.sim.running_workers(), 0, "{what}");
    }

    // The worker's agent fails (it has no credentials for the destination's
    // account): the run fails with the agent's error, the worker and its
    // disks are gone.
    let other = format!("pageblob:{}/otheraccount/nowhere", f.coord.endpoint.as_deref().unwrap());
    let bad = f.cmd(&["replica", "create", "unreachable", "--vm", "prod/web1", "--to", &other]);
    assert!(bad.status.success(), "{}", String::from_utf8_lossy(&bad.stderr));
    let out = f.cmd(&["run", "unreachable", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let run: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(run["run"]["error"].as_str().unwrap().contains("to destination 1"), "{run}");
    assert_eq!(f.leftovers(), Vec::<String>::new(), "the agent failed: left behind");
    assert_eq!(f.sim.running_workers(), 0);

    // Teardown itself fails (the VM cannot be deleted): the run says so,
    // and `gc` finishes the job later.
    f.fail_next("DELETE", "/virtualMachines/df-", "Conflict", Some(409));
    let out = f.cmd(&["run", "web", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let run: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(run["run"]["error"].as_str().unwrap().contains("Conflict"), "{run}");
    assert!(f.leftovers().iter().any(|n| n.contains("virtualMachines/df-")), "the VM stayed: {:?}", f.leftovers());
    let gc = f.json(&["gc", "--json"]);
    assert!(gc["failed"].as_array().unwrap().is_empty(), "{gc}");
    let left: Vec<String> =
        f.leftovers().into_iter().filter(|n| !n.starts_with("Microsoft.Compute/snapshots/")).collect();
    assert!(left.is_empty(), "gc left: {left:?}");
    assert_eq!(f.sim.running_workers(), 0);

    // The worker VM disappears while the agent runs (deleted by someone
    // else): the run says so and tears down the rest.
    f.sim.with(|s| s.fail.clear());
    let sim = f.sim.clone();
    let killer = std::thread::spawn(move || {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while std::time::Instant::now() < deadline {
            let vm = sim.names(WORK, "df-").into_iter().find(|n| n.starts_with("Microsoft.Compute/virtualMachines/"));
            if let Some(vm) = vm {
                let name = vm.rsplit('/').next().unwrap().to_owned();
                let id = format!("{}/providers/Microsoft.Compute/virtualMachines/{name}", armsim::rg_path(WORK));
                sim.with(|s| {
                    s.resources.remove(&id.to_ascii_lowercase());
                });
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        false
    });
    let out = f.cmd(&["run", "web", "--json"]);
    assert!(killer.join().unwrap(), "the worker VM never appeared");
    let run: Value = serde_json::from_slice(&out.stdout).unwrap();
    if run["run"]["status"] == "failed" {
        assert!(run["run"]["error"].as_str().unwrap().contains("is gone"), "{run}");
    }
    // Either way (the agent may have finished first), nothing stays but
    // retained snapshots; the orphaned inline disks are found by name.
    let gc = f.json(&["gc", "--json"]);
    assert!(gc["failed"].as_array().unwrap().is_empty(), "{gc}");
    let left: Vec<String> =
        f.leftovers().into_iter().filter(|n| !n.starts_with("Microsoft.Compute/snapshots/")).collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn gc_without_the_database_goes_by_tags_and_names() {
    let f = Fixture::new("az-gc");
    f.create("web", &["--stop-source"]);
    assert_eq!(f.json(&["run", "web", "--json"])["run"]["status"], "succeeded");
    // --stop-source: deallocated before the snapshots, started after them.
    let log = f.sim.with(|s| s.log.clone());
    let at = |pat: &str| log.iter().position(|l| l.contains(pat)).unwrap_or_else(|| panic!("no {pat}: {log:?}"));
    let snap = at("/snapshots/df-");
    assert!(at("/web1/deallocate") < snap && snap < at("/web1/start"), "{log:?}");
    assert_eq!(f.sim.resource(&armsim::vm_id("prod", "web1")).unwrap()["powerState"], "running");
    // Its points hold every disk at one instant, and say so.
    let points = f.json(&["points", "web", "--json"]);
    for disk in ["os", "lun0"] {
        assert_eq!(points[disk][0]["consistency"], "stopped", "{points}");
    }
    let retained = f.snapshots().len();
    assert_eq!(retained, 2);
    // Strays of runs this coordinator never knew: one expired, one not yet,
    // an untagged inline disk created long ago, a NIC whose VM is gone.
    let rg = armsim::rg_path(WORK);
    let plant = |kind: &str, name: &str, v: Value| {
        let id = format!("{rg}/providers/{kind}/{name}");
        let mut v = v;
        v["id"] = id.clone().into();
        v["name"] = name.into();
        v["type"] = kind.into();
        f.sim.with(|s| s.resources.insert(id.to_ascii_lowercase(), v));
    };
    let past = chrono::Utc::now().timestamp() - 60;
    let future = chrono::Utc::now().timestamp() + 3600;
    let tags = |exp: i64| serde_json::json!({"diskferry-run": "20200101-000000.000-abcd", "diskferry-expires": exp.to_string()});
    plant(
        "Microsoft.Compute/snapshots",
        "df-20200101-000000-000-abcd-os",
        serde_json::json!({"tags": tags(past), "properties": {}}),
    );
    plant(
        "Microsoft.Compute/snapshots",
        "df-20300101-000000-000-beef-os",
        serde_json::json!({"tags": tags(future), "properties": {}}),
    );
    plant(
        "Microsoft.Compute/disks",
        "df-20200101-000000-000-abcd-tmp-lun0",
        serde_json::json!({"properties": {"timeCreated": "2020-01-01T00:00:00Z"}}),
    );
    plant(
        "Microsoft.Network/networkInterfaces",
        "df-20200101-000000-000-abcd-nic",
        serde_json::json!({"properties": {}}),
    );
    // A NIC Azure named for a half-created worker: found by its tags.
    let mut nic_tags = tags(past);
    nic_tags["diskferry-worker"] = "df-20200101-000000-000-abcd".into();
    plant(
        "Microsoft.Network/networkInterfaces",
        "toBeCreatedNetworkInterface7",
        serde_json::json!({"tags": nic_tags, "properties": {}}),
    );
    plant(
        "Microsoft.Compute/disks",
        "not-ours",
        serde_json::json!({"properties": {"timeCreated": "2020-01-01T00:00:00Z"}}),
    );

    // A coordinator with a fresh state folder: its database knows nothing.
    let fresh = Path::new(&f.coord.state).with_file_name("state-fresh");
    let out = f.coord.cmd().env("DISKFERRY_STATE_DIR", &fresh).args(["gc", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let left = f.leftovers();
    assert!(left.contains(&"Microsoft.Compute/snapshots/df-20300101-000000-000-beef-os".to_owned()), "{left:?}");
    assert_eq!(left.len(), retained + 1, "expired strays go, retained and unexpired stay: {left:?}");
    assert!(f.sim.resource(&format!("{rg}/providers/Microsoft.Compute/disks/not-ours")).is_some(), "not ours: kept");
    let nic = format!("{rg}/providers/Microsoft.Network/networkInterfaces/toBeCreatedNetworkInterface7");
    assert!(f.sim.resource(&nic).is_none(), "the stray NIC Azure named is found by its tags and deleted");
    let token_leak = String::from_utf8_lossy(&out.stdout).contains(armsim::TOKEN);
    assert!(!token_leak);
}
