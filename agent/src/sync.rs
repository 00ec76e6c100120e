//! One sync: scan the source window by window, plan each window against the
//! destination's prior state, apply the plan, publish the manifest.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use diskferry_core::geometry::{ChunkSize, Geometry};
use diskferry_core::job::RangeHint;
use diskferry_core::manifest::{ChunkState, Manifest};
use diskferry_core::plan::{PlanStats, Planner};

use crate::exit::{ExitCode, Failure, WithCode};
use crate::pageblob::auth::{redact, BlobAddress};
use crate::pageblob::sink::{PageBlobOptions, PageBlobSink};
use crate::pageblob::store::AzureStore;
use crate::progress::{Phase, Progress};
use crate::relay::client::RelayOptions;
use crate::relay::sender::RelaySink;
use crate::relay::RelayAddress;
use crate::scan::{scan, Known, ScanStats};
use crate::sink::file::FileSink;
use crate::sink::{Prior, Sink, WireStats};
use crate::source::{BlockSource, DeviceSource, ReadMode};

/// Where a sync writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `file:PATH`: a sparse fixed-VHD file.
    File(PathBuf),
    /// `pageblob:URL`: a page blob (the URL may carry a SAS; never printed).
    PageBlob(BlobAddress),
    /// `relay:https://HOST:PORT/DISK`: a receiver in the destination region.
    Relay(RelayAddress),
}

impl std::str::FromStr for Target {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once(':') {
            Some(("file", path)) if !path.is_empty() => Ok(Target::File(PathBuf::from(path))),
            Some(("file", _)) => Err("file: needs a path, as in file:/data/disk0.vhd".into()),
            Some(("pageblob", url)) => BlobAddress::parse(url).map(Target::PageBlob).map_err(|e| format!("{e:#}")),
            Some(("relay", url)) => RelayAddress::parse(url).map(Target::Relay).map_err(|e| format!("{e:#}")),
            _ => Err(format!("{:?} is not a destination: use file:PATH, pageblob:URL or relay:URL", redact(s))),
        }
    }
}

impl std::fmt::Display for Target {
    /// As shown to people: never with a SAS.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::File(p) => write!(f, "file:{}", p.display()),
            Target::PageBlob(addr) => write!(f, "pageblob:{addr}"),
            Target::Relay(addr) => write!(f, "relay:{addr}"),
        }
    }
}

/// Everything a sync needs besides the source and target.
#[derive(Debug, Clone)]
pub struct SyncOptions {
    pub chunk_size: ChunkSize,
    /// Names the source in the manifest; a manifest of another source is not
    /// trusted. Default: the source's canonical path.
    pub source_id: Option<String>,
    pub threads: usize,
    pub read_mode: ReadMode,
    /// Keep the manifest here instead of beside the destination.
    pub manifest: Option<PathBuf>,
    /// Overwrite a destination that diskferry did not write (or resize a
    /// page blob for a source of another size).
    pub force: bool,
    /// Page blob destinations.
    pub pageblob: PageBlobOptions,
    /// Pin the storage service version (`x-ms-version`).
    pub api_version: Option<String>,
    /// Give up retrying one storage request after this long.
    pub retry_for: Option<std::time::Duration>,
    /// Relay destinations: token, TLS trust, zstd level.
    pub relay: RelayOptions,
    /// What changed since a known earlier state (`hint.base_generations`
    /// in the order of the targets).
    pub hint: Option<RangeHint>,
}

/// What a sync did. Serialized as the `--json` output.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SyncReport {
    pub destination: String,
    pub generation: u64,
    pub full_sync: bool,
    pub full_sync_reason: Option<String>,
    pub disk_size: u64,
    pub previous_disk_size: Option<u64>,
    pub chunk_size: u64,
    pub chunks: u64,
    pub chunks_written: u64,
    pub chunks_cleared: u64,
    pub chunks_unchanged: u64,
    /// Chunks an interrupted earlier run touched, rewritten whatever they hold.
    pub chunks_suspect: u64,
    pub bytes_written: u64,
    pub bytes_cleared: u64,
    pub zero_chunks: u64,
    pub data_chunks: u64,
    pub bytes_read: u64,
    pub seconds: f64,
    /// Of `seconds`: time spent handing writes and clears to the destination.
    pub seconds_writing: f64,
    /// Of `seconds`: time spent making the generation durable and publishing it.
    pub seconds_committing: f64,
    pub read_bytes_per_second: f64,
    /// Traffic to a remote destination (page blob).
    pub wire: Option<WireStats>,
    /// What became of a range hint: `used: ...` or `ignored: why`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// Chunks the hint let the scan skip without reading.
    pub chunks_hinted: u64,
}

