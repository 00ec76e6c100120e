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
