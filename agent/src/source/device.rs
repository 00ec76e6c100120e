//! [`DeviceSource`]: a regular file (an image) or a Linux block device,
//! read through one read-only mapping or with `pread`.

use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::os::unix::io::AsRawFd;
use std::path::Path;

use memmap2::{Mmap, MmapOptions};

use super::{BlockSource, ReadMode, SourceError};

/// A regular file or a block device.
#[derive(Debug)]
pub struct DeviceSource {
    file: File,
    size: u64,
    map: Option<Mmap>,
    sparse: bool,
    /// Test hook: reads covering this offset fail with EIO (see [`FAIL_READ_ENV`]).
    fail_at: Option<u64>,
}

/// Fault injection for tests and drills: `DISKFERRY_FAIL_READ_AT=OFFSET`
/// makes every read of the source that covers byte OFFSET fail with EIO, as
/// a failing disk would (the source is then read with pread). Unset, it
/// costs one environment lookup per open.
pub const FAIL_READ_ENV: &str = "DISKFERRY_FAIL_READ_AT";

impl DeviceSource {
    pub fn open(path: &Path, mode: ReadMode) -> Result<Self, SourceError> {
        let open_err = |source| SourceError::Open { path: path.to_owned(), source };
        let file = File::open(path).map_err(open_err)?;
        let ft = file.metadata().map_err(open_err)?.file_type();
        let (size, block) = if ft.is_file() {
            (file.metadata().map_err(open_err)?.len(), false)
        } else if ft.is_block_device() {
            let size =
                block_device_size(&file).map_err(|source| SourceError::Size { path: path.to_owned(), source })?;
            (size, true)
        } else {
            return Err(SourceError::Kind(path.to_owned()));
        };
        let fail_at = std::env::var(FAIL_READ_ENV).ok().and_then(|v| v.trim().parse::<u64>().ok());
        let mmap = fail_at.is_none()
            && match mode {
                ReadMode::Auto => !block,
                ReadMode::Mmap => true,
                ReadMode::Pread => false,
            };
        // One mapping for the whole source, released window by window: no
        // map/unmap per window, and whole folios are mapped per fault.
        let map = if mmap && size > 0 {
            // SAFETY: the map is read-only. A source is a snapshot or a
            // detached copy; if another process truncates it while mapped,
            // reads past the new end raise SIGBUS, which is why block devices
            // (where I/O errors happen) default to pread.
            Some(unsafe { MmapOptions::new().len(size as usize).map(&file) }.map_err(open_err)?)
        } else {
            None
        };
        // A file without a single hole (a fully allocated image) needs no
        // hole queries per window.
        let sparse = !block && seek(file.as_raw_fd(), 0, libc::SEEK_HOLE).map_or(true, |hole| hole < size);
        Ok(Self { file, size, map, sparse, fail_at })
    }

    pub fn uses_mmap(&self) -> bool {
        self.map.is_some()
    }
}

impl BlockSource for DeviceSource {
    fn size(&self) -> u64 {
        self.size
    }

    fn data_extents(&self, range: Range<u64>) -> io::Result<Vec<Range<u64>>> {
        if !self.sparse || range.is_empty() {
            return Ok(vec![range]);
        }
        let fd = self.file.as_raw_fd();
        let mut out = Vec::new();
        let mut pos = range.start;
        while pos < range.end {
            let data = match seek(fd, pos, libc::SEEK_DATA) {
                Ok(d) => d,
                // No data at or after pos.
                Err(e) if e.raw_os_error() == Some(libc::ENXIO) => break,
                // The filesystem cannot tell: assume everything is data.
                Err(_) => return Ok(vec![range]),
            };
            if data >= range.end {
                break;
            }
            let hole = seek(fd, data, libc::SEEK_HOLE).unwrap_or(range.end).min(range.end);
            out.push(data..hole);
            pos = hole;
        }
        Ok(out)
    }

    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        if self.fail_at.is_some_and(|f| (offset..offset + buf.len() as u64).contains(&f)) {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        self.file.read_exact_at(buf, offset)
    }

