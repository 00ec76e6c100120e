//! Adaptive pacing of the page writes, as AzCopy's page blob pacer does it:
//! back off multiplicatively when the service pushes back, grow additively
//! while it does not. Two limits, both adjusted on the same signal — a 503
//! or 429, a 500 or a timeout, counted in [`WireCounters::throttled`] —
//! at most once per [`COOLDOWN`] (one burst of 503s from the writes in
//! flight together counts once):
//!
//! - **concurrency**: writes in flight, from `--concurrency` down to 1
//!   (halved on pushback; one more per window of clean writes, as many as
//!   the limit, that began after the last cut);
//! - **rate**: bytes per second. Unpaced until the first pushback; then the
//!   rate the service accepted over the last second or two (when it pushes
//!   back, that is its target), times [`CUT`]; each further pushback cuts the rate again,
//!   and each second without one adds to it, the more the longer the calm
//!   ([`STEP`]): the rate saws between 90% and 100% of the target, a
//!   pushback every few seconds. A throttled write sent again by the retry
//!   decorator waits for its turn under the rate too (`RetryGate`).
//!   A per-blob target (60 MiB/s on a standard account) is a rate: with a
//!   fast network even one write at a time exceeds it, so only pacing the
//!   rate keeps the 503s rare.
//!
//! The current limits are published in [`WireCounters::concurrency`] and
//! [`WireCounters::pace_bytes_per_sec`] (the concurrency in the status
//! document and `--json`; both in `/metrics`).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use diskferry_blob::counters::WireCounters;
use tokio::sync::Notify;

/// The shortest time between two decreases.
pub const COOLDOWN: Duration = Duration::from_millis(1000);
/// A pushback cuts the rate to this much of what was just measured.
pub const CUT: f64 = 0.9;
/// Each second without pushback adds this much to the rate, times one
/// plus the seconds since the last pushback.
pub const STEP: f64 = 0.02;
/// Writes may run ahead of the rate by this much (a burst).
const BURST: Duration = Duration::from_millis(250);

#[derive(Debug)]
struct State {
    limit: usize,
    /// Clean writes since the limit last changed.
    clean: usize,
    in_flight: usize,
    seen_throttled: u64,
    last_cut: Option<Instant>,
    /// Counts the cuts: a write that began before the last one does not
    /// count as clean (it was sent under the old limit).
    epoch: u64,
    /// Bytes per second, once paced; the rate it was last cut to; when it last grew.
    rate: Option<f64>,
    grown: Instant,
    /// When the next write may start (the rate's virtual clock).
    next: Instant,
    /// Writes finished in the last second (when, bytes): the rate the
    /// service accepted; and when pacing began to be measured.
    done: std::collections::VecDeque<(Instant, u64)>,
    since: Instant,
}

/// The pacer (see the module's header).
#[derive(Debug)]
pub struct Pacer {
    max: usize,
    state: Mutex<State>,
    freed: Notify,
    counters: Arc<WireCounters>,
}

/// One write's slot; dropping it frees the slot.
#[derive(Debug)]
pub struct Slot {
    pacer: Arc<Pacer>,
    epoch: u64,
    bytes: u64,
}

impl Pacer {
    pub fn new(max: usize, counters: Arc<WireCounters>) -> Arc<Self> {
        let max = max.max(1);
        counters.concurrency.store(max as u64, Relaxed);
        let seen = counters.throttled.load(Relaxed);
        let now = Instant::now();
        Arc::new(Self {
            max,
            state: Mutex::new(State {
                limit: max,
                clean: 0,
                in_flight: 0,
                seen_throttled: seen,
                last_cut: None,
                epoch: 0,
                rate: None,
                grown: now,
                next: now,
                done: Default::default(),
                since: now,
            }),
            freed: Notify::new(),
            counters,
        })
    }

    /// The number of writes allowed in flight now.
    pub fn limit(&self) -> usize {
        self.state.lock().map_or(1, |s| s.limit)
    }

