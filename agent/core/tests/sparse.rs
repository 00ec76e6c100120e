//! A manifest costs what its disk holds (issue 21): a 16 TiB disk in 1 MiB
//! chunks (16 M chunks) with 100 MiB of data decodes, and is planned
//! against, within a few MiB (counted by this test binary's allocator).
//! Held as one state per chunk, it took 528 MiB.
#![allow(clippy::unwrap_used)]

use diskferry_core::digest::Digest;
use diskferry_core::geometry::{ChunkSize, Geometry};
use diskferry_core::manifest::{ChunkState, Manifest};
use diskferry_core::plan::{Baseline, Planner};
use diskferry_core::states::ChunkStates;

#[global_allocator]
static A: diskferry_testkit::alloc::Counting = diskferry_testkit::alloc::Counting;

#[test]
fn a_sparse_manifest_costs_what_its_disk_holds() {
    let geometry = Geometry::new(16 << 40, ChunkSize::default()).unwrap();
    let n = geometry.chunk_count();
    let data = |i: u64| ChunkState::Data(Digest::of(&i.to_le_bytes()));
    // 100 data chunks, spread over the disk.
    let mut chunks = ChunkStates::new();
    for k in 0..100u64 {
        chunks.push_zeros(k * (n / 100) - chunks.len());
        chunks.push(data(k));
    }
    chunks.push_zeros(n - chunks.len());
    let m = Manifest { geometry, generation: 3, created_unix_ms: 0, source_id: "vm/big".into(), chunks };
    let bytes = m.encode().unwrap();

    let before = diskferry_testkit::alloc::mark();
    let back = Manifest::decode_for(&bytes, geometry).unwrap();
    assert_eq!(back, m);
    assert_eq!(back.chunks.data_count(), 100);
    // Planned against: a window at the start, where the data is, and at the end.
    let planner = Planner::new(Baseline::Previous { geometry, chunks: &back.chunks }, geometry);
    for first in [0, 50 * (n / 100), n - 32] {
        let cur: Vec<ChunkState> = (first..first + 32).map(|i| back.chunks.get(i).unwrap()).collect();
        let plan = planner.plan_window(first, &cur);
        assert_eq!(plan.stats.chunks_written + plan.stats.chunks_cleared, 0, "unchanged is unchanged");
    }
    let peak = diskferry_testkit::alloc::peak_since(before);
    // The body's bitmap (2 MiB) and digests, decompressed once, are the most.
    assert!(peak < 8 << 20, "decoding and planning held {peak} bytes at the peak");
}
