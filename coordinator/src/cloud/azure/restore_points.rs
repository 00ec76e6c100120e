//! VM restore points: every disk of a running VM captured at one instant
//! (ComputeRP 2025-04-01 `restorePoint.json`), for replicas whose
//! consistency is `crash` or `application`.
//!
//! - One **collection** a replica, in the work group, tagged with the
//!   replica (`RestorePointCollections_CreateOrUpdate`: 200/201, not
//!   long-running; its source is the VM). Read before it is written: a PUT
//!   would replace its tags, and "only tags may be modified" after creation.
//! - One **restore point** a run (`RestorePoints_Create`: 201, long-running).
//!   `CrashConsistent` is asked for by name ("for now, only CrashConsistent
//!   is accepted as a valid input"); an application-consistent one is the
//!   service's default, asked for by sending no `consistencyMode`. What it
//!   became is read back from the point (`ApplicationConsistent`,
//!   `FileSystemConsistent`, `CrashConsistent`). One that fails is deleted
//!   and a crash-consistent one taken instead, and the run says why.
//! - Its **disk restore points** (`sourceMetadata.storageProfile.osDisk` and
//!   `dataDisks[].diskRestorePoint.id`) stand where a run's snapshots do: a
//!   run records each as `COLLECTION/POINT/DISK` ([`DiskPoint`]); the worker's
//!   disks are made of them (`createOption: Restore`,
//!   `VirtualMachine_Create_WithDataDisksFromSourceResource.json`); they are
//!   read and diffed through a SAS (`DiskRestorePoint_GrantAccess`, DiskRP
//!   2025-01-02 `diskRestorePoint.json`, `final-state-via: location`).
//! - A restore point has no tags: the collection's `diskferry-retained` tag
//!   names the one its replica keeps; `gc` dates the others by `timeCreated`.
//!   Deleting any disk of a point deletes the point (after revoking read
//!   access: "DiskRestorePointUsedByCustomer" otherwise), and a collection
//!   left empty goes with it.
//!
//! Azure takes them at most once an hour (crash) or every three hours
//! (application) per VM, and not of Ultra, Premium SSD v2, shared, write-
//! accelerated or ephemeral disks: a run that would break that takes
//! per-disk snapshots instead, and says so.

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};

use super::arm::ArmError;
use super::names::{self, with_api, DISK_API, VM_API};
use super::provider::{tag, AzureCloud, UNTAGGED_TTL_SECS};
use crate::cloud::{Consistency, Found, ResourceKind, RunTags, Taken, Vm};

/// A disk of a run's VM restore point, as the run records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskPoint<'a> {
    pub collection: &'a str,
    pub point: &'a str,
    /// The disk's name in the VM (`os`, `lun0`, ...).
    pub disk: &'a str,
}

impl<'a> DiskPoint<'a> {
    /// `COLLECTION/POINT/DISK`; a snapshot's name has no `/`.
    pub fn parse(name: &'a str) -> Option<Self> {
        let mut it = name.split('/');
        let (collection, point, disk) = (it.next()?, it.next()?, it.next()?);
        let plain = [collection, point, disk].iter().all(|p| names::is_plain(p));
        (plain && it.next().is_none()).then_some(Self { collection, point, disk })
    }

    pub fn name(collection: &str, point: &str, disk: &str) -> String {
        format!("{collection}/{point}/{disk}")
    }
}

/// What a restore point's `consistencyMode` says, as runs record it.
fn recorded(mode: Option<&str>) -> String {
    match mode {
        Some("CrashConsistent") => "crash".into(),
        Some("FileSystemConsistent") => "filesystem".into(),
        Some("ApplicationConsistent") => "application".into(),
        Some(other) => other.to_ascii_lowercase(),
        None => "unknown".into(),
    }
}

/// The disk restore point of `disk` (`os`, `lunN`) in a restore point.
fn disk_point_of(point: &Value, disk: &str) -> Option<String> {
    let sp = &point["properties"]["sourceMetadata"]["storageProfile"];
    let d = match disk.strip_prefix("lun") {
        Some(lun) => {
            let lun: u64 = lun.parse().ok()?;
            sp["dataDisks"].as_array()?.iter().find(|d| d["lun"].as_u64() == Some(lun))?
        }
        None if disk == "os" => &sp["osDisk"],
        None => return None,
    };
    d["diskRestorePoint"]["id"].as_str().map(str::to_owned)
}

