//! Prior message v1: what a receiver's destination holds, sent to the
//! sender when a session opens, so the sender plans exactly as a local sink
//! would. Little-endian:
//!
//! | bytes  | field |
//! |--------|-------|
//! | 0..4   | magic `DFRP` |
//! | 4      | version, 1 |
//! | 5      | kind: 1 fresh, 2 untrusted, 3 previous, 4 partial |
//! | 6..8   | reserved, 0 |
//! | 8..16  | generation: the last one (untrusted, 0 = none) or the interrupted one (partial), else 0 |
//! | 16..20 | reason length (fresh, untrusted), else 0 |
//! | 20..24 | number of suspect runs (previous, partial) |
//! | 24..28 | number of acked chunks (previous, partial) |
//! | 28..32 | reserved, 0 |
//! | 32..40 | manifest length (previous), else 0 |
//!
//! then the reason (UTF-8), the suspect runs (first, end: 16 bytes each),
//! the acked chunks (index, tag 0 zero / 1 data, digest: 41 bytes each), the
//! manifest (v1 bytes), and the first 8 bytes of blake3 of all before them.

use crate::digest::Digest;
use crate::manifest::{ChunkState, Manifest, ManifestError};
use crate::plan::Overrides;
use crate::prior::Prior;

pub const MAGIC: [u8; 4] = *b"DFRP";
pub const VERSION: u8 = 1;
const HEADER_LEN: usize = 40;
const RUN_LEN: usize = 16;
const ACK_LEN: usize = 41;
/// Longest reason accepted.
const MAX_REASON: usize = 4096;

/// Why a prior message was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PriorError {
    #[error("prior message is {len} bytes, it needs {need}")]
    Length { len: usize, need: usize },
    #[error("not a relay prior message (bad magic)")]
    Magic,
    #[error("relay prior version {0} is not supported (this build speaks version {VERSION})")]
    Version(u8),
    #[error("relay prior checksum mismatch (torn or altered)")]
    Checksum,
    #[error("relay prior field {field} = {value} is invalid: {why}")]
    Field { field: &'static str, value: u64, why: &'static str },
    #[error("relay prior manifest: {0}")]
    Manifest(#[from] ManifestError),
}

fn push_state(out: &mut Vec<u8>, s: ChunkState) {
    match s {
        ChunkState::Zero => out.extend_from_slice(&[0; 33]),
        ChunkState::Data(d) => {
            out.push(1);
            out.extend_from_slice(&d.0);
        }
    }
}

/// Encode `prior`.
pub fn encode(prior: &Prior) -> Result<Vec<u8>, ManifestError> {
    let (kind, generation, reason, overrides, manifest) = match prior {
        Prior::Fresh { reason } => (1u8, 0, reason.as_str(), None, None),
        Prior::Untrusted { reason, last_generation } => (2, last_generation.unwrap_or(0), reason.as_str(), None, None),
        Prior::Previous { manifest, overrides } => (3, 0, "", Some(overrides), Some(manifest.encode()?)),
        Prior::Partial { generation, overrides } => (4, *generation, "", Some(overrides), None),
    };
    let reason = &reason.as_bytes()[..reason.len().min(MAX_REASON)];
    let runs = overrides.map(Overrides::suspect_runs).unwrap_or_default();
    let acked = overrides.map(Overrides::acked_chunks).unwrap_or_default();
    let manifest = manifest.unwrap_or_default();
    let mut out =
        Vec::with_capacity(HEADER_LEN + reason.len() + runs.len() * 16 + acked.len() * 41 + manifest.len() + 8);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&[VERSION, kind, 0, 0]);
    out.extend_from_slice(&generation.to_le_bytes());
    for n in [reason.len(), runs.len(), acked.len(), 0] {
        out.extend_from_slice(&(n as u32).to_le_bytes());
    }
    out.extend_from_slice(&(manifest.len() as u64).to_le_bytes());
    out.extend_from_slice(reason);
    for (a, b) in runs {
        out.extend_from_slice(&a.to_le_bytes());
        out.extend_from_slice(&b.to_le_bytes());
    }
    for (i, s) in acked {
        out.extend_from_slice(&i.to_le_bytes());
        push_state(&mut out, s);
    }
    out.extend_from_slice(&manifest);
    let sum = blake3::hash(&out);
    out.extend_from_slice(&sum.as_bytes()[..8]);
    Ok(out)
}

fn bad<T>(field: &'static str, value: u64, why: &'static str) -> Result<T, PriorError> {
    Err(PriorError::Field { field, value, why })
}

