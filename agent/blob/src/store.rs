//! `PageStore`: the one seam between diskferry and blob storage — every
//! operation the page blob sink, the read-back commands and the coordinator
//! use, by blob name within one container.
//!
//! Implementations: [`crate::azure::AzureStore`] (Azure Storage or Azurite,
//! one attempt per call), [`crate::retry::Retrying`] (a decorator that
//! retries what may succeed again), and behind the `testing` feature
//! `MemStore` (an in-memory container) and `FaultyStore` (fails or stalls
//! the Nth call of an operation).

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::counters::WireCounters;
use crate::error::{StoreError, StoreResult};

/// The largest page blob Azure Storage holds: 8 TiB ("Scalability and
/// performance targets for Blob storage"; Put Blob for a page blob refuses a
/// larger `x-ms-blob-content-length`).
pub const MAX_PAGE_BLOB: u64 = 8 << 40;

/// What a pacer above the store lends it: a retry of a throttled write
/// waits for its turn like any new write, instead of adding to the load
/// the service just pushed back on.
pub trait RetryGate: Send + Sync + std::fmt::Debug + 'static {
    /// Resolves when the attempt `refused` may be sent again.
    fn before_retry(&self, refused: Refused) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send + '_>>;
}

/// An attempt that failed and is to be sent again, as a [`RetryGate`] sees it.
#[derive(Debug, Clone, Copy)]
pub struct Refused {
    /// What it carries.
    pub bytes: u64,
    /// When it was sent (what was sent before a pacer last backed off says
    /// nothing about the pace since).
    pub sent: std::time::Instant,
    /// The service pushed back (503, 429, 500 or a timeout), as opposed to
    /// a lost connection or the like.
    pub pushback: bool,
}

/// Every operation of a [`PageStore`], for fault injection and counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Op {
    CreateContainer,
    Properties,
    CreatePageBlob,
    CreatePageBlobIfAbsent,
    Resize,
    PutPages,
    ClearPages,
    SetMetadata,
    Snapshot,
    Delete,
    PageRanges,
    Read,
    Get,
    List,
    PutBlockBlob,
    CreateAppendBlob,
    Append,
    StartCopy,
    CopyState,
    AbortCopy,
    AcquireLease,
    RenewLease,
    ReleaseLease,
    BreakLease,
    AccountInfo,
}

impl Op {
    pub const ALL: [Op; 25] = [
        Op::CreateContainer,
        Op::Properties,
        Op::CreatePageBlob,
        Op::CreatePageBlobIfAbsent,
        Op::Resize,
        Op::PutPages,
        Op::ClearPages,
        Op::SetMetadata,
        Op::Snapshot,
        Op::Delete,
        Op::PageRanges,
        Op::Read,
        Op::Get,
        Op::List,
        Op::PutBlockBlob,
        Op::CreateAppendBlob,
        Op::Append,
        Op::StartCopy,
        Op::CopyState,
        Op::AbortCopy,
        Op::AcquireLease,
        Op::RenewLease,
        Op::ReleaseLease,
        Op::BreakLease,
        Op::AccountInfo,
    ];

    /// The words an error message uses for it ("put pages disk.vhd: ...").
    pub fn verb(self) -> &'static str {
        match self {
            Op::CreateContainer => "create container",
            Op::Properties => "get properties of",
            Op::CreatePageBlob | Op::CreatePageBlobIfAbsent => "create page blob",
            Op::Resize => "resize",
            Op::PutPages => "put pages",
            Op::ClearPages => "clear pages",
            Op::SetMetadata => "set metadata of",
            Op::Snapshot => "snapshot",
            Op::Delete => "delete",
            Op::PageRanges => "list page ranges of",
            Op::Read => "read",
            Op::Get => "read",
            Op::List => "list blobs of",
            Op::PutBlockBlob => "upload",
            Op::CreateAppendBlob => "create append blob",
            Op::Append => "append to",
            Op::StartCopy => "copy to",
            Op::CopyState => "get copy state of",
            Op::AbortCopy => "abort the copy to",
            Op::AcquireLease => "acquire a lease on",
            Op::RenewLease => "renew the lease on",
            Op::ReleaseLease => "release the lease on",
            Op::BreakLease => "break the lease on",
            Op::AccountInfo => "get the account information of",
        }
    }
}

