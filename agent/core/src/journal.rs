//! The journal of a generation being written.
//!
//! Before a sink writes or clears a range of chunks for generation G it
//! appends an *intent* record naming them and makes it durable; when storage
//! has acknowledged a write or clear it may append an *ack* record saying
//! what the chunk now holds. If the run dies, the published manifest still
//! says G-1 (or nothing), but the journal tells the next run what the
//! destination really holds: intents without a later ack are *suspect* (they
//! may hold anything, so they are rewritten or cleared whatever the source
//! says, even from a newer snapshot); acked chunks hold a known state (so a
//! rerun does not resend them). See [`crate::plan::Overrides`].
//!
//! ## Format (all integers little-endian)
//!
//! ```text
//! header, 56 bytes: magic "DFJOURN2" | generation u64 | base manifest digest [32] | disk size u64
//! record:           kind u8 | first chunk u64 | end chunk u64 | [digest 32, kind 2 only] | check u64
//!   kind 1 intent:    chunks first..end may be written or cleared from now on
//!   kind 2 ack data:  chunk first (end = first + 1) now holds data with this digest
//!   kind 3 ack zero:  chunks first..end now read as zero
//!   kind 4 segment:   this is segment `end` of the journal whose id is `first`
//! ```
//!
//! `check` is the first 8 bytes of blake3(header ++ record without check).
//! Records apply in order. A torn or foreign record ends the journal: what it
//! announced was never durable, so nothing after it happened.
//!
//! ## Segments
//!
//! An append blob holds at most 50,000 blocks, so a long generation's
//! journal is a chain of segments, each a journal of its own (same header),
//! whose first record names the chain's random id and its place in it.
//! Segment 0 starts the chain; a writer starts segment k+1 when segment k
//! is full or when it resumes (so whatever ended segment k, a torn tail
//! included, stays behind it). [`parse_segments`] reads a chain in order
//! and stops at the first segment that does not continue it: one left from
//! an earlier attempt names another id.

use crate::digest::Digest;
use crate::manifest::ChunkState;
use crate::plan::Overrides;

pub const MAGIC: [u8; 8] = *b"DFJOURN2";
pub const HEADER_LEN: usize = 56;
/// Most chunks a disk can have: 64 TiB in 64 KiB chunks.
const MAX_CHUNKS: u64 = 1 << 30;

const INTENT: u8 = 1;
const ACK_DATA: u8 = 2;
const ACK_ZERO: u8 = 3;
const SEGMENT: u8 = 4;

/// Which generation a journal belongs to, and on top of what.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JournalHeader {
    pub generation: u64,
    /// Digest of the encoded manifest the generation started from; all zero
    /// when it started from an empty destination.
    pub base: Digest,
    /// Disk size of the generation being written: acks only hold for it.
    pub disk_size: u64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JournalError {
    #[error("journal header is truncated or not a diskferry journal")]
    BadHeader,
}

/// One journal record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record {
    Intent {
        first: u64,
        end: u64,
    },
    AckData {
        chunk: u64,
        digest: Digest,
    },
    AckZero {
        first: u64,
        end: u64,
    },
    /// The first record of every segment: the chain's id and this segment's place.
    Segment {
        chain: u64,
        index: u64,
    },
}

impl JournalHeader {
    /// The base digest of a generation built on an empty destination.
    pub const EMPTY_BASE: Digest = Digest([0; 32]);

    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[..8].copy_from_slice(&MAGIC);
        h[8..16].copy_from_slice(&self.generation.to_le_bytes());
        h[16..48].copy_from_slice(&self.base.0);
        h[48..56].copy_from_slice(&self.disk_size.to_le_bytes());
        h
    }

    /// Encode one record for this journal.
    pub fn record(&self, r: &Record) -> Vec<u8> {
        let mut out = Vec::with_capacity(57);
        match r {
            Record::Intent { first, end } | Record::AckZero { first, end } => {
                out.push(if matches!(r, Record::Intent { .. }) { INTENT } else { ACK_ZERO });
                out.extend_from_slice(&first.to_le_bytes());
                out.extend_from_slice(&end.to_le_bytes());
            }
            Record::Segment { chain, index } => {
                out.push(SEGMENT);
                out.extend_from_slice(&chain.to_le_bytes());
                out.extend_from_slice(&index.to_le_bytes());
            }
            Record::AckData { chunk, digest } => {
                out.push(ACK_DATA);
                out.extend_from_slice(&chunk.to_le_bytes());
                out.extend_from_slice(&(chunk + 1).to_le_bytes());
                out.extend_from_slice(&digest.0);
            }
        }
        let check = self.check(&out);
        out.extend_from_slice(&check.to_le_bytes());
        out
    }

    /// The start of segment `index` of chain `chain`: the header and its
    /// segment record.
    pub fn segment_start(&self, chain: u64, index: u64) -> Vec<u8> {
        let mut out = self.encode().to_vec();
        out.extend(self.record(&Record::Segment { chain, index }));
        out
    }

    /// Encode several records back to back (one append).
    pub fn records(&self, rs: &[Record]) -> Vec<u8> {
        let mut out = Vec::with_capacity(rs.len() * 57);
        for r in rs {
            out.extend(self.record(r));
        }
        out
    }

    fn check(&self, body: &[u8]) -> u64 {
        let mut h = blake3::Hasher::new();
        h.update(&self.encode());
        h.update(body);
        let mut x = [0u8; 8];
        x.copy_from_slice(&h.finalize().as_bytes()[..8]);
        u64::from_le_bytes(x)
    }
}

