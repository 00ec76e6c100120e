//! Results into Azure: managed disks imported from promoted recovery points
//! (`createOption: Import`) and a VM made of them (`migrate --create-vm`).

use anyhow::{anyhow, bail, Result};
use serde_json::{json, Value};

use super::names::{self, with_api, Scope, DISK_API, VM_API};
use super::AzureCloud;

/// One managed disk to create from a promoted recovery point.
#[derive(Debug, Clone)]
pub struct ImportSpec<'a> {
    pub name: &'a str,
    pub resource_group: &'a str,
    /// The standalone page blob (no SAS).
    pub source_uri: &'a str,
    /// ARM id of the storage account holding it.
    pub storage_account_id: &'a str,
    pub sku: &'a str,
    /// The source VM's recorded facts when this is its OS disk.
    pub os: Option<&'a Value>,
    pub tags: Value,
}

/// A VM made of imported disks (`migrate --create-vm`).
#[derive(Debug, Clone)]
pub struct NewVm<'a> {
    pub name: &'a str,
    pub resource_group: &'a str,
    pub size: &'a str,
    /// Subnet id for its NIC (in the disks' region).
    pub subnet: &'a str,
    /// Resource ids.
    pub os_disk: &'a str,
    pub os_type: &'a str,
    /// (LUN, disk id).
    pub data: &'a [(u64, &'a str)],
    /// On the VM and its NIC: the replica, and a failover's or drill's own.
    pub tags: Value,
    /// The NIC goes with the VM (`Delete`: a drill's) or stays (`Detach`).
    pub nic_delete: &'a str,
}

/// A VM as created: its id and its NICs' (Azure names an inline NIC).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MadeVm {
    pub id: String,
    pub nics: Vec<String>,
}

impl AzureCloud {
    /// A resource group of this provider's subscription.
    pub fn scope(&self, resource_group: &str) -> Scope {
        Scope { subscription: self.s.subscription.clone(), resource_group: resource_group.to_owned() }
    }

    /// Create a managed disk from a page blob (`createOption: Import`), in
    /// the storage account's region (Import cannot cross regions). An OS
    /// disk carries the source's osType, Hyper-V generation, supported
    /// capabilities and Trusted Launch security type. Returns
    /// the disk's resource id and a note, if something was not carried.
    pub fn import_disk(&self, i: &ImportSpec<'_>) -> Result<(String, Option<String>)> {
        let account = self
            .arm
            .get(&with_api(i.storage_account_id, names::STORAGE_API))?
            .ok_or_else(|| anyhow!("storage account {} not found", i.storage_account_id))?;
        let location = account["location"].as_str().ok_or_else(|| anyhow!("storage account without a location"))?;
        let mut props = json!({
            "creationData": {
                "createOption": "Import",
                "sourceUri": i.source_uri,
                "storageAccountId": i.storage_account_id,
            },
        });
        let mut note = None;
        if let Some(os) = i.os {
            props["osType"] = os["os_type"].clone();
            if let Some(g) = os["hyper_v_generation"].as_str() {
                props["hyperVGeneration"] = g.into();
            }
            // What the source OS disk said it supports (architecture, disk
            // controllers, accelerated networking): an Arm64 or NVMe-only
            // size refuses a disk that does not say so.
            if let Some(caps) = os["os_capabilities"].as_object() {
                let known = ["acceleratedNetwork", "architecture", "diskControllerTypes", "supportedSecurityOption"];
                let carried: serde_json::Map<String, Value> = caps
                    .iter()
                    .filter(|(k, _)| known.contains(&k.as_str()))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                if !carried.is_empty() {
                    props["supportedCapabilities"] = Value::Object(carried);
                }
            }
            match os["security_type"].as_str() {
                Some(t) if t.starts_with("ConfidentialVM") => bail!(
                    "the source is a confidential VM ({t}): its OS disk needs its VM guest state \
                     (ImportSecure), which diskferry does not copy"
                ),
                Some("TrustedLaunch") => {
                    // A Trusted Launch VM boots only a disk of that security
                    // type (Disk_Create_WithSecurityProfile.json), and only
                    // a Generation 2 one.
                    if os["hyper_v_generation"].as_str().is_some_and(|g| g != "V2") {
                        bail!("the source VM is TrustedLaunch but its OS disk is not Hyper-V generation V2");
                    }
                    props["hyperVGeneration"] = "V2".into();
                    props["securityProfile"] = json!({ "securityType": "TrustedLaunch" });
                    note = Some(
                        "the source VM was TrustedLaunch: the OS disk is imported as TrustedLaunch (a VM made of it \
                         must be TrustedLaunch too; --create-vm makes it so); its vTPM state is not carried, the new \
                         VM starts with a new vTPM"
                            .to_owned(),
                    );
                }
                Some(t) => note = Some(format!("the source VM's security type {t} is not carried")),
                None => {}
            }
        }
        let scope = Scope { subscription: self.s.subscription.clone(), resource_group: i.resource_group.to_owned() };
        let body = json!({ "location": location, "sku": { "name": i.sku }, "tags": i.tags, "properties": props });
        let path = scope.disk(i.name);
        self.arm.put(&with_api(&path, DISK_API), &body)?;
        Ok((path, note))
    }

