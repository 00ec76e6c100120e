//! The receiver's Prometheus metrics (`receive --metrics-addr`): frames by
//! kind, raw and wire bytes (their ratio is what compression saved),
//! windows applied or acknowledged again, rejects by reason, sessions.

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

pub const FRAMES: &str = "diskferry_receiver_frames_total";
pub const RAW_BYTES: &str = "diskferry_receiver_raw_bytes_total";
pub const WIRE_BYTES: &str = "diskferry_receiver_wire_bytes_total";
pub const WINDOWS: &str = "diskferry_receiver_windows_total";
pub const REJECTS: &str = "diskferry_receiver_rejects_total";
pub const SESSIONS: &str = "diskferry_receiver_sessions_active";
pub const COMMITS: &str = "diskferry_receiver_commits_total";

/// Reasons a request is refused (the `reason` label), declared up front so
/// every series exists from the first scrape.
pub const REASONS: [&str; 12] = [
    "token",
    "too_large",
    "digest",
    "bomb",
    "frame",
    "window",
    "order",
    "state",
    "session",
    "manifest",
    "request",
    "destination",
];

#[derive(Debug)]
pub struct ReceiverMetrics {
    registry: Registry,
    frames: IntCounterVec,
    raw_bytes: IntCounter,
    wire_bytes: IntCounter,
    pub windows: IntCounterVec,
    rejects: IntCounterVec,
    pub sessions: IntGauge,
    pub commits: IntCounter,
}

impl ReceiverMetrics {
    pub fn new() -> prometheus::Result<Self> {
        let r = Registry::new();
        let frames =
            IntCounterVec::new(Opts::new(FRAMES, "Relay frames applied, by kind (zstd, raw, clear)."), &["kind"])?;
        let raw_bytes = IntCounter::new(RAW_BYTES, "Bytes of data the applied frames carried, decompressed.")?;
        let wire_bytes = IntCounter::new(WIRE_BYTES, "Bytes of the applied frames as received (headers included).")?;
        let windows = IntCounterVec::new(
            Opts::new(WINDOWS, "Windows applied, or acknowledged again without touching the destination (duplicate)."),
            &["outcome"],
        )?;
        let rejects = IntCounterVec::new(Opts::new(REJECTS, "Requests refused, by reason."), &["reason"])?;
        let sessions = IntGauge::new(SESSIONS, "Sessions open (one per disk being synced).")?;
        let commits = IntCounter::new(COMMITS, "Generations committed (durable and published).")?;
        r.register(Box::new(frames.clone()))?;
        r.register(Box::new(raw_bytes.clone()))?;
        r.register(Box::new(wire_bytes.clone()))?;
        r.register(Box::new(windows.clone()))?;
        r.register(Box::new(rejects.clone()))?;
        r.register(Box::new(sessions.clone()))?;
        r.register(Box::new(commits.clone()))?;
        for k in ["zstd", "raw", "clear"] {
            frames.with_label_values(&[k]);
        }
        for o in ["applied", "duplicate"] {
            windows.with_label_values(&[o]);
        }
        for reason in REASONS {
            rejects.with_label_values(&[reason]);
        }
        Ok(Self { registry: r, frames, raw_bytes, wire_bytes, windows, rejects, sessions, commits })
    }

    pub fn reject(&self, reason: &str) {
        self.rejects.with_label_values(&[reason]).inc();
    }

    /// A window applied: frames by kind (zstd, raw, clear), wire and raw bytes.
    pub fn count_window(&self, c: &FrameCounts) {
        self.windows.with_label_values(&["applied"]).inc();
        for (k, n) in [("zstd", c.zstd), ("raw", c.raw), ("clear", c.clear)] {
            self.frames.with_label_values(&[k]).inc_by(n);
        }
        self.wire_bytes.inc_by(c.wire_bytes);
        self.raw_bytes.inc_by(c.raw_bytes);
    }
}

/// What one applied window carried, for the metrics.
#[derive(Debug, Clone, Copy, Default)]
pub struct FrameCounts {
    /// Frames by kind.
    pub zstd: u64,
    pub raw: u64,
    pub clear: u64,
    /// Bytes on the wire (headers and payloads).
    pub wire_bytes: u64,
    /// The raw bytes the data frames stand for.
    pub raw_bytes: u64,
}

impl crate::metrics::Render for ReceiverMetrics {
    fn render(&self) -> Result<String, String> {
        crate::metrics::exposition(&self.registry)
    }
}
