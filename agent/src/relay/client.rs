//! The sender's HTTP client: one keep-alive connection to the receiver
//! (TLS unless loopback), reconnected when it drops, with retries for what
//! can pass (connection errors, timeouts, 408/429/5xx) and clear errors for
//! what cannot (401, other 4xx). The token travels in a header and appears
//! in no message.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST, RETRY_AFTER};
use hyper::{HeaderMap, Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};

use super::tls::{client_config, Fingerprint};
use super::{ErrorBody, RelayAddress, Token, MAX_CONTROL_BODY};
use crate::sink::WireCounters;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How the sender reaches a receiver.
#[derive(Debug, Clone, Default)]
pub struct RelayOptions {
    pub token: Option<Token>,
    /// Pin the receiver's certificate (self-signed).
    pub fingerprint: Option<Fingerprint>,
    /// Trust this CA (PEM) besides the system's roots.
    pub ca_file: Option<std::path::PathBuf>,
    /// zstd level of the frames (1..=19; default 3).
    pub zstd_level: Option<i32>,
}

/// An answer from the receiver.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Why a request to the receiver failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The connection failed or timed out (worth another try).
    #[error("{0:#}")]
    Transport(anyhow::Error),
    /// The receiver answered with an error.
    #[error("receiver answered {status}: {message}")]
    Status { status: u16, reason: String, message: String, retry_after: Option<Duration> },
}

impl CallError {
    fn retryable(&self) -> bool {
        match self {
            CallError::Transport(_) => true,
            CallError::Status { status, .. } => matches!(status, 408 | 429 | 500 | 502 | 503 | 504),
        }
    }

