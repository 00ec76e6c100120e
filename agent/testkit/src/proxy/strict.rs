//! The strict proxy's rules: what Azure Storage enforces and Azurite does
//! not (append blob block counts, page blob size, SAS expiry, premium
//! accounts, per-blob ingress targets), applied to each request before it
//! is forwarded, with the error answers Azure gives.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{header, Stats};

/// Azure Storage's limits, as a strict proxy enforces them.
#[derive(Debug, Clone, Copy)]
pub struct Strict {
    /// Committed blocks an append blob takes (Azure: 50,000), then 409 BlockCountExceedsLimit.
    pub append_blocks: u32,
    /// Largest page blob (Azure: 8 TiB), else 400 InvalidHeaderValue.
    pub max_page_blob: u64,
    /// Bytes per second one blob takes in (standard page blob target: 60 MiB/s), else 503 ServerBusy.
    pub blob_bytes_per_sec: u64,
    /// Requests per second one blob takes (Azure: 500), else 503 ServerBusy.
    pub blob_requests_per_sec: u64,
    /// Refuse a SAS whose `se` has passed: 403 AuthenticationFailed.
    pub sas_expiry: bool,
    /// A premium page blob account: Get Account Information says
    /// Premium_LRS/StorageV2, block and append blobs are refused, and a
    /// blob takes at most `max_snapshots` snapshots (Azure: 100, then 409
    /// SnapshotCountExceeded), one every `snapshot_interval` (Azure: 10
    /// minutes, else 409 SnaphotOperationRateExceeded).
    pub premium: bool,
    pub max_snapshots: u32,
    pub snapshot_interval: Duration,
    /// A credential without delete rights (a role without
    /// `.../blobs/delete`, or a SAS without `d`): every Delete Blob, of a
    /// blob or of a snapshot, is 403 AuthorizationPermissionMismatch.
    pub deny_deletes: bool,
}

impl Default for Strict {
    fn default() -> Self {
        Self {
            append_blocks: 50_000,
            max_page_blob: 8 << 40,
            blob_bytes_per_sec: 60 << 20,
            blob_requests_per_sec: 500,
            sas_expiry: true,
            premium: false,
            max_snapshots: 100,
            snapshot_interval: Duration::from_secs(600),
            deny_deletes: false,
        }
    }
}

/// What a strict proxy knows of one blob.
#[derive(Debug)]
pub(super) struct BlobBook {
    blocks: u32,
    /// Snapshots taken and not deleted, and when the last was taken.
    snapshots: u32,
    snapped: Option<Instant>,
    /// Token buckets (one second of burst) and when they were last filled.
    bytes: f64,
    requests: f64,
    filled: Instant,
}

/// The strict proxy's rules and its book of blobs.
pub(super) struct Rules {
    pub(super) strict: Strict,
    pub(super) blobs: Mutex<HashMap<String, BlobBook>>,
}

