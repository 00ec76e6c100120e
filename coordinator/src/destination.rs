//! Where a replica's disks go. A replica names one place for all of a VM's
//! disks; each disk gets its own object there:
//!
//! - `pageblob:CONTAINER-URL` -> blob `REPLICA/DISK.vhd` in that container
//!   (credentials: a SAS in the URL, or the environment the agent inherits);
//! - `file:FOLDER` -> `FOLDER/REPLICA/DISK.vhd`;
//! - `relay:https://HOST:PORT` -> disk `REPLICA.DISK` of that
//!   `diskferry-agent receive` (it writes `ROOT/REPLICA.DISK.vhd` in its own
//!   region). The worker takes the token from `DISKFERRY_RELAY_TOKEN` and a
//!   pinned certificate from `DISKFERRY_RELAY_FINGERPRINT` in its environment.

use std::net::ToSocketAddrs;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// A container URL, query (SAS) kept apart so it is never printed.
    PageBlob {
        base: String,
        query: Option<String>,
    },
    File(PathBuf),
    /// A relay receiver: `https://HOST:PORT` (or `http://` to loopback).
    Relay {
        base: String,
    },
}

impl Destination {
    pub fn parse(s: &str) -> Result<Self> {
        match s.split_once(':') {
            Some(("pageblob", url)) => {
                let (base, query) = match url.split_once('?') {
                    Some((b, q)) => (b, Some(q.to_owned())),
                    None => (url, None),
                };
                if diskferry_core::job::carries_sas(url) {
                    bail!(
                        "pageblob destination carries a SAS: the coordinator stores destinations and hands them to \
                         workers, so it takes no secrets; give the agent AZURE_STORAGE_CONNECTION_STRING (local) or \
                         a managed identity (azure) instead"
                    );
                }
                let base = base.trim_end_matches('/');
                let rest = base
                    .strip_prefix("https://")
                    .or_else(|| base.strip_prefix("http://"))
                    .ok_or_else(|| anyhow!("pageblob destination must be an http(s) container URL"))?;
                let segments = rest.split('/').count();
                // host/container, or host/account/container (path-style, Azurite)
                if !(2..=3).contains(&segments) || rest.split('/').any(str::is_empty) {
                    bail!(
                        "pageblob destination must name a container (https://ACCOUNT.blob.core.windows.net/CONTAINER)"
                    );
                }
                Ok(Destination::PageBlob { base: base.to_owned(), query })
            }
            Some(("file", dir)) if !dir.is_empty() => {
                let p = PathBuf::from(dir);
                if !p.is_dir() {
                    bail!("file destination {}: no such folder", p.display());
                }
                Ok(Destination::File(std::fs::canonicalize(&p)?))
            }
            Some(("relay", url)) => {
                let base = url.trim_end_matches('/');
                let rest = base.split_once("://").map_or(base, |(_, r)| r);
                if !(base.starts_with("https://") || is_loopback_url(base)) {
                    bail!("relay destination must be https://HOST:PORT (http:// only to a loopback address)");
                }
                if rest.is_empty() || rest.contains(['/', '?', '@', '#']) {
                    bail!(
                        "relay destination must be the receiver's address only (https://HOST:PORT): each disk \
                         becomes REPLICA.DISK there, and the token comes from DISKFERRY_RELAY_TOKEN"
                    );
                }
                Ok(Destination::Relay { base: base.to_owned() })
            }
            _ => bail!("destination must be pageblob:CONTAINER-URL, file:FOLDER or relay:https://HOST:PORT"),
        }
    }

    /// A page blob destination's container URL (no SAS); the folder of a
    /// file destination.
    pub fn container_url(&self) -> String {
        match self {
            Destination::PageBlob { base, .. } => base.clone(),
            Destination::File(dir) => dir.display().to_string(),
            Destination::Relay { base } => base.clone(),
        }
    }

    /// The agent's target for one disk of a replica.
    pub fn disk_target(&self, replica: &str, disk: &str) -> String {
        match self {
            Destination::PageBlob { base, query } => match query {
                Some(q) => format!("pageblob:{base}/{replica}/{disk}.vhd?{q}"),
                None => format!("pageblob:{base}/{replica}/{disk}.vhd"),
            },
            Destination::File(dir) => format!("file:{}", dir.join(replica).join(format!("{disk}.vhd")).display()),
            Destination::Relay { base } => format!("relay:{base}/{replica}.{disk}"),
        }
    }

