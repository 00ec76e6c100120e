//! The simulator's resources and operations: GET (one resource, a list
//! with `nextLink`, Resource SKUs), PUT, DELETE, and the long-running
//! operations they start, polled at `Azure-AsyncOperation` or `Location`.

use serde_json::{json, Value};

use super::{err, key, skus, url_decode, ArmSim, FailRule, Outcome, Reply, SimState, SUB};

impl ArmSim {
    pub(super) fn ra(&self, s: &SimState) -> (String, String) {
        ("Retry-After".to_owned(), s.poll_after.to_string())
    }

    pub(super) fn new_op(&self, s: &mut SimState, outcome: Outcome) -> u64 {
        s.next_op += 1;
        let id = s.next_op;
        let polls = s.polls;
        s.ops.insert(id, (polls, outcome));
        id
    }

    pub(super) fn get(&self, s: &mut SimState, path: &str, target: &str) -> Reply {
        let k = key(path);
        // A snapshot copying in the background becomes Available after a
        // few looks (Snapshot_GetIncrementalSnapshot.json shows the state).
        if let Some(left) = s.pending.get(&k).copied() {
            if left == 0 {
                s.pending.remove(&k);
                if let Some(r) = s.resources.get_mut(&k) {
                    r["properties"]["snapshotAccessState"] = "Available".into();
                }
            } else {
                s.pending.insert(k.clone(), left - 1);
            }
        }
        if let Some(vm) = k.strip_suffix("/instanceview").and_then(|v| s.resources.get(v)) {
            return (200, vec![], instance_view(vm, !s.no_vm_agent));
        }
        if let Some(r) = s.resources.get(&k) {
            if r["type"] == "Microsoft.Compute/restorePointCollections" && target.contains("$expand=restorePoints") {
                return (200, vec![], self.expanded(s, r));
            }
            return (200, vec![], r.clone());
        }
        // Permissions - List For Resource Group / For Resource
        // (Authorization/stable/2022-04-01/authorization-RoleDefinitionsCalls.json,
        // examples/GetPermissions.json: one entry of actions, notActions,
        // dataActions, notDataActions, and nextLink).
        if let Some(scope) = k.strip_suffix("/providers/microsoft.authorization/permissions") {
            let not: Vec<&str> =
                s.denied.iter().filter(|(p, _)| scope.starts_with(p.as_str())).map(|(_, a)| a.as_str()).collect();
            return (
                200,
                vec![],
                json!({"value": [{"actions": ["*"], "notActions": not, "dataActions": [], "notDataActions": []}],
                       "nextLink": null}),
            );
        }
        // Usage - List (ComputeRP 2024-07-01; the shape of
        // examples/computeRPCommonExamples/Usage_List_MaximumSet_Gen.json):
        // unit, currentValue, limit, name {value, localizedValue}.
        if let Some(loc) = k
            .strip_prefix(&format!("/subscriptions/{SUB}/providers/microsoft.compute/locations/"))
            .and_then(|r| r.strip_suffix("/usages"))
        {
            let mut names: Vec<String> = skus::families();
            names.push("cores".into());
            // Counts of disks and snapshots, as the service lists them
            // (the spec names none; limits as a test sets them).
            names.extend(["PremiumDiskCount", "StandardDiskCount", "StandardSnapshotCount"].map(String::from));
            let value: Vec<Value> = names
                .iter()
                .map(|n| {
                    let standard = if n.ends_with("Count") { 50_000 } else { 100 };
                    let (used, limit) = s.usage.get(n).copied().unwrap_or((0, standard));
                    json!({"unit": "Count", "currentValue": used, "limit": limit,
                           "name": {"value": n, "localizedValue": format!("{n} vCPUs in {loc}")}})
                })
                .collect();
            return (200, vec![], json!({"value": value, "nextLink": null}));
        }
        // ResourceSkus_List (ListAvailableResourceSkusForARegion.json).
        if k == format!("/subscriptions/{SUB}/providers/microsoft.compute/skus") {
            let filter = target.split(['?', '&']).find_map(|q| q.strip_prefix("$filter=")).unwrap_or_default();
            let filter = url_decode(filter);
            let Some(location) = filter.strip_prefix("location eq '").and_then(|l| l.strip_suffix('\'')) else {
                return (400, vec![], err("InvalidFilter", "the simulator answers $filter=location eq 'L' only"));
            };
            return (200, vec![], json!({"value": skus::vm_skus(location, &s.restricted_sizes), "nextLink": null}));
        }
        // A list: /subscriptions/S/resourceGroups/RG/providers/NS/TYPE, or
        // a gallery's images or an image's versions (GalleryImage_ListByGallery.json,
        // GalleryImageVersion_ListByGalleryImage.json).
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        let nested = matches!(parts.len(), 9 | 11) && parts[6].eq_ignore_ascii_case("galleries");
        if (parts.len() == 7 || nested) && parts[4].eq_ignore_ascii_case("providers") {
            let prefix = format!("{}/", key(path));
            let all: Vec<Value> = s
                .resources
                .iter()
                .filter(|(k, _)| k.starts_with(&prefix) && !k[prefix.len()..].contains('/'))
                .map(|(_, v)| v.clone())
                .collect();
            let skip: usize = target
                .split(['?', '&'])
                .find_map(|q| q.strip_prefix("$skiptoken="))
                .and_then(|t| t.parse().ok())
                .unwrap_or(0);
            let page: Vec<Value> = all.iter().skip(skip).take(s.page.max(1)).cloned().collect();
            let mut out = json!({ "value": page });
            if skip + s.page.max(1) < all.len() {
                let api = target.split(['?', '&']).find(|q| q.starts_with("api-version=")).unwrap_or("");
                out["nextLink"] = format!("{}{path}?{api}&$skiptoken={}", self.base, skip + s.page.max(1)).into();
            }
            return (200, vec![], out);
        }
        (404, vec![], err("ResourceNotFound", &format!("The Resource '{path}' was not found.")))
    }

