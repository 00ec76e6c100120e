//! [`FaultyStore`]: a [`PageStore`] that passes calls to the store it wraps
//! and, at the Nth call of an operation (counted per operation, from 1),
//! does what a [`Fault`] says: answer an error without touching storage,
//! apply the call and lose its reply, stall, or die — that call and every
//! later one fail, as if the process had been killed there. Call counts are
//! kept, so a test can first count a clean run's calls and then fault each
//! one of them in turn.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;

use crate::counters::WireCounters;
use crate::error::{StoreError, StoreResult};
use crate::store::{BlobProps, CopyState, LeaseId, Listed, Op, PageStore};

/// What to do at a faulted call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answer HTTP `status` with error code `code`; storage is untouched.
    Fail { status: u16, code: &'static str },
    /// Apply the call, then fail as a reset connection would (the reply is lost).
    LoseReply,
    /// Wait this long, then pass the call on.
    Stall(Duration),
    /// The process dies before the call reaches storage: it and every later call fail.
    Die,
    /// The call reaches storage, then the process dies before the reply.
    DieAfter,
}

impl Fault {
    /// 503 ServerBusy, as a throttled account answers.
    pub const BUSY: Fault = Fault::Fail { status: 503, code: "ServerBusy" };
}

#[derive(Debug, Default)]
struct Book {
    calls: HashMap<Op, u64>,
    rules: HashMap<(Op, u64), Fault>,
}

/// A store that faults chosen calls (see the module's header).
#[derive(Debug)]
pub struct FaultyStore<S> {
    inner: S,
    tally: Tally,
}

/// What a [`FaultyStore`] counted, readable after the store was handed to
/// (and dropped by) the code under test.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    book: Arc<Mutex<Book>>,
    dead: Arc<AtomicBool>,
    faults_hit: Arc<Mutex<Vec<(Op, u64, Fault)>>>,
}

impl Tally {
    /// Calls of each operation so far (faulted ones included).
    pub fn calls(&self) -> HashMap<Op, u64> {
        self.book.lock().map(|b| b.calls.clone()).unwrap_or_default()
    }

    /// The faults that fired, in order.
    pub fn hits(&self) -> Vec<(Op, u64, Fault)> {
        self.faults_hit.lock().map(|h| h.clone()).unwrap_or_default()
    }

    /// Whether a `Die`/`DieAfter` fault fired.
    pub fn died(&self) -> bool {
        self.dead.load(Ordering::SeqCst)
    }
}

impl<S: PageStore> FaultyStore<S> {
    pub fn new(inner: S) -> Self {
        Self { inner, tally: Tally::default() }
    }

    /// Fault the `nth` call (from 1) of `op`.
    pub fn on(self, op: Op, nth: u64, fault: Fault) -> Self {
        if let Ok(mut b) = self.tally.book.lock() {
            b.rules.insert((op, nth), fault);
        }
        self
    }

    /// A handle on what this store counts.
    pub fn tally(&self) -> Tally {
        self.tally.clone()
    }

    pub fn inner(&self) -> &S {
        &self.inner
    }

    fn gone(op: Op, what: &str) -> StoreError {
        StoreError::Transport {
            op: op.verb(),
            what: what.to_owned(),
            message: "the process died here (injected)".into(),
        }
    }

    /// Count the call and pass it to `call`, or fault it.
    async fn call<T, Fut>(&self, op: Op, what: &str, call: impl FnOnce() -> Fut) -> StoreResult<T>
    where
        Fut: std::future::Future<Output = StoreResult<T>>,
    {
        let fault = {
            let mut b = self.tally.book.lock().unwrap_or_else(|p| p.into_inner());
            let n = b.calls.entry(op).or_insert(0);
            *n += 1;
            let n = *n;
            let f = b.rules.get(&(op, n)).cloned();
            if let (Some(f), Ok(mut hits)) = (&f, self.tally.faults_hit.lock()) {
                hits.push((op, n, f.clone()));
            }
            f
        };
        if self.tally.died() {
            return Err(Self::gone(op, what));
        }
        match fault {
            None => call().await,
            Some(Fault::Fail { status, code }) => Err(StoreError::http(op.verb(), what, status, code)),
            Some(Fault::Stall(d)) => {
                tokio::time::sleep(d).await;
                call().await
            }
            Some(Fault::LoseReply) => {
                call().await?;
                Err(StoreError::Transport {
                    op: op.verb(),
                    what: what.to_owned(),
                    message: "connection reset before the reply (injected)".into(),
                })
            }
            Some(Fault::Die) => {
                self.tally.dead.store(true, Ordering::SeqCst);
                Err(Self::gone(op, what))
            }
            Some(Fault::DieAfter) => {
                let _ = call().await;
                self.tally.dead.store(true, Ordering::SeqCst);
                Err(Self::gone(op, what))
            }
        }
    }
}

impl<S: PageStore> PageStore for FaultyStore<S> {
    fn counters(&self) -> &Arc<WireCounters> {
        self.inner.counters()
    }

    fn container(&self) -> &str {
        self.inner.container()
    }

    async fn create_container(&self) -> StoreResult<()> {
        self.call(Op::CreateContainer, self.inner.container(), || self.inner.create_container()).await
    }

