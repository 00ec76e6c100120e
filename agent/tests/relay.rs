//! The zstd relay end to end: real `diskferry-agent receive` processes
//! (TLS with a self-signed certificate pinned by fingerprint), a real
//! Azurite behind one of them, qemu-img as the judge; connections cut by a
//! proxy; tampered, oversized and unauthenticated requests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use diskferry_testkit::relay as relay_common;

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use bytes::Bytes;
use common::azurite;
use common::*;
use diskferry_agent::relay::client::{CallError, Client, RelayOptions};
use diskferry_agent::relay::{RelayAddress, Token};
use diskferry_core::digest::Digest;
use diskferry_core::manifest::ChunkState;
use diskferry_core::relay::window::{encode_head, WindowHeader};
use diskferry_core::relay::{clear_frame, data_frame, FrameHeader, FrameKind, HEADER_LEN};
use hyper::Method;
use relay_common::*;

fn sender(dir: &Path, args: &[&str]) -> Output {
    let mut c = agent();
    c.args(args).arg("--relay-token-file").arg(token_file(dir));
    if !args.contains(&"--retry-for") {
        c.args(["--retry-for", "20"]);
    }
    c.env("AZURE_STORAGE_CONNECTION_STRING", azurite::connection_string());
    c.output().unwrap()
}

fn json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "failed ({:?}): {}\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn download(url: &str, to: &Path) {
    let out = agent()
        .args(["download", url, "--to", to.to_str().unwrap()])
        .env("AZURE_STORAGE_CONNECTION_STRING", azurite::connection_string())
        .output()
        .unwrap();
    assert!(out.status.success(), "download: {}", String::from_utf8_lossy(&out.stderr));
}

/// A 96 MiB disk: compressible text, noise, and holes.
fn mixed_image(path: &Path) {
    make_image(path, 96 * MIB, &[(40 * MIB, 6 * MIB, 7)]);
    poke_text(path, 0, 20 * MIB, 1);
    poke_text(path, 60 * MIB, 8 * MIB + 4096, 2);
}

