//! The journal's one writer, with group commit. Each window's upload task
//! hands it the window's intent records and waits; the writer appends
//! everything pending (the intents of every waiting window, plus the acks
//! storage returned since the last append) in one Append Block, then lets
//! the windows' writes go. Under load, many windows share one append; idle,
//! an intent costs one round trip, as before. Acks alone are appended every
//! [`ACK_INTERVAL`].
//!
//! Each append names the writer's lease, and each block holds whole records
//! (a block is atomic; a record split across two could be torn). When the
//! segment it appends to is full (the committed block count storage returns
//! reaches [`SEGMENT_BLOCKS`], or storage answers 409
//! `BlockCountExceedsLimit`), it starts the next segment
//! (`core::journal`'s chain) and goes on there.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use diskferry_core::journal::{JournalHeader, Record};
use tokio::sync::{mpsc, oneshot};

use super::lease::WriterLease;
use super::sink::UploadState;
use diskferry_blob::{PageStore, StoreError, StoreResult};

/// Blocks an append blob holds (Azure: 50,000 committed blocks; "Append
/// Block", docs/azure.md).
pub const SEGMENT_BLOCKS: u32 = 50_000;

/// Largest Append Block body (4 MiB; 100 MiB only from version 2022-11-02).
const MAX_BLOCK: usize = 4 << 20;

/// The name of segment `k` of journal `journal`.
pub fn segment_name(journal: &str, k: u64) -> String {
    if k == 0 {
        journal.to_owned()
    } else {
        format!("{journal}.{k}")
    }
}

/// Whether `name` is a later segment of journal `journal` (`J.<k>`).
pub fn is_segment_of(journal: &str, name: &str) -> bool {
    name.strip_prefix(journal)
        .and_then(|rest| rest.strip_prefix('.'))
        .is_some_and(|k| !k.is_empty() && k.bytes().all(|b| b.is_ascii_digit()))
}

/// Delete a journal segment, whatever lease is on it (this writer holds the
/// page blob's: no other may use the journal).
pub async fn drop_segment<S: PageStore>(store: &S, lease: &WriterLease, name: &str) -> Result<(), StoreError> {
    lease.forget(name);
    store.break_lease(name).await?;
    match store.delete(name, None, None).await {
        // A writer whose role may not delete leaves a finished journal
        // behind: the metadata no longer points at it, and the next sync's
        // chain id (rand_chain) never reads its segments as its own.
        Err(e) if e.kind() == diskferry_blob::ErrorKind::Forbidden => Ok(()),
        r => r,
    }
}

/// A chain id for a new journal: random, so segments an earlier attempt
/// left can never be read as part of this one.
pub fn rand_chain() -> u64 {
    let u = uuid::Uuid::new_v4();
    u.as_u64_pair().0
}

/// The segments of a journal, in order, as far as they exist.
pub async fn read_segments<S: PageStore>(store: &S, journal: &str) -> Result<Vec<Bytes>, StoreError> {
    let mut out = Vec::new();
    while let Some(b) = store.get(&segment_name(journal, out.len() as u64)).await? {
        out.push(b);
    }
    Ok(out)
}

/// Where the writer appends: the chain, its current segment and how full it is.
#[derive(Debug, Clone)]
pub struct Segments {
    /// The page blob whose journal it is (its lease is the writer's).
    pub blob: String,
    pub journal: String,
    pub chain: u64,
    pub index: u64,
    pub blocks: u32,
}

impl Segments {
    pub fn current(&self) -> String {
        segment_name(&self.journal, self.index)
    }
}

/// Start segment `index` of the chain: a new append blob (whatever an
/// earlier attempt left under that name is replaced), leased, holding the
/// header and its segment record.
pub async fn start_segment<S: PageStore>(
    store: &S,
    lease: &WriterLease,
    header: &JournalHeader,
    seg: &mut Segments,
    index: u64,
) -> StoreResult<()> {
    let name = segment_name(&seg.journal, index);
    store.break_lease(&name).await?;
    store.create_append_blob(&name, None).await?;
    lease.take(store, &name).await?;
    let blocks = store.append(&name, Bytes::from(header.segment_start(seg.chain, index)), Some(lease.id())).await?;
    let old = seg.current();
    (seg.index, seg.blocks) = (index, blocks);
    if old != name {
        lease.release(store, &old).await?;
    }
    Ok(())
}

