//! The simulator's data plane: a snapshot's SAS URL answering Get Blob
//! Properties (its size), Get Page Ranges with
//! `x-ms-previous-snapshot-url` and `x-ms-range`, Get Page Ranges of the
//! snapshot alone (what an agent reading it over HTTPS asks first), and Get
//! Blob with `x-ms-range`, from the snapshot files. Pages are 64 KiB
//! granules: a granule holding any non-zero byte was written, as Azure's
//! own page ranges are the pages a disk's writes touched (the simulator
//! cannot know which all-zero pages were written).

use serde_json::Value;

use super::{ArmSim, Reply};

impl ArmSim {
    /// The data plane of a snapshot SAS: Get Page Ranges with
    /// `x-ms-previous-snapshot-url`, at 64 KiB granularity, a few ranges a
    /// page with `NextMarker`.
    /// Get Blob Properties on a snapshot's SAS: its size.
    pub(super) fn blob_properties(&self, target: &str) -> Reply {
        let s = self.state.lock().unwrap();
        let file = token_of(target).and_then(|t| s.grants.get(&t)).and_then(|k| s.files.get(k));
        match file.and_then(|f| std::fs::metadata(f).ok()) {
            Some(m) => (
                200,
                vec![("Content-Length".into(), m.len().to_string()), ("x-ms-blob-type".into(), "PageBlob".into())],
                Value::Null,
            ),
            None => (403, vec![("Content-Length".into(), "0".into())], Value::Null),
        }
    }

    /// The snapshot a signed SAS URL names, opened (or the error to
    /// answer), and its size. Read by range: a snapshot may be gigabytes.
    fn snapshot_file(&self, target: &str) -> Result<(std::fs::File, usize), Reply> {
        let s = self.state.lock().unwrap();
        let k = granted(&s, target)?;
        let f =
            s.files.get(&k).and_then(|f| std::fs::File::open(f).ok()).ok_or_else(|| xml_err(404, "BlobNotFound"))?;
        let len = f.metadata().map(|m| m.len() as usize).unwrap_or(0);
        Ok((f, len))
    }

    /// Get Page Ranges of one snapshot (no previous one): its written
    /// granules, merged, a few a page with `NextMarker`.
    pub(super) fn page_list(&self, target: &str, range: &str) -> Reply {
        if !target.contains("comp=pagelist") {
            return xml_err(400, "InvalidQueryParameterValue");
        }
        let (f, len) = match self.snapshot_file(target) {
            Ok(b) => b,
            Err(reply) => return reply,
        };
        let (lo, hi) = match span(range, len) {
            Ok(s) => s,
            Err(reply) => return reply,
        };
        const G: usize = 64 * 1024;
        let mut ranges: Vec<(usize, usize)> = Vec::new();
        let mut buf = vec![0u8; G];
        // Only the file's data extents are looked at (a hole reads as
        // zeros): a mostly empty image is listed in what it holds.
        let (mut pos, mut next) = (lo, lo / G);
        while pos < hi {
            let Ok(data) = seek(&f, pos as u64, libc::SEEK_DATA).map(|d| d as usize) else { break };
            if data >= hi {
                break;
            }
            let hole = seek(&f, data as u64, libc::SEEK_HOLE).map_or(len, |h| h as usize).min(hi);
            for i in (data / G).max(next)..hole.div_ceil(G) {
                // Only the asked span, clipped to it.
                let (g0, g1) = ((i * G).max(lo), (i * G + G).min(hi).min(len));
                if g0 >= g1 || read_at(&f, &mut buf[..g1 - g0], g0).iter().all(|&x| x == 0) {
                    continue;
                }
                match ranges.last_mut() {
                    Some(r) if r.1 == g0 => r.1 = g1,
                    _ => ranges.push((g0, g1)),
                }
            }
            next = hole.div_ceil(G);
            pos = hole.max(pos + 1);
        }
        let ranges: Vec<(usize, usize, bool)> = ranges.into_iter().map(|(a, z)| (a, z, false)).collect();
        let xml = page_list_xml(target, self.state.lock().unwrap().page, &ranges);
        (200, vec![("x-ms-blob-content-length".into(), len.to_string())], Value::String(xml))
    }

    /// Get Blob of a snapshot with `x-ms-range: bytes=START-END` (inclusive):
    /// 206 and those bytes; 416 past the end. Bytes, not JSON.
    pub(super) fn blob_read(&self, target: &str, range: &str) -> (u16, Vec<(String, String)>, Vec<u8>) {
        let (f, total) = match self.snapshot_file(target) {
            Ok(b) => b,
            Err((st, h, Value::String(x))) => return (st, h, x.into_bytes()),
            Err((st, h, _)) => return (st, h, Vec::new()),
        };
        let span = range.strip_prefix("bytes=").and_then(|r| r.split_once('-')).and_then(|(a, z)| {
            let (a, z) = (a.parse::<usize>().ok()?, z.parse::<usize>().ok()?);
            (a <= z && z < total).then_some((a, z))
        });
        let Some((a, z)) = span else {
            let x = b"<Error><Code>InvalidRange</Code></Error>".to_vec();
            return (416, vec![("Content-Range".into(), format!("bytes */{total}"))], x);
        };
        self.state.lock().unwrap().bytes_served += (z + 1 - a) as u64;
        let headers = vec![
            ("Content-Range".into(), format!("bytes {a}-{z}/{total}")),
            ("x-ms-blob-type".into(), "PageBlob".into()),
            ("Content-Type".into(), "application/octet-stream".into()),
        ];
        let mut bytes = vec![0u8; z + 1 - a];
        read_at(&f, &mut bytes, a);
        (206, headers, bytes)
    }

