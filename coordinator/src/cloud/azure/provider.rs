//! The `azure` provider: the [`Cloud`] trait over ARM REST.
//!
//! A run's resources, all in the configured resource group, all named
//! `df-RUN...` and tagged with the run, the replica and an expiry:
//! - one **incremental snapshot** per disk, PUT together (threads), after an
//!   optional deallocate of the source VM;
//! - one **worker VM** whose data disks are created inline from the
//!   snapshots (`createOption: Copy`) at LUN 0..n, whose NIC is inline with
//!   `deleteOption: Delete`, no public IP, the configured user-assigned
//!   identity, and `userData` = the cloud-init of `images/` carrying the job
//!   (no secret in it);
//! - the worker's status document, a block blob in `status_container`,
//!   written by the agent with its managed identity and read here.
//!
//! Deleting the worker deletes its OS disk, NIC and data disks with it
//! (`deleteOption`); each is also deleted by name, so a half-created VM
//! leaves nothing. `list_created` lists VMs, disks, snapshots and NICs in the
//! group whose names start `df-`: tags say run and expiry; an untagged disk
//! (created inline) expires seven hours after `timeCreated`.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use diskferry_blob::address::BlobAddress;
use diskferry_blob::PageStore;
use diskferry_core::report::Status;
use serde_json::{json, Value};

use super::arm::Arm;
use super::names::{self, with_api, Scope, DISK_API, NETWORK_API, VM_API};
use super::settings::AzureSettings;
use super::userdata::{self, AgentSource};
use crate::cloud::{Cloud, Found, ResourceKind, RunTags, Vm, VmDisk, WorkerSpec, WorkerState};

/// How long an untagged `df-` disk may live before `gc` takes it.
const UNTAGGED_TTL_SECS: i64 = 7 * 3600;

#[derive(Debug)]
pub struct AzureCloud {
    pub(super) s: AzureSettings,
    pub(super) arm: Arm,
    /// The run's resource group.
    work: Scope,
    /// Where the worker writes status documents.
    status: diskferry_blob::Azure,
    /// When each worker's VM was last looked at (single-VM GETs are
    /// throttled at 12 a minute per VM).
    vm_checked: Mutex<BTreeMap<String, Instant>>,
    /// Drives the storage SDK's futures (status blob reads every poll).
    rt: tokio::runtime::Runtime,
}

impl AzureCloud {
    pub fn new(s: AzureSettings) -> Result<Self> {
        s.validate()?;
        let arm = Arm::new(&s.arm_endpoint, super::token::source(s.credential)?)?;
        Self::with_arm(s, arm)
    }

    /// With a given ARM client (tests tune its limits).
    pub fn with_arm(s: AzureSettings, arm: Arm) -> Result<Self> {
        let work = Scope { subscription: s.subscription.clone(), resource_group: s.resource_group.clone() };
        let container = s.status_container.trim_end_matches('/');
        let addr = BlobAddress::parse(&format!("{container}/status.json"))
            .with_context(|| format!("azure.status_container {container}"))?;
        let status = diskferry_blob::connect(addr, s.storage_api_version.clone())?;
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        Ok(Self { s, arm, work, status, vm_checked: Mutex::new(BTreeMap::new()), rt })
    }

    fn status_blob(worker: &str) -> String {
        format!("{worker}.json")
    }

    fn read_status(&self, worker: &str) -> Result<Option<Status>> {
        let got = self.rt.block_on(self.status.get(&Self::status_blob(worker)));
        let bytes = got.map_err(|e| anyhow!("reading the worker's status: {e}"))?;
        // A block blob is written whole: one that does not parse is from an
        // agent this coordinator does not understand.
        bytes.map(|b| Status::parse(&b).map_err(|e| anyhow!("the worker's status: {e}"))).transpose()
    }

    fn tags(t: &RunTags, extra: &[(&str, &str)]) -> Value {
        let mut m = serde_json::Map::new();
        m.insert(names::TAG_RUN.into(), t.run_id.clone().into());
        m.insert(names::TAG_REPLICA.into(), t.replica.clone().into());
        m.insert(names::TAG_EXPIRES.into(), t.expires_at.to_string().into());
        for (k, v) in extra {
            m.insert((*k).into(), (*v).into());
        }
        Value::Object(m)
    }

