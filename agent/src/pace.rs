//! Limits a job shares or a source sets, for syncs that run side by side:
//!
//! - [`ReadPace`]: a cap on how fast one source is read (`--read-limit`,
//!   the job spec's `read_limit`), so a sync of a live disk leaves its owner
//!   the rest of the disk's rate, and a test can model a disk SKU's rate.
//! - [`WindowBudget`]: how many scan windows every disk of a job may hold at
//!   once, together: memory for the job, whatever the number of disks.

use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// Reads of one source at most `bytes_per_sec` on average: each window
/// waits its turn, and the first goes at once.
#[derive(Debug)]
pub struct ReadPace {
    bytes_per_sec: f64,
    /// When the next read may start.
    next: Mutex<Option<Instant>>,
}

impl ReadPace {
    /// `None` for no limit (0).
    pub fn new(bytes_per_sec: u64) -> Option<Self> {
        (bytes_per_sec > 0).then(|| Self { bytes_per_sec: bytes_per_sec as f64, next: Mutex::new(None) })
    }

    /// Wait until `bytes` more may be read, and count them as read.
    pub fn take(&self, bytes: u64) {
        if bytes == 0 {
            return;
        }
        let wait = {
            let Ok(mut next) = self.next.lock() else { return };
            let now = Instant::now();
            let start = next.map_or(now, |n| n.max(now));
            *next = Some(start + Duration::from_secs_f64(bytes as f64 / self.bytes_per_sec));
            start - now
        };
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
    }
}

/// Scan windows every disk of a job may hold at once. A disk's scan takes a
/// [`Permit`] per window it reads and gives it back when the window has
/// been written; one that finds none free first finishes a window of its
/// own, and waits only when it holds none (so every disk with a window in
/// hand can always make progress: no deadlock).
#[derive(Debug)]
pub struct WindowBudget {
    free: Mutex<usize>,
    freed: Condvar,
}

/// One window's share of a [`WindowBudget`], given back on drop.
#[derive(Debug)]
pub struct Permit<'a>(&'a WindowBudget);

impl WindowBudget {
    /// At least one window.
    pub fn new(windows: usize) -> Self {
        Self { free: Mutex::new(windows.max(1)), freed: Condvar::new() }
    }

    pub fn try_take(&self) -> Option<Permit<'_>> {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        (*free > 0).then(|| {
            *free -= 1;
            Permit(self)
        })
    }

    /// Wait for a free window.
    pub fn take(&self) -> Permit<'_> {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        while *free == 0 {
            free = self.freed.wait(free).unwrap_or_else(|p| p.into_inner());
        }
        *free -= 1;
        Permit(self)
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        let mut free = self.0.free.lock().unwrap_or_else(|p| p.into_inner());
        *free += 1;
        self.0.freed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pace_lets_the_first_read_go_and_spaces_the_rest() {
        let p = ReadPace::new(100 << 20).unwrap();
        let t = Instant::now();
        p.take(10 << 20);
        assert!(t.elapsed() < Duration::from_millis(50), "the first read waits for nothing");
        p.take(10 << 20);
        p.take(10 << 20);
        // 20 MiB after the first 10, at 100 MiB/s: 0.2 s at least.
        assert!(t.elapsed() >= Duration::from_millis(195), "{:?}", t.elapsed());
        assert!(ReadPace::new(0).is_none());
    }

    #[test]
    fn a_budget_hands_out_its_windows_and_takes_them_back() {
        let b = WindowBudget::new(2);
        let (x, y) = (b.try_take().unwrap(), b.try_take().unwrap());
        assert!(b.try_take().is_none());
        drop(x);
        let z = b.try_take().unwrap();
        // A waiter wakes when another thread gives one back.
        std::thread::scope(|s| {
            let waiter = s.spawn(|| {
                let _p = b.take();
            });
            std::thread::sleep(Duration::from_millis(20));
            drop(y);
            waiter.join().unwrap();
        });
        drop(z);
        assert_eq!(*b.free.lock().unwrap(), 2);
    }
}