    /// The receiver's `reason` for an error answer.
    pub fn reason(&self) -> Option<&str> {
        match self {
            CallError::Status { reason, .. } => Some(reason),
            CallError::Transport(_) => None,
        }
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// A connection to one receiver, reopened as needed.
pub struct Client {
    pub rt: tokio::runtime::Runtime,
    addr: RelayAddress,
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
    token: String,
    conn: tokio::sync::Mutex<Option<SendRequest<Full<Bytes>>>>,
    pub counters: Arc<WireCounters>,
    retry_for: Duration,
    /// Connections opened (the first one included).
    pub connects: std::sync::atomic::AtomicU64,
}

impl Client {
    pub fn new(addr: &RelayAddress, opts: &RelayOptions, retry_for: Duration) -> anyhow::Result<Self> {
        let token = opts
            .token
            .as_ref()
            .ok_or_else(|| anyhow!("a relay needs a token: --relay-token-file FILE or ${}", super::TOKEN_ENV))?;
        let tls = if addr.tls {
            let config = client_config(opts.fingerprint, opts.ca_file.as_deref())?;
            let name = ServerName::try_from(addr.host.clone())
                .with_context(|| format!("{:?} is not a valid TLS server name", addr.host))?;
            Some((tokio_rustls::TlsConnector::from(config), name))
        } else {
            None
        };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("diskferry-relay")
            .enable_all()
            .build()
            .context("cannot start the relay client's runtime")?;
        Ok(Self {
            rt,
            addr: addr.clone(),
            tls,
            token: token.header_value(),
            conn: tokio::sync::Mutex::new(None),
            counters: Arc::default(),
            retry_for,
            connects: Default::default(),
        })
    }

    async fn connect(&self) -> anyhow::Result<SendRequest<Full<Bytes>>> {
        let authority = self.addr.authority();
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(&authority))
            .await
            .map_err(|_| anyhow!("connecting to {authority} timed out"))?
            .with_context(|| format!("cannot connect to the receiver at {authority}"))?;
        tcp.set_nodelay(true).ok();
        let io: Box<dyn Io> = match &self.tls {
            Some((connector, name)) => Box::new(
                tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name.clone(), tcp))
                    .await
                    .map_err(|_| anyhow!("TLS handshake with {authority} timed out"))?
                    .with_context(|| format!("TLS handshake with {authority} failed"))?,
            ),
            None => Box::new(tcp),
        };
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .with_context(|| format!("HTTP handshake with {authority} failed"))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        self.connects.fetch_add(1, Relaxed);
        Ok(send)
    }

    /// One request, no retry.
    pub async fn attempt(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Reply, CallError> {
        let mut guard = self.conn.lock().await;
        let r = tokio::time::timeout(timeout, async {
            if guard.as_ref().is_none_or(SendRequest::is_closed) {
                *guard = Some(self.connect().await?);
            }
            let Some(send) = guard.as_mut() else { return Err(anyhow!("no connection")) };
            send.ready().await.context("the connection to the receiver closed")?;
            let req = Request::builder()
                .method(method)
                .uri(path)
                .header(HOST, self.addr.authority())
                .header(AUTHORIZATION, &self.token)
                .header(CONTENT_TYPE, "application/octet-stream")
                .body(Full::new(body))
                .context("building a request")?;
            let resp = send.send_request(req).await.context("the request to the receiver failed")?;
            let (parts, body) = resp.into_parts();
            let body = Limited::new(body, MAX_CONTROL_BODY as usize)
                .collect()
                .await
                .map_err(|e| anyhow!("reading the receiver's answer failed: {e}"))?
                .to_bytes();
            Ok(Reply { status: parts.status, headers: parts.headers, body })
        })
        .await
        .unwrap_or_else(|_| Err(anyhow!("no answer from the receiver within {} s", timeout.as_secs())));
        match r {
            Ok(reply) if reply.status.is_success() => {
                self.counters.requests_ok.fetch_add(1, Relaxed);
                Ok(reply)
            }
            Ok(reply) => {
                self.counters.requests_failed.fetch_add(1, Relaxed);
                let (reason, message) = match serde_json::from_slice::<ErrorBody>(&reply.body) {
                    Ok(e) => (e.reason, e.error),
                    Err(_) => ("http".to_owned(), String::from_utf8_lossy(&reply.body).chars().take(300).collect()),
                };
                if reply.status == StatusCode::UNAUTHORIZED || reply.headers.contains_key(hyper::header::CONNECTION) {
                    *guard = None;
                }
                let status = reply.status.as_u16();
                Err(CallError::Status { status, reason, message, retry_after: retry_after(&reply.headers) })
            }
            Err(e) => {
                self.counters.requests_failed.fetch_add(1, Relaxed);
                *guard = None;
                Err(CallError::Transport(e))
            }
        }
    }

    /// A request, retried with backoff while the error can pass and the
    /// retry budget lasts. `before_retry` may settle the request without
    /// sending it again (a window the receiver applied after all).
    pub async fn call_with(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
        timeout: Duration,
        mut before_retry: impl AsyncFnMut() -> Option<Reply>,
    ) -> Result<Reply, CallError> {
        let started = Instant::now();
        let mut delay = Duration::from_millis(100);
        let mut attempt = 0u32;
        loop {
            if attempt > 0 {
                if let Some(r) = before_retry().await {
                    return Ok(r);
                }
            }
            match self.attempt(method.clone(), path, body.clone(), timeout).await {
                Ok(r) => return Ok(r),
                Err(e) if e.retryable() && started.elapsed() + delay < self.retry_for => {
                    attempt += 1;
                    self.counters.retries.fetch_add(1, Relaxed);
                    // At least as long as the receiver asks (capped), else the backoff.
                    let asked = match &e {
                        CallError::Status { retry_after: Some(d), .. } => (*d).min(Duration::from_secs(30)),
                        _ => Duration::ZERO,
                    };
                    tokio::time::sleep(jitter(delay).max(asked)).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// A request, retried as [`Client::call_with`] says, from a thread outside the runtime.
    pub fn call(&self, method: Method, path: &str, body: Bytes, timeout: Duration) -> Result<Reply, CallError> {
        self.rt.block_on(self.call_with(method, path, body, timeout, async || None))
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Client({})", self.addr)
    }
}

fn retry_after(h: &HeaderMap) -> Option<Duration> {
    h.get(RETRY_AFTER)?.to_str().ok()?.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// `d` ± 25%, from the clock's low bits (no need for a random generator).
fn jitter(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |t| t.subsec_nanos());
    let f = 0.75 + f64::from(nanos % 1000) / 2000.0;
    d.mul_f64(f)
}
