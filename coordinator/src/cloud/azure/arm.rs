//! A small Azure Resource Manager client: authenticated JSON requests with
//! pinned api-versions, the long-running-operation protocol, throttling and
//! ARM error bodies. Blocking (the coordinator's runs are threads).
//!
//! - **LRO**: an initial 201/202 is followed to its end: `Azure-AsyncOperation`
//!   when given (its body's `status` until Succeeded / Failed / Canceled),
//!   else `Location` (202 while running, then the final body). `Retry-After`
//!   sets the poll interval (bounded); the whole operation has a deadline.
//! - **Throttling**: 429 and 5xx are retried after `Retry-After` (or a
//!   backoff), within a time budget; every retry is counted. When an
//!   `x-ms-ratelimit-remaining-*` header says a bucket is nearly empty, the
//!   client pauses a second before going on.
//! - **Errors**: `{"error": {"code", "message", "target"}}` becomes one line
//!   naming the operation, the HTTP status and ARM's code. The bearer token
//!   never appears in an error, a log line or a Debug print.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use reqwest::blocking::{Client, Response};
use reqwest::header::{HeaderMap, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use serde_json::Value;

/// Where bearer tokens come from (managed identity, CLI, a fixed token in tests).
pub trait TokenSource: Send + Sync {
    /// A token for `https://management.azure.com/.default`.
    fn token(&self) -> Result<String>;
}

/// A token that never changes (tests, or one obtained out of band).
pub struct StaticToken(pub String);

impl TokenSource for StaticToken {
    fn token(&self) -> Result<String> {
        Ok(self.0.clone())
    }
}

impl std::fmt::Debug for StaticToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StaticToken(<redacted>)")
    }
}

/// An error ARM returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArmError {
    pub operation: String,
    /// HTTP status; 0 when a long-running operation ended Failed or Canceled.
    pub status: u16,
    pub code: String,
    pub message: String,
    pub target: Option<String>,
    /// The causes under it (`error.details`: CRP puts the real one there),
    /// as `CODE: message`, nested ones flattened in order.
    pub details: Vec<String>,
}

impl std::fmt::Display for ArmError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.status == 0 {
            // A long-running operation that ended badly (its poll was a 200).
            write!(f, "{}: the operation ended {}: {}", self.operation, self.code, self.message)?;
        } else {
            write!(f, "{}: HTTP {} {}: {}", self.operation, self.status, self.code, self.message)?;
        }
        if let Some(t) = &self.target {
            write!(f, " (target {t})")?;
        }
        if !self.details.is_empty() {
            write!(f, " [{}]", self.details.join("; "))?;
        }
        Ok(())
    }
}

impl std::error::Error for ArmError {}

impl ArmError {
    /// Parse an ARM error body (or make do with the status line).
    pub fn from_body(operation: &str, status: u16, body: &[u8]) -> Self {
        let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let e = if v["error"].is_object() { &v["error"] } else { &v };
        let text = |k: &str| e[k].as_str().map(str::to_owned);
        Self {
            operation: operation.to_owned(),
            status,
            code: text("code").unwrap_or_else(|| {
                StatusCode::from_u16(status).ok().and_then(|s| s.canonical_reason()).unwrap_or("Error").replace(' ', "")
            }),
            message: text("message").unwrap_or_else(|| "(no error body)".into()),
            target: text("target"),
            details: details(e),
        }
    }
}

/// `details` of an ARM `ErrorDetail` (common-types v5 `types.json`:
/// `code`, `message`, `target`, `details[]`), depth first, at most 8.
fn details(e: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack: Vec<&Value> = e["details"].as_array().into_iter().flatten().rev().collect();
    while let Some(d) = stack.pop() {
        if out.len() == 8 {
            break;
        }
        let code = d["code"].as_str().unwrap_or("Error");
        let message = d["message"].as_str().unwrap_or_default();
        out.push(format!("{code}: {message}").trim_end_matches([' ', ':']).to_owned());
        stack.extend(d["details"].as_array().into_iter().flatten().rev());
    }
    out
}

/// Counters of one client.
#[derive(Debug, Default)]
pub struct ArmCounters {
    pub requests: AtomicU64,
    pub throttled: AtomicU64,
    pub retries: AtomicU64,
    pub polls: AtomicU64,
    /// Pauses taken because ARM said few requests remain in a bucket.
    pub paced: AtomicU64,
}

/// Below this many requests left in any `x-ms-ratelimit-remaining-*`
/// bucket, the client slows down before ARM starts answering 429.
const LOW_REMAINING: u64 = 10;
/// How long it pauses then (buckets refill every second or so).
const PACE: Duration = Duration::from_secs(1);

