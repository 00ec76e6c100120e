//! The simulator's images and the disks made from things other than a
//! blob: galleries, image definitions and image versions whose disk images
//! are files here, managed images (`Image_Get.json`), disks copied from a
//! snapshot or a disk (`Disk_Create_ByCopyingASnapshot.json`) or made from
//! an image version (`Disk_Create_FromAnAzureComputeGalleryImage.json`) or a
//! managed image (`imageReference`: "PIR or user images"), and image
//! versions created from page blobs (`GalleryImageVersion_Create_WithVHD.json`,
//! GalleryRP 2024-03-03).
//!
//! What it refuses, from the spec: a version name that is not
//! `MAJOR.MINOR.PATCH` of 32-bit numbers (`galleryImageVersionName`), a
//! version of an image definition that does not exist, a storage profile
//! with neither `source` nor `osDiskImage` (`GalleryImageVersionStorageProfile`),
//! a disk image whose `source` names a storage account that does not exist
//! or a blob that cannot be read without a SAS; a disk from an image
//! version in a region the version is not replicated to (the gallery
//! overview: a VM is made of a version where it has a replica), or of a
//! LUN the version has no data disk image at.

use std::path::Path;

use serde_json::{json, Value};

use super::{err, key, rg_path, ArmSim, SimState};

const EXAMPLES: &str = "../../specs/examples/compute/resource-manager/Microsoft.Compute";

/// The body of an example's answer (`SOURCES.md` lists the copies), by its
/// path under `Microsoft.Compute`.
fn example(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/armsim").join(EXAMPLES).join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let doc: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    doc["responses"]["200"]["body"].clone()
}

/// A disk image of a version, as a file key: `VERSION_KEY#os`, `#lunN`.
fn image_key(version: &str, lun: Option<u64>) -> String {
    match lun {
        None => format!("{}#os", key(version)),
        Some(n) => format!("{}#lun{n}", key(version)),
    }
}

/// A region as ARM may spell it (`West Europe`, `westeurope`).
fn region(v: &Value) -> String {
    v.as_str().unwrap_or_default().chars().filter(|c| !c.is_whitespace()).collect::<String>().to_ascii_lowercase()
}

/// Cut a fixed VHD's footer (`conectix` in its last 512 bytes) off `file`.
fn strip_vhd_footer(file: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().read(true).write(true).open(file)?;
    let len = f.metadata()?.len();
    let mut cookie = [0u8; 8];
    if len >= 512 && f.read_exact_at(&mut cookie, len - 512).is_ok() && &cookie == b"conectix" {
        f.set_len(len - 512)?;
    }
    Ok(())
}

fn size_in_gb(file: &Path) -> u64 {
    std::fs::metadata(file).map(|m| m.len().div_ceil(1 << 30)).unwrap_or(0)
}

impl ArmSim {
    /// A gallery `rg/name` in `location`; its id.
    pub fn add_gallery(&self, rg: &str, name: &str, location: &str) -> String {
        let id = format!("{}/providers/Microsoft.Compute/galleries/{name}", rg_path(rg));
        self.with(|s| {
            s.resources.insert(
                key(&id),
                json!({"id": id, "name": name, "type": "Microsoft.Compute/galleries", "location": location,
                       "properties": {"provisioningState": "Succeeded", "identifier": {"uniqueName": format!("{name}-u")}}}),
            )
        });
        id
    }

    /// An image definition in `gallery`: GalleryImage_Get.json's answer
    /// with this id, name, region and OS type; its id.
    pub fn add_image_definition(&self, gallery: &str, name: &str, os_type: &str) -> String {
        let id = format!("{gallery}/images/{name}");
        let mut v = example("GalleryRP/stable/2024-03-03/examples/galleryExamples/GalleryImage_Get.json");
        v["id"] = id.clone().into();
        v["name"] = name.into();
        v["type"] = "Microsoft.Compute/galleries/images".into();
        v["properties"]["osType"] = os_type.into();
        self.with(|s| {
            v["location"] = s.resources.get(&key(gallery)).map(|g| g["location"].clone()).unwrap_or_default();
            s.resources.insert(key(&id), v)
        });
        id
    }

