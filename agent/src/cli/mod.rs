//! The `diskferry-agent` command line: raw arguments (clap) are turned into
//! validated options in one place, then handed to the library. `scan` and
//! `sync` live here, the page blob read-back commands in [`blob`].

mod blob;
mod receive;
mod run;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::{Args, Parser, Subcommand};
use diskferry_core::geometry::{ChunkSize, MAX_CHUNK, MIN_CHUNK};
use diskferry_core::manifest::Manifest;

use std::io::IsTerminal;
use std::sync::Arc;

use anyhow::Context;

use crate::clock::unix_ms;
use crate::exit::{ExitCode, Failure, WithCode};
use crate::metrics::Metrics;
use crate::open::{open_source, sync_fanout, SyncOptions, Target};
use crate::pageblob::lease::LeaseOptions;
use crate::pageblob::sink::PageBlobOptions;
use crate::progress::Progress;
use crate::scan::scan;
use crate::source::{ReadMode, SourceName};
use crate::status::StatusWriter;
use crate::sync::{thread_pool, threads_or_cores, SyncReport};

#[derive(Debug, Parser)]
#[command(
    name = "diskferry-agent",
    version,
    about = "Copy a disk block by block: skip zeros, hash chunks with blake3, send only what changed.",
    long_about = "diskferry-agent is diskferry's data plane. It reads a disk image or a block device in \
parallel, skips all-zero chunks, hashes the rest with blake3 and writes only the chunks that changed \
since the destination's last generation. Each destination keeps its own manifest, so every sync after \
the first is incremental by itself.",
    after_help = "Exit codes: 0 ok, 1 unexpected failure, 2 usage, 3 source unusable, 4 destination \
unusable, 5 manifest named on the command line is corrupt, 6 verify found differences, 7 some (not all) \
destinations of a fan-out sync failed (docs/exit-codes.md)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Read a disk and count its zero and data chunks (and optionally write its manifest).
    Scan(ScanArgs),
    /// Bring a destination up to date with a disk: first a full copy, then only changes.
    Sync(SyncArgs),
    /// List a page blob destination's recovery points.
    Points(blob::PointsArgs),
    /// Write a recovery point of a page blob to a local sparse VHD (only allocated ranges are fetched).
    Download(blob::DownloadArgs),
    /// Read a destination back and compare it with a source, chunk by chunk (exit 0 only if identical).
    Verify(blob::VerifyArgs),
    /// Copy a recovery point to a standalone page blob in the same container, server side
    /// (what Azure's disk import reads).
    Promote(blob::PromoteArgs),
    /// Run a job spec from the coordinator: sync each of its disks, reporting to a status file.
    Run(run::RunArgs),
    /// Serve as a relay's far end: take zstd-compressed deltas from senders
    /// (`sync --to relay:...`) and write them to page blobs or files here.
    Receive(receive::ReceiveArgs),
}

#[derive(Debug, Args)]
pub struct ReadArgs {
    /// Chunk size: a power of two from 64KiB to 4MiB (suffixes KiB, MiB, K, M; or bytes).
    #[arg(long, default_value = "1MiB", value_parser = parse_chunk_size)]
    pub chunk_size: ChunkSize,
    /// Worker threads for reading and hashing [default: number of CPUs].
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub threads: Option<u16>,
    /// How to read the source: auto = memory map for files, pread for block devices.
    #[arg(long = "io", value_enum, default_value_t = ReadMode::Auto)]
    pub read_mode: ReadMode,
    /// Print one JSON object instead of a human summary.
    #[arg(long)]
    pub json: bool,
}

impl ReadArgs {
    fn threads(&self) -> usize {
        threads_or_cores(self.threads.map(usize::from))
    }
}

