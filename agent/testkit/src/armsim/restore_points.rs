//! The simulator's VM restore points (ComputeRP 2025-04-01
//! `restorePoint.json`): collections, restore points that copy every disk
//! of their VM at one instant (the simulator's lock), and their disk
//! restore points (DiskRP 2025-01-02 `diskRestorePoint.json`), whose bytes
//! are files read through a SAS like a snapshot's. Answers are the spec's
//! examples with this simulator's names in them
//! (`RestorePointCollection_CreateOrUpdate.json`: 201 new, 200 existing, not
//! long-running; `RestorePoint_Create.json`: 201, then an operation).
//!
//! What Azure documents and this enforces:
//! - a collection is in its VM's region, and "only tags may be modified"
//!   once it exists;
//! - "For now, only CrashConsistent is accepted" as `consistencyMode`; none
//!   asks for an application-consistent point, which fails without a VM
//!   agent (`VMAgentStatusCommunicationError`) and is `FileSystemConsistent`
//!   on Linux (no pre/post scripts; "file system consistency for VMs
//!   running Linux": concepts-restore-points);
//! - one at a time per VM (`VMRestorePointClientError`), at most one an hour
//!   crash-consistent and one every three hours application-consistent (429
//!   with Retry-After; the support matrix), 500 per VM, none of Ultra,
//!   Premium SSD v2 or shared disks;
//! - a restore point or collection whose disk restore point has read access
//!   granted cannot be deleted (`DiskRestorePointUsedByCustomer`).

use serde_json::{json, Value};

use super::{err, key, ArmSim, FailRule, Outcome, Reply, SimState};

const EXAMPLES: &str = "../../specs/examples/compute/resource-manager/Microsoft.Compute/ComputeRP/stable/2025-04-01/examples/restorePointExamples";

fn example(name: &str, status: &str) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/armsim").join(EXAMPLES).join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let doc: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    doc["responses"][status]["body"].clone()
}

/// The disks of a VM resource: (name in the VM, disk id, LUN).
fn vm_disks(vm: &Value) -> Vec<(Option<u64>, String)> {
    let sp = &vm["properties"]["storageProfile"];
    let mut out = vec![(None, sp["osDisk"]["managedDisk"]["id"].as_str().unwrap_or_default().to_owned())];
    for d in sp["dataDisks"].as_array().into_iter().flatten() {
        out.push((d["lun"].as_u64(), d["managedDisk"]["id"].as_str().unwrap_or_default().to_owned()));
    }
    out
}

impl ArmSim {
    pub(super) fn put_collection(&self, s: &mut SimState, path: &str, body: Value) -> Reply {
        let source = body["properties"]["source"]["id"].as_str().unwrap_or_default().to_owned();
        let Some(vm) = s.resources.get(&key(&source)).cloned() else {
            return (404, vec![], err("ResourceNotFound", &format!("The source VM '{source}' was not found.")));
        };
        if vm["location"] != body["location"] {
            return (
                400,
                vec![],
                err("InvalidParameter", "A restore point collection must be in the region of its source VM."),
            );
        }
        let k = key(path);
        if let Some(old) = s.resources.get_mut(&k) {
            if key(old["properties"]["source"]["id"].as_str().unwrap_or_default()) != key(&source) {
                return (
                    409,
                    vec![],
                    err(
                        "PropertyChangeNotAllowed",
                        "Only tags may be modified on an existing restore point collection.",
                    ),
                );
            }
            old["tags"] = body["tags"].clone();
            return (200, vec![], old.clone());
        }
        let mut c = example("RestorePointCollection_CreateOrUpdate.json", "201");
        c["id"] = path.into();
        c["name"] = path.rsplit('/').next().unwrap_or_default().into();
        c["location"] = body["location"].clone();
        c["tags"] = body["tags"].clone();
        c["properties"]["source"] = json!({"id": source, "location": vm["location"]});
        s.next_op += 1;
        c["properties"]["restorePointCollectionId"] = format!("rpc-{:08}", s.next_op).into();
        s.resources.insert(k, c.clone());
        (201, vec![], c)
    }

