//! A run's snapshots: one incremental snapshot per disk, PUT together
//! (`Snapshots_CreateOrUpdate`, DiskRP 2025-01-02), then waited on until
//! usable; and read access to two of them for the diff.
//!
//! A snapshot may exist and still not be usable: `snapshotAccessState`
//! `Pending` ("cannot be used for restore, copy or download"); Premium SSD
//! v2 and Ultra disks' snapshots copy in the background and stay Pending
//! for a while unless asked for instant access
//! (`creationData.instantAccessDurationMinutes`,
//! `Snapshot_Create_InstantAccessSnapshot.json`), which makes them
//! `InstantAccess`: good for making disks, not for reading.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use serde_json::{json, Value};

use super::names::{with_api, DISK_API};
use super::restore_points::DiskPoint;
use super::AzureCloud;
use crate::cloud::{RunTags, Vm};

/// Disk types whose snapshots are `Pending` until copied in the background.
fn needs_instant_access(sku: Option<&str>) -> bool {
    matches!(sku, Some("PremiumV2_LRS") | Some("UltraSSD_LRS"))
}

/// What a snapshot's `snapshotAccessState` allows.
fn can_restore(state: Option<&str>) -> bool {
    // Absent or Unknown: a service that does not report it (older regions).
    !matches!(state, Some("Pending"))
}

fn can_read(state: Option<&str>) -> bool {
    !matches!(state, Some("Pending") | Some("InstantAccess"))
}

impl AzureCloud {
    pub(super) fn take_snapshots(&self, vm: &Vm, names: &[String], tags: &RunTags) -> Result<()> {
        let puts = vm
            .disks
            .iter()
            .zip(names)
            .map(|(d, n)| {
                let mut creation = json!({ "createOption": "Copy", "sourceResourceId": d.locator });
                if needs_instant_access(d.sku.as_deref()) {
                    creation["instantAccessDurationMinutes"] = self.s.instant_access_minutes.into();
                }
                let body = json!({
                    "location": vm.location,
                    "tags": Self::tags(tags, &[("diskferry-disk", &d.name)]),
                    "properties": { "creationData": creation, "incremental": true },
                });
                (format!("snapshot {n}"), with_api(&self.work.snapshot(n), DISK_API), body)
            })
            .collect();
        self.put_together(puts)?;
        self.wait_usable(names)
    }

    /// PUT each `(what, path, body)` at once, one thread each, and wait for
    /// all: every failure is said, each named by its `what`.
    pub(super) fn put_together(&self, puts: Vec<(String, String, Value)>) -> Result<()> {
        let errors: Vec<String> = std::thread::scope(|sc| {
            let handles: Vec<_> = puts
                .into_iter()
                .map(|(what, path, body)| (what, sc.spawn(move || self.arm.put(&path, &body).map(|_| ()))))
                .collect();
            handles
                .into_iter()
                .filter_map(|(what, h)| match h.join() {
                    Ok(Ok(())) => None,
                    Ok(Err(e)) => Some(format!("{what}: {e:#}")),
                    Err(_) => Some(format!("{what}: the thread panicked")),
                })
                .collect()
        });
        if !errors.is_empty() {
            bail!("{}", errors.join("; "));
        }
        Ok(())
    }

    /// Wait until every snapshot can be made into a disk (not `Pending`),
    /// at most `snapshot_ready_secs`.
    fn wait_usable(&self, names: &[String]) -> Result<()> {
        let started = Instant::now();
        let deadline = Duration::from_secs(self.s.snapshot_ready_secs);
        let mut waiting: Vec<&String> = names.iter().collect();
        loop {
            let mut still = Vec::new();
            for n in waiting {
                let v = self.snapshot_props(n)?;
                if !can_restore(v["properties"]["snapshotAccessState"].as_str()) {
                    still.push(n);
                }
            }
            if still.is_empty() {
                return Ok(());
            }
            if started.elapsed() >= deadline {
                let list: Vec<&str> = still.iter().map(|s| s.as_str()).collect();
                bail!(
                    "snapshots {} are still Pending (not usable) after {} s ([azure] snapshot_ready_secs): a Premium \
                     SSD v2 or Ultra disk's snapshot copies in the background unless instant access is asked for",
                    list.join(", "),
                    deadline.as_secs()
                );
            }
            std::thread::sleep(self.poll_interval_of_snapshots());
            waiting = still;
        }
    }

