//! The fakes hold to what they promise: MemStore refuses what Azure
//! refuses, FaultyStore faults exactly the call it was told to, and the
//! retry decorator over it retries only what may succeed again.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use diskferry_blob::retry::{RetryPolicy, Retrying};
use diskferry_blob::testing::{Fault, FaultyStore, Limits, MemStore};
use diskferry_blob::{ErrorKind, LeaseId, Op, PageStore};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime")
}

const QUICK: RetryPolicy = RetryPolicy {
    initial: Duration::from_millis(1),
    max_delay: Duration::from_millis(2),
    max_attempts: 4,
    max_elapsed: Duration::from_secs(5),
};

#[test]
fn mem_store_refuses_what_azure_refuses() {
    let rt = rt();
    let limits = Limits { append_blocks: 3, ..Limits::default() };
    let m = MemStore::with_limits("c", limits);
    let kind = |r: Result<(), diskferry_blob::StoreError>| r.unwrap_err().kind();
    rt.block_on(async {
        m.create_page_blob("p", 8192, HashMap::new(), None).await.unwrap();
        // Unaligned, past the end, over 4 MiB, on another blob type.
        assert_eq!(kind(m.put_pages("p", 100, Bytes::from(vec![1; 512]), None).await), ErrorKind::Refused);
        assert_eq!(kind(m.put_pages("p", 8192, Bytes::from(vec![1; 512]), None).await), ErrorKind::Refused);
        assert_eq!(kind(m.put_pages("p", 0, Bytes::from(vec![1; 5 << 20]), None).await), ErrorKind::Refused);
        assert_eq!(kind(m.create_page_blob("big", (8 << 40) + 512, HashMap::new(), None).await), ErrorKind::Refused);
        m.put_block_blob("b", Bytes::from_static(b"x")).await.unwrap();
        assert_eq!(kind(m.put_pages("b", 0, Bytes::from(vec![1; 512]), None).await), ErrorKind::Conflict);
        // Pages written and cleared show in the ranges and the bytes.
        m.put_pages("p", 512, Bytes::from(vec![7; 1024]), None).await.unwrap();
        m.put_pages("p", 4096, Bytes::from(vec![9; 512]), None).await.unwrap();
        m.clear_pages("p", 1024, 512, None).await.unwrap();
        assert_eq!(m.page_ranges("p", None).await.unwrap(), vec![(512, 1024), (4096, 4608)]);
        // A snapshot keeps its bytes while the blob changes; the blob cannot
        // be deleted while it has snapshots.
        let s = m.snapshot("p", None).await.unwrap();
        m.put_pages("p", 512, Bytes::from(vec![0xEE; 512]), None).await.unwrap();
        assert_eq!(m.read("p", Some(&s), 512, 512).await.unwrap(), Bytes::from(vec![7; 512]));
        assert_eq!(kind(m.delete("p", None, None).await), ErrorKind::Conflict);
        m.delete("p", Some(&s), None).await.unwrap();
        m.delete("p", None, None).await.unwrap();
        assert!(m.properties("p").await.unwrap().is_none());
        // An append blob takes its block limit and no more.
        m.create_append_blob("j", None).await.unwrap();
        for _ in 0..3 {
            m.append("j", Bytes::from_static(b"r"), None).await.unwrap();
        }
        let e = m.append("j", Bytes::from_static(b"r"), None).await.unwrap_err();
        assert!(
            matches!(&e, diskferry_blob::StoreError::Http { status: 409, code, .. } if code == "BlockCountExceedsLimit")
        );
        assert_eq!(m.get("j").await.unwrap().unwrap(), Bytes::from_static(b"rrr"));
    });
    // A missing container answers ContainerNotFound until created.
    let gone = MemStore::missing("c2");
    rt.block_on(async {
        assert_eq!(gone.properties("x").await.unwrap_err().kind(), ErrorKind::ContainerNotFound);
        gone.create_container().await.unwrap();
        assert!(gone.properties("x").await.unwrap().is_none());
    });
}

