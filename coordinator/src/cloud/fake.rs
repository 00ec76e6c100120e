//! [`FakeCloud`]: a [`Cloud`] held in memory, for the executor's tests. It
//! keeps the resources that exist (by name and kind), counts every call,
//! fails the Nth call of a method on demand, and plays a worker that
//! finishes with the status a test sets (by default: every disk of the job
//! synced to every destination). What it refuses, the real providers
//! refuse too: a resource created twice, a temporary disk of a snapshot
//! that does not exist, a worker whose disks are missing.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};

use anyhow::{anyhow, bail, Result};
use diskferry_core::job::JobSpec;
use diskferry_core::report::{DestinationResult, DiskStatus, Phase, Status, SyncReport, STATUS_VERSION};

use super::{Capture, Cloud, Consistency, Found, ResourceKind, RunTags, Taken, Vm, VmDisk, WorkerSpec, WorkerState};

#[derive(Debug, Default)]
struct State {
    live: BTreeMap<String, ResourceKind>,
    retained: Vec<String>,
    calls: HashMap<&'static str, u32>,
    fail: HashMap<(&'static str, u32), String>,
    jobs: Vec<JobSpec>,
    /// What the worker reports, once started (`None`: the default).
    outcome: Option<WorkerState>,
    /// Runs may be placed here ([`FakeCloud::allow_here`]).
    here: bool,
    /// Read access granted to workers here: worker name -> snapshots.
    grants: BTreeMap<String, Vec<String>>,
    /// What changed between two snapshots, as [`Cloud::changed_ranges`]
    /// answers (`None`: the provider cannot tell).
    diff: Option<Vec<[u64; 2]>>,
    /// Why an application-consistent capture fails, if it does (the run
    /// then has a crash-consistent one).
    no_application: Option<String>,
}

/// A cloud in memory (see the module's header).
#[derive(Debug)]
pub struct FakeCloud {
    vm: Vm,
    state: Mutex<State>,
}

impl FakeCloud {
    /// A cloud holding one VM with disks of these names and sizes.
    pub fn new(vm: &str, disks: &[(&str, u64)]) -> Self {
        let vm = Vm::of_disks(
            vm.to_owned(),
            vm.to_owned(),
            super::SourceKind::Vm,
            "Linux".into(),
            disks
                .iter()
                .map(|(n, size)| VmDisk {
                    name: (*n).to_owned(),
                    locator: format!("{vm}/{n}"),
                    size: *size,
                    sku: None,
                    no_restore_point: None,
                })
                .collect(),
        );
        Self { vm, state: Mutex::new(State::default()) }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Fail the `nth` call (from 1) of `method`.
    pub fn fail(&self, method: &'static str, nth: u32) {
        self.lock().fail.insert((method, nth), format!("injected failure of {method} #{nth}"));
    }

    /// The worker ends this way instead of succeeding.
    pub fn worker_ends(&self, outcome: WorkerState) {
        self.lock().outcome = Some(outcome);
    }

    /// Let runs be placed here: snapshots readable from this host, and
    /// workers here that read them through grants revoked on delete.
    pub fn allow_here(&self) {
        self.lock().here = true;
    }

    /// Every pair of snapshots differs by `ranges` from now on (`None`: no diff).
    pub fn set_diff(&self, ranges: Option<Vec<[u64; 2]>>) {
        self.lock().diff = ranges;
    }

    /// Application-consistent captures fail with `why` from now on.
    pub fn fail_application(&self, why: &str) {
        self.lock().no_application = Some(why.to_owned());
    }

    /// Snapshots read access is granted to now.
    pub fn grants(&self) -> Vec<String> {
        self.lock().grants.values().flatten().cloned().collect()
    }

    /// Resources that exist now, by name.
    pub fn live(&self) -> BTreeMap<String, ResourceKind> {
        self.lock().live.clone()
    }

    /// Snapshots marked as retained (and still there).
    pub fn retained(&self) -> Vec<String> {
        let s = self.lock();
        s.retained.iter().filter(|n| s.live.contains_key(*n)).cloned().collect()
    }

    /// Calls of each method so far.
    pub fn calls(&self) -> HashMap<&'static str, u32> {
        self.lock().calls.clone()
    }

    /// The jobs the workers were started with.
    pub fn jobs(&self) -> Vec<JobSpec> {
        self.lock().jobs.clone()
    }

