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
//!   back, that is its target), times [`CUT`]; each further pushback
//!   measures the target again and cuts again. Between pushbacks the rate
//!   grows as TCP's CUBIC does: quickly back to [`NEAR`] of the target,
//!   then a slow probe ([`PROBE`] of the target a second), and after
//!   [`PATIENCE`] without pushback a search that multiplies again (the
//!   target may have moved).
//!   The rate then sits just under the target, and a pushback comes every
//!   half-minute or so, not every few seconds.
//! - Only a write sent after the last cut can cause another: the writes
//!   refused for having been sent at the old pace say nothing of the new
//!   one (as TCP cuts once per window of losses). A throttled write sent
//!   again by the retry decorator waits for its turn under the rate too
//!   (`RetryGate`), and the turns given at the old rate are given again.
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
use diskferry_blob::store::Refused;
use tokio::sync::Notify;

/// The shortest time between two decreases.
pub const COOLDOWN: Duration = Duration::from_millis(1000);
/// A pushback cuts the rate to this much of what was just measured.
pub const CUT: f64 = 0.9;
/// Below this much of the target the rate grows back quickly ([`REGROW`]
/// a second).
pub const NEAR: f64 = 0.97;
const REGROW: f64 = 0.10;
/// Above [`NEAR`], each second adds this much of the target...
pub const PROBE: f64 = 0.005;
/// ...until this long without pushback: then the rate grows by [`REGROW`]
/// a second again.
pub const PATIENCE: Duration = Duration::from_secs(20);
/// A pushback in the first second sets a rate only after this much was
/// sent: a byte target (a standard page blob's 60 MiB/s, with its burst)
/// is not met before.
const EARLY_MIN: u64 = 16 << 20;
/// What the service accepted over this long is its target (4 MiB writes
/// at 60 MiB/s: 30 of them, a count that varies by a few percent).
const WINDOW: Duration = Duration::from_secs(2);
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
    /// Bytes per second, once paced; when it last grew.
    rate: Option<f64>,
    /// What the service accepted when it last pushed back: its target.
    target: Option<f64>,
    grown: Instant,
    /// When the next write may start (the rate's virtual clock), and the
    /// size of the last write given a turn.
    next: Instant,
    last_bytes: u64,
    /// Writes finished in the last second (when, bytes): the rate the
    /// service accepted; and when pacing began to be measured.
    done: std::collections::VecDeque<(Instant, u64)>,
    since: Instant,
    /// Bytes given slots since then.
    sent_bytes: u64,
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
    sent: Instant,
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
                target: None,
                grown: now,
                next: now,
                last_bytes: 0,
                done: Default::default(),
                since: now,
                sent_bytes: 0,
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

    /// The turn of `bytes` under the rate: when it may start, and under
    /// which cut's rate it was given.
    fn turn(&self, bytes: u64) -> Option<(Instant, u64)> {
        let mut s = self.state.lock().ok()?;
        let rate = s.rate?;
        let now = Instant::now();
        let start = s.next.max(now - BURST);
        s.next = start + Duration::from_secs_f64(bytes as f64 / rate);
        s.last_bytes = bytes;
        Some((start, s.epoch))
    }

    /// Wait for the turn of `bytes`. A turn given under a rate since cut
    /// is given again: the writes that were waiting at the old rate would
    /// otherwise all meet the service while it is still pushing back.
    async fn wait_turn(&self, bytes: u64) {
        while let Some((at, epoch)) = self.turn(bytes) {
            tokio::time::sleep_until(at.into()).await;
            if self.state.lock().map_or(true, |s| s.epoch == epoch) {
                break;
            }
        }
    }

    /// Wait for a slot for a write of `bytes`: a free place under the
    /// concurrency limit, then its turn under the rate.
    pub async fn slot(self: &Arc<Self>, bytes: u64) -> Slot {
        let epoch = loop {
            let notified = self.freed.notified();
            if let Ok(mut s) = self.state.lock() {
                if s.in_flight < s.limit.max(1) {
                    s.in_flight += 1;
                    s.sent_bytes += bytes;
                    break s.epoch;
                }
            }
            notified.await;
        };
        self.wait_turn(bytes).await;
        Slot { pacer: self.clone(), epoch, bytes, sent: Instant::now() }
    }

    /// A write sent at `sent` finished (successfully or not): adjust the limits.
    fn finished(&self, epoch: u64, bytes: u64, sent: Instant) {
        if let Ok(mut s) = self.state.lock() {
            s.in_flight -= 1;
            let now = Instant::now();
            s.done.push_back((now, bytes));
            while s.done.front().is_some_and(|(t, _)| now.duration_since(*t) > WINDOW) {
                s.done.pop_front();
            }
            let throttled = self.counters.throttled.load(Relaxed);
            if throttled > s.seen_throttled {
                s.seen_throttled = throttled;
                cut(&mut s, now, sent, self.max);
            } else if epoch == s.epoch {
                s.clean += 1;
                if s.clean >= s.limit {
                    s.limit = (s.limit + 1).min(self.max);
                    s.clean = 0;
                }
            }
            let grow = now.duration_since(s.grown);
            if grow >= Duration::from_secs(1) {
                let calm = s.last_cut.map_or(Duration::ZERO, |t| t.elapsed());
                // (Idle time does not count: a rate is probed while it is used.)
                let ceiling = measured(&s, now).map_or(f64::MAX, |m| (1.5 * m).max(1024.0 * 1024.0));
                if let (Some(r), Some(target)) = (s.rate, s.target) {
                    s.rate = Some(grown(r, target, calm, grow.as_secs_f64().min(1.0)).min(ceiling));
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
    fn before_retry(&self, r: Refused) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            // The service just pushed back: back off now, not when some
            // write finishes. (A lost connection is no pushback.)
            if let Ok(mut st) = self.state.lock() {
                st.seen_throttled = self.counters.throttled.load(Relaxed);
                if r.pushback {
                    cut(&mut st, Instant::now(), r.sent, self.max);
                }
            }
            self.wait_turn(r.bytes).await;
        })
    }
}