/// Decode a prior message; chunk indices must stay below `max_chunks` (the
/// chunk count of the disk being synced).
pub fn decode(buf: &[u8], max_chunks: u64) -> Result<Prior, PriorError> {
    let too_short = |need: usize| PriorError::Length { len: buf.len(), need };
    let h = buf.get(..HEADER_LEN).ok_or_else(|| too_short(HEADER_LEN + 8))?;
    if h[..4] != MAGIC {
        return Err(PriorError::Magic);
    }
    if h[4] != VERSION {
        return Err(PriorError::Version(h[4]));
    }
    let u32_at = |i: usize| u32::from_le_bytes(h[i..i + 4].try_into().unwrap_or([0; 4])) as usize;
    let u64_at = |i: usize| u64::from_le_bytes(h[i..i + 8].try_into().unwrap_or([0; 8]));
    let (kind, generation) = (h[5], u64_at(8));
    let (reason_len, n_runs, n_acked, manifest_len) = (u32_at(16), u32_at(20), u32_at(24), u64_at(32));
    if h[6..8] != [0; 2] || h[28..32] != [0; 4] {
        return bad("reserved", 0, "must be zero");
    }
    if reason_len > MAX_REASON {
        return bad("reason length", reason_len as u64, "longer than 4096 bytes");
    }
    // Every length is checked against the buffer before anything is allocated.
    let need = (HEADER_LEN as u64)
        .saturating_add(reason_len as u64)
        .saturating_add((n_runs as u64).saturating_mul(RUN_LEN as u64))
        .saturating_add((n_acked as u64).saturating_mul(ACK_LEN as u64))
        .saturating_add(manifest_len)
        .saturating_add(8);
    if need != buf.len() as u64 {
        return Err(too_short(usize::try_from(need).unwrap_or(usize::MAX)));
    }
    let (body, sum) = buf.split_at(buf.len() - 8);
    if blake3::hash(body).as_bytes()[..8] != *sum {
        return Err(PriorError::Checksum);
    }
    let mut at = HEADER_LEN;
    let mut take = |n: usize| {
        let s = &body[at..at + n];
        at += n;
        s
    };
    let reason = std::str::from_utf8(take(reason_len))
        .map_err(|_| PriorError::Field { field: "reason", value: reason_len as u64, why: "not UTF-8" })?
        .to_owned();
    let mut overrides = Overrides::default();
    for _ in 0..n_runs {
        let r = take(RUN_LEN);
        let (a, b) = (
            u64::from_le_bytes(r[..8].try_into().unwrap_or([0; 8])),
            u64::from_le_bytes(r[8..].try_into().unwrap_or([0; 8])),
        );
        if a >= b || b > max_chunks {
            return bad("suspect run", a, "empty or past the last chunk");
        }
        overrides.mark_suspect(a, b);
    }
    for _ in 0..n_acked {
        let r = take(ACK_LEN);
        let i = u64::from_le_bytes(r[..8].try_into().unwrap_or([0; 8]));
        let digest: [u8; 32] = r[9..].try_into().unwrap_or([0; 32]);
        let state = match r[8] {
            0 if digest == [0; 32] => ChunkState::Zero,
            1 => ChunkState::Data(Digest(digest)),
            t => return bad("acked state", u64::from(t), "is neither zero nor data"),
        };
        if i >= max_chunks {
            return bad("acked chunk", i, "past the last chunk");
        }
        overrides.mark_acked(i, i + 1, state);
    }
    let manifest = take(manifest_len as usize);
    let none_but =
        |ok: bool| if ok { Ok(()) } else { bad("kind", u64::from(kind), "carries fields its kind does not have") };
    match kind {
        1 | 2 => {
            none_but(n_runs == 0 && n_acked == 0 && manifest_len == 0 && (kind == 2 || generation == 0))?;
            Ok(if kind == 1 {
                Prior::Fresh { reason }
            } else {
                Prior::Untrusted { reason, last_generation: (generation > 0).then_some(generation) }
            })
        }
        3 => {
            none_but(reason_len == 0 && generation == 0 && manifest_len > 0)?;
            // An earlier state of the disk, which may have been larger: at most
            // four times its chunks, checked before decompression.
            Ok(Prior::Previous {
                manifest: Manifest::decode_within(manifest, max_chunks.saturating_mul(4) + 1024)?,
                overrides,
            })
        }
        4 => {
            none_but(reason_len == 0 && manifest_len == 0 && generation > 0)?;
            Ok(Prior::Partial { generation, overrides })
        }
        k => bad("kind", u64::from(k), "unknown"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geometry::{ChunkSize, Geometry};

    fn samples() -> Vec<Prior> {
        let geo = Geometry::new(8 << 20, ChunkSize::new(1 << 20).unwrap()).unwrap();
        let d = ChunkState::of(&[5u8; 512]);
        let mut o = Overrides::default();
        o.mark_suspect(1, 3);
        o.mark_suspect(6, 7);
        o.mark_acked(4, 5, d);
        o.mark_acked(5, 6, ChunkState::Zero);
        let manifest = Manifest {
            geometry: geo,
            generation: 4,
            created_unix_ms: 1_700_000_000_000,
            source_id: "disk0".into(),
            chunks: vec![d, ChunkState::Zero, d, d, ChunkState::Zero, d, d, ChunkState::Zero].into(),
        };
        vec![
            Prior::Fresh { reason: "destination does not exist yet".into() },
            Prior::Untrusted { reason: "fence: blob is at generation 9".into(), last_generation: Some(9) },
            Prior::Untrusted { reason: "not written by diskferry".into(), last_generation: None },
            Prior::Previous { manifest, overrides: o.clone() },
            Prior::Partial { generation: 1, overrides: o },
        ]
    }

    #[test]
    fn every_kind_round_trips() {
        for p in samples() {
            let m = encode(&p).unwrap();
            assert_eq!(decode(&m, 8).unwrap(), p);
        }
    }

    #[test]
    fn damage_and_out_of_range_are_refused() {
        for p in samples() {
            let m = encode(&p).unwrap();
            for i in 0..m.len() {
                let mut bad = m.clone();
                bad[i] ^= 0x04;
                assert!(decode(&bad, 8).is_err(), "{p:?}: byte {i} altered, accepted");
            }
            assert!(decode(&m[..m.len() - 1], 8).is_err());
        }
        // Overrides naming chunks the disk does not have.
        let m = encode(&samples()[3]).unwrap();
        assert!(matches!(decode(&m, 6), Err(PriorError::Field { .. })));
    }
}
