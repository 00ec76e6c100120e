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
use diskferry_core::plan::{Baseline, Overrides, Plan};

use crate::exit::Failure;
use crate::scan::WindowView;

/// What a destination holds before a sync.
#[derive(Debug)]
pub enum Prior {
    /// Nothing yet: the destination will be created.
    Fresh { reason: String },
    /// Something that cannot be trusted: it is rebuilt from scratch.
    Untrusted { reason: String, last_generation: Option<u64> },
    /// The previous generation, with what an interrupted run left.
    Previous { manifest: Manifest, overrides: Overrides },
    /// A first sync that was interrupted: resume it from its journal.
    Partial { generation: u64, overrides: Overrides },
}

impl Prior {
    /// Why the sync is full, or `None` when it is incremental.
    pub fn full_reason(&self) -> Option<&str> {
        match self {
            Prior::Fresh { reason } | Prior::Untrusted { reason, .. } => Some(reason),
            Prior::Partial { .. } => Some("resuming an interrupted first sync"),
            Prior::Previous { .. } => None,
        }
    }

    /// The generation this sync writes.
    pub fn next_generation(&self) -> u64 {
        match self {
            Prior::Fresh { .. } => 1,
            Prior::Untrusted { last_generation, .. } => last_generation.map_or(1, |g| g + 1),
            Prior::Previous { manifest, .. } => manifest.generation + 1,
            Prior::Partial { generation, .. } => *generation,
        }
    }

    /// The plan's baseline. A sink rebuilds an untrusted destination from
    /// zeros, so both full kinds start from an empty destination.
    pub fn baseline(&self) -> Baseline<'_> {
        match self {
            Prior::Fresh { .. } | Prior::Untrusted { .. } | Prior::Partial { .. } => Baseline::Empty,
            Prior::Previous { manifest, .. } => {
                Baseline::Previous { geometry: manifest.geometry, chunks: &manifest.chunks }
            }
        }
    }
}

impl Prior {
    /// What an interrupted run left, if anything.
    pub fn overrides(&self) -> Option<&Overrides> {
        match self {
            Prior::Previous { overrides, .. } | Prior::Partial { overrides, .. } => Some(overrides),
            _ => None,
        }
    }
}

/// What went over the wire to a remote destination.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct WireStats {
    /// Bytes of page data sent (Put Page bodies, footer included).
    pub bytes_sent: u64,
    pub requests_ok: u64,
    pub requests_failed: u64,
    pub retries: u64,
    pub clear_requests: u64,
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
    /// Traffic so far, for remote destinations.
    fn wire(&self) -> Option<WireStats> {
        None
    }
    /// Live request counters, for remote destinations.
    fn live_counters(&self) -> Option<std::sync::Arc<crate::pageblob::store::StoreCounters>> {
        None
    }
}
