//! `diff(prev, cur) -> Plan`: the writes and clears that turn what the
//! destination holds into the current image.
//!
//! The destination's prior content is a [`Baseline`]: known zero (a fresh
//! destination), unknown (a destination we cannot trust: every data chunk is
//! written and every zero chunk cleared), or the previous generation's
//! manifest, possibly with *suspect* chunks (written by an interrupted run
//! that no manifest describes) that are treated as unknown.
//!
//! For each current chunk:
//!
//! | current \ prior | zero      | same digest | other / unknown |
//! |-----------------|-----------|-------------|-----------------|
//! | zero            | unchanged | -           | clear           |
//! | data            | write     | unchanged   | write           |
//!
//! Adjacent writes are coalesced into ranges of at most [`MAX_WRITE`] bytes,
//! adjacent clears into one range each; every boundary is a chunk boundary or
//! the disk end, so all are 512-byte aligned. The destination is resized to
//! the current disk size before the plan runs: bytes past the old end read as
//! zero, and a chunk whose extent changed is never trusted.
//!
//! [`Planner::plan_window`] plans a window of chunks at a time so the agent can
//! stream a disk through bounded memory; [`diff`] plans a whole disk.

use crate::geometry::Geometry;
use crate::manifest::ChunkState;
use crate::states::ChunkStates;
use crate::MAX_WRITE;

/// A half-open byte range `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ByteRange {
    pub start: u64,
    pub end: u64,
}

impl ByteRange {
    pub fn new(start: u64, end: u64) -> Self {
        debug_assert!(start <= end);
        Self { start, end }
    }

    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }
}

/// A set of chunk indices (a plain bitset: 1 bit per chunk).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChunkSet {
    bits: Vec<u64>,
}

impl ChunkSet {
    pub fn insert_range(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        let last = ((end - 1) / 64) as usize;
        if self.bits.len() <= last {
            self.bits.resize(last + 1, 0);
        }
        let mut i = start;
        while i < end {
            let (w, b) = ((i / 64) as usize, i % 64);
            let n = (64 - b).min(end - i);
            let mask = if n == 64 { u64::MAX } else { ((1u64 << n) - 1) << b };
            self.bits[w] |= mask;
            i += n;
        }
    }

    pub fn remove_range(&mut self, start: u64, end: u64) {
        for i in start..end.min(self.bits.len() as u64 * 64) {
            self.bits[(i / 64) as usize] &= !(1 << (i % 64));
        }
    }

    pub fn contains(&self, i: u64) -> bool {
        self.bits.get((i / 64) as usize).is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    pub fn len(&self) -> u64 {
        self.bits.iter().map(|w| u64::from(w.count_ones())).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The set as ascending, maximal runs `[start, end)`.
    pub fn runs(&self) -> Vec<(u64, u64)> {
        let mut out: Vec<(u64, u64)> = Vec::new();
        for (w, &word) in self.bits.iter().enumerate() {
            let mut bits = word;
            while bits != 0 {
                let i = w as u64 * 64 + u64::from(bits.trailing_zeros());
                bits &= bits - 1;
                match out.last_mut() {
                    Some(last) if last.1 == i => last.1 = i + 1,
                    _ => out.push((i, i + 1)),
                }
            }
        }
        out
    }
}

/// What an interrupted run of this generation left behind (from its
/// journal): chunks it may have touched, and chunks storage acknowledged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    suspect: ChunkSet,
    acked: std::collections::HashMap<u64, ChunkState>,
}

impl Overrides {
    /// Chunks `first..end` may hold anything.
    pub fn mark_suspect(&mut self, first: u64, end: u64) {
        self.suspect.insert_range(first, end);
        if !self.acked.is_empty() {
            for i in first..end {
                self.acked.remove(&i);
            }
        }
    }

    /// Chunks `first..end` hold `state`.
    pub fn mark_acked(&mut self, first: u64, end: u64, state: ChunkState) {
        for i in first..end {
            self.acked.insert(i, state);
        }
        self.suspect.remove_range(first, end);
    }