    fn poll_interval_of_snapshots(&self) -> Duration {
        Duration::from_millis(self.s.watch_poll_ms.max(100))
    }

    fn snapshot_props(&self, name: &str) -> Result<Value> {
        let path = self.readable(name)?.ok_or_else(|| anyhow!("snapshot {name} is gone"))?;
        self.arm.get(&with_api(&path, DISK_API))?.ok_or_else(|| anyhow!("snapshot {name} is gone"))
    }

    /// What is read for `name`: a snapshot, or a disk restore point (a run
    /// that took a VM restore point); `None` if its restore point is gone.
    pub(super) fn readable(&self, name: &str) -> Result<Option<String>> {
        match DiskPoint::parse(name) {
            Some(dp) => self.disk_point_id(dp),
            None => Ok(Some(self.work.snapshot(name))),
        }
    }

    /// Why a SAS from Grant Access alone cannot read this snapshot, if it
    /// cannot: the diff then falls back to reading the whole disk.
    pub(super) fn unreadable_by_sas(&self, name: &str) -> Result<Option<String>> {
        let v = self.snapshot_props(name)?;
        let p = &v["properties"];
        let why = if p["dataAccessAuthMode"] == "AzureActiveDirectory" {
            "its dataAccessAuthMode is AzureActiveDirectory (a SAS needs an Entra token with it)".to_owned()
        } else if matches!(p["networkAccessPolicy"].as_str(), Some("AllowPrivate") | Some("DenyAll")) {
            format!("its networkAccessPolicy is {} (no access from public endpoints)", p["networkAccessPolicy"])
        } else if p["publicNetworkAccess"] == "Disabled" {
            "its publicNetworkAccess is Disabled".to_owned()
        } else if !can_read(p["snapshotAccessState"].as_str()) {
            format!("its snapshotAccessState is {} (not readable yet)", p["snapshotAccessState"])
        } else {
            return Ok(None);
        };
        Ok(Some(format!("snapshot {name}: {why}")))
    }

    /// Read access to a snapshot for an hour (`Snapshots_GrantAccess`,
    /// `final-state-via: location`): its SAS URL.
    pub(super) fn grant(&self, name: &str) -> Result<String> {
        self.grant_for(name, 3600)
    }

    /// Read access to a snapshot (or disk restore point:
    /// `DiskRestorePoint_GrantAccess`, the same protocol) for `secs`
    /// seconds: its SAS URL.
    pub(super) fn grant_for(&self, name: &str, secs: u64) -> Result<String> {
        let what = self.readable(name)?.ok_or_else(|| anyhow!("snapshot {name} is gone"))?;
        let path = with_api(&format!("{what}/beginGetAccess"), DISK_API);
        let out = self.arm.post(&path, Some(&json!({ "access": "Read", "durationInSeconds": secs })))?;
        out["accessSAS"].as_str().map(str::to_owned).ok_or_else(|| anyhow!("snapshot {name}: no accessSAS granted"))
    }

    /// End read access; a restore point that is gone has none to end.
    pub(super) fn revoke(&self, name: &str) -> Result<()> {
        let Some(what) = self.readable(name)? else { return Ok(()) };
        let path = with_api(&format!("{what}/endGetAccess"), DISK_API);
        self.arm.post(&path, None).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_states_say_what_a_snapshot_is_good_for() {
        // SnapshotAccessState (DiskRP 2025-01-02): Unknown, Pending,
        // Available, InstantAccess, AvailableWithInstantAccess.
        for (state, restore, read) in [
            (None, true, true),
            (Some("Unknown"), true, true),
            (Some("Pending"), false, false),
            (Some("Available"), true, true),
            (Some("InstantAccess"), true, false),
            (Some("AvailableWithInstantAccess"), true, true),
        ] {
            assert_eq!((can_restore(state), can_read(state)), (restore, read), "{state:?}");
        }
        assert!(needs_instant_access(Some("PremiumV2_LRS")) && needs_instant_access(Some("UltraSSD_LRS")));
        assert!(!needs_instant_access(Some("Premium_LRS")) && !needs_instant_access(None));
    }
}
