//! Publishing at the destination: an Azure Compute Gallery image version
//! whose disk images are promoted recovery points, page blobs in the
//! destination's storage account (`GalleryImageVersions_CreateOrUpdate`,
//! GalleryRP 2024-03-03, `GalleryImageVersion_Create_WithVHD.json`:
//! `storageProfile.osDiskImage.source {storageAccountId, uri}` and
//! `dataDiskImages[] {lun, source}`).
//!
//! The version is created in the storage account's region, so the gallery
//! must be there too: a version is created in its gallery's region and
//! replicated from there (`publishingProfile.targetRegions`); one that
//! should reach other regions is replicated by the gallery afterwards.

use anyhow::{anyhow, bail, Result};
use serde_json::{json, Value};

use super::names::{self, with_api, GALLERY_API};
use super::AzureCloud;

/// Where a version is published, as [`AzureCloud::publish_target`] found it.
#[derive(Debug, Clone)]
pub struct Target {
    /// The image definition's resource id.
    pub definition: String,
    /// ARM id of the storage account holding the blobs.
    pub storage_account_id: String,
    /// The region of both, as the account names it.
    pub location: Value,
}

/// A gallery image version to create from promoted recovery points.
#[derive(Debug, Clone)]
pub struct Publish<'a> {
    /// `X.Y.Z` ([`check_version_name`]).
    pub version: &'a str,
    /// The OS disk's standalone page blob (no SAS).
    pub os_uri: &'a str,
    /// (LUN, blob) of each data disk.
    pub data: &'a [(u64, String)],
    pub tags: Value,
}

/// A version name as the spec asks: "The allowed characters are digit and
/// period. Digits must be within the range of a 32-bit integer. Format:
/// <MajorVersion>.<MinorVersion>.<Patch>" (GalleryRP 2024-03-03,
/// `galleryImageVersionName`).
pub fn check_version_name(v: &str) -> Result<()> {
    let parts: Vec<&str> = v.split('.').collect();
    let ok = parts.len() == 3
        && parts.iter().all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()) && p.parse::<i32>().is_ok());
    if !ok {
        bail!("gallery image version {v:?}: the format is MAJOR.MINOR.PATCH, each a number of at most 2147483647");
    }
    Ok(())
}

impl AzureCloud {
    /// Check what a version of `definition` in `gallery` from blobs of
    /// `storage_account_id` needs, before anything is promoted: the gallery
    /// and the definition exist, in the storage account's region.
    pub fn publish_target(&self, gallery: &str, definition: &str, storage_account_id: &str) -> Result<Target> {
        let gallery_id = gallery.trim_end_matches('/');
        let parts: Vec<&str> = gallery_id.trim_matches('/').split('/').collect();
        if parts.len() != 8 || !parts[6].eq_ignore_ascii_case("galleries") || !names::is_plain(definition) {
            bail!("--gallery names a gallery by its resource id (.../providers/Microsoft.Compute/galleries/NAME), --image-definition by its name");
        }
        let account = self
            .arm
            .get(&with_api(storage_account_id, names::STORAGE_API))?
            .ok_or_else(|| anyhow!("storage account {storage_account_id} not found"))?;
        let gallery = self
            .arm
            .get(&with_api(gallery_id, GALLERY_API))?
            .ok_or_else(|| anyhow!("gallery {gallery_id} not found"))?;
        let (here, there) = (region(&account["location"]), region(&gallery["location"]));
        if here != there {
            bail!(
                "the gallery {gallery_id} is in {there}, the destination's storage account in {here}: publish into a \
                 gallery in the destination's region (its versions replicate from there)"
            );
        }
        let definition = format!("{gallery_id}/images/{definition}");
        if self.arm.get(&with_api(&definition, GALLERY_API))?.is_none() {
            bail!("image definition {definition} not found: create it first (az sig image-definition create)");
        }
        Ok(Target {
            definition,
            storage_account_id: storage_account_id.to_owned(),
            location: account["location"].clone(),
        })
    }

    /// Create the image version at `to`; returns its resource id.
    pub fn publish_version(&self, to: &Target, p: &Publish<'_>) -> Result<String> {
        let source = |uri: &str| json!({ "storageAccountId": to.storage_account_id, "uri": uri });
        let data: Vec<Value> = p.data.iter().map(|(lun, uri)| json!({ "lun": lun, "source": source(uri) })).collect();
        let mut storage = json!({ "osDiskImage": { "source": source(p.os_uri) } });
        if !data.is_empty() {
            storage["dataDiskImages"] = data.into();
        }
        let body = json!({
            "location": to.location,
            "tags": p.tags,
            "properties": { "storageProfile": storage },
        });
        let id = format!("{}/versions/{}", to.definition, p.version);
        self.arm.put(&with_api(&id, GALLERY_API), &body)?;
        Ok(id)
    }
}

/// A region as ARM may spell it (`West Europe`, `westeurope`), compared.
fn region(v: &Value) -> String {
    v.as_str().unwrap_or_default().chars().filter(|c| !c.is_whitespace()).collect::<String>().to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_names_follow_the_spec() {
        check_version_name("1.0.0").unwrap();
        check_version_name("2026.12.2147483647").unwrap();
        for bad in ["1.0", "1.0.0.0", "1.a.0", "1..0", "1.0.2147483648", "v1.0.0", ""] {
            assert!(check_version_name(bad).is_err(), "{bad}");
        }
        assert_eq!(region(&json!("West Europe")), region(&json!("westeurope")));
    }
}
