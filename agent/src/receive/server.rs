//! `diskferry-agent receive`: the HTTP(S) server of the relay. It checks the
//! token of every request before anything else, bounds every body, routes
//! calls to the disk's [`Session`], and writes under its root: a `file:`
//! folder (`DISK.vhd`) or a `pageblob:` container (`DISK.vhd`).

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::Bytes;
use diskferry_core::geometry::{ChunkSize, Geometry};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

use super::grants::Grant;
use super::metrics::ReceiverMetrics;
use super::session::{Reject, Session};
use crate::open::{open_sink, SyncOptions, Target};
use crate::relay::{check_disk_name, BeginRequest, ErrorBody, OpenRequest, MAX_BODY, SESSION_HEADER};
use diskferry_blob::address::{redact, BlobAddress};

/// Where a receiver writes its disks.
#[derive(Clone, PartialEq, Eq)]
pub enum Root {
    /// `file:DIR`: `DIR/DISK.vhd`, manifests beside them.
    Folder(PathBuf),
    /// `pageblob:URL` of a container: blob `DISK.vhd` in it.
    Container(String),
}

impl std::fmt::Debug for Root {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Root::Folder(p) => write!(f, "file:{}", p.display()),
            Root::Container(u) => write!(f, "pageblob:{}", redact(u)),
        }
    }
}

impl std::str::FromStr for Root {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once(':') {
            Some(("file", dir)) if !dir.is_empty() => Ok(Root::Folder(PathBuf::from(dir))),
            Some(("pageblob", url)) => {
                // The container must parse as one once a blob name is added.
                let root = Root::Container(url.trim_end_matches('/').to_owned());
                root.target("probe").map_err(|e| format!("{e:#}"))?;
                Ok(root)
            }
            _ => Err(format!("{:?} is not a receiver root: use file:DIR or pageblob:CONTAINER-URL", redact(s))),
        }
    }
}

impl Root {
    /// The destination of disk `disk`.
    pub fn target(&self, disk: &str) -> anyhow::Result<Target> {
        check_disk_name(disk)?;
        Ok(match self {
            Root::Folder(dir) => Target::File(dir.join(format!("{disk}.vhd"))),
            Root::Container(url) => {
                let (base, query) = match url.split_once('?') {
                    Some((b, q)) => (b, Some(q)),
                    None => (url.as_str(), None),
                };
                let full = match query {
                    Some(q) => format!("{base}/{disk}.vhd?{q}"),
                    None => format!("{base}/{disk}.vhd"),
                };
                Target::PageBlob(BlobAddress::parse(&full).context("the receiver's root is not a container URL")?)
            }
        })
    }
}

/// How a receiver runs.
#[derive(Debug)]
pub struct ReceiverConfig {
    pub listen: SocketAddr,
    pub root: Root,
    /// The tokens and what each may do.
    pub tokens: super::grants::Grants,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Options of the sinks (page blob concurrency, keep, api version...).
    pub sink: SyncOptions,
    /// A session untouched this long is closed.
    pub idle: Duration,
    pub max_sessions: usize,
}

struct State {
    cfg: ReceiverConfig,
    sessions: Mutex<HashMap<String, Arc<Session>>>,
    /// One open at a time: an open replaces the disk's older session.
    opening: tokio::sync::Mutex<()>,
    metrics: Arc<ReceiverMetrics>,
    next_id: AtomicU64,
}

impl State {
    /// Remove the sessions `pick` selects and close them (each lets go of its
    /// destination first); returns how many sessions remain open.
    async fn close_where(&self, pick: impl Fn(&str, &Session) -> bool) -> usize {
        let (gone, left) = match self.sessions.lock() {
            Ok(mut m) => {
                let ids: Vec<String> = m.iter().filter(|(k, s)| pick(k, s)).map(|(k, _)| k.clone()).collect();
                let gone: Vec<Arc<Session>> = ids.iter().filter_map(|k| m.remove(k)).collect();
                self.metrics.sessions.set(m.len() as i64);
                (gone, m.len())
            }
            Err(_) => (Vec::new(), 0),
        };
        for s in gone {
            s.close().await;
        }
        left
    }
}