    /// `range` is the request's `x-ms-range` (`bytes=START-END`), if any.
    pub(super) fn page_diff(&self, target: &str, prev_url: &str, range: &str) -> Reply {
        let mut s = self.state.lock().unwrap();
        s.log.push(format!("GET {}", target.split('?').next().unwrap_or("")));
        let (cur_k, prev_k) = match (granted(&s, target), granted(&s, prev_url)) {
            (Ok(c), Ok(p)) => (c, p),
            (Err(reply), _) | (_, Err(reply)) => return reply,
        };
        if !target.contains("comp=pagelist") {
            return xml_err(400, "InvalidQueryParameterValue");
        }
        let family = |k: &str| s.resources.get(k).map(|r| r["properties"]["incrementalSnapshotFamilyId"].clone());
        if family(&cur_k) != family(&prev_k) || family(&cur_k).is_none() {
            return xml_err(409, "PreviousSnapshotNotFound");
        }
        let (a, b) = match (s.files.get(&prev_k), s.files.get(&cur_k)) {
            (Some(a), Some(b)) => (std::fs::read(a).unwrap(), std::fs::read(b).unwrap()),
            _ => return xml_err(404, "BlobNotFound"),
        };
        let (lo, hi) = match span(range, b.len()) {
            Ok(s) => s,
            Err(reply) => return reply,
        };
        if s.diff_max_span.is_some_and(|m| (hi - lo) as u64 > m) {
            return xml_err(500, "OperationTimedOut");
        }
        const G: usize = 64 * 1024;
        let mut ranges: Vec<(usize, usize, bool)> = Vec::new(); // (start, end exclusive, cleared)
        for (i, cb) in b.chunks(G).enumerate() {
            // Only the asked span, clipped to it.
            let (c0, c1) = (i * G, i * G + cb.len());
            if c1 <= lo || c0 >= hi {
                continue;
            }
            let (c0, c1) = (c0.max(lo), c1.min(hi));
            let cb = &b[c0..c1];
            let ca = a.get(c0..c1.min(a.len())).unwrap_or(&[]);
            if ca == cb {
                continue;
            }
            let cleared = cb.iter().all(|&x| x == 0);
            match ranges.last_mut() {
                Some(r) if r.1 == c0 && r.2 == cleared => r.1 = c1,
                _ => ranges.push((c0, c1, cleared)),
            }
        }
        let xml = page_list_xml(target, s.page, &ranges);
        s.diffs += 1;
        (200, vec![], Value::String(xml))
    }
}

/// `buf.len()` bytes of `f` at `off` (zeros past its end); `buf`.
fn read_at<'a>(f: &std::fs::File, buf: &'a mut [u8], off: usize) -> &'a [u8] {
    use std::os::unix::fs::FileExt;
    buf.fill(0);
    let mut done = 0;
    while done < buf.len() {
        match f.read_at(&mut buf[done..], (off + done) as u64) {
            Ok(0) | Err(_) => break,
            Ok(n) => done += n,
        }
    }
    buf
}

/// Copy a file as a sparse copy: only its data extents are written (a
/// snapshot of a mostly empty disk image costs what it holds).
pub(super) fn sparse_copy(from: &std::path::Path, to: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let src = std::fs::File::open(from)?;
    let len = src.metadata()?.len();
    let dst = std::fs::File::create(to)?;
    dst.set_len(len)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0u64;
    while at < len {
        // SEEK_DATA / SEEK_HOLE: the next extent that holds data.
        let Ok(start) = seek(&src, at, libc::SEEK_DATA) else { break };
        let end = seek(&src, start, libc::SEEK_HOLE).unwrap_or(len).min(len);
        let mut off = start;
        while off < end {
            let n = ((end - off) as usize).min(buf.len());
            src.read_exact_at(&mut buf[..n], off)?;
            if buf[..n].iter().any(|&b| b != 0) {
                dst.write_all_at(&buf[..n], off)?;
            }
            off += n as u64;
        }
        at = end;
    }
    Ok(())
}

fn seek(f: &std::fs::File, at: u64, whence: i32) -> std::io::Result<u64> {
    use std::os::fd::AsRawFd;
    // SAFETY: lseek on an open descriptor has no memory-safety preconditions.
    let r = unsafe { libc::lseek(f.as_raw_fd(), at as i64, whence) };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r as u64)
    }
}

