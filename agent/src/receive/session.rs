//! One relay session on the receiver: a thread that owns the disk's sink for
//! one sync and carries out the sender's calls in order. Every window is
//! decoded, checked against the session's geometry, decompressed (bounded)
//! and verified frame by frame before a byte of it reaches the sink: a bad
//! window changes nothing.
//!
//! Verification runs on the blocking pool as the window arrives; a verified
//! window is queued (at most [`QUEUE`] deep) for the sink and acknowledged,
//! so the next window travels while this one is written. A write that fails
//! later fails the session: the next call, and the commit, say so. Nothing
//! is durable before the commit, as for a direct sync; the journal of the
//! receiver's sink is what a later run resumes from.

use super::metrics::FrameCounts;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use diskferry_core::geometry::Geometry;
use diskferry_core::manifest::ChunkState;
use diskferry_core::manifest::Manifest;
use diskferry_core::plan::Plan;
use diskferry_core::relay::window::{self, WindowError};
use diskferry_core::relay::{prior, FrameError, FrameHeader, FrameKind};
use rayon::prelude::*;
use tokio::sync::{mpsc, oneshot};

use super::metrics::ReceiverMetrics;
use crate::buf::AlignedBuf;
use crate::exit::Failure;
use crate::relay::SessionState;
use crate::scan::{ScanStats, WindowView};
use crate::sink::{Prior, Sink};

/// A refused request: HTTP status, a short reason (metrics label, error
/// body), and a message for the sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    pub status: u16,
    pub reason: &'static str,
    pub message: String,
}

impl Reject {
    pub fn new(status: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self { status, reason, message: message.into() }
    }

    fn destination(f: &Failure) -> Self {
        Self::new(424, "destination", format!("the receiver's destination failed: {f}"))
    }
}

fn window_reject(e: WindowError) -> Reject {
    let reason = match &e {
        WindowError::Frame { source: FrameError::Digest, .. } => "digest",
        WindowError::Frame { source: FrameError::Decompress(_), .. } => "bomb",
        WindowError::Frame { .. } => "frame",
        _ => "window",
    };
    Reject::new(400, reason, e.to_string())
}

/// Verified windows waiting for the sink, per session.
pub const QUEUE: usize = 2;

/// A window decoded and verified, ready for the sink.
struct Prepared {
    seq: u64,
    first_chunk: u64,
    offset: u64,
    states: Vec<ChunkState>,
    plan: Plan,
    /// The window's bytes (only its write ranges are meaningful); aligned, so
    /// a file destination writes them directly.
    buf: AlignedBuf,
    /// What its frames carried, for metrics.
    counts: FrameCounts,
}

enum Cmd {
    Begin(u64, oneshot::Sender<Result<(), Reject>>),
    Window(Box<Prepared>),
    Commit(Bytes, oneshot::Sender<Result<(), Reject>>),
    /// Answered once every earlier command is done.
    Barrier(oneshot::Sender<()>),
}

#[derive(Debug)]
struct Info {
    state: &'static str,
    generation: Option<u64>,
    /// The last window verified and queued for the sink.
    accepted: Option<u64>,
    /// The last window the sink carried out.
    applied: Option<u64>,
    error: Option<Reject>,
    last_used: Instant,
}

/// A session as the server sees it; the sink lives on the session's thread.
#[derive(Debug)]
pub struct Session {
    pub id: String,
    pub disk: String,
    geometry: Geometry,
    tx: Mutex<Option<mpsc::Sender<Cmd>>>,
    /// Held from a window's last check to its place in the queue: windows
    /// enter the queue in order.
    order: tokio::sync::Mutex<()>,
    info: Arc<Mutex<Info>>,
    /// Window buffers the sink is done with, for the next windows.
    buffers: Arc<Mutex<Vec<AlignedBuf>>>,
    /// Request bodies already checked, for the next windows (no fresh pages
    /// to fault in for every 32 MiB).
    bodies: Mutex<Vec<Vec<u8>>>,
    metrics: Arc<ReceiverMetrics>,
    done: Mutex<Option<oneshot::Receiver<()>>>,
}

/// The answer to any call after the session's destination failed.
fn failed_earlier(e: &Reject) -> Reject {
    Reject::new(409, e.reason, format!("the session failed earlier: {}", e.message))
}

fn gone() -> Reject {
    Reject::new(409, "state", "the session is closed (replaced by a newer sync of this disk, or expired)")
}