/// Open a source and check it can be cut into chunks.
pub fn open_source(path: &Path, mode: ReadMode, chunk: ChunkSize) -> Result<(DeviceSource, Geometry), Failure> {
    let source = DeviceSource::open(path, mode).code(ExitCode::Source)?;
    let geometry = Geometry::new(source.size(), chunk)
        .map_err(|e| Failure::new(ExitCode::Source, anyhow!("source {}: {e}", path.display())))?;
    Ok((source, geometry))
}

pub fn thread_pool(threads: usize) -> Result<rayon::ThreadPool, Failure> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("diskferry-scan-{i}"))
        .build()
        .code(ExitCode::Failure)
}

/// Sync `source_path` to `target`.
pub fn sync(source_path: &Path, target: &Target, opts: &SyncOptions) -> Result<SyncReport, Failure> {
    sync_with_progress(source_path, target, opts, &Progress::new(&source_path.display().to_string()))
}

/// Sync to one destination, counting into `progress` as it goes (for
/// progress bars, the status file and metrics). The phase ends as `Done` or
/// `Failed`.
pub fn sync_with_progress(
    source_path: &Path,
    target: &Target,
    opts: &SyncOptions,
    progress: &Arc<Progress>,
) -> Result<SyncReport, Failure> {
    let mut r = sync_fanout(source_path, std::slice::from_ref(target), opts, progress)?;
    r.pop().unwrap_or_else(|| Err(Failure::new(ExitCode::Failure, anyhow!("no destination"))))
}

/// Sync to several destinations from one read of the source: each
/// destination keeps its own generation and manifest and is planned against
/// its own prior state, so one that missed a sync catches up at the next. A
/// destination that fails is dropped and the others go on. `Err` only when
/// the source fails (then every destination failed). The phase ends as
/// `Done` when every destination synced, else `Failed`.
pub fn sync_fanout(
    source_path: &Path,
    targets: &[Target],
    opts: &SyncOptions,
    progress: &Arc<Progress>,
) -> Result<Vec<Result<SyncReport, Failure>>, Failure> {
    let r = run(source_path, targets, opts, progress);
    match &r {
        Ok(lanes) => match lanes.iter().find_map(|l| l.as_ref().err()) {
            None => progress.set_phase(Phase::Done),
            Some(f) => progress.fail(&f.to_string()),
        },
        Err(f) => progress.fail(&f.to_string()),
    }
    r
}

/// The parts of a lane the scan loop changes: its sink, plan counts, time spent writing.
type LaneMut<'a> = (&'a mut Box<dyn Sink>, &'a mut PlanStats, &'a mut Duration);

/// One destination of a (fan-out) sync.
struct Lane {
    sink: Box<dyn Sink>,
    prior: Prior,
    generation: u64,
    stats: PlanStats,
    writing: Duration,
}