#[test]
fn relay_into_a_file_and_azurite_first_and_incremental_with_tls() {
    let d = tempfile::tempdir().unwrap();
    let cert = self_signed(d.path());
    let root = d.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let container = azurite::container("relay-e2e");
    let blob_root = format!("pageblob:{}/{}/{container}", azurite::endpoint(), azurite::ACCOUNT);
    let env = [("AZURE_STORAGE_CONNECTION_STRING", azurite::connection_string())];
    let to_file = Receiver::start(d.path(), &format!("file:{}", root.display()), 0, Some(&cert), &[], &[]);
    let to_blob = Receiver::start(d.path(), &blob_root, 0, Some(&cert), &env, &["--create-container"]);
    let fp = to_file.fingerprint.clone().unwrap();
    assert_eq!(to_blob.fingerprint.as_deref(), Some(fp.as_str()));
    assert!(to_file.base.starts_with("https://"));

    let src = d.path().join("disk.img");
    mixed_image(&src);
    let sync = |extra: &[&str]| {
        let mut a = vec!["sync", src.to_str().unwrap(), "--json", "--tls-fingerprint", &fp];
        let (u1, u2) = (to_file.url("web-os"), to_blob.url("web-os"));
        a.extend(["--to", &u1, "--to", &u2]);
        a.extend_from_slice(extra);
        sender(d.path(), &a)
    };
    let check = |g: u64| {
        assert!(identical(&src, &root.join("web-os.vhd")), "file root differs after generation {g}");
        let got = d.path().join(format!("blob-{g}.vhd"));
        download(&format!("{blob_root}/web-os.vhd"), &got);
        assert!(identical(&src, &got), "page blob differs after generation {g}");
    };

    let out = sync(&[]);
    let r = json(&out);
    for lane in r.as_array().unwrap() {
        let rep = &lane["report"];
        assert_eq!((rep["generation"].as_u64(), rep["full_sync"].as_bool()), (Some(1), Some(true)), "{lane}");
        let (sent, raw) = (rep["wire"]["bytes_sent"].as_u64().unwrap(), rep["wire"]["bytes_raw"].as_u64().unwrap());
        // 34 MiB of data, 28 of it text: the wire carries well under half.
        assert_eq!(raw, rep["bytes_written"].as_u64().unwrap());
        assert!(sent * 2 < raw, "wire {sent} for raw {raw}");
    }
    check(1);

    // Change text, noise, zero a chunk, write into a hole.
    poke_text(&src, 3 * MIB, 2 * MIB, 9);
    poke(&src, 41 * MIB, 4096, 10);
    poke(&src, 62 * MIB, MIB, 0);
    poke(&src, 90 * MIB, 512, 11);
    // This one says what it holds: the receiver records it in the point.
    let r = json(&sync(&["--consistency", "crash"]));
    for lane in r.as_array().unwrap() {
        let rep = &lane["report"];
        assert_eq!(rep["generation"].as_u64(), Some(2), "{lane}");
        assert_eq!(rep["full_sync"].as_bool(), Some(false), "{lane}");
        assert_eq!((rep["chunks_written"].as_u64(), rep["chunks_cleared"].as_u64()), (Some(4), Some(1)), "{lane}");
    }
    check(2);
    let pts = agent()
        .args(["points", &format!("{blob_root}/web-os.vhd"), "--json"])
        .env("AZURE_STORAGE_CONNECTION_STRING", azurite::connection_string())
        .output()
        .unwrap();
    assert!(pts.status.success(), "{}", String::from_utf8_lossy(&pts.stderr));
    let pts: serde_json::Value = serde_json::from_slice(&pts.stdout).unwrap();
    let held: Vec<&serde_json::Value> = pts.as_array().unwrap().iter().map(|p| &p["consistency"]).collect();
    assert_eq!(held, [&serde_json::Value::Null, &serde_json::json!("crash")], "{pts}");
    // The receivers counted what they applied; nothing was refused.
    assert!(to_file.metric("diskferry_receiver_raw_bytes_total", "") >= 34 * MIB);
    assert_eq!(to_file.metric("diskferry_receiver_commits_total", ""), 2);
    assert_eq!(to_file.metric("diskferry_receiver_rejects_total", ""), 0);
    assert_eq!(to_file.metric("diskferry_receiver_frames_total", "kind=\"clear\""), 1);
    // promtool judges the receiver's exposition.
    let prom = d.path().join("rx-metrics.txt");
    std::fs::write(&prom, to_file.metrics_text()).unwrap();
    let o = Command::new("promtool").args(["check", "metrics"]).stdin(std::fs::File::open(&prom).unwrap()).output();
    let o = o.expect("promtool is not installed (scripts/test.sh installs it)");
    assert!(
        o.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    // Each sync closes its session.
    assert!(diskferry_testkit::process::poll(5, || to_file.metric("diskferry_receiver_sessions_active", "") == 0));
    // No token anywhere: sender output, receiver logs, metrics.
    let logs = [
        String::from_utf8_lossy(&out.stderr).to_string(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        std::fs::read_to_string(&to_file.stderr).unwrap(),
        std::fs::read_to_string(&to_blob.stderr).unwrap(),
        to_file.metrics_text(),
    ];
    assert!(logs.iter().all(|l| !l.contains(TOKEN)));

    // A certificate other than the pinned one is refused before anything is sent.
    let other = "00:".repeat(31) + "00";
    let bad = sender(
        d.path(),
        &[
            "sync",
            src.to_str().unwrap(),
            "--to",
            &to_file.url("web-os"),
            "--tls-fingerprint",
            &other,
            "--retry-for",
            "1",
        ],
    );
    assert_eq!(bad.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("fingerprint"), "{}", String::from_utf8_lossy(&bad.stderr));
    assert!(identical(&src, &root.join("web-os.vhd")));
}

#[test]
fn connections_cut_at_random_points_and_the_sync_still_ends_identical() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let rx = Receiver::start(d.path(), &format!("file:{}", root.display()), 0, None, &[], &[]);
    let src = d.path().join("disk.img");
    // 256 MiB of noise: 8 windows of 32 MiB, big bodies to tear.
    make_image(&src, 256 * MIB, &[(0, 256 * MIB, 3)]);
    let proxy = diskferry_testkit::proxy::Proxy::cutting(rx.port, 8, 0xD15C);
    let out = sender(d.path(), &["sync", src.to_str().unwrap(), "--to", &rx.url_via(proxy.port, "d0"), "--json"]);
    let r = json(&out);
    assert!(identical(&src, &root.join("d0.vhd")));
    assert_eq!(proxy.cuts(), 8);
    assert!(r["wire"]["retries"].as_u64().unwrap() >= 4, "{r}");
    // Every window was applied once; resends after a cut were at most one
    // window per cut, and a window whose answer was lost was not sent again
    // (the sender asked first).
    assert_eq!(rx.metric("diskferry_receiver_windows_total", "outcome=\"applied\""), 8);
    let dup = rx.metric("diskferry_receiver_windows_total", "outcome=\"duplicate\"");
    assert!(dup <= 1, "{dup} windows were sent again after being applied");
    let wire = r["wire"]["bytes_sent"].as_u64().unwrap();
    assert!(proxy.bytes_up() < wire + 4 * (33 * MIB), "resent too much");

    // Incremental through the same cuts.
    poke(&src, 100 * MIB, 3 * MIB, 4);
    let proxy = diskferry_testkit::proxy::Proxy::cutting(rx.port, 6, 0xBEEF);
    let r = json(&sender(d.path(), &["sync", src.to_str().unwrap(), "--to", &rx.url_via(proxy.port, "d0"), "--json"]));
    assert_eq!((r["generation"].as_u64(), r["chunks_written"].as_u64()), (Some(2), Some(3)));
    assert!(identical(&src, &root.join("d0.vhd")));
}

#[test]
fn a_killed_sender_resumes_from_the_receivers_journal() {
    let d = tempfile::tempdir().unwrap();
    let container = azurite::container("relay-resume");
    let blob_root = format!("pageblob:{}/{}/{container}", azurite::endpoint(), azurite::ACCOUNT);
    let env = [("AZURE_STORAGE_CONNECTION_STRING", azurite::connection_string())];
    let rx = Receiver::start(d.path(), &blob_root, 0, None, &env, &["--create-container"]);
    let src = d.path().join("disk.img");
    make_image(&src, 384 * MIB, &[(0, 384 * MIB, 5)]);
    let mut c = agent();
    c.args(["sync", src.to_str().unwrap(), "--to", &rx.url("d0"), "--zstd-level", "19"])
        .arg("--relay-token-file")
        .arg(token_file(d.path()));
    let mut child = c.spawn().unwrap();
    assert!(diskferry_testkit::process::poll(60, || rx
        .metric("diskferry_receiver_windows_total", "outcome=\"applied\"")
        >= 3));
    child.kill().unwrap();
    child.wait().unwrap();
    let r = json(&sender(d.path(), &["sync", src.to_str().unwrap(), "--to", &rx.url("d0"), "--json"]));
    assert_eq!(r["full_sync_reason"].as_str(), Some("resuming an interrupted first sync"), "{r}");
    let raw = r["wire"]["bytes_raw"].as_u64().unwrap();
    assert!(raw <= 384 * MIB - 3 * 32 * MIB, "resumed sync sent {raw} bytes of 384 MiB");
    let got = d.path().join("got.vhd");
    download(&format!("{blob_root}/d0.vhd"), &got);
    assert!(identical(&src, &got));
}

/// A client of the library, for requests the CLI never makes.
fn raw_client(base: &str) -> Client {
    let opts = RelayOptions { token: Some(Token::new(TOKEN).unwrap()), ..Default::default() };
    Client::new(&RelayAddress::parse(&format!("{base}/x0")).unwrap(), &opts, Duration::from_secs(2)).unwrap()
}

fn status(r: Result<diskferry_agent::relay::client::Reply, CallError>) -> (u16, String) {
    match r {
        Ok(r) => (r.status.as_u16(), String::new()),
        Err(CallError::Status { status, reason, .. }) => (status, reason),
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn tampered_oversized_and_unauthenticated_requests_are_refused_and_change_nothing() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let rx = Receiver::start(d.path(), &format!("file:{}", root.display()), 0, None, &[], &[]);
    let c = raw_client(&rx.base);
    let call = |m: Method, p: &str, b: Vec<u8>| c.rt.block_on(c.attempt(m, p, Bytes::from(b), Duration::from_secs(30)));
    let open = serde_json::json!({"source_id": "t", "disk_size": 8 * MIB, "chunk_size": MIB, "force": false});
    let r = call(Method::POST, "/v1/disks/t0/sessions", serde_json::to_vec(&open).unwrap()).unwrap();
    let id = r.headers.get("x-diskferry-session").unwrap().to_str().unwrap().to_owned();
    call(Method::POST, &format!("/v1/sessions/{id}/begin"), br#"{"generation":1}"#.to_vec()).unwrap();
    let vhd = root.join("t0.vhd");
    let before = std::fs::read(&vhd).unwrap();

    let data = text(1, MIB as usize);
    let states = [ChunkState::of(&data), ChunkState::Zero, ChunkState::Zero, ChunkState::Zero];
    let head = |seq| WindowHeader { seq, first_chunk: 0, offset: 0, len: 4 * MIB };
    let window = |seq: u64, frames: &[Vec<u8>]| {
        let mut m = encode_head(&head(seq), &states, frames.len() as u32);
        frames.iter().for_each(|f| m.extend_from_slice(f));
        m
    };
    let put = |seq: u64, body: Vec<u8>| status(call(Method::PUT, &format!("/v1/sessions/{id}/windows/{seq}"), body));

    // A payload that does not match its digest (stored raw, one byte changed).
    let f = data_frame(0, &data, 3).unwrap();
    let h = FrameHeader::parse(&f).unwrap();
    let mut raw = FrameHeader { kind: FrameKind::Raw, payload_len: MIB as u32, ..h }.encode().to_vec();
    raw.extend_from_slice(&data);
    raw[HEADER_LEN + 1000] ^= 1;
    assert_eq!(put(0, window(0, &[raw])), (400, "digest".to_owned()));
    // A bomb: 64 MiB of zeros declared as one 1 MiB chunk.
    let bomb = zstd::bulk::compress(&vec![0u8; 64 << 20], 3).unwrap();
    let mut b = FrameHeader {
        kind: FrameKind::Zstd,
        offset: 0,
        raw_len: MIB as u32,
        payload_len: bomb.len() as u32,
        digest: Digest::of(&data),
    }
    .encode()
    .to_vec();
    b.extend_from_slice(&bomb);
    assert_eq!(put(0, window(0, &[b])), (400, "bomb".to_owned()));
    // A frame over the 4 MiB limit (its header is refused before its payload).
    let mut big =
        FrameHeader { kind: FrameKind::Raw, offset: 0, raw_len: 8 << 20, payload_len: 8 << 20, digest: h.digest }
            .encode()
            .to_vec();
    big.extend_from_slice(&vec![1u8; 8 << 20]);
    assert_eq!(put(0, window(0, &[big])), (400, "frame".to_owned()));
    // A clear frame on the chunk that holds data.
    assert_eq!(put(0, window(0, &[clear_frame(0, MIB as u32).to_vec()])), (400, "window".to_owned()));
    // Windows out of order.
    assert_eq!(put(5, window(5, std::slice::from_ref(&f))), (409, "order".to_owned()));
    // A body over the limit: refused from its declared length, connection closed.
    let mut s = std::net::TcpStream::connect(rx.base.trim_start_matches("http://")).unwrap();
    write!(
        s,
        "PUT /v1/sessions/{id}/windows/0 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: {}\r\n\r\n",
        200u64 << 20
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    // A commit body over what this session's disk can need (8 MiB in 1 MiB
    // chunks: a manifest of a few hundred bytes, so the bound is ~70 KiB):
    // refused from its declared length.
    let mut s = std::net::TcpStream::connect(rx.base.trim_start_matches("http://")).unwrap();
    write!(
        s,
        "POST /v1/sessions/{id}/commit HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: {}\r\n\r\n",
        2u64 << 20
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    // A disk size near 2^64 (sizes made of it would wrap): refused.
    let huge = serde_json::json!({"source_id": "t", "disk_size": u64::MAX - 511, "chunk_size": MIB, "force": false});
    let r = status(call(Method::POST, "/v1/disks/t9/sessions", serde_json::to_vec(&huge).unwrap()));
    assert_eq!(r, (400, "request".to_owned()));
    // A wrong token, and none: 401, and the connection is closed.
    for auth in ["Authorization: Bearer not-the-token-at-all\r\n", ""] {
        let mut s = std::net::TcpStream::connect(rx.base.trim_start_matches("http://")).unwrap();
        // Reading to the end only ends if the receiver closes the connection.
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(s, "GET /v1/sessions/{id} HTTP/1.1\r\nHost: x\r\n{auth}\r\n").unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).expect("the connection stays open after a 401");
        assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
        assert!(!answer.contains(TOKEN));
    }
    // Nothing reached the destination.
    assert_eq!(std::fs::read(&vhd).unwrap(), before);
    for (reason, n) in
        [("digest", 1), ("bomb", 1), ("frame", 1), ("window", 1), ("order", 1), ("too_large", 2), ("token", 2)]
    {
        assert_eq!(rx.metric("diskferry_receiver_rejects_total", &format!("reason=\"{reason}\"")), n, "{reason}");
    }
    // The session still works: the right window is applied.
    assert_eq!(put(0, window(0, std::slice::from_ref(&f))), (204, String::new()));
    // Acknowledged once verified and queued; the session's state waits for the sink.
    let st = call(Method::GET, &format!("/v1/sessions/{id}"), Vec::new()).unwrap();
    let st: serde_json::Value = serde_json::from_slice(&st.body).unwrap();
    assert_eq!(st["applied"].as_u64(), Some(0), "{st}");
    assert_ne!(std::fs::read(&vhd).unwrap(), before);

    // The sender's side of a wrong token: exit 4, said plainly.
    let src = d.path().join("disk.img");
    make_image(&src, 8 * MIB, &[(0, MIB, 1)]);
    let out = agent()
        .args(["sync", src.to_str().unwrap(), "--to", &rx.url("t1")])
        .env("DISKFERRY_RELAY_TOKEN", "the-wrong-token-0123456789")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stderr).contains("refused the token"));
}

#[test]
fn fan_out_with_a_relay_down_for_one_sync_catches_up() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let container = azurite::container("relay-fanout");
    let blob = azurite::url(azurite::endpoint(), &container, "d.vhd");
    let file = d.path().join("local.vhd");
    let mut rx = Receiver::start(d.path(), &format!("file:{}", root.display()), 0, None, &[], &[]);
    let port = rx.port;
    let src = d.path().join("disk.img");
    mixed_image(&src);
    let args = |rx_url: &str| -> Vec<String> {
        ["sync", src.to_str().unwrap(), "--json", "--create-container", "--to", rx_url, "--to", &blob]
            .iter()
            .map(|s| s.to_string())
            .chain(["--to".to_owned(), format!("file:{}", file.display())])
            .collect()
    };
    let url = rx.url("d");
    let run = |a: Vec<String>| sender(d.path(), &a.iter().map(String::as_str).collect::<Vec<_>>());
    json(&run(args(&url)));
    rx.stop();
    poke_text(&src, 10 * MIB, MIB, 21);
    let mut a = args(&url);
    a.extend(["--retry-for".to_owned(), "1".to_owned()]);
    let out = run(a);
    assert_eq!(out.status.code(), Some(7), "{}", String::from_utf8_lossy(&out.stderr));
    let lanes: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(lanes[0]["ok"].as_bool(), Some(false));
    assert_eq!((lanes[1]["ok"].as_bool(), lanes[2]["ok"].as_bool()), (Some(true), Some(true)));
    // Back on the same port; one more change; everyone catches up.
    let _rx = Receiver::start(d.path(), &format!("file:{}", root.display()), port, None, &[], &[]);
    poke(&src, 50 * MIB, MIB, 22);
    let lanes = json(&run(args(&url)));
    let gens: Vec<u64> =
        lanes.as_array().unwrap().iter().map(|l| l["report"]["generation"].as_u64().unwrap()).collect();
    assert_eq!(gens, vec![2, 3, 3]);
    assert!(identical(&src, &root.join("d.vhd")));
    assert!(identical(&src, &file));
    let got = d.path().join("blob.vhd");
    download(&blob, &got);
    assert!(identical(&src, &got));
}

#[test]
fn bad_relay_input_is_refused_in_one_line() {
    let d = tempfile::tempdir().unwrap();
    let token = token_file(d.path());
    let t = token.to_str().unwrap();
    let cases: Vec<(Vec<&str>, i32, &str)> = vec![
        (vec!["receive", "--listen", "0.0.0.0:0", "--root", "file:/tmp", "--token-file", t], 2, "without TLS"),
        (vec!["receive", "--listen", "127.0.0.1:0", "--root", "file:/tmp"], 2, "needs a token"),
        (
            vec!["receive", "--listen", "127.0.0.1:0", "--root", "file:/nonexistent/x", "--token-file", t],
            4,
            "does not exist",
        ),
        (
            vec!["receive", "--listen", "127.0.0.1:0", "--root", "s3://bucket", "--token-file", t],
            2,
            "not a receiver root",
        ),
        (vec!["sync", "/dev/null", "--to", "relay:http://10.0.0.1:80/d"], 2, "loopback"),
        (vec!["sync", "/dev/null", "--to", "relay:https://h:1/a/b"], 2, "DISK-NAME"),
        (vec!["sync", "/dev/null", "--to", "relay:https://h:1/d"], 2, "needs a token"),
    ];
    for (args, code, want) in cases {
        let out = Command::new(env!("CARGO_BIN_EXE_diskferry-agent"))
            .args(&args)
            .env_remove("DISKFERRY_RELAY_TOKEN")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(err.trim().lines().count() <= 3, "{args:?}: {err}");
    }
    // A short token is refused, and not echoed.
    std::fs::write(&token, "short").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_diskferry-agent"))
        .args(["receive", "--listen", "127.0.0.1:0", "--root", "file:/tmp", "--token-file", t])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("short"));
}