    pub(super) fn put_restore_point(&self, s: &mut SimState, path: &str, body: Value, fail: Option<FailRule>) -> Reply {
        let collection = path.split("/restorePoints/").next().unwrap_or_default();
        let Some(c) = s.resources.get(&key(collection)).cloned() else {
            return (404, vec![], err("ParentResourceNotFound", &format!("Collection '{collection}' was not found.")));
        };
        let mode = &body["properties"]["consistencyMode"];
        let crash = match mode.as_str() {
            None => false,
            Some("CrashConsistent") => true,
            Some(other) => {
                return (
                    400,
                    vec![],
                    err(
                        "InvalidParameter",
                        &format!("consistencyMode {other}: for now, only CrashConsistent is accepted"),
                    ),
                )
            }
        };
        let vm_id = c["properties"]["source"]["id"].as_str().unwrap_or_default().to_owned();
        let Some(vm) = s.resources.get(&key(&vm_id)).cloned() else {
            return (404, vec![], err("ResourceNotFound", &format!("The source VM '{vm_id}' was not found.")));
        };
        let vm_key = key(&vm_id);
        let of_vm: Vec<&Value> = s
            .resources
            .values()
            .filter(|r| r["type"] == "Microsoft.Compute/restorePointCollections/restorePoints")
            .filter(|r| key(r["properties"]["sourceVm"].as_str().unwrap_or_default()) == vm_key)
            .collect();
        if of_vm.iter().any(|r| r["properties"]["provisioningState"] == "Creating") {
            return (
                409,
                vec![],
                err("VMRestorePointClientError", "There is a concurrent 'Create RestorePoint' operation on this VM."),
            );
        }
        if of_vm.len() >= 500 {
            return (409, vec![], err("VMRestorePointClientError", "The maximum allowed snapshot limit is reached."));
        }
        let now = chrono::Utc::now().timestamp();
        let every = if crash { s.restore_point_every[0] } else { s.restore_point_every[1] };
        let last = s.restore_points_taken.iter().filter(|(v, _, c)| *v == vm_key && *c == crash).map(|t| t.1).max();
        if let Some(wait) = last.map(|t| t + every as i64 - now).filter(|w| *w > 0) {
            return (
                429,
                vec![("Retry-After".into(), wait.to_string())],
                err("OperationNotAllowed", "Restore points of this VM are taken too often."),
            );
        }
        let disks = vm_disks(&vm);
        for (_, d) in &disks {
            let sku = s.resources.get(&key(d)).and_then(|r| r["sku"]["name"].as_str().map(str::to_owned));
            let shared = s.resources.get(&key(d)).is_some_and(|r| r["properties"]["maxShares"].as_u64() > Some(1));
            if shared || matches!(sku.as_deref(), Some("PremiumV2_LRS" | "UltraSSD_LRS")) {
                return (
                    400,
                    vec![],
                    err("OperationNotAllowed", &format!("Disk {d} is not supported by restore points.")),
                );
            }
        }
        s.restore_points_taken.push((vm_key, now, crash));
        // Every disk at once: nothing else runs while the lock is held.
        let mut point = example("RestorePoint_Create.json", "201");
        point["id"] = path.into();
        point["name"] = path.rsplit('/').next().unwrap_or_default().into();
        point["type"] = "Microsoft.Compute/restorePointCollections/restorePoints".into();
        let props = &mut point["properties"];
        props.as_object_mut().map(|p| p.remove("excludeDisks"));
        let os_type = vm["properties"]["storageProfile"]["osDisk"]["osType"].as_str().unwrap_or("Linux").to_owned();
        let meta = &mut props["sourceMetadata"];
        meta["location"] = vm["location"].clone();
        meta["storageProfile"]["dataDisks"] = json!([]);
        for (lun, d) in disks {
            let file = s.files.get(&key(&d)).cloned();
            let Some(file) = file else { return (404, vec![], err("NotFound", &format!("disk {d} has no bytes"))) };
            s.next_op += 1;
            let name = d.rsplit('/').next().unwrap_or_default().to_owned();
            let drp = format!("{path}/diskRestorePoints/{name}_{:08x}", s.next_op);
            let copy = self.dir.join(format!("drp-{}.img", s.next_op));
            if let Err(e) = std::fs::copy(&file, &copy) {
                return (500, vec![], err("InternalError", &e.to_string()));
            }
            s.files.insert(key(&drp), copy);
            s.resources.insert(
                key(&drp),
                json!({"id": drp, "name": drp.rsplit('/').next(), "type":
                    "Microsoft.Compute/restorePointCollections/restorePoints/diskRestorePoints",
                    "properties": {"timeCreated": chrono::Utc::now().to_rfc3339(), "sourceResourceId": d,
                    "familyId": format!("family-{}", key(&d)), "networkAccessPolicy": "AllowAll",
                    "publicNetworkAccess": "Enabled"}}),
            );
            let entry = json!({"name": name, "caching": "None", "managedDisk": {"id": d, "storageAccountType": "Premium_LRS"},
                               "diskRestorePoint": {"id": drp}});
            match lun {
                None => {
                    let mut os = entry;
                    os["osType"] = os_type.clone().into();
                    meta["storageProfile"]["osDisk"] = os;
                }
                Some(lun) => {
                    let mut data = entry;
                    data["lun"] = lun.into();
                    if let Some(a) = meta["storageProfile"]["dataDisks"].as_array_mut() {
                        a.push(data);
                    }
                }
            }
        }
        let application = if os_type == "Windows" { "ApplicationConsistent" } else { "FileSystemConsistent" };
        props["consistencyMode"] = (if crash { "CrashConsistent" } else { application }).into();
        props["provisioningState"] = "Creating".into();
        props["timeCreated"] = chrono::Utc::now().to_rfc3339().into();
        // (Not in the answer's model: which VM it is of, for the rules above.)
        props["sourceVm"] = vm_id.into();
        s.resources.insert(key(path), point.clone());
        let outcome = match (fail, crash, s.no_vm_agent) {
            (Some(f), _, _) => Outcome::Failed(key(path), f.code.into(), "injected by the simulator".into()),
            (None, false, true) => Outcome::Failed(
                key(path),
                "VMAgentStatusCommunicationError".into(),
                "VM has not reported status for VM agent or extensions.".into(),
            ),
            (None, _, _) => Outcome::Provisioned(key(path)),
        };
        let id = self.new_op(s, outcome);
        let op = format!("{}/ops/{id}?api-version=2025-04-01", self.base);
        if let Some(p) = point["properties"].as_object_mut() {
            p.remove("sourceVm");
        }
        (201, vec![self.ra(s), ("Azure-AsyncOperation".into(), op)], point)
    }