    fn vm_action(&self, vm: &Vm, action: &str) -> Result<()> {
        let (scope, name) = names::parse_vm(&vm.id, &self.s.subscription)?;
        self.arm.post(&with_api(&format!("{}/{action}", scope.vm(&name)), VM_API), None).map(|_| ())
    }

    fn take_snapshots(&self, vm: &Vm, names: &[String], tags: &RunTags) -> Result<()> {
        let errors: Vec<String> = std::thread::scope(|sc| {
            let handles: Vec<_> = vm
                .disks
                .iter()
                .zip(names)
                .map(|(d, n)| {
                    let body = json!({
                        "location": vm.location,
                        "tags": Self::tags(tags, &[("diskferry-disk", &d.name)]),
                        "properties": {
                            "creationData": { "createOption": "Copy", "sourceResourceId": d.locator },
                            "incremental": true,
                        },
                    });
                    let path = with_api(&self.work.snapshot(n), DISK_API);
                    sc.spawn(move || self.arm.put(&path, &body).map(|_| ()))
                })
                .collect();
            handles
                .into_iter()
                .zip(names)
                .filter_map(|(h, n)| match h.join() {
                    Ok(Ok(())) => None,
                    Ok(Err(e)) => Some(format!("snapshot {n}: {e:#}")),
                    Err(_) => Some(format!("snapshot {n}: the thread panicked")),
                })
                .collect()
        });
        if errors.is_empty() {
            Ok(())
        } else {
            bail!("{}", errors.join("; "))
        }
    }

