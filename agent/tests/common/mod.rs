//! Helpers shared by the agent's integration tests: deterministic images,
//! the real `diskferry-agent` binary, and `qemu-img` as the judge.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const MIB: u64 = 1 << 20;

/// Deterministic bytes (xorshift64*), so failures reproduce.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A sparse image of `size` bytes with `extents` (offset, len, seed) of noise.
pub fn make_image(path: &Path, size: u64, extents: &[(u64, u64, u64)]) {
    let f = File::create(path).unwrap();
    f.set_len(size).unwrap();
    for &(off, len, seed) in extents {
        f.write_all_at(&noise(seed, len as usize), off).unwrap();
    }
}

/// Overwrite `len` bytes at `off` with noise (seed) or zeros (seed 0).
pub fn poke(path: &Path, off: u64, len: u64, seed: u64) {
    let f = OpenOptions::new().write(true).open(path).unwrap();
    let bytes = if seed == 0 { vec![0u8; len as usize] } else { noise(seed, len as usize) };
    f.write_all_at(&bytes, off).unwrap();
}

pub fn agent() -> Command {
    Command::new(env!("CARGO_BIN_EXE_diskferry-agent"))
}

pub fn run(args: &[&str]) -> Output {
    agent().args(args).output().unwrap()
}

/// Run, require success, parse the `--json` output.
pub fn run_json(args: &[&str]) -> serde_json::Value {
    let out = run(args);
    assert!(
        out.status.success(),
        "{args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("bad json {e}: {}", String::from_utf8_lossy(&out.stdout)))
}

pub fn sync_json(src: &Path, vhd: &Path, extra: &[&str]) -> serde_json::Value {
    let to = format!("file:{}", vhd.display());
    let mut args = vec!["sync", src.to_str().unwrap(), "--to", &to, "--json"];
    args.extend_from_slice(extra);
    run_json(&args)
}

/// `qemu-img compare -f raw -F vpc`: true when identical.
pub fn identical(raw: &Path, vhd: &Path) -> bool {
    let out = Command::new("qemu-img").args(["compare", "-f", "raw", "-F", "vpc"]).arg(raw).arg(vhd).output().unwrap();
    match out.status.code() {
        Some(0) => true,
        Some(1) => false,
        _ => panic!("qemu-img compare failed: {}", String::from_utf8_lossy(&out.stderr)),
    }
}

/// Virtual size `qemu-img info -f vpc` reports.
pub fn vhd_virtual_size(vhd: &Path) -> u64 {
    let out = Command::new("qemu-img").args(["info", "-f", "vpc", "--output", "json"]).arg(vhd).output().unwrap();
    assert!(out.status.success(), "qemu-img info: {}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["virtual-size"].as_u64().unwrap()
}

/// Every file in `dir` with the blake3 of its content and its length.
pub fn dir_state(dir: &Path) -> BTreeMap<PathBuf, (u64, String)> {
    let mut m = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            let bytes = std::fs::read(&p).unwrap();
            m.insert(p, (bytes.len() as u64, blake3::hash(&bytes).to_hex().to_string()));
        }
    }
    m
}
pub mod azurite;

/// A read-only loop device over `img`, detached on drop; `None` (with a
/// SKIPPED line naming `test`) where losetup is not permitted.
pub fn loop_device(img: &Path, test: &str) -> Option<LoopDevice> {
    let out = Command::new("losetup").args(["--find", "--show", "--read-only"]).arg(img).output();
    match out {
        Ok(o) if o.status.success() => Some(LoopDevice(String::from_utf8(o.stdout).unwrap().trim().to_owned())),
        other => {
            eprintln!("SKIPPED {test}: losetup unavailable here: {other:?}");
            None
        }
    }
}

/// A loop device, detached when dropped.
pub struct LoopDevice(pub String);

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

/// Deterministic compressible bytes: words drawn from a small vocabulary,
/// roughly what file systems hold (zstd -3 shrinks it about 3 to 4 times).
pub fn text(seed: u64, len: usize) -> Vec<u8> {
    const WORDS: [&str; 16] = [
        "block ",
        "disk ",
        "chunk ",
        "region ",
        "snapshot ",
        "replica ",
        "journal ",
        "page ",
        "blob ",
        "zero ",
        "hash ",
        "delta ",
        "\n",
        "generation ",
        "recovery ",
        "point ",
    ];
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 16);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        let r = x.wrapping_mul(0x2545_F491_4F6C_DD1D);
        out.extend_from_slice(WORDS[(r >> 60) as usize].as_bytes());
        if r & 0xff < 24 {
            out.extend_from_slice(&r.to_le_bytes()[..3]);
        }
    }
    out.truncate(len);
    out
}

/// Write compressible `text` of `len` bytes at `off`.
pub fn poke_text(path: &Path, off: u64, len: u64, seed: u64) {
    let f = OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(&text(seed, len as usize), off).unwrap();
}