    /// Version `version` of `definition`, replicated to `regions` (its
    /// gallery's first), whose OS disk image and data disk images (LUN,
    /// file) are files: GalleryImageVersion_Get.json's answer with this
    /// id, name, regions and disk images (not made from a managed image:
    /// no `storageProfile.source`); its id.
    pub fn add_image_version(
        &self,
        definition: &str,
        version: &str,
        regions: &[&str],
        os: &Path,
        data: &[(u64, &Path)],
    ) -> String {
        let id = format!("{definition}/versions/{version}");
        let targets: Vec<Value> = regions.iter().map(|r| json!({"name": r, "regionalReplicaCount": 1})).collect();
        let data_images: Vec<Value> =
            data.iter().map(|(lun, f)| json!({"lun": lun, "sizeInGB": size_in_gb(f), "hostCaching": "None"})).collect();
        let mut v = example("GalleryRP/stable/2024-03-03/examples/galleryExamples/GalleryImageVersion_Get.json");
        v["id"] = id.clone().into();
        v["name"] = version.into();
        v["type"] = "Microsoft.Compute/galleries/images/versions".into();
        v["location"] = regions[0].into();
        v["properties"]["publishingProfile"]["targetRegions"] = targets.into();
        v["properties"]["storageProfile"] = json!({
            "osDiskImage": {"sizeInGB": size_in_gb(os), "hostCaching": "ReadWrite"},
            "dataDiskImages": data_images,
        });
        self.with(|s| {
            s.resources.insert(key(&id), v);
            s.files.insert(image_key(&id, None), os.to_owned());
            for (lun, f) in data {
                s.files.insert(image_key(&id, Some(*lun)), f.to_path_buf());
            }
        });
        id
    }

    /// A managed image `rg/name` whose OS disk and data disks (LUN, file)
    /// are files: Image_Get.json's answer with this id, name, region and
    /// disks (made of none of the example's blobs, snapshots or disks); its id.
    pub fn add_managed_image(&self, rg: &str, name: &str, location: &str, os: &Path, data: &[(u64, &Path)]) -> String {
        let id = format!("{}/providers/Microsoft.Compute/images/{name}", rg_path(rg));
        let mut v = example("ComputeRP/stable/2025-04-01/examples/imageExamples/Image_Get.json");
        v["id"] = id.clone().into();
        v["name"] = name.into();
        v["location"] = location.into();
        let sp = &mut v["properties"]["storageProfile"];
        sp["osDisk"] = json!({"osType": "Linux", "osState": "Generalized", "storageAccountType": "Standard_LRS",
                              "diskSizeGB": size_in_gb(os)});
        sp["dataDisks"] =
            data.iter().map(|(lun, _)| json!({"lun": lun, "storageAccountType": "Standard_LRS"})).collect();
        self.with(|s| {
            s.resources.insert(key(&id), v);
            s.files.insert(image_key(&id, None), os.to_owned());
            for (lun, f) in data {
                s.files.insert(image_key(&id, Some(*lun)), f.to_path_buf());
            }
        });
        id
    }

    /// The file of a version's disk image (`lun` None: its OS disk image).
    pub fn image_file(&self, version: &str, lun: Option<u64>) -> Option<std::path::PathBuf> {
        self.with(|s| s.files.get(&image_key(version, lun)).cloned())
    }

    /// A disk made of another resource: `Copy` of a snapshot or disk,
    /// `FromImage` of a gallery image version's disk image. Its bytes are
    /// copied now.
    pub(super) fn put_disk_from(&self, s: &mut SimState, path: &str, v: &mut Value) -> Result<(), (u16, Value)> {
        let cd = v["properties"]["creationData"].clone();
        let (file, os_type) = match cd["createOption"].as_str() {
            Some("Copy") => {
                let src = cd["sourceResourceId"].as_str().unwrap_or_default();
                let Some(file) = s.files.get(&key(src)).cloned() else {
                    return Err((404, err("NotFound", &format!("Resource {src} is not found."))));
                };
                let os = s.resources.get(&key(src)).map(|r| r["properties"]["osType"].clone()).unwrap_or_default();
                (file, os)
            }
            Some("FromImage") if cd["galleryImageReference"].is_null() => {
                // A managed image: in its own region only (it is not replicated).
                let r = &cd["imageReference"];
                let image = r["id"].as_str().unwrap_or_default();
                let Some(img) = s.resources.get(&key(image)).cloned() else {
                    return Err((404, err("NotFound", &format!("Image {image} is not found."))));
                };
                if region(&img["location"]) != region(&v["location"]) {
                    return Err((
                        400,
                        err("InvalidParameter", &format!("The image {image} is in {}.", img["location"])),
                    ));
                }
                let lun = r["lun"].as_u64();
                let Some(file) = s.files.get(&image_key(image, lun)).cloned() else {
                    return Err((
                        400,
                        err("InvalidParameter", &format!("The image {image} has no data disk at lun {lun:?}.")),
                    ));
                };
                let os = if lun.is_none() {
                    img["properties"]["storageProfile"]["osDisk"]["osType"].clone()
                } else {
                    Value::Null
                };
                (file, os)
            }
            Some("FromImage") => {
                let r = &cd["galleryImageReference"];
                let version = r["id"].as_str().unwrap_or_default();
                let Some(ver) = s.resources.get(&key(version)).cloned() else {
                    return Err((404, err("NotFound", &format!("Gallery image version {version} is not found."))));
                };
                let lun = r["lun"].as_u64();
                let Some(file) = s.files.get(&image_key(version, lun)).cloned() else {
                    return Err((
                        400,
                        err(
                            "InvalidParameter",
                            &format!("The image version {version} has no data disk image at lun {lun:?}."),
                        ),
                    ));
                };
                let mut regions: Vec<String> = vec![region(&ver["location"])];
                regions.extend(
                    ver["properties"]["publishingProfile"]["targetRegions"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|t| region(&t["name"])),
                );
                if !regions.contains(&region(&v["location"])) {
                    return Err((
                        400,
                        err(
                            "InvalidParameter",
                            &format!("The gallery image version {version} is not replicated to {}.", v["location"]),
                        ),
                    ));
                }
                let definition = version.rsplit_once("/versions/").map(|x| x.0).unwrap_or_default();
                let os = match lun {
                    None => {
                        s.resources.get(&key(definition)).map(|d| d["properties"]["osType"].clone()).unwrap_or_default()
                    }
                    Some(_) => Value::Null,
                };
                (file, os)
            }
            _ => unreachable!("put_disk_from is called for Copy and FromImage"),
        };
        let copy = self.dir.join(format!("disk-{}.img", s.next_op + 1 + s.files.len() as u64));
        super::dataplane::sparse_copy(&file, &copy).map_err(|e| (500, err("InternalError", &e.to_string())))?;
        let size = std::fs::metadata(&copy).map(|m| m.len()).unwrap_or(0);
        v["properties"]["diskSizeBytes"] = size.into();
        v["properties"]["diskSizeGB"] = size.div_ceil(1 << 30).into();
        v["properties"]["diskState"] = "Unattached".into();
        if !os_type.is_null() {
            v["properties"]["osType"] = os_type;
        }
        s.files.insert(key(path), copy);
        Ok(())
    }

