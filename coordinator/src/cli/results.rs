//! `diskferry points`, `import`, `migrate`: reading a replica's results
//! back. The destination holds the truth (its own recovery point index);
//! the coordinator asks the agent to read it, so bytes still never pass
//! through the coordinator's code.

use diskferry_core::report::{DownloadReport, PromoteReport, RecoveryPoint};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{anyhow, bail, Context};
use clap::Args;

use super::{exists_dir, print_json, usage, Env, Failure};
use crate::cloud::azure::AzureCloud;
use crate::destination::Destination;
use crate::store::{Replica, RunDisk, Store};

#[derive(Debug, Args)]
pub struct PointsArgs {
    pub replica: String,
    /// Which destination to read, by its position in `replica create --to ...` (1 = the first).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub dest: u32,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    pub replica: String,
    /// Generation to import [default: the newest].
    #[arg(long, value_name = "G")]
    pub point: Option<u64>,
    /// Which destination to import from, by its position in `replica create --to ...` (1 = the first).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub dest: u32,
    /// Where to: a folder to write one DISK.vhd per disk into, or
    /// azure:RESOURCE_GROUP to create managed disks there (azure provider;
    /// the point is first copied server side to imports/REPLICA/DISK.gG.vhd
    /// beside the destination blob, then imported from it).
    #[arg(long, value_name = "DIR|azure:RG")]
    pub to: String,
    /// azure: the ARM id of the destination's storage account (the disks go to its region).
    #[arg(long, value_name = "ID")]
    pub storage_account: Option<String>,
    /// azure: the managed disks' SKU.
    #[arg(long, default_value = "StandardSSD_LRS")]
    pub sku: String,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// The source VM: a folder holding vm.toml (local), or RESOURCE_GROUP/NAME or its id (azure).
    #[arg(long, value_name = "VM")]
    pub vm: PathBuf,
    /// Where the disks go: pageblob:CONTAINER-URL or file:FOLDER (repeat for several).
    #[arg(long, value_name = "DEST", required = true)]
    pub to: Vec<String>,
    /// Where the result goes: a folder for the imported VHDs, or azure:RESOURCE_GROUP
    /// for managed disks (with --storage-account).
    #[arg(long, value_name = "DIR|azure:RG")]
    pub import_to: String,
    /// azure: the ARM id of the destination's storage account.
    #[arg(long, value_name = "ID")]
    pub storage_account: Option<String>,
    /// azure: also create a VM of this name from the imported disks (with --subnet).
    #[arg(long, value_name = "NAME")]
    pub create_vm: Option<String>,
    /// azure: the subnet (resource id) of the new VM's NIC, in the destination region.
    #[arg(long, value_name = "ID")]
    pub subnet: Option<String>,
    /// azure: the new VM's size.
    #[arg(long, default_value = "Standard_D2s_v5")]
    pub vm_size: String,
    /// Replica name [default: migrate-VMNAME].
    #[arg(long)]
    pub name: Option<String>,
    /// What the disks' copies hold together (see `replica create --help`).
    #[arg(long, value_enum)]
    pub consistency: Option<crate::cloud::Consistency>,
    #[arg(long)]
    pub json: bool,
}

/// A recovery point of one disk.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Point {
    pub generation: u64,
    #[serde(default)]
    pub created_unix_ms: i64,
    #[serde(default)]
    pub disk_size: u64,
    /// What its disks hold together: `crash`, `application` or `filesystem`
    /// (one VM restore point: every disk at one instant), `stopped` (the VM
    /// shut down for them) or `per-disk` (each disk at its own instant). The
    /// point's own record (its snapshot's metadata) first, else what the run
    /// that made it recorded; none for a point neither says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistency: Option<String>,
}

/// The disks of a replica at destination `dest` (0-based) as of the newest
/// run that reached it.
pub(super) fn newest_disks(store: &Store, r: &Replica, dest: u32) -> Result<Vec<RunDisk>, Failure> {
    let disks = store.newest_disks_at(&r.name, dest)?;
    if disks.is_empty() {
        return Err(anyhow!("replica {} has no run that reached destination {} yet", r.name, dest + 1).into());
    }
    Ok(disks)
}

/// The replica's destination number `n` (1-based).
pub(super) fn destination(r: &Replica, n: u32) -> Result<Destination, Failure> {
    let d = r.destinations.get(n as usize - 1).ok_or_else(|| Failure {
        code: super::Code::Usage,
        error: anyhow!("replica {} has {} destination(s), not {n}", r.name, r.destinations.len()),
    })?;
    usage(Destination::parse(d))
}

fn agent(env: &Env) -> Command {
    let mut c = Command::new(env.agent());
    c.stdin(std::process::Stdio::null());
    c
}