/// The managed disk the restore point took for `disk` (`os`, `lunN`).
fn source_of(point: &Value, disk: &str) -> Option<String> {
    let sp = &point["properties"]["sourceMetadata"]["storageProfile"];
    let d = match disk.strip_prefix("lun") {
        Some(lun) => {
            let lun: u64 = lun.parse().ok()?;
            sp["dataDisks"].as_array()?.iter().find(|d| d["lun"].as_u64() == Some(lun))?
        }
        None => &sp["osDisk"],
    };
    d["managedDisk"]["id"].as_str().map(str::to_owned)
}

/// The disks a restore point holds, by their names in the VM.
fn disks_of(point: &Value) -> Vec<String> {
    let sp = &point["properties"]["sourceMetadata"]["storageProfile"];
    let mut out = Vec::new();
    if sp["osDisk"]["diskRestorePoint"]["id"].is_string() {
        out.push("os".to_owned());
    }
    for d in sp["dataDisks"].as_array().into_iter().flatten() {
        if let (Some(lun), true) = (d["lun"].as_u64(), d["diskRestorePoint"]["id"].is_string()) {
            out.push(format!("lun{lun}"));
        }
    }
    out
}

fn is_code(e: &anyhow::Error, code: &str) -> bool {
    e.chain().any(|c| c.downcast_ref::<ArmError>().is_some_and(|a| a.code == code))
}

impl AzureCloud {
    fn collection_path(&self, collection: &str) -> String {
        self.work.restore_point_collection(collection)
    }

    fn point_path(&self, collection: &str, point: &str) -> String {
        format!("{}/restorePoints/{point}", self.collection_path(collection))
    }

    /// The collection with its restore points, if it exists.
    fn collection_with_points(&self, collection: &str) -> Result<Option<Value>> {
        self.arm.get(&format!("{}&$expand=restorePoints", with_api(&self.collection_path(collection), VM_API)))
    }

    /// Why this run cannot take a restore point of `vm` as `asked`, if it
    /// cannot: then it takes per-disk snapshots.
    pub(super) fn why_no_restore_point(&self, vm: &Vm, tags: &RunTags, asked: Consistency) -> Result<Option<String>> {
        if let Some(d) = vm.disks.iter().find(|d| matches!(d.sku.as_deref(), Some("PremiumV2_LRS" | "UltraSSD_LRS"))) {
            return Ok(Some(format!(
                "disk {} is {}: restore points do not take Ultra or Premium SSD v2 disks",
                d.name,
                d.sku.as_deref().unwrap_or_default()
            )));
        }
        if let Some(d) = vm.disks.iter().find(|d| d.no_restore_point.is_some()) {
            return Ok(Some(format!(
                "disk {} is {}: restore points do not take it",
                d.name,
                d.no_restore_point.as_deref().unwrap_or_default()
            )));
        }
        let collection = names::restore_point_collection(&tags.replica);
        let Some(c) = self.collection_with_points(&collection)? else { return Ok(None) };
        let (every, kind) = match asked {
            Consistency::Application => (self.s.restore_point_application_secs, "application-consistent"),
            _ => (self.s.restore_point_crash_secs, "crash-consistent"),
        };
        let newest = c["properties"]["restorePoints"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["properties"]["provisioningState"] != "Failed")
            .filter(|p| (p["properties"]["consistencyMode"] == "CrashConsistent") == (asked == Consistency::Crash))
            .filter_map(|p| p["properties"]["timeCreated"].as_str())
            .filter_map(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.timestamp())
            .max();
        let now = chrono::Utc::now().timestamp();
        Ok(newest.filter(|&t| now - t < every as i64).map(|t| {
            format!(
                "the VM's last {kind} restore point is {} s old, and Azure takes one at most every {every} s \
                 ([azure] restore_point_{}_secs)",
                now - t,
                if asked == Consistency::Application { "application" } else { "crash" }
            )
        }))
    }

