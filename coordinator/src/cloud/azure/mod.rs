//! The `azure` provider (in progress): ARM REST code for the same `Cloud`
//! trait as `local`. So far: [`arm`], the ARM client (LRO, throttling,
//! error bodies), tested against an in-process ARM simulator.

pub mod arm;
