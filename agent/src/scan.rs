//! The parallel scan: a disk is walked in windows of [`WINDOW`] bytes; within
//! a window the chunks are read, zero-checked and hashed on the rayon pool,
//! then handed, bytes and states together, to the caller in disk order (a
//! sink writes the dirty ones straight from the window).
//!
//! Windows are pipelined: while the caller consumes window k on this thread,
//! the pool already hashes window k+1, so no core waits at a window boundary
//! and the sink's writes overlap the hashing. At most [`IN_FLIGHT`] windows
//! are alive, so memory stays at a few windows whatever the disk size; the
//! chunk states (`ChunkStates`: 36 bytes per data chunk, nothing for a run
//! of zero chunks) grow with the data the disk holds, not with its size.
//!
//! Chunks that lie wholly in a hole of a sparse file are zero without being
//! read. With pread the kernel is asked to read ahead the next window.
//!
//! A [`Known`] baseline (a range hint: what changed since a state whose chunk
//! states are known) skips every chunk the hint does not touch: its state is
//! the baseline's, and it is neither read nor hashed.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::mpsc;

use anyhow::anyhow;
use diskferry_core::geometry::Geometry;
use diskferry_core::job::RangeHint;
use diskferry_core::manifest::ChunkState;
use diskferry_core::states::ChunkStates;
use rayon::prelude::*;

use crate::buf::AlignedBuf;
use crate::exit::{ExitCode, Failure};
use crate::pace::{Permit, ReadPace, WindowBudget};
use crate::source::BlockSource;

/// Bytes per window: a whole number of 4 MiB writes (so coalesced writes
/// never straddle windows needlessly), 32 chunks of the default size to share
/// between cores.
pub const WINDOW: u64 = 32 << 20;
/// Windows hashed ahead of the one being consumed: one keeps every core busy
/// while the caller works; memory is `(IN_FLIGHT + 1) * WINDOW` at most.
pub const IN_FLIGHT: usize = 2;

/// One window of the disk, handed to the caller after it is hashed.
#[derive(Debug)]
pub struct WindowView<'a> {
    /// Index of the first chunk in the window.
    pub first_chunk: u64,
    /// Disk offset of `bytes[0]`.
    pub offset: u64,
    pub states: &'a [ChunkState],
    /// What this window read and found.
    pub stats: ScanStats,
    /// The window's bytes; only chunks that are not in a hole were read.
    pub bytes: &'a [u8],
    /// `bytes` are the source's mapping, not a copy: something else may
    /// change them after they were hashed (`crate::pin`).
    pub mapped: bool,
}

impl WindowView<'_> {
    /// The bytes of disk range `start..end`, which lies in this window.
    pub fn slice(&self, start: u64, end: u64) -> &[u8] {
        &self.bytes[(start - self.offset) as usize..(end - self.offset) as usize]
    }
}

/// What the caller of [`scan`] says of a window it consumed: `Some` when it
/// read the window again and these are its states now (`crate::pin`).
pub type Restated = Option<Vec<ChunkState>>;

/// What a scan read and found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ScanStats {
    pub chunks: u64,
    pub chunks_zero: u64,
    pub chunks_data: u64,
    /// Chunks skipped without a read because they lie in a hole.
    pub hole_chunks: u64,
    /// Chunks skipped without a read because the range hint leaves them out.
    pub hinted_chunks: u64,
    /// Their bytes.
    pub bytes_hinted: u64,
    pub bytes_read: u64,
    pub bytes_hashed: u64,
}

impl ScanStats {
    pub fn add(&mut self, o: &ScanStats) {
        self.chunks += o.chunks;
        self.chunks_zero += o.chunks_zero;
        self.chunks_data += o.chunks_data;
        self.hole_chunks += o.hole_chunks;
        self.hinted_chunks += o.hinted_chunks;
        self.bytes_hinted += o.bytes_hinted;
        self.bytes_read += o.bytes_read;
        self.bytes_hashed += o.bytes_hashed;
    }
}

/// Chunk states known without reading: everything a range hint leaves out
/// is as it was in `baseline`.
#[derive(Debug, Clone, Copy)]
pub struct Known<'a> {
    pub hint: &'a RangeHint,
    pub baseline: &'a ChunkStates,
}

/// How a chunk's state is found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// Read and hashed.
    Read,
    /// Wholly in a hole of the source: zero, not read.
    Hole,
    /// Left out by the range hint: the baseline's state, not read.
    Known,
}

/// A window on its way through the pool.
struct Window<'a> {
    first: u64,
    offset: u64,
    /// Per chunk.
    how: Vec<Origin>,
    states: Vec<ChunkState>,
    /// The window in the source's mapping, or `None` to read into `buf`.
    map: Option<&'a [u8]>,
    /// Page-aligned, so a file destination can write from it directly.
    buf: AlignedBuf,
}