    /// Take the run's restore point of `vm` (`names` are its disks'
    /// [`DiskPoint`]s): the collection first if it is new.
    pub(super) fn take_restore_point(
        &self,
        vm: &Vm,
        names: &[String],
        tags: &RunTags,
        asked: Consistency,
    ) -> Result<Taken> {
        let first = names.first().and_then(|n| DiskPoint::parse(n)).ok_or_else(|| anyhow!("no restore point named"))?;
        self.ensure_collection(vm, tags, first.collection)?;
        let path = with_api(&self.point_path(first.collection, first.point), VM_API);
        let (point, note) = match self.create_point(&path, asked) {
            Ok(p) => (p, None),
            Err(e) if asked == Consistency::Application => {
                // What failed may be left in state Failed: gone before the retry.
                self.arm.delete(&path).context("deleting the failed restore point")?;
                let p = self.create_point(&path, Consistency::Crash)?;
                (
                    p,
                    Some(format!(
                        "the application-consistent restore point failed ({e:#}); took a crash-consistent one"
                    )),
                )
            }
            Err(e) => return Err(e),
        };
        for (d, n) in vm.disks.iter().zip(names) {
            if disk_point_of(&point, &d.name).is_none() {
                bail!(
                    "restore point {}: no disk restore point for disk {} (excluded, or a kind restore points do not \
                     take: Ultra, Premium SSD v2, write-accelerated, shared, ephemeral)",
                    first.point,
                    d.name
                );
            }
            // The disk at that LUN must be the one the run read: another
            // attached there since would replicate into this disk's copy.
            if !source_of(&point, &d.name).is_some_and(|id| id.eq_ignore_ascii_case(&d.locator)) {
                bail!(
                    "restore point {}: disk {} is not {} (the VM's disks changed during the run); the next run \
                     reads them again",
                    first.point,
                    d.name,
                    d.locator
                );
            }
            if DiskPoint::parse(n).map(|p| p.disk) != Some(d.name.as_str()) {
                bail!("restore point {}: {n} does not name disk {}", first.point, d.name);
            }
        }
        Ok(Taken { consistency: recorded(point["properties"]["consistencyMode"].as_str()), note })
    }

    fn create_point(&self, path: &str, mode: Consistency) -> Result<Value> {
        let body = match mode {
            Consistency::Application => json!({ "properties": {} }),
            _ => json!({ "properties": { "consistencyMode": "CrashConsistent" } }),
        };
        self.arm.put(path, &body)
    }

    fn ensure_collection(&self, vm: &Vm, tags: &RunTags, collection: &str) -> Result<()> {
        let path = with_api(&self.collection_path(collection), VM_API);
        if let Some(c) = self.arm.get(&path)? {
            let source = c["properties"]["source"]["id"].as_str().unwrap_or_default();
            if !source.eq_ignore_ascii_case(&vm.id) {
                bail!(
                    "restore point collection {collection} holds restore points of {source}, not of {}: a replica's \
                     VM cannot change (make a new replica)",
                    vm.id
                );
            }
            return Ok(());
        }
        let mut t = serde_json::Map::new();
        t.insert(names::TAG_REPLICA.into(), tags.replica.clone().into());
        let body = json!({ "location": vm.location, "tags": t, "properties": { "source": { "id": vm.id } } });
        self.arm.put(&path, &body).map(|_| ())
    }

    /// The id of a disk point's disk restore point; `None` if its restore
    /// point is gone.
    pub(super) fn disk_point_id(&self, dp: DiskPoint<'_>) -> Result<Option<String>> {
        let name = DiskPoint::name(dp.collection, dp.point, dp.disk);
        if let Some(id) = self.points.lock().map_err(|_| anyhow!("poisoned"))?.get(&name) {
            return Ok(Some(id.clone()));
        }
        let Some(point) = self.arm.get(&with_api(&self.point_path(dp.collection, dp.point), VM_API))? else {
            return Ok(None);
        };
        let id = disk_point_of(&point, dp.disk)
            .ok_or_else(|| anyhow!("restore point {}: no disk restore point for disk {}", dp.point, dp.disk))?;
        self.points.lock().map_err(|_| anyhow!("poisoned"))?.insert(name, id.clone());
        Ok(Some(id))
    }