#[derive(Debug, Args)]
pub struct ScanArgs {
    /// The disk: an image file, a block device (e.g. /dev/loop0), or a page blob's
    /// https:// URL (a managed snapshot's export SAS URL; its never-written pages are
    /// not read; a blob ending in a fixed-VHD footer is the disk before it).
    #[arg(value_name = "SOURCE", value_parser = SourceParser::new())]
    pub source: SourceName,
    #[command(flatten)]
    pub read: ReadArgs,
    /// Also write the disk's manifest (format v1) to FILE.
    #[arg(long, value_name = "FILE")]
    pub manifest_out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct SyncArgs {
    /// The disk: an image file, a block device (e.g. /dev/loop0), or a page blob's
    /// https:// URL (a managed snapshot's export SAS URL; its never-written pages are
    /// not read; a blob ending in a fixed-VHD footer is the disk before it).
    #[arg(value_name = "SOURCE", value_parser = SourceParser::new())]
    pub source: SourceName,
    /// Destination: file:PATH.vhd (a sparse fixed VHD; its manifest is kept at PATH.vhd.manifest),
    /// pageblob:URL (a page blob; credentials from a SAS in the URL, else
    /// AZURE_STORAGE_CONNECTION_STRING / AZURE_STORAGE_KEY, else managed identity),
    /// or relay:https://HOST:PORT/DISK (a `diskferry-agent receive` in the destination
    /// region; deltas go zstd-compressed; http:// only to loopback).
    /// Repeat --to to fan out: the source is read and hashed once, each destination
    /// keeps its own generation, and one that fails does not stop the others.
    #[arg(long, value_name = "DEST", required = true, value_parser = TargetParser::new())]
    pub to: Vec<Target>,
    #[command(flatten)]
    pub read: ReadArgs,
    /// Name of the source recorded in the manifest; a manifest of another source
    /// is not trusted [default: the source's full path].
    #[arg(long, value_name = "ID")]
    pub source_id: Option<String>,
    /// Keep the destination's manifest at FILE instead of beside it. If FILE exists
    /// it must be a valid manifest, else nothing is changed (exit 5).
    #[arg(long, value_name = "FILE")]
    pub manifest: Option<PathBuf>,
    /// Overwrite a destination that diskferry did not write; resize a page blob
    /// that holds a disk of another size.
    #[arg(long)]
    pub force: bool,
    /// Read only what may have changed: a JSON file
    /// {"base_generations": [G, ...], "disk_size": BYTES, "ranges": [[OFFSET, LENGTH], ...]}
    /// saying which byte ranges differ from the state each destination's
    /// generation G was made from (e.g. an Azure snapshot diff). Ignored,
    /// with the reason in the report, unless every destination holds its G.
    #[arg(long, value_name = "FILE")]
    pub hint: Option<PathBuf>,
    /// Read the source at most this fast, per second (e.g. 200MiB): a sync
    /// of a live disk then leaves its owner the rest of the disk's rate.
    /// Paced window by window (32 MiB); holes and hinted ranges are not
    /// read and do not count.
    #[arg(long, value_name = "RATE", value_parser = parse_rate)]
    pub read_limit: Option<u64>,
    /// Record in each recovery point made what the source's disks hold
    /// together (e.g. crash: all taken at one instant by a group snapshot;
    /// per-disk): `points` shows it. Lowercase letters and dashes.
    #[arg(long, value_name = "LABEL", value_parser = parse_consistency)]
    pub consistency: Option<String>,
    /// This sync's fencing number (a coordinator's lease on the replica): a
    /// destination last written with a higher one refuses it (exit 4), a
    /// lower or no number there is replaced by it.
    #[arg(long, value_name = "N")]
    pub fence: Option<u64>,
    #[command(flatten)]
    pub blob: BlobArgs,
    #[command(flatten)]
    pub relay: RelayArgs,
    #[command(flatten)]
    pub report: ReportArgs,
}

fn parse_consistency(s: &str) -> Result<String, String> {
    match diskferry_core::job::is_consistency_label(s) {
        true => Ok(s.to_owned()),
        false => Err("1 to 32 lowercase letters and dashes".into()),
    }
}

/// Read a range hint file (`sync --hint`).
fn load_hint(p: &Path) -> Result<diskferry_core::job::RangeHint, Failure> {
    let text = std::fs::read_to_string(p)
        .map_err(|e| Failure::new(ExitCode::Usage, anyhow::anyhow!("cannot read hint {}: {e}", p.display())))?;
    let h: diskferry_core::job::RangeHint = serde_json::from_str(&text)
        .map_err(|e| Failure::new(ExitCode::Usage, anyhow::anyhow!("hint {}: {e}", p.display())))?;
    h.check().map_err(|e| Failure::new(ExitCode::Usage, anyhow::anyhow!("hint {}: {e}", p.display())))?;
    Ok(h)
}

/// Options of relay destinations.
#[derive(Debug, Args)]
pub struct RelayArgs {
    /// File holding the relay's bearer token (else $DISKFERRY_RELAY_TOKEN).
    #[arg(long, value_name = "FILE")]
    pub relay_token_file: Option<PathBuf>,
    /// Pin the receiver's certificate by its SHA-256 fingerprint (hex, ':' allowed),
    /// as `receive` prints it: for self-signed certificates.
    #[arg(long, value_name = "SHA256")]
    pub tls_fingerprint: Option<String>,
    /// Trust this CA certificate (PEM) for the receiver, besides the system's roots.
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// zstd level of relay frames: 1 (fast) to 19 (small).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(i32).range(1..=19))]
    pub zstd_level: i32,
}

impl RelayArgs {
    /// The relay options, if any destination is a relay (the token is then required).
    pub fn options(&self, targets: &[Target]) -> Result<crate::relay::client::RelayOptions, Failure> {
        let mut o = crate::relay::client::RelayOptions { zstd_level: Some(self.zstd_level), ..Default::default() };
        if !targets.iter().any(|t| matches!(t, Target::Relay(_))) {
            return Ok(o);
        }
        o.token = crate::relay::Token::load(self.relay_token_file.as_deref()).code(ExitCode::Usage)?;
        if o.token.is_none() {
            return Err(Failure::new(
                ExitCode::Usage,
                anyhow::anyhow!("a relay destination needs a token: --relay-token-file FILE or $DISKFERRY_RELAY_TOKEN"),
            ));
        }
        o.fingerprint = self
            .tls_fingerprint
            .as_deref()
            .map(crate::relay::tls::Fingerprint::parse)
            .transpose()
            .code(ExitCode::Usage)?;
        o.ca_file = self.tls_ca.clone();
        Ok(o)
    }
}

/// How a sync reports while it runs.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Rewrite FILE every 2 s with the sync's status as JSON (phase, progress, counters, last error).
    #[arg(long, value_name = "FILE")]
    pub status_file: Option<PathBuf>,
    /// Serve Prometheus metrics at http://ADDR/metrics while the sync runs (e.g. 127.0.0.1:9464).
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Keep serving metrics this many seconds after the sync ends (for a last scrape).
    #[arg(long, value_name = "SECONDS", default_value_t = 0)]
    pub metrics_linger: u64,
    /// No progress bar, even on a terminal.
    #[arg(long)]
    pub quiet: bool,
}