    /// Count a call; `Err` if it is to fail.
    fn call(&self, method: &'static str) -> Result<MutexGuard<'_, State>> {
        let mut s = self.lock();
        let n = {
            let n = s.calls.entry(method).or_insert(0);
            *n += 1;
            *n
        };
        match s.fail.get(&(method, n)) {
            Some(why) => Err(anyhow!("{why}")),
            None => Ok(s),
        }
    }

    fn create(s: &mut State, kind: ResourceKind, name: &str) -> Result<()> {
        if s.live.insert(name.to_owned(), kind).is_some() {
            bail!("{} {name} already exists", kind.as_str());
        }
        Ok(())
    }
}

/// The report a worker gives for a disk it synced.
fn synced(destination: &str, size: u64) -> SyncReport {
    SyncReport {
        destination: destination.to_owned(),
        generation: 1,
        full_sync: true,
        full_sync_reason: Some("destination does not exist yet".into()),
        disk_size: size,
        previous_disk_size: None,
        chunk_size: 1 << 20,
        chunks: size.div_ceil(1 << 20),
        chunks_zero: size.div_ceil(1 << 20) - 1,
        chunks_unchanged: 0,
        chunks_written: 1,
        chunks_cleared: 0,
        chunks_suspect: 0,
        bytes_zero: size - (1 << 20),
        bytes_unchanged: 0,
        bytes_written: 1 << 20,
        bytes_cleared: 0,
        bytes_read: 1 << 20,
        seconds: 0.5,
        seconds_writing: 0.1,
        seconds_committing: 0.1,
        read_bytes_per_second: size as f64 * 2.0,
        wire: None,
        hint: None,
        chunks_hinted: 0,
    }
}

/// The final status of a worker that synced every disk of `job`.
pub fn all_synced(job: &JobSpec, sizes: &[u64]) -> Status {
    let disks = job
        .disks
        .iter()
        .zip(sizes)
        .map(|(d, &size)| DiskStatus {
            name: Some(d.name.clone()),
            source: d.source.clone(),
            destination: d.destinations.join(", "),
            phase: Phase::Done,
            last_error: None,
            generation: 1,
            disk_size: size,
            bytes_scanned: size,
            bytes_read: 1 << 20,
            bytes_hashed: 1 << 20,
            bytes_zero: size - (1 << 20),
            bytes_unchanged: 0,
            bytes_written: 1 << 20,
            bytes_cleared: 0,
            bytes_sent: None,
            results: Some(
                d.destinations
                    .iter()
                    .map(|t| DestinationResult { destination: t.clone(), report: Some(synced(t, size)), error: None })
                    .collect(),
            ),
            error: None,
        })
        .collect();
    Status {
        version: STATUS_VERSION,
        run_id: Some(job.run_id.clone()),
        phase: Phase::Done,
        updated_unix_ms: 0,
        seconds: None,
        last_error: None,
        disks,
        requests: None,
    }
}

impl Cloud for FakeCloud {
    fn provider(&self) -> &'static str {
        "fake"
    }

    fn read_vm(&self, vm: &str) -> Result<Vm> {
        let _s = self.call("read_vm")?;
        if vm != self.vm.id {
            bail!("no VM {vm}");
        }
        Ok(self.vm.clone())
    }

    fn snapshot_names(&self, vm: &Vm, tags: &RunTags, _how: Capture) -> Result<Vec<String>> {
        Ok(vm.disks.iter().map(|d| format!("snap-{}-{}", tags.run_id, d.name)).collect())
    }

    fn snapshot(&self, vm: &Vm, names: &[String], _tags: &RunTags, how: Capture) -> Result<Taken> {
        let mut s = self.call("snapshot")?;
        if names.len() != vm.disks.len() {
            bail!("{} snapshot names for {} disks", names.len(), vm.disks.len());
        }
        for n in names {
            Self::create(&mut s, ResourceKind::Snapshot, n)?;
        }
        Ok(match (how.stop_source, how.consistency, &s.no_application) {
            (true, _, _) => Taken::as_asked("stopped"),
            (false, Consistency::Application, Some(why)) => {
                Taken { consistency: "crash".into(), note: Some(format!("application-consistent failed: {why}")) }
            }
            (false, c, _) => Taken::as_asked(c.as_str()),
        })
    }

