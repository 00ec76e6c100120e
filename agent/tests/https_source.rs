//! A disk read over HTTPS from a page blob (issue 18): what a managed
//! snapshot's export is, a page blob behind a SAS for that blob alone. The
//! source blobs are written by Microsoft's Python SDK, holding only the
//! image's data extents as a snapshot holds only written pages; the VHDs
//! are qemu-img's; Azurite serves them, through a proxy that counts what
//! comes back; qemu-img judges the result.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use diskferry_testkit::proxy::Proxy;
use diskferry_testkit::pysdk::azblob;

const ACCOUNT: &str = "devstoreaccount1";

/// `raw` as a fixed VHD (its footer says the raw size), sparse as `raw` is.
fn vhd_of(raw: &Path, vhd: &Path) {
    let out = Command::new("qemu-img")
        .args(["convert", "-f", "raw", "-O", "vpc", "-o", "subformat=fixed,force_size=on"])
        .arg(raw)
        .arg(vhd)
        .output()
        .unwrap();
    assert!(out.status.success(), "qemu-img convert: {}", String::from_utf8_lossy(&out.stderr));
}

/// Upload `file`'s data extents as page blob `blob` with the Python SDK;
/// its URL at `endpoint` with a read-only SAS for it alone, and the SAS.
fn snapshot_blob(endpoint: &str, container: &str, blob: &str, file: &Path) -> (String, String) {
    let ep = azurite::endpoint();
    azblob(&["pages", ep, container, blob, file.to_str().unwrap()]);
    let sas = azblob(&["blobsas", ep, container, blob]);
    assert!(sas.contains("sr=b") && sas.contains("sig="), "{sas}");
    (format!("{endpoint}/{ACCOUNT}/{container}/{blob}?{sas}"), sas)
}

/// Bytes of `file`'s data extents, in whole 512-byte pages: what
/// `azblob.py pages` writes of it.
fn allocated(file: &Path) -> u64 {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(file).unwrap();
    let size = f.metadata().unwrap().len();
    let (fd, mut at, mut sum) = (f.as_raw_fd(), 0u64, 0u64);
    while at < size {
        // SAFETY: lseek on a descriptor this function holds open.
        let start = unsafe { libc::lseek(fd, at as libc::off_t, libc::SEEK_DATA) };
        if start < 0 {
            break;
        }
        // SAFETY: as above.
        let end = unsafe { libc::lseek(fd, start, libc::SEEK_HOLE) } as u64;
        sum += end.div_ceil(512).min(size / 512) * 512 - start as u64 / 512 * 512;
        at = end;
    }
    sum
}

fn signature(sas: &str) -> String {
    sas.split('&').find_map(|kv| kv.strip_prefix("sig=")).unwrap().to_owned()
}

#[test]
fn a_snapshot_export_syncs_first_and_incrementally_reading_only_its_written_pages() {
    let d = tempfile::tempdir().unwrap();
    let container = azurite::container("https-source");
    azblob(&["mkcontainer", azurite::endpoint(), &container]);
    let port: u16 = azurite::endpoint().rsplit(':').next().unwrap().parse().unwrap();
    let proxy = Proxy::counting(port);

    // A sparse 4 GiB disk holding 8 MiB: eight scattered 1 MiB extents.
    let raw = d.path().join("disk.raw");
    let extents: Vec<(u64, u64, u64)> = (0..8).map(|i| (i * 509 * MIB + 3 * MIB, MIB, 10 + i)).collect();
    make_image(&raw, 4096 * MIB, &extents);
    let vhd = d.path().join("g1.vhd");
    vhd_of(&raw, &vhd);
    let (url, sas) = snapshot_blob(&proxy.endpoint(), &container, "snap-1.vhd", &vhd);
    let out = d.path().join("out.vhd");
    let to = format!("file:{}", out.display());

    let before = proxy.bytes_down();
    let r = run(&["sync", &url, "--to", &to, "--json", "--source-id", "vm1/disk0"]);
    let (stdout, stderr) = (String::from_utf8_lossy(&r.stdout), String::from_utf8_lossy(&r.stderr));
    assert!(r.status.success(), "{stderr}");
    assert!(!stdout.contains(&signature(&sas)) && !stderr.contains(&signature(&sas)), "the SAS was printed");
    let r1: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    assert_eq!((r1["generation"].as_u64(), r1["full_sync"].as_bool()), (Some(1), Some(true)));
    assert_eq!(r1["disk_size"], 4096 * MIB, "the VHD footer is not part of the disk");
    assert!(identical(&raw, &out), "the copy differs from the disk");
    // What was read is what the blob holds, not 4 GiB: the pages the SDK
    // wrote (the 8 MiB, the footer, and the first 4 KiB, which qemu-img
    // wrote as zeros); the rest of the traffic is HTTP heads and the page
    // list. The scan counts the chunks that hold written pages: 9 MiB.
    let pages = allocated(&vhd);
    assert_eq!(pages, 8 * MIB + 4096 + 512, "qemu-img's VHD changed shape");
    let down = proxy.bytes_down() - before;
    assert!((pages..pages + 256 * 1024).contains(&down), "{down} bytes came back for {pages} bytes of pages");
    assert_eq!(r1["bytes_read"], 9 * MIB);

    // The next snapshot: two extents rewritten, one zeroed, one new.
    poke(&raw, 3 * MIB, MIB, 90);
    poke(&raw, 509 * MIB + 3 * MIB, MIB, 91);
    poke(&raw, 2 * 509 * MIB + 3 * MIB, MIB, 0);
    poke(&raw, 4000 * MIB, MIB, 92);
    let vhd2 = d.path().join("g2.vhd");
    vhd_of(&raw, &vhd2);
    let (url2, _) = snapshot_blob(&proxy.endpoint(), &container, "snap-2.vhd", &vhd2);
    // Its page list asked 64 MiB at a time (x-ms-range), as a fragmented
    // snapshot's must be: 64 segments, and the same ranges.
    let synced = agent()
        .args(["sync", &url2, "--to", &to, "--json", "--source-id", "vm1/disk0"])
        .env(diskferry_blob::azure::PAGE_LIST_SEGMENT_ENV, (64 * MIB).to_string())
        .output()
        .unwrap();
    assert!(synced.status.success(), "{}", String::from_utf8_lossy(&synced.stderr));
    let r2: serde_json::Value = serde_json::from_slice(&synced.stdout).unwrap();
    assert_eq!((r2["generation"].as_u64(), r2["full_sync"].as_bool()), (Some(2), Some(false)));
    assert_eq!((r2["chunks_written"].as_u64(), r2["chunks_cleared"].as_u64()), (Some(3), Some(1)));
    assert!(identical(&raw, &out), "the incremental copy differs from the disk");
}

