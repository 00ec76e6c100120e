//! Runs placed on this host (`[run] placement`): no worker VM and no
//! temporary disk; an agent process here reads each disk's snapshot over
//! HTTPS (`diskferry-agent run` with `url-file:` sources), through a read SAS
//! granted for the run (`Snapshots_GrantAccess`) and revoked when the worker
//! is deleted (`Snapshots_RevokeAccess`).
//!
//! The worker is `here:RUN`: the folder `STATE/runs/RUN` holds the job, one
//! `DISK.url` per disk (mode 600: the SAS URL, never in the job, an argument
//! or a log), `granted` (the snapshots read access was asked for, written
//! before the first grant, so a delete revokes whatever was granted even
//! after a crash), the agent's log and its status file.

use std::path::Path;

use anyhow::{anyhow, Context, Result};

use super::provider::AzureCloud;
use crate::cloud::host::{private_dir, write_private, HostWorkers};
use crate::cloud::{here_name, Found, WorkerSpec, WorkerState};

/// What the grant for a run here asks: six hours, the default run deadline.
const READ_SECS: u64 = 6 * 3600;

impl AzureCloud {
    fn host(&self) -> Result<&HostWorkers> {
        self.host.as_ref().ok_or_else(|| anyhow!("this coordinator keeps no workers on its host"))
    }

    /// Grant read access to each disk's snapshot, write the URLs beside
    /// the job, start the agent.
    pub(super) fn start_here_worker(&self, w: &WorkerSpec<'_>) -> Result<Option<String>> {
        let host = self.host()?;
        let run_id = w.name.strip_prefix(crate::cloud::HERE).ok_or_else(|| anyhow!("{} is not here", w.name))?;
        let dir = host.folder(run_id);
        private_dir(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let snapshots: Vec<&str> = w.disks.iter().map(|a| a.snapshot.as_str()).collect();
        write_private(&dir.join("granted"), snapshots.join("\n").as_bytes())?;
        let mut job = w.job.clone();
        job.status_blob = None;
        for (disk, attach) in job.disks.iter_mut().zip(w.disks) {
            let url = self.grant_for(&attach.snapshot, READ_SECS)?;
            let file = dir.join(format!("{}.url", disk.name));
            write_private(&file, url.as_bytes())?;
            disk.source = format!("{}{}", diskferry_core::job::URL_FILE_PREFIX, file.display());
        }
        host.start(&dir.display().to_string(), &job)?;
        Ok(Some("this host: an agent reading the snapshots over HTTPS".into()))
    }

    pub(super) fn here_state(&self, run_id: &str) -> Result<WorkerState> {
        let host = self.host()?;
        host.state(&host.folder(run_id).display().to_string())
    }

    /// Stop the agent, revoke every grant it was given, remove its folder.
    pub(super) fn delete_here(&self, run_id: &str) -> Result<()> {
        let host = self.host()?;
        let dir = host.folder(run_id);
        let granted = granted(&dir);
        let stopped = host.delete(&dir.display().to_string());
        let mut revoked = Ok(());
        for s in granted {
            let r = self.revoke(&s).with_context(|| format!("revoking read access to snapshot {s}"));
            if revoked.is_ok() {
                revoked = r;
            }
        }
        stopped.and(revoked)
    }

    /// Every run folder on this host: a worker here (or what one left).
    pub(super) fn here_workers(&self) -> Result<Vec<Found>> {
        let Some(host) = &self.host else { return Ok(Vec::new()) };
        Ok(host
            .list()?
            .into_iter()
            .filter_map(|mut f| {
                f.name = here_name(f.run_id.as_deref()?);
                Some(f)
            })
            .collect())
    }
}

/// The snapshots a run here was granted read access to.
fn granted(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("granted"))
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect()
}
