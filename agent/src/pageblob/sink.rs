//! `pageblob:URL`: a page blob (fixed VHD: disk, padding to 1 MiB, footer)
//! that keeps its own state beside it, in the same container (what is read
//! of it before a generation: `prior.rs`):
//!
//! ```text
//! B                  the page blob; metadata diskferry_generation (last published G),
//!                    diskferry_manifest (blake3 of manifest G), diskferry_building (G in progress)
//! B.g<G>.manifest    manifest of generation G (block blob)
//! B.journal[.k]      journal of the generation in progress: a chain of append blob
//!                    segments (see core::journal)
//! B.points           recovery points: generation, snapshot id, time, sizes (block blob, JSON)
//! ```
//!
//! A generation: take the writer's lease on B (`lease.rs`: storage refuses
//! every write of another writer from then on), read the destination's
//! state under it, mark `building = G`, append intents before each window's writes,
//! put pages (at most 4 MiB, bounded bytes in flight) and clear pages, append
//! acks as storage confirms them, and when every write is acknowledged:
//! publish manifest G, set metadata to G, snapshot (recovery point G), trim
//! old points, drop the journal, release the lease. Snapshots are immutable, so recovery point
//! G-1 survives anything that happens to a failed G; a rerun reads the journal
//! and resumes: acked chunks are not resent, touched ones are rewritten.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, Context};
use bytes::Bytes;
use diskferry_core::digest::Digest;
use diskferry_core::geometry::{round_up_mib, Geometry};
use diskferry_core::journal::{JournalHeader, Record};
use diskferry_core::manifest::{ChunkState, Manifest};
use diskferry_core::plan::Plan;
use diskferry_core::vhd::{Footer, FOOTER_LEN};
use futures::FutureExt;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::journal_writer::{self, JournalWriter, Segments};
use super::lease::{LeaseOptions, WriterLease, META_WRITER};
use super::points::{manifest_name, RecoveryPoint};
use crate::exit::{ExitCode, Failure, WithCode};
use crate::scan::WindowView;
use crate::sink::{Prior, Sink, WireStats};
use diskferry_blob::{ErrorKind, PageStore, StoreError};

pub(super) const META_GENERATION: &str = "diskferry_generation";
pub(super) const META_MANIFEST: &str = "diskferry_manifest";
pub(super) const META_BUILDING: &str = "diskferry_building";
pub(super) const META_DISK_SIZE: &str = "diskferry_disk_size";
/// What the generation's disks held together (`crash`, `per-disk`...),
/// when the sync was told: its snapshot keeps it.
pub(super) const META_CONSISTENCY: &str = "diskferry_consistency";
/// Where the state lives when not beside the blob (`--state-url`, no SAS).
pub(super) const META_STATE: &str = "diskferry_state";
/// The highest fencing number of the runs that wrote this blob: a run whose
/// number is lower (its coordinator lost its lease to a newer one) is
/// refused (DESIGN.md, "Coordinator state").
pub(super) const META_FENCE: &str = "diskferry_fence";
/// The longest state place recorded there: with the other keys (under 300
/// bytes) well inside the 8 KiB a blob's metadata may hold.
const MAX_STATE_PLACE: usize = 1024;

/// Options of a page blob destination.
#[derive(Debug, Clone)]
pub struct PageBlobOptions {
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Recovery points kept (older ones are deleted after a sync).
    pub keep: usize,
    /// No recovery point younger than this is deleted, whatever `keep` says
    /// (judged by its snapshot's own time): a writer committing generation
    /// after generation cannot push recent history out.
    pub min_retention: Option<Duration>,
    pub create_container: bool,
    /// Overwrite a blob diskferry did not write, or resize one for a source
    /// of another size.
    pub force: bool,
    /// The writer's lease on the destination.
    pub lease: LeaseOptions,
    /// Where the state (journal, manifests, index) lives when not beside
    /// the page blob: a container, with an optional prefix (`--state-url`).
    pub state: Option<diskferry_blob::address::BlobAddress>,
    /// What each recovery point holds (`crash`, `application`, `filesystem`,
    /// `stopped`, `per-disk`), recorded in its snapshot's metadata.
    pub consistency: Option<String>,
    /// The run's fencing number (its coordinator's lease on the replica):
    /// a lower one than the blob's is refused; a higher one is recorded.
    pub fence: Option<u64>,
}

