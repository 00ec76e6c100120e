//! Which process owns a run, and is it still alive? A pid alone can be
//! reused, so the owner is the pid plus its start time (field 22 of
//! `/proc/PID/stat`, in clock ticks since boot).

use crate::store::Run;

/// This process: (pid, start time).
pub fn me() -> (i64, i64) {
    let pid = i64::from(std::process::id());
    (pid, start_time(pid).unwrap_or(0))
}

/// Start time of a process, `None` if it does not exist.
pub fn start_time(pid: i64) -> Option<i64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces.
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

/// Is the process that started `run` still running?
pub fn alive(run: &Run) -> bool {
    match (run.owner_pid, run.owner_start) {
        (Some(pid), Some(start)) => start_time(pid) == Some(start),
        _ => false,
    }
}
