//! The store against a real SQLite file and a real PostgreSQL database:
//! every test runs on both.

use super::*;

/// Run `f` against each backend: a new SQLite file, a new PostgreSQL database.
fn each_backend(test: &str, f: impl Fn(&Location)) {
    let dir = tempfile::tempdir().unwrap();
    f(&Location::Sqlite(dir.path().join("state.db")));
    f(&Location::Postgres(diskferry_testkit::postgres::database(test)));
}

fn replica(name: &str) -> Replica {
    Replica {
        name: name.into(),
        vm: "/vms/a".into(),
        destinations: vec!["file:/d".into()],
        schedule: None,
        keep_points: 7,
        chunk_size: 1 << 20,
        created_at: 1,
        stop_source: false,
        consistency: Consistency::Crash,
        failed_over_at: None,
        leave_source_stopped: false,
        version: None,
    }
}

fn run(id: &str, replica: &str) -> Run {
    Run {
        id: id.into(),
        replica: replica.into(),
        trigger: "manual".into(),
        status: status::RUNNING.into(),
        phase: "start".into(),
        started_at: 10,
        finished_at: None,
        duration_ms: None,
        owner_pid: Some(1),
        owner_start: Some(1),
        bytes_read: 0,
        bytes_sent: 0,
        bytes_zero: 0,
        bytes_unchanged: 0,
        bytes_written: 0,
        bytes_cleared: 0,
        error: None,
        worker: None,
        placement: None,
        consistency: None,
        consistency_note: None,
        daemon: Some("test:1".into()),
        boot: None,
        fence: None,
        slot: None,
        version: None,
        note: None,
    }
}

#[test]
fn migrations_apply_once_and_reopen() {
    each_backend("migrations", |at| {
        let s = Store::connect(at).unwrap();
        assert_eq!(s.schema_version().unwrap(), MIGRATIONS.len() as i64);
        s.insert_replica(&replica("a")).unwrap();
        drop(s);
        let s = Store::connect(at).unwrap();
        assert_eq!(s.replicas().unwrap(), vec![replica("a")]);
        assert!(s.insert_replica(&replica("a")).unwrap_err().to_string().contains("already exists"));
    });
}