    pub(super) fn put(&self, s: &mut SimState, path: &str, mut v: Value, fail: Option<FailRule>) -> Reply {
        let name = path.rsplit('/').next().unwrap_or("").to_owned();
        let lower = path.to_ascii_lowercase();
        if lower.contains("/microsoft.compute/restorepointcollections/") {
            return match lower.contains("/restorepoints/") {
                true => self.put_restore_point(s, path, v, fail),
                false => self.put_collection(s, path, v),
            };
        }
        let rtype = if lower.contains("/microsoft.compute/galleries/") && lower.contains("/versions/") {
            "Microsoft.Compute/galleries/images/versions"
        } else if lower.contains("/microsoft.compute/snapshots/") {
            "Microsoft.Compute/snapshots"
        } else if lower.contains("/microsoft.compute/virtualmachines/") {
            "Microsoft.Compute/virtualMachines"
        } else if lower.contains("/microsoft.compute/disks/") {
            "Microsoft.Compute/disks"
        } else {
            return (400, vec![], err("InvalidResourceType", "unsupported by the simulator"));
        };
        if v["location"].as_str().is_none() {
            return (400, vec![], err("LocationRequired", "The location property is required for this definition."));
        }
        v["id"] = path.into();
        v["name"] = name.clone().into();
        v["type"] = rtype.into();
        v["properties"]["provisioningState"] = "Creating".into();
        v["properties"]["timeCreated"] = chrono::Utc::now().to_rfc3339().into();
        let created = match rtype {
            "Microsoft.Compute/snapshots" => self.put_snapshot(s, path, &mut v),
            "Microsoft.Compute/virtualMachines" => self.put_vm(s, path, &mut v, fail.is_none()),
            "Microsoft.Compute/galleries/images/versions" => self.put_gallery_version(s, path, &mut v),
            _ if matches!(v["properties"]["creationData"]["createOption"].as_str(), Some("Copy" | "FromImage")) => {
                self.put_disk_from(s, path, &mut v)
            }
            _ => {
                let cd = &v["properties"]["creationData"];
                let account = cd["storageAccountId"].as_str().unwrap_or_default();
                if cd["createOption"] != "Import" || cd["sourceUri"].as_str().is_none_or(|u| u.contains('?')) {
                    Err((
                        400,
                        err("InvalidParameter", "standalone disks: createOption Import from a blob URL without SAS"),
                    ))
                } else if !s.resources.contains_key(&key(account)) {
                    Err((404, err("StorageAccountNotFound", "Storage account not found.")))
                } else {
                    // Import copies the blob into the disk while it is
                    // created (the blob may go once it is).
                    let uri = cd["sourceUri"].as_str().unwrap_or_default().to_owned();
                    let copy = self.dir.join(format!("import-{}.vhd", s.next_op + 1 + s.files.len() as u64));
                    match super::dataplane::fetch_blob(&uri, &copy) {
                        Ok(()) => {
                            s.files.insert(key(path), copy);
                            Ok(())
                        }
                        Err(e) => Err((400, err("InvalidParameter", &format!("sourceUri {uri}: {e}")))),
                    }
                }
            }
        };
        if let Err((st, e)) = created {
            return (st, vec![], e);
        }
        s.resources.insert(key(path), v.clone());
        let outcome = match fail {
            Some(f) => Outcome::Failed(key(path), f.code.into(), "injected by the simulator".into()),
            None => Outcome::Provisioned(key(path)),
        };
        let id = self.new_op(s, outcome);
        let op = format!("{}/ops/{id}?api-version=2025-01-02", self.base);
        // The examples' first answers: a VM 201
        // (VirtualMachine_Create_WithNetworkInterfaceConfiguration.json), a
        // snapshot or disk 202 (Snapshot_Create_InstantAccessSnapshot.json,
        // Disk_Create_ByImportingBlobFromADifferentSubscription.json).
        // A gallery image version 201 too (GalleryImageVersion_Create_WithVHD.json).
        if rtype == "Microsoft.Compute/virtualMachines" || rtype == "Microsoft.Compute/galleries/images/versions" {
            (201, vec![self.ra(s), ("Azure-AsyncOperation".into(), op)], v)
        } else {
            let loc = format!("{}/locs/{id}?monitor=true", self.base);
            (202, vec![self.ra(s), ("Azure-AsyncOperation".into(), op), ("Location".into(), loc)], v)
        }
    }

