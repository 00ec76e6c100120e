//! The sender's side of the relay: a [`Sink`] whose destination is a
//! receiver's sink, driven over the protocol of [`super`].
//!
//! Each window's writes are compressed into frames in parallel on the
//! calling thread; the finished message goes to one upload thread through a
//! queue of two, so compressing window N+1 overlaps sending window N and
//! memory stays at a few windows whatever the disk size.

use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::anyhow;
use bytes::Bytes;
use diskferry_core::digest::Digest;
use diskferry_core::geometry::Geometry;
use diskferry_core::manifest::ChunkState;
use diskferry_core::manifest::Manifest;
use diskferry_core::plan::Plan;
use diskferry_core::relay::window::{encode_head, WindowHeader};
use diskferry_core::relay::{self, clear_frame, FrameEncoder, HEADER_LEN, MAX_RAW};
use hyper::Method;
use rayon::prelude::*;

use super::client::{CallError, Client, RelayOptions, Reply};
use super::{BeginRequest, OpenRequest, RelayAddress, SessionState, SESSION_HEADER};
use crate::exit::{ExitCode, Failure};
use crate::scan::WindowView;
use crate::sink::{Prior, Sink, WireCounters, WireStats};

const WINDOW_TIMEOUT: Duration = Duration::from_secs(300);
const CONTROL_TIMEOUT: Duration = Duration::from_secs(600);
/// A commit waits for the receiver's destination to flush and publish.
const COMMIT_TIMEOUT: Duration = Duration::from_secs(3600);
/// Windows compressed and waiting to be sent.
const QUEUE: usize = 2;
pub const DEFAULT_ZSTD_LEVEL: i32 = 3;

/// A frame's header and its compressed payload (`None`: stored raw).
type FrameParts = ([u8; HEADER_LEN], Option<Vec<u8>>);

/// One window ready to go.
struct Outgoing {
    seq: u64,
    body: Bytes,
    /// Bytes of frames (what compression is measured on) and the raw bytes they carry.
    wire: u64,
    raw: u64,
    clears: u64,
}

struct Uploader {
    tx: SyncSender<Outgoing>,
    thread: JoinHandle<Result<(), Failure>>,
}

/// `relay:` destinations.
pub struct RelaySink {
    client: Arc<Client>,
    addr: RelayAddress,
    level: i32,
    force: bool,
    /// Told to the receiver at each session's open (`OpenRequest`).
    consistency: Option<String>,
    fence: Option<u64>,
    pool: rayon::ThreadPool,
    session: Option<String>,
    geometry: Option<Geometry>,
    seq: u64,
    upload: Option<Uploader>,
}

impl std::fmt::Debug for RelaySink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RelaySink({})", self.addr)
    }
}

fn fail(addr: &RelayAddress, e: impl std::fmt::Display) -> Failure {
    Failure::new(ExitCode::Destination, anyhow!("relay {addr}: {e}"))
}

fn call_failure(addr: &RelayAddress, what: &str, e: CallError) -> Failure {
    match &e {
        CallError::Status { status: 401, .. } => fail(addr, "the receiver refused the token (401 Unauthorized)"),
        _ => fail(addr, format!("{what}: {e}")),
    }
}

impl RelaySink {
    /// Have the receiver record `consistency` in each recovery point, and
    /// check and record the run's fencing number.
    pub fn recording(mut self, consistency: Option<String>, fence: Option<u64>) -> Self {
        self.consistency = consistency;
        self.fence = fence;
        self
    }

