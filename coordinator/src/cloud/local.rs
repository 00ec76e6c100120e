//! The `local` provider: the whole lifecycle on one machine.
//!
//! - A source VM is a folder holding `vm.toml` and its disks (raw images or
//!   block devices). A disk, snapshot or image source is one raw image
//!   file or block device (an image's version is the label a run is given).
//! - A snapshot is a reflink copy (`FICLONE`) where the filesystem can, else
//!   a sparse copy (holes and zero blocks stay holes), under
//!   `STATE/snapshots/VM/DISK@RUN.img`.
//! - A temporary disk is a read-only loop device over the snapshot (`--loop`,
//!   root only), else the snapshot file itself.
//! - The worker is a `diskferry-agent run --job STATE/runs/RUN/job.json`
//!   process in its own process group: like a VM, it outlives a coordinator
//!   that dies, and `gc` finds it by its job path.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{anyhow, bail, Context, Result};

use super::host::{euid, is_symlink, private_dir, read_dir, remove_file, HostWorkers};
use super::source::plain_name;
use super::{
    Capture, Cloud, Consistency, Found, ResourceKind, RunTags, SourceKind, SourceRef, Taken, Vm, VmDisk, WorkerSpec,
    WorkerState,
};

/// `vm.toml`: a source VM of the local provider.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmFile {
    pub name: String,
    #[serde(default = "default_os")]
    pub os_type: String,
    pub disks: Vec<DiskFile>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskFile {
    pub name: String,
    /// A raw image or a block device; relative paths are relative to the VM folder.
    pub path: PathBuf,
}

fn default_os() -> String {
    "linux".into()
}

/// Names of VMs and disks become file and blob names: keep them plain.
pub fn check_name(what: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && !name.starts_with('-');
    if !ok {
        bail!("{what} name {name:?} must be 1-64 letters, digits, '-' or '_'");
    }
    Ok(())
}

#[derive(Debug)]
pub struct LocalCloud {
    root: PathBuf,
    use_loop: bool,
    /// Workers: agent processes on this machine.
    workers: HostWorkers,
}

impl LocalCloud {
    /// `root` is the state folder (absolute); `agent` the `diskferry-agent` binary.
    pub fn new(root: &Path, use_loop: bool, agent: PathBuf) -> Result<Self> {
        if use_loop && !is_root() {
            bail!("--loop needs root (loop devices are attached with losetup)");
        }
        let workers = HostWorkers::new(root.join("runs"), agent);
        Ok(Self { root: root.to_owned(), use_loop, workers })
    }

    fn snapshots(&self) -> PathBuf {
        self.root.join("snapshots")
    }

    fn runs(&self) -> PathBuf {
        self.root.join("runs")
    }

    /// Parse a VM folder's `vm.toml` (or the file itself).
    pub fn load_vm_file(vm: &str) -> Result<(PathBuf, VmFile)> {
        let p = PathBuf::from(vm);
        let (dir, file) = if p.is_dir() { (p.clone(), p.join("vm.toml")) } else { (parent(&p), p.clone()) };
        let text = std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
        let v: VmFile = toml::from_str(&text)
            .map_err(|e| anyhow!("{}: {}", file.display(), e.message().trim()))
            .with_context(|| "not a valid vm.toml (name, os_type, [[disks]] with name and path)".to_owned())?;
        check_name("VM", &v.name)?;
        if v.disks.is_empty() {
            bail!("{}: the VM has no disks", file.display());
        }
        let mut seen = std::collections::BTreeSet::new();
        for d in &v.disks {
            check_name("disk", &d.name)?;
            if !seen.insert(d.name.as_str()) {
                bail!("{}: disk {:?} appears twice", file.display(), d.name);
            }
        }
        Ok((dir, v))
    }
}

