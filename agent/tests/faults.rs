//! Storage faults between the agent and a real Azurite (503 with and
//! without Retry-After, 500, delays, connections reset mid-request, truncated
//! responses, writes whose answer is dropped), and SIGKILLs of the agent:
//! every sync that ends ends bit-identical, recovery point G-1 stays as it
//! was, and nothing is left behind (journal gone, old manifests trimmed).
//!
//! `soak` (ignored here; `scripts/soak.sh` runs it) repeats random changes,
//! faults and kills for N syncs and prints a figures table.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use diskferry_testkit::relay as relay_common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::azurite;
use common::*;
use diskferry_blob::address::BlobAddress;
use diskferry_blob::azure::AzureStore;
use diskferry_blob::PageStore;
use diskferry_testkit::proxy::{Proxy, ALL};

fn agent_env() -> Command {
    let mut c = agent();
    c.env("AZURE_STORAGE_CONNECTION_STRING", azurite::connection_string());
    c.env_remove("AZURE_STORAGE_KEY");
    c
}

fn sync_cmd(src: &Path, dest: &str, keep: u32) -> Command {
    let mut c = agent_env();
    c.args(["sync", src.to_str().unwrap(), "--to", dest, "--json", "--create-container", "--source-id", "soak"])
        .args(["--keep", &keep.to_string(), "--retry-for", "60", "--concurrency", "4"]);
    c
}

fn ok_json(out: &Output) -> Option<serde_json::Value> {
    out.status.success().then(|| serde_json::from_slice(&out.stdout).unwrap())
}

