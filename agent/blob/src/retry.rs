//! [`Retrying`]: a [`PageStore`] decorator that sends a call again while it
//! may succeed — throttling (429, 503), server failures (408, 500, 502,
//! 504), timeouts and connection failures — with exponential backoff and
//! full jitter, at least as long as the server's `Retry-After` asks, until
//! the policy's attempts or time run out. Client errors (403, 404, 409, 412,
//! ...) are final at once. Every retry is counted in the inner store's
//! [`WireCounters::retries`].
//!
//! Because it wraps the trait, a `FaultyStore` under it tests the retry
//! logic with the protocol above it.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::counters::WireCounters;
use crate::error::{StoreError, StoreResult};
use crate::store::{AccountRules, BlobProps, CopyState, LeaseId, Listed, Op, PageStore, Refused, RetryGate};

/// Retry policy: every default says why.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// First backoff; doubles each attempt.
    pub initial: Duration,
    /// No single wait longer than this (unless Retry-After asks for more).
    pub max_delay: Duration,
    /// Attempts in all, first included.
    pub max_attempts: u32,
    /// Give up on one operation after this long.
    pub max_elapsed: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        // Azure asks clients to back off exponentially on 503/500. The
        // budget is time, not attempts: two minutes ride out a throttled
        // partition or a restart of the storage front end without hanging a
        // sync forever, however often a busy account answers 503 meanwhile
        // (the pacer above slows the sync down in that time).
        Self {
            initial: Duration::from_millis(200),
            max_delay: Duration::from_secs(15),
            max_attempts: u32::MAX,
            max_elapsed: Duration::from_secs(120),
        }
    }
}

/// A store whose calls are retried by `policy`.
#[derive(Debug, Clone)]
pub struct Retrying<S> {
    inner: S,
    pub policy: RetryPolicy,
    /// Holds back attempts sent again after a throttle (a pacer above).
    gate: Arc<std::sync::OnceLock<Arc<dyn RetryGate>>>,
}

impl<S: PageStore> Retrying<S> {
    pub fn new(inner: S, policy: RetryPolicy) -> Self {
        Self { inner, policy, gate: Default::default() }
    }

    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// Run `f` until it succeeds, fails for good, or the policy runs out.
    async fn retry<T, F, Fut>(&self, op: Op, what: &str, f: F) -> StoreResult<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = StoreResult<T>>,
    {
        self.retry_sized(op, what, 0, f).await
    }

    /// [`Self::retry`] for a write of `bytes` (what a gate paces).
    async fn retry_sized<T, F, Fut>(&self, op: Op, what: &str, bytes: u64, mut f: F) -> StoreResult<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = StoreResult<T>>,
    {
        let started = Instant::now();
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let sent = Instant::now();
            let err = match f().await {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            if !err.retryable() {
                return Err(err);
            }
            let pushback = matches!(err.kind(), crate::ErrorKind::Throttled | crate::ErrorKind::Server)
                || matches!(err, StoreError::Transport { ref message, .. } if message.contains("timed out"));
            if pushback {
                WireCounters::add(&self.inner.counters().throttled, 1);
            }
            let backoff = self.policy.initial.saturating_mul(1 << (attempt - 1).min(16)).min(self.policy.max_delay);
            // Full jitter, and never less than the server asked for.
            let wait = jitter(backoff).max(err.retry_after().unwrap_or_default());
            if attempt >= self.policy.max_attempts || started.elapsed() + wait > self.policy.max_elapsed {
                return Err(StoreError::Exhausted {
                    op: op.verb(),
                    what: what.to_owned(),
                    attempts: attempt,
                    secs: started.elapsed().as_secs_f64(),
                    last: Box::new(err),
                });
            }
            WireCounters::add(&self.inner.counters().retries, 1);
            tokio::time::sleep(wait).await;
            if let Some(g) = self.gate.get() {
                g.before_retry(Refused { bytes, sent, pushback }).await;
            }
        }
    }
}

fn jitter(d: Duration) -> Duration {
    // A cheap, well-spread source: the low bits of the clock.
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |t| t.subsec_nanos());
    let frac = f64::from(nanos % 1_000_000) / 1_000_000.0;
    d.mul_f64(0.5 + frac / 2.0)
}

impl<S: PageStore> PageStore for Retrying<S> {
    fn counters(&self) -> &Arc<WireCounters> {
        self.inner.counters()
    }

    fn container(&self) -> &str {
        self.inner.container()
    }

    fn set_retry_gate(&self, gate: Arc<dyn RetryGate>) {
        let _ = self.gate.set(gate);
    }

    async fn create_container(&self) -> StoreResult<()> {
        self.retry(Op::CreateContainer, self.inner.container(), || self.inner.create_container()).await
    }

    async fn properties(&self, name: &str) -> StoreResult<Option<BlobProps>> {
        self.retry(Op::Properties, name, || self.inner.properties(name)).await
    }

    async fn create_page_blob(
        &self,
        name: &str,
        size: u64,
        metadata: HashMap<String, String>,
        lease: Option<&LeaseId>,
    ) -> StoreResult<()> {
        self.retry(Op::CreatePageBlob, name, || self.inner.create_page_blob(name, size, metadata.clone(), lease)).await
    }

