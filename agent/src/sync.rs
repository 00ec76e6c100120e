//! One sync: scan the source window by window, plan each window against the
//! destination's prior state, apply the plan, publish the manifest.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use diskferry_core::geometry::Geometry;
use diskferry_core::job::RangeHint;
use diskferry_core::manifest::{ChunkState, Manifest};
use diskferry_core::plan::{Plan, PlanStats, Planner};
use diskferry_core::states::ChunkStates;

use crate::exit::{ExitCode, Failure, WithCode};

use crate::buf::AlignedBuf;
use crate::pace::{ReadPace, WindowBudget};
use crate::pin::{pin, Pinned};
use crate::progress::{Phase, Progress};
use crate::scan::{scan, Known, ScanOptions, ScanStats, WindowView};
pub use diskferry_core::report::SyncReport;

use crate::sink::{Prior, Sink};
use crate::source::BlockSource;

/// What the pipeline itself needs; how destinations are opened is
/// `crate::open::SyncOptions`.
#[derive(Debug, Clone, Default)]
pub struct PipelineOptions {
    /// Hashing threads.
    pub threads: usize,
    /// What changed since a known earlier state (`hint.base_generations`
    /// in the order of the sinks).
    pub hint: Option<RangeHint>,
    /// Read the source at most this fast (bytes per second).
    pub read_limit: Option<u64>,
    /// What the syncs of a job's disks share, when they run side by side.
    pub shared: Option<Shared>,
}

/// What every disk of a job syncing at once shares: one pool of hashing
/// threads (its windows queue in the order they come, so disks advance
/// alike) and one budget of windows in memory.
#[derive(Debug, Clone)]
pub struct Shared {
    pub pool: Arc<rayon::ThreadPool>,
    pub budget: Arc<WindowBudget>,
}

impl Shared {
    /// For `disks` syncing at once on `threads` threads: a window per disk
    /// and one per thread, so each disk has one in hand while every core
    /// hashes (32 MiB each: 4 disks on 2 cores hold at most 192 MiB).
    pub fn new(disks: usize, threads: usize) -> Result<Self, Failure> {
        let windows = (disks + threads).max(crate::scan::IN_FLIGHT + 1);
        Ok(Self { pool: Arc::new(thread_pool(threads)?), budget: Arc::new(WindowBudget::new(windows)) })
    }
}

/// Hashing threads: as asked, or one per core.
pub fn threads_or_cores(asked: Option<usize>) -> usize {
    asked.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

pub fn thread_pool(threads: usize) -> Result<rayon::ThreadPool, Failure> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("diskferry-scan-{i}"))
        .build()
        .code(ExitCode::Failure)
}

/// A sync's parts, opened by the caller (`crate::open` opens them from
/// what a user names; tests pass fakes).
pub struct Parts<'a> {
    pub source: &'a dyn BlockSource,
    pub geometry: Geometry,
    /// Names the source in the manifest.
    pub source_id: String,
    /// One per destination; one that could not be opened is its failure.
    pub sinks: Vec<Result<Box<dyn Sink>, Failure>>,
}

impl std::fmt::Debug for Parts<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parts").field("geometry", &self.geometry).field("source_id", &self.source_id).finish()
    }
}

/// Sync `parts.source` to every sink from one read of the source: each
/// destination keeps its own generation and manifest and is planned against
/// its own prior state, so one that missed a sync catches up at the next. A
/// destination that fails is dropped and the others go on. `Err` only when
/// the source fails (then every destination failed). The phase ends as
/// `Done` when every destination synced, else `Failed`.
pub fn sync_parts(
    parts: Parts<'_>,
    opts: &PipelineOptions,
    progress: &Arc<Progress>,
) -> Result<Vec<Result<SyncReport, Failure>>, Failure> {
    let r = run(parts, opts, progress);
    match &r {
        Ok(lanes) => match lanes.iter().find_map(|l| l.as_ref().err()) {
            None => progress.set_phase(Phase::Done),
            Some(f) => progress.fail(&f.to_string()),
        },
        Err(f) => progress.fail(&f.to_string()),
    }
    r
}

/// A live lane as the scan loop drives it: its planner (borrowing the
/// prior) and the parts it changes (borrowed mutably from the lane).
struct Writer<'a> {
    planner: Planner<'a>,
    sink: &'a mut Box<dyn Sink>,
    stats: &'a mut PlanStats,
    /// Time spent handing writes to the sink.
    writing: &'a mut Duration,
}

