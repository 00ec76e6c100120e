//! One run per replica, across every coordinator on the database: a run
//! begins under the replica's lease (a row with an expiry and a fencing
//! number that only grows), renews it while it goes, and gives it back
//! when it finishes. A run whose coordinator died is found by its lease
//! lapsing (or, on the same host, by its process being gone), recorded as
//! interrupted, and its resources torn down by the run that takes over.
//! The fencing number travels in the run's job to its destinations, which
//! refuse a lower one than they have seen (DESIGN.md, "Coordinator state").

use anyhow::Result;

use super::db::{args, Row};
use super::{insert_run, rows, status, Run, Store, RUN_SELECT};

/// A replica's lease as stored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Lease {
    pub replica: String,
    /// The fencing number of the newest run that took it.
    pub fence: i64,
    /// `HOST:PID` of the coordinator holding it (none when given back).
    pub holder: Option<String>,
    pub run_id: Option<String>,
    /// Epoch seconds; a lease not renewed by then is lost.
    pub expires_at: i64,
}

/// How [`Store::begin_run`] went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Begin {
    /// Recorded, under the lease: its fencing number, and the runs found
    /// dead and recorded as interrupted (their resources are the new run's
    /// to tear down).
    Started { fence: i64, took_over: Vec<Run> },
    /// Another run of the replica is alive.
    Busy(Box<Run>),
    /// Its scheduled slot was taken already (another daemon ran or
    /// skipped it).
    SlotTaken,
}

const SELECT: &str = "SELECT replica, fence, holder, run_id, expires_at FROM leases";

fn lease_row(r: &Row) -> Result<Lease> {
    Ok(Lease { replica: r.get(0)?, fence: r.get(1)?, holder: r.get(2)?, run_id: r.get(3)?, expires_at: r.get(4)? })
}

impl Store {
    /// Begin `run` under its replica's lease, held until `expires_at`
    /// unless renewed. `alive` says whether a running run (with the
    /// replica's lease) still has a live coordinator. Atomic across
    /// coordinators: on PostgreSQL under the replica's advisory lock, on
    /// SQLite under the write lock.
    pub fn begin_run(&self, run: &Run, expires_at: i64, alive: impl Fn(&Run, Option<&Lease>) -> bool) -> Result<Begin> {
        self.c().transaction(|tx| {
            tx.lock(&format!("replica:{}", run.replica))?;
            if let Some(slot) = run.slot {
                let taken =
                    tx.query_opt("SELECT id FROM runs WHERE replica = ?1 AND slot = ?2", args![&run.replica, slot])?;
                if taken.is_some() {
                    return Ok(Begin::SlotTaken);
                }
            }
            let lease = tx.query_opt(&format!("{SELECT} WHERE replica = ?1"), args![&run.replica])?;
            let lease = lease.map(|r| lease_row(&r)).transpose()?;
            let running = rows(
                tx.query(
                    &format!("{RUN_SELECT} WHERE replica = ?1 AND status = ?2"),
                    args![&run.replica, status::RUNNING],
                )?,
                super::run_row,
            )?;
            let (live, dead): (Vec<Run>, Vec<Run>) = running.into_iter().partition(|r| alive(r, lease.as_ref()));
            if let Some(a) = live.into_iter().next() {
                return Ok(Begin::Busy(Box::new(a)));
            }
            let mut took_over = Vec::new();
            for d in dead {
                let why = format!(
                    "its coordinator ({}) died or lost the replica's lease during phase {}; run {} took over",
                    d.daemon.as_deref().unwrap_or("unknown"),
                    d.phase,
                    run.id
                );
                tx.execute(
                    "UPDATE runs SET status = ?2, finished_at = ?3, error = ?4, phase = 'done' WHERE id = ?1",
                    args![&d.id, status::INTERRUPTED, run.started_at, why.as_str()],
                )?;
                took_over.push(Run { status: status::INTERRUPTED.into(), error: Some(why), ..d });
            }
            let fence = lease.as_ref().map_or(0, |l| l.fence) + 1;
            tx.execute(
                "INSERT INTO leases (replica, fence, holder, run_id, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (replica) DO UPDATE SET fence = excluded.fence, holder = excluded.holder,
                 run_id = excluded.run_id, expires_at = excluded.expires_at",
                args![&run.replica, fence, &run.daemon, &run.id, expires_at],
            )?;
            if !insert_run(tx, &Run { fence: Some(fence), ..run.clone() })? {
                anyhow::bail!("run {} could not be recorded (its id or slot exists)", run.id);
            }
            Ok(Begin::Started { fence, took_over })
        })
    }

    /// The replica's lease, if it was ever taken.
    pub fn lease(&self, replica: &str) -> Result<Option<Lease>> {
        self.c().query_opt(&format!("{SELECT} WHERE replica = ?1"), args![replica])?.map(|r| lease_row(&r)).transpose()
    }

    /// Keep run `run_id`'s lease (fencing number `fence`) until
    /// `expires_at`; false if it is no longer that run's.
    pub fn renew_lease(&self, replica: &str, run_id: &str, fence: i64, expires_at: i64) -> Result<bool> {
        let n = self.c().execute(
            "UPDATE leases SET expires_at = ?4 WHERE replica = ?1 AND run_id = ?2 AND fence = ?3",
            args![replica, run_id, fence, expires_at],
        )?;
        Ok(n == 1)
    }

    /// Leases current at `now`, by holder.
    pub fn leases_held(&self, now: i64) -> Result<Vec<Lease>> {
        let found = self
            .c()
            .query(&format!("{SELECT} WHERE holder IS NOT NULL AND expires_at > ?1 ORDER BY replica"), args![now])?;
        rows(found, lease_row)
    }

    /// Runs by the daemon that ran them and their status (for metrics).
    pub fn runs_by_daemon(&self) -> Result<Vec<(String, String, u64)>> {
        let found = self
            .c()
            .query("SELECT daemon, status, COUNT(*) FROM runs WHERE daemon IS NOT NULL GROUP BY daemon, status", &[])?;
        rows(found, |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
    }
}
