//! The coordinator's state: replicas, runs with their per-disk results,
//! and every temporary resource a run creates, recorded *before* it is
//! created so a crash never leaks something `gc` cannot find. In SQLite
//! (the embedded default: WAL, busy timeout) or PostgreSQL (several
//! coordinators on one database), with the same statements (`db.rs`) and
//! numbered migrations run under a lock by whichever coordinator opens the
//! database first.
//!
//! The SQL stays portable: TEXT ids generated here (no AUTOINCREMENT),
//! BIGINT epoch seconds, no database's own functions.

use crate::cloud::Consistency;
use crate::error::CoordError;
use std::sync::{Mutex, MutexGuard};

use anyhow::{anyhow, bail, Context, Result};

mod db;
mod failovers;
mod leases;
mod run_facts;
mod schema;
pub use db::Location;
use db::{args, Conn, Row};
pub use failovers::Failover;
pub use leases::{Begin, Lease};
use schema::MIGRATIONS;

/// Run states as stored.
pub mod status {
    pub const RUNNING: &str = "running";
    pub const SUCCEEDED: &str = "succeeded";
    pub const FAILED: &str = "failed";
    /// The coordinator died mid-run; `gc` found it and cleaned up.
    pub const INTERRUPTED: &str = "interrupted";
    /// A scheduled trigger skipped because the previous run was still going.
    pub const SKIPPED: &str = "skipped";
}