/// Download point `g` of `dest` (directly, no faults) and compare with `raw`.
fn point_is(dest: &str, g: u64, raw: &Path, dir: &Path) -> bool {
    let out = dir.join(format!("point-{g}.vhd"));
    let o = agent_env()
        .args(["download", dest, "--point", &g.to_string(), "--to", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "download {g}: {}", String::from_utf8_lossy(&o.stderr));
    let same = identical(raw, &out);
    std::fs::remove_file(&out).unwrap();
    same
}

/// What is left beside the blob that should not be: a journal, snapshots
/// and manifests the recovery point index does not name.
fn leftovers(dest: &str) -> Vec<String> {
    std::env::set_var("AZURE_STORAGE_CONNECTION_STRING", azurite::connection_string());
    let addr = BlobAddress::parse(dest.trim_start_matches("pageblob:")).unwrap();
    let blob = addr.blob.clone();
    let store = AzureStore::connect(addr, None).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let index = rt.block_on(store.get(&format!("{blob}.points"))).unwrap().unwrap();
    let points: Vec<serde_json::Value> = serde_json::from_slice(&index).unwrap();
    let named = |key: &str| points.iter().map(|p| p[key].to_string().trim_matches('"').to_owned()).collect::<Vec<_>>();
    let (snaps, gens) = (named("snapshot"), named("generation"));
    rt.block_on(store.list(&blob))
        .unwrap()
        .into_iter()
        .map(|l| (l.name, l.snapshot))
        .filter(|(name, snap)| match snap {
            Some(s) => name == &blob && !snaps.contains(s),
            None if name == &blob || *name == format!("{blob}.points") => false,
            None => !name
                .strip_prefix(&format!("{blob}.g"))
                .and_then(|g| g.strip_suffix(".manifest"))
                .is_some_and(|g| gens.iter().any(|k| k == g)),
        })
        .map(|(name, snap)| format!("{name}{}", snap.map(|s| format!("@{s}")).unwrap_or_default()))
        .collect()
}

fn copy_sparse(from: &Path, to: &Path) {
    let st = Command::new("cp").arg("--sparse=always").arg(from).arg(to).status().unwrap();
    assert!(st.success());
}

#[test]
fn storage_faults_of_every_kind_and_the_destination_ends_identical() {
    let d = tempfile::tempdir().unwrap();
    let port: u16 = azurite::endpoint().rsplit(':').next().unwrap().parse().unwrap();
    let proxy = Proxy::faulty(port, 200, &ALL, 0xFA17);
    let container = azurite::container("faults");
    let direct = azurite::url(azurite::endpoint(), &container, "d.vhd");
    let faulty = azurite::url(&format!("http://127.0.0.1:{}", proxy.port), &container, "d.vhd");
    let src = d.path().join("disk.img");
    make_image(&src, 40 * MIB, &[(0, 6 * MIB, 1), (20 * MIB, 5 * MIB, 2), (39 * MIB, MIB, 3)]);
    let prev = d.path().join("prev.img");
    let mut generation = 0;
    let mut retries = 0;
    for round in 0..3u64 {
        if round > 0 {
            copy_sparse(&src, &prev);
            poke(&src, (round * 7) * MIB, 2 * MIB, 10 + round);
            poke(&src, 21 * MIB, MIB, 0);
        }
        // Faults may outlast the retry budget of one run; the rerun resumes.
        let mut report = None;
        for _ in 0..6 {
            let out = sync_cmd(&src, &faulty, 3).output().unwrap();
            assert!(
                matches!(out.status.code(), Some(0) | Some(4)),
                "exit {:?}: {}",
                out.status.code(),
                String::from_utf8_lossy(&out.stderr)
            );
            if let Some(r) = ok_json(&out) {
                report = Some(r);
                break;
            }
        }
        let r = report.expect("no sync got through the faults in 6 tries");
        generation = r["generation"].as_u64().unwrap();
        retries += r["wire"]["retries"].as_u64().unwrap();
        let v = agent_env().args(["verify", src.to_str().unwrap(), "--against", &direct]).output().unwrap();
        assert!(v.status.success(), "round {round}: {}", String::from_utf8_lossy(&v.stdout));
        if round > 0 {
            assert!(point_is(&direct, generation - 1, &prev, d.path()), "recovery point {} changed", generation - 1);
        }
    }
    assert!(generation >= 3);
    assert!(retries > 0);
    for f in ALL {
        assert!(proxy.count(f) > 0, "{} was never injected: {:?}", f.name(), proxy.summary());
    }
    assert_eq!(leftovers(&direct), Vec::<String>::new());
}

/// N syncs of random changes through random storage faults, with random
/// SIGKILLs of the agent; prints the figures. `scripts/soak.sh` runs it:
/// SOAK_SYNCS (default 100), SOAK_SECONDS (default 900), SOAK_SEED.
/// With SOAK_RELAY=1 the syncs go through a relay receiver (writing to
/// Azurite) and the faults sit between sender and receiver; the receiver is
/// also killed and restarted, mid-sync, in one attempt of ten.
#[test]
#[ignore]
fn soak() {
    let syncs: u64 = std::env::var("SOAK_SYNCS").ok().and_then(|s| s.parse().ok()).unwrap_or(100);
    let budget = Duration::from_secs(std::env::var("SOAK_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(900));
    let seed: u64 = std::env::var("SOAK_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(7);
    let started = Instant::now();
    let d = tempfile::tempdir().unwrap();
    let relay = std::env::var_os("SOAK_RELAY").is_some_and(|v| !v.is_empty() && v != "0");
    let container = azurite::container("soak");
    let direct = azurite::url(azurite::endpoint(), &container, "d.vhd");
    let blob_root = format!("pageblob:{}/{}/{container}", azurite::endpoint(), azurite::ACCOUNT);
    let rx_env = [("AZURE_STORAGE_CONNECTION_STRING", azurite::connection_string())];
    let start_rx =
        |port: u16| relay_common::Receiver::start(d.path(), &blob_root, port, None, &rx_env, &["--create-container"]);
    let mut rx = relay.then(|| start_rx(0));
    let port: u16 = match &rx {
        Some(r) => r.port,
        None => azurite::endpoint().rsplit(':').next().unwrap().parse().unwrap(),
    };
    let proxy = Proxy::faulty(port, 50, &ALL, seed);
    let faulty = match &rx {
        Some(_) => format!("relay:http://127.0.0.1:{}/d", proxy.port),
        None => azurite::url(&format!("http://127.0.0.1:{}", proxy.port), &container, "d.vhd"),
    };
    let token = relay_common::token_file(d.path());
    let mut rx_restarts = 0u64;
    let src = d.path().join("disk.img");
    make_image(&src, 48 * MIB, &[(0, 8 * MIB, seed), (30 * MIB, 4 * MIB, seed + 1)]);
    let prev = d.path().join("prev.img");
    let keep = 4u64;
    let mut x = seed | 1;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let (mut done, mut attempts, mut kills, mut resumes, mut retries) = (0u64, 0u64, 0u64, 0u64, 0u64);
    let (mut mismatches, mut point_mismatches, mut written, mut changed) = (0u64, 0u64, 0u64, 0u64);
    let mut generation = 0u64;
    // The generation the last completed sync reported: the point that must
    // still hold `prev` (a killed sync may have committed a newer one before
    // it died, so "G-1" is this, not the newest generation minus one).
    while done < syncs && started.elapsed() < budget {
        let prev_gen = generation;
        // A change: 1 to 4 extents of 1 MiB, noise or zeros.
        if generation > 0 {
            copy_sparse(&src, &prev);
        }
        let n = 1 + rnd() % 4;
        for _ in 0..n {
            let off = (rnd() % 48) * MIB;
            poke(&src, off, MIB, if rnd() % 5 == 0 { 0 } else { rnd() | 1 });
        }
        changed += n * MIB;
        proxy.set_per_mille((rnd() % 120) as u32);
        loop {
            attempts += 1;
            let mut cmd = sync_cmd(&src, &faulty, keep as u32);
            cmd.arg("--relay-token-file").arg(&token);
            let kill_after = (rnd() % 4 == 0).then(|| Duration::from_millis(50 + rnd() % 600));
            let child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
            if let Some(r) = rx.as_mut().filter(|_| kill_after.is_none() && rnd() % 10 == 0) {
                // The receiver dies mid-sync and comes back on its port.
                std::thread::sleep(Duration::from_millis(50 + rnd() % 400));
                r.stop();
                rx = Some(start_rx(port));
                rx_restarts += 1;
            }
            let out = match kill_after {
                Some(after) => {
                    let pid = child.id() as i32;
                    let t = std::thread::spawn(move || {
                        std::thread::sleep(after);
                        // SAFETY: kill(2) on our own child's pid; at worst it has exited already.
                        unsafe { libc::kill(pid, libc::SIGKILL) };
                    });
                    let out = child.wait_with_output().unwrap();
                    t.join().unwrap();
                    out
                }
                None => child.wait_with_output().unwrap(),
            };
            if out.status.code().is_none() {
                kills += 1;
                continue;
            }
            let Some(r) = ok_json(&out) else { continue };
            if r["chunks_suspect"].as_u64().unwrap_or(0) > 0
                || r["full_sync_reason"] == "resuming an interrupted first sync"
            {
                resumes += 1;
            }
            retries += r["wire"]["retries"].as_u64().unwrap();
            written += r["bytes_written"].as_u64().unwrap();
            generation = r["generation"].as_u64().unwrap();
            break;
        }
        done += 1;
        let v = agent_env().args(["verify", src.to_str().unwrap(), "--against", &direct]).output().unwrap();
        if !v.status.success() {
            mismatches += 1;
        }
        if prev_gen > 0 && generation - prev_gen < keep && !point_is(&direct, prev_gen, &prev, d.path()) {
            point_mismatches += 1;
        }
    }
    let left = leftovers(&direct);
    let agents = Command::new("pgrep").args(["-f", "diskferry-agent sync"]).output().unwrap();
    let stray = String::from_utf8_lossy(&agents.stdout).lines().count();
    let through = if relay { "through a relay (faults between sender and receiver)" } else { "straight to storage" };
    println!("\n## soak: {done} syncs {through} in {:.0} s (seed {seed})", started.elapsed().as_secs_f64());
    println!("| figure | value |\n|---|---|");
    println!("| syncs completed | {done} |");
    println!("| sync attempts (incl. killed and failed) | {attempts} |");
    println!("| agent SIGKILLs | {kills} |");
    println!("| receiver SIGKILLs mid-sync (restarted) | {rx_restarts} |");
    println!("| requests through the fault proxy | {} |", proxy.requests());
    for (name, n) in proxy.summary() {
        println!("| faults injected: {name} | {n} |");
    }
    println!("| retries (agent-counted, completed syncs) | {retries} |");
    println!("| resumes (a sync that found an interrupted one's journal) | {resumes} |");
    println!(
        "| bytes written / bytes changed | {:.1} / {:.1} MiB |",
        written as f64 / MIB as f64,
        changed as f64 / MIB as f64
    );
    println!("| final mismatches (verify) | {mismatches} |");
    println!("| recovery point of the previous sync changed | {point_mismatches} |");
    println!(
        "| leftovers (journal, snapshots and manifests no point names, agent processes) | {} |",
        left.len() + stray
    );
    assert_eq!((mismatches, point_mismatches, left.len(), stray), (0, 0, 0, 0), "{left:?}");
}

#[test]
fn what_an_interrupted_commit_left_is_swept_by_the_next() {
    let d = tempfile::tempdir().unwrap();
    let container = azurite::container("sweep");
    let direct = azurite::url(azurite::endpoint(), &container, "d.vhd");
    let src = d.path().join("disk.img");
    make_image(&src, 8 * MIB, &[(0, MIB, 1)]);
    let run = |keep: u32| {
        let out = sync_cmd(&src, &direct, keep).output().unwrap();
        ok_json(&out).unwrap_or_else(|| panic!("{}", String::from_utf8_lossy(&out.stderr)))
    };
    run(3);
    // What a commit killed between its snapshot and its index leaves: a
    // snapshot no point names, and a manifest of a generation never recorded;
    // and a blob that only shares the name's beginning, which is not ours to touch.
    std::env::set_var("AZURE_STORAGE_CONNECTION_STRING", azurite::connection_string());
    let addr = BlobAddress::parse(direct.trim_start_matches("pageblob:")).unwrap();
    let store = AzureStore::connect(addr, None).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let stray = rt.block_on(store.snapshot("d.vhd", None)).unwrap();
    rt.block_on(store.put_block_blob("d.vhd.g77.manifest", bytes::Bytes::from_static(b"x"))).unwrap();
    rt.block_on(store.put_block_blob("d.vhd2.g1.manifest", bytes::Bytes::from_static(b"x"))).unwrap();
    poke(&src, 2 * MIB, 4096, 2);
    run(3);
    let left: Vec<(String, Option<String>)> =
        rt.block_on(store.list("d.vhd")).unwrap().into_iter().map(|l| (l.name, l.snapshot)).collect();
    assert!(!left.iter().any(|(_, s)| s.as_deref() == Some(stray.as_str())), "{left:?}");
    assert!(!left.iter().any(|(n, _)| n == "d.vhd.g77.manifest"), "{left:?}");
    assert!(left.iter().any(|(n, _)| n == "d.vhd2.g1.manifest"), "{left:?}");
    // The recorded points are intact: two snapshots, two manifests.
    assert_eq!(left.iter().filter(|(n, s)| n == "d.vhd" && s.is_some()).count(), 2, "{left:?}");
    assert!(left.iter().any(|(n, _)| n == "d.vhd.g1.manifest") && left.iter().any(|(n, _)| n == "d.vhd.g2.manifest"));
}

#[test]
fn storage_stopped_and_restarted_mid_sync_and_the_sync_goes_on() {
    let d = tempfile::tempdir().unwrap();
    let mut az = azurite::OwnAzurite::start(&d.path().join("azurite"));
    let dest = azurite::url(&az.endpoint(), "restart", "d.vhd");
    let src = d.path().join("disk.img");
    make_image(&src, 64 * MIB, &[(0, 16 * MIB, 1)]);
    let first = ok_json(&sync_cmd(&src, &dest, 3).output().unwrap()).unwrap();
    assert_eq!(first["generation"].as_u64(), Some(1));
    let g1 = d.path().join("g1.img");
    copy_sparse(&src, &g1);
    // Rewrite most of the disk, then take storage away in the middle of it:
    // once 12 of the 60 MiB have gone through a counting proxy.
    make_image(&src, 64 * MIB, &[(0, 60 * MIB, 2)]);
    let proxy = Proxy::counting(az.port);
    let via = azurite::url(&format!("http://127.0.0.1:{}", proxy.port), "restart", "d.vhd");
    let mut child = sync_cmd(&src, &via, 3).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    diskferry_testkit::process::poll(60, || proxy.bytes_up() >= 12 * MIB || child.try_wait().ok().flatten().is_some());
    assert!(child.try_wait().unwrap().is_none(), "the sync ended before storage could be stopped");
    az.down();
    std::thread::sleep(Duration::from_secs(2));
    az.up();
    let out = child.wait_with_output().unwrap();
    let r = ok_json(&out)
        .unwrap_or_else(|| panic!("the sync did not ride out the restart: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(r["generation"].as_u64(), Some(2), "{r}");
    assert!(r["wire"]["retries"].as_u64().unwrap() > 0, "storage was never missed: {r}");
    let v = agent_env().args(["verify", src.to_str().unwrap(), "--against", &dest]).output().unwrap();
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stdout));
    assert!(point_is(&dest, 1, &g1, d.path()), "recovery point 1 changed");
    assert_eq!(leftovers(&dest), Vec::<String>::new());
}

#[test]
fn a_source_that_fails_reads_stops_the_sync_and_changes_nothing_published() {
    let d = tempfile::tempdir().unwrap();
    let container = azurite::container("eio");
    let dest = azurite::url(azurite::endpoint(), &container, "d.vhd");
    let src = d.path().join("disk.img");
    make_image(&src, 32 * MIB, &[(0, 12 * MIB, 1)]);
    ok_json(&sync_cmd(&src, &dest, 3).output().unwrap()).unwrap();
    let g1 = d.path().join("g1.img");
    copy_sparse(&src, &g1);
    poke(&src, 2 * MIB, MIB, 2);
    poke(&src, 20 * MIB, MIB, 3);
    // The disk fails a read in the middle (EIO at 9 MiB + 100).
    let out = sync_cmd(&src, &dest, 3)
        .env(diskferry_agent::source::FAIL_READ_ENV, (9 * MIB + 100).to_string())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains(&format!("offset {}", 9 * MIB)) && err.contains("Input/output error"), "{err}");
    assert!(point_is(&dest, 1, &g1, d.path()), "recovery point 1 changed");
    // The disk reads again: the next sync ends identical.
    let r = ok_json(&sync_cmd(&src, &dest, 3).output().unwrap()).unwrap();
    assert_eq!(r["generation"].as_u64(), Some(2), "{r}");
    let v = agent_env().args(["verify", src.to_str().unwrap(), "--against", &dest]).output().unwrap();
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stdout));
    assert!(point_is(&dest, 1, &g1, d.path()));
    assert_eq!(leftovers(&dest), Vec::<String>::new());
}
