//! The SAS tokens the agent signs with an account key, checked against an
//! oracle we did not write: the official Python SDK (azure-storage-blob,
//! installed from PyPI by `scripts/lib/pysdk.sh`) signs the same fields with
//! the same key, and both must agree. And what they grant: a container SAS
//! for the container, and an account SAS that only creates containers, so
//! a leaked token reaches no other container of the account (an emulator's
//! account SAS also covers objects, for Azurite's snapshot requests).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::process::Command;

use common::{fields, python, repo};

use diskferry_blob::sas::{AccountKey, Signer};

const KEY: &str = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// The Python SDK's SAS for what `ours` names (`kind`: container or account).
fn theirs(python: &str, kind: &str, key: &str, ours: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let g = |k: &str| ours.get(k).cloned().unwrap_or_default();
    let args = serde_json::json!({
        "kind": kind, "account": "acct", "key": key, "container": "disks", "version": g("sv"),
        "start": g("st"), "expiry": g("se"), "sp": g("sp"), "ss": g("ss"), "srt": g("srt"),
    });
    let out = Command::new(python).arg(repo().join("scripts/lib/key_sas.py")).arg(args.to_string()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    fields(&String::from_utf8(out.stdout).unwrap())
}

#[test]
fn key_signed_tokens_match_the_python_sdk_and_reach_one_container() {
    let py = python();
    let (container, account) = Signer::new(AccountKey::new("acct", KEY), "disks", false).unwrap().tokens().unwrap();
    let (c, a) = (fields(&container), fields(&account));
    // The container SAS: this container, what a sync needs.
    assert_eq!((c["sr"].as_str(), c["sp"].as_str()), ("c", "racwdl"), "{container}");
    // The account SAS: create containers, nothing else.
    assert_eq!((a["ss"].as_str(), a["srt"].as_str(), a["sp"].as_str()), ("b", "c", "c"), "{account}");
    assert_eq!(c, theirs(&py, "container", KEY, &c), "container SAS");
    assert_eq!(a, theirs(&py, "account", KEY, &a), "account SAS");
    // Another key, another signature (the comparison is not vacuous).
    let other = base64_of(b"another account key, 32 bytes!!!");
    assert_ne!(theirs(&py, "account", &other, &a)["sig"], a["sig"]);

    // Azurite refuses snapshot requests under a container SAS: an
    // emulator's account SAS covers objects, and nothing else changes.
    let (_, emulated) = Signer::new(AccountKey::new("acct", KEY), "disks", true).unwrap().tokens().unwrap();
    let e = fields(&emulated);
    assert_eq!((e["srt"].as_str(), e["sp"].as_str()), ("sco", "rwdlac"), "{emulated}");
    assert_eq!(e, theirs(&py, "account", KEY, &e), "emulator account SAS");
}

fn base64_of(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(b)
}