fn run(
    source_path: &Path,
    targets: &[Target],
    opts: &SyncOptions,
    progress: &Arc<Progress>,
) -> Result<Vec<Result<SyncReport, Failure>>, Failure> {
    let started = Instant::now();
    let (source, geometry) = open_source(source_path, opts.read_mode, opts.chunk_size)?;
    progress.disk_size.store(geometry.disk_size(), Relaxed);
    let source_id = match &opts.source_id {
        Some(id) => id.clone(),
        None => std::fs::canonicalize(source_path).unwrap_or_else(|_| source_path.to_owned()).display().to_string(),
    };
    let pool = thread_pool(opts.threads)?;
    // Open each destination and read its prior state; a failure drops that
    // destination only.
    let mut lanes: Vec<Result<Lane, Failure>> = targets
        .iter()
        .map(|t| {
            let mut sink = open_sink(t, opts)?;
            let prior = sink.prior(&source_id, geometry)?;
            let generation = prior.next_generation();
            sink.begin(generation, geometry, &prior)?;
            Ok(Lane { sink, prior, generation, stats: PlanStats::default(), writing: Duration::ZERO })
        })
        .collect();
    let live: Vec<&Lane> = lanes.iter().filter_map(|l| l.as_ref().ok()).collect();
    if let Ok(mut d) = progress.destination.lock() {
        *d = live.iter().map(|l| l.sink.describe()).collect::<Vec<_>>().join(", ");
    }
    if let Ok(mut s) = progress.store.lock() {
        *s = live.iter().find_map(|l| l.sink.live_counters());
    }
    progress.generation.store(live.first().map_or(0, |l| l.generation), Relaxed);
    if live.is_empty() {
        return Ok(failed(lanes));
    }
    progress.set_phase(Phase::Syncing);
    // The lane whose manifest is the hint's baseline, or why there is none.
    let judged = opts.hint.as_ref().map(|h| (h, judge_hint(h, &lanes, geometry)));
    let hint_note = judged.as_ref().map(|(h, j)| match j {
        Ok(_) => {
            let bytes: u64 = h.ranges.iter().map(|r| r[1]).sum();
            format!("used: {} ranges, {bytes} bytes may have changed", h.ranges.len())
        }
        Err(why) => format!("ignored: {why}"),
    });
    let baseline_lane = judged.and_then(|(_, j)| j.ok());

    let scan_result = {
        // One pass splits each live lane into its planner (borrowing the
        // prior) and its sink (borrowed mutably): disjoint fields.
        // The hint's baseline is borrowed from its lane's prior, like the planners'.
        let mut baseline: Option<&[ChunkState]> = None;
        let mut active: Vec<Option<(Planner<'_>, LaneMut<'_>)>> = lanes
            .iter_mut()
            .enumerate()
            .map(|(i, l)| {
                let Lane { sink, prior, stats, writing, .. } = l.as_mut().ok()?;
                let prior: &Prior = prior;
                if let (Some(b), Prior::Previous { manifest, .. }) = (baseline_lane, prior) {
                    if b == i {
                        baseline = Some(&manifest.chunks);
                    }
                }
                let p = Planner::new(prior.baseline(), geometry);
                let planner = match prior.overrides() {
                    Some(o) => p.with_overrides(o),
                    None => p,
                };
                Some((planner, (sink, stats, writing)))
            })
            .collect();
        let mut failures: Vec<Option<Failure>> = active.iter().map(|_| None).collect();
        let known = opts.hint.as_ref().zip(baseline).map(|(hint, baseline)| Known { hint, baseline });
        let r = scan(&source, geometry, &pool, known, |w| {
            count_scan(progress, &w);
            for (slot, failure) in active.iter_mut().zip(failures.iter_mut()) {
                let Some((planner, (sink, stats, writing))) = slot else { continue };
                let plan = planner.plan_window(w.first_chunk, w.states);
                stats.add(&plan.stats);
                count_plan(progress, &w, &plan.stats);
                let t = Instant::now();
                let r = sink.apply(&plan, &w);
                **writing += t.elapsed();
                if let Err(f) = r {
                    *failure = Some(f);
                    *slot = None;
                }
            }
            if active.iter().all(Option::is_none) {
                return Err(Failure::new(ExitCode::Destination, anyhow!("every destination failed")));
            }
            Ok(())
        });
        (r, failures)
    };
    let (scanned, failures) = scan_result;
    for (l, f) in lanes.iter_mut().zip(failures) {
        if let Some(f) = f {
            *l = Err(f);
        }
    }
    let (chunks, scan_stats): (_, ScanStats) = match scanned {
        Ok(s) => s,
        // Every destination failed while writing: their own errors say why.
        Err(_) if lanes.iter().all(Result::is_err) => return Ok(failed(lanes)),
        Err(f) => return Err(f),
    };
    progress.set_phase(Phase::Committing);
    let created_unix_ms = unix_ms();
    Ok(lanes
        .into_iter()
        .map(|lane| {
            let mut lane = lane?;
            let manifest = Manifest {
                geometry,
                generation: lane.generation,
                created_unix_ms,
                source_id: source_id.clone(),
                chunks: chunks.clone(),
            };
            let t = Instant::now();
            lane.sink.commit(&manifest)?;
            let committing = t.elapsed();
            let mut r = report(&lane, geometry, &scan_stats, started, committing);
            r.hint = hint_note.clone();
            Ok(r)
        })
        .collect())
}

/// The failures of lanes that all failed.
fn failed(lanes: Vec<Result<Lane, Failure>>) -> Vec<Result<SyncReport, Failure>> {
    lanes.into_iter().filter_map(Result::err).map(Err).collect()
}

fn report(
    lane: &Lane,
    geometry: Geometry,
    scan_stats: &ScanStats,
    started: Instant,
    committing: Duration,
) -> SyncReport {
    let seconds = started.elapsed().as_secs_f64();
    let (previous_disk_size, chunks_suspect) = match &lane.prior {
        Prior::Previous { manifest, overrides } => (Some(manifest.geometry.disk_size()), overrides.suspect_count()),
        _ => (None, 0),
    };
    let plan_stats = &lane.stats;
    SyncReport {
        destination: lane.sink.describe(),
        generation: lane.generation,
        full_sync: lane.prior.full_reason().is_some(),
        full_sync_reason: lane.prior.full_reason().map(str::to_owned),
        disk_size: geometry.disk_size(),
        previous_disk_size,
        chunk_size: geometry.chunk_size().get(),
        chunks: geometry.chunk_count(),
        chunks_written: plan_stats.chunks_written,
        chunks_cleared: plan_stats.chunks_cleared,
        chunks_unchanged: plan_stats.chunks_unchanged,
        chunks_suspect,
        bytes_written: plan_stats.bytes_written,
        bytes_cleared: plan_stats.bytes_cleared,
        zero_chunks: scan_stats.zero_chunks,
        data_chunks: scan_stats.data_chunks,
        bytes_read: scan_stats.bytes_read,
        seconds,
        seconds_writing: lane.writing.as_secs_f64(),
        seconds_committing: committing.as_secs_f64(),
        wire: lane.sink.wire(),
        read_bytes_per_second: geometry.disk_size() as f64 / seconds.max(1e-9),
        hint: None,
        chunks_hinted: scan_stats.hinted_chunks,
    }
}

