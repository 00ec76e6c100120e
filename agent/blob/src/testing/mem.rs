//! An in-memory container. It keeps what a sync needs to be checked (page
//! blobs with their allocated pages, snapshots, block and append blobs,
//! metadata) and refuses what Azure Storage refuses and Azurite lets by:
//! unaligned or oversized Put Page, writes past the end, a page blob over
//! 8 TiB, an append blob past its block limit, deleting a blob that still
//! has snapshots, a page operation on a blob of another type, and any write
//! to a leased blob that does not name its lease (leases expire on the real
//! clock, or at once by [`MemStore::expire_leases`]: time passing). Cloned
//! handles share the container; each has its own counters, as two
//! processes would.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::counters::WireCounters;
use crate::error::{StoreError, StoreResult};
use crate::store::{merge_ranges, BlobProps, CopyState, LeaseId, Listed, Op, PageStore, LEASE_SECS};

/// Azure's limits as the store enforces them (scalable down for tests).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Committed blocks an append blob holds (Azure: 50,000).
    pub append_blocks: u32,
    /// Largest Put Page and Append Block body (Azure: 4 MiB).
    pub max_write: u64,
    /// Largest page blob (Azure: 8 TiB).
    pub max_page_blob: u64,
    /// A premium page blob account: page blobs only, no block or append blobs.
    pub page_blobs_only: bool,
    /// Limits on each blob's snapshots (premium: 100, one every 10 minutes).
    pub snapshots: Option<crate::store::SnapshotRules>,
    /// Polls a server-side copy stays pending for (0: copies complete at once).
    pub copy_polls: u32,
}

impl Default for Limits {
    fn default() -> Self {
        // Azure Storage's documented limits (docs/azure.md).
        Self {
            append_blocks: 50_000,
            max_write: 4 << 20,
            max_page_blob: crate::store::MAX_PAGE_BLOB,
            page_blobs_only: false,
            snapshots: None,
            copy_polls: 0,
        }
    }
}

const PAGE: u64 = 512;

#[derive(Debug, Clone)]
enum Body {
    /// Bytes and, per 512-byte page, whether it is allocated.
    Page {
        data: Arc<Vec<u8>>,
        allocated: Arc<Vec<bool>>,
    },
    Block(Bytes),
    Append {
        data: Vec<u8>,
        blocks: u32,
    },
}

#[derive(Debug, Clone)]
struct Version {
    body: Body,
    metadata: HashMap<String, String>,
}

#[derive(Debug, Clone, Default)]
struct Blob {
    current: Option<Version>,
    snapshots: BTreeMap<String, Version>,
    copied: bool,
    /// Polls a copy to it stays pending for; whether it was aborted.
    copy_pending: u32,
    copy_aborted: bool,
    /// The last lease taken, until when it holds, and its duration.
    lease: Option<(LeaseId, Instant, u32)>,
    /// When its last snapshot was taken.
    snapped: Option<Instant>,
}

impl Blob {
    fn active_lease(&self) -> Option<&LeaseId> {
        self.lease.as_ref().filter(|(_, until, _)| Instant::now() < *until).map(|(id, _, _)| id)
    }
}

/// Whether a write naming `given` may touch `name` (the lease rules of the
/// Blob service: a leased blob takes writes naming its lease only; a write
/// naming a lease needs that lease active).
fn lease_allows(s: &State, op: Op, name: &str, given: Option<&LeaseId>) -> StoreResult<()> {
    let active = s.blobs.get(name).and_then(Blob::active_lease);
    let refuse = |code: &str| Err(StoreError::http(op.verb(), name, 412, code));
    match (active, given) {
        (None, None) => Ok(()),
        (Some(a), Some(g)) if a == g => Ok(()),
        (Some(_), None) => refuse("LeaseIdMissing"),
        (Some(_), Some(_)) => refuse("LeaseIdMismatchWithBlobOperation"),
        (None, Some(g)) => {
            let expired = s.blobs.get(name).and_then(|b| b.lease.as_ref()).is_some_and(|(id, _, _)| id == g);
            refuse(if expired { "LeaseLost" } else { "LeaseNotPresentWithBlobOperation" })
        }
    }
}

