//! Reading a destination back: list its recovery points, download one as a
//! sparse local VHD, verify one against a source chunk by chunk.
//!
//! Downloads fetch only allocated page ranges (Get Page Ranges), in requests
//! of at most 4 MiB with a bounded number in flight; verify reads the
//! destination's bytes back (it does not trust the manifest) and compares
//! blake3 digests per chunk with the source's.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;

use anyhow::{anyhow, Context};
use diskferry_core::geometry::{round_up_mib, ChunkSize, Geometry};
use diskferry_core::manifest::ChunkState;
use diskferry_core::vhd::FOOTER_LEN;
use futures::stream::{self, StreamExt, TryStreamExt};

use diskferry_blob::PageStore;

use crate::exit::{ExitCode, Failure, WithCode};
use crate::open::{open_source, BlobAccess};
use crate::pageblob::points::RecoveryPoint;
use crate::pageblob::sink::PageBlobSink;
use crate::scan::scan;
use crate::source::{ReadMode, SourceName};
use crate::sync::thread_pool;

/// Pick recovery point `g` (or the newest).
pub fn pick(points: &[RecoveryPoint], g: Option<u64>, what: &str) -> Result<RecoveryPoint, Failure> {
    let p = match g {
        Some(g) => points.iter().find(|p| p.generation == g),
        None => points.last(),
    };
    p.cloned().ok_or_else(|| {
        let have: Vec<String> = points.iter().map(|p| p.generation.to_string()).collect();
        Failure::new(
            ExitCode::Destination,
            match g {
                Some(g) => anyhow!("{what} has no recovery point {g} (it has: {})", have.join(", ")),
                None => anyhow!("{what} has no recovery point yet"),
            },
        )
    })
}

pub use diskferry_core::report::DownloadReport;

/// Write recovery point `g` of a page blob to `to` as a sparse fixed VHD.
pub fn download<S: PageStore>(
    sink: &PageBlobSink<S>,
    g: Option<u64>,
    to: &Path,
    concurrency: usize,
) -> Result<DownloadReport, Failure> {
    let started = std::time::Instant::now();
    let point = pick(&sink.points()?, g, &Sink::describe(sink))?;
    let total = round_up_mib(point.disk_size) + FOOTER_LEN as u64;
    let store = sink.store();
    let snap = Some(point.snapshot.as_str());
    let ranges = sink.runtime().block_on(store.page_ranges(sink.blob(), snap)).map_err(Failure::from)?;
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(to)
        .with_context(|| format!("cannot create {}", to.display()))
        .code(ExitCode::Destination)?;
    file.set_len(total).code(ExitCode::Destination)?;
    let pieces: Vec<(u64, u64)> = ranges
        .iter()
        .flat_map(|&(s, e)| {
            let e = e.min(total);
            (s..e).step_by(diskferry_core::MAX_WRITE as usize).map(move |o| (o, (e - o).min(diskferry_core::MAX_WRITE)))
        })
        .collect();
    let fetched: u64 = sink.runtime().block_on(async {
        stream::iter(pieces.iter().copied())
            .map(|(o, n)| async move { store.read(sink.blob(), snap, o, n).await.map(|b| (o, b)) })
            .buffer_unordered(concurrency.max(1))
            .map_err(Failure::from)
            .try_fold(0u64, |acc, (o, b)| {
                let r = file
                    .write_all_at(&b, o)
                    .with_context(|| format!("cannot write {}", to.display()))
                    .code(ExitCode::Destination)
                    .map(|_| acc + b.len() as u64);
                async move { r }
            })
            .await
    })?;
    file.sync_all().code(ExitCode::Destination)?;
    Ok(DownloadReport {
        generation: point.generation,
        bytes: total,
        bytes_fetched: fetched,
        ranges: ranges.len(),
        seconds: started.elapsed().as_secs_f64(),
    })
}

use crate::sink::Sink;

/// What verify found.
#[derive(Debug, serde::Serialize)]
pub struct VerifyReport {
    pub generation: u64,
    pub chunks: u64,
    pub chunks_compared: u64,
    pub bytes_fetched: u64,
    /// Offsets of chunks whose content differs.
    pub mismatches: Vec<u64>,
    pub size_matches: bool,
    pub identical: bool,
}

/// Compare `source` with recovery point `g` of a page blob, chunk by chunk.
pub fn verify<S: PageStore>(
    source: &SourceName,
    access: &BlobAccess,
    sink: &PageBlobSink<S>,
    g: Option<u64>,
    chunk: ChunkSize,
    threads: usize,
    concurrency: usize,
) -> Result<VerifyReport, Failure> {
    let point = pick(&sink.points()?, g, &Sink::describe(sink))?;
    let (src, geometry) = open_source(source, ReadMode::Auto, chunk, access)?;
    let pool = thread_pool(threads)?;
    let (states, _) = scan(&*src, geometry, &pool, &Default::default(), |_| Ok(None))?;
    let dest_geo = Geometry::new(point.disk_size, chunk).code(ExitCode::Destination)?;
    let size_matches = dest_geo.disk_size() == geometry.disk_size();
    let store = sink.store();
    let snap = Some(point.snapshot.as_str());
    let ranges = sink.runtime().block_on(store.page_ranges(sink.blob(), snap)).map_err(Failure::from)?;
    let allocated = |r: std::ops::Range<u64>| ranges.iter().any(|&(s, e)| s < r.end && e > r.start);
    let count = geometry.chunk_count().min(dest_geo.chunk_count());
    let results: Vec<(u64, ChunkState, u64)> = sink.runtime().block_on(async {
        stream::iter(0..count)
            .map(|i| {
                let r = dest_geo.chunk_range(i);
                async move {
                    if !allocated(r.clone()) {
                        return Ok::<_, diskferry_blob::StoreError>((i, ChunkState::Zero, 0));
                    }
                    let b = store.read(sink.blob(), snap, r.start, r.end - r.start).await?;
                    Ok((i, ChunkState::of(&b), b.len() as u64))
                }
            })
            .buffer_unordered(concurrency.max(1))
            .try_collect()
            .await
            .map_err(Failure::from)
    })?;
    let mut mismatches = Vec::new();
    let mut fetched = 0;
    for (i, state, n) in &results {
        fetched += n;
        if states.get(*i) != Some(*state) || geometry.chunk_range(*i) != dest_geo.chunk_range(*i) {
            mismatches.push(dest_geo.chunk_range(*i).start);
        }
    }
    mismatches.sort_unstable();
    if !size_matches {
        // Chunks only one side has count as different too.
        for i in count..geometry.chunk_count().max(dest_geo.chunk_count()) {
            mismatches.push(i * chunk.get());
        }
    }
    let identical = mismatches.is_empty() && size_matches;
    Ok(VerifyReport {
        generation: point.generation,
        chunks: geometry.chunk_count(),
        chunks_compared: count,
        bytes_fetched: fetched,
        mismatches,
        size_matches,
        identical,
    })
}

/// Make sure `to`'s folder exists.
pub fn check_folder(to: &Path) -> Result<(), Failure> {
    match to.parent() {
        Some(d) if !d.as_os_str().is_empty() && !d.is_dir() => {
            Err(Failure::new(ExitCode::Destination, anyhow!("folder {} does not exist", d.display())))
        }
        _ => Ok(()),
    }
}