/// Resource states as stored.
pub mod resource_state {
    /// Recorded; creation may or may not have happened.
    pub const PLANNED: &str = "planned";
    pub const CREATED: &str = "created";
    /// Kept on purpose after its run (the latest snapshot per disk).
    pub const RETAINED: &str = "retained";
    pub const DELETED: &str = "deleted";
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Replica {
    pub name: String,
    /// The source: a VM (a folder with `vm.toml` here, a resource id on
    /// Azure), or `disk:`, `snapshot:` or `image:` and where it is
    /// ([`crate::cloud::SourceRef`]).
    pub vm: String,
    /// Where disks go, one or more: `pageblob:CONTAINER-URL` or `file:FOLDER`
    /// (stored as a JSON array).
    pub destinations: Vec<String>,
    pub schedule: Option<String>,
    pub keep_points: u32,
    pub chunk_size: u64,
    pub created_at: i64,
    /// Stop (deallocate) the source VM for its snapshots, start it after.
    pub stop_source: bool,
    /// What its snapshots should hold together.
    pub consistency: Consistency,
    /// When it was failed over (its VM now runs from a recovery point): it
    /// syncs no more.
    pub failed_over_at: Option<i64>,
    /// This run only (a cutover's final run): with `stop_source`, the
    /// source stays deallocated after its snapshots. Never stored.
    #[serde(skip)]
    pub leave_source_stopped: bool,
    /// This run only: the image version to read (an image source). Never
    /// stored.
    #[serde(skip)]
    pub version: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Run {
    pub id: String,
    pub replica: String,
    pub trigger: String,
    pub status: String,
    pub phase: String,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    /// Wall time of a finished run, measured by its coordinator.
    pub duration_ms: Option<i64>,
    pub owner_pid: Option<i64>,
    pub owner_start: Option<i64>,
    /// Summed over its disks (each disk's source is read once).
    pub bytes_read: u64,
    /// Summed over disks and destinations, like the four below.
    pub bytes_sent: u64,
    pub bytes_zero: u64,
    pub bytes_unchanged: u64,
    pub bytes_written: u64,
    pub bytes_cleared: u64,
    pub error: Option<String>,
    /// The worker's size and what it allows, when the provider says.
    pub worker: Option<String>,
    /// `vm` or `here`, once the run was placed.
    pub placement: Option<String>,
    /// `stopped` or `per-disk`, once its snapshots were taken.
    pub consistency: Option<String>,
    /// Why `consistency` is not what the replica asked for, if it is not.
    pub consistency_note: Option<String>,
    /// Who ran it: `HOST:PID` of its coordinator.
    pub daemon: Option<String>,
    /// The boot of the host it ran on (`/proc/sys/kernel/random/boot_id`):
    /// there, its process is checked directly.
    pub boot: Option<String>,
    /// Its fencing number (its lease on the replica), once begun.
    pub fence: Option<i64>,
    /// The scheduled fire time it is for (epoch seconds), if scheduled.
    pub slot: Option<i64>,
    /// The image version it read (an image source), once read.
    pub version: Option<String>,
    /// How it went, when there is more to say than its status (a run that
    /// had nothing to sync).
    pub note: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RunDisk {
    pub run_id: String,
    pub disk: String,
    /// Which of the replica's destinations (0-based, in their order).
    pub destination: u32,
    pub generation: u64,
    pub full_sync: bool,
    /// Why the agent could not sync incrementally.
    pub full_sync_reason: Option<String>,
    /// Read from the source (the same for every destination of the disk).
    pub bytes_read: u64,
    /// Over the wire (or written, for a file destination).
    pub bytes_sent: u64,
    /// What the sync did with the disk: the four add up to its size.
    pub bytes_zero: u64,
    pub bytes_unchanged: u64,
    pub bytes_written: u64,
    pub bytes_cleared: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Resource {
    pub name: String,
    pub run_id: String,
    pub replica: String,
    pub kind: String,
    pub disk: Option<String>,
    pub state: String,
    pub created_at: i64,
    pub expires_at: i64,
}

/// One connection to the state database.
#[derive(Debug)]
pub struct Store {
    conn: Mutex<Conn>,
    at: Location,
}

impl Store {
    /// Open (creating and migrating) the SQLite database at `path`.
    pub fn open(path: &std::path::Path) -> Result<Self> {
        Self::connect(&Location::Sqlite(path.to_owned()))
    }

    /// Open (creating and migrating) the state database at `at`.
    pub fn connect(at: &Location) -> Result<Self> {
        let conn = Conn::open(at).with_context(|| format!("cannot open state database {at}"))?;
        let s = Self { conn: Mutex::new(conn), at: at.clone() };
        s.migrate().with_context(|| format!("cannot migrate state database {at}"))?;
        Ok(s)
    }

    /// Where it is (without credentials, when shown).
    pub fn location(&self) -> &Location {
        &self.at
    }

    /// The connection (a thread that panicked holding it left no
    /// transaction open: each runs inside one call).
    fn c(&self) -> MutexGuard<'_, Conn> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn migrate(&self) -> Result<()> {
        self.c().transaction(|tx| {
            // PostgreSQL: the first coordinator migrates, the others wait
            // here and find the work done.
            tx.lock("diskferry-migrations")?;
            tx.batch("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")?;
            let have: i64 = tx.query_one("SELECT COALESCE(MAX(version), 0) FROM schema_version", &[])?.get(0)?;
            if have as usize > MIGRATIONS.len() {
                bail!("the database has schema version {have}, newer than this diskferry ({})", MIGRATIONS.len());
            }
            for (i, m) in MIGRATIONS.iter().enumerate().skip(have as usize) {
                tx.batch(m).with_context(|| format!("migration {}", i + 1))?;
                tx.execute("INSERT INTO schema_version (version) VALUES (?1)", args![i as i64 + 1])?;
            }
            Ok(())
        })
    }

    pub fn schema_version(&self) -> Result<i64> {
        self.c().query_one("SELECT MAX(version) FROM schema_version", &[])?.get(0)
    }

    // ---- replicas ----

    pub fn insert_replica(&self, r: &Replica) -> Result<()> {
        let n = self.c().execute(
            "INSERT INTO replicas (name, vm, destinations, schedule, keep_points, chunk_size, created_at, stop_source,
             consistency) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT (name) DO NOTHING",
            args![
                &r.name,
                &r.vm,
                serde_json::to_string(&r.destinations)?,
                &r.schedule,
                r.keep_points,
                r.chunk_size,
                r.created_at,
                r.stop_source,
                r.consistency.as_str()
            ],
        )?;
        if n == 0 {
            return Err(CoordError::ReplicaExists(r.name.clone()).into());
        }
        Ok(())
    }

    pub fn replica(&self, name: &str) -> Result<Replica> {
        self.c()
            .query_opt(&format!("{REPLICA_SELECT} WHERE name = ?1"), args![name])?
            .map(|r| replica_row(&r))
            .transpose()?
            .ok_or_else(|| CoordError::UnknownReplica(name.to_owned()).into())
    }

    pub fn replicas(&self) -> Result<Vec<Replica>> {
        rows(self.c().query(&format!("{REPLICA_SELECT} ORDER BY name"), &[])?, replica_row)
    }

    /// Delete a replica and its history. Its resources must be gone first.
    pub fn delete_replica(&mut self, name: &str) -> Result<()> {
        self.c().transaction(|tx| {
            tx.execute("DELETE FROM run_disks WHERE run_id IN (SELECT id FROM runs WHERE replica = ?1)", args![name])?;
            tx.execute("DELETE FROM runs WHERE replica = ?1", args![name])?;
            tx.execute("DELETE FROM resources WHERE replica = ?1", args![name])?;
            tx.execute("DELETE FROM replicas WHERE name = ?1", args![name])?;
            Ok(())
        })
    }

    // ---- runs ----

    /// Record a run row as is (used for skipped triggers); false if its
    /// scheduled slot was recorded already (by another daemon).
    pub fn insert_run(&self, run: &Run) -> Result<bool> {
        insert_run(&mut self.c(), run)
    }

    pub fn set_phase(&self, run_id: &str, phase: &str) -> Result<()> {
        self.c().execute("UPDATE runs SET phase = ?2 WHERE id = ?1", args![run_id, phase])?;
        Ok(())
    }

    pub fn finish_run(
        &self,
        run_id: &str,
        status: &str,
        finished_at: i64,
        duration_ms: Option<i64>,
        error: Option<&str>,
    ) -> Result<()> {
        self.c().transaction(|tx| {
            tx.execute(
                "UPDATE runs SET status = ?2, finished_at = ?3, duration_ms = ?4, error = ?5, phase = 'done' WHERE id = ?1",
                args![run_id, status, finished_at, duration_ms, error],
            )?;
            // Its lease goes back at once: the next run need not wait for it
            // to expire.
            tx.execute("UPDATE leases SET holder = NULL, run_id = NULL, expires_at = 0 WHERE run_id = ?1", args![run_id])?;
            Ok(())
        })
    }

    /// Record one disk's result at one destination. The source was read once
    /// per disk, so only destination 0 adds to the run's bytes read.
    pub fn record_disk(&self, d: &RunDisk) -> Result<()> {
        self.c().transaction(|tx| {
            tx.execute(
                "INSERT INTO run_disks (run_id, disk, destination, generation, full_sync, full_sync_reason, bytes_read,
                 bytes_sent, bytes_zero, bytes_unchanged, bytes_written, bytes_cleared)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                args![
                    &d.run_id,
                    &d.disk,
                    d.destination,
                    d.generation,
                    d.full_sync,
                    &d.full_sync_reason,
                    d.bytes_read,
                    d.bytes_sent,
                    d.bytes_zero,
                    d.bytes_unchanged,
                    d.bytes_written,
                    d.bytes_cleared
                ],
            )?;
            tx.execute(
                "UPDATE runs SET bytes_read = bytes_read + ?2, bytes_sent = bytes_sent + ?3,
                 bytes_zero = bytes_zero + ?4, bytes_unchanged = bytes_unchanged + ?5,
                 bytes_written = bytes_written + ?6, bytes_cleared = bytes_cleared + ?7 WHERE id = ?1",
                args![
                    &d.run_id,
                    if d.destination == 0 { d.bytes_read } else { 0 },
                    d.bytes_sent,
                    d.bytes_zero,
                    d.bytes_unchanged,
                    d.bytes_written,
                    d.bytes_cleared
                ],
            )?;
            Ok(())
        })
    }

    pub fn run(&self, id: &str) -> Result<Run> {
        self.c()
            .query_opt(&format!("{RUN_SELECT} WHERE id = ?1"), args![id])?
            .map(|r| run_row(&r))
            .transpose()?
            .ok_or_else(|| anyhow!("no run {id:?}"))
    }

    /// Runs of a replica, newest first.
    pub fn runs(&self, replica: &str, limit: u32) -> Result<Vec<Run>> {
        let found = self.c().query(
            &format!("{RUN_SELECT} WHERE replica = ?1 ORDER BY started_at DESC, id DESC LIMIT ?2"),
            args![replica, limit],
        )?;
        rows(found, run_row)
    }

    pub fn runs_with_status(&self, status: &str) -> Result<Vec<Run>> {
        rows(self.c().query(&format!("{RUN_SELECT} WHERE status = ?1 ORDER BY started_at"), args![status])?, run_row)
    }

    pub fn run_disks(&self, run_id: &str) -> Result<Vec<RunDisk>> {
        let found =
            self.c().query(&format!("{DISK_SELECT} WHERE run_id = ?1 ORDER BY disk, destination"), args![run_id])?;
        rows(found, run_disk_row)
    }

    /// The disks of `replica` at destination `dest` (0-based) as of the
    /// newest run that reached it, in one query.
    pub fn newest_disks_at(&self, replica: &str, dest: u32) -> Result<Vec<RunDisk>> {
        let found = self.c().query(
            &format!(
                "{DISK_SELECT} WHERE destination = ?2 AND run_id = (
                SELECT d.run_id FROM run_disks d JOIN runs r ON r.id = d.run_id
                WHERE r.replica = ?1 AND d.destination = ?2 ORDER BY r.started_at DESC, r.id DESC LIMIT 1)
             ORDER BY disk"
            ),
            args![replica, dest],
        )?;
        rows(found, run_disk_row)
    }

