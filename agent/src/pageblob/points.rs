//! Recovery points of a page blob destination: one per committed generation
//! (a blob snapshot and the generation's manifest), listed in the index blob
//! `BLOB.points`; and what a commit sweeps away — everything beside the blob
//! that the index does not name.

use diskferry_blob::Listed;

pub use diskferry_core::report::RecoveryPoint;

/// The manifest blob of generation `g` of `blob`.
pub fn manifest_name(blob: &str, g: u64) -> String {
    format!("{blob}.g{g}.manifest")
}

/// The generation of `name` if it is a manifest of `blob`.
pub fn manifest_generation(blob: &str, name: &str) -> Option<u64> {
    name.strip_prefix(blob)?.strip_prefix(".g")?.strip_suffix(".manifest")?.parse().ok()
}

/// Whether `name` is part of `blob`'s state, kept beside it (or, for a
/// premium destination, in the state container): its journal and the
/// journal's later segments (`BLOB.journal`, `BLOB.journal.K`), its index
/// (`BLOB.points`) and its manifests (`BLOB.gG.manifest`).
pub fn is_state(blob: &str, name: &str) -> bool {
    let Some(rest) = name.strip_prefix(blob).and_then(|r| r.strip_prefix('.')) else { return false };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    rest == "journal"
        || rest == "points"
        || rest.strip_prefix("journal.").is_some_and(digits)
        || manifest_generation(blob, name).is_some()
}

/// What to delete once the index names `kept`: from `listed` (every name
/// starting with `blob`, with snapshot ids), the blob's snapshots and
/// manifests the index does not name — left by dropped points, by a commit
/// killed before its index, by a snapshot request retried after it
/// succeeded. Other blobs that only share the name's beginning are not
/// touched. Without a listing (no list permission), the `dropped` points.
pub fn unnamed(
    blob: &str,
    kept: &[RecoveryPoint],
    dropped: &[RecoveryPoint],
    listed: Option<Vec<Listed>>,
) -> Vec<(String, Option<String>)> {
    let Some(items) = listed else {
        return dropped
            .iter()
            .flat_map(|p| [(blob.to_owned(), Some(p.snapshot.clone())), (manifest_name(blob, p.generation), None)])
            .collect();
    };
    items
        .into_iter()
        .map(|l| (l.name, l.snapshot))
        .filter(|(name, snap)| match snap {
            Some(s) => name == blob && !kept.iter().any(|p| p.snapshot == *s),
            None => manifest_generation(blob, name).is_some_and(|g| !kept.iter().any(|p| p.generation == g)),
        })
        .collect()
}

/// The recovery points a destination holds, from its snapshots first: a
/// snapshot's metadata (its generation, the disk's size) is the blob's when
/// it was taken and can never change, while the index is a blob any writer
/// may overwrite. An index entry stands only if its snapshot is listed and
/// says the same generation, and the snapshot's consistency is the one it
/// has; a generation the index lost is recovered from its earliest snapshot
/// (`written` and `cleared` unknown: 0). `facts` reads a listed snapshot's
/// [`Facts`]. Without a listing (no list permission), the index as it is.
pub fn merge(
    blob: &str,
    index: Vec<RecoveryPoint>,
    listed: Option<&[Listed]>,
    facts: impl Fn(&Listed) -> Option<Facts>,
) -> Vec<RecoveryPoint> {
    let Some(items) = listed else { return index };
    let snaps: Vec<(&str, Facts)> =
        items.iter().filter(|l| l.name == blob).filter_map(|l| Some((l.snapshot.as_deref()?, facts(l)?))).collect();
    let mut out: Vec<RecoveryPoint> = index
        .into_iter()
        .filter_map(|mut p| {
            let (_, f) = snaps.iter().find(|(s, f)| *s == p.snapshot && f.generation == p.generation)?;
            p.consistency = f.consistency.clone();
            Some(p)
        })
        .collect();
    let mut lost: Vec<&(&str, Facts)> =
        snaps.iter().filter(|(_, f)| !out.iter().any(|p| p.generation == f.generation)).collect();
    // Snapshot ids are times (ISO 8601, fixed width): the earliest first.
    lost.sort_by(|a, b| (a.1.generation, a.0).cmp(&(b.1.generation, b.0)));
    lost.dedup_by_key(|x| x.1.generation);
    for (s, f) in lost {
        out.push(RecoveryPoint {
            generation: f.generation,
            snapshot: (*s).to_owned(),
            created_unix_ms: snapshot_time_ms(s).unwrap_or(0),
            disk_size: f.disk_size,
            bytes_written: 0,
            bytes_cleared: 0,
            consistency: f.consistency.clone(),
        });
    }
    out.sort_by_key(|p| p.generation);
    out
}