    /// Bytes per second allowed now (`None`: not paced).
    pub fn rate(&self) -> Option<f64> {
        self.state.lock().ok().and_then(|s| s.rate)
    }

    /// The turn of `bytes` under the rate: when it may start.
    fn turn(&self, bytes: u64) -> Option<Instant> {
        let mut s = self.state.lock().ok()?;
        let rate = s.rate?;
        let now = Instant::now();
        let start = s.next.max(now - BURST);
        s.next = start + Duration::from_secs_f64(bytes as f64 / rate);
        Some(start)
    }

    /// Wait for a slot for a write of `bytes`: a free place under the
    /// concurrency limit, then its turn under the rate.
    pub async fn slot(self: &Arc<Self>, bytes: u64) -> Slot {
        let epoch = loop {
            let notified = self.freed.notified();
            if let Ok(mut s) = self.state.lock() {
                if s.in_flight < s.limit.max(1) {
                    s.in_flight += 1;
                    break s.epoch;
                }
            }
            notified.await;
        };
        if let Some(at) = self.turn(bytes) {
            tokio::time::sleep_until(at.into()).await;
        }
        Slot { pacer: self.clone(), epoch, bytes }
    }

    /// A write finished (successfully or not): adjust the limits.
    fn finished(&self, epoch: u64, bytes: u64) {
        if let Ok(mut s) = self.state.lock() {
            s.in_flight -= 1;
            let now = Instant::now();
            s.done.push_back((now, bytes));
            while s.done.front().is_some_and(|(t, _)| now.duration_since(*t) > Duration::from_secs(1)) {
                s.done.pop_front();
            }
            let throttled = self.counters.throttled.load(Relaxed);
            if throttled > s.seen_throttled {
                s.seen_throttled = throttled;
                cut(&mut s, now, self.max);
            } else if epoch == s.epoch {
                s.clean += 1;
                if s.clean >= s.limit {
                    s.limit = (s.limit + 1).min(self.max);
                    s.clean = 0;
                }
            }
            let grow = now.duration_since(s.grown);
            if grow >= Duration::from_secs(1) {
                // Faster the longer the service has not pushed back: a
                // rate cut too far comes back within seconds, one near the
                // target probes it gently.
                let calm = s.last_cut.map_or(0.0, |t| t.elapsed().as_secs_f64()).min(10.0);
                let ceiling = measured(&s, now).map_or(f64::MAX, |m| (1.5 * m).max(1024.0 * 1024.0));
                if let Some(r) = s.rate.as_mut() {
                    // (Idle time does not count: a rate is probed while it is used.)
                    *r = (*r * (1.0 + STEP * (1.0 + calm) * grow.as_secs_f64().min(1.0))).min(ceiling);
                }
                s.grown = now;
            }
            // The measuring window: the last second or so.
            self.counters.concurrency.store(s.limit as u64, Relaxed);
            self.counters.pace_bytes_per_sec.store(s.rate.map_or(0, |r| r as u64), Relaxed);
        }
        self.freed.notify_waiters();
    }
}

/// A throttled write sent again waits for its turn under the rate too.
impl diskferry_blob::store::RetryGate for Pacer {
    fn before_retry(&self, bytes: u64) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            // The service just pushed back: back off now, not when some
            // write finishes.
            if let Ok(mut st) = self.state.lock() {
                st.seen_throttled = self.counters.throttled.load(Relaxed);
                cut(&mut st, Instant::now(), self.max);
            }
            if let Some(at) = self.turn(bytes) {
                tokio::time::sleep_until(at.into()).await;
            }
        })
    }
}

