//! Carries out a run: asks the [`Lifecycle`] what to do, does it against a
//! [`Cloud`], records every resource in the [`Store`] *before* creating it,
//! and reports back. The coordinator never touches disk bytes here: the
//! worker's agent does.

use diskferry_core::report::{Phase, Status};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use diskferry_core::job::{JobDisk, JobSpec, RangeHint, JOB_VERSION};

use crate::cloud::{
    Attach, Capture, Cloud, ResourceKind, RunTags, SourceKind, SourceRef, Vm, VmDisk, WorkerSpec, WorkerState,
};

/// Hinted ranges are rounded out to this (the agent reads whole chunks anyway).
const HINT_ALIGN: u64 = 64 * 1024;
/// At most this many hinted ranges in a job, shared by its disks: a job
/// travels in a VM's user data (60 KiB of base64 on Azure; userdata.rs's
/// test puts 1,000 in four disks; a provider drops hints that do not fit,
/// and says so). One disk gets at most 400 of them, and never fewer than 16.
const HINT_RANGE_BUDGET: usize = 1000;
use crate::clock::now;
use crate::config::{Config, Placement};
use crate::destination::Destination;
use crate::lifecycle::{Action, Lifecycle, Outcome};
use crate::store::{resource_state, status, Replica, Resource, Run, RunDisk, Store};

mod begin;
pub use begin::{begin, cancel_on_signals, new_run, new_run_id, Begun};
use begin::{cancelled, keep_lease};

/// What a run's caller sees while it goes.
pub trait Observer {
    /// The run entered a phase.
    fn phase(&mut self, _phase: &str) {}
    /// The worker's latest status document.
    fn status(&mut self, _status: &Status) {}
}

/// Observes nothing.
#[derive(Debug)]
pub struct Quiet;
impl Observer for Quiet {}

/// Everything the steps learn along the way.
#[derive(Debug, Default)]
struct Built {
    vm: Option<Vm>,
    snapshots: Vec<String>,
    /// Per disk: the temporary disk's resource name, if it is one.
    temp_names: Vec<Option<String>>,
    devices: Vec<String>,
    worker: Option<String>,
    /// Per disk: what changed since the replica's last kept snapshot.
    hints: Vec<Option<RangeHint>>,
    /// Placed here (no temporary disks; the worker is an agent on this host).
    here: bool,
    /// Where the run was placed, and why.
    placed: String,
    /// What the snapshots hold together, as taken: each recovery point records it.
    consistency: Option<String>,
    /// The source's image version is the newest point of every disk at
    /// every destination already: the run ends after reading the source.
    nothing_to_sync: bool,
}

/// Run the lifecycle of `run` to its end; returns the finished run row.
/// Errors of the run are in the row; `Err` means the store itself failed.
pub fn execute(
    cloud: &dyn Cloud,
    store: &Store,
    replica: &Replica,
    run: &Run,
    config: &Config,
    obs: &mut dyn Observer,
) -> Result<Run> {
    let started = Instant::now();
    let mut life = Lifecycle::new();
    let mut built = Built::default();
    let deadline = Duration::from_secs(config.run.deadline_secs);
    let expires = now() + config.run.deadline_secs as i64 + 3600;
    let (stop, lost) = (AtomicBool::new(false), AtomicBool::new(false));
    let exec = Exec { cloud, store, replica, run, config, expires, lost: &lost };
    std::thread::scope(|scope| {
        if let Some(fence) = run.fence {
            let (stop, lost) = (&stop, &lost);
            scope.spawn(move || keep_lease(store, run, fence, config.run.lease_secs, stop, lost));
        }
        let r = match exec.first_run_problems()? {
            Some(why) => {
                store.finish_run(
                    &run.id,
                    status::FAILED,
                    now(),
                    Some(started.elapsed().as_millis() as i64),
                    Some(&why),
                )?;
                store.run(&run.id)
            }
            None => {
                exec.clear_predecessors().and_then(|()| drive(&exec, &mut life, &mut built, deadline, started, obs))
            }
        };
        stop.store(true, Ordering::Release);
        r
    })
}