    pub fn is_suspect(&self, i: u64) -> bool {
        self.suspect.contains(i)
    }

    pub fn acked(&self, i: u64) -> Option<ChunkState> {
        self.acked.get(&i).copied()
    }

    /// Forget what the acks say (they were for another disk size): every
    /// acked chunk becomes suspect.
    pub fn distrust_acks(&mut self) {
        for (&i, _) in std::mem::take(&mut self.acked).iter() {
            self.suspect.insert_range(i, i + 1);
        }
    }

    pub fn suspect_count(&self) -> u64 {
        self.suspect.len()
    }

    pub fn acked_count(&self) -> u64 {
        self.acked.len() as u64
    }

    /// Suspect chunks as ascending runs `[first, end)`.
    pub fn suspect_runs(&self) -> Vec<(u64, u64)> {
        self.suspect.runs()
    }

    /// Acked chunks and their states, by ascending index.
    pub fn acked_chunks(&self) -> Vec<(u64, ChunkState)> {
        let mut v: Vec<(u64, ChunkState)> = self.acked.iter().map(|(&i, &s)| (i, s)).collect();
        v.sort_unstable_by_key(|&(i, _)| i);
        v
    }
}

/// What the destination holds before this generation is written.
#[derive(Debug, Clone, Copy)]
pub enum Baseline<'a> {
    /// Every byte reads as zero (a destination created for this sync).
    Empty,
    /// Nothing can be trusted: write every data chunk, clear every zero chunk.
    Unknown,
    /// The previous generation: `chunks` under `geometry` (same chunk size as
    /// the current disk).
    Previous { geometry: Geometry, chunks: &'a ChunkStates },
}

/// What one plan does, counted per chunk and per byte.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
/// What a plan does with each chunk, in the one vocabulary every report
/// uses; the four chunk counts partition the chunks planned.
pub struct PlanStats {
    /// Zero now, and known zero at the destination: nothing to do.
    pub chunks_zero: u64,
    /// Data whose digest the destination already holds: nothing to do.
    pub chunks_unchanged: u64,
    /// Data the destination does not hold: written.
    pub chunks_written: u64,
    /// Zero now, maybe not at the destination: cleared.
    pub chunks_cleared: u64,
    pub bytes_zero: u64,
    pub bytes_unchanged: u64,
    pub bytes_written: u64,
    pub bytes_cleared: u64,
}

impl PlanStats {
    pub fn add(&mut self, o: &PlanStats) {
        self.chunks_zero += o.chunks_zero;
        self.chunks_unchanged += o.chunks_unchanged;
        self.chunks_written += o.chunks_written;
        self.chunks_cleared += o.chunks_cleared;
        self.bytes_zero += o.bytes_zero;
        self.bytes_unchanged += o.bytes_unchanged;
        self.bytes_written += o.bytes_written;
        self.bytes_cleared += o.bytes_cleared;
    }
}

/// Writes and clears for some chunks of the current disk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Ranges whose current bytes must be written, each at most 4 MiB.
    pub writes: Vec<ByteRange>,
    /// Ranges that must read as zero afterwards.
    pub clears: Vec<ByteRange>,
    pub stats: PlanStats,
}

impl Plan {
    /// Add one chunk's write or clear, merged into the range before it as
    /// the planner merges (writes up to 4 MiB, clears unbounded).
    pub(crate) fn push(&mut self, kind: Step, r: ByteRange) {
        match kind {
            Step::Write => {
                self.stats.chunks_written += 1;
                self.stats.bytes_written += r.len();
                match self.writes.last_mut() {
                    Some(last) if last.end == r.start && last.len() + r.len() <= MAX_WRITE => last.end = r.end,
                    _ => self.writes.push(r),
                }
            }
            Step::Clear => {
                self.stats.chunks_cleared += 1;
                self.stats.bytes_cleared += r.len();
                match self.clears.last_mut() {
                    Some(last) if last.end == r.start => last.end = r.end,
                    _ => self.clears.push(r),
                }
            }
        }
    }

