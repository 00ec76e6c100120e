//! The manifest: one per disk per generation, the state of every chunk.
//!
//! ## Format v1 (all integers little-endian)
//!
//! ```text
//! offset size  field
//!      0    8  magic "DFMANIFS"
//!      8    2  format version = 1
//!     10    1  hash algorithm = 1 (blake3-256)
//!     11    1  compression    = 1 (zstd)
//!     12    4  chunk size in bytes (power of two, 64 KiB..4 MiB)
//!     16    8  disk size in bytes (multiple of 512)
//!     24    8  generation (>= 1)
//!     32    8  created, milliseconds since the Unix epoch (i64)
//!     40    8  chunk count = ceil(disk size / chunk size)
//!     48    8  data chunks = number of digests in the body
//!     56    8  payload length (bytes of the zstd frame)
//!     64    4  source identity length (<= 4096)
//!     68    4  reserved, zero
//!     72    n  source identity, UTF-8
//!   72+n    p  payload: one zstd frame of the body
//! 72+n+p   32  blake3 of every byte before it
//!
//! body = bitmap (ceil(chunk count / 8) bytes, bit i set = chunk i holds data,
//!        least significant bit first, unused high bits zero)
//!      ++ 32-byte digest of each data chunk, in chunk order
//! ```
//!
//! The decoder checks the trailer first, then every field against the others,
//! and decompresses with a hard bound (the body length follows from the
//! header), so truncated, corrupted or hostile input is rejected with a precise
//! [`ManifestError`]. The header's claims still size the body (a 1 MiB
//! payload can inflate to the 32 GiB a 64 TiB disk in 64 KiB chunks would
//! need): a manifest from anywhere but this process is decoded with
//! [`Manifest::decode_for`] or [`Manifest::decode_within`], which hold the
//! header to the caller's own disk before anything is decompressed
//! (`tests/bomb.rs` counts the bytes allocated).

use std::io::Read;

use crate::digest::Digest;
use crate::geometry::{ChunkSize, Geometry, GeometryError};
use crate::states::ChunkStates;

pub const MAGIC: [u8; 8] = *b"DFMANIFS";
pub const VERSION: u16 = 1;
const HASH_BLAKE3: u8 = 1;
const COMPRESSION_ZSTD: u8 = 1;
const HEADER_LEN: usize = 72;
const TRAILER_LEN: usize = 32;
/// Longest source identity: a path or a resource id, never a blob of data.
pub const MAX_SOURCE_ID: usize = 4096;
/// Largest disk a manifest describes: 64 TiB, twice the largest managed disk.
pub const MAX_DISK_SIZE: u64 = 64 << 40;
/// zstd level for manifests: digests do not compress, the bitmap compresses
/// at any level, so the cheap default is enough.
const ZSTD_LEVEL: i32 = 3;

pub use crate::states::ChunkState;

