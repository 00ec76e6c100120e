//! The simulator's compute resources: incremental snapshots copied from
//! disk files, and VMs — a worker that boots like cloud-init and runs a real
//! agent, or a VM made of attached disks.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::{json, Value};

use super::{err, key, unb64, ArmSim, SimState};

impl ArmSim {
    pub(super) fn put_snapshot(&self, s: &mut SimState, path: &str, v: &mut Value) -> Result<(), (u16, Value)> {
        let cd = v["properties"]["creationData"].clone();
        if cd["createOption"] != "Copy" {
            return Err((400, err("InvalidParameter", "createOption must be Copy")));
        }
        let src = cd["sourceResourceId"].as_str().unwrap_or_default().to_owned();
        let Some(file) = s.files.get(&key(&src)).cloned() else {
            return Err((404, err("NotFound", &format!("Resource {src} is not found."))));
        };
        // The snapshot is taken when the request arrives: copy the bytes now.
        let copy = self.dir.join(format!("snap-{}.img", s.next_op + 1 + s.files.len() as u64));
        super::dataplane::sparse_copy(&file, &copy).map_err(|e| (500, err("InternalError", &e.to_string())))?;
        let size = std::fs::metadata(&copy).map(|m| m.len()).unwrap_or(0);
        v["properties"]["diskSizeBytes"] = size.into();
        v["properties"]["incrementalSnapshotFamilyId"] = format!("family-{}", key(&src)).into();
        if let Some(d) = s.snapshot_defaults.as_object() {
            for (k, val) in d {
                v["properties"][k] = val.clone();
            }
        }
        // A Premium SSD v2 or Ultra disk's snapshot copies in the
        // background: Pending, unless instant access was asked for
        // (Snapshot_Create_InstantAccessSnapshot.json).
        let sku = s.resources.get(&key(&src)).and_then(|d| d["sku"]["name"].as_str()).unwrap_or("Premium_LRS");
        let background = matches!(sku, "PremiumV2_LRS" | "UltraSSD_LRS");
        let state = if !background {
            "Available"
        } else if cd["instantAccessDurationMinutes"].is_u64() && s.instant_access {
            "InstantAccess"
        } else {
            let gets = s.pending_gets;
            s.pending.insert(key(path), gets);
            "Pending"
        };
        v["properties"]["snapshotAccessState"] = state.into();
        s.files.insert(key(path), copy);
        if s.guest_writes {
            self.guest_writes(s, &src);
        }
        Ok(())
    }