#[derive(Debug, Clone)]
struct State {
    exists: bool,
    blobs: BTreeMap<String, Blob>,
    snapshot_seq: u64,
    limits: Limits,
}

/// An in-memory container (see the module's header).
#[derive(Debug, Clone)]
pub struct MemStore {
    state: Arc<Mutex<State>>,
    counters: Arc<WireCounters>,
    container: Arc<str>,
}

impl MemStore {
    /// An existing, empty container.
    pub fn new(container: &str) -> Self {
        Self::with_limits(container, Limits::default())
    }

    pub fn with_limits(container: &str, limits: Limits) -> Self {
        let state = State { exists: true, blobs: BTreeMap::new(), snapshot_seq: 0, limits };
        Self { state: Arc::new(Mutex::new(state)), counters: Default::default(), container: container.into() }
    }

    /// A container that does not exist yet.
    pub fn missing(container: &str) -> Self {
        let s = Self::new(container);
        s.lock().exists = false;
        s
    }

    /// Another handle on the same container with counters of its own (a
    /// second process).
    pub fn handle(&self) -> Self {
        Self { state: self.state.clone(), counters: Default::default(), container: self.container.clone() }
    }

    /// A container of its own holding a copy of this one's blobs (cheap:
    /// page data is shared until written).
    pub fn fork(&self) -> Self {
        let copy = self.lock().clone();
        Self { state: Arc::new(Mutex::new(copy)), counters: Default::default(), container: self.container.clone() }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A test that panicked holding the lock poisons it; the state is
        // still what it was, and the panic is what the test reports.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The bytes of a page blob (or of one of its snapshots).
    pub fn page_bytes(&self, name: &str, snapshot: Option<&str>) -> Option<Vec<u8>> {
        let s = self.lock();
        match &version(&s, Op::Read, name, snapshot).ok()?.body {
            Body::Page { data, .. } => Some(data.as_ref().clone()),
            _ => None,
        }
    }

    /// Every blob and snapshot, sorted.
    pub fn names(&self) -> Vec<Listed> {
        let s = self.lock();
        let mut out = Vec::new();
        for (name, b) in &s.blobs {
            for (id, v) in &b.snapshots {
                out.push(Listed {
                    name: name.clone(),
                    snapshot: Some(id.clone()),
                    metadata: v.metadata.clone().into_iter().collect(),
                });
            }
            if let Some(v) = &b.current {
                out.push(Listed {
                    name: name.clone(),
                    snapshot: None,
                    metadata: v.metadata.clone().into_iter().collect(),
                });
            }
        }
        out
    }

    /// A blob's metadata.
    pub fn metadata(&self, name: &str) -> Option<HashMap<String, String>> {
        self.lock().blobs.get(name)?.current.as_ref().map(|v| v.metadata.clone())
    }

    /// Let every lease run out, as if its holder had stopped renewing it a
    /// minute ago (a test's way of letting time pass after a crash).
    pub fn expire_leases(&self) {
        let past = Instant::now() - Duration::from_millis(1);
        for b in self.lock().blobs.values_mut() {
            if let Some((_, until, _)) = &mut b.lease {
                *until = (*until).min(past);
            }
        }
    }

    /// The lease active on a blob now.
    pub fn lease(&self, name: &str) -> Option<LeaseId> {
        self.lock().blobs.get(name)?.active_lease().cloned()
    }

    /// Committed blocks of an append blob.
    pub fn append_blocks(&self, name: &str) -> Option<u32> {
        match self.lock().blobs.get(name)?.current.as_ref()?.body {
            Body::Append { blocks, .. } => Some(blocks),
            _ => None,
        }
    }

    fn ok(&self) {
        WireCounters::add(&self.counters.requests_ok, 1);
    }

    /// Run `f` on the state as one request: counted, refused if the
    /// container is missing.
    fn request<T>(&self, op: Op, name: &str, f: impl FnOnce(&mut State) -> StoreResult<T>) -> StoreResult<T> {
        let mut s = self.lock();
        let r = if !s.exists && op != Op::CreateContainer {
            Err(StoreError::http(op.verb(), name, 404, "ContainerNotFound"))
        } else {
            f(&mut s)
        };
        match &r {
            Ok(_) => self.ok(),
            Err(_) => WireCounters::add(&self.counters.requests_failed, 1),
        }
        r
    }
}

fn not_found(op: Op, name: &str) -> StoreError {
    StoreError::http(op.verb(), name, 404, "BlobNotFound")
}

/// The blob `name` as it is now, or its snapshot `snapshot`.
fn version<'a>(s: &'a State, op: Op, name: &str, snapshot: Option<&str>) -> StoreResult<&'a Version> {
    let b = s.blobs.get(name).ok_or_else(|| not_found(op, name))?;
    match snapshot {
        Some(id) => b.snapshots.get(id),
        None => b.current.as_ref(),
    }
    .ok_or_else(|| not_found(op, name))
}

