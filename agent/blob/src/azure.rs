//! [`AzureStore`]: a [`PageStore`] on Azure Blob Storage (or Azurite)
//! through the official `azure_storage_blob` SDK. One attempt per call: the
//! SDK's own retry policy is off, and retrying is [`crate::retry::Retrying`]'s
//! job, so each retry is counted once. Every error names the operation and
//! the blob (its URL without credentials).

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use azure_core::credentials::TokenCredential;
use azure_core::http::{ClientOptions, RetryOptions, Transport, Url};
use azure_storage_blob::models::{
    AppendBlobClientAppendBlockOptions, AppendBlobClientAppendBlockResultHeaders, AppendBlobClientCreateOptions,
    BlobClientAcquireLeaseOptions, BlobClientBreakLeaseOptions, BlobClientCreateSnapshotOptions,
    BlobClientCreateSnapshotResultHeaders, BlobClientDeleteOptions, BlobClientDownloadOptions,
    BlobClientGetPropertiesResultHeaders, BlobClientSetMetadataOptions, BlobContainerClientListBlobsOptions,
    CopyStatus, HttpRange, LeaseState, ListBlobsIncludeItem, PageBlobClientClearPagesOptions,
    PageBlobClientCreateOptions, PageBlobClientListPageRangesOptions, PageBlobClientResizeOptions,
    PageBlobClientUploadPagesOptions,
};
use azure_storage_blob::{
    AppendBlobClient, AppendBlobClientOptions, BlobClient, BlobClientOptions, BlobContainerClient,
    BlobContainerClientOptions, PageBlobClient, PageBlobClientOptions,
};
use bytes::Bytes;
use futures::TryStreamExt;

use crate::address::{redact, BlobAddress};
use crate::counters::WireCounters;
use crate::credential::Credential;
use crate::error::{ErrorKind, StoreError, StoreResult};
use crate::store::{AccountRules, BlobProps, CopyState, LeaseId, Listed, Op, PageStore};

/// A `PageStore` on Azure Blob Storage (or Azurite). Its `Debug` shows the
/// address, the credential's kind and the version (both redacted as their
/// own `Debug` does); the user delegation key, a signing secret, never.
#[derive(Clone)]
pub struct AzureStore {
    addr: BlobAddress,
    cred: Credential,
    /// Pins `x-ms-version` on every client.
    version: Option<String>,
    counters: Arc<WireCounters>,
    /// One HTTP client for every request: its connections are reused, and
    /// the system's root certificates are read once. (A client per SDK
    /// blob client, the SDK's default, read every certificate file and
    /// opened a new connection for every Put Page: measured on the 4 GiB
    /// benchmark, three quarters of the agent's CPU and a third of Azurite's.)
    transport: Transport,
    /// Under a token credential: the user delegation key copy sources are
    /// signed with, and when to ask for a new one.
    delegation: Arc<tokio::sync::Mutex<Option<(UserDelegationKey, time::OffsetDateTime)>>>,
}

type UserDelegationKey = azure_storage_common::models::UserDelegationKey;

impl std::fmt::Debug for AzureStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureStore")
            .field("addr", &self.addr)
            .field("cred", &self.cred)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

/// Get Page Ranges is asked this much of a blob at a time: 32 GiB, as the
/// coordinator's page range diff is (Learn points to segments of about
/// 150 MB for the most fragmented blobs; each segment is also paged).
/// `DISKFERRY_PAGE_LIST_SEGMENT_BYTES` sets it (whole pages, at least one),
/// for tests.
pub const PAGE_LIST_SEGMENT_ENV: &str = "DISKFERRY_PAGE_LIST_SEGMENT_BYTES";

fn page_list_segment() -> u64 {
    let asked = std::env::var(PAGE_LIST_SEGMENT_ENV).ok().and_then(|v| v.trim().parse::<u64>().ok());
    asked.map_or(32 << 30, |b| (b / 512 * 512).max(512))
}

impl AzureStore {
    /// The container of `addr`, with credentials from the URL or the
    /// environment ([`Credential::for_address`]).
    pub fn connect(addr: BlobAddress, version: Option<String>) -> anyhow::Result<Self> {
        let cred = Credential::for_address(&addr)?;
        Ok(Self::with_credential(addr, cred, version))
    }

    pub fn with_credential(addr: BlobAddress, cred: Credential, version: Option<String>) -> Self {
        Self {
            addr,
            cred,
            version,
            counters: Default::default(),
            transport: Transport::new(azure_core::http::new_http_client(None)),
            delegation: Default::default(),
        }
    }

