//! A sync's parts from what a user names: the source (a path: an image
//! file or a block device) and the destinations (`file:`, `pageblob:`,
//! `relay:`), each opened into its sink. The pipeline (`crate::sync`) takes
//! its parts opened; the CLI, the job runner and the relay receiver open
//! them here.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::anyhow;
use diskferry_core::geometry::{ChunkSize, Geometry};

use diskferry_blob::address::{redact, BlobAddress};

use crate::exit::{ExitCode, Failure, WithCode};
use crate::pageblob::sink::{PageBlobOptions, PageBlobSink};
use crate::progress::Progress;
use crate::relay::sender::RelaySink;
use crate::relay::RelayAddress;
use crate::sink::file::FileSink;
use crate::sink::Sink;
use crate::source::{BlobSource, BlockSource, DeviceSource, ReadMode, SourceName};
use diskferry_core::job::RangeHint;

use crate::relay::client::RelayOptions;
use crate::sync::{sync_parts, Parts, PipelineOptions, Shared, SyncReport};

/// Everything a sync needs besides the source and target.
#[derive(Debug, Clone)]
pub struct SyncOptions {
    pub chunk_size: ChunkSize,
    /// Names the source in the manifest; a manifest of another source is not
    /// trusted. Default: the source's canonical path.
    pub source_id: Option<String>,
    pub threads: usize,
    pub read_mode: ReadMode,
    /// Keep the manifest here instead of beside the destination.
    pub manifest: Option<PathBuf>,
    /// Overwrite a destination that diskferry did not write (or resize a
    /// page blob for a source of another size).
    pub force: bool,
    /// Page blob destinations.
    pub pageblob: PageBlobOptions,
    /// Pin the storage service version (`x-ms-version`).
    pub api_version: Option<String>,
    /// Give up retrying one storage request after this long.
    pub retry_for: Option<std::time::Duration>,
    /// Relay destinations: token, TLS trust, zstd level.
    pub relay: RelayOptions,
    /// What changed since a known earlier state (`hint.base_generations`
    /// in the order of the targets).
    pub hint: Option<RangeHint>,
    /// Read the source at most this fast (bytes per second).
    pub read_limit: Option<u64>,
    /// The pool and window budget of a job's disks syncing at once.
    pub shared: Option<Shared>,
}

/// Where a sync writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `file:PATH`: a sparse fixed-VHD file.
    File(PathBuf),
    /// `pageblob:URL`: a page blob (the URL may carry a SAS; never printed).
    PageBlob(BlobAddress),
    /// `relay:https://HOST:PORT/DISK`: a receiver in the destination region.
    Relay(RelayAddress),
}

impl std::str::FromStr for Target {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once(':') {
            Some(("file", path)) if !path.is_empty() => Ok(Target::File(PathBuf::from(path))),
            Some(("file", _)) => Err("file: needs a path, as in file:/data/disk0.vhd".into()),
            Some(("pageblob", url)) => BlobAddress::parse(url).map(Target::PageBlob).map_err(|e| format!("{e:#}")),
            Some(("relay", url)) => RelayAddress::parse(url).map(Target::Relay).map_err(|e| format!("{e:#}")),
            _ => Err(format!("{:?} is not a destination: use file:PATH, pageblob:URL or relay:URL", redact(s))),
        }
    }
}

impl std::fmt::Display for Target {
    /// As shown to people: never with a SAS.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::File(p) => write!(f, "file:{}", p.display()),
            Target::PageBlob(addr) => write!(f, "pageblob:{addr}"),
            Target::Relay(addr) => write!(f, "relay:{addr}"),
        }
    }
}

/// The sink for `target`.
pub fn open_sink(target: &Target, opts: &SyncOptions) -> Result<Box<dyn Sink>, Failure> {
    Ok(match target {
        Target::File(p) => {
            Box::new(FileSink::open(p, opts.manifest.as_deref(), opts.force)?.fenced(opts.pageblob.fence))
        }
        Target::PageBlob(addr) => {
            Box::new(open_pageblob(addr, opts.api_version.clone(), opts.pageblob.clone(), opts.force, opts.retry_for)?)
        }
        Target::Relay(addr) => Box::new(
            RelaySink::new(
                addr,
                &opts.relay,
                opts.retry_for.unwrap_or(Duration::from_secs(120)),
                opts.threads,
                opts.force,
            )?
            .recording(opts.pageblob.consistency.clone(), opts.pageblob.fence),
        ),
    })
}