    async fn properties(&self, name: &str) -> StoreResult<Option<BlobProps>> {
        self.call(Op::Properties, name, || self.inner.properties(name)).await
    }

    async fn create_page_blob(
        &self,
        name: &str,
        size: u64,
        metadata: HashMap<String, String>,
        lease: Option<&LeaseId>,
    ) -> StoreResult<()> {
        self.call(Op::CreatePageBlob, name, || self.inner.create_page_blob(name, size, metadata, lease)).await
    }

    async fn create_page_blob_if_absent(
        &self,
        name: &str,
        size: u64,
        metadata: HashMap<String, String>,
    ) -> StoreResult<bool> {
        self.call(Op::CreatePageBlobIfAbsent, name, || self.inner.create_page_blob_if_absent(name, size, metadata))
            .await
    }

    async fn resize(&self, name: &str, size: u64, lease: Option<&LeaseId>) -> StoreResult<()> {
        self.call(Op::Resize, name, || self.inner.resize(name, size, lease)).await
    }

    async fn put_pages(&self, name: &str, offset: u64, bytes: Bytes, lease: Option<&LeaseId>) -> StoreResult<()> {
        self.call(Op::PutPages, name, || self.inner.put_pages(name, offset, bytes, lease)).await
    }

    async fn clear_pages(&self, name: &str, offset: u64, len: u64, lease: Option<&LeaseId>) -> StoreResult<()> {
        self.call(Op::ClearPages, name, || self.inner.clear_pages(name, offset, len, lease)).await
    }

    async fn set_metadata(
        &self,
        name: &str,
        metadata: HashMap<String, String>,
        lease: Option<&LeaseId>,
    ) -> StoreResult<()> {
        self.call(Op::SetMetadata, name, || self.inner.set_metadata(name, metadata, lease)).await
    }

    async fn snapshot(&self, name: &str, lease: Option<&LeaseId>) -> StoreResult<String> {
        self.call(Op::Snapshot, name, || self.inner.snapshot(name, lease)).await
    }

    async fn delete(&self, name: &str, snapshot: Option<&str>, lease: Option<&LeaseId>) -> StoreResult<()> {
        self.call(Op::Delete, name, || self.inner.delete(name, snapshot, lease)).await
    }

    async fn page_ranges(&self, name: &str, snapshot: Option<&str>) -> StoreResult<Vec<(u64, u64)>> {
        self.call(Op::PageRanges, name, || self.inner.page_ranges(name, snapshot)).await
    }

    async fn read(&self, name: &str, snapshot: Option<&str>, offset: u64, len: u64) -> StoreResult<Bytes> {
        self.call(Op::Read, name, || self.inner.read(name, snapshot, offset, len)).await
    }

    async fn get(&self, name: &str) -> StoreResult<Option<Bytes>> {
        self.call(Op::Get, name, || self.inner.get(name)).await
    }

    async fn list(&self, prefix: &str) -> StoreResult<Vec<Listed>> {
        self.call(Op::List, self.inner.container(), || self.inner.list(prefix)).await
    }

    async fn put_block_blob(&self, name: &str, bytes: Bytes) -> StoreResult<()> {
        self.call(Op::PutBlockBlob, name, || self.inner.put_block_blob(name, bytes)).await
    }

    async fn create_append_blob(&self, name: &str, lease: Option<&LeaseId>) -> StoreResult<()> {
        self.call(Op::CreateAppendBlob, name, || self.inner.create_append_blob(name, lease)).await
    }

    async fn append(&self, name: &str, bytes: Bytes, lease: Option<&LeaseId>) -> StoreResult<u32> {
        self.call(Op::Append, name, || self.inner.append(name, bytes, lease)).await
    }

    async fn start_copy(&self, dst: &str, src: &str, snapshot: &str) -> StoreResult<()> {
        self.call(Op::StartCopy, dst, || self.inner.start_copy(dst, src, snapshot)).await
    }

    async fn copy_state(&self, dst: &str) -> StoreResult<CopyState> {
        self.call(Op::CopyState, dst, || self.inner.copy_state(dst)).await
    }

    async fn abort_copy(&self, dst: &str, id: &str) -> StoreResult<()> {
        self.call(Op::AbortCopy, dst, || self.inner.abort_copy(dst, id)).await
    }

    async fn acquire_lease(&self, name: &str, id: &LeaseId, secs: u32) -> StoreResult<()> {
        self.call(Op::AcquireLease, name, || self.inner.acquire_lease(name, id, secs)).await
    }

    async fn renew_lease(&self, name: &str, id: &LeaseId) -> StoreResult<()> {
        self.call(Op::RenewLease, name, || self.inner.renew_lease(name, id)).await
    }

    async fn release_lease(&self, name: &str, id: &LeaseId) -> StoreResult<()> {
        self.call(Op::ReleaseLease, name, || self.inner.release_lease(name, id)).await
    }

    async fn rules(&self) -> StoreResult<crate::store::AccountRules> {
        self.call(Op::AccountInfo, self.inner.container(), || self.inner.rules()).await
    }

    async fn break_lease(&self, name: &str) -> StoreResult<()> {
        self.call(Op::BreakLease, name, || self.inner.break_lease(name)).await
    }
}