    pub fn address(&self) -> &BlobAddress {
        &self.addr
    }

    /// Send every request through `transport` (a test's in-process HTTP
    /// client, in place of the network).
    pub fn with_transport(mut self, transport: Transport) -> Self {
        self.transport = transport;
        self
    }

    /// Count into `counters` (shared with another store).
    pub fn with_counters(mut self, counters: Arc<WireCounters>) -> Self {
        self.counters = counters;
        self
    }

    fn options(&self) -> ClientOptions {
        ClientOptions { retry: RetryOptions::none(), transport: Some(self.transport.clone()), ..Default::default() }
    }

    /// Under a token credential, a read SAS for the container signed with
    /// the identity's user delegation key (asked for once, and again after
    /// half of its [`crate::sas::DELEGATION_KEY_LIFETIME`]); `None` under
    /// a key or a SAS.
    async fn delegated_read_sas(&self, what: &str) -> StoreResult<Option<String>> {
        use azure_storage_blob::models::KeyInfo;
        let Credential::Token(token) = &self.cred else { return Ok(None) };
        let op = Op::StartCopy;
        let now = time::OffsetDateTime::now_utc();
        let mut cached = self.delegation.lock().await;
        if cached.as_ref().is_none_or(|(_, renew)| now >= *renew) {
            let mut o =
                azure_storage_blob::BlobServiceClientOptions { client_options: self.options(), ..Default::default() };
            if let Some(v) = &self.version {
                o.version = v.clone();
            }
            let svc =
                azure_storage_blob::BlobServiceClient::new(self.addr.service.clone(), Some(token.clone()), Some(o))
                    .map_err(|e| Self::invalid(op, what, e))?;
            let life = crate::sas::DELEGATION_KEY_LIFETIME;
            let info = KeyInfo {
                start: Some(now - time::Duration::minutes(5)),
                expiry: Some(now + life),
                ..Default::default()
            };
            let body = info.try_into().map_err(|e| Self::invalid(op, what, e))?;
            let key = self.send(op, what, svc.get_user_delegation_key(body, None)).await?;
            let key = key.into_model().map_err(|e| Self::invalid(op, what, e))?;
            *cached = Some((key, now + life / 2));
        }
        let Some((key, _)) = cached.as_ref() else { return Ok(None) };
        crate::sas::delegated_read_sas(&self.addr.account, &self.addr.container, key, now)
            .map(Some)
            .map_err(|e| Self::invalid(op, what, e))
    }

    /// A request that cannot be made: not retried.
    fn invalid(op: Op, what: &str, message: impl std::fmt::Display) -> StoreError {
        StoreError::Invalid { op: op.verb(), what: what.to_owned(), message: redact(&message.to_string()) }
    }

    fn url(&self, op: Op, name: &str, snapshot: Option<&str>) -> StoreResult<Url> {
        let mut url = self.addr.blob_url(name).map_err(|e| Self::invalid(op, name, e))?;
        let mut q = match (self.sas(op, name)?, snapshot) {
            // Azurite refuses snapshot requests under a container SAS (Azure
            // takes them: `w` snapshots, `r` reads, `d` deletes); the
            // signer's account SAS for an emulator covers them.
            (Some((_, Some(account))), Some(_)) if self.addr.is_emulator() => account,
            (Some((blob, _)), _) => blob,
            (None, _) => String::new(),
        };
        if let Some(s) = snapshot {
            let enc: String = url::form_urlencoded::byte_serialize(s.as_bytes()).collect();
            q = if q.is_empty() { format!("snapshot={enc}") } else { format!("{q}&snapshot={enc}") };
        }
        if !q.is_empty() {
            url.set_query(Some(&q));
        }
        Ok(url)
    }

    /// A client of the container, under the account SAS, the container SAS
    /// or the token.
    fn container_client(&self, op: Op) -> StoreResult<BlobContainerClient> {
        let name = &self.addr.container;
        let mut url = self.addr.container_url().map_err(|e| Self::invalid(op, name, e))?;
        if let Some((blob, account)) = self.sas(op, name)? {
            // A container SAS cannot create its container: the account SAS
            // for that alone (a self-signed one grants nothing else on Azure).
            let account = account.filter(|_| op == Op::CreateContainer);
            url.set_query(Some(account.as_ref().unwrap_or(&blob)));
        }
        let mut o = BlobContainerClientOptions { client_options: self.options(), ..Default::default() };
        if let Some(v) = &self.version {
            o.version = v.clone();
        }
        BlobContainerClient::new(url, self.token(), Some(o)).map_err(|e| Self::invalid(op, name, e))
    }