    /// An image version created from page blobs: checked as the spec
    /// says, each blob read (it must exist and be readable without a SAS)
    /// into the version's disk image.
    pub(super) fn put_gallery_version(&self, s: &mut SimState, path: &str, v: &mut Value) -> Result<(), (u16, Value)> {
        let bad = |m: String| Err((400, err("InvalidParameter", &m)));
        let name = path.rsplit('/').next().unwrap_or_default();
        let parts: Vec<&str> = name.split('.').collect();
        if parts.len() != 3
            || parts.iter().any(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) || p.parse::<i32>().is_err())
        {
            return bad(format!(
                "The gallery image version name '{name}' is invalid: the format is <MajorVersion>.<MinorVersion>.<Patch>, \
                 digits within the range of a 32-bit integer."
            ));
        }
        let definition = path.rsplit_once("/versions/").map(|x| x.0).unwrap_or_default();
        if !s.resources.contains_key(&key(definition)) {
            return Err((404, err("ParentResourceNotFound", &format!("Gallery image {definition} is not found."))));
        }
        let sp = v["properties"]["storageProfile"].clone();
        if sp["source"].is_null() && sp["osDiskImage"].is_null() {
            return bad("storageProfile needs a source or an osDiskImage.".into());
        }
        let mut images = vec![(None, sp["osDiskImage"]["source"].clone())];
        for d in sp["dataDiskImages"].as_array().into_iter().flatten() {
            images.push((d["lun"].as_u64(), d["source"].clone()));
        }
        let mut read = Vec::new();
        for (lun, src) in images {
            let (Some(uri), Some(account)) = (src["uri"].as_str(), src["storageAccountId"].as_str()) else {
                return bad("each disk image's source needs a uri and a storageAccountId.".into());
            };
            if !s.resources.contains_key(&key(account)) {
                return Err((404, err("StorageAccountNotFound", &format!("Storage account {account} not found."))));
            }
            if uri.contains('?') {
                return bad(format!("source.uri {uri} must be a blob URL without a SAS."));
            }
            let file = self.dir.join(format!("image-{}-{}.vhd", s.next_op + 1 + s.files.len() as u64, read.len()));
            super::dataplane::fetch_blob(uri, &file)
                .map_err(|e| (400, err("InvalidParameter", &format!("source.uri {uri}: {e}"))))?;
            // A VHD's disk is its bytes before the 512-byte footer.
            strip_vhd_footer(&file).map_err(|e| (500, err("InternalError", &e.to_string())))?;
            read.push((lun, file));
        }
        // What GalleryImageVersion_Get.json shows of each disk image: its size.
        v["properties"]["storageProfile"]["osDiskImage"]["sizeInGB"] = size_in_gb(&read[0].1).into();
        if let Some(d) = v["properties"]["storageProfile"]["dataDiskImages"].as_array_mut() {
            for (d, (_, f)) in d.iter_mut().zip(&read[1..]) {
                d["sizeInGB"] = size_in_gb(f).into();
            }
        }
        for (lun, file) in read {
            s.files.insert(image_key(path, lun), file);
        }
        Ok(())
    }
}
