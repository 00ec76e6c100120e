//! `diskferry --config FILE`: the coordinator's settings in TOML. Unknown
//! keys are refused, so a typo is an error instead of a silent default.
//!
//! ```toml
//! state_dir = "/var/lib/diskferry"     # state.db, snapshots, worker folders
//! state = "postgres://diskferry@db.internal/diskferry"  # shared state (default: SQLite in state_dir)
//! agent = "/usr/bin/diskferry-agent"   # default: beside diskferry, else PATH
//! provider = "local"                   # or "azure", with an [azure] section
//!
//! [local]
//! loop = false                         # temp disks as loop devices (root)
//!
//! [run]
//! deadline_secs = 21600                # a run longer than this is failed and torn down
//! status_interval_ms = 2000            # how often the worker reports
//! read_limit_mib_s = 200               # read each source disk at most this fast
//! placement = "vm"                     # where the agent runs: vm | here | auto (see RunConfig)
//! here_max_mib = 4096                  # auto: a diff up to this is synced here, larger boots a VM
//! lease_secs = 60                      # a dead coordinator's runs are taken over this long after it stopped
//!
//! [storage]
//! api_version = "2025-11-05"           # x-ms-version for page blob destinations
//! retry_for_secs = 120
//! concurrency = 16
//! create_container = false
//! ```

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub state_dir: Option<PathBuf>,
    /// Shared state in PostgreSQL, for several coordinators (`--state-url`,
    /// `DISKFERRY_STATE_URL`); SQLite in `state_dir` when absent.
    pub state: Option<String>,
    pub agent: Option<PathBuf>,
    pub provider: Option<String>,
    #[serde(default)]
    pub local: LocalConfig,
    #[serde(default)]
    pub run: RunConfig,
    #[serde(default)]
    pub storage: StorageConfig,
    /// Required when `provider = "azure"` (see `cloud::azure::settings`).
    pub azure: Option<crate::cloud::azure::settings::AzureSettings>,
}

#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalConfig {
    #[serde(default, rename = "loop")]
    pub use_loop: bool,
}

#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    #[serde(default = "default_deadline")]
    pub deadline_secs: u64,
    /// How often the worker reports its status.
    #[serde(default = "default_status_interval")]
    pub status_interval_ms: u64,
    /// Read each source disk at most this many MiB a second (the job
    /// spec's `read_limit`): a sync of a live disk leaves its owner the rest.
    #[serde(default)]
    pub read_limit_mib_s: Option<u64>,
    /// Where a run's agent runs.
    #[serde(default)]
    pub placement: Placement,
    /// `auto`: a run whose snapshot diff covers at most this many MiB (all
    /// disks together) is synced by an agent on this host reading the
    /// snapshots over HTTPS; a larger diff, or none, boots a worker VM.
    /// Default 4 GiB: at a cross-region 100 MiB/s that is under a minute
    /// of reading, less than a worker VM takes to boot.
    #[serde(default = "default_here_max_mib")]
    pub here_max_mib: u64,
    /// A run holds its replica's lease this long past each renewal (it is
    /// renewed four times as often): a coordinator that dies mid-run
    /// loses its runs to another this long after its last renewal.
    #[serde(default = "default_lease_secs")]
    pub lease_secs: u64,
}

fn default_lease_secs() -> u64 {
    60
}

/// Where a run's agent runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Placement {
    /// Always a worker (a VM on Azure): today's tested path, kept the
    /// default until a worker-less run has met a real subscription.
    #[default]
    Vm,
    /// Always an agent on this host, reading the snapshots over HTTPS (a
    /// provider that cannot falls back to its worker, and says so).
    Here,
    /// Here when the snapshot diff is known and at most `here_max_mib`
    /// (an empty diff boots nothing), else a worker.
    Auto,
}

fn default_here_max_mib() -> u64 {
    4096
}

impl Default for RunConfig {
    fn default() -> Self {
        Self {
            deadline_secs: default_deadline(),
            status_interval_ms: default_status_interval(),
            read_limit_mib_s: None,
            placement: Placement::default(),
            here_max_mib: default_here_max_mib(),
            lease_secs: default_lease_secs(),
        }
    }
}

fn default_status_interval() -> u64 {
    2000
}

fn default_deadline() -> u64 {
    6 * 3600
}

