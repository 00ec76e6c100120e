//! The executor against [`FakeCloud`]: what a worker reports is recorded,
//! and a failure at any call of a run leaves nothing behind but each disk's
//! retained snapshot, after teardown or, where teardown itself failed,
//! after `gc`.

use std::collections::BTreeSet;

use super::*;
use crate::cloud::fake::FakeCloud;
use crate::owner;
use crate::store::{Replica, Store};

const GIB: u64 = 1 << 30;

struct Setup {
    _dir: tempfile::TempDir,
    store: Store,
    replica: Replica,
    config: Config,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("state.db")).unwrap();
    std::fs::create_dir(dir.path().join("dest")).unwrap();
    let replica = Replica {
        name: "web".into(),
        vm: "vm1".into(),
        destinations: vec![format!("file:{}", dir.path().join("dest").display())],
        schedule: None,
        keep_points: 3,
        chunk_size: 1 << 20,
        created_at: 0,
        stop_source: false,
        consistency: crate::cloud::Consistency::Crash,
        failed_over_at: None,
        leave_source_stopped: false,
        version: None,
    };
    store.insert_replica(&replica).unwrap();
    let mut config = Config::default();
    config.run.deadline_secs = 60;
    Setup { _dir: dir, store, replica, config }
}

fn cloud() -> FakeCloud {
    FakeCloud::new("vm1", &[("os", 4 * GIB), ("data", 2 * GIB)])
}

fn run_once(s: &mut Setup, cloud: &FakeCloud) -> Run {
    let Begun::Run(run) = begin(&s.store, "web", "manual", None, 60).unwrap() else { panic!("not begun") };
    let run = *run;
    execute(cloud, &s.store, &s.replica, &run, &s.config, &mut Quiet).unwrap()
}

/// What the store keeps as retained snapshots of the replica.
fn retained(s: &Setup) -> BTreeSet<String> {
    s.store.retained("web", ResourceKind::Snapshot.as_str()).unwrap().into_iter().map(|r| r.name).collect()
}

#[test]
fn a_run_records_what_the_worker_reports_and_keeps_one_snapshot_per_disk() {
    let mut s = setup();
    let c = cloud();
    let r = run_once(&mut s, &c);
    assert_eq!(r.status, status::SUCCEEDED, "{:?}", r.error);
    let disks = s.store.run_disks(&r.id).unwrap();
    let got: Vec<(&str, u64, u64)> = disks.iter().map(|d| (d.disk.as_str(), d.generation, d.bytes_sent)).collect();
    assert_eq!(got, vec![("data", 1, 1 << 20), ("os", 1, 1 << 20)]);
    // Only the snapshots are left, and they are the retained ones.
    let live: BTreeSet<String> = c.live().into_keys().collect();
    assert_eq!(live, retained(&s));
    assert_eq!(live.len(), 2);
    // The job named every disk, at its temporary disk, to the replica's destination.
    let job = &c.jobs()[0];
    assert_eq!(job.disks.iter().map(|d| d.source.as_str()).collect::<Vec<_>>(), ["lun:0", "lun:1"]);
    // The next run's snapshots replace these.
    let r2 = run_once(&mut s, &c);
    assert_eq!(r2.status, status::SUCCEEDED);
    let live2: BTreeSet<String> = c.live().into_keys().collect();
    assert_eq!(live2, retained(&s));
    assert!(live2.is_disjoint(&live), "the first run's snapshots are gone");
}

#[test]
fn a_run_records_the_consistency_it_got_and_why_it_is_less_than_asked() {
    let mut s = setup();
    let c = cloud();
    let r = run_once(&mut s, &c);
    assert_eq!((r.consistency.as_deref(), r.consistency_note.as_deref()), (Some("crash"), None));
    // The guest cannot flush its applications: the run has a crash-
    // consistent point and says why.
    s.replica.consistency = crate::cloud::Consistency::Application;
    c.fail_application("VMAgentStatusCommunicationError");
    let r = run_once(&mut s, &c);
    assert_eq!(r.status, status::SUCCEEDED, "{:?}", r.error);
    assert_eq!(r.consistency.as_deref(), Some("crash"));
    assert!(r.consistency_note.as_deref().is_some_and(|n| n.contains("VMAgentStatusCommunicationError")), "{r:?}");
    s.replica.stop_source = true;
    let r = run_once(&mut s, &c);
    assert_eq!((r.consistency.as_deref(), r.consistency_note.as_deref()), (Some("stopped"), None));
}

