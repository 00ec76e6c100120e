//! `diskferry-agent receive`: the relay's far end, in the destination region.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context};
use clap::Args;

use super::BlobArgs;
use crate::exit::{ExitCode, Failure, WithCode};
use crate::open::SyncOptions;
use crate::receive::grants::Grants;
use crate::receive::metrics::ReceiverMetrics;
use crate::receive::server::{self as receiver, ReceiverConfig, Root};
use crate::relay::tls;
use crate::source::ReadMode;

#[derive(Debug, Args)]
#[command(after_help = "Each disk a sender names (relay:https://HOST:PORT/DISK) is written to ROOT as DISK.vhd, \
with generations, manifests, journal and (page blobs) recovery points exactly as a direct sync keeps them. \
Start it, note the certificate fingerprint it prints, and give that to senders as --tls-fingerprint.")]
pub struct ReceiveArgs {
    /// Address to listen on, e.g. 0.0.0.0:7443 (TLS required off loopback) or 127.0.0.1:0.
    #[arg(long, value_name = "ADDR")]
    pub listen: SocketAddr,
    /// Where disks go: file:DIR (DIR/DISK.vhd) or pageblob:CONTAINER-URL (blob DISK.vhd;
    /// credentials as for sync's pageblob: destinations).
    #[arg(long, value_name = "DEST", value_parser = RootParser)]
    pub root: Root,
    /// File holding the bearer token every request must carry (else $DISKFERRY_RELAY_TOKEN).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// TLS certificate chain (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Close a session nobody has used for this many seconds (its sender died).
    #[arg(long, value_name = "SECONDS", default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub idle_secs: u64,
    /// Sessions (disks being synced) open at once.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..=4096))]
    pub max_sessions: u16,
    /// Serve Prometheus metrics at http://ADDR/metrics.
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    #[command(flatten)]
    pub blob: BlobArgs,
}

pub fn run_receive(a: ReceiveArgs) -> Result<(), Failure> {
    let tokens = Grants::load(a.token_file.as_deref()).code(ExitCode::Usage)?.ok_or_else(|| {
        Failure::new(
            ExitCode::Usage,
            anyhow!("receive needs a token: --token-file FILE or ${}", crate::relay::TOKEN_ENV),
        )
    })?;
    let (tls, fingerprint) = match (&a.tls_cert, &a.tls_key) {
        (Some(c), Some(k)) => {
            let (cfg, fp) = tls::server_config(c, k).code(ExitCode::Usage)?;
            (Some(cfg), Some(fp))
        }
        _ => (None, None),
    };
    if let Root::Folder(dir) = &a.root {
        if !dir.is_dir() {
            return Err(Failure::new(ExitCode::Destination, anyhow!("root folder {} does not exist", dir.display())));
        }
    }
    let sink = SyncOptions {
        chunk_size: Default::default(),
        source_id: None,
        threads: 1,
        read_mode: ReadMode::Auto,
        manifest: None,
        force: false,
        pageblob: a.blob.options(),
        api_version: a.blob.api_version.clone(),
        retry_for: Some(Duration::from_secs(a.blob.retry_for)),
        relay: Default::default(),
        hint: None,
        read_limit: None,
        shared: None,
    };
    let cfg = ReceiverConfig {
        listen: a.listen,
        root: a.root,
        tokens,
        tls,
        sink,
        idle: Duration::from_secs(a.idle_secs),
        max_sessions: usize::from(a.max_sessions),
    };
    let metrics = Arc::new(ReceiverMetrics::new().context("metrics registry").code(ExitCode::Failure)?);
    if let Some(addr) = a.metrics_addr {
        let bound = crate::metrics::serve(addr, metrics.clone())
            .with_context(|| format!("cannot serve metrics on {addr}"))
            .code(ExitCode::Usage)?;
        eprintln!("metrics at http://{bound}/metrics");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("diskferry-receive")
        .enable_all()
        .build()
        .code(ExitCode::Failure)?;
    let root = format!("{:?}", cfg.root);
    let bound = receiver::start(&rt, cfg, metrics).code(ExitCode::Usage)?;
    let scheme = if fingerprint.is_some() { "https" } else { "http" };
    // One line on stdout, for people and scripts: where, and what to pin.
    match fingerprint {
        Some(fp) => println!("listening on {scheme}://{bound} root {root} certificate sha256 {fp}"),
        None => println!("listening on {scheme}://{bound} root {root}"),
    }
    rt.block_on(std::future::pending::<()>());
    Ok(())
}

/// `--root`, refused without echoing the value (a container URL may carry
/// a SAS): clap's own message would print it whole.
#[derive(Clone)]
pub struct RootParser;

impl clap::builder::TypedValueParser for RootParser {
    type Value = Root;

    fn parse_ref(
        &self,
        _cmd: &clap::Command,
        _arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<Root, clap::Error> {
        let bad = |msg: String| clap::Error::raw(clap::error::ErrorKind::ValueValidation, format!("--root: {msg}\n"));
        let s = value.to_str().ok_or_else(|| bad("not valid UTF-8".into()))?;
        s.parse().map_err(|e: String| bad(diskferry_blob::address::redact(&e)))
    }
}