/// Run the agent and parse its `--json` output, a `what` document.
pub(super) fn agent_json<T: serde::de::DeserializeOwned>(
    env: &Env,
    what: &'static str,
    args: &[String],
) -> anyhow::Result<T> {
    let mut cmd = agent(env);
    cmd.args(args);
    if let Some(v) = &env.config.storage.api_version {
        cmd.arg("--api-version").arg(v);
    }
    let out = cmd.output().with_context(|| format!("cannot run {}", env.agent().display()))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        bail!("{}", err.trim().trim_start_matches("error: "));
    }
    Ok(diskferry_core::report::parse_json(what, &out.stdout)?)
}

pub(super) fn disk_points(env: &Env, dest: &Destination, r: &Replica, d: &RunDisk) -> anyhow::Result<Vec<Point>> {
    match dest {
        Destination::PageBlob { .. } => {
            let args = ["points".into(), dest.disk_target(&r.name, &d.disk), "--json".into()];
            let pts: Vec<RecoveryPoint> = agent_json(env, "points", &args)?;
            Ok(pts
                .into_iter()
                .map(|p| Point {
                    generation: p.generation,
                    created_unix_ms: p.created_unix_ms,
                    disk_size: p.disk_size,
                    consistency: p.consistency,
                })
                .collect())
        }
        // A file destination holds its newest generation only.
        Destination::File(_) => {
            Ok(vec![Point { generation: d.generation, created_unix_ms: 0, disk_size: 0, consistency: None }])
        }
        Destination::Relay { .. } => bail!("{}", relay_elsewhere(dest, r, &d.disk)),
    }
}

/// Why a relay destination cannot be read from here.
pub(super) fn relay_elsewhere(dest: &Destination, r: &Replica, disk: &str) -> String {
    format!(
        "{} is a relay: disk {}.{disk} lives under the receiver's root, in its region; read it there \
         (diskferry-agent points/download on ROOT/{}.{disk}.vhd)",
        dest.display(),
        r.name,
        r.name
    )
}

pub fn points(env: &Env, a: PointsArgs) -> Result<(), Failure> {
    let store = env.store()?;
    let r = store.replica(&a.replica)?;
    let dest = destination(&r, a.dest)?;
    if let Destination::Relay { .. } = dest {
        return usage(Err(anyhow!("{}", relay_elsewhere(&dest, &r, "DISK"))));
    }
    let mut all = serde_json::Map::new();
    for d in newest_disks(&store, &r, a.dest - 1)? {
        let mut pts = disk_points(env, &dest, &r, &d)?;
        for p in pts.iter_mut().filter(|p| p.consistency.is_none()) {
            p.consistency = store.point_consistency(&r.name, &d.disk, a.dest - 1, p.generation)?;
        }
        // Each point as the destination has it, and the image version its
        // run read (an image source), as the coordinator recorded it.
        let mut listed = Vec::new();
        for p in &pts {
            let mut v = serde_json::to_value(p).map_err(anyhow::Error::from)?;
            v["version"] = store.point_version(&r.name, &d.disk, a.dest - 1, p.generation)?.into();
            listed.push(v);
        }
        all.insert(d.disk.clone(), listed.into());
    }
    if a.json {
        return print_json(&all);
    }
    for (disk, pts) in &all {
        let gens: Vec<String> = pts
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                let said: Vec<&str> =
                    [&p["consistency"], &p["version"]].into_iter().filter_map(|x| x.as_str()).collect();
                match said.is_empty() {
                    true => p["generation"].to_string(),
                    false => format!("{} ({})", p["generation"], said.join(", ")),
                }
            })
            .collect();
        println!("{disk:<12} generations {}", gens.join(", "));
    }
    Ok(())
}

#[derive(Debug, serde::Serialize)]
pub(super) struct Imported {
    disk: String,
    generation: u64,
    path: String,
}

pub fn import(env: &Env, a: ImportArgs) -> Result<(), Failure> {
    let store = env.store()?;
    let r = store.replica(&a.replica)?;
    let out = match a.to.strip_prefix("azure:") {
        Some(rg) => import_azure(env, &azure_cloud(env)?, &store, &r, &a, rg)?,
        None => {
            let to = PathBuf::from(&a.to);
            exists_dir(&to)?;
            import_replica(env, &store, &r, a.dest, a.point, &to)?
        }
    };
    print_imported(&out, a.json)
}

/// What an import made, as JSON or a line a disk.
pub(super) fn print_imported(out: &[Imported], json: bool) -> Result<(), Failure> {
    if json {
        return print_json(&out);
    }
    for i in out {
        println!("{}: generation {} -> {}", i.disk, i.generation, i.path);
    }
    Ok(())
}

