//! Relay frame v1: one write (or clear) of a generation, with its checks.
//! The layout is documented in [`super`].

use crate::digest::Digest;
use crate::{MAX_WRITE, SECTOR};

pub const MAGIC: [u8; 4] = *b"DFRF";
pub const VERSION: u8 = 1;
pub const HEADER_LEN: usize = 64;
/// Largest raw length of one frame: one Put Page.
pub const MAX_RAW: u32 = MAX_WRITE as u32;

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    /// zstd-compressed bytes.
    Zstd = 1,
    /// The bytes as they are (compression would not shrink them).
    Raw = 2,
    /// The range became zero: clear it.
    Clear = 3,
}

/// A parsed, checked frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub kind: FrameKind,
    pub offset: u64,
    pub raw_len: u32,
    pub payload_len: u32,
    pub digest: Digest,
}

/// Why a frame was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame is {0} bytes, shorter than its 64-byte header")]
    Short(usize),
    #[error("not a relay frame (bad magic)")]
    Magic,
    #[error("relay frame version {0} is not supported (this build speaks version {VERSION})")]
    Version(u8),
    #[error("relay frame header checksum mismatch (torn or altered)")]
    HeaderChecksum,
    #[error("relay frame kind {0} is unknown")]
    FrameKind(u8),
    #[error("relay frame field {field} = {value} is invalid: {why}")]
    Field { field: &'static str, value: u64, why: &'static str },
    #[error("relay frame payload is {got} bytes, the header says {want}")]
    PayloadLength { got: usize, want: u32 },
    #[error("relay frame payload does not decompress to its declared {0} bytes")]
    Decompress(u32),
    #[error("relay frame bytes do not match their digest")]
    Digest,
}

/// The largest payload a frame of `raw_len` bytes may carry.
pub fn max_payload(raw_len: u32) -> u32 {
    // zstd's bound for one frame (ZSTD_COMPRESSBOUND), with room to spare.
    raw_len + (raw_len >> 8) + 1024
}