    /// Append a later window's plan (ranges are not merged across the seam).
    pub fn extend(&mut self, other: Plan) {
        self.writes.extend(other.writes);
        self.clears.extend(other.clears);
        self.stats.add(&other.stats);
    }
}

#[derive(Clone, Copy)]
pub(crate) enum Step {
    Write,
    Clear,
}

enum Prior {
    Zero,
    Data(crate::digest::Digest),
    Unknown,
}

/// Plans the current disk window by window against one baseline.
#[derive(Debug, Clone, Copy)]
pub struct Planner<'a> {
    baseline: Baseline<'a>,
    overrides: Option<&'a Overrides>,
    cur: Geometry,
}

impl<'a> Planner<'a> {
    pub fn new(baseline: Baseline<'a>, cur: Geometry) -> Self {
        if let Baseline::Previous { geometry, .. } = baseline {
            assert_eq!(geometry.chunk_size(), cur.chunk_size(), "baseline with another chunk size");
        }
        Self { baseline, overrides: None, cur }
    }

    /// Apply what an interrupted run of this generation left (acks hold for
    /// the current geometry only; see [`Overrides::distrust_acks`]).
    pub fn with_overrides(mut self, overrides: &'a Overrides) -> Self {
        self.overrides = Some(overrides);
        self
    }

    /// Whether this plans against a previous generation (an incremental
    /// sync), not against nothing or an empty destination.
    pub fn has_previous(&self) -> bool {
        matches!(self.baseline, Baseline::Previous { .. })
    }

    fn prior(&self, i: u64) -> Prior {
        if let Some(o) = self.overrides {
            match o.acked(i) {
                Some(ChunkState::Zero) => return Prior::Zero,
                Some(ChunkState::Data(d)) => return Prior::Data(d),
                None if o.is_suspect(i) => return Prior::Unknown,
                None => {}
            }
        }
        match self.baseline {
            Baseline::Empty => Prior::Zero,
            Baseline::Unknown => Prior::Unknown,
            Baseline::Previous { geometry, chunks } => {
                match chunks.get(i) {
                    // Past the old end: the resize left zeros there.
                    None => Prior::Zero,
                    // A zero prefix followed by resize zeros is still zero.
                    Some(ChunkState::Zero) => Prior::Zero,
                    Some(ChunkState::Data(d)) if geometry.chunk_range(i) == self.cur.chunk_range(i) => Prior::Data(d),
                    Some(ChunkState::Data(_)) => Prior::Unknown,
                }
            }
        }
    }

    /// Plan chunks `first .. first + cur.len()` of the current disk.
    pub fn plan_window(&self, first: u64, cur: &[ChunkState]) -> Plan {
        let mut plan = Plan::default();
        for (k, state) in cur.iter().enumerate() {
            let i = first + k as u64;
            let r = self.cur.chunk_range(i);
            let r = ByteRange::new(r.start, r.end);
            let prior = self.prior(i);
            match (state, prior) {
                (ChunkState::Zero, Prior::Zero) => {
                    plan.stats.chunks_zero += 1;
                    plan.stats.bytes_zero += r.len();
                }
                (ChunkState::Zero, _) => plan.push(Step::Clear, r),
                (ChunkState::Data(d), Prior::Data(p)) if *d == p => {
                    plan.stats.chunks_unchanged += 1;
                    plan.stats.bytes_unchanged += r.len();
                }
                (ChunkState::Data(_), _) => plan.push(Step::Write, r),
            }
        }
        plan
    }
}