    fn temp_disk_name(&self, snapshot: &str, _run_id: &str, lun: usize) -> Option<String> {
        Some(format!("temp-{lun}-{snapshot}"))
    }

    fn create_temp_disk(&self, name: Option<&str>, snapshot: &str, lun: usize) -> Result<String> {
        let mut s = self.call("create_temp_disk")?;
        if s.live.get(snapshot) != Some(&ResourceKind::Snapshot) {
            bail!("snapshot {snapshot} does not exist");
        }
        let name = name.ok_or_else(|| anyhow!("a temporary disk needs a name"))?;
        Self::create(&mut s, ResourceKind::TempDisk, name)?;
        Ok(format!("lun:{lun}"))
    }

    fn worker_name(&self, run_id: &str) -> String {
        format!("worker-{run_id}")
    }

    fn start_worker(&self, w: &WorkerSpec<'_>) -> Result<Option<String>> {
        let mut s = self.call("start_worker")?;
        for a in w.disks {
            let t = a.temp.as_deref().unwrap_or(&a.snapshot);
            if !s.live.contains_key(t) {
                bail!("disk {t} of the worker does not exist");
            }
        }
        Self::create(&mut s, ResourceKind::Worker, w.name)?;
        s.jobs.push(w.job.clone());
        Ok(None)
    }

    fn worker_state(&self, name: &str) -> Result<WorkerState> {
        let s = self.call("worker_state")?;
        if !s.live.contains_key(name) {
            return Ok(WorkerState::Lost(format!("worker {name} is gone")));
        }
        if let Some(o) = &s.outcome {
            return Ok(o.clone());
        }
        let job = s.jobs.last().ok_or_else(|| anyhow!("no job"))?;
        let sizes: Vec<u64> = self.vm.disks.iter().map(|d| d.size).collect();
        Ok(WorkerState::Finished(all_synced(job, &sizes)))
    }

    fn changed_ranges(&self, previous: &str, current: &str) -> Result<Option<Vec<[u64; 2]>>> {
        let s = self.call("changed_ranges")?;
        for snap in [previous, current] {
            if s.live.get(snap) != Some(&ResourceKind::Snapshot) {
                bail!("snapshot {snap} does not exist");
            }
        }
        Ok(s.diff.clone())
    }

    fn why_not_here(&self, snapshot: &str) -> Result<Option<String>> {
        let s = self.call("why_not_here")?;
        Ok(match (s.here, s.live.get(snapshot)) {
            (false, _) => Some("the fake cloud keeps no workers here".into()),
            (true, Some(ResourceKind::Snapshot)) => None,
            (true, _) => Some(format!("snapshot {snapshot} does not exist")),
        })
    }

    fn start_here(&self, w: &WorkerSpec<'_>) -> Result<Option<String>> {
        let mut s = self.call("start_here")?;
        if !s.here {
            bail!("no workers here");
        }
        // Recorded before granting, as the azure provider does: a delete
        // revokes whatever was granted.
        s.grants.insert(w.name.to_owned(), Vec::new());
        let mut job = w.job.clone();
        for (d, a) in job.disks.iter_mut().zip(w.disks) {
            if s.live.get(&a.snapshot) != Some(&ResourceKind::Snapshot) {
                bail!("snapshot {} does not exist", a.snapshot);
            }
            if let Some(g) = s.grants.get_mut(w.name) {
                g.push(a.snapshot.clone());
            }
            d.source = format!("url-file:/fake/{}.url", d.name);
        }
        Self::create(&mut s, ResourceKind::Worker, w.name)?;
        s.jobs.push(job);
        Ok(Some("this host".into()))
    }

    fn delete(&self, _kind: ResourceKind, name: &str) -> Result<()> {
        let mut s = self.call("delete")?;
        s.live.remove(name);
        s.grants.remove(name);
        Ok(())
    }

    fn retain(&self, _kind: ResourceKind, name: &str) -> Result<()> {
        let mut s = self.call("retain")?;
        s.retained.push(name.to_owned());
        Ok(())
    }

    fn list_created(&self) -> Result<Vec<Found>> {
        let s = self.call("list_created")?;
        Ok(s.live.iter().map(|(n, k)| Found::untagged(*k, n.clone(), None)).collect())
    }
}
