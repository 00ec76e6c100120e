//! What the storage edge's oracle tests share: the official Python SDK
//! (installed from PyPI by `scripts/lib/pysdk.sh`) and SAS query strings.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

pub use diskferry_testkit::pysdk::{python, repo};

/// A SAS query string's fields.
pub fn fields(q: &str) -> BTreeMap<String, String> {
    url::form_urlencoded::parse(q.trim().as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())).collect()
}
