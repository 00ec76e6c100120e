//! Sources that are not VMs: one managed disk, one snapshot, or an Azure
//! Compute Gallery image version (each of its OS and data disk images).
//!
//! - A **disk** is snapshotted like a VM's disk (an incremental snapshot,
//!   kept for the next run's diff).
//! - A **snapshot** or an **image version** is first made into a temporary
//!   disk in the work group (`Disks_CreateOrUpdate`, DiskRP 2025-01-02:
//!   `createOption: Copy` from the snapshot, `Disk_Create_ByCopyingASnapshot.json`;
//!   `createOption: FromImage` with `galleryImageReference {id, lun}`,
//!   `Disk_Create_FromAnAzureComputeGalleryImage.json`), then snapshotted
//!   like a disk; the temporary disks are deleted as soon as their
//!   snapshots exist, or when making them failed. They are named
//!   `df-RUN-src-DISK` and tagged with the run and an expiry, so `gc`
//!   finds any that a dead coordinator left.
//!
//! An image is named by an image version's id, or by its image
//! definition's id: then each run reads the newest version
//! (`GalleryImageVersions_ListByGalleryImage`, GalleryRP 2024-03-03,
//! `GalleryImageVersion_ListByGalleryImage.json`), or the one a run is
//! given. Or it is a managed image (`Microsoft.Compute/images`,
//! `Images_Get`, ComputeRP 2025-04-01, `Image_Get.json`): its disks are
//! made `FromImage` with `imageReference {id, lun}` ("Disk source
//! information for PIR or user images", DiskRP `CreationData`); it has no
//! versions of its own, so a run's `--version` labels its points.

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};

use super::names::{self, with_api, DISK_API, GALLERY_API, VM_API};
use super::AzureCloud;
use crate::cloud::{RunTags, SourceKind, SourceRef, Vm, VmDisk};

/// Where a disk image of an image version is: `VERSION_ID#os` or `VERSION_ID#lunN`.
const IMAGE_DISK: char = '#';

/// An image's disks: `os`, then `lunN` by LUN, each located as
/// `IMAGE#os` / `IMAGE#lunN`, sized by `size` (or the reason it cannot be).
fn image_disks(
    what: &str,
    image: &str,
    os: &Value,
    data: &Value,
    size: impl Fn(&Value) -> std::result::Result<u64, &'static str>,
) -> Result<Vec<VmDisk>> {
    let disk = |name: String, d: &Value| -> Result<VmDisk> {
        Ok(VmDisk {
            locator: format!("{image}{IMAGE_DISK}{name}"),
            size: size(d).map_err(|why| anyhow!("{what}: disk image {name} {why}"))?,
            name,
            sku: None,
            no_restore_point: None,
        })
    };
    let mut disks = vec![disk("os".into(), os)?];
    let mut data: Vec<&Value> = data.as_array().map(|a| a.iter().collect()).unwrap_or_default();
    data.sort_by_key(|d| d["lun"].as_u64());
    for d in data {
        let lun = d["lun"].as_u64().ok_or_else(|| anyhow!("{what}: a data disk image has no lun"))?;
        disks.push(disk(format!("lun{lun}"), d)?);
    }
    Ok(disks)
}

impl AzureCloud {
    /// Read a source: a VM as `read_vm` does, a disk, snapshot or image
    /// here (`version`: an image version to read instead of the newest).
    pub(super) fn read_other(&self, src: &SourceRef, version: Option<&str>) -> Result<Vm> {
        match src.kind {
            SourceKind::Disk | SourceKind::Snapshot => self.read_disk_like(src),
            SourceKind::Image => self.read_image(&src.id, version),
            SourceKind::Vm => crate::cloud::Cloud::read_vm(self, &src.id),
        }
    }

    /// A managed disk or a snapshot: one disk, `os` when it says it holds
    /// an OS (its `osType`), else `disk`.
    fn read_disk_like(&self, src: &SourceRef) -> Result<Vm> {
        let kind = src.kind.as_str();
        let resource_type = if src.kind == SourceKind::Disk { "disks" } else { "snapshots" };
        let id = self.resource_id(&src.id, resource_type)?;
        let v = self
            .arm
            .get(&with_api(&id, DISK_API))?
            .ok_or_else(|| anyhow!("{kind} {id}: not found in subscription {}", self.s.subscription))?;
        let p = &v["properties"];
        let size = p["diskSizeBytes"]
            .as_u64()
            .or_else(|| p["diskSizeGB"].as_u64().map(|g| g << 30))
            .ok_or_else(|| anyhow!("{kind} {id}: no diskSizeBytes"))?;
        let os_type = p["osType"].as_str().map(str::to_owned);
        let name = v["name"].as_str().unwrap_or_default().to_owned();
        Ok(Vm {
            id: id.clone(),
            name: name.clone(),
            source: src.kind,
            version: None,
            os_type: os_type.clone().unwrap_or_else(|| "Linux".into()),
            location: v["location"].as_str().unwrap_or_default().to_owned(),
            hyper_v_generation: p["hyperVGeneration"].as_str().map(str::to_owned),
            security_type: p["securityProfile"]["securityType"].as_str().map(str::to_owned),
            zone: v["zones"][0].as_str().map(str::to_owned),
            os_capabilities: Some(p["supportedCapabilities"].clone()).filter(Value::is_object),
            size: None,
            disks: vec![VmDisk {
                name: if os_type.is_some() { "os" } else { "disk" }.into(),
                locator: id,
                size,
                // A snapshot's SKU is not a disk's: the copy is made as the
                // work group's temporary disks are.
                sku: if src.kind == SourceKind::Disk { v["sku"]["name"].as_str().map(str::to_owned) } else { None },
                no_restore_point: None,
            }],
        })
    }