/// One destination of a (fan-out) sync.
struct Lane {
    sink: Box<dyn Sink>,
    prior: Prior,
    generation: u64,
    stats: PlanStats,
    writing: Duration,
}

fn run(
    parts: Parts<'_>,
    opts: &PipelineOptions,
    progress: &Arc<Progress>,
) -> Result<Vec<Result<SyncReport, Failure>>, Failure> {
    let started = Instant::now();
    let Parts { source, geometry, source_id, sinks } = parts;
    progress.disk_size.store(geometry.disk_size(), Relaxed);
    let own;
    let pool = match &opts.shared {
        Some(s) => &*s.pool,
        None => {
            own = thread_pool(opts.threads)?;
            &own
        }
    };
    let pace = opts.read_limit.and_then(ReadPace::new);
    // Read each destination's prior state; a failure drops that
    // destination only.
    let mut lanes: Vec<Result<Lane, Failure>> = sinks
        .into_iter()
        .map(|sink| {
            let mut sink = sink?;
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
        let mut baseline: Option<&ChunkStates> = None;
        let mut active: Vec<Option<Writer<'_>>> = lanes
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
                Some(Writer { planner, sink, stats, writing })
            })
            .collect();
        let mut failures: Vec<Option<Failure>> = active.iter().map(|_| None).collect();
        let known = opts.hint.as_ref().zip(baseline).map(|(hint, baseline)| Known { hint, baseline });
        let mut scratch = AlignedBuf::default();
        let mut reread = 0u64;
        // A lane with nothing to compare with writes every data chunk: hash
        // a copy once rather than the mapping, then a copy again (`pin`).
        let copy = active.iter().flatten().any(|l| !l.planner.has_previous());
        let scan_opts =
            ScanOptions { known, copy, pace: pace.as_ref(), budget: opts.shared.as_ref().map(|s| &*s.budget) };
        let r = scan(source, geometry, pool, &scan_opts, |w| {
            count_scan(progress, &w);
            let plan_all = |active: &[Option<Writer<'_>>], states: &[ChunkState]| -> Vec<Option<Plan>> {
                active.iter().map(|l| l.as_ref().map(|l| l.planner.plan_window(w.first_chunk, states))).collect()
            };
            let mut plans = plan_all(&active, w.states);
            // A mapped window is written from a copy that hashes to its states.
            let mut restated = None;
            let w = if w.mapped {
                if let Pinned::Changed(now) =
                    pin(geometry, w.first_chunk, w.bytes, w.states, plans.iter().flatten(), &mut scratch)
                {
                    reread += 1;
                    plans = plan_all(&active, &now);
                    restated = Some(now);
                }
                WindowView { bytes: &scratch[..], states: restated.as_deref().unwrap_or(w.states), mapped: false, ..w }
            } else {
                w
            };
            for ((slot, failure), plan) in active.iter_mut().zip(failures.iter_mut()).zip(plans) {
                let (Some(lane), Some(plan)) = (slot.as_mut(), plan) else { continue };
                lane.stats.add(&plan.stats);
                count_plan(progress, &plan.stats);
                let t = Instant::now();
                let r = lane.sink.apply(&plan, &w);
                *lane.writing += t.elapsed();
                if let Err(f) = r {
                    *failure = Some(f);
                    *slot = None;
                }
            }
            if active.iter().all(Option::is_none) {
                return Err(Failure::new(ExitCode::Destination, anyhow!("every destination failed")));
            }
            Ok(restated)
        });
        if reread > 0 {
            eprintln!("warning: the source changed while it was read: {reread} window(s) of {} MiB read again; the manifest says what was written", crate::scan::WINDOW >> 20);
        }
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
    let created_unix_ms = crate::clock::unix_ms();
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
        chunks_zero: plan_stats.chunks_zero,
        chunks_unchanged: plan_stats.chunks_unchanged,
        chunks_written: plan_stats.chunks_written,
        chunks_cleared: plan_stats.chunks_cleared,
        chunks_suspect,
        bytes_zero: plan_stats.bytes_zero,
        bytes_unchanged: plan_stats.bytes_unchanged,
        bytes_written: plan_stats.bytes_written,
        bytes_cleared: plan_stats.bytes_cleared,
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
}

/// What one destination's plan for a window does (summed over destinations).
fn count_plan(p: &Progress, plan: &PlanStats) {
    Progress::add(&p.bytes_zero, plan.bytes_zero);
    Progress::add(&p.bytes_unchanged, plan.bytes_unchanged);
    Progress::add(&p.bytes_written, plan.bytes_written);
    Progress::add(&p.bytes_cleared, plan.bytes_cleared);
}