impl FrameHeader {
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[..4].copy_from_slice(&MAGIC);
        h[4] = VERSION;
        h[5] = self.kind as u8;
        h[8..16].copy_from_slice(&self.offset.to_le_bytes());
        h[16..20].copy_from_slice(&self.raw_len.to_le_bytes());
        h[20..24].copy_from_slice(&self.payload_len.to_le_bytes());
        h[24..56].copy_from_slice(&self.digest.0);
        let sum = blake3::hash(&h[..56]);
        h[56..64].copy_from_slice(&sum.as_bytes()[..8]);
        h
    }

    /// Parse and check a header; the payload is not looked at.
    pub fn parse(bytes: &[u8]) -> Result<Self, FrameError> {
        let h: &[u8; HEADER_LEN] =
            bytes.get(..HEADER_LEN).and_then(|b| b.try_into().ok()).ok_or(FrameError::Short(bytes.len()))?;
        if h[..4] != MAGIC {
            return Err(FrameError::Magic);
        }
        if h[4] != VERSION {
            return Err(FrameError::Version(h[4]));
        }
        if blake3::hash(&h[..56]).as_bytes()[..8] != h[56..64] {
            return Err(FrameError::HeaderChecksum);
        }
        let kind = match h[5] {
            1 => FrameKind::Zstd,
            2 => FrameKind::Raw,
            3 => FrameKind::Clear,
            k => return Err(FrameError::FrameKind(k)),
        };
        let u64_at = |i: usize| u64::from_le_bytes(h[i..i + 8].try_into().unwrap_or([0; 8]));
        let u32_at = |i: usize| u32::from_le_bytes(h[i..i + 4].try_into().unwrap_or([0; 4]));
        let (offset, raw_len, payload_len) = (u64_at(8), u32_at(16), u32_at(20));
        let bad = |field, value: u64, why| Err(FrameError::Field { field, value, why });
        if h[6] != 0 || h[7] != 0 {
            return bad("reserved", u64::from(u16::from_le_bytes([h[6], h[7]])), "must be zero");
        }
        if offset % SECTOR != 0 {
            return bad("offset", offset, "not a multiple of 512");
        }
        if raw_len == 0 || u64::from(raw_len) % SECTOR != 0 || raw_len > MAX_RAW {
            return bad("raw_len", u64::from(raw_len), "must be a multiple of 512 up to 4 MiB");
        }
        if offset.checked_add(u64::from(raw_len)).is_none() {
            return bad("offset", offset, "range overflows");
        }
        let payload_ok = match kind {
            FrameKind::Zstd => payload_len > 0 && payload_len <= max_payload(raw_len),
            FrameKind::Raw => payload_len == raw_len,
            FrameKind::Clear => payload_len == 0,
        };
        if !payload_ok {
            return bad("payload_len", u64::from(payload_len), "does not fit the kind and raw length");
        }
        let digest = Digest(h[24..56].try_into().unwrap_or([0; 32]));
        if kind == FrameKind::Clear && digest != Digest([0; 32]) {
            return Err(FrameError::Digest);
        }
        Ok(Self { kind, offset, raw_len, payload_len, digest })
    }

    /// The frame's whole length on the wire.
    pub fn frame_len(&self) -> usize {
        HEADER_LEN + self.payload_len as usize
    }

    /// Decompress (bounded) a data frame's payload into `out`, exactly
    /// `raw_len` bytes, and check the digest. A clear frame writes nothing.
    pub fn open_into(&self, payload: &[u8], out: &mut [u8]) -> Result<(), FrameError> {
        if payload.len() != self.payload_len as usize {
            return Err(FrameError::PayloadLength { got: payload.len(), want: self.payload_len });
        }
        if self.kind == FrameKind::Clear {
            return Ok(());
        }
        if out.len() != self.raw_len as usize {
            return Err(FrameError::Field { field: "raw_len", value: u64::from(self.raw_len), why: "does not fit" });
        }
        match self.kind {
            FrameKind::Raw => out.copy_from_slice(payload),
            _ => {
                // The output is exactly the declared length: zstd stops (an
                // error) rather than write past it, whatever the payload claims.
                let n =
                    zstd::bulk::decompress_to_buffer(payload, out).map_err(|_| FrameError::Decompress(self.raw_len))?;
                if n != out.len() {
                    return Err(FrameError::Decompress(self.raw_len));
                }
            }
        }
        if Digest::of(out) != self.digest {
            return Err(FrameError::Digest);
        }
        Ok(())
    }

    /// The raw bytes of a data frame, decompressed (bounded) and checked
    /// against the digest. A clear frame has none.
    pub fn open(&self, payload: &[u8]) -> Result<Vec<u8>, FrameError> {
        let len = if self.kind == FrameKind::Clear { 0 } else { self.raw_len as usize };
        let mut out = vec![0u8; len];
        self.open_into(payload, &mut out)?;
        Ok(out)
    }
}

/// A data frame for `raw` at `offset`, zstd at `level` unless that does
/// not shrink it. `raw` must be 512-aligned and at most 4 MiB.
pub fn data_frame(offset: u64, raw: &[u8], level: i32) -> std::io::Result<Vec<u8>> {
    let (header, payload) = FrameEncoder::new(level)?.encode(offset, raw, Digest::of(raw))?;
    let mut out = Vec::with_capacity(HEADER_LEN + payload.as_ref().map_or(raw.len(), Vec::len));
    out.extend_from_slice(&header);
    out.extend_from_slice(payload.as_deref().unwrap_or(raw));
    Ok(out)
}

/// Writes at least this long are probed before zstd gets them whole.
pub const PROBE_MIN: usize = 64 << 10;
/// The probe: this many samples of [`PROBE_SAMPLE`] bytes, spread evenly.
const PROBE_SAMPLES: usize = 8;
const PROBE_SAMPLE: usize = 4 << 10;

/// Makes data frames, reusing one zstd context (one per thread).
///
/// Before compressing a write of [`PROBE_MIN`] bytes or more it compresses
/// eight 4 KiB samples spread over it at zstd's fastest level: if none of
/// them shrinks by 2%, the write is sent raw without zstd ever seeing it
/// whole (already-compressed or encrypted data: zstd -3 would spend about
/// 0.6 ms per MiB to find that out; the probe spends 3% of that). The same
/// "early abort" OpenZFS uses before its slower zstd levels. What it costs:
/// a write that is incompressible in every sample but compressible between
/// them goes raw (its wire bytes are its raw bytes).
pub struct FrameEncoder {
    zstd: zstd::bulk::Compressor<'static>,
    probe: zstd::bulk::Compressor<'static>,
}

