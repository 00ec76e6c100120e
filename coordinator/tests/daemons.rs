//! Several daemons on one PostgreSQL database (issue 20): three daemons and
//! twenty replicas scheduled every five seconds. Every fire time is run or
//! skipped exactly once, never two runs of a replica at once (fencing
//! numbers grow, run times do not overlap). A daemon killed with SIGKILL
//! mid-run loses its runs once their leases lapse: another daemon records
//! them interrupted and tears down what they left, the data ends identical
//! to the sources, and `gc` finds nothing. SIGTERM gives the leases back.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::{make_vm, poke, Coord};
use serde_json::Value;

const MIB: u64 = 1 << 20;
const REPLICAS: usize = 20;
const EVERY: i64 = 5;
const LEASE_SECS: u64 = 3;

fn scrape(port: u16) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.split_once("\r\n\r\n").unwrap().1.to_owned()
}

struct Daemon {
    child: Child,
    port: u16,
    /// HOST:PID, as runs and leases name it.
    id: String,
}

fn start_daemon(c: &Coord) -> Daemon {
    let port = common::azurite::free_port();
    let mut child = c
        .cmd()
        .args(["daemon", "--tick-ms", "100", "--metrics-addr", &format!("127.0.0.1:{port}")])
        // Each run holds on after its snapshot: runs overlap with later
        // fire times, and a kill finds runs in progress.
        .env("DISKFERRY_FAILPOINTS", "after-snapshot=sleep:1500")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let line = common::stderr_until(&mut child, "its start line", |l| l.starts_with("daemon "));
    let id = line.split_whitespace().nth(1).unwrap().to_owned();
    assert!(id.ends_with(&format!(":{}", child.id())), "{line}");
    Daemon { child, port, id }
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

#[test]
fn three_daemons_run_each_slot_once_and_take_over_from_a_killed_one() {
    let c = Coord::shared(false);
    let url = c.db_url.clone().unwrap();
    let cfg = std::fs::read_to_string(&c.config).unwrap();
    std::fs::write(&c.config, cfg.replace("[run]\n", &format!("[run]\nlease_secs = {LEASE_SECS}\n"))).unwrap();
    let dest = c.path().join("dest");
    std::fs::create_dir(&dest).unwrap();
    let to = format!("file:{}", dest.display());
    let mut vms = Vec::new();
    for i in 0..REPLICAS {
        let vm = make_vm(c.path(), &format!("vm{i:02}"), &[("os", 8 * MIB, &[(MIB, MIB)])]);
        let name = format!("r{i:02}");
        let v = vm.to_str().unwrap();
        c.json(&["replica", "create", &name, "--vm", v, "--to", &to, "--schedule", "*/5 * * * * *", "--json"]);
        vms.push((name, vm));
    }
    let mut daemons: Vec<Daemon> = (0..3).map(|_| start_daemon(&c)).collect();
    let first_slot = (now() / EVERY + 1) * EVERY;

    // Let them work, then kill one while it holds leases (runs in progress).
    // DISKFERRY_SOAK_SECS makes it a longer soak (before and after the kill).
    let soak: u64 = std::env::var("DISKFERRY_SOAK_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(42);
    std::thread::sleep(Duration::from_secs(soak / 2 + 1));
    let killed = daemons.remove(0);
    let held_by = |id: &str| -> usize {
        let sql = format!("SELECT count(*) FROM leases WHERE holder = '{id}' AND expires_at > {}", now());
        diskferry_testkit::postgres::query(&url, &sql).trim().parse().unwrap()
    };
    let t0 = Instant::now();
    while held_by(&killed.id) == 0 {
        assert!(t0.elapsed() < Duration::from_secs(30), "daemon {} never held a lease", killed.id);
        std::thread::sleep(Duration::from_millis(50));
    }
    // The sources change: the runs after the kill must carry the change.
    for (_, vm) in &vms {
        poke(&vm.join("os.img"), 5 * MIB, 64 * 1024, 99);
    }
    let mut k = killed.child;
    k.kill().unwrap();
    k.wait().unwrap();
    let killed_at = now();

    std::thread::sleep(Duration::from_secs(soak / 2));
    let m = scrape(daemons[0].port);
    let last_slot = (now() / EVERY) * EVERY - EVERY;
    let stopped_at = now();
    for d in &mut daemons {
        // SAFETY: kill with a pid of our own child.
        unsafe { libc::kill(d.child.id() as i32, libc::SIGTERM) };
    }
    for d in &mut daemons {
        assert!(d.child.wait().unwrap().success());
    }
    // SIGTERM gave every lease back at once (the killed daemon's were taken over).
    let held = diskferry_testkit::postgres::query(&url, "SELECT count(*) FROM leases WHERE holder IS NOT NULL");
    assert_eq!(held.trim(), "0", "leases still held after SIGTERM");

    let mut interrupted = 0;
    let mut runs_by: BTreeMap<String, usize> = BTreeMap::new();
    for (name, vm) in &vms {
        let h = c.json(&["runs", name, "--json", "--limit", "1000"]);
        let runs: Vec<&Value> = h.as_array().unwrap().iter().map(|x| &x["run"]).collect();
        // Each fire time while all were up: exactly one run or skip.
        let slots: Vec<i64> = runs.iter().filter_map(|r| r["slot"].as_i64()).collect();
        let unique: BTreeSet<i64> = slots.iter().copied().collect();
        assert_eq!(unique.len(), slots.len(), "{name}: a slot recorded twice");
        for s in (first_slot..=last_slot).step_by(EVERY as usize) {
            assert!(unique.contains(&s), "{name}: fire time {s} neither ran nor was skipped ({unique:?})");
        }
        // Never two at once: by fencing number, each run starts after the previous one ended.
        let mut ran: Vec<&&Value> = runs.iter().filter(|r| r["fence"].is_i64()).collect();
        ran.sort_by_key(|r| r["fence"].as_i64());
        for w in ran.windows(2) {
            let (a, b) = (w[0], w[1]);
            assert!(b["fence"].as_i64() > a["fence"].as_i64(), "{name}: fencing numbers repeat");
            assert!(
                b["started_at"].as_i64() >= a["finished_at"].as_i64(),
                "{name}: run {} started before run {} ended",
                b["id"],
                a["id"]
            );
        }
        for r in &runs {
            assert_ne!(r["status"], "running", "{name}: {r}");
            // Only the runs SIGTERM cancelled at the end failed.
            if r["status"] == "failed" {
                assert!(r["error"].as_str().unwrap().contains("cancelled by a signal"), "{name}: {r}");
                assert!(r["finished_at"].as_i64().unwrap() >= stopped_at, "{name}: {r}");
            }
            *runs_by.entry(r["daemon"].as_str().unwrap_or("-").to_owned()).or_default() += 1;
            if r["status"] == "interrupted" {
                interrupted += 1;
                assert_eq!(r["daemon"], killed.id.as_str(), "{name}: {r}");
                assert!(r["error"].as_str().unwrap().contains("took over"), "{r}");
                assert!(r["finished_at"].as_i64().unwrap() >= killed_at, "{r}");
            }
        }
        // The newest point holds the changed source.
        assert!(common::identical(&vm.join("os.img"), &dest.join(name).join("os.vhd")), "{name}: data differs");
        let newest = runs.iter().find(|r| r["status"] == "succeeded").unwrap();
        assert!(newest["started_at"].as_i64().unwrap() > killed_at, "{name}: no run after the kill");
    }
    assert!(interrupted >= 1, "the killed daemon's runs were not taken over");
    assert!(runs_by.len() >= 3, "all three daemons ran replicas: {runs_by:?}");
    eprintln!(
        "{REPLICAS} replicas, slots {first_slot}..={last_slot}: runs by daemon {runs_by:?}, {interrupted} taken over"
    );
    // Nothing leaked: gc has nothing to do, and no run left a folder.
    let gc = c.json(&["gc", "--json"]);
    assert!(gc["interrupted_runs"].as_array().unwrap().is_empty(), "{gc}");
    assert!(gc["deleted"].as_array().unwrap().is_empty(), "{gc}");
    let (runs, _) = c.leftovers();
    assert!(runs.is_empty(), "{runs:?}");
    assert!(c.agents().is_empty(), "agents left running");
    // What the daemon said of itself and its leases.
    let me = &daemons[0].id;
    assert!(m.contains(&format!("diskferry_daemon_info{{daemon=\"{me}\"")), "{m}");
    assert!(m.contains("diskferry_leases_held "), "{m}");
    assert!(m.contains(&format!("diskferry_daemon_runs_total{{daemon=\"{me}\",outcome=\"succeeded\"}}")), "{m}");
    let text = c.run(&["runs", "r00"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("by (fence)") && text.contains(me.as_str()), "{text}");
}
