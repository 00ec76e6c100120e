//! SIGKILL the coordinator at several points of a run; `diskferry gc` must
//! then leave nothing behind but the retained latest snapshot per disk, and
//! the next run must succeed (resuming the agent's checkpoint when the kill
//! came mid-sync).
#![allow(clippy::unwrap_used)]

mod common;

use common::{identical, make_vm, poke, wait_for, Coord};

const MIB: u64 = 1 << 20;

/// The one agent status file of a run in progress, parsed.
fn live_status(c: &Coord) -> Option<serde_json::Value> {
    let runs = std::fs::read_dir(c.state.join("runs")).ok()?;
    for r in runs.flatten() {
        if let Ok(b) = std::fs::read(r.path().join("status.json")) {
            return serde_json::from_slice(&b).ok();
        }
    }
    None
}

fn retained(c: &Coord, replica: &str) -> Vec<String> {
    let show = c.json(&["replica", "show", replica, "--json"]);
    let mut v: Vec<String> =
        show["snapshots"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap().to_owned()).collect();
    v.sort();
    v
}

/// After gc: no worker folder, no agent, no loop device, and the snapshot
/// files are exactly the retained ones.
fn assert_clean(c: &Coord, replica: &str, when: &str) {
    let (runs, snaps) = c.leftovers();
    assert!(runs.is_empty(), "{when}: worker folders left: {runs:?}");
    assert!(c.agents().is_empty(), "{when}: agent processes left");
    assert!(c.loops().is_empty(), "{when}: loop devices left: {:?}", c.loops());
    let files: Vec<String> = snaps.iter().filter(|p| p.is_file()).map(|p| p.display().to_string()).collect();
    assert_eq!(files, retained(c, replica), "{when}: snapshot files other than the retained ones");
}

fn kill_and_gc(c: &Coord, child: &mut std::process::Child, when: &str) {
    common::kill(child);
    let gc = c.json(&["gc", "--json"]);
    assert_eq!(gc["interrupted_runs"].as_array().unwrap().len(), 1, "{when}: {gc}");
    assert!(gc["failed"].as_array().unwrap().is_empty(), "{when}: {gc}");
}

#[test]
fn sigkill_at_each_phase_then_gc_then_run_again() {
    let c = Coord::new(true);
    let lo: Vec<&'static str> = if common::can_loop() { vec!["--loop"] } else { vec![] };
    let data = 384 * MIB;
    let vm = make_vm(c.path(), "app1", &[("os", 448 * MIB, &[(0, data)]), ("logs", 16 * MIB, &[(MIB, MIB)])]);
    c.json(&["replica", "create", "app", "--vm", vm.to_str().unwrap(), "--to", &c.container("crash"), "--json"]);
    let run = |extra: &[&'static str]| -> Vec<&'static str> {
        lo.iter().copied().chain(["run", "app"]).chain(extra.iter().copied()).collect()
    };

    // 1. Killed mid-sync during the very first run: the agent keeps going
    //    (a worker outlives its coordinator) until gc stops it.
    let mut child = c.start_paused(&run(&[]), "after-start-worker");
    // Once storage has acknowledged half the data, the journal holds those
    // acks (appended every 25 ms) and a rerun must not send them again.
    wait_for(120, "storage to acknowledge half the disk", || {
        live_status(&c).and_then(|s| s["disks"][0]["bytes_sent"].as_u64()).is_some_and(|w| w >= data / 2)
    });
    kill_and_gc(&c, &mut child, "mid-sync");
    assert_clean(&c, "app", "mid-sync");
    // The next run resumes the interrupted first generation: what was
    // acknowledged is not sent again.
    let r = c.json(&run(&["--json"]));
    assert_eq!(r["run"]["status"], "succeeded", "{r}");
    let os = r["disks"].as_array().unwrap().iter().find(|d| d["disk"] == "os").unwrap().clone();
    let sent = os["bytes_sent"].as_u64().unwrap();
    eprintln!("resumed first sync sent {} MiB of {} MiB", sent >> 20, data >> 20);
    assert_eq!(os["full_sync_reason"], "resuming an interrupted first sync", "{os}");
    assert!(sent < data * 3 / 4, "resumed run sent {sent} of {data}: the checkpoint was not used: {os}");
    assert_clean(&c, "app", "after the resumed run");

    // 2. Other points: after the snapshots, after the temp disks, during teardown.
    for (i, point) in ["after-snapshot", "after-temp-disks", "after-delete-worker"].into_iter().enumerate() {
        poke(&vm.join("os.img"), (400 + i as u64) * MIB, 4096, i as u64 + 1);
        let before = retained(&c, "app");
        let mut child = c.start_paused(&run(&[]), point);
        kill_and_gc(&c, &mut child, point);
        assert_clean(&c, "app", point);
        assert_eq!(retained(&c, "app"), before, "{point}: the retained snapshots changed");
        let r = c.json(&run(&["--json"]));
        assert_eq!(r["run"]["status"], "succeeded", "{point}: {r}");
        assert_clean(&c, "app", &format!("run after {point}"));
    }

    // The newest point equals the disks.
    let out = c.path().join("import");
    std::fs::create_dir(&out).unwrap();
    c.json(&["import", "app", "--to", out.to_str().unwrap(), "--json"]);
    assert!(identical(&vm.join("os.img"), &out.join("os.vhd")));
    assert!(identical(&vm.join("logs.img"), &out.join("logs.vhd")));
    let history = c.json(&["runs", "app", "--json"]);
    let interrupted = history.as_array().unwrap().iter().filter(|r| r["run"]["status"] == "interrupted").count();
    assert_eq!(interrupted, 4);
}

/// SIGINT (Ctrl-C) during the sync: the run is cancelled with its teardown —
/// no worker, no agent, no snapshot of its own left, no gc needed.
#[test]
fn sigint_cancels_a_run_and_tears_it_down() {
    let c = Coord::new(true);
    let vm = make_vm(c.path(), "app1", &[("os", 640 * MIB, &[(0, 512 * MIB)])]);
    c.json(&["replica", "create", "app", "--vm", vm.to_str().unwrap(), "--to", &c.container("cancel"), "--json"]);
    let child = c.cmd().args(["run", "app", "--json"]).stdout(std::process::Stdio::piped()).spawn().unwrap();
    wait_for(60, "the agent to start syncing", || live_status(&c).is_some_and(|s| s["phase"] == "syncing"));
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "a cancelled run exits 1");
    let run: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(run["run"]["status"], "failed", "{run}");
    assert!(run["run"]["error"].as_str().unwrap().contains("cancelled by a signal"), "{run}");
    let (runs, snaps) = c.leftovers();
    assert!(runs.is_empty(), "worker folders left: {runs:?}");
    assert!(c.agents().is_empty(), "agent processes left");
    assert!(snaps.iter().all(|p| !p.is_file()), "snapshots left: {snaps:?}");
    let gc = c.json(&["gc", "--json"]);
    assert!(gc["deleted"].as_array().unwrap().is_empty(), "nothing for gc: {gc}");
}