/// Back off for a write refused after it was sent at `sent` (at most once
/// a [`COOLDOWN`], and only for a write sent after the last cut): halve the
/// concurrency, and cut the rate from what the service accepted lately
/// (over a second at least: what the first writes got through in less
/// says little about a rate).
fn cut(s: &mut State, now: Instant, sent: Instant, max: usize) {
    if s.last_cut.is_some_and(|t| t.elapsed() < COOLDOWN || sent < t) {
        return;
    }
    // Once paced, the pace it was pushed back at is the target (CUBIC's
    // W_max), if the writes kept up with it; otherwise (and the first time)
    // what the service accepted lately; if it accepted nothing, the rate
    // stays.
    // (Before a second has passed, few writes are done: what was sent by
    // then, over a second, stands for it. A service that pushes back
    // within its second of burst was sent at least that much, so this errs
    // high, and the next pushback corrects it; one set too low would come
    // back only slowly. Below [`EARLY_MIN`] sent, a pushback is no byte
    // target's, and the concurrency alone backs off.)
    let early = (s.sent_bytes >= EARLY_MIN)
        .then(|| s.sent_bytes as f64 / now.duration_since(s.since).max(Duration::from_secs(1)).as_secs_f64());
    let accepted = measured(s, now).or(early).filter(|m| *m > 0.0);
    let target = match (s.rate, accepted) {
        (Some(r), Some(m)) if m >= 0.8 * r => Some(r),
        (r, m) => m.or(r),
    };
    if let Some(target) = target {
        let rate = (CUT * target).max(256.0 * 1024.0);
        s.target = Some(target);
        s.rate = Some(rate);
        // The service has no room left just now: the next write waits
        // for room for one (no burst).
        s.next = now + Duration::from_secs_f64(s.last_bytes as f64 / rate);
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

/// The rate after `secs` more of calm (CUBIC's shape, in three pieces): a
/// quick return to just under the target, a slow probe past it, and
/// after [`PATIENCE`] a search that speeds up.
fn grown(rate: f64, target: f64, calm: Duration, secs: f64) -> f64 {
    if rate < NEAR * target {
        return (rate * (1.0 + REGROW * secs)).min(NEAR * target);
    }
    if calm < PATIENCE {
        return rate + target * PROBE * secs;
    }
    // Long calm: the target may have moved, or was guessed low; search as
    // at the start, multiplying.
    rate * (1.0 + REGROW * secs)
}

/// The bytes per second the service accepted over the last [`WINDOW`]
/// (or since pacing began, once a second has passed).
fn measured(s: &State, now: Instant) -> Option<f64> {
    let over = now.duration_since(s.since);
    (over >= Duration::from_secs(1)).then(|| {
        let bytes: u64 = s.done.iter().filter(|(t, _)| now.duration_since(*t) <= WINDOW).map(|(_, b)| *b).sum();
        bytes as f64 / over.min(WINDOW).as_secs_f64()
    })
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.pacer.finished(self.epoch, self.bytes, self.sent);
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
        // (Writes that carry no bytes: no rate comes of them, and the
        // concurrency alone holds the load.)
        let slots: Vec<Slot> = futures::future::join_all((0..16).map(|_| p.slot(0))).await;
        // A burst of 503s from the writes in flight together: one halving.
        c.throttled.fetch_add(16, Relaxed);
        drop(slots);
        assert_eq!(p.limit(), 8);
        assert_eq!(c.concurrency.load(Relaxed), 8);
        assert!(p.rate().is_none());
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

    #[test]
    fn the_rate_returns_quickly_then_probes_slowly() {
        let t = 100.0;
        let calm = Duration::from_secs(2);
        // From the cut (90%) back to 97% within a second or two...
        let r1 = grown(CUT * t, t, calm, 1.0);
        assert!((r1 - 97.0).abs() < 1e-9, "{r1}");
        // ...then half a percent of the target a second.
        let r2 = grown(r1, t, calm, 1.0);
        assert!((r2 - 97.5).abs() < 1e-9, "{r2}");
        // After long calm the search speeds up (the target may have moved).
        let late = grown(100.0, t, PATIENCE + Duration::from_secs(1), 1.0);
        assert!((late - 110.0).abs() < 1e-9, "{late}");
    }

    #[tokio::test]
    async fn a_pushback_in_the_first_second_paces_at_what_was_sent() {
        use diskferry_blob::store::RetryGate;
        let c = Arc::new(WireCounters::default());
        let p = Pacer::new(16, c.clone());
        // Sixteen 4 MiB writes sent at once; one is done when the service
        // pushes back: what was sent, over a second, is the first guess.
        let mut slots: Vec<Slot> = futures::future::join_all((0..16).map(|_| p.slot(4 << 20))).await;
        drop(slots.pop());
        c.throttled.fetch_add(1, Relaxed);
        p.before_retry(pushed(Instant::now())).await;
        let rate = p.rate().expect("paced from the first pushback");
        assert!((rate - CUT * f64::from(64 << 20)).abs() < 1.0, "{rate}");
        // After a few small writes a pushback is no byte target's: only
        // the concurrency backs off.
        let p = Pacer::new(16, c.clone());
        let slots: Vec<Slot> = futures::future::join_all((0..4).map(|_| p.slot(1 << 20))).await;
        drop(slots);
        c.throttled.fetch_add(1, Relaxed);
        p.before_retry(pushed(Instant::now())).await;
        assert_eq!((p.rate(), p.limit()), (None, 8));
    }

    fn pushed(sent: Instant) -> Refused {
        Refused { bytes: 0, sent, pushback: true }
    }

    #[tokio::test]
    async fn a_write_sent_before_the_last_cut_does_not_cut_again() {
        use diskferry_blob::store::RetryGate;
        let c = Arc::new(WireCounters::default());
        let p = Pacer::new(16, c.clone());
        for _ in 0..10 {
            drop(p.slot(1 << 20).await);
            tokio::time::sleep(Duration::from_millis(110)).await;
        }
        let sent_before = Instant::now();
        c.throttled.fetch_add(1, Relaxed);
        p.before_retry(pushed(Instant::now())).await;
        let (limit, rate) = (p.limit(), p.rate().expect("paced after pushback"));
        assert_eq!(limit, 8);
        // Past the cooldown, writes sent before that cut are refused too:
        // they were sent at the old pace, and change nothing.
        tokio::time::sleep(COOLDOWN + Duration::from_millis(100)).await;
        c.throttled.fetch_add(4, Relaxed);
        p.before_retry(pushed(sent_before)).await;
        assert_eq!((p.limit(), p.rate()), (limit, Some(rate)), "writes sent at the old pace cut again");
        // One sent since does cut the rate (the slots stay at their floor).
        c.throttled.fetch_add(1, Relaxed);
        p.before_retry(pushed(Instant::now())).await;
        assert!(p.rate().unwrap() < rate, "{:?} after {rate}", p.rate());
        assert_eq!(p.limit(), 8, "the floor of slots once paced");
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
