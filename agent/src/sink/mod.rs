//! Sinks: where a generation is written. Each destination keeps its own state
//! (the manifest of its last generation, a journal while one is being
//! written), so a sync needs nothing but the source and the destination's
//! address.
//!
//! The pipeline drives a sink in four steps: [`Sink::prior`] (what the
//! destination holds and whether it can be trusted), [`Sink::begin`] (resize,
//! footer, journal), [`Sink::apply`] once per window, [`Sink::commit`]
//! (durable, then publish the manifest).

pub mod file;

use diskferry_core::geometry::Geometry;
use diskferry_core::manifest::Manifest;
use diskferry_core::plan::Plan;
pub use diskferry_core::prior::Prior;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::exit::Failure;
use crate::scan::WindowView;

/// What went over the wire to a remote destination.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct WireStats {
    /// Bytes of page data sent (Put Page bodies, footer included; relay frames).
    pub bytes_sent: u64,
    /// The raw bytes those stand for: `bytes_sent / bytes_raw` is the
    /// compression ratio of a relay.
    pub bytes_raw: u64,
    pub requests_ok: u64,
    pub requests_failed: u64,
    pub retries: u64,
    pub clear_requests: u64,
}

/// Counters every request to a remote destination updates (read by metrics
/// and the status file).
#[derive(Debug, Default)]
pub struct WireCounters {
    pub requests_ok: AtomicU64,
    pub requests_failed: AtomicU64,
    pub retries: AtomicU64,
    /// Bytes of page data on the wire (Put Page bodies; relay frames).
    pub bytes_put: AtomicU64,
    /// The raw bytes those stand for (more than `bytes_put` when compressed).
    pub bytes_raw: AtomicU64,
    pub clears: AtomicU64,
    /// Bytes of write bodies being sent right now.
    pub inflight_bytes: AtomicU64,
}

impl WireCounters {
    pub fn stats(&self) -> WireStats {
        WireStats {
            bytes_sent: self.bytes_put.load(Relaxed),
            bytes_raw: self.bytes_raw.load(Relaxed),
            requests_ok: self.requests_ok.load(Relaxed),
            requests_failed: self.requests_failed.load(Relaxed),
            retries: self.retries.load(Relaxed),
            clear_requests: self.clears.load(Relaxed),
        }
    }
}

/// A destination a generation can be written to.
pub trait Sink {
    /// Where this sink writes, for messages (no secrets).
    fn describe(&self) -> String;
    /// Read the destination's state for a sync of `source_id` at `cur`.
    fn prior(&mut self, source_id: &str, cur: Geometry) -> Result<Prior, Failure>;
    /// Prepare generation `generation` of a disk of geometry `cur`.
    fn begin(&mut self, generation: u64, cur: Geometry, prior: &Prior) -> Result<(), Failure>;
    /// Carry out one window's plan with the window's bytes.
    fn apply(&mut self, plan: &Plan, window: &WindowView<'_>) -> Result<(), Failure>;
    /// Make every write durable, then publish `manifest`.
    fn commit(&mut self, manifest: &Manifest) -> Result<(), Failure>;
    /// The sync stops here without a commit (its sender went away): let the
    /// writes already handed over finish and record them, so the next sync
    /// resumes after them. The generation stays uncommitted.
    fn suspend(&mut self) {}
    /// Traffic so far, for remote destinations.
    fn wire(&self) -> Option<WireStats> {
        None
    }
    /// Live request counters, for remote destinations.
    fn live_counters(&self) -> Option<std::sync::Arc<WireCounters>> {
        None
    }
}
