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

/// Writes the status file until dropped; the final state is written on drop.
#[derive(Debug)]
pub struct StatusWriter {
    path: PathBuf,
    progress: Arc<dyn StatusSource>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

pub fn write_once(path: &Path, progress: &dyn StatusSource) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let body = serde_json::to_vec_pretty(&progress.status_json()).map_err(std::io::Error::other)?;
    std::fs::write(&tmp, body)?;
    std::fs::rename(&tmp, path)
}

impl StatusWriter {
    pub fn start(path: PathBuf, progress: Arc<dyn StatusSource>) -> std::io::Result<Self> {
        Self::start_every(path, progress, INTERVAL)
    }

    /// Rewrite the file every `interval`.
    pub fn start_every(path: PathBuf, progress: Arc<dyn StatusSource>, interval: Duration) -> std::io::Result<Self> {
        write_once(&path, progress.as_ref())?;
        let stop = Arc::new(AtomicBool::new(false));
        let (p, pr, st) = (path.clone(), progress.clone(), stop.clone());
        let thread = std::thread::Builder::new().name("diskferry-status".into()).spawn(move || {
            while !st.load(Ordering::Acquire) {
                std::thread::park_timeout(interval);
                let _ = write_once(&p, pr.as_ref());
            }
        })?;
        Ok(Self { path, progress, stop, thread: Some(thread) })
    }
}

impl Drop for StatusWriter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
        let _ = write_once(&self.path, self.progress.as_ref());
    }
}