/// A disk's chunk states at one generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub geometry: Geometry,
    pub generation: u64,
    pub created_unix_ms: i64,
    /// What disk this describes (a path, a disk name, a resource id): a
    /// manifest from another source is never trusted for a diff.
    pub source_id: String,
    pub chunks: ChunkStates,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ManifestError {
    #[error("truncated manifest: {len} bytes, at least {need} needed")]
    Truncated { len: usize, need: usize },
    #[error("not a diskferry manifest (bad magic)")]
    BadMagic,
    #[error("unsupported manifest format version {0} (this build reads version 1)")]
    UnsupportedVersion(u16),
    #[error("unsupported hash algorithm {0}")]
    UnsupportedHash(u8),
    #[error("unsupported compression {0}")]
    UnsupportedCompression(u8),
    #[error("manifest checksum mismatch: the file is corrupt")]
    ChecksumMismatch,
    #[error("manifest geometry is invalid: {0}")]
    Geometry(#[from] GeometryError),
    #[error("manifest disk size {0} exceeds the 64 TiB limit")]
    DiskTooLarge(u64),
    #[error("manifest generation is 0")]
    ZeroGeneration,
    #[error("manifest declares {declared} chunks, its geometry has {expected}")]
    ChunkCount { declared: u64, expected: u64 },
    #[error("manifest declares {data} data chunks out of {chunks}")]
    DataCount { data: u64, chunks: u64 },
    #[error("manifest source identity is {0} bytes, at most 4096 allowed")]
    SourceIdTooLong(u64),
    #[error("manifest source identity is not UTF-8")]
    SourceIdNotUtf8,
    #[error("manifest reserved field is not zero")]
    Reserved,
    #[error("manifest length {len} does not match its header ({expected} expected)")]
    Length { len: usize, expected: u64 },
    #[error("manifest payload does not decompress: {0}")]
    Decompress(String),
    #[error("manifest body is {actual} bytes, its header implies {expected}")]
    BodyLength { actual: u64, expected: u64 },
    #[error("manifest bitmap marks {marked} data chunks, the header says {declared}")]
    BitmapCount { marked: u64, declared: u64 },
    #[error("manifest bitmap has bits set past the last chunk")]
    BitmapPadding,
    #[error("cannot encode a manifest whose chunk list ({chunks}) does not match its geometry ({expected})")]
    EncodeMismatch { chunks: u64, expected: u64 },
    #[error(
        "manifest is for a {disk_size}-byte disk in {chunk_size}-byte chunks, not the expected {want_disk}-byte disk in \
         {want_chunk}-byte chunks"
    )]
    GeometryMismatch { disk_size: u64, chunk_size: u64, want_disk: u64, want_chunk: u64 },
    #[error("manifest declares {declared} chunks, more than the {max} this disk has")]
    TooManyChunks { declared: u64, max: u64 },
}