    /// Validate a worker VM against what ARM would refuse or what the
    /// provider promises (no public IP, disks and NIC deleted with it), and
    /// create its inline disks and NIC.
    pub(super) fn put_vm(&self, s: &mut SimState, path: &str, v: &mut Value, boots: bool) -> Result<(), (u16, Value)> {
        let bad = |m: &str| Err((400, err("InvalidParameter", m)));
        let props = v["properties"].clone();
        let p = &props;
        // (networkProfile.networkApiVersion and every other member are
        // checked against the SDK's models before this: spec.rs.)
        // The size must be one the region offers the subscription
        // (ResourceSkus_List), with room for the data disks.
        let size = p["hardwareProfile"]["vmSize"].as_str().unwrap_or_default();
        let location = v["location"].as_str().unwrap_or_default();
        let offered = super::skus::vm_skus(location, &s.restricted_sizes);
        let Some(sku) = offered.iter().find(|e| e["name"] == size && e["restrictions"] == json!([])) else {
            return Err((
                409,
                err("SkuNotAvailable", &format!("The requested size {size} is not available in location {location}.")),
            ));
        };
        let max_disks: usize =
            super::skus::capability(sku, "MaxDataDiskCount").and_then(|c| c.parse().ok()).unwrap_or(0);
        let disks = p["storageProfile"]["dataDisks"].as_array().map_or(0, Vec::len);
        if disks > max_disks {
            return Err((
                409,
                err(
                    "OperationNotAllowed",
                    &format!(
                        "The maximum number of data disks allowed to be attached to a VM of this size is {max_disks}."
                    ),
                ),
            ));
        }
        let premium_io = super::skus::capability(sku, "PremiumIO") == Some("True");
        if p["storageProfile"]["osDisk"]["createOption"] == "Attach" {
            // The VM's security type must be the OS disk's (a Trusted
            // Launch disk boots only on a Trusted Launch VM, and back).
            let os_id = key(p["storageProfile"]["osDisk"]["managedDisk"]["id"].as_str().unwrap_or_default());
            let disk_type = s.resources.get(&os_id).map(|d| d["properties"]["securityProfile"]["securityType"].clone());
            let vm_type = &p["securityProfile"]["securityType"];
            if disk_type
                .as_ref()
                .is_some_and(|d| d.as_str().unwrap_or("Standard") != vm_type.as_str().unwrap_or("Standard"))
            {
                return bad(&format!(
                    "The security type of the VM ({vm_type}) does not match the security type of its OS disk ({}).",
                    disk_type.unwrap_or_default()
                ));
            }
            if vm_type == "TrustedLaunch" && p["securityProfile"]["uefiSettings"].is_null() {
                return bad("a Trusted Launch VM needs securityProfile.uefiSettings");
            }
            // A VM made of existing disks (a migration's result): they must
            // exist, be unattached and in the VM's region.
            let mut ids = vec![p["storageProfile"]["osDisk"]["managedDisk"]["id"].clone()];
            ids.extend(
                p["storageProfile"]["dataDisks"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|d| d["managedDisk"]["id"].clone()),
            );
            for id in ids {
                let k = key(id.as_str().unwrap_or_default());
                match s.resources.get_mut(&k) {
                    Some(d) if d["managedBy"].is_null() && d["location"] == v["location"] => {
                        d["managedBy"] = path.into()
                    }
                    Some(_) => {
                        return Err((409, err("OperationNotAllowed", "the disk is attached or in another region")))
                    }
                    None => return Err((404, err("NotFound", &format!("disk {id} not found")))),
                }
            }
            if !p["osProfile"].is_null() {
                return bad("osProfile is not allowed with an attached OS disk");
            }
            // Its NIC, made from the configuration: named by Azure, with
            // the configuration's tags and deleteOption.
            let nic = &p["networkProfile"]["networkInterfaceConfigurations"][0];
            if nic.is_object() {
                let rg = path.split("/providers/").next().unwrap_or_default().to_owned();
                s.next_op += 1;
                let nic_name = format!("toBeCreatedNetworkInterface{}", s.next_op);
                let nic_id = format!("{rg}/providers/Microsoft.Network/networkInterfaces/{nic_name}");
                s.resources.insert(
                    key(&nic_id),
                    json!({"id": nic_id, "name": nic_name, "type": "Microsoft.Network/networkInterfaces",
                           "location": v["location"], "tags": nic["tags"], "properties": {"provisioningState": "Succeeded",
                           "virtualMachine": {"id": path}, "ipConfigurations": nic["properties"]["ipConfigurations"]}}),
                );
                let delete = nic["properties"]["deleteOption"].as_str().unwrap_or("Detach");
                v["properties"]["networkProfile"] = json!({"networkInterfaces": [
                    {"id": nic_id, "properties": {"primary": true, "deleteOption": delete}}]});
            }
            return Ok(());
        }
        let nic = &p["networkProfile"]["networkInterfaceConfigurations"][0];
        if nic["properties"]["deleteOption"] != "Delete" {
            return bad("the worker's NIC must be deleted with it");
        }
        if !nic["properties"]["ipConfigurations"][0]["properties"]["publicIPAddressConfiguration"].is_null() {
            return bad("the worker must have no public IP");
        }
        if v["identity"]["type"] != "UserAssigned" {
            return bad("the worker must run as a user-assigned identity");
        }
        if p["storageProfile"]["osDisk"]["deleteOption"] != "Delete" {
            return bad("the worker's OS disk must be deleted with it");
        }
        let ud = p["userData"].as_str().unwrap_or_default();
        let Some(text) = unb64(ud).and_then(|b| String::from_utf8(b).ok()) else {
            return bad("userData must be base64");
        };
        // "The user data must be Base64 encoded ... can't exceed 64 KB": the
        // encoded string is counted.
        if ud.len() > 64 * 1024 || !text.starts_with("#cloud-config") {
            return bad("userData is not cloud-config within 64 KiB of base64");
        }
        let rg = path.split("/providers/").next().unwrap_or_default().to_owned();
        let location = v["location"].clone();
        let mut made = Vec::new();
        let mut luns = BTreeMap::new();
        let mut skus = Vec::new();
        for d in p["storageProfile"]["dataDisks"].as_array().cloned().unwrap_or_default() {
            let src = d["sourceResource"]["id"].as_str().unwrap_or_default();
            let Some(file) = s.files.get(&key(src)).cloned() else {
                return Err((404, err("NotFound", &format!("sourceResource {src} is not found."))));
            };
            if s.resources.get(&key(src)).is_some_and(|r| r["properties"]["snapshotAccessState"] == "Pending") {
                return Err((
                    409,
                    err("OperationNotAllowed", &format!("Snapshot {src} is not ready for use (Pending).")),
                ));
            }
            // Without a storage type, a disk made this way is Standard_LRS
            // (the example's osDisk.managedDisk.storageAccountType).
            let disk_sku = d["managedDisk"]["storageAccountType"].as_str().unwrap_or("Standard_LRS").to_owned();
            if disk_sku.starts_with("Premium") && !premium_io {
                return bad(&format!("The VM size {size} does not support the storage account type {disk_sku}."));
            }
            skus.push(disk_sku);
            // A snapshot is copied, a disk restore point restored
            // (VirtualMachine_Create_WithDataDisksFromSourceResource.json).
            let how = if key(src).contains("/diskrestorepoints/") { "Restore" } else { "Copy" };
            if d["createOption"] != how || d["deleteOption"] != "Delete" {
                return bad(&format!("data disks of {src} must be createOption {how}, deleteOption Delete"));
            }
            let name = d["name"].as_str().unwrap_or_default().to_owned();
            let id = format!("{rg}/providers/Microsoft.Compute/disks/{name}");
            let copy = self.dir.join(format!("{name}.img"));
            super::dataplane::sparse_copy(&file, &copy).map_err(|e| (500, err("InternalError", &e.to_string())))?;
            luns.insert(d["lun"].as_u64().unwrap_or(0), copy.clone());
            s.files.insert(key(&id), copy);
            made.push((id, name, "Microsoft.Compute/disks"));
        }
        let os = p["storageProfile"]["osDisk"]["name"].as_str().unwrap_or_default().to_owned();
        made.push((format!("{rg}/providers/Microsoft.Compute/disks/{os}"), os, "Microsoft.Compute/disks"));
        skus.push("StandardSSD_LRS".into());
        // Azure names the NIC, not the configuration's `name`
        // (VirtualMachine_Create_WithNetworkInterfaceConfiguration.json
        // answers `networkInterfaces/toBeCreatedNetworkInterface`); it
        // carries the configuration's tags.
        s.next_op += 1;
        let nic_name = format!("toBeCreatedNetworkInterface{}", s.next_op);
        let nic_id = format!("{rg}/providers/Microsoft.Network/networkInterfaces/{nic_name}");
        made.push((nic_id.clone(), nic_name, "Microsoft.Network/networkInterfaces"));
        let mut skus = skus.into_iter();
        for (id, name, t) in made {
            let mut r = json!({"id": id, "name": name, "type": t, "location": location,
                   "properties": {"provisioningState": "Succeeded", "timeCreated": chrono::Utc::now().to_rfc3339()}});
            if t == "Microsoft.Compute/disks" {
                r["managedBy"] = path.into();
                r["sku"] = json!({ "name": skus.next().unwrap_or_default() });
            } else {
                r["properties"]["virtualMachine"] = json!({ "id": path });
                r["tags"] = nic["tags"].clone();
            }
            s.resources.insert(key(&id), r);
        }
        // The VM as the example answers it: the NIC by id, the
        // configurations not echoed.
        v["properties"]["networkProfile"] = json!({"networkInterfaces": [{"id": nic_id, "properties": {"primary": true,
            "deleteOption": nic["properties"]["deleteOption"]}}]});
        let vm_name = v["name"].as_str().unwrap_or_default().to_owned();
        s.user_data.insert(vm_name.clone(), text.clone());
        if !boots {
            return Ok(()); // its creation will fail: it never runs
        }
        // NVMe VM sizes (v6) show data disks under azure-vm-utils' links,
        // SCSI ones under WALinuxAgent's.
        let nvme = v["properties"]["hardwareProfile"]["vmSize"].as_str().is_some_and(|z| z.ends_with("_v6"));
        self.boot(s, &vm_name, &text, &luns, nvme)
    }

