//! How a run begins and keeps its claim: its id, its row recorded under
//! the replica's lease (one live run per replica, one run or skip per
//! scheduled slot), the lease renewed while it goes, and the signal that
//! cancels it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::clock::now;
use crate::owner;
use crate::store::{status, Begin, Run, Store};

/// Set by SIGINT/SIGTERM once [`cancel_on_signals`] is called: the run in
/// progress stops where it is and tears down what it made.
fn cancel_flag() -> &'static Arc<AtomicBool> {
    static FLAG: OnceLock<Arc<AtomicBool>> = OnceLock::new();
    FLAG.get_or_init(|| Arc::new(AtomicBool::new(false)))
}

/// Make SIGINT and SIGTERM cancel this process's run (with its teardown)
/// instead of killing the process and leaving resources for `gc`.
pub fn cancel_on_signals() -> Result<()> {
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, cancel_flag().clone())?;
    }
    Ok(())
}

pub(super) fn cancelled() -> bool {
    cancel_flag().load(Ordering::Relaxed)
}

/// A fresh run id: the time to the millisecond (so ids sort by start) plus
/// some entropy (pid, nanoseconds) so two coordinators never collide.
/// Within one process the millisecond only grows: two runs begun in the
/// same millisecond still sort in the order they began.
pub fn new_run_id() -> String {
    static LAST_MS: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);
    let ms = chrono::Utc::now().timestamp_millis();
    let ms = match LAST_MS.fetch_max(ms, Ordering::AcqRel) {
        last if last >= ms => LAST_MS.fetch_add(1, Ordering::AcqRel) + 1,
        _ => ms,
    };
    let now = chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default();
    let salt = (now.timestamp_subsec_nanos() ^ std::process::id().rotate_left(7)) & 0xffff;
    format!("{}-{salt:04x}", now.format("%Y%m%d-%H%M%S%.3f"))
}

/// A run of `replica` starting now, owned by this process.
pub fn new_run(replica: &str, trigger: &str) -> Run {
    let (pid, start) = owner::me();
    Run {
        id: new_run_id(),
        replica: replica.to_owned(),
        trigger: trigger.to_owned(),
        status: status::RUNNING.into(),
        phase: "queued".into(),
        started_at: now(),
        finished_at: None,
        duration_ms: None,
        owner_pid: Some(pid),
        owner_start: Some(start),
        bytes_read: 0,
        bytes_sent: 0,
        bytes_zero: 0,
        bytes_unchanged: 0,
        bytes_written: 0,
        bytes_cleared: 0,
        error: None,
        worker: None,
        placement: None,
        consistency: None,
        consistency_note: None,
        daemon: Some(owner::identity()),
        boot: owner::boot_id(),
        fence: None,
        slot: None,
        version: None,
        note: None,
    }
}

/// How [`begin`] went.
#[derive(Debug)]
pub enum Begun {
    /// Recorded, under the replica's lease (`run.fence`).
    Run(Box<Run>),
    /// Another run of the replica is alive.
    Busy(Box<Run>),
    /// The scheduled slot was taken by another daemon.
    SlotTaken,
}

/// Record a new run of `replica` under its lease (held `lease_secs` past
/// each renewal), unless another is alive; for a scheduled fire time,
/// `slot`, unless another daemon took that slot. A run found dead is
/// recorded as interrupted; the new run tears down what it left.
pub fn begin(store: &Store, replica: &str, trigger: &str, slot: Option<i64>, lease_secs: u64) -> Result<Begun> {
    if store.replica(replica)?.failed_over_at.is_some() {
        return Err(crate::error::CoordError::FailedOver(replica.to_owned()).into());
    }
    let run = Run { slot, ..new_run(replica, trigger) };
    let t = now();
    Ok(match store.begin_run(&run, t + lease_secs as i64, |r, l| owner::alive(r, l, t))? {
        Begin::Started { fence, took_over } => {
            for d in &took_over {
                eprintln!("replica {replica}: run {} was interrupted: {}", d.id, d.error.as_deref().unwrap_or(""));
            }
            Begun::Run(Box::new(Run { fence: Some(fence), ..run }))
        }
        Begin::Busy(active) => Begun::Busy(active),
        Begin::SlotTaken => Begun::SlotTaken,
    })
}

/// Keep `run`'s lease until `stop`; set `lost` if it is lost (another
/// coordinator took the replica over, or the database was unreachable
/// for longer than the lease).
pub(super) fn keep_lease(store: &Store, run: &Run, fence: i64, lease_secs: u64, stop: &AtomicBool, lost: &AtomicBool) {
    let every = Duration::from_millis(lease_secs * 1000 / 4);
    let mut held_until = now() + lease_secs as i64;
    loop {
        let t0 = Instant::now();
        while t0.elapsed() < every {
            if stop.load(Ordering::Acquire) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let until = now() + lease_secs as i64;
        match store.renew_lease(&run.replica, &run.id, fence, until) {
            Ok(true) => held_until = until,
            Ok(false) => {
                eprintln!("replica {}: run {} lost its lease to another coordinator", run.replica, run.id);
                lost.store(true, Ordering::Release);
                return;
            }
            Err(e) if now() >= held_until => {
                eprintln!("replica {}: run {} lost its lease (cannot renew: {e:#})", run.replica, run.id);
                lost.store(true, Ordering::Release);
                return;
            }
            Err(_) => {}
        }
    }
}