    pub fn new(
        addr: &RelayAddress,
        opts: &RelayOptions,
        retry_for: Duration,
        threads: usize,
        force: bool,
    ) -> Result<Self, Failure> {
        let level = opts.zstd_level.unwrap_or(DEFAULT_ZSTD_LEVEL);
        let client = Client::new(addr, opts, retry_for).map_err(|e| fail(addr, format!("{e:#}")))?;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads.max(1))
            .thread_name(|i| format!("diskferry-zstd-{i}"))
            .build()
            .map_err(|e| fail(addr, e))?;
        Ok(Self {
            client: Arc::new(client),
            addr: addr.clone(),
            level,
            force,
            consistency: None,
            fence: None,
            pool,
            session: None,
            geometry: None,
            seq: 0,
            upload: None,
        })
    }

    /// Connections opened so far (1 when nothing dropped).
    pub fn connects(&self) -> u64 {
        self.client.connects.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn session_path(&self, tail: &str) -> Result<String, Failure> {
        let id = self.session.as_deref().ok_or_else(|| fail(&self.addr, "relay sink used before prior"))?;
        Ok(format!("/v1/sessions/{id}{tail}"))
    }

    /// The upload thread failed: its error, else a generic one.
    fn upload_error(&mut self) -> Failure {
        match self.upload.take().map(|u| {
            drop(u.tx);
            u.thread.join()
        }) {
            Some(Ok(Err(f))) => f,
            _ => fail(&self.addr, "the upload thread stopped"),
        }
    }

    fn start_upload(&mut self) -> Result<(), Failure> {
        let (tx, rx) = sync_channel::<Outgoing>(QUEUE);
        let client = self.client.clone();
        let addr = self.addr.clone();
        let base = self.session_path("")?;
        let thread = std::thread::Builder::new()
            .name("diskferry-relay-up".into())
            .spawn(move || {
                for mut w in rx {
                    let path = format!("{base}/windows/{}", w.seq);
                    let state_path = base.clone();
                    let seq = w.seq;
                    let c = &client;
                    // After a dropped connection: ask what the receiver applied
                    // before sending the window again.
                    let settled = async || -> Option<Reply> {
                        let r = c.attempt(Method::GET, &state_path, Bytes::new(), CONTROL_TIMEOUT).await.ok()?;
                        let s: SessionState = serde_json::from_slice(&r.body).ok()?;
                        s.applied.is_some_and(|a| a >= seq).then_some(r)
                    };
                    let r = client.rt.block_on(client.call_with(
                        Method::PUT,
                        &path,
                        std::mem::take(&mut w.body),
                        WINDOW_TIMEOUT,
                        settled,
                    ));
                    if let Err(e) = r {
                        return Err(call_failure(&addr, &format!("window {}", w.seq), e));
                    }
                    count_window(&client.counters, &w);
                }
                Ok(())
            })
            .map_err(|e| fail(&self.addr, e))?;
        self.upload = Some(Uploader { tx, thread });
        Ok(())
    }
}

fn count_window(c: &WireCounters, w: &Outgoing) {
    use std::sync::atomic::Ordering::Relaxed;
    c.bytes_sent.fetch_add(w.wire, Relaxed);
    c.bytes_raw.fetch_add(w.raw, Relaxed);
    c.clear_requests.fetch_add(w.clears, Relaxed);
}

impl Sink for RelaySink {
    fn describe(&self) -> String {
        format!("relay:{}", self.addr)
    }