fn import_replica(
    env: &Env,
    store: &Store,
    r: &Replica,
    dest_no: u32,
    point: Option<u64>,
    to: &Path,
) -> Result<Vec<Imported>, Failure> {
    let dest = destination(r, dest_no)?;
    let mut out = Vec::new();
    for d in newest_disks(store, r, dest_no - 1)? {
        let path = to.join(format!("{}.vhd", d.disk));
        let generation = write_point(env, &dest, r, &d, point, &path)?;
        out.push(Imported { disk: d.disk, generation, path: path.display().to_string() });
    }
    Ok(out)
}

/// Write `d`'s recovery point (the newest, or `point`) to `path` as a VHD:
/// a page blob's through the agent (`download`), a file destination's (its
/// newest only) copied. Returns its generation.
pub(super) fn write_point(
    env: &Env,
    dest: &Destination,
    r: &Replica,
    d: &RunDisk,
    point: Option<u64>,
    path: &Path,
) -> Result<u64, Failure> {
    match dest {
        Destination::PageBlob { .. } => {
            let mut args = vec!["download".into(), dest.disk_target(&r.name, &d.disk), "--json".into()];
            args.extend(["--to".into(), path.display().to_string()]);
            if let Some(g) = point {
                args.extend(["--point".into(), g.to_string()]);
            }
            let v: DownloadReport = agent_json(env, "download", &args).with_context(|| format!("disk {}", d.disk))?;
            Ok(v.generation)
        }
        Destination::File(_) => {
            if let Some(g) = point.filter(|&g| g != d.generation) {
                return usage(Err(anyhow!(
                    "disk {}: a file destination keeps only its newest generation ({}), not {g}",
                    d.disk,
                    d.generation
                )));
            }
            let src = dest.disk_target(&r.name, &d.disk);
            let src = src.trim_start_matches("file:");
            crate::cloud::local::copy_disk(Path::new(src), path).with_context(|| format!("disk {}", d.disk))?;
            Ok(d.generation)
        }
        Destination::Relay { .. } => usage(Err(anyhow!("{}", relay_elsewhere(dest, r, &d.disk)))),
    }
}

/// Copy `disk`'s recovery point (the newest, or `point`) server side to the
/// standalone page blob `blob` beside the destination (`promote`): what
/// Azure's disk Import reads.
pub(super) fn promote_point(
    env: &Env,
    dest: &Destination,
    replica: &str,
    disk: &str,
    point: Option<u64>,
    blob: String,
) -> anyhow::Result<PromoteReport> {
    let mut args = vec!["promote".into(), dest.disk_target(replica, disk), "--json".into(), "--as".into(), blob];
    if let Some(p) = point {
        args.extend(["--point".into(), p.to_string()]);
    }
    agent_json(env, "promote", &args).with_context(|| format!("disk {disk}"))
}

/// The azure provider, for results that go to Azure (`azure:RG`).
pub(super) fn azure_cloud(env: &Env) -> Result<AzureCloud, Failure> {
    match (env.config.provider(), &env.config.azure) {
        ("azure", Some(s)) => Ok(AzureCloud::new(s.clone())?),
        _ => usage(Err(anyhow!("azure:... needs provider = \"azure\" and an [azure] section in the config"))),
    }
}

/// Managed disks from a recovery point: each disk's point is promoted to a
/// standalone blob (server side, by the agent), then imported by ARM.
pub(super) fn import_azure(
    env: &Env,
    cloud: &AzureCloud,
    store: &Store,
    r: &Replica,
    a: &ImportArgs,
    rg: &str,
) -> Result<Vec<Imported>, Failure> {
    use crate::cloud::azure::import::ImportSpec;
    use crate::cloud::azure::names;
    if !names::is_plain(rg) {
        return usage(Err(anyhow!("--to azure:{rg}: name a resource group")));
    }
    let Some(account) = a.storage_account.as_deref().filter(|s| s.starts_with("/subscriptions/")) else {
        return usage(Err(anyhow!(
            "--to azure:... needs --storage-account with the destination account's resource id"
        )));
    };
    let dest = destination(r, a.dest)?;
    if !matches!(dest, Destination::PageBlob { .. }) {
        return usage(Err(anyhow!("only a pageblob: destination can be imported as managed disks")));
    }
    let facts = store.vm_facts(&r.name)?;
    let mut out = Vec::new();
    for d in newest_disks(store, r, a.dest - 1)? {
        let g = a.point.unwrap_or(d.generation);
        let blob = format!("imports/{}/{}.g{g}.vhd", r.name, d.disk);
        let v = promote_point(env, &dest, &r.name, &d.disk, a.point, blob)?;
        let generation = v.generation;
        let source_uri = v.blob.as_str();
        let name = names::imported_disk(&r.name, &d.disk, generation);
        let spec = ImportSpec {
            name: &name,
            resource_group: rg,
            source_uri,
            storage_account_id: account,
            sku: &a.sku,
            os: facts.as_ref().filter(|_| d.disk == "os"),
            tags: serde_json::json!({ names::TAG_REPLICA: r.name, "diskferry-generation": generation.to_string() }),
        };
        let (id, note) = cloud.import_disk(&spec).with_context(|| format!("disk {}", d.disk))?;
        if let Some(n) = note {
            eprintln!("note: disk {}: {n}", d.disk);
        }
        out.push(Imported { disk: d.disk, generation, path: id });
    }
    Ok(out)
}

