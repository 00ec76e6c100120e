//! One writer per destination, enforced by storage: a sync holds a blob
//! lease on the page blob (and on the journal segment it appends to) from
//! before it reads the destination's state until it has published or given
//! up. Every write of the generation names the lease, so once another
//! writer holds it storage refuses them all (412 `LeaseIdMismatch...`,
//! `LeaseLost`), and a second sync cannot take it while the first renews it
//! (409 `LeaseAlreadyPresent`).
//!
//! A writer whose lease storage no longer knows (it lapsed while storage
//! was out of reach for a whole period, or the storage forgot it) takes it
//! back only if no one else began writing meanwhile: every diskferry writer
//! marks the blob with its lease id (`diskferry_writer`) before its first
//! write of the page blob, so finding its own mark again, under the retaken
//! lease, proves the blob holds only its own writes ([`WriterLease::reclaim`]).
//!
//! A writer that dies stops renewing: its lease lapses within its duration
//! (`--lease-secs`, 15–60 s), and a rerun waiting for it (`--lease-wait`)
//! takes over and resumes from the journal. One that knows the old writer
//! is gone (its VM deleted) may break the lease at once (`--break-lease`):
//! should the old writer still live, its next write is refused.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use diskferry_blob::{ErrorKind, LeaseId, PageStore, StoreError, StoreResult};

/// The metadata key that names the writer (its lease id) of a generation in progress.
pub const META_WRITER: &str = "diskferry_writer";

/// Whether `e` says the lease named is simply gone (lapsed or forgotten),
/// rather than held by another writer.
pub fn lapsed(e: &StoreError) -> bool {
    let e = match e {
        StoreError::Exhausted { last, .. } => last.as_ref(),
        e => e,
    };
    matches!(e, StoreError::Http { status: 412 | 409, code, .. }
        if code == "LeaseLost" || code == "LeaseNotPresentWithBlobOperation" || code == "LeaseNotPresentWithLeaseOperation")
}

use super::sink::UploadState;

/// How a writer takes and keeps its lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseOptions {
    /// Lease duration: a dead writer's lease lapses within this long.
    pub secs: u32,
    /// How long to wait for another writer's lease to lapse.
    pub wait: Duration,
    /// Break a lease another writer holds instead of waiting for it.
    pub take_over: bool,
}

impl Default for LeaseOptions {
    fn default() -> Self {
        // Azure's longest finite lease, renewed four times per period: a
        // storage hiccup of up to 45 s costs no lease. A rerun right after a
        // crash waits out the dead writer's lease and resumes.
        Self { secs: 60, wait: Duration::from_secs(65), take_over: false }
    }
}

/// The lease one sync holds (see the module's header).
#[derive(Debug)]
pub struct WriterLease {
    id: LeaseId,
    opts: LeaseOptions,
    /// Blobs it holds now.
    held: Arc<Mutex<BTreeSet<String>>>,
    renewer: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// One reclaim at a time; its count, so writers that failed together
    /// reclaim once.
    reclaims: tokio::sync::Mutex<u64>,
    /// Given up ([`Self::release_all`]): nothing takes it back after that.
    given_up: std::sync::atomic::AtomicBool,
}

impl WriterLease {
    pub fn new(opts: LeaseOptions) -> Self {
        Self {
            id: LeaseId::random(),
            opts,
            held: Default::default(),
            renewer: Mutex::new(None),
            reclaims: tokio::sync::Mutex::new(0),
            given_up: Default::default(),
        }
    }

    pub fn id(&self) -> &LeaseId {
        &self.id
    }

    fn note(&self, name: &str, holding: bool) {
        if let Ok(mut h) = self.held.lock() {
            if holding {
                h.insert(name.to_owned());
            } else {
                h.remove(name);
            }
        }
    }