/// The lifecycle's loop: each action carried out and reported, to Finish.
fn drive(
    exec: &Exec<'_>,
    life: &mut Lifecycle,
    built: &mut Built,
    deadline: Duration,
    started: Instant,
    obs: &mut dyn Observer,
) -> Result<Run> {
    let (store, run) = (exec.store, exec.run);
    loop {
        let action = life.next();
        store.set_phase(&run.id, action.phase())?;
        obs.phase(action.phase());
        if let Action::Finish { succeeded } = action {
            let error = (!life.errors().is_empty()).then(|| life.errors().join("; then "));
            let st = if succeeded { status::SUCCEEDED } else { status::FAILED };
            store.finish_run(&run.id, st, now(), Some(started.elapsed().as_millis() as i64), error.as_deref())?;
            return store.run(&run.id);
        }
        let before_teardown = matches!(
            action,
            Action::ReadVm | Action::Snapshot | Action::Place | Action::CreateTempDisks | Action::StartWorker
        );
        let result = if before_teardown && cancelled() {
            Err(anyhow!("cancelled by a signal"))
        } else if before_teardown && exec.lost() {
            Err(anyhow!("lost the replica's lease to another coordinator"))
        } else {
            exec.step(action, built, deadline, obs)
        };
        if action == Action::Place && built.here && result.is_ok() {
            life.place_here();
        }
        let nothing = action == Action::ReadVm && built.nothing_to_sync && result.is_ok();
        crate::failpoint::hit(&format!("after-{}", action.phase()));
        life.report(match result {
            Ok(()) => Outcome::Done,
            Err(e) => Outcome::Failed(format!("{}: {e:#}", action.phase())),
        });
        if nothing {
            life.nothing_to_sync();
        }
    }
}

struct Exec<'a> {
    cloud: &'a dyn Cloud,
    store: &'a Store,
    replica: &'a Replica,
    run: &'a Run,
    config: &'a Config,
    expires: i64,
    /// Set when the run's lease was lost: it goes on to its teardown.
    lost: &'a AtomicBool,
}