    /// Counts of finished runs by replica and status (for metrics).
    pub fn run_counts(&self) -> Result<Vec<(String, String, u64)>> {
        let found = self.c().query(
            "SELECT replica, status, COUNT(*) FROM runs WHERE status <> 'running' GROUP BY replica, status",
            &[],
        )?;
        rows(found, |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
    }

    /// Per replica, the runs that failed or were interrupted since its last
    /// successful one (skipped triggers do not count).
    pub fn failed_runs_in_a_row(&self) -> Result<Vec<(String, u64)>> {
        let found = self.c().query(
            "SELECT r.replica, COUNT(*) FROM runs r WHERE r.status IN ('failed', 'interrupted') AND r.started_at > \
             COALESCE((SELECT MAX(s.started_at) FROM runs s WHERE s.replica = r.replica AND s.status = 'succeeded'), \
             -1) GROUP BY r.replica",
            &[],
        )?;
        rows(found, |r| Ok((r.get(0)?, r.get(1)?)))
    }

    /// When the newest successful run of each replica finished.
    pub fn newest_points(&self) -> Result<Vec<(String, i64)>> {
        let found = self
            .c()
            .query("SELECT replica, MAX(finished_at) FROM runs WHERE status = 'succeeded' GROUP BY replica", &[])?;
        rows(found, |r| Ok((r.get(0)?, r.get(1)?)))
    }

    // ---- resources ----

    /// Record a resource about to be created.
    pub fn plan_resource(&self, r: &Resource) -> Result<()> {
        self.c().execute(
            "INSERT INTO resources (name, run_id, replica, kind, disk, state, created_at, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            args![
                &r.name,
                &r.run_id,
                &r.replica,
                &r.kind,
                &r.disk,
                resource_state::PLANNED,
                r.created_at,
                r.expires_at
            ],
        )?;
        Ok(())
    }

