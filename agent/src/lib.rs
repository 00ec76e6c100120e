//! # diskferry-agent
//!
//! The data plane of diskferry: it reads a disk (an image file or a block
//! device) in parallel, skips zero chunks, hashes the rest with blake3, and
//! writes only what changed since the destination's last generation.
//!
//! - [`source`]: the disk being read (`BlockSource`).
//! - [`buf`]: page-aligned buffers (direct writes need them).
//! - [`scan`]: the parallel, windowed walk over a source.
//! - [`pace`]: a source's read rate cap, and the windows a job's disks share.
//! - [`pin`]: the copy of what a mapped window's plans write, hashed again.
//! - [`sink`]: destinations (`Sink`) and their own state.
//! - [`sync`]: the pipeline of one sync, given its parts (a source, its
//!   sinks): source to destination, or several (fan-out).
//! - [`open`]: the parts from what a user names (a path, `file:`,
//!   `pageblob:`, `relay:`), and a sync of them.
//! - [`pageblob`]: the page blob sink over `diskferry_blob::PageStore`.
//! - [`clock`]: wall-clock time in the formats' units.
//! - [`relay`]: the zstd relay's protocol and its `relay:` sink.
//! - [`receive`]: `diskferry-agent receive`, the relay's far end.
//! - [`job`]: a coordinator's job spec: the syncs of every disk of a VM.
//! - [`device`]: a job disk's source on the worker (`lun:N` on Azure).
//! - [`cli`]: the `diskferry-agent` command line.
//! - [`exit`]: the documented exit codes.
//!
//! ```no_run
//! use diskferry_agent::open::{sync, SyncOptions, Target};
//! use diskferry_agent::source::ReadMode;
//!
//! let opts = SyncOptions {
//!     chunk_size: Default::default(),
//!     source_id: None,
//!     threads: 2,
//!     read_mode: ReadMode::Auto,
//!     manifest: None,
//!     force: false,
//!     pageblob: Default::default(),
//!     api_version: None,
//!     retry_for: None,
//!     relay: Default::default(),
//!     hint: None,
//!     read_limit: None,
//!     shared: None,
//! };
//! // A path, or a page blob's URL (a snapshot's export: `https://...?SAS`).
//! let source = "disk.img".parse().unwrap();
//! let report = sync(&source, &"file:/backup/disk.vhd".parse().unwrap(), &opts).unwrap();
//! println!("generation {} wrote {} bytes", report.generation, report.bytes_written);
//! ```

pub mod buf;
pub mod cli;
pub mod clock;
pub mod device;
pub mod exit;
pub mod job;
pub mod metrics;
pub mod open;
pub mod pace;
pub mod pageblob;
pub mod pin;
pub mod progress;
pub mod readback;
pub mod receive;
pub mod relay;
pub mod scan;
pub mod sink;
pub mod source;
pub mod status;
pub mod sync;