/// Options of page blob destinations.
#[derive(Debug, Args)]
pub struct BlobArgs {
    /// Page blob requests in flight at once (each at most 4 MiB).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub concurrency: u16,
    /// Recovery points (blob snapshots) to keep; older ones are deleted.
    #[arg(long, default_value_t = 7, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub keep: u16,
    /// Never delete a recovery point younger than this (by its snapshot's own time), whatever --keep
    /// says: committing generation after generation cannot push recent history out. 7d, 12h, 30m, 90s.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub min_retention: Option<std::time::Duration>,
    /// Create the container if it does not exist.
    #[arg(long)]
    pub create_container: bool,
    /// Storage service version to send (x-ms-version), e.g. 2025-11-05 for Azurite 3.35.
    #[arg(long, value_name = "VERSION")]
    pub api_version: Option<String>,
    /// Give up retrying one storage request (503, 500, timeouts, resets) after this many seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub retry_for: u64,
    /// The writer's lease on the destination lasts this long and is renewed while the sync runs: a sync
    /// that dies lets it lapse within this time (Azure allows 15 to 60).
    #[arg(long, value_name = "SECONDS", default_value_t = 60, value_parser = clap::value_parser!(u32).range(15..=60))]
    pub lease_secs: u32,
    /// When another sync holds the destination's lease, wait this long for it to end or lapse, then exit 4
    /// ("in use by another sync"). Default: one lease period and 5 s.
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(0..=86400))]
    pub lease_wait: Option<u64>,
    /// Break the lease another sync holds instead of waiting: only when that sync is known to be gone
    /// (its process killed, its VM deleted). Should it still run, its next write is refused.
    #[arg(long)]
    pub break_lease: bool,
    /// Keep the destination's state (journal, manifests, recovery point index) in this container of a
    /// standard account, not beside the page blob: for a premium page blob account, which holds page
    /// blobs only. https://ACCOUNT.blob.core.windows.net/CONTAINER[/PREFIX], a container SAS (racwdl)
    /// in its query or the credentials of page blob destinations. Give the same URL to points,
    /// download, promote and verify.
    #[arg(long, value_name = "URL", value_parser = StateUrlParser)]
    pub state_url: Option<diskferry_blob::address::BlobAddress>,
}

