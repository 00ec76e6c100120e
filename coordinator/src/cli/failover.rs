//! `diskferry failover`, `drill`, `cutover`: a replica's recovery point
//! becomes a running VM (`--to azure:RG`: managed disks imported from the
//! point, a VM of them with a NIC in a given subnet, waited on until Azure
//! says it runs) or a VM folder (`--to DIR`: raw disk images and a `vm.toml`
//! the local provider reads, so a new replica of it is the failback).
//!
//! Every failover and drill is recorded, with each thing it makes recorded
//! before it is made. One that fails half-way deletes what it made, and says
//! what it could not. A drill (`--test`) is tagged as one, leaves the
//! replica syncing, and goes with `drill clean` or, once expired, `gc`. A
//! real failover marks the replica failed over: its schedule stops, its
//! points stay.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{anyhow, bail, Context};
use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::results::{azure_cloud, destination, disk_points, newest_disks, promote_point, write_point};
use super::{print_json, usage, Env, Failure, JsonArg};
use crate::clock::now;
use crate::cloud::azure::names;
use crate::cloud::{Cloud, FAILOVER_MARKER};
use crate::destination::Destination;
use crate::owner;
use crate::store::{status, Failover, Replica, RunDisk, Store};

#[derive(Debug, Args)]
pub struct FailoverArgs {
    /// The replica whose VM to bring up (or --plan).
    #[arg(required_unless_present = "plan", conflicts_with = "plan")]
    pub replica: Option<String>,
    /// Several replicas in order: a TOML file of `[[group]]` tables with
    /// `replicas = ["db"]`; group N+1 starts once every VM of group N runs.
    #[arg(long, value_name = "FILE")]
    pub plan: Option<PathBuf>,
    /// A drill: the VM is tagged as one (Azure: put it in an isolated
    /// subnet with --subnet), replication goes on, and `drill clean` or,
    /// after --expires-hours, `gc` removes it.
    #[arg(long)]
    pub test: bool,
    /// How long a drill may live before `gc` removes it.
    #[arg(long, default_value_t = 24, value_parser = clap::value_parser!(u32).range(1..=8760))]
    pub expires_hours: u32,
    #[command(flatten)]
    pub target: TargetArgs,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct TargetArgs {
    /// The recovery point (generation) [default: each disk's newest].
    #[arg(long, value_name = "G")]
    pub point: Option<u64>,
    /// Which destination to bring it up from, by its position in `replica create --to ...`.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub dest: u32,
    /// Where: a folder (a VM folder is made in it, for the local provider)
    /// or azure:RESOURCE_GROUP (managed disks and a VM there).
    #[arg(long, value_name = "DIR|azure:RG")]
    pub to: String,
    /// azure: the ARM id of the destination's storage account (the VM goes to its region).
    #[arg(long, value_name = "ID")]
    pub storage_account: Option<String>,
    /// azure: the subnet of the VM's NIC (for a drill, an isolated one).
    #[arg(long, value_name = "ID")]
    pub subnet: Option<String>,
    /// azure: the VM's size [default: the source VM's, as its last run saw it].
    #[arg(long)]
    pub vm_size: Option<String>,
    /// azure: the managed disks' SKU.
    #[arg(long, default_value = "Premium_LRS")]
    pub sku: String,
    /// The new VM's name [default: SOURCE-failover, or SOURCE-drill-N].
    #[arg(long)]
    pub vm_name: Option<String>,
    /// azure: how long to wait for the VM to run, in seconds.
    #[arg(long, default_value_t = 900)]
    pub running_secs: u64,
}

#[derive(Debug, Subcommand)]
pub enum DrillCmd {
    /// Drills not cleaned yet.
    List(JsonArg),
    /// Remove a drill completely (by its id, or every drill of a replica).
    Clean(CleanArgs),
}

#[derive(Debug, Args)]
pub struct CleanArgs {
    pub name: String,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct CutoverArgs {
    /// The (migration) replica: a final run with its source stopped (and
    /// left stopped), then a failover of that point.
    pub replica: String,
    #[command(flatten)]
    pub target: TargetArgs,
    #[arg(long)]
    pub json: bool,
}

/// What one failover did, for one VM.
#[derive(Debug, Clone, serde::Serialize)]
pub struct VmReport {
    pub id: String,
    pub replica: String,
    pub drill: bool,
    pub vm: String,
    /// The point each disk came from.
    pub point: PointUsed,
    /// How old the point was when the failover began: the data lost.
    pub data_loss_window_secs: f64,
    pub steps: Vec<Step>,
    /// What it made: resource ids, or the VM folder.
    pub resources: Vec<String>,
    /// `running` (Azure says so), or `ready` (a VM folder).
    pub state: String,
    /// The VM agent's status, when it reports one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    pub seconds: f64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct PointUsed {
    /// Per disk.
    pub generations: std::collections::BTreeMap<String, u64>,
    /// The oldest of its disks' times.
    pub created_unix_ms: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consistency: Option<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Step {
    pub step: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk: Option<String>,
    pub seconds: f64,
}

/// A plan: groups of replicas, brought up in order.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Plan {
    group: Vec<Group>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Group {
    replicas: Vec<String>,
}

pub fn failover(env: &Env, a: FailoverArgs) -> Result<(), Failure> {
    let groups: Vec<Vec<String>> = match (&a.replica, &a.plan) {
        (Some(r), None) => vec![vec![r.clone()]],
        (None, Some(p)) => {
            let text = usage(std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display())))?;
            let plan: Plan = usage(toml::from_str(&text).map_err(|e| anyhow!("{}: {}", p.display(), e.message())))?;
            if plan.group.iter().any(|g| g.replicas.is_empty()) {
                return usage(Err(anyhow!("{}: a [[group]] names no replica", p.display())));
            }
            plan.group.into_iter().map(|g| g.replicas).collect()
        }
        _ => return usage(Err(anyhow!("name a replica or a --plan"))),
    };
    let store = env.store()?;
    for name in groups.iter().flatten() {
        store.replica(name)?;
    }
    let started = Instant::now();
    let mut done: Vec<Vec<VmReport>> = Vec::new();
    let expires = a.test.then(|| now() + i64::from(a.expires_hours) * 3600);
    let target = &a.target;
    for group in &groups {
        // A group's replicas come up at once, each on its own thread (and
        // its own connection to the store); the next group waits for all.
        let results: Vec<(String, Result<VmReport, Failure>)> = std::thread::scope(|sc| {
            let handles: Vec<_> = group
                .iter()
                .map(|name| {
                    let h = sc.spawn(move || -> Result<VmReport, Failure> {
                        let store = env.store()?;
                        failover_one(env, &store, name, target, expires)
                    });
                    (name.clone(), h)
                })
                .collect();
            handles
                .into_iter()
                .map(|(name, h)| {
                    let r = h.join().unwrap_or_else(|_| Err(anyhow!("the failover thread panicked").into()));
                    (name, r)
                })
                .collect()
        });
        let mut reports = Vec::new();
        let mut failed = Vec::new();
        for (name, r) in results {
            match r {
                Ok(r) => reports.push(r),
                Err(f) => failed.push((name, f)),
            }
        }
        if let Some((name, f)) = failed.into_iter().next() {
            let up: Vec<String> = done.iter().flatten().chain(&reports).map(|r| r.vm.clone()).collect();
            let running = if up.is_empty() { "none".to_owned() } else { up.join(", ") };
            return Err(Failure {
                code: f.code,
                error: f.error.context(format!("replica {name}: failover stopped; running now: {running}")),
            });
        }
        done.push(reports);
    }
    if a.json {
        return match (a.plan.is_some(), done.as_slice()) {
            (false, [g]) => print_json(&g[0]),
            _ => print_json(&json!({ "groups": done, "seconds": started.elapsed().as_secs_f64() })),
        };
    }
    for r in done.iter().flatten() {
        print_report(r);
    }
    Ok(())
}

fn print_report(r: &VmReport) {
    let kind = if r.drill { "drill" } else { "failover" };
    println!(
        "{kind} {}: replica {} -> VM {} ({}) in {:.1} s; point {:?} ({:.0} s of data lost)",
        r.id, r.replica, r.vm, r.state, r.seconds, r.point.generations, r.data_loss_window_secs
    );
    for s in &r.steps {
        println!("  {:<10} {:<8} {:.2} s", s.step, s.disk.as_deref().unwrap_or(""), s.seconds);
    }
    for m in &r.resources {
        println!("  made {m}");
    }
}

/// Bring up one replica's VM; `expires` makes it a drill.
fn failover_one(
    env: &Env,
    store: &Store,
    name: &str,
    t: &TargetArgs,
    expires: Option<i64>,
) -> Result<VmReport, Failure> {
    let started = Instant::now();
    let r = store.replica(name)?;
    if r.failed_over_at.is_some() && expires.is_none() {
        return Err(crate::error::CoordError::FailedOver(r.name.clone()).into());
    }
    let facts =
        store.vm_facts(&r.name)?.ok_or_else(|| anyhow!("replica {}: no run has recorded its VM yet", r.name))?;
    let dest = destination(&r, t.dest)?;
    if let Destination::Relay { .. } = dest {
        return usage(Err(anyhow!("replica {}: a relay's points are read at the receiver, in its region", r.name)));
    }
    check_target(t, &dest)?;
    let drill = expires.is_some();
    // A run still going would sync on after the failover: wait for it.
    if !drill {
        if let Some(run) = store
            .runs(&r.name, 5)?
            .into_iter()
            .find(|x| x.status == status::RUNNING && owner::run_alive(store, x).unwrap_or(false))
        {
            return Err(crate::error::CoordError::Busy {
                replica: r.name.clone(),
                what: "running: a failover waits for its run to end".into(),
                run: run.id,
            }
            .into());
        }
    }
    let disks = newest_disks(store, &r, t.dest - 1)?;
    // The newest run may have reached only some disks (then it failed).
    let want: std::collections::BTreeSet<&str> =
        facts["disks"].as_array().into_iter().flatten().filter_map(|d| d["name"].as_str()).collect();
    let got: std::collections::BTreeSet<&str> = disks.iter().map(|d| d.disk.as_str()).collect();
    if want != got {
        return Err(anyhow!(
            "replica {}: its newest run reached disks {:?} of {:?} at destination {}; name a --point every disk has",
            r.name,
            got,
            want,
            t.dest
        )
        .into());
    }
    let point = choose_point(env, store, &r, &dest, &disks, t)?;
    let seq = crate::execute::new_run_id();
    let id = format!("{}-{}-{}", r.name, if drill { "drill" } else { "failover" }, compact(&seq));
    let source = facts["name"].as_str().unwrap_or(&r.name).to_owned();
    let salt = seq.rsplit('-').next().unwrap_or("0").to_owned();
    // The replica's name keeps two replicas of same-named VMs apart.
    let base = if source == r.name { source.clone() } else { format!("{}-{source}", r.name) };
    let vm = t.vm_name.clone().unwrap_or_else(|| match drill {
        true => format!("{base}-drill-{salt}"),
        false => format!("{base}-failover"),
    });
    usage(crate::cloud::local::check_name("VM", &vm))?;
    // Nothing of that name may exist: a failover deletes what it made when
    // it fails, and must never take someone else's VM or disk for its own.
    let azure = t.to.strip_prefix("azure:").map(|_| azure_cloud(env)).transpose()?;
    if let (Some(rg), Some(cloud)) = (t.to.strip_prefix("azure:"), &azure) {
        let scope = cloud.scope(rg);
        let ids = std::iter::once(scope.vm(&vm)).chain(disks.iter().map(|d| scope.disk(&format!("{vm}-{}", d.disk))));
        for id in ids {
            if cloud.exists(&id)? {
                return usage(Err(anyhow!("{id} exists already: name another --vm-name")));
            }
        }
    }
    store.insert_failover(&Failover {
        id: id.clone(),
        replica: r.name.clone(),
        drill,
        target: t.to.clone(),
        made: Vec::new(),
        created_at: now(),
        expires_at: expires,
        cleaned_at: None,
    })?;
    let job = Job {
        env,
        store,
        r: &r,
        dest: &dest,
        disks: &disks,
        point: &point,
        facts: &facts,
        id: &id,
        vm: &vm,
        azure: azure.as_ref(),
    };
    let mut steps = Vec::new();
    let made = match t.to.strip_prefix("azure:") {
        Some(rg) => job.to_azure(rg, t, expires, &mut steps),
        None => job.to_folder(Path::new(&t.to), &mut steps),
    };
    let (state, agent) = match made {
        Ok(s) => s,
        Err(e) => return Err(job.undo(e)),
    };
    if !drill {
        store.set_failed_over(&r.name, now())?;
    }
    let made = store.failover(&id)?.map(|f| f.made).unwrap_or_default();
    let lost = (chrono::Utc::now().timestamp_millis() - point.created_unix_ms).max(0) as f64 / 1000.0;
    Ok(VmReport {
        id,
        replica: r.name.clone(),
        drill,
        vm,
        point,
        data_loss_window_secs: lost,
        steps,
        resources: made,
        state,
        agent,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Refuse a target that cannot work before anything is recorded or made.
fn check_target(t: &TargetArgs, dest: &Destination) -> Result<(), Failure> {
    let Some(rg) = t.to.strip_prefix("azure:") else {
        return match Path::new(&t.to).is_dir() {
            true => Ok(()),
            false => usage(Err(anyhow!("--to {}: no such folder", t.to))),
        };
    };
    if !names::is_plain(rg) {
        return usage(Err(anyhow!("--to azure:{rg}: name a resource group")));
    }
    if !t.storage_account.as_deref().is_some_and(|s| s.starts_with("/subscriptions/")) {
        return usage(Err(anyhow!("--to azure:... needs --storage-account with the destination account's id")));
    }
    if t.subnet.as_deref().is_none_or(|s| !s.starts_with("/subscriptions/")) {
        return usage(Err(anyhow!("--to azure:... needs --subnet with the id of the subnet for the VM's NIC")));
    }
    if !matches!(dest, Destination::PageBlob { .. }) {
        return usage(Err(anyhow!("only a pageblob: destination can be brought up in Azure")));
    }
    Ok(())
}

fn compact(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect()
}

/// Each disk's point: `--point G`, or its newest.
fn choose_point(
    env: &Env,
    store: &Store,
    r: &Replica,
    dest: &Destination,
    disks: &[RunDisk],
    t: &TargetArgs,
) -> Result<PointUsed, Failure> {
    let mut generations = std::collections::BTreeMap::new();
    let (mut oldest, mut consistency) = (i64::MAX, None);
    for d in disks {
        let g = t.point.unwrap_or(d.generation);
        let pts = disk_points(env, dest, r, d).with_context(|| format!("disk {}", d.disk))?;
        let Some(p) = pts.into_iter().find(|p| p.generation == g) else {
            return usage(Err(anyhow!("disk {} has no recovery point {g} at destination {}", d.disk, t.dest)));
        };
        // A file destination's point carries no time: its run's start.
        let at = match p.created_unix_ms {
            0 => store.run(&d.run_id).map(|run| run.started_at * 1000).unwrap_or(0),
            ms => ms,
        };
        oldest = oldest.min(at);
        if consistency.is_none() {
            consistency = match p.consistency {
                Some(c) => Some(c),
                None => store.point_consistency(&r.name, &d.disk, t.dest - 1, g)?,
            };
        }
        generations.insert(d.disk.clone(), g);
    }
    Ok(PointUsed { generations, created_unix_ms: if oldest == i64::MAX { 0 } else { oldest }, consistency })
}

/// One failover's parts.
struct Job<'a> {
    env: &'a Env,
    store: &'a Store,
    r: &'a Replica,
    dest: &'a Destination,
    disks: &'a [RunDisk],
    point: &'a PointUsed,
    facts: &'a Value,
    id: &'a str,
    vm: &'a str,
    /// The Azure provider, for an `azure:` target (made once a failover).
    azure: Option<&'a crate::cloud::azure::AzureCloud>,
}

fn timed<T>(
    steps: &mut Vec<Step>,
    step: &str,
    disk: Option<&str>,
    f: impl FnOnce() -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let t = Instant::now();
    let out = f();
    steps.push(Step { step: step.to_owned(), disk: disk.map(str::to_owned), seconds: t.elapsed().as_secs_f64() });
    out
}

impl Job<'_> {
    fn generation(&self, disk: &str) -> u64 {
        self.point.generations.get(disk).copied().unwrap_or_default()
    }

    /// A VM folder in `dir`: each disk's point as a raw image, `vm.toml`.
    fn to_folder(&self, dir: &Path, steps: &mut Vec<Step>) -> anyhow::Result<(String, Option<String>)> {
        let vm_dir = dir.join(self.vm);
        if vm_dir.exists() {
            bail!("{} exists already: name another --vm-name", vm_dir.display());
        }
        self.store.failover_makes(self.id, &vm_dir.display().to_string())?;
        std::fs::create_dir(&vm_dir).with_context(|| format!("cannot create {}", vm_dir.display()))?;
        std::fs::write(vm_dir.join(FAILOVER_MARKER), format!("{}\n", self.id))?;
        let mut toml =
            format!("name = \"{}\"\nos_type = \"{}\"\n", self.vm, self.facts["os_type"].as_str().unwrap_or("linux"));
        for d in self.disks {
            let img = vm_dir.join(format!("{}.img", d.disk));
            timed(steps, "restore", Some(&d.disk), || self.restore(d, &img))?;
            toml.push_str(&format!("[[disks]]\nname = \"{}\"\npath = \"{}.img\"\n", d.disk, d.disk));
        }
        std::fs::write(vm_dir.join("vm.toml"), toml)?;
        Ok(("ready".into(), None))
    }

    /// Write `disk`'s point to `img` as a raw image of the disk's size.
    fn restore(&self, d: &RunDisk, img: &Path) -> anyhow::Result<()> {
        let vhd = img.with_extension("vhd");
        write_point(self.env, self.dest, self.r, d, Some(self.generation(&d.disk)), &vhd).map_err(|f| f.error)?;
        // A fixed VHD is the disk, rounded up, then a 512-byte footer.
        let size = self.facts["disks"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|x| x["name"] == d.disk.as_str())
            .and_then(|x| x["size"].as_u64())
            .ok_or_else(|| anyhow!("the recorded VM has no size for disk {}", d.disk))?;
        let f = std::fs::OpenOptions::new().write(true).open(&vhd)?;
        f.set_len(size)?;
        drop(f);
        std::fs::rename(&vhd, img)?;
        Ok(())
    }

    /// Managed disks of the point in `rg`, a VM of them, running.
    fn to_azure(
        &self,
        rg: &str,
        t: &TargetArgs,
        expires: Option<i64>,
        steps: &mut Vec<Step>,
    ) -> anyhow::Result<(String, Option<String>)> {
        use crate::cloud::azure::import::{ImportSpec, NewVm};
        let cloud = self.azure.ok_or_else(|| anyhow!("no Azure provider for --to azure:{rg}"))?;
        // (Checked by check_target before anything was made.)
        let account = t.storage_account.as_deref().unwrap_or_default();
        let subnet = t.subnet.as_deref().unwrap_or_default();
        let mut tags = json!({ names::TAG_REPLICA: self.r.name, "diskferry-failover": self.id });
        if let Some(e) = expires {
            tags["diskferry-drill"] = self.id.into();
            tags[names::TAG_EXPIRES] = e.to_string().into();
        }
        let scope = cloud.scope(rg);
        let mut os_disk = None;
        let mut data = Vec::new();
        for d in self.disks {
            let g = self.generation(&d.disk);
            let id = timed(steps, "import", Some(&d.disk), || {
                // Named by this failover: another one's import never reads it.
                let blob = format!("imports/{}/{}/{}.g{g}.vhd", self.r.name, self.id, d.disk);
                let url = format!("{}/{blob}", self.dest.container_url());
                self.store.failover_makes(self.id, &format!("{BLOB}{url}"))?;
                let p = promote_point(self.env, self.dest, &self.r.name, &d.disk, Some(g), blob)?;
                let name = format!("{}-{}", self.vm, d.disk);
                self.store.failover_makes(self.id, &scope.disk(&name))?;
                let mut disk_tags = tags.clone();
                disk_tags["diskferry-generation"] = g.to_string().into();
                let spec = ImportSpec {
                    name: &name,
                    resource_group: rg,
                    source_uri: &p.blob,
                    storage_account_id: account,
                    sku: &t.sku,
                    os: Some(self.facts).filter(|_| d.disk == "os"),
                    tags: disk_tags,
                };
                let (id, note) = cloud.import_disk(&spec)?;
                // The disk holds its own copy now: the promoted blob goes.
                delete_blob(self.env, &p.blob)?;
                if let Some(n) = note {
                    eprintln!("note: disk {}: {n}", d.disk);
                }
                Ok(id)
            })
            .with_context(|| format!("disk {}", d.disk))?;
            match d.disk.strip_prefix("lun").and_then(|l| l.parse::<u64>().ok()) {
                Some(lun) => data.push((lun, id)),
                None => os_disk = Some(id),
            }
        }
        let os_disk = os_disk.ok_or_else(|| anyhow!("the replica has no os disk to boot"))?;
        let size = t
            .vm_size
            .clone()
            .or_else(|| self.facts["size"].as_str().map(str::to_owned))
            .ok_or_else(|| anyhow!("the source VM's size was not recorded: name one with --vm-size"))?;
        let data: Vec<(u64, &str)> = data.iter().map(|(l, id)| (*l, id.as_str())).collect();
        let spec = NewVm {
            name: self.vm,
            resource_group: rg,
            size: &size,
            subnet,
            os_disk: &os_disk,
            os_type: self.facts["os_type"].as_str().unwrap_or("Linux"),
            data: &data,
            tags,
            nic_delete: if expires.is_some() { "Delete" } else { "Detach" },
        };
        self.store.failover_makes(self.id, &scope.vm(self.vm))?;
        let made = timed(steps, "create-vm", None, || cloud.create_vm(&spec)).context("creating the VM")?;
        for nic in &made.nics {
            self.store.failover_makes(self.id, nic)?;
        }
        let deadline = std::time::Duration::from_secs(t.running_secs);
        let agent = timed(steps, "running", None, || cloud.wait_running(&made.id, deadline))?;
        Ok(("running".into(), agent))
    }

    /// Delete what this failover made (after `e`); say what is left.
    fn undo(&self, e: anyhow::Error) -> Failure {
        let left = match self.env.cloud() {
            Ok(cloud) => remove_made(self.env, cloud.as_ref(), self.store, self.id),
            Err(e) => vec![format!("(could not reach the provider: {e:#})")],
        };
        let said = match left.as_slice() {
            [] => "what it made is deleted".to_owned(),
            l => format!("left behind (tagged diskferry-failover={}): {}", self.id, l.join("; ")),
        };
        Failure::from(e.context(format!("failover {} failed; {said}", self.id)))
    }
}

/// What a failover records for a promoted blob it made: `blob:URL`.
const BLOB: &str = "blob:";

/// Delete a blob at a destination (no SAS in the URL: the coordinator's
/// storage credentials from its environment apply); one gone is fine.
fn delete_blob(env: &Env, url: &str) -> anyhow::Result<()> {
    use diskferry_blob::PageStore;
    let addr = diskferry_blob::address::BlobAddress::parse(url)?;
    let store = diskferry_blob::connect(addr.clone(), env.config.storage.api_version.clone())?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(store.delete(&addr.blob, None, None)).map_err(|e| anyhow!("deleting {url}: {e}"))
}

/// Delete everything failover `id` made (VMs first, then NICs, then disks,
/// blobs and folders, and NICs Azure named and tagged with the failover);
/// marks it cleaned if nothing is left. Returns what could not be deleted,
/// with why.
fn remove_made(env: &Env, cloud: &dyn Cloud, store: &Store, id: &str) -> Vec<String> {
    let Ok(Some(f)) = store.failover(id) else { return vec![format!("failover {id} is not recorded")] };
    let rank = |m: &String| {
        let l = m.to_ascii_lowercase();
        if l.contains("/virtualmachines/") {
            0
        } else if l.contains("/networkinterfaces/") {
            1
        } else {
            2
        }
    };
    let mut made = f.made.clone();
    made.sort_by_key(rank);
    let mut left: Vec<String> = made
        .iter()
        .filter_map(|m| {
            let r = match m.strip_prefix(BLOB) {
                Some(url) => delete_blob(env, url),
                None => cloud.delete_made(m, id),
            };
            r.err().map(|e| format!("{m}: {e:#}"))
        })
        .collect();
    // A VM that failed to be created (or a coordinator that died while it
    // was) may leave a NIC Azure named: the failover's tag finds it.
    if let Some(rg) = f.target.strip_prefix("azure:") {
        match azure_cloud(env).map_err(|f| f.error).and_then(|c| c.sweep_tagged_nics(rg, "diskferry-failover", id)) {
            Ok(l) => left.extend(l),
            Err(e) => left.push(format!("(could not list the NICs of {rg}: {e:#})")),
        }
    }
    if left.is_empty() {
        let _ = store.set_failover_cleaned(id, now());
    }
    left
}

pub fn drill(env: &Env, cmd: DrillCmd) -> Result<(), Failure> {
    let store = env.store()?;
    match cmd {
        DrillCmd::List(a) => {
            let drills = store.live_drills()?;
            if a.json {
                return print_json(&drills);
            }
            println!("{:<48} {:<14} {:<20} made", "drill", "replica", "expires");
            for d in drills {
                let exp = d.expires_at.map_or_else(|| "-".into(), super::time);
                println!("{:<48} {:<14} {:<20} {}", d.id, d.replica, exp, d.made.len());
            }
            Ok(())
        }
        DrillCmd::Clean(a) => {
            let ids: Vec<String> = store
                .live_drills()?
                .into_iter()
                .filter(|d| d.id == a.name || d.replica == a.name)
                .map(|d| d.id)
                .collect();
            if ids.is_empty() {
                return usage(Err(anyhow!("no drill {} (see `diskferry drill list`)", a.name)));
            }
            let cloud = env.cloud()?;
            let (mut cleaned, mut left) = (Vec::new(), Vec::new());
            for id in &ids {
                match remove_made(env, cloud.as_ref(), &store, id) {
                    l if l.is_empty() => cleaned.push(id.clone()),
                    l => left.extend(l),
                }
            }
            if a.json {
                print_json(&json!({ "cleaned": cleaned, "left": left }))?;
            } else {
                for id in &cleaned {
                    println!("drill {id}: removed");
                }
            }
            match left.is_empty() {
                true => Ok(()),
                false => Err(anyhow!("could not delete: {}", left.join("; ")).into()),
            }
        }
    }
}

/// Expired drills, removed (`gc`): (drill id, what could not be deleted).
pub fn gc_drills(env: &Env, cloud: &dyn Cloud, store: &Store) -> anyhow::Result<Vec<(String, Vec<String>)>> {
    let t = now();
    Ok(store
        .live_drills()?
        .into_iter()
        .filter(|d| d.expires_at.is_some_and(|e| e <= t))
        .map(|d| {
            let left = remove_made(env, cloud, store, &d.id);
            (d.id, left)
        })
        .collect())
}

/// A cutover that failed: start its source again (it was left deallocated)
/// and say so in the error.
fn restart_source(env: &Env, replica: &str, f: Failure) -> Failure {
    let vm = env.store().ok().and_then(|s| s.replica(replica).ok()).map(|r| r.vm);
    let said = match (env.config.provider(), vm) {
        ("azure", Some(vm)) => match azure_cloud(env).map_err(|f| f.error).and_then(|c| c.start_vm(&vm)) {
            Ok(()) => format!("the source VM {vm} was started again"),
            Err(e) => format!("the source VM {vm} is still deallocated ({e:#}): start it"),
        },
        _ => "the source was not stopped".to_owned(),
    };
    Failure { code: f.code, error: f.error.context(format!("cutover of {replica} failed; {said}")) }
}

/// What a cutover did: the final run, the failover, the downtime.
#[derive(Debug, serde::Serialize)]
struct CutoverReport {
    final_run: String,
    final_run_seconds: f64,
    failover: VmReport,
    /// The source was stopped at the final run's start and stays stopped.
    downtime_secs: f64,
}

pub fn cutover(env: &Env, a: CutoverArgs) -> Result<(), Failure> {
    let started = Instant::now();
    // The final run: the source deallocated for its snapshots, and left so
    // (it is the migrated VM's past: started again, it would diverge).
    let result = (|| {
        let (done, _) = super::replica::run_once_as(env, &a.replica, a.json, |r| {
            r.stop_source = true;
            r.leave_source_stopped = true;
        })?;
        super::replica::succeeded(&done)?;
        let run_secs = started.elapsed().as_secs_f64();
        let store = env.store()?;
        let mut t = a.target.clone();
        t.point = None;
        let report = failover_one(env, &store, &a.replica, &t, None)?;
        Ok::<_, Failure>((done, run_secs, report))
    })();
    let (done, run_secs, report) = match result {
        Ok(r) => r,
        // Nothing runs the workload now: the source goes back up.
        Err(f) => return Err(restart_source(env, &a.replica, f)),
    };
    let out = CutoverReport {
        final_run: done.id.clone(),
        final_run_seconds: run_secs,
        failover: report,
        downtime_secs: started.elapsed().as_secs_f64(),
    };
    if a.json {
        return print_json(&out);
    }
    println!("cutover of {}: final run {} in {:.1} s, then:", a.replica, out.final_run, run_secs);
    print_report(&out.failover);
    println!("downtime {:.1} s (the source stays stopped)", out.downtime_secs);
    Ok(())
}