#[test]
fn a_source_url_that_cannot_be_read_says_why_without_its_sas() {
    let d = tempfile::tempdir().unwrap();
    let container = azurite::container("https-source-bad");
    azblob(&["mkcontainer", azurite::endpoint(), &container]);
    let raw = d.path().join("disk.raw");
    make_image(&raw, 16 * MIB, &[(0, MIB, 1)]);
    let (url, sas) = snapshot_blob(azurite::endpoint(), &container, "snap.vhd", &raw);
    let sig = signature(&sas);
    let to = format!("file:{}", d.path().join("out.vhd").display());

    // A signature that does not match: refused, exit 3 (the source).
    let forged = url.replace(&sig, &format!("A{}", &sig[1..]));
    let r = run(&["sync", &forged, "--to", &to]);
    let err = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(3), "{err}");
    assert!(err.contains("cannot open source") && err.contains("403"), "{err}");
    assert!(!err.contains(&sig[1..]), "the SAS was printed: {err}");

    // A blob that is not there.
    let missing = url.replace("snap.vhd", "nothing.vhd");
    let r = run(&["sync", &missing, "--to", &to]);
    let err = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(3), "{err}");
    assert!(!err.contains(&sig), "the SAS was printed: {err}");

    // A URL clap cannot take: the message names the argument, not the value.
    let r = run(&["sync", &format!("https://?{sas}"), "--to", &to]);
    let err = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(2), "{err}");
    assert!(!err.contains(&sig), "the SAS was printed: {err}");

    // The raw disk itself (no footer) reads back whole.
    let r = run_json(&["sync", &url, "--to", &to, "--json"]);
    assert_eq!(r["disk_size"], 16 * MIB);
    assert!(identical(&raw, &d.path().join("out.vhd")));
}

#[test]
fn reads_ride_out_storage_faults_of_every_kind_and_the_copy_ends_identical() {
    use diskferry_testkit::proxy::ALL;
    let d = tempfile::tempdir().unwrap();
    let container = azurite::container("https-source-faults");
    azblob(&["mkcontainer", azurite::endpoint(), &container]);
    let port: u16 = azurite::endpoint().rsplit(':').next().unwrap().parse().unwrap();
    // Two requests in five fail, the kinds taking turns: 503s, 500s,
    // delays, resets, truncated answers, answers dropped.
    let proxy = Proxy::faulty(port, 400, &ALL, 0x5EED);
    let raw = d.path().join("disk.raw");
    // 40 pieces to read: 23 extents of 1 MiB, and 17 MiB in a row.
    let mut extents: Vec<(u64, u64, u64)> = (0..23).map(|i| (i * 3 * MIB, MIB, i + 1)).collect();
    extents.push((80 * MIB, 17 * MIB, 99));
    make_image(&raw, 128 * MIB, &extents);
    let vhd = d.path().join("disk.vhd");
    vhd_of(&raw, &vhd);
    let (url, _) = snapshot_blob(&format!("http://127.0.0.1:{}", proxy.port), &container, "snap.vhd", &vhd);
    let to = format!("file:{}", d.path().join("out.vhd").display());
    let r = run_json(&["sync", &url, "--to", &to, "--json", "--retry-for", "60"]);
    assert_eq!(r["bytes_read"], 40 * MIB);
    assert!(identical(&raw, &d.path().join("out.vhd")), "a fault reached the copy");
    assert!(proxy.summary().iter().all(|&(_, n)| n > 0), "a kind of fault never came: {:?}", proxy.summary());
}
