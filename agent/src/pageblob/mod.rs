//! `pageblob:URL`: the product's main destination, a page blob that Azure can
//! import as a managed disk. See `sink.rs` for the protocol.

pub mod auth;
mod journal_writer;
pub mod points;
pub mod sink;
pub mod store;
