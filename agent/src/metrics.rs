//! Prometheus metrics of the agent and the `/metrics` endpoint
//! (`--metrics-addr`). Every metric name is a constant here, named the
//! Prometheus way; labels stay low-cardinality (`disk`, `outcome`).
//!
//! The pipeline counts into [`Progress`] atomics; at each scrape the counters
//! here are advanced to match (counters only go up), so the hot path never
//! touches the registry.

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};

pub use diskferry_http::Render;
use prometheus::{Encoder, Gauge, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};

use crate::progress::Progress;

pub const BYTES_READ: &str = "diskferry_agent_bytes_read_total";
pub const BYTES_HASHED: &str = "diskferry_agent_bytes_hashed_total";
pub const BYTES_ZERO: &str = "diskferry_agent_bytes_zero_total";
pub const BYTES_UNCHANGED: &str = "diskferry_agent_bytes_unchanged_total";
pub const BYTES_WRITTEN: &str = "diskferry_agent_bytes_written_total";
pub const BYTES_CLEARED: &str = "diskferry_agent_bytes_cleared_total";
pub const REQUESTS: &str = "diskferry_agent_requests_total";
pub const RETRIES: &str = "diskferry_agent_retries_total";
pub const INFLIGHT_BYTES: &str = "diskferry_agent_inflight_bytes";
pub const SYNC_DURATION: &str = "diskferry_agent_sync_duration_seconds";
pub const GENERATION: &str = "diskferry_agent_generation";
pub const WIRE_BYTES: &str = "diskferry_agent_wire_bytes_total";
pub const WIRE_RAW_BYTES: &str = "diskferry_agent_wire_raw_bytes_total";
pub const COMPRESSION: &str = "diskferry_agent_wire_compression_ratio";
pub const THROTTLED: &str = "diskferry_agent_throttled_requests_total";
pub const CONCURRENCY: &str = "diskferry_agent_concurrency";
pub const PACE: &str = "diskferry_agent_pace_bytes_per_second";

/// A byte counter and where its value comes from.
type ByteCounter = (IntCounterVec, fn(&Progress) -> u64);