/// What a snapshot of the page blob says of itself, in the metadata it was
/// taken with (which no later writer can change).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    pub generation: u64,
    pub disk_size: u64,
    pub consistency: Option<String>,
}

/// When a snapshot was taken: its id is the time (`2026-12-01T19:33:04.1234567Z`).
pub fn snapshot_time_ms(id: &str) -> Option<i64> {
    let t = time::OffsetDateTime::parse(id, &time::format_description::well_known::Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

/// Whether a snapshot is younger than the retention floor at `now_ms`
/// (by its own time, which no writer can forge; one whose time cannot be
/// read counts as young: it is never deleted for its age).
pub fn within_floor(snapshot: &str, floor: Option<std::time::Duration>, now_ms: i64) -> bool {
    let Some(floor) = floor else { return false };
    match snapshot_time_ms(snapshot) {
        Some(t) => now_ms.saturating_sub(t) < floor.as_millis() as i64,
        None => true,
    }
}

/// Split `points` (oldest first) into those kept and those dropped: the
/// newest `keep` stay, and so does every point within the retention floor.
pub fn retain(
    points: Vec<RecoveryPoint>,
    keep: usize,
    floor: Option<std::time::Duration>,
    now_ms: i64,
) -> (Vec<RecoveryPoint>, Vec<RecoveryPoint>) {
    let drop_n = points.len().saturating_sub(keep.max(1));
    let (mut kept, mut dropped) = (Vec::new(), Vec::new());
    for (i, p) in points.into_iter().enumerate() {
        if i < drop_n && !within_floor(&p.snapshot, floor, now_ms) {
            dropped.push(p);
        } else {
            kept.push(p);
        }
    }
    (kept, dropped)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(g: u64, s: &str) -> RecoveryPoint {
        RecoveryPoint {
            generation: g,
            snapshot: s.into(),
            created_unix_ms: 0,
            disk_size: 0,
            bytes_written: 0,
            bytes_cleared: 0,
            consistency: None,
        }
    }

    #[test]
    fn the_state_blobs_are_named_by_the_blob() {
        for n in ["d.vhd.journal", "d.vhd.journal.3", "d.vhd.points", "d.vhd.g12.manifest"] {
            assert!(is_state("d.vhd", n), "{n}");
        }
        for n in ["d.vhd", "d.vhd2.journal", "d.vhd.journal.x", "d.vhd.journal.", "d.vhd.gX.manifest", "imports/d.vhd"]
        {
            assert!(!is_state("d.vhd", n), "{n}");
        }
    }

    #[test]
    fn only_what_the_index_does_not_name_goes() {
        let kept = [point(4, "s4"), point(5, "s5")];
        let listed: Vec<Listed> = [
            ("d.vhd", None),
            ("d.vhd", Some("s3")),
            ("d.vhd", Some("s4")),
            ("d.vhd", Some("s5")),
            ("d.vhd", Some("s5-twice")),
            ("d.vhd.g3.manifest", None),
            ("d.vhd.g4.manifest", None),
            ("d.vhd.g5.manifest", None),
            ("d.vhd.g9.manifest", None),
            ("d.vhd.points", None),
            ("d.vhd.journal", None),
            ("d.vhd2", Some("x")),
            ("d.vhd2.g1.manifest", None),
            ("d.vhd.gX.manifest", None),
        ]
        .iter()
        .map(|(n, s)| Listed { name: n.to_string(), snapshot: s.map(str::to_owned), metadata: Default::default() })
        .collect();
        let gone = unnamed("d.vhd", &kept, &[point(3, "s3")], Some(listed));
        let want: Vec<(String, Option<String>)> = [
            ("d.vhd", Some("s3")),
            ("d.vhd", Some("s5-twice")),
            ("d.vhd.g3.manifest", None),
            ("d.vhd.g9.manifest", None),
        ]
        .iter()
        .map(|(n, s)| (n.to_string(), s.map(str::to_owned)))
        .collect();
        assert_eq!(gone, want);
        // No listing: the dropped points only.
        let gone = unnamed("d.vhd", &kept, &[point(3, "s3")], None);
        assert_eq!(gone, vec![("d.vhd".into(), Some("s3".into())), ("d.vhd.g3.manifest".into(), None)]);
    }

    fn listed(name: &str, snap: &str, g: Option<u64>) -> Listed {
        let mut metadata = std::collections::BTreeMap::new();
        if let Some(g) = g {
            metadata.insert("g".to_owned(), g.to_string());
            metadata.insert("c".to_owned(), if g == 1 { "crash" } else { "per-disk" }.to_owned());
        }
        Listed { name: name.to_owned(), snapshot: Some(snap.to_owned()), metadata }
    }

    #[test]
    fn snapshots_outrank_the_index() {
        let facts = |l: &Listed| {
            Some(Facts {
                generation: l.metadata.get("g")?.parse().ok()?,
                disk_size: 1 << 20,
                consistency: l.metadata.get("c").cloned(),
            })
        };
        let s = |n: u32| format!("2026-12-01T10:00:0{n}.0000000Z");
        let items = vec![
            listed("d.vhd", &s(1), Some(1)),
            listed("d.vhd", &s(2), Some(2)),
            listed("d.vhd", &s(3), Some(2)), // a commit's retried snapshot
            listed("d.vhd", &s(4), None),    // not a point
            listed("other.vhd", &s(5), Some(9)),
        ];
        // A poisoned index: empty. Every point comes back from its snapshot.
        let got = merge("d.vhd", vec![], Some(&items), facts);
        let gs: Vec<(u64, String)> = got.iter().map(|p| (p.generation, p.snapshot.clone())).collect();
        assert_eq!(gs, vec![(1, s(1)), (2, s(2))]);
        assert_eq!(got[0].created_unix_ms, snapshot_time_ms(&s(1)).unwrap());
        // A forged entry (a snapshot that is not there, or of another
        // generation) is dropped; a true one keeps its counts.
        let mut p1 = point(1, &s(1));
        p1.bytes_written = 7;
        // The index cannot change what a point holds: its snapshot says.
        p1.consistency = Some("application".into());
        let got =
            merge("d.vhd", vec![p1, point(2, &s(1)), point(5, "2026-12-01T11:00:00.0000000Z")], Some(&items), facts);
        assert_eq!(got.iter().map(|p| (p.generation, p.bytes_written)).collect::<Vec<_>>(), vec![(1, 7), (2, 0)]);
        let held: Vec<Option<&str>> = got.iter().map(|p| p.consistency.as_deref()).collect();
        assert_eq!(held, [Some("crash"), Some("per-disk")]);
        // Without a listing: the index.
        assert_eq!(merge("d.vhd", vec![point(5, "x")], None, facts).len(), 1);
    }

    #[test]
    fn the_retention_floor_keeps_young_points_whatever_keep_says() {
        let now = snapshot_time_ms("2026-12-08T00:00:00.0000000Z").unwrap();
        let pts: Vec<RecoveryPoint> = (1..=5).map(|d| point(d, &format!("2026-12-0{d}T00:00:00.0000000Z"))).collect();
        let day = std::time::Duration::from_secs(86_400);
        let gens = |v: &[RecoveryPoint]| v.iter().map(|p| p.generation).collect::<Vec<_>>();
        let (kept, dropped) = retain(pts.clone(), 1, None, now);
        assert_eq!((gens(&kept), gens(&dropped)), (vec![5], vec![1, 2, 3, 4]));
        // A 5-day floor on Dec 8: the points of Dec 4 and 5 are younger
        // than it (Dec 3's is exactly 5 days old: it may go).
        let (kept, dropped) = retain(pts.clone(), 1, Some(5 * day), now);
        assert_eq!((gens(&kept), gens(&dropped)), (vec![4, 5], vec![1, 2, 3]));
        // An unreadable snapshot time counts as young.
        let (kept, _) = retain(vec![point(1, "not-a-time"), point(2, "x")], 1, Some(day), now);
        assert_eq!(gens(&kept), vec![1, 2]);
    }
}