/// A range hint holds when every destination still holds, cleanly, the
/// generation the hint was made against: then whatever the hint leaves out
/// is as that generation's manifest says (they are all the same state).
/// `Ok(lane)` names the first such lane, whose manifest is the baseline;
/// `Err(why)` ignores the hint (the scan reads everything).
fn judge_hint(h: &RangeHint, lanes: &[Result<Lane, Failure>], geometry: Geometry) -> Result<usize, String> {
    if h.disk_size != geometry.disk_size() {
        return Err(format!("the disk is {} bytes now, {} at the hint's base", geometry.disk_size(), h.disk_size));
    }
    let mut baseline = None;
    for (i, lane) in lanes.iter().enumerate() {
        let Ok(lane) = lane else { continue };
        let base = h.base_generations.get(i).copied().unwrap_or(0);
        match &lane.prior {
            Prior::Previous { manifest, overrides }
                if manifest.generation == base
                    && manifest.geometry == geometry
                    && overrides.suspect_count() == 0
                    && overrides.acked_count() == 0 =>
            {
                baseline.get_or_insert(i);
            }
            Prior::Previous { manifest, .. } if manifest.generation != base => {
                return Err(format!(
                    "destination {} holds generation {}, the hint is against {base}",
                    i + 1,
                    manifest.generation
                ))
            }
            Prior::Previous { .. } => {
                return Err(format!("destination {} has an interrupted generation or another geometry", i + 1))
            }
            p => {
                let why = p.full_reason().unwrap_or("no previous generation");
                return Err(format!("destination {} cannot sync incrementally ({why})", i + 1));
            }
        }
    }
    baseline.ok_or_else(|| "no destination to compare with".into())
}

/// What the scan itself did (counted once, however many destinations).
fn count_scan(p: &Progress, w: &crate::scan::WindowView<'_>) {
    let (st, len) = (&w.stats, w.bytes.len() as u64);
    Progress::add(&p.bytes_scanned, len);
    Progress::add(&p.bytes_read, st.bytes_read);
    Progress::add(&p.bytes_hashed, st.bytes_hashed);
    // Chunks the range hint left out are unchanged, whatever they hold.
    Progress::add(&p.bytes_skipped_unchanged, st.bytes_hinted);
    Progress::add(&p.bytes_skipped_zero, len - st.bytes_hashed - st.bytes_hinted);
}

/// What one destination's plan for a window does (summed over destinations).
fn count_plan(p: &Progress, w: &crate::scan::WindowView<'_>, plan: &PlanStats) {
    Progress::add(&p.bytes_skipped_unchanged, w.stats.bytes_hashed.saturating_sub(plan.bytes_written));
    Progress::add(&p.bytes_written, plan.bytes_written);
    Progress::add(&p.bytes_cleared, plan.bytes_cleared);
}

/// The sink for `target`.
pub fn open_sink(target: &Target, opts: &SyncOptions) -> Result<Box<dyn Sink>, Failure> {
    Ok(match target {
        Target::File(p) => Box::new(FileSink::open(p, opts.manifest.as_deref(), opts.force)?),
        Target::PageBlob(addr) => {
            let mut sink = open_pageblob(addr, opts.api_version.clone(), opts.pageblob.clone(), opts.force)?;
            if let Some(d) = opts.retry_for {
                sink.set_retry_for(d);
            }
            Box::new(sink)
        }
        Target::Relay(addr) => Box::new(RelaySink::new(
            addr,
            &opts.relay,
            opts.retry_for.unwrap_or(Duration::from_secs(120)),
            opts.threads,
            opts.force,
        )?),
    })
}

/// A page blob sink on Azure Storage (or Azurite).
pub fn open_pageblob(
    addr: &BlobAddress,
    api_version: Option<String>,
    mut po: PageBlobOptions,
    force: bool,
) -> Result<PageBlobSink<AzureStore>, Failure> {
    po.force |= force;
    let store = AzureStore::connect(addr.clone(), api_version).code(ExitCode::Destination)?;
    PageBlobSink::new(store, &addr.blob, format!("pageblob:{addr}"), po)
}

pub fn unix_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

pub fn unix_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}