#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    pub api_version: Option<String>,
    #[serde(default = "default_retry")]
    pub retry_for_secs: u64,
    #[serde(default = "default_concurrency")]
    pub concurrency: u16,
    #[serde(default)]
    pub create_container: bool,
    /// Keep the destinations' state (journal, manifests, recovery point
    /// index) in this container of a standard account: for premium page
    /// blob destinations (the agent's `--state-url`; no SAS).
    #[serde(default)]
    pub state_url: Option<String>,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            api_version: None,
            retry_for_secs: default_retry(),
            concurrency: default_concurrency(),
            create_container: false,
            state_url: None,
        }
    }
}

fn default_retry() -> u64 {
    120
}
fn default_concurrency() -> u16 {
    16
}

/// A shared state database's URL: `postgres://` or `postgresql://` only.
pub fn state_location(url: &str) -> Result<crate::store::Location> {
    match crate::store::Location::parse(url) {
        l @ crate::store::Location::Postgres(_) => Ok(l),
        crate::store::Location::Sqlite(_) => bail!(
            "state must be a PostgreSQL URL (postgres://USER@HOST:PORT/DB); the embedded SQLite database is the \
             default and lives in the state folder (--state-dir)"
        ),
    }
}

impl Config {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read config {}", path.display()))?;
        let c: Config =
            toml::from_str(&text).map_err(|e| anyhow::anyhow!("config {}: {}", path.display(), e.message().trim()))?;
        match (c.provider(), &c.azure) {
            ("local", _) => {}
            ("azure", Some(a)) => a.validate().map_err(|e| anyhow::anyhow!("config {}: {e:#}", path.display()))?,
            ("azure", None) => bail!("config {}: provider \"azure\" needs an [azure] section", path.display()),
            (p, _) => bail!("config {}: unknown provider {p:?} (use \"local\" or \"azure\")", path.display()),
        }
        if c.run.deadline_secs == 0 || c.storage.concurrency == 0 {
            bail!("config {}: run.deadline_secs and storage.concurrency must be positive", path.display());
        }
        if !(2..=3600).contains(&c.run.lease_secs) {
            bail!("config {}: run.lease_secs must be between 2 and 3600", path.display());
        }
        Ok(c)
    }

    /// `local` unless the config names another.
    pub fn provider(&self) -> &str {
        self.provider.as_deref().unwrap_or("local")
    }

    /// The state folder: the flag, else the config, else ~/.local/share/diskferry.
    pub fn state_dir(&self, flag: Option<&Path>) -> Result<PathBuf> {
        let dir = match (flag, &self.state_dir) {
            (Some(f), _) => f.to_owned(),
            (None, Some(c)) => c.clone(),
            (None, None) => {
                let base = std::env::var_os("XDG_DATA_HOME")
                    .map(PathBuf::from)
                    .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local").join("share")));
                base.context("no state folder: pass --state-dir or set HOME")?.join("diskferry")
            }
        };
        // The state folder holds the database and (local provider) whole
        // disk copies: a new one is its owner's alone.
        {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .with_context(|| format!("cannot create state folder {}", dir.display()))?;
        }
        std::fs::canonicalize(&dir).with_context(|| format!("state folder {}", dir.display()))
    }

    /// The agent binary: the config, else `DISKFERRY_AGENT`, else beside
    /// this executable, else `diskferry-agent` on PATH.
    pub fn agent(&self) -> PathBuf {
        if let Some(a) = &self.agent {
            return a.clone();
        }
        if let Some(a) = std::env::var_os("DISKFERRY_AGENT") {
            return a.into();
        }
        if let Some(beside) = std::env::current_exe().ok().and_then(|e| e.parent().map(|d| d.join("diskferry-agent"))) {
            if beside.is_file() {
                return beside;
            }
        }
        PathBuf::from("diskferry-agent")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "[run]\ndeadline = 5\n").unwrap();
        let e = Config::load(&p).unwrap_err().to_string();
        assert!(e.contains("deadline"), "{e}");
        std::fs::write(&p, "[local]\nloop = true\n[run]\ndeadline_secs = 5\n").unwrap();
        let c = Config::load(&p).unwrap();
        assert!(c.local.use_loop);
        assert_eq!(c.run.deadline_secs, 5);
        assert_eq!(c.storage.concurrency, 16);
    }
}
