//! Where the coordinator keeps its state and how it reaches its cloud: the
//! parts every command and the daemon are built from.

use std::path::PathBuf;

use anyhow::Result;

use crate::cloud::azure::AzureCloud;
use crate::cloud::host::HostWorkers;
use crate::cloud::local::LocalCloud;
use crate::cloud::Cloud;
use crate::config::Config;
use crate::store::{Location, Store};

/// Where the coordinator keeps its state, and how it reaches its cloud.
#[derive(Debug, Clone)]
pub struct Env {
    pub config: Config,
    pub state: PathBuf,
    /// The state database: SQLite in `state`, or PostgreSQL.
    pub db: Location,
}

impl Env {
    pub fn new(config: Config, state: PathBuf, db: Location) -> Self {
        Self { config, state, db }
    }

    pub fn store(&self) -> Result<Store> {
        Store::connect(&self.db)
    }

    pub fn cloud(&self) -> Result<Box<dyn Cloud>> {
        match (self.config.provider(), &self.config.azure) {
            ("azure", Some(a)) => {
                let host = HostWorkers::new(self.state.join("runs"), self.config.agent());
                Ok(Box::new(AzureCloud::new(a.clone())?.with_host(host)))
            }
            _ => Ok(Box::new(LocalCloud::new(&self.state, self.config.local.use_loop, self.config.agent())?)),
        }
    }

    pub fn agent(&self) -> PathBuf {
        self.config.agent()
    }
}
