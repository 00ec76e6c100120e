//! The `diskferry` command line: arguments (clap) are checked here and
//! turned into calls on the store, the lifecycle executor, gc and the
//! daemon. Replica commands are in [`replica`], reading results back
//! (`points`, `import`) in [`results`].

mod failover;
pub mod preflight;
mod publish;
mod replica;
mod results;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};

use crate::config::Config;

#[derive(Debug, Parser)]
#[command(
    name = "diskferry",
    version,
    about = "Replicate a VM's disks to page blobs in another region, incrementally, on a schedule.",
    long_about = "diskferry is the coordinator: it keeps replica definitions, snapshots a VM's disks, \
hands them to a temporary worker running diskferry-agent, watches it, always cleans up, and keeps \
the run history. The embedded `local` provider runs the whole lifecycle on this machine: a VM is a \
folder with vm.toml and disk images, snapshots are reflink or sparse copies, the worker is an agent \
process. With provider = \"azure\" in the config ([azure] section, docs/azure.md), the same commands run \
on Azure: incremental snapshots, a worker VM in the source region, its status blob, managed-disk import.",
    after_help = "Exit codes: 0 ok, 1 the run (or command) failed, 2 bad input (unknown replica, malformed \
vm.toml or config, bad schedule or destination), 3 the replica is busy with another run (docs/exit-codes.md)."
)]
pub struct Cli {
    /// Configuration file (TOML).
    #[arg(long, global = true, value_name = "FILE", env = "DISKFERRY_CONFIG")]
    pub config: Option<PathBuf>,
    /// State folder: database, snapshots, worker folders [default: ~/.local/share/diskferry].
    #[arg(long, global = true, value_name = "DIR", env = "DISKFERRY_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Shared state in PostgreSQL (postgres://USER[:PASSWORD]@HOST[:PORT]/DB), for several coordinators on one
    /// database [default: the config's `state`, else SQLite in the state folder].
    #[arg(long, global = true, value_name = "URL", env = "DISKFERRY_STATE_URL", hide_env_values = true)]
    pub state_url: Option<String>,
    /// Local provider: attach temporary disks as read-only loop devices (root only).
    #[arg(long = "loop", global = true)]
    pub use_loop: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Define, list, show and delete replicas.
    #[command(subcommand)]
    Replica(replica::ReplicaCmd),
    /// Sync a replica now: snapshot, worker, sync, teardown.
    Run(replica::RunArgs),
    /// A replica's run history, newest first.
    Runs(replica::RunsArgs),
    /// A replica's recovery points, per disk, read from the destination.
    Points(results::PointsArgs),
    /// Write a recovery point of every disk of a replica to local VHD files, or make Azure managed disks of it.
    Import(results::ImportArgs),
    /// Publish a recovery point at its destination as an Azure Compute Gallery image version
    /// (or as managed disks, with --to azure:RG).
    Publish(publish::PublishArgs),
    /// One-off migration: define a replica, sync it once, import the result.
    Migrate(results::MigrateArgs),
    /// Bring a replica's VM up from a recovery point (a drill with --test), or a plan of replicas in order.
    Failover(failover::FailoverArgs),
    /// Failover drills: list them, clean them.
    #[command(subcommand)]
    Drill(failover::DrillCmd),
    /// End a migration: a final run with the source stopped, then a failover of that point.
    Cutover(failover::CutoverArgs),
    /// Check what a run needs (credentials, permissions, quota, network, storage, the agent, the sources)
    /// without creating anything; exit 1 on a problem. A replica's first run does this first.
    Preflight(preflight::PreflightArgs),
    /// Delete temporary resources left by runs that ended or died (keeps the latest snapshot per disk).
    Gc(JsonArg),
    /// Run schedules and serve metrics until SIGTERM.
    Daemon(DaemonArgs),
}