impl Default for PageBlobOptions {
    fn default() -> Self {
        // 16 requests of up to 4 MiB keep a storage account busy without
        // holding more than 64 MiB of copies; a week of daily points.
        Self {
            concurrency: 16,
            keep: 7,
            min_retention: None,
            create_container: false,
            force: false,
            lease: LeaseOptions::default(),
            state: None,
            consistency: None,
            fence: None,
        }
    }
}

pub(super) fn dest_err(e: impl Into<anyhow::Error>) -> Failure {
    let e = e.into();
    Failure::new(ExitCode::Destination, e)
}

/// State shared with the upload tasks and the journal writer.
#[derive(Debug, Default)]
pub struct UploadState {
    acks: Vec<Record>,
    error: Option<StoreError>,
}

impl UploadState {
    /// The acks collected since the last call.
    pub fn take_acks(&mut self) -> Vec<Record> {
        std::mem::take(&mut self.acks)
    }

    /// Note a failure (the first one wins).
    pub fn fail(&mut self, e: StoreError) {
        self.error.get_or_insert(e);
    }
}

/// The page blob sink.
#[derive(Debug)]
pub struct PageBlobSink<S: PageStore> {
    pub(super) store: Arc<S>,
    pub(super) rt: tokio::runtime::Runtime,
    pub(super) blob: String,
    pub(super) describe: String,
    pub(super) opts: PageBlobOptions,
    // Filled by `prior` and `begin`.
    pub(super) metadata: HashMap<String, String>,
    pub(super) journal: Option<JournalHeader>,
    pub(super) chunk: u64,
    pub(super) bytes_budget: Arc<Semaphore>,
    /// The buffers the budget's copies are made in, used again.
    pub(super) bodies: super::bodies::Bodies,
    /// Writes in flight: at most `--concurrency`, fewer while the service
    /// pushes back (`pacer.rs`).
    pub(super) requests: Arc<super::pacer::Pacer>,
    pub(super) tasks: JoinSet<()>,
    pub(super) flight: Arc<Mutex<UploadState>>,
    /// Appends intents and acks to the journal (group commit).
    pub(super) journal_writer: Option<JournalWriter>,
    /// The chain the journal writer appends to: read by `prior`, or new.
    pub(super) segments: Option<Segments>,
    /// Journal segments `prior` found (all of them are deleted at commit).
    pub(super) segments_found: u64,
    /// The segment the journal writer appended to last.
    pub(super) last_segment: u64,
    /// The one-writer lease (held from `prior` on).
    pub(super) lease: Arc<WriterLease>,
    /// `prior` created the (missing) blob: all zero, of the right size.
    pub(super) created: bool,
    /// The page blob account's snapshot limits (premium), once read.
    pub(super) snapshot_rules: Option<diskferry_blob::store::SnapshotRules>,
    /// The blob's size as `prior` found it.
    pub(super) prior_size: Option<u64>,
    /// What this generation's plans wrote and cleared (for its recovery point).
    pub(super) planned_written: u64,
    pub(super) planned_cleared: u64,
}

impl<S: PageStore> PageBlobSink<S> {
    /// Wait for every write handed over, then stop the journal writer
    /// (appending the last acks if `keep_acks`).
    fn drain(&mut self, keep_acks: bool) {
        let mut tasks = std::mem::take(&mut self.tasks);
        self.rt.block_on(async { while tasks.join_next().await.is_some() {} });
        if let Some(w) = self.journal_writer.take() {
            if let Some(k) = w.stop(&self.rt, keep_acks) {
                self.last_segment = k;
            }
        }
    }

