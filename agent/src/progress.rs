//! Live progress of one sync, shared by the pipeline (which updates it per
//! window) and by whoever reports it: the terminal progress bar, the status
//! file, the Prometheus endpoint. Plain atomics: updating costs nothing on
//! the hot path and readers never block the sync.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::sink::WireCounters;

pub use diskferry_core::report::Phase;
use diskferry_core::report::{DiskStatus, Requests, Status, STATUS_VERSION};

/// Counters of one sync of one disk.
#[derive(Debug)]
pub struct Progress {
    pub source: String,
    pub destination: Mutex<String>,
    pub started: Instant,
    pub phase: Mutex<Phase>,
    pub last_error: Mutex<Option<String>>,
    pub disk_size: AtomicU64,
    /// Bytes of the disk walked so far (read or skipped as holes).
    pub bytes_scanned: AtomicU64,
    pub bytes_read: AtomicU64,
    pub bytes_hashed: AtomicU64,
    /// Planned (summed over destinations): zero, unchanged, written, cleared.
    pub bytes_zero: AtomicU64,
    pub bytes_unchanged: AtomicU64,
    pub bytes_written: AtomicU64,
    pub bytes_cleared: AtomicU64,
    pub generation: AtomicU64,
    /// Request counters of a remote destination, once it is open.
    pub store: Mutex<Option<Arc<WireCounters>>>,
    pub finished_secs: Mutex<Option<f64>>,
}

impl Progress {
    pub fn new(source: &str) -> Arc<Self> {
        Arc::new(Self {
            source: source.to_owned(),
            destination: Mutex::new(String::new()),
            started: Instant::now(),
            phase: Mutex::new(Phase::Starting),
            last_error: Mutex::new(None),
            disk_size: AtomicU64::new(0),
            bytes_scanned: AtomicU64::new(0),
            bytes_read: AtomicU64::new(0),
            bytes_hashed: AtomicU64::new(0),
            bytes_zero: AtomicU64::new(0),
            bytes_unchanged: AtomicU64::new(0),
            bytes_written: AtomicU64::new(0),
            bytes_cleared: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            store: Mutex::new(None),
            finished_secs: Mutex::new(None),
        })
    }

    pub fn set_phase(&self, p: Phase) {
        if let Ok(mut g) = self.phase.lock() {
            *g = p;
        }
        if p.finished() {
            if let Ok(mut f) = self.finished_secs.lock() {
                *f = Some(self.started.elapsed().as_secs_f64());
            }
        }
    }

    pub fn phase(&self) -> Phase {
        self.phase.lock().map_or(Phase::Failed, |g| *g)
    }

    pub fn fail(&self, message: &str) {
        if let Ok(mut e) = self.last_error.lock() {
            *e = Some(diskferry_blob::address::redact(message));
        }
        self.set_phase(Phase::Failed);
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Relaxed)
    }

    /// Seconds since start, frozen when the sync ends.
    pub fn seconds(&self) -> f64 {
        self.finished_secs.lock().ok().and_then(|f| *f).unwrap_or_else(|| self.started.elapsed().as_secs_f64())
    }

    /// The status document (`--status-file`) of a single sync.
    pub fn status(&self) -> Status {
        let store = self.store.lock().ok().and_then(|s| s.clone());
        let g = |c: &AtomicU64| c.load(Relaxed);
        Status {
            version: STATUS_VERSION,
            run_id: None,
            phase: self.phase(),
            updated_unix_ms: crate::clock::unix_ms(),
            seconds: Some(self.seconds()),
            last_error: self.last_error.lock().ok().and_then(|e| e.clone()),
            disks: vec![self.disk_status()],
            requests: store.as_ref().map(|s| Requests {
                ok: g(&s.requests_ok),
                failed: g(&s.requests_failed),
                retries: g(&s.retries),
                bytes_sent: g(&s.bytes_sent),
                in_flight_bytes: g(&s.inflight_bytes),
            }),
        }
    }

    /// This disk's entry in a status document.
    pub fn disk_status(&self) -> DiskStatus {
        let g = |c: &AtomicU64| c.load(Relaxed);
        let store = self.store.lock().ok().and_then(|s| s.clone());
        DiskStatus {
            name: None,
            source: self.source.clone(),
            destination: self.destination.lock().map(|d| d.clone()).unwrap_or_default(),
            phase: self.phase(),
            last_error: self.last_error.lock().ok().and_then(|e| e.clone()),
            generation: g(&self.generation),
            disk_size: g(&self.disk_size),
            bytes_scanned: g(&self.bytes_scanned),
            bytes_read: g(&self.bytes_read),
            bytes_hashed: g(&self.bytes_hashed),
            bytes_zero: g(&self.bytes_zero),
            bytes_unchanged: g(&self.bytes_unchanged),
            bytes_written: g(&self.bytes_written),
            bytes_cleared: g(&self.bytes_cleared),
            // Bytes a remote destination has acknowledged (none for files).
            bytes_sent: store.as_ref().map(|s| g(&s.bytes_sent)),
            results: None,
            error: None,
        }
    }
}

/// Anything that can write a status document.
pub trait StatusSource: Send + Sync + std::fmt::Debug {
    fn status(&self) -> Status;
}

impl StatusSource for Progress {
    fn status(&self) -> Status {
        Progress::status(self)
    }
}