impl BlobArgs {
    pub fn options(&self) -> PageBlobOptions {
        let wait = self.lease_wait.unwrap_or(u64::from(self.lease_secs) + 5);
        PageBlobOptions {
            concurrency: usize::from(self.concurrency),
            keep: usize::from(self.keep),
            min_retention: self.min_retention,
            create_container: self.create_container,
            force: false,
            lease: LeaseOptions {
                secs: self.lease_secs,
                wait: std::time::Duration::from_secs(wait),
                take_over: self.break_lease,
            },
            state: self.state_url.clone(),
            // What a point holds is the coordinator's to say (a job's
            // `consistency`, or a relay sender's); a bare sync says nothing.
            consistency: None,
            fence: None,
        }
    }
}

/// Parses a state container URL (`--state-url`) without echoing it.
#[derive(Debug, Clone, Copy)]
pub struct StateUrlParser;

impl clap::builder::TypedValueParser for StateUrlParser {
    type Value = diskferry_blob::address::BlobAddress;

    fn parse_ref(
        &self,
        _cmd: &clap::Command,
        _arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<Self::Value, clap::Error> {
        let bad =
            |msg: String| clap::Error::raw(clap::error::ErrorKind::ValueValidation, format!("--state-url: {msg}\n"));
        let s = value.to_str().ok_or_else(|| bad("not valid UTF-8".into()))?;
        diskferry_blob::address::BlobAddress::parse_container(s).map_err(|e| bad(format!("{e:#}")))
    }
}

/// Parses a value whose errors must not echo it (a URL may carry a SAS):
/// clap's own message repeats the value; this one names only the argument
/// and what the parser said (which redacts).
#[derive(Debug, Clone, Copy)]
pub struct QuietParser<T>(std::marker::PhantomData<fn() -> T>);

/// The parser of `--to`.
pub type TargetParser = QuietParser<Target>;
/// The parser of a SOURCE argument.
pub type SourceParser = QuietParser<SourceName>;

impl<T> QuietParser<T> {
    pub const fn new() -> Self {
        Self(std::marker::PhantomData)
    }
}

impl<T> Default for QuietParser<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> clap::builder::TypedValueParser for QuietParser<T>
where
    T: std::str::FromStr<Err = String> + Clone + Send + Sync + 'static,
{
    type Value = T;

    fn parse_ref(
        &self,
        _cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<T, clap::Error> {
        let name = arg.map_or_else(
            || "VALUE".to_owned(),
            |a| a.get_long().map_or_else(|| a.get_id().to_string().to_uppercase(), |l| format!("--{l}")),
        );
        let bad = |msg: String| clap::Error::raw(clap::error::ErrorKind::ValueValidation, format!("{name}: {msg}\n"));
        let s = value.to_str().ok_or_else(|| bad("not valid UTF-8".into()))?;
        s.parse().map_err(bad)
    }
}

/// Parse `7d`, `12h`, `30m`, `90s` or `90` (seconds) into a duration.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let (num, unit) = s.find(|c: char| !c.is_ascii_digit()).map_or((s, ""), |i| s.split_at(i));
    let n: u64 = num.parse().map_err(|_| format!("{s:?} is not a duration (7d, 12h, 30m, 90s)"))?;
    let secs = match unit {
        "" | "s" => Some(n),
        "m" => n.checked_mul(60),
        "h" => n.checked_mul(3600),
        "d" => n.checked_mul(86_400),
        _ => None,
    };
    secs.map(std::time::Duration::from_secs).ok_or_else(|| format!("{s:?} is not a duration (7d, 12h, 30m, 90s)"))
}

/// A rate in bytes per second: a size, optionally with `/s` (`200MiB/s`).
pub fn parse_rate(s: &str) -> Result<u64, String> {
    let bytes = parse_size(s.trim().trim_end_matches("/s"))?;
    if bytes == 0 {
        return Err(format!("{s}: a rate must be more than zero"));
    }
    Ok(bytes)
}

/// Parse `1MiB`, `64KiB`, `4M`, `65536` into a validated chunk size.
pub fn parse_chunk_size(s: &str) -> Result<ChunkSize, String> {
    let bytes = parse_size(s)?;
    ChunkSize::new(bytes)
        .map_err(|_| format!("{s} is not a power of two between {}KiB and {}MiB", MIN_CHUNK >> 10, MAX_CHUNK >> 20))
}

pub use diskferry_core::units::{human, parse_size};

pub fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Scan(a) => run_scan(a),
        Command::Sync(a) => run_sync(a),
        Command::Points(a) => blob::run_points(a),
        Command::Promote(a) => blob::run_promote(a),
        Command::Download(a) => blob::run_download(a),
        Command::Verify(a) => blob::run_verify(a),
        Command::Run(a) => run::run_job(a),
        Command::Receive(a) => receive::run_receive(a),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("error: {f}");
            std::process::ExitCode::from(f.code as u8)
        }
    }
}