/// The id of a blob lease: while it is active, storage refuses every write
/// to the blob that does not name it (Lease Blob, `x-ms-lease-id`). Azure
/// takes the id the client proposes; it must be a GUID.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct LeaseId(String);

impl LeaseId {
    /// A new random id (UUID v4).
    pub fn random() -> Self {
        Self(uuid::Uuid::new_v4().to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for LeaseId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not a secret (storage shows it to no one), but a prefix says enough.
        write!(f, "LeaseId({}…)", &self.0[..8.min(self.0.len())])
    }
}

/// Azure's lease durations: 15 to 60 seconds (or infinite, which diskferry
/// never takes: a writer that dies must not hold a destination forever).
pub const LEASE_SECS: std::ops::RangeInclusive<u32> = 15..=60;

/// What a blob looks like.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlobProps {
    pub size: u64,
    pub metadata: HashMap<String, String>,
    /// Whether a lease is active on it (held by some writer).
    pub leased: bool,
}

/// One blob or snapshot of a listing.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Listed {
    pub name: String,
    /// `Some(id)` for a snapshot of `name`.
    pub snapshot: Option<String>,
    /// Its metadata (a snapshot's is the blob's when it was taken, and can
    /// never change).
    pub metadata: std::collections::BTreeMap<String, String>,
}

/// Where a server-side copy stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopyState {
    /// The blob names no copy (it was not made by one).
    None,
    /// Still copying; `id` is what Abort Copy Blob takes (`x-ms-copy-id`).
    Pending {
        id: Option<String>,
    },
    Success,
    /// Failed or aborted, with the service's description.
    Failed(String),
}

