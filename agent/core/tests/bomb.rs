//! A manifest decompression bomb (issue 17): a 1 MiB manifest whose header
//! claims the largest geometry (64 TiB in 64 KiB chunks: 2^30 chunks, every
//! one data, a 32 GiB body) and whose payload really does inflate that far
//! (RLE blocks, RFC 8878). Decoded against the caller's own disk, it is
//! refused from its header, and the allocator (counted here: this test
//! binary's global allocator) never holds more than a few MiB.
#![allow(clippy::unwrap_used)]

use std::io::Read;

use diskferry_core::geometry::{ChunkSize, Geometry};
use diskferry_core::manifest::{Manifest, ManifestError};

#[global_allocator]
static A: diskferry_testkit::alloc::Counting = diskferry_testkit::alloc::Counting;

/// A zstd frame of `blocks` RLE blocks of 128 KiB zeros, no content size:
/// 4 bytes a block, 128 KiB out.
fn rle_frame(blocks: usize) -> Vec<u8> {
    let mut f = vec![0x28, 0xB5, 0x2F, 0xFD]; // magic
    f.push(0x00); // descriptor: no content size, not single segment, no checksum
    f.push(7 << 3); // window: 2^(10+7) = 128 KiB
    let size: u32 = 128 << 10;
    for i in 0..blocks {
        let last = u32::from(i + 1 == blocks);
        let header = (size << 3) | (1 << 1) | last; // RLE block
        f.extend_from_slice(&header.to_le_bytes()[..3]);
        f.push(0);
    }
    f
}

/// The bomb: a v1 header claiming 64 TiB in 64 KiB chunks, all data.
fn bomb() -> Vec<u8> {
    let chunks: u64 = (64u64 << 40) / (64 << 10);
    let body = chunks.div_ceil(8) + chunks * 32; // bitmap + digests: ~32 GiB
    let payload = rle_frame((body >> 17) as usize + 1);
    let mut b = Vec::new();
    b.extend_from_slice(&diskferry_core::manifest::MAGIC);
    b.extend_from_slice(&1u16.to_le_bytes()); // version
    b.push(1); // blake3
    b.push(1); // zstd
    b.extend_from_slice(&(64u32 << 10).to_le_bytes()); // chunk size
    b.extend_from_slice(&(64u64 << 40).to_le_bytes()); // disk size
    b.extend_from_slice(&1u64.to_le_bytes()); // generation
    b.extend_from_slice(&0u64.to_le_bytes()); // created
    b.extend_from_slice(&chunks.to_le_bytes()); // chunks
    b.extend_from_slice(&chunks.to_le_bytes()); // data chunks
    b.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes()); // source id length
    b.extend_from_slice(&0u32.to_le_bytes()); // reserved
    assert_eq!(b.len(), 72);
    b.extend_from_slice(&payload);
    let sum = blake3::hash(&b);
    b.extend_from_slice(sum.as_bytes());
    b
}

#[test]
fn a_bomb_is_refused_from_its_header_within_a_few_mib() {
    let b = bomb();
    assert!(b.len() < 1100 << 10, "the bomb is {} bytes", b.len());
    // It is a real bomb: its payload inflates past 64 MiB (and on, to 32 GiB).
    let mut d = zstd::stream::read::Decoder::new(&b[72..b.len() - 32]).unwrap().take(64 << 20);
    let mut n = 0usize;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let k = d.read(&mut buf).unwrap();
        if k == 0 {
            break;
        }
        n += k;
    }
    assert_eq!(n, 64 << 20);
    drop(buf);

    let disk = Geometry::new(1 << 30, ChunkSize::default()).unwrap();
    let before = diskferry_testkit::alloc::mark();
    let e = Manifest::decode_for(&b, disk).unwrap_err();
    assert!(matches!(e, ManifestError::GeometryMismatch { .. }), "{e}");
    let e = Manifest::decode_within(&b, disk.chunk_count()).unwrap_err();
    assert!(matches!(e, ManifestError::TooManyChunks { .. }), "{e}");
    let peak = diskferry_testkit::alloc::peak_since(before);
    assert!(peak < 4 << 20, "decoding the bomb held {peak} bytes at its peak");
}