impl Exec<'_> {
    fn lost(&self) -> bool {
        self.lost.load(Ordering::Acquire)
    }

    /// A replica's first run checks first what would fail it
    /// (`diskferry preflight`): the problems found, if any.
    fn first_run_problems(&self) -> Result<Option<String>> {
        let earlier = self.store.runs(&self.replica.name, 2)?.iter().any(|r| r.id != self.run.id);
        if earlier {
            return Ok(None);
        }
        self.store.set_phase(&self.run.id, "preflight")?;
        let checks =
            crate::preflight::run(self.cloud, std::slice::from_ref(self.replica), self.config.storage.create_container);
        let problems = crate::preflight::summary(&checks);
        Ok((!problems.is_empty()).then(|| format!("preflight: {problems} (see `diskferry preflight`)")))
    }

    /// Tear down what earlier runs of the replica left and no live run
    /// owns (one whose coordinator died, taken over by this run): workers,
    /// temporary disks, then snapshots, never a retained one. A delete that
    /// fails is left to `gc`, and said.
    fn clear_predecessors(&self) -> Result<()> {
        let mut left: Vec<Resource> = self
            .store
            .live_resources()?
            .into_iter()
            .filter(|r| r.replica == self.replica.name && r.run_id != self.run.id)
            .filter(|r| r.state != resource_state::RETAINED)
            .collect();
        left.retain(|r| self.store.run(&r.run_id).is_ok_and(|x| x.status != status::RUNNING));
        left.sort_by_key(|r| ResourceKind::parse(&r.kind).map_or(u8::MAX, ResourceKind::teardown_rank));
        for r in left {
            let Some(kind) = ResourceKind::parse(&r.kind) else { continue };
            match self.delete(kind, &r.name) {
                Ok(()) => eprintln!("replica {}: deleted {} {} left by run {}", r.replica, r.kind, r.name, r.run_id),
                Err(e) => {
                    eprintln!("replica {}: {} {} of run {} is left for gc: {e:#}", r.replica, r.kind, r.name, r.run_id)
                }
            }
        }
        Ok(())
    }

    fn step(&self, action: Action, built: &mut Built, deadline: Duration, obs: &mut dyn Observer) -> Result<()> {
        match action {
            Action::ReadVm => {
                for d in &self.replica.destinations {
                    Destination::parse(d)?.preflight(&self.replica.name)?;
                }
                let src = SourceRef::parse(&self.replica.vm)?;
                let vm = self.cloud.read_source(&src, self.replica.version.as_deref())?;
                if let Some(v) = &vm.version {
                    self.store.set_version(&self.run.id, v)?;
                }
                self.store.set_vm_facts(&self.replica.name, &vm.facts(), now())?;
                if self.already_there(&vm)? {
                    let v = vm.version.as_deref().unwrap_or_default();
                    self.store
                        .set_note(&self.run.id, &format!("nothing to sync: version {v} is at every destination"))?;
                    built.nothing_to_sync = true;
                }
                built.vm = Some(vm);
                Ok(())
            }
            Action::Snapshot => {
                let vm = built.vm.as_ref().ok_or_else(|| anyhow!("no VM"))?;
                let how = Capture {
                    consistency: self.replica.consistency,
                    stop_source: self.replica.stop_source,
                    restart_source: !self.replica.leave_source_stopped,
                };
                let tags = self.tags();
                built.snapshots = self.cloud.snapshot_names(vm, &tags, how)?;
                if built.snapshots.len() != vm.disks.len() {
                    bail!("{} snapshot names for {} disks", built.snapshots.len(), vm.disks.len());
                }
                for (d, name) in vm.disks.iter().zip(&built.snapshots) {
                    self.plan(ResourceKind::Snapshot, name, Some(&d.name))?;
                }
                // Temporary disks the provider makes and deletes inside the
                // step: recorded first; left planned if the step fails, for
                // the next run or gc to delete.
                let staged = self.cloud.staging_names(vm, &self.run.id);
                for (disk, name) in &staged {
                    self.plan(ResourceKind::TempDisk, name, Some(disk))?;
                }
                let taken = self.cloud.snapshot(vm, &built.snapshots, &tags, how)?;
                for (_, name) in &staged {
                    self.store.set_resource_state(name, resource_state::DELETED, now())?;
                }
                for name in &built.snapshots {
                    self.store.set_resource_state(name, resource_state::CREATED, now())?;
                }
                if let Some(note) = &taken.note {
                    eprintln!("note: run {}: {} consistency: {note}", self.run.id, taken.consistency);
                }
                built.consistency = Some(taken.consistency.clone());
                self.store.set_consistency(&self.run.id, &taken.consistency, taken.note.as_deref())
            }
            Action::CreateTempDisks => {
                let vm = built.vm.as_ref().ok_or_else(|| anyhow!("no VM"))?;
                for (lun, (d, snap)) in vm.disks.iter().zip(&built.snapshots).enumerate() {
                    let name = self.cloud.temp_disk_name(snap, &self.run.id, lun);
                    built.temp_names.push(name.clone());
                    if let Some(n) = &name {
                        self.plan(ResourceKind::TempDisk, n, Some(&d.name))?;
                    }
                    built.devices.push(self.cloud.create_temp_disk(name.as_deref(), snap, lun)?);
                    if let Some(n) = &name {
                        self.store.set_resource_state(n, resource_state::CREATED, now())?;
                    }
                }
                Ok(())
            }
            Action::Place => {
                let vm = built.vm.as_ref().ok_or_else(|| anyhow!("no VM"))?;
                let per_disk = (HINT_RANGE_BUDGET / vm.disks.len().max(1)).clamp(16, 400);
                built.hints = vm.disks.iter().zip(&built.snapshots).map(|(d, s)| self.hint(d, s, per_disk)).collect();
                let (here, why) = self.placement(vm.source, &built.snapshots, &built.hints)?;
                built.here = here;
                built.placed = why;
                self.store.set_placement(&self.run.id, if here { "here" } else { "vm" })
            }
            Action::StartWorker => {
                let vm = built.vm.as_ref().ok_or_else(|| anyhow!("no VM"))?;
                // Placed here, the provider names each disk's source itself.
                let devices = if built.here { vec![String::from("-"); vm.disks.len()] } else { built.devices.clone() };
                let mut job = self.job(vm, &devices, built.consistency.clone())?;
                for (d, h) in job.disks.iter_mut().zip(&built.hints) {
                    d.hint = h.clone();
                }
                let name = match built.here {
                    true => self.cloud.here_worker_name(&self.run.id),
                    false => self.cloud.worker_name(&self.run.id),
                };
                built.worker = Some(name.clone());
                self.plan(ResourceKind::Worker, &name, None)?;
                let disks: Vec<Attach> = (0..built.snapshots.len())
                    .map(|lun| Attach {
                        lun,
                        snapshot: built.snapshots[lun].clone(),
                        temp: built.temp_names.get(lun).cloned().flatten(),
                    })
                    .collect();
                let tags = self.tags();
                let spec = WorkerSpec { name: &name, vm, job: &job, disks: &disks, tags: &tags };
                let worker = if built.here { self.cloud.start_here(&spec)? } else { self.cloud.start_worker(&spec)? };
                // What the worker is, and where the run was placed and why.
                let what = match (worker, built.placed.is_empty()) {
                    (Some(w), true) => Some(w),
                    (Some(w), false) => Some(format!("{w}; placed by {}", built.placed)),
                    (None, false) => Some(format!("placed by {}", built.placed)),
                    (None, true) => None,
                };
                if let Some(w) = what {
                    self.store.set_worker(&self.run.id, &w)?;
                }
                self.store.set_resource_state(&name, resource_state::CREATED, now())
            }
            Action::Watch => self.watch(built, deadline, obs),
            Action::DeleteWorker => match &built.worker {
                Some(w) => self.delete(ResourceKind::Worker, w),
                None => Ok(()),
            },
            Action::DeleteTempDisks => {
                let mut first = Ok(());
                for n in built.temp_names.iter().flatten() {
                    let r = self.delete(ResourceKind::TempDisk, n);
                    if first.is_ok() {
                        first = r;
                    }
                }
                first
            }
            // A run that lost its lease keeps the older snapshots: its
            // successor may be diffing against them.
            Action::Settle { succeeded } => {
                let keeps = built.vm.as_ref().is_none_or(|v| v.source.keeps_snapshots());
                self.settle(built, succeeded && !self.lost(), keeps)
            }
            Action::Finish { .. } => Ok(()),
        }
    }

    /// Where the agent runs: here (`true`) or on a worker, and why. A
    /// source that is not a VM is always read here when the provider can
    /// (`placement` is for VMs): there is no VM whose disks a worker stands
    /// in for, and an image's next version has no snapshot diff to size the
    /// read by.
    fn placement(
        &self,
        source: SourceKind,
        snapshots: &[String],
        hints: &[Option<RangeHint>],
    ) -> Result<(bool, String)> {
        let run = &self.config.run;
        let diff: Option<u64> =
            hints.iter().map(|h| h.as_ref().map(|h| h.ranges.iter().map(|r| r[1]).sum::<u64>())).sum();
        let mib = |b: u64| format!("{:.1} MiB", b as f64 / (1 << 20) as f64);
        let here = match (run.placement, diff) {
            _ if source != SourceKind::Vm => format!("a {} source is read over HTTPS", source.as_str()),
            (Placement::Vm, _) => return Ok((false, String::new())),
            (Placement::Here, _) => "placement here".to_owned(),
            (Placement::Auto, None) => return Ok((false, "auto: no snapshot diff for every disk".into())),
            (Placement::Auto, Some(b)) if b > run.here_max_mib.saturating_mul(1 << 20) => {
                return Ok((false, format!("auto: a diff of {} over here_max_mib {}", mib(b), run.here_max_mib)));
            }
            (Placement::Auto, Some(b)) => format!("auto: a diff of {} (here_max_mib {})", mib(b), run.here_max_mib),
        };
        for s in snapshots {
            if let Some(why) = self.cloud.why_not_here(s)? {
                // (A source that is not a VM says it in the run's record
                // only: on the local provider its worker is on this host.)
                if source == SourceKind::Vm {
                    eprintln!("note: run {}: not placed here ({here}): {why}", self.run.id);
                }
                return Ok((false, format!("{here}, but {why}")));
            }
        }
        Ok((true, here))
    }

    /// Whether an image source's version, found by the run itself (not
    /// asked for with `run --version`), is the newest point of each of its
    /// disks at every destination already: a schedule that fires while the
    /// image has no new version then makes nothing and reads nothing.
    fn already_there(&self, vm: &Vm) -> Result<bool> {
        let (SourceKind::Image, Some(v), None) = (vm.source, &vm.version, &self.replica.version) else {
            return Ok(false);
        };
        let name = &self.replica.name;
        for dest in 0..self.replica.destinations.len() as u32 {
            let newest = self.store.newest_disks_at(name, dest)?;
            for d in &vm.disks {
                let Some(point) = newest.iter().find(|n| n.disk == d.name) else { return Ok(false) };
                if self.store.point_version(name, &d.name, dest, point.generation)?.as_deref() != Some(v.as_str()) {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    fn tags(&self) -> RunTags {
        RunTags { run_id: self.run.id.clone(), replica: self.replica.name.clone(), expires_at: self.expires }
    }

    /// The range hint for `disk`: what changed since the snapshot this
    /// replica kept at its last successful run, if the provider can tell
    /// and that run's generations are known for every destination. Without
    /// one the agent reads the whole disk; the reason goes to stderr.
    fn hint(&self, disk: &VmDisk, snapshot: &str, max_ranges: usize) -> Option<RangeHint> {
        let attempt = || -> Result<Option<RangeHint>> {
            let retained = self.store.retained(&self.replica.name, ResourceKind::Snapshot.as_str())?;
            let Some(prev) = retained.iter().find(|r| r.disk.as_deref() == Some(&disk.name) && r.run_id != self.run.id)
            else {
                return Ok(None);
            };
            let mut gens: Vec<(u32, u64)> = self
                .store
                .run_disks(&prev.run_id)?
                .into_iter()
                .filter(|d| d.disk == disk.name)
                .map(|d| (d.destination, d.generation))
                .collect();
            gens.sort_unstable();
            let expected: Vec<u32> = (0..self.replica.destinations.len() as u32).collect();
            if gens.iter().map(|g| g.0).collect::<Vec<_>>() != expected {
                bail!("the destinations changed since run {}", prev.run_id);
            }
            let Some(raw) = self.cloud.changed_ranges(&prev.name, snapshot)? else { return Ok(None) };
            let chunk = self.replica.chunk_size.max(HINT_ALIGN);
            let ranges = RangeHint::coalesce(&raw, disk.size, HINT_ALIGN, chunk, max_ranges)
                .ok_or_else(|| anyhow!("{} changed ranges are too many to carry", raw.len()))?;
            Ok(Some(RangeHint {
                base_generations: gens.into_iter().map(|g| g.1).collect(),
                disk_size: disk.size,
                ranges,
            }))
        };
        match attempt() {
            Ok(h) => h,
            Err(e) => {
                eprintln!(
                    "note: run {}: disk {}: no range hint, the worker reads it all: {e:#}",
                    self.run.id, disk.name
                );
                None
            }
        }
    }

    fn plan(&self, kind: ResourceKind, name: &str, disk: Option<&str>) -> Result<()> {
        self.store.plan_resource(&Resource {
            name: name.to_owned(),
            run_id: self.run.id.clone(),
            replica: self.replica.name.clone(),
            kind: kind.as_str().into(),
            disk: disk.map(str::to_owned),
            state: resource_state::PLANNED.into(),
            created_at: now(),
            expires_at: self.expires,
        })
    }

    fn delete(&self, kind: ResourceKind, name: &str) -> Result<()> {
        self.cloud.delete(kind, name)?;
        self.store.set_resource_state(name, resource_state::DELETED, now())
    }

    fn job(&self, vm: &Vm, devices: &[String], consistency: Option<String>) -> Result<JobSpec> {
        let dests = self.replica.destinations.iter().map(|d| Destination::parse(d)).collect::<Result<Vec<_>>>()?;
        let s = &self.config.storage;
        Ok(JobSpec {
            version: JOB_VERSION,
            run_id: self.run.id.clone(),
            chunk_size: self.replica.chunk_size,
            concurrency: s.concurrency,
            keep: u16::try_from(self.replica.keep_points).unwrap_or(u16::MAX),
            threads: None,
            api_version: s.api_version.clone(),
            retry_for_secs: s.retry_for_secs,
            create_container: s.create_container,
            status_interval_ms: self.config.run.status_interval_ms.clamp(50, 600_000),
            status_blob: None,
            state_url: s.state_url.clone(),
            consistency,
            fence: self.run.fence.map(|f| f as u64),
            disks: vm
                .disks
                .iter()
                .zip(devices)
                .map(|(d, dev)| JobDisk {
                    name: d.name.clone(),
                    source: dev.clone(),
                    source_id: format!("{}/{}", vm.name, d.name),
                    destinations: dests.iter().map(|x| x.disk_target(&self.replica.name, &d.name)).collect(),
                    hint: None,
                    read_limit: self.config.run.read_limit_mib_s.map(|m| m.saturating_mul(1 << 20)),
                })
                .collect(),
        })
    }

    fn watch(&self, built: &Built, deadline: Duration, obs: &mut dyn Observer) -> Result<()> {
        let worker = built.worker.as_deref().ok_or_else(|| anyhow!("no worker"))?;
        let started = Instant::now();
        loop {
            match self.cloud.worker_state(worker)? {
                WorkerState::Running(s) => {
                    if let Some(s) = s {
                        obs.status(&s);
                    }
                }
                WorkerState::Finished(s) => {
                    obs.status(&s);
                    return self.record(&s);
                }
                WorkerState::Lost(why) => bail!("{why}"),
            }
            if started.elapsed() > deadline {
                bail!("the worker did not finish within the run deadline ({} s)", deadline.as_secs());
            }
            if cancelled() {
                bail!("cancelled by a signal");
            }
            if self.lost() {
                bail!("lost the replica's lease to another coordinator");
            }
            std::thread::sleep(self.cloud.poll_interval());
        }
    }

    /// Record each disk's result at each destination from the worker's
    /// final status.
    fn record(&self, s: &Status) -> Result<()> {
        if s.disks.is_empty() {
            bail!("the worker's status lists no disks");
        }
        let mut errors = Vec::new();
        for d in &s.disks {
            let name = d.name.as_deref().context("the worker's status names no disk")?;
            let Some(results) = &d.results else {
                errors.push(d.error.clone().unwrap_or_else(|| format!("disk {name}: no result")));
                continue;
            };
            for (i, x) in results.iter().enumerate() {
                let Some(r) = &x.report else {
                    let e = x.error.as_deref().unwrap_or("failed");
                    errors.push(format!("disk {name} to destination {}: {e}", i + 1));
                    continue;
                };
                self.store.record_disk(&RunDisk {
                    run_id: self.run.id.clone(),
                    disk: name.to_owned(),
                    destination: i as u32,
                    generation: r.generation,
                    full_sync: r.full_sync,
                    full_sync_reason: r.full_sync_reason.clone(),
                    bytes_read: r.bytes_read,
                    bytes_sent: r.bytes_sent(),
                    bytes_zero: r.bytes_zero,
                    bytes_unchanged: r.bytes_unchanged,
                    bytes_written: r.bytes_written,
                    bytes_cleared: r.bytes_cleared,
                })?;
            }
        }
        if s.phase != Phase::Done || !errors.is_empty() {
            bail!("{}", if errors.is_empty() { "the worker failed".to_owned() } else { errors.join("; ") });
        }
        Ok(())
    }

    /// Keep the latest snapshot per disk: this run's if its disks synced
    /// (older ones go), else the older ones (this run's go). A source whose
    /// snapshots are not kept (`keeps` false: a snapshot's or an image's
    /// copies) has this run's deleted after a sync too.
    fn settle(&self, built: &Built, succeeded: bool, keeps: bool) -> Result<()> {
        let mut first: Result<()> = Ok(());
        let mut keep = |r: Result<()>| {
            if first.is_ok() {
                first = r;
            }
        };
        if !succeeded || !keeps {
            for s in &built.snapshots {
                keep(self.delete(ResourceKind::Snapshot, s));
            }
            return first;
        }
        for s in &built.snapshots {
            keep(self.cloud.retain(ResourceKind::Snapshot, s));
            self.store.set_resource_state(s, resource_state::RETAINED, now())?;
        }
        for old in self.store.retained(&self.replica.name, ResourceKind::Snapshot.as_str())? {
            if old.run_id != self.run.id {
                // No longer kept: if its delete fails, gc finds it as a
                // leftover of a finished run instead of keeping it forever.
                self.store.set_resource_state(&old.name, resource_state::CREATED, now())?;
                keep(self.delete(ResourceKind::Snapshot, &old.name));
            }
        }
        first
    }
}

#[cfg(test)]
mod tests;
