//! Sources: the disk being copied, as a regular file (an image), a Linux
//! block device (a loop device, an attached managed disk), or a page blob
//! read over HTTPS (a managed snapshot's export, a disk restore point's).
//!
//! A [`BlockSource`] is synchronous and shared across rayon workers: it says
//! how large the disk is, which parts may hold data (a sparse image's holes
//! and a page blob's never-written pages read as zero and need not be read
//! at all), and reads bytes either through a read-only memory map (no copy:
//! the fastest way through cached data) or into the caller's buffer. Block
//! devices use `pread` by default: an unreadable sector then is an `EIO` we
//! can name, where a mapping would die of `SIGBUS`.
//!
//! - [`device`]: [`DeviceSource`], a file or block device;
//! - [`blob`]: [`BlobSource`], a page blob: Get Page Ranges once, then
//!   parallel ranged reads of at most 4 MiB, fetched as the scan announces
//!   them ([`BlockSource::fetch`]).

use std::fmt;
use std::io;
use std::ops::Range;
use std::path::PathBuf;

use diskferry_blob::address::{redact, BlobAddress};

pub mod blob;
pub mod device;

pub use blob::BlobSource;
pub use device::{DeviceSource, FAIL_READ_ENV};

/// What a user names as a source: a path (an image file, a block device),
/// or the URL of a page blob (with its SAS, which is never shown).
#[derive(Clone, PartialEq, Eq)]
pub enum SourceName {
    Path(PathBuf),
    Blob(BlobAddress),
}

impl SourceName {
    /// What names this source in a manifest when the user names nothing:
    /// a path made absolute, or the blob's URL without its query.
    pub fn default_id(&self) -> String {
        match self {
            SourceName::Path(p) => std::fs::canonicalize(p).unwrap_or_else(|_| p.clone()).display().to_string(),
            SourceName::Blob(a) => {
                format!("{}/{}/{}", a.service.as_str().trim_end_matches('/'), a.container, a.blob)
            }
        }
    }
}

impl std::str::FromStr for SourceName {
    type Err = String;

    /// `http://` and `https://` name a page blob; anything else is a path.
    fn from_str(s: &str) -> Result<Self, String> {
        if s.starts_with("https://") || s.starts_with("http://") {
            BlobAddress::parse(s).map(SourceName::Blob).map_err(|e| redact(&format!("{e:#}")))
        } else if s.is_empty() {
            Err("the source is empty".into())
        } else {
            Ok(SourceName::Path(PathBuf::from(s)))
        }
    }
}

impl From<PathBuf> for SourceName {
    fn from(p: PathBuf) -> Self {
        SourceName::Path(p)
    }
}

/// A blob's URL shows no SAS (`?<sas>`).
impl fmt::Display for SourceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourceName::Path(p) => write!(f, "{}", p.display()),
            SourceName::Blob(a) => write!(f, "{a}"),
        }
    }
}

impl fmt::Debug for SourceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SourceName({self})")
    }
}

/// How a source is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReadMode {
    /// Memory map for regular files, pread for block devices.
    Auto,
    /// Read-only memory map: hashed in place, what a sync writes copied first; a read error kills the process.
    Mmap,
    /// pread into a reused buffer: one copy; read errors are reported.
    Pread,
}

/// A disk to read.
pub trait BlockSource: Send + Sync {
    /// Size in bytes.
    fn size(&self) -> u64;
    /// Ranges within `range` that may hold data; the rest reads as zero.
    fn data_extents(&self, range: Range<u64>) -> io::Result<Vec<Range<u64>>>;
    /// Fill `buf` from `offset`.
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// The whole source as read-only memory, when it is read that way.
    fn mapped(&self) -> Option<&[u8]>;
    /// `range` of the mapping will not be read again: drop it from this
    /// process's memory (the page cache keeps it).
    fn release(&self, _range: Range<u64>) {}
    /// Hint that `range` will be read soon (read-ahead of the next window).
    fn prefetch(&self, _range: Range<u64>) {}
    /// These ranges, in order, will be read next, and nothing else of the
    /// window that holds them: a remote source starts fetching them now.
    /// Each is read or [`Self::release`]d.
    fn fetch(&self, _ranges: &[Range<u64>]) {}
}

/// Why a source cannot be used. Messages leave the cause to `source()`:
/// a failure prints the chain.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot open source {path}")]
    Open { path: PathBuf, source: io::Error },
    /// A page blob that cannot be read (its address shows no SAS).
    #[error("cannot open source {what}")]
    Blob { what: String, source: diskferry_blob::StoreError },
    /// A page blob that is no disk.
    #[error("source {what}: {why}")]
    NotADisk { what: String, why: String },
    #[error("source {0} is neither a regular file nor a block device")]
    Kind(PathBuf),
    #[error("cannot read the size of block device {path}")]
    Size { path: PathBuf, source: io::Error },
    /// A read that failed mid-scan (an unreadable sector: EIO).
    #[error("read error at offset {offset}")]
    Read { offset: u64, source: io::Error },
}

/// A disk held in memory: the fake the pipeline's tests read. It is read
/// the way a block device is (`pread`, no mapping), and reports every byte
/// as possibly holding data, so the scan reads and zero-checks it all.
#[cfg(any(test, feature = "testing"))]
#[derive(Debug, Clone)]
pub struct MemSource {
    pub bytes: Vec<u8>,
}

#[cfg(any(test, feature = "testing"))]
impl BlockSource for MemSource {
    fn size(&self) -> u64 {
        self.bytes.len() as u64
    }

    fn data_extents(&self, range: Range<u64>) -> io::Result<Vec<Range<u64>>> {
        Ok(vec![range])
    }

    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let at = usize::try_from(offset).map_err(|_| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        let src = self.bytes.get(at..at + buf.len()).ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        buf.copy_from_slice(src);
        Ok(())
    }

    fn mapped(&self) -> Option<&[u8]> {
        None
    }
}