    /// Take the lease on the destination's page blob: at once if no other
    /// writer holds it, after waiting up to `wait` for it to lapse, or (with
    /// `take_over`) by breaking it. `Leased` if another writer keeps it.
    pub async fn acquire<S: PageStore>(&self, store: &S, name: &str) -> StoreResult<()> {
        let started = Instant::now();
        let mut told = false;
        loop {
            match store.acquire_lease(name, &self.id, self.opts.secs).await {
                Ok(()) => {
                    self.note(name, true);
                    return Ok(());
                }
                Err(e) if e.kind() == ErrorKind::Leased && self.opts.take_over => {
                    eprintln!("warning: {name}: breaking the lease another sync left (--break-lease)");
                    store.break_lease(name).await?;
                }
                Err(e) if e.kind() == ErrorKind::Leased && started.elapsed() < self.opts.wait => {
                    if !told {
                        eprintln!(
                            "{name}: another sync holds its lease; waiting up to {} s for it to end or lapse",
                            self.opts.wait.as_secs()
                        );
                        told = true;
                    }
                    tokio::time::sleep(Duration::from_secs(1).min(self.opts.wait)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Take the lease on a blob only this writer may use while it holds
    /// the page blob's (a journal segment): whatever lease is on it was
    /// left by a writer that lost the page blob, so it is broken.
    pub async fn take<S: PageStore>(&self, store: &S, name: &str) -> StoreResult<()> {
        match store.acquire_lease(name, &self.id, self.opts.secs).await {
            Err(e) if e.kind() == ErrorKind::Leased => {
                store.break_lease(name).await?;
                store.acquire_lease(name, &self.id, self.opts.secs).await?;
            }
            r => r?,
        }
        self.note(name, true);
        Ok(())
    }

    /// How many times the lease was taken back.
    pub async fn reclaimed(&self) -> u64 {
        *self.reclaims.lock().await
    }

    /// Take back a lease storage no longer knows (see the module's header):
    /// acquire it again with the same id, then require the blob's writer
    /// mark to be ours. `seen` is [`Self::reclaimed`] as the caller saw it
    /// before its write failed: if another task reclaimed since, done.
    /// `Leased` if another writer holds it or wrote meanwhile.
    pub async fn reclaim<S: PageStore>(&self, store: &S, blob: &str, seen: u64) -> StoreResult<()> {
        let mut count = self.reclaims.lock().await;
        if self.given_up.load(std::sync::atomic::Ordering::Acquire) {
            // The sync is ending: a write still in flight must not take
            // back a lease no one would give up again.
            return Err(StoreError::Invalid {
                op: diskferry_blob::Op::AcquireLease.verb(),
                what: blob.to_owned(),
                message: "the sync has given up its lease".into(),
            });
        }
        if *count != seen {
            return Ok(());
        }
        store.acquire_lease(blob, &self.id, self.opts.secs).await?;
        let mine = store
            .properties(blob)
            .await?
            .is_some_and(|p| p.metadata.get(META_WRITER).map(String::as_str) == Some(self.id.as_str()));
        if !mine {
            let _ = store.release_lease(blob, &self.id).await;
            return Err(StoreError::http(
                "take back the lease (another writer began meanwhile) on",
                blob,
                409,
                "LeaseIdMismatchWithLeaseOperation",
            ));
        }
        // The journal segments it held: no other writer used them either.
        let names: Vec<String> = self.held.lock().map(|h| h.iter().cloned().collect()).unwrap_or_default();
        for name in names.iter().filter(|n| n.as_str() != blob) {
            store.break_lease(name).await?;
            store.acquire_lease(name, &self.id, self.opts.secs).await?;
        }
        eprintln!("warning: {blob}: took back the writer's lease storage had lost; no other writer had begun");
        *count += 1;
        Ok(())
    }

    /// Run `op` (a write naming the lease); if storage says the lease is
    /// gone, take it back on `blob` and run `op` once more.
    pub async fn guarded<S, T, F, Fut>(&self, store: &S, blob: &str, mut op: F) -> StoreResult<T>
    where
        S: PageStore,
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = StoreResult<T>>,
    {
        let seen = self.reclaimed().await;
        match op().await {
            Err(e) if lapsed(&e) => {
                self.reclaim(store, blob, seen).await?;
                op().await
            }
            r => r,
        }
    }

    /// The blob is gone (deleted under the lease) or no longer needs it.
    pub fn forget(&self, name: &str) {
        self.note(name, false);
    }

    /// Give up the lease on one blob (it may be gone: no error then).
    pub async fn release<S: PageStore>(&self, store: &S, name: &str) -> StoreResult<()> {
        let held = self.held.lock().map(|mut h| h.remove(name)).unwrap_or(false);
        if !held {
            return Ok(());
        }
        match store.release_lease(name, &self.id).await {
            Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::Leased) => Ok(()),
            r => r,
        }
    }

    /// Renew every held lease four times per period until stopped; a lease
    /// storage says is another's now fails the sync (its writes would be
    /// refused anyway).
    pub fn start_renewing<S: PageStore>(
        self: &Arc<Self>,
        rt: &tokio::runtime::Runtime,
        store: Arc<S>,
        blob: String,
        flight: Arc<Mutex<UploadState>>,
    ) {
        let (id, held) = (self.id.clone(), self.held.clone());
        let me = Arc::downgrade(self);
        let every = Duration::from_secs(u64::from(self.opts.secs)) / 4;
        let task = rt.spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let names: Vec<String> = held.lock().map(|h| h.iter().cloned().collect()).unwrap_or_default();
                for name in names {
                    let seen = match me.upgrade() {
                        Some(l) => l.reclaimed().await,
                        None => return,
                    };
                    match store.renew_lease(&name, &id).await {
                        Ok(()) => {}
                        Err(e) if lapsed(&e) => {
                            let back = match me.upgrade() {
                                Some(l) => l.reclaim(store.as_ref(), &blob, seen).await,
                                None => return,
                            };
                            if let Err(e) = back {
                                if let Ok(mut f) = flight.lock() {
                                    f.fail(e);
                                }
                                return;
                            }
                        }
                        Err(e) if e.kind() == ErrorKind::NotFound => {
                            if let Ok(mut h) = held.lock() {
                                h.remove(&name);
                            }
                        }
                        Err(e) if e.kind() == ErrorKind::Leased => {
                            if let Ok(mut f) = flight.lock() {
                                f.fail(e);
                            }
                            return;
                        }
                        // Retried already; the next round tries again, and
                        // a lease that lapses meanwhile fails the writes.
                        Err(e) => eprintln!("warning: {e} (will retry)"),
                    }
                }
            }
        });
        if let Ok(mut r) = self.renewer.lock() {
            if let Some(old) = r.replace(task) {
                old.abort();
            }
        }
    }

    fn stop_renewing(&self) {
        if let Some(t) = self.renewer.lock().ok().and_then(|mut r| r.take()) {
            t.abort();
        }
    }

    /// Stop renewing and release every lease held (best effort: a lease
    /// left behind lapses on its own).
    pub async fn release_all<S: PageStore>(&self, store: &S) {
        self.given_up.store(true, std::sync::atomic::Ordering::Release);
        self.stop_renewing();
        let names: Vec<String> = self.held.lock().map(|h| h.iter().cloned().collect()).unwrap_or_default();
        for name in names {
            let _ = self.release(store, &name).await;
        }
    }
}

impl Drop for WriterLease {
    fn drop(&mut self) {
        self.stop_renewing();
    }
}

/// The one-line error of a destination another writer holds.
pub fn in_use(describe: &str, e: &StoreError) -> anyhow::Error {
    anyhow::anyhow!(
        "{describe} is in use by another sync ({e}); a sync that died lets its lease lapse within 60 s at most \
         (--lease-wait SECS waits for that; --break-lease takes over from a writer known to be gone)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use diskferry_blob::testing::MemStore;
    use std::collections::HashMap;

    #[tokio::test]
    async fn a_write_still_in_flight_after_the_release_does_not_take_the_lease_back() {
        let mem = MemStore::new("c");
        mem.create_page_blob("d.vhd", 1 << 20, HashMap::new(), None).await.unwrap();
        let lease = WriterLease::new(LeaseOptions::default());
        lease.acquire(&mem, "d.vhd").await.unwrap();
        let seen = lease.reclaimed().await;
        // Storage lost the lease (it lapsed): a write would take it back...
        mem.expire_leases();
        // ...but the sync gave it up first: the straggler must not.
        lease.release_all(&mem).await;
        let e = lease.reclaim(&mem, "d.vhd", seen).await.unwrap_err();
        assert!(e.to_string().contains("given up"), "{e}");
        assert_eq!(mem.lease("d.vhd"), None, "a lease no one will release was taken");
    }
}
