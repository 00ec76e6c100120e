//! Window message v1: one scan window of a generation, as a sender ships it
//! to the receiver (layout in [`super`]). Decoding checks every field
//! against the geometry of the session, so what reaches a sink is a plan the
//! sender's own planner could have made.

use crate::digest::Digest;
use crate::geometry::Geometry;
use crate::manifest::ChunkState;
use crate::plan::{ByteRange, Plan, Step};
use crate::relay::frame::{FrameError, FrameHeader, FrameKind, HEADER_LEN as FRAME_HEADER_LEN};

pub const MAGIC: [u8; 4] = *b"DFRW";
pub const VERSION: u8 = 1;
pub const HEADER_LEN: usize = 64;
/// Largest window a message may carry (the scan's windows are 32 MiB).
pub const MAX_WINDOW: u64 = 64 << 20;
const STATE_LEN: usize = 33;

/// Where a window lies and which one it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowHeader {
    pub seq: u64,
    pub first_chunk: u64,
    pub offset: u64,
    pub len: u64,
}

/// A decoded, checked window: frames borrow from the message.
#[derive(Debug)]
pub struct Window<'a> {
    pub header: WindowHeader,
    pub states: Vec<ChunkState>,
    pub frames: Vec<(FrameHeader, &'a [u8])>,
}

/// Why a window message was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WindowError {
    #[error("window message is {0} bytes, shorter than its header")]
    Short(usize),
    #[error("not a relay window message (bad magic)")]
    Magic,
    #[error("relay window version {0} is not supported (this build speaks version {VERSION})")]
    Version(u8),
    #[error("relay window checksum mismatch (torn or altered)")]
    Checksum,
    #[error("relay window field {field} = {value} is invalid: {why}")]
    Field { field: &'static str, value: u64, why: &'static str },
    #[error("relay window frame {index}: {source}")]
    Frame { index: u32, source: FrameError },
    #[error("relay window frame {index} at offset {offset}: {why}")]
    Placement { index: u32, offset: u64, why: &'static str },
    #[error("relay window has {0} bytes after its last frame")]
    Trailing(usize),
}

fn checksum(head: &[u8], states: &[u8]) -> [u8; 8] {
    let mut h = blake3::Hasher::new();
    h.update(head);
    h.update(states);
    let mut out = [0u8; 8];
    out.copy_from_slice(&h.finalize().as_bytes()[..8]);
    out
}

/// The header and states of a window message; the caller appends exactly
/// `n_frames` frames.
pub fn encode_head(h: &WindowHeader, states: &[ChunkState], n_frames: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + states.len() * STATE_LEN);
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.extend_from_slice(&[0; 3]);
    for v in [h.seq, h.first_chunk, h.offset, h.len] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(&(states.len() as u32).to_le_bytes());
    out.extend_from_slice(&n_frames.to_le_bytes());
    out.extend_from_slice(&[0; 16]);
    for s in states {
        match s {
            ChunkState::Zero => out.extend_from_slice(&[0; STATE_LEN]),
            ChunkState::Data(d) => {
                out.push(1);
                out.extend_from_slice(&d.0);
            }
        }
    }
    let sum = checksum(&out[..48], &out[HEADER_LEN..]);
    out[48..56].copy_from_slice(&sum);
    out
}

fn field<T>(field: &'static str, value: u64, why: &'static str) -> Result<T, WindowError> {
    Err(WindowError::Field { field, value, why })
}

