//! diskferry's test support, one crate for every crate's tests (a
//! dev-dependency; never linked into a binary):
//!
//! - [`alloc`]: a counting global allocator, for tests of bounded allocation;
//! - [`image`]: seeded, reproducible disk images and changes to them;
//! - [`judge`]: `qemu-img` as the oracle for VHDs, folder snapshots, loop devices;
//! - [`process`]: the built binaries, waiting, free ports;
//! - [`proxy`]: one configurable TCP/HTTP proxy — count, refuse, cut, inject faults;
//! - [`azurite`]: a real Azurite per test binary (and one a test can stop and restart);
//! - [`pysdk`]: Microsoft's Python SDK for Azure Storage, an oracle and an independent writer;
//! - [`relay`]: a real `diskferry-agent receive`, with a token and a self-signed certificate;
//! - [`armsim`]: the in-process ARM simulator whose worker VMs boot a real agent;
//! - [`postgres`]: a real PostgreSQL server, a database per test.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_debug_implementations)]

pub mod alloc;
pub mod armsim;
pub mod azurite;
pub mod image;
pub mod judge;
pub mod postgres;
pub mod process;
pub mod proxy;
pub mod pysdk;
pub mod relay;

pub const MIB: u64 = 1 << 20;
