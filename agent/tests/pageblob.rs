//! End to end on a real Azurite: `sync --to pageblob:`, recovery points,
//! `download` judged by qemu-img, `verify`, resume after SIGKILL, bad input.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::azurite;
use common::*;
use diskferry_testkit::proxy::Proxy;

fn agent_env() -> Command {
    let mut c = agent();
    c.env("AZURE_STORAGE_CONNECTION_STRING", azurite::connection_string());
    c.env_remove("AZURE_STORAGE_KEY");
    c
}

fn run_env(args: &[&str]) -> Output {
    agent_env().args(args).output().unwrap()
}

fn json_env(args: &[&str]) -> serde_json::Value {
    let out = run_env(args);
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn sync(src: &Path, dest: &str, extra: &[&str]) -> serde_json::Value {
    let mut a = vec!["sync", src.to_str().unwrap(), "--to", dest, "--json", "--create-container"];
    a.extend_from_slice(extra);
    json_env(&a)
}

/// Download point `g` and compare it with `raw` using qemu-img.
fn point_equals(dest: &str, g: u64, raw: &Path, dir: &Path) -> bool {
    let out = dir.join(format!("dl-{g}.vhd"));
    json_env(&["download", dest, "--point", &g.to_string(), "--to", out.to_str().unwrap(), "--json"]);
    let same = identical(raw, &out);
    let _ = std::fs::remove_file(&out);
    same
}

#[test]
fn first_and_incremental_syncs_make_exact_recovery_points() {
    let d = tempfile::tempdir().unwrap();
    let ep = azurite::endpoint();
    let dest = azurite::url(ep, &azurite::container("incremental"), "vm1/disk0.vhd");
    let src = d.path().join("disk.img");
    make_image(&src, 40 * MIB + 1024, &[(0, 3 * MIB, 1), (10 * MIB, 4 * MIB, 2), (40 * MIB, 1024, 3)]);
    let v1 = d.path().join("v1.img");
    std::fs::copy(&src, &v1).unwrap();

    let r1 = sync(&src, &dest, &[]);
    assert_eq!((r1["generation"].as_u64(), r1["full_sync"].as_bool()), (Some(1), Some(true)));
    // Only non-zero chunks travel: 3 + 4 + 1 chunks, the last one 1 KiB, plus the footer.
    assert_eq!(r1["wire"]["bytes_sent"].as_u64().unwrap(), 7 * MIB + 1024 + 512);

    // Change 3 chunks, zero 2.
    poke(&src, 20 * MIB, 4096, 4);
    poke(&src, 11 * MIB + 512, 512, 5);
    poke(&src, 25 * MIB, MIB, 6);
    poke(&src, MIB, 2 * MIB, 0);
    let r2 = sync(&src, &dest, &[]);
    assert_eq!((r2["generation"].as_u64(), r2["full_sync"].as_bool()), (Some(2), Some(false)));
    assert_eq!(r2["chunks_written"], 3);
    assert_eq!(r2["chunks_cleared"], 2);
    // Bytes sent = the changed non-zero chunks (the footer of generation 1
    // stays); zeroed chunks cost one clear, no data.
    assert_eq!(r2["wire"]["bytes_sent"].as_u64().unwrap(), 3 * MIB);
    assert_eq!(r2["wire"]["clear_requests"].as_u64().unwrap(), 1, "adjacent cleared chunks share one Clear Pages");

    let points = json_env(&["points", &dest, "--json"]);
    assert_eq!(points.as_array().unwrap().len(), 2);
    assert!(point_equals(&dest, 1, &v1, d.path()));
    assert!(point_equals(&dest, 2, &src, d.path()));
    let v = json_env(&["verify", src.to_str().unwrap(), "--against", &dest, "--json"]);
    assert_eq!(v["identical"], true);
    let v1r = run_env(&["verify", src.to_str().unwrap(), "--against", &dest, "--point", "1", "--json"]);
    assert_eq!(v1r.status.code(), Some(6), "verify must fail against the older point");
    let body: serde_json::Value = serde_json::from_slice(&v1r.stdout).unwrap();
    assert_eq!(body["mismatches"].as_array().unwrap().len(), 5);
}

#[test]
fn keep_trims_old_recovery_points() {
    let d = tempfile::tempdir().unwrap();
    let dest = azurite::url(azurite::endpoint(), &azurite::container("keep"), "d.vhd");
    let src = d.path().join("disk.img");
    make_image(&src, 4 * MIB, &[(0, MIB, 1)]);
    for g in 1..=4u64 {
        poke(&src, MIB, 512, 10 + g);
        sync(&src, &dest, &["--keep", "2"]);
    }
    let points = json_env(&["points", &dest, "--json"]);
    let gens: Vec<u64> = points.as_array().unwrap().iter().map(|p| p["generation"].as_u64().unwrap()).collect();
    assert_eq!(gens, vec![3, 4]);
    assert!(point_equals(&dest, 4, &src, d.path()));
    let gone = run_env(&["download", &dest, "--point", "1", "--to", d.path().join("x.vhd").to_str().unwrap()]);
    assert_eq!(gone.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&gone.stderr).contains("no recovery point 1"));
}

