//! `diskferry-agent run --job FILE`: sync every disk of a job spec at once
//! (on Azure the limits are per disk and per blob: four disks one after
//! another would take four times as long), writing one status document for
//! the whole job. A disk that fails does not stop the others: each
//! destination keeps its own generations, so the next run catches up.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::anyhow;
use diskferry_core::job::JobSpec;
use diskferry_core::report::{Status, STATUS_VERSION};

use crate::exit::{ExitCode, Failure};
use crate::open::{sync_fanout, SyncOptions, Target};
use crate::pageblob::sink::PageBlobOptions;
use crate::progress::{Phase, Progress, StatusSource};
use crate::source::ReadMode;
use crate::sync::{threads_or_cores, Shared, SyncReport};
use diskferry_blob::address::redact;

/// Read and validate a job file.
pub fn load(path: &Path) -> Result<JobSpec, Failure> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::new(ExitCode::Usage, anyhow!("cannot read job {}: {e}", path.display())))?;
    JobSpec::parse(&text).map_err(|e| Failure::new(ExitCode::Usage, anyhow!("job {}: {e}", path.display())))
}

pub use diskferry_core::report::DestinationResult;

/// A finished disk: one result per destination, or why none was tried.
type DiskOutcome = Result<Vec<DestinationResult>, String>;

/// The job's live state: one [`Progress`] per disk plus each disk's outcome.
#[derive(Debug)]
pub struct JobProgress {
    pub run_id: String,
    pub disks: Vec<(String, Arc<Progress>)>,
    outcomes: Mutex<Vec<Option<DiskOutcome>>>,
    phase: Mutex<Phase>,
}

impl JobProgress {
    pub fn new(job: &JobSpec) -> Arc<Self> {
        Arc::new(Self {
            run_id: job.run_id.clone(),
            disks: job.disks.iter().map(|d| (d.name.clone(), Progress::new(&d.source))).collect(),
            outcomes: Mutex::new(vec![None; job.disks.len()]),
            phase: Mutex::new(Phase::Starting),
        })
    }

    fn set_phase(&self, p: Phase) {
        if let Ok(mut g) = self.phase.lock() {
            *g = p;
        }
    }
}

impl StatusSource for JobProgress {
    /// The status document with a `run_id` and, per disk, its name and
    /// (once finished) `results` (one per destination: report or error) or
    /// the `error` that stopped the disk (its source failed).
    fn status(&self) -> Status {
        let outcomes = self.outcomes.lock().map(|o| o.clone()).unwrap_or_default();
        let disks = self
            .disks
            .iter()
            .zip(outcomes.iter().chain(std::iter::repeat(&None)))
            .map(|((name, p), outcome)| {
                let mut d = p.disk_status();
                d.name = Some(name.clone());
                match outcome {
                    Some(Ok(r)) => d.results = Some(r.clone()),
                    Some(Err(e)) => d.error = Some(e.clone()),
                    None => {}
                }
                d
            })
            .collect();
        Status {
            version: STATUS_VERSION,
            run_id: Some(self.run_id.clone()),
            phase: self.phase.lock().map_or(Phase::Failed, |g| *g),
            updated_unix_ms: crate::clock::unix_ms(),
            seconds: None,
            last_error: None,
            disks,
            requests: None,
        }
    }
}

/// Options for the syncs of a job, from the spec.
pub fn sync_options(job: &JobSpec, disk_source_id: &str) -> Result<SyncOptions, Failure> {
    let threads = threads_or_cores(job.threads.map(usize::from));
    Ok(SyncOptions {
        chunk_size: job.chunk().map_err(|e| Failure::new(ExitCode::Usage, anyhow!("{e}")))?,
        source_id: Some(disk_source_id.to_owned()),
        threads,
        read_mode: ReadMode::Auto,
        manifest: None,
        force: false,
        pageblob: PageBlobOptions {
            concurrency: usize::from(job.concurrency),
            keep: usize::from(job.keep),
            // Retention belongs to the destination side: a worker's job
            // sets none (its role should not delete at all).
            min_retention: None,
            create_container: job.create_container,
            force: false,
            lease: crate::pageblob::lease::LeaseOptions::default(),
            state: job
                .state_url
                .as_deref()
                .map(diskferry_blob::address::BlobAddress::parse_container)
                .transpose()
                .map_err(|e| Failure::new(ExitCode::Usage, anyhow!("job spec state_url: {e:#}")))?,
            consistency: job.consistency.clone(),
            fence: job.fence,
        },
        api_version: job.api_version.clone(),
        retry_for: Some(Duration::from_secs(job.retry_for_secs)),
        // A relay destination takes its token from the worker's environment
        // (never from the job spec, which holds no secret).
        relay: crate::relay::client::RelayOptions {
            token: crate::relay::Token::load(None).map_err(|e| Failure::new(ExitCode::Usage, e))?,
            fingerprint: std::env::var(crate::relay::FINGERPRINT_ENV)
                .ok()
                .map(|f| crate::relay::tls::Fingerprint::parse(&f))
                .transpose()
                .map_err(|e| Failure::new(ExitCode::Usage, e))?,
            ca_file: std::env::var_os(crate::relay::CA_ENV).map(std::path::PathBuf::from),
            zstd_level: None,
        },
        hint: None,
        read_limit: None,
        shared: None,
    })
}