impl Session {
    /// Open `sink`, read its prior state for a sync of `source_id` at
    /// `geometry`, and start the session's thread. Returns the prior
    /// message for the sender.
    pub async fn open(
        id: String,
        disk: String,
        open: impl FnOnce() -> Result<Box<dyn Sink>, Failure> + Send + 'static,
        source_id: String,
        geometry: Geometry,
        metrics: Arc<ReceiverMetrics>,
    ) -> Result<(Arc<Session>, Vec<u8>), Reject> {
        let (tx, rx) = mpsc::channel::<Cmd>(QUEUE);
        let (opened_tx, opened_rx) = oneshot::channel::<Result<Vec<u8>, Reject>>();
        let (done_tx, done_rx) = oneshot::channel::<()>();
        let info = Arc::new(Mutex::new(Info {
            state: "open",
            generation: None,
            accepted: None,
            applied: None,
            error: None,
            last_used: Instant::now(),
        }));
        let thread_info = info.clone();
        let buffers: Arc<Mutex<Vec<AlignedBuf>>> = Arc::default();
        let (thread_buffers, thread_metrics) = (buffers.clone(), metrics.clone());
        std::thread::Builder::new()
            .name(format!("diskferry-rx-{disk}"))
            .spawn(move || {
                let opened = open().and_then(|mut sink| {
                    let prior = sink.prior(&source_id, geometry)?;
                    Ok((sink, prior))
                });
                match opened {
                    Err(f) => {
                        let _ = opened_tx.send(Err(Reject::destination(&f)));
                    }
                    Ok((sink, prior_state)) => match prior::encode(&prior_state) {
                        Err(e) => {
                            let _ = opened_tx.send(Err(Reject::new(500, "internal", e.to_string())));
                        }
                        Ok(msg) => {
                            let _ = opened_tx.send(Ok(msg));
                            let mut worker = Worker {
                                sink,
                                prior: prior_state,
                                geometry,
                                info: thread_info,
                                buffers: thread_buffers,
                                metrics: thread_metrics,
                            };
                            worker.serve(rx);
                        }
                    },
                }
                let _ = done_tx.send(());
            })
            .map_err(|e| Reject::new(503, "internal", format!("cannot start a session thread: {e}")))?;
        let msg = opened_rx.await.map_err(|_| Reject::new(500, "internal", "the session thread died"))??;
        let session = Session {
            id,
            disk,
            geometry,
            tx: Mutex::new(Some(tx)),
            order: tokio::sync::Mutex::new(()),
            info,
            buffers,
            bodies: Mutex::default(),
            metrics,
            done: Mutex::new(Some(done_rx)),
        };
        Ok((Arc::new(session), msg))
    }

    fn sender(&self) -> Result<mpsc::Sender<Cmd>, Reject> {
        if let Ok(mut i) = self.info.lock() {
            i.last_used = Instant::now();
        }
        self.tx.lock().ok().and_then(|t| t.clone()).ok_or_else(gone)
    }