/// The smallest `x-ms-ratelimit-remaining-*` value among the headers. ARM's
/// own are plain counts (`x-ms-ratelimit-remaining-subscription-reads:
/// 11999`); Compute's name their buckets, several in one header
/// (`x-ms-ratelimit-remaining-resource: Microsoft.Compute/HighCostGet3Min;159,
/// Microsoft.Compute/HighCostGet30Min;1299`).
fn remaining(headers: &HeaderMap) -> Option<u64> {
    headers
        .iter()
        .filter(|(k, _)| k.as_str().starts_with("x-ms-ratelimit-remaining-"))
        .filter_map(|(_, v)| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|bucket| bucket.rsplit(';').next()?.trim().parse::<u64>().ok())
        .min()
}

/// How long to keep at it.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Give up retrying one request (429/5xx/transport) after this long.
    pub retry_for: Duration,
    /// Give up on a long-running operation after this long.
    pub operation_deadline: Duration,
    /// Poll interval when the service gives no Retry-After, and the cap on one it gives.
    pub default_poll: Duration,
    pub max_poll: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            retry_for: Duration::from_secs(300),
            operation_deadline: Duration::from_secs(3600),
            default_poll: Duration::from_secs(5),
            max_poll: Duration::from_secs(60),
        }
    }
}

/// The client.
pub struct Arm {
    http: Client,
    base: String,
    token: Box<dyn TokenSource>,
    pub limits: Limits,
    pub counters: ArmCounters,
}

impl std::fmt::Debug for Arm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Arm").field("base", &self.base).field("limits", &self.limits).finish_non_exhaustive()
    }
}

/// A response worth keeping: status, the headers the protocol reads, body.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
    }

    fn retry_after(&self) -> Option<Duration> {
        self.header(RETRY_AFTER.as_str()).and_then(|v| v.trim().parse::<u64>().ok()).map(Duration::from_secs)
    }
}

impl Arm {
    /// A client for `base` (`https://management.azure.com`, or a simulator).
    pub fn new(base: &str, token: Box<dyn TokenSource>) -> Result<Self> {
        let http = Client::builder()
            .timeout(Duration::from_secs(120))
            .connect_timeout(Duration::from_secs(20))
            .user_agent(concat!("diskferry/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("cannot build the HTTP client")?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            token,
            limits: Limits::default(),
            counters: ArmCounters::default(),
        })
    }

    fn url(&self, path: &str) -> String {
        if path.starts_with("http://") || path.starts_with("https://") {
            path.to_owned()
        } else {
            format!("{}{path}", self.base)
        }
    }

    /// One request, retried on 429, 5xx and transport errors. Returns any
    /// other status as is (the caller decides what is an error).
    pub fn send(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Reply> {
        self.send_as(method, path, body, false)
    }

    /// A poll of a long-running operation's status URL. A 5xx carrying an
    /// ARM error body is the operation's end ("if the operation fails, the
    /// Location URI returns the appropriate 4xx or 5xx status code and error
    /// body": ARM's async operation protocol), returned at once; a 5xx
    /// without one (a gateway's) is retried like any other.
    fn poll(&self, url: &str) -> Result<Reply> {
        self.send_as(Method::GET, url, None, true)
    }

    fn send_as(&self, method: Method, path: &str, body: Option<&Value>, poll: bool) -> Result<Reply> {
        let started = Instant::now();
        let op = format!("{method} {}", strip_query(path));
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            self.counters.requests.fetch_add(1, Ordering::Relaxed);
            let token = self.token.token().with_context(|| format!("{op}: no ARM token"))?;
            let mut req =
                self.http.request(method.clone(), self.url(path)).header(AUTHORIZATION, format!("Bearer {token}"));
            if let Some(b) = body {
                req = req.header(CONTENT_TYPE, "application/json").body(serde_json::to_vec(b)?);
            }
            let wait = match req.send() {
                Ok(resp) => {
                    let reply = read(resp)?;
                    let s = reply.status;
                    let final_failure = poll && s >= 500 && is_arm_error(&reply.body);
                    if s != 429 && !(500..600).contains(&s) || final_failure {
                        if remaining(&reply.headers).is_some_and(|r| r < LOW_REMAINING) {
                            self.counters.paced.fetch_add(1, Ordering::Relaxed);
                            std::thread::sleep(PACE);
                        }
                        return Ok(reply);
                    }
                    if s == 429 {
                        self.counters.throttled.fetch_add(1, Ordering::Relaxed);
                    }
                    let wait = reply.retry_after().unwrap_or_else(|| backoff(attempt));
                    if started.elapsed() + wait > self.limits.retry_for {
                        return Err(ArmError::from_body(&op, s, &reply.body).into());
                    }
                    wait
                }
                Err(e) => {
                    let wait = backoff(attempt);
                    if started.elapsed() + wait > self.limits.retry_for {
                        // reqwest errors name the URL (ours, no secret) but never headers.
                        bail!("{op}: {e}");
                    }
                    wait
                }
            };
            self.counters.retries.fetch_add(1, Ordering::Relaxed);
            std::thread::sleep(wait);
        }
    }