/// Run the job: every disk at once, each with its own pipeline (scan,
/// planners, sinks), sharing one pool of hashing threads and one budget of
/// windows in memory (`crate::sync::Shared`). A disk that fails does not
/// stop the others. `Ok` only when every disk reached every destination;
/// the first failing disk, in the job's order, decides the exit code.
pub fn run(job: &JobSpec, progress: &Arc<JobProgress>) -> Result<Vec<SyncReport>, Failure> {
    progress.set_phase(Phase::Syncing);
    let threads = threads_or_cores(job.threads.map(usize::from));
    let shared = match Shared::new(job.disks.len(), threads) {
        Ok(s) => s,
        Err(f) => {
            progress.set_phase(Phase::Failed);
            return Err(f);
        }
    };
    let done: Vec<(Vec<SyncReport>, Option<Failure>)> = std::thread::scope(|scope| {
        let threads: Vec<_> = job
            .disks
            .iter()
            .enumerate()
            .map(|(i, disk)| {
                let shared = shared.clone();
                std::thread::Builder::new().name(format!("diskferry-disk-{i}")).spawn_scoped(scope, move || {
                    let outcome = sync_disk(job, disk, shared, &progress.disks[i].1);
                    let (recorded, reports, failure) = record(disk, outcome);
                    if let Ok(mut o) = progress.outcomes.lock() {
                        o[i] = Some(recorded);
                    }
                    (reports, failure)
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|t| match t.map_err(|e| e.to_string()).and_then(|t| t.join().map_err(|_| "it panicked".into())) {
                Ok(done) => done,
                Err(why) => (Vec::new(), Some(Failure::new(ExitCode::Failure, anyhow!("a disk's sync thread: {why}")))),
            })
            .collect()
    });
    let mut reports = Vec::new();
    let mut first_failure = None;
    for (r, f) in done {
        reports.extend(r);
        if first_failure.is_none() {
            first_failure = f;
        }
    }
    match first_failure {
        None => {
            progress.set_phase(Phase::Done);
            Ok(reports)
        }
        Some(f) => {
            progress.set_phase(Phase::Failed);
            Err(f)
        }
    }
}

/// One disk of the job, to each of its destinations.
fn sync_disk(
    job: &JobSpec,
    disk: &diskferry_core::job::JobDisk,
    shared: Shared,
    progress: &Arc<Progress>,
) -> Result<Vec<Result<SyncReport, Failure>>, Failure> {
    let targets = disk
        .destinations
        .iter()
        .map(|d| d.parse::<Target>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Failure::new(ExitCode::Usage, anyhow!("disk {}: {e}", disk.name)))?;
    let mut opts = sync_options(job, &disk.source_id)?;
    opts.hint = disk.hint.clone();
    opts.read_limit = disk.read_limit;
    opts.shared = Some(shared);
    let source = crate::device::resolve(disk, crate::device::LUN_WAIT)?;
    sync_fanout(&source, &targets, &opts, progress)
}

/// A disk's outcome as the status document shows it, its reports, and its
/// first failure.
fn record(
    disk: &diskferry_core::job::JobDisk,
    outcome: Result<Vec<Result<SyncReport, Failure>>, Failure>,
) -> (DiskOutcome, Vec<SyncReport>, Option<Failure>) {
    let mut reports = Vec::new();
    let mut first = None;
    let recorded = match outcome {
        Ok(lanes) => {
            let mut results = Vec::new();
            for (dest, lane) in disk.destinations.iter().zip(lanes) {
                let shown = dest.parse::<Target>().map_or_else(|_| redact(dest), |t| t.to_string());
                match lane {
                    Ok(r) => {
                        results.push(DestinationResult { destination: shown, report: Some(r.clone()), error: None });
                        reports.push(r);
                    }
                    Err(f) => {
                        eprintln!("error: disk {} to {shown}: {f}", disk.name);
                        results.push(DestinationResult {
                            destination: shown,
                            report: None,
                            error: Some(f.to_string()),
                        });
                        first.get_or_insert(f);
                    }
                }
            }
            Ok(results)
        }
        Err(f) => {
            eprintln!("error: disk {}: {f}", disk.name);
            let e = format!("disk {}: {f}", disk.name);
            first = Some(f);
            Err(e)
        }
    };
    (recorded, reports, first)
}

/// Where a job's status goes when none is named: beside the job file.
pub fn default_status_path(job_path: &Path) -> PathBuf {
    job_path.with_extension("status.json")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lists_every_disk_by_name() {
        let job = JobSpec::parse(
            r#"{"version":1,"run_id":"r9","disks":[
              {"name":"os","source":"/a","source_id":"v/os","destinations":["file:/x/os.vhd"]},
              {"name":"data","source":"/b","source_id":"v/data","destinations":["file:/x/data.vhd"]}]}"#,
        )
        .unwrap();
        let p = JobProgress::new(&job);
        let s = p.status();
        assert_eq!(s.run_id.as_deref(), Some("r9"));
        assert_eq!(s.disks[1].name.as_deref(), Some("data"));
        assert_eq!(s.disks[0].source, "/a");
        // What the agent writes, the coordinator reads (unknown fields refused).
        let bytes = serde_json::to_vec_pretty(&s).unwrap();
        assert_eq!(Status::parse(&bytes).unwrap(), s);
    }

    #[test]
    fn options_follow_the_spec() {
        let job = JobSpec::parse(
            r#"{"version":1,"run_id":"r","chunk_size":65536,"concurrency":3,"keep":2,"threads":1,"retry_for_secs":5,
               "disks":[{"name":"os","source":"/a","source_id":"v/os","destinations":["file:/x/os.vhd"]}]}"#,
        )
        .unwrap();
        let o = sync_options(&job, "v/os").unwrap();
        assert_eq!((o.chunk_size.get(), o.threads, o.pageblob.concurrency, o.pageblob.keep), (65536, 1, 3, 2));
        assert_eq!(o.retry_for, Some(Duration::from_secs(5)));
        assert_eq!(o.source_id.as_deref(), Some("v/os"));
    }
}
