//! Bad input: a one-line error naming the problem, the documented exit code
//! (docs/exit-codes.md), and a destination left exactly as it was.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use common::*;

/// Run the agent, expect `code`, a single `error:` line containing `needle`,
/// and `dir` unchanged.
fn refuses(args: &[&str], code: i32, needle: &str, dir: &Path) {
    let before = dir_state(dir);
    let out = run(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    if code != 2 {
        // clap's usage errors carry a usage hint; ours are one line.
        assert_eq!(lines.len(), 1, "{args:?}: not one line: {err}");
        assert!(lines[0].starts_with("error: "), "{err}");
    }
    assert!(err.contains(needle), "{args:?}: {err:?} does not mention {needle:?}");
    assert_eq!(dir_state(dir), before, "{args:?} changed the destination folder");
}

struct Setup {
    _d: tempfile::TempDir,
    dir: std::path::PathBuf,
    src: String,
    to: String,
}

fn setup() -> Setup {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().to_owned();
    let src = dir.join("disk.img");
    make_image(&src, 4 * MIB, &[(0, MIB, 1)]);
    let to = format!("file:{}", dir.join("disk.vhd").display());
    let s = Setup { src: src.display().to_string(), to, dir, _d: d };
    // A first generation exists, so "unchanged" means something.
    run_json(&["sync", &s.src, "--to", &s.to, "--json"]);
    s
}

#[test]
fn missing_source() {
    let s = setup();
    let missing = s.dir.join("nope.img");
    refuses(&["sync", missing.to_str().unwrap(), "--to", &s.to], 3, "nope.img", &s.dir);
    refuses(&["scan", missing.to_str().unwrap()], 3, "cannot open source", &s.dir);
}

#[test]
fn source_that_is_not_a_disk() {
    let s = setup();
    refuses(&["sync", s.dir.to_str().unwrap(), "--to", &s.to], 3, "neither a regular file nor a block device", &s.dir);
    refuses(&["sync", "/dev/null", "--to", &s.to], 3, "/dev/null", &s.dir);
}

#[test]
fn source_size_not_a_multiple_of_512() {
    let s = setup();
    let odd = s.dir.join("odd.img");
    std::fs::write(&odd, vec![1u8; 1000]).unwrap();
    refuses(&["sync", odd.to_str().unwrap(), "--to", &s.to], 3, "not a multiple of 512", &s.dir);
}

#[test]
fn chunk_size_out_of_range() {
    let s = setup();
    for bad in ["32KiB", "8MiB", "3MiB", "lots"] {
        refuses(&["sync", &s.src, "--to", &s.to, "--chunk-size", bad], 2, "--chunk-size", &s.dir);
    }
}

#[test]
fn destination_folder_missing() {
    let s = setup();
    let to = format!("file:{}", s.dir.join("no/such/dir/disk.vhd").display());
    refuses(&["sync", &s.src, "--to", &to], 4, "does not exist", &s.dir);
}

#[test]
fn destination_that_is_not_ours() {
    let s = setup();
    let precious = s.dir.join("precious.txt");
    std::fs::write(&precious, b"do not overwrite me").unwrap();
    let to = format!("file:{}", precious.display());
    refuses(&["sync", &s.src, "--to", &to], 4, "--force", &s.dir);
    // With --force it is replaced.
    run_json(&["sync", &s.src, "--to", &to, "--force", "--json"]);
    assert!(identical(Path::new(&s.src), &precious));
}

#[test]
fn unknown_destination_scheme() {
    let s = setup();
    refuses(&["sync", &s.src, "--to", "s3://bucket/disk"], 2, "not a destination", &s.dir);
}

#[test]
fn corrupt_manifest_named_explicitly() {
    let s = setup();
    let bad = s.dir.join("given.manifest");
    std::fs::write(&bad, b"DFMANIFS this is not a manifest at all, just some text").unwrap();
    poke(Path::new(&s.src), 0, 512, 5);
    refuses(&["sync", &s.src, "--to", &s.to, "--manifest", bad.to_str().unwrap()], 5, "given.manifest", &s.dir);
    let wrong_magic = s.dir.join("magic.manifest");
    std::fs::write(&wrong_magic, vec![0u8; 200]).unwrap();
    refuses(&["sync", &s.src, "--to", &s.to, "--manifest", wrong_magic.to_str().unwrap()], 5, "bad magic", &s.dir);
}

#[test]
fn destination_in_use() {
    let s = setup();
    let vhd = s.dir.join("disk.vhd");
    let holder = std::process::Command::new("flock").arg("-n").arg(&vhd).args(["sleep", "5"]).spawn();
    let Ok(mut holder) = holder else {
        eprintln!("SKIPPED destination_in_use: no flock(1) here");
        return;
    };
    std::thread::sleep(std::time::Duration::from_millis(300));
    poke(Path::new(&s.src), 0, 512, 5);
    refuses(&["sync", &s.src, "--to", &s.to], 4, "another sync is writing it", &s.dir);
    holder.kill().unwrap();
    holder.wait().unwrap();
}
