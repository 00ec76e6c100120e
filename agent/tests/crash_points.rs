//! The page blob protocol at every store call, in-process (the pipeline
//! and the page blob sink over the storage fakes): a sync (first,
//! incremental, resumed after a killed one) runs over `MemStore` through
//! `FaultyStore` and the same `Retrying` decorator the product uses; each
//! call it makes is in turn failed for good, failed once (retried), carried
//! out with its reply lost (retried), refused because the process "died"
//! before it, or carried out just before the process died. After each: every recovery point the index names still
//! holds the bytes of its generation, and a clean rerun ends identical to
//! the source with nothing beside the blob that the index does not name.
//! (What only HTTP shows — a reset mid-body, a truncated answer — stays with
//! the Azurite and proxy tests in `agent/tests/faults.rs`.)

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use diskferry_blob::retry::{RetryPolicy, Retrying};
use diskferry_blob::testing::{Fault, FaultyStore, MemStore, Tally};
use diskferry_blob::{Op, PageStore};
use diskferry_core::geometry::{ChunkSize, Geometry};

use diskferry_agent::pageblob::lease::LeaseOptions;
use diskferry_agent::pageblob::points::{manifest_name, RecoveryPoint};
use diskferry_agent::pageblob::sink::{PageBlobOptions, PageBlobSink};
use diskferry_agent::progress::Progress;
use diskferry_agent::source::MemSource;
use diskferry_agent::sync::{sync_parts, Parts, PipelineOptions};

const BLOB: &str = "d.vhd";
const CHUNK: u64 = 64 << 10;
/// 128 chunks: small enough to run a sync per store call in seconds.
const DISK: usize = 8 << 20;

/// A disk of `DISK` bytes holding runs of data chunks between runs of zero
/// ones, as file systems lay data out.
fn image(seed: u64) -> Vec<u8> {
    let mut img = vec![0u8; DISK];
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut data = false;
    let mut left = 0;
    for chunk in img.chunks_mut(CHUNK as usize) {
        if left == 0 {
            data = !data;
            left = 1 + next() % 6;
        }
        left -= 1;
        if data {
            let salt = next();
            for (i, b) in chunk.iter_mut().enumerate() {
                *b = (salt >> (i % 56)) as u8 ^ i as u8;
            }
        }
    }
    img
}

/// `base` with some data chunks rewritten, some zeroed, some zero ones filled.
fn mutate(base: &[u8], seed: u64) -> Vec<u8> {
    let mut img = base.to_vec();
    let n = DISK / CHUNK as usize;
    for k in 0..n {
        let at = k * CHUNK as usize;
        let c = &mut img[at..at + CHUNK as usize];
        match (k as u64 * 7 + seed) % 11 {
            0 => c[100] ^= 0x5A,
            1 => c.fill(0),
            2 => c[4096..8192].fill(seed as u8 | 1),
            _ => {}
        }
    }
    img
}

fn opts() -> PipelineOptions {
    PipelineOptions { threads: 2, ..Default::default() }
}

fn chunk() -> ChunkSize {
    ChunkSize::new(CHUNK).expect("a valid chunk size")
}

/// Retries that give up fast: a dead store fails in milliseconds.
const QUICK: RetryPolicy = RetryPolicy {
    initial: Duration::from_millis(1),
    max_delay: Duration::from_millis(4),
    max_attempts: 3,
    max_elapsed: Duration::from_secs(5),
};

/// What one sync did.
struct Run {
    ok: bool,
    /// Why it failed, if it did.
    why: String,
    tally: Tally,
    retries: u64,
}