/// A window on the pool, as it will come back hashed.
type Hashed<'a> = mpsc::Receiver<Result<Window<'a>, Failure>>;

impl Window<'_> {
    fn bytes(&self) -> &[u8] {
        self.map.unwrap_or(&self.buf[..])
    }

    /// Bytes of the source this window reads (not holes, not known).
    fn read_bytes(&self, geometry: Geometry) -> u64 {
        let first = self.first;
        self.how
            .iter()
            .enumerate()
            .filter(|(_, &h)| h == Origin::Read)
            .map(|(k, _)| geometry.chunk_range(first + k as u64))
            .map(|r| r.end - r.start)
            .sum()
    }
}

/// How a scan reads.
#[derive(Debug, Clone, Copy, Default)]
pub struct ScanOptions<'a> {
    /// Chunk states known without reading (a range hint).
    pub known: Option<Known<'a>>,
    /// Read a mapped source into buffers too, hashing the copy (for a sync
    /// that writes most of what it reads; see `crate::pin`).
    pub copy: bool,
    /// The source's read rate cap.
    pub pace: Option<&'a ReadPace>,
    /// The windows this scan shares with the other disks of a job.
    pub budget: Option<&'a WindowBudget>,
}

/// Scan `source` under `geometry`, calling `on_window` for each window in
/// disk order. Returns every chunk's state.
pub fn scan(
    source: &dyn BlockSource,
    geometry: Geometry,
    pool: &rayon::ThreadPool,
    opts: &ScanOptions<'_>,
    mut on_window: impl FnMut(WindowView<'_>) -> Result<Restated, Failure>,
) -> Result<(ChunkStates, ScanStats), Failure> {
    let ScanOptions { known, copy, pace, budget } = *opts;
    // Every chunk's state, as the disk holds data (zero runs cost nothing).
    let mut states = ChunkStates::new();
    let mut stats = ScanStats::default();
    let disk = geometry.disk_size();
    let mut spare: Vec<AlignedBuf> = Vec::new();

    pool.in_place_scope(|scope| {
        // Each window in flight with its share of the job's budget, given
        // back once the window has been consumed.
        let mut pending: VecDeque<(Hashed<'_>, Option<Permit<'_>>)> = VecDeque::new();
        let mut offset = 0;
        let mut consume = |rx: Hashed<'_>, spare: &mut Vec<AlignedBuf>| {
            let w = rx.recv().map_err(|_| Failure::new(ExitCode::Failure, anyhow!("scan worker vanished")))??;
            let window_stats = count(geometry, &w);
            stats.add(&window_stats);
            let restated = on_window(WindowView {
                first_chunk: w.first,
                offset: w.offset,
                states: &w.states,
                stats: window_stats,
                bytes: w.bytes(),
                mapped: w.map.is_some(),
            })?;
            states.extend_from_slice(restated.as_deref().unwrap_or(&w.states));
            source.release(w.offset..w.offset + w.bytes().len() as u64);
            spare.push(w.buf);
            Ok::<(), Failure>(())
        };
        while offset < disk {
            let end = (offset + WINDOW).min(disk);
            // None free: finish a window of our own first; wait only with
            // none in hand (then the other disks hold them all).
            let permit = match budget {
                None => None,
                Some(b) => Some(loop {
                    if let Some(p) = b.try_take() {
                        break p;
                    }
                    match pending.pop_front() {
                        Some((rx, _given_back)) => consume(rx, &mut spare)?,
                        None => break b.take(),
                    }
                }),
            };
            if end < disk {
                source.prefetch(end..(end + WINDOW).min(disk));
            }
            let window = prepare(source, geometry, offset..end, known, copy, spare.pop().unwrap_or_default())?;
            if let Some(p) = pace {
                p.take(window.read_bytes(geometry));
            }
            let (tx, rx) = mpsc::sync_channel(1);
            scope.spawn(move |_| {
                let _ = tx.send(hash_window(source, geometry, window));
            });
            pending.push_back((rx, permit));
            if pending.len() > IN_FLIGHT {
                if let Some((rx, _given_back)) = pending.pop_front() {
                    consume(rx, &mut spare)?;
                }
            }
            offset = end;
        }
        while let Some((rx, _given_back)) = pending.pop_front() {
            consume(rx, &mut spare)?;
        }
        Ok::<(), Failure>(())
    })?;
    Ok((states, stats))
}

