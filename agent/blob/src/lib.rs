//! diskferry's storage edge, shared by the agent (which writes page blobs)
//! and the coordinator (which reads a worker's status blob): blob addresses
//! and their redaction, credentials (one selection for both binaries), SAS
//! signing, and the [`PageStore`] seam with its implementations.
//!
//! ```text
//! Retrying<AzureStore>            what the product uses: one request per call, retried
//! Retrying<FaultyStore<MemStore>> what the protocol tests use (feature `testing`)
//! ```
//!
//! ```
//! use diskferry_blob::address::BlobAddress;
//! let a = BlobAddress::parse("http://127.0.0.1:10000/devstoreaccount1/disks/vm1/os.vhd?sv=1&sig=SECRET").unwrap();
//! assert_eq!((a.container.as_str(), a.blob.as_str()), ("disks", "vm1/os.vhd"));
//! assert!(!a.to_string().contains("SECRET"));
//! ```

pub mod address;
pub mod azure;
pub mod counters;
pub mod credential;
pub mod error;
pub mod retry;
pub mod sas;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;

pub use error::{ErrorKind, StoreError, StoreResult};
pub use store::{BlobProps, CopyState, LeaseId, Listed, Op, PageStore};

/// What the product writes through: Azure Storage, every call retried.
pub type Azure = retry::Retrying<azure::AzureStore>;

/// Connect to the container of `addr` with the default retry policy.
pub fn connect(addr: address::BlobAddress, version: Option<String>) -> anyhow::Result<Azure> {
    Ok(retry::Retrying::new(azure::AzureStore::connect(addr, version)?, retry::RetryPolicy::default()))
}