/// Sync `data` to `mem` with `faults`.
fn sync(mem: &MemStore, data: &[u8], faults: &[(Op, u64, Fault)]) -> Run {
    let handle = mem.handle();
    let counters = handle.counters().clone();
    let mut faulty = FaultyStore::new(handle);
    for (op, n, f) in faults {
        faulty = faulty.on(*op, *n, f.clone());
    }
    let tally = faulty.tally();
    let store = Retrying::new(faulty, QUICK);
    // No waiting for a lease: one left behind where none should be fails the rerun.
    let lease = LeaseOptions { secs: 15, wait: Duration::ZERO, take_over: false };
    let po =
        PageBlobOptions { concurrency: 4, keep: 4, create_container: false, force: false, lease, ..Default::default() };
    let sink = PageBlobSink::new(store, BLOB, format!("mem:{BLOB}"), po).expect("a sink");
    let source = MemSource { bytes: data.to_vec() };
    let geometry = Geometry::new(DISK as u64, chunk()).expect("a geometry");
    let parts = Parts { source: &source, geometry, source_id: "disk-0".into(), sinks: vec![Ok(Box::new(sink))] };
    let (ok, why) = match sync_parts(parts, &opts(), &Progress::new("mem")) {
        Ok(lanes) => {
            let why: Vec<String> = lanes.iter().filter_map(|l| l.as_ref().err()).map(|e| format!("{e:#}")).collect();
            (why.is_empty(), why.join("; "))
        }
        Err(e) => (false, format!("{e:#}")),
    };
    Run { ok, why, tally, retries: counters.retries.load(std::sync::atomic::Ordering::Relaxed) }
}

fn points(mem: &MemStore) -> Vec<RecoveryPoint> {
    let rt = tokio::runtime::Builder::new_current_thread().build().expect("a runtime");
    match rt.block_on(mem.get(&format!("{BLOB}.points"))).expect("the index reads") {
        Some(b) => serde_json::from_slice(&b).expect("the index parses"),
        None => Vec::new(),
    }
}

/// Every point the index names holds its generation's bytes.
fn points_hold(mem: &MemStore, images: &BTreeMap<u64, Vec<u8>>, what: &str) {
    for p in points(mem) {
        let bytes =
            mem.page_bytes(BLOB, Some(&p.snapshot)).unwrap_or_else(|| panic!("{what}: point {} gone", p.generation));
        let want = images.get(&p.generation).unwrap_or_else(|| panic!("{what}: unexpected point {}", p.generation));
        assert!(bytes[..DISK] == want[..], "{what}: recovery point {} differs from its source", p.generation);
    }
}

/// After a successful sync of `data`: the blob and the newest point equal
/// it, and nothing is left that the index does not name.
fn clean_and_identical(mem: &MemStore, data: &[u8], what: &str) {
    let pts = points(mem);
    let newest = pts.last().unwrap_or_else(|| panic!("{what}: no recovery point"));
    assert!(mem.page_bytes(BLOB, None).expect("the blob")[..DISK] == data[..], "{what}: blob differs");
    let snap = mem.page_bytes(BLOB, Some(&newest.snapshot)).expect("the newest point");
    assert!(snap[..DISK] == data[..], "{what}: newest point differs");
    let mut named: BTreeSet<(String, Option<String>)> = BTreeSet::new();
    named.insert((BLOB.into(), None));
    named.insert((format!("{BLOB}.points"), None));
    for p in &pts {
        named.insert((BLOB.into(), Some(p.snapshot.clone())));
        named.insert((manifest_name(BLOB, p.generation), None));
    }
    let left: BTreeSet<(String, Option<String>)> = mem.names().into_iter().map(|l| (l.name, l.snapshot)).collect();
    assert_eq!(left, named, "{what}: the container holds something the index does not name");
}

