//! Through the strict proxy (`diskferry_testkit::proxy::Strict`) in front
//! of Azurite: the limits Azure enforces and Azurite does not — the journal
//! past an append blob's block limit, a sync that outlives its SAS, a blob's
//! ingress target answered with 503 ServerBusy, a disk over 8 TiB.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::azurite;
use common::*;
use diskferry_testkit::proxy::{Proxy, Strict};

fn agent_env() -> Command {
    let mut c = agent();
    c.env("AZURE_STORAGE_CONNECTION_STRING", azurite::connection_string());
    c.env_remove("AZURE_STORAGE_KEY");
    c
}

fn azurite_port() -> u16 {
    azurite::endpoint().rsplit(':').next().unwrap().parse().unwrap()
}

fn dest(proxy: &Proxy, test: &str) -> String {
    azurite::url(&proxy.endpoint(), &azurite::container(test), "d.vhd")
}

fn sync(src: &Path, dest: &str, extra: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = agent_env();
    c.args(["sync", src.to_str().unwrap(), "--to", dest, "--json", "--create-container"]).args(extra);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn ok(out: &Output) -> serde_json::Value {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn identical(src: &Path, dest: &str, extra: &[&str]) {
    let v =
        agent_env().args(["verify", src.to_str().unwrap(), "--against", dest, "--json"]).args(extra).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&v.stdout).unwrap();
    assert_eq!(v["identical"], true, "{v}");
}

#[test]
fn the_journal_goes_on_past_an_append_blobs_block_limit() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("disk.img");
    let extents: Vec<(u64, u64, u64)> = (0..96).map(|i| (i * MIB, MIB / 2, 10 + i)).collect();
    make_image(&src, 128 * MIB, &extents);
    // Three blocks an append blob: the journal of any sync needs more.
    let proxy = Proxy::strict(azurite_port(), Strict { append_blocks: 3, ..Strict::default() });
    let to = dest(&proxy, "blocklimit");
    let r = ok(&sync(&src, &to, &["--concurrency", "2"], &[]));
    assert_eq!(r["generation"], 1, "{r}");
    assert!(proxy.strict_refused() >= 1, "the journal never met the limit");
    identical(&src, &to, &[]);
    // A sync killed mid-way leaves a journal of segments; the rerun reads
    // them all and goes on in a segment of its own.
    for i in 0..96u64 {
        poke(&src, i * MIB + 4096, 8192, 500 + i);
    }
    let mut child = agent_env()
        .args(["sync", src.to_str().unwrap(), "--to", &to, "--concurrency", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(400));
    let killed = child.try_wait().unwrap().is_none();
    child.kill().unwrap();
    child.wait().unwrap();
    let r = ok(&sync(&src, &to, &["--break-lease"], &[]));
    assert_eq!(r["generation"], 2, "{r}");
    if killed {
        assert!(r["chunks_suspect"].as_u64().unwrap() + r["chunks_unchanged"].as_u64().unwrap() > 0, "{r}");
    }
    identical(&src, &to, &[]);
    // Nothing of the journal is left.
    let ls = agent_env().args(["points", &to, "--json"]).output().unwrap();
    assert!(ls.status.success());
}

#[test]
fn a_sync_longer_than_its_sas_renews_it() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("disk.img");
    make_image(&src, 64 * MIB, &[(0, 40 * MIB, 3)]);
    // 40 MiB at 2.5 MiB/s per blob: about 16 s, past a 12-second SAS.
    let strict = Strict { blob_bytes_per_sec: 5 << 19, ..Strict::default() };
    let proxy = Proxy::strict(azurite_port(), strict);
    let to = dest(&proxy, "sasrenew");
    let t = Instant::now();
    let out = sync(&src, &to, &[], &[("DISKFERRY_SAS_LIFETIME_SECS", "12")]);
    let r = ok(&out);
    assert!(t.elapsed() > Duration::from_secs(13), "the sync ended before its first SAS expired: {:?}", t.elapsed());
    assert_eq!(proxy.strict_refused(), 0, "an expired SAS was sent");
    assert_eq!(r["generation"], 1);
    identical(&src, &to, &[]);
}

