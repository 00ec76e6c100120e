//! Request bodies used again. Every Put Page carries a copy of its bytes
//! (the window it came from is reused as soon as the scan moves on), and a
//! fresh allocation for each copy costs more than the copy: the allocator
//! hands large blocks back to the kernel when they are freed on the I/O
//! thread, and the next copy faults every page in again, zeroed.
//!
//! A [`Bodies`] keeps the buffers of finished requests and hands them out
//! again. What it keeps is bounded (`keep` bytes), and what is in flight is
//! already bounded by the sink's byte budget, so memory stays bounded.

use bytes::Bytes;
use std::sync::{Arc, Mutex};

/// A pool of request body buffers; cheap to clone (one pool).
#[derive(Debug, Clone)]
pub struct Bodies {
    inner: Arc<Mutex<Free>>,
}

#[derive(Debug, Default)]
struct Free {
    buffers: Vec<Vec<u8>>,
    /// The capacity of `buffers`, summed.
    bytes: usize,
    keep: usize,
}

impl Bodies {
    /// A pool that keeps at most `keep` bytes of idle buffers.
    pub fn new(keep: usize) -> Self {
        Self { inner: Arc::new(Mutex::new(Free { keep, ..Free::default() })) }
    }

    /// A body holding a copy of `bytes`, in a buffer of the pool when one is
    /// large enough. The buffer returns to the pool when the last clone of
    /// the body is dropped.
    pub fn copy(&self, bytes: &[u8]) -> Bytes {
        let reused = {
            let mut free = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            // The smallest buffer that fits: bodies of one size (a write of
            // coalesced chunks) mostly meet buffers of that size.
            let best = free
                .buffers
                .iter()
                .enumerate()
                .filter(|(_, b)| b.capacity() >= bytes.len())
                .min_by_key(|(_, b)| b.capacity())
                .map(|(i, _)| i);
            best.map(|i| {
                let b = free.buffers.swap_remove(i);
                free.bytes -= b.capacity();
                b
            })
        };
        let mut buf = reused.unwrap_or_else(|| Vec::with_capacity(bytes.len()));
        buf.clear();
        buf.extend_from_slice(bytes);
        Bytes::from_owner(Body { buf, home: self.clone() })
    }

    fn give_back(&self, buf: Vec<u8>) {
        let mut free = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if free.bytes + buf.capacity() <= free.keep {
            free.bytes += buf.capacity();
            free.buffers.push(buf);
        }
    }

    /// Idle bytes held (for tests).
    #[cfg(test)]
    fn idle(&self) -> usize {
        self.inner.lock().unwrap().bytes
    }
}

/// The owner behind a body's [`Bytes`].
struct Body {
    buf: Vec<u8>,
    home: Bodies,
}

impl AsRef<[u8]> for Body {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Body {
    fn drop(&mut self) {
        self.home.give_back(std::mem::take(&mut self.buf));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_body_lends_its_buffer_to_the_next() {
        let pool = Bodies::new(16 << 20);
        let a = pool.copy(&[7u8; 4096]);
        let at = a.as_ptr();
        assert_eq!(&a[..], &[7u8; 4096][..]);
        let clone = a.clone();
        drop(a);
        assert_eq!(pool.idle(), 0, "a clone still holds the buffer");
        drop(clone);
        assert_eq!(pool.idle(), 4096);
        let b = pool.copy(&[9u8; 1000]);
        assert_eq!(b.as_ptr(), at, "the buffer is used again");
        assert_eq!(&b[..], &[9u8; 1000][..], "and holds only the new bytes");
        assert_eq!(pool.idle(), 0);
    }

    #[test]
    fn the_smallest_buffer_that_fits_is_taken() {
        let pool = Bodies::new(16 << 20);
        let (big, small) = (pool.copy(&[1u8; 8192]), pool.copy(&[2u8; 4096]));
        let (big_at, small_at) = (big.as_ptr(), small.as_ptr());
        drop((big, small));
        assert_eq!(pool.copy(&[3u8; 100]).as_ptr(), small_at);
        assert_eq!(pool.copy(&[4u8; 5000]).as_ptr(), big_at, "only the 8 KiB buffer fits 5000 bytes");
    }

    #[test]
    fn idle_buffers_stay_within_the_bound() {
        let pool = Bodies::new(10_000);
        let bodies: Vec<Bytes> = (0..4).map(|_| pool.copy(&[0u8; 4096])).collect();
        drop(bodies);
        assert_eq!(pool.idle(), 8192, "the third and fourth buffers are freed");
        let big = pool.copy(&[5u8; 20_000]);
        drop(big);
        assert_eq!(pool.idle(), 8192, "a buffer larger than the room left is freed");
    }
}
