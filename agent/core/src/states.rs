//! Every chunk's state of a disk, held the way the disk holds data: a data
//! chunk costs its index and digest (36 bytes), a run of zero chunks costs
//! nothing. A 2 TiB disk with 200 MiB of data in 1 MiB chunks is 200
//! entries, not two million; sixteen such disks syncing at once hold
//! kilobytes of manifests, not gigabytes.

use crate::digest::Digest;
use crate::zero::is_zero;

/// The state of one chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChunkState {
    /// Every byte is zero: never hashed, never sent.
    Zero,
    /// Holds data with this digest.
    Data(Digest),
}

impl ChunkState {
    /// Classify and hash one chunk's bytes.
    pub fn of(bytes: &[u8]) -> Self {
        if is_zero(bytes) {
            Self::Zero
        } else {
            Self::Data(Digest::of(bytes))
        }
    }

    pub fn is_zero(&self) -> bool {
        matches!(self, Self::Zero)
    }
}

/// The states of chunks `0..len()`, in chunk order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChunkStates {
    len: u64,
    /// (chunk index, digest) of each data chunk, indices increasing.
    data: Vec<(u32, Digest)>,
}

/// Chunk indices fit in 32 bits: a manifest describes at most 64 TiB in
/// chunks of at least 64 KiB, 2^30 chunks.
const MAX_CHUNKS: u64 = 1 << 32;

impl ChunkStates {
    pub fn new() -> Self {
        Self::default()
    }

    /// Chunks described.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Chunks that hold data.
    pub fn data_count(&self) -> usize {
        self.data.len()
    }

    /// Chunk `i`'s state; `None` past the end.
    pub fn get(&self, i: u64) -> Option<ChunkState> {
        if i >= self.len {
            return None;
        }
        let i = i as u32;
        Some(match self.data.binary_search_by_key(&i, |&(k, _)| k) {
            Ok(at) => ChunkState::Data(self.data[at].1),
            Err(_) => ChunkState::Zero,
        })
    }

    /// Append the next chunk's state.
    pub fn push(&mut self, state: ChunkState) {
        assert!(self.len < MAX_CHUNKS, "more chunks than a manifest describes");
        if let ChunkState::Data(d) = state {
            self.data.push((self.len as u32, d));
        }
        self.len += 1;
    }

    /// Append `n` zero chunks.
    pub fn push_zeros(&mut self, n: u64) {
        assert!(self.len + n <= MAX_CHUNKS, "more chunks than a manifest describes");
        self.len += n;
    }

    pub fn extend_from_slice(&mut self, states: &[ChunkState]) {
        for s in states {
            self.push(*s);
        }
    }

    /// Every chunk's state, in order (zero runs filled in as they go).
    pub fn iter(&self) -> impl Iterator<Item = ChunkState> + '_ {
        let mut next = self.data.iter().peekable();
        (0..self.len).map(move |i| match next.peek() {
            Some(&&(k, d)) if u64::from(k) == i => {
                next.next();
                ChunkState::Data(d)
            }
            _ => ChunkState::Zero,
        })
    }

    /// The data chunks: (index, digest), in order.
    pub fn data(&self) -> impl ExactSizeIterator<Item = (u64, Digest)> + '_ {
        self.data.iter().map(|&(k, d)| (u64::from(k), d))
    }
}

impl From<Vec<ChunkState>> for ChunkStates {
    fn from(v: Vec<ChunkState>) -> Self {
        v.into_iter().collect()
    }
}

impl FromIterator<ChunkState> for ChunkStates {
    fn from_iter<I: IntoIterator<Item = ChunkState>>(it: I) -> Self {
        let mut s = Self::new();
        for state in it {
            s.push(state);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn d(b: u8) -> ChunkState {
        ChunkState::Data(Digest([b; 32]))
    }

    #[test]
    fn zero_runs_cost_nothing() {
        let mut s = ChunkStates::new();
        s.push(d(1));
        s.push_zeros(2_000_000);
        s.push(d(2));
        assert_eq!((s.len(), s.data_count()), (2_000_002, 2));
        assert_eq!(s.get(0), Some(d(1)));
        assert_eq!(s.get(1_000_000), Some(ChunkState::Zero));
        assert_eq!(s.get(2_000_001), Some(d(2)));
        assert_eq!(s.get(2_000_002), None);
        assert_eq!(s.data().collect::<Vec<_>>(), vec![(0, Digest([1; 32])), (2_000_001, Digest([2; 32]))]);
    }

    proptest! {
        /// As a plain list of states would say, whatever the mix.
        #[test]
        fn says_what_a_list_says(v in proptest::collection::vec(proptest::option::of(any::<u8>()), 0..300)) {
            let list: Vec<ChunkState> = v.iter().map(|b| b.map_or(ChunkState::Zero, d)).collect();
            let s = ChunkStates::from(list.clone());
            prop_assert_eq!(s.len(), list.len() as u64);
            prop_assert_eq!(s.iter().collect::<Vec<_>>(), list.clone());
            for (i, want) in list.iter().enumerate() {
                prop_assert_eq!(s.get(i as u64), Some(*want));
            }
            prop_assert_eq!(s.data_count(), list.iter().filter(|c| !c.is_zero()).count());
        }
    }
}