#[derive(Debug, serde::Serialize)]
struct ScanReport {
    source: String,
    disk_size: u64,
    chunk_size: u64,
    chunks: u64,
    chunks_zero: u64,
    chunks_data: u64,
    /// Of the zero chunks: those in holes of the source, not read.
    chunks_hole: u64,
    bytes_read: u64,
    bytes_hashed: u64,
    threads: usize,
    io: &'static str,
    seconds: f64,
    bytes_per_second: f64,
    manifest: Option<String>,
}

fn run_scan(a: ScanArgs) -> Result<(), Failure> {
    let started = Instant::now();
    let (source, geometry) = open_source(&a.source, a.read.read_mode, a.read.chunk_size, &Default::default())?;
    if let Some(out) = &a.manifest_out {
        crate::readback::check_folder(out)?;
    }
    let threads = a.read.threads();
    let pool = thread_pool(threads)?;
    let (chunks, stats) = scan(&*source, geometry, &pool, &Default::default(), |_| Ok(None))?;
    let seconds = started.elapsed().as_secs_f64();
    if let Some(out) = &a.manifest_out {
        let source_id = a.source.default_id();
        let m = Manifest { geometry, generation: 1, created_unix_ms: unix_ms(), source_id, chunks };
        let bytes = m.encode().code(ExitCode::Failure)?;
        std::fs::write(out, bytes).map_err(|e| {
            Failure::new(ExitCode::Destination, anyhow::anyhow!("cannot write manifest {}: {e}", out.display()))
        })?;
    }
    let r = ScanReport {
        source: a.source.to_string(),
        disk_size: geometry.disk_size(),
        chunk_size: geometry.chunk_size().get(),
        chunks: stats.chunks,
        chunks_zero: stats.chunks_zero,
        chunks_data: stats.chunks_data,
        chunks_hole: stats.hole_chunks,
        bytes_read: stats.bytes_read,
        bytes_hashed: stats.bytes_hashed,
        threads,
        io: match (&a.source, source.mapped()) {
            (SourceName::Blob(_), _) => "https",
            (_, Some(_)) => "mmap",
            (_, None) => "pread",
        },
        seconds,
        bytes_per_second: geometry.disk_size() as f64 / seconds.max(1e-9),
        manifest: a.manifest_out.as_ref().map(|p| p.display().to_string()),
    };
    if a.read.json {
        print_json(&r)
    } else {
        let mut o = std::io::stdout().lock();
        let _ = writeln!(o, "{}: {} in {} chunks of {}", r.source, human(r.disk_size), r.chunks, human(r.chunk_size));
        let _ = writeln!(
            o,
            "  data chunks {:>10}  ({})\n  zero chunks {:>10}  ({} of them holes, not read)",
            r.chunks_data,
            human(r.bytes_hashed),
            r.chunks_zero,
            r.chunks_hole
        );
        let _ = writeln!(
            o,
            "  read {} in {:.2} s with {} threads ({}): {}/s",
            human(r.bytes_read),
            r.seconds,
            r.threads,
            r.io,
            human(r.bytes_per_second as u64)
        );
        if let Some(m) = &r.manifest {
            let _ = writeln!(o, "  manifest written to {m}");
        }
        Ok(())
    }
}