use diskferry_testkit::proxy as faults;

#[test]
fn http_faults_between_sender_and_receiver_are_ridden_out() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let rx = Receiver::start(d.path(), &format!("file:{}", root.display()), 0, None, &[], &[]);
    let proxy = faults::Proxy::faulty(rx.port, 400, &faults::ALL, 0x5E7D);
    let src = d.path().join("disk.img");
    mixed_image(&src);
    let url = rx.url_via(proxy.port, "d0");
    for round in 0..4u64 {
        if round > 0 {
            poke_text(&src, round * 11 * MIB, 3 * MIB, 30 + round);
        }
        let r = json(&sender(d.path(), &["sync", src.to_str().unwrap(), "--to", &url, "--json"]));
        assert_eq!(r["generation"].as_u64(), Some(round + 1), "{r}");
        assert!(identical(&src, &root.join("d0.vhd")), "round {round}");
    }
    for f in faults::ALL {
        assert!(proxy.count(f) > 0, "{} never injected: {:?}", f.name(), proxy.summary());
    }
}

#[test]
fn a_receiver_killed_mid_sync_is_restarted_and_the_rerun_resumes() {
    let d = tempfile::tempdir().unwrap();
    let container = azurite::container("relay-rxkill");
    let blob_root = format!("pageblob:{}/{}/{container}", azurite::endpoint(), azurite::ACCOUNT);
    let env = [("AZURE_STORAGE_CONNECTION_STRING", azurite::connection_string())];
    // Its lease on the destination lapses 15 s after it is killed: then the
    // restarted receiver takes the destination over.
    let mut rx = Receiver::start(d.path(), &blob_root, 0, None, &env, &["--create-container", "--lease-secs", "15"]);
    let port = rx.port;
    let src = d.path().join("disk.img");
    // Text at zstd level 9: the sender is slow enough to be caught mid-sync
    // (noise would not be: it skips zstd, see FrameEncoder).
    std::fs::write(&src, text(8, (256 * MIB) as usize)).unwrap();
    let mut c = agent();
    c.args(["sync", src.to_str().unwrap(), "--to", &rx.url("d0"), "--zstd-level", "9", "--retry-for", "30"])
        .arg("--relay-token-file")
        .arg(token_file(d.path()))
        .stderr(std::process::Stdio::piped());
    let child = c.spawn().unwrap();
    assert!(diskferry_testkit::process::poll(60, || rx
        .metric("diskferry_receiver_windows_total", "outcome=\"applied\"")
        >= 2));
    rx.stop();
    let _rx = Receiver::start(d.path(), &blob_root, port, None, &env, &[]);
    // The sender reconnects to a receiver that no longer knows its session:
    // it stops and says how to go on.
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("sync again to resume"));
    let r = json(&sender(d.path(), &["sync", src.to_str().unwrap(), "--to", &_rx.url("d0"), "--json"]));
    assert_eq!(r["full_sync_reason"].as_str(), Some("resuming an interrupted first sync"), "{r}");
    assert!(r["wire"]["bytes_raw"].as_u64().unwrap() < 256 * MIB, "{r}");
    let got = d.path().join("got.vhd");
    download(&format!("{blob_root}/d0.vhd"), &got);
    assert!(identical(&src, &got));
}