/// The agent's registry, fed from one sync's [`Progress`].
pub struct Metrics {
    registry: Registry,
    progress: Arc<Progress>,
    bytes: Vec<ByteCounter>,
    requests: IntCounterVec,
    retries: IntCounterVec,
    inflight: IntGauge,
    duration: Gauge,
    generation: IntGauge,
    wire: IntCounterVec,
    wire_raw: IntCounterVec,
    compression: Gauge,
    throttled: IntCounterVec,
    concurrency: IntGauge,
    pace: IntGauge,
    last: Mutex<[u64; 6]>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> prometheus::Result<IntCounterVec> {
    let c = IntCounterVec::new(Opts::new(name, help), labels)?;
    r.register(Box::new(c.clone()))?;
    Ok(c)
}

impl Metrics {
    pub fn new(progress: Arc<Progress>) -> prometheus::Result<Self> {
        let r = Registry::new();
        let disk = &["disk"];
        let bytes: Vec<ByteCounter> = vec![
            (counter(&r, BYTES_READ, "Bytes read from the source.", disk)?, |p| Progress::get(&p.bytes_read)),
            (counter(&r, BYTES_HASHED, "Bytes of data chunks hashed.", disk)?, |p| Progress::get(&p.bytes_hashed)),
            (counter(&r, BYTES_ZERO, "Bytes of chunks that are zero and were zero: nothing done.", disk)?, |p| {
                Progress::get(&p.bytes_zero)
            }),
            (counter(&r, BYTES_UNCHANGED, "Bytes of data chunks unchanged since the last generation.", disk)?, |p| {
                Progress::get(&p.bytes_unchanged)
            }),
            (counter(&r, BYTES_WRITTEN, "Bytes of chunks written to the destination.", disk)?, |p| {
                Progress::get(&p.bytes_written)
            }),
            (counter(&r, BYTES_CLEARED, "Bytes of chunks cleared (turned zero) at the destination.", disk)?, |p| {
                Progress::get(&p.bytes_cleared)
            }),
        ];
        let requests = counter(&r, REQUESTS, "Storage requests by outcome (ok, failed).", &["disk", "outcome"])?;
        let retries = counter(&r, RETRIES, "Storage requests retried.", disk)?;
        let inflight = IntGauge::new(INFLIGHT_BYTES, "Bytes of writes in flight to storage.")?;
        r.register(Box::new(inflight.clone()))?;
        let duration = Gauge::new(SYNC_DURATION, "Seconds the sync has run (final once it ends).")?;
        r.register(Box::new(duration.clone()))?;
        let generation = IntGauge::new(GENERATION, "Generation being written or last written.")?;
        r.register(Box::new(generation.clone()))?;
        let wire = counter(
            &r,
            WIRE_BYTES,
            "Bytes of page data on the wire to a remote destination (relay frames compressed).",
            disk,
        )?;
        let wire_raw =
            counter(&r, WIRE_RAW_BYTES, "Bytes of page data those wire bytes stand for, uncompressed.", disk)?;
        let compression =
            Gauge::new(COMPRESSION, "Raw bytes per wire byte so far (1 for page blobs; the relay's zstd gain).")?;
        r.register(Box::new(compression.clone()))?;
        let throttled = counter(
            &r,
            THROTTLED,
            "Storage attempts the service pushed back on (429, 503) or failed from overload (500, timeouts).",
            disk,
        )?;
        let concurrency =
            IntGauge::new(CONCURRENCY, "Page writes the adaptive pacer allows in flight now (0: not paced).")?;
        r.register(Box::new(concurrency.clone()))?;
        let pace = IntGauge::new(PACE, "Bytes per second the adaptive pacer lets through (0: not paced).")?;
        r.register(Box::new(pace.clone()))?;
        Ok(Self {
            registry: r,
            progress,
            bytes,
            requests,
            retries,
            inflight,
            duration,
            generation,
            wire,
            wire_raw,
            compression,
            throttled,
            concurrency,
            pace,
            last: Mutex::new([0; 6]),
        })
    }
}

/// The exposition text, brought up to date at each scrape.
impl Render for Metrics {
    fn render(&self) -> Result<String, String> {
        let p = &self.progress;
        let disk = p.source.as_str();
        for (c, get) in &self.bytes {
            let m = c.with_label_values(&[disk]);
            let now = get(p);
            m.inc_by(now.saturating_sub(m.get()));
        }
        if let Some(s) = p.store.lock().ok().and_then(|s| s.clone()) {
            let vals = [
                s.requests_ok.load(Relaxed),
                s.requests_failed.load(Relaxed),
                s.retries.load(Relaxed),
                s.bytes_sent.load(Relaxed),
                s.bytes_raw.load(Relaxed),
                s.throttled.load(Relaxed),
            ];
            if let Ok(mut last) = self.last.lock() {
                self.requests.with_label_values(&[disk, "ok"]).inc_by(vals[0].saturating_sub(last[0]));
                self.requests.with_label_values(&[disk, "failed"]).inc_by(vals[1].saturating_sub(last[1]));
                self.retries.with_label_values(&[disk]).inc_by(vals[2].saturating_sub(last[2]));
                self.wire.with_label_values(&[disk]).inc_by(vals[3].saturating_sub(last[3]));
                self.wire_raw.with_label_values(&[disk]).inc_by(vals[4].saturating_sub(last[4]));
                self.throttled.with_label_values(&[disk]).inc_by(vals[5].saturating_sub(last[5]));
                *last = vals;
            }
            if vals[3] > 0 {
                self.compression.set(vals[4] as f64 / vals[3] as f64);
            }
            self.inflight.set(s.inflight_bytes.load(Relaxed) as i64);
            self.concurrency.set(s.concurrency.load(Relaxed) as i64);
            self.pace.set(s.pace_bytes_per_sec.load(Relaxed) as i64);
        } else {
            // Declared metrics are always exposed, with zeros for local destinations.
            for o in ["ok", "failed"] {
                self.requests.with_label_values(&[disk, o]);
            }
            self.retries.with_label_values(&[disk]);
            self.wire.with_label_values(&[disk]);
            self.wire_raw.with_label_values(&[disk]);
            self.throttled.with_label_values(&[disk]);
        }
        self.duration.set(p.seconds());
        self.generation.set(Progress::get(&p.generation) as i64);
        exposition(&self.registry)
    }
}

/// A registry in the Prometheus text format.
pub fn exposition(registry: &Registry) -> Result<String, String> {
    let mut out = Vec::new();
    TextEncoder::new().encode(&registry.gather(), &mut out).map_err(|e| e.to_string())?;
    String::from_utf8(out).map_err(|e| e.to_string())
}

/// Serve `GET /metrics` on `addr` (diskferry-http: timeouts, bounded
/// requests, a cap on connections). Returns the bound address (port 0
/// picks a free one).
pub fn serve(addr: SocketAddr, metrics: Arc<dyn Render>) -> std::io::Result<SocketAddr> {
    diskferry_http::serve(addr, "diskferry-metrics", metrics, diskferry_http::Limits::default())
}
