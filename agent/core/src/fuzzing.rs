//! The properties the fuzz targets check (`fuzz/fuzz_targets/`), shared with
//! the regression test that replays the committed corpus on every `cargo test`.

use crate::geometry::{ChunkSize, Geometry};
use crate::job::JobSpec;
use crate::journal;
use crate::manifest::Manifest;
use crate::relay::{self, FrameKind};
use crate::vhd::Footer;

/// The chunks a fuzzed manifest may claim: what untrusted input is decoded
/// against (`Manifest::decode_within`, as every caller of an untrusted one).
pub const MAX_FUZZ_CHUNKS: u64 = 1 << 16;

/// The most a manifest decode of fuzzed input may allocate: its body at
/// `MAX_FUZZ_CHUNKS` (a bit a chunk, 32 bytes a digest), the chunk list (40
/// bytes a chunk), the input once, and slack. `tests/fuzz_corpus.rs` counts
/// allocations against it; a fuzz run enforces it with `-malloc_limit_mb=16`.
pub const MANIFEST_ALLOC_BOUND: usize = (MAX_FUZZ_CHUNKS as usize) * (32 + 40 + 1) + (4 << 20);

/// The manifest decoder, as untrusted input reaches it, never panics, never
/// allocates more than [`MANIFEST_ALLOC_BOUND`] plus the input's own size
/// (a header's claims are held to the caller's disk before anything is
/// decompressed), and what it accepts re-encodes to a manifest that decodes
/// to the same value.
pub fn manifest(data: &[u8]) {
    if let Ok(m) = Manifest::decode_within(data, MAX_FUZZ_CHUNKS) {
        let again = m.encode().unwrap_or_else(|e| panic!("a decoded manifest does not encode: {e}"));
        assert_eq!(Manifest::decode(&again).as_ref(), Ok(&m));
    }
}

/// The footer parser never panics; what it accepts round-trips.
pub fn vhd_footer(data: &[u8]) {
    if let Ok(f) = Footer::parse(data) {
        assert_eq!(Footer::parse(&f.encode()), Ok(f));
    }
}

/// The journal parser never panics.
pub fn journal(data: &[u8]) {
    let _ = journal::parse(data);
}

/// Relay frames: the parser never panics or over-allocates, and a data
/// frame it opens yields exactly its declared length, matching its digest.
pub fn relay_frame(data: &[u8]) {
    if let Ok(frames) = relay::split(data) {
        for (h, payload) in frames {
            if let Ok(raw) = h.open(payload) {
                let want = if h.kind == FrameKind::Clear { 0 } else { h.raw_len as usize };
                assert_eq!(raw.len(), want);
            }
        }
    }
}

/// Job specs: the parser never panics; what it accepts round-trips.
pub fn job_spec(data: &[u8]) {
    if let Ok(Ok(j)) = std::str::from_utf8(data).map(JobSpec::parse) {
        assert_eq!(JobSpec::parse(&j.to_json()), Ok(j));
    }
}

/// Relay window messages: the decoder never panics, and what it accepts
/// yields a plan inside the window.
pub fn relay_window(data: &[u8]) {
    let Some(geo) = ChunkSize::new(64 << 10).ok().and_then(|c| Geometry::new(256 << 20, c).ok()) else { return };
    if let Ok(w) = relay::window::decode(data, geo) {
        let plan = w.plan(64 << 10);
        for r in plan.writes.iter().chain(&plan.clears) {
            assert!(r.start >= w.header.offset && r.end <= w.header.offset + w.header.len);
        }
    }
}

/// Relay prior messages: the decoder never panics; what it accepts
/// re-encodes to the same value.
pub fn relay_prior(data: &[u8]) {
    if let Ok(p) = relay::prior::decode(data, 1 << 20) {
        let again = relay::prior::encode(&p).unwrap_or_else(|e| panic!("a decoded prior does not encode: {e}"));
        assert_eq!(relay::prior::decode(&again, 1 << 20).as_ref(), Ok(&p));
    }
}
