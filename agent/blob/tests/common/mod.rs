//! What the storage edge's oracle tests share: the official Python SDK
//! (installed from PyPI by `scripts/lib/pysdk.sh`) and SAS query strings.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The Python interpreter that has the SDK.
pub fn python() -> String {
    let out =
        Command::new("bash").arg(repo().join("scripts/lib/pysdk.sh")).output().expect("scripts/lib/pysdk.sh runs");
    assert!(out.status.success(), "installing the Python SDK failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("a path").trim().to_owned()
}

/// A SAS query string's fields.
pub fn fields(q: &str) -> BTreeMap<String, String> {
    url::form_urlencoded::parse(q.trim().as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())).collect()
}