    /// Delete a disk point's restore point (every disk of it), and its
    /// collection if that leaves it empty.
    pub(super) fn delete_point(&self, dp: DiskPoint<'_>) -> Result<()> {
        let path = with_api(&self.point_path(dp.collection, dp.point), VM_API);
        if let Err(e) = self.arm.delete(&path) {
            if !is_code(&e, "DiskRestorePointUsedByCustomer") {
                return Err(e);
            }
            // Read access still granted (a run that died holding it).
            let point = self.arm.get(&path)?.unwrap_or(Value::Null);
            for disk in disks_of(&point) {
                if let Some(id) = disk_point_of(&point, &disk) {
                    self.arm.post(&with_api(&format!("{id}/endGetAccess"), DISK_API), None)?;
                }
            }
            self.arm.delete(&path)?;
        }
        let emptied = self
            .collection_with_points(dp.collection)?
            .is_some_and(|c| c["properties"]["restorePoints"].as_array().is_none_or(Vec::is_empty));
        if emptied {
            self.arm.delete(&with_api(&self.collection_path(dp.collection), VM_API))?;
        }
        Ok(())
    }

    /// Mark a disk point's restore point as its replica's newest, kept.
    pub(super) fn retain_point(&self, dp: DiskPoint<'_>) -> Result<()> {
        let path = with_api(&self.collection_path(dp.collection), VM_API);
        let c = self.arm.get(&path)?.ok_or_else(|| anyhow!("restore point collection {} is gone", dp.collection))?;
        if tag(&c, names::TAG_RETAINED) == Some(dp.point) {
            return Ok(());
        }
        let mut tags = c["tags"].as_object().cloned().unwrap_or_default();
        tags.insert(names::TAG_RETAINED.into(), dp.point.into());
        self.arm.patch(&path, &json!({ "tags": tags })).map(|_| ())
    }

    /// Every disk of every restore point in the work group's `df-`
    /// collections, as `gc` sees them.
    pub(super) fn listed_points(&self) -> Result<Vec<Found>> {
        let list = with_api(&self.work.list("Microsoft.Compute/restorePointCollections"), VM_API);
        let mut out = Vec::new();
        for c in self.list_all(&list)? {
            let Some(collection) = c["name"].as_str().filter(|n| n.starts_with(names::PREFIX)) else { continue };
            let Some(c) = self.collection_with_points(collection)? else { continue };
            let kept = tag(&c, names::TAG_RETAINED);
            for p in c["properties"]["restorePoints"].as_array().into_iter().flatten() {
                let Some(point) = p["name"].as_str() else { continue };
                let created = p["properties"]["timeCreated"].as_str();
                let expires_at = created
                    .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                    .map(|t| t.timestamp() + UNTAGGED_TTL_SECS);
                for disk in disks_of(p) {
                    out.push(Found {
                        kind: ResourceKind::Snapshot,
                        name: DiskPoint::name(collection, point, &disk),
                        run_id: names::run_of(point),
                        expires_at,
                        retained: kept == Some(point),
                    });
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_points_are_named_in_three_parts() {
        let n = DiskPoint::name("df-rpc-db", "df-20261207-1-rp", "lun3");
        assert_eq!(
            DiskPoint::parse(&n),
            Some(DiskPoint { collection: "df-rpc-db", point: "df-20261207-1-rp", disk: "lun3" })
        );
        for not in ["df-2026-os", "a/b", "a/b/c/d", "a//c", "/tmp/x/y.img"] {
            assert_eq!(DiskPoint::parse(not), None, "{not}");
        }
    }

    #[test]
    fn a_restore_points_disks_are_found_by_their_names_in_the_vm() {
        // The shape of RestorePoint_Get.json's sourceMetadata.storageProfile.
        let p = json!({"properties": {"consistencyMode": "ApplicationConsistent", "sourceMetadata": {"storageProfile": {
            "osDisk": {"name": "os1", "diskRestorePoint": {"id": "/x/diskRestorePoints/os1_g"}},
            "dataDisks": [{"lun": 1, "diskRestorePoint": {"id": "/x/diskRestorePoints/d1_g"}}, {"lun": 2}]}}}});
        assert_eq!(disk_point_of(&p, "os").as_deref(), Some("/x/diskRestorePoints/os1_g"));
        assert_eq!(disk_point_of(&p, "lun1").as_deref(), Some("/x/diskRestorePoints/d1_g"));
        assert_eq!(disk_point_of(&p, "lun2"), None, "a disk without a restore point (excluded)");
        assert_eq!(disk_point_of(&p, "lun0"), None);
        assert_eq!(disks_of(&p), ["os", "lun1"]);
        assert_eq!(recorded(p["properties"]["consistencyMode"].as_str()), "application");
        assert_eq!(recorded(Some("FileSystemConsistent")), "filesystem");
        assert_eq!(recorded(Some("CrashConsistent")), "crash");
    }
}