    fn token(&self) -> Option<Arc<dyn TokenCredential>> {
        match &self.cred {
            Credential::Token(t) => Some(t.clone()),
            Credential::Sas { .. } | Credential::Key(_) => None,
        }
    }

    /// The SAS to send now (container or blob SAS, and an account SAS when
    /// signed here): a self-signed one is renewed before it expires.
    fn sas(&self, op: Op, what: &str) -> StoreResult<Option<(String, Option<String>)>> {
        match &self.cred {
            Credential::Sas { blob, account } => Ok(Some((blob.clone(), account.clone()))),
            Credential::Key(signer) => {
                let (blob, account) = signer.tokens().map_err(|e| Self::invalid(op, what, e))?;
                Ok(Some((blob, Some(account))))
            }
            Credential::Token(_) => Ok(None),
        }
    }

    fn blob(&self, op: Op, name: &str, snapshot: Option<&str>) -> StoreResult<BlobClient> {
        let mut o = BlobClientOptions { client_options: self.options(), ..Default::default() };
        if let Some(v) = &self.version {
            o.version = v.clone();
        }
        BlobClient::new(self.url(op, name, snapshot)?, self.token(), Some(o)).map_err(|e| Self::invalid(op, name, e))
    }

    fn page(&self, op: Op, name: &str) -> StoreResult<PageBlobClient> {
        let mut o = PageBlobClientOptions { client_options: self.options(), ..Default::default() };
        if let Some(v) = &self.version {
            o.version = v.clone();
        }
        PageBlobClient::new(self.url(op, name, None)?, self.token(), Some(o)).map_err(|e| Self::invalid(op, name, e))
    }

    fn append_client(&self, op: Op, name: &str) -> StoreResult<AppendBlobClient> {
        let mut o = AppendBlobClientOptions { client_options: self.options(), ..Default::default() };
        if let Some(v) = &self.version {
            o.version = v.clone();
        }
        AppendBlobClient::new(self.url(op, name, None)?, self.token(), Some(o)).map_err(|e| Self::invalid(op, name, e))
    }

    /// Send one request and count its outcome.
    async fn send<T>(
        &self,
        op: Op,
        what: &str,
        request: impl Future<Output = azure_core::Result<T>>,
    ) -> StoreResult<T> {
        match request.await {
            Ok(v) => {
                WireCounters::add(&self.counters.requests_ok, 1);
                Ok(v)
            }
            Err(e) => {
                WireCounters::add(&self.counters.requests_failed, 1);
                Err(convert(op, what, e))
            }
        }
    }
}

/// An SDK error as a `StoreError`, with the URL's secrets kept out.
fn convert(op: Op, what: &str, e: azure_core::Error) -> StoreError {
    use azure_core::error::ErrorKind as Sdk;
    match e.kind() {
        Sdk::HttpResponse { status, error_code, raw_response } => {
            let retry_after = raw_response.as_ref().and_then(|r| {
                r.headers()
                    .get_optional_str(&azure_core::http::headers::RETRY_AFTER)
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs)
            });
            StoreError::Http {
                op: op.verb(),
                what: what.to_owned(),
                status: u16::from(*status),
                code: error_code.clone().unwrap_or_else(|| status.canonical_reason().to_string()),
                retry_after,
            }
        }
        _ => {
            // The whole chain: "failed to execute request: ... connection refused".
            let mut message = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                message.push_str(": ");
                message.push_str(&s.to_string());
                src = s.source();
            }
            StoreError::Transport { op: op.verb(), what: what.to_owned(), message: redact(&message) }
        }
    }
}

fn lease_of(lease: Option<&LeaseId>) -> Option<String> {
    lease.map(|l| l.as_str().to_owned())
}

fn missing_is_none<T>(r: StoreResult<T>) -> StoreResult<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

impl PageStore for AzureStore {
    fn counters(&self) -> &Arc<WireCounters> {
        &self.counters
    }

    fn container(&self) -> &str {
        &self.addr.container
    }