    pub fn new(store: S, blob: &str, describe: String, opts: PageBlobOptions) -> Result<Self, Failure> {
        // One I/O thread per destination blob: a job of N disks has N. A
        // second one per blob only stole work from the first (an incremental
        // that wrote 86 MiB spent 0.05 s more CPU in wake-ups, same wall
        // time); one thread sends far more than the 60 MiB/s a standard
        // page blob takes, TLS included.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("diskferry-io")
            .enable_all()
            .build()
            .code(ExitCode::Failure)?;
        let concurrency = opts.concurrency.max(1);
        // Copies waiting or in flight: room for two whole windows, so one
        // window's writes always fit while the previous ones drain.
        let budget =
            (opts.concurrency.max(1) * diskferry_core::MAX_WRITE as usize).max(2 * crate::scan::WINDOW as usize);
        let lease_opts = opts.lease;
        let pacer = super::pacer::Pacer::new(concurrency, store.counters().clone());
        store.set_retry_gate(pacer.clone());
        let sink = Self {
            store: Arc::new(store),
            rt,
            blob: blob.to_owned(),
            describe,
            opts,
            metadata: HashMap::new(),
            journal: None,
            chunk: 0,
            bytes_budget: Arc::new(Semaphore::new(budget)),
            bodies: super::bodies::Bodies::new(budget),
            requests: pacer,
            tasks: JoinSet::new(),
            flight: Default::default(),
            journal_writer: None,
            segments: None,
            segments_found: 0,
            last_segment: 0,
            lease: Arc::new(WriterLease::new(lease_opts)),
            created: false,
            snapshot_rules: None,
            prior_size: None,
            planned_written: 0,
            planned_cleared: 0,
        };
        // The page blob records where its state is in its metadata (8 KiB
        // in all, Azure's limit): a place that long is refused up front.
        if sink.state_place().is_some_and(|p| p.len() > MAX_STATE_PLACE) {
            return Err(Failure::new(
                ExitCode::Usage,
                anyhow::anyhow!("--state-url is longer than {MAX_STATE_PLACE} characters (without its SAS)"),
            ));
        }
        Ok(sink)
    }

    pub(super) fn journal_name(&self) -> String {
        format!("{}.journal", self.blob)
    }

    pub(super) fn points_name(&self) -> String {
        format!("{}.points", self.blob)
    }

