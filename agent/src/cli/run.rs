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
    let mirror = match &spec.status_blob {
        Some(url) => Some(blob_mirror(url, spec.api_version.clone())?),
        None => None,
    };
    let source = progress.clone() as Arc<dyn crate::progress::StatusSource>;
    let status = StatusWriter::start_mirrored(status_path.clone(), source, interval, mirror)
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

/// Upload each status document to the block blob at `url` (credentials as
/// for page blob destinations; no SAS in a job). A failed upload is reported
/// once and retried with the next document.
fn blob_mirror(url: &str, api_version: Option<String>) -> Result<crate::status::Mirror, Failure> {
    use diskferry_blob::PageStore;
    let addr = diskferry_blob::address::BlobAddress::parse(url).code(ExitCode::Usage)?;
    let store = diskferry_blob::connect(addr.clone(), api_version).code(ExitCode::Destination)?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().code(ExitCode::Failure)?;
    let mut warned = false;
    Ok(Box::new(move |doc: &[u8]| {
        let r = rt.block_on(store.put_block_blob(&addr.blob, bytes::Bytes::copy_from_slice(doc)));
        if let Err(e) = r {
            if !warned {
                eprintln!("warning: cannot upload the status to {addr}: {e} (will retry)");
                warned = true;
            }
        }
    }))
}
