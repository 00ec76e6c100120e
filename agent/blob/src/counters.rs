//! What went over the wire: counters every request to a remote destination
//! updates, read live by the progress bar, the status document and
//! `/metrics`, and as one [`WireStats`] in a sync's report.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

pub use diskferry_core::report::WireStats;

/// Counters every request to a remote destination updates.
#[derive(Debug, Default)]
pub struct WireCounters {
    pub requests_ok: AtomicU64,
    pub requests_failed: AtomicU64,
    pub retries: AtomicU64,
    /// Bytes of page data on the wire (Put Page bodies; relay frames).
    pub bytes_sent: AtomicU64,
    /// The raw bytes those stand for (more than `bytes_sent` when compressed).
    pub bytes_raw: AtomicU64,
    pub clear_requests: AtomicU64,
    /// Bytes of write bodies being sent right now.
    pub inflight_bytes: AtomicU64,
    /// Attempts the service answered "slow down" or failed in a way that
    /// means it is overloaded (429, 503, 500, timeouts): the pacer's signal.
    pub throttled: AtomicU64,
    /// Requests the pacer lets in flight now (0: no pacer).
    pub concurrency: AtomicU64,
    /// Bytes per second the pacer lets through now (0: not paced).
    pub pace_bytes_per_sec: AtomicU64,
}

impl WireCounters {
    pub fn stats(&self) -> WireStats {
        WireStats {
            bytes_sent: self.bytes_sent.load(Relaxed),
            bytes_raw: self.bytes_raw.load(Relaxed),
            requests_ok: self.requests_ok.load(Relaxed),
            requests_failed: self.requests_failed.load(Relaxed),
            retries: self.retries.load(Relaxed),
            clear_requests: self.clear_requests.load(Relaxed),
            throttled: self.throttled.load(Relaxed),
            concurrency: self.concurrency.load(Relaxed),
        }
    }

    /// Count `n` into `counter`.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }
}
