//! Workers on this host: a `diskferry-agent run --job STATE/runs/RUN/job.json`
//! process in its own process group, reporting to `status.json` beside its
//! job. Like a VM it outlives a coordinator that dies, and `gc` finds it by
//! its job path. The `local` provider's workers are these; so are the
//! azure provider's worker-less runs (an agent here reading the snapshots
//! over HTTPS, `[run] placement`).

use diskferry_core::job::JobSpec;
use diskferry_core::report::Status;
use std::collections::HashMap;
use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use super::{Found, ResourceKind, WorkerState};

/// Agent processes started on this host, one folder under `runs` each.
#[derive(Debug)]
pub struct HostWorkers {
    runs: PathBuf,
    agent: PathBuf,
    /// Workers this process started, reaped when they exit.
    children: Mutex<HashMap<String, Child>>,
}

impl HostWorkers {
    /// Workers in folders under `runs` (absolute), running `agent`.
    /// Does the agent binary run here? Its version line, or why not.
    pub fn agent_check(&self) -> super::checks::Check {
        let name = "agent on this host";
        match std::process::Command::new(&self.agent).arg("--version").output() {
            Ok(o) if o.status.success() => {
                super::checks::Check::ok(name, String::from_utf8_lossy(&o.stdout).trim().to_owned())
            }
            Ok(o) => super::checks::Check::problem(
                name,
                format!("{} --version failed: {}", self.agent.display(), String::from_utf8_lossy(&o.stderr).trim()),
                "install diskferry-agent beside diskferry, or set `agent` in the config",
            ),
            Err(e) => super::checks::Check::problem(
                name,
                format!("{} does not run: {e}", self.agent.display()),
                "install diskferry-agent beside diskferry, or set `agent` in the config",
            ),
        }
    }

    pub fn new(runs: PathBuf, agent: PathBuf) -> Self {
        Self { runs, agent, children: Mutex::new(HashMap::new()) }
    }

    /// The folder of `run_id`'s worker: its name.
    pub fn folder(&self, run_id: &str) -> PathBuf {
        self.runs.join(run_id)
    }

    /// Start the worker of folder `name` with `job`.
    pub fn start(&self, name: &str, job: &JobSpec) -> Result<()> {
        let dir = Path::new(name);
        if !is_run_dir(&self.runs, dir) {
            bail!("{name:?} is not a run folder of this state folder");
        }
        private_dir(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let job_path = dir.join("job.json");
        write_private(&job_path, job.to_json().as_bytes())?;
        let log = File::create(dir.join("agent.log"))?;
        let child = Command::new(&self.agent)
            .arg("run")
            .arg("--job")
            .arg(&job_path)
            .arg("--status-file")
            .arg(dir.join("status.json"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .with_context(|| format!("cannot start the agent {}", self.agent.display()))?;
        self.children.lock().map_err(|_| anyhow!("worker table poisoned"))?.insert(name.to_owned(), child);
        Ok(())
    }

    /// Look at the worker of folder `name`.
    pub fn state(&self, name: &str) -> Result<WorkerState> {
        let dir = Path::new(name);
        let running = {
            let mut children = self.children.lock().map_err(|_| anyhow!("worker table poisoned"))?;
            match children.get_mut(name) {
                Some(c) => c.try_wait()?.is_none(),
                None => !job_processes(&dir.join("job.json")).is_empty(),
            }
        };
        // Read the status after looking at the process: if it has exited,
        // what we read is its last word.
        // It is written whole (temp file and rename): one that does not
        // parse is from an agent this coordinator does not understand.
        let status = match std::fs::read(dir.join("status.json")) {
            Ok(b) => Some(Status::parse(&b).map_err(|e| anyhow!("the worker's status: {e}"))?),
            Err(_) => None,
        };
        if running {
            return Ok(WorkerState::Running(status));
        }
        match status {
            Some(s) if s.phase.finished() => Ok(WorkerState::Finished(s)),
            _ => Ok(WorkerState::Lost(format!(
                "the worker exited without a final status; agent log: {}",
                log_tail(&dir.join("agent.log"))
            ))),
        }
    }

    /// Stop the worker of folder `name` and remove its folder; one that is
    /// not there is no error.
    pub fn delete(&self, name: &str) -> Result<()> {
        let dir = Path::new(name);
        if !is_run_dir(&self.runs, dir) {
            bail!("{name:?} is not a run folder of this state folder: not deleted");
        }
        if is_symlink(dir) {
            // Not a folder this coordinator made: the link goes, never what it points at.
            return remove_file(dir);
        }
        let mut child = self.children.lock().map_err(|_| anyhow!("worker table poisoned"))?.remove(name);
        stop_processes(&dir.join("job.json"), child.as_mut())?;
        match std::fs::remove_dir_all(dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("cannot remove {}", dir.display()))
            }
            _ => Ok(()),
        }
    }

    /// Every worker folder, and every worker process whose folder is gone.
    pub fn list(&self) -> Result<Vec<Found>> {
        let mut found = Vec::new();
        for dir in read_dir(&self.runs)? {
            let run_id = dir.file_name().map(|n| n.to_string_lossy().into_owned());
            found.push(Found::untagged(ResourceKind::Worker, dir.display().to_string(), run_id));
        }
        for pid_job in all_job_processes(&self.runs) {
            let name = parent(&pid_job.1).display().to_string();
            if !found.iter().any(|f| f.kind == ResourceKind::Worker && f.name == name) {
                let run_id = Path::new(&name).file_name().map(|n| n.to_string_lossy().into_owned());
                found.push(Found::untagged(ResourceKind::Worker, name, run_id));
            }
        }
        Ok(found)
    }
}

/// Write `bytes` to a new file `path` that only its owner may read.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(bytes).with_context(|| format!("cannot write {}", path.display()))
}