pub fn migrate(env: &Env, a: MigrateArgs) -> Result<(), Failure> {
    let to_azure = a.import_to.strip_prefix("azure:").map(str::to_owned);
    if to_azure.is_none() {
        exists_dir(Path::new(&a.import_to))?;
    }
    if a.create_vm.is_some() && (to_azure.is_none() || a.subnet.is_none()) {
        return usage(Err(anyhow!("--create-vm needs --import-to azure:RG and --subnet")));
    }
    // Before the run: a config that cannot reach Azure fails now, not after it.
    let cloud = to_azure.as_ref().map(|_| azure_cloud(env)).transpose()?;
    let vm_name = if env.config.provider() == "local" {
        usage(crate::cloud::local::LocalCloud::load_vm_file(&a.vm.display().to_string()))?.1.name
    } else {
        a.vm.display().to_string().rsplit('/').next().unwrap_or_default().to_owned()
    };
    let name = a.name.clone().unwrap_or_else(|| format!("migrate-{vm_name}"));
    let exists = env.store()?.replica(&name).is_ok();
    if !exists {
        super::replica::define(
            env,
            super::replica::CreateArgs {
                name: name.clone(),
                vm: Some(a.vm.clone()),
                disk: None,
                snapshot: None,
                image: None,
                to: a.to.clone(),
                schedule: None,
                keep: 1,
                chunk_size: "1MiB".into(),
                stop_source: false,
                consistency: a.consistency,
                json: a.json,
            },
        )?;
    }
    let (done, disks) = super::replica::run_once(env, &name, a.json)?;
    if !a.json {
        eprintln!("run {} {}", done.id, done.status);
    }
    super::replica::succeeded(&done)?;
    let store = env.store()?;
    let r = store.replica(&name)?;
    let (out, vm) = match (&to_azure, &cloud) {
        (Some(rg), Some(cloud)) => {
            let ia = ImportArgs {
                replica: name.clone(),
                point: None,
                dest: 1,
                to: a.import_to.clone(),
                storage_account: a.storage_account.clone(),
                sku: "StandardSSD_LRS".into(),
                json: a.json,
            };
            let out = import_azure(env, cloud, &store, &r, &ia, rg)?;
            let vm = match (&a.create_vm, &a.subnet) {
                (Some(vm), Some(subnet)) => Some(create_vm(cloud, &store, &r, &out, rg, vm, subnet, &a.vm_size)?),
                _ => None,
            };
            (out, vm)
        }
        _ => (import_replica(env, &store, &r, 1, None, Path::new(&a.import_to))?, None),
    };
    if a.json {
        return print_json(&serde_json::json!({ "run": done, "disks": disks, "imported": out, "vm": vm }));
    }
    for i in &out {
        println!("imported {}: generation {} -> {}", i.disk, i.generation, i.path);
    }
    if let Some(v) = vm {
        println!("created VM {v}");
    }
    Ok(())
}

/// A VM from imported disks: the OS disk and the data disks at their LUNs.
#[allow(clippy::too_many_arguments)]
fn create_vm(
    cloud: &AzureCloud,
    store: &Store,
    r: &Replica,
    disks: &[Imported],
    rg: &str,
    name: &str,
    subnet: &str,
    size: &str,
) -> Result<String, Failure> {
    let facts = store.vm_facts(&r.name)?.unwrap_or_default();
    let os = disks.iter().find(|d| d.disk == "os").ok_or_else(|| anyhow!("no OS disk was imported"))?;
    let data: Vec<(u64, &str)> =
        disks.iter().filter_map(|d| Some((d.disk.strip_prefix("lun")?.parse().ok()?, d.path.as_str()))).collect();
    let spec = crate::cloud::azure::import::NewVm {
        name,
        resource_group: rg,
        size,
        subnet,
        os_disk: &os.path,
        os_type: facts["os_type"].as_str().unwrap_or("Linux"),
        data: &data,
        tags: serde_json::json!({ crate::cloud::azure::names::TAG_REPLICA: r.name }),
        nic_delete: "Detach",
    };
    Ok(cloud.create_vm(&spec).with_context(|| format!("creating VM {name}"))?.id)
}