#[test]
fn a_worker_that_fails_a_disk_fails_the_run_and_is_torn_down() {
    let mut s = setup();
    let c = cloud();
    c.worker_ends(WorkerState::Lost("the worker VM is in state Failed".into()));
    let r = run_once(&mut s, &c);
    assert_eq!(r.status, status::FAILED);
    assert!(r.error.as_deref().unwrap_or_default().contains("state Failed"), "{:?}", r.error);
    // A failed first run keeps nothing: its snapshots go too.
    assert!(c.live().is_empty(), "{:?}", c.live());
    assert!(retained(&s).is_empty());
}

/// A replica whose runs are placed here, on a cloud that allows it.
fn here(s: &mut Setup) -> FakeCloud {
    s.config.run.placement = crate::config::Placement::Here;
    let c = cloud();
    c.allow_here();
    c
}

#[test]
fn a_run_placed_here_makes_no_temporary_disk_and_revokes_what_it_read() {
    let mut s = setup();
    let c = here(&mut s);
    let r = run_once(&mut s, &c);
    assert_eq!(r.status, status::SUCCEEDED, "{:?}", r.error);
    let calls = c.calls();
    assert_eq!((calls.get("create_temp_disk"), calls.get("start_worker")), (None, None), "{calls:?}");
    assert_eq!(calls.get("start_here"), Some(&1));
    assert_eq!(r.worker.as_deref(), Some("this host; placed by placement here"));
    let job = &c.jobs()[0];
    assert_eq!(
        job.disks.iter().map(|d| d.source.as_str()).collect::<Vec<_>>(),
        ["url-file:/fake/os.url", "url-file:/fake/data.url"]
    );
    assert!(c.grants().is_empty(), "read access is revoked with the worker: {:?}", c.grants());
    let live: BTreeSet<String> = c.live().into_keys().collect();
    assert_eq!(live, retained(&s));
    // Where the provider cannot read a snapshot here, a worker does.
    let mut s = setup();
    s.config.run.placement = crate::config::Placement::Here;
    let c = cloud();
    let r = run_once(&mut s, &c);
    assert_eq!(r.status, status::SUCCEEDED, "{:?}", r.error);
    assert_eq!(c.calls().get("start_here"), None);
    assert!(r.worker.as_deref().unwrap_or_default().contains("keeps no workers here"), "{:?}", r.worker);
    // Auto with no diff known (the fake has none): a worker.
    let mut s = setup();
    let c = here(&mut s);
    s.config.run.placement = crate::config::Placement::Auto;
    run_once(&mut s, &c);
    assert_eq!(c.calls().get("start_here"), None);
}

#[test]
fn auto_places_a_run_here_only_when_every_disk_has_a_diff_within_the_threshold() {
    let mut s = setup();
    let c = here(&mut s);
    s.config.run.placement = crate::config::Placement::Auto;
    s.config.run.here_max_mib = 3;
    let placed = |s: &mut Setup| run_once(s, &c).placement.unwrap_or_default();
    assert_eq!(placed(&mut s), "vm", "the first run has no earlier snapshot to diff");
    c.set_diff(Some(Vec::new()));
    assert_eq!(placed(&mut s), "here", "an empty diff");
    c.set_diff(Some(vec![[0, 1 << 20]]));
    assert_eq!(placed(&mut s), "here", "1 MiB a disk, 2 MiB in all");
    c.set_diff(Some(vec![[0, 2 << 20]]));
    assert_eq!(placed(&mut s), "vm", "2 MiB a disk, 4 MiB in all, over 3");
    let r = s.store.runs("web", 1).unwrap().remove(0);
    assert!(r.worker.unwrap_or_default().contains("a diff of 4.0 MiB over here_max_mib 3"));
    c.set_diff(None);
    assert_eq!(placed(&mut s), "vm", "no diff");
    // The runs placed here read only what changed: their hints went with them.
    let jobs = c.jobs();
    let here_job = &jobs[2];
    assert_eq!(here_job.disks[0].hint.as_ref().map(|h| h.ranges.clone()), Some(vec![[0, 1 << 20]]));
}