#[test]
fn coordinators_opening_a_new_database_at_once_migrate_it_once() {
    each_backend("migrate_race", |at| {
        let opened: Vec<i64> = std::thread::scope(|s| {
            let hs: Vec<_> =
                (0..6).map(|_| s.spawn(|| Store::connect(at).unwrap().schema_version().unwrap())).collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(opened, vec![MIGRATIONS.len() as i64; 6]);
        let s = Store::connect(at).unwrap();
        let versions = s.c().query("SELECT version FROM schema_version ORDER BY version", &[]).unwrap();
        assert_eq!(versions.len(), MIGRATIONS.len(), "each migration recorded once");
    });
}

#[test]
fn one_live_run_per_replica() {
    each_backend("one_live_run", one_live_run);
}

fn one_live_run(at: &Location) {
    let s = Store::connect(at).unwrap();
    s.insert_replica(&replica("a")).unwrap();
    let live = |r: &Run, l: Option<&Lease>| l.is_some_and(|l| l.run_id.as_deref() == Some(&r.id) && l.expires_at > 50);
    assert_eq!(s.begin_run(&run("r1", "a"), 100, live).unwrap(), Begin::Started { fence: 1, took_over: vec![] });
    assert_eq!(s.run("r1").unwrap().fence, Some(1));
    match s.begin_run(&run("r2", "a"), 100, live).unwrap() {
        Begin::Busy(r) => assert_eq!(r.id, "r1"),
        other => panic!("{other:?}"),
    }
    // A lease that lapsed: its run is recorded interrupted, the next one
    // takes the lease with a higher fencing number.
    assert!(s.renew_lease("a", "r1", 1, 40).unwrap());
    match s.begin_run(&run("r3", "a"), 100, live).unwrap() {
        Begin::Started { fence: 2, took_over } => assert_eq!(took_over[0].id, "r1"),
        other => panic!("{other:?}"),
    }
    assert_eq!(s.run("r1").unwrap().status, status::INTERRUPTED);
    assert!(!s.renew_lease("a", "r1", 1, 100).unwrap(), "the old run's lease is gone");
    assert!(s.renew_lease("a", "r3", 2, 100).unwrap());
    assert_eq!(s.leases_held(60).unwrap().len(), 1);
    // Finishing gives the lease back at once.
    s.finish_run("r3", status::SUCCEEDED, 21, Some(1), None).unwrap();
    assert_eq!(s.leases_held(0).unwrap(), vec![]);
    assert_eq!(s.lease("a").unwrap().map(|l| l.fence), Some(2), "the fencing number stays");
    // A scheduled slot is taken once.
    let slotted = |id: &str| Run { slot: Some(1000), ..run(id, "a") };
    assert!(matches!(s.begin_run(&slotted("r4"), 100, live).unwrap(), Begin::Started { fence: 3, .. }));
    s.finish_run("r4", status::SUCCEEDED, 22, Some(1), None).unwrap();
    assert_eq!(s.begin_run(&slotted("r5"), 100, live).unwrap(), Begin::SlotTaken);
    assert!(!s.insert_run(&Run { status: status::SKIPPED.into(), ..slotted("r6") }).unwrap(), "nor skipped twice");
    // The old test's disk and totals.
    s.record_disk(&RunDisk {
        run_id: "r1".into(),
        disk: "os".into(),
        destination: 0,
        generation: 1,
        full_sync: true,
        full_sync_reason: Some("first".into()),
        bytes_read: 10,
        bytes_sent: 5,
        bytes_zero: 3,
        bytes_unchanged: 0,
        bytes_written: 0,
        bytes_cleared: 0,
    })
    .unwrap();
    s.finish_run("r1", status::SUCCEEDED, 20, Some(1500), None).unwrap();
    let r = s.run("r1").unwrap();
    assert_eq!((r.bytes_read, r.bytes_sent, r.status.as_str()), (10, 5, "succeeded"));
    assert_eq!(s.newest_points().unwrap(), vec![("a".to_owned(), 22)]);
}

#[test]
fn coordinators_racing_for_one_slot_start_one_run() {
    each_backend("slot_race", |at| {
        Store::connect(at).unwrap().insert_replica(&replica("a")).unwrap();
        let started: usize = std::thread::scope(|sc| {
            let hs: Vec<_> = (0..8)
                .map(|i| {
                    sc.spawn(move || {
                        let s = Store::connect(at).unwrap();
                        let r = Run { slot: Some(7), ..run(&format!("r{i}"), "a") };
                        usize::from(matches!(s.begin_run(&r, 100, |_, _| true).unwrap(), Begin::Started { .. }))
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(started, 1);
        let s = Store::connect(at).unwrap();
        assert_eq!(s.runs("a", 100).unwrap().len(), 1);
        // Unscheduled runs race for the lease: one wins, the others see it busy.
        s.finish_run(&s.runs("a", 1).unwrap()[0].id, status::SUCCEEDED, 30, None, None).unwrap();
        let live = |r: &Run, l: Option<&Lease>| l.is_some_and(|l| l.run_id.as_deref() == Some(&r.id));
        let started: usize = std::thread::scope(|sc| {
            let hs: Vec<_> = (0..8)
                .map(|i| {
                    sc.spawn(move || {
                        let s = Store::connect(at).unwrap();
                        usize::from(matches!(
                            s.begin_run(&run(&format!("m{i}"), "a"), 100, live).unwrap(),
                            Begin::Started { .. }
                        ))
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(started, 1);
        assert_eq!(s.lease("a").unwrap().map(|l| l.fence), Some(2));
    });
}

#[test]
fn failed_runs_are_counted_since_the_last_success() {
    each_backend("failed_in_a_row", failed_in_a_row);
}

fn failed_in_a_row(at: &Location) {
    let s = Store::connect(at).unwrap();
    s.insert_replica(&replica("a")).unwrap();
    s.insert_replica(&replica("b")).unwrap();
    let at = |id: &str, replica: &str, t: i64, st: &str| {
        s.insert_run(&Run { started_at: t, status: st.into(), ..run(id, replica) }).unwrap();
    };
    at("1", "a", 1, status::FAILED);
    at("2", "a", 2, status::SUCCEEDED);
    at("3", "a", 3, status::FAILED);
    at("4", "a", 4, status::SKIPPED);
    at("5", "a", 5, status::INTERRUPTED);
    at("6", "b", 1, status::FAILED);
    let got: std::collections::BTreeMap<String, u64> = s.failed_runs_in_a_row().unwrap().into_iter().collect();
    assert_eq!(got, [("a".to_owned(), 2), ("b".to_owned(), 1)].into());
    at("7", "b", 2, status::SUCCEEDED);
    let got: Vec<(String, u64)> = s.failed_runs_in_a_row().unwrap();
    assert_eq!(got, [("a".to_owned(), 2)]);
}

#[test]
fn points_are_named_by_the_image_version_their_run_read() {
    each_backend("image_versions", image_versions);
}

fn image_versions(at: &Location) {
    let s = Store::connect(at).unwrap();
    s.insert_replica(&replica("img")).unwrap();
    let disk = |run: &str, destination: u32, generation: u64| RunDisk {
        run_id: run.into(),
        disk: "os".into(),
        destination,
        generation,
        full_sync: false,
        full_sync_reason: None,
        bytes_read: 0,
        bytes_sent: 0,
        bytes_zero: 0,
        bytes_unchanged: 0,
        bytes_written: 0,
        bytes_cleared: 0,
    };
    // 1.0.0 made generation 1 at both destinations; 1.0.1 generation 2 at
    // the first and 4 at the second (which had others); a failed run of
    // 1.0.2 made generation 3 at the first only.
    for (id, t, version, gens, st) in [
        ("r1", 1, "1.0.0", vec![(0, 1), (1, 1)], status::SUCCEEDED),
        ("r2", 2, "1.0.1", vec![(0, 2), (1, 4)], status::SUCCEEDED),
        ("r3", 3, "1.0.2", vec![(0, 3)], status::FAILED),
    ] {
        s.insert_run(&Run { started_at: t, ..run(id, "img") }).unwrap();
        s.set_version(id, version).unwrap();
        for (d, g) in gens {
            s.record_disk(&disk(id, d, g)).unwrap();
        }
        s.finish_run(id, st, t + 1, Some(1), None).unwrap();
    }
    assert_eq!(s.run("r2").unwrap().version.as_deref(), Some("1.0.1"));
    assert_eq!(s.point_version("img", "os", 1, 4).unwrap().as_deref(), Some("1.0.1"));
    assert_eq!(s.point_version("img", "os", 0, 1).unwrap().as_deref(), Some("1.0.0"));
    assert_eq!(s.point_version("img", "os", 1, 2).unwrap(), None, "no run made it");
    assert_eq!(s.version_generation("img", "os", 1, "1.0.1").unwrap(), Some(4));
    assert_eq!(s.version_generation("img", "os", 0, "1.0.0").unwrap(), Some(1));
    assert_eq!(s.version_generation("img", "os", 0, "1.0.2").unwrap(), None, "its run failed");
    assert_eq!(s.version_generation("img", "data", 0, "1.0.0").unwrap(), None);
}
