//! The oracles: `qemu-img` for VHDs (it reads Azure's fixed VHD as `vpc`),
//! folder listings with digests, loop devices over images.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// `qemu-img compare -f raw -F vpc`: the VHD's disk equals the image. A
/// comparison that could not be made (a file qemu-img cannot read) panics.
pub fn identical(raw: &Path, vhd: &Path) -> bool {
    let out = Command::new("qemu-img").args(["compare", "-f", "raw", "-F", "vpc"]).arg(raw).arg(vhd).output().unwrap();
    match out.status.code() {
        Some(0) => true,
        Some(1) => false,
        _ => panic!("qemu-img compare failed: {}", String::from_utf8_lossy(&out.stderr)),
    }
}

/// The virtual size `qemu-img info` reads from a VHD.
pub fn vhd_virtual_size(vhd: &Path) -> u64 {
    let out = Command::new("qemu-img").args(["info", "--output=json", "-f", "vpc"]).arg(vhd).output().unwrap();
    assert!(out.status.success(), "qemu-img info: {}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["virtual-size"].as_u64().unwrap()
}

/// Every file in `dir` (not below) with its length and the blake3 of its
/// content: to tell that nothing changed.
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

/// Everything under `dir`, folders too, sorted.
pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else { return out };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.push(p.clone());
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// Can this process attach loop devices?
pub fn can_loop() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    root && Command::new("losetup").arg("--version").output().is_ok_and(|o| o.status.success())
}

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