/// Back off (at most once a [`COOLDOWN`]): halve the concurrency, and cut
/// the rate — the first time from what the service accepted lately (over a
/// second at least: what the first writes got through in less says little
/// about a rate).
fn cut(s: &mut State, now: Instant, max: usize) {
    if s.last_cut.is_some_and(|t| t.elapsed() < COOLDOWN) {
        return;
    }
    // What it accepted in the last second, while it was being pushed past
    // its target, is the target (if it accepted nothing, the rate stays).
    let to = measured(s, now).filter(|m| *m > 0.0).or(s.rate).map(|r| CUT * r);
    if let Some(to) = to {
        s.rate = Some(to.max(256.0 * 1024.0));
    }
    s.grown = now;
    // Once the rate is paced, it holds the load down; too few slots would
    // let the writes waiting out a backoff stall the others.
    let floor = if s.rate.is_some() { (max / 2).max(1) } else { 1 };
    s.limit = (s.limit / 2).max(floor);
    s.clean = 0;
    s.last_cut = Some(now);
    s.epoch += 1;
}

/// The bytes per second the service accepted in the last second, once a
/// second has passed.
fn measured(s: &State, now: Instant) -> Option<f64> {
    (now.duration_since(s.since) >= Duration::from_secs(1)).then(|| {
        s.done.iter().filter(|(t, _)| now.duration_since(*t) <= Duration::from_secs(1)).map(|(_, b)| *b).sum::<u64>()
            as f64
    })
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.pacer.finished(self.epoch, self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn halves_on_pushback_and_grows_back_one_slot_a_window() {
        let c = Arc::new(WireCounters::default());
        let p = Pacer::new(16, c.clone());
        assert_eq!((p.limit(), p.rate()), (16, None));
        let slots: Vec<Slot> = futures::future::join_all((0..16).map(|_| p.slot(1 << 20))).await;
        // A burst of 503s from the writes in flight together: one halving,
        // and from now on a rate.
        c.throttled.fetch_add(16, Relaxed);
        drop(slots);
        assert_eq!(p.limit(), 8);
        assert_eq!(c.concurrency.load(Relaxed), 8);
        assert!(p.rate().is_none(), "a rate from the writes of the first moment");
        // Only 8 get a slot at once now.
        let held: Vec<Slot> = futures::future::join_all((0..8).map(|_| p.slot(0))).await;
        let ninth = tokio::time::timeout(Duration::from_millis(50), p.slot(0)).await;
        assert!(ninth.is_err(), "a ninth write got a slot under a limit of 8");
        // Eight clean writes (one window) grow the limit by one.
        drop(held);
        assert_eq!(p.limit(), 9);
        let before = p.limit();
        for _ in 0..before {
            drop(p.slot(0).await);
        }
        assert_eq!(p.limit(), before + 1);
        // Pushback again after the cooldown: halved again, never below 1.
        for _ in 0..5 {
            tokio::time::sleep(COOLDOWN).await;
            c.throttled.fetch_add(1, Relaxed);
            drop(p.slot(0).await);
        }
        assert_eq!(p.limit(), 1);
        // And back to the maximum, no further.
        for _ in 0..2000 {
            drop(p.slot(0).await);
        }
        assert_eq!(p.limit(), 16);
    }

    #[tokio::test]
    async fn a_rate_once_cut_spaces_the_writes() {
        let c = Arc::new(WireCounters::default());
        let p = Pacer::new(4, c.clone());
        // A second of writes at some rate, then pushback.
        for _ in 0..10 {
            drop(p.slot(1 << 20).await);
            tokio::time::sleep(Duration::from_millis(105)).await;
        }
        c.throttled.fetch_add(1, Relaxed);
        drop(p.slot(1 << 20).await);
        let rate = p.rate().expect("paced after pushback");
        // Writes of a quarter of the rate each: 8 of them take about 2 s
        // less the burst allowance, not no time at all.
        let bytes = (rate / 4.0) as u64;
        let t = Instant::now();
        for _ in 0..8 {
            drop(p.slot(bytes).await);
        }
        let took = t.elapsed();
        assert!(took >= Duration::from_millis(1250), "8 quarter-second writes took {took:?}");
        assert!(took < Duration::from_secs(4), "{took:?}");
    }
}
