//! `points`, `download`, `verify`: reading a page blob destination back.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;
use diskferry_core::geometry::ChunkSize;

use super::{human, parse_chunk_size, print_json};
use crate::exit::{ExitCode, Failure};
use crate::open::{open_pageblob, Target};
use crate::pageblob::sink::{PageBlobOptions, PageBlobSink};

/// A page blob destination to read.
#[derive(Debug, Args)]
pub struct DestArgs {
    /// The destination: pageblob:URL.
    #[arg(value_parser = super::TargetParser::new())]
    pub dest: Target,
    /// Storage service version to send (x-ms-version).
    #[arg(long, value_name = "VERSION")]
    pub api_version: Option<String>,
    /// Where the destination keeps its state, if not beside it (as given to `sync --state-url`).
    #[arg(long, value_name = "URL", value_parser = super::StateUrlParser)]
    pub state_url: Option<diskferry_blob::address::BlobAddress>,
    /// Print one JSON object instead of a human summary.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct PointsArgs {
    #[command(flatten)]
    pub dest: DestArgs,
    /// Delete recovery points past the newest --keep, except those younger than --min-retention: the
    /// destination side's trim, run with its own credentials (the writers' role need not delete).
    /// Lists what is left.
    #[arg(long)]
    pub trim: bool,
    /// With --trim: recovery points to keep.
    #[arg(long, default_value_t = 7, value_parser = clap::value_parser!(u16).range(1..=1000), requires = "trim")]
    pub keep: u16,
    /// With --trim: never delete a point younger than this (7d, 12h, 30m, 90s).
    #[arg(long, value_name = "DURATION", value_parser = super::parse_duration, requires = "trim")]
    pub min_retention: Option<std::time::Duration>,
}

#[derive(Debug, Args)]
pub struct DownloadArgs {
    #[command(flatten)]
    pub dest: DestArgs,
    /// Generation to download [default: the newest].
    #[arg(long, value_name = "G")]
    pub point: Option<u64>,
    /// Local VHD file to write (created or replaced).
    #[arg(long, value_name = "FILE.vhd")]
    pub to: PathBuf,
    /// Read requests in flight.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub concurrency: u16,
}

#[derive(Debug, Args)]
pub struct PromoteArgs {
    #[command(flatten)]
    pub dest: DestArgs,
    /// Generation to promote [default: the newest].
    #[arg(long, value_name = "G")]
    pub point: Option<u64>,
    /// Name of the new blob in the same container (e.g. imports/web/os.g7.vhd).
    #[arg(long = "as", value_name = "BLOB")]
    pub name: String,
    /// Give up waiting for the copy after this many seconds.
    #[arg(long, default_value_t = 3600)]
    pub timeout_secs: u64,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The disk to compare with: an image file, a block device, or a page blob's https:// URL.
    #[arg(value_name = "SOURCE", value_parser = super::SourceParser::new())]
    pub source: crate::source::SourceName,
    /// The destination: pageblob:URL.
    #[arg(long, value_name = "DEST", value_parser = super::TargetParser::new())]
    pub against: Target,
    /// Generation to compare with [default: the newest].
    #[arg(long, value_name = "G")]
    pub point: Option<u64>,
    /// Chunk size to compare in.
    #[arg(long, default_value = "1MiB", value_parser = parse_chunk_size)]
    pub chunk_size: ChunkSize,
    /// Storage service version to send (x-ms-version).
    #[arg(long, value_name = "VERSION")]
    pub api_version: Option<String>,
    /// Where the destination keeps its state, if not beside it (as given to `sync --state-url`).
    #[arg(long, value_name = "URL", value_parser = super::StateUrlParser)]
    pub state_url: Option<diskferry_blob::address::BlobAddress>,
    /// Read requests in flight.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub concurrency: u16,
    /// Print one JSON object instead of a human summary.
    #[arg(long)]
    pub json: bool,
}

fn open_blob(
    t: &Target,
    api_version: Option<String>,
    state: Option<diskferry_blob::address::BlobAddress>,
) -> Result<PageBlobSink<diskferry_blob::Destination>, Failure> {
    match t {
        Target::PageBlob(addr) => {
            open_pageblob(addr, api_version, PageBlobOptions { state, ..PageBlobOptions::default() }, false, None)
        }
        Target::File(_) => Err(Failure::new(
            ExitCode::Usage,
            anyhow::anyhow!("this command reads page blobs (pageblob:URL); a file: VHD is read with qemu-img"),
        )),
        Target::Relay(_) => Err(Failure::new(
            ExitCode::Usage,
            anyhow::anyhow!("this command reads page blobs (pageblob:URL): read the receiver's destination directly"),
        )),
    }
}