#[test]
fn a_failure_at_every_cloud_call_leaves_only_retained_snapshots() {
    every_call_failing(false);
}

#[test]
fn a_failure_at_every_cloud_call_of_a_run_placed_here_leaves_only_retained_snapshots_and_no_grant() {
    every_call_failing(true);
}

fn every_call_failing(placed_here: bool) {
    let new = |s: &mut Setup| if placed_here { here(s) } else { cloud() };
    // The calls of one clean run after a first one.
    let counts = {
        let mut s = setup();
        let c = new(&mut s);
        run_once(&mut s, &c);
        let before = c.calls();
        run_once(&mut s, &c);
        let mut d: Vec<(&'static str, u32, u32)> =
            c.calls().into_iter().map(|(m, n)| (m, before.get(m).copied().unwrap_or(0), n)).collect();
        d.sort_unstable();
        d
    };
    let mut tried = 0;
    for (method, before, after) in counts {
        for nth in before + 1..=after {
            let what = format!("{method} #{nth}");
            let mut s = setup();
            let c = new(&mut s);
            assert_eq!(run_once(&mut s, &c).status, status::SUCCEEDED);
            c.fail(method, nth);
            let r = run_once(&mut s, &c);
            tried += 1;
            if method == "changed_ranges" {
                // A diff that fails is no hint: the worker reads everything.
                assert_eq!(r.status, status::SUCCEEDED, "{what}: a run without a hint: {:?}", r.error);
            } else {
                assert_eq!(r.status, status::FAILED, "{what}: the run must fail");
                assert!(r.error.as_deref().unwrap_or_default().contains("injected"), "{what}: {:?}", r.error);
            }
            // What teardown could not delete, gc does.
            crate::gc::gc(&c, &s.store).unwrap();
            let live: BTreeSet<String> = c.live().into_keys().collect();
            assert_eq!(live, retained(&s), "{what}: left behind");
            assert_eq!(live.len(), 2, "{what}: one snapshot per disk is kept");
            assert!(c.grants().is_empty(), "{what}: read access left granted: {:?}", c.grants());
            // And the replica runs again.
            assert_eq!(run_once(&mut s, &c).status, status::SUCCEEDED, "{what}: the next run");
        }
    }
    assert!(tried >= 10, "only {tried} calls faulted");
}

#[test]
fn a_new_run_is_owned_by_this_process_and_a_stale_start_is_not_alive() {
    let mut run = new_run("a", "manual");
    let start = run.owner_start.unwrap_or_default();
    assert!(start > 0);
    assert_eq!(run.owner_pid, Some(i64::from(std::process::id())));
    assert!(owner::alive(&run, None, 0), "a run from before leases: its process decides");
    run.owner_start = Some(start + 1);
    assert!(!owner::alive(&run, None, 0));
    run.owner_pid = None;
    assert!(!owner::alive(&run, None, 0));
    // Under a lease: it must hold the lease, current, and (on this host)
    // its process must be running.
    let mut run = Run { fence: Some(3), ..new_run("a", "manual") };
    let lease = |fence, run_id: &str, expires_at| crate::store::Lease {
        replica: "a".into(),
        fence,
        holder: run.daemon.clone(),
        run_id: Some(run_id.into()),
        expires_at,
    };
    assert!(owner::alive(&run, Some(&lease(3, &run.id, 100)), 99));
    assert!(!owner::alive(&run, Some(&lease(3, &run.id, 100)), 100), "expired");
    assert!(!owner::alive(&run, Some(&lease(4, &run.id, 100)), 99), "another fence");
    assert!(!owner::alive(&run, Some(&lease(3, "other", 100)), 99), "another run's");
    assert!(!owner::alive(&run, None, 99));
    let held = lease(3, &run.id, 100);
    run.owner_start = Some(start + 1);
    assert!(!owner::alive(&run, Some(&held), 99), "its process here is gone");
    run.boot = Some("another-host".into());
    assert!(owner::alive(&run, Some(&held), 99), "elsewhere, the lease decides");
}