    pub(super) fn block_on<T>(
        &self,
        f: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, Failure> {
        self.rt.block_on(f).map_err(Failure::from)
    }

    /// The recovery points, oldest first, as the blob's snapshots say
    /// ([`super::points::merge`]; without list permission, as the index
    /// says). A reader told the wrong place for the state learns it here,
    /// not from an empty list.
    pub fn points(&self) -> Result<Vec<RecoveryPoint>, Failure> {
        if let Some(p) = self.block_on(self.store.properties(&self.blob))? {
            self.check_state_place(&p.metadata)?;
        }
        let index = self.block_on(self.store.get(&self.points_name()))?;
        let listed = self.block_on(async { Ok(self.store.list(&self.blob).await.ok()) })?;
        self.merged(index, listed.as_deref())
    }

    /// The index's points checked against (and completed from) `listed`.
    fn merged(
        &self,
        index: Option<Bytes>,
        listed: Option<&[diskferry_blob::Listed]>,
    ) -> Result<Vec<RecoveryPoint>, Failure> {
        Ok(super::points::merge(&self.blob, self.parse_points(index)?, listed, snapshot_facts))
    }

    /// The destination side's trim: drop the points past the newest `keep`
    /// but those within `floor`, rewrite the index, delete their snapshots
    /// and manifests. Returns the points dropped.
    pub fn trim(&self, keep: usize, floor: Option<Duration>) -> Result<Vec<RecoveryPoint>, Failure> {
        let points = self.points()?;
        let (kept, dropped) = super::points::retain(points, keep, floor, crate::clock::unix_ms());
        if dropped.is_empty() {
            return Ok(dropped);
        }
        let index = serde_json::to_vec_pretty(&kept).code(ExitCode::Failure)?;
        let (store, blob, pname) = (self.store.clone(), self.blob.clone(), self.points_name());
        // The dropped points' snapshots and manifests.
        let doomed = super::points::unnamed(&blob, &kept, &dropped, None);
        self.block_on(async {
            store.put_block_blob(&pname, Bytes::from(index)).await?;
            let gone = doomed.iter().map(|(name, snap)| store.delete(name, snap.as_deref(), None));
            futures::future::try_join_all(gone).await.map(|_| ())
        })?;
        Ok(dropped)
    }

    /// Record in `meta` where the state lives, when not beside the blob.
    /// What every metadata write carries on: where the state lives, and
    /// the highest fencing number seen (this run's, or the blob's own).
    pub(super) fn mark_kept(&self, meta: &mut HashMap<String, String>) {
        if let Some(place) = self.state_place() {
            meta.insert(META_STATE.to_owned(), place);
        }
        let had = self.metadata.get(META_FENCE).and_then(|v| v.parse::<u64>().ok());
        if let Some(f) = self.opts.fence.max(had) {
            meta.insert(META_FENCE.to_owned(), f.to_string());
        }
    }

    /// Refuse a run whose fencing number is below the blob's: a newer run
    /// of the same replica has written here since its coordinator lost
    /// the lease, and this one must not publish over it.
    pub(super) fn check_fence(&self, meta: &HashMap<String, String>) -> Result<(), Failure> {
        let theirs = meta.get(META_FENCE).and_then(|v| v.parse::<u64>().ok());
        match (self.opts.fence, theirs) {
            (Some(ours), Some(theirs)) if ours < theirs => Err(dest_err(anyhow::anyhow!(
                "{}: superseded: a newer run (fencing number {theirs}) has written this destination; this run's \
                 is {ours} (its coordinator lost the replica's lease), so it publishes nothing",
                self.describe
            ))),
            _ => Ok(()),
        }
    }

    /// Where the state lives, as the page blob records it (`None`: beside it).
    pub(super) fn state_place(&self) -> Option<String> {
        self.opts.state.as_ref().map(|a| {
            let base = format!("{}/{}/{}", a.service.as_str().trim_end_matches('/'), a.container, a.blob);
            base.trim_end_matches('/').to_owned()
        })
    }

    pub(super) fn parse_points(&self, index: Option<Bytes>) -> Result<Vec<RecoveryPoint>, Failure> {
        match index {
            None => Ok(Vec::new()),
            Some(b) => serde_json::from_slice(&b)
                .with_context(|| format!("recovery point index of {} is corrupt", self.describe))
                .code(ExitCode::Destination),
        }
    }

    /// The store, for reading back (download, verify).
    pub fn store(&self) -> &S {
        &self.store
    }

    pub fn runtime(&self) -> &tokio::runtime::Runtime {
        &self.rt
    }

    pub fn blob(&self) -> &str {
        &self.blob
    }

    /// The first error an upload task or the journal writer met.
    fn check_flight(&self) -> Result<(), Failure> {
        let mut f = self.flight.lock().map_err(|_| dest_err(anyhow!("upload state poisoned")))?;
        match f.error.take() {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }
}

impl<S: PageStore> Sink for PageBlobSink<S> {
    fn describe(&self) -> String {
        self.describe.clone()
    }

    fn live_counters(&self) -> Option<Arc<crate::sink::WireCounters>> {
        Some(self.store.counters().clone())
    }

    fn wire(&self) -> Option<WireStats> {
        Some(self.store.counters().stats())
    }

    fn prior(&mut self, source_id: &str, cur: Geometry) -> Result<Prior, Failure> {
        self.read_prior(source_id, cur)
    }

    fn begin(&mut self, generation: u64, cur: Geometry, prior: &Prior) -> Result<(), Failure> {
        self.chunk = cur.chunk_size().get();
        let rounded = round_up_mib(cur.disk_size());
        let total = rounded + FOOTER_LEN as u64;
        let store = self.store.clone();
        let blob = self.blob.clone();
        let resuming = self.journal.is_some();
        let mut meta = HashMap::new();
        meta.insert(META_BUILDING.to_owned(), generation.to_string());
        meta.insert(META_DISK_SIZE.to_owned(), cur.disk_size().to_string());
        meta.insert(META_WRITER.to_owned(), self.lease.id().as_str().to_owned());
        self.mark_kept(&mut meta);
        let base = match prior {
            Prior::Previous { .. } => {
                for k in [META_GENERATION, META_MANIFEST] {
                    if let Some(v) = self.metadata.get(k) {
                        meta.insert(k.to_owned(), v.clone());
                    }
                }
                Digest::from_hex(self.metadata.get(META_MANIFEST).map_or("", String::as_str))
                    .unwrap_or(JournalHeader::EMPTY_BASE)
            }
            _ => JournalHeader::EMPTY_BASE,
        };
        let lease = self.lease.clone();
        let l = Some(lease.id());
        // The fence first (from here the blob says "G in progress, by this
        // writer"), before anything else of the blob changes: a writer that
        // must take its lease back checks that mark (`lease.rs`).
        let fence = matches!(prior, Prior::Partial { .. } | Prior::Previous { .. }) || self.created;
        match prior {
            Prior::Fresh { .. } | Prior::Untrusted { .. } if !self.created => {
                // A new, all-zero blob (snapshots of an old one survive, and
                // so does the lease), marked in the same request.
                self.block_on(
                    lease.guarded(store.as_ref(), &blob, || store.create_page_blob(&blob, total, meta.clone(), l)),
                )?;
            }
            _ => {
                debug_assert!(fence);
                self.block_on(lease.guarded(store.as_ref(), &blob, || store.set_metadata(&blob, meta.clone(), l)))?;
            }
        }
        // A completed generation of this very size left its footer in
        // place: writing it again would change only its timestamp.
        let mut footer_in_place = false;
        if let Prior::Partial { .. } | Prior::Previous { .. } = prior {
            let old = match self.prior_size {
                Some(size) => size,
                None => self.block_on(store.properties(&blob))?.map_or(0, |p| p.size),
            };
            footer_in_place = matches!(prior, Prior::Previous { .. }) && old == total;
            if old != total {
                // Grow: the old footer lies inside the disk now. Shrink: old data lies in the padding.
                self.block_on(lease.guarded(store.as_ref(), &blob, || store.resize(&blob, total, l)))?;
                let old_footer = old.saturating_sub(FOOTER_LEN as u64);
                let mut clear = Vec::new();
                if old_footer < total && old_footer < cur.disk_size() {
                    clear.push((old_footer, FOOTER_LEN as u64));
                }
                if rounded > cur.disk_size() {
                    // (an old footer inside the new padding is cleared here)
                    clear.push((cur.disk_size(), rounded - cur.disk_size()));
                }
                for (at, len) in clear {
                    self.block_on(lease.guarded(store.as_ref(), &blob, || store.clear_pages(&blob, at, len, l)))?;
                }
            }
        }
        // The journal's next segment and the footer (unless in place), at
        // once: neither depends on the other. A crash between them leaves "G in progress"
        // with no usable journal (a full sync next time); recovery point
        // G-1 is untouched. A resumed generation goes on in a segment of its own.
        let header = match (resuming, self.journal) {
            (true, Some(h)) => h,
            _ => JournalHeader { generation, base, disk_size: cur.disk_size() },
        };
        let mut segments = match (resuming, self.segments.take()) {
            (true, Some(seg)) => seg,
            _ => Segments {
                blob: self.blob.clone(),
                journal: self.journal_name(),
                chain: journal_writer::rand_chain(),
                index: 0,
                blocks: 0,
            },
        };
        let next = if resuming { segments.index + 1 } else { 0 };
        let footer = (!footer_in_place).then(|| {
            Bytes::copy_from_slice(
                &Footer::for_disk(cur.disk_size(), crate::clock::unix_secs(), self.blob.as_bytes()).encode(),
            )
        });
        self.block_on(async {
            let journal = journal_writer::start_segment(store.as_ref(), &lease, &header, &mut segments, next);
            let Some(footer) = footer else { return journal.await };
            let footer = lease.guarded(store.as_ref(), &blob, || store.put_pages(&blob, rounded, footer.clone(), l));
            futures::future::try_join(journal, footer).await.map(|_| ())
        })?;
        self.journal = Some(header);
        self.journal_writer = Some(JournalWriter::start(
            &self.rt,
            self.store.clone(),
            self.lease.clone(),
            segments,
            header,
            self.flight.clone(),
        ));
        Ok(())
    }

    fn apply(&mut self, plan: &Plan, window: &WindowView<'_>) -> Result<(), Failure> {
        if plan.writes.is_empty() && plan.clears.is_empty() {
            return Ok(());
        }
        let chunk = self.chunk;
        let header = self.journal.ok_or_else(|| dest_err(anyhow!("page blob sink used before begin")))?;
        let intents: Vec<Record> = plan
            .writes
            .iter()
            .chain(&plan.clears)
            .map(|r| Record::Intent { first: r.start / chunk, end: r.end.div_ceil(chunk) })
            .collect();
        let intents = header.records(&intents);
        self.planned_written += plan.stats.bytes_written;
        self.planned_cleared += plan.stats.bytes_cleared;
        // Copy the window's writes (waiting for room in the byte budget: this
        // is the backpressure that bounds memory), then hand them to one task
        // that makes the intents durable before it sends any of them. The scan
        // goes on meanwhile: no round trip per window on this thread.
        let mut writes = Vec::with_capacity(plan.writes.len());
        for w in &plan.writes {
            let permit = self
                .rt
                .block_on(self.bytes_budget.clone().acquire_many_owned(w.len() as u32))
                .map_err(|e| dest_err(anyhow!("upload budget closed: {e}")))?;
            let bytes = self.bodies.copy(window.slice(w.start, w.end));
            let acks: Vec<Record> = (w.start / chunk..w.end.div_ceil(chunk))
                .filter_map(|i| match window.states.get((i - window.first_chunk) as usize) {
                    Some(ChunkState::Data(d)) => Some(Record::AckData { chunk: i, digest: *d }),
                    _ => None,
                })
                .collect();
            writes.push((w.start, bytes, permit, acks));
        }
        let clears: Vec<(u64, u64, Record)> = plan
            .clears
            .iter()
            .map(|c| (c.start, c.len(), Record::AckZero { first: c.start / chunk, end: c.end.div_ceil(chunk) }))
            .collect();
        let (store, blob, flight) = (self.store.clone(), self.blob.clone(), self.flight.clone());
        let durable = self
            .journal_writer
            .as_ref()
            .ok_or_else(|| dest_err(anyhow!("page blob sink used before begin")))?
            .intents(intents);
        let requests = self.requests.clone();
        let lease = self.lease.clone();
        self.tasks.spawn_on(
            async move {
                // The writes go only once their intents are in the journal.
                if !durable.await {
                    return;
                }
                let puts = writes.into_iter().map(|(offset, bytes, permit, acks)| {
                    let (store, blob, flight, requests, lease) =
                        (store.clone(), blob.clone(), flight.clone(), requests.clone(), lease.clone());
                    async move {
                        let _slot = requests.slot(bytes.len() as u64).await;
                        let r = lease
                            .guarded(store.as_ref(), &blob, || {
                                store.put_pages(&blob, offset, bytes.clone(), Some(lease.id()))
                            })
                            .await;
                        drop(permit);
                        record(&flight, r, acks);
                    }
                });
                let clears = clears.into_iter().map(|(start, len, ack)| {
                    let (store, blob, flight, requests, lease) =
                        (store.clone(), blob.clone(), flight.clone(), requests.clone(), lease.clone());
                    async move {
                        let _slot = requests.slot(0).await;
                        let r = lease
                            .guarded(store.as_ref(), &blob, || store.clear_pages(&blob, start, len, Some(lease.id())))
                            .await;
                        record(&flight, r, vec![ack]);
                    }
                });
                futures::future::join(futures::future::join_all(puts), futures::future::join_all(clears)).await;
            },
            self.rt.handle(),
        );
        // Reap finished tasks so the set stays small.
        while self.tasks.try_join_next().is_some() {}
        self.check_flight()
    }

    fn suspend(&mut self) {
        self.drain(true);
        self.release();
    }

    fn commit(&mut self, manifest: &Manifest) -> Result<(), Failure> {
        // Every write of G acknowledged first.
        self.drain(false);
        self.check_flight()?;
        let g = manifest.generation;
        let encoded = Bytes::from(manifest.encode().code(ExitCode::Failure)?);
        let digest = Digest::of(&encoded);
        let store = self.store.clone();
        let blob = self.blob.clone();
        // The fence once more before anything of G is published (its
        // manifest's name is G's, which a newer run may have used too).
        if self.opts.fence.is_some() {
            if let Some(p) = self.block_on(store.properties(&blob))? {
                self.check_fence(&p.metadata)?;
            }
        }
        // Publish the manifest while the recovery point index is read.
        let (pname, mname) = (self.points_name(), manifest_name(&blob, g));
        let (_, index) = self.block_on(async {
            let (put, idx) = tokio::join!(store.put_block_blob(&mname, encoded), store.get(&pname));
            Ok((put?, idx?))
        })?;
        let mut meta = HashMap::new();
        meta.insert(META_GENERATION.to_owned(), g.to_string());
        meta.insert(META_MANIFEST.to_owned(), digest.to_hex());
        meta.insert(META_DISK_SIZE.to_owned(), manifest.geometry.disk_size().to_string());
        if let Some(c) = &self.opts.consistency {
            meta.insert(META_CONSISTENCY.to_owned(), c.clone());
        }
        self.mark_kept(&mut meta);
        let lease = self.lease.clone();
        let l = Some(lease.id());
        self.block_on(lease.guarded(store.as_ref(), &blob, || store.set_metadata(&blob, meta.clone(), l)))?;
        let snapshot = self.block_on(lease.guarded(store.as_ref(), &blob, || store.snapshot(&blob, l)))?;
        // One listing (snapshots of the blob, manifests, journal segments),
        // once the new point exists: the points as the snapshots say (an
        // index any writer may have overwritten cannot make this commit
        // delete what it does not name), and below, what to sweep.
        // Without list permission (a blob-scoped SAS), none.
        let listed = self.block_on(async { Ok(store.list(&blob).await.ok()) })?;
        let mut points = self.merged(index, listed.as_deref())?;
        points.retain(|p| p.generation < g);
        points.push(RecoveryPoint {
            generation: g,
            snapshot,
            created_unix_ms: manifest.created_unix_ms,
            disk_size: manifest.geometry.disk_size(),
            bytes_written: self.planned_written,
            bytes_cleared: self.planned_cleared,
            consistency: self.opts.consistency.clone(),
        });
        let now = crate::clock::unix_ms();
        let floor = self.opts.min_retention;
        let (points, dropped) = super::points::retain(points, self.opts.keep, floor, now);
        let index = serde_json::to_vec_pretty(&points).code(ExitCode::Failure)?;
        // The index (it no longer names the dropped points) with the journal
        // (the metadata no longer points at it).
        let jname = self.journal_name();
        let chain: Vec<String> = (0..=(self.segments_found.max(1) - 1).max(self.last_segment))
            .map(|k| journal_writer::segment_name(&jname, k))
            .collect();
        self.block_on(async {
            let drop_chain = async {
                for name in &chain {
                    journal_writer::drop_segment(store.as_ref(), &lease, name).await?;
                }
                Ok(())
            };
            let (put, gone) = tokio::join!(store.put_block_blob(&pname, Bytes::from(index)), drop_chain);
            put.and(gone)
        })?;
        // Then what the index no longer names: the dropped points, and
        // whatever an interrupted commit or a retried request left (a
        // snapshot taken twice, a manifest whose point was never recorded),
        // found by the listing. Without list permission (a blob-scoped SAS),
        // the dropped points only.
        let stale: Vec<String> = listed
            .iter()
            .flatten()
            .filter(|l| l.snapshot.is_none() && journal_writer::is_segment_of(&jname, &l.name))
            .filter(|l| !chain.contains(&l.name))
            .map(|l| l.name.clone())
            .collect();
        let mut doomed = super::points::unnamed(&blob, &points, &dropped, listed);
        // Nothing within the retention floor goes, named or not.
        doomed.retain(|(_, snap)| snap.as_deref().is_none_or(|s| !super::points::within_floor(s, floor, now)));
        self.block_on(async {
            let gone = doomed.iter().map(|(name, snap)| {
                // A snapshot takes no lease (Azure and Azurite refuse one
                // named: 412 LeaseNotPresentWithBlobOperation).
                store.delete(name, snap.as_deref(), None).boxed()
            });
            let segs = stale.iter().map(|name| journal_writer::drop_segment(store.as_ref(), &lease, name).boxed());
            let results = futures::future::join_all(gone.chain(segs)).await;
            // A writer without delete rights (the worker's role, when
            // retention belongs to the destination side) leaves the
            // trimming to `points --trim`: the sync itself succeeded.
            let (denied, failed): (Vec<_>, Vec<_>) =
                results.into_iter().filter_map(Result::err).partition(|e| e.kind() == ErrorKind::Forbidden);
            if !denied.is_empty() {
                eprintln!(
                    "warning: {blob}: the writer may not delete: {} old recovery point(s) and state blob(s) stay for \
                     the destination side to trim (points --trim)",
                    denied.len()
                );
            }
            failed.into_iter().next().map_or(Ok(()), Err)
        })?;
        self.journal = None;
        self.release();
        Ok(())
    }
}

impl<S: PageStore> PageBlobSink<S> {
    /// Give up the writer's leases (a crash leaves them to lapse). No
    /// write outlives this: the ones still in flight (a failed sync's) are
    /// stopped first, or one could find the lease gone and take it back.
    fn release(&mut self) {
        let mut tasks = std::mem::take(&mut self.tasks);
        self.rt.block_on(tasks.shutdown());
        if let Some(w) = self.journal_writer.take() {
            w.stop(&self.rt, false);
        }
        let (lease, store) = (self.lease.clone(), self.store.clone());
        let release = async move { lease.release_all(store.as_ref()).await };
        // Bounded: storage that does not answer lets the lease lapse instead.
        let _ = self.rt.block_on(async move { tokio::time::timeout(Duration::from_secs(10), release).await });
    }
}

impl<S: PageStore> Drop for PageBlobSink<S> {
    fn drop(&mut self) {
        // A sync that failed (not one that was killed) lets the next one in at once.
        self.release();
    }
}

/// What a listed snapshot of the page blob says of itself, from its own
/// metadata.
fn snapshot_facts(l: &diskferry_blob::Listed) -> Option<super::points::Facts> {
    Some(super::points::Facts {
        generation: l.metadata.get(META_GENERATION)?.parse().ok()?,
        disk_size: l.metadata.get(META_DISK_SIZE)?.parse().ok()?,
        consistency: l.metadata.get(META_CONSISTENCY).cloned(),
    })
}

/// Note a finished request: its acks, or its error (the first one wins).
fn record(flight: &Mutex<UploadState>, r: Result<(), StoreError>, acks: Vec<Record>) {
    if let Ok(mut f) = flight.lock() {
        match r {
            Ok(()) => f.acks.extend(acks),
            Err(e) => f.fail(e),
        }
    }
}
