//! Which coordinator owns a run, and is it still alive? On the run's own
//! host (the same boot), its process answers: a pid alone can be reused,
//! so the owner is the pid plus its start time (field 22 of
//! `/proc/PID/stat`, in clock ticks since boot). Elsewhere, its lease
//! answers: a run's coordinator renews the replica's lease while the run
//! goes, and a lease not renewed in time means the coordinator is gone.

use anyhow::Result;

use crate::clock::now;
use crate::store::{Lease, Run, Store};

/// This process: (pid, start time).
pub fn me() -> (i64, i64) {
    let pid = i64::from(std::process::id());
    (pid, start_time(pid).unwrap_or(0))
}

/// This coordinator as runs and leases name it: `HOST:PID`.
pub fn identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host = host.trim();
    format!("{}:{}", if host.is_empty() { "localhost" } else { host }, std::process::id())
}

/// This host's current boot.
pub fn boot_id() -> Option<String> {
    let id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    Some(id.trim().to_owned()).filter(|s| !s.is_empty())
}

/// Start time of a process, `None` if it does not exist.
pub fn start_time(pid: i64) -> Option<i64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces.
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

/// Is the process that started `run` running (on this host)?
fn process_alive(run: &Run) -> bool {
    match (run.owner_pid, run.owner_start) {
        (Some(pid), Some(start)) => start_time(pid) == Some(start),
        _ => false,
    }
}

/// Is `run`'s coordinator alive now, as its replica's lease in `store` and
/// (on this host) its process say?
pub fn run_alive(store: &Store, run: &Run) -> Result<bool> {
    let lease = match run.fence {
        Some(_) => store.lease(&run.replica)?,
        None => None,
    };
    Ok(alive(run, lease.as_ref(), now()))
}

/// Is `run`'s coordinator alive at `now`, given its replica's lease? A run
/// from before leases (no fencing number) is judged by its process alone.
pub fn alive(run: &Run, lease: Option<&Lease>, now: i64) -> bool {
    let Some(fence) = run.fence else { return process_alive(run) };
    let held = lease.is_some_and(|l| l.run_id.as_deref() == Some(&run.id) && l.fence == fence && l.expires_at > now);
    let here = run.boot.is_some() && run.boot == boot_id();
    held && (!here || process_alive(run))
}