#[test]
fn mem_store_keeps_the_lease_rules() {
    let rt = rt();
    let m = MemStore::new("c");
    let (a, b) = (LeaseId::random(), LeaseId::random());
    let code = |e: diskferry_blob::StoreError| match e {
        diskferry_blob::StoreError::Http { status, code, .. } => (status, code),
        other => panic!("{other}"),
    };
    rt.block_on(async {
        assert!(m.create_page_blob_if_absent("p", 4096, HashMap::new()).await.unwrap());
        assert!(!m.create_page_blob_if_absent("p", 4096, HashMap::new()).await.unwrap());
        assert_eq!(code(m.acquire_lease("p", &a, 10).await.unwrap_err()).0, 400, "10 s is not a lease Azure gives");
        m.acquire_lease("p", &a, 15).await.unwrap();
        // Asking again with the active id renews; another id is refused.
        m.acquire_lease("p", &a, 15).await.unwrap();
        assert_eq!(code(m.acquire_lease("p", &b, 15).await.unwrap_err()), (409, "LeaseAlreadyPresent".into()));
        // Writes name the lease, or are refused.
        let page = || Bytes::from(vec![1; 512]);
        assert_eq!(code(m.put_pages("p", 0, page(), None).await.unwrap_err()), (412, "LeaseIdMissing".into()));
        let e = m.put_pages("p", 0, page(), Some(&b)).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Leased);
        m.put_pages("p", 0, page(), Some(&a)).await.unwrap();
        m.set_metadata("p", HashMap::new(), Some(&a)).await.unwrap();
        assert!(m.properties("p").await.unwrap().unwrap().leased);
        // Snapshot Blob needs no lease, but one it names must be active.
        m.snapshot("p", None).await.unwrap();
        assert_eq!(m.snapshot("p", Some(&b)).await.unwrap_err().kind(), ErrorKind::Leased);
        // An overwrite under the lease keeps it.
        m.create_page_blob("p", 4096, HashMap::new(), Some(&a)).await.unwrap();
        assert_eq!(m.lease("p"), Some(a.clone()));
        // Time passes: the holder's writes are refused, another takes it.
        m.expire_leases();
        assert_eq!(code(m.put_pages("p", 0, page(), Some(&a)).await.unwrap_err()), (412, "LeaseLost".into()));
        m.acquire_lease("p", &b, 60).await.unwrap();
        let e = m.clear_pages("p", 0, 512, Some(&a)).await.unwrap_err();
        assert_eq!(code(e), (412, "LeaseIdMismatchWithBlobOperation".into()));
        // Broken, it takes writes without a lease again.
        m.break_lease("p").await.unwrap();
        m.put_pages("p", 0, page(), None).await.unwrap();
        assert_eq!(code(m.release_lease("p", &b).await.unwrap_err()).1, "LeaseNotPresentWithLeaseOperation");
        // Append blobs too.
        m.create_append_blob("j", None).await.unwrap();
        m.acquire_lease("j", &a, 15).await.unwrap();
        assert_eq!(m.append("j", Bytes::from_static(b"r"), Some(&a)).await.unwrap(), 1);
        assert_eq!(m.append("j", Bytes::from_static(b"r"), None).await.unwrap_err().kind(), ErrorKind::Leased);
        m.release_lease("j", &a).await.unwrap();
        assert_eq!(m.append("j", Bytes::from_static(b"r"), None).await.unwrap(), 2);
    });
}

