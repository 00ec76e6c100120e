//! The journal's one writer, with group commit. Each window's upload task
//! hands it the window's intent records and waits; the writer appends
//! everything pending (the intents of every waiting window, plus the acks
//! storage returned since the last append) in one Append Block, then lets
//! the windows' writes go. Under load, many windows share one append; idle,
//! an intent costs one round trip, as before. Acks alone are appended every
//! [`ACK_INTERVAL`].

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use diskferry_core::journal::JournalHeader;
use tokio::sync::{mpsc, oneshot};

use super::sink::UploadState;
use diskferry_blob::PageStore;

/// How often acks alone are appended: what a kill can make a rerun resend
/// is the writes in flight plus what was acknowledged in this long.
pub const ACK_INTERVAL: Duration = Duration::from_millis(25);

/// Intent records of one window and the window's wait for them.
#[derive(Debug)]
struct Intents {
    bytes: Vec<u8>,
    durable: oneshot::Sender<bool>,
}

/// Whether the writer goes on, and how it stops (kept in an `AtomicU8`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Stop {
    Running = 0,
    /// Acks are no longer needed: a commit follows.
    DropAcks = 1,
    /// Append the acks, then stop: the generation stays open.
    KeepAcks = 2,
}

impl Stop {
    fn load(a: &AtomicU8) -> Self {
        match a.load(Ordering::Acquire) {
            0 => Stop::Running,
            1 => Stop::DropAcks,
            _ => Stop::KeepAcks,
        }
    }
}

/// Handle to the running writer.
#[derive(Debug)]
pub struct JournalWriter {
    tx: Option<mpsc::UnboundedSender<Intents>>,
    stop: Arc<AtomicU8>,
    task: tokio::task::JoinHandle<()>,
}

impl JournalWriter {
    /// Start appending to the journal `name` (whose header is `header`).
    pub fn start<S: PageStore>(
        rt: &tokio::runtime::Runtime,
        store: Arc<S>,
        name: String,
        header: JournalHeader,
        flight: Arc<Mutex<UploadState>>,
    ) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<Intents>();
        let stop = Arc::new(AtomicU8::new(Stop::Running as u8));
        let stopping = stop.clone();
        let task = rt.spawn(async move {
            loop {
                let first = tokio::select! {
                    m = rx.recv() => m,
                    _ = tokio::time::sleep(ACK_INTERVAL) => None,
                };
                let mut waiting: Vec<Intents> = first.into_iter().collect();
                while let Ok(m) = rx.try_recv() {
                    waiting.push(m);
                }
                let mode = Stop::load(&stopping);
                let done = mode != Stop::Running;
                // Once every write has finished before a commit, acks no
                // longer matter: the manifest about to be published
                // supersedes the journal.
                let acks = if mode == Stop::DropAcks {
                    Vec::new()
                } else {
                    flight.lock().map(|mut f| f.take_acks()).unwrap_or_default()
                };
                let mut payload = header.records(&acks);
                for w in &waiting {
                    payload.extend_from_slice(&w.bytes);
                }
                let mut ok = true;
                for part in payload.chunks(4 << 20) {
                    if let Err(e) = store.append(&name, Bytes::copy_from_slice(part)).await {
                        if let Ok(mut f) = flight.lock() {
                            f.fail(e);
                        }
                        ok = false;
                        break;
                    }
                }
                for w in waiting {
                    let _ = w.durable.send(ok);
                }
                if !ok || (done && rx.is_empty()) {
                    return;
                }
            }
        });
        Self { tx: Some(tx), stop, task }
    }

    /// A future that resolves to `true` once `intents` are in the journal
    /// (`false`: the append failed; the error is in the flight state).
    pub fn intents(&self, intents: Vec<u8>) -> impl std::future::Future<Output = bool> + Send + 'static {
        let (durable, rx) = oneshot::channel();
        let sent = self.tx.as_ref().is_some_and(|tx| tx.send(Intents { bytes: intents, durable }).is_ok());
        async move { sent && rx.await.unwrap_or(false) }
    }

    /// Stop after appending what is pending (the acks too if `keep_acks`:
    /// the generation stays open for a later run to resume); call once
    /// every write has finished.
    pub fn stop(mut self, rt: &tokio::runtime::Runtime, keep_acks: bool) {
        let mode = if keep_acks { Stop::KeepAcks } else { Stop::DropAcks };
        self.stop.store(mode as u8, Ordering::Release);
        self.tx = None;
        let _ = rt.block_on(&mut self.task);
    }
}