    /// Create a VM from managed disks (the OS disk attached, so no image and
    /// no OS profile), in the OS disk's region, with an inline NIC in
    /// `subnet`; Trusted Launch when the OS disk is, NVMe when it takes
    /// only NVMe. Returns its resource id and its NICs'.
    pub fn create_vm(&self, v: &NewVm<'_>) -> Result<MadeVm> {
        let os =
            self.arm.get(&with_api(v.os_disk, DISK_API))?.ok_or_else(|| anyhow!("disk {} not found", v.os_disk))?;
        let location = os["location"].as_str().ok_or_else(|| anyhow!("disk {} has no location", v.os_disk))?;
        let data: Vec<Value> = v
            .data
            .iter()
            .map(|(lun, id)| json!({ "lun": lun, "createOption": "Attach", "managedDisk": { "id": id } }))
            .collect();
        let mut body = json!({
            "location": location,
            "tags": v.tags,
            "properties": {
                "hardwareProfile": { "vmSize": v.size },
                "storageProfile": {
                    "osDisk": { "osType": v.os_type, "createOption": "Attach", "managedDisk": { "id": v.os_disk } },
                    "dataDisks": data,
                },
                "networkProfile": {
                    "networkApiVersion": names::INLINE_NIC_API,
                    "networkInterfaceConfigurations": [{
                        "name": format!("{}-nic", v.name),
                        "tags": v.tags,
                        "properties": {
                            "primary": true,
                            "deleteOption": v.nic_delete,
                            "ipConfigurations": [{ "name": "ipconfig1", "properties": { "subnet": { "id": v.subnet } } }],
                        },
                    }],
                },
            },
        });
        // A Trusted Launch OS disk boots only on a Trusted Launch VM
        // (VirtualMachine_Create_WithUefiSettings.json: secure boot, vTPM).
        if os["properties"]["securityProfile"]["securityType"] == "TrustedLaunch" {
            body["properties"]["securityProfile"] = json!({
                "securityType": "TrustedLaunch",
                "uefiSettings": { "secureBootEnabled": true, "vTpmEnabled": true },
            });
        }
        // A disk that supports NVMe only needs a VM that presents it so.
        if os["properties"]["supportedCapabilities"]["diskControllerTypes"] == "NVMe" {
            body["properties"]["storageProfile"]["diskControllerType"] = "NVMe".into();
        }
        let scope = Scope { subscription: self.s.subscription.clone(), resource_group: v.resource_group.to_owned() };
        let path = scope.vm(v.name);
        let made = self.arm.put(&with_api(&path, VM_API), &body)?;
        let nics = made["properties"]["networkProfile"]["networkInterfaces"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|n| n["id"].as_str().map(str::to_owned))
            .collect();
        Ok(MadeVm { id: path, nics })
    }