/// The size of a disk's file or block device: a positive multiple of 512 bytes.
fn disk_size(path: &Path) -> Result<u64> {
    let size = File::open(path)
        .and_then(|mut f| f.seek(SeekFrom::End(0)))
        .with_context(|| format!("cannot read {}", path.display()))?;
    if size == 0 || size % 512 != 0 {
        bail!("{}: size {size} is not a positive multiple of 512 bytes", path.display());
    }
    Ok(size)
}

fn parent(p: &Path) -> PathBuf {
    p.parent().map_or_else(|| PathBuf::from("."), Path::to_owned)
}

fn is_root() -> bool {
    euid() == 0
}

impl Cloud for LocalCloud {
    fn provider(&self) -> &'static str {
        "local"
    }

    fn preflight(&self, sources: &[super::checks::Source]) -> Vec<super::checks::Check> {
        use super::checks::Check;
        let mut out = vec![self.workers.agent_check()];
        for s in sources {
            let name = format!("source of {}", s.replica);
            let read = SourceRef::parse(&s.vm).and_then(|src| self.read_source(&src, None));
            out.push(match read {
                Ok(vm) => Check::ok(name, format!("{}: {} disks readable", s.vm, vm.disks.len())),
                Err(e) => Check::problem(name, format!("{e:#}"), "fix the VM folder's vm.toml and its disk paths"),
            });
        }
        out
    }

    fn read_vm(&self, vm: &str) -> Result<Vm> {
        let (dir, v) = Self::load_vm_file(vm)?;
        let mut disks = Vec::new();
        for d in &v.disks {
            let path = if d.path.is_absolute() { d.path.clone() } else { dir.join(&d.path) };
            let path = std::fs::canonicalize(&path)
                .with_context(|| format!("disk {} of VM {}: {}", d.name, v.name, path.display()))?;
            let size = disk_size(&path).with_context(|| format!("disk {} of VM {}", d.name, v.name))?;
            disks.push(VmDisk {
                name: d.name.clone(),
                locator: path.display().to_string(),
                size,
                sku: None,
                no_restore_point: None,
            });
        }
        Ok(Vm::of_disks(dir.display().to_string(), v.name, SourceKind::Vm, v.os_type, disks))
    }

    fn read_source(&self, src: &SourceRef, version: Option<&str>) -> Result<Vm> {
        src.check_version(version)?;
        if src.kind == SourceKind::Vm {
            return self.read_vm(&src.id);
        }
        let path = std::fs::canonicalize(&src.id).with_context(|| src.describe())?;
        if std::fs::metadata(&path)?.is_dir() {
            bail!("{}: a folder; a {} source is one image file or block device", path.display(), src.kind.as_str());
        }
        let size = disk_size(&path)?;
        let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        // An image is a bootable disk: its points import as an OS disk.
        let disk = VmDisk {
            name: if src.kind == SourceKind::Image { "os" } else { "disk" }.into(),
            locator: path.display().to_string(),
            size,
            sku: None,
            no_restore_point: None,
        };
        let vm = Vm::of_disks(path.display().to_string(), plain_name(&stem), src.kind, default_os(), vec![disk]);
        Ok(Vm { version: version.map(str::to_owned), ..vm })
    }

    fn snapshot_names(&self, vm: &Vm, tags: &RunTags, _how: Capture) -> Result<Vec<String>> {
        let dir = self.snapshots().join(&vm.name);
        Ok(vm.disks.iter().map(|d| dir.join(format!("{}@{}.img", d.name, tags.run_id)).display().to_string()).collect())
    }

    fn snapshot(&self, vm: &Vm, names: &[String], _tags: &RunTags, how: Capture) -> Result<Taken> {
        // Each disk is copied on its own: nothing here can hold a writer of
        // the image files still while all of them are taken, so the copies
        // are at one instant only if nothing writes (the VM is stopped).
        for (disk, name) in vm.disks.iter().zip(names) {
            let dst = Path::new(name);
            private_dir(&parent(dst))?;
            copy_disk(Path::new(&disk.locator), dst)
                .with_context(|| format!("cannot snapshot disk {} to {}", disk.name, dst.display()))?;
        }
        Ok(match (how.stop_source, how.consistency) {
            (true, _) => Taken::as_asked("stopped"),
            (false, Consistency::PerDisk) => Taken::as_asked("per-disk"),
            (false, asked) => Taken {
                consistency: "per-disk".into(),
                note: Some(format!(
                    "{} consistency asked, but the local provider copies each disk on its own (no restore points): \
                     the disks are at one instant only if nothing wrote to them meanwhile",
                    asked.as_str()
                )),
            },
        })
    }

    fn temp_disk_name(&self, snapshot: &str, _run_id: &str, _lun: usize) -> Option<String> {
        self.use_loop.then(|| format!("loop:{snapshot}"))
    }

    fn create_temp_disk(&self, name: Option<&str>, snapshot: &str, _lun: usize) -> Result<String> {
        if name.is_none() {
            return Ok(snapshot.to_owned());
        }
        let out = Command::new("losetup")
            .args(["--find", "--show", "--read-only", snapshot])
            .output()
            .context("cannot run losetup")?;
        if !out.status.success() {
            bail!("losetup {snapshot}: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    fn worker_name(&self, run_id: &str) -> String {
        self.runs().join(run_id).display().to_string()
    }

    fn start_worker(&self, w: &WorkerSpec<'_>) -> Result<Option<String>> {
        self.workers.start(w.name, w.job)?;
        Ok(None)
    }

    fn worker_state(&self, name: &str) -> Result<WorkerState> {
        self.workers.state(name)
    }

    fn delete(&self, kind: ResourceKind, name: &str) -> Result<()> {
        match kind {
            ResourceKind::Snapshot => {
                if !is_snapshot_file(&self.snapshots(), Path::new(name)) {
                    bail!("{name:?} is not a snapshot file of this state folder: not deleted");
                }
                remove_file(Path::new(name))
            }
            ResourceKind::TempDisk => {
                let backing = name.strip_prefix("loop:").ok_or_else(|| anyhow!("{name:?} is not a loop disk"))?;
                for dev in loops_backed_by(Some(Path::new(backing)))?.into_iter().map(|(d, _)| d) {
                    let out = Command::new("losetup").arg("-d").arg(&dev).output()?;
                    if !out.status.success() {
                        bail!("losetup -d {dev}: {}", String::from_utf8_lossy(&out.stderr).trim());
                    }
                }
                Ok(())
            }
            ResourceKind::Worker => self.workers.delete(name),
        }
    }

    fn list_created(&self) -> Result<Vec<Found>> {
        let mut found = Vec::new();
        for vm_dir in read_dir(&self.snapshots())? {
            for f in read_dir(&vm_dir)? {
                let file = f.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                let run_id = file.strip_suffix(".img").and_then(|s| s.split_once('@')).map(|(_, r)| r.to_owned());
                found.push(Found::untagged(ResourceKind::Snapshot, f.display().to_string(), run_id));
            }
        }
        found.extend(self.workers.list()?);
        if is_root() {
            for (_, back) in loops_backed_by(None)? {
                if is_snapshot_file(&self.snapshots(), &back) {
                    let run_id = back
                        .file_name()
                        .and_then(|n| n.to_str())
                        .and_then(|s| s.strip_suffix(".img"))
                        .and_then(|s| s.split_once('@'))
                        .map(|(_, r)| r.to_owned());
                    found.push(Found::untagged(ResourceKind::TempDisk, format!("loop:{}", back.display()), run_id));
                }
            }
        }
        Ok(found)
    }
}

/// Copy a disk into a new snapshot file: a reflink when the filesystem
/// shares extents, else a sparse copy that leaves holes and zero blocks
/// unwritten. Block devices are read whole.
pub fn copy_disk(src: &Path, dst: &Path) -> Result<()> {
    let mut from = File::open(src).with_context(|| format!("cannot open {}", src.display()))?;
    let size = from.seek(SeekFrom::End(0))?;
    // A snapshot is a whole disk's contents: its owner's alone.
    let to = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(dst)?;
    let is_file = from.metadata()?.file_type().is_file();
    if is_file {
        // SAFETY: both descriptors are open for the duration of the call;
        // FICLONE takes the source descriptor as its argument.
        let r = unsafe { libc::ioctl(to.as_raw_fd(), libc::FICLONE, from.as_raw_fd()) };
        if r == 0 {
            return Ok(());
        }
    }
    to.set_len(size)?;
    let extents = if is_file { data_extents(&from, size)? } else { vec![(0, size)] };
    let mut buf = vec![0u8; 1 << 20];
    for (start, end) in extents {
        let mut off = start;
        while off < end {
            let n = (end - off).min(buf.len() as u64) as usize;
            from.seek(SeekFrom::Start(off))?;
            from.read_exact(&mut buf[..n])?;
            if !diskferry_core::zero::is_zero(&buf[..n]) {
                to.write_all_at(&buf[..n], off)?;
            }
            off += n as u64;
        }
    }
    to.sync_all()?;
    Ok(())
}

/// Data extents of a file via SEEK_DATA / SEEK_HOLE.
fn data_extents(f: &File, size: u64) -> Result<Vec<(u64, u64)>> {
    let fd = f.as_raw_fd();
    let mut out = Vec::new();
    let mut pos: i64 = 0;
    while (pos as u64) < size {
        // SAFETY: lseek on an open descriptor has no memory-safety preconditions.
        let data = unsafe { libc::lseek(fd, pos, libc::SEEK_DATA) };
        if data < 0 {
            break; // ENXIO: no more data
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) };
        let hole = if hole < 0 { size as i64 } else { hole };
        out.push((data as u64, (hole as u64).min(size)));
        pos = hole;
    }
    Ok(out)
}

