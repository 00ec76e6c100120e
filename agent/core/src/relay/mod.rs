//! Relay frames: how a sender ships one write (or clear) of a generation to
//! `diskferry-agent receive` in the destination region, zstd-compressed.
//!
//! Frame v1, little-endian, a 64-byte header then the payload:
//!
//! | bytes  | field |
//! |--------|-------|
//! | 0..4   | magic `DFRF` |
//! | 4      | version, 1 |
//! | 5      | kind: 1 data (zstd payload), 2 data stored raw (payload = the bytes; for data zstd would not shrink, or that a sampling probe finds incompressible: `FrameEncoder`), 3 clear (no payload) |
//! | 6..8   | reserved, 0 |
//! | 8..16  | offset in the disk, a multiple of 512 |
//! | 16..20 | raw length: a multiple of 512, 512 ..= 4 MiB |
//! | 20..24 | payload length |
//! | 24..56 | blake3 of the raw bytes (zeros for a clear) |
//! | 56..64 | the first 8 bytes of blake3 of bytes 0..56: a torn or altered header is refused |
//!
//! The receiver trusts nothing: the header is checked before any payload is
//! read (sizes bounded, so a hostile length cannot make it allocate), the
//! payload is decompressed into a buffer of exactly the declared raw length
//! (a decompression bomb fails instead of growing it), and the digest of the
//! result must match before a byte is written.
//!
//! ## Window message v1
//!
//! A sender ships one scan window per request: its chunk states (the
//! receiver's journal records what each written chunk now holds) and the
//! frames of its writes and clears. Little-endian, a 64-byte header, then
//! `n_states` states of 33 bytes (tag 0 zero / 1 data, then the blake3
//! digest or 32 zeros), then `n_frames` frames back to back:
//!
//! | bytes  | field |
//! |--------|-------|
//! | 0..4   | magic `DFRW` |
//! | 4      | version, 1 |
//! | 5..8   | reserved, 0 |
//! | 8..16  | sequence number of the window in the generation, from 0 |
//! | 16..24 | index of the window's first chunk |
//! | 24..32 | disk offset of the window (= first chunk × chunk size) |
//! | 32..40 | window length in bytes, at most [`window::MAX_WINDOW`] |
//! | 40..44 | number of chunk states (= chunks the window covers) |
//! | 44..48 | number of frames |
//! | 48..56 | the first 8 bytes of blake3 of bytes 0..48 and the states |
//! | 56..64 | reserved, 0 |
//!
//! Frames lie inside the window, ascending and not overlapping; a data
//! frame covers only data chunks, a clear frame only zero chunks, and both
//! start on a chunk boundary (the receiver checks all of it against the
//! geometry the session began with).
//!
//! ## Prior message v1
//!
//! What the receiver's destination holds, answered when a session opens
//! ([`prior`]): the kind of [`crate::prior::Prior`], its reason or
//! generation, what an interrupted run left (suspect runs, acked chunks) and
//! the previous manifest (v1 bytes, with their own checksum).

pub mod frame;
pub mod prior;
pub mod window;

pub use frame::*;
