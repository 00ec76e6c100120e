//! Zero detection at memory speed.
//!
//! A chunk is *zero* when every byte is 0. The check ORs 64-byte blocks of
//! `u64` words together (the compiler turns the fixed-size inner loop into
//! vector instructions) and stops at the first 4 KiB block that has a bit
//! set, so data chunks cost almost nothing and zero chunks cost one pass at
//! memory bandwidth.

/// Block after which the running OR is tested: large enough to keep the
/// vector loop busy, small enough that data chunks exit early.
const BLOCK: usize = 4096;

/// True when every byte of `buf` is zero.
pub fn is_zero(buf: &[u8]) -> bool {
    // Most data chunks have a non-zero byte in their first cache line.
    let head = buf.len().min(64);
    if buf[..head].iter().any(|&b| b != 0) {
        return false;
    }
    let mut blocks = buf.chunks_exact(BLOCK);
    for block in &mut blocks {
        if !block_is_zero(block) {
            return false;
        }
    }
    blocks.remainder().iter().all(|&b| b == 0)
}

#[inline]
fn block_is_zero(block: &[u8]) -> bool {
    let (lines, rest) = block.as_chunks::<64>();
    let mut acc = [0u8; 64];
    for line in lines {
        for (a, b) in acc.iter_mut().zip(line) {
            *a |= *b;
        }
    }
    acc.iter().chain(rest).fold(0, |a, &b| a | b) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_any_single_set_byte() {
        for len in [0usize, 1, 63, 64, 65, 4095, 4096, 4097, 10_000, 1 << 16] {
            let mut buf = vec![0u8; len];
            assert!(is_zero(&buf), "len {len}");
            for pos in [0, len / 3, len / 2, len.saturating_sub(1)] {
                if pos < len {
                    buf[pos] = 0x80;
                    assert!(!is_zero(&buf), "len {len} pos {pos}");
                    buf[pos] = 0;
                }
            }
        }
    }

    #[test]
    fn unaligned_slices() {
        let mut buf = vec![0u8; 9000];
        assert!(is_zero(&buf[3..8999]));
        buf[8998] = 1;
        assert!(!is_zero(&buf[3..8999]));
        assert!(is_zero(&buf[3..8998]));
    }
}