/// An error answer of the Blob service: `status` and `<Code>`.
fn xml_err(status: u16, code: &str) -> Reply {
    (status, vec![], Value::String(format!("<Error><Code>{code}</Code></Error>")))
}

/// The snapshot a signed SAS URL was granted for (its resource key), if the
/// grant is live and a SAS alone may read it (a snapshot whose data access
/// is Entra-only takes no SAS alone).
fn granted(s: &super::SimState, url: &str) -> Result<String, Reply> {
    let Some(k) = token_of(url).and_then(|t| s.grants.get(&t).cloned()) else {
        return Err(xml_err(403, "AuthenticationFailed"));
    };
    if s.resources.get(&k).is_some_and(|r| r["properties"]["dataAccessAuthMode"] == "AzureActiveDirectory") {
        return Err(xml_err(403, "AuthorizationFailure"));
    }
    Ok(k)
}

/// The span an `x-ms-range` of Get Page Ranges asks (`bytes=START-END`,
/// inclusive, whole pages), clipped to `len`; all of it when none is asked.
fn span(range: &str, len: usize) -> Result<(usize, usize), Reply> {
    match range.strip_prefix("bytes=").and_then(|r| r.split_once('-')) {
        Some((a, z)) => match (a.parse::<usize>(), z.parse::<usize>()) {
            (Ok(a), Ok(z)) if a <= z && a % 512 == 0 && (z + 1) % 512 == 0 => Ok((a, (z + 1).min(len))),
            _ => Err(xml_err(416, "InvalidRange")),
        },
        None => Ok((0, len)),
    }
}

/// One page of a `<PageList>`: `ranges` (start, end exclusive, cleared)
/// from the request's `marker`, `page` of them, and the `NextMarker`.
fn page_list_xml(target: &str, page: usize, ranges: &[(usize, usize, bool)]) -> String {
    let skip: usize =
        target.split(['?', '&']).find_map(|q| q.strip_prefix("marker=")).and_then(|m| m.parse().ok()).unwrap_or(0);
    let page = page.max(1);
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"utf-8\"?><PageList>");
    for (start, end, cleared) in ranges.iter().skip(skip).take(page) {
        let tag = if *cleared { "ClearRange" } else { "PageRange" };
        xml.push_str(&format!("<{tag}><Start>{start}</Start><End>{}</End></{tag}>", end - 1));
    }
    if skip + page < ranges.len() {
        xml.push_str(&format!("<NextMarker>{}</NextMarker>", skip + page));
    } else {
        xml.push_str("<NextMarker />");
    }
    xml.push_str("</PageList>");
    xml
}

/// The grant token of a simulator SAS URL, if it is signed.
fn token_of(url: &str) -> Option<String> {
    let rest = url.split("/sas/").nth(1)?;
    let (path, q) = rest.split_once('?')?;
    let tok = path.split('/').next()?;
    q.contains("sig=SIMSAS-SECRET").then(|| tok.to_owned())
}

/// Standard base64 decoding (None on bad input).
pub fn unb64(s: &str) -> Option<Vec<u8>> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let s = s.trim().as_bytes();
    if !s.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    for q in s.chunks(4) {
        let pad = q.iter().rev().take_while(|&&c| c == b'=').count();
        let mut n = 0u32;
        for (i, &c) in q[..4 - pad].iter().enumerate() {
            n |= val(c)? << (18 - 6 * i);
        }
        out.extend((0..3 - pad).map(|i| (n >> (16 - 8 * i)) as u8));
    }
    Some(out)
}

/// Read a blob of the emulator (`http://HOST:PORT/ACCOUNT/CONTAINER/BLOB`,
/// no SAS) into `to`, through Microsoft's Python SDK with the emulator's
/// well-known key: what Azure's disk Import reads.
pub(super) fn fetch_blob(uri: &str, to: &std::path::Path) -> Result<(), String> {
    let rest = uri.split_once("://").map(|x| x.1).ok_or("not a URL")?;
    let mut parts = rest.splitn(4, '/');
    let (host, _account, container, blob) = (
        parts.next().ok_or("no host")?,
        parts.next().ok_or("no account")?,
        parts.next().ok_or("no container")?,
        parts.next().ok_or("no blob")?,
    );
    let endpoint = format!("{}://{host}", uri.split("://").next().unwrap_or("http"));
    let out = std::process::Command::new(crate::pysdk::python())
        .arg(crate::pysdk::repo().join("scripts/lib/azblob.py"))
        .args(["download", &endpoint, container, blob])
        .arg(to)
        .output()
        .map_err(|e| e.to_string())?;
    match out.status.code() {
        Some(0) => Ok(()),
        Some(3) => Err("the blob does not exist".into()),
        _ => Err(String::from_utf8_lossy(&out.stderr).trim().to_owned()),
    }
}
