//! The `azure` provider: the [`Cloud`] trait over ARM REST.
//!
//! A run's resources, all in the configured resource group, all named
//! `df-RUN...` and tagged with the run, the replica and an expiry:
//! - one **incremental snapshot** per disk, PUT together (threads), after an
//!   optional deallocate of the source VM; or, for `--consistency crash` or
//!   `application`, one **VM restore point** (`restore_points.rs`);
//! - one **worker VM** whose data disks are created inline from the
//!   snapshots (`createOption: Copy`) or disk restore points (`Restore`) at
//!   LUN 0..n, whose NIC is inline with
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
use super::restore_points::DiskPoint;
use super::settings::AzureSettings;
use super::sizes::SizeFacts;
use crate::cloud::host::HostWorkers;
use crate::cloud::{
    Capture, Cloud, Consistency, Found, ResourceKind, RunTags, SourceKind, SourceRef, Taken, Vm, VmDisk, WorkerSpec,
    WorkerState,
};

/// How long an untagged `df-` disk may live before `gc` takes it.
pub(super) const UNTAGGED_TTL_SECS: i64 = 7 * 3600;

#[derive(Debug)]
pub struct AzureCloud {
    pub(super) s: AzureSettings,
    pub(super) arm: Arm,
    /// The run's resource group.
    pub(super) work: Scope,
    /// Where the worker writes status documents.
    pub(super) status: diskferry_blob::Azure,
    /// When each worker's VM was last looked at (single-VM GETs are
    /// throttled at 12 a minute per VM).
    pub(super) vm_checked: Mutex<BTreeMap<String, Instant>>,
    /// The VM sizes of each location, as Resource SKUs listed them.
    pub(super) sizes: Mutex<BTreeMap<String, Vec<SizeFacts>>>,
    /// The NIC ids each worker's VM named.
    pub(super) nics: Mutex<BTreeMap<String, Vec<String>>>,
    /// Drives the storage SDK's futures (status blob reads every poll).
    pub(super) rt: tokio::runtime::Runtime,
    /// Workers on this host, for runs placed here (`here.rs`); none: such
    /// runs are refused.
    pub(super) host: Option<HostWorkers>,
    /// Disk restore point ids by disk point name (they never change).
    pub(super) points: Mutex<BTreeMap<String, String>>,
    /// Runs that asked for a restore point and take per-disk snapshots: why.
    pub(super) no_point: Mutex<BTreeMap<String, String>>,
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
        Ok(Self {
            s,
            arm,
            work,
            status,
            vm_checked: Mutex::new(BTreeMap::new()),
            sizes: Mutex::new(BTreeMap::new()),
            nics: Mutex::new(BTreeMap::new()),
            rt,
            host: None,
            points: Mutex::new(BTreeMap::new()),
            no_point: Mutex::new(BTreeMap::new()),
        })
    }

    /// Runs may be placed on this host, their agents in `host`'s folders.
    pub fn with_host(mut self, host: HostWorkers) -> Self {
        self.host = Some(host);
        self
    }

    pub(super) fn status_blob(worker: &str) -> String {
        format!("{worker}.json")
    }

    fn read_status(&self, worker: &str) -> Result<Option<Status>> {
        let got = self.rt.block_on(self.status.get(&Self::status_blob(worker)));
        let bytes = got.map_err(|e| anyhow!("reading the worker's status: {e}"))?;
        // A block blob is written whole: one that does not parse is from an
        // agent this coordinator does not understand.
        bytes.map(|b| Status::parse(&b).map_err(|e| anyhow!("the worker's status: {e}"))).transpose()
    }

    pub(super) fn tags(t: &RunTags, extra: &[(&str, &str)]) -> Value {
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

    /// Every page of an ARM list, as the pages came.
    pub(super) fn list_pages(&self, path: &str) -> Result<Vec<Value>> {
        let mut out = Vec::new();
        let mut next = Some(path.to_owned());
        while let Some(p) = next.take() {
            let page = self.arm.get(&p)?.unwrap_or(Value::Null);
            next = page["nextLink"].as_str().map(str::to_owned);
            out.push(page);
        }
        Ok(out)
    }

    /// Every item of an ARM list.
    pub(super) fn list_all(&self, path: &str) -> Result<Vec<Value>> {
        let pages = self.list_pages(path)?;
        Ok(pages.into_iter().flat_map(|p| p["value"].as_array().cloned().unwrap_or_default()).collect())
    }
}

