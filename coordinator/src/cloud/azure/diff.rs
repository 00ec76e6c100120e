//! What changed between two incremental snapshots of one disk: Get Page
//! Ranges on the newer snapshot's SAS with `x-ms-previous-snapshot-url` set
//! to the older one's (the storage SDK has no call for it, so this is a raw
//! request). Both page ranges (written) and clear ranges (now zero) count as
//! changed. Long answers come in pages joined by `NextMarker`.
//!
//! SAS URLs are secrets: no error made here carries one.

use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

/// The service version that has `x-ms-previous-snapshot-url` (2019-07-07+).
const VERSION: &str = "2021-08-06";

/// Changed byte ranges `[offset, length]` of `current` since `previous`
/// (both read SAS URLs of incremental snapshots of the same disk), asked
/// for `segment` bytes of the disk at a time (`x-ms-range`), each segment's
/// answer paged by `NextMarker`: one request over a large, fragmented
/// snapshot can time out on the service's side ("retrieve a subset of the
/// page ranges at a time": Get Page Ranges, Azure Storage REST reference).
pub fn changed_ranges(current: &str, previous: &str, segment: u64) -> Result<Vec<[u64; 2]>> {
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(300))
        .build()
        .context("cannot build the HTTP client")?;
    let size = blob_size(&http, current)?;
    let segment = segment.max(512) / 512 * 512;
    let mut out = Vec::new();
    let mut start = 0u64;
    while start < size {
        let end = start.saturating_add(segment).min(size);
        out.extend(segment_ranges(&http, current, previous, start, end)?);
        start = end;
    }
    Ok(out)
}

/// The snapshot's size (Get Blob Properties on its SAS).
fn blob_size(http: &reqwest::blocking::Client, url: &str) -> Result<u64> {
    let resp = http
        .head(url)
        .header("x-ms-version", VERSION)
        .send()
        .map_err(|e| anyhow!("page range diff: reading the snapshot's size: {}", e.without_url()))?;
    if !resp.status().is_success() {
        bail!("page range diff: reading the snapshot's size: HTTP {}", resp.status().as_u16());
    }
    resp.headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow!("page range diff: the snapshot's properties have no Content-Length"))
}

/// The changed ranges within `[start, end)`, every page of them.
fn segment_ranges(
    http: &reqwest::blocking::Client,
    current: &str,
    previous: &str,
    start: u64,
    end: u64,
) -> Result<Vec<[u64; 2]>> {
    let mut out = Vec::new();
    let mut marker: Option<String> = None;
    for _page in 0..100_000 {
        let mut url = format!("{current}&comp=pagelist");
        if let Some(m) = &marker {
            let enc: String = url::form_urlencoded::byte_serialize(m.as_bytes()).collect();
            url.push_str(&format!("&marker={enc}"));
        }
        let resp = http
            .get(&url)
            .header("x-ms-version", VERSION)
            .header("x-ms-range", format!("bytes={start}-{}", end - 1))
            .header("x-ms-previous-snapshot-url", previous)
            .send()
            .map_err(|e| anyhow!("page range diff: {}", e.without_url()))?;
        let status = resp.status();
        let body = resp.text().map_err(|e| anyhow!("page range diff: {}", e.without_url()))?;
        if !status.is_success() {
            bail!(
                "page range diff: bytes {start}-{}: HTTP {} {}",
                end - 1,
                status.as_u16(),
                error_code(&body).unwrap_or("(no code)")
            );
        }
        let (ranges, next) = parse_page_list(&body)?;
        out.extend(ranges);
        match next {
            Some(m) => marker = Some(m),
            None => return Ok(out),
        }
    }
    bail!("page range diff: too many pages")
}

/// `<Code>` of a storage error body.
fn error_code(body: &str) -> Option<&str> {
    between(body, "<Code>", "</Code>")
}

fn between<'a>(s: &'a str, open: &str, close: &str) -> Option<&'a str> {
    let start = s.find(open)? + open.len();
    let end = s[start..].find(close)? + start;
    Some(&s[start..end])
}

/// The ranges of one `<PageList>` answer and its `NextMarker`, if any.
/// `<Start>` and `<End>` are inclusive byte offsets.
pub fn parse_page_list(xml: &str) -> Result<(Vec<[u64; 2]>, Option<String>)> {
    if !xml.contains("<PageList") {
        bail!("page range diff: the answer is not a PageList");
    }
    let mut out = Vec::new();
    for tag in ["PageRange", "ClearRange"] {
        let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
        let mut rest = xml;
        while let Some(i) = rest.find(&open) {
            let body_start = i + open.len();
            let end = rest[body_start..].find(&close).ok_or_else(|| anyhow!("page range diff: unclosed {tag}"))?;
            let item = &rest[body_start..body_start + end];
            let num = |k: &str| -> Result<u64> {
                between(item, &format!("<{k}>"), &format!("</{k}>"))
                    .and_then(|v| v.trim().parse().ok())
                    .ok_or_else(|| anyhow!("page range diff: {tag} without a numeric {k}"))
            };
            let (start, last) = (num("Start")?, num("End")?);
            if last < start {
                bail!("page range diff: {tag} ends ({last}) before it starts ({start})");
            }
            out.push([start, last - start + 1]);
            rest = &rest[body_start + end + close.len()..];
        }
    }
    let next = between(xml, "<NextMarker>", "</NextMarker>").map(str::trim).filter(|m| !m.is_empty());
    Ok((out, next.map(str::to_owned)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_lists_parse() {
        let xml = "<?xml version=\"1.0\" encoding=\"utf-8\"?><PageList>\
            <PageRange><Start>0</Start><End>511</End></PageRange>\
            <ClearRange><Start>1048576</Start><End>2097151</End></ClearRange>\
            <PageRange><Start>4096</Start><End>8191</End></PageRange>\
            <NextMarker>2!abc</NextMarker></PageList>";
        let (r, next) = parse_page_list(xml).unwrap();
        assert_eq!(r, vec![[0, 512], [4096, 4096], [1 << 20, 1 << 20]]);
        assert_eq!(next.as_deref(), Some("2!abc"));
        let (r, next) = parse_page_list("<PageList><NextMarker /></PageList>").unwrap();
        assert!(r.is_empty() && next.is_none());
        assert!(parse_page_list("<Error><Code>x</Code></Error>").is_err());
        assert!(parse_page_list("<PageList><PageRange><Start>9</Start><End>1</End></PageRange></PageList>").is_err());
        assert!(parse_page_list("<PageList><PageRange><Start>a</Start><End>1</End></PageRange></PageList>").is_err());
        assert_eq!(error_code("<Error><Code>AuthenticationFailed</Code></Error>"), Some("AuthenticationFailed"));
    }
}
