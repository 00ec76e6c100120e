//! `diskferry-agent run --job FILE`: what a worker runs for the coordinator.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;

use super::print_json;
use crate::exit::{ExitCode, Failure, WithCode};
use crate::job::{self, JobProgress};
use crate::status::StatusWriter;

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The job spec (versioned JSON written by the coordinator).
    #[arg(long, value_name = "FILE")]
    pub job: PathBuf,
    /// Rewrite FILE every 2 s with the job's status [default: JOB with extension .status.json].
    #[arg(long, value_name = "FILE")]
    pub status_file: Option<PathBuf>,
    /// Print the per-disk reports as one JSON array at the end.
    #[arg(long)]
    pub json: bool,
}

pub fn run_job(a: RunArgs) -> Result<(), Failure> {
    let spec = job::load(&a.job)?;
    let status_path = a.status_file.clone().unwrap_or_else(|| job::default_status_path(&a.job));
    crate::readback::check_folder(&status_path)?;
    let progress = JobProgress::new(&spec);
    let interval = std::time::Duration::from_millis(spec.status_interval_ms);
    let status = StatusWriter::start_every(
        status_path.clone(),
        progress.clone() as Arc<dyn crate::progress::StatusSource>,
        interval,
    )
    .with_context(|| format!("cannot write status file {}", status_path.display()))
    .code(ExitCode::Destination)?;
    let result = job::run(&spec, &progress);
    drop(status);
    let reports = result?;
    if a.json {
        return print_json(&reports);
    }
    for r in &reports {
        super::print_sync(r);
    }
    Ok(())
}
