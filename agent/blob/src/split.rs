//! A destination whose page blob and sidecar state live in two places: the
//! page blob (and its snapshots) in one container, the state beside it —
//! the journal, manifests and recovery point index, block and append blobs
//! — in another. A premium page blob account holds page blobs only, so a
//! premium destination keeps its state in a standard container.
//!
//! [`Split`] is one [`PageStore`] to the sink above it: each call goes to
//! the store its blob name belongs to (`is_state` tells), and state blobs
//! get a prefix naming the page blob's account and container, so that one
//! state container serves many destinations. Without a state store every
//! call goes to the page blob's own.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;

use crate::counters::WireCounters;
use crate::error::StoreResult;
use crate::store::{AccountRules, BlobProps, CopyState, LeaseId, Listed, PageStore, RetryGate};

/// Which names are state blobs.
pub type IsState = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// The prefix of the state blobs of the page blobs in `container` of
/// `account`, in a state container under `under` (may be empty).
pub fn state_prefix(under: &str, account: &str, container: &str) -> String {
    let under = under.trim_matches('/');
    if under.is_empty() {
        format!("{account}/{container}/")
    } else {
        format!("{under}/{account}/{container}/")
    }
}

/// The page blob's store, and where its state lives.
pub struct Split<S> {
    data: S,
    state: Option<State<S>>,
}

struct State<S> {
    store: S,
    /// Put before each state blob's name: `[PREFIX/]ACCOUNT/CONTAINER/`.
    prefix: String,
    is_state: IsState,
}

impl<S: std::fmt::Debug> std::fmt::Debug for Split<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("Split");
        d.field("data", &self.data);
        if let Some(s) = &self.state {
            d.field("state", &s.store).field("prefix", &s.prefix);
        }
        d.finish()
    }
}

impl<S: PageStore> Split<S> {
    /// Everything in `data`.
    pub fn whole(data: S) -> Self {
        Self { data, state: None }
    }

    /// State blobs (those `is_state` names) in `state`, under `prefix`.
    pub fn new(data: S, state: S, prefix: String, is_state: IsState) -> Self {
        Self { data, state: Some(State { store: state, prefix, is_state }) }
    }

    /// The page blob's store.
    pub fn data(&self) -> &S {
        &self.data
    }

    /// The store `name` lives in, and its name there.
    fn route(&self, name: &str) -> (&S, String) {
        match &self.state {
            Some(st) if (st.is_state)(name) => (&st.store, format!("{}{name}", st.prefix)),
            _ => (&self.data, name.to_owned()),
        }
    }
}

impl<S: PageStore> PageStore for Split<S> {
    fn counters(&self) -> &Arc<WireCounters> {
        self.data.counters()
    }

    fn container(&self) -> &str {
        self.data.container()
    }

    fn set_retry_gate(&self, gate: Arc<dyn RetryGate>) {
        // Only page writes are paced: they go to the page blob's store.
        self.data.set_retry_gate(gate);
    }

    async fn create_container(&self) -> StoreResult<()> {
        self.data.create_container().await?;
        match &self.state {
            Some(st) => st.store.create_container().await,
            None => Ok(()),
        }
    }

    async fn properties(&self, name: &str) -> StoreResult<Option<BlobProps>> {
        let (s, n) = self.route(name);
        s.properties(&n).await
    }

    async fn create_page_blob(
        &self,
        name: &str,
        size: u64,
        metadata: HashMap<String, String>,
        lease: Option<&LeaseId>,
    ) -> StoreResult<()> {
        let (s, n) = self.route(name);
        s.create_page_blob(&n, size, metadata, lease).await
    }

    async fn create_page_blob_if_absent(
        &self,
        name: &str,
        size: u64,
        metadata: HashMap<String, String>,
    ) -> StoreResult<bool> {
        let (s, n) = self.route(name);
        s.create_page_blob_if_absent(&n, size, metadata).await
    }

    async fn resize(&self, name: &str, size: u64, lease: Option<&LeaseId>) -> StoreResult<()> {
        let (s, n) = self.route(name);
        s.resize(&n, size, lease).await
    }

    async fn put_pages(&self, name: &str, offset: u64, bytes: Bytes, lease: Option<&LeaseId>) -> StoreResult<()> {
        let (s, n) = self.route(name);
        s.put_pages(&n, offset, bytes, lease).await
    }

    async fn clear_pages(&self, name: &str, offset: u64, len: u64, lease: Option<&LeaseId>) -> StoreResult<()> {
        let (s, n) = self.route(name);
        s.clear_pages(&n, offset, len, lease).await
    }

