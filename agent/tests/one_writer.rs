//! One writer per destination, enforced by storage (a blob lease), on a
//! real Azurite with the real binary: two syncs of different sources to one
//! blob, again and again at random offsets, never publish a recovery point
//! that is neither source; a second writer gets one line and exit 4 and
//! changes nothing; a killed writer's lease lapses and the rerun resumes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::azurite;
use common::*;

const DISK: u64 = 24 * MIB;

fn agent_env() -> Command {
    let mut c = agent();
    c.env("AZURE_STORAGE_CONNECTION_STRING", azurite::connection_string());
    c.env_remove("AZURE_STORAGE_KEY");
    c
}

fn spawn(src: &Path, dest: &str, extra: &[&str]) -> Child {
    agent_env()
        .args(["sync", src.to_str().unwrap(), "--to", dest, "--create-container", "--concurrency", "2"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn ok(src: &Path, dest: &str, extra: &[&str]) {
    let out = spawn(src, dest, extra).wait_with_output().unwrap();
    assert!(out.status.success(), "sync {src:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A disk whose every 64 KiB chunk holds data of `seed`: a sync of it takes
/// a few hundred requests, long enough for two to overlap.
fn source(dir: &Path, name: &str, seed: u64) -> PathBuf {
    let p = dir.join(name);
    let extents: Vec<(u64, u64, u64)> = (0..DISK / MIB).map(|i| (i * MIB, MIB, seed * 1000 + i)).collect();
    make_image(&p, DISK, &extents);
    p
}

/// The recovery points the index names: (generation, snapshot).
fn points(dest: &str) -> Vec<(u64, String)> {
    let out = agent_env().args(["points", dest, "--json"]).output().unwrap();
    assert!(out.status.success(), "points: {}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|p| (p["generation"].as_u64().unwrap(), p["snapshot"].as_str().unwrap().to_owned()))
        .collect()
}

/// The disk bytes of recovery point `g`.
fn point_bytes(dest: &str, g: u64, dir: &Path) -> Vec<u8> {
    let out = dir.join("point.vhd");
    let r = agent_env().args(["download", dest, "--point", &g.to_string(), "--to", out.to_str().unwrap()]).output();
    let r = r.unwrap();
    assert!(r.status.success(), "download {g}: {}", String::from_utf8_lossy(&r.stderr));
    let mut b = std::fs::read(&out).unwrap();
    b.truncate(DISK as usize);
    b
}

#[test]
fn two_syncs_of_different_sources_never_publish_a_mix() {
    let d = tempfile::tempdir().unwrap();
    let (v1, a, b) = (source(d.path(), "v1.img", 1), source(d.path(), "a.img", 2), source(d.path(), "b.img", 3));
    let sources: Vec<Vec<u8>> = [&v1, &a, &b].iter().map(|p| std::fs::read(p).unwrap()).collect();
    let dest = azurite::url(azurite::endpoint(), &azurite::container("twowriters"), "d.vhd");
    // The blob at generation 1, as in the report.
    ok(&v1, &dest, &[]);
    let mut checked: BTreeSet<String> = BTreeSet::new();
    let (mut refused, mut waited, mut both) = (0, 0, 0);
    let mut rnd = 0x9E37_79B9_7F4A_7C15u64;
    for round in 0..20u64 {
        rnd ^= rnd << 13;
        rnd ^= rnd >> 7;
        rnd ^= rnd << 17;
        let offset = Duration::from_millis(rnd % 120);
        // Half the rounds the later one waits for the lease; half it does not wait at all.
        let wait: &[&str] = if round % 2 == 0 { &[] } else { &["--lease-wait", "0"] };
        let first = spawn(&a, &dest, wait);
        std::thread::sleep(offset);
        let mut args = vec!["--source-id", "other"];
        args.extend_from_slice(wait);
        let second = spawn(&b, &dest, &args);
        let outs = [first.wait_with_output().unwrap(), second.wait_with_output().unwrap()];
        for o in &outs {
            let err = String::from_utf8_lossy(&o.stderr);
            match o.status.code() {
                Some(0) => {}
                Some(4) => {
                    refused += 1;
                    assert!(err.contains("in use by another sync"), "round {round}: {err}");
                    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
                    assert_eq!(lines.len(), 1, "round {round}: one error line: {err}");
                    assert!(!err.contains("sig="), "{err}");
                }
                c => panic!("round {round}: exit {c:?}: {err}"),
            }
            if err.contains("waiting up to") {
                waited += 1;
            }
        }
        if outs.iter().all(|o| o.status.success()) {
            both += 1;
        }
        // Every point published so far equals one of the sources.
        for (g, snap) in points(&dest) {
            if checked.insert(snap) {
                let got = point_bytes(&dest, g, d.path());
                assert!(sources.contains(&got), "round {round}: recovery point {g} is neither source");
            }
        }
    }
    eprintln!("20 rounds: {refused} refused (exit 4), {waited} waited for the lease, {both} with both syncs done");
    assert!(refused + waited >= 5, "the syncs hardly overlapped: {refused} refused, {waited} waited");
    assert!(refused >= 1, "no round refused a second writer");
    // A clean sync afterwards ends identical.
    ok(&a, &dest, &["--lease-wait", "0"]);
    let v = agent_env().args(["verify", a.to_str().unwrap(), "--against", &dest, "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&v.stdout).unwrap();
    assert_eq!(v["identical"], true, "{v}");
}

#[test]
fn a_killed_writers_lease_lapses_and_the_rerun_resumes() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("big.img");
    let extents: Vec<(u64, u64, u64)> = (0..128).map(|i| (i * 4 * MIB, 2 * MIB, 70 + i)).collect();
    make_image(&src, 512 * MIB, &extents);
    let dest = azurite::url(azurite::endpoint(), &azurite::container("lapse"), "d.vhd");
    let mut child = spawn(&src, &dest, &["--lease-secs", "15"]);
    // Killed once its lease is taken and writes are under way.
    std::thread::sleep(Duration::from_millis(700));
    assert!(child.try_wait().unwrap().is_none(), "the sync ended before it could be killed");
    child.kill().unwrap();
    child.wait().unwrap();
    let killed_at = Instant::now();
    // Right away, a sync that does not wait is refused, one line, exit 4.
    let now = spawn(&src, &dest, &["--lease-wait", "0"]).wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&now.stderr);
    assert_eq!(now.status.code(), Some(4), "{err}");
    assert!(err.contains("in use by another sync") && err.contains("lapse within"), "{err}");
    // One that waits takes over once the lease lapses, and resumes.
    let out = agent_env().args(["sync", src.to_str().unwrap(), "--to", &dest, "--json"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("waiting up to"), "{err}");
    let waited = killed_at.elapsed();
    assert!(waited >= Duration::from_secs(10), "took over after {waited:?}: the lease did not hold");
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // What the killed writer had acknowledged is not sent again.
    assert!(r["bytes_unchanged"].as_u64().unwrap() > 0, "{r}");
    let v = agent_env().args(["verify", src.to_str().unwrap(), "--against", &dest, "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&v.stdout).unwrap();
    assert_eq!(v["identical"], true, "{v}");
}

/// The exit code and stderr of a finished sync.
fn outcome(child: Child) -> (Option<i32>, String) {
    let out = child.wait_with_output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn a_stale_writer_of_a_lost_lease_cannot_publish_after_its_successor() {
    // A coordinator lost its lease on the replica (fencing number 5) while
    // its worker was writing; the successor's worker (6) took over. The
    // stale worker, stopped while its blob lease lapsed, wakes after the
    // successor committed: storage refuses it, and the points stay whole.
    let d = tempfile::tempdir().unwrap();
    let big = |name: &str, seed: u64| {
        let p = d.path().join(name);
        let extents: Vec<(u64, u64, u64)> = (0..64).map(|i| (i * 4 * MIB, 2 * MIB, seed * 1000 + i)).collect();
        make_image(&p, 256 * MIB, &extents);
        p
    };
    let (v1, stale_src, new_src) = (big("v1.img", 1), big("stale.img", 2), big("new.img", 3));
    let dest = azurite::url(azurite::endpoint(), &azurite::container("fenced"), "d.vhd");
    let id = ["--source-id", "vm/os"];
    ok(&v1, &dest, &[&id[..], &["--fence", "5"]].concat());
    // Paced so that it is still writing when it is stopped.
    let slow = ["--fence", "5", "--lease-secs", "15", "--read-limit", "16MiB"];
    let mut stale = spawn(&stale_src, &dest, &[&id[..], &slow].concat());
    std::thread::sleep(Duration::from_millis(1500));
    if stale.try_wait().unwrap().is_some() {
        panic!("the stale sync ended before it could be stopped: {:?}", outcome(stale));
    }
    // SAFETY: kill(2) on our own child's pid; no memory is touched.
    unsafe { libc::kill(stale.id() as i32, libc::SIGSTOP) };
    // The successor waits out the stopped writer's lease, then syncs.
    let (code, err) = outcome(spawn(&new_src, &dest, &[&id[..], &["--fence", "6", "--lease-wait", "40"]].concat()));
    assert_eq!(code, Some(0), "{err}");
    let after_successor = points(&dest);
    // SAFETY: as above.
    unsafe { libc::kill(stale.id() as i32, libc::SIGCONT) };
    let (code, err) = outcome(stale);
    assert_eq!(code, Some(4), "the stale writer must be refused: {err}");
    eprintln!("the stale writer, woken: {}", err.trim());
    assert_eq!(points(&dest), after_successor, "the stale writer changed the recovery points: {err}");
    let newest = after_successor.last().unwrap().0;
    assert_eq!(point_bytes(&dest, newest, d.path()), std::fs::read(&new_src).unwrap()[..DISK as usize]);
    // A stale worker that only starts now is refused by the fence itself,
    // before it writes: one line, exit 4, nothing changed.
    let (code, err) = outcome(spawn(&stale_src, &dest, &[&id[..], &["--fence", "5"]].concat()));
    assert_eq!(code, Some(4), "{err}");
    assert!(err.contains("superseded") && err.contains("fencing number 6"), "{err}");
    assert_eq!(points(&dest), after_successor);
    let v = agent_env().args(["verify", new_src.to_str().unwrap(), "--against", &dest, "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&v.stdout).unwrap();
    assert_eq!(v["identical"], true, "{v}");
    // A run of a newer lease goes on from there.
    ok(&v1, &dest, &[&id[..], &["--fence", "7"]].concat());
}

#[test]
fn a_file_destination_refuses_a_lower_fencing_number() {
    let d = tempfile::tempdir().unwrap();
    let (a, b) = (source(d.path(), "a.img", 1), source(d.path(), "b.img", 2));
    let dest = format!("file:{}", d.path().join("d.vhd").display());
    ok(&a, &dest, &["--fence", "8"]);
    let before = std::fs::read(d.path().join("d.vhd")).unwrap();
    let (code, err) = outcome(spawn(&b, &dest, &["--fence", "7"]));
    assert_eq!(code, Some(4), "{err}");
    assert!(err.contains("superseded"), "{err}");
    assert_eq!(std::fs::read(d.path().join("d.vhd")).unwrap(), before, "the refused sync wrote");
    assert_eq!(std::fs::read_to_string(d.path().join("d.vhd.fence")).unwrap(), "8");
    ok(&b, &dest, &["--fence", "9"]);
    assert_eq!(std::fs::read_to_string(d.path().join("d.vhd.fence")).unwrap(), "9");
}