fn run_sync(a: SyncArgs) -> Result<(), Failure> {
    if a.manifest.is_some() && a.to.len() > 1 {
        return Err(Failure::new(
            ExitCode::Usage,
            anyhow::anyhow!("--manifest names one destination's manifest: use a single --to with it"),
        ));
    }
    let opts = SyncOptions {
        chunk_size: a.read.chunk_size,
        source_id: a.source_id.clone(),
        threads: a.read.threads(),
        read_mode: a.read.read_mode,
        manifest: a.manifest.clone(),
        force: a.force,
        pageblob: PageBlobOptions { consistency: a.consistency.clone(), fence: a.fence, ..a.blob.options() },
        api_version: a.blob.api_version.clone(),
        retry_for: Some(std::time::Duration::from_secs(a.blob.retry_for)),
        relay: a.relay.options(&a.to)?,
        hint: a.hint.as_deref().map(load_hint).transpose()?,
        read_limit: a.read_limit,
        shared: None,
    };
    let progress = Progress::new(&a.source.to_string());
    if let Some(p) = &a.report.status_file {
        crate::readback::check_folder(p)?;
    }
    let status = match &a.report.status_file {
        Some(p) => Some(
            StatusWriter::start(p.clone(), progress.clone())
                .with_context(|| format!("cannot write status file {}", p.display()))
                .code(ExitCode::Destination)?,
        ),
        None => None,
    };
    if let Some(addr) = a.report.metrics_addr {
        let m = Metrics::new(progress.clone()).context("metrics registry").code(ExitCode::Failure)?;
        let bound = crate::metrics::serve(addr, Arc::new(m))
            .with_context(|| format!("cannot serve metrics on {addr}"))
            .code(ExitCode::Usage)?;
        if !a.read.json {
            eprintln!("metrics at http://{bound}/metrics");
        }
    }
    let bar = (!a.read.json && !a.report.quiet && std::io::stderr().is_terminal()).then(|| progress_bar(&progress));
    let r = sync_fanout(&a.source, &a.to, &opts, &progress);
    if let Some((stop, t)) = bar {
        stop.store(true, std::sync::atomic::Ordering::Release);
        let _ = t.join();
    }
    drop(status);
    if a.report.metrics_addr.is_some() && a.report.metrics_linger > 0 {
        std::thread::sleep(std::time::Duration::from_secs(a.report.metrics_linger));
    }
    let mut lanes = r?;
    if lanes.len() == 1 {
        let r =
            lanes.pop().unwrap_or_else(|| Err(Failure::new(ExitCode::Failure, anyhow::anyhow!("no destination"))))?;
        if a.read.json {
            return print_json(&r);
        }
        print_sync(&r);
        return Ok(());
    }
    // Fan-out: every destination's outcome, then one exit code.
    let mut results = Vec::new();
    for (t, lane) in a.to.iter().zip(&lanes) {
        match lane {
            Ok(r) => {
                if !a.read.json {
                    print_sync(r);
                }
                results.push(serde_json::json!({ "ok": true, "report": r }));
            }
            Err(f) => {
                eprintln!("error: {t}: {f}");
                results.push(serde_json::json!({
                    "ok": false, "destination": t.to_string(), "error": f.to_string(), "exit_code": f.code as u8,
                }));
            }
        }
    }
    if a.read.json {
        print_json(&results)?;
    }
    let failed: Vec<Failure> = lanes.into_iter().filter_map(Result::err).collect();
    match failed.len() {
        0 => Ok(()),
        n if n == a.to.len() => Err(failed
            .into_iter()
            .next()
            .unwrap_or_else(|| Failure::new(ExitCode::Failure, anyhow::anyhow!("every destination failed")))),
        n => Err(Failure::new(ExitCode::Partial, anyhow::anyhow!("{n} of {} destinations failed", a.to.len()))),
    }
}