#[test]
fn faults_hit_the_nth_call_and_retries_take_only_what_may_succeed() {
    let rt = rt();
    let m = MemStore::new("c");
    let f = FaultyStore::new(m.handle())
        .on(Op::PutBlockBlob, 2, Fault::BUSY)
        .on(Op::PutBlockBlob, 3, Fault::Fail { status: 403, code: "AuthorizationFailure" })
        .on(Op::Get, 1, Fault::LoseReply);
    let tally = f.tally();
    let s = Retrying::new(f, QUICK);
    rt.block_on(async {
        s.put_block_blob("a", Bytes::from_static(b"1")).await.unwrap();
        // Call 2 is throttled and retried (call 3 is refused for good).
        let e = s.put_block_blob("a", Bytes::from_static(b"2")).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Forbidden);
        assert_eq!(m.get("a").await.unwrap().unwrap(), Bytes::from_static(b"1"));
        // A lost reply is retried and the second answer counts.
        assert_eq!(s.get("a").await.unwrap().unwrap(), Bytes::from_static(b"1"));
    });
    assert_eq!(tally.calls()[&Op::PutBlockBlob], 3);
    assert_eq!(tally.calls()[&Op::Get], 2);
    assert_eq!(tally.hits().len(), 3);
    assert_eq!(s.counters().retries.load(std::sync::atomic::Ordering::Relaxed), 2);

    // Death: this call and every later one fail; retries run out.
    let f = FaultyStore::new(m.handle()).on(Op::Properties, 1, Fault::DieAfter);
    let tally = f.tally();
    let s = Retrying::new(f, QUICK);
    rt.block_on(async {
        let e = s.properties("a").await.unwrap_err();
        assert_eq!((e.kind(), e.last_kind()), (ErrorKind::Exhausted, ErrorKind::Transport));
        assert!(s.get("a").await.is_err());
    });
    assert!(tally.died());
}

#[test]
fn a_copy_restarted_after_a_lost_reply_waits_for_the_first_and_a_replaced_copy_fails() {
    use diskferry_blob::store::copy_snapshot;
    let rt = rt();
    let m = MemStore::new("c");
    rt.block_on(async {
        m.create_page_blob("d.vhd", 4096, HashMap::new(), None).await.unwrap();
        m.put_pages("d.vhd", 0, Bytes::from(vec![5; 512]), None).await.unwrap();
        let snap = m.snapshot("d.vhd", None).await.unwrap();
        // The first start is carried out and its reply lost; the retry meets
        // the copy it began (409 PendingCopyOperation): wait for that one.
        let f = FaultyStore::new(m.handle()).on(Op::StartCopy, 1, Fault::LoseReply).on(
            Op::StartCopy,
            2,
            Fault::Fail { status: 409, code: "PendingCopyOperation" },
        );
        let s = Retrying::new(f, QUICK);
        let tick = Duration::from_millis(1);
        copy_snapshot(&s, "copy.vhd", "d.vhd", &snap, tick, Duration::from_secs(1)).await.unwrap();
        assert_eq!(m.read("copy.vhd", None, 0, 512).await.unwrap(), Bytes::from(vec![5; 512]));
        // A destination that names no copy was replaced by someone else: an error, not success.
        m.put_block_blob("other.vhd", Bytes::from_static(b"not a copy")).await.unwrap();
        let f = FaultyStore::new(m.handle()).on(
            Op::StartCopy,
            1,
            Fault::Fail { status: 409, code: "PendingCopyOperation" },
        );
        let e = copy_snapshot(&Retrying::new(f, QUICK), "other.vhd", "d.vhd", &snap, tick, Duration::from_secs(1))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Invalid, "{e}");
    });
    // A copy still pending at its deadline is aborted, not left running.
    let slow = MemStore::with_limits("c", Limits { copy_polls: 1000, ..Limits::default() });
    rt.block_on(async {
        slow.create_page_blob("d.vhd", 4096, HashMap::new(), None).await.unwrap();
        let snap = slow.snapshot("d.vhd", None).await.unwrap();
        let f = FaultyStore::new(slow.handle());
        let tally = f.tally();
        let tick = Duration::from_millis(1);
        let e = copy_snapshot(&f, "late.vhd", "d.vhd", &snap, tick, Duration::from_millis(20)).await.unwrap_err();
        assert!(e.to_string().contains("still pending") && e.to_string().contains("aborted"), "{e}");
        assert_eq!(tally.calls()[&Op::AbortCopy], 1);
        assert!(matches!(slow.copy_state("late.vhd").await.unwrap(), diskferry_blob::CopyState::Failed(_)));
        assert_eq!(slow.properties("late.vhd").await.unwrap().unwrap().size, 0);
    });
}