/// Plan a whole disk: `prev` under `prev_geo` to `cur` under `cur_geo`.
pub fn diff(prev_geo: Geometry, prev: &ChunkStates, cur_geo: Geometry, cur: &[ChunkState]) -> Plan {
    Planner::new(Baseline::Previous { geometry: prev_geo, chunks: prev }, cur_geo).plan_window(0, cur)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geometry::ChunkSize;
    use crate::SECTOR;
    use proptest::prelude::*;

    const C: u64 = 64 << 10;

    fn geo(size: u64, chunk: u64) -> Geometry {
        Geometry::new(size, ChunkSize::new(chunk).unwrap()).unwrap()
    }

    fn states(g: Geometry, img: &[u8]) -> Vec<ChunkState> {
        (0..g.chunk_count())
            .map(|i| {
                let r = g.chunk_range(i);
                ChunkState::of(&img[r.start as usize..r.end as usize])
            })
            .collect()
    }

    /// Apply `plan` to `dest` (already resized), copying from `cur`.
    fn apply(plan: &Plan, dest: &mut [u8], cur: &[u8]) {
        for w in &plan.writes {
            dest[w.start as usize..w.end as usize].copy_from_slice(&cur[w.start as usize..w.end as usize]);
        }
        for c in &plan.clears {
            dest[c.start as usize..c.end as usize].fill(0);
        }
    }

    fn check_shape(plan: &Plan, size: u64) {
        let mut all: Vec<ByteRange> = plan.writes.iter().chain(&plan.clears).copied().collect();
        all.sort();
        for w in all.windows(2) {
            assert!(w[0].end <= w[1].start, "overlap {w:?}");
        }
        for r in &plan.writes {
            assert!(r.len() <= MAX_WRITE && !r.is_empty());
        }
        for r in all {
            assert!(r.start % SECTOR == 0 && r.end % SECTOR == 0 && r.end <= size, "{r:?}");
        }
    }

    /// An image built from a chunk pattern: 0 = zero chunk, k = data pattern k.
    fn image(size: u64, chunk: u64, pattern: &[u8], salt: u8) -> Vec<u8> {
        let mut img = vec![0u8; size as usize];
        for (i, c) in img.chunks_mut(chunk as usize).enumerate() {
            let p = pattern.get(i).copied().unwrap_or(0);
            if p != 0 {
                // Data only in one sector, so equal patterns give equal chunks
                // and the rest stays zero like a real sparse disk.
                let at = (usize::from(p) * 512) % c.len();
                c[at] = p;
                c[c.len() - 1] ^= salt;
            }
        }
        img
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn applying_the_plan_yields_the_current_image(
            chunk_shift in 16u32..19,
            prev_sectors in 0u64..2048,
            cur_sectors in 0u64..2048,
            prev_pat in proptest::collection::vec(0u8..4, 0..24),
            cur_pat in proptest::collection::vec(0u8..4, 0..24),
            suspects in proptest::collection::vec(0u64..24, 0..4),
            acks in proptest::collection::vec(0u64..24, 0..4),
        ) {
            let chunk = 1u64 << chunk_shift;
            let (ps, cs) = (prev_sectors * SECTOR, cur_sectors * SECTOR);
            let (pg, cg) = (geo(ps, chunk), geo(cs, chunk));
            let prev = image(ps, chunk, &prev_pat, 0);
            let cur = image(cs, chunk, &cur_pat, 0);
            let (prev_m, cur_m) = (states(pg, &prev), states(cg, &cur));

            // The destination after resize: prev cut or zero-extended.
            let mut dest = prev.clone();
            dest.resize(cs as usize, 0);
            // Chunks an interrupted run scribbled on, and chunks it finished
            // (acked with their current state, so they are not resent).
            let mut o = Overrides::default();
            for &s in &suspects {
                o.mark_suspect(s, s + 1);
                let r = cg.chunk_range(s);
                if r.start < r.end {
                    dest[r.start as usize..r.end as usize].fill(0xAB);
                }
            }
            for &a in &acks {
                if a < cg.chunk_count() && !o.is_suspect(a) {
                    let r = cg.chunk_range(a);
                    dest[r.start as usize..r.end as usize].copy_from_slice(&cur[r.start as usize..r.end as usize]);
                    o.mark_acked(a, a + 1, cur_m[a as usize]);
                }
            }
            let suspect = &o;
            let prev_states = ChunkStates::from(prev_m.clone());
            let planner = Planner::new(Baseline::Previous { geometry: pg, chunks: &prev_states }, cg).with_overrides(&o);
            let plan = planner.plan_window(0, &cur_m);
            check_shape(&plan, cs);
            apply(&plan, &mut dest, &cur);
            prop_assert!(dest == cur);

            // Only chunks whose state changed cost bytes (suspects aside).
            let changed: u64 = (0..cg.chunk_count())
                .filter(|&i| !cur_m[i as usize].is_zero())
                .filter(|&i| suspect.acked(i) != Some(cur_m[i as usize]))
                .filter(|&i| suspect.is_suspect(i) || suspect.acked(i).is_some() || prev_m.get(i as usize) != Some(&cur_m[i as usize]) || pg.chunk_range(i) != cg.chunk_range(i))
                .map(|i| { let r = cg.chunk_range(i); r.end - r.start })
                .sum();
            prop_assert_eq!(plan.stats.bytes_written, changed);
            let s = plan.stats;
            prop_assert_eq!(s.chunks_zero + s.chunks_unchanged + s.chunks_written + s.chunks_cleared, cg.chunk_count());
            prop_assert_eq!(s.bytes_zero + s.bytes_unchanged + s.bytes_written + s.bytes_cleared, cg.disk_size());

            // Window by window gives the same writes and clears as one pass
            // (windows are a whole number of 4 MiB, as the agent uses them).
            let per = (MAX_WRITE / chunk) as usize;
            let mut windowed = Plan::default();
            for (k, w) in cur_m.chunks(per.max(1)).enumerate() {
                windowed.extend(planner.plan_window((k * per) as u64, w));
            }
            prop_assert_eq!(windowed, plan);
        }

        #[test]
        fn unknown_baseline_overwrites_anything(
            sectors in 0u64..1024,
            pat in proptest::collection::vec(0u8..4, 0..12),
            junk in any::<u8>(),
        ) {
            let cs = sectors * SECTOR;
            let g = geo(cs, C);
            let cur = image(cs, C, &pat, 1);
            let mut dest = vec![junk; cs as usize];
            let plan = Planner::new(Baseline::Unknown, g).plan_window(0, &states(g, &cur));
            check_shape(&plan, cs);
            apply(&plan, &mut dest, &cur);
            prop_assert!(dest == cur);
        }
    }

    #[test]
    fn chunk_sets_cover_exactly_their_ranges() {
        let mut s = ChunkSet::default();
        s.insert_range(60, 200);
        s.insert_range(5, 5);
        s.insert_range(256, 257);
        assert_eq!(s.len(), 141);
        assert!(!s.contains(59) && s.contains(60) && s.contains(127) && s.contains(199) && !s.contains(200));
        assert!(s.contains(256) && !s.contains(255) && !s.contains(100_000));
    }

    #[test]
    fn coalesces_up_to_four_mib() {
        let g = geo(10 << 20, 1 << 20);
        let d = ChunkState::Data(crate::digest::Digest([9; 32]));
        let plan = Planner::new(Baseline::Empty, g).plan_window(0, &[d; 10]);
        assert_eq!(
            plan.writes,
            vec![ByteRange::new(0, 4 << 20), ByteRange::new(4 << 20, 8 << 20), ByteRange::new(8 << 20, 10 << 20)]
        );
        assert_eq!(plan.stats.chunks_written, 10);
    }

    #[test]
    fn chunks_turned_zero_are_cleared_in_one_range() {
        let g = geo(4 << 20, 1 << 20);
        let d = ChunkState::Data(crate::digest::Digest([9; 32]));
        let z = ChunkState::Zero;
        let plan = diff(g, &vec![d, d, d, z].into(), g, &[d, z, z, z]);
        assert!(plan.writes.is_empty());
        assert_eq!(plan.clears, vec![ByteRange::new(1 << 20, 3 << 20)]);
        assert_eq!((plan.stats.chunks_cleared, plan.stats.chunks_unchanged, plan.stats.chunks_zero), (2, 1, 1));
        assert_eq!(plan.stats.bytes_written, 0);
    }
}