fn current<'a>(s: &'a mut State, op: Op, name: &str) -> StoreResult<&'a mut Version> {
    s.blobs.get_mut(name).and_then(|b| b.current.as_mut()).ok_or_else(|| not_found(op, name))
}

/// A page blob's bytes and allocation map, borrowed for a write.
type Pages<'a> = (&'a mut Arc<Vec<u8>>, &'a mut Arc<Vec<bool>>);

/// The page blob `name`, for a page operation on `[offset, offset+len)`.
fn page_range<'a>(s: &'a mut State, op: Op, name: &str, offset: u64, len: u64) -> StoreResult<Pages<'a>> {
    let max = s.limits.max_write;
    if !offset.is_multiple_of(PAGE) || !len.is_multiple_of(PAGE) || len == 0 {
        return Err(StoreError::http(op.verb(), name, 400, "InvalidPageRange"));
    }
    if op == Op::PutPages && len > max {
        return Err(StoreError::http(op.verb(), name, 413, "RequestBodyTooLarge"));
    }
    match &mut current(s, op, name)?.body {
        Body::Page { data, allocated } => {
            if offset + len > data.len() as u64 {
                return Err(StoreError::http(op.verb(), name, 416, "InvalidPageRange"));
            }
            Ok((data, allocated))
        }
        _ => Err(StoreError::http(op.verb(), name, 409, "InvalidBlobType")),
    }
}

/// A new all-zero page blob `name` (its snapshots and lease stay).
fn new_page_blob(s: &mut State, name: &str, size: u64, metadata: HashMap<String, String>) {
    let pages = (size / PAGE) as usize;
    let body = Body::Page { data: Arc::new(vec![0; size as usize]), allocated: Arc::new(vec![false; pages]) };
    let b = s.blobs.entry(name.to_owned()).or_default();
    b.current = Some(Version { body, metadata });
    b.copied = false;
}

fn check_page_size(s: &State, op: Op, name: &str, size: u64) -> StoreResult<()> {
    if !size.is_multiple_of(PAGE) || size > s.limits.max_page_blob {
        return Err(StoreError::http(op.verb(), name, 400, "InvalidHeaderValue"));
    }
    Ok(())
}

impl PageStore for MemStore {
    fn counters(&self) -> &Arc<WireCounters> {
        &self.counters
    }

    fn container(&self) -> &str {
        &self.container
    }

    async fn create_container(&self) -> StoreResult<()> {
        let mut s = self.lock();
        s.exists = true;
        self.ok();
        Ok(())
    }

    async fn properties(&self, name: &str) -> StoreResult<Option<BlobProps>> {
        self.request(Op::Properties, name, |s| {
            let Some(b) = s.blobs.get(name) else { return Ok(None) };
            Ok(b.current.as_ref().map(|v| BlobProps {
                size: match &v.body {
                    Body::Page { data, .. } => data.len() as u64,
                    Body::Block(b) => b.len() as u64,
                    Body::Append { data, .. } => data.len() as u64,
                },
                metadata: v.metadata.clone(),
                leased: b.active_lease().is_some(),
            }))
        })
    }