/// Parse a journal: its header and what its records say about the chunks.
pub fn parse(bytes: &[u8]) -> Result<(JournalHeader, Overrides), JournalError> {
    let header = header_of(bytes)?;
    let mut o = Overrides::default();
    apply(&header, &bytes[HEADER_LEN..], &mut o);
    Ok((header, o))
}

/// A parsed chain of segments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    pub header: JournalHeader,
    pub overrides: Overrides,
    /// The chain's id (`None`: a journal written before segments, which
    /// no segment can continue).
    pub id: Option<u64>,
    /// Segments read (those after the last one read are not part of it).
    pub segments: u64,
}

/// Parse the segments `0, 1, ...` of a journal, in order: each one that
/// continues the chain (same header, its segment record naming the chain's
/// id and its index) adds its records; the first that does not ends it.
pub fn parse_segments<B: AsRef<[u8]>>(segments: &[B]) -> Result<Chain, JournalError> {
    let first = segments.first().map(AsRef::as_ref).ok_or(JournalError::BadHeader)?;
    let header = header_of(first)?;
    let mut overrides = Overrides::default();
    let id = segment_record(&header, &first[HEADER_LEN..]).filter(|&(_, index)| index == 0).map(|(c, _)| c);
    apply(&header, &first[HEADER_LEN..], &mut overrides);
    let mut read = 1;
    if let Some(chain) = id {
        for (k, seg) in segments.iter().enumerate().skip(1) {
            let seg = seg.as_ref();
            let continues = header_of(seg).ok() == Some(header)
                && segment_record(&header, &seg[HEADER_LEN..]) == Some((chain, k as u64));
            if !continues {
                break;
            }
            apply(&header, &seg[HEADER_LEN..], &mut overrides);
            read += 1;
        }
    }
    Ok(Chain { header, overrides, id, segments: read })
}

fn word(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

fn header_of(bytes: &[u8]) -> Result<JournalHeader, JournalError> {
    if bytes.len() < HEADER_LEN || bytes[..8] != MAGIC {
        return Err(JournalError::BadHeader);
    }
    let mut base = [0u8; 32];
    base.copy_from_slice(&bytes[16..48]);
    Ok(JournalHeader { generation: word(bytes, 8), base: Digest(base), disk_size: word(bytes, 48) })
}

/// The next whole, checked record of `rest`: (kind, body), and what follows.
fn next_record<'a>(header: &JournalHeader, rest: &'a [u8]) -> Option<(u8, &'a [u8], &'a [u8])> {
    let kind = *rest.first()?;
    let body_len = match kind {
        INTENT | ACK_ZERO | SEGMENT => 17,
        ACK_DATA => 49,
        _ => return None,
    };
    if rest.len() < body_len + 8 {
        return None;
    }
    let (body, tail) = rest.split_at(body_len);
    if word(tail, 0) != header.check(body) {
        return None;
    }
    Some((kind, body, &tail[8..]))
}

/// The segment record a segment's records start with.
fn segment_record(header: &JournalHeader, records: &[u8]) -> Option<(u64, u64)> {
    match next_record(header, records)? {
        (SEGMENT, body, _) => Some((word(body, 1), word(body, 9))),
        _ => None,
    }
}