/// Loop devices and their backing files (only those backed by `file`, if given).
fn loops_backed_by(file: Option<&Path>) -> Result<Vec<(String, PathBuf)>> {
    let mut cmd = Command::new("losetup");
    cmd.args(["--list", "--noheadings", "--raw", "--output", "NAME,BACK-FILE"]);
    if let Some(f) = file {
        cmd.arg("--associated").arg(f);
    }
    let out = cmd.output().context("cannot run losetup")?;
    if !out.status.success() {
        bail!("losetup --list: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(d, b)| (d.to_owned(), PathBuf::from(b.trim().trim_end_matches(" (deleted)"))))
        .collect())
}

/// `file` is `snapshots/VM/FILE` exactly, and not a symbolic link.
fn is_snapshot_file(snapshots: &Path, file: &Path) -> bool {
    let Ok(rest) = file.strip_prefix(snapshots) else { return false };
    let parts: Vec<_> = rest.components().collect();
    parts.len() == 2 && parts.iter().all(|c| matches!(c, std::path::Component::Normal(_))) && !is_symlink(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_copy_keeps_bytes_and_holes() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("a.img");
        let f = File::create(&src).unwrap();
        f.set_len(8 << 20).unwrap();
        f.write_all_at(&[7u8; 4096], 3 << 20).unwrap();
        f.write_all_at(&vec![0u8; 1 << 20], 5 << 20).unwrap(); // written zeros
        drop(f);
        let dst = dir.path().join("b.img");
        copy_disk(&src, &dst).unwrap();
        assert_eq!(std::fs::read(&src).unwrap(), std::fs::read(&dst).unwrap());
    }

    #[test]
    fn vm_files_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("vm.toml"), "name = \"a b\"\n[[disks]]\nname=\"os\"\npath=\"x\"\n").unwrap();
        let e = LocalCloud::load_vm_file(dir.path().to_str().unwrap()).unwrap_err();
        assert!(format!("{e:#}").contains("VM name"), "{e:#}");
        std::fs::write(dir.path().join("vm.toml"), "name = \"a\"\ncolour = 1\n").unwrap();
        let e = LocalCloud::load_vm_file(dir.path().to_str().unwrap()).unwrap_err();
        assert!(format!("{e:#}").contains("colour"), "{e:#}");
    }
}