/// Decode and check a window message for a disk of geometry `geo`.
pub fn decode(buf: &[u8], geo: Geometry) -> Result<Window<'_>, WindowError> {
    let h: &[u8; HEADER_LEN] =
        buf.get(..HEADER_LEN).and_then(|b| b.try_into().ok()).ok_or(WindowError::Short(buf.len()))?;
    if h[..4] != MAGIC {
        return Err(WindowError::Magic);
    }
    if h[4] != VERSION {
        return Err(WindowError::Version(h[4]));
    }
    let u64_at = |i: usize| u64::from_le_bytes(h[i..i + 8].try_into().unwrap_or([0; 8]));
    let u32_at = |i: usize| u32::from_le_bytes(h[i..i + 4].try_into().unwrap_or([0; 4]));
    let header = WindowHeader { seq: u64_at(8), first_chunk: u64_at(16), offset: u64_at(24), len: u64_at(32) };
    let (n_states, n_frames) = (u32_at(40), u32_at(44));
    if h[5..8] != [0; 3] || h[56..64] != [0; 8] {
        return field("reserved", 0, "must be zero");
    }
    let chunk = geo.chunk_size().get();
    let disk = geo.disk_size();
    if header.len == 0 || header.len > MAX_WINDOW {
        return field("len", header.len, "must be 1 byte to 64 MiB");
    }
    if header.first_chunk >= geo.chunk_count() || header.first_chunk.checked_mul(chunk) != Some(header.offset) {
        return field("first_chunk", header.first_chunk, "does not lie on the disk at the window's offset");
    }
    let end = header.offset.checked_add(header.len).filter(|&e| e <= disk);
    let Some(end) = end else { return field("len", header.len, "runs past the end of the disk") };
    if end % chunk != 0 && end != disk {
        return field("len", header.len, "does not end on a chunk boundary");
    }
    if u64::from(n_states) != header.len.div_ceil(chunk) {
        return field("n_states", u64::from(n_states), "is not the number of chunks in the window");
    }
    let states_end = HEADER_LEN + n_states as usize * STATE_LEN;
    let raw_states = buf.get(HEADER_LEN..states_end).ok_or(WindowError::Short(buf.len()))?;
    if checksum(&h[..48], raw_states) != h[48..56] {
        return Err(WindowError::Checksum);
    }
    let mut states = Vec::with_capacity(n_states as usize);
    for s in raw_states.chunks_exact(STATE_LEN) {
        let digest: [u8; 32] = s[1..].try_into().unwrap_or([0; 32]);
        states.push(match s[0] {
            0 if digest == [0; 32] => ChunkState::Zero,
            1 => ChunkState::Data(Digest(digest)),
            t => return field("state", u64::from(t), "is neither zero (0, no digest) nor data (1)"),
        });
    }
    let mut frames = Vec::new();
    let mut rest = &buf[states_end..];
    let mut next_free = header.offset;
    for index in 0..n_frames {
        let fh = FrameHeader::parse(rest).map_err(|source| WindowError::Frame { index, source })?;
        let payload = rest.get(FRAME_HEADER_LEN..fh.frame_len()).ok_or(WindowError::Frame {
            index,
            source: FrameError::PayloadLength {
                got: rest.len().saturating_sub(FRAME_HEADER_LEN),
                want: fh.payload_len,
            },
        })?;
        let place = |why| Err(WindowError::Placement { index, offset: fh.offset, why });
        let fend = fh.offset + u64::from(fh.raw_len);
        if fh.offset < next_free || fend > end {
            return place("outside the window or overlapping the frame before");
        }
        if fh.offset % chunk != 0 || (fend % chunk != 0 && fend != disk) {
            return place("not whole chunks");
        }
        let want_data = fh.kind != FrameKind::Clear;
        let first = (fh.offset - header.offset) / chunk;
        let last = (fend - header.offset).div_ceil(chunk);
        if states[first as usize..last as usize].iter().any(|s| matches!(s, ChunkState::Data(_)) != want_data) {
            return place("its chunks' states do not match its kind");
        }
        next_free = fend;
        frames.push((fh, payload));
        rest = &rest[fh.frame_len()..];
    }
    if !rest.is_empty() {
        return Err(WindowError::Trailing(rest.len()));
    }
    Ok(Window { header, states, frames })
}