    pub(super) fn delete(&self, s: &mut SimState, path: &str) -> Reply {
        let k = key(path);
        let Some(r) = s.resources.get(&k).cloned() else { return (204, vec![], Value::Null) };
        if r["type"] == "Microsoft.Compute/disks"
            && r["managedBy"].as_str().is_some_and(|m| s.resources.contains_key(&key(m)))
        {
            return (409, vec![], err("OperationNotAllowed", "Disk is attached to a VM."));
        }
        let mut gone = vec![k.clone()];
        if r["type"].as_str().is_some_and(|t| t.starts_with("Microsoft.Compute/restorePointCollections")) {
            if let Some(refused) = self.still_read(s, &k) {
                return refused;
            }
            // A collection's restore points and a point's disk restore points go with it.
            let prefix = format!("{k}/");
            gone.extend(s.resources.keys().filter(|rk| rk.starts_with(&prefix)).cloned());
        }
        if r["type"] == "Microsoft.Compute/virtualMachines" {
            if let Some(mut c) = s.workers.remove(r["name"].as_str().unwrap_or_default()) {
                let _ = c.kill();
                let _ = c.wait();
            }
            // deleteOption: Delete takes a disk or NIC along; Detach (an
            // attached disk's default) leaves it, no longer attached.
            let mut detached = Vec::new();
            for (rk, rv) in &s.resources {
                let owner = rv["managedBy"].as_str().or(rv["properties"]["virtualMachine"]["id"].as_str());
                if owner.is_some_and(|m| key(m) == k) {
                    match deletes_with(&r, rk, rv["name"].as_str().unwrap_or_default()) {
                        true => gone.push(rk.clone()),
                        false => detached.push(rk.clone()),
                    }
                }
            }
            for rk in detached {
                if let Some(rv) = s.resources.get_mut(&rk) {
                    rv["managedBy"] = Value::Null;
                    if let Some(p) = rv["properties"].as_object_mut() {
                        p.remove("virtualMachine");
                    }
                }
            }
        }
        let id = self.new_op(s, Outcome::Deleted(gone));
        (202, vec![self.ra(s), ("Location".into(), format!("{}/locs/{id}?monitor=true", self.base))], Value::Null)
    }

