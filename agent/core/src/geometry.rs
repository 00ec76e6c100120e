//! Chunk geometry: how a disk of `disk_size` bytes is cut into fixed-size
//! chunks. The last chunk may be short; every boundary is a multiple of 512.

use std::ops::Range;

use crate::SECTOR;

/// Smallest chunk size: below this, per-chunk overhead (a 33-byte manifest
/// entry, one request) dominates.
pub const MIN_CHUNK: u64 = 64 << 10;
/// Largest chunk size: one Put Page request.
pub const MAX_CHUNK: u64 = 4 << 20;
/// Default chunk size: 1 MiB keeps the manifest at 32 bytes per MiB (128 MiB
/// for a 4 TiB disk) while skipping zeros at a fine grain.
pub const DEFAULT_CHUNK: u64 = 1 << 20;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GeometryError {
    #[error("chunk size {0} is not a power of two between 64 KiB and 4 MiB")]
    BadChunkSize(u64),
    #[error("disk size {0} is not a multiple of 512 bytes")]
    UnalignedDiskSize(u64),
}

/// A validated chunk size: a power of two in `MIN_CHUNK..=MAX_CHUNK`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChunkSize(u32);

impl ChunkSize {
    pub fn new(bytes: u64) -> Result<Self, GeometryError> {
        if bytes.is_power_of_two() && (MIN_CHUNK..=MAX_CHUNK).contains(&bytes) {
            Ok(Self(bytes as u32))
        } else {
            Err(GeometryError::BadChunkSize(bytes))
        }
    }

    pub fn get(self) -> u64 {
        u64::from(self.0)
    }
}

impl Default for ChunkSize {
    fn default() -> Self {
        Self(DEFAULT_CHUNK as u32)
    }
}

/// A disk cut into chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    disk_size: u64,
    chunk_size: ChunkSize,
}

impl Geometry {
    pub fn new(disk_size: u64, chunk_size: ChunkSize) -> Result<Self, GeometryError> {
        if !disk_size.is_multiple_of(SECTOR) {
            return Err(GeometryError::UnalignedDiskSize(disk_size));
        }
        Ok(Self { disk_size, chunk_size })
    }

    pub fn disk_size(&self) -> u64 {
        self.disk_size
    }

    pub fn chunk_size(&self) -> ChunkSize {
        self.chunk_size
    }

    /// Number of chunks, counting a short last one.
    pub fn chunk_count(&self) -> u64 {
        self.disk_size.div_ceil(self.chunk_size.get())
    }

    /// Byte range of chunk `index`; the last one is cut at the disk size.
    pub fn chunk_range(&self, index: u64) -> Range<u64> {
        let start = index * self.chunk_size.get();
        start..(start + self.chunk_size.get()).min(self.disk_size)
    }

    /// Chunks whose start lies in `bytes` (used to walk a window of a disk).
    pub fn chunks_in(&self, bytes: Range<u64>) -> Range<u64> {
        let c = self.chunk_size.get();
        bytes.start.div_ceil(c)..bytes.end.min(self.disk_size).div_ceil(c)
    }
}

/// `size` rounded up to a whole MiB, as Azure wants a VHD's virtual size.
pub fn round_up_mib(size: u64) -> u64 {
    // Saturates instead of wrapping for a size within 1 MiB of 2^64.
    size.div_ceil(1 << 20).saturating_mul(1 << 20)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_sizes() {
        assert!(ChunkSize::new(64 << 10).is_ok());
        assert!(ChunkSize::new(4 << 20).is_ok());
        assert_eq!(ChunkSize::new(32 << 10), Err(GeometryError::BadChunkSize(32 << 10)));
        assert_eq!(ChunkSize::new(8 << 20), Err(GeometryError::BadChunkSize(8 << 20)));
        assert_eq!(ChunkSize::new(3 << 20), Err(GeometryError::BadChunkSize(3 << 20)));
        assert_eq!(ChunkSize::default().get(), 1 << 20);
    }

    #[test]
    fn short_last_chunk() {
        let g = Geometry::new((3 << 20) + 512, ChunkSize::default()).unwrap();
        assert_eq!(g.chunk_count(), 4);
        assert_eq!(g.chunk_range(3), (3 << 20)..(3 << 20) + 512);
        assert_eq!(g.chunks_in(0..(2 << 20)), 0..2);
        assert_eq!(g.chunks_in((2 << 20)..u64::MAX), 2..4);
    }

    #[test]
    fn rejects_unaligned_disks() {
        assert_eq!(Geometry::new(1000, ChunkSize::default()), Err(GeometryError::UnalignedDiskSize(1000)));
        assert_eq!(Geometry::new(0, ChunkSize::default()).unwrap().chunk_count(), 0);
    }

    #[test]
    fn rounding() {
        assert_eq!(round_up_mib(0), 0);
        assert_eq!(round_up_mib(512), 1 << 20);
        assert_eq!(round_up_mib(1 << 20), 1 << 20);
        assert_eq!(round_up_mib((1 << 20) + 1), 2 << 20);
    }
}
