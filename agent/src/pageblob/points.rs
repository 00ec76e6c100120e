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
        .map(|(n, s)| Listed { name: n.to_string(), snapshot: s.map(str::to_owned) })
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
}
