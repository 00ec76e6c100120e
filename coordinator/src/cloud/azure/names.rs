//! What the `azure` provider calls things and how it tags them: ARM resource
//! paths with pinned api-versions, the names of a run's resources, and the
//! tags that let `diskferry gc` find them without the coordinator's database.

use anyhow::{bail, Result};

/// Compute VMs (ComputeRP; `dataDisks[].createOption: Copy` from a
/// snapshot needs 2023-09-01 or newer).
pub const VM_API: &str = "2025-04-01";
/// Disks and snapshots (DiskRP).
pub const DISK_API: &str = "2025-01-02";
/// Network interfaces (the worker's inline NIC is created through the VM).
pub const NETWORK_API: &str = "2025-03-01";
/// `networkProfile.networkApiVersion` of a VM with an inline NIC: the
/// Microsoft.Network version Compute creates it with. Not NETWORK_API: the
/// spec allows only "2020-11-01" and "2022-11-01" (ComputeRP/stable/2025-04-01/
/// computeRPCommon.json, `NetworkProfile`; the example
/// `VirtualMachine_Create_WithNetworkInterfaceConfiguration.json` sends 2020-11-01).
pub const INLINE_NIC_API: &str = "2022-11-01";

/// Azure Compute Gallery: image definitions and versions (GalleryRP; the
/// version the simulator's models, azure-mgmt-compute 37.0.0, are of).
pub const GALLERY_API: &str = "2024-03-03";

/// Storage accounts (read for an import's region).
pub const STORAGE_API: &str = "2023-05-01";

/// Tag: the run that created the resource.
pub const TAG_RUN: &str = "diskferry-run";
/// Tag: when `gc` may delete the resource (Unix seconds). Absent on a
/// retained snapshot.
pub const TAG_EXPIRES: &str = "diskferry-expires";
/// Tag: the replica the resource belongs to.
pub const TAG_REPLICA: &str = "diskferry-replica";
/// Tag: set on the snapshot a replica keeps as its newest.
pub const TAG_RETAINED: &str = "diskferry-retained";
/// Every resource a run creates has a name starting with this.
pub const PREFIX: &str = "df-";

/// Where a run's resources live: a subscription and resource group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    pub subscription: String,
    pub resource_group: String,
}

impl Scope {
    fn base(&self, provider: &str) -> String {
        format!("/subscriptions/{}/resourceGroups/{}/providers/{provider}", self.subscription, self.resource_group)
    }

    pub fn vm(&self, name: &str) -> String {
        format!("{}/virtualMachines/{name}", self.base("Microsoft.Compute"))
    }

    pub fn disk(&self, name: &str) -> String {
        format!("{}/disks/{name}", self.base("Microsoft.Compute"))
    }

    pub fn snapshot(&self, name: &str) -> String {
        format!("{}/snapshots/{name}", self.base("Microsoft.Compute"))
    }

    pub fn restore_point_collection(&self, name: &str) -> String {
        format!("{}/restorePointCollections/{name}", self.base("Microsoft.Compute"))
    }

    pub fn nic(&self, name: &str) -> String {
        format!("{}/networkInterfaces/{name}", self.base("Microsoft.Network"))
    }

    /// The list of one resource type in the group (`virtualMachines`, ...).
    pub fn list(&self, provider_type: &str) -> String {
        format!("/subscriptions/{}/resourceGroups/{}/providers/{provider_type}", self.subscription, self.resource_group)
    }
}

/// A managed disk imported from generation `g` of a replica's disk.
pub fn imported_disk(replica: &str, disk: &str, g: u64) -> String {
    format!("{replica}-{disk}-g{g}")
}

/// A subscription, resource group or resource name diskferry accepts:
/// letters, digits and `-_.()`.
pub fn is_plain(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.()".contains(c))
}

/// `path?api-version=V`.
pub fn with_api(path: &str, api: &str) -> String {
    format!("{path}?api-version={api}")
}

/// A VM named as `RESOURCE_GROUP/NAME` or by its full resource id.
pub fn parse_vm(vm: &str, subscription: &str) -> Result<(Scope, String)> {
    let parts: Vec<&str> = vm.trim_matches('/').split('/').collect();
    let ok = is_plain;
    match parts.as_slice() {
        [rg, name] if ok(rg) && ok(name) => {
            Ok((Scope { subscription: subscription.to_owned(), resource_group: (*rg).to_owned() }, (*name).to_owned()))
        }
        ["subscriptions", sub, rg_word, rg, "providers", p, t, name]
            if rg_word.eq_ignore_ascii_case("resourceGroups")
                && p.eq_ignore_ascii_case("Microsoft.Compute")
                && t.eq_ignore_ascii_case("virtualMachines")
                && [sub, rg, name].iter().all(|s| ok(s)) =>
        {
            // An incremental snapshot lives in its disk's subscription, and
            // the run's snapshots, worker and temporary disks are all made
            // in the configured one.
            if !sub.eq_ignore_ascii_case(subscription) {
                bail!(
                    "VM {vm}: it is in subscription {sub}, diskferry works in {subscription} ([azure] \
                     subscription): a disk's incremental snapshots stay in the disk's subscription, and the worker \
                     must be where its snapshots are. Run a coordinator configured for subscription {sub} (and a \
                     resource group there) for this VM"
                );
            }
            Ok((Scope { subscription: (*sub).to_owned(), resource_group: (*rg).to_owned() }, (*name).to_owned()))
        }
        _ => bail!(
            "VM {vm:?}: name it RESOURCE_GROUP/NAME or by its resource id \
             (/subscriptions/S/resourceGroups/RG/providers/Microsoft.Compute/virtualMachines/NAME)"
        ),
    }
}

