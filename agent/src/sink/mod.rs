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

pub use diskferry_blob::counters::{WireCounters, WireStats};
use diskferry_core::geometry::Geometry;
use diskferry_core::manifest::Manifest;
use diskferry_core::plan::Plan;
pub use diskferry_core::prior::Prior;

use crate::exit::Failure;
use crate::scan::WindowView;

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
