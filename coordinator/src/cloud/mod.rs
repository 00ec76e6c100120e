//! The seam between the run lifecycle and a cloud: one trait, [`Cloud`],
//! with a provider per cloud. `local` (this machine: folders, reflink copies,
//! loop devices, agent processes) is the embedded default; `azure` (ARM REST:
//! snapshots, a worker VM, its status blob) is the other.
//!
//! Names come first: the executor asks the provider for the name a resource
//! *will* have, records it in the state store, and only then creates it. So
//! a coordinator killed between the two leaves a name `gc` can delete, and
//! every delete is idempotent (deleting what is not there succeeds).

pub mod azure;
pub mod checks;
#[cfg(test)]
pub mod fake;
pub mod host;
pub mod local;
pub mod source;

use diskferry_core::report::Status;
use std::time::Duration;

use anyhow::Result;
use diskferry_core::job::JobSpec;

pub use source::{SourceKind, SourceRef};

/// A source as the lifecycle needs it: a VM, or a disk, a snapshot or an
/// image read as a VM of those disks ([`Vm::source`] says which).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vm {
    /// Where the provider finds it (a folder, a resource id).
    pub id: String,
    /// Its name; with a disk's name, the source of that disk's recovery
    /// points (`JobDisk::source_id`): it stays the same across an image's
    /// versions, so each version is synced against the one before.
    pub name: String,
    /// What it is.
    pub source: SourceKind,
    /// The image version read, for an image (`1.0.1`); each recovery point
    /// of the run is named by it.
    pub version: Option<String>,
    pub os_type: String,
    /// Its region (`local` on this machine): snapshots and the worker go there.
    pub location: String,
    /// `V1` or `V2` (Azure), carried to an imported OS disk.
    pub hyper_v_generation: Option<String>,
    /// `TrustedLaunch`, `ConfidentialVM...` (Azure), carried where allowed.
    pub security_type: Option<String>,
    /// Its availability zone, if pinned to one (Azure).
    pub zone: Option<String>,
    /// What the OS disk says it supports (Azure `supportedCapabilities`:
    /// `architecture`, `diskControllerTypes`, `acceleratedNetwork`), carried
    /// to an imported OS disk: an Arm64 or NVMe-only size refuses a disk
    /// that does not say so.
    pub os_capabilities: Option<serde_json::Value>,
    /// Its size (Azure `hardwareProfile.vmSize`): a failover's VM gets it
    /// unless told otherwise.
    pub size: Option<String>,
    pub disks: Vec<VmDisk>,
}

impl Vm {
    /// A source of these disks of which nothing else is known (no
    /// generation, security type, zone, capabilities or size).
    pub fn of_disks(id: String, name: String, source: SourceKind, os_type: String, disks: Vec<VmDisk>) -> Self {
        Self {
            id,
            name,
            source,
            version: None,
            os_type,
            location: "local".into(),
            hyper_v_generation: None,
            security_type: None,
            zone: None,
            os_capabilities: None,
            size: None,
            disks,
        }
    }

    /// What an import needs to know of the VM, as recorded per replica.
    pub fn facts(&self) -> serde_json::Value {
        serde_json::json!({
            "name": self.name,
            "source": self.source.as_str(),
            "version": self.version,
            "os_type": self.os_type,
            "location": self.location,
            "hyper_v_generation": self.hyper_v_generation,
            "security_type": self.security_type,
            "zone": self.zone,
            "os_capabilities": self.os_capabilities,
            "size": self.size,
            "disks": self.disks.iter().map(|d| serde_json::json!({"name": d.name, "size": d.size})).collect::<Vec<_>>(),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmDisk {
    /// The disk's name in the VM (`os`, `data0`, ...); names its blob.
    pub name: String,
    /// Where the provider finds it (a path, a resource id).
    pub locator: String,
    pub size: u64,
    /// Its storage type (Azure: `Premium_LRS`, `PremiumV2_LRS`, ...), when
    /// the provider has one.
    pub sku: Option<String>,
    /// Why a VM restore point cannot take it (Azure: shared, write-
    /// accelerated, ephemeral), if it cannot.
    pub no_restore_point: Option<String>,
}

/// Kinds of temporary or retained resources a run creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResourceKind {
    Snapshot,
    TempDisk,
    Worker,
}

impl ResourceKind {
    /// The order a teardown deletes in: workers, then the temporary disks
    /// they held open, then snapshots (a loop device holds its snapshot).
    pub fn teardown_rank(self) -> u8 {
        match self {
            ResourceKind::Worker => 0,
            ResourceKind::TempDisk => 1,
            ResourceKind::Snapshot => 2,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ResourceKind::Snapshot => "snapshot",
            ResourceKind::TempDisk => "temp-disk",
            ResourceKind::Worker => "worker",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "snapshot" => ResourceKind::Snapshot,
            "temp-disk" => ResourceKind::TempDisk,
            "worker" => ResourceKind::Worker,
            _ => return None,
        })
    }
}

/// What a worker is doing.
#[derive(Debug, Clone, PartialEq)]
pub enum WorkerState {
    /// Still running; the latest status document, if one was written yet.
    Running(Option<Status>),
    /// Finished; its last status document (phase `done` or `failed`).
    Finished(Status),
    /// Gone without a final status (crashed, deleted, never started).
    Lost(String),
}

/// A resource the provider found that diskferry created (for `gc`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub kind: ResourceKind,
    pub name: String,
    /// The run that created it, when the provider can tell (tags, names).
    pub run_id: Option<String>,
    /// Until when its run may still be using it (tags); a resource of a run
    /// this coordinator does not know is left alone until then.
    pub expires_at: Option<i64>,
    /// Marked as a replica's newest snapshot (tags): `gc` keeps it even
    /// when the coordinator's database is gone.
    pub retained: bool,
}

impl Found {
    /// Found without tags: nothing says when it expires or that it is kept.
    pub fn untagged(kind: ResourceKind, name: String, run_id: Option<String>) -> Self {
        Self { kind, name, run_id, expires_at: None, retained: false }
    }
}

/// What a replica asks of its disks' snapshots taken together.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Consistency {
    /// Every disk at one instant, as after a power cut (Azure: a VM
    /// restore point, `CrashConsistent`; no agent in the guest).
    #[default]
    Crash,
    /// Every disk at one instant with the guest's applications flushed
    /// (Azure: a VM restore point, `ApplicationConsistent`, through the VM
    /// agent); falls back to `crash` when the guest cannot, and says so.
    Application,
    /// Each disk snapshotted on its own, at its own instant.
    PerDisk,
}