    fn prior(&mut self, source_id: &str, cur: Geometry) -> Result<Prior, Failure> {
        let req = OpenRequest {
            source_id: source_id.to_owned(),
            disk_size: cur.disk_size(),
            chunk_size: cur.chunk_size().get(),
            force: self.force,
            consistency: self.consistency.clone(),
            fence: self.fence,
        };
        let body = Bytes::from(serde_json::to_vec(&req).map_err(|e| fail(&self.addr, e))?);
        let path = format!("/v1/disks/{}/sessions", self.addr.disk);
        let r = self
            .client
            .call(Method::POST, &path, body, CONTROL_TIMEOUT)
            .map_err(|e| call_failure(&self.addr, "opening a session", e))?;
        let id = r
            .headers
            .get(SESSION_HEADER)
            .and_then(|v| v.to_str().ok())
            .filter(|s| !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric()))
            .ok_or_else(|| fail(&self.addr, "the receiver's answer names no session"))?;
        self.session = Some(id.to_owned());
        self.geometry = Some(cur);
        relay::prior::decode(&r.body, cur.chunk_count()).map_err(|e| fail(&self.addr, e))
    }

    fn begin(&mut self, generation: u64, _cur: Geometry, _prior: &Prior) -> Result<(), Failure> {
        let body = serde_json::to_vec(&BeginRequest { generation }).map_err(|e| fail(&self.addr, e))?;
        let path = self.session_path("/begin")?;
        self.client
            .call(Method::POST, &path, Bytes::from(body), CONTROL_TIMEOUT)
            .map_err(|e| call_failure(&self.addr, "beginning the generation", e))?;
        self.start_upload()
    }

    fn apply(&mut self, plan: &Plan, window: &WindowView<'_>) -> Result<(), Failure> {
        if plan.writes.is_empty() && plan.clears.is_empty() {
            return Ok(());
        }
        let level = self.level;
        let chunk = self.geometry.map_or(1 << 20, |g| g.chunk_size().get());
        // One frame per chunk when chunks are 1 MiB or more: its digest is the
        // chunk's, already computed by the scan. Smaller chunks go as whole
        // writes (up to 4 MiB), hashed here, so zstd sees enough at once.
        let mut pieces: Vec<(u64, u64, Option<Digest>)> = Vec::new();
        for w in &plan.writes {
            if chunk < 1 << 20 {
                pieces.push((w.start, w.end, None));
                continue;
            }
            let mut at = w.start;
            while at < w.end {
                let end = ((at / chunk + 1) * chunk).min(w.end);
                // The chunk's digest covers the whole chunk: reuse it only then.
                let whole = self.geometry.is_some_and(|g| g.chunk_range(at / chunk) == (at..end));
                let digest = match window.states.get((at / chunk - window.first_chunk) as usize) {
                    Some(ChunkState::Data(d)) if whole => Some(*d),
                    _ => None,
                };
                pieces.push((at, end, digest));
                at = end;
            }
        }
        let frames: Vec<std::io::Result<FrameParts>> = self.pool.install(|| {
            pieces
                .par_iter()
                .map_init(
                    || FrameEncoder::new(level),
                    |enc, &(start, end, digest)| {
                        let raw = window.slice(start, end);
                        enc.as_mut().map_err(|e| std::io::Error::new(e.kind(), e.to_string()))?.encode(
                            start,
                            raw,
                            digest.unwrap_or_else(|| Digest::of(raw)),
                        )
                    },
                )
                .collect()
        });
        let frames: Vec<FrameParts> = frames.into_iter().collect::<Result<_, _>>().map_err(|e| fail(&self.addr, e))?;
        let mut clears = Vec::new();
        for c in &plan.clears {
            let mut at = c.start;
            while at < c.end {
                let n = (c.end - at).min(u64::from(MAX_RAW));
                clears.push((at, clear_frame(at, n as u32)));
                at += n;
            }
        }
        let head = WindowHeader {
            seq: self.seq,
            first_chunk: window.first_chunk,
            offset: window.offset,
            len: window.bytes.len() as u64,
        };
        let mut body = encode_head(&head, window.states, (frames.len() + clears.len()) as u32);
        let head_len = body.len() as u64;
        // Frames in disk order: the receiver wants them ascending.
        let mut all: Vec<(u64, &[u8], &[u8])> = Vec::with_capacity(frames.len() + clears.len());
        for ((start, end, _), (header, payload)) in pieces.iter().zip(&frames) {
            all.push((*start, header, payload.as_deref().unwrap_or_else(|| window.slice(*start, *end))));
        }
        all.extend(clears.iter().map(|(at, c)| (*at, &c[..], &[][..])));
        all.sort_unstable_by_key(|&(o, _, _)| o);
        body.reserve(all.iter().map(|(_, h, p)| h.len() + p.len()).sum());
        for (_, header, payload) in all {
            body.extend_from_slice(header);
            body.extend_from_slice(payload);
        }
        let out = Outgoing {
            seq: self.seq,
            wire: body.len() as u64 - head_len,
            raw: plan.stats.bytes_written,
            clears: clears.len() as u64,
            body: Bytes::from(body),
        };
        self.seq += 1;
        let sent = match &self.upload {
            Some(u) => u.tx.send(out).is_ok(),
            None => return Err(fail(&self.addr, "relay sink used before begin")),
        };
        if sent {
            Ok(())
        } else {
            Err(self.upload_error())
        }
    }

    fn commit(&mut self, manifest: &Manifest) -> Result<(), Failure> {
        if let Some(u) = self.upload.take() {
            drop(u.tx);
            match u.thread.join() {
                Ok(r) => r?,
                Err(_) => return Err(fail(&self.addr, "the upload thread panicked")),
            }
        }
        let bytes = manifest.encode().map_err(|e| fail(&self.addr, e))?;
        let path = self.session_path("/commit")?;
        let (c, state_path, generation) = (&self.client, self.session_path("")?, manifest.generation);
        // A commit whose answer was lost: the session says whether it happened.
        let settled = async || -> Option<Reply> {
            let r = c.attempt(Method::GET, &state_path, Bytes::new(), CONTROL_TIMEOUT).await.ok()?;
            let s: SessionState = serde_json::from_slice(&r.body).ok()?;
            (s.state == "committed" && s.generation == Some(generation)).then_some(r)
        };
        c.rt.block_on(c.call_with(Method::POST, &path, Bytes::from(bytes), COMMIT_TIMEOUT, settled))
            .map_err(|e| call_failure(&self.addr, "committing the generation", e))?;
        Ok(())
    }

    fn wire(&self) -> Option<WireStats> {
        Some(self.client.counters.stats())
    }

    fn live_counters(&self) -> Option<Arc<WireCounters>> {
        Some(self.client.counters.clone())
    }
}

impl Drop for RelaySink {
    /// The session is closed when the sync ends, committed or not, so the
    /// receiver lets go of the destination at once (a killed sender's
    /// session is replaced by the next one, or expires).
    fn drop(&mut self) {
        if let Some(u) = self.upload.take() {
            drop(u.tx);
            let _ = u.thread.join();
        }
        if let Ok(path) = self.session_path("") {
            let c = &self.client;
            let _ = c.rt.block_on(c.attempt(Method::DELETE, &path, Bytes::new(), Duration::from_secs(5)));
        }
    }
}