#[derive(Debug, clap::Args)]
pub struct JsonArg {
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct DaemonArgs {
    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9465).
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    /// How often schedules are checked, in milliseconds.
    #[arg(long, default_value_t = 250, value_parser = clap::value_parser!(u64).range(10..=60000))]
    pub tick_ms: u64,
}

pub use crate::env::Env;
pub use crate::error::{usage, Code, Failure};
use crate::store::Location;

fn env(cli: &Cli) -> Result<Env, Failure> {
    let mut config = match &cli.config {
        Some(p) => usage(Config::load(p))?,
        None => Config::default(),
    };
    config.local.use_loop |= cli.use_loop;
    let state = usage(config.state_dir(cli.state_dir.as_deref()))?;
    let db = match cli.state_url.as_deref().or(config.state.as_deref()) {
        Some(url) => usage(crate::config::state_location(url))?,
        None => Location::Sqlite(state.join("state.db")),
    };
    Ok(Env::new(config, state, db))
}

pub fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = env(&cli).and_then(|env| match cli.command {
        Command::Replica(c) => replica::replica(&env, c),
        Command::Run(a) => replica::run(&env, a),
        Command::Runs(a) => replica::runs(&env, a),
        Command::Points(a) => results::points(&env, a),
        Command::Import(a) => results::import(&env, a),
        Command::Migrate(a) => results::migrate(&env, a),
        Command::Publish(a) => publish::publish(&env, a),
        Command::Failover(a) => failover::failover(&env, a),
        Command::Drill(c) => failover::drill(&env, c),
        Command::Cutover(a) => failover::cutover(&env, a),
        Command::Gc(a) => gc(&env, a),
        Command::Preflight(a) => preflight::preflight(&env, a),
        Command::Daemon(a) => {
            crate::daemon::run(&env, a.metrics_addr, std::time::Duration::from_millis(a.tick_ms)).map_err(Failure::from)
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("error: {f}");
            std::process::ExitCode::from(f.code as u8)
        }
    }
}

fn gc(env: &Env, a: JsonArg) -> Result<(), Failure> {
    let store = env.store()?;
    let cloud = env.cloud()?;
    let mut r = crate::gc::gc(cloud.as_ref(), &store)?;
    // Drills past their expiry go too, whole.
    for (id, left) in failover::gc_drills(env, cloud.as_ref(), &store)? {
        match left.is_empty() {
            true => r.deleted.push(("drill".into(), id)),
            false => r.failed.push(("drill".into(), id, left.join("; "))),
        }
    }
    if a.json {
        print_json(&r)?;
    } else {
        for id in &r.interrupted_runs {
            println!("run {id}: its coordinator died; marked interrupted");
        }
        for (kind, name) in &r.deleted {
            println!("deleted {kind} {name}");
        }
        for (kind, name, e) in &r.failed {
            println!("could not delete {kind} {name}: {e}");
        }
        if r.deleted.is_empty() && r.failed.is_empty() && r.interrupted_runs.is_empty() {
            println!("nothing to clean up");
        }
    }
    if r.failed.is_empty() {
        Ok(())
    } else {
        Err(anyhow::anyhow!("{} resources could not be deleted (gc retries them next time)", r.failed.len()).into())
    }
}

pub(crate) fn print_json<T: serde::Serialize>(v: &T) -> Result<(), Failure> {
    println!("{}", serde_json::to_string(v).map_err(anyhow::Error::from)?);
    Ok(())
}

pub(crate) use diskferry_core::units::human;

pub(crate) fn time(t: i64) -> String {
    chrono::DateTime::from_timestamp(t, 0).map_or_else(|| t.to_string(), |d| d.format("%Y-%m-%d %H:%M:%S").to_string())
}

pub(crate) fn exists_dir(p: &Path) -> Result<(), Failure> {
    if p.is_dir() {
        Ok(())
    } else {
        usage(Err(anyhow::anyhow!("{}: no such folder", p.display())))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
