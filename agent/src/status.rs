//! `--status-file FILE`: the sync's status as versioned JSON, rewritten
//! atomically (temp file + rename) every few seconds and once at the end, so
//! a reader (the coordinator) never sees half a document. It holds no
//! secrets: destinations are shown with their SAS redacted.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::progress::StatusSource;

/// How often the file is rewritten while a sync runs (by default).
pub const INTERVAL: Duration = Duration::from_secs(2);

/// Another place each status document goes (a blob: a worker VM has no
/// inbound port). Called from the status thread; failures are its own business.
pub type Mirror = Box<dyn FnMut(&[u8]) + Send>;

/// Writes the status file until dropped; the final state is written on drop.
pub struct StatusWriter {
    path: PathBuf,
    progress: Arc<dyn StatusSource>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    mirror: Arc<std::sync::Mutex<Option<Mirror>>>,
}

impl std::fmt::Debug for StatusWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatusWriter").field("path", &self.path).finish_non_exhaustive()
    }
}

fn write_and_mirror(
    path: &Path,
    progress: &dyn StatusSource,
    mirror: &std::sync::Mutex<Option<Mirror>>,
) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let body = serde_json::to_vec_pretty(&progress.status()).map_err(std::io::Error::other)?;
    std::fs::write(&tmp, &body)?;
    std::fs::rename(&tmp, path)?;
    if let Ok(mut m) = mirror.lock() {
        if let Some(m) = m.as_mut() {
            m(&body);
        }
    }
    Ok(())
}

impl StatusWriter {
    pub fn start(path: PathBuf, progress: Arc<dyn StatusSource>) -> std::io::Result<Self> {
        Self::start_every(path, progress, INTERVAL)
    }

    /// Rewrite the file every `interval`.
    pub fn start_every(path: PathBuf, progress: Arc<dyn StatusSource>, interval: Duration) -> std::io::Result<Self> {
        Self::start_mirrored(path, progress, interval, None)
    }

    /// Rewrite the file every `interval` and hand each document to `mirror` too.
    pub fn start_mirrored(
        path: PathBuf,
        progress: Arc<dyn StatusSource>,
        interval: Duration,
        mirror: Option<Mirror>,
    ) -> std::io::Result<Self> {
        let mirror = Arc::new(std::sync::Mutex::new(mirror));
        write_and_mirror(&path, progress.as_ref(), &mirror)?;
        let stop = Arc::new(AtomicBool::new(false));
        let (p, pr, st, mi) = (path.clone(), progress.clone(), stop.clone(), mirror.clone());
        let thread = std::thread::Builder::new().name("diskferry-status".into()).spawn(move || {
            while !st.load(Ordering::Acquire) {
                std::thread::park_timeout(interval);
                let _ = write_and_mirror(&p, pr.as_ref(), &mi);
            }
        })?;
        Ok(Self { path, progress, stop, thread: Some(thread), mirror })
    }
}

impl Drop for StatusWriter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
        let _ = write_and_mirror(&self.path, self.progress.as_ref(), &self.mirror);
    }
}