type Ticker = (Arc<std::sync::atomic::AtomicBool>, std::thread::JoinHandle<()>);

/// A progress bar on stderr: bytes of the disk walked, rate, ETA.
fn progress_bar(p: &Arc<Progress>) -> Ticker {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (p, st) = (p.clone(), stop.clone());
    let t = std::thread::spawn(move || {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{prefix} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta} {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_prefix(p.source.clone());
        while !st.load(std::sync::atomic::Ordering::Acquire) {
            bar.set_length(Progress::get(&p.disk_size));
            bar.set_position(Progress::get(&p.bytes_scanned));
            bar.set_message(format!("written {}", human(Progress::get(&p.bytes_written))));
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        bar.finish_and_clear();
    });
    (stop, t)
}

fn print_sync(r: &SyncReport) {
    let mut o = std::io::stdout().lock();
    let kind = match &r.full_sync_reason {
        Some(why) => format!("full sync ({why})"),
        None => "incremental sync".to_owned(),
    };
    let _ = writeln!(o, "{}: generation {}, {kind}", r.destination, r.generation);
    if let Some(prev) = r.previous_disk_size.filter(|&p| p != r.disk_size) {
        let _ = writeln!(o, "  disk resized from {} to {}", human(prev), human(r.disk_size));
    }
    if r.chunks_suspect > 0 {
        let _ = writeln!(o, "  {} chunks touched by an interrupted run were checked again", r.chunks_suspect);
    }
    let _ = writeln!(
        o,
        "  chunks: {} zero, {} unchanged, {} written ({}), {} cleared ({}), of {}; read {}",
        r.chunks_zero,
        r.chunks_unchanged,
        r.chunks_written,
        human(r.bytes_written),
        r.chunks_cleared,
        human(r.bytes_cleared),
        r.chunks,
        human(r.bytes_read)
    );
    if let Some(w) = &r.wire {
        let zstd = if w.bytes_raw > w.bytes_sent {
            format!(" ({} of data, zstd {:.2}x)", human(w.bytes_raw), w.bytes_raw as f64 / w.bytes_sent.max(1) as f64)
        } else {
            String::new()
        };
        let _ = writeln!(
            o,
            "  sent {}{zstd} in {} requests ({} retries, {} clears)",
            human(w.bytes_sent),
            w.requests_ok,
            w.retries,
            w.clear_requests
        );
    }
    let _ = writeln!(
        o,
        "  read {} of {} in {:.2} s ({}/s)",
        human(r.bytes_read),
        human(r.disk_size),
        r.seconds,
        human(r.read_bytes_per_second as u64)
    );
}

pub(crate) fn print_json<T: serde::Serialize>(v: &T) -> Result<(), Failure> {
    let s = serde_json::to_string(v).code(ExitCode::Failure)?;
    println!("{s}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert!(parse_chunk_size("8MiB").is_err());
        assert!(parse_chunk_size("32KiB").is_err());
        assert_eq!(parse_chunk_size("4MiB").map(ChunkSize::get), Ok(4 << 20));
    }

    #[test]
    fn targets() {
        assert_eq!("file:/a/b.vhd".parse::<Target>(), Ok(Target::File("/a/b.vhd".into())));
        assert!("file:".parse::<Target>().is_err());
        assert!("/a/b.vhd".parse::<Target>().is_err());
        assert!(matches!("relay:https://x:7443/d".parse::<Target>(), Ok(Target::Relay(_))));
        assert!("relay:http://x:80/d".parse::<Target>().unwrap_err().contains("loopback"));
        assert!(matches!("pageblob:http://127.0.0.1:1/acct/c/d.vhd".parse::<Target>(), Ok(Target::PageBlob(_))));
        assert!("pageblob:https://x/onlycontainer?sig=SECRET".parse::<Target>().is_err_and(|e| !e.contains("SECRET")));
    }

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
