//! Bytes that hold still while they are written. A mapped source is hashed
//! where it lies, without a copy; if something else writes the source
//! meanwhile (a live image file), the bytes a sink would read from the
//! mapping are no longer the bytes the manifest's digest was taken of, and
//! the destination silently disagrees with its own manifest.
//!
//! So before a window's plans are applied, every chunk one of them writes is
//! copied out of the mapping and hashed again, and the sinks write the
//! copies. When each copy hashes to its scanned state (the usual case) that
//! is all. When one does not, the source changed while it was read: the
//! whole window is copied and hashed anew, and the caller plans it again with
//! the new states. Either way the manifest says what the sinks wrote, and
//! only the written chunks cost a second hash.
//!
//! Sources read with `pread` already hash their own copy; they need none of
//! this.

use crate::buf::AlignedBuf;
use diskferry_core::geometry::Geometry;
use diskferry_core::manifest::ChunkState;
use diskferry_core::plan::Plan;

/// What [`pin`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pinned {
    /// Every written chunk's copy hashes to its scanned state.
    Same,
    /// The source changed under the scan: these are the states of the whole
    /// window as copied, to plan again with.
    Changed(Vec<ChunkState>),
}

/// Copy the chunks `plans` write from `bytes` (a window at chunk
/// `first_chunk`) into `scratch`, and check them against `states`; see the
/// module text. `scratch` then holds the bytes to write, at the window's
/// offsets (chunks nothing writes are left unspecified).
pub fn pin<'p>(
    geometry: Geometry,
    first_chunk: u64,
    bytes: &[u8],
    states: &[ChunkState],
    plans: impl IntoIterator<Item = &'p Plan>,
    scratch: &mut AlignedBuf,
) -> Pinned {
    let chunk = geometry.chunk_size().get() as usize;
    let offset = geometry.chunk_range(first_chunk).start;
    let mut written = vec![false; states.len()];
    for plan in plans {
        for w in &plan.writes {
            let a = (w.start - offset) as usize / chunk;
            let b = ((w.end - offset) as usize).div_ceil(chunk);
            written[a.min(states.len())..b.min(states.len())].fill(true);
        }
    }
    scratch.set_len(bytes.len());
    // On the caller's thread: the pool is busy hashing the windows ahead,
    // and an incremental sync writes little of what it reads.
    let held = scratch.chunks_mut(chunk).zip(bytes.chunks(chunk)).zip(states).zip(&written).all(
        |(((copy, src), state), &w)| {
            if !w {
                return true;
            }
            copy.copy_from_slice(src);
            ChunkState::of(copy) == *state
        },
    );
    if held {
        return Pinned::Same;
    }
    let states = scratch
        .chunks_mut(chunk)
        .zip(bytes.chunks(chunk))
        .map(|(copy, src)| {
            copy.copy_from_slice(src);
            ChunkState::of(copy)
        })
        .collect();
    Pinned::Changed(states)
}

#[cfg(test)]
mod tests {
    use super::*;
    use diskferry_core::geometry::ChunkSize;
    use diskferry_core::plan::{Baseline, Planner};

    const CHUNK: u64 = 1 << 20;

    fn geometry(len: u64) -> Geometry {
        Geometry::new(len, ChunkSize::new(CHUNK).unwrap()).unwrap()
    }

    fn window(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 4099) as u8).collect()
    }

    fn states(bytes: &[u8]) -> Vec<ChunkState> {
        bytes.chunks(CHUNK as usize).map(ChunkState::of).collect()
    }

    #[test]
    fn unchanged_bytes_are_copied_where_plans_write() {
        let bytes = window(4 * CHUNK as usize);
        let g = geometry(bytes.len() as u64);
        let s = states(&bytes);
        let plan = Planner::new(Baseline::Empty, g).plan_window(0, &s);
        let mut scratch = AlignedBuf::default();
        assert_eq!(pin(g, 0, &bytes, &s, [&plan], &mut scratch), Pinned::Same);
        assert_eq!(&scratch[..], &bytes[..]);
    }

    #[test]
    fn a_chunk_that_changed_after_its_hash_restates_the_window() {
        let before = window(4 * CHUNK as usize);
        let g = geometry(before.len() as u64);
        let s = states(&before);
        let plan = Planner::new(Baseline::Empty, g).plan_window(0, &s);
        // Chunk 2 changes between the scan's hash and the write.
        let mut now = before.clone();
        now[2 * CHUNK as usize + 5] ^= 0xff;
        let mut scratch = AlignedBuf::default();
        let Pinned::Changed(restated) = pin(g, 0, &now, &s, [&plan], &mut scratch) else {
            panic!("the change went unseen")
        };
        assert_eq!(restated, states(&now));
        assert_ne!(restated[2], s[2]);
        assert_eq!(&scratch[..], &now[..], "the whole window is copied");
    }

    #[test]
    fn a_change_to_a_chunk_nothing_writes_costs_nothing() {
        let before = window(4 * CHUNK as usize);
        let g = geometry(before.len() as u64);
        let s = states(&before);
        // Chunks 0 and 1 are unchanged at the destination: only 2 and 3 are written.
        let prior = vec![s[0], s[1], ChunkState::Zero, ChunkState::Zero].into();
        let plan = Planner::new(Baseline::Previous { geometry: g, chunks: &prior }, g).plan_window(0, &s);
        let mut now = before.clone();
        now[5] ^= 0xff;
        let mut scratch = AlignedBuf::default();
        assert_eq!(pin(g, 0, &now, &s, [&plan], &mut scratch), Pinned::Same);
        assert_eq!(&scratch[2 * CHUNK as usize..], &before[2 * CHUNK as usize..]);
    }
}
