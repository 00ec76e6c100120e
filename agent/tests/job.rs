//! `diskferry-agent run --job`: every disk of a job to its destinations, one
//! status document for the whole job (a file, and a blob for workers that
//! have no inbound port). A disk that fails does not stop the others.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::azurite;
use common::*;
use diskferry_blob::address::BlobAddress;
use diskferry_blob::azure::AzureStore;
use diskferry_blob::sas::AccountKey;
use diskferry_blob::PageStore;

fn read_blob(url_with_sas: &str) -> Option<Vec<u8>> {
    let addr = BlobAddress::parse(url_with_sas).unwrap();
    let store = AzureStore::connect(addr.clone(), None).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(store.get(&addr.blob)).unwrap().map(|b| b.to_vec())
}

#[test]
fn a_job_syncs_each_disk_and_reports_to_a_status_blob() {
    let d = tempfile::tempdir().unwrap();
    let (os, data) = (d.path().join("os.img"), d.path().join("data.img"));
    make_image(&os, 16 * MIB, &[(0, 2 * MIB, 1)]);
    make_image(&data, 8 * MIB, &[(3 * MIB, MIB, 2)]);
    let ep = azurite::endpoint();
    let c = azurite::container("job");
    let blob_url = |name: &str| format!("{ep}/{}/{c}/{name}", azurite::ACCOUNT);
    let job = serde_json::json!({
        "version": 1, "run_id": "r-test", "create_container": true, "status_interval_ms": 100,
        "status_blob": blob_url("runs/r-test/status.json"),
        "disks": [
            {"name": "os", "source": os, "source_id": "vm/os",
             "destinations": [format!("pageblob:{}", blob_url("vm/os.vhd")), format!("file:{}", d.path().join("os.vhd").display())]},
            {"name": "data", "source": data, "source_id": "vm/data", "destinations": [format!("file:{}", d.path().join("data.vhd").display())]},
            {"name": "gone", "source": d.path().join("missing.img"), "source_id": "vm/gone", "destinations": [format!("file:{}", d.path().join("gone.vhd").display())]}
        ]
    });
    let job_path = d.path().join("job.json");
    std::fs::write(&job_path, job.to_string()).unwrap();
    let out = agent()
        .env("AZURE_STORAGE_CONNECTION_STRING", azurite::connection_string())
        .args(["run", "--job", job_path.to_str().unwrap()])
        .output()
        .unwrap();
    // The missing disk fails the job (exit 3, source) but not the other disks.
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(identical(&os, &d.path().join("os.vhd")));
    assert!(identical(&data, &d.path().join("data.vhd")));

    let file: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.path().join("job.status.json")).unwrap()).unwrap();
    let sas =
        AccountKey::new(azurite::ACCOUNT, azurite::KEY).container_sas(&c, time::OffsetDateTime::now_utc()).unwrap();
    let blob = read_blob(&format!("{}?{sas}", blob_url("runs/r-test/status.json"))).expect("status blob");
    let blob: serde_json::Value = serde_json::from_slice(&blob).unwrap();
    for s in [&file, &blob] {
        assert_eq!(
            (s["version"].as_u64(), s["run_id"].as_str(), s["phase"].as_str()),
            (Some(u64::from(diskferry_core::report::STATUS_VERSION)), Some("r-test"), Some("failed"))
        );
        let disks = s["disks"].as_array().unwrap();
        assert_eq!(disks[0]["results"].as_array().unwrap().len(), 2, "{s}");
        assert_eq!(disks[0]["results"][0]["report"]["generation"], 1);
        assert_eq!(disks[1]["results"][0]["report"]["bytes_written"], MIB);
        assert!(disks[2]["error"].as_str().unwrap().contains("missing.img"), "{s}");
    }
    assert_eq!(file, blob, "the blob holds the final document");
    let got = d.path().join("os-download.vhd");
    let out = agent()
        .env("AZURE_STORAGE_CONNECTION_STRING", azurite::connection_string())
        .args(["download", &format!("pageblob:{}", blob_url("vm/os.vhd")), "--to", got.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(identical(&os, &got));
}

#[test]
fn a_job_with_a_secret_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let job = serde_json::json!({"version": 1, "run_id": "r", "disks": [{"name": "a", "source": "/x", "source_id": "v/a",
        "destinations": ["pageblob:https://acct.blob.core.windows.net/c/a.vhd?sv=2020-12-06&sig=TOPSECRET"]}]});
    let p = d.path().join("job.json");
    std::fs::write(&p, job.to_string()).unwrap();
    let out = agent().args(["run", "--job", p.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no secret") && !err.contains("TOPSECRET"), "{err}");
}

/// Every disk of a job at once: four disks, each read at most 16 MiB/s
/// (`read_limit`), take about as long as one, not four times as long. The
/// limit holds for each (after its first window, 32 MiB, every byte waits
/// its turn), the syncs overlap (one after another, the job would take the
/// sum of their times), and every disk lands identical.
#[test]
fn a_jobs_disks_sync_at_once_each_under_its_read_limit() {
    const LIMIT: u64 = 16 * MIB;
    let d = tempfile::tempdir().unwrap();
    let disks: Vec<serde_json::Value> = (0..4u64)
        .map(|i| {
            let img = d.path().join(format!("d{i}.img"));
            make_image(&img, 48 * MIB, &[(0, 48 * MIB, 10 + i)]);
            serde_json::json!({"name": format!("d{i}"), "source": img, "source_id": format!("vm/d{i}"),
                "read_limit": LIMIT, "destinations": [format!("file:{}", d.path().join(format!("d{i}.vhd")).display())]})
        })
        .collect();
    let job = serde_json::json!({"version": 1, "run_id": "r-par", "threads": 2, "disks": disks});
    let job_path = d.path().join("job.json");
    std::fs::write(&job_path, job.to_string()).unwrap();
    let started = std::time::Instant::now();
    let reports = run_json(&["run", "--job", job_path.to_str().unwrap(), "--json"]);
    let wall = started.elapsed().as_secs_f64();
    let reports = reports.as_array().unwrap();
    assert_eq!(reports.len(), 4);
    let mut sum = 0.0;
    for (i, r) in reports.iter().enumerate() {
        let secs = r["seconds"].as_f64().unwrap();
        // 16 MiB after the first 32 MiB, at 16 MiB/s.
        assert!(secs >= 0.95, "disk {i} read 48 MiB in {secs:.2} s, over its limit");
        sum += secs;
        assert!(identical(&d.path().join(format!("d{i}.img")), &d.path().join(format!("d{i}.vhd"))));
    }
    assert!(wall < 0.6 * sum, "the job took {wall:.2} s, its disks {sum:.2} s together: they did not overlap");
}
