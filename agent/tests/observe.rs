//! What a running sync shows: the status file (versioned JSON, no secrets)
//! and the Prometheus endpoint, checked by `promtool check metrics`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::azurite;
use common::*;

fn scrape(port: u16) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())
}

#[test]
fn status_file_and_metrics_describe_the_sync() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("disk.img");
    make_image(&src, 64 * MIB, &[(0, 8 * MIB, 1), (32 * MIB, 4 * MIB, 2)]);
    let status = d.path().join("status.json");
    let port = azurite::free_port();
    let c = azurite::container("observe");
    let key = diskferry_blob::sas::AccountKey::new(azurite::ACCOUNT, azurite::KEY);
    let sas = key.container_sas(&c, time::OffsetDateTime::now_utc()).unwrap();
    let sig = sas.split("sig=").nth(1).unwrap().to_owned();
    // The container first (a SAS cannot create it).
    let out = agent()
        .env("AZURE_STORAGE_CONNECTION_STRING", azurite::connection_string())
        .args([
            "sync",
            src.to_str().unwrap(),
            "--to",
            &azurite::url(azurite::endpoint(), &c, "first.vhd"),
            "--create-container",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let dest = format!("{}?{sas}", azurite::url(azurite::endpoint(), &c, "d.vhd"));
    let child = agent()
        .env_remove("AZURE_STORAGE_CONNECTION_STRING")
        .args(["sync", src.to_str().unwrap(), "--to", &dest, "--json"])
        .args(["--status-file", status.to_str().unwrap(), "--metrics-addr", &format!("127.0.0.1:{port}")])
        .args(["--metrics-linger", "3"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the sync to finish (the status file says so), then scrape.
    let deadline = Instant::now() + Duration::from_secs(60);
    let final_status = loop {
        assert!(Instant::now() < deadline, "sync did not finish");
        if let Ok(b) = std::fs::read(&status) {
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&b) {
                if v["phase"] == "done" || v["phase"] == "failed" {
                    break v;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let metrics = scrape(port).expect("no metrics after the sync");
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    assert_eq!(final_status["version"], diskferry_core::report::STATUS_VERSION);
    assert_eq!(final_status["phase"], "done");
    let disk = &final_status["disks"][0];
    assert_eq!(disk["disk_size"], 64 * MIB);
    assert_eq!(disk["bytes_written"], 12 * MIB);
    assert_eq!(disk["bytes_zero"], 52 * MIB);
    assert!(final_status["requests"]["ok"].as_u64().unwrap() > 3);

    for name in [
        "diskferry_agent_bytes_read_total",
        "diskferry_agent_bytes_hashed_total",
        "diskferry_agent_bytes_zero_total",
        "diskferry_agent_bytes_unchanged_total",
        "diskferry_agent_bytes_written_total",
        "diskferry_agent_bytes_cleared_total",
        "diskferry_agent_requests_total",
        "diskferry_agent_retries_total",
        "diskferry_agent_inflight_bytes",
        "diskferry_agent_sync_duration_seconds",
        "diskferry_agent_wire_bytes_total",
        "diskferry_agent_wire_raw_bytes_total",
        "diskferry_agent_wire_compression_ratio",
    ] {
        assert!(metrics.contains(&format!("# TYPE {name} ")), "{name} missing:\n{metrics}");
    }
    assert!(
        metrics.contains(&format!("diskferry_agent_bytes_written_total{{disk=\"{}\"}} {}", src.display(), 12 * MIB)),
        "{metrics}"
    );

    // promtool (Debian package prometheus, installed by scripts/test.sh) judges the exposition.
    let prom = d.path().join("metrics.txt");
    std::fs::write(&prom, &metrics).unwrap();
    let check = Command::new("promtool").args(["check", "metrics"]).stdin(std::fs::File::open(&prom).unwrap()).output();
    match check {
        Ok(o) => assert!(
            o.status.success(),
            "promtool: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => panic!("promtool is not installed (scripts/test.sh installs it): {e}"),
    }

    // No secret anywhere a person or a scraper can see.
    let everything = format!(
        "{}{}{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(&status).unwrap(),
        metrics
    );
    assert!(!everything.contains(&sig), "the SAS signature leaked");
    assert!(!everything.contains(azurite::KEY), "the account key leaked");
}
