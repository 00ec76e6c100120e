//! Sources that are not VMs (issue 22): an Azure Compute Gallery image
//! version, a managed disk and a snapshot, read over HTTPS with no worker
//! VM; an image's next version synced against the version already at each
//! destination; a point published as a gallery image version in the
//! destination's region. Against the ARM simulator (its gallery answers
//! are GalleryRP 2024-03-03's examples' shapes, bodies checked against the
//! SDK's models) with Azurite as the destinations; and a local image file.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};

use common::azure::{Fixture, MIB, WORK};
use common::{identical, make_disk, poke, Coord};
use serde_json::Value;

const GIB: u64 = 1 << 30;

/// A sparse copy of `from` at `to` (what a build pipeline's next version
/// starts from).
fn copy(from: &Path, to: &Path) {
    let st = std::process::Command::new("cp").arg("--sparse=always").arg(from).arg(to).status().unwrap();
    assert!(st.success());
}

/// Whether the simulator was asked to create any VM.
fn vm_created(f: &Fixture) -> bool {
    f.sim.with(|s| s.log.iter().any(|l| l.starts_with("PUT") && l.to_ascii_lowercase().contains("/virtualmachines/")))
}

/// The run's per-destination results for disk `disk`.
fn disk_results(run: &Value, disk: &str) -> Vec<Value> {
    let mut d: Vec<Value> = run["disks"].as_array().unwrap().iter().filter(|d| d["disk"] == disk).cloned().collect();
    d.sort_by_key(|d| d["destination"].as_u64());
    d
}