#[test]
fn a_split_destination_keeps_its_state_apart_and_lists_both_as_one() {
    use diskferry_blob::split::{state_prefix, Split};
    use diskferry_blob::store::{AccountRules, SnapshotRules};
    let rt = rt();
    // The page blob's account is premium (page blobs only, snapshot
    // rules); the state's is standard.
    let rules = SnapshotRules { max: 3, interval: Duration::from_millis(200) };
    let data =
        MemStore::with_limits("disks", Limits { page_blobs_only: true, snapshots: Some(rules), ..Limits::default() });
    let state = MemStore::new("state");
    let prefix = state_prefix("/under/", "acct", "disks");
    assert_eq!(prefix, "under/acct/disks/");
    let is_state = std::sync::Arc::new(|n: &str| n.starts_with("d.vhd.") && !n.ends_with(".vhd"));
    let s = Split::new(data.handle(), state.handle(), prefix, is_state);
    rt.block_on(async {
        assert_eq!(s.rules().await.unwrap(), AccountRules { page_blobs_only: false, snapshots: Some(rules) });
        s.create_page_blob("d.vhd", 4096, HashMap::new(), None).await.unwrap();
        s.create_append_blob("d.vhd.journal", None).await.unwrap();
        s.append("d.vhd.journal", Bytes::from_static(b"j"), None).await.unwrap();
        s.put_block_blob("d.vhd.points", Bytes::from_static(b"[]")).await.unwrap();
        let snap = s.snapshot("d.vhd", None).await.unwrap();
        // The premium account's rule, as Azure words it.
        let again = s.snapshot("d.vhd", None).await.unwrap_err();
        assert!(again.to_string().contains("SnaphotOperationRateExceeded"), "{again}");
        tokio::time::sleep(Duration::from_millis(250)).await;
        s.snapshot("d.vhd", None).await.unwrap();
        tokio::time::sleep(Duration::from_millis(250)).await;
        s.snapshot("d.vhd", None).await.unwrap();
        tokio::time::sleep(Duration::from_millis(250)).await;
        let full = s.snapshot("d.vhd", None).await.unwrap_err();
        assert!(full.to_string().contains("SnapshotCountExceeded"), "{full}");
        // Each blob where it belongs, the state under its prefix.
        let names = |m: &MemStore| m.names().into_iter().map(|l| l.name).collect::<std::collections::BTreeSet<_>>();
        assert_eq!(names(&data), ["d.vhd"].map(String::from).into());
        assert_eq!(
            names(&state),
            ["under/acct/disks/d.vhd.journal", "under/acct/disks/d.vhd.points"].map(String::from).into()
        );
        assert_eq!(s.get("d.vhd.points").await.unwrap().as_deref(), Some(&b"[]"[..]));
        // One listing of both, by the names the sink uses.
        let listed: Vec<(String, Option<String>)> =
            s.list("d.vhd").await.unwrap().into_iter().map(|l| (l.name, l.snapshot)).collect();
        assert!(listed.contains(&("d.vhd".into(), Some(snap))), "{listed:?}");
        assert!(listed.contains(&("d.vhd.journal".into(), None)), "{listed:?}");
        assert!(listed.contains(&("d.vhd.points".into(), None)), "{listed:?}");
        assert_eq!(listed.iter().filter(|(_, s)| s.is_some()).count(), 3, "{listed:?}");
    });
}