impl Manifest {
    /// Encode in format v1.
    pub fn encode(&self) -> Result<Vec<u8>, ManifestError> {
        let count = self.geometry.chunk_count();
        if self.chunks.len() != count {
            return Err(ManifestError::EncodeMismatch { chunks: self.chunks.len(), expected: count });
        }
        if self.source_id.len() > MAX_SOURCE_ID {
            return Err(ManifestError::SourceIdTooLong(self.source_id.len() as u64));
        }
        let data = self.chunks.data_count();
        let mut body = vec![0u8; bitmap_len(count)];
        body.reserve(data * 32);
        for (i, _) in self.chunks.data() {
            body[(i / 8) as usize] |= 1 << (i % 8);
        }
        for (_, d) in self.chunks.data() {
            body.extend_from_slice(&d.0);
        }
        let payload = zstd::bulk::compress(&body, ZSTD_LEVEL)
            .map_err(|e| ManifestError::Decompress(format!("compression failed: {e}")))?;

        let mut out = Vec::with_capacity(HEADER_LEN + self.source_id.len() + payload.len() + TRAILER_LEN);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.push(HASH_BLAKE3);
        out.push(COMPRESSION_ZSTD);
        out.extend_from_slice(&(self.geometry.chunk_size().get() as u32).to_le_bytes());
        out.extend_from_slice(&self.geometry.disk_size().to_le_bytes());
        out.extend_from_slice(&self.generation.to_le_bytes());
        out.extend_from_slice(&self.created_unix_ms.to_le_bytes());
        out.extend_from_slice(&count.to_le_bytes());
        out.extend_from_slice(&(data as u64).to_le_bytes());
        out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.source_id.len() as u32).to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(self.source_id.as_bytes());
        out.extend_from_slice(&payload);
        let sum = blake3::hash(&out);
        out.extend_from_slice(sum.as_bytes());
        Ok(out)
    }

    /// Decode format v1, checking everything.
    /// Decode a manifest that must describe `expected` (the disk the caller
    /// syncs): its geometry is read from the header and compared before the
    /// body is decompressed. A header's claims size the body (up to 2^30
    /// chunks, ~32 GiB of digests, from a payload of a megabyte); checked
    /// first, they can be no larger than what the caller's own disk needs.
    pub fn decode_for(bytes: &[u8], expected: Geometry) -> Result<Self, ManifestError> {
        if bytes.len() >= HEADER_LEN && bytes[..8] == MAGIC {
            let (chunk, disk) = (u64::from(le_u32(bytes, 12)), le_u64(bytes, 16));
            if chunk != expected.chunk_size().get() || disk != expected.disk_size() {
                return Err(ManifestError::GeometryMismatch {
                    disk_size: disk,
                    chunk_size: chunk,
                    want_disk: expected.disk_size(),
                    want_chunk: expected.chunk_size().get(),
                });
            }
        }
        Self::decode(bytes)
    }

    /// Decode a manifest of at most `max_chunks` chunks (an earlier, maybe
    /// smaller, state of the caller's disk), refused from its header before
    /// the body is decompressed when it declares more.
    pub fn decode_within(bytes: &[u8], max_chunks: u64) -> Result<Self, ManifestError> {
        if bytes.len() >= HEADER_LEN && bytes[..8] == MAGIC {
            let declared = le_u64(bytes, 40);
            if declared > max_chunks {
                return Err(ManifestError::TooManyChunks { declared, max: max_chunks });
            }
        }
        Self::decode(bytes)
    }

    /// Decode a manifest from a trusted source. Its header sizes the
    /// memory decoding takes: from an untrusted one, use [`Self::decode_for`].
    pub fn decode(bytes: &[u8]) -> Result<Self, ManifestError> {
        let need = HEADER_LEN + TRAILER_LEN;
        if bytes.len() < 8 {
            return Err(ManifestError::Truncated { len: bytes.len(), need });
        }
        if bytes[..8] != MAGIC {
            return Err(ManifestError::BadMagic);
        }
        if bytes.len() < need {
            return Err(ManifestError::Truncated { len: bytes.len(), need });
        }
        let version = u16::from_le_bytes([bytes[8], bytes[9]]);
        if version != VERSION {
            return Err(ManifestError::UnsupportedVersion(version));
        }
        let (content, trailer) = bytes.split_at(bytes.len() - TRAILER_LEN);
        if blake3::hash(content).as_bytes() != trailer {
            return Err(ManifestError::ChecksumMismatch);
        }
        if bytes[10] != HASH_BLAKE3 {
            return Err(ManifestError::UnsupportedHash(bytes[10]));
        }
        if bytes[11] != COMPRESSION_ZSTD {
            return Err(ManifestError::UnsupportedCompression(bytes[11]));
        }
        let chunk_size = ChunkSize::new(u64::from(le_u32(bytes, 12)))?;
        let disk_size = le_u64(bytes, 16);
        if disk_size > MAX_DISK_SIZE {
            return Err(ManifestError::DiskTooLarge(disk_size));
        }
        let geometry = Geometry::new(disk_size, chunk_size)?;
        let generation = le_u64(bytes, 24);
        if generation == 0 {
            return Err(ManifestError::ZeroGeneration);
        }
        let created_unix_ms = le_u64(bytes, 32) as i64;
        let declared = le_u64(bytes, 40);
        let expected = geometry.chunk_count();
        if declared != expected {
            return Err(ManifestError::ChunkCount { declared, expected });
        }
        let data = le_u64(bytes, 48);
        if data > declared {
            return Err(ManifestError::DataCount { data, chunks: declared });
        }
        let payload_len = le_u64(bytes, 56);
        let id_len = u64::from(le_u32(bytes, 64));
        if id_len > MAX_SOURCE_ID as u64 {
            return Err(ManifestError::SourceIdTooLong(id_len));
        }
        if le_u32(bytes, 68) != 0 {
            return Err(ManifestError::Reserved);
        }
        let total = (HEADER_LEN + TRAILER_LEN) as u64 + id_len + payload_len;
        if total != bytes.len() as u64 {
            return Err(ManifestError::Length { len: bytes.len(), expected: total });
        }
        let id_end = HEADER_LEN + id_len as usize;
        let source_id =
            std::str::from_utf8(&bytes[HEADER_LEN..id_end]).map_err(|_| ManifestError::SourceIdNotUtf8)?.to_owned();
        let payload = &bytes[id_end..content.len()];

        let body_len = bitmap_len(declared) as u64 + data * 32;
        let body = decompress_bounded(payload, body_len)?;
        let (bitmap, digests) = body.split_at(bitmap_len(declared));
        let marked: u64 = bitmap.iter().map(|b| u64::from(b.count_ones())).sum();
        if marked != data {
            return Err(ManifestError::BitmapCount { marked, declared: data });
        }
        if !declared.is_multiple_of(8) && bitmap.last().is_some_and(|b| b >> (declared % 8) != 0) {
            return Err(ManifestError::BitmapPadding);
        }
        let mut digests = digests.chunks_exact(32);
        // Zero runs are counted, not stored: memory follows the data.
        let mut chunks = ChunkStates::new();
        let mut zeros = 0u64;
        for i in 0..declared as usize {
            if bitmap[i / 8] & (1 << (i % 8)) != 0 {
                chunks.push_zeros(std::mem::take(&mut zeros));
                let mut d = [0u8; 32];
                // The bitmap count matched `data`, so there is a digest for every set bit.
                d.copy_from_slice(digests.next().unwrap_or(&[0u8; 32]));
                chunks.push(ChunkState::Data(Digest(d)));
            } else {
                zeros += 1;
            }
        }
        chunks.push_zeros(zeros);
        Ok(Self { geometry, generation, created_unix_ms, source_id, chunks })
    }
}