#[test]
fn a_blob_over_its_ingress_target_slows_the_sync_down_and_it_finishes() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("disk.img");
    make_image(&src, 64 * MIB, &[(0, 48 * MIB, 5)]);
    // 8 MiB/s for the blob, 16 writes of 4 MiB at once: far over it.
    let strict = Strict { blob_bytes_per_sec: 8 << 20, ..Strict::default() };
    let proxy = Proxy::strict(azurite_port(), strict);
    let to = dest(&proxy, "ingress");
    let status = d.path().join("status.json");
    let out = sync(&src, &to, &["--concurrency", "16", "--status-file", status.to_str().unwrap()], &[]);
    let r = ok(&out);
    let wire = &r["wire"];
    assert!(proxy.busy() > 0, "the proxy never pushed back");
    assert!(wire["throttled"].as_u64().unwrap() > 0, "{r}");
    assert!(wire["concurrency"].as_u64().unwrap() < 16, "the pacer never slowed down: {r}");
    identical(&src, &to, &[]);
    let rejected = proxy.busy() as f64 / proxy.requests() as f64;
    eprintln!(
        "ingress 8 MiB/s: {} of {} requests answered 503 ({:.1}%), concurrency at the end {}",
        proxy.busy(),
        proxy.requests(),
        100.0 * rejected,
        wire["concurrency"]
    );
}

#[test]
fn a_disk_over_8_tib_is_refused_before_any_request() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("huge.img");
    let f = std::fs::File::create(&src).unwrap();
    if f.set_len(8 << 40).is_err() {
        eprintln!("skipped: this filesystem cannot hold an 8 TiB sparse file");
        return;
    }
    let proxy = Proxy::strict(azurite_port(), Strict::default());
    let to = dest(&proxy, "huge");
    let out = sync(&src, &to, &[], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(err.contains("8 TiB"), "{err}");
    assert_eq!(proxy.requests(), 0, "requests were sent");
}

#[test]
fn a_premium_page_blob_account_is_refused_before_any_write() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("disk.img");
    make_image(&src, 16 * MIB, &[(0, MIB, 9)]);
    let proxy = Proxy::strict(azurite_port(), Strict { premium: true, ..Strict::default() });
    let to = dest(&proxy, "premium");
    let out = sync(&src, &to, &[], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(err.contains("premium page blob account") && err.contains("standard"), "{err}");
    // Only the question was asked: no container, no blob, no journal.
    assert_eq!(proxy.requests(), 1, "requests were sent after the answer");
    assert_eq!(proxy.strict_refused(), 0);
}