impl Rules {
    /// The answer that refuses `head` (with `body_len` bytes), if a rule does.
    pub(super) fn check(&self, head: &str, body_len: usize, st: &Stats) -> Option<Vec<u8>> {
        let first = head.lines().next()?;
        let mut parts = first.split_whitespace();
        let (method, target) = (parts.next()?, parts.next()?);
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let q = |k: &str| {
            query.split('&').find_map(|kv| {
                let (a, b) = kv.split_once('=')?;
                (a == k).then(|| percent_decode(b))
            })
        };
        let s = &self.strict;
        let refuse = |status: &str, code: &str, counter: &AtomicU64| {
            counter.fetch_add(1, Relaxed);
            Some(answer(status, code))
        };
        if s.sas_expiry {
            if let Some(se) = q("se") {
                let expired = chrono::DateTime::parse_from_rfc3339(&se).is_ok_and(|t| t < chrono::Utc::now());
                if expired {
                    return refuse(
                        "403 Server failed to authenticate the request",
                        "AuthenticationFailed",
                        &st.strict_refused,
                    );
                }
            }
        }
        if s.deny_deletes && method == "DELETE" && q("restype").is_none() {
            return refuse(
                "403 This request is not authorized to perform this operation using this permission",
                "AuthorizationPermissionMismatch",
                &st.strict_refused,
            );
        }
        if s.premium {
            if method == "GET" && q("restype").as_deref() == Some("account") {
                return Some(
                    b"HTTP/1.1 200 OK\r\nx-ms-sku-name: Premium_LRS\r\nx-ms-account-kind: StorageV2\r\nContent-Length: 0\r\n\r\n"
                        .to_vec(),
                );
            }
            let kind = header(head, "x-ms-blob-type").unwrap_or("");
            if method == "PUT" && (kind.eq_ignore_ascii_case("BlockBlob") || kind.eq_ignore_ascii_case("AppendBlob")) {
                return refuse(
                    "400 The blob type is invalid for this operation",
                    "InvalidBlobType",
                    &st.strict_refused,
                );
            }
        }
        let size = |h: &str| header(head, h).and_then(|v| v.parse::<u64>().ok());
        let page_blob = header(head, "x-ms-blob-type").is_some_and(|t| t.eq_ignore_ascii_case("PageBlob"));
        let comp = q("comp");
        let resize = comp.as_deref() == Some("properties");
        if method == "PUT"
            && (page_blob || resize)
            && size("x-ms-blob-content-length").is_some_and(|n| n > s.max_page_blob)
        {
            return refuse(
                "400 The value for one of the HTTP headers is not in the correct format",
                "InvalidHeaderValue",
                &st.strict_refused,
            );
        }
        let mut blobs = self.blobs.lock().unwrap();
        let b = blobs.entry(path.to_owned()).or_insert_with(|| BlobBook {
            blocks: 0,
            snapshots: 0,
            snapped: None,
            bytes: (s.blob_bytes_per_sec as f64).max(4.0 * 1024.0 * 1024.0),
            requests: s.blob_requests_per_sec as f64,
            filled: Instant::now(),
        });
        if method == "PUT" && comp.as_deref() == Some("appendblock") && b.blocks >= s.append_blocks {
            return refuse(
                "409 The committed block count cannot exceed the maximum limit of 50,000 blocks",
                "BlockCountExceedsLimit",
                &st.strict_refused,
            );
        }
        if s.premium && method == "PUT" && comp.as_deref() == Some("snapshot") {
            if b.snapshots >= s.max_snapshots {
                return refuse(
                    "409 The snapshot count against this blob has been exceeded",
                    "SnapshotCountExceeded",
                    &st.strict_refused,
                );
            }
            if b.snapped.is_some_and(|t| t.elapsed() < s.snapshot_interval) {
                return refuse(
                    "409 The rate of snapshot blob calls is exceeded",
                    "SnaphotOperationRateExceeded",
                    &st.strict_refused,
                );
            }
        }
        let dt = b.filled.elapsed().as_secs_f64();
        b.filled = Instant::now();
        // A second's worth of burst, and never less than one 4 MiB write:
        // a target is an average, not a cap on one request.
        let burst = (s.blob_bytes_per_sec as f64).max(4.0 * 1024.0 * 1024.0);
        b.bytes = (b.bytes + dt * s.blob_bytes_per_sec as f64).min(burst);
        b.requests = (b.requests + dt * s.blob_requests_per_sec as f64).min(s.blob_requests_per_sec as f64);
        let ingress = if method == "PUT" { body_len as f64 } else { 0.0 };
        let put_page = method == "PUT" && comp.as_deref() == Some("page");
        if put_page {
            st.page_writes.fetch_add(1, Relaxed);
        }
        if b.requests < 1.0 || b.bytes < ingress {
            if put_page {
                st.page_writes_busy.fetch_add(1, Relaxed);
            }
            return refuse("503 The server is busy", "ServerBusy", &st.busy);
        }
        b.requests -= 1.0;
        b.bytes -= ingress;
        None
    }

    /// Note what the server did with a request the rules let through.
    pub(super) fn done(&self, head: &str, status_line: &str) {
        if !status_line.split_whitespace().nth(1).is_some_and(|c| c.starts_with('2')) {
            return;
        }
        let Some(first) = head.lines().next() else { return };
        let mut parts = first.split_whitespace();
        let (Some(method), Some(target)) = (parts.next(), parts.next()) else { return };
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let mut blobs = self.blobs.lock().unwrap();
        let Some(b) = blobs.get_mut(path) else { return };
        let comp = query.split('&').find_map(|kv| kv.strip_prefix("comp="));
        match (method, comp) {
            ("PUT", Some("appendblock")) => b.blocks += 1,
            ("PUT", Some("snapshot")) => {
                b.snapshots += 1;
                b.snapped = Some(Instant::now());
            }
            ("DELETE", None) if query.contains("snapshot=") => b.snapshots = b.snapshots.saturating_sub(1),
            // A new blob of that name (Put Blob), or none.
            ("PUT", None) if header(head, "x-ms-blob-type").is_some() && !query.contains("snapshot=") => b.blocks = 0,
            ("DELETE", None) if !query.contains("snapshot=") => (b.blocks, b.snapshots) = (0, 0),
            _ => {}
        }
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(v) => {
                        out.push(v);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// An error answer as the Blob service shapes it (code in the header and the body).
fn answer(status: &str, code: &str) -> Vec<u8> {
    let body = format!("<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>{code}</Code><Message>{code} (strict proxy)</Message></Error>");
    format!(
        "HTTP/1.1 {status}\r\nx-ms-error-code: {code}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}