    fn worker_body(&self, w: &WorkerSpec<'_>) -> Result<Value> {
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
                json!({
                    "lun": a.lun,
                    "name": a.temp.clone().unwrap_or_else(|| names::temp_disk(&w.tags.run_id, a.lun)),
                    "createOption": "Copy",
                    "sourceResource": { "id": self.work.snapshot(&a.snapshot) },
                    "caching": "None",
                    "deleteOption": "Delete",
                })
            })
            .collect();
        let user = &self.s.admin_user;
        Ok(json!({
            "location": w.vm.location,
            "tags": Self::tags(w.tags, &[]),
            "identity": { "type": "UserAssigned", "userAssignedIdentities": { self.s.identity_id.clone(): {} } },
            "properties": {
                "hardwareProfile": { "vmSize": self.s.vm_size },
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

    /// Every page of an ARM list.
    fn list_all(&self, path: &str) -> Result<Vec<Value>> {
        let mut out = Vec::new();
        let mut next = Some(path.to_owned());
        while let Some(p) = next.take() {
            let page = self.arm.get(&p)?.unwrap_or(Value::Null);
            out.extend(page["value"].as_array().cloned().unwrap_or_default());
            next = page["nextLink"].as_str().map(str::to_owned);
        }
        Ok(out)
    }

    fn delete_worker(&self, name: &str) -> Result<()> {
        self.arm.delete(&with_api(&self.work.vm(name), VM_API))?;
        // deleteOption: Delete takes these with the VM; a VM that failed
        // half-way may have left them.
        self.arm.delete(&with_api(&self.work.nic(&names::worker_nic(name)), NETWORK_API))?;
        self.arm.delete(&with_api(&self.work.disk(&names::worker_os_disk(name)), DISK_API))?;
        self.vm_checked.lock().map_err(|_| anyhow!("poisoned"))?.remove(name);
        let gone = self.rt.block_on(self.status.delete(&Self::status_blob(name), None, None));
        if let Err(e) = gone {
            // Not worth failing a teardown over: the coordinator has no
            // logger, so the note goes to stderr.
            eprintln!("warning: worker {name}: its status blob stays: {e}");
        }
        Ok(())
    }
}

fn tag<'a>(v: &'a Value, k: &str) -> Option<&'a str> {
    v["tags"][k].as_str()
}

impl Cloud for AzureCloud {
    fn provider(&self) -> &'static str {
        "azure"
    }

    fn read_vm(&self, vm: &str) -> Result<Vm> {
        let (scope, name) = names::parse_vm(vm, &self.s.subscription)?;
        let v = self
            .arm
            .get(&with_api(&scope.vm(&name), VM_API))?
            .ok_or_else(|| anyhow!("VM {vm}: not found in subscription {}", scope.subscription))?;
        let sp = &v["properties"]["storageProfile"];
        let mut disks = Vec::new();
        let mut add = |disk_name: String, d: &Value| -> Result<Value> {
            let id = d["managedDisk"]["id"].as_str().ok_or_else(|| {
                anyhow!("VM {vm}: disk {disk_name} is not a managed disk (unmanaged VHDs are not supported)")
            })?;
            let dv = self.arm.get(&with_api(id, DISK_API))?.ok_or_else(|| anyhow!("VM {vm}: disk {id} not found"))?;
            let size = dv["properties"]["diskSizeBytes"]
                .as_u64()
                .or_else(|| dv["properties"]["diskSizeGB"].as_u64().map(|g| g << 30))
                .ok_or_else(|| anyhow!("disk {id}: no diskSizeBytes"))?;
            disks.push(VmDisk { name: disk_name, locator: id.to_owned(), size });
            Ok(dv)
        };
        let os = add("os".into(), &sp["osDisk"])?;
        let hyper_v_generation = os["properties"]["hyperVGeneration"].as_str().map(str::to_owned);
        let mut data: Vec<&Value> = sp["dataDisks"].as_array().map(|a| a.iter().collect()).unwrap_or_default();
        data.sort_by_key(|d| d["lun"].as_u64());
        for d in data {
            let lun = d["lun"].as_u64().ok_or_else(|| anyhow!("VM {vm}: a data disk has no LUN"))?;
            add(format!("lun{lun}"), d)?;
        }
        Ok(Vm {
            id: scope.vm(&name),
            name,
            os_type: sp["osDisk"]["osType"].as_str().unwrap_or("Linux").to_owned(),
            location: v["location"].as_str().unwrap_or_default().to_owned(),
            hyper_v_generation,
            security_type: v["properties"]["securityProfile"]["securityType"].as_str().map(str::to_owned),
            zone: v["zones"][0].as_str().map(str::to_owned),
            disks,
        })
    }

    fn snapshot_name(&self, _vm: &Vm, disk: &VmDisk, run_id: &str) -> String {
        names::snapshot(run_id, &disk.name)
    }

    fn snapshot(&self, vm: &Vm, names: &[String], tags: &RunTags, stop_source: bool) -> Result<()> {
        if !stop_source {
            return self.take_snapshots(vm, names, tags);
        }
        self.vm_action(vm, "deallocate").context("deallocating the source VM")?;
        let taken = self.take_snapshots(vm, names, tags);
        let started = self.vm_action(vm, "start").context("starting the source VM again");
        taken.and(started)
    }

    fn temp_disk_name(&self, _snapshot: &str, run_id: &str, lun: usize) -> Option<String> {
        Some(names::temp_disk(run_id, lun))
    }

    fn create_temp_disk(&self, _name: Option<&str>, _snapshot: &str, lun: usize) -> Result<String> {
        // Created inline with the worker (createOption: Copy): one request
        // fewer per disk, and the VM's delete takes it along.
        Ok(names::device(lun))
    }

    fn worker_name(&self, run_id: &str) -> String {
        names::worker(run_id)
    }

    fn start_worker(&self, w: &WorkerSpec<'_>) -> Result<()> {
        if self.s.create_status_container {
            self.rt
                .block_on(self.status.create_container())
                .map_err(|e| anyhow!("creating the status container: {e}"))?;
        }
        let body = self.worker_body(w)?;
        self.arm.put(&with_api(&self.work.vm(w.name), VM_API), &body)?;
        Ok(())
    }

    fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.s.watch_poll_ms)
    }

    fn worker_state(&self, name: &str) -> Result<WorkerState> {
        let status = self.read_status(name)?;
        if let Some(s) = &status {
            if s.phase.finished() {
                return Ok(WorkerState::Finished(s.clone()));
            }
        }
        let due = {
            let mut m = self.vm_checked.lock().map_err(|_| anyhow!("poisoned"))?;
            let last = m.entry(name.to_owned()).or_insert_with(|| Instant::now() - Duration::from_secs(86_400));
            let due = last.elapsed() >= Duration::from_secs(self.s.vm_check_secs);
            if due {
                *last = Instant::now();
            }
            due
        };
        if due {
            match self.arm.get(&with_api(&self.work.vm(name), VM_API))? {
                None => return Ok(WorkerState::Lost(format!("the worker VM {name} is gone"))),
                Some(v) if v["properties"]["provisioningState"] == "Failed" => {
                    return Ok(WorkerState::Lost(format!("the worker VM {name} is in state Failed")))
                }
                Some(_) => {}
            }
        }
        Ok(WorkerState::Running(status))
    }

    fn delete(&self, kind: ResourceKind, name: &str) -> Result<()> {
        match kind {
            ResourceKind::Worker => self.delete_worker(name),
            ResourceKind::TempDisk => self.arm.delete(&with_api(&self.work.disk(name), DISK_API)),
            ResourceKind::Snapshot => self.arm.delete(&with_api(&self.work.snapshot(name), DISK_API)),
        }
    }

    fn changed_ranges(&self, previous: &str, current: &str) -> Result<Option<Vec<[u64; 2]>>> {
        // Read access to both snapshots (at most five SAS per snapshot
        // family at a time), the diff, then access revoked whatever happened.
        let grant = |name: &str| -> Result<String> {
            let path = with_api(&format!("{}/beginGetAccess", self.work.snapshot(name)), DISK_API);
            let out = self.arm.post(&path, Some(&json!({ "access": "Read", "durationInSeconds": 3600 })))?;
            out["accessSAS"].as_str().map(str::to_owned).ok_or_else(|| anyhow!("snapshot {name}: no accessSAS granted"))
        };
        let revoke = |name: &str| {
            let path = with_api(&format!("{}/endGetAccess", self.work.snapshot(name)), DISK_API);
            self.arm.post(&path, None).map(|_| ())
        };
        let diff = grant(previous).and_then(|prev| {
            let cur = grant(current)?;
            super::diff::changed_ranges(&cur, &prev)
        });
        let revoked = revoke(previous).and(revoke(current));
        let ranges = diff?;
        revoked.context("revoking access to the snapshots")?;
        Ok(Some(ranges))
    }

    fn retain(&self, kind: ResourceKind, name: &str) -> Result<()> {
        if kind != ResourceKind::Snapshot {
            return Ok(());
        }
        let path = with_api(&self.work.snapshot(name), DISK_API);
        let v = self.arm.get(&path)?.ok_or_else(|| anyhow!("snapshot {name} is gone"))?;
        let mut tags = v["tags"].as_object().cloned().unwrap_or_default();
        tags.remove(names::TAG_EXPIRES);
        tags.insert(names::TAG_RETAINED.into(), "true".into());
        self.arm.patch(&path, &json!({ "tags": tags }))?;
        Ok(())
    }

    fn list_created(&self) -> Result<Vec<Found>> {
        let mut out = Vec::new();
        let types = [
            ("Microsoft.Compute/virtualMachines", VM_API),
            ("Microsoft.Compute/disks", DISK_API),
            ("Microsoft.Compute/snapshots", DISK_API),
            ("Microsoft.Network/networkInterfaces", NETWORK_API),
        ];
        for (t, api) in types {
            for v in self.list_all(&with_api(&self.work.list(t), api))? {
                let Some(name) = v["name"].as_str().filter(|n| n.starts_with(names::PREFIX)) else { continue };
                let run_id = tag(&v, names::TAG_RUN).map(str::to_owned).or_else(|| names::run_of(name));
                let mut expires_at = tag(&v, names::TAG_EXPIRES).and_then(|e| e.parse().ok());
                let retained = tag(&v, names::TAG_RETAINED) == Some("true");
                let (kind, name) = match t {
                    "Microsoft.Compute/virtualMachines" => (ResourceKind::Worker, name.to_owned()),
                    "Microsoft.Compute/snapshots" => (ResourceKind::Snapshot, name.to_owned()),
                    "Microsoft.Compute/disks" => {
                        if v["managedBy"].as_str().is_some_and(|m| !m.is_empty()) {
                            continue; // attached: it goes with its VM
                        }
                        if expires_at.is_none() {
                            let created = v["properties"]["timeCreated"].as_str();
                            expires_at = created
                                .and_then(|c| chrono::DateTime::parse_from_rfc3339(c).ok())
                                .map(|c| c.timestamp() + UNTAGGED_TTL_SECS);
                        }
                        (ResourceKind::TempDisk, name.to_owned())
                    }
                    // A stray NIC (its VM gone): deleting its worker deletes it.
                    _ if v["properties"]["virtualMachine"]["id"].is_string() => continue,
                    _ => match name.strip_suffix("-nic") {
                        Some(w) => (ResourceKind::Worker, w.to_owned()),
                        None => continue,
                    },
                };
                out.push(Found { kind, name, run_id, expires_at, retained });
            }
        }
        Ok(out)
    }
}