#[test]
fn a_premium_destination_keeps_its_state_in_a_standard_container() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("disk.img");
    make_image(&src, 16 * MIB, &[(0, MIB, 9), (5 * MIB, 2 * MIB, 10)]);
    // Premium behind the proxy (page blobs only; one snapshot a blob every
    // 3 s here, 10 minutes on Azure); the state in a container reached
    // without it, as a standard account would be.
    let every = Duration::from_secs(3);
    let proxy = Proxy::strict(azurite_port(), Strict { premium: true, snapshot_interval: every, ..Strict::default() });
    let to = dest(&proxy, "premium-data");
    let state = format!("{}/{}/{}/under", azurite::endpoint(), azurite::ACCOUNT, azurite::container("premium-state"));
    let short = [("DISKFERRY_SNAPSHOT_INTERVAL_SECS", "3")];
    let out = ok(&sync(&src, &to, &["--state-url", &state], &short));
    assert_eq!(out["generation"], 1, "{out}");
    assert_eq!(proxy.strict_refused(), 0, "a block or append blob went to the premium account");

    // Readers are told where the state is; given it, they read the point.
    let points = |extra: &[&str]| agent_env().args(["points", &to, "--json"]).args(extra).output().unwrap();
    let lost = points(&[]);
    let err = String::from_utf8_lossy(&lost.stderr);
    assert_eq!(lost.status.code(), Some(4), "{err}");
    assert!(err.contains("--state-url") && err.contains("/under"), "{err}");
    let listed: serde_json::Value = serde_json::from_slice(&points(&["--state-url", &state]).stdout).unwrap();
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    identical(&src, &to, &["--state-url", &state]);

    // Another sync within the snapshot interval is refused before it
    // writes: the snapshot that ends it would be.
    make_image(&src, 16 * MIB, &[(0, MIB, 11), (5 * MIB, 2 * MIB, 10)]);
    let pages_before = proxy.page_writes().0;
    let soon = sync(&src, &to, &["--state-url", &state], &short);
    let err = String::from_utf8_lossy(&soon.stderr);
    assert_eq!(soon.status.code(), Some(4), "{err}");
    assert!(err.contains("one snapshot every"), "{err}");
    assert_eq!(proxy.page_writes().0, pages_before, "pages were written before the refusal");
    assert_eq!(proxy.strict_refused(), 0, "the proxy had to refuse the snapshot");
    // More points kept than a premium blob has snapshots: refused too.
    let many = sync(&src, &to, &["--state-url", &state, "--keep", "100"], &short);
    assert_eq!(many.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&many.stderr).contains("keep at most 99"));

    std::thread::sleep(every);
    let out = ok(&sync(&src, &to, &["--state-url", &state], &short));
    assert_eq!(out["generation"], 2, "{out}");
    identical(&src, &to, &["--state-url", &state]);
    // A state URL other than the one it was written with is refused.
    let other = format!("{}/{}/{}", azurite::endpoint(), azurite::ACCOUNT, azurite::container("premium-other"));
    let wrong = sync(&src, &to, &["--state-url", &other], &short);
    assert_eq!(wrong.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("keeps its state in"));
}

/// One raw request through the proxy (plain http): its status code.
fn raw(port: u16, method: &str, path_and_query: &str, headers: &[(&str, &str)], body: &[u8]) -> u16 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut req =
        format!("{method} {path_and_query} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nx-ms-version: 2021-08-06\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!("Content-Length: {}\r\nConnection: close\r\n\r\n", body.len()));
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    // The status line is all that is needed (the proxy may keep the
    // connection open).
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut reply = Vec::new();
    let mut byte = [0u8; 1];
    while !reply.ends_with(b"\r\n") && s.read(&mut byte).unwrap_or(0) == 1 {
        reply.push(byte[0]);
    }
    let line = String::from_utf8_lossy(&reply);
    line.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
}

fn generations(points: &serde_json::Value) -> Vec<u64> {
    points.as_array().unwrap().iter().map(|p| p["generation"].as_u64().unwrap()).collect()
}