    async fn send<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Cmd) -> Result<T, Reject> {
        let tx = self.sender()?;
        let (reply, answer) = oneshot::channel();
        tx.send(make(reply)).await.map_err(|_| gone())?;
        answer.await.map_err(|_| gone())
    }

    pub async fn begin(&self, generation: u64) -> Result<(), Reject> {
        self.send(|r| Cmd::Begin(generation, r)).await?
    }

    /// Where window `seq` stands against the queue: `Ok(true)` it is next,
    /// `Ok(false)` it was accepted before (acknowledged again, not redone).
    fn next_in_line(&self, seq: u64) -> Result<bool, Reject> {
        let i = self.info.lock().map_err(|_| gone())?;
        if let Some(e) = &i.error {
            return Err(failed_earlier(e));
        }
        if i.state != "begun" {
            let state = i.state;
            return Err(Reject::new(409, "state", format!("a window cannot be applied in a session that is {state}")));
        }
        if i.accepted.is_some_and(|a| seq <= a) {
            return Ok(false);
        }
        let expected = i.accepted.map_or(0, |a| a + 1);
        if seq != expected {
            return Err(Reject::new(409, "order", format!("window {seq} arrived before window {expected}")));
        }
        Ok(true)
    }

    /// The largest manifest this session's disk can have, encoded: its
    /// commit body is refused past it before being read (the bitmap and a
    /// digest a chunk, zstd's worst case, the header and source identity).
    pub fn manifest_limit(&self) -> u64 {
        let chunks = self.geometry.chunk_count();
        let body = chunks.div_ceil(8) + 32 * chunks;
        (body + body / 128 + (64 << 10) + 72 + 32 + 4096).min(crate::relay::MAX_CONTROL_BODY)
    }

    /// A buffer for a window's request body.
    pub fn body_buffer(&self) -> Vec<u8> {
        self.bodies.lock().ok().and_then(|mut b| b.pop()).unwrap_or_default()
    }

    /// Verify window `seq` and queue it for the sink.
    pub async fn window(&self, seq: u64, body: Vec<u8>) -> Result<(), Reject> {
        let tx = self.sender()?;
        if !self.next_in_line(seq)? {
            self.metrics.windows.with_label_values(&["duplicate"]).inc();
            return Ok(());
        }
        let buf = self.buffers.lock().ok().and_then(|mut b| b.pop()).unwrap_or_default();
        let geometry = self.geometry;
        let (prepared, body) = tokio::task::spawn_blocking(move || (prepare(seq, &body, geometry, buf), body))
            .await
            .map_err(|e| Reject::new(500, "internal", format!("window check failed: {e}")))?;
        if let Ok(mut b) = self.bodies.lock() {
            if b.len() < 2 {
                b.push(body);
            }
        }
        let prepared = prepared?;
        let _order = self.order.lock().await;
        if !self.next_in_line(seq)? {
            self.metrics.windows.with_label_values(&["duplicate"]).inc();
            return Ok(());
        }
        if let Ok(mut i) = self.info.lock() {
            i.accepted = Some(seq);
        }
        tx.send(Cmd::Window(Box::new(prepared))).await.map_err(|_| gone())
    }

    pub async fn commit(&self, manifest: Bytes) -> Result<(), Reject> {
        self.send(|r| Cmd::Commit(manifest, r)).await?
    }

    /// Where the session stands once everything sent before is done.
    pub async fn state(&self) -> SessionState {
        let _ = self.send(Cmd::Barrier).await;
        match self.info.lock() {
            Ok(i) => SessionState { state: i.state.to_owned(), generation: i.generation, applied: i.applied },
            Err(_) => SessionState { state: "failed".into(), generation: None, applied: None },
        }
    }

    pub fn idle_for(&self) -> Duration {
        self.info.lock().map_or(Duration::MAX, |i| i.last_used.elapsed())
    }

    /// Stop taking commands and wait until the thread has let go of the sink.
    pub async fn close(&self) {
        if let Ok(mut t) = self.tx.lock() {
            t.take();
        }
        let done = self.done.lock().ok().and_then(|mut d| d.take());
        if let Some(d) = done {
            let _ = d.await;
        }
    }
}

/// The session's thread.
struct Worker {
    sink: Box<dyn Sink>,
    prior: Prior,
    geometry: Geometry,
    info: Arc<Mutex<Info>>,
    buffers: Arc<Mutex<Vec<AlignedBuf>>>,
    metrics: Arc<ReceiverMetrics>,
}

impl Worker {
    fn serve(&mut self, mut rx: mpsc::Receiver<Cmd>) {
        while let Some(cmd) = rx.blocking_recv() {
            match cmd {
                Cmd::Begin(g, reply) => {
                    let r = self.guarded(|w| w.begin(g));
                    let _ = reply.send(r);
                }
                Cmd::Window(p) => {
                    let r = self.guarded(|w| w.apply(&p));
                    if let Err(e) = r {
                        // Said at the next call: the session has failed.
                        self.metrics.reject(e.reason);
                    }
                    if let Ok(mut b) = self.buffers.lock() {
                        if b.len() < QUEUE + 2 {
                            b.push(p.buf);
                        }
                    }
                }
                Cmd::Commit(body, reply) => {
                    let r = self.guarded(|w| w.commit(&body));
                    let _ = reply.send(r);
                }
                Cmd::Barrier(reply) => {
                    let _ = reply.send(());
                }
            }
        }
        // Closed without a commit (the sender went away): what was applied is
        // made to count for the next sync.
        if self.info(|i| i.state) == Some("begun") {
            self.sink.suspend();
        }
    }

    fn info<T>(&self, f: impl FnOnce(&mut Info) -> T) -> Option<T> {
        self.info.lock().ok().map(|mut i| f(&mut i))
    }

    /// Run a step unless an earlier one failed the destination; a failure of
    /// the destination fails the session for good.
    fn guarded(&mut self, step: impl FnOnce(&mut Self) -> Result<(), Reject>) -> Result<(), Reject> {
        if let Some(Some(e)) = self.info(|i| i.error.clone()) {
            return Err(failed_earlier(&e));
        }
        let r = step(self);
        if let Err(e) = &r {
            if e.reason == "destination" {
                self.info(|i| {
                    i.state = "failed";
                    i.error = Some(e.clone());
                });
            }
        }
        r
    }

