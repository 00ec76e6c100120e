//! What a local user on the coordinator's host cannot make it do (issue 17):
//! `gc` of the local provider takes only its own processes and folders for
//! workers, however a command line or a link is crafted.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

use common::{wait_for, Coord};

#[test]
fn gc_kills_and_deletes_only_its_own_run_folders() {
    let c = Coord::new(false);
    let victim = c.path().join("victim");
    std::fs::create_dir_all(&victim).unwrap();
    std::fs::write(victim.join("precious"), b"keep me").unwrap();
    let runs = c.state.join("runs");
    std::fs::create_dir_all(&runs).unwrap();
    // A process whose --job starts with the runs folder but climbs out of it
    // (`Path::starts_with` does not resolve `..`). `; true` keeps bash from
    // exec-ing sleep, so the command line stays as crafted.
    let crafted = format!("{}/../../victim/job.json", runs.display());
    let mut p = Command::new("bash").args(["-c", "sleep 60; true", "x", "--job", &crafted]).spawn().unwrap();
    let cmdline = format!("/proc/{}/cmdline", p.id());
    wait_for(5, "the crafted process", || std::fs::read(&cmdline).is_ok_and(|c| c.windows(5).any(|w| w == b"--job")));
    // And a link in the runs folder pointing at the victim.
    std::os::unix::fs::symlink(&victim, runs.join("20260101-000000.000-evil")).unwrap();

    let gc = c.json(&["gc", "--json"]);
    assert!(gc["failed"].as_array().unwrap().is_empty(), "{gc}");
    assert_eq!(std::fs::read(victim.join("precious")).unwrap(), b"keep me", "gc deleted a folder outside its state");
    assert!(p.try_wait().unwrap().is_none(), "gc killed a process that is not its worker");
    assert!(!runs.join("20260101-000000.000-evil").exists(), "the link itself is gone");
    p.kill().unwrap();
    p.wait().unwrap();
}

fn mode(p: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn whole_disk_copies_are_their_owners_alone() {
    let c = Coord::new(false);
    let vm = common::make_vm(c.path(), "vm1", &[("os", 8 << 20, &[(0, 2 << 20)])]);
    let dest = c.path().join("dest");
    std::fs::create_dir(&dest).unwrap();
    let to = format!("file:{}", dest.display());
    c.json(&["replica", "create", "r1", "--vm", vm.to_str().unwrap(), "--to", &to, "--json"]);
    let r = c.json(&["run", "r1", "--json"]);
    assert_eq!(r["run"]["status"], "succeeded", "{r}");
    // The retained snapshot (a copy of the whole disk) and its folder.
    let snaps = c.state.join("snapshots").join("vm1");
    assert_eq!(mode(&snaps), 0o700, "{}", snaps.display());
    for f in std::fs::read_dir(&snaps).unwrap().flatten() {
        assert_eq!(mode(&f.path()), 0o600, "{}", f.path().display());
    }
    // The file destination: the VHD and its manifest.
    for f in ["r1/os.vhd", "r1/os.vhd.manifest"] {
        assert_eq!(mode(&dest.join(f)), 0o600, "{f}");
    }
}