/// The storage diskferry needs, by name within one container. Every call is
/// one request (or one paged listing); retrying is a decorator's job.
pub trait PageStore: Send + Sync + 'static {
    /// Request and byte counters.
    fn counters(&self) -> &Arc<WireCounters>;
    /// The container's name, for messages.
    fn container(&self) -> &str;
    /// Let `gate` hold back what is sent again after a throttle (a store
    /// that does not retry ignores it).
    fn set_retry_gate(&self, _gate: Arc<dyn RetryGate>) {}
    fn create_container(&self) -> impl Future<Output = StoreResult<()>> + Send;
    /// `None` if the blob does not exist.
    fn properties(&self, name: &str) -> impl Future<Output = StoreResult<Option<BlobProps>>> + Send;
    // Every write below takes `lease`: with `Some`, storage refuses it unless
    // that lease is active on the blob; with `None`, unless no lease is.

    /// A new all-zero page blob (replacing any blob of that name; its
    /// snapshots survive, and so does its lease).
    fn create_page_blob(
        &self,
        name: &str,
        size: u64,
        metadata: HashMap<String, String>,
        lease: Option<&LeaseId>,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    /// A new all-zero page blob, only if no blob of that name exists
    /// (`If-None-Match: *`); `false` if one does.
    fn create_page_blob_if_absent(
        &self,
        name: &str,
        size: u64,
        metadata: HashMap<String, String>,
    ) -> impl Future<Output = StoreResult<bool>> + Send;
    fn resize(&self, name: &str, size: u64, lease: Option<&LeaseId>) -> impl Future<Output = StoreResult<()>> + Send;
    fn put_pages(
        &self,
        name: &str,
        offset: u64,
        bytes: Bytes,
        lease: Option<&LeaseId>,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    fn clear_pages(
        &self,
        name: &str,
        offset: u64,
        len: u64,
        lease: Option<&LeaseId>,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    /// Replace the blob's metadata.
    fn set_metadata(
        &self,
        name: &str,
        metadata: HashMap<String, String>,
        lease: Option<&LeaseId>,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    /// Take a snapshot; returns its id. With a lease, only while it is the
    /// blob's active one.
    fn snapshot(&self, name: &str, lease: Option<&LeaseId>) -> impl Future<Output = StoreResult<String>> + Send;
    /// Delete a blob (with `snapshot`: that snapshot only). A blob already
    /// gone is no error.
    fn delete(
        &self,
        name: &str,
        snapshot: Option<&str>,
        lease: Option<&LeaseId>,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    /// Allocated ranges `[start, end)` of a blob or one of its snapshots,
    /// sorted, neighbours merged.
    fn page_ranges(
        &self,
        name: &str,
        snapshot: Option<&str>,
    ) -> impl Future<Output = StoreResult<Vec<(u64, u64)>>> + Send;
    fn read(
        &self,
        name: &str,
        snapshot: Option<&str>,
        offset: u64,
        len: u64,
    ) -> impl Future<Output = StoreResult<Bytes>> + Send;
    /// A whole small blob, or `None` if it does not exist.
    fn get(&self, name: &str) -> impl Future<Output = StoreResult<Option<Bytes>>> + Send;
    /// Blobs whose names start with `prefix`, and their snapshots.
    fn list(&self, prefix: &str) -> impl Future<Output = StoreResult<Vec<Listed>>> + Send;
    fn put_block_blob(&self, name: &str, bytes: Bytes) -> impl Future<Output = StoreResult<()>> + Send;
    /// A new, empty append blob (replacing any blob of that name).
    fn create_append_blob(&self, name: &str, lease: Option<&LeaseId>) -> impl Future<Output = StoreResult<()>> + Send;
    /// Append one block; returns the blob's committed block count after it
    /// (`x-ms-blob-committed-block-count`).
    fn append(
        &self,
        name: &str,
        bytes: Bytes,
        lease: Option<&LeaseId>,
    ) -> impl Future<Output = StoreResult<u32>> + Send;
    /// Start a server-side copy of snapshot `snapshot` of `src` to a new
    /// standalone blob `dst` in the same container.
    fn start_copy(&self, dst: &str, src: &str, snapshot: &str) -> impl Future<Output = StoreResult<()>> + Send;
    /// Where the copy to `dst` stands.
    fn copy_state(&self, dst: &str) -> impl Future<Output = StoreResult<CopyState>> + Send;
    /// Abort the pending copy `id` to `dst` (Abort Copy Blob): the
    /// destination is left empty, with its metadata.
    fn abort_copy(&self, dst: &str, id: &str) -> impl Future<Output = StoreResult<()>> + Send;
    /// Take a lease of `secs` seconds (in [`LEASE_SECS`]) on an existing
    /// blob, with id `id`; asking again with the id already active renews
    /// it. 409 `LeaseAlreadyPresent` while another id holds it.
    fn acquire_lease(&self, name: &str, id: &LeaseId, secs: u32) -> impl Future<Output = StoreResult<()>> + Send;
    fn renew_lease(&self, name: &str, id: &LeaseId) -> impl Future<Output = StoreResult<()>> + Send;
    fn release_lease(&self, name: &str, id: &LeaseId) -> impl Future<Output = StoreResult<()>> + Send;
    /// End whatever lease is on the blob now (break period 0). A blob
    /// without one, or missing, is no error.
    fn break_lease(&self, name: &str) -> impl Future<Output = StoreResult<()>> + Send;
    /// What the account behind the store allows (Get Account Information).
    fn rules(&self) -> impl Future<Output = StoreResult<AccountRules>> + Send;
}

/// What an account allows beyond the common limits: a premium page blob
/// account (Get Account Information answers `x-ms-sku-name: Premium_*`
/// with `x-ms-account-kind: Storage` or `StorageV2`) holds page blobs only,
/// and limits their snapshots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AccountRules {
    /// No block or append blobs: the sidecar state cannot be kept here.
    pub page_blobs_only: bool,
    /// Limits on a page blob's snapshots, if any.
    pub snapshots: Option<SnapshotRules>,
}

/// At most `max` snapshots of one blob, one every `interval`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotRules {
    pub max: u32,
    pub interval: Duration,
}

/// Shortens the premium snapshot interval (seconds), for an emulator
/// that keeps a shorter one than Azure's ten minutes.
pub const SNAPSHOT_INTERVAL_ENV: &str = "DISKFERRY_SNAPSHOT_INTERVAL_SECS";

impl AccountRules {
    /// [`Self::PREMIUM`], its interval shortened by [`SNAPSHOT_INTERVAL_ENV`].
    pub fn premium() -> Self {
        let mut r = Self::PREMIUM;
        let short = std::env::var(SNAPSHOT_INTERVAL_ENV).ok().and_then(|v| v.parse::<u64>().ok());
        if let (Some(s), Some(secs)) = (r.snapshots.as_mut(), short) {
            s.interval = s.interval.min(Duration::from_secs(secs));
        }
        r
    }

    /// A premium page blob account's: "The number of snapshots per page
    /// blob in a Premium Storage account is limited to 100" and "A
    /// snapshot of a page blob in a Premium Storage account can be taken
    /// once every ten minutes" (Snapshot Blob; docs/azure-storage-facts.md).
    pub const PREMIUM: Self =
        Self { page_blobs_only: true, snapshots: Some(SnapshotRules { max: 100, interval: Duration::from_secs(600) }) };
}

/// Copy snapshot `snapshot` of `src` to a new standalone blob `dst`, server
/// side (Copy Blob; bytes never pass through this machine), and wait until
/// the copy is done, polling every `poll`, at most `deadline`: a copy still
/// pending then is aborted (Abort Copy Blob), so no copy goes on writing
/// into a blob its caller gave up on.
pub async fn copy_snapshot<S: PageStore>(
    store: &S,
    dst: &str,
    src: &str,
    snapshot: &str,
    poll: Duration,
    deadline: Duration,
) -> StoreResult<()> {
    match store.start_copy(dst, src, snapshot).await {
        // A start sent again after a lost reply meets the copy the first
        // one began: wait for that one.
        Err(StoreError::Http { status: 409, code, .. }) if code == "PendingCopyOperation" => {}
        r => r?,
    }
    let started = Instant::now();
    loop {
        let failed = |message: String| StoreError::Invalid { op: Op::StartCopy.verb(), what: dst.to_owned(), message };
        match store.copy_state(dst).await? {
            CopyState::Success => return Ok(()),
            // The destination of a copy names it (x-ms-copy-status) until it
            // is written again: one that names none was replaced meanwhile.
            CopyState::None => return Err(failed("the blob names no copy: it was replaced while copying".into())),
            CopyState::Pending { .. } if started.elapsed() < deadline => tokio::time::sleep(poll).await,
            CopyState::Pending { id } => {
                let aborted = match &id {
                    Some(id) => match store.abort_copy(dst, id).await {
                        Ok(()) => "aborted".to_owned(),
                        Err(e) => format!("the abort failed too: {e}"),
                    },
                    None => "it names no copy id to abort".to_owned(),
                };
                return Err(failed(format!("the copy was still pending after {deadline:?} ({aborted})")));
            }
            CopyState::Failed(why) => return Err(failed(format!("the copy ended: {why}"))),
        }
    }
}

/// Sorted ranges with overlapping or touching neighbours merged.
pub fn merge_ranges(sorted: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    let mut merged: Vec<(u64, u64)> = Vec::with_capacity(sorted.len());
    for (s, e) in sorted {
        match merged.last_mut() {
            Some(last) if last.1 >= s => last.1 = last.1.max(e),
            _ => merged.push((s, e)),
        }
    }
    merged
}