impl Consistency {
    pub fn as_str(self) -> &'static str {
        match self {
            Consistency::Crash => "crash",
            Consistency::Application => "application",
            Consistency::PerDisk => "per-disk",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "crash" => Consistency::Crash,
            "application" => Consistency::Application,
            "per-disk" => Consistency::PerDisk,
            _ => return None,
        })
    }
}

/// How a run takes its snapshots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capture {
    pub consistency: Consistency,
    /// Deallocate the source for them (then every disk is at one instant
    /// whatever `consistency` says).
    pub stop_source: bool,
    /// With `stop_source`, start it again after them (not at a cutover:
    /// the source is then the migrated VM's past).
    pub restart_source: bool,
}

/// What a run's snapshots hold together, as taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taken {
    /// `stopped`, `crash`, `application`, `filesystem` or `per-disk`.
    pub consistency: String,
    /// Why it is not what was asked for, when it is not.
    pub note: Option<String>,
}

impl Taken {
    pub fn as_asked(consistency: &str) -> Self {
        Self { consistency: consistency.to_owned(), note: None }
    }
}

/// What a run tags its resources with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunTags {
    pub run_id: String,
    pub replica: String,
    /// Unix seconds after which `gc` may delete what the run left.
    pub expires_at: i64,
}

/// One disk the worker reads: the snapshot it comes from, the temporary
/// disk made of it (if the provider makes one), and its slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attach {
    pub lun: usize,
    pub snapshot: String,
    pub temp: Option<String>,
}

/// Everything a provider needs to start a worker.
#[derive(Debug, Clone, Copy)]
pub struct WorkerSpec<'a> {
    pub name: &'a str,
    pub vm: &'a Vm,
    /// The job; its disks are `disks`, in the same order.
    pub job: &'a JobSpec,
    pub disks: &'a [Attach],
    pub tags: &'a RunTags,
}

/// Names of workers on this host start with this, whatever the provider.
pub const HERE: &str = "here:";

/// The default name of `run_id`'s worker on this host.
pub fn here_name(run_id: &str) -> String {
    format!("{HERE}{run_id}")
}

/// A cloud the lifecycle runs on.
pub trait Cloud: Send + Sync + std::fmt::Debug {
    /// `local`, `azure`.
    fn provider(&self) -> &'static str;

    /// Read the source VM.
    fn read_vm(&self, vm: &str) -> Result<Vm>;

    /// Read a replica's source: a VM, or a disk, a snapshot or an image
    /// (then `version`, when given, is the image version to read: a label
    /// where the provider has no versions of its own).
    fn read_source(&self, src: &SourceRef, version: Option<&str>) -> Result<Vm> {
        src.check_version(version)?;
        match src.kind {
            SourceKind::Vm => self.read_vm(&src.id),
            kind => anyhow::bail!("the {} provider cannot read a {} source", self.provider(), kind.as_str()),
        }
    }