    async fn create_page_blob(
        &self,
        name: &str,
        size: u64,
        metadata: HashMap<String, String>,
        lease: Option<&LeaseId>,
    ) -> StoreResult<()> {
        self.request(Op::CreatePageBlob, name, |s| {
            check_page_size(s, Op::CreatePageBlob, name, size)?;
            lease_allows(s, Op::CreatePageBlob, name, lease)?;
            new_page_blob(s, name, size, metadata);
            Ok(())
        })
    }

    async fn create_page_blob_if_absent(
        &self,
        name: &str,
        size: u64,
        metadata: HashMap<String, String>,
    ) -> StoreResult<bool> {
        // One request, as If-None-Match: * is: the check and the write together.
        self.request(Op::CreatePageBlobIfAbsent, name, |s| {
            check_page_size(s, Op::CreatePageBlobIfAbsent, name, size)?;
            if s.blobs.get(name).is_some_and(|b| b.current.is_some()) {
                return Ok(false);
            }
            new_page_blob(s, name, size, metadata);
            Ok(true)
        })
    }

    async fn resize(&self, name: &str, size: u64, lease: Option<&LeaseId>) -> StoreResult<()> {
        self.request(Op::Resize, name, |s| {
            check_page_size(s, Op::Resize, name, size)?;
            lease_allows(s, Op::Resize, name, lease)?;
            match &mut current(s, Op::Resize, name)?.body {
                Body::Page { data, allocated } => {
                    Arc::make_mut(data).resize(size as usize, 0);
                    Arc::make_mut(allocated).resize((size / PAGE) as usize, false);
                    Ok(())
                }
                _ => Err(StoreError::http(Op::Resize.verb(), name, 409, "InvalidBlobType")),
            }
        })
    }

    async fn put_pages(&self, name: &str, offset: u64, bytes: Bytes, lease: Option<&LeaseId>) -> StoreResult<()> {
        let len = bytes.len() as u64;
        self.request(Op::PutPages, name, |s| {
            lease_allows(s, Op::PutPages, name, lease)?;
            let (data, allocated) = page_range(s, Op::PutPages, name, offset, len)?;
            Arc::make_mut(data)[offset as usize..(offset + len) as usize].copy_from_slice(&bytes);
            Arc::make_mut(allocated)[(offset / PAGE) as usize..((offset + len) / PAGE) as usize].fill(true);
            Ok(())
        })?;
        WireCounters::add(&self.counters.bytes_sent, len);
        WireCounters::add(&self.counters.bytes_raw, len);
        Ok(())
    }

    async fn clear_pages(&self, name: &str, offset: u64, len: u64, lease: Option<&LeaseId>) -> StoreResult<()> {
        self.request(Op::ClearPages, name, |s| {
            lease_allows(s, Op::ClearPages, name, lease)?;
            let (data, allocated) = page_range(s, Op::ClearPages, name, offset, len)?;
            Arc::make_mut(data)[offset as usize..(offset + len) as usize].fill(0);
            Arc::make_mut(allocated)[(offset / PAGE) as usize..((offset + len) / PAGE) as usize].fill(false);
            Ok(())
        })?;
        WireCounters::add(&self.counters.clear_requests, 1);
        Ok(())
    }

    async fn set_metadata(
        &self,
        name: &str,
        metadata: HashMap<String, String>,
        lease: Option<&LeaseId>,
    ) -> StoreResult<()> {
        self.request(Op::SetMetadata, name, |s| {
            lease_allows(s, Op::SetMetadata, name, lease)?;
            current(s, Op::SetMetadata, name)?.metadata = metadata;
            Ok(())
        })
    }