    pub fn set_resource_state(&self, name: &str, state: &str, now: i64) -> Result<()> {
        let deleted_at = (state == resource_state::DELETED).then_some(now);
        self.c().execute(
            "UPDATE resources SET state = ?2, deleted_at = ?3 WHERE name = ?1",
            args![name, state, deleted_at],
        )?;
        Ok(())
    }

    /// Resources not yet deleted, oldest first.
    pub fn live_resources(&self) -> Result<Vec<Resource>> {
        rows(
            self.c().query(&format!("{RES_SELECT} WHERE state <> 'deleted' ORDER BY created_at, name"), &[])?,
            resource_row,
        )
    }

    pub fn resources_of_run(&self, run_id: &str) -> Result<Vec<Resource>> {
        let found =
            self.c().query(&format!("{RES_SELECT} WHERE run_id = ?1 ORDER BY created_at, name"), args![run_id])?;
        rows(found, resource_row)
    }

    /// Retained resources of one replica and kind (the kept snapshots).
    pub fn retained(&self, replica: &str, kind: &str) -> Result<Vec<Resource>> {
        let found = self.c().query(
            &format!("{RES_SELECT} WHERE replica = ?1 AND kind = ?2 AND state = 'retained' ORDER BY created_at, name"),
            args![replica, kind],
        )?;
        rows(found, resource_row)
    }

    /// Record what the replica's source VM looks like now.
    pub fn set_vm_facts(&self, replica: &str, facts: &serde_json::Value, now: i64) -> Result<()> {
        self.c().execute(
            "INSERT INTO vm_facts (replica, facts, updated_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (replica) DO UPDATE SET facts = excluded.facts, updated_at = excluded.updated_at",
            args![replica, facts.to_string(), now],
        )?;
        Ok(())
    }

    /// What the replica's source VM looked like at its latest run.
    pub fn vm_facts(&self, replica: &str) -> Result<Option<serde_json::Value>> {
        let text: Option<String> =
            match self.c().query_opt("SELECT facts FROM vm_facts WHERE replica = ?1", args![replica])? {
                Some(r) => Some(r.get(0)?),
                None => None,
            };
        Ok(text.and_then(|t| serde_json::from_str(&t).ok()))
    }

    pub fn resource(&self, name: &str) -> Result<Option<Resource>> {
        self.c().query_opt(&format!("{RES_SELECT} WHERE name = ?1"), args![name])?.map(|r| resource_row(&r)).transpose()
    }
}

/// Read every row with `f`.
fn rows<T>(found: Vec<Row>, f: impl Fn(&Row) -> Result<T>) -> Result<Vec<T>> {
    found.iter().map(f).collect()
}