    /// GET a resource; `None` if it does not exist (404).
    /// A bearer token as the requests get it (for preflight to name whom
    /// it was issued to; never shown).
    pub fn token(&self) -> Result<String> {
        self.token.token()
    }

    pub fn get(&self, path: &str) -> Result<Option<Value>> {
        let r = self.send(Method::GET, path, None)?;
        match r.status {
            200 => Ok(Some(r.json())),
            404 => Ok(None),
            s => Err(ArmError::from_body(&format!("GET {}", strip_query(path)), s, &r.body).into()),
        }
    }

    /// PUT a resource and wait for it: the resource as finally provisioned.
    pub fn put(&self, path: &str, body: &Value) -> Result<Value> {
        let op = format!("PUT {}", strip_query(path));
        let r = self.send(Method::PUT, path, Some(body))?;
        match r.status {
            200..=202 => {
                self.follow(&op, &r)?;
                // The final state of a PUT is the resource itself; without
                // LRO headers, its provisioningState says when it is done.
                let started = Instant::now();
                loop {
                    let v = self.get(path)?.ok_or_else(|| anyhow!("{op}: the resource is gone after creation"))?;
                    match v["properties"]["provisioningState"].as_str() {
                        Some("Failed") | Some("Canceled") => {
                            bail!("{op}: provisioningState {}", v["properties"]["provisioningState"])
                        }
                        None | Some("Succeeded") => return Ok(v),
                        Some(_) if started.elapsed() > self.limits.operation_deadline => {
                            bail!("{op}: not provisioned after {} s", self.limits.operation_deadline.as_secs())
                        }
                        Some(_) => {
                            self.counters.polls.fetch_add(1, Ordering::Relaxed);
                            std::thread::sleep(self.limits.default_poll)
                        }
                    }
                }
            }
            s => Err(ArmError::from_body(&op, s, &r.body).into()),
        }
    }

    /// POST an action and wait for it: the operation's output, if any.
    pub fn post(&self, path: &str, body: Option<&Value>) -> Result<Value> {
        let op = format!("POST {}", strip_query(path));
        let r = self.send(Method::POST, path, body)?;
        match r.status {
            // An action's result is at its Location once the operation
            // is done (`final-state-via: location`: Snapshots_GrantAccess,
            // Disks_GrantAccess), whatever else the first reply names.
            200 | 201 | 202 | 204 => self.follow_to(&op, &r, true),
            s => Err(ArmError::from_body(&op, s, &r.body).into()),
        }
    }

    /// PATCH a resource (tags, say) and wait for it: the final body.
    pub fn patch(&self, path: &str, body: &Value) -> Result<Value> {
        let op = format!("PATCH {}", strip_query(path));
        let r = self.send(Method::PATCH, path, Some(body))?;
        match r.status {
            200..=202 => self.follow(&op, &r),
            s => Err(ArmError::from_body(&op, s, &r.body).into()),
        }
    }

    /// DELETE a resource and wait until it is gone; deleting what does not
    /// exist succeeds.
    pub fn delete(&self, path: &str) -> Result<()> {
        let op = format!("DELETE {}", strip_query(path));
        let r = self.send(Method::DELETE, path, None)?;
        match r.status {
            200 | 202 | 204 => self.follow(&op, &r).map(|_| ()),
            404 => Ok(()),
            s => Err(ArmError::from_body(&op, s, &r.body).into()),
        }
    }

    /// Follow an operation from its first reply to the end; returns the
    /// final body (`properties.output` of an async operation, or the
    /// Location's final body, or the first reply's body when synchronous).
    fn follow(&self, op: &str, first: &Reply) -> Result<Value> {
        self.follow_to(op, first, false)
    }