impl Window<'_> {
    /// The plan this window carries out: writes from the data frames
    /// (adjacent ones merged up to 4 MiB, a Put Page), clears from the clear
    /// frames (adjacent ones merged), counted per chunk as the planner counts.
    pub fn plan(&self, chunk: u64) -> Plan {
        let mut plan = Plan::default();
        for (fh, _) in &self.frames {
            let kind = if fh.kind == FrameKind::Clear { Step::Clear } else { Step::Write };
            let end = fh.offset + u64::from(fh.raw_len);
            let mut at = fh.offset;
            while at < end {
                let next = (at + chunk).min(end);
                plan.push(kind, ByteRange::new(at, next));
                at = next;
            }
        }
        plan
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geometry::ChunkSize;
    use crate::relay::frame::{clear_frame, data_frame};

    const MIB: u64 = 1 << 20;

    fn geo() -> Geometry {
        Geometry::new(10 * MIB + 4096, ChunkSize::new(MIB).unwrap()).unwrap()
    }

    /// A window of the last 2 chunks + the short one: chunk 8 data, 9 zero, 10 (4 KiB) data.
    fn sample() -> (Vec<u8>, Vec<u8>, Vec<u8>) {
        let a = vec![7u8; MIB as usize];
        let b = vec![9u8; 4096];
        let states = [ChunkState::of(&a), ChunkState::Zero, ChunkState::of(&b)];
        let h = WindowHeader { seq: 3, first_chunk: 8, offset: 8 * MIB, len: 2 * MIB + 4096 };
        let mut m = encode_head(&h, &states, 3);
        m.extend(data_frame(8 * MIB, &a, 3).unwrap());
        m.extend(clear_frame(9 * MIB, MIB as u32));
        m.extend(data_frame(10 * MIB, &b, 3).unwrap());
        (m, a, b)
    }

    #[test]
    fn round_trips_and_rebuilds_the_plan() {
        let (m, a, b) = sample();
        let w = decode(&m, geo()).unwrap();
        assert_eq!(w.header.seq, 3);
        assert_eq!(w.states.len(), 3);
        assert_eq!(w.frames[0].0.open(w.frames[0].1).unwrap(), a);
        assert_eq!(w.frames[2].0.open(w.frames[2].1).unwrap(), b);
        let p = w.plan(MIB);
        assert_eq!(p.writes, vec![ByteRange::new(8 * MIB, 9 * MIB), ByteRange::new(10 * MIB, 10 * MIB + 4096)]);
        assert_eq!(p.clears, vec![ByteRange::new(9 * MIB, 10 * MIB)]);
        assert_eq!((p.stats.chunks_written, p.stats.chunks_cleared, p.stats.bytes_written), (2, 1, MIB + 4096));
    }

    #[test]
    fn every_altered_byte_of_the_head_is_refused() {
        let (m, ..) = sample();
        let states_end = HEADER_LEN + 3 * STATE_LEN;
        for i in 0..states_end {
            let mut bad = m.clone();
            bad[i] ^= 0x10;
            assert!(decode(&bad, geo()).is_err(), "byte {i} altered, accepted");
        }
        assert_eq!(decode(&m[..10], geo()).unwrap_err(), WindowError::Short(10));
        assert!(matches!(decode(&m[..m.len() - 1], geo()), Err(WindowError::Frame { index: 2, .. })));
        let mut long = m.clone();
        long.push(0);
        assert_eq!(decode(&long, geo()).unwrap_err(), WindowError::Trailing(1));
    }

    #[test]
    fn frames_must_match_their_place_and_states() {
        let a = vec![7u8; MIB as usize];
        let g = geo();
        let h = WindowHeader { seq: 0, first_chunk: 0, offset: 0, len: 2 * MIB };
        let data = [ChunkState::of(&a), ChunkState::Zero];
        let case = |states: &[ChunkState], frames: &[Vec<u8>]| {
            let mut m = encode_head(&h, states, frames.len() as u32);
            frames.iter().for_each(|f| m.extend(f));
            decode(&m, g).map(|_| ())
        };
        let fa = data_frame(0, &a, 1).unwrap();
        assert_eq!(case(&data, std::slice::from_ref(&fa)), Ok(()));
        // Outside the window, overlapping, not on a chunk, wrong kind for the state.
        let outside = data_frame(2 * MIB, &a, 1).unwrap();
        let half = data_frame(512, &a[..4096], 1).unwrap();
        let clear_data = clear_frame(0, MIB as u32).to_vec();
        let data_zero = data_frame(MIB, &a, 1).unwrap();
        for (frames, what) in [
            (vec![outside], "outside"),
            (vec![fa.clone(), fa.clone()], "overlap"),
            (vec![half], "part of a chunk"),
            (vec![clear_data], "clear of a data chunk"),
            (vec![fa.clone(), data_zero], "data for a zero chunk"),
        ] {
            assert!(matches!(case(&data, &frames), Err(WindowError::Placement { .. })), "{what} accepted");
        }
        // A window that does not sit where its first chunk says, or runs off the disk.
        for h in [
            WindowHeader { offset: 512, ..h },
            WindowHeader { first_chunk: 10, offset: 10 * MIB, len: 2 * MIB, ..h },
            WindowHeader { len: MAX_WINDOW + MIB, ..h },
        ] {
            let m = encode_head(&h, &data, 0);
            assert!(matches!(decode(&m, g), Err(WindowError::Field { .. })), "{h:?} accepted");
        }
    }
}