    /// Prepare the destination for a run and fail fast when it cannot be
    /// reached (before anything is snapshotted).
    pub fn preflight(&self, replica: &str) -> Result<()> {
        match self {
            Destination::File(dir) => {
                let d = dir.join(replica);
                std::fs::create_dir_all(&d).with_context(|| format!("destination folder {}", d.display()))
            }
            Destination::PageBlob { base, .. } | Destination::Relay { base } => {
                let rest = base.split_once("://").map_or(base.as_str(), |(_, r)| r);
                let host = rest.split('/').next().unwrap_or_default();
                let default_port = if base.starts_with("https") { 443 } else { 80 };
                let hostport = if host.contains(':') { host.to_owned() } else { format!("{host}:{default_port}") };
                let addrs: Vec<_> = hostport
                    .to_socket_addrs()
                    .with_context(|| format!("destination host {host} does not resolve"))?
                    .collect();
                for a in &addrs {
                    if std::net::TcpStream::connect_timeout(a, Duration::from_secs(5)).is_ok() {
                        return Ok(());
                    }
                }
                bail!("destination {host} is unreachable (no TCP connection)")
            }
        }
    }

    /// A page blob container: does it answer this coordinator's
    /// credentials? (Get Blob Properties of a blob that need not exist:
    /// a missing container or a refusal is an error, a missing blob is not.)
    pub fn probe_container(&self) -> Result<()> {
        let Destination::PageBlob { base, query } = self else { return Ok(()) };
        probe(base, query.as_deref())
    }

    /// How the destination is shown: never with its query string.
    pub fn display(&self) -> String {
        match self {
            Destination::PageBlob { base, query } => {
                format!("pageblob:{base}{}", if query.is_some() { "?<query hidden>" } else { "" })
            }
            Destination::File(d) => format!("file:{}", d.display()),
            Destination::Relay { base } => format!("relay:{base}"),
        }
    }
}

/// `http://` to a loopback address (a test endpoint on this machine).
pub fn is_loopback_url(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("http://") else { return false };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h).trim_matches(['[', ']']);
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Get Blob Properties of a probe blob in container `base` (query: a SAS):
/// Ok when the container answers, whether or not the blob exists.
pub fn probe(base: &str, query: Option<&str>) -> Result<()> {
    let url = format!(
        "{}/diskferry-preflight-probe{}",
        base.trim_end_matches('/'),
        query.map(|q| format!("?{q}")).unwrap_or_default()
    );
    let addr = diskferry_blob::address::BlobAddress::parse(&url)?;
    let store = diskferry_blob::connect_source(addr, None, Some(Duration::from_secs(3)))?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    use diskferry_blob::PageStore;
    rt.block_on(store.properties("diskferry-preflight-probe")).map(|_| ()).map_err(anyhow::Error::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_disk_targets() {
        let e = Destination::parse("pageblob:http://127.0.0.1:10000/devstoreaccount1/dr?sv=1&sig=SECRET").unwrap_err();
        assert!(e.to_string().contains("carries a SAS") && !e.to_string().contains("SECRET"), "{e}");
        let d = Destination::parse("pageblob:http://127.0.0.1:10000/devstoreaccount1/dr?timeout=30").unwrap();
        assert_eq!(
            d.disk_target("web", "os"),
            "pageblob:http://127.0.0.1:10000/devstoreaccount1/dr/web/os.vhd?timeout=30"
        );
        assert_eq!(d.display(), "pageblob:http://127.0.0.1:10000/devstoreaccount1/dr?<query hidden>");
        let d = Destination::parse("pageblob:https://acct.blob.core.windows.net/dr/").unwrap();
        assert_eq!(d.disk_target("web", "data0"), "pageblob:https://acct.blob.core.windows.net/dr/web/data0.vhd");
        assert!(Destination::parse("pageblob:https://acct.blob.core.windows.net").is_err());
        assert!(Destination::parse("pageblob:ftp://x/c").is_err());
        assert!(Destination::parse("file:/definitely/not/here").is_err());
        assert!(Destination::parse("s3://x").is_err());
        let d = Destination::parse("relay:https://rx.example:7443/").unwrap();
        assert_eq!(d.disk_target("web", "os"), "relay:https://rx.example:7443/web.os");
        for bad in ["relay:http://rx.example:80", "relay:https://rx:1/x", "relay:https://u@rx:1", "relay:rx:1"] {
            assert!(Destination::parse(bad).is_err(), "{bad} accepted");
        }
        assert!(Destination::parse("relay:http://127.0.0.1:7000").is_ok());
    }
}
