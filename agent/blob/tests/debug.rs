//! A store's `Debug` names where it writes, never with what (issue 17): the
//! SAS of its URL, and (under a token credential) the user delegation key,
//! stay out of every `{:?}` a log or an error could carry.
#![allow(clippy::unwrap_used)]

use diskferry_blob::address::BlobAddress;

#[test]
fn a_store_prints_no_credential() {
    let url = "https://acct.blob.core.windows.net/c/d.vhd?sv=2022-11-02&sr=c&sp=racwdl&se=2030-01-01T00%3A00%3A00Z&sig=SECRETSIGNATURE";
    let addr = BlobAddress::parse(url).unwrap();
    let store = diskferry_blob::azure::AzureStore::connect(addr, None).unwrap();
    let text = format!("{store:?}");
    assert!(!text.contains("SECRETSIGNATURE") && !text.contains("sig="), "{text}");
    assert!(text.contains("acct"), "{text}");
    let retried = diskferry_blob::connect(BlobAddress::parse(url).unwrap(), None).unwrap();
    let text = format!("{retried:?}");
    assert!(!text.contains("SECRETSIGNATURE"), "{text}");
}
