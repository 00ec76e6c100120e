//! The `azure` provider (in progress): ARM REST code for the same `Cloud`
//! trait as `local`. So far:
//! - [`arm`]: the ARM client (LRO, throttling, error bodies), tested against
//!   an in-process ARM simulator (`coordinator/tests/arm.rs`);
//! - [`userdata`]: the worker's cloud-init user data from `images/`.

pub mod arm;
pub mod userdata;