    /// A collection with its restore points (`$expand=restorePoints`).
    pub(super) fn expanded(&self, s: &SimState, collection: &Value) -> Value {
        let prefix = format!("{}/restorepoints/", key(collection["id"].as_str().unwrap_or_default()));
        let points: Vec<Value> = s
            .resources
            .iter()
            .filter(|(k, _)| k.starts_with(&prefix) && !k[prefix.len()..].contains('/'))
            .map(|(_, v)| v.clone())
            .collect();
        let mut c = collection.clone();
        c["properties"]["restorePoints"] = points.into();
        c
    }

    /// Why a restore point or collection cannot be deleted now, if it cannot.
    pub(super) fn still_read(&self, s: &SimState, k: &str) -> Option<Reply> {
        let prefix = format!("{k}/");
        s.grants.values().any(|g| g.starts_with(&prefix)).then(|| {
            (
                409,
                vec![],
                err(
                    "DiskRestorePointUsedByCustomer",
                    "A disk restore point has an active SAS: call EndGetAccess first.",
                ),
            )
        })
    }

    /// The guest writes between two per-disk snapshots: the next value of
    /// its counter goes to the first 8 bytes of every disk of the VM that
    /// holds `disk` (a database writing its data and log disks together).
    pub(super) fn guest_writes(&self, s: &mut SimState, disk: &str) {
        let Some(vm) = s
            .resources
            .values()
            .find(|r| {
                r["type"] == "Microsoft.Compute/virtualMachines" && vm_disks(r).iter().any(|d| key(&d.1) == key(disk))
            })
            .cloned()
        else {
            return;
        };
        s.guest_counter += 1;
        for (_, d) in vm_disks(&vm) {
            if let Some(file) = s.files.get(&key(&d)) {
                use std::os::unix::fs::FileExt;
                let f = std::fs::OpenOptions::new().write(true).open(file).unwrap();
                f.write_all_at(&s.guest_counter.to_le_bytes(), 0).unwrap();
            }
        }
    }
}