const REPLICA_SELECT: &str = "SELECT name, vm, destinations, schedule, keep_points, chunk_size, created_at, \
stop_source, consistency, failed_over_at FROM replicas";
const RUN_SELECT: &str = "SELECT id, replica, trigger_kind, status, phase, started_at, finished_at, duration_ms, \
owner_pid, owner_start, bytes_read, bytes_sent, bytes_zero, bytes_unchanged, bytes_written, bytes_cleared, error, \
worker, placement, consistency, consistency_note, daemon, boot, fence, slot, version, note FROM runs";
const DISK_SELECT: &str = "SELECT run_id, disk, destination, generation, full_sync, full_sync_reason, bytes_read, \
bytes_sent, bytes_zero, bytes_unchanged, bytes_written, bytes_cleared FROM run_disks";
const RES_SELECT: &str = "SELECT name, run_id, replica, kind, disk, state, created_at, expires_at FROM resources";

/// Record `run`; a second run or skip for the same scheduled slot is not
/// recorded (false).
fn insert_run(conn: &mut Conn, run: &Run) -> Result<bool> {
    let n = conn.execute(
        "INSERT INTO runs (id, replica, trigger_kind, status, phase, started_at, finished_at, duration_ms, owner_pid,
         owner_start, error, daemon, boot, fence, slot) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12,
         ?13, ?14, ?15) ON CONFLICT DO NOTHING",
        args![
            &run.id,
            &run.replica,
            &run.trigger,
            &run.status,
            &run.phase,
            run.started_at,
            run.finished_at,
            run.duration_ms,
            run.owner_pid,
            run.owner_start,
            &run.error,
            &run.daemon,
            &run.boot,
            run.fence,
            run.slot
        ],
    )?;
    Ok(n == 1)
}

fn replica_row(r: &Row) -> Result<Replica> {
    let destinations: String = r.get(2)?;
    let consistency: String = r.get(8)?;
    Ok(Replica {
        name: r.get(0)?,
        vm: r.get(1)?,
        destinations: serde_json::from_str(&destinations).context("replicas.destinations")?,
        schedule: r.get(3)?,
        keep_points: r.get(4)?,
        chunk_size: r.get(5)?,
        created_at: r.get(6)?,
        stop_source: r.get(7)?,
        consistency: Consistency::parse(&consistency)
            .ok_or_else(|| anyhow!("replicas.consistency: {consistency:?} is none of crash, application, per-disk"))?,
        failed_over_at: r.get(9)?,
        leave_source_stopped: false,
        version: None,
    })
}

fn run_row(r: &Row) -> Result<Run> {
    Ok(Run {
        id: r.get(0)?,
        replica: r.get(1)?,
        trigger: r.get(2)?,
        status: r.get(3)?,
        phase: r.get(4)?,
        started_at: r.get(5)?,
        finished_at: r.get(6)?,
        duration_ms: r.get(7)?,
        owner_pid: r.get(8)?,
        owner_start: r.get(9)?,
        bytes_read: r.get(10)?,
        bytes_sent: r.get(11)?,
        bytes_zero: r.get(12)?,
        bytes_unchanged: r.get(13)?,
        bytes_written: r.get(14)?,
        bytes_cleared: r.get(15)?,
        error: r.get(16)?,
        worker: r.get(17)?,
        placement: r.get(18)?,
        consistency: r.get(19)?,
        consistency_note: r.get(20)?,
        daemon: r.get(21)?,
        boot: r.get(22)?,
        fence: r.get(23)?,
        slot: r.get(24)?,
        version: r.get(25)?,
        note: r.get(26)?,
    })
}

fn run_disk_row(r: &Row) -> Result<RunDisk> {
    Ok(RunDisk {
        run_id: r.get(0)?,
        disk: r.get(1)?,
        destination: r.get(2)?,
        generation: r.get(3)?,
        full_sync: r.get(4)?,
        full_sync_reason: r.get(5)?,
        bytes_read: r.get(6)?,
        bytes_sent: r.get(7)?,
        bytes_zero: r.get(8)?,
        bytes_unchanged: r.get(9)?,
        bytes_written: r.get(10)?,
        bytes_cleared: r.get(11)?,
    })
}

fn resource_row(r: &Row) -> Result<Resource> {
    Ok(Resource {
        name: r.get(0)?,
        run_id: r.get(1)?,
        replica: r.get(2)?,
        kind: r.get(3)?,
        disk: r.get(4)?,
        state: r.get(5)?,
        created_at: r.get(6)?,
        expires_at: r.get(7)?,
    })
}

#[cfg(test)]
mod tests;