/// Apply records in order, up to the first torn or foreign one.
fn apply(header: &JournalHeader, mut rest: &[u8], o: &mut Overrides) {
    while let Some((kind, body, tail)) = next_record(header, rest) {
        let (first, end) = (word(body, 1), word(body, 9));
        match kind {
            SEGMENT => {}
            _ if end < first || end > MAX_CHUNKS => break,
            INTENT => o.mark_suspect(first, end),
            ACK_ZERO => o.mark_acked(first, end, ChunkState::Zero),
            _ => {
                let mut d = [0u8; 32];
                d.copy_from_slice(&body[17..49]);
                o.mark_acked(first, first + 1, ChunkState::Data(Digest(d)));
            }
        }
        rest = tail;
    }
}

/// Acks only describe chunks under the geometry they were written with.
pub fn acks_hold(header: &JournalHeader, disk_size: u64) -> bool {
    header.disk_size == disk_size
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_apply_in_order_and_a_torn_tail_is_ignored() {
        let h = JournalHeader { generation: 4, base: Digest([3; 32]), disk_size: 10 << 20 };
        let d = Digest([7; 32]);
        let mut j = h.encode().to_vec();
        j.extend(h.record(&Record::Intent { first: 2, end: 6 }));
        j.extend(h.record(&Record::AckData { chunk: 2, digest: d }));
        j.extend(h.record(&Record::AckZero { first: 3, end: 4 }));
        let (hh, o) = parse(&j).unwrap();
        assert_eq!(hh, h);
        assert_eq!(o.acked(2), Some(ChunkState::Data(d)));
        assert_eq!(o.acked(3), Some(ChunkState::Zero));
        assert!(o.is_suspect(4) && o.is_suspect(5) && !o.is_suspect(2) && !o.is_suspect(6));
        // Rewritten after its ack: suspect again.
        let mut again = j.clone();
        again.extend(h.record(&Record::Intent { first: 2, end: 3 }));
        let (_, o2) = parse(&again).unwrap();
        assert!(o2.is_suspect(2) && o2.acked(2).is_none());
        // A record of another journal, then a torn record: both ignored.
        let other = JournalHeader { generation: 5, ..h };
        let mut torn = j.clone();
        torn.extend(other.record(&Record::Intent { first: 8, end: 9 }));
        torn.extend(&h.record(&Record::Intent { first: 9, end: 10 })[..10]);
        assert_eq!(parse(&torn).unwrap().1, o);
        assert_eq!(parse(&j[..20]), Err(JournalError::BadHeader));
    }

    #[test]
    fn segments_continue_the_chain_and_a_stale_one_ends_it() {
        let h = JournalHeader { generation: 7, base: Digest([1; 32]), disk_size: 4 << 20 };
        let d = Digest([9; 32]);
        let mut s0 = h.segment_start(42, 0);
        s0.extend(h.record(&Record::Intent { first: 0, end: 4 }));
        // A torn tail ends segment 0 only: segment 1 was started after it.
        s0.extend(&h.record(&Record::AckZero { first: 0, end: 1 })[..9]);
        let mut s1 = h.segment_start(42, 1);
        s1.extend(h.record(&Record::AckData { chunk: 1, digest: d }));
        let mut stale = h.segment_start(41, 2);
        stale.extend(h.record(&Record::AckData { chunk: 2, digest: d }));
        let c = parse_segments(&[s0.clone(), s1.clone(), stale]).unwrap();
        assert_eq!((c.header, c.id, c.segments), (h, Some(42), 2));
        assert_eq!(c.overrides.acked(1), Some(ChunkState::Data(d)));
        assert!(c.overrides.is_suspect(0) && c.overrides.is_suspect(2) && c.overrides.is_suspect(3));
        // Out of order, or of another header: not part of the chain.
        assert_eq!(parse_segments(&[s0.clone(), h.segment_start(42, 2)]).unwrap().segments, 1);
        let other = JournalHeader { generation: 8, ..h };
        assert_eq!(parse_segments(&[s0.clone(), other.segment_start(42, 1)]).unwrap().segments, 1);
        // A journal from before segments is read alone.
        let mut old = h.encode().to_vec();
        old.extend(h.record(&Record::Intent { first: 5, end: 6 }));
        let c = parse_segments(&[old, s1]).unwrap();
        assert_eq!((c.id, c.segments), (None, 1));
        assert!(c.overrides.is_suspect(5) && c.overrides.acked(1).is_none());
    }
}