    /// [`Self::follow`]; with `final_at_location`, an operation followed by
    /// its `Azure-AsyncOperation` ends with a GET of its `Location` (when
    /// the first reply named one), whose body is the result.
    fn follow_to(&self, op: &str, first: &Reply, final_at_location: bool) -> Result<Value> {
        let async_op = first.header("azure-asyncoperation");
        let location = first.header("location");
        if first.status != 202 && first.status != 201 || (async_op.is_none() && location.is_none()) {
            return Ok(first.json());
        }
        let started = Instant::now();
        let mut wait = self.poll_wait(first);
        loop {
            if started.elapsed() > self.limits.operation_deadline {
                bail!("{op}: still running after {} s; gave up", self.limits.operation_deadline.as_secs());
            }
            std::thread::sleep(wait);
            self.counters.polls.fetch_add(1, Ordering::Relaxed);
            if let Some(url) = &async_op {
                let r = self.poll(url)?;
                if r.status != 200 {
                    return Err(ArmError::from_body(op, r.status, &r.body).into());
                }
                let v = r.json();
                match v["status"].as_str().unwrap_or("InProgress") {
                    "Succeeded" => match &location {
                        Some(url) if final_at_location => {
                            let r = self.poll(url)?;
                            return match r.status {
                                200 | 201 | 204 => Ok(r.json()),
                                s => Err(ArmError::from_body(op, s, &r.body).into()),
                            };
                        }
                        _ => return Ok(v["properties"]["output"].clone()),
                    },
                    "Failed" | "Canceled" => {
                        let mut e = ArmError::from_body(op, 0, &r.body);
                        e.code = format!("{} ({})", v["status"].as_str().unwrap_or("Failed"), e.code);
                        return Err(e.into());
                    }
                    _ => wait = self.poll_wait(&r),
                }
            } else if let Some(url) = &location {
                let r = self.poll(url)?;
                match r.status {
                    202 => wait = self.poll_wait(&r),
                    200 | 201 | 204 => return Ok(r.json()),
                    s => return Err(ArmError::from_body(op, s, &r.body).into()),
                }
            }
        }
    }

    fn poll_wait(&self, r: &Reply) -> Duration {
        r.retry_after().unwrap_or(self.limits.default_poll).min(self.limits.max_poll)
    }
}

/// A body of ARM's error shape: `{"error": {"code": ...}}`.
fn is_arm_error(body: &[u8]) -> bool {
    serde_json::from_slice::<Value>(body).is_ok_and(|v| v["error"]["code"].is_string())
}

fn read(resp: Response) -> Result<Reply> {
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.bytes().map(|b| b.to_vec()).unwrap_or_default();
    Ok(Reply { status, headers, body })
}

/// Exponential backoff with jitter: 0.5..1.0 × min(2^n, 30) seconds.
fn backoff(attempt: u32) -> Duration {
    let base = Duration::from_secs(1u64 << attempt.min(5)).min(Duration::from_secs(30));
    let jitter = (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos())
        % 500) as f64
        / 1000.0;
    base.mul_f64(0.5 + jitter)
}

fn strip_query(path: &str) -> &str {
    path.split('?').next().unwrap_or(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_become_one_line() {
        let e = ArmError::from_body(
            "PUT /x",
            409,
            br#"{"error":{"code":"OperationNotAllowed","message":"Quota exceeded.","target":"vmSize"}}"#,
        );
        assert_eq!(e.to_string(), "PUT /x: HTTP 409 OperationNotAllowed: Quota exceeded. (target vmSize)");
        // CRP's real cause is in `details`, nested as the common types allow.
        let e = ArmError::from_body(
            "PUT /vm",
            400,
            br#"{"error":{"code":"InvalidParameter","message":"The request is invalid.","details":[
                {"code":"SkuNotAvailable","message":"Standard_D4s_v5 is not available in westeurope.",
                 "details":[{"code":"Zone","message":"zone 2"}]},
                {"code":"QuotaExceeded","message":"8 cores left."}]}}"#,
        );
        assert_eq!(
            e.to_string(),
            "PUT /vm: HTTP 400 InvalidParameter: The request is invalid. [SkuNotAvailable: Standard_D4s_v5 is \
             not available in westeurope.; Zone: zone 2; QuotaExceeded: 8 cores left.]"
        );
        let e = ArmError::from_body("GET /y", 503, b"<html>");
        assert_eq!(e.code, "ServiceUnavailable");
        assert!(format!("{:?}", StaticToken("SECRET".into())).contains("redacted"));
    }

    #[test]
    fn the_emptiest_rate_limit_bucket_counts_whatever_the_header_looks_like() {
        let mut h = HeaderMap::new();
        h.insert("x-ms-ratelimit-remaining-subscription-reads", "11999".parse().unwrap());
        assert_eq!(remaining(&h), Some(11999));
        // Compute's: named buckets, several in one header.
        h.insert(
            "x-ms-ratelimit-remaining-resource",
            "Microsoft.Compute/HighCostGet3Min;159,Microsoft.Compute/HighCostGet30Min;1299".parse().unwrap(),
        );
        assert_eq!(remaining(&h), Some(159));
        h.insert("x-ms-ratelimit-remaining-resource", "Microsoft.Compute/PutVM3Min;4".parse().unwrap());
        assert!(remaining(&h).is_some_and(|r| r < LOW_REMAINING));
    }
}
