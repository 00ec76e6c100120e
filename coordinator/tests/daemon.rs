//! The scheduler: a short cron schedule fires runs, a trigger that finds
//! the previous run still going is skipped and recorded, `/metrics` shows
//! RPO and counters (checked by promtool), SIGTERM cancels the run in
//! progress, which tears down and leaves nothing behind.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};

use common::{make_vm, wait_for, Coord};

const MIB: u64 = 1 << 20;

fn scrape(port: u16) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_owned()
}

/// The value of the sample `name{labels}` (labels as printed), if present.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
}

#[test]
fn schedules_fire_overlaps_are_skipped_and_metrics_tell() {
    let c = Coord::new(false);
    let dest = c.path().join("dest");
    std::fs::create_dir(&dest).unwrap();
    let vm = make_vm(c.path(), "sched1", &[("os", 16 * MIB, &[(0, 2 * MIB)])]);
    let to = format!("file:{}", dest.display());
    // Every second; each run holds on for 2.5 s after its snapshot, so the
    // next triggers find it still going.
    c.json(&[
        "replica",
        "create",
        "s",
        "--vm",
        vm.to_str().unwrap(),
        "--to",
        &to,
        "--schedule",
        "* * * * * *",
        "--json",
    ]);
    let port = common::azurite::free_port();
    let mut daemon = c
        .cmd()
        .args(["daemon", "--tick-ms", "50", "--metrics-addr", &format!("127.0.0.1:{port}")])
        .env("DISKFERRY_FAILPOINTS", "after-snapshot=sleep:2500")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let count = |status: &str| -> usize {
        let h = c.json(&["runs", "s", "--json", "--limit", "100"]);
        h.as_array().unwrap().iter().filter(|r| r["run"]["status"] == status).count()
    };
    wait_for(60, "two scheduled runs and a skipped trigger", || count("succeeded") >= 2 && count("skipped") >= 1);

    let m = scrape(port);
    let rpo = sample(&m, "diskferry_replica_rpo_seconds{replica=\"s\"}").unwrap_or_else(|| panic!("no RPO:\n{m}"));
    assert!((0.0..10.0).contains(&rpo), "rpo {rpo}");
    let ok = sample(&m, "diskferry_runs_total{outcome=\"succeeded\",replica=\"s\"}").unwrap();
    assert!(ok >= 2.0, "{m}");
    assert!(sample(&m, "diskferry_runs_total{outcome=\"skipped\",replica=\"s\"}").unwrap() >= 1.0, "{m}");
    assert!(sample(&m, "diskferry_schedule_missed_total{replica=\"s\"}").unwrap() >= 1.0, "{m}");
    // The local provider's runs are placed on its workers.
    assert_eq!(sample(&m, "diskferry_replica_last_run_placement{placement=\"vm\",replica=\"s\"}"), Some(1.0), "{m}");
    // Every second: its RPO target is two seconds; no run failed.
    assert_eq!(sample(&m, "diskferry_replica_rpo_target_seconds{replica=\"s\"}"), Some(2.0), "{m}");
    assert_eq!(sample(&m, "diskferry_replica_failed_runs_in_a_row{replica=\"s\"}"), Some(0.0), "{m}");
    // The local provider copies each disk on its own (its replicas' default
    // is per-disk), and the metric says so.
    assert_eq!(
        sample(&m, "diskferry_replica_last_run_consistency{consistency=\"per-disk\",replica=\"s\"}"),
        Some(1.0),
        "{m}"
    );
    let prom = c.path().join("metrics.txt");
    std::fs::write(&prom, &m).unwrap();
    let check = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(&prom).unwrap())
        .output()
        .expect("promtool is not installed (scripts/test.sh installs it)");
    assert!(
        check.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );

    // SIGTERM: no new runs, the one in progress is cancelled and torn down,
    // nothing is left.
    // SAFETY: kill with a pid of our own child.
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    let status = daemon.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert_eq!(count("running"), 0);
    let (runs, _) = c.leftovers();
    assert!(runs.is_empty(), "{runs:?}");
    let gc = c.json(&["gc", "--json"]);
    assert!(gc["interrupted_runs"].as_array().unwrap().is_empty(), "{gc}");
    assert!(common::identical(&vm.join("os.img"), &dest.join("s/os.vhd")));
}
