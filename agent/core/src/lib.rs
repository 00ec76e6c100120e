//! # diskferry-core
//!
//! The sans-IO heart of diskferry. Everything here is pure computation over
//! bytes and numbers: no files, no sockets, no clock, no threads. Both
//! binaries (`diskferry-agent`, later `diskferry`) depend on this crate and it
//! depends on nothing of theirs.
//!
//! - [`geometry`]: how a disk is cut into chunks.
//! - [`zero`]: is a chunk all zero bytes, at memory speed.
//! - [`digest`]: the blake3 digest of a chunk.
//! - [`manifest`]: the per-generation list of chunk states, and its v1 wire format.
//! - [`states`]: those states in memory, as the disk holds data (zero runs cost nothing).
//! - [`plan`]: `diff(prev, cur) -> Plan`, the writes and clears that turn the
//!   previous image into the current one.
//! - [`journal`]: intent records that keep a crashed generation from being trusted.
//! - [`vhd`]: the 512-byte fixed-VHD footer Azure needs to import a page blob.
//! - [`job`]: the versioned job spec the coordinator hands an agent run.
//! - [`report`]: what the agent hands back: status document, sync reports,
//!   recovery points (versioned, unknown fields refused).
//! - [`relay`]: relay frames (offset, length, blake3, zstd payload) and their checks.
//! - [`units`]: byte counts parsed and printed.
//!
//! ```
//! use diskferry_core::{geometry::{ChunkSize, Geometry}, manifest::ChunkState, plan};
//!
//! let geo = Geometry::new(4 << 20, ChunkSize::new(1 << 20).unwrap()).unwrap();
//! let zero = ChunkState::Zero;
//! let a = ChunkState::of(&[1u8; 1 << 20]);
//! let prev = vec![zero, a, zero, zero];
//! let cur = vec![a, a, zero, zero];
//! let plan = plan::diff(geo, &prev.into(), geo, &cur);
//! assert_eq!(plan.writes, vec![plan::ByteRange::new(0, 1 << 20)]);
//! assert_eq!((plan.stats.chunks_unchanged, plan.stats.chunks_zero), (1, 2));
//! ```

pub mod digest;
#[doc(hidden)]
pub mod fuzzing;
pub mod geometry;
pub mod job;
pub mod journal;
pub mod manifest;
pub mod plan;
pub mod prior;
pub mod relay;
pub mod report;
pub mod states;
pub mod units;
pub mod vhd;
pub mod zero;

/// Largest single write the plan emits: the Put Page limit of Azure page blobs.
pub const MAX_WRITE: u64 = 4 << 20;

/// Sector size: every offset and length that reaches storage is a multiple of it.
pub const SECTOR: u64 = 512;