/// At most this many connections at once; more are closed as they come.
/// A sender uses a few (one per window in flight).
pub const MAX_CONNECTIONS: usize = 256;
/// A request's headers must arrive within this, the first one and each
/// next one on a kept-alive connection: a connection that sends nothing for
/// this long is closed.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// Bind and serve until the process ends. Returns the bound address once
/// listening; the server runs on `rt`.
pub fn start(
    rt: &tokio::runtime::Runtime,
    cfg: ReceiverConfig,
    metrics: Arc<ReceiverMetrics>,
) -> anyhow::Result<SocketAddr> {
    if cfg.tls.is_none() && !cfg.listen.ip().is_loopback() {
        bail!(
            "refusing to listen on {} without TLS: give --tls-cert and --tls-key (plain http only on loopback)",
            cfg.listen
        );
    }
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(cfg.listen))
        .with_context(|| format!("cannot listen on {}", cfg.listen))?;
    let bound = listener.local_addr()?;
    let acceptor = cfg.tls.clone().map(tokio_rustls::TlsAcceptor::from);
    let state = Arc::new(State {
        cfg,
        sessions: Mutex::default(),
        opening: tokio::sync::Mutex::new(()),
        metrics,
        next_id: AtomicU64::new(1),
    });
    rt.spawn(reap_idle(state.clone()));
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    rt.spawn(async move {
        loop {
            let tcp = match listener.accept().await {
                Ok((tcp, _peer)) => tcp,
                // Out of file descriptors, say: pause instead of spinning.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            // Over the cap, a connection is closed as it comes: idle ones
            // cannot take every descriptor (the cap's holders are let go
            // within HEADER_TIMEOUT when they send nothing).
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                state.metrics.reject("connections");
                drop(tcp);
                continue;
            };
            tcp.set_nodelay(true).ok();
            let (state, acceptor) = (state.clone(), acceptor.clone());
            tokio::spawn(async move {
                let _permit = permit;
                let io: Box<dyn Io> = match acceptor {
                    Some(a) => match tokio::time::timeout(Duration::from_secs(10), a.accept(tcp)).await {
                        Ok(Ok(s)) => Box::new(s),
                        _ => return,
                    },
                    None => Box::new(tcp),
                };
                let svc = hyper::service::service_fn(move |req| {
                    let state = state.clone();
                    async move { Ok::<_, Infallible>(handle(&state, req).await) }
                });
                // Without a timer hyper has no header-read timeout: a client
                // that sends nothing would hold its connection forever.
                let _ = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .serve_connection(TokioIo::new(io), svc)
                    .await;
            });
        }
    });
    Ok(bound)
}

async fn reap_idle(state: Arc<State>) {
    loop {
        tokio::time::sleep(Duration::from_secs(5).min(state.cfg.idle)).await;
        let idle = state.cfg.idle;
        state.close_where(|_, s| s.idle_for() >= idle).await;
    }
}

fn reply(status: u16, body: Bytes, ctype: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(v) = ctype.parse() {
        r.headers_mut().insert(CONTENT_TYPE, v);
    }
    r
}

fn refuse(state: &State, e: &Reject) -> Response<Full<Bytes>> {
    state.metrics.reject(e.reason);
    let body = ErrorBody { error: e.message.clone(), reason: e.reason.to_owned() };
    let mut r = reply(e.status, Bytes::from(serde_json::to_vec(&body).unwrap_or_default()), "application/json");
    if matches!(e.status, 401 | 413) {
        // The body was not read: the connection cannot carry another request.
        r.headers_mut().insert(CONNECTION, hyper::header::HeaderValue::from_static("close"));
    }
    if e.status == 401 {
        r.headers_mut().insert(WWW_AUTHENTICATE, hyper::header::HeaderValue::from_static("Bearer"));
    }
    r
}

/// Read a whole body of at most `limit` bytes.
async fn body(req: Request<Incoming>, limit: u64) -> Result<Bytes, Reject> {
    body_into(req, limit, Vec::new()).await.map(Bytes::from)
}

/// Read a body into `buf` (reused: its pages are already there).
async fn body_into(req: Request<Incoming>, limit: u64, mut buf: Vec<u8>) -> Result<Vec<u8>, Reject> {
    let too_large = || Reject::new(413, "too_large", format!("the body is larger than the limit of {limit} bytes"));
    let declared = req.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    buf.clear();
    buf.reserve(declared.unwrap_or(0) as usize);
    let mut body = req.into_body();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| Reject::new(400, "request", format!("reading the body failed: {e}")))?;
        if let Ok(data) = frame.into_data() {
            if (buf.len() + data.len()) as u64 > limit {
                return Err(too_large());
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf)
}

async fn handle(state: &Arc<State>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let Some(grant) = state.cfg.tokens.admit(req.headers().get(AUTHORIZATION).map(|v| v.as_bytes())) else {
        return refuse(state, &Reject::new(401, "token", "a valid bearer token is required"));
    };
    match route(state, req, grant).await {
        Ok(r) => r,
        Err(e) => refuse(state, &e),
    }
}

/// Session `id`, if it is of a disk `grant` names (another token's session
/// is as good as absent).
fn session(state: &State, id: &str, grant: &Grant) -> Result<Arc<Session>, Reject> {
    let found = state.sessions.lock().ok().and_then(|m| m.get(id).cloned()).filter(|s| grant.disk(&s.disk));
    found.ok_or_else(|| {
        Reject::new(
            404,
            "session",
            format!("no session {id} here (the receiver restarted, or it expired): sync again to resume"),
        )
    })
}