    async fn snapshot(&self, name: &str, lease: Option<&LeaseId>) -> StoreResult<String> {
        self.request(Op::Snapshot, name, |s| {
            // Snapshot Blob needs no lease; one it names must be active.
            if lease.is_some() {
                lease_allows(s, Op::Snapshot, name, lease)?;
            }
            if let (Some(r), Some(b)) = (s.limits.snapshots, s.blobs.get(name)) {
                // Premium page blobs: 100 snapshots, one every 10 minutes.
                if b.snapshots.len() >= r.max as usize {
                    return Err(StoreError::http(Op::Snapshot.verb(), name, 409, "SnapshotCountExceeded"));
                }
                if b.snapped.is_some_and(|t| t.elapsed() < r.interval) {
                    // (Azure's spelling.)
                    return Err(StoreError::http(Op::Snapshot.verb(), name, 409, "SnaphotOperationRateExceeded"));
                }
            }
            s.snapshot_seq += 1;
            // Shaped like Azure's (a UTC time with 7 decimals), ordered.
            let id = format!("2026-01-01T00:00:00.{:07}Z", s.snapshot_seq);
            let v = current(s, Op::Snapshot, name)?.clone();
            let b = s.blobs.get_mut(name).ok_or_else(|| not_found(Op::Snapshot, name))?;
            b.snapshots.insert(id.clone(), v);
            b.snapped = Some(Instant::now());
            Ok(id)
        })
    }

    async fn delete(&self, name: &str, snapshot: Option<&str>, lease: Option<&LeaseId>) -> StoreResult<()> {
        self.request(Op::Delete, name, |s| {
            match (snapshot, lease) {
                (None, _) => lease_allows(s, Op::Delete, name, lease)?,
                // Snapshots are never leased, whatever lease the blob has.
                (Some(_), Some(_)) => {
                    return Err(StoreError::http(Op::Delete.verb(), name, 412, "LeaseNotPresentWithBlobOperation"))
                }
                (Some(_), None) => {}
            }
            let Some(b) = s.blobs.get_mut(name) else { return Ok(()) };
            match snapshot {
                Some(id) => {
                    b.snapshots.remove(id);
                }
                None if !b.snapshots.is_empty() && b.current.is_some() => {
                    return Err(StoreError::http(Op::Delete.verb(), name, 409, "SnapshotsPresent"));
                }
                None => {
                    b.current = None;
                    b.lease = None;
                }
            }
            if b.current.is_none() && b.snapshots.is_empty() {
                s.blobs.remove(name);
            }
            Ok(())
        })
    }

    async fn page_ranges(&self, name: &str, snapshot: Option<&str>) -> StoreResult<Vec<(u64, u64)>> {
        self.request(Op::PageRanges, name, |s| {
            let v = version(s, Op::PageRanges, name, snapshot)?;
            let Body::Page { allocated, .. } = &v.body else {
                return Err(StoreError::http(Op::PageRanges.verb(), name, 409, "InvalidBlobType"));
            };
            let ranges = allocated
                .iter()
                .enumerate()
                .filter(|(_, a)| **a)
                .map(|(i, _)| (i as u64 * PAGE, (i as u64 + 1) * PAGE))
                .collect();
            Ok(merge_ranges(ranges))
        })
    }

    async fn read(&self, name: &str, snapshot: Option<&str>, offset: u64, len: u64) -> StoreResult<Bytes> {
        self.request(Op::Read, name, |s| {
            let v = version(s, Op::Read, name, snapshot)?;
            let data: &[u8] = match &v.body {
                Body::Page { data, .. } => data,
                Body::Block(b) => b,
                Body::Append { data, .. } => data,
            };
            let end = offset.saturating_add(len);
            if end > data.len() as u64 {
                return Err(StoreError::http(Op::Read.verb(), name, 416, "InvalidRange"));
            }
            Ok(Bytes::copy_from_slice(&data[offset as usize..end as usize]))
        })
    }

    async fn get(&self, name: &str) -> StoreResult<Option<Bytes>> {
        self.request(Op::Get, name, |s| {
            Ok(s.blobs.get(name).and_then(|b| b.current.as_ref()).map(|v| match &v.body {
                Body::Page { data, .. } => Bytes::copy_from_slice(data),
                Body::Block(b) => b.clone(),
                Body::Append { data, .. } => Bytes::copy_from_slice(data),
            }))
        })
    }