/// Append whole records (`pieces`, each at most one block) to the chain,
/// packed into as few blocks as fit, starting a new segment when one is full.
async fn append_pieces<S: PageStore>(
    store: &S,
    lease: &WriterLease,
    header: &JournalHeader,
    seg: &mut Segments,
    pieces: Vec<Vec<u8>>,
) -> StoreResult<()> {
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    for p in pieces {
        match blocks.last_mut() {
            Some(b) if b.len() + p.len() <= MAX_BLOCK => b.extend_from_slice(&p),
            _ => blocks.push(p),
        }
    }
    for b in blocks {
        if seg.blocks >= SEGMENT_BLOCKS {
            start_segment(store, lease, header, seg, seg.index + 1).await?;
        }
        let bytes = Bytes::from(b);
        let name = seg.current();
        match lease.guarded(store, &seg.blob, || store.append(&name, bytes.clone(), Some(lease.id()))).await {
            Ok(n) => seg.blocks = n,
            Err(StoreError::Http { status: 409, code, .. }) if code == "BlockCountExceedsLimit" => {
                // A smaller limit than ours (or blocks we did not count).
                start_segment(store, lease, header, seg, seg.index + 1).await?;
                seg.blocks = store.append(&seg.current(), bytes, Some(lease.id())).await?;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Encode acks in pieces of at most one block each.
fn ack_pieces(header: &JournalHeader, acks: &[Record]) -> Vec<Vec<u8>> {
    // 57 bytes a record at most: 50,000 records stay under 4 MiB.
    acks.chunks(50_000).map(|a| header.records(a)).collect()
}

/// How often acks alone are appended: what a kill can make a rerun resend
/// is the writes in flight plus what was acknowledged in this long.
pub const ACK_INTERVAL: Duration = Duration::from_millis(25);

/// Intent records of one window and the window's wait for them.
#[derive(Debug)]
struct Intents {
    bytes: Vec<u8>,
    durable: oneshot::Sender<bool>,
}

/// Whether the writer goes on, and how it stops (kept in an `AtomicU8`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Stop {
    Running = 0,
    /// Acks are no longer needed: a commit follows.
    DropAcks = 1,
    /// Append the acks, then stop: the generation stays open.
    KeepAcks = 2,
}

impl Stop {
    fn load(a: &AtomicU8) -> Self {
        match a.load(Ordering::Acquire) {
            0 => Stop::Running,
            1 => Stop::DropAcks,
            _ => Stop::KeepAcks,
        }
    }
}

/// Handle to the running writer.
#[derive(Debug)]
pub struct JournalWriter {
    tx: Option<mpsc::UnboundedSender<Intents>>,
    stop: Arc<AtomicU8>,
    /// Ends with the index of the segment it appended to last.
    task: tokio::task::JoinHandle<u64>,
}

impl JournalWriter {
    /// Start appending to the chain `seg` (whose header is `header`).
    pub fn start<S: PageStore>(
        rt: &tokio::runtime::Runtime,
        store: Arc<S>,
        lease: Arc<WriterLease>,
        mut seg: Segments,
        header: JournalHeader,
        flight: Arc<Mutex<UploadState>>,
    ) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<Intents>();
        let stop = Arc::new(AtomicU8::new(Stop::Running as u8));
        let stopping = stop.clone();
        let task = rt.spawn(async move {
            loop {
                let first = tokio::select! {
                    m = rx.recv() => m,
                    _ = tokio::time::sleep(ACK_INTERVAL) => None,
                };
                let mut waiting: Vec<Intents> = first.into_iter().collect();
                while let Ok(m) = rx.try_recv() {
                    waiting.push(m);
                }
                let mode = Stop::load(&stopping);
                let done = mode != Stop::Running;
                // Once every write has finished before a commit, acks no
                // longer matter: the manifest about to be published
                // supersedes the journal.
                let acks = if mode == Stop::DropAcks {
                    Vec::new()
                } else {
                    flight.lock().map(|mut f| f.take_acks()).unwrap_or_default()
                };
                let mut pieces = ack_pieces(&header, &acks);
                pieces.extend(waiting.iter().map(|w| w.bytes.clone()));
                pieces.retain(|p| !p.is_empty());
                let mut ok = true;
                if let Err(e) = append_pieces(store.as_ref(), &lease, &header, &mut seg, pieces).await {
                    if let Ok(mut f) = flight.lock() {
                        f.fail(e);
                    }
                    ok = false;
                }
                for w in waiting {
                    let _ = w.durable.send(ok);
                }
                if !ok || (done && rx.is_empty()) {
                    return seg.index;
                }
            }
        });
        Self { tx: Some(tx), stop, task }
    }

    /// A future that resolves to `true` once `intents` are in the journal
    /// (`false`: the append failed; the error is in the flight state).
    pub fn intents(&self, intents: Vec<u8>) -> impl std::future::Future<Output = bool> + Send + 'static {
        let (durable, rx) = oneshot::channel();
        let sent = self.tx.as_ref().is_some_and(|tx| tx.send(Intents { bytes: intents, durable }).is_ok());
        async move { sent && rx.await.unwrap_or(false) }
    }

    /// Stop after appending what is pending (the acks too if `keep_acks`:
    /// the generation stays open for a later run to resume); call once
    /// every write has finished.
    pub fn stop(mut self, rt: &tokio::runtime::Runtime, keep_acks: bool) -> Option<u64> {
        let mode = if keep_acks { Stop::KeepAcks } else { Stop::DropAcks };
        self.stop.store(mode as u8, Ordering::Release);
        self.tx = None;
        rt.block_on(&mut self.task).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pageblob::lease::{LeaseOptions, WriterLease};
    use diskferry_blob::testing::MemStore;
    use diskferry_core::digest::Digest;
    use diskferry_core::journal::{self, JournalHeader};

    #[tokio::test]
    async fn a_full_segment_rolls_over_at_the_count_storage_returns() {
        // Azure's own limit: the writer rolls before storage has to refuse.
        let mem = MemStore::new("c");
        mem.create_page_blob("d.vhd", 4096, Default::default(), None).await.unwrap();
        let lease = WriterLease::new(LeaseOptions::default());
        lease.acquire(&mem, "d.vhd").await.unwrap();
        let header = JournalHeader { generation: 3, base: Digest([2; 32]), disk_size: 1 << 30 };
        let mut seg = Segments { blob: "d.vhd".into(), journal: "d.vhd.journal".into(), chain: 9, index: 0, blocks: 0 };
        start_segment(&mem, &lease, &header, &mut seg, 0).await.unwrap();
        let n = u64::from(SEGMENT_BLOCKS) + 10;
        for i in 0..n {
            let piece = header.records(&[Record::Intent { first: i, end: i + 1 }]);
            append_pieces(&mem, &lease, &header, &mut seg, vec![piece]).await.unwrap();
        }
        assert_eq!(mem.counters().requests_failed.load(std::sync::atomic::Ordering::Relaxed), 0, "storage refused");
        assert_eq!(mem.append_blocks("d.vhd.journal"), Some(SEGMENT_BLOCKS));
        assert_eq!(seg.index, 1);
        // The chain reads back whole: every intent of both segments.
        let segs =
            [mem.get("d.vhd.journal").await.unwrap().unwrap(), mem.get("d.vhd.journal.1").await.unwrap().unwrap()];
        let chain = journal::parse_segments(&segs).unwrap();
        assert_eq!((chain.segments, chain.id), (2, Some(9)));
        assert!((0..n).all(|i| chain.overrides.is_suspect(i)));
        // The lease went along: the old segment's was released, the new one's is held.
        assert_eq!(mem.lease("d.vhd.journal"), None);
        assert_eq!(mem.lease("d.vhd.journal.1").as_ref(), Some(lease.id()));
    }
}