fn parent(p: &Path) -> PathBuf {
    p.parent().map_or_else(|| PathBuf::from("."), Path::to_owned)
}

/// Create `dir` (and its missing parents) readable by the owner only.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

pub fn read_dir(p: &Path) -> Result<Vec<PathBuf>> {
    match std::fs::read_dir(p) {
        Ok(rd) => Ok(rd.filter_map(|e| e.ok().map(|e| e.path())).collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e).with_context(|| format!("cannot list {}", p.display())),
    }
}

pub fn remove_file(p: &Path) -> Result<()> {
    match std::fs::remove_file(p) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("cannot remove {}", p.display()))
        }
        _ => Ok(()),
    }
}

pub fn is_symlink(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_symlink())
}

/// The effective uid of this process.
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

fn log_tail(p: &Path) -> String {
    let text = std::fs::read_to_string(p).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = lines[lines.len().saturating_sub(3)..].join(" | ");
    if tail.is_empty() {
        "(empty)".into()
    } else {
        tail
    }
}

/// Processes running `... --job JOB ...` (workers of one run).
fn job_processes(job: &Path) -> Vec<i32> {
    all_job_processes(parent(&parent(job)).as_path()).into_iter().filter(|(_, j)| j == job).map(|(p, _)| p).collect()
}

/// `dir` is `runs/NAME` exactly: one plain component under `runs`, no `..`
/// or `.`. A path that only *starts* with `runs` (`runs/../../home/x`) is
/// not one: `Path::starts_with` compares components without resolving `..`.
fn is_run_dir(runs: &Path, dir: &Path) -> bool {
    let Ok(rest) = dir.strip_prefix(runs) else { return false };
    let mut parts = rest.components();
    matches!(parts.next(), Some(std::path::Component::Normal(_))) && parts.next().is_none()
}

/// Every process of this user whose `--job` argument is `runs/NAME/job.json`
/// for a plain `NAME` (a worker this coordinator could have started). Any
/// local user can start a process with any command line: only one's own
/// processes, at a path that cannot leave `runs`, are taken for workers.
fn all_job_processes(runs: &Path) -> Vec<(i32, PathBuf)> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else { return out };
    let me = euid();
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
        if e.metadata().map_or(true, |m| m.uid() != me) {
            continue;
        }
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else { continue };
        let args: Vec<&[u8]> = cmd.split(|&b| b == 0).collect();
        for w in args.windows(2) {
            if w[0] == b"--job" {
                let job = PathBuf::from(String::from_utf8_lossy(w[1]).into_owned());
                let in_a_run = job.file_name().is_some_and(|f| f == "job.json") && is_run_dir(runs, &parent(&job));
                if in_a_run {
                    out.push((pid, job));
                }
            }
        }
    }
    out
}

/// Stop a run's worker processes: SIGTERM, then SIGKILL after 5 s.
fn stop_processes(job: &Path, mut child: Option<&mut Child>) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut sig = libc::SIGTERM;
    loop {
        if let Some(c) = child.as_deref_mut() {
            if c.try_wait()?.is_some() {
                child = None;
            }
        }
        let pids = job_processes(job);
        if pids.is_empty() && child.is_none() {
            return Ok(());
        }
        for &pid in &pids {
            // SAFETY: kill has no memory-safety preconditions; the pid was just
            // read from /proc with our job path on its command line.
            unsafe { libc::kill(pid, sig) };
        }
        if Instant::now() > deadline {
            if sig == libc::SIGKILL {
                bail!("worker processes {pids:?} do not exit");
            }
            sig = libc::SIGKILL;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
