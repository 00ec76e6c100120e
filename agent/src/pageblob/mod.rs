//! `pageblob:URL`: the product's main destination, a page blob that Azure can
//! import as a managed disk. See `sink.rs` for the protocol.

//!
//! Addresses, credentials and the `PageStore` seam live in the storage crate,
//! `diskferry-blob`, which the coordinator shares.

mod bodies;
mod journal_writer;
pub mod lease;
pub mod pacer;
pub mod points;
mod prior;
pub mod sink;