async fn route(state: &Arc<State>, req: Request<Incoming>, grant: &Grant) -> Result<Response<Full<Bytes>>, Reject> {
    let path: Vec<String> = req.uri().path().trim_matches('/').split('/').map(str::to_owned).collect();
    let parts: Vec<&str> = path.iter().map(String::as_str).collect();
    let method = req.method().clone();
    let no_content = || reply(204, Bytes::new(), "text/plain");
    match (&method, parts.as_slice()) {
        (&Method::POST, ["v1", "disks", disk, "sessions"]) => {
            let disk = disk.to_string();
            if !grant.disk(&disk) {
                return Err(Reject::new(403, "token", format!("this token may not write disk {disk}")));
            }
            let b = body(req, 64 << 10).await?;
            let (id, prior) = open(state, disk, &b, grant).await?;
            let mut r = reply(200, Bytes::from(prior), "application/octet-stream");
            if let Ok(v) = id.parse() {
                r.headers_mut().insert(SESSION_HEADER, v);
            }
            Ok(r)
        }
        (&Method::POST, ["v1", "sessions", id, "begin"]) => {
            let s = session(state, id, grant)?;
            let b = body(req, 64 << 10).await?;
            let begin: BeginRequest = serde_json::from_slice(&b)
                .map_err(|e| Reject::new(400, "request", format!("bad begin request: {e}")))?;
            s.begin(begin.generation).await?;
            Ok(no_content())
        }
        (&Method::PUT, ["v1", "sessions", id, "windows", seq]) => {
            let seq: u64 = seq.parse().map_err(|_| Reject::new(400, "request", "the window number is not a number"))?;
            let s = session(state, id, grant)?;
            let b = body_into(req, MAX_BODY, s.body_buffer()).await?;
            s.window(seq, b).await?;
            Ok(no_content())
        }
        (&Method::GET, ["v1", "sessions", id]) => {
            let s = session(state, id, grant)?;
            let st = s.state().await;
            Ok(reply(200, Bytes::from(serde_json::to_vec(&st).unwrap_or_default()), "application/json"))
        }
        (&Method::POST, ["v1", "sessions", id, "commit"]) => {
            let s = session(state, id, grant)?;
            let b = body(req, s.manifest_limit()).await?;
            s.commit(b).await?;
            Ok(no_content())
        }
        (&Method::DELETE, ["v1", "sessions", id]) => {
            state.close_where(|k, s| k == *id && grant.disk(&s.disk)).await;
            Ok(no_content())
        }
        _ => Err(Reject::new(404, "request", format!("no such request: {method} {}", req.uri().path()))),
    }
}

async fn open(state: &Arc<State>, disk: String, b: &[u8], grant: &Grant) -> Result<(String, Vec<u8>), Reject> {
    let target = state.cfg.root.target(&disk).map_err(|e| Reject::new(400, "request", format!("{e:#}")))?;
    let req: OpenRequest =
        serde_json::from_slice(b).map_err(|e| Reject::new(400, "request", format!("bad open request: {e}")))?;
    if req.force && !grant.force {
        return Err(Reject::new(
            403,
            "token",
            "this token may not pass --force (its line in the token file: allow=force)",
        ));
    }
    // No disk larger than a manifest may describe (64 TiB): a size near
    // 2^64 would wrap every sum made of it.
    if req.disk_size > diskferry_core::manifest::MAX_DISK_SIZE {
        return Err(Reject::new(400, "request", format!("disk size {} is over the 64 TiB limit", req.disk_size)));
    }
    let geometry = ChunkSize::new(req.chunk_size)
        .and_then(|c| Geometry::new(req.disk_size, c))
        .map_err(|e| Reject::new(400, "request", format!("bad disk geometry: {e}")))?;
    let _one = state.opening.lock().await;
    // A newer sync of the disk replaces the older session (its sender died
    // or gave up): the old thread lets go of the destination first.
    let open_count = state.close_where(|_, s| s.disk == disk).await;
    if open_count >= state.cfg.max_sessions {
        return Err(Reject::new(503, "state", format!("the receiver has {open_count} sessions open, its limit")));
    }
    let n = state.next_id.fetch_add(1, Relaxed);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let seed = format!("{n}/{nanos}/{}/{disk}", std::process::id());
    let id = blake3::hash(seed.as_bytes()).to_hex()[..32].to_owned();
    let mut opts = state.cfg.sink.clone();
    opts.chunk_size = geometry.chunk_size();
    opts.force |= req.force;
    if let Some(c) = &req.consistency {
        if !diskferry_core::job::is_consistency_label(c) {
            return Err(Reject::new(400, "consistency", "must be 1 to 32 lowercase letters and dashes"));
        }
        opts.pageblob.consistency = Some(c.clone());
    }
    opts.pageblob.fence = req.fence;
    let open_sink_fn = move || open_sink(&target, &opts);
    let (s, prior) =
        Session::open(id.clone(), disk, open_sink_fn, req.source_id, geometry, state.metrics.clone()).await?;
    if let Ok(mut m) = state.sessions.lock() {
        m.insert(id.clone(), s);
        state.metrics.sessions.set(m.len() as i64);
    }
    Ok((id, prior))
}
