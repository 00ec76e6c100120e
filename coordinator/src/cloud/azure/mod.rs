//! The `azure` provider: ARM REST code behind the same `Cloud` trait as
//! `local`.
//! - [`arm`]: the ARM client (LRO, throttling, error bodies);
//! - [`diff`]: the changed ranges between two incremental snapshots;
//! - [`names`]: resource paths, api-versions, run names and tags;
//! - [`settings`]: the `[azure]` config section;
//! - [`token`]: ARM tokens from `azure_identity` credentials;
//! - [`provider`]: [`AzureCloud`], the lifecycle's steps as ARM calls;
//! - [`snapshots`]: a run's snapshots, until usable, and read access to them;
//! - [`sources`]: a disk, a snapshot or a gallery image version as the source;
//! - [`restore_points`]: a run's VM restore point (every disk at one instant);
//! - [`worker`]: the worker VM's size, body and teardown; [`sizes`]: Resource SKUs;
//! - [`import`]: managed disks from recovery points, and a VM of them;
//! - [`gallery`]: a gallery image version from recovery points (`publish`);
//! - [`userdata`]: the worker's cloud-init user data from `images/`.
//!
//! Tested against an in-process ARM simulator with the data plane on
//! Azurite (`coordinator/tests/azure.rs`); the simulator is test code.

pub mod arm;
pub mod diff;
pub mod gallery;
pub mod here;
pub mod import;
pub mod names;
pub mod preflight;
pub mod provider;
pub mod restore_points;
pub mod settings;
pub mod sizes;
pub mod snapshots;
pub mod sources;
pub mod token;
pub mod userdata;
pub mod worker;

pub use provider::AzureCloud;