    async fn list(&self, prefix: &str) -> StoreResult<Vec<Listed>> {
        let c = self.container_client(Op::List)?;
        self.send(Op::List, &self.addr.container, async {
            let o = BlobContainerClientListBlobsOptions {
                prefix: Some(prefix.to_owned()),
                include: Some(vec![ListBlobsIncludeItem::Snapshots, ListBlobsIncludeItem::Metadata]),
                ..Default::default()
            };
            let mut pager = c.list_blobs(Some(o))?;
            let mut out = Vec::new();
            while let Some(item) = pager.try_next().await? {
                if let Some(name) = item.name {
                    let metadata = item.metadata.and_then(|m| m.values).unwrap_or_default().into_iter().collect();
                    out.push(Listed { name, snapshot: item.snapshot, metadata });
                }
            }
            Ok(out)
        })
        .await
    }

    async fn create_container(&self) -> StoreResult<()> {
        let c = self.container_client(Op::CreateContainer)?;
        match self.send(Op::CreateContainer, &self.addr.container, c.create(None)).await {
            Err(e) if e.kind() == ErrorKind::Conflict => Ok(()),
            r => r.map(|_| ()),
        }
    }

    async fn properties(&self, name: &str) -> StoreResult<Option<BlobProps>> {
        let c = self.blob(Op::Properties, name, None)?;
        let r = missing_is_none(self.send(Op::Properties, name, c.get_properties(None)).await)?;
        Ok(r.map(|r| BlobProps {
            size: r.content_length().ok().flatten().unwrap_or(0),
            metadata: r.metadata().unwrap_or_default(),
            leased: matches!(r.lease_state().ok().flatten(), Some(LeaseState::Leased | LeaseState::Breaking)),
        }))
    }

    async fn create_page_blob(
        &self,
        name: &str,
        size: u64,
        metadata: HashMap<String, String>,
        lease: Option<&LeaseId>,
    ) -> StoreResult<()> {
        let c = self.page(Op::CreatePageBlob, name)?;
        let o =
            PageBlobClientCreateOptions { metadata: Some(metadata), lease_id: lease_of(lease), ..Default::default() };
        self.send(Op::CreatePageBlob, name, c.create(size, Some(o))).await.map(|_| ())
    }