    async fn list(&self, prefix: &str) -> StoreResult<Vec<Listed>> {
        self.request(Op::List, &self.container, |_| Ok(()))?;
        Ok(self.names().into_iter().filter(|l| l.name.starts_with(prefix)).collect())
    }

    async fn put_block_blob(&self, name: &str, bytes: Bytes) -> StoreResult<()> {
        self.request(Op::PutBlockBlob, name, |s| {
            lease_allows(s, Op::PutBlockBlob, name, None)?;
            if s.limits.page_blobs_only {
                return Err(StoreError::http(Op::PutBlockBlob.verb(), name, 400, "InvalidBlobType"));
            }
            let b = s.blobs.entry(name.to_owned()).or_default();
            b.current = Some(Version { body: Body::Block(bytes), metadata: HashMap::new() });
            Ok(())
        })
    }

    async fn create_append_blob(&self, name: &str, lease: Option<&LeaseId>) -> StoreResult<()> {
        self.request(Op::CreateAppendBlob, name, |s| {
            lease_allows(s, Op::CreateAppendBlob, name, lease)?;
            if s.limits.page_blobs_only {
                return Err(StoreError::http(Op::CreateAppendBlob.verb(), name, 400, "InvalidBlobType"));
            }
            let b = s.blobs.entry(name.to_owned()).or_default();
            b.current = Some(Version { body: Body::Append { data: Vec::new(), blocks: 0 }, metadata: HashMap::new() });
            Ok(())
        })
    }

    async fn append(&self, name: &str, bytes: Bytes, lease: Option<&LeaseId>) -> StoreResult<u32> {
        self.request(Op::Append, name, |s| {
            lease_allows(s, Op::Append, name, lease)?;
            let limits = s.limits;
            if bytes.len() as u64 > limits.max_write {
                return Err(StoreError::http(Op::Append.verb(), name, 413, "RequestBodyTooLarge"));
            }
            match &mut current(s, Op::Append, name)?.body {
                Body::Append { blocks, .. } if *blocks >= limits.append_blocks => {
                    Err(StoreError::http(Op::Append.verb(), name, 409, "BlockCountExceedsLimit"))
                }
                Body::Append { data, blocks } => {
                    data.extend_from_slice(&bytes);
                    *blocks += 1;
                    Ok(*blocks)
                }
                _ => Err(StoreError::http(Op::Append.verb(), name, 409, "InvalidBlobType")),
            }
        })
    }

    async fn start_copy(&self, dst: &str, src: &str, snapshot: &str) -> StoreResult<()> {
        self.request(Op::StartCopy, dst, |s| {
            let v = s
                .blobs
                .get(src)
                .and_then(|b| b.snapshots.get(snapshot))
                .cloned()
                .ok_or_else(|| StoreError::http(Op::StartCopy.verb(), dst, 404, "CannotVerifyCopySource"))?;
            lease_allows(s, Op::StartCopy, dst, None)?;
            let polls = s.limits.copy_polls;
            let b = s.blobs.entry(dst.to_owned()).or_default();
            if b.copied && b.copy_pending > 0 && !b.copy_aborted {
                return Err(StoreError::http(Op::StartCopy.verb(), dst, 409, "PendingCopyOperation"));
            }
            b.current = Some(v);
            (b.copied, b.copy_pending, b.copy_aborted) = (true, polls, false);
            Ok(())
        })
    }

    async fn copy_state(&self, dst: &str) -> StoreResult<CopyState> {
        self.request(Op::CopyState, dst, |s| match s.blobs.get_mut(dst) {
            Some(b) if b.current.is_some() => Ok(match (b.copied, b.copy_aborted, b.copy_pending) {
                (false, _, _) => CopyState::None,
                (true, true, _) => CopyState::Failed("Aborted".into()),
                (true, false, 0) => CopyState::Success,
                (true, false, _) => {
                    b.copy_pending -= 1;
                    CopyState::Pending { id: Some(format!("copy-of-{dst}")) }
                }
            }),
            _ => Err(not_found(Op::CopyState, dst)),
        })
    }