#[test]
fn a_writer_without_delete_rights_cannot_erase_history() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("disk.img");
    make_image(&src, 8 * MIB, &[(0, 2 * MIB, 1)]);
    let container = azurite::container("erase");
    // An honest writer (a role that may delete): three recovery points.
    let honest = Proxy::strict(azurite_port(), Strict::default());
    let at = |p: &Proxy| azurite::url(&p.endpoint(), &container, "d.vhd");
    let mut states = Vec::new();
    for g in 1..=3u64 {
        poke(&src, g * MIB, 4096, g);
        ok(&sync(&src, &at(&honest), &["--keep", "30"], &[]));
        let copy = d.path().join(format!("state{g}.img"));
        std::fs::copy(&src, &copy).unwrap();
        states.push(copy);
    }
    // The attacker holds the writer's credentials, whose role may not
    // delete (the worker's, as docs/azure.md sets it up).
    let evil = Proxy::strict(azurite_port(), Strict { deny_deletes: true, ..Strict::default() });
    let key = diskferry_blob::sas::AccountKey::new(azurite::ACCOUNT, azurite::KEY);
    let sas = key.container_sas(&container, time::OffsetDateTime::now_utc()).unwrap();
    let path = |blob: &str, extra: &str| format!("/{}/{container}/{blob}?{sas}{extra}", azurite::ACCOUNT);
    // 1. Delete the recovery points: their snapshots, the index.
    let listed = ok(&agent_env().args(["points", &at(&honest), "--json"]).output().unwrap());
    for p in listed.as_array().unwrap() {
        let snap = format!("&snapshot={}", p["snapshot"].as_str().unwrap());
        assert_eq!(raw(evil.port, "DELETE", &path("d.vhd", &snap), &[], b""), 403);
    }
    assert_eq!(raw(evil.port, "DELETE", &path("d.vhd.points", ""), &[], b""), 403);
    assert_eq!(raw(evil.port, "DELETE", &path("d.vhd", "&x-ms-delete-snapshots=include"), &[], b""), 403);
    let trim = agent_env().args(["points", &at(&evil), "--trim", "--keep", "1"]).output().unwrap();
    assert!(!trim.status.success(), "a trim without delete rights cannot succeed");
    // 2. Commit generation after generation (nothing changed) with --keep 1,
    // then --force a source of another size.
    for _ in 0..6 {
        ok(&sync(&src, &at(&evil), &["--keep", "1"], &[]));
    }
    let other = d.path().join("other.img");
    make_image(&other, 4 * MIB, &[(0, MIB, 9)]);
    ok(&sync(&other, &at(&evil), &["--keep", "1", "--force"], &[]));
    // 3. Overwrite the index with an empty one (writing is allowed).
    let put = raw(evil.port, "PUT", &path("d.vhd.points", ""), &[("x-ms-blob-type", "BlockBlob")], b"[]");
    assert_eq!(put, 201);
    // Every point made before the attack is still listed, from its
    // snapshot's own metadata, and downloads identical.
    let points = ok(&agent_env().args(["points", &at(&honest), "--json"]).output().unwrap());
    let gens = generations(&points);
    for g in 1..=3u64 {
        assert!(gens.contains(&g), "generation {g} is gone: {gens:?}");
        let vhd = d.path().join(format!("g{g}.vhd"));
        let out = agent_env()
            .args(["download", &at(&honest), "--point", &g.to_string(), "--to", vhd.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(diskferry_testkit::judge::identical(&states[g as usize - 1], &vhd), "generation {g} differs");
    }
    assert!(evil.strict_refused() >= 5);
    // And the next honest sync (a role that may delete) does not take the
    // poisoned index's word: what it does not name is not swept away.
    ok(&sync(&src, &at(&honest), &["--keep", "30", "--force"], &[]));
    let after = generations(&ok(&agent_env().args(["points", &at(&honest), "--json"]).output().unwrap()));
    assert!((1..=3).all(|g| after.contains(&g)), "{after:?}");
}

#[test]
fn recent_points_outlive_keep_until_the_destination_side_trims() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("disk.img");
    make_image(&src, 4 * MIB, &[(0, MIB, 1)]);
    let proxy = Proxy::strict(azurite_port(), Strict::default());
    let to = dest(&proxy, "floor");
    for g in 1..=4u64 {
        poke(&src, g * 4096, 512, g);
        ok(&sync(&src, &to, &["--keep", "1", "--min-retention", "1h"], &[]));
    }
    let points = ok(&agent_env().args(["points", &to, "--json"]).output().unwrap());
    assert_eq!(generations(&points), vec![1, 2, 3, 4], "--keep 1 deleted points younger than the floor");
    // The destination side's trim, with its own (deleting) credentials.
    let kept = ok(&agent_env().args(["points", &to, "--trim", "--keep", "2", "--json"]).output().unwrap());
    assert_eq!(generations(&kept), vec![3, 4]);
    let again = ok(&agent_env()
        .args(["points", &to, "--trim", "--keep", "1", "--min-retention", "1h", "--json"])
        .output()
        .unwrap());
    assert_eq!(generations(&again), vec![3, 4], "the floor holds for the trim too");
}