    async fn create_page_blob_if_absent(
        &self,
        name: &str,
        size: u64,
        metadata: HashMap<String, String>,
    ) -> StoreResult<bool> {
        let c = self.page(Op::CreatePageBlobIfAbsent, name)?;
        let o = PageBlobClientCreateOptions {
            metadata: Some(metadata),
            if_none_match: Some(azure_core::http::Etag::from("*")),
            ..Default::default()
        };
        match self.send(Op::CreatePageBlobIfAbsent, name, c.create(size, Some(o))).await {
            Ok(_) => Ok(true),
            // 409 BlobAlreadyExists; 412 LeaseIdMissing when it is leased too.
            Err(e) if matches!(e.kind(), ErrorKind::Conflict | ErrorKind::Leased) => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn resize(&self, name: &str, size: u64, lease: Option<&LeaseId>) -> StoreResult<()> {
        let c = self.page(Op::Resize, name)?;
        let o = PageBlobClientResizeOptions { lease_id: lease_of(lease), ..Default::default() };
        self.send(Op::Resize, name, c.resize(size, Some(o))).await.map(|_| ())
    }

    async fn put_pages(&self, name: &str, offset: u64, bytes: Bytes, lease: Option<&LeaseId>) -> StoreResult<()> {
        let c = self.page(Op::PutPages, name)?;
        let len = bytes.len() as u64;
        let o = PageBlobClientUploadPagesOptions { lease_id: lease_of(lease), ..Default::default() };
        self.send(Op::PutPages, name, c.upload_pages(bytes.into(), len, HttpRange::new(offset, len), Some(o))).await?;
        WireCounters::add(&self.counters.bytes_sent, len);
        WireCounters::add(&self.counters.bytes_raw, len);
        Ok(())
    }

    async fn clear_pages(&self, name: &str, offset: u64, len: u64, lease: Option<&LeaseId>) -> StoreResult<()> {
        let c = self.page(Op::ClearPages, name)?;
        let o = PageBlobClientClearPagesOptions { lease_id: lease_of(lease), ..Default::default() };
        self.send(Op::ClearPages, name, c.clear_pages(HttpRange::new(offset, len), Some(o))).await?;
        WireCounters::add(&self.counters.clear_requests, 1);
        Ok(())
    }

    async fn set_metadata(
        &self,
        name: &str,
        metadata: HashMap<String, String>,
        lease: Option<&LeaseId>,
    ) -> StoreResult<()> {
        let c = self.blob(Op::SetMetadata, name, None)?;
        let o = BlobClientSetMetadataOptions { lease_id: lease_of(lease), ..Default::default() };
        self.send(Op::SetMetadata, name, c.set_metadata(&metadata, Some(o))).await.map(|_| ())
    }

    async fn snapshot(&self, name: &str, lease: Option<&LeaseId>) -> StoreResult<String> {
        let c = self.blob(Op::Snapshot, name, None)?;
        let o = BlobClientCreateSnapshotOptions { lease_id: lease_of(lease), ..Default::default() };
        let r = self.send(Op::Snapshot, name, c.create_snapshot(Some(o))).await?;
        // Not retried: each retry would take another snapshot.
        r.snapshot().ok().flatten().ok_or_else(|| Self::invalid(Op::Snapshot, name, "the response named no snapshot"))
    }

    async fn delete(&self, name: &str, snapshot: Option<&str>, lease: Option<&LeaseId>) -> StoreResult<()> {
        let c = self.blob(Op::Delete, name, snapshot)?;
        let o = BlobClientDeleteOptions { lease_id: lease_of(lease), ..Default::default() };
        missing_is_none(self.send(Op::Delete, name, c.delete(Some(o))).await).map(|_| ())
    }

    async fn page_ranges(&self, name: &str, snapshot: Option<&str>) -> StoreResult<Vec<(u64, u64)>> {
        // Learn, Get Page Ranges: "In a highly fragmented page blob with a
        // large number of writes, a Get Page Ranges request can fail due to
        // an internal server timeout. Applications ... should retrieve a
        // subset of page ranges at a time": asked a segment at a time
        // (`x-ms-range`), each segment paged by `NextMarker`.
        let c = self.blob(Op::PageRanges, name, snapshot)?;
        let head = self.send(Op::PageRanges, name, c.get_properties(None)).await?;
        let size = head.content_length().ok().flatten().unwrap_or(0);
        let c = c.page_blob_client();
        let segment = page_list_segment();
        let mut out: Vec<(u64, u64)> = Vec::new();
        let mut start = 0;
        while start < size {
            let len = segment.min(size - start);
            let pages = self
                .send(Op::PageRanges, name, async {
                    let o = PageBlobClientListPageRangesOptions {
                        range: Some(HttpRange::new(start, len)),
                        ..Default::default()
                    };
                    let mut pager = c.list_page_ranges(Some(o))?;
                    let mut all = Vec::new();
                    while let Some(page) = pager.try_next().await? {
                        all.push(page.into_model()?);
                    }
                    Ok(all)
                })
                .await?;
            out.extend(
                pages
                    .into_iter()
                    .flat_map(|list| list.page_ranges)
                    .filter_map(|r| Some((r.start? as u64, r.end? as u64 + 1))),
            );
            start += len;
        }
        out.sort_unstable();
        // Azurite returns one range per write, and a range may cross a
        // segment's edge: merge neighbours.
        Ok(crate::store::merge_ranges(out))
    }

    async fn read(&self, name: &str, snapshot: Option<&str>, offset: u64, len: u64) -> StoreResult<Bytes> {
        let c = self.blob(Op::Read, name, snapshot)?;
        self.send(Op::Read, name, async {
            let o = BlobClientDownloadOptions {
                range: Some(HttpRange::new(offset, len)),
                parallel: std::num::NonZero::new(1),
                partition_size: usize::try_from(len).ok().and_then(std::num::NonZero::new),
                ..Default::default()
            };
            c.download(Some(o)).await?.body.collect().await
        })
        .await
    }

    async fn get(&self, name: &str) -> StoreResult<Option<Bytes>> {
        let c = self.blob(Op::Get, name, None)?;
        missing_is_none(self.send(Op::Get, name, async { c.download(None).await?.body.collect().await }).await)
    }

    async fn put_block_blob(&self, name: &str, bytes: Bytes) -> StoreResult<()> {
        let c = self.blob(Op::PutBlockBlob, name, None)?;
        self.send(Op::PutBlockBlob, name, c.upload(bytes.into(), None)).await.map(|_| ())
    }

    async fn create_append_blob(&self, name: &str, lease: Option<&LeaseId>) -> StoreResult<()> {
        let c = self.append_client(Op::CreateAppendBlob, name)?;
        let o = AppendBlobClientCreateOptions { lease_id: lease_of(lease), ..Default::default() };
        self.send(Op::CreateAppendBlob, name, c.create(Some(o))).await.map(|_| ())
    }

    async fn append(&self, name: &str, bytes: Bytes, lease: Option<&LeaseId>) -> StoreResult<u32> {
        let c = self.append_client(Op::Append, name)?;
        let len = bytes.len() as u64;
        let o = AppendBlobClientAppendBlockOptions { lease_id: lease_of(lease), ..Default::default() };
        let r = self.send(Op::Append, name, c.append_block(bytes.into(), len, Some(o))).await?;
        let blocks = r.blob_committed_block_count().ok().flatten().and_then(|n| u32::try_from(n).ok());
        blocks.ok_or_else(|| Self::invalid(Op::Append, name, "the response named no committed block count"))
    }

    async fn start_copy(&self, dst: &str, src: &str, snapshot: &str) -> StoreResult<()> {
        let mut source = self.url(Op::StartCopy, src, Some(snapshot))?;
        // Copy Blob reads its source with what the source URL carries: a
        // SAS, here. Under a key it is the container SAS `url` adds; under
        // a token, one signed with the identity's user delegation key.
        if let Some(sas) = self.delegated_read_sas(dst).await? {
            let q = source.query().map_or(sas.clone(), |q| format!("{q}&{sas}"));
            source.set_query(Some(&q));
        }
        let source = source.to_string();
        let c = self.blob(Op::StartCopy, dst, None)?;
        self.send(Op::StartCopy, dst, c.start_copy_from_url(source, None)).await.map(|_| ())
    }

    async fn copy_state(&self, dst: &str) -> StoreResult<CopyState> {
        let c = self.blob(Op::CopyState, dst, None)?;
        let p = self.send(Op::CopyState, dst, c.get_properties(None)).await?;
        Ok(match p.copy_status().ok().flatten() {
            None => CopyState::None,
            Some(CopyStatus::Pending) => CopyState::Pending { id: p.copy_id().ok().flatten() },
            Some(CopyStatus::Success) => CopyState::Success,
            Some(other) => {
                let why = p.copy_status_description().ok().flatten().unwrap_or_default();
                CopyState::Failed(format!("{other:?} {why}"))
            }
        })
    }

    async fn abort_copy(&self, dst: &str, id: &str) -> StoreResult<()> {
        let c = self.blob(Op::AbortCopy, dst, None)?;
        self.send(Op::AbortCopy, dst, c.abort_copy(id, None)).await.map(|_| ())
    }

    async fn acquire_lease(&self, name: &str, id: &LeaseId, secs: u32) -> StoreResult<()> {
        let c = self.blob(Op::AcquireLease, name, None)?;
        let secs = i32::try_from(secs).map_err(|e| Self::invalid(Op::AcquireLease, name, e))?;
        let o = BlobClientAcquireLeaseOptions { proposed_lease_id: Some(id.as_str().to_owned()), ..Default::default() };
        self.send(Op::AcquireLease, name, c.acquire_lease(secs, Some(o))).await.map(|_| ())
    }

    async fn renew_lease(&self, name: &str, id: &LeaseId) -> StoreResult<()> {
        let c = self.blob(Op::RenewLease, name, None)?;
        self.send(Op::RenewLease, name, c.renew_lease(id.as_str().to_owned(), None)).await.map(|_| ())
    }

    async fn release_lease(&self, name: &str, id: &LeaseId) -> StoreResult<()> {
        let c = self.blob(Op::ReleaseLease, name, None)?;
        self.send(Op::ReleaseLease, name, c.release_lease(id.as_str().to_owned(), None)).await.map(|_| ())
    }

    async fn rules(&self) -> StoreResult<AccountRules> {
        use azure_storage_blob::models::{AccountKind, BlobContainerClientGetAccountInfoResultHeaders, SkuName};
        let c = self.container_client(Op::AccountInfo)?;
        let r = self.send(Op::AccountInfo, &self.addr.container, c.get_account_info(None)).await?;
        let premium = matches!(r.sku_name().ok().flatten(), Some(SkuName::PremiumLrs | SkuName::PremiumZrs));
        let general = matches!(r.account_kind().ok().flatten(), Some(AccountKind::Storage | AccountKind::StorageV2));
        Ok(if premium && general { AccountRules::premium() } else { AccountRules::default() })
    }

    async fn break_lease(&self, name: &str) -> StoreResult<()> {
        let c = self.blob(Op::BreakLease, name, None)?;
        let o = BlobClientBreakLeaseOptions { break_period: Some(0), ..Default::default() };
        match self.send(Op::BreakLease, name, c.break_lease(Some(o))).await {
            Ok(_) => Ok(()),
            // No lease to break, or no blob.
            Err(StoreError::Http { code, .. }) if code == "LeaseNotPresentWithLeaseOperation" => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }
}
