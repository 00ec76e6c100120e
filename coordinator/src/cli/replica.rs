//! `diskferry replica ...`, `diskferry run`, `diskferry runs`.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::anyhow;
use clap::{Args, Subcommand};

use super::{human, print_json, time, usage, Env, Failure, JsonArg};
use crate::clock::now;
use crate::cloud::local::check_name;
use crate::cloud::{Consistency, ResourceKind, SourceKind, SourceRef};
use crate::destination::Destination;
use crate::error::CoordError;
use crate::execute::{self, Observer};
use crate::schedule::Schedule;
use crate::store::{status, Replica, Run, RunDisk};

#[derive(Debug, Subcommand)]
pub enum ReplicaCmd {
    /// Define a replica: which VM (or disk, snapshot, image), where its disks go, when.
    Create(CreateArgs),
    /// List replicas.
    List(JsonArg),
    /// A replica, its latest runs and its retained snapshots.
    Show(NameArgs),
    /// Delete a replica, its history and its retained snapshots (the destination's data stays).
    Delete(NameArgs),
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["vm", "disk", "snapshot", "image"])))]
pub struct CreateArgs {
    /// Replica name (letters, digits, '-', '_').
    pub name: String,
    /// The source VM: a folder holding vm.toml (local provider), or
    /// RESOURCE_GROUP/NAME or its resource id (azure provider).
    #[arg(long, value_name = "VM")]
    pub vm: Option<PathBuf>,
    /// Or one managed disk (azure: its resource id; local: an image file or
    /// block device). Each run snapshots it and reads the snapshot over
    /// HTTPS, with no worker VM; the snapshot is kept, so the next run
    /// reads only what changed.
    #[arg(long, value_name = "ID")]
    pub disk: Option<String>,
    /// Or one snapshot (azure: its resource id; local: an image file). A
    /// run reads a copy of it over HTTPS and deletes the copy.
    #[arg(long, value_name = "ID")]
    pub snapshot: Option<String>,
    /// Or an image (azure: an Azure Compute Gallery image version, or an
    /// image definition, whose newest version each run reads; local: an
    /// image file). A run makes a temporary disk of each of its OS and data
    /// disk images, snapshots it, reads the snapshot over HTTPS and deletes
    /// both. Each version is synced against the destination's previous
    /// one, so only what changed between versions is sent; its recovery
    /// points are named by the version (`diskferry points`).
    #[arg(long, value_name = "ID")]
    pub image: Option<String>,
    /// Where the disks go: pageblob:CONTAINER-URL (blob REPLICA/DISK.vhd) or file:FOLDER.
    /// Repeat --to to replicate to several places from one read of each disk.
    #[arg(long, value_name = "DEST", required = true)]
    pub to: Vec<String>,
    /// Cron schedule for `diskferry daemon` (5 fields, or 6 with seconds), e.g. "0 */6 * * *".
    #[arg(long, value_name = "CRON")]
    pub schedule: Option<String>,
    /// Recovery points kept at the destination.
    #[arg(long, default_value_t = 7, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub keep: u32,
    /// Chunk size in bytes or with a suffix (64KiB..4MiB, a power of two).
    #[arg(long, default_value = "1MiB")]
    pub chunk_size: String,
    /// Deallocate the source VM for its snapshots and start it again after
    /// (azure): the disks are then at one instant with the guest shut down,
    /// at the cost of downtime (`--consistency` does not matter then).
    #[arg(long)]
    pub stop_source: bool,
    /// What the disks' snapshots hold together. crash: every disk at one
    /// instant, as after a power cut (azure: one VM restore point a run, no
    /// agent in the guest). application: the same with the guest's
    /// applications flushed through the VM agent (VSS, Linux pre/post
    /// scripts); a run whose guest cannot falls back to crash and says so.
    /// per-disk: each disk snapshotted on its own, at its own instant.
    /// [default: crash; per-disk on the local provider, which has no
    /// restore points]
    #[arg(long, value_enum)]
    pub consistency: Option<Consistency>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct NameArgs {
    pub name: String,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The replica to sync.
    pub replica: String,
    /// The image version to sync (an image source): on azure, a version of
    /// the replica's image definition (default: its newest); on the local
    /// provider, the label its recovery points get.
    #[arg(long, value_name = "VERSION")]
    pub version: Option<String>,
    /// Print the finished run as JSON.
    #[arg(long)]
    pub json: bool,
    /// No progress output.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct RunsArgs {
    pub replica: String,
    /// How many runs to show.
    #[arg(long, default_value_t = 20)]
    pub limit: u32,
    #[arg(long)]
    pub json: bool,
}

pub fn replica(env: &Env, cmd: ReplicaCmd) -> Result<(), Failure> {
    match cmd {
        ReplicaCmd::Create(a) => create(env, a),
        ReplicaCmd::List(a) => {
            let list = env.store()?.replicas()?;
            if a.json {
                return print_json(&list);
            }
            println!("{:<20} {:<10} {:<18} destination", "name", "keep", "schedule");
            for r in list {
                let dest = shown(&r);
                println!(
                    "{:<20} {:<10} {:<18} {dest}",
                    r.name,
                    r.keep_points,
                    r.schedule.unwrap_or_else(|| "-".into())
                );
            }
            Ok(())
        }
        ReplicaCmd::Show(a) => show(env, a),
        ReplicaCmd::Delete(a) => delete(env, a),
    }
}

fn create(env: &Env, a: CreateArgs) -> Result<(), Failure> {
    let json = a.json;
    let (r, vm) = define(env, a)?;
    if json {
        return print_json(&r);
    }
    let dest = shown(&r);
    let disks: Vec<String> = vm.disks.iter().map(|d| format!("{} ({})", d.name, human(d.size))).collect();
    let what = match &vm.version {
        Some(v) => format!("{} {} (version {v})", vm.source.as_str(), vm.name),
        None if vm.source == SourceKind::Vm => format!("VM {}", vm.name),
        None => format!("{} {}", vm.source.as_str(), vm.name),
    };
    println!("replica {}: {what} with disks {} -> {dest}", r.name, disks.join(", "));
    Ok(())
}

/// Check a replica definition against the world and store it.
pub fn define(env: &Env, a: CreateArgs) -> Result<(Replica, crate::cloud::Vm), Failure> {
    usage(check_name("replica", &a.name))?;
    let chunk = usage(parse_chunk(&a.chunk_size))?;
    if let Some(s) = &a.schedule {
        usage(Schedule::parse(s))?;
    }
    let mut destinations = Vec::new();
    for to in &a.to {
        destinations.push(match usage(Destination::parse(to))? {
            Destination::File(d) => format!("file:{}", d.display()),
            Destination::PageBlob { .. } | Destination::Relay { .. } => to.clone(),
        });
    }
    let (kind, given) = match (&a.vm, &a.disk, &a.snapshot, &a.image) {
        (Some(vm), ..) => (SourceKind::Vm, vm.display().to_string()),
        (_, Some(d), ..) => (SourceKind::Disk, d.clone()),
        (_, _, Some(s), _) => (SourceKind::Snapshot, s.clone()),
        (.., Some(i)) => (SourceKind::Image, i.clone()),
        _ => return usage(Err(anyhow!("name the source: --vm, --disk, --snapshot or --image"))),
    };
    // Here a source is a path: stored absolute, so runs find it from anywhere.
    let id = if env.config.provider() == "local" {
        let p = usage(std::fs::canonicalize(&given).map_err(|e| anyhow!("{} {given}: {e}", kind.as_str())))?;
        p.display().to_string()
    } else {
        given
    };
    let src = SourceRef::new(kind, id);
    let vm = usage(env.cloud()?.read_source(&src, None))?;
    if kind != SourceKind::Vm && (a.stop_source || a.consistency.is_some()) {
        return usage(Err(anyhow!(
            "--stop-source and --consistency are for a VM source: a {} is read as it is",
            kind.as_str()
        )));
    }
    let r = Replica {
        name: a.name.clone(),
        vm: src.stored(),
        destinations,
        schedule: a.schedule,
        keep_points: a.keep,
        chunk_size: chunk,
        created_at: now(),
        stop_source: a.stop_source,
        consistency: a.consistency.unwrap_or(match (env.config.provider(), kind) {
            ("local", _) | (_, SourceKind::Disk | SourceKind::Snapshot | SourceKind::Image) => Consistency::PerDisk,
            _ => Consistency::Crash,
        }),
        failed_over_at: None,
        leave_source_stopped: false,
        version: None,
    };
    env.store()?.insert_replica(&r)?;
    Ok((r, vm))
}

fn parse_chunk(s: &str) -> anyhow::Result<u64> {
    let bytes = diskferry_core::units::parse_size(s).map_err(|e| anyhow!("chunk size {e}"))?;
    diskferry_core::geometry::ChunkSize::new(bytes).map_err(|e| anyhow!("chunk size {s}: {e}"))?;
    Ok(bytes)
}

fn show(env: &Env, a: NameArgs) -> Result<(), Failure> {
    let store = env.store()?;
    let r = store.replica(&a.name)?;
    let runs = store.runs(&r.name, 5)?;
    let snaps = store.retained(&r.name, ResourceKind::Snapshot.as_str())?;
    if a.json {
        let snapshots: Vec<_> =
            snaps.iter().map(|s| serde_json::json!({"disk": s.disk, "name": s.name, "run_id": s.run_id})).collect();
        return print_json(&serde_json::json!({ "replica": r, "runs": runs, "snapshots": snapshots }));
    }
    let source = SourceRef::parse(&r.vm).map_or_else(|_| r.vm.clone(), |s| s.describe());
    println!("replica {}\n  source      {source}\n  destinations {}", r.name, shown(&r));
    println!("  schedule    {}\n  keep        {} points", r.schedule.as_deref().unwrap_or("-"), r.keep_points);
    for s in &snaps {
        println!("  snapshot    {} {}", s.disk.as_deref().unwrap_or("?"), s.name);
    }
    print_runs(&runs);
    Ok(())
}

fn delete(env: &Env, a: NameArgs) -> Result<(), Failure> {
    let mut store = env.store()?;
    let r = store.replica(&a.name)?;
    if let Some(run) = store
        .runs(&r.name, 1)?
        .into_iter()
        .find(|x| x.status == status::RUNNING && crate::owner::run_alive(&store, x).unwrap_or(false))
    {
        return Err(CoordError::Busy { replica: r.name, what: "running".into(), run: run.id }.into());
    }
    let cloud = env.cloud()?;
    for s in store.retained(&r.name, ResourceKind::Snapshot.as_str())? {
        cloud.delete(ResourceKind::Snapshot, &s.name)?;
    }
    store.delete_replica(&r.name)?;
    if !a.json {
        println!("replica {} deleted (its data at the destination is kept)", r.name);
    }
    Ok(())
}

/// A replica's destinations as shown to people (SAS redacted).
pub fn shown(r: &Replica) -> String {
    r.destinations
        .iter()
        .map(|d| Destination::parse(d).map_or_else(|_| "<invalid>".to_owned(), |x| x.display()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Progress of a run on stderr: a bar on a terminal, phase lines otherwise.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    quiet: bool,
}

impl Observer for Progress {
    fn phase(&mut self, phase: &str) {
        if let Some(b) = &self.bar {
            b.set_message(phase.to_owned());
        } else if !self.quiet {
            // One line of phases when stderr is not a terminal.
            if phase == "done" {
                eprintln!(" done");
            } else {
                eprint!(" {phase} ->");
            }
        }
    }

    fn status(&mut self, s: &diskferry_core::report::Status) {
        let Some(b) = &self.bar else { return };
        b.set_length(s.disks.iter().map(|d| d.disk_size).sum());
        b.set_position(s.disks.iter().map(|d| d.bytes_scanned).sum());
    }
}

pub fn run(env: &Env, a: RunArgs) -> Result<(), Failure> {
    if let Some(v) = &a.version {
        usage(crate::cloud::source::check_version(v))?;
    }
    let version = a.version.clone();
    let (done, disks) = run_once_as(env, &a.replica, a.json || a.quiet, |r| r.version = version)?;
    if a.json {
        print_json(&serde_json::json!({ "run": done, "disks": disks }))?;
    } else {
        print_run(&done, &disks);
    }
    succeeded(&done)
}

/// Exit 1 unless the run succeeded.
pub fn succeeded(done: &Run) -> Result<(), Failure> {
    if done.status == status::SUCCEEDED {
        Ok(())
    } else {
        Err(anyhow!("run {} failed: {}", done.id, done.error.as_deref().unwrap_or("unknown error")).into())
    }
}

/// One run of a replica, with progress on stderr unless `quiet`.
pub fn run_once(env: &Env, name: &str, quiet: bool) -> Result<(Run, Vec<RunDisk>), Failure> {
    run_once_as(env, name, quiet, |_| {})
}

/// One run of a replica as `adjust` changes it for this run only.
pub fn run_once_as(
    env: &Env,
    name: &str,
    quiet: bool,
    adjust: impl FnOnce(&mut Replica),
) -> Result<(Run, Vec<RunDisk>), Failure> {
    let store = env.store()?;
    let mut replica = store.replica(name)?;
    adjust(&mut replica);
    let run = match execute::begin(&store, &replica.name, "manual", None, env.config.run.lease_secs)? {
        execute::Begun::Run(run) => *run,
        execute::Begun::SlotTaken => return Err(anyhow::anyhow!("a manual run has no slot").into()),
        execute::Begun::Busy(active) => {
            return Err(CoordError::Busy {
                replica: replica.name,
                what: format!("already running since {}", time(active.started_at)),
                run: active.id,
            }
            .into())
        }
    };
    let cloud = env.cloud()?;
    let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
        let b = indicatif::ProgressBar::new(0);
        b.set_style(
            indicatif::ProgressStyle::with_template("{msg:>16} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        b
    });
    if !quiet {
        eprint!("run {} of replica {}:", run.id, replica.name);
    }
    let mut obs = Progress { bar, quiet };
    // Ctrl-C or a SIGTERM stops the run with its teardown, not without it.
    execute::cancel_on_signals()?;
    let done = execute::execute(cloud.as_ref(), &store, &replica, &run, &env.config, &mut obs)?;
    if let Some(b) = &obs.bar {
        b.finish_and_clear();
    }
    let disks = store.run_disks(&done.id)?;
    Ok((done, disks))
}

fn print_run(r: &Run, disks: &[RunDisk]) {
    let secs = r.duration_ms.unwrap_or(0) as f64 / 1000.0;
    println!("run {} {} in {secs:.2} s", r.id, r.status);
    if let Some(w) = &r.worker {
        println!("  worker: {w}");
    }
    if let Some(v) = &r.version {
        println!("  version: {v}");
    }
    if let Some(n) = &r.note {
        println!("  {n}");
    }
    for d in disks {
        println!(
            "  {:<10} dest {} generation {:<4} {:<12} zero {:>10}  unchanged {:>10}  written {:>10}  cleared {:>10}  \
             read {:>10}  sent {:>10}",
            d.disk,
            d.destination + 1,
            d.generation,
            if d.full_sync { "full" } else { "incremental" },
            human(d.bytes_zero),
            human(d.bytes_unchanged),
            human(d.bytes_written),
            human(d.bytes_cleared),
            human(d.bytes_read),
            human(d.bytes_sent)
        );
    }
    for (dest, size, sent) in sent_of_size(disks) {
        let pct = if size == 0 { 0.0 } else { sent as f64 * 100.0 / size as f64 };
        println!("  dest {}: sent {} of {} ({pct:.2}% of the source's size)", dest + 1, human(sent), human(size));
    }
}

/// Per destination: the source's size (its disks' chunks: zero, unchanged,
/// written and cleared partition each disk) and the bytes sent to it.
pub fn sent_of_size(disks: &[RunDisk]) -> Vec<(u32, u64, u64)> {
    let mut by: std::collections::BTreeMap<u32, (u64, u64)> = std::collections::BTreeMap::new();
    for d in disks {
        let e = by.entry(d.destination).or_default();
        e.0 += d.bytes_zero + d.bytes_unchanged + d.bytes_written + d.bytes_cleared;
        e.1 += d.bytes_sent;
    }
    by.into_iter().map(|(k, (size, sent))| (k, size, sent)).collect()
}

pub fn runs(env: &Env, a: RunsArgs) -> Result<(), Failure> {
    let store = env.store()?;
    let r = store.replica(&a.replica)?;
    let runs = store.runs(&r.name, a.limit)?;
    if a.json {
        let with_disks: Vec<_> = runs
            .iter()
            .map(|run| Ok(serde_json::json!({ "run": run, "disks": store.run_disks(&run.id)? })))
            .collect::<anyhow::Result<_>>()?;
        return print_json(&with_disks);
    }
    print_runs(&runs);
    Ok(())
}

fn print_runs(runs: &[Run]) {
    println!(
        "  {:<26} {:<9} {:<12} {:<5} {:<20} {:>6} {:>10} {:>10} {:>10} {:>10}  by (fence)",
        "run", "trigger", "status", "where", "started", "secs", "read", "written", "cleared", "sent"
    );
    for r in runs {
        let secs = r.duration_ms.map_or_else(|| "-".into(), |d| format!("{:.2}", d as f64 / 1000.0));
        let by = match (&r.daemon, r.fence) {
            (Some(d), Some(f)) => format!("{d} ({f})"),
            (Some(d), None) => d.clone(),
            (None, _) => "-".into(),
        };
        println!(
            "  {:<26} {:<9} {:<12} {:<5} {:<20} {:>6} {:>10} {:>10} {:>10} {:>10}  {by}",
            r.id,
            r.trigger,
            r.status,
            r.placement.as_deref().unwrap_or("-"),
            time(r.started_at),
            secs,
            human(r.bytes_read),
            human(r.bytes_written),
            human(r.bytes_cleared),
            human(r.bytes_sent)
        );
        if let Some(e) = r.error.as_ref().or(r.note.as_ref()) {
            println!("    {e}");
        }
    }
}