#[test]
fn source_growth_needs_force_and_then_resizes() {
    let d = tempfile::tempdir().unwrap();
    let dest = azurite::url(azurite::endpoint(), &azurite::container("resize"), "d.vhd");
    let src = d.path().join("disk.img");
    make_image(&src, 6 * MIB + 512, &[(0, MIB, 1), (6 * MIB, 512, 2)]);
    sync(&src, &dest, &[]);
    std::fs::OpenOptions::new().write(true).open(&src).unwrap().set_len(12 * MIB).unwrap();
    poke(&src, 9 * MIB, MIB, 3);
    let refused = run_env(&["sync", src.to_str().unwrap(), "--to", &dest]);
    assert_eq!(refused.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--force"));
    let r = sync(&src, &dest, &["--force"]);
    assert_eq!(r["full_sync"], false);
    assert!(point_equals(&dest, 2, &src, d.path()));
    // Shrink, cutting data: padding must read as zero.
    std::fs::OpenOptions::new().write(true).open(&src).unwrap().set_len(9 * MIB + 4096).unwrap();
    sync(&src, &dest, &["--force"]);
    assert!(point_equals(&dest, 3, &src, d.path()));
}

/// SIGKILL the agent at 10 moments of one sync; rerun each time. The result
/// is identical and the total bytes sent stay under 1.3x a clean sync's.
#[test]
fn killed_syncs_resume_without_resending() {
    let d = tempfile::tempdir().unwrap();
    let ep = azurite::endpoint();
    let port: u16 = ep.rsplit(':').next().unwrap().parse().unwrap();
    let src = d.path().join("disk.img");
    // 512 MiB of data: each kill may cost the writes in flight (at most
    // concurrency x 4 MiB) and the acks of the last 25 ms.
    let extents: Vec<(u64, u64, u64)> = (0..256).map(|i| (i * 4 * MIB + (i % 3) * 4096, 2 * MIB, 500 + i)).collect();
    make_image(&src, 1024 * MIB, &extents);

    // A clean sync through a counting proxy: the reference.
    let clean = Proxy::counting(port);
    let cdest = azurite::url(&format!("http://127.0.0.1:{}", clean.port), &azurite::container("clean"), "d.vhd");
    let t = Instant::now();
    sync(&src, &cdest, &["--concurrency", "2"]);
    let clean_secs = t.elapsed().as_secs_f64();
    let clean_bytes = clean.bytes_up();
    // Hundreds of requests over a few kept-alive connections, not one each
    // (256 Put Pages, plus journal and control requests).
    assert!(clean.connections() <= 8, "{} connections for one sync", clean.connections());

    let proxy = Proxy::counting(port);
    let dest = azurite::url(&format!("http://127.0.0.1:{}", proxy.port), &azurite::container("killed"), "d.vhd");
    let mut killed = 0;
    for k in 0..10u64 {
        let mut child = agent_env()
            // Each run knows the one before was killed: it breaks the
            // lease that one left instead of waiting for it to lapse.
            .args([
                "sync",
                src.to_str().unwrap(),
                "--to",
                &dest,
                "--create-container",
                "--concurrency",
                "2",
                "--break-lease",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Ten kills spread over about 70% of a clean run's time, at
        // pseudo-random but reproducible moments.
        let frac = ((k * 37 + 11) % 100) as f64 / 100.0;
        std::thread::sleep(Duration::from_secs_f64(clean_secs * 0.07 * (0.5 + frac)));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            killed += 1;
        }
        child.wait().unwrap();
    }
    let r = sync(&src, &dest, &["--concurrency", "2", "--break-lease"]);
    assert!(killed >= 8, "only {killed} runs were killed mid-sync (clean sync took {clean_secs:.2} s)");
    let v = json_env(&["verify", src.to_str().unwrap(), "--against", &dest, "--json"]);
    assert_eq!(v["identical"], true, "{v}");
    let total = proxy.bytes_up();
    eprintln!(
        "kill test: {killed} kills, {total} bytes sent in all vs {clean_bytes} clean ({:.3}x), clean sync {clean_secs:.2} s",
        total as f64 / clean_bytes as f64
    );
    assert!(
        (total as f64) < 1.3 * clean_bytes as f64,
        "{killed} kills: {total} bytes sent in all vs {clean_bytes} for a clean sync ({:.2}x); last run {r}",
        total as f64 / clean_bytes as f64
    );
}

#[test]
fn a_destination_that_is_not_ours_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let ep = azurite::endpoint();
    let c = azurite::container("notours");
    let src = d.path().join("disk.img");
    make_image(&src, 2 * MIB, &[(0, MIB, 1)]);
    // Another tool's page blob of the same name.
    let other = azurite::url(ep, &c, "other.vhd");
    sync(&src, &other, &[]);
    let store_url = format!("{ep}/{}/{c}/d.vhd", azurite::ACCOUNT);
    // Copy it under a new name without our metadata: upload a plain page blob with curl-free means:
    // sync to it, then strip the metadata through the library.
    let dest = azurite::url(ep, &c, "d.vhd");
    sync(&src, &dest, &[]);
    strip_metadata(&store_url);
    let out = run_env(&["sync", src.to_str().unwrap(), "--to", &dest]);
    assert_eq!(out.status.code(), Some(4));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not written by diskferry") && err.contains("--force"), "{err}");
    let r = sync(&src, &dest, &["--force"]);
    assert_eq!(r["full_sync"], true);
}

fn strip_metadata(blob_url: &str) {
    use diskferry_blob::address::BlobAddress;
    use diskferry_blob::azure::AzureStore;
    use diskferry_blob::PageStore;
    std::env::set_var("AZURE_STORAGE_CONNECTION_STRING", azurite::connection_string());
    let addr = BlobAddress::parse(blob_url).unwrap();
    let store = AzureStore::connect(addr.clone(), None).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(store.set_metadata(&addr.blob, Default::default(), None)).unwrap();
}

#[test]
fn bad_credentials_and_missing_things_fail_clearly_without_leaking() {
    let d = tempfile::tempdir().unwrap();
    let ep = azurite::endpoint();
    let c = azurite::container("badauth");
    let src = d.path().join("disk.img");
    make_image(&src, 2 * MIB, &[(0, MIB, 1)]);
    let dest = azurite::url(ep, &c, "d.vhd");

    // Container missing, no --create-container.
    let out = run_env(&["sync", src.to_str().unwrap(), "--to", &dest]);
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--create-container"));
    sync(&src, &dest, &[]);

    // A wrong account key: 403, one line, no key in it.
    let wrong = "AAAAbm90IHRoZSBrZXkgYXQgYWxsLCBqdXN0IHNvbWUgYnl0ZXM=";
    let out = agent()
        .env("AZURE_STORAGE_CONNECTION_STRING", format!("AccountName={};AccountKey={wrong};", azurite::ACCOUNT))
        .args(["sync", src.to_str().unwrap(), "--to", &dest])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(err.contains("403") && err.contains("access denied"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(!err.contains(wrong) && !err.contains("sig="), "{err}");

    // A SAS with a bad signature, and an expired one: 403, signature redacted.
    use diskferry_blob::sas::AccountKey;
    let key = AccountKey::new(azurite::ACCOUNT, azurite::KEY);
    let good = key.container_sas(&c, time::OffsetDateTime::now_utc()).unwrap();
    let sig = good.split("sig=").nth(1).unwrap().to_owned();
    let tampered = good.replace(&sig, "AAAA%2BBBBB");
    let expired = key.container_sas(&c, time::OffsetDateTime::now_utc() - time::Duration::days(2)).unwrap();
    let expired_sig = expired.split("sig=").nth(1).unwrap().to_owned();
    for (q, secret) in [(tampered, "AAAA%2BBBBB".to_owned()), (expired, expired_sig)] {
        let with_sas = format!("{dest}?{q}");
        let out = agent()
            .env_remove("AZURE_STORAGE_CONNECTION_STRING")
            .args(["sync", src.to_str().unwrap(), "--to", &with_sas])
            .output()
            .unwrap();
        let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert_eq!(out.status.code(), Some(4), "{all}");
        assert!(all.contains("403"), "{all}");
        assert!(!all.contains(&secret), "a SAS signature leaked: {all}");
    }
    // The good SAS works, and its signature is not printed either.
    let out = agent()
        .env_remove("AZURE_STORAGE_CONNECTION_STRING")
        .args(["sync", src.to_str().unwrap(), "--to", &format!("{dest}?{good}"), "--json"])
        .output()
        .unwrap();
    let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{all}");
    assert!(!all.contains(&sig), "{all}");
}

#[test]
fn storage_that_is_down_gives_up_after_bounded_retries() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("disk.img");
    make_image(&src, 2 * MIB, &[(0, MIB, 1)]);
    let port = azurite::free_port();
    let dest = azurite::url(&format!("http://127.0.0.1:{port}"), "c", "d.vhd");
    let t = Instant::now();
    let out = run_env(&["sync", src.to_str().unwrap(), "--to", &dest, "--retry-for", "3"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(err.contains("gave up after"), "{err}");
    assert!(t.elapsed() < Duration::from_secs(30));
}

#[test]
fn loop_device_to_page_blob() {
    let d = tempfile::tempdir().unwrap();
    let img = d.path().join("disk.img");
    make_image(&img, 24 * MIB, &[(MIB, 2 * MIB, 1), (20 * MIB, MIB, 2)]);
    let Some(dev) = loop_device(&img, "loop_device_to_page_blob") else { return };
    let dest = azurite::url(azurite::endpoint(), &azurite::container("loop"), "d.vhd");
    let r = sync(Path::new(&dev.0), &dest, &[]);
    assert_eq!(r["chunks_written"], 3);
    assert!(point_equals(&dest, 1, &img, d.path()));
}

/// 503 Server Busy with Retry-After is retried (and honoured), and the sync
/// still ends identical.
#[test]
fn busy_storage_is_retried_honouring_retry_after() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("disk.img");
    make_image(&src, 8 * MIB, &[(0, 2 * MIB, 1), (5 * MIB, MIB, 2)]);
    let port: u16 = azurite::endpoint().rsplit(':').next().unwrap().parse().unwrap();
    let busy = Proxy::refusing(port, 3);
    let dest = azurite::url(&format!("http://127.0.0.1:{}", busy.port), &azurite::container("busy"), "d.vhd");
    let t = Instant::now();
    let r = sync(&src, &dest, &[]);
    assert!(busy.refused() == 3);
    assert!(r["wire"]["retries"].as_u64().unwrap() >= 3, "{r}");
    assert!(t.elapsed() >= Duration::from_secs(3), "Retry-After: 1 was not honoured ({:?})", t.elapsed());
    assert!(point_equals(&dest, 1, &src, d.path()));
}