    fn begin(&mut self, generation: u64) -> Result<(), Reject> {
        let (state, current) = self.info(|i| (i.state, i.generation)).unwrap_or(("failed", None));
        if state == "begun" && current == Some(generation) {
            return Ok(());
        }
        if state != "open" {
            return Err(Reject::new(409, "state", format!("cannot begin a generation in a session that is {state}")));
        }
        if generation != self.prior.next_generation() {
            return Err(Reject::new(
                409,
                "state",
                format!(
                    "generation {generation} does not follow the destination (next is {})",
                    self.prior.next_generation()
                ),
            ));
        }
        self.sink.begin(generation, self.geometry, &self.prior).map_err(|f| Reject::destination(&f))?;
        self.info(|i| {
            i.state = "begun";
            i.generation = Some(generation);
        });
        Ok(())
    }

    fn apply(&mut self, p: &Prepared) -> Result<(), Reject> {
        let view = WindowView {
            first_chunk: p.first_chunk,
            offset: p.offset,
            states: &p.states,
            stats: ScanStats::default(),
            bytes: &p.buf,
            mapped: false,
        };
        self.sink.apply(&p.plan, &view).map_err(|f| Reject::destination(&f))?;
        self.metrics.count_window(&p.counts);
        self.info(|i| i.applied = Some(p.seq));
        Ok(())
    }

    fn commit(&mut self, body: &[u8]) -> Result<(), Reject> {
        let (state, generation) = self.info(|i| (i.state, i.generation)).unwrap_or(("failed", None));
        // Checked against the session's geometry before the body is
        // decompressed: a header's claims size the memory decoding takes.
        let m = Manifest::decode_for(body, self.geometry).map_err(|e| Reject::new(400, "manifest", e.to_string()))?;
        if state == "committed" && generation == Some(m.generation) {
            return Ok(());
        }
        if state != "begun" {
            return Err(Reject::new(409, "state", format!("cannot commit a session that is {state}")));
        }
        if Some(m.generation) != generation || m.geometry != self.geometry {
            return Err(Reject::new(
                400,
                "manifest",
                "the manifest is not of the generation and geometry this session began with",
            ));
        }
        self.sink.commit(&m).map_err(|f| Reject::destination(&f))?;
        self.metrics.commits.inc();
        self.info(|i| i.state = "committed");
        Ok(())
    }
}

/// Decode window `seq`, check it against `geometry`, and open every data
/// frame into its place in `buf` (reused; resized to the window), in
/// parallel. Nothing of it reaches a sink unless all of it checks out.
fn prepare(seq: u64, body: &[u8], geometry: Geometry, mut buf: AlignedBuf) -> Result<Prepared, Reject> {
    let w = window::decode(body, geometry).map_err(window_reject)?;
    if w.header.seq != seq {
        return Err(Reject::new(400, "window", format!("window message {} sent as window {seq}", w.header.seq)));
    }
    // Every byte the plan writes is covered by a data frame, so the buffer
    // needs no zeroing between windows.
    buf.set_len(w.header.len as usize);
    let mut parts: Vec<(&FrameHeader, &[u8], &mut [u8])> = Vec::with_capacity(w.frames.len());
    let (mut rest, mut base) = (&mut buf[..], w.header.offset);
    let mut counts = FrameCounts::default();
    for (fh, payload) in &w.frames {
        match fh.kind {
            FrameKind::Zstd => counts.zstd += 1,
            FrameKind::Raw => counts.raw += 1,
            FrameKind::Clear => counts.clear += 1,
        }
        counts.wire_bytes += (diskferry_core::relay::HEADER_LEN + payload.len()) as u64;
        if fh.kind == FrameKind::Clear {
            continue;
        }
        counts.raw_bytes += u64::from(fh.raw_len);
        let tail = std::mem::take(&mut rest).split_at_mut((fh.offset - base) as usize).1;
        let (mine, after) = tail.split_at_mut(fh.raw_len as usize);
        parts.push((fh, payload, mine));
        rest = after;
        base = fh.offset + u64::from(fh.raw_len);
    }
    parts
        .into_par_iter()
        .enumerate()
        .try_for_each(|(index, (fh, payload, out))| {
            fh.open_into(payload, out).map_err(|source| WindowError::Frame { index: index as u32, source })
        })
        .map_err(window_reject)?;
    let plan = w.plan(geometry.chunk_size().get());
    Ok(Prepared {
        seq,
        first_chunk: w.header.first_chunk,
        offset: w.header.offset,
        states: w.states,
        plan,
        buf,
        counts,
    })
}
