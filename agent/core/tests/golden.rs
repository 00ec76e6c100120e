//! Golden files pin the bytes of the manifest format v1, the VHD footer and
//! the journal. Decoding a golden file must always work; encoding the same
//! value must give the same bytes. `DISKFERRY_BLESS=1 cargo test` rewrites
//! them (only when a format change is intended and versioned).

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use diskferry_core::digest::Digest;
use diskferry_core::geometry::{ChunkSize, Geometry};
use diskferry_core::journal::{self, JournalHeader, Record};
use diskferry_core::manifest::{ChunkState, Manifest};
use diskferry_core::vhd::Footer;

fn golden(name: &str, bytes: &[u8]) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(name);
    if std::env::var_os("DISKFERRY_BLESS").is_some() {
        std::fs::write(&path, bytes).unwrap();
    }
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn manifest() -> Manifest {
    // 5 MiB + 512 bytes in 1 MiB chunks: zero, data, data, zero, data, short data.
    let geometry = Geometry::new((5 << 20) + 512, ChunkSize::new(1 << 20).unwrap()).unwrap();
    let d = |s: &str| ChunkState::Data(Digest::of(s.as_bytes()));
    Manifest {
        geometry,
        generation: 3,
        created_unix_ms: 1_795_000_000_123,
        source_id: "vm-web01/disk-os".into(),
        chunks: vec![ChunkState::Zero, d("a"), d("b"), ChunkState::Zero, d("a"), d("tail")].into(),
    }
}

#[test]
fn manifest_v1_bytes_are_pinned() {
    let m = manifest();
    let enc = m.encode().unwrap();
    let gold = golden("manifest-v1.bin", &enc);
    assert_eq!(Manifest::decode(&gold).unwrap(), m, "golden manifest no longer decodes to the same value");
    assert_eq!(enc, gold, "manifest v1 encoding changed: that needs a new format version");
}

#[test]
fn empty_disk_manifest_is_pinned() {
    let m = Manifest {
        geometry: Geometry::new(0, ChunkSize::new(64 << 10).unwrap()).unwrap(),
        generation: 1,
        created_unix_ms: 0,
        source_id: String::new(),
        chunks: Default::default(),
    };
    let enc = m.encode().unwrap();
    let gold = golden("manifest-v1-empty.bin", &enc);
    assert_eq!(Manifest::decode(&gold).unwrap(), m);
    assert_eq!(enc, gold);
}

#[test]
fn vhd_footer_bytes_are_pinned() {
    let f = Footer::new((5 << 20) + 512, 0x3039_0000, *b"diskferry-golden");
    let enc = f.encode();
    let gold = golden("footer-6MiB.bin", &enc);
    assert_eq!(Footer::parse(&gold).unwrap(), f);
    assert_eq!(enc.to_vec(), gold);
}

#[test]
fn journal_bytes_are_pinned() {
    let h = JournalHeader { generation: 9, base: Digest::of(b"base"), disk_size: 5 << 20 };
    let mut enc = h.encode().to_vec();
    enc.extend(h.record(&Record::Intent { first: 0, end: 4 }));
    enc.extend(h.record(&Record::AckData { chunk: 1, digest: Digest::of(b"one") }));
    enc.extend(h.record(&Record::AckZero { first: 2, end: 3 }));
    enc.extend(h.record(&Record::Intent { first: 100, end: 101 }));
    let gold = golden("journal-v2.bin", &enc);
    let (hh, o) = journal::parse(&gold).unwrap();
    assert_eq!((hh, o.suspect_count(), o.acked_count()), (h, 3, 2));
    assert_eq!(o.acked(1), Some(ChunkState::Data(Digest::of(b"one"))));
    assert_eq!(enc, gold);
}

/// Relay frames v1: a stored-raw frame and a clear frame are pinned byte for
/// byte; a zstd frame is pinned as the committed bytes a receiver must keep
/// accepting (zstd's own output may change between library versions, the
/// format may not).
#[test]
fn relay_frame_bytes_are_pinned() {
    use diskferry_core::relay::{clear_frame, data_frame, FrameHeader, FrameKind, HEADER_LEN};
    let mut raw = vec![0u8; 1024];
    blake3::Hasher::new().update(b"relay golden").finalize_xof().fill(&mut raw);
    let f = data_frame(3 << 20, &raw, 3).unwrap();
    assert_eq!(FrameHeader::parse(&f).unwrap().kind, FrameKind::Raw);
    assert_eq!(golden("relay-frame-v1-raw.bin", &f), f);
    let c = clear_frame(1 << 30, 4 << 20);
    assert_eq!(golden("relay-frame-v1-clear.bin", &c), c);

    let text: Vec<u8> = b"block by block, only what changed. ".iter().copied().cycle().take(8192).collect();
    let z = golden("relay-frame-v1-zstd.bin", &data_frame(1 << 20, &text, 3).unwrap());
    let h = FrameHeader::parse(&z).unwrap();
    assert_eq!((h.kind, h.offset, h.raw_len), (FrameKind::Zstd, 1 << 20, 8192));
    assert_eq!(h.open(&z[HEADER_LEN..]).unwrap(), text);
}

