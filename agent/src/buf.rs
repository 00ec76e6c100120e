//! A reusable byte buffer whose start is aligned to [`ALIGN`], so a write
//! straight from it can bypass the page cache (`O_DIRECT` wants the memory,
//! the offset and the length aligned to the device's block size).

use std::ops::{Deref, DerefMut};

/// The alignment of every [`AlignedBuf`]: a page, which is also the largest
/// logical block size of a disk in practice.
pub const ALIGN: usize = 4096;

/// Whether a write of `bytes` at `offset` may go through `O_DIRECT`.
pub fn direct_ok(offset: u64, bytes: &[u8]) -> bool {
    offset.is_multiple_of(ALIGN as u64)
        && bytes.len().is_multiple_of(ALIGN)
        && (bytes.as_ptr() as usize).is_multiple_of(ALIGN)
}

/// A buffer of `len` bytes starting on an [`ALIGN`] boundary. Its bytes
/// after [`AlignedBuf::set_len`] are unspecified (old contents or zeros):
/// every user overwrites what it reads.
#[derive(Debug, Default)]
pub struct AlignedBuf {
    raw: Vec<u8>,
    start: usize,
    len: usize,
}

/// Buffers of at least this size start on a huge page boundary and ask for
/// transparent huge pages (`MADV_HUGEPAGE`; honoured where THP is
/// `madvise` or `always`): a 32 MiB window or scratch buffer is then
/// faulted in 16 times, not 8192. Measured on a 2% incremental page blob
/// sync of the 4 GiB benchmark image: the 4 KiB faults of the pin's scratch
/// and of the window buffers were 6% of the agent's CPU.
pub const HUGE: usize = 2 << 20;

impl AlignedBuf {
    /// Make the buffer `len` bytes long, reallocating only when it must.
    pub fn set_len(&mut self, len: usize) {
        if self.raw.len() < self.start + len {
            let align = if len >= HUGE { HUGE } else { ALIGN };
            self.raw = vec![0; len + align];
            let at = self.raw.as_ptr() as usize;
            self.start = (align - at % align) % align;
            if align == HUGE {
                let whole = len / HUGE * HUGE;
                // SAFETY: madvise only advises the kernel about the pages of
                // `self.raw[start..start + whole]`, which this Vec owns and
                // which are huge-page aligned; MADV_HUGEPAGE changes no
                // contents and no mapping's permissions.
                let _ =
                    unsafe { libc::madvise(self.raw.as_mut_ptr().add(self.start).cast(), whole, libc::MADV_HUGEPAGE) };
            }
        }
        self.len = len;
    }
}

impl Deref for AlignedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.raw[self.start..self.start + self.len]
    }
}

impl DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.raw[self.start..self.start + self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_at_every_length_and_reused_when_it_fits() {
        let mut b = AlignedBuf::default();
        assert!(b.is_empty());
        for len in [1, 4095, 4096, 1 << 20, 512, 33 << 20, 7] {
            b.set_len(len);
            assert_eq!(b.len(), len);
            assert_eq!(b.as_ptr() as usize % ALIGN, 0, "len {len}");
            b[len - 1] = 1;
        }
        // Large ones start on a huge page, whatever the allocator gave.
        let mut h = AlignedBuf::default();
        h.set_len(HUGE + 512);
        assert_eq!(h.as_ptr() as usize % HUGE, 0);
        let at = b.as_ptr();
        b.set_len(4 << 20);
        assert_eq!(b.as_ptr(), at, "a shorter length keeps the allocation");
    }

    #[test]
    fn direct_needs_offset_length_and_memory_aligned() {
        let mut b = AlignedBuf::default();
        b.set_len(3 * ALIGN);
        assert!(direct_ok(0, &b));
        assert!(direct_ok(1 << 20, &b[..ALIGN]));
        assert!(!direct_ok(512, &b), "offset");
        assert!(!direct_ok(0, &b[..ALIGN + 512]), "length");
        assert!(!direct_ok(0, &b[512..512 + ALIGN]), "memory");
    }
}