    /// The names the snapshots of `vm`'s disks taken by the run of `tags`,
    /// as `how` asks, will have (one a disk, in order).
    fn snapshot_names(&self, vm: &Vm, tags: &RunTags, how: Capture) -> Result<Vec<String>>;
    /// The temporary disks [`Cloud::snapshot`] makes before the snapshots
    /// and deletes after them (a snapshot or an image source on Azure):
    /// (disk name, resource name). They are recorded first, so a run that
    /// dies midway leaves names `gc` and its successor delete.
    fn staging_names(&self, _vm: &Vm, _run_id: &str) -> Vec<(String, String)> {
        Vec::new()
    }
    /// Snapshot the disks together; `names[i]` is the snapshot of `vm.disks[i]`.
    /// With `how.stop_source`, the VM is stopped for them and started after.
    /// Returns what they hold together, which may be less than asked.
    fn snapshot(&self, vm: &Vm, names: &[String], tags: &RunTags, how: Capture) -> Result<Taken>;

    /// The name the temporary disk made from `snapshot` for slot `lun` will
    /// have, or `None` when the worker reads the snapshot directly.
    fn temp_disk_name(&self, snapshot: &str, run_id: &str, lun: usize) -> Option<String>;
    /// Create the temporary disk (`lun` = its slot on the worker); returns
    /// the device path the worker will read.
    fn create_temp_disk(&self, name: Option<&str>, snapshot: &str, lun: usize) -> Result<String>;

    /// The name the worker of `run_id` will have.
    fn worker_name(&self, run_id: &str) -> String;
    /// Start the worker with the job (its temporary disks are named in it).
    /// Returns what the worker is and allows (an Azure size: its data
    /// disks and uncached throughput), for the run's record.
    fn start_worker(&self, w: &WorkerSpec<'_>) -> Result<Option<String>>;
    /// Look at the worker.
    fn worker_state(&self, name: &str) -> Result<WorkerState>;
    /// How often the lifecycle looks at a running worker.
    fn poll_interval(&self) -> Duration {
        Duration::from_millis(250)
    }

    /// Delete a resource; deleting one that does not exist succeeds.
    fn delete(&self, kind: ResourceKind, name: &str) -> Result<()>;

    /// Byte ranges `[offset, length]` that differ between two snapshots of
    /// one disk, or `None` when this provider cannot tell without reading
    /// them (then the agent reads everything).
    fn changed_ranges(&self, _previous: &str, _current: &str) -> Result<Option<Vec<[u64; 2]>>> {
        Ok(None)
    }

    /// Everything that can be checked of this provider and of `sources`
    /// without creating anything (`diskferry preflight`).
    fn preflight(&self, _sources: &[checks::Source]) -> Vec<checks::Check> {
        Vec::new()
    }

    /// Whether an agent on this host could read `snapshot` over HTTPS (a
    /// run placed here): `Ok(None)` it could, `Ok(Some(why))` it could not.
    fn why_not_here(&self, _snapshot: &str) -> Result<Option<String>> {
        Ok(Some(format!("the {} provider's snapshots are read by its workers", self.provider())))
    }

    /// The name of `run_id`'s worker on this host (see [`here_name`]).
    fn here_worker_name(&self, run_id: &str) -> String {
        here_name(run_id)
    }

    /// Start `w` as an agent on this host reading each disk's snapshot over
    /// HTTPS (read access is granted here, and revoked when the worker is
    /// deleted); [`Cloud::worker_state`] and [`Cloud::delete`] know it by
    /// its name.
    fn start_here(&self, _w: &WorkerSpec<'_>) -> Result<Option<String>> {
        anyhow::bail!("the {} provider has no workers on this host", self.provider())
    }

    /// Mark a snapshot as its replica's newest, to be kept (the store
    /// records it too; a provider with tags records it on the resource).
    fn retain(&self, _kind: ResourceKind, _name: &str) -> Result<()> {
        Ok(())
    }

    /// Every resource this provider can see that diskferry created.
    fn list_created(&self) -> Result<Vec<Found>>;

    /// Delete what failover `owner` made: a folder holding its marker file
    /// (any provider), or a resource id of this provider's. Deleting what is
    /// not there succeeds.
    fn delete_made(&self, what: &str, owner: &str) -> Result<()> {
        remove_failover_folder(std::path::Path::new(what), owner)
    }
}

/// The file a failover puts in every folder it makes: only such a folder is
/// ever removed by [`Cloud::delete_made`].
pub const FAILOVER_MARKER: &str = ".diskferry-failover";

/// Remove a folder failover `owner` made (its [`FAILOVER_MARKER`] names
/// it); one that is gone is fine, any other is refused.
pub fn remove_failover_folder(dir: &std::path::Path, owner: &str) -> Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    let marker = std::fs::read_to_string(dir.join(FAILOVER_MARKER)).unwrap_or_default();
    if marker.trim() != owner {
        anyhow::bail!("{}: not a folder failover {owner} made ({FAILOVER_MARKER}): left alone", dir.display());
    }
    std::fs::remove_dir_all(dir).map_err(|e| anyhow::anyhow!("cannot remove {}: {e}", dir.display()))
}