pub fn run_points(a: PointsArgs) -> Result<(), Failure> {
    let sink = open_blob(&a.dest.dest, a.dest.api_version, a.dest.state_url)?;
    if a.trim {
        let dropped = sink.trim(usize::from(a.keep), a.min_retention)?;
        eprintln!("trimmed {} recovery point(s)", dropped.len());
    }
    let points = sink.points()?;
    if a.dest.json {
        return print_json(&points);
    }
    let mut o = std::io::stdout().lock();
    let _ = writeln!(
        o,
        "{:>10}  {:<24}  {:>12}  {:>12}  {:>12}  consistency",
        "generation", "time (UTC)", "size", "written", "cleared"
    );
    for p in &points {
        let t = time::OffsetDateTime::from_unix_timestamp(p.created_unix_ms / 1000)
            .ok()
            .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
            .unwrap_or_default();
        let _ = writeln!(
            o,
            "{:>10}  {:<24}  {:>12}  {:>12}  {:>12}  {}",
            p.generation,
            t,
            human(p.disk_size),
            human(p.bytes_written),
            human(p.bytes_cleared),
            p.consistency.as_deref().unwrap_or("-")
        );
    }
    Ok(())
}

pub fn run_download(a: DownloadArgs) -> Result<(), Failure> {
    crate::readback::check_folder(&a.to)?;
    let sink = open_blob(&a.dest.dest, a.dest.api_version, a.dest.state_url)?;
    let r = crate::readback::download(&sink, a.point, &a.to, usize::from(a.concurrency))?;
    if a.dest.json {
        return print_json(&r);
    }
    println!(
        "generation {} -> {}: {} ({} fetched in {} ranges) in {:.2} s",
        r.generation,
        a.to.display(),
        human(r.bytes),
        human(r.bytes_fetched),
        r.ranges,
        r.seconds
    );
    Ok(())
}

/// Copy a recovery point to a standalone page blob, server side: what
/// Azure's disk import (`createOption: Import`) reads.
pub fn run_promote(a: PromoteArgs) -> Result<(), Failure> {
    let Target::PageBlob(addr) = &a.dest.dest else {
        return open_blob(&a.dest.dest, None, None).map(|_| ());
    };
    let own = &addr.blob;
    let bad = a.name.is_empty()
        || !a.name.ends_with(".vhd")
        || a.name.starts_with('/')
        || a.name.split('/').any(|p| p.is_empty() || p == "." || p == "..")
        || a.name.starts_with(own.as_str());
    if bad {
        return Err(Failure::new(
            ExitCode::Usage,
            anyhow::anyhow!("--as {:?}: a blob name ending in .vhd that does not start with {own:?}", a.name),
        ));
    }
    let sink = open_blob(&a.dest.dest, a.dest.api_version.clone(), a.dest.state_url.clone())?;
    let point = crate::readback::pick(&sink.points()?, a.point, &format!("pageblob:{addr}"))?;
    let deadline = std::time::Duration::from_secs(a.timeout_secs);
    sink.runtime()
        .block_on(diskferry_blob::store::copy_snapshot(
            sink.store(),
            &a.name,
            own,
            &point.snapshot,
            std::time::Duration::from_secs(2),
            deadline,
        ))
        .map_err(|e| Failure::new(ExitCode::Destination, anyhow::anyhow!("{e}")))?;
    let url = addr.blob_url(&a.name).map_err(|e| Failure::new(ExitCode::Usage, e))?;
    let out = diskferry_core::report::PromoteReport {
        generation: point.generation,
        disk_size: point.disk_size,
        blob: url.to_string(),
    };
    if a.dest.json {
        return print_json(&out);
    }
    println!("generation {} -> {url}", point.generation);
    Ok(())
}

pub fn run_verify(a: VerifyArgs) -> Result<(), Failure> {
    let access = crate::open::BlobAccess { api_version: a.api_version.clone(), retry_for: None };
    let sink = open_blob(&a.against, a.api_version, a.state_url)?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let concurrency = usize::from(a.concurrency);
    let r = crate::readback::verify(&a.source, &access, &sink, a.point, a.chunk_size, threads, concurrency)?;
    if a.json {
        print_json(&r)?;
    } else if r.identical {
        println!("identical: {} chunks compared with generation {}", r.chunks_compared, r.generation);
    } else {
        let shown: Vec<String> = r.mismatches.iter().take(20).map(|o| o.to_string()).collect();
        println!(
            "DIFFERENT from generation {}: {} chunks differ{} at offsets {}",
            r.generation,
            r.mismatches.len(),
            if r.size_matches { "" } else { " (and the sizes differ)" },
            shown.join(", ")
        );
    }
    if r.identical {
        Ok(())
    } else {
        Err(Failure::new(
            ExitCode::Mismatch,
            anyhow::anyhow!("{} chunks differ from generation {}", r.mismatches.len(), r.generation),
        ))
    }
}
