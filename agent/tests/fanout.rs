//! Fan-out: one read of the source, several destinations, each with its own
//! generation. A destination that is unavailable during one sync catches up
//! at the next; the others are not held back.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::fd::AsRawFd;
use std::process::Output;

use common::azurite;
use common::*;

fn fanout(args: &[&str]) -> Output {
    agent().env("AZURE_STORAGE_CONNECTION_STRING", azurite::connection_string()).args(args).output().unwrap()
}

#[test]
fn three_destinations_one_down_then_all_identical() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("disk.img");
    make_image(&src, 48 * MIB, &[(0, 3 * MIB, 1), (20 * MIB, 5 * MIB, 2), (40 * MIB, MIB, 3)]);
    let (a, c) = (d.path().join("a.vhd"), d.path().join("c.vhd"));
    let ep = azurite::endpoint();
    let b = azurite::url(ep, &azurite::container("fanout"), "b.vhd");
    let (ta, tc) = (format!("file:{}", a.display()), format!("file:{}", c.display()));
    let base = ["sync", src.to_str().unwrap(), "--json", "--create-container", "--retry-for", "3"];
    let args = |extra: &[&'static str]| -> Vec<String> {
        let mut v: Vec<String> = base.iter().map(|s| s.to_string()).collect();
        for t in [&ta, &b, &tc] {
            v.extend(["--to".to_owned(), t.clone()]);
        }
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let run = |extra: &[&'static str]| {
        let a = args(extra);
        fanout(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let results = |out: &Output| -> Vec<serde_json::Value> {
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap().as_array().unwrap().clone()
    };

    // 1. All three, first sync.
    let out = run(&[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r = results(&out);
    assert_eq!(r.len(), 3);
    for x in &r {
        assert_eq!((x["ok"].as_bool(), x["report"]["generation"].as_u64()), (Some(true), Some(1)), "{x}");
    }

    // 2. Change the disk; C is held by another sync (its lock is taken).
    poke(&src, 21 * MIB, 4096, 9);
    poke(&src, 40 * MIB, MIB, 0);
    let held = std::fs::File::open(&c).unwrap();
    // SAFETY: flock on a descriptor we own, released when it is closed.
    assert_eq!(unsafe { libc::flock(held.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) }, 0);
    let out = run(&[]);
    assert_eq!(out.status.code(), Some(7), "partial failure: {}", String::from_utf8_lossy(&out.stderr));
    let r = results(&out);
    assert_eq!(r[0]["report"]["generation"], 2);
    assert_eq!(r[0]["report"]["bytes_written"], MIB, "A sent only the changed chunk");
    assert_eq!(r[1]["report"]["generation"], 2);
    assert_eq!(r[2]["ok"], false);
    assert_eq!(r[2]["exit_code"], 4);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&tc) && !err.contains(&ta), "only C is named as failed: {err}");
    drop(held);

    // 3. Change again; C catches up from its own generation 1.
    poke(&src, 2 * MIB, 100, 10);
    let out = run(&[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r = results(&out);
    let gens: Vec<u64> = r.iter().map(|x| x["report"]["generation"].as_u64().unwrap()).collect();
    assert_eq!(gens, vec![3, 3, 2]);
    assert_eq!(r[0]["report"]["bytes_written"], MIB);
    assert_eq!(r[2]["report"]["full_sync"], false);
    assert_eq!(r[2]["report"]["bytes_written"], 2 * MIB, "C writes what it missed plus the new change");
    assert_eq!(r[2]["report"]["chunks_cleared"], 1, "and clears the chunk that became zero");
    assert!(identical(&src, &a));
    assert!(identical(&src, &c));
    let got = d.path().join("b-download.vhd");
    let out = fanout(&["download", &b, "--to", got.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(identical(&src, &got));
}

#[test]
fn a_manifest_override_needs_a_single_destination() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("disk.img");
    make_image(&src, 4 * MIB, &[(0, MIB, 1)]);
    let (a, b) = (d.path().join("a.vhd"), d.path().join("b.vhd"));
    let m = d.path().join("m.manifest");
    let out = run(&[
        "sync",
        src.to_str().unwrap(),
        "--to",
        &format!("file:{}", a.display()),
        "--to",
        &format!("file:{}", b.display()),
        "--manifest",
        m.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(!a.exists() && !b.exists());
}
