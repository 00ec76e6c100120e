//! Deterministic disk images for tests, demos and benchmarks.
//!
//! An image is cut into 1 MiB extents; each extent is random bytes, text-like
//! bytes (words, compressible like logs and configs) or left as a hole, in a
//! scattered order fixed by the seed, as on a used disk. `mutate` rewrites a
//! share of the data extents, as a day of writes would.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

pub const EXTENT: u64 = 1 << 20;

/// A small fast PRNG (SplitMix64): reproducible and far faster than the disk.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        let mut words = buf.chunks_exact_mut(8);
        for w in &mut words {
            w.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        let rest = words.into_remainder();
        let last = self.next_u64().to_le_bytes();
        rest.copy_from_slice(&last[..rest.len()]);
    }
}

const WORDS: &[&str] = &[
    "the",
    "disk",
    "block",
    "error",
    "info",
    "kernel:",
    "systemd[1]:",
    "Started",
    "session",
    "user",
    "root",
    "GET",
    "/api/v1/items",
    "200",
    "404",
    "latency_ms=",
    "\n",
    "config",
    "=",
    "true",
    "false",
    "0x7f3a",
    "2026-11-22T",
    "INFO",
    "WARN",
    "connection",
    "from",
    "10.0.0.",
    "port",
    "listen",
    "\n",
];

/// Text-like bytes: words from a small vocabulary with numbers, like logs.
pub fn fill_text(rng: &mut Rng, buf: &mut [u8]) {
    let mut at = 0;
    while at < buf.len() {
        let w = WORDS[rng.below(WORDS.len() as u64) as usize].as_bytes();
        let num = rng.below(1000).to_string();
        for part in [w, b" ", num.as_bytes(), b" "] {
            let n = part.len().min(buf.len() - at);
            buf[at..at + n].copy_from_slice(&part[..n]);
            at += n;
        }
    }
}

/// What an image is made of, in percent of its extents.
#[derive(Debug, Clone, Copy)]
pub struct Mix {
    pub random: u64,
    pub text: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    Hole,
    Random,
    Text,
}

/// The kind of every extent of an image of `extents` extents, scattered.
pub fn layout(extents: u64, mix: Mix, seed: u64) -> Vec<FrameKind> {
    let random = extents * mix.random / 100;
    let text = extents * mix.text / 100;
    let mut kinds: Vec<FrameKind> = (0..extents)
        .map(|i| {
            if i < random {
                FrameKind::Random
            } else if i < random + text {
                FrameKind::Text
            } else {
                FrameKind::Hole
            }
        })
        .collect();
    let mut rng = Rng::new(seed);
    for i in (1..kinds.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        kinds.swap(i, j);
    }
    kinds
}

/// Write a sparse image of `size` bytes (a multiple of 512) at `path`.
pub fn generate(path: &Path, size: u64, mix: Mix, seed: u64) -> io::Result<()> {
    let f = File::create(path)?;
    f.set_len(size)?;
    let kinds = layout(size.div_ceil(EXTENT), mix, seed);
    let mut buf = vec![0u8; EXTENT as usize];
    let mut rng = Rng::new(seed.wrapping_add(1));
    for (i, kind) in kinds.iter().enumerate() {
        let off = i as u64 * EXTENT;
        let len = EXTENT.min(size - off) as usize;
        match kind {
            FrameKind::Hole => continue,
            FrameKind::Random => rng.fill(&mut buf[..len]),
            FrameKind::Text => fill_text(&mut rng, &mut buf[..len]),
        }
        f.write_all_at(&buf[..len], off)?;
    }
    f.sync_all()
}

/// Rewrite `percent` of the image's extents (chosen by `seed`) with new
/// random data; returns how many extents changed.
pub fn mutate(path: &Path, percent: f64, seed: u64) -> io::Result<u64> {
    mutate_mixed(path, percent, 0, seed, None)
}

/// As [`mutate`], `text` percent of the rewritten extents with text-like
/// bytes instead of random ones; the new bytes of every rewritten extent,
/// in disk order, are also written to `dump` (what a sync must carry).
pub fn mutate_mixed(path: &Path, percent: f64, text: u64, seed: u64, dump: Option<&Path>) -> io::Result<u64> {
    let f = OpenOptions::new().read(true).write(true).open(path)?;
    let size = f.metadata()?.len();
    let extents = size.div_ceil(EXTENT);
    let n = ((extents as f64) * percent / 100.0).round() as u64;
    let mut rng = Rng::new(seed);
    let mut chosen = std::collections::BTreeSet::new();
    while (chosen.len() as u64) < n.min(extents) {
        chosen.insert(rng.below(extents));
    }
    let mut out = dump.map(File::create).transpose()?;
    let mut buf = vec![0u8; EXTENT as usize];
    for &i in &chosen {
        let off = i * EXTENT;
        let len = EXTENT.min(size - off) as usize;
        if rng.below(100) < text {
            fill_text(&mut rng, &mut buf[..len]);
        } else {
            rng.fill(&mut buf[..len]);
        }
        f.write_all_at(&buf[..len], off)?;
        if let Some(o) = out.as_mut() {
            io::Write::write_all(o, &buf[..len])?;
        }
    }
    f.sync_all()?;
    Ok(chosen.len() as u64)
}

/// Write the image's non-zero 1 MiB extents, in disk order, to `out`: the
/// data a first sync must carry. Returns the bytes written.
pub fn data_extents(image: &Path, out: &Path) -> io::Result<u64> {
    let f = File::open(image)?;
    let size = f.metadata()?.len();
    let mut o = io::BufWriter::new(File::create(out)?);
    let mut buf = vec![0u8; EXTENT as usize];
    let mut total = 0;
    let mut off = 0;
    while off < size {
        let len = EXTENT.min(size - off) as usize;
        f.read_exact_at(&mut buf[..len], off)?;
        if buf[..len].iter().any(|&b| b != 0) {
            io::Write::write_all(&mut o, &buf[..len])?;
            total += len as u64;
        }
        off += len as u64;
    }
    io::Write::flush(&mut o)?;
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_scattered_and_proportional() {
        let k = layout(1000, Mix { random: 25, text: 10 }, 1);
        assert_eq!(k.iter().filter(|&&x| x == FrameKind::Random).count(), 250);
        assert_eq!(k.iter().filter(|&&x| x == FrameKind::Text).count(), 100);
        // Scattered: the first quarter is not all random.
        assert!(k[..250].iter().filter(|&&x| x == FrameKind::Random).count() < 150);
        assert_eq!(k, layout(1000, Mix { random: 25, text: 10 }, 1));
    }
}