/// The faults tried at each call.
fn modes() -> [(&'static str, Fault); 5] {
    [
        ("dies before", Fault::Die),
        ("dies after", Fault::DieAfter),
        // Carried out, its reply lost, then retried: an append twice, a
        // second snapshot, a blob created again.
        ("reply lost", Fault::LoseReply),
        ("refused (403)", Fault::Fail { status: 403, code: "AuthorizationFailure" }),
        ("throttled once", Fault::BUSY),
    ]
}

/// Chunks of `prev` and `cur` interleaved: what a newer snapshot looks like
/// to the rerun of an interrupted sync when some of the changes the
/// interrupted one wrote were undone since. The rerun must put those chunks
/// back (the journal names them), though neither manifest says they changed.
fn blend(prev: &[u8], cur: &[u8]) -> Vec<u8> {
    let mut out = cur.to_vec();
    for (k, c) in out.chunks_mut(CHUNK as usize).enumerate() {
        if k % 3 == 0 {
            let at = k * CHUNK as usize;
            c.copy_from_slice(&prev[at..at + c.len()]);
        }
    }
    out
}

/// Fault every call of a sync of `cur` from `base` (a container state), one
/// at a time, then rerun it from a newer snapshot; `images` holds what each
/// published generation holds, `prev` what the last one holds (zeros if none).
fn every_call(name: &str, base: &MemStore, cur: &[u8], prev: &[u8], mut images: BTreeMap<u64, Vec<u8>>, next_g: u64) {
    let clean = sync(&base.fork(), cur, &[]);
    assert!(clean.ok, "{name}: the clean sync fails");
    let calls: BTreeMap<Op, u64> = clean.tally.calls().into_iter().collect();
    images.insert(next_g, cur.to_vec());
    let newer = blend(prev, cur);
    let (mut tried, mut fired) = (0, 0);
    for (&op, &count) in &calls {
        for n in 1..=count {
            for (mode, fault) in modes() {
                let what = format!("{name}: {op:?} #{n} {mode}");
                let mem = base.fork();
                let run = sync(&mem, cur, &[(op, n, fault.clone())]);
                tried += 1;
                if run.tally.hits().is_empty() {
                    // Timing moved this call out of reach (the journal's
                    // group commit appends less often in some runs).
                    continue;
                }
                fired += 1;
                // (A death at the last call a sync needs can leave it whole:
                // the listing before the sweep is optional, so no claim on
                // `run.ok` is made for the other faults.)
                if matches!(fault, Fault::BUSY | Fault::LoseReply) {
                    assert!(run.ok && run.retries >= 1, "{what}: the call is retried and the sync succeeds");
                }
                points_hold(&mem, &images, &what);
                let newest = points(&mem).last().map_or(0, |p| p.generation);
                assert!(newest == next_g - 1 || newest == next_g, "{what}: newest point {newest}");
                // A writer that died, or whose release was refused, leaves
                // its lease to lapse; any other failure released it.
                if run.tally.died() || (op == Op::ReleaseLease && !matches!(fault, Fault::LoseReply)) {
                    mem.expire_leases();
                }
                let rerun = sync(&mem, &newer, &[]);
                assert!(rerun.ok, "{what}: the rerun fails: {}", rerun.why);
                // The rerun made the newest point (one more if the faulted
                // sync had published its own).
                let mut after = images.clone();
                let newest = points(&mem).last().map_or(0, |p| p.generation);
                assert!(newest == next_g || newest == next_g + 1, "{what}: newest point {newest} after the rerun");
                after.insert(newest, newer.clone());
                points_hold(&mem, &after, &what);
                clean_and_identical(&mem, &newer, &what);
            }
        }
    }
    eprintln!("{name}: {} ops, {tried} faults tried, {fired} fired: {calls:?}", calls.len());
    assert!(fired * 10 >= tried * 9, "{name}: only {fired} of {tried} faults fired");
}

#[test]
fn a_first_sync_survives_a_failure_at_every_store_call() {
    let mem = MemStore::new("disks");
    every_call("first sync", &mem, &image(1), &vec![0; DISK], BTreeMap::new(), 1);
}

#[test]
fn an_incremental_sync_survives_a_failure_at_every_store_call() {
    let mem = MemStore::new("disks");
    let v1 = image(2);
    assert!(sync(&mem, &v1, &[]).ok);
    let v2 = mutate(&v1, 3);
    every_call("incremental", &mem, &v2, &v1, BTreeMap::from([(1, v1.clone())]), 2);
}

#[test]
fn a_resumed_sync_from_a_newer_snapshot_survives_a_failure_at_every_store_call() {
    let mem = MemStore::new("disks");
    let v1 = image(4);
    assert!(sync(&mem, &v1, &[]).ok);
    // Generation 2 dies after its third write: its journal stays.
    let v2 = mutate(&v1, 5);
    let killed = sync(&mem, &v2, &[(Op::PutPages, 3, Fault::Die)]);
    assert!(!killed.ok && killed.tally.died());
    assert!(mem.lease(BLOB).is_some(), "the killed sync's lease outlives it");
    mem.expire_leases();
    assert!(mem.names().iter().any(|l| l.name == format!("{BLOB}.journal")), "the killed sync left its journal");
    // The rerun comes from a newer snapshot than the one interrupted.
    let v3 = mutate(&v2, 6);
    every_call("resumed", &mem, &v3, &v1, BTreeMap::from([(1, v1.clone())]), 2);
}

#[test]
fn a_writer_told_its_lease_is_gone_takes_it_back_when_no_one_else_began() {
    let mem = MemStore::new("disks");
    let v1 = image(7);
    // Storage answers that the lease lapsed (as after a minute out of reach):
    // the writer's mark is still its own, so it takes the lease back and goes on.
    let lost = Fault::Fail { status: 412, code: "LeaseLost" };
    let run = sync(&mem, &v1, &[(Op::PutPages, 2, lost.clone()), (Op::Append, 2, lost)]);
    assert!(run.ok, "the sync did not take its lease back");
    assert!(run.tally.calls()[&Op::AcquireLease] >= 3, "{:?}", run.tally.calls());
    clean_and_identical(&mem, &v1, "after taking the lease back");
    assert!(mem.lease(BLOB).is_none(), "the lease was not released at the end");
}

#[test]
fn a_premium_page_blob_account_is_refused_before_any_write() {
    use diskferry_agent::sink::Sink;
    use diskferry_blob::testing::Limits;
    let mem = MemStore::with_limits("disks", Limits { page_blobs_only: true, ..Limits::default() });
    let faulty = FaultyStore::new(mem.handle());
    let tally = faulty.tally();
    let mut sink =
        PageBlobSink::new(Retrying::new(faulty, QUICK), BLOB, format!("mem:{BLOB}"), PageBlobOptions::default())
            .unwrap();
    let e = sink.prior("disk-0", Geometry::new(DISK as u64, chunk()).unwrap()).unwrap_err();
    assert_eq!(e.code, diskferry_agent::exit::ExitCode::Destination);
    assert!(e.to_string().contains("premium page blob account"), "{e}");
    assert_eq!(tally.calls().keys().copied().collect::<Vec<_>>(), vec![Op::AccountInfo]);
    assert!(mem.names().is_empty());
}

#[test]
fn a_disk_larger_than_a_page_blob_is_refused_before_any_request() {
    use diskferry_agent::sink::Sink;
    let mem = MemStore::new("disks");
    let faulty = FaultyStore::new(mem.handle());
    let tally = faulty.tally();
    let po = PageBlobOptions { concurrency: 4, keep: 4, create_container: true, force: false, ..Default::default() };
    let mut sink = PageBlobSink::new(Retrying::new(faulty, QUICK), BLOB, format!("mem:{BLOB}"), po).unwrap();
    // 8 TiB itself does not fit either: the blob is the disk rounded up plus a 512-byte footer.
    let geometry = Geometry::new(8 << 40, chunk()).unwrap();
    let e = sink.prior("disk-0", geometry).unwrap_err();
    assert_eq!(e.code, diskferry_agent::exit::ExitCode::Destination);
    assert!(e.to_string().contains("8 TiB"), "{e}");
    assert!(tally.calls().is_empty(), "requests were sent: {:?}", tally.calls());
    assert!(mem.names().is_empty());
}
