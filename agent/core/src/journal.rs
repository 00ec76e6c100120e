//! The intent journal of a generation being written.
//!
//! Before a sink writes or clears a range of chunks for generation G it
//! appends an *intent* record naming them and makes it durable. If the run
//! dies, the published manifest still says G-1, but the chunks named in the
//! journal may hold anything: the next run marks them suspect (see
//! [`crate::plan::Baseline`]) so they are rewritten or cleared whatever the
//! source says, even when it comes from a newer snapshot.
//!
//! ## Format
//!
//! ```text
//! header, 48 bytes: magic "DFJOURN1" | generation u64 | base manifest digest [32]
//! record, 24 bytes: first chunk u64 | end chunk u64 | check u64
//! ```
//!
//! Integers are little-endian; `check` is the first 8 bytes of
//! blake3(header ++ first ++ end). A torn or foreign record ends the journal:
//! the intent it carried was never durable, so nothing after it was written.

use crate::digest::Digest;
use crate::plan::ChunkSet;

pub const MAGIC: [u8; 8] = *b"DFJOURN1";
pub const HEADER_LEN: usize = 48;
pub const RECORD_LEN: usize = 24;
/// Most chunks a disk can have: 64 TiB in 64 KiB chunks.
const MAX_CHUNKS: u64 = 1 << 30;

/// Which generation a journal belongs to, and on top of which manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JournalHeader {
    pub generation: u64,
    /// Digest of the encoded manifest the generation started from (zeros when
    /// it started from none).
    pub base: Digest,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JournalError {
    #[error("journal header is truncated or not a diskferry journal")]
    BadHeader,
}

impl JournalHeader {
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[..8].copy_from_slice(&MAGIC);
        h[8..16].copy_from_slice(&self.generation.to_le_bytes());
        h[16..48].copy_from_slice(&self.base.0);
        h
    }

    /// One intent record for chunks `first..end`.
    pub fn record(&self, first: u64, end: u64) -> [u8; RECORD_LEN] {
        let mut r = [0u8; RECORD_LEN];
        r[..8].copy_from_slice(&first.to_le_bytes());
        r[8..16].copy_from_slice(&end.to_le_bytes());
        r[16..24].copy_from_slice(&self.check(first, end).to_le_bytes());
        r
    }

    fn check(&self, first: u64, end: u64) -> u64 {
        let mut h = blake3::Hasher::new();
        h.update(&self.encode());
        h.update(&first.to_le_bytes());
        h.update(&end.to_le_bytes());
        let mut x = [0u8; 8];
        x.copy_from_slice(&h.finalize().as_bytes()[..8]);
        u64::from_le_bytes(x)
    }
}

/// Parse a journal: its header and the set of chunks it names.
pub fn parse(bytes: &[u8]) -> Result<(JournalHeader, ChunkSet), JournalError> {
    if bytes.len() < HEADER_LEN || bytes[..8] != MAGIC {
        return Err(JournalError::BadHeader);
    }
    let mut g = [0u8; 8];
    g.copy_from_slice(&bytes[8..16]);
    let mut base = [0u8; 32];
    base.copy_from_slice(&bytes[16..48]);
    let header = JournalHeader { generation: u64::from_le_bytes(g), base: Digest(base) };
    let mut set = ChunkSet::default();
    for rec in bytes[HEADER_LEN..].chunks_exact(RECORD_LEN) {
        let word = |at: usize| {
            let mut x = [0u8; 8];
            x.copy_from_slice(&rec[at..at + 8]);
            u64::from_le_bytes(x)
        };
        let (first, end, check) = (word(0), word(8), word(16));
        // Bounded: no disk has more than 2^30 chunks (64 TiB in 64 KiB chunks).
        if check != header.check(first, end) || end < first || end > MAX_CHUNKS {
            break;
        }
        set.insert_range(first, end);
    }
    Ok((header, set))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_torn_tail_is_ignored() {
        let h = JournalHeader { generation: 4, base: Digest([3; 32]) };
        let mut j = h.encode().to_vec();
        j.extend_from_slice(&h.record(2, 5));
        j.extend_from_slice(&h.record(9, 10));
        let (hh, set) = parse(&j).unwrap();
        assert_eq!(hh, h);
        assert_eq!(set.len(), 4);
        assert!(set.contains(2) && set.contains(4) && set.contains(9) && !set.contains(5));
        // A torn third record, and a record from another generation, end it.
        let other = JournalHeader { generation: 5, ..h };
        let mut torn = j.clone();
        torn.extend_from_slice(&other.record(20, 21));
        torn.extend_from_slice(&h.record(30, 31)[..10]);
        assert_eq!(parse(&torn).unwrap().1, set);
        assert_eq!(parse(&j[..20]), Err(JournalError::BadHeader));
    }
}