    async fn set_metadata(
        &self,
        name: &str,
        metadata: HashMap<String, String>,
        lease: Option<&LeaseId>,
    ) -> StoreResult<()> {
        let (s, n) = self.route(name);
        s.set_metadata(&n, metadata, lease).await
    }

    async fn snapshot(&self, name: &str, lease: Option<&LeaseId>) -> StoreResult<String> {
        let (s, n) = self.route(name);
        s.snapshot(&n, lease).await
    }

    async fn delete(&self, name: &str, snapshot: Option<&str>, lease: Option<&LeaseId>) -> StoreResult<()> {
        let (s, n) = self.route(name);
        s.delete(&n, snapshot, lease).await
    }

    async fn page_ranges(&self, name: &str, snapshot: Option<&str>) -> StoreResult<Vec<(u64, u64)>> {
        let (s, n) = self.route(name);
        s.page_ranges(&n, snapshot).await
    }

    async fn read(&self, name: &str, snapshot: Option<&str>, offset: u64, len: u64) -> StoreResult<Bytes> {
        let (s, n) = self.route(name);
        s.read(&n, snapshot, offset, len).await
    }

    async fn get(&self, name: &str) -> StoreResult<Option<Bytes>> {
        let (s, n) = self.route(name);
        s.get(&n).await
    }

    /// Both stores' blobs under `prefix`, by their names here: the state
    /// store's without its prefix, and only the names that belong there
    /// from each.
    async fn list(&self, prefix: &str) -> StoreResult<Vec<Listed>> {
        let Some(st) = &self.state else { return self.data.list(prefix).await };
        let mut all: Vec<Listed> =
            self.data.list(prefix).await?.into_iter().filter(|l| !(st.is_state)(&l.name)).collect();
        for l in st.store.list(&format!("{}{prefix}", st.prefix)).await? {
            if let Some(name) = l.name.strip_prefix(&st.prefix).filter(|n| (st.is_state)(n)) {
                all.push(Listed { name: name.to_owned(), snapshot: l.snapshot, metadata: l.metadata });
            }
        }
        all.sort_by(|a, b| (&a.name, &a.snapshot).cmp(&(&b.name, &b.snapshot)));
        Ok(all)
    }

    async fn put_block_blob(&self, name: &str, bytes: Bytes) -> StoreResult<()> {
        let (s, n) = self.route(name);
        s.put_block_blob(&n, bytes).await
    }

    async fn create_append_blob(&self, name: &str, lease: Option<&LeaseId>) -> StoreResult<()> {
        let (s, n) = self.route(name);
        s.create_append_blob(&n, lease).await
    }

    async fn append(&self, name: &str, bytes: Bytes, lease: Option<&LeaseId>) -> StoreResult<u32> {
        let (s, n) = self.route(name);
        s.append(&n, bytes, lease).await
    }

    /// (Copies are of page blob snapshots, within the page blob's container.)
    async fn start_copy(&self, dst: &str, src: &str, snapshot: &str) -> StoreResult<()> {
        self.data.start_copy(dst, src, snapshot).await
    }

    async fn copy_state(&self, dst: &str) -> StoreResult<CopyState> {
        self.data.copy_state(dst).await
    }

    async fn abort_copy(&self, dst: &str, id: &str) -> StoreResult<()> {
        self.data.abort_copy(dst, id).await
    }

    async fn acquire_lease(&self, name: &str, id: &LeaseId, secs: u32) -> StoreResult<()> {
        let (s, n) = self.route(name);
        s.acquire_lease(&n, id, secs).await
    }

    async fn renew_lease(&self, name: &str, id: &LeaseId) -> StoreResult<()> {
        let (s, n) = self.route(name);
        s.renew_lease(&n, id).await
    }

    async fn release_lease(&self, name: &str, id: &LeaseId) -> StoreResult<()> {
        let (s, n) = self.route(name);
        s.release_lease(&n, id).await
    }

    async fn break_lease(&self, name: &str) -> StoreResult<()> {
        let (s, n) = self.route(name);
        s.break_lease(&n).await
    }

    /// Sidecars go where the state lives; snapshots are the page blob's.
    async fn rules(&self) -> StoreResult<AccountRules> {
        let data = self.data.rules().await?;
        let page_blobs_only = match &self.state {
            Some(st) => st.store.rules().await?.page_blobs_only,
            None => data.page_blobs_only,
        };
        Ok(AccountRules { page_blobs_only, snapshots: data.snapshots })
    }
}