    /// `RESOURCE_GROUP/NAME` of this subscription, or a resource id of
    /// `resource_type` (`disks`, `snapshots`).
    fn resource_id(&self, given: &str, resource_type: &str) -> Result<String> {
        let parts: Vec<&str> = given.trim_matches('/').split('/').collect();
        match parts.as_slice() {
            [rg, name] if names::is_plain(rg) && names::is_plain(name) => {
                Ok(format!("{}/{resource_type}/{name}", self.scope(rg).list("Microsoft.Compute")))
            }
            ["subscriptions", _, _, _, "providers", p, t, _]
                if p.eq_ignore_ascii_case("Microsoft.Compute") && t.eq_ignore_ascii_case(resource_type) =>
            {
                Ok(given.trim_end_matches('/').to_owned())
            }
            _ => bail!("{given}: name it as RESOURCE_GROUP/NAME or its resource id (.../Microsoft.Compute/{resource_type}/NAME)"),
        }
    }

    /// An image version (its id, or its definition's and the newest or
    /// given version): its disk images, sizes and what its definition
    /// says of the OS.
    fn read_image(&self, given: &str, version: Option<&str>) -> Result<Vm> {
        let id = given.trim_end_matches('/');
        let lower = id.to_ascii_lowercase();
        if lower.contains("/providers/microsoft.compute/images/") {
            return self.read_managed_image(id, version);
        }
        let parts: Vec<&str> = id.trim_matches('/').split('/').collect();
        let gallery = parts.len() >= 10
            && parts[5].eq_ignore_ascii_case("Microsoft.Compute")
            && parts[6].eq_ignore_ascii_case("galleries")
            && parts[8].eq_ignore_ascii_case("images");
        let (definition, named) = match parts.len() {
            10 if gallery => (id.to_owned(), None),
            12 if gallery && parts[10].eq_ignore_ascii_case("versions") => {
                (format!("/{}", parts[..10].join("/")), Some(parts[11].to_owned()))
            }
            _ => bail!(
                "{id}: name an image as a gallery image version's id (.../galleries/G/images/I/versions/X.Y.Z) or \
                 its image definition's (.../galleries/G/images/I: each run reads its newest version)"
            ),
        };
        let version = match (named, version) {
            (Some(n), Some(v)) if n != v => bail!("the replica reads version {n} of its image, not {v}"),
            (Some(n), _) => n,
            (None, Some(v)) => v.to_owned(),
            (None, None) => self.newest_version(&definition)?,
        };
        let def = self
            .arm
            .get(&with_api(&definition, GALLERY_API))?
            .ok_or_else(|| anyhow!("image definition {definition}: not found"))?;
        let version_id = format!("{definition}/versions/{version}");
        let v = self
            .arm
            .get(&with_api(&version_id, GALLERY_API))?
            .ok_or_else(|| anyhow!("image version {version_id}: not found"))?;
        let state = v["properties"]["provisioningState"].as_str().unwrap_or("Succeeded");
        if state != "Succeeded" {
            bail!("image version {version_id} is {state}: it can be read once Succeeded");
        }
        let sp = &v["properties"]["storageProfile"];
        let disks = image_disks(
            &format!("image version {version_id}"),
            &version_id,
            &sp["osDiskImage"],
            &sp["dataDiskImages"],
            |d| d["sizeInGB"].as_u64().map(|g| g << 30).ok_or("has no sizeInGB"),
        )?;
        let dp = &def["properties"];
        let feature = |n: &str| {
            dp["features"].as_array().into_iter().flatten().find(|f| f["name"] == n).and_then(|f| f["value"].as_str())
        };
        Ok(Vm {
            id: version_id,
            name: parts[9].to_owned(),
            source: SourceKind::Image,
            version: Some(version),
            os_type: dp["osType"].as_str().unwrap_or("Linux").to_owned(),
            location: v["location"].as_str().or(def["location"].as_str()).unwrap_or_default().to_owned(),
            hyper_v_generation: dp["hyperVGeneration"].as_str().map(str::to_owned),
            security_type: feature("SecurityType").filter(|t| *t == "TrustedLaunch").map(str::to_owned),
            zone: None,
            os_capabilities: dp["architecture"].as_str().map(|a| json!({ "architecture": a })),
            size: None,
            disks,
        })
    }