    pub(super) fn poll(&self, s: &mut SimState, id: u64, async_op: bool) -> Reply {
        let Some((left, outcome)) = s.ops.get(&id).cloned() else {
            return (404, vec![], err("NotFound", "no such operation"));
        };
        if left > 0 {
            s.ops.insert(id, (left - 1, outcome));
            let ra = self.ra(s);
            return if async_op {
                (200, vec![ra], json!({"status": "InProgress"}))
            } else {
                (202, vec![ra, ("Location".into(), format!("{}/locs/{id}", self.base))], Value::Null)
            };
        }
        let failed = match &outcome {
            Outcome::Provisioned(k) => {
                if let Some(r) = s.resources.get_mut(k) {
                    r["properties"]["provisioningState"] = "Succeeded".into();
                }
                None
            }
            Outcome::Failed(k, code, message) => {
                if let Some(r) = s.resources.get_mut(k) {
                    r["properties"]["provisioningState"] = "Failed".into();
                }
                if s.orphan_nic && s.resources.get(k).is_some_and(|r| r["type"] == "Microsoft.Compute/virtualMachines")
                {
                    // The VM and its disks are rolled back; its NIC stays, owned by nobody.
                    s.resources.remove(k);
                    let owned: Vec<String> = s
                        .resources
                        .iter()
                        .filter(|(_, r)| r["managedBy"].as_str().is_some_and(|m| key(m) == *k))
                        .map(|(rk, _)| rk.clone())
                        .collect();
                    for rk in owned {
                        s.resources.remove(&rk);
                    }
                    for r in s.resources.values_mut() {
                        if r["properties"]["virtualMachine"]["id"].as_str().is_some_and(|m| key(m) == *k) {
                            r["properties"].as_object_mut().map(|p| p.remove("virtualMachine"));
                        }
                    }
                }
                Some((code.clone(), message.clone()))
            }
            Outcome::Deleted(keys) => {
                for k in keys {
                    s.resources.remove(k);
                    s.files.remove(k);
                }
                None
            }
            Outcome::Output(_) | Outcome::Done => None,
        };
        match (async_op, failed) {
            (true, Some((code, message))) => {
                (200, vec![], json!({"status": "Failed", "error": {"code": code, "message": message}}))
            }
            // (An action's result is at its Location, not here.)
            (true, None) => (200, vec![], json!({"status": "Succeeded"})),
            (false, Some((code, message))) => (500, vec![], err(&code, &message)),
            (false, None) => match outcome {
                Outcome::Output(v) => (200, vec![], v),
                _ => (200, vec![], Value::Null),
            },
        }
    }
}

/// A VM's instance view in the shape of `VirtualMachine_Get_InstanceView.json`
/// (`statuses` with `ProvisioningState/...` and `PowerState/...` codes; the
/// VM agent's status under `vmAgent` when it reports): a VM runs once
/// provisioned, unless deallocated.
fn instance_view(vm: &Value, agent: bool) -> Value {
    let provisioning = vm["properties"]["provisioningState"].as_str().unwrap_or("Creating").to_ascii_lowercase();
    let power = match (provisioning.as_str(), vm["powerState"].as_str()) {
        (_, Some(p)) => p.to_owned(),
        ("succeeded", None) => "running".to_owned(),
        _ => "starting".to_owned(),
    };
    let status = |code: String| json!({"code": code, "level": "Info", "displayStatus": code});
    let mut v = json!({"statuses": [status(format!("ProvisioningState/{provisioning}")), status(format!("PowerState/{power}"))]});
    if agent && power == "running" {
        v["vmAgent"] = json!({"vmAgentVersion": "2.7.41491.1102", "statuses": [
            {"code": "ProvisioningState/succeeded", "level": "Info", "displayStatus": "Ready"}]});
    }
    v
}

/// Whether deleting `vm` deletes its disk or NIC `res` (by key or name):
/// the `deleteOption` the VM names for it, `Detach` when it names none.
fn deletes_with(vm: &Value, res: &str, name: &str) -> bool {
    let p = &vm["properties"];
    let sp = &p["storageProfile"];
    let disks = std::iter::once(&sp["osDisk"]).chain(sp["dataDisks"].as_array().into_iter().flatten());
    let nics = p["networkProfile"]["networkInterfaces"].as_array().into_iter().flatten();
    let named = |d: &Value| {
        d["managedDisk"]["id"].as_str().or(d["id"].as_str()).is_some_and(|id| key(id) == res) || d["name"] == name
    };
    let option = disks
        .filter(|d| named(d))
        .map(|d| d["deleteOption"].clone())
        .chain(nics.filter(|n| named(n)).map(|n| n["properties"]["deleteOption"].clone()))
        .next();
    option.is_some_and(|o| o == "Delete")
}
