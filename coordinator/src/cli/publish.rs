//! `diskferry publish`: a replica's recovery point, at its destination, as
//! an Azure Compute Gallery image version (or as managed disks, as
//! `import --to azure:RG` makes them). Each disk's point is first promoted
//! server side to a standalone blob beside it; the version's disk images
//! are those blobs.

use anyhow::anyhow;
use clap::Args;

use super::results::{azure_cloud, destination, import_azure, newest_disks, print_imported, promote_point, ImportArgs};
use super::{print_json, usage, Env, Failure};
use crate::cloud::azure::gallery::{check_version_name, Publish};
use crate::destination::Destination;
use crate::store::{Replica, Store};

#[derive(Debug, Args)]
pub struct PublishArgs {
    /// The replica whose recovery point to publish.
    pub replica: String,
    /// The recovery point: a generation, or an image version the replica
    /// synced (`diskferry points` shows both) [default: the newest].
    #[arg(long, value_name = "G|VERSION")]
    pub point: Option<String>,
    /// Which destination, by its position in `replica create --to ...` (1 = the first).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub dest: u32,
    /// The gallery to publish into (its resource id), in the destination's region.
    #[arg(long, value_name = "ID", conflicts_with = "to", required_unless_present = "to")]
    pub gallery: Option<String>,
    /// The image definition in the gallery (it must exist).
    #[arg(long, value_name = "NAME", requires = "gallery")]
    pub image_definition: Option<String>,
    /// The image version to create, MAJOR.MINOR.PATCH [default: the
    /// point's image version, when it has that form].
    #[arg(long, value_name = "X.Y.Z", requires = "gallery")]
    pub version: Option<String>,
    /// Or managed disks in this resource group instead (azure:RG), as `import` makes them.
    #[arg(long, value_name = "azure:RG")]
    pub to: Option<String>,
    /// The ARM id of the destination's storage account.
    #[arg(long, value_name = "ID", required = true)]
    pub storage_account: String,
    /// With --to: the managed disks' SKU.
    #[arg(long, default_value = "StandardSSD_LRS")]
    pub sku: String,
    /// Print what was made as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, serde::Serialize)]
struct Published {
    /// The gallery image version's id.
    id: String,
    /// Each disk: its name, generation and the blob its image is.
    disks: Vec<serde_json::Value>,
}

pub fn publish(env: &Env, a: PublishArgs) -> Result<(), Failure> {
    let store = env.store()?;
    let r = store.replica(&a.replica)?;
    let dest = destination(&r, a.dest)?;
    if !matches!(dest, Destination::PageBlob { .. }) {
        return usage(Err(anyhow!("only a pageblob: destination can be published to Azure")));
    }
    if !a.storage_account.starts_with("/subscriptions/") {
        return usage(Err(anyhow!("--storage-account takes the destination account's resource id")));
    }
    let cloud = azure_cloud(env)?;
    let points = points(&store, &r, a.dest - 1, a.point.as_deref())?;
    if let Some(to) = &a.to {
        // Managed disks: one generation for every disk, as import takes it.
        let mut gens: Vec<u64> = points.iter().map(|p| p.1).collect();
        gens.dedup();
        let point = match gens.as_slice() {
            [g] if a.point.is_some() => Some(*g),
            _ if a.point.is_none() => None,
            _ => {
                return usage(Err(anyhow!(
                    "the disks' points of {} are of different generations",
                    a.point.unwrap_or_default()
                )))
            }
        };
        let rg = to.strip_prefix("azure:").ok_or_else(|| Failure::from(anyhow!("--to takes azure:RESOURCE_GROUP")))?;
        let args = ImportArgs {
            replica: r.name.clone(),
            point,
            dest: a.dest,
            to: to.clone(),
            storage_account: Some(a.storage_account.clone()),
            sku: a.sku.clone(),
            json: a.json,
        };
        let made = import_azure(env, &cloud, &store, &r, &args, rg)?;
        return print_imported(&made, a.json);
    }
    let (gallery, definition) = match (&a.gallery, &a.image_definition) {
        (Some(g), Some(d)) => (g.as_str(), d.as_str()),
        _ => return usage(Err(anyhow!("--gallery needs --image-definition"))),
    };
    let version = match (&a.version, points.first().and_then(|p| p.2.clone())) {
        (Some(v), _) => v.clone(),
        (None, Some(v)) if check_version_name(&v).is_ok() => v,
        (None, v) => {
            return usage(Err(anyhow!(
                "name the gallery image version with --version X.Y.Z (the point's image version is {})",
                v.as_deref().unwrap_or("not recorded")
            )))
        }
    };
    usage(check_version_name(&version))?;
    // Refused before any point is promoted.
    let target = cloud.publish_target(gallery, definition, &a.storage_account)?;
    let mut os = None;
    let mut data = Vec::new();
    let mut disks = Vec::new();
    for (disk, g, _) in &points {
        let lun = match disk.as_str() {
            "os" => None,
            d => match d.strip_prefix("lun").and_then(|n| n.parse::<u64>().ok()) {
                Some(n) => Some(n),
                None => {
                    return usage(Err(anyhow!(
                        "disk {d}: an image version is made of an OS disk (os) and data disks (lunN); this replica's \
                         disks are not named so"
                    )))
                }
            },
        };
        let blob = format!("images/{}/{disk}.g{g}.vhd", r.name);
        let v = promote_point(env, &dest, &r.name, disk, Some(*g), blob)?;
        disks.push(serde_json::json!({ "disk": disk, "generation": v.generation, "blob": v.blob }));
        match lun {
            None => os = Some(v.blob),
            Some(n) => data.push((n, v.blob)),
        }
    }
    let os = os.ok_or_else(|| Failure::from(anyhow!("replica {} has no OS disk (os) to publish", r.name)))?;
    let tags = serde_json::json!({ crate::cloud::azure::names::TAG_REPLICA: r.name });
    let spec = Publish { version: &version, os_uri: &os, data: &data, tags };
    let id = cloud.publish_version(&target, &spec)?;
    let out = Published { id, disks };
    if a.json {
        return print_json(&out);
    }
    println!("published {}", out.id);
    for d in &out.disks {
        println!("  {} generation {} from {}", d["disk"], d["generation"], d["blob"].as_str().unwrap_or_default());
    }
    Ok(())
}

/// Each disk's point at destination `dest` (0-based): (disk, generation,
/// the image version it holds), for `point` (a generation, an image
/// version, or the newest).
fn points(
    store: &Store,
    r: &Replica,
    dest: u32,
    point: Option<&str>,
) -> Result<Vec<(String, u64, Option<String>)>, Failure> {
    let mut out = Vec::new();
    for d in newest_disks(store, r, dest)? {
        let g = match point {
            None => d.generation,
            Some(p) => match p.parse::<u64>() {
                Ok(g) => g,
                Err(_) => store.version_generation(&r.name, &d.disk, dest, p)?.ok_or_else(|| {
                    Failure::from(anyhow!(
                        "disk {}: no recovery point of version {p} at destination {}",
                        d.disk,
                        dest + 1
                    ))
                })?,
            },
        };
        let version = store.point_version(&r.name, &d.disk, dest, g)?;
        out.push((d.disk, g, version));
    }
    Ok(out)
}