    /// What cloud-init and systemd would do: write the job, start the agent.
    fn boot(
        &self,
        s: &mut SimState,
        vm: &str,
        cloud_config: &str,
        luns: &BTreeMap<u64, PathBuf>,
        nvme: bool,
    ) -> Result<(), (u16, Value)> {
        let docs = yaml_rust2::YamlLoader::load_from_str(cloud_config)
            .map_err(|e| (400, err("InvalidUserData", &e.to_string())))?;
        let files = docs[0]["write_files"].as_vec().cloned().unwrap_or_default();
        let job = files
            .iter()
            .find(|f| f["path"].as_str() == Some("/etc/diskferry/job.json"))
            .and_then(|f| unb64(f["content"].as_str().unwrap_or_default()))
            .ok_or((400, err("InvalidUserData", "no job in the user data")))?;
        let job = String::from_utf8(job).unwrap_or_default();
        let dir = self.dir.join(vm);
        // The worker's /dev/disk/azure: a link per attached disk.
        let links = dir.join("dev-disk-azure");
        for (lun, file) in luns {
            let link =
                if nvme { links.join(format!("data/by-lun/{lun}")) } else { links.join(format!("scsi1/lun{lun}")) };
            std::fs::create_dir_all(link.parent().unwrap()).unwrap();
            std::os::unix::fs::symlink(file, link).unwrap();
        }
        std::fs::write(dir.join("job.json"), job).unwrap();
        let log = std::fs::File::create(dir.join("agent.log")).unwrap();
        let mut cmd = Command::new(&self.agent);
        cmd.arg("run").arg("--job").arg(dir.join("job.json")).arg("--status-file").arg(dir.join("status.json"));
        cmd.stdin(Stdio::null()).stdout(log.try_clone().unwrap()).stderr(log);
        for (k, v) in &self.worker_env {
            cmd.env(k, v);
        }
        cmd.env("DISKFERRY_AZURE_DISKS", &links);
        let child = cmd.spawn().map_err(|e| (500, err("InternalError", &e.to_string())))?;
        s.workers.insert(vm.to_owned(), child);
        Ok(())
    }
}