/// A page blob sink on Azure Storage (or Azurite): the page blob, and its
/// state beside it or in `po.state`; each request retried for at most
/// `retry_for` (default two minutes).
pub fn open_pageblob(
    addr: &BlobAddress,
    api_version: Option<String>,
    mut po: PageBlobOptions,
    force: bool,
    retry_for: Option<Duration>,
) -> Result<PageBlobSink<diskferry_blob::Destination>, Failure> {
    po.force |= force;
    let blob = addr.blob.clone();
    let is_state = Arc::new(move |name: &str| crate::pageblob::points::is_state(&blob, name));
    let store = diskferry_blob::connect_split(addr.clone(), po.state.clone(), api_version, is_state, retry_for)
        .code(ExitCode::Destination)?;
    PageBlobSink::new(store, &addr.blob, format!("pageblob:{addr}"), po)
}

/// How a page blob source is reached, as a destination would be.
#[derive(Debug, Clone, Default)]
pub struct BlobAccess {
    /// Pin the storage service version (`x-ms-version`).
    pub api_version: Option<String>,
    /// Give up retrying one read after this long (default two minutes).
    pub retry_for: Option<Duration>,
}

/// Open a source and check it can be cut into chunks: a path as a file or a
/// block device (read as `mode` says), a URL as a page blob.
pub fn open_source(
    name: &SourceName,
    mode: ReadMode,
    chunk: ChunkSize,
    access: &BlobAccess,
) -> Result<(Box<dyn BlockSource>, Geometry), Failure> {
    let source: Box<dyn BlockSource> = match name {
        SourceName::Path(path) => Box::new(DeviceSource::open(path, mode)?),
        SourceName::Blob(addr) => {
            let store = diskferry_blob::connect_source(addr.clone(), access.api_version.clone(), access.retry_for)
                .map_err(|e| Failure::new(ExitCode::Source, anyhow!("source {addr}: {}", redact(&format!("{e:#}")))))?;
            Box::new(BlobSource::open(store, &addr.blob, &addr.to_string())?)
        }
    };
    let geometry = Geometry::new(source.size(), chunk)
        .map_err(|e| Failure::new(ExitCode::Source, anyhow!("source {name}: {e}")))?;
    Ok((source, geometry))
}

/// Sync `source` to `target`.
pub fn sync(source: &SourceName, target: &Target, opts: &SyncOptions) -> Result<SyncReport, Failure> {
    sync_with_progress(source, target, opts, &Progress::new(&source.to_string()))
}

/// Sync to one destination, counting into `progress` as it goes (for
/// progress bars, the status file and metrics). The phase ends as `Done` or
/// `Failed`.
pub fn sync_with_progress(
    source: &SourceName,
    target: &Target,
    opts: &SyncOptions,
    progress: &Arc<Progress>,
) -> Result<SyncReport, Failure> {
    let mut r = sync_fanout(source, std::slice::from_ref(target), opts, progress)?;
    r.pop().unwrap_or_else(|| Err(Failure::new(ExitCode::Failure, anyhow!("no destination"))))
}

/// Sync to several destinations from one read of the source: each
/// destination keeps its own generation and manifest and is planned against
/// its own prior state, so one that missed a sync catches up at the next. A
/// destination that fails is dropped and the others go on. `Err` only when
/// the source fails (then every destination failed). The phase ends as
/// `Done` when every destination synced, else `Failed`.
pub fn sync_fanout(
    source_name: &SourceName,
    targets: &[Target],
    opts: &SyncOptions,
    progress: &Arc<Progress>,
) -> Result<Vec<Result<SyncReport, Failure>>, Failure> {
    let access = BlobAccess { api_version: opts.api_version.clone(), retry_for: opts.retry_for };
    let opened = open_source(source_name, opts.read_mode, opts.chunk_size, &access);
    let (source, geometry) = match opened {
        Ok(s) => s,
        Err(f) => {
            progress.fail(&f.to_string());
            return Err(f);
        }
    };
    let source_id = opts.source_id.clone().unwrap_or_else(|| source_name.default_id());
    let sinks = targets.iter().map(|t| open_sink(t, opts)).collect();
    let pipeline = PipelineOptions {
        threads: opts.threads,
        hint: opts.hint.clone(),
        read_limit: opts.read_limit,
        shared: opts.shared.clone(),
    };
    sync_parts(Parts { source: &*source, geometry, source_id, sinks }, &pipeline, progress)
}
