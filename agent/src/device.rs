//! Finding a job disk's source on the worker. A path is taken as it is;
//! `lun:N` is the data disk attached at LUN N of an Azure VM, found through
//! Azure's udev links, which differ by disk controller:
//!
//! - `/dev/disk/azure/data/by-lun/N` — azure-vm-utils, on NVMe VM sizes (v6
//!   and newer) and, where the package is installed, on SCSI ones too;
//! - `/dev/disk/azure/scsi1/lunN` — WALinuxAgent's rules, SCSI VM sizes.
//!
//! A disk attached at creation can still be on its way when the agent
//! starts (udev has not made the link yet), so the lookup waits for it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::anyhow;
use diskferry_core::job::JobDisk;

use crate::exit::{ExitCode, Failure};
use crate::source::SourceName;

/// Where Azure's udev rules put their links; tests point it elsewhere.
pub const AZURE_DISKS_ENV: &str = "DISKFERRY_AZURE_DISKS";
const AZURE_DISKS: &str = "/dev/disk/azure";
/// How long a `lun:N` source may take to appear.
pub const LUN_WAIT: Duration = Duration::from_secs(120);

/// The links a disk at `lun` may have under `root`, most specific first.
pub fn lun_candidates(root: &Path, lun: u8) -> [PathBuf; 2] {
    [root.join("data/by-lun").join(lun.to_string()), root.join(format!("scsi1/lun{lun}"))]
}

/// What to read for `disk`: its source; for `lun:N` the first link that
/// exists within `wait`; for `url-file:PATH` the page blob whose URL the
/// file holds (a file others may read is refused: the URL carries a SAS).
pub fn resolve(disk: &JobDisk, wait: Duration) -> Result<SourceName, Failure> {
    if let Some(file) = disk.url_file() {
        return read_url_file(Path::new(file));
    }
    let root = std::env::var_os(AZURE_DISKS_ENV).map_or_else(|| PathBuf::from(AZURE_DISKS), PathBuf::from);
    resolve_in(disk, &root, wait).map(SourceName::Path)
}

fn read_url_file(file: &Path) -> Result<SourceName, Failure> {
    use std::os::unix::fs::PermissionsExt;
    let bad = |why: String| Failure::new(ExitCode::Source, anyhow!("source url-file:{}: {why}", file.display()));
    let meta = std::fs::metadata(file).map_err(|e| bad(e.to_string()))?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(bad("readable by others: it holds a SAS (chmod 600)".into()));
    }
    let text = std::fs::read_to_string(file).map_err(|e| bad(e.to_string()))?;
    match text.trim().parse::<SourceName>() {
        Ok(name @ SourceName::Blob(_)) => Ok(name),
        Ok(SourceName::Path(_)) => Err(bad("holds no http(s) URL".into())),
        Err(e) => Err(bad(e)),
    }
}

/// [`resolve`] with Azure's links under `root`.
pub fn resolve_in(disk: &JobDisk, root: &Path, wait: Duration) -> Result<PathBuf, Failure> {
    let Some(lun) = disk.lun() else { return Ok(PathBuf::from(&disk.source)) };
    let candidates = lun_candidates(root, lun);
    let deadline = Instant::now() + wait;
    loop {
        // `exists` follows the link: a dangling one is not a disk.
        if let Some(found) = candidates.iter().find(|p| p.exists()) {
            return Ok(found.clone());
        }
        if Instant::now() >= deadline {
            return Err(Failure::new(
                ExitCode::Source,
                anyhow!(
                    "no disk at LUN {lun}: neither {} nor {} appeared within {} s (is the disk attached, and are \
                     Azure's udev rules installed: azure-vm-utils or WALinuxAgent?)",
                    candidates[0].display(),
                    candidates[1].display(),
                    wait.as_secs()
                ),
            ));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk(source: &str) -> JobDisk {
        JobDisk {
            name: "d".into(),
            source: source.into(),
            source_id: "v/d".into(),
            destinations: vec!["file:/x.vhd".into()],
            hint: None,
            read_limit: None,
        }
    }

    #[test]
    fn paths_pass_through_and_luns_are_found_by_either_link() {
        assert_eq!(resolve(&disk("/dev/sdc"), Duration::ZERO).unwrap(), SourceName::Path("/dev/sdc".into()));
        let d = tempfile::tempdir().unwrap();
        let resolve = |disk: &JobDisk, wait| resolve_in(disk, d.path(), wait);
        let target = d.path().join("disk.img");
        std::fs::write(&target, b"").unwrap();
        // SCSI: WALinuxAgent's link only.
        std::fs::create_dir_all(d.path().join("scsi1")).unwrap();
        std::os::unix::fs::symlink(&target, d.path().join("scsi1/lun2")).unwrap();
        assert_eq!(resolve(&disk("lun:2"), Duration::ZERO).unwrap(), d.path().join("scsi1/lun2"));
        // NVMe: azure-vm-utils' link wins where both exist.
        std::fs::create_dir_all(d.path().join("data/by-lun")).unwrap();
        std::os::unix::fs::symlink(&target, d.path().join("data/by-lun/2")).unwrap();
        assert_eq!(resolve(&disk("lun:2"), Duration::ZERO).unwrap(), d.path().join("data/by-lun/2"));
        // A dangling link is no disk; a link that appears late is waited for.
        std::os::unix::fs::symlink(d.path().join("nothing"), d.path().join("data/by-lun/5")).unwrap();
        let late = d.path().join("scsi1/lun5");
        let t = target.clone();
        let maker = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(400));
            std::os::unix::fs::symlink(&t, &late).unwrap();
        });
        assert_eq!(resolve(&disk("lun:5"), Duration::from_secs(10)).unwrap(), d.path().join("scsi1/lun5"));
        maker.join().unwrap();
        // Never there: a source failure naming both links.
        let t0 = Instant::now();
        let e = resolve(&disk("lun:9"), Duration::from_millis(300)).unwrap_err();
        assert!(t0.elapsed() >= Duration::from_millis(300));
        assert_eq!(e.code, ExitCode::Source);
        let msg = e.to_string();
        assert!(msg.contains("data/by-lun/9") && msg.contains("scsi1/lun9"), "{msg}");
    }

    #[test]
    fn a_url_file_names_a_page_blob_and_must_be_its_owners_alone() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("disk0.url");
        std::fs::write(&f, "https://md-x.blob.core.windows.net/c/abcd?sv=1&sr=b&sig=SECRET\n").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        let source = disk(&format!("url-file:{}", f.display()));
        match resolve(&source, Duration::ZERO).unwrap() {
            SourceName::Blob(a) => assert_eq!((a.container.as_str(), a.blob.as_str()), ("c", "abcd")),
            other => panic!("{other:?}"),
        }
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = resolve(&source, Duration::ZERO).unwrap_err();
        assert_eq!(e.code, ExitCode::Source);
        assert!(e.to_string().contains("readable by others") && !e.to_string().contains("SECRET"), "{e}");
        std::fs::write(&f, "/dev/sdc").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(resolve(&source, Duration::ZERO).unwrap_err().to_string().contains("no http(s) URL"));
    }
}