/// The worker VM of a run.
pub fn worker(run_id: &str) -> String {
    format!("{PREFIX}{}", compact(run_id))
}

/// The worker's OS disk and NIC (deleted with it; named so `gc` finds strays).
pub fn worker_os_disk(worker: &str) -> String {
    format!("{worker}-os")
}

pub fn worker_nic(worker: &str) -> String {
    format!("{worker}-nic")
}

/// The snapshot of `disk` taken by a run.
pub fn snapshot(run_id: &str, disk: &str) -> String {
    format!("{PREFIX}{}-{disk}", compact(run_id))
}

/// The restore point collection of a replica's VM restore points (one a
/// replica, in the work group; a restore point is not tagged, its
/// collection is).
pub fn restore_point_collection(replica: &str) -> String {
    format!("{PREFIX}rpc-{}", compact(replica))
}

/// The VM restore point a run takes.
pub fn restore_point(run_id: &str) -> String {
    format!("{PREFIX}{}-rp", compact(run_id))
}

/// The temporary disk made from a snapshot at LUN `lun` of the worker
/// (`tmp`: a data disk named `lun0` has a snapshot `df-RUN-lun0`).
pub fn temp_disk(run_id: &str, lun: usize) -> String {
    format!("{PREFIX}{}-tmp-lun{lun}", compact(run_id))
}

/// The temporary disk a snapshot or an image version's disk `disk` is
/// made into before its snapshot (a source that is not a VM).
pub fn staged_disk(run_id: &str, disk: &str) -> String {
    format!("{PREFIX}{}-src-{disk}", compact(run_id))
}

/// The job source of the disk at `lun` of the worker: the agent finds its
/// device (SCSI and NVMe VM sizes link it under different names).
pub fn device(lun: usize) -> String {
    format!("lun:{lun}")
}

/// The run id back from a name made here (for resources without tags).
pub fn run_of(name: &str) -> Option<String> {
    let rest = name.strip_prefix(PREFIX)?;
    // compact(run id) = YYYYMMDD-HHMMSS-mmm-xxxx
    let parts: Vec<&str> = rest.splitn(5, '-').collect();
    if parts.len() < 4 || parts[..4].iter().any(|p| !p.chars().all(|c| c.is_ascii_alphanumeric())) {
        return None;
    }
    let (d, t, ms, salt) = (parts[0], parts[1], parts[2], parts[3]);
    (d.len() == 8 && t.len() == 6 && ms.len() == 3).then(|| format!("{d}-{t}.{ms}-{salt}"))
}

/// A run id (`20261122-101500.123-3f2a`) as a name part: ARM names allow
/// dots, but a name part of letters, digits and dashes is safe everywhere.
fn compact(run_id: &str) -> String {
    run_id.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_run() {
        let run = "20261122-101500.123-3f2a";
        assert_eq!(worker(run), "df-20261122-101500-123-3f2a");
        assert_eq!(snapshot(run, "lun3"), "df-20261122-101500-123-3f2a-lun3");
        for n in [worker(run), snapshot(run, "os"), temp_disk(run, 2), worker_nic(&worker(run)), restore_point(run)] {
            assert_eq!(run_of(&n).as_deref(), Some(run), "{n}");
            assert!(n.len() <= 80);
        }
        assert_eq!(run_of("df-nope"), None);
        assert_eq!(run_of("web1-os"), None);
        // A replica's collection is no run's.
        assert_eq!(restore_point_collection("db_1"), "df-rpc-db-1");
        assert_eq!(run_of(&restore_point_collection("db")), None);
    }

    #[test]
    fn vms_are_named_two_ways() {
        let (s, n) = parse_vm("prod-rg/web1", "sub1").unwrap();
        assert_eq!((s.resource_group.as_str(), n.as_str(), s.subscription.as_str()), ("prod-rg", "web1", "sub1"));
        let id = "/subscriptions/sub2/resourceGroups/rg2/providers/Microsoft.Compute/virtualMachines/db1";
        let (s, n) = parse_vm(id, "SUB2").unwrap();
        assert_eq!((s.subscription.as_str(), s.resource_group.as_str(), n.as_str()), ("sub2", "rg2", "db1"));
        assert_eq!(s.vm(&n), id);
        // A VM in another subscription than the configured one: refused, with why.
        let e = parse_vm(id, "sub1").unwrap_err().to_string();
        assert!(e.contains("subscription sub2") && e.contains("incremental snapshots"), "{e}");
        for bad in
            ["web1", "a/b/c", "rg/we b1", "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/disks/d"]
        {
            assert!(parse_vm(bad, "s").is_err(), "{bad}");
        }
    }
}
