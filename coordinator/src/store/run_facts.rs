//! What a run records of itself once known, beside its status: what its
//! snapshots hold together, where it ran, its worker, the image version it
//! read, a note; and those facts read back per replica (metrics) and per
//! recovery point (`points`, `publish`).

use anyhow::Result;

use super::db::args;
use super::{rows, status, Store};

/// A fact a run records once known, exported per replica for its newest run.
#[derive(Debug, Clone, Copy)]
enum RunFact {
    Placement,
    Consistency,
    Version,
}

impl RunFact {
    /// Its column in `runs` (a name from this list, never from input).
    fn column(self) -> &'static str {
        match self {
            RunFact::Placement => "placement",
            RunFact::Consistency => "consistency",
            RunFact::Version => "version",
        }
    }
}

impl Store {
    /// Record what the run's snapshots hold together (`stopped`, `crash`,
    /// `application`, `filesystem`, `per-disk`), and why that is not what
    /// its replica asked for, if it is not.
    pub fn set_consistency(&self, run_id: &str, consistency: &str, note: Option<&str>) -> Result<()> {
        self.c().execute(
            "UPDATE runs SET consistency = ?2, consistency_note = ?3 WHERE id = ?1",
            args![run_id, consistency, note],
        )?;
        Ok(())
    }

    /// Each replica's newest run that recorded a consistency: (replica, consistency).
    pub fn last_consistencies(&self) -> Result<Vec<(String, String)>> {
        self.newest_per_replica(RunFact::Consistency)
    }

    /// Each replica's newest run that recorded `fact`: (replica, its value).
    fn newest_per_replica(&self, fact: RunFact) -> Result<Vec<(String, String)>> {
        let c = fact.column();
        let found = self.c().query(
            &format!(
                "SELECT r.replica, r.{c} FROM runs r WHERE r.{c} IS NOT NULL AND r.started_at = \
                 (SELECT MAX(started_at) FROM runs x WHERE x.replica = r.replica AND x.{c} IS NOT NULL)"
            ),
            &[],
        )?;
        rows(found, |r| Ok((r.get(0)?, r.get(1)?)))
    }

    /// The consistency of the run that made generation `generation` of
    /// `disk` at destination `dest` (0-based), if a run recorded one.
    pub fn point_consistency(&self, replica: &str, disk: &str, dest: u32, generation: u64) -> Result<Option<String>> {
        self.point_fact(RunFact::Consistency, replica, disk, dest, generation)
    }

    /// The image version the run that made generation `generation` of
    /// `disk` at destination `dest` (0-based) read, if it read one.
    pub fn point_version(&self, replica: &str, disk: &str, dest: u32, generation: u64) -> Result<Option<String>> {
        self.point_fact(RunFact::Version, replica, disk, dest, generation)
    }

    /// The generation of `disk` at destination `dest` (0-based) that a
    /// successful run made of image version `version`, the newest if
    /// several did.
    pub fn version_generation(&self, replica: &str, disk: &str, dest: u32, version: &str) -> Result<Option<u64>> {
        match self.c().query_opt(
            "SELECT d.generation FROM run_disks d JOIN runs r ON r.id = d.run_id
             WHERE r.replica = ?1 AND d.disk = ?2 AND d.destination = ?3 AND r.version = ?4 AND r.status = ?5
             ORDER BY d.generation DESC LIMIT 1",
            args![replica, disk, dest, version, status::SUCCEEDED],
        )? {
            Some(r) => r.get(0),
            None => Ok(None),
        }
    }

    fn point_fact(
        &self,
        fact: RunFact,
        replica: &str,
        disk: &str,
        dest: u32,
        generation: u64,
    ) -> Result<Option<String>> {
        let c = fact.column();
        match self.c().query_opt(
            &format!(
                "SELECT r.{c} FROM run_disks d JOIN runs r ON r.id = d.run_id
                 WHERE r.replica = ?1 AND d.disk = ?2 AND d.destination = ?3 AND d.generation = ?4
                 ORDER BY r.started_at DESC LIMIT 1"
            ),
            args![replica, disk, dest, generation],
        )? {
            Some(r) => r.get(0),
            None => Ok(None),
        }
    }

    /// Record a note on how the run went.
    pub fn set_note(&self, run_id: &str, note: &str) -> Result<()> {
        self.c().execute("UPDATE runs SET note = ?2 WHERE id = ?1", args![run_id, note])?;
        Ok(())
    }

    /// Record the image version the run reads.
    pub fn set_version(&self, run_id: &str, version: &str) -> Result<()> {
        self.c().execute("UPDATE runs SET version = ?2 WHERE id = ?1", args![run_id, version])?;
        Ok(())
    }

    /// Record where the run's agent runs (`vm`, `here`).
    pub fn set_placement(&self, run_id: &str, placement: &str) -> Result<()> {
        self.c().execute("UPDATE runs SET placement = ?2 WHERE id = ?1", args![run_id, placement])?;
        Ok(())
    }

    /// Each replica's newest placed run: (replica, placement).
    pub fn last_placements(&self) -> Result<Vec<(String, String)>> {
        self.newest_per_replica(RunFact::Placement)
    }

    /// Record what the run's worker is and allows.
    pub fn set_worker(&self, run_id: &str, worker: &str) -> Result<()> {
        self.c().execute("UPDATE runs SET worker = ?2 WHERE id = ?1", args![run_id, worker])?;
        Ok(())
    }
}
