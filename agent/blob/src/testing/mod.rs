//! Test doubles of the storage seam (feature `testing`): [`MemStore`], an
//! in-memory container that refuses what Azure refuses, and
//! [`FaultyStore`], a wrapper that fails, stalls or "crashes" at the Nth
//! call of an operation. With [`crate::retry::Retrying`] on top, a test
//! drives the whole storage stack the product uses, without a network.

mod faulty;
mod mem;

pub use faulty::{Fault, FaultyStore, Tally};
pub use mem::{Limits, MemStore};