    /// Delete every NIC in `rg` tagged `tag=value` (what a VM that failed to
    /// be created can leave, named by Azure); returns what could not be.
    pub fn sweep_tagged_nics(&self, rg: &str, tag: &str, value: &str) -> Result<Vec<String>> {
        let list = with_api(&self.scope(rg).list("Microsoft.Network/networkInterfaces"), names::NETWORK_API);
        let mut left = Vec::new();
        for n in self.list_all(&list)? {
            let Some(id) = n["id"].as_str().filter(|_| n["tags"][tag] == value) else { continue };
            if let Err(e) = self.arm.delete(&with_api(id, names::NETWORK_API)) {
                left.push(format!("{id}: {e:#}"));
            }
        }
        Ok(left)
    }

    /// Wait until a VM runs: its instance view (`VirtualMachines_InstanceView`,
    /// `VirtualMachine_Get_InstanceView.json`) says `PowerState/running`.
    /// Returns the VM agent's status when it reports one.
    pub fn wait_running(&self, vm_id: &str, deadline: std::time::Duration) -> Result<Option<String>> {
        let started = std::time::Instant::now();
        loop {
            let view = self
                .arm
                .get(&with_api(&format!("{vm_id}/instanceView"), VM_API))?
                .ok_or_else(|| anyhow!("VM {vm_id} is gone"))?;
            let codes: Vec<&str> =
                view["statuses"].as_array().into_iter().flatten().filter_map(|s| s["code"].as_str()).collect();
            // A failure says why after it: `ProvisioningState/failed/CODE`.
            if codes.iter().any(|c| c.to_ascii_lowercase().starts_with("provisioningstate/failed")) {
                bail!("VM {vm_id}: provisioning failed ({})", codes.join(", "));
            }
            if codes.iter().any(|c| c.eq_ignore_ascii_case("PowerState/running")) {
                let agent = view["vmAgent"]["statuses"][0]["displayStatus"].as_str().map(str::to_owned);
                return Ok(agent);
            }
            if started.elapsed() > deadline {
                bail!("VM {vm_id} is not running after {} s ({})", deadline.as_secs(), codes.join(", "));
            }
            std::thread::sleep(std::time::Duration::from_millis(self.s.watch_poll_ms));
        }
    }

    /// Start a VM (`VirtualMachines_Start`): a cutover that failed starts
    /// its source again.
    pub fn start_vm(&self, vm: &str) -> Result<()> {
        let (scope, name) = names::parse_vm(vm, &self.s.subscription)?;
        self.arm.post(&with_api(&format!("{}/start", scope.vm(&name)), VM_API), None).map(|_| ())
    }

    /// Whether a VM or disk of this id exists.
    pub fn exists(&self, id: &str) -> Result<bool> {
        let api = if id.to_ascii_lowercase().contains("/virtualmachines/") { VM_API } else { DISK_API };
        Ok(self.arm.get(&with_api(id, api))?.is_some())
    }

    /// Delete what a failover made, by its id (VM, NIC or disk; deleting
    /// what is not there succeeds).
    pub fn delete_by_id(&self, id: &str) -> Result<()> {
        let lower = id.to_ascii_lowercase();
        if lower.contains("/virtualmachines/") {
            // A NIC the VM detaches on delete (a failover's) goes too: what
            // the VM names, read before it is gone.
            let vm = self.arm.get(&with_api(id, VM_API))?;
            let kept: Vec<String> = vm
                .iter()
                .flat_map(|v| v["properties"]["networkProfile"]["networkInterfaces"].as_array().cloned())
                .flatten()
                .filter(|n| n["properties"]["deleteOption"] != "Delete")
                .filter_map(|n| n["id"].as_str().map(str::to_owned))
                .collect();
            self.arm.delete(&with_api(id, VM_API))?;
            for nic in kept {
                self.arm.delete(&with_api(&nic, names::NETWORK_API))?;
            }
            return Ok(());
        }
        let api = if lower.contains("/microsoft.network/") {
            names::NETWORK_API
        } else if lower.contains("/virtualmachines/") {
            VM_API
        } else {
            DISK_API
        };
        self.arm.delete(&with_api(id, api))
    }
}
