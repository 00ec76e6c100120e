//! What a destination holds before a sync: the previous generation (with
//! what an interrupted run left), something untrusted, or nothing. Sinks
//! read it from their own state; the relay carries it over the wire
//! ([`crate::relay::prior`]).

use crate::manifest::Manifest;
use crate::plan::{Baseline, Overrides};

/// What a destination holds before a sync.
#[derive(Debug, Clone, PartialEq, Eq)]
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
