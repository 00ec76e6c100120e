//! The worker VM: its size (chosen from Resource SKUs to take every source
//! disk), its body (`VirtualMachines_CreateOrUpdate`, checked against
//! ComputeRP 2025-04-01's `VirtualMachine`), and its teardown.
//!
//! Its inline NIC is named by Azure, not by the configuration's `name`
//! (`VirtualMachine_Create_WithNetworkInterfaceConfiguration.json` answers
//! with `.../networkInterfaces/toBeCreatedNetworkInterface`). So the NIC is
//! tagged with its worker (the configuration's `tags`), its id is read from
//! the VM's `networkProfile.networkInterfaces` as soon as the create
//! answers and again before the delete, and a teardown or `gc` also finds
//! it by its tags when the VM is gone.

use anyhow::{anyhow, Result};
use diskferry_blob::PageStore;
use serde_json::{json, Value};

use super::names::{self, with_api, NETWORK_API, VM_API};
use super::restore_points::DiskPoint;
use super::sizes::{self, SizeFacts};
use super::userdata::{self, AgentSource};
use super::AzureCloud;
use crate::cloud::WorkerSpec;

/// Tag on a worker's NIC: the worker it belongs to.
pub const TAG_WORKER: &str = "diskferry-worker";

/// Storage types that need a size with `PremiumIO`.
fn is_premium(sku: &str) -> bool {
    sku.starts_with("Premium")
}

impl AzureCloud {
    /// The sizes of `location` (Resource SKUs, every page), once per
    /// location per coordinator: the list is long and changes rarely.
    fn sizes_in(&self, location: &str) -> Result<Vec<SizeFacts>> {
        let key = location.to_ascii_lowercase();
        if let Some(known) = self.sizes.lock().map_err(|_| anyhow!("poisoned"))?.get(&key) {
            return Ok(known.clone());
        }
        let filter: String =
            url::form_urlencoded::byte_serialize(format!("location eq '{location}'").as_bytes()).collect();
        let path = format!(
            "/subscriptions/{}/providers/Microsoft.Compute/skus?api-version={}&$filter={filter}",
            self.s.subscription,
            sizes::SKUS_API
        );
        let mut known = Vec::new();
        for page in self.list_pages(&path)? {
            known.extend(sizes::parse(&page, location));
        }
        self.sizes.lock().map_err(|_| anyhow!("poisoned"))?.insert(key, known.clone());
        Ok(known)
    }

    /// The worker's size for `disks` data disks in `location`.
    pub(super) fn worker_size(&self, location: &str, disks: usize) -> Result<SizeFacts> {
        let known = self.sizes_in(location).map_err(|e| anyhow!("looking up the worker's size: {e:#}"))?;
        let picked = sizes::pick(&self.s.sizes(), &known, disks, is_premium(&self.s.temp_disk_sku))
            .map_err(|e| anyhow!("in {location}: {e}"))?;
        Ok(picked.clone())
    }

