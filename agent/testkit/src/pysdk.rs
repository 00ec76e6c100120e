//! Microsoft's official Python SDK for Azure Storage as an oracle and an
//! independent writer: installed from PyPI into `.cache/pyenv` by
//! `scripts/lib/pysdk.sh`, driven through `scripts/lib/azblob.py`.

use std::path::PathBuf;
use std::process::Command;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The Python interpreter that has the SDK (installing it when missing).
pub fn python() -> String {
    let out =
        Command::new("bash").arg(repo().join("scripts/lib/pysdk.sh")).output().expect("scripts/lib/pysdk.sh runs");
    assert!(out.status.success(), "installing the Python SDK failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("a path").trim().to_owned()
}

/// Run `scripts/lib/azblob.py ARGS` (see its header); what it printed.
pub fn azblob(args: &[&str]) -> String {
    let out = Command::new(python()).arg(repo().join("scripts/lib/azblob.py")).args(args).output().unwrap();
    assert!(out.status.success(), "azblob.py {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("text").trim().to_owned()
}