    /// A managed image: its OS disk and data disks (`version`: a label).
    fn read_managed_image(&self, id: &str, version: Option<&str>) -> Result<Vm> {
        let v = self.arm.get(&with_api(id, VM_API))?.ok_or_else(|| anyhow!("managed image {id}: not found"))?;
        let p = &v["properties"];
        let sp = &p["storageProfile"];
        // A data disk's size need not be listed (Image_Get.json lists none):
        // the agent reads the snapshot's own.
        let disks = image_disks(&format!("managed image {id}"), id, &sp["osDisk"], &sp["dataDisks"], |d| {
            Ok(d["diskSizeGB"].as_u64().map_or(0, |g| g << 30))
        })?;
        Ok(Vm {
            id: id.to_owned(),
            name: v["name"].as_str().unwrap_or_default().to_owned(),
            source: SourceKind::Image,
            version: version.map(str::to_owned),
            os_type: sp["osDisk"]["osType"].as_str().unwrap_or("Linux").to_owned(),
            location: v["location"].as_str().unwrap_or_default().to_owned(),
            hyper_v_generation: p["hyperVGeneration"].as_str().map(str::to_owned),
            security_type: None,
            zone: None,
            os_capabilities: None,
            size: None,
            disks,
        })
    }

    /// The newest version of an image definition that can be read: by
    /// version number, Succeeded, not excluded from latest.
    fn newest_version(&self, definition: &str) -> Result<String> {
        let list = self.list_all(&with_api(&format!("{definition}/versions"), GALLERY_API))?;
        let number = |n: &str| -> Option<Vec<u64>> { n.split('.').map(|p| p.parse().ok()).collect() };
        list.iter()
            .filter(|v| v["properties"]["provisioningState"].as_str().unwrap_or("Succeeded") == "Succeeded")
            .filter(|v| v["properties"]["publishingProfile"]["excludeFromLatest"] != true)
            .filter_map(|v| v["name"].as_str())
            .filter_map(|n| number(n).map(|k| (k, n)))
            .max()
            .map(|(_, n)| n.to_owned())
            .ok_or_else(|| anyhow!("image definition {definition} has no version to read"))
    }

    /// Snapshot a snapshot's or an image version's disks: a temporary disk
    /// of each, their snapshots (`names`), then the temporary disks
    /// deleted, whatever happened.
    pub(super) fn take_staged(&self, vm: &Vm, names: &[String], tags: &RunTags) -> Result<()> {
        let staged: Vec<String> =
            crate::cloud::Cloud::staging_names(self, vm, &tags.run_id).into_iter().map(|(_, n)| n).collect();
        let made = self.make_staged(vm, &staged, tags).and_then(|ids| {
            let mut on_disks = vm.clone();
            for (d, id) in on_disks.disks.iter_mut().zip(ids) {
                d.locator = id;
            }
            self.take_snapshots(&on_disks, names, tags)
        });
        let mut deleted = Ok(());
        for n in &staged {
            if let Err(e) = self.arm.delete(&with_api(&self.work.disk(n), DISK_API)) {
                if deleted.is_ok() {
                    deleted = Err(e).with_context(|| format!("deleting the temporary disk {n}"));
                }
            }
        }
        made.and(deleted)
    }

    /// Create the temporary disks, together; their ids.
    fn make_staged(&self, vm: &Vm, staged: &[String], tags: &RunTags) -> Result<Vec<String>> {
        let puts = vm
            .disks
            .iter()
            .zip(staged)
            .map(|(d, n)| {
                let creation = match d.locator.split_once(IMAGE_DISK) {
                    Some((image, which)) => {
                        // A gallery image version, or a managed ("user") image.
                        let field = match image.to_ascii_lowercase().contains("/galleries/") {
                            true => "galleryImageReference",
                            false => "imageReference",
                        };
                        let mut reference = json!({ "id": image });
                        if let Some(lun) = which.strip_prefix("lun").and_then(|n| n.parse::<u64>().ok()) {
                            reference["lun"] = lun.into();
                        }
                        json!({ "createOption": "FromImage", field: reference })
                    }
                    None => json!({ "createOption": "Copy", "sourceResourceId": d.locator }),
                };
                let body = json!({
                    "location": vm.location,
                    "sku": { "name": self.s.temp_disk_sku },
                    "tags": Self::tags(tags, &[("diskferry-disk", &d.name)]),
                    "properties": { "creationData": creation },
                });
                (format!("temporary disk {n}"), with_api(&self.work.disk(n), DISK_API), body)
            })
            .collect();
        self.put_together(puts)?;
        Ok(staged.iter().map(|n| self.work.disk(n)).collect())
    }
}