    pub(super) fn worker_body(&self, w: &WorkerSpec<'_>, size: &str) -> Result<Value> {
        let mut job = w.job.clone();
        let container = self.s.status_container.trim_end_matches('/');
        job.status_blob = Some(format!("{container}/{}", Self::status_blob(w.name)));
        let agent = AgentSource {
            url: self.s.agent_url.clone(),
            sha256: self.s.agent_sha256.clone(),
            identity_client_id: self.s.identity_client_id.clone(),
        };
        let user_data = match userdata::render_base64(&job, &agent) {
            Err(e) if job.disks.iter().any(|d| d.hint.is_some()) => {
                eprintln!("note: worker {}: {e:#}; sending the job without range hints", w.name);
                job.disks.iter_mut().for_each(|d| d.hint = None);
                userdata::render_base64(&job, &agent)?
            }
            r => r?,
        };
        let img: Vec<&str> = self.s.image.split(':').collect();
        let data_disks: Vec<Value> = w
            .disks
            .iter()
            .map(|a| {
                // A snapshot is copied, a disk restore point restored
                // (VirtualMachine_Create_WithDataDisksFromSourceResource.json).
                let from = self.readable(&a.snapshot)?.ok_or_else(|| anyhow!("snapshot {} is gone", a.snapshot))?;
                let how = if DiskPoint::parse(&a.snapshot).is_some() { "Restore" } else { "Copy" };
                Ok(json!({
                    "lun": a.lun,
                    "name": a.temp.clone().unwrap_or_else(|| names::temp_disk(&w.tags.run_id, a.lun)),
                    "createOption": how,
                    "sourceResource": { "id": from },
                    // Without a type, a disk made this way is Standard_LRS
                    // (HDD): the worker would read at HDD speed.
                    "managedDisk": { "storageAccountType": self.s.temp_disk_sku },
                    "caching": "None",
                    "deleteOption": "Delete",
                }))
            })
            .collect::<Result<_>>()?;
        let user = &self.s.admin_user;
        Ok(json!({
            "location": w.vm.location,
            "tags": Self::tags(w.tags, &[]),
            "identity": { "type": "UserAssigned", "userAssignedIdentities": { self.s.identity_id.clone(): {} } },
            "properties": {
                "hardwareProfile": { "vmSize": size },
                "storageProfile": {
                    "imageReference": { "publisher": img[0], "offer": img[1], "sku": img[2], "version": img[3] },
                    "osDisk": {
                        "name": names::worker_os_disk(w.name),
                        "createOption": "FromImage",
                        "deleteOption": "Delete",
                        "managedDisk": { "storageAccountType": "StandardSSD_LRS" },
                    },
                    "dataDisks": data_disks,
                },
                "osProfile": {
                    "computerName": w.name,
                    "adminUsername": user,
                    "linuxConfiguration": {
                        "disablePasswordAuthentication": true,
                        "ssh": { "publicKeys": [
                            { "path": format!("/home/{user}/.ssh/authorized_keys"), "keyData": self.s.ssh_public_key }
                        ] },
                    },
                },
                "networkProfile": {
                    "networkApiVersion": names::INLINE_NIC_API,
                    "networkInterfaceConfigurations": [{
                        "name": names::worker_nic(w.name),
                        "tags": Self::tags(w.tags, &[(TAG_WORKER, w.name)]),
                        "properties": {
                            "primary": true,
                            "deleteOption": "Delete",
                            "ipConfigurations": [{ "name": "ipconfig1", "properties": { "subnet": { "id": self.s.subnet_id } } }],
                        },
                    }],
                },
                "userData": user_data,
            },
        }))
    }

    /// Remember the NIC ids a VM's body names (`networkProfile.networkInterfaces`).
    pub(super) fn note_nics(&self, worker: &str, vm: &Value) -> Result<()> {
        let ids = nic_ids(vm);
        if !ids.is_empty() {
            let mut m = self.nics.lock().map_err(|_| anyhow!("poisoned"))?;
            let known = m.entry(worker.to_owned()).or_default();
            for id in ids {
                if !known.contains(&id) {
                    known.push(id);
                }
            }
        }
        Ok(())
    }

    /// The NICs of `worker`: those its VM names, those noted when it was
    /// created, and those tagged with it (found when the VM is gone), plus
    /// the name older versions gave it.
    fn worker_nics(&self, worker: &str) -> Result<Vec<String>> {
        let mut ids = self.nics.lock().map_err(|_| anyhow!("poisoned"))?.get(worker).cloned().unwrap_or_default();
        for v in self.list_all(&with_api(&self.work.list("Microsoft.Network/networkInterfaces"), NETWORK_API))? {
            if super::provider::tag(&v, TAG_WORKER) == Some(worker) {
                if let Some(id) = v["id"].as_str() {
                    ids.push(id.to_owned());
                }
            }
        }
        ids.push(self.work.nic(&names::worker_nic(worker)));
        let mut seen = std::collections::BTreeSet::new();
        ids.retain(|id| seen.insert(id.to_ascii_lowercase()));
        Ok(ids)
    }

    pub(super) fn delete_worker(&self, name: &str) -> Result<()> {
        let path = with_api(&self.work.vm(name), VM_API);
        if let Some(vm) = self.arm.get(&path)? {
            self.note_nics(name, &vm)?;
        }
        self.arm.delete(&path)?;
        // deleteOption: Delete takes these with the VM; a VM that failed
        // half-way may have left them.
        for nic in self.worker_nics(name)? {
            self.arm.delete(&with_api(&nic, NETWORK_API))?;
        }
        self.arm.delete(&with_api(&self.work.disk(&names::worker_os_disk(name)), names::DISK_API))?;
        self.vm_checked.lock().map_err(|_| anyhow!("poisoned"))?.remove(name);
        self.nics.lock().map_err(|_| anyhow!("poisoned"))?.remove(name);
        let gone = self.rt.block_on(self.status.delete(&Self::status_blob(name), None, None));
        if let Err(e) = gone {
            // Not worth failing a teardown over: the coordinator has no
            // logger, so the note goes to stderr.
            eprintln!("warning: worker {name}: its status blob stays: {e}");
        }
        Ok(())
    }
}

/// `properties.networkProfile.networkInterfaces[].id` of a VM.
pub fn nic_ids(vm: &Value) -> Vec<String> {
    vm["properties"]["networkProfile"]["networkInterfaces"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n["id"].as_str().map(str::to_owned))
        .collect()
}