/// Relay window and prior messages v1: pinned byte for byte (their frames
/// are stored raw or clears, which do not depend on zstd's output).
#[test]
fn relay_window_and_prior_bytes_are_pinned() {
    use diskferry_core::plan::Overrides;
    use diskferry_core::prior::Prior;
    use diskferry_core::relay::{clear_frame, data_frame, prior, window};
    let m = manifest();
    let mut raw = vec![0u8; 64 << 10];
    blake3::Hasher::new().update(b"relay window golden").finalize_xof().fill(&mut raw);
    // A disk of two 64 KiB chunks and a short one of 512 bytes; the window
    // holds the last two: one written, the short one cleared.
    let geo = Geometry::new((128 << 10) + 512, ChunkSize::new(64 << 10).unwrap()).unwrap();
    let h = window::WindowHeader { seq: 7, first_chunk: 1, offset: 64 << 10, len: (64 << 10) + 512 };
    let mut w = window::encode_head(&h, &[ChunkState::of(&raw), ChunkState::Zero], 2);
    w.extend(data_frame(64 << 10, &raw, 3).unwrap());
    w.extend(clear_frame(128 << 10, 512));
    let g = golden("relay-window-v1.bin", &w);
    assert_eq!(g, w);
    let win = window::decode(&g, geo).unwrap();
    assert_eq!((win.header.seq, win.frames.len()), (7, 2));

    let mut o = Overrides::default();
    o.mark_suspect(2, 4);
    o.mark_acked(5, 6, ChunkState::of(b"tail"));
    for (name, p) in [
        ("relay-prior-v1-fresh.bin", Prior::Fresh { reason: "destination does not exist yet".into() }),
        ("relay-prior-v1-previous.bin", Prior::Previous { manifest: m.clone(), overrides: o.clone() }),
        ("relay-prior-v1-partial.bin", Prior::Partial { generation: 1, overrides: o.clone() }),
    ] {
        let bytes = prior::encode(&p).unwrap();
        assert_eq!(golden(name, &bytes), bytes, "{name}");
        assert_eq!(prior::decode(&bytes, m.geometry.chunk_count()).unwrap(), p);
    }
}

/// A job's final status: one disk synced to two destinations (one failed),
/// one disk whose source failed.
fn status() -> diskferry_core::report::Status {
    use diskferry_core::report::*;
    let report = SyncReport {
        destination: "pageblob:https://acct.blob.core.windows.net/disks/vm1/os.vhd".into(),
        generation: 4,
        full_sync: false,
        full_sync_reason: None,
        disk_size: 8 << 30,
        previous_disk_size: Some(8 << 30),
        chunk_size: 1 << 20,
        chunks: 8192,
        chunks_zero: 5999,
        chunks_unchanged: 2180,
        chunks_written: 12,
        chunks_cleared: 1,
        chunks_suspect: 0,
        bytes_zero: 5999 << 20,
        bytes_unchanged: 2180 << 20,
        bytes_written: 12 << 20,
        bytes_cleared: 1 << 20,
        bytes_read: 2192 << 20,
        seconds: 3.5,
        seconds_writing: 0.25,
        seconds_committing: 0.125,
        read_bytes_per_second: 2.5e9,
        wire: Some(WireStats {
            bytes_sent: (12 << 20) + 512,
            bytes_raw: (12 << 20) + 512,
            requests_ok: 30,
            requests_failed: 1,
            retries: 1,
            clear_requests: 1,
            throttled: 1,
            concurrency: 8,
        }),
        hint: Some("used: 3 ranges, 12582912 bytes may have changed".into()),
        chunks_hinted: 6000,
    };
    let disk = |name: &str| DiskStatus {
        name: Some(name.into()),
        source: format!("lun:{}", if name == "os" { 0 } else { 1 }),
        destination: "pageblob:https://acct.blob.core.windows.net/disks/vm1/os.vhd?<sas>".into(),
        phase: Phase::Done,
        last_error: None,
        generation: 4,
        disk_size: 8 << 30,
        bytes_scanned: 8 << 30,
        bytes_read: 2192 << 20,
        bytes_hashed: 2192 << 20,
        bytes_zero: 5999 << 20,
        bytes_unchanged: 2180 << 20,
        bytes_written: 12 << 20,
        bytes_cleared: 1 << 20,
        bytes_sent: Some((12 << 20) + 512),
        results: None,
        error: None,
    };
    let mut os = disk("os");
    os.results = Some(vec![
        DestinationResult { destination: report.destination.clone(), report: Some(report), error: None },
        DestinationResult {
            destination: "file:/mnt/copy/os.vhd".into(),
            report: None,
            error: Some("destination file:/mnt/copy/os.vhd is in use by another sync".into()),
        },
    ]);
    let mut data = disk("data");
    data.phase = Phase::Failed;
    data.last_error = Some("source lun:1: no disk at LUN 1 after 120 s".into());
    data.error = Some("disk data: source lun:1: no disk at LUN 1 after 120 s".into());
    Status {
        version: STATUS_VERSION,
        run_id: Some("r-20261201-0001".into()),
        phase: Phase::Failed,
        updated_unix_ms: 1_795_000_000_123,
        seconds: None,
        last_error: None,
        disks: vec![os, data],
        requests: None,
    }
}

#[test]
fn status_v2_documents_are_pinned_both_ways() {
    let s = status();
    let mut enc = serde_json::to_vec_pretty(&s).unwrap();
    enc.push(b'\n');
    let gold = golden("status-v2.json", &enc);
    assert_eq!(String::from_utf8_lossy(&enc), String::from_utf8_lossy(&gold), "status v2 changed shape");
    assert_eq!(diskferry_core::report::Status::parse(&gold).unwrap(), s);
}