/// Two senders of different sources for one disk of one receiver, again
/// and again at nearby moments: the newer session replaces the older (whose
/// sender is told so), the destination's lease keeps their writes apart,
/// and every recovery point ever published equals one of the sources.
#[test]
fn two_senders_for_one_disk_never_publish_a_mix() {
    let d = tempfile::tempdir().unwrap();
    let container = azurite::container("relay-two");
    let blob_root = format!("pageblob:{}/{}/{container}", azurite::endpoint(), azurite::ACCOUNT);
    let env = [("AZURE_STORAGE_CONNECTION_STRING", azurite::connection_string())];
    let rx = Receiver::start(d.path(), &blob_root, 0, None, &env, &["--create-container"]);
    let (a, b) = (d.path().join("a.img"), d.path().join("b.img"));
    make_image(&a, 24 * MIB, &(0..24).map(|i| (i * MIB, MIB, 100 + i)).collect::<Vec<_>>());
    make_image(&b, 24 * MIB, &(0..24).map(|i| (i * MIB, MIB, 200 + i)).collect::<Vec<_>>());
    let sources = [std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap()];
    let blob = format!("{blob_root}/d0.vhd");
    let spawn = |src: &Path, id: &str| {
        agent()
            .args(["sync", src.to_str().unwrap(), "--to", &rx.url("d0"), "--source-id", id, "--retry-for", "20"])
            .arg("--relay-token-file")
            .arg(token_file(d.path()))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut seen = std::collections::BTreeSet::new();
    let mut replaced = 0;
    for round in 0..6u64 {
        let first = spawn(&a, "a");
        std::thread::sleep(Duration::from_millis(20 + (round * 37) % 150));
        let second = spawn(&b, "b");
        for out in [first.wait_with_output().unwrap(), second.wait_with_output().unwrap()] {
            if !out.status.success() {
                assert_eq!(out.status.code(), Some(4), "{}", String::from_utf8_lossy(&out.stderr));
                replaced += 1;
            }
        }
        let pts = agent()
            .args(["points", &blob, "--json"])
            .env("AZURE_STORAGE_CONNECTION_STRING", azurite::connection_string())
            .output()
            .unwrap();
        let pts: serde_json::Value = serde_json::from_slice(&pts.stdout).unwrap();
        for p in pts.as_array().unwrap() {
            if !seen.insert(p["snapshot"].as_str().unwrap().to_owned()) {
                continue;
            }
            let g = p["generation"].as_u64().unwrap().to_string();
            let got = d.path().join("got.vhd");
            let out = agent()
                .args(["download", &blob, "--point", &g, "--to", got.to_str().unwrap()])
                .env("AZURE_STORAGE_CONNECTION_STRING", azurite::connection_string())
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            let mut bytes = std::fs::read(&got).unwrap();
            bytes.truncate(24 * MIB as usize);
            assert!(sources.contains(&bytes), "round {round}: recovery point {g} is neither source");
        }
    }
    eprintln!("6 rounds: {replaced} senders replaced by a newer one, {} points checked", seen.len());
    assert!(!seen.is_empty());
}

#[test]
fn the_receiver_checks_and_records_the_senders_fencing_number() {
    let d = tempfile::tempdir().unwrap();
    let container = azurite::container("relay-fence");
    let blob_root = format!("pageblob:{}/{}/{container}", azurite::endpoint(), azurite::ACCOUNT);
    let env = [("AZURE_STORAGE_CONNECTION_STRING", azurite::connection_string())];
    let rx = Receiver::start(d.path(), &blob_root, 0, None, &env, &["--create-container"]);
    let src = d.path().join("a.img");
    make_image(&src, 8 * MIB, &[(MIB, 2 * MIB, 5)]);
    let s = src.to_str().unwrap();
    json(&sender(d.path(), &["sync", s, "--to", &rx.url("d0"), "--fence", "4", "--json"]));
    // A sender of an older lease is refused by the blob behind the receiver.
    let old = sender(d.path(), &["sync", s, "--to", &rx.url("d0"), "--fence", "3", "--json"]);
    let err = String::from_utf8_lossy(&old.stderr);
    assert_eq!(old.status.code(), Some(4), "{err}");
    assert!(err.contains("superseded") && err.contains("fencing number 4"), "{err}");
    // Writing directly with that number is refused too: the receiver recorded it.
    let direct = agent()
        .args(["sync", s, "--to", &format!("{blob_root}/d0.vhd"), "--fence", "3"])
        .env("AZURE_STORAGE_CONNECTION_STRING", azurite::connection_string())
        .output()
        .unwrap();
    assert_eq!(direct.status.code(), Some(4), "{}", String::from_utf8_lossy(&direct.stderr));
    json(&sender(d.path(), &["sync", s, "--to", &rx.url("d0"), "--fence", "5", "--json"]));
}