fn bitmap_len(chunks: u64) -> usize {
    chunks.div_ceil(8) as usize
}

fn decompress_bounded(payload: &[u8], expected: u64) -> Result<Vec<u8>, ManifestError> {
    let decoder = zstd::stream::read::Decoder::new(payload).map_err(|e| ManifestError::Decompress(e.to_string()))?;
    let mut body = Vec::new();
    // Read one byte past the expected length so a longer body is detected
    // without ever holding more than the header allows.
    decoder.take(expected + 1).read_to_end(&mut body).map_err(|e| ManifestError::Decompress(e.to_string()))?;
    if body.len() as u64 != expected {
        return Err(ManifestError::BodyLength { actual: body.len() as u64, expected });
    }
    Ok(body)
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample(disk_size: u64, chunk: u64) -> Manifest {
        let geometry = Geometry::new(disk_size, ChunkSize::new(chunk).unwrap()).unwrap();
        let chunks = (0..geometry.chunk_count())
            .map(|i| if i % 3 == 1 { ChunkState::Zero } else { ChunkState::Data(Digest::of(&i.to_le_bytes())) })
            .collect();
        Manifest { geometry, generation: 7, created_unix_ms: 1_700_000_000_000, source_id: "vm1/disk0".into(), chunks }
    }

    #[test]
    fn round_trip() {
        for (size, chunk) in [(0, 1 << 20), (512, 65536), ((5 << 20) + 512, 1 << 20), (64 << 20, 4 << 20)] {
            let m = sample(size, chunk);
            let enc = m.encode().unwrap();
            assert_eq!(Manifest::decode(&enc).unwrap(), m);
        }
    }

    fn reseal(mut b: Vec<u8>) -> Vec<u8> {
        let n = b.len() - 32;
        let sum = blake3::hash(&b[..n]);
        b[n..].copy_from_slice(sum.as_bytes());
        b
    }

    #[test]
    fn rejects_every_truncation() {
        let enc = sample(10 << 20, 1 << 20).encode().unwrap();
        for len in 0..enc.len() {
            let err = Manifest::decode(&enc[..len]).unwrap_err();
            assert!(
                matches!(err, ManifestError::Truncated { .. } | ManifestError::ChecksumMismatch),
                "len {len}: {err}"
            );
        }
    }

    #[test]
    fn rejects_every_bit_flip() {
        let enc = sample(3 << 20, 1 << 20).encode().unwrap();
        for i in 0..enc.len() {
            let mut bad = enc.clone();
            bad[i] ^= 0x10;
            assert!(Manifest::decode(&bad).is_err(), "flip at {i} accepted");
        }
    }

    #[test]
    fn precise_errors() {
        let enc = sample(3 << 20, 1 << 20).encode().unwrap();
        let mut b = enc.clone();
        b[0] = b'X';
        assert_eq!(Manifest::decode(&b), Err(ManifestError::BadMagic));
        let mut b = enc.clone();
        b[8] = 2;
        assert_eq!(Manifest::decode(&b), Err(ManifestError::UnsupportedVersion(2)));
        let mut b = enc.clone();
        b[12..16].copy_from_slice(&3000u32.to_le_bytes());
        assert_eq!(Manifest::decode(&reseal(b)), Err(ManifestError::Geometry(GeometryError::BadChunkSize(3000))));
        let mut b = enc.clone();
        b[40..48].copy_from_slice(&9u64.to_le_bytes());
        assert_eq!(Manifest::decode(&reseal(b)), Err(ManifestError::ChunkCount { declared: 9, expected: 3 }));
        let mut b = enc.clone();
        b[16..24].copy_from_slice(&1000u64.to_le_bytes());
        assert_eq!(Manifest::decode(&reseal(b)), Err(ManifestError::Geometry(GeometryError::UnalignedDiskSize(1000))));
        let mut b = enc.clone();
        b[48..56].copy_from_slice(&1u64.to_le_bytes());
        assert_eq!(Manifest::decode(&reseal(b)), Err(ManifestError::BodyLength { actual: 34, expected: 33 }));
        let mut b = enc.clone();
        b[48..56].copy_from_slice(&5u64.to_le_bytes());
        assert_eq!(Manifest::decode(&reseal(b)), Err(ManifestError::DataCount { data: 5, chunks: 3 }));
        let mut b = enc.clone();
        b[68] = 1;
        assert_eq!(Manifest::decode(&reseal(b)), Err(ManifestError::Reserved));
        let mut b = enc.clone();
        b[24..32].copy_from_slice(&0u64.to_le_bytes());
        assert_eq!(Manifest::decode(&reseal(b)), Err(ManifestError::ZeroGeneration));
        let mut b = enc.clone();
        b.insert(80, 0);
        assert!(matches!(Manifest::decode(&reseal(b)), Err(ManifestError::Length { .. })));
    }

    #[test]
    fn rejects_a_decompression_bomb() {
        // A valid header declaring one data chunk of a 1 MiB disk, whose
        // payload inflates far past the 33 bytes the header allows.
        let m = Manifest {
            geometry: Geometry::new(1 << 20, ChunkSize::default()).unwrap(),
            generation: 1,
            created_unix_ms: 0,
            source_id: String::new(),
            chunks: vec![ChunkState::Data(Digest([1; 32]))].into(),
        };
        let enc = m.encode().unwrap();
        let bomb = zstd::bulk::compress(&vec![0u8; 64 << 20], 19).unwrap();
        let mut b = enc[..HEADER_LEN].to_vec();
        b[56..64].copy_from_slice(&(bomb.len() as u64).to_le_bytes());
        b.extend_from_slice(&bomb);
        b.extend_from_slice(&[0; 32]);
        let err = Manifest::decode(&reseal(b)).unwrap_err();
        assert_eq!(err, ManifestError::BodyLength { actual: 34, expected: 33 });
    }
}