    fn mapped(&self) -> Option<&[u8]> {
        self.map.as_deref()
    }

    fn release(&self, range: Range<u64>) {
        if let Some(m) = &self.map {
            // Page-aligned start; the end may be the file's end.
            let start = range.start & !4095;
            // SAFETY: MADV_DONTNEED on a read-only shared file mapping only
            // drops this process's page table entries; the bytes stay in the
            // page cache and would fault back in if read. No reference into
            // the range is alive: its window has been consumed.
            let _ = unsafe {
                m.unchecked_advise_range(
                    memmap2::UncheckedAdvice::DontNeed,
                    start as usize,
                    (range.end - start) as usize,
                )
            };
        }
    }

    fn prefetch(&self, range: Range<u64>) {
        // Mapped reads fault whole folios in; on cached data an extra
        // read-ahead request only costs a walk of the page cache (measured:
        // +10 ms of system time per 2 GiB).
        if self.map.is_some() {
            return;
        }
        // Only data: read-ahead of a hole would fill the page cache with zeros.
        for r in self.data_extents(range).unwrap_or_default() {
            advise_willneed(&self.file, r);
        }
    }
}

fn advise_willneed(file: &File, range: Range<u64>) {
    // SAFETY: posix_fadvise only takes a descriptor and numbers.
    unsafe {
        libc::posix_fadvise(
            file.as_raw_fd(),
            range.start as libc::off_t,
            (range.end - range.start) as libc::off_t,
            libc::POSIX_FADV_WILLNEED,
        );
    }
}

fn seek(fd: libc::c_int, offset: u64, whence: libc::c_int) -> io::Result<u64> {
    // SAFETY: lseek on a descriptor we own; no memory is passed.
    let r = unsafe { libc::lseek(fd, offset as libc::off_t, whence) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as u64)
    }
}

/// `BLKGETSIZE64`: `_IOR(0x12, 114, size_t)`.
const BLKGETSIZE64: libc::c_ulong = 0x8008_1272;

fn block_device_size(file: &File) -> io::Result<u64> {
    let mut size: u64 = 0;
    // SAFETY: BLKGETSIZE64 writes one u64 through the pointer, which points
    // at a live, properly aligned u64.
    let r = unsafe { libc::ioctl(file.as_raw_fd(), BLKGETSIZE64 as _, &mut size as *mut u64) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Seek, SeekFrom, Write};

    #[test]
    fn sparse_files_report_their_data_extents() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.as_file().set_len(64 << 20).unwrap();
        f.seek(SeekFrom::Start(8 << 20)).unwrap();
        f.write_all(&vec![1u8; 1 << 20]).unwrap();
        f.flush().unwrap();
        let s = DeviceSource::open(f.path(), ReadMode::Auto).unwrap();
        assert_eq!(s.size(), 64 << 20);
        let ext = s.data_extents(0..(64 << 20)).unwrap();
        // The filesystem may round extents to its block size, never drop data.
        let covered: u64 = ext.iter().map(|r| r.end - r.start).sum();
        assert!(ext.iter().any(|r| r.start <= 8 << 20 && r.end >= 9 << 20), "{ext:?}");
        assert!(covered < 64 << 20, "{ext:?}");
        assert_eq!(s.data_extents(0..(4 << 20)).unwrap(), vec![]);
    }

    #[test]
    fn rejects_directories_and_missing_paths() {
        let d = tempfile::tempdir().unwrap();
        assert!(matches!(DeviceSource::open(d.path(), ReadMode::Auto), Err(SourceError::Kind(_))));
        assert!(matches!(DeviceSource::open(&d.path().join("nope"), ReadMode::Auto), Err(SourceError::Open { .. })));
    }
}