impl std::fmt::Debug for FrameEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FrameEncoder")
    }
}

impl FrameEncoder {
    pub fn new(level: i32) -> std::io::Result<Self> {
        Ok(Self { zstd: zstd::bulk::Compressor::new(level)?, probe: zstd::bulk::Compressor::new(1)? })
    }

    /// Whether every sample of `raw` resists compression.
    pub fn incompressible(&mut self, raw: &[u8]) -> std::io::Result<bool> {
        let stride = raw.len() / PROBE_SAMPLES;
        for k in 0..PROBE_SAMPLES {
            let sample = &raw[k * stride..k * stride + PROBE_SAMPLE.min(stride)];
            if self.probe.compress(sample)?.len() * 50 < sample.len() * 49 {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// A data frame's header and its compressed payload (`None`: the
    /// payload is `raw` itself, stored raw), for a caller that already knows
    /// the digest of `raw` (a chunk's, from the scan) and places the parts
    /// itself.
    pub fn encode(
        &mut self,
        offset: u64,
        raw: &[u8],
        digest: Digest,
    ) -> std::io::Result<([u8; HEADER_LEN], Option<Vec<u8>>)> {
        let compressed = if raw.len() >= PROBE_MIN && self.incompressible(raw)? {
            None
        } else {
            Some(self.zstd.compress(raw)?).filter(|c| c.len() < raw.len())
        };
        let kind = if compressed.is_some() { FrameKind::Zstd } else { FrameKind::Raw };
        let h = FrameHeader {
            kind,
            offset,
            raw_len: u32::try_from(raw.len()).map_err(std::io::Error::other)?,
            payload_len: u32::try_from(compressed.as_ref().map_or(raw.len(), Vec::len))
                .map_err(std::io::Error::other)?,
            digest,
        };
        Ok((h.encode(), compressed))
    }
}

/// A clear frame: `len` bytes at `offset` became zero.
pub fn clear_frame(offset: u64, len: u32) -> [u8; HEADER_LEN] {
    FrameHeader { kind: FrameKind::Clear, offset, raw_len: len, payload_len: 0, digest: Digest([0; 32]) }.encode()
}

/// Split a buffer of concatenated frames into (header, payload) pairs,
/// refusing the first bad header. Payloads are not opened.
pub fn split(mut buf: &[u8]) -> Result<Vec<(FrameHeader, &[u8])>, FrameError> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        let h = FrameHeader::parse(buf)?;
        let payload = buf
            .get(HEADER_LEN..h.frame_len())
            .ok_or(FrameError::PayloadLength { got: buf.len() - HEADER_LEN, want: h.payload_len })?;
        out.push((h, payload));
        buf = &buf[h.frame_len()..];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(n: usize) -> Vec<u8> {
        b"diskferry relays changed chunks across regions. ".iter().copied().cycle().take(n).collect()
    }

    #[test]
    fn round_trips_compressed_raw_and_clear() {
        let t = text(64 << 10);
        let f = data_frame(1 << 20, &t, 3).unwrap();
        let h = FrameHeader::parse(&f).unwrap();
        assert_eq!((h.kind, h.offset, h.raw_len), (FrameKind::Zstd, 1 << 20, 64 << 10));
        assert!(f.len() < t.len() / 10, "text compresses");
        assert_eq!(h.open(&f[HEADER_LEN..]).unwrap(), t);

        let mut noise = vec![0u8; 4096];
        blake3::Hasher::new().update(b"noise").finalize_xof().fill(&mut noise);
        let f = data_frame(0, &noise, 3).unwrap();
        let h = FrameHeader::parse(&f).unwrap();
        assert_eq!(h.kind, FrameKind::Raw);
        assert_eq!(h.open(&f[HEADER_LEN..]).unwrap(), noise);

        let c = clear_frame(4096, 8192);
        let h = FrameHeader::parse(&c).unwrap();
        assert_eq!((h.kind, h.raw_len, h.open(&[]).unwrap().len()), (FrameKind::Clear, 8192, 0));

        let mut all = data_frame(0, &t[..4096], 1).unwrap();
        all.extend_from_slice(&c);
        assert_eq!(split(&all).unwrap().len(), 2);
    }

    #[test]
    fn incompressible_writes_skip_zstd_and_mixed_ones_do_not() {
        let mut noise = vec![0u8; 1 << 20];
        blake3::Hasher::new().update(b"noise").finalize_xof().fill(&mut noise);
        let mut enc = FrameEncoder::new(3).unwrap();
        assert!(enc.incompressible(&noise).unwrap());
        let (h, payload) = enc.encode(0, &noise, Digest::of(&noise)).unwrap();
        assert_eq!((FrameHeader::parse(&h).unwrap().kind, payload), (FrameKind::Raw, None));
        // Text in one eighth of the write: a sample finds it, zstd runs.
        let mut mixed = noise.clone();
        mixed[5 << 17..6 << 17].copy_from_slice(&text(1 << 17));
        assert!(!enc.incompressible(&mixed).unwrap());
        let (h, payload) = enc.encode(0, &mixed, Digest::of(&mixed)).unwrap();
        let h = FrameHeader::parse(&h).unwrap();
        assert_eq!(h.kind, FrameKind::Zstd);
        let payload = payload.unwrap();
        assert!(payload.len() < mixed.len() - (100 << 10), "{} bytes", payload.len());
        assert_eq!(h.open(&payload).unwrap(), mixed);
        // Short writes are not probed: zstd decides.
        assert!(enc.encode(0, &text(8192), Digest::of(&text(8192))).unwrap().1.is_some());
    }

    #[test]
    fn tampering_is_refused() {
        let t = text(8192);
        let f = data_frame(512, &t, 3).unwrap();
        let h = FrameHeader::parse(&f).unwrap();
        // A payload byte changed: it decompresses to other bytes, or not at all.
        let mut p = f[HEADER_LEN..].to_vec();
        let last = p.len() - 1;
        p[last] ^= 1;
        assert!(matches!(h.open(&p), Err(FrameError::Digest | FrameError::Decompress(_))));
        // A header byte changed.
        let mut g = f.clone();
        g[9] ^= 2;
        assert_eq!(FrameHeader::parse(&g), Err(FrameError::HeaderChecksum));
        // A truncated frame.
        assert!(matches!(split(&f[..f.len() - 1]), Err(FrameError::PayloadLength { .. })));
        assert_eq!(FrameHeader::parse(&f[..10]), Err(FrameError::Short(10)));
    }

    #[test]
    fn a_decompression_bomb_is_refused() {
        // 64 MiB of zeros compresses to a few KiB; declared as 4 KiB it must not inflate.
        let bomb = zstd::bulk::compress(&vec![0u8; 64 << 20], 3).unwrap();
        let h = FrameHeader {
            kind: FrameKind::Zstd,
            offset: 0,
            raw_len: 4096,
            payload_len: bomb.len() as u32,
            digest: Digest::of(&[0u8; 4096]),
        };
        let parsed = FrameHeader::parse(&h.encode()).unwrap();
        assert_eq!(parsed.open(&bomb), Err(FrameError::Decompress(4096)));
    }

    #[test]
    fn hostile_headers_are_refused_before_any_payload() {
        let ok =
            FrameHeader { kind: FrameKind::Raw, offset: 0, raw_len: 512, payload_len: 512, digest: Digest([1; 32]) };
        let cases = [
            FrameHeader { raw_len: MAX_RAW + 512, payload_len: MAX_RAW + 512, ..ok },
            FrameHeader { raw_len: 100, payload_len: 100, ..ok },
            FrameHeader { offset: 7, ..ok },
            FrameHeader { offset: u64::MAX - 511, ..ok },
            FrameHeader { kind: FrameKind::Zstd, payload_len: u32::MAX, ..ok },
            FrameHeader { kind: FrameKind::Clear, payload_len: 0, ..ok },
        ];
        for c in cases {
            assert!(FrameHeader::parse(&c.encode()).is_err(), "{c:?} accepted");
        }
        let mut v2 = ok.encode();
        v2[4] = 2;
        assert_eq!(FrameHeader::parse(&v2), Err(FrameError::Version(2)));
    }
}
