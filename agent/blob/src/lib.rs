//! diskferry's storage edge, shared by the agent (which writes page blobs)
//! and the coordinator (which reads a worker's status blob): blob addresses
//! and their redaction, credentials (one selection for both binaries), SAS
//! signing, and the [`PageStore`] seam with its implementations.
//!
//! ```text
//! Retrying<AzureStore>            what the product uses: one request per call, retried
//! Split<Retrying<AzureStore>>     a destination: its page blob, and its state in a second
//!                                 container where the first cannot hold it (premium)
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
pub mod split;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;

pub use error::{ErrorKind, StoreError, StoreResult};
pub use store::{BlobProps, CopyState, LeaseId, Listed, Op, PageStore};

/// What the product writes through: Azure Storage, every call retried.
pub type Azure = retry::Retrying<azure::AzureStore>;

/// Connect to the container of `addr` with the default retry policy.
pub fn connect(addr: address::BlobAddress, version: Option<String>) -> anyhow::Result<Azure> {
    Ok(retrying(azure::AzureStore::connect(addr, version)?, None))
}

/// The container of a blob that is read, not written (a source): a SAS
/// for that blob alone will do; each request retried for at most
/// `retry_for` (default two minutes).
pub fn connect_source(
    addr: address::BlobAddress,
    version: Option<String>,
    retry_for: Option<std::time::Duration>,
) -> anyhow::Result<Azure> {
    let cred = credential::Credential::for_reading(&addr)?;
    Ok(retrying(azure::AzureStore::with_credential(addr, cred, version), retry_for))
}

/// `store` under the default retry policy, giving up on one request after
/// `retry_for` when given.
fn retrying(store: azure::AzureStore, retry_for: Option<std::time::Duration>) -> Azure {
    let mut r = retry::Retrying::new(store, retry::RetryPolicy::default());
    if let Some(d) = retry_for {
        r.policy.max_elapsed = d;
    }
    r
}

/// A destination's stores: the page blob's container, and `state` (a
/// container, with a prefix in its `blob`) for the blobs `is_state` names,
/// counted together; each request retried for at most `retry_for`.
pub fn connect_split(
    addr: address::BlobAddress,
    state: Option<address::BlobAddress>,
    version: Option<String>,
    is_state: split::IsState,
    retry_for: Option<std::time::Duration>,
) -> anyhow::Result<Destination> {
    let data = azure::AzureStore::connect(addr.clone(), version.clone())?;
    let counters = data.counters().clone();
    let data = retrying(data, retry_for);
    Ok(match state {
        None => split::Split::whole(data),
        Some(st) => {
            let prefix = split::state_prefix(&st.blob, &addr.account, &addr.container);
            let state = retrying(azure::AzureStore::connect(st, version)?.with_counters(counters), retry_for);
            split::Split::new(data, state, prefix, is_state)
        }
    })
}

/// What a page blob destination writes through.
pub type Destination = split::Split<Azure>;
