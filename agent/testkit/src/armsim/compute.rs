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
        let cd = &v["properties"]["creationData"];
        if cd["createOption"] != "Copy" {
            return Err((400, err("InvalidParameter", "createOption must be Copy")));
        }
        let src = cd["sourceResourceId"].as_str().unwrap_or_default().to_owned();
        let Some(file) = s.files.get(&key(&src)).cloned() else {
            return Err((404, err("NotFound", &format!("Resource {src} is not found."))));
        };
        // The snapshot is taken when the request arrives: copy the bytes now.
        let copy = self.dir.join(format!("snap-{}.img", s.next_op + 1 + s.files.len() as u64));
        std::fs::copy(&file, &copy).map_err(|e| (500, err("InternalError", &e.to_string())))?;
        let size = std::fs::metadata(&copy).map(|m| m.len()).unwrap_or(0);
        v["properties"]["diskSizeBytes"] = size.into();
        v["properties"]["incrementalSnapshotFamilyId"] = format!("family-{}", key(&src)).into();
        s.files.insert(key(path), copy);
        Ok(())
    }

    /// Validate a worker VM against what ARM would refuse or what the
    /// provider promises (no public IP, disks and NIC deleted with it), and
    /// create its inline disks and NIC.
    pub(super) fn put_vm(&self, s: &mut SimState, path: &str, v: &Value, boots: bool) -> Result<(), (u16, Value)> {
        let bad = |m: &str| Err((400, err("InvalidParameter", m)));
        let p = &v["properties"];
        // The spec's enum (Azure/azure-rest-api-specs
        // specification/compute/resource-manager/Microsoft.Compute/ComputeRP/stable/2025-04-01/
        // computeRPCommon.json, definitions.NetworkProfile.networkApiVersion, commit 802dc37d):
        // the Microsoft.Network version the inline NIC is made with.
        const NETWORK_API_VERSIONS: [&str; 2] = ["2020-11-01", "2022-11-01"];
        if let Some(nv) = p["networkProfile"]["networkApiVersion"].as_str() {
            if !NETWORK_API_VERSIONS.contains(&nv) {
                return bad(&format!(
                    "The value '{nv}' of parameter 'networkProfile.networkApiVersion' is not allowed. Allowed values \
                     are '2020-11-01', '2022-11-01'."
                ));
            }
        }
        if p["storageProfile"]["osDisk"]["createOption"] == "Attach" {
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
        if text.len() > 64 * 1024 || !text.starts_with("#cloud-config") {
            return bad("userData is not cloud-config within 64 KiB");
        }
        let rg = path.split("/providers/").next().unwrap_or_default().to_owned();
        let location = v["location"].clone();
        let mut made = Vec::new();
        let mut luns = BTreeMap::new();
        for d in p["storageProfile"]["dataDisks"].as_array().cloned().unwrap_or_default() {
            let src = d["sourceResource"]["id"].as_str().unwrap_or_default();
            let Some(file) = s.files.get(&key(src)).cloned() else {
                return Err((404, err("NotFound", &format!("sourceResource {src} is not found."))));
            };
            if d["createOption"] != "Copy" || d["deleteOption"] != "Delete" {
                return bad("data disks must be createOption Copy, deleteOption Delete");
            }
            let name = d["name"].as_str().unwrap_or_default().to_owned();
            let id = format!("{rg}/providers/Microsoft.Compute/disks/{name}");
            let copy = self.dir.join(format!("{name}.img"));
            std::fs::copy(&file, &copy).map_err(|e| (500, err("InternalError", &e.to_string())))?;
            luns.insert(d["lun"].as_u64().unwrap_or(0), copy.clone());
            s.files.insert(key(&id), copy);
            made.push((id, name, "Microsoft.Compute/disks"));
        }
        let os = p["storageProfile"]["osDisk"]["name"].as_str().unwrap_or_default().to_owned();
        made.push((format!("{rg}/providers/Microsoft.Compute/disks/{os}"), os, "Microsoft.Compute/disks"));
        let nic_name = nic["name"].as_str().unwrap_or_default().to_owned();
        made.push((
            format!("{rg}/providers/Microsoft.Network/networkInterfaces/{nic_name}"),
            nic_name,
            "Microsoft.Network/networkInterfaces",
        ));
        for (id, name, t) in made {
            let mut r = json!({"id": id, "name": name, "type": t, "location": location,
                   "properties": {"provisioningState": "Succeeded", "timeCreated": chrono::Utc::now().to_rfc3339()}});
            if t == "Microsoft.Compute/disks" {
                r["managedBy"] = path.into();
            } else {
                r["properties"]["virtualMachine"] = json!({ "id": path });
            }
            s.resources.insert(key(&id), r);
        }
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