    async fn create_page_blob_if_absent(
        &self,
        name: &str,
        size: u64,
        metadata: HashMap<String, String>,
    ) -> StoreResult<bool> {
        // Sent again after a lost reply, it finds the blob it created: false.
        self.retry(Op::CreatePageBlobIfAbsent, name, || {
            self.inner.create_page_blob_if_absent(name, size, metadata.clone())
        })
        .await
    }

    async fn resize(&self, name: &str, size: u64, lease: Option<&LeaseId>) -> StoreResult<()> {
        self.retry(Op::Resize, name, || self.inner.resize(name, size, lease)).await
    }

    async fn put_pages(&self, name: &str, offset: u64, bytes: Bytes, lease: Option<&LeaseId>) -> StoreResult<()> {
        let len = bytes.len() as u64;
        self.retry_sized(Op::PutPages, name, len, || self.inner.put_pages(name, offset, bytes.clone(), lease)).await
    }

    async fn clear_pages(&self, name: &str, offset: u64, len: u64, lease: Option<&LeaseId>) -> StoreResult<()> {
        self.retry(Op::ClearPages, name, || self.inner.clear_pages(name, offset, len, lease)).await
    }

    async fn set_metadata(
        &self,
        name: &str,
        metadata: HashMap<String, String>,
        lease: Option<&LeaseId>,
    ) -> StoreResult<()> {
        self.retry(Op::SetMetadata, name, || self.inner.set_metadata(name, metadata.clone(), lease)).await
    }

    async fn snapshot(&self, name: &str, lease: Option<&LeaseId>) -> StoreResult<String> {
        self.retry(Op::Snapshot, name, || self.inner.snapshot(name, lease)).await
    }

    async fn delete(&self, name: &str, snapshot: Option<&str>, lease: Option<&LeaseId>) -> StoreResult<()> {
        self.retry(Op::Delete, name, || self.inner.delete(name, snapshot, lease)).await
    }

    async fn page_ranges(&self, name: &str, snapshot: Option<&str>) -> StoreResult<Vec<(u64, u64)>> {
        self.retry(Op::PageRanges, name, || self.inner.page_ranges(name, snapshot)).await
    }

    async fn read(&self, name: &str, snapshot: Option<&str>, offset: u64, len: u64) -> StoreResult<Bytes> {
        self.retry(Op::Read, name, || self.inner.read(name, snapshot, offset, len)).await
    }

    async fn get(&self, name: &str) -> StoreResult<Option<Bytes>> {
        self.retry(Op::Get, name, || self.inner.get(name)).await
    }

    async fn list(&self, prefix: &str) -> StoreResult<Vec<Listed>> {
        self.retry(Op::List, self.inner.container(), || self.inner.list(prefix)).await
    }

    async fn put_block_blob(&self, name: &str, bytes: Bytes) -> StoreResult<()> {
        self.retry(Op::PutBlockBlob, name, || self.inner.put_block_blob(name, bytes.clone())).await
    }

    async fn create_append_blob(&self, name: &str, lease: Option<&LeaseId>) -> StoreResult<()> {
        self.retry(Op::CreateAppendBlob, name, || self.inner.create_append_blob(name, lease)).await
    }

    async fn append(&self, name: &str, bytes: Bytes, lease: Option<&LeaseId>) -> StoreResult<u32> {
        self.retry(Op::Append, name, || self.inner.append(name, bytes.clone(), lease)).await
    }

    async fn start_copy(&self, dst: &str, src: &str, snapshot: &str) -> StoreResult<()> {
        self.retry(Op::StartCopy, dst, || self.inner.start_copy(dst, src, snapshot)).await
    }

    async fn copy_state(&self, dst: &str) -> StoreResult<CopyState> {
        self.retry(Op::CopyState, dst, || self.inner.copy_state(dst)).await
    }

    async fn abort_copy(&self, dst: &str, id: &str) -> StoreResult<()> {
        self.retry(Op::AbortCopy, dst, || self.inner.abort_copy(dst, id)).await
    }

    async fn acquire_lease(&self, name: &str, id: &LeaseId, secs: u32) -> StoreResult<()> {
        // Sent again after a lost reply, it names the id now active: a renewal.
        self.retry(Op::AcquireLease, name, || self.inner.acquire_lease(name, id, secs)).await
    }

    async fn renew_lease(&self, name: &str, id: &LeaseId) -> StoreResult<()> {
        self.retry(Op::RenewLease, name, || self.inner.renew_lease(name, id)).await
    }

    async fn release_lease(&self, name: &str, id: &LeaseId) -> StoreResult<()> {
        self.retry(Op::ReleaseLease, name, || self.inner.release_lease(name, id)).await
    }

    async fn rules(&self) -> StoreResult<AccountRules> {
        self.retry(Op::AccountInfo, self.inner.container(), || self.inner.rules()).await
    }

    async fn break_lease(&self, name: &str) -> StoreResult<()> {
        self.retry(Op::BreakLease, name, || self.inner.break_lease(name)).await
    }
}