/// Find the window's holes and map it (or size its buffer).
fn prepare<'a>(
    source: &'a dyn BlockSource,
    geometry: Geometry,
    bytes: Range<u64>,
    known: Option<Known<'_>>,
    copy: bool,
    mut buf: AlignedBuf,
) -> Result<Window<'a>, Failure> {
    let chunks = geometry.chunks_in(bytes.clone());
    let holes = hole_flags(source, geometry, chunks.clone()).map_err(|e| read_failure(e, bytes.start))?;
    let map = source.mapped().filter(|_| !copy).map(|m| &m[bytes.start as usize..bytes.end as usize]);
    if map.is_none() {
        buf.set_len((bytes.end - bytes.start) as usize);
    }
    let mut states = vec![ChunkState::Zero; holes.len()];
    let mut how: Vec<Origin> = holes.iter().map(|&h| if h { Origin::Hole } else { Origin::Read }).collect();
    if let Some(k) = known {
        for (j, i) in chunks.clone().enumerate() {
            let base = k.baseline.get(i);
            if let Some(b) = base.filter(|_| how[j] == Origin::Read && !k.hint.touches(geometry.chunk_range(i))) {
                states[j] = b;
                how[j] = Origin::Known;
            }
        }
    }
    if map.is_none() {
        source.fetch(&reads(geometry, chunks.start, &how));
    }
    Ok(Window { first: chunks.start, offset: bytes.start, how, states, map, buf })
}

/// The byte ranges of a window's chunks that are read, neighbours joined.
fn reads(geometry: Geometry, first: u64, how: &[Origin]) -> Vec<Range<u64>> {
    let mut out: Vec<Range<u64>> = Vec::new();
    for (k, _) in how.iter().enumerate().filter(|(_, &h)| h == Origin::Read) {
        let r = geometry.chunk_range(first + k as u64);
        match out.last_mut() {
            Some(last) if last.end == r.start => last.end = r.end,
            _ => out.push(r),
        }
    }
    out
}

/// Read (if not mapped), zero-check and hash every chunk of a window.
fn hash_window<'a>(source: &dyn BlockSource, geometry: Geometry, mut w: Window<'a>) -> Result<Window<'a>, Failure> {
    let chunk = geometry.chunk_size().get() as usize;
    let (first, offset) = (w.first, w.offset);
    match &w.map {
        Some(m) => w.states.par_iter_mut().zip(&w.how).enumerate().for_each(|(k, (state, &how))| {
            if how == Origin::Read {
                let r = geometry.chunk_range(first + k as u64);
                *state = ChunkState::of(&m[(r.start - offset) as usize..(r.end - offset) as usize]);
            }
        }),
        None => w.buf.par_chunks_mut(chunk).zip(w.states.par_iter_mut()).zip(&w.how).enumerate().try_for_each(
            |(k, ((slice, state), &how))| {
                if how != Origin::Read {
                    return Ok(());
                }
                let at = offset + (k * chunk) as u64;
                source.read_exact_at(at, slice).map_err(|e| read_failure(e, at))?;
                *state = ChunkState::of(slice);
                Ok::<(), Failure>(())
            },
        )?,
    }
    Ok(w)
}

fn count(geometry: Geometry, w: &Window<'_>) -> ScanStats {
    let mut stats = ScanStats::default();
    for (k, (state, &how)) in w.states.iter().zip(&w.how).enumerate() {
        let r = geometry.chunk_range(w.first + k as u64);
        let len = r.end - r.start;
        stats.chunks += 1;
        match how {
            Origin::Hole => stats.hole_chunks += 1,
            Origin::Known => {
                stats.hinted_chunks += 1;
                stats.bytes_hinted += len;
            }
            Origin::Read => stats.bytes_read += len,
        }
        if state.is_zero() {
            stats.chunks_zero += 1;
        } else {
            stats.chunks_data += 1;
            if how != Origin::Known {
                stats.bytes_hashed += len;
            }
        }
    }
    stats
}

fn read_failure(e: std::io::Error, offset: u64) -> Failure {
    crate::source::SourceError::Read { offset, source: e }.into()
}

/// For each chunk, whether it lies wholly outside every data extent.
fn hole_flags(source: &dyn BlockSource, geometry: Geometry, chunks: Range<u64>) -> std::io::Result<Vec<bool>> {
    let first = geometry.chunk_range(chunks.start).start;
    let last = geometry.chunk_range(chunks.end.saturating_sub(1).max(chunks.start)).end;
    let extents = source.data_extents(first..last)?;
    let mut flags = Vec::with_capacity((chunks.end - chunks.start) as usize);
    let mut e = extents.iter().peekable();
    for i in chunks {
        let r = geometry.chunk_range(i);
        while e.peek().is_some_and(|x| x.end <= r.start) {
            e.next();
        }
        flags.push(e.peek().is_none_or(|x| x.start >= r.end));
    }
    Ok(flags)
}
