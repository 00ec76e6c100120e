//! The parallel scan: a disk is walked in windows of [`WINDOW`] bytes; within
//! a window the chunks are read, zero-checked and hashed on the rayon pool,
//! then handed, bytes and states together, to the caller (a sink writes the
//! dirty ones straight from the window). One window is alive at a time, so
//! memory stays at one window whatever the disk size; the manifest (33 bytes
//! per chunk) is the only thing that grows with the disk.
//!
//! Chunks that lie wholly in a hole of a sparse file are zero without being
//! read. While one window is processed the kernel is asked to read ahead the
//! next.

use std::ops::Range;

use anyhow::anyhow;
use diskferry_core::geometry::Geometry;
use diskferry_core::manifest::ChunkState;
use rayon::prelude::*;

use crate::exit::{ExitCode, Failure};
use crate::source::BlockSource;

/// Bytes per window: a whole number of 4 MiB writes (so coalesced writes never
/// straddle windows needlessly) and enough chunks to keep every core busy,
/// small enough to bound memory at 32 MiB of mapped or buffered data.
pub const WINDOW: u64 = 32 << 20;

/// One window of the disk, handed to the caller after it is hashed.
#[derive(Debug)]
pub struct WindowView<'a> {
    /// Index of the first chunk in the window.
    pub first_chunk: u64,
    /// Disk offset of `bytes[0]`.
    pub offset: u64,
    pub states: &'a [ChunkState],
    /// The window's bytes; only chunks that are not in a hole were read.
    pub bytes: &'a [u8],
}

/// What a scan read and found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ScanStats {
    pub chunks: u64,
    pub zero_chunks: u64,
    pub data_chunks: u64,
    /// Chunks skipped without a read because they lie in a hole.
    pub hole_chunks: u64,
    pub bytes_read: u64,
    pub bytes_hashed: u64,
}

/// Scan `source` under `geometry`, calling `on_window` for each window in
/// order. Returns every chunk's state.
pub fn scan(
    source: &dyn BlockSource,
    geometry: Geometry,
    pool: &rayon::ThreadPool,
    mut on_window: impl FnMut(WindowView<'_>) -> Result<(), Failure>,
) -> Result<(Vec<ChunkState>, ScanStats), Failure> {
    let chunk = geometry.chunk_size().get();
    let mut states = Vec::with_capacity(geometry.chunk_count() as usize);
    let mut stats = ScanStats::default();
    let mut buf: Vec<u8> = Vec::new();
    let disk = geometry.disk_size();
    let mut offset = 0;
    while offset < disk {
        let end = (offset + WINDOW).min(disk);
        if end < disk {
            source.prefetch(end..(end + WINDOW).min(disk));
        }
        let chunks = geometry.chunks_in(offset..end);
        let first = chunks.start;
        let holes = hole_flags(source, geometry, chunks.clone()).map_err(|e| read_failure(e, offset))?;
        let mut window = vec![ChunkState::Zero; (chunks.end - chunks.start) as usize];

        let map = source.map(offset..end).transpose().map_err(|e| read_failure(e, offset))?;
        let bytes: &[u8] = match &map {
            Some(m) => {
                pool.install(|| {
                    window.par_iter_mut().zip(&holes).enumerate().for_each(|(k, (state, &hole))| {
                        if !hole {
                            let r = local(geometry.chunk_range(first + k as u64), offset);
                            *state = ChunkState::of(&m[r]);
                        }
                    })
                });
                m
            }
            None => {
                buf.resize((end - offset) as usize, 0);
                pool.install(|| {
                    buf.par_chunks_mut(chunk as usize).zip(window.par_iter_mut()).zip(&holes).enumerate().try_for_each(
                        |(k, ((slice, state), &hole))| {
                            if hole {
                                return Ok(());
                            }
                            let at = offset + k as u64 * chunk;
                            source.read_exact_at(at, slice).map_err(|e| read_failure(e, at))?;
                            *state = ChunkState::of(slice);
                            Ok::<(), Failure>(())
                        },
                    )
                })?;
                &buf
            }
        };

        for (k, (state, &hole)) in window.iter().zip(&holes).enumerate() {
            let r = geometry.chunk_range(first + k as u64);
            let len = r.end - r.start;
            stats.chunks += 1;
            if hole {
                stats.hole_chunks += 1;
            } else {
                stats.bytes_read += len;
            }
            if state.is_zero() {
                stats.zero_chunks += 1;
            } else {
                stats.data_chunks += 1;
                stats.bytes_hashed += len;
            }
        }
        on_window(WindowView { first_chunk: first, offset, states: &window, bytes })?;
        states.extend_from_slice(&window);
        offset = end;
    }
    Ok((states, stats))
}

fn local(r: Range<u64>, base: u64) -> Range<usize> {
    (r.start - base) as usize..(r.end - base) as usize
}

fn read_failure(e: std::io::Error, offset: u64) -> Failure {
    Failure::new(ExitCode::Source, anyhow!("read error at offset {offset}: {e}"))
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