/// Import generation `g` of every disk of `replica` at destination `dest` into a new folder.
fn import(coord: &Coord, replica: &str, dest: u32, g: u64) -> PathBuf {
    let dir = coord.path().join(format!("import-{replica}-{dest}-{g}"));
    std::fs::create_dir_all(&dir).unwrap();
    let out = coord.run(&[
        "import",
        replica,
        "--dest",
        &dest.to_string(),
        "--point",
        &g.to_string(),
        "--to",
        dir.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "import: {}", String::from_utf8_lossy(&out.stderr));
    dir
}

#[test]
fn an_image_version_goes_to_two_regions_then_only_its_changes_then_into_a_gallery() {
    let f = Fixture::new("images");
    let dest2 = f.coord.container("images-b");
    let src = f.coord.path().join("versions");
    std::fs::create_dir_all(&src).unwrap();
    // Version 1.0.0: a 2 GiB OS disk image holding 128 MiB, and a data disk image.
    let (os1, data1) = (src.join("os-1.0.0.img"), src.join("data-1.0.0.img"));
    make_disk(&os1, 2 * GIB, &[(0, 48 * MIB), (700 * MIB, 32 * MIB), (1500 * MIB, 48 * MIB)], 31);
    make_disk(&data1, 64 * MIB, &[(0, 16 * MIB)], 32);
    let gallery = f.sim.add_gallery("images", "golden", "westeurope");
    let definition = f.sim.add_image_definition(&gallery, "ubuntu-golden", "Linux");
    f.sim.add_image_version(&definition, "1.0.0", &["westeurope"], &os1, &[(0, &data1)]);
    let out = f.cmd(&["replica", "create", "golden", "--image", &definition, "--to", &f.dest, "--to", &dest2]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let r1 = f.json(&["run", "golden", "--json"]);
    assert_eq!(r1["run"]["status"], "succeeded", "{r1}");
    assert_eq!(r1["run"]["version"], "1.0.0", "{r1}");
    assert_eq!(r1["run"]["placement"], "here", "{r1}");
    assert_eq!(r1["run"]["consistency"], "image", "{r1}");

    // Version 1.0.1: 3% of the OS image's 1 MiB chunks changed (61 of
    // 2048: some in its data, some where it held nothing), two of the
    // data image's.
    let (os2, data2) = (src.join("os-1.0.1.img"), src.join("data-1.0.1.img"));
    copy(&os1, &os2);
    copy(&data1, &data2);
    let changed_chunks: Vec<u64> = (0..61).map(|i| i * 33 + 5).collect();
    for (i, c) in changed_chunks.iter().enumerate() {
        poke(&os2, c * MIB, MIB, 100 + i as u64);
    }
    poke(&data2, 3 * MIB, MIB, 201);
    poke(&data2, 40 * MIB, MIB, 202);
    let changed = changed_chunks.len() as u64 * MIB;
    f.sim.add_image_version(&definition, "1.0.1", &["westeurope"], &os2, &[(0, &data2)]);

    let r2 = f.json(&["run", "golden", "--json"]);
    assert_eq!(r2["run"]["status"], "succeeded", "{r2}");
    assert_eq!(r2["run"]["version"], "1.0.1", "the definition's newest version: {r2}");
    let os = disk_results(&r2, "os");
    assert_eq!(os.len(), 2, "{r2}");
    for d in &os {
        let (written, sent) = (d["bytes_written"].as_u64().unwrap(), d["bytes_sent"].as_u64().unwrap());
        assert_eq!(d["full_sync"], false, "{d}");
        assert!(
            written >= changed && sent <= changed * 105 / 100,
            "destination {}: wrote {written}, sent {sent} for {changed} changed: {d}",
            d["destination"]
        );
        let size: u64 = ["bytes_zero", "bytes_unchanged", "bytes_written", "bytes_cleared"]
            .iter()
            .map(|k| d[k].as_u64().unwrap())
            .sum();
        assert_eq!(size, 2 * GIB, "{d}");
        println!(
            "read {} destination {}: sent {sent} of the image's {size} bytes ({:.2}%)",
            d["bytes_read"],
            d["destination"],
            sent as f64 * 100.0 / size as f64
        );
    }
    for d in disk_results(&r2, "lun0") {
        assert!(d["bytes_sent"].as_u64().unwrap() <= 2 * MIB * 105 / 100, "{d}");
    }

    // The schedule fires again with no new version: nothing is made or read.
    let puts = || f.sim.with(|s| s.log.iter().filter(|l| l.starts_with("PUT")).count());
    let before = puts();
    let r3 = f.json(&["run", "golden", "--json"]);
    assert_eq!(r3["run"]["status"], "succeeded", "{r3}");
    assert_eq!(r3["run"]["version"], "1.0.1", "{r3}");
    assert!(r3["run"]["note"].as_str().unwrap().contains("nothing to sync"), "{r3}");
    assert_eq!(r3["disks"], serde_json::json!([]), "{r3}");
    assert_eq!(puts(), before, "a run with nothing to sync made something");

    // No VM for any of it, and nothing left: the temporary disks and the
    // snapshots of an image are not kept.
    assert!(!vm_created(&f), "a VM was created");
    assert_eq!(f.sim.names(WORK, "df-"), Vec::<String>::new(), "left in the work group");

    // Each destination's points are named by their version and hold it.
    for dest in [1u32, 2] {
        let pts = f.json(&["points", "golden", "--dest", &dest.to_string(), "--json"]);
        let by_gen = |g: u64| pts["os"].as_array().unwrap().iter().find(|p| p["generation"] == g).cloned().unwrap();
        assert_eq!(by_gen(1)["version"], "1.0.0", "{pts}");
        assert_eq!(by_gen(2)["version"], "1.0.1", "{pts}");
        for (g, os, data) in [(1, &os1, &data1), (2, &os2, &data2)] {
            let dir = import(&f.coord, "golden", dest, g);
            assert!(identical(os, &dir.join("os.vhd")), "destination {dest} generation {g}: os differs");
            assert!(identical(data, &dir.join("lun0.vhd")), "destination {dest} generation {g}: lun0 differs");
        }
    }

    // Published at the second destination as a gallery image version in
    // its region: a gallery elsewhere is refused before anything is made.
    let account = f.storage_account(); // northeurope
    let out = f.cmd(&[
        "publish",
        "golden",
        "--dest",
        "2",
        "--point",
        "1.0.0",
        "--gallery",
        &gallery,
        "--image-definition",
        "ubuntu-golden",
        "--storage-account",
        account,
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("in westeurope"), "{}", String::from_utf8_lossy(&out.stderr));
    let dr = f.sim.add_gallery("dr", "golden-dr", "northeurope");
    f.sim.add_image_definition(&dr, "ubuntu-golden", "Linux");
    let p = f.json(&[
        "publish",
        "golden",
        "--dest",
        "2",
        "--point",
        "1.0.0",
        "--gallery",
        &dr,
        "--image-definition",
        "ubuntu-golden",
        "--storage-account",
        account,
        "--json",
    ]);
    let id = p["id"].as_str().unwrap();
    assert!(id.ends_with("/images/ubuntu-golden/versions/1.0.0"), "{p}");
    let v = f.sim.resource(id).unwrap();
    assert_eq!(v["location"], "northeurope", "{v}");
    assert_eq!(v["properties"]["provisioningState"], "Succeeded", "{v}");
    let sp = &v["properties"]["storageProfile"];
    let blob = |disk: &str| p["disks"].as_array().unwrap().iter().find(|d| d["disk"] == disk).unwrap()["blob"].clone();
    assert_eq!(sp["osDiskImage"]["source"]["uri"], blob("os"), "{v}");
    assert_eq!(sp["osDiskImage"]["source"]["storageAccountId"], account, "{v}");
    assert_eq!(sp["dataDiskImages"][0]["lun"], 0, "{v}");
    assert_eq!(sp["dataDiskImages"][0]["source"]["uri"], blob("lun0"), "{v}");
    assert!(blob("os").as_str().unwrap().contains(&dest2.rsplit('/').next().unwrap().to_owned()), "{p}");
    // The version holds version 1.0.0 as published: what the simulator read from the promoted blobs.
    let same =
        |a: &Path, b: &Path| std::process::Command::new("cmp").arg("-s").arg(a).arg(b).status().unwrap().success();
    assert!(same(&f.sim.image_file(id, None).unwrap(), &os1), "the published OS disk image differs from 1.0.0");
    assert!(same(&f.sim.image_file(id, Some(0)).unwrap(), &data1), "the published data disk image differs from 1.0.0");
    // Or a point as managed disks in the destination's region, as import makes them.
    let made = f.json(&[
        "publish",
        "golden",
        "--dest",
        "2",
        "--point",
        "1.0.1",
        "--to",
        "azure:dr",
        "--storage-account",
        account,
        "--json",
    ]);
    let made = made.as_array().unwrap();
    assert_eq!(made.len(), 2, "{made:?}");
    for m in made {
        assert_eq!(m["generation"], 2, "{m}");
        let disk = f.sim.resource(m["path"].as_str().unwrap()).unwrap();
        assert_eq!(disk["location"], "northeurope", "{disk}");
        assert_eq!(disk["properties"]["creationData"]["createOption"], "Import", "{disk}");
    }
    assert!(f.sim.with(|s| s.refused.is_empty()), "bodies refused: {:?}", f.sim.with(|s| s.refused.clone()));
}

#[test]
fn a_disk_and_a_snapshot_are_read_with_no_vm() {
    let f = Fixture::new("disksrc");
    // The source VM's data disk, on its own.
    let disk = armsim_disk("prod", "web1-data0");
    let out = f.cmd(&["replica", "create", "d", "--disk", &disk, "--to", &f.dest]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r1 = f.json(&["run", "d", "--json"]);
    assert_eq!(r1["run"]["status"], "succeeded", "{r1}");
    assert_eq!(r1["run"]["placement"], "here", "{r1}");
    poke(&f.data, 5 * MIB, MIB, 77);
    let r2 = f.json(&["run", "d", "--json"]);
    assert_eq!(r2["run"]["status"], "succeeded", "{r2}");
    let d = &disk_results(&r2, "disk")[0];
    assert!(d["bytes_written"].as_u64().unwrap() <= MIB, "{d}");
    // The disk's snapshot is kept (the next run diffs against it): it read only what changed.
    assert!(d["bytes_read"].as_u64().unwrap() <= 2 * MIB, "the kept snapshot's diff was not used: {d}");
    let dir = import(&f.coord, "d", 1, 2);
    assert!(identical(&f.data, &dir.join("disk.vhd")), "the disk's point differs from it");
    assert_eq!(f.sim.names(WORK, "df-").len(), 1, "one kept snapshot: {:?}", f.sim.names(WORK, "df-"));

    // A snapshot: a user's, of the OS disk.
    let snap = format!(
        "/subscriptions/{}/resourceGroups/prod/providers/Microsoft.Compute/snapshots/web1-os-golden",
        common::armsim::SUB
    );
    let frozen = f.coord.path().join("web1-os-golden.img");
    std::fs::copy(&f.os, &frozen).unwrap();
    f.sim.with(|s| {
        s.resources.insert(
            snap.to_ascii_lowercase(),
            serde_json::json!({"id": snap, "name": "web1-os-golden", "type": "Microsoft.Compute/snapshots",
                "location": "westeurope", "sku": {"name": "Standard_LRS"},
                "properties": {"osType": "Linux", "diskSizeBytes": 40 * MIB, "provisioningState": "Succeeded",
                               "incremental": false, "snapshotAccessState": "Available"}}),
        );
        s.files.insert(snap.to_ascii_lowercase(), frozen.clone());
    });
    let out = f.cmd(&["replica", "create", "s", "--snapshot", &snap, "--to", &f.dest]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Its temporary disk cannot be deleted: the run fails, the disk stays,
    // recorded, and the next run deletes it before its own.
    f.fail_next("DELETE", "/disks/df-", "OperationNotAllowed", Some(409));
    let out = f.cmd(&["run", "s", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let failed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(failed["run"]["error"].as_str().unwrap().contains("deleting the temporary disk"), "{failed}");
    let staged = |f: &Fixture| f.sim.names(WORK, "df-").into_iter().filter(|n| n.contains("-src-")).count();
    assert_eq!(staged(&f), 1, "{:?}", f.sim.names(WORK, "df-"));
    let r = f.json(&["run", "s", "--json"]);
    assert_eq!(r["run"]["status"], "succeeded", "{r}");
    assert_eq!(staged(&f), 0, "{:?}", f.sim.names(WORK, "df-"));
    let dir = import(&f.coord, "s", 1, 1);
    assert!(identical(&frozen, &dir.join("os.vhd")), "the snapshot's point differs from it");
    assert!(f.sim.resource(&snap).is_some(), "the user's snapshot must stay");
    assert_eq!(
        f.sim.names(WORK, "df-").len(),
        1,
        "only the disk replica's kept snapshot: {:?}",
        f.sim.names(WORK, "df-")
    );

    // A managed image (no versions of its own: a run's --version labels it).
    let image = f.sim.add_managed_image("prod", "web1-image", "westeurope", &f.os, &[(1, &f.data)]);
    let out = f.cmd(&["replica", "create", "m", "--image", &image, "--to", &f.dest]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r = f.json(&["run", "m", "--version", "2026-12-08", "--json"]);
    assert_eq!(r["run"]["status"], "succeeded", "{r}");
    assert_eq!(r["run"]["version"], "2026-12-08", "{r}");
    let dir = import(&f.coord, "m", 1, 1);
    assert!(identical(&f.os, &dir.join("os.vhd")) && identical(&f.data, &dir.join("lun1.vhd")));
    let made = f.bodies("/disks/df-");
    assert!(made.iter().any(|b| b["properties"]["creationData"]["imageReference"]["lun"] == 1), "{made:?}");
    assert_eq!(f.sim.names(WORK, "df-").len(), 1, "{:?}", f.sim.names(WORK, "df-"));
    assert!(!vm_created(&f), "a VM was created");
    assert!(f.sim.with(|s| s.refused.is_empty()), "bodies refused: {:?}", f.sim.with(|s| s.refused.clone()));
}

fn armsim_disk(rg: &str, name: &str) -> String {
    common::armsim::disk_id(rg, name)
}

#[test]
fn a_local_image_file_is_synced_per_version_to_two_folders() {
    let c = Coord::new(false);
    let img = c.path().join("golden.img");
    make_disk(&img, 128 * MIB, &[(0, 24 * MIB), (90 * MIB, 8 * MIB)], 5);
    let (a, b) = (c.path().join("a"), c.path().join("b"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    let to = |d: &Path| format!("file:{}", d.display());
    let out = c.run(&["replica", "create", "g", "--image", img.to_str().unwrap(), "--to", &to(&a), "--to", &to(&b)]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r1 = c.json(&["run", "g", "--version", "2026.12.1", "--json"]);
    assert_eq!(r1["run"]["version"], "2026.12.1", "{r1}");
    poke(&img, 4 * MIB, 2 * MIB, 9);
    poke(&img, 60 * MIB, MIB, 10);
    let r2 = c.run(&["run", "g", "--version", "2026.12.2"]);
    let said = String::from_utf8_lossy(&r2.stdout);
    assert!(r2.status.success(), "{}", String::from_utf8_lossy(&r2.stderr));
    // The report: what was sent against the image's size, per destination.
    for dest in [1, 2] {
        assert!(
            said.contains(&format!("dest {dest}: sent 3.00 MiB of 128.00 MiB (2.34% of the source's size)")),
            "{said}"
        );
    }
    assert!(said.contains("version: 2026.12.2"), "{said}");
    for dest in ["1", "2"] {
        let pts = c.json(&["points", "g", "--dest", dest, "--json"]);
        assert_eq!(pts["os"].as_array().unwrap().last().unwrap()["version"], "2026.12.2", "{pts}");
    }
    assert!(identical(&img, &a.join("g/os.vhd")) && identical(&img, &b.join("g/os.vhd")));
    // Nothing of the image is kept here between versions.
    let kept: Vec<_> = common::walk(&c.path().join("state/snapshots")).into_iter().filter(|p| p.is_file()).collect();
    assert!(kept.is_empty(), "{kept:?}");
    // A version is a label of letters, digits, '.', '-', '_'; a VM has none.
    let out = c.run(&["run", "g", "--version", "../x"]);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
}
