//! What a replica reads: a VM (all its disks), or one managed disk, one
//! snapshot, or an image (each of its OS and data disk images). A replica
//! stores its source as text: a VM as its reference alone (as before), the
//! others prefixed with their kind (`disk:ID`, `snapshot:ID`, `image:ID`).

use anyhow::{bail, Result};

/// The kind of thing a replica reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SourceKind {
    Vm,
    Disk,
    Snapshot,
    Image,
}

impl SourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Vm => "vm",
            SourceKind::Disk => "disk",
            SourceKind::Snapshot => "snapshot",
            SourceKind::Image => "image",
        }
    }

    /// Whether a run keeps its snapshots for the next run to diff against.
    /// A disk's next snapshot is of the same disk, so the provider can say
    /// what changed between them; a snapshot or an image version is read
    /// through a copy that the next run (of another snapshot or version)
    /// cannot diff against, so keeping it would cost storage for nothing.
    /// The destination's recovery points are the base of the next sync
    /// either way.
    pub fn keeps_snapshots(self) -> bool {
        matches!(self, SourceKind::Vm | SourceKind::Disk)
    }
}

/// A replica's source: its kind and where the provider finds it (a folder
/// or file here; a resource id or `RESOURCE_GROUP/NAME` on Azure).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceRef {
    pub kind: SourceKind,
    pub id: String,
}

impl SourceRef {
    pub fn new(kind: SourceKind, id: impl Into<String>) -> Self {
        Self { kind, id: id.into() }
    }

    /// Read a replica's stored source.
    pub fn parse(stored: &str) -> Result<Self> {
        for kind in [SourceKind::Disk, SourceKind::Snapshot, SourceKind::Image] {
            if let Some(id) = stored.strip_prefix(kind.as_str()).and_then(|r| r.strip_prefix(':')) {
                if id.is_empty() {
                    bail!("source {stored:?} names no {}", kind.as_str());
                }
                return Ok(Self::new(kind, id));
            }
        }
        if stored.is_empty() {
            bail!("the replica names no source");
        }
        Ok(Self::new(SourceKind::Vm, stored))
    }

    /// As a replica stores it.
    pub fn stored(&self) -> String {
        match self.kind {
            SourceKind::Vm => self.id.clone(),
            k => format!("{}:{}", k.as_str(), self.id),
        }
    }

    /// Whether a run may be asked for `version` of this source: only an
    /// image has versions, and a version is a plain label.
    pub fn check_version(&self, version: Option<&str>) -> Result<()> {
        match version {
            Some(_) if self.kind != SourceKind::Image => {
                bail!("a {} has no versions: --version is for image sources", self.kind.as_str())
            }
            Some(v) => check_version(v),
            None => Ok(()),
        }
    }

    /// For people: `VM ...`, `disk ...`.
    pub fn describe(&self) -> String {
        match self.kind {
            SourceKind::Vm => format!("VM {}", self.id),
            k => format!("{} {}", k.as_str(), self.id),
        }
    }
}

/// An image version's name as a run records it: 1 to 64 letters, digits,
/// `.`, `-` or `_` (a gallery's `X.Y.Z`, or a label given with `--version`).
pub fn check_version(v: &str) -> Result<()> {
    let ok = !v.is_empty()
        && v.len() <= 64
        && v.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        && !v.starts_with(['-', '.']);
    if !ok {
        bail!("version {v:?} must be 1-64 letters, digits, '.', '-' or '_'");
    }
    Ok(())
}

/// A name made of a file's name: what `check_name` accepts (letters,
/// digits, `-`, `_`), other characters as `-`.
pub fn plain_name(file: &str) -> String {
    let s: String =
        file.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '-' }).take(64).collect();
    let s = s.trim_start_matches('-');
    if s.is_empty() {
        "source".to_owned()
    } else {
        s.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_sources_read_back() {
        for (kind, id) in [
            (SourceKind::Vm, "/srv/vms/web1"),
            (SourceKind::Vm, "prod/web1"),
            (SourceKind::Disk, "/subscriptions/s/resourceGroups/g/providers/Microsoft.Compute/disks/d"),
            (SourceKind::Snapshot, "/var/snap.img"),
            (SourceKind::Image, "/subscriptions/s/resourceGroups/g/providers/Microsoft.Compute/galleries/x/images/y"),
        ] {
            let s = SourceRef::new(kind, id);
            assert_eq!(SourceRef::parse(&s.stored()).unwrap(), s);
        }
        // A VM stored before sources had kinds reads as a VM.
        assert_eq!(SourceRef::parse("/srv/vms/web1").unwrap().kind, SourceKind::Vm);
        assert!(SourceRef::parse("image:").is_err());
        assert!(SourceRef::parse("").is_err());
        assert!(!SourceKind::Image.keeps_snapshots() && SourceKind::Disk.keeps_snapshots());
        let image = SourceRef::new(SourceKind::Image, "x");
        image.check_version(Some("1.0.1")).unwrap();
        assert!(image.check_version(Some("a/b")).is_err());
        assert!(SourceRef::new(SourceKind::Vm, "x").check_version(Some("1")).is_err());
        SourceRef::new(SourceKind::Disk, "x").check_version(None).unwrap();
    }

    #[test]
    fn versions_and_names_are_plain() {
        check_version("1.0.12").unwrap();
        check_version("2026-12-08_golden").unwrap();
        for bad in ["", ".1", "-x", "1.0/2", "a b", &"9".repeat(65)] {
            assert!(check_version(bad).is_err(), "{bad:?}");
        }
        assert_eq!(plain_name("golden.img"), "golden-img");
        assert_eq!(plain_name("..."), "source");
        assert_eq!(plain_name("web_1"), "web_1");
    }
}
