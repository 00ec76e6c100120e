//! The seam between the run lifecycle and a cloud: one trait, [`Cloud`],
//! with a provider per cloud. `local` (this machine: folders, reflink copies,
//! loop devices, agent processes) is the embedded default; `azure` (ARM REST)
//! plugs in behind the same trait.
//!
//! Names come first: the executor asks the provider for the name a resource
//! *will* have, records it in the state store, and only then creates it. So
//! a coordinator killed between the two leaves a name `gc` can delete, and
//! every delete is idempotent (deleting what is not there succeeds).

pub mod azure;
pub mod local;

use anyhow::Result;
use diskferry_core::job::JobSpec;

/// A source VM as the lifecycle needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vm {
    pub name: String,
    pub os_type: String,
    pub disks: Vec<VmDisk>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmDisk {
    /// The disk's name in the VM (`os`, `data0`, ...); names its blob.
    pub name: String,
    /// Where the provider finds it (a path, a resource id).
    pub locator: String,
    pub size: u64,
}

/// Kinds of temporary or retained resources a run creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Snapshot,
    TempDisk,
    Worker,
}

impl Kind {
    /// The order a teardown deletes in: workers, then the temporary disks
    /// they held open, then snapshots (a loop device holds its snapshot).
    pub fn teardown_rank(self) -> u8 {
        match self {
            Kind::Worker => 0,
            Kind::TempDisk => 1,
            Kind::Snapshot => 2,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Snapshot => "snapshot",
            Kind::TempDisk => "temp-disk",
            Kind::Worker => "worker",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "snapshot" => Kind::Snapshot,
            "temp-disk" => Kind::TempDisk,
            "worker" => Kind::Worker,
            _ => return None,
        })
    }
}

/// What a worker is doing.
#[derive(Debug, Clone, PartialEq)]
pub enum WorkerState {
    /// Still running; the latest status document, if one was written yet.
    Running(Option<serde_json::Value>),
    /// Finished; its last status document (phase `done` or `failed`).
    Finished(serde_json::Value),
    /// Gone without a final status (crashed, deleted, never started).
    Lost(String),
}

/// A resource the provider found that diskferry created (for `gc`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub kind: Kind,
    pub name: String,
    /// The run that created it, when the provider can tell (tags, names).
    pub run_id: Option<String>,
}

/// A cloud the lifecycle runs on.
pub trait Cloud: Send + Sync + std::fmt::Debug {
    /// `local`, `azure`.
    fn provider(&self) -> &'static str;

    /// Read the source VM.
    fn read_vm(&self, vm: &str) -> Result<Vm>;

    /// The name the snapshot of `disk` taken by `run_id` will have.
    fn snapshot_name(&self, vm: &Vm, disk: &VmDisk, run_id: &str) -> String;
    /// Snapshot the disks together; `names[i]` is the snapshot of `vm.disks[i]`.
    fn snapshot(&self, vm: &Vm, names: &[String]) -> Result<()>;

    /// The name the temporary disk made from `snapshot` will have, or `None`
    /// when the worker reads the snapshot directly.
    fn temp_disk_name(&self, snapshot: &str, run_id: &str) -> Option<String>;
    /// Create the temporary disk (`lun` = its slot on the worker); returns
    /// the device path the worker will read.
    fn create_temp_disk(&self, name: Option<&str>, snapshot: &str, lun: usize) -> Result<String>;

    /// The name the worker of `run_id` will have.
    fn worker_name(&self, run_id: &str) -> String;
    /// Start the worker with the job (its temporary disks are named in it).
    fn start_worker(&self, name: &str, job: &JobSpec) -> Result<()>;
    /// Look at the worker.
    fn worker_state(&self, name: &str) -> Result<WorkerState>;

    /// Delete a resource; deleting one that does not exist succeeds.
    fn delete(&self, kind: Kind, name: &str) -> Result<()>;

    /// Every resource this provider can see that diskferry created.
    fn list_created(&self) -> Result<Vec<Found>>;
}