    async fn abort_copy(&self, dst: &str, id: &str) -> StoreResult<()> {
        self.request(Op::AbortCopy, dst, |s| {
            let b =
                s.blobs.get_mut(dst).filter(|b| b.current.is_some()).ok_or_else(|| not_found(Op::AbortCopy, dst))?;
            if !b.copied || b.copy_aborted || b.copy_pending == 0 {
                return Err(StoreError::http(Op::AbortCopy.verb(), dst, 409, "NoPendingCopyOperation"));
            }
            if id != format!("copy-of-{dst}") {
                return Err(StoreError::http(Op::AbortCopy.verb(), dst, 409, "CopyIdMismatch"));
            }
            // "The destination blob is left with zero length and full metadata."
            if let Some(v) = b.current.as_mut() {
                v.body = Body::Block(Bytes::new());
            }
            b.copy_aborted = true;
            Ok(())
        })
    }

    async fn acquire_lease(&self, name: &str, id: &LeaseId, secs: u32) -> StoreResult<()> {
        self.request(Op::AcquireLease, name, |s| {
            if !LEASE_SECS.contains(&secs) {
                return Err(StoreError::http(Op::AcquireLease.verb(), name, 400, "InvalidHeaderValue"));
            }
            let b = s
                .blobs
                .get_mut(name)
                .filter(|b| b.current.is_some())
                .ok_or_else(|| not_found(Op::AcquireLease, name))?;
            match b.active_lease() {
                Some(held) if held != id => {
                    Err(StoreError::http(Op::AcquireLease.verb(), name, 409, "LeaseAlreadyPresent"))
                }
                _ => {
                    b.lease = Some((id.clone(), Instant::now() + Duration::from_secs(secs.into()), secs));
                    Ok(())
                }
            }
        })
    }

    async fn renew_lease(&self, name: &str, id: &LeaseId) -> StoreResult<()> {
        self.request(Op::RenewLease, name, |s| {
            let b = s.blobs.get_mut(name).ok_or_else(|| not_found(Op::RenewLease, name))?;
            // An expired lease is renewed too, unless another took the blob since.
            match &mut b.lease {
                Some((held, until, secs)) if held == id => {
                    *until = Instant::now() + Duration::from_secs((*secs).into());
                    Ok(())
                }
                Some(_) => Err(StoreError::http(Op::RenewLease.verb(), name, 409, "LeaseIdMismatchWithLeaseOperation")),
                None => Err(StoreError::http(Op::RenewLease.verb(), name, 409, "LeaseNotPresentWithLeaseOperation")),
            }
        })
    }

    async fn release_lease(&self, name: &str, id: &LeaseId) -> StoreResult<()> {
        self.request(Op::ReleaseLease, name, |s| {
            let b = s.blobs.get_mut(name).ok_or_else(|| not_found(Op::ReleaseLease, name))?;
            match &b.lease {
                Some((held, _, _)) if held == id => {
                    b.lease = None;
                    Ok(())
                }
                Some(_) => {
                    Err(StoreError::http(Op::ReleaseLease.verb(), name, 409, "LeaseIdMismatchWithLeaseOperation"))
                }
                None => Err(StoreError::http(Op::ReleaseLease.verb(), name, 409, "LeaseNotPresentWithLeaseOperation")),
            }
        })
    }

    async fn rules(&self) -> StoreResult<crate::store::AccountRules> {
        self.request(Op::AccountInfo, &self.container, |s| {
            Ok(crate::store::AccountRules { page_blobs_only: s.limits.page_blobs_only, snapshots: s.limits.snapshots })
        })
    }

    async fn break_lease(&self, name: &str) -> StoreResult<()> {
        self.request(Op::BreakLease, name, |s| {
            if let Some(b) = s.blobs.get_mut(name) {
                b.lease = None;
            }
            Ok(())
        })
    }
}