pub(super) fn tag<'a>(v: &'a Value, k: &str) -> Option<&'a str> {
    v["tags"][k].as_str()
}

impl Cloud for AzureCloud {
    fn preflight(&self, sources: &[crate::cloud::checks::Source]) -> Vec<crate::cloud::checks::Check> {
        self.checks(sources)
    }

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
            let sku = dv["sku"]["name"].as_str().map(str::to_owned);
            // What restore points do not take (concepts-restore-points:
            // shared, write-accelerated and ephemeral disks; Ultra and
            // Premium SSD v2 are judged by their SKU).
            let no_restore_point = if dv["properties"]["maxShares"].as_u64().is_some_and(|n| n > 1) {
                Some("a shared disk (maxShares > 1)".to_owned())
            } else if d["writeAcceleratorEnabled"] == true {
                Some("write-accelerated".to_owned())
            } else if d["diffDiskSettings"].is_object() {
                Some("an ephemeral OS disk".to_owned())
            } else {
                None
            };
            disks.push(VmDisk { name: disk_name, locator: id.to_owned(), size, sku, no_restore_point });
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
            source: SourceKind::Vm,
            version: None,
            os_type: sp["osDisk"]["osType"].as_str().unwrap_or("Linux").to_owned(),
            location: v["location"].as_str().unwrap_or_default().to_owned(),
            hyper_v_generation,
            security_type: v["properties"]["securityProfile"]["securityType"].as_str().map(str::to_owned),
            zone: v["zones"][0].as_str().map(str::to_owned),
            os_capabilities: Some(os["properties"]["supportedCapabilities"].clone()).filter(Value::is_object),
            size: v["properties"]["hardwareProfile"]["vmSize"].as_str().map(str::to_owned),
            disks,
        })
    }

    fn read_source(&self, src: &SourceRef, version: Option<&str>) -> Result<Vm> {
        src.check_version(version)?;
        self.read_other(src, version)
    }

    fn snapshot_names(&self, vm: &Vm, tags: &RunTags, how: Capture) -> Result<Vec<String>> {
        let per_disk = || vm.disks.iter().map(|d| names::snapshot(&tags.run_id, &d.name)).collect();
        if vm.source != SourceKind::Vm || how.stop_source || how.consistency == Consistency::PerDisk {
            return Ok(per_disk());
        }
        if let Some(why) = self.why_no_restore_point(vm, tags, how.consistency)? {
            self.no_point.lock().map_err(|_| anyhow!("poisoned"))?.insert(tags.run_id.clone(), why);
            return Ok(per_disk());
        }
        let (collection, point) = (names::restore_point_collection(&tags.replica), names::restore_point(&tags.run_id));
        Ok(vm.disks.iter().map(|d| DiskPoint::name(&collection, &point, &d.name)).collect())
    }

    fn staging_names(&self, vm: &Vm, run_id: &str) -> Vec<(String, String)> {
        match vm.source {
            SourceKind::Snapshot | SourceKind::Image => {
                vm.disks.iter().map(|d| (d.name.clone(), names::staged_disk(run_id, &d.name))).collect()
            }
            SourceKind::Vm | SourceKind::Disk => Vec::new(),
        }
    }

    fn snapshot(&self, vm: &Vm, names: &[String], tags: &RunTags, how: Capture) -> Result<Taken> {
        match vm.source {
            // An image version's disks were captured together and never change.
            SourceKind::Image => return self.take_staged(vm, names, tags).map(|()| Taken::as_asked("image")),
            SourceKind::Snapshot => return self.take_staged(vm, names, tags).map(|()| Taken::as_asked("per-disk")),
            SourceKind::Disk => return self.take_snapshots(vm, names, tags).map(|()| Taken::as_asked("per-disk")),
            SourceKind::Vm => {}
        }
        if names.iter().all(|n| DiskPoint::parse(n).is_some()) {
            return self.take_restore_point(vm, names, tags, how.consistency);
        }
        if !how.stop_source {
            self.take_snapshots(vm, names, tags)?;
            let why = self.no_point.lock().map_err(|_| anyhow!("poisoned"))?.remove(&tags.run_id);
            return Ok(match why {
                Some(why) => Taken { consistency: "per-disk".into(), note: Some(format!("no restore point: {why}")) },
                None => Taken::as_asked("per-disk"),
            });
        }
        self.vm_action(vm, "deallocate").context("deallocating the source VM")?;
        let taken = self.take_snapshots(vm, names, tags);
        if !how.restart_source {
            return taken.map(|()| Taken::as_asked("stopped"));
        }
        let started = self.vm_action(vm, "start").context("starting the source VM again");
        taken.and(started).map(|()| Taken::as_asked("stopped"))
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

    fn start_worker(&self, w: &WorkerSpec<'_>) -> Result<Option<String>> {
        if self.s.create_status_container {
            self.rt
                .block_on(self.status.create_container())
                .map_err(|e| anyhow!("creating the status container: {e}"))?;
        }
        let size = self.worker_size(&w.vm.location, w.disks.len())?;
        let body = self.worker_body(w, &size.name)?;
        let made = self.arm.put(&with_api(&self.work.vm(w.name), VM_API), &body)?;
        self.note_nics(w.name, &made)?;
        Ok(Some(size.describe()))
    }

    fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.s.watch_poll_ms)
    }

    fn worker_state(&self, name: &str) -> Result<WorkerState> {
        if let Some(run_id) = name.strip_prefix(crate::cloud::HERE) {
            return self.here_state(run_id);
        }
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
            ResourceKind::Worker => match name.strip_prefix(crate::cloud::HERE) {
                Some(run_id) => self.delete_here(run_id),
                None => self.delete_worker(name),
            },
            ResourceKind::TempDisk => self.arm.delete(&with_api(&self.work.disk(name), DISK_API)),
            ResourceKind::Snapshot => match DiskPoint::parse(name) {
                Some(dp) => self.delete_point(dp),
                None => self.arm.delete(&with_api(&self.work.snapshot(name), DISK_API)),
            },
        }
    }

    fn changed_ranges(&self, previous: &str, current: &str) -> Result<Option<Vec<[u64; 2]>>> {
        // A snapshot a SAS alone cannot read (Entra-only data access,
        // private network access, not yet readable): say why, and the
        // worker reads the whole disk.
        for name in [previous, current] {
            if let Some(why) = self.unreadable_by_sas(name)? {
                bail!("{why}");
            }
        }
        // Read access to both snapshots (at most five SAS per snapshot
        // family at a time), the diff, then access revoked whatever happened.
        let diff = self.grant(previous).and_then(|prev| {
            let cur = self.grant(current)?;
            super::diff::changed_ranges(&cur, &prev, self.s.diff_segment_bytes)
        });
        let revoked = self.revoke(previous).and(self.revoke(current));
        let ranges = diff?;
        revoked.context("revoking access to the snapshots")?;
        Ok(Some(ranges))
    }

    fn why_not_here(&self, snapshot: &str) -> Result<Option<String>> {
        if self.host.is_none() {
            return Ok(Some("this coordinator keeps no workers on its host".into()));
        }
        self.unreadable_by_sas(snapshot)
    }

    fn start_here(&self, w: &WorkerSpec<'_>) -> Result<Option<String>> {
        self.start_here_worker(w)
    }

    fn retain(&self, kind: ResourceKind, name: &str) -> Result<()> {
        if kind != ResourceKind::Snapshot {
            return Ok(());
        }
        if let Some(dp) = DiskPoint::parse(name) {
            return self.retain_point(dp);
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
                // A worker's NIC is named by Azure: its tag names the worker.
                let worker_nic = tag(&v, super::worker::TAG_WORKER).filter(|w| w.starts_with(names::PREFIX));
                let Some(name) = v["name"].as_str().filter(|n| n.starts_with(names::PREFIX) || worker_nic.is_some())
                else {
                    continue;
                };
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
                    _ if worker_nic.is_some() => (ResourceKind::Worker, worker_nic.unwrap_or_default().to_owned()),
                    _ => match name.strip_suffix("-nic") {
                        Some(w) => (ResourceKind::Worker, w.to_owned()),
                        None => continue,
                    },
                };
                out.push(Found { kind, name, run_id, expires_at, retained });
            }
        }
        out.extend(self.listed_points()?);
        out.extend(self.here_workers()?);
        Ok(out)
    }

    fn delete_made(&self, what: &str, owner: &str) -> Result<()> {
        match what.starts_with("/subscriptions/") {
            true => self.delete_by_id(what),
            false => crate::cloud::remove_failover_folder(std::path::Path::new(what), owner),
        }
    }
}
