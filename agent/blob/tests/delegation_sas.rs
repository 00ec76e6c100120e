//! The user delegation SAS that signs a copy source under a token
//! credential, checked against an oracle we did not write: the official
//! Python SDK (azure-storage-blob, installed from PyPI by
//! `scripts/lib/pysdk.sh`) signs the same key, account, container and
//! times, and both signatures must agree field for field.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::process::Command;

use common::{fields, python, repo};

use azure_storage_common::models::UserDelegationKey;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

#[test]
fn a_delegated_read_sas_is_signed_as_the_python_sdk_signs_it() {
    let t = |s: &str| OffsetDateTime::parse(s, &Rfc3339).expect("a time");
    let value = b"a user delegation key's secret bytes, 32";
    let key = UserDelegationKey {
        signed_oid: Some("6f1b9c9e-1111-4c2a-9a7e-2f0d6f1b9c9e".into()),
        signed_tid: Some("72f988bf-86f1-41af-91ab-2d7cd011db47".into()),
        signed_start: Some(t("2027-01-15T07:00:00Z")),
        signed_expiry: Some(t("2027-01-15T09:00:00Z")),
        signed_service: Some("b".into()),
        signed_version: Some("2026-04-06".into()),
        value: Some(value.to_vec()),
        ..Default::default()
    };
    let now = t("2027-01-15T08:00:00Z");
    let ours = diskferry_blob::sas::delegated_read_sas("acct", "disks", &key, now).expect("a SAS");
    let f = fields(&ours);
    // Read only, on the container, from five minutes ago for an hour.
    assert_eq!((f["sr"].as_str(), f["sp"].as_str()), ("c", "r"), "{ours}");
    assert_eq!((f["st"].as_str(), f["se"].as_str()), ("2027-01-15T07:55:00Z", "2027-01-15T09:00:00Z"), "{ours}");

    use base64::Engine as _;
    let args = serde_json::json!({
        "account": "acct", "container": "disks", "version": f["sv"], "start": f["st"], "expiry": f["se"],
        "oid": f["skoid"], "tid": f["sktid"], "key_start": f["skt"], "key_expiry": f["ske"],
        "service": f["sks"], "key_version": f["skv"],
        "value": base64::engine::general_purpose::STANDARD.encode(value),
    });
    let out = Command::new(python())
        .arg(repo().join("scripts/lib/delegation_sas.py"))
        .arg(args.to_string())
        .output()
        .expect("the oracle runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let theirs = String::from_utf8(out.stdout).expect("text");
    assert_eq!(f, fields(&theirs), "ours: {ours}\ntheirs: {theirs}");

    // Another key, another signature (the comparison is not vacuous).
    let other = UserDelegationKey { value: Some(b"another key entirely".to_vec()), ..key.clone() };
    let sig = fields(&diskferry_blob::sas::delegated_read_sas("acct", "disks", &other, now).unwrap())["sig"].clone();
    assert_ne!(sig, f["sig"]);
    // Never past the key's own expiry.
    let late = t("2027-01-15T08:30:00Z");
    let f = fields(&diskferry_blob::sas::delegated_read_sas("acct", "disks", &key, late).unwrap());
    assert_eq!(f["se"], "2027-01-15T09:00:00Z");
}

/// A request as sent: method, URL, headers.
type Sent = (String, String, Vec<(String, String)>);

/// Answers as Blob Storage would, in process, and keeps what it was sent.
#[derive(Debug, Default)]
struct FakeBlobService {
    sent: std::sync::Mutex<Vec<Sent>>,
}

#[async_trait::async_trait]
impl azure_core::http::HttpClient for FakeBlobService {
    async fn execute_request(
        &self,
        request: &azure_core::http::Request,
    ) -> azure_core::Result<azure_core::http::AsyncRawResponse> {
        use azure_core::http::{headers::Headers, AsyncRawResponse, StatusCode};
        let headers: Vec<(String, String)> =
            request.headers().iter().map(|(k, v)| (k.as_str().to_owned(), v.as_str().to_owned())).collect();
        let url = request.url().to_string();
        self.sent.lock().unwrap().push((request.method().to_string(), url.clone(), headers));
        let mut h = Headers::new();
        if url.contains("comp=userdelegationkey") {
            // The answer's shape: Learn "Get User Delegation Key", response body.
            let body = "<?xml version=\"1.0\" encoding=\"utf-8\"?><UserDelegationKey>\
                <SignedOid>6f1b9c9e-1111-4c2a-9a7e-2f0d6f1b9c9e</SignedOid><SignedTid>72f988bf-86f1-41af-91ab-2d7cd011db47</SignedTid>\
                <SignedStart>2027-01-15T07:00:00Z</SignedStart><SignedExpiry>2099-01-15T09:00:00Z</SignedExpiry>\
                <SignedService>b</SignedService><SignedVersion>2026-04-06</SignedVersion>\
                <Value>YSB1c2VyIGRlbGVnYXRpb24ga2V5J3Mgc2VjcmV0IGJ5dGVzLCAzMg==</Value></UserDelegationKey>";
            h.insert("content-type", "application/xml");
            return Ok(AsyncRawResponse::from_bytes(StatusCode::Ok, h, body.as_bytes().to_vec()));
        }
        h.insert("x-ms-copy-id", "c0py-1d");
        h.insert("x-ms-copy-status", "pending");
        Ok(AsyncRawResponse::from_bytes(StatusCode::Accepted, h, Vec::new()))
    }
}

#[derive(Debug)]
struct StaticToken;

#[async_trait::async_trait]
impl azure_core::credentials::TokenCredential for StaticToken {
    async fn get_token(
        &self,
        _scopes: &[&str],
        _options: Option<azure_core::credentials::TokenRequestOptions<'_>>,
    ) -> azure_core::Result<azure_core::credentials::AccessToken> {
        Ok(azure_core::credentials::AccessToken::new(
            "the-bearer-token",
            OffsetDateTime::now_utc() + time::Duration::hours(1),
        ))
    }
}

#[test]
fn promote_under_a_token_credential_signs_its_copy_source() {
    use diskferry_blob::PageStore;
    let fake = std::sync::Arc::new(FakeBlobService::default());
    let addr = diskferry_blob::address::BlobAddress::parse("https://acct.blob.core.windows.net/disks/d.vhd").unwrap();
    let cred = diskferry_blob::credential::Credential::Token(std::sync::Arc::new(StaticToken));
    let store = diskferry_blob::azure::AzureStore::with_credential(addr, cred, None)
        .with_transport(azure_core::http::Transport::new(fake.clone()));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let snap = "2027-01-15T07:30:00.0000000Z";
    rt.block_on(store.start_copy("imports/d.g1.vhd", "d.vhd", snap)).unwrap();
    rt.block_on(store.start_copy("imports/d.g2.vhd", "d.vhd", snap)).unwrap();
    let sent = fake.sent.lock().unwrap().clone();
    let header = |h: &[(String, String)], k: &str| h.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    // One key for both copies, asked for with the identity's token.
    let keys: Vec<_> = sent.iter().filter(|(_, u, _)| u.contains("comp=userdelegationkey")).collect();
    assert_eq!(keys.len(), 1, "{sent:#?}");
    assert_eq!(keys[0].0, "POST");
    assert_eq!(header(&keys[0].2, "authorization").as_deref(), Some("Bearer the-bearer-token"));
    // Each Copy Blob names its source with a read SAS of that key.
    let copies: Vec<_> = sent.iter().filter(|(_, _, h)| header(h, "x-ms-copy-source").is_some()).collect();
    assert_eq!(copies.len(), 2, "{sent:#?}");
    for (method, _, h) in copies {
        assert_eq!(method, "PUT");
        let source = header(h, "x-ms-copy-source").unwrap();
        let url = url::Url::parse(&source).unwrap();
        assert_eq!(url.path(), "/disks/d.vhd", "{source}");
        let q: BTreeMap<String, String> = url.query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
        assert_eq!(q.get("snapshot").map(String::as_str), Some(snap), "{source}");
        assert_eq!((q["sr"].as_str(), q["sp"].as_str()), ("c", "r"), "{source}");
        assert_eq!(q["skoid"], "6f1b9c9e-1111-4c2a-9a7e-2f0d6f1b9c9e");
        assert!(q.contains_key("sig"), "{source}");
    }
}
