//! `diskferry preflight`: every check that can be made without creating
//! anything, each an ok, a problem (with its fix) or could-not-check, so
//! what would fail minutes into a first run fails here instead. The
//! provider checks its own (`Cloud::preflight`: credentials, permissions,
//! quota, network, the agent); the destinations and the state are checked
//! here, alike for every provider. A replica's first run runs it first.

use std::path::Path;

use crate::cloud::Cloud;
use crate::destination::Destination;
use crate::store::Replica;

pub use crate::cloud::checks::{Check, Source, Verdict};

/// Every check for `replicas` (none: the provider's own only). With
/// `create_container` (`[storage]`), a missing page blob container is
/// made by the run, not a problem.
pub fn run(cloud: &dyn Cloud, replicas: &[Replica], create_container: bool) -> Vec<Check> {
    let sources: Vec<Source> = replicas
        .iter()
        .map(|r| Source {
            replica: r.name.clone(),
            vm: r.vm.clone(),
            consistency: r.consistency,
            stop_source: r.stop_source,
        })
        .collect();
    let mut checks = cloud.preflight(&sources);
    for r in replicas {
        for (i, d) in r.destinations.iter().enumerate() {
            checks.push(destination(&r.name, i, d, create_container));
        }
    }
    checks
}

/// A destination as this coordinator sees it: a folder it may write, a
/// container that answers its credentials, a receiver that listens.
fn destination(replica: &str, i: usize, text: &str, create_container: bool) -> Check {
    let name = format!("destination {} of {replica}", i + 1);
    let d = match Destination::parse(text) {
        Ok(d) => d,
        Err(e) => return Check::problem(name, format!("{e:#}"), "fix the destination: replica delete, then create"),
    };
    match &d {
        Destination::File(dir) => writable(&name, dir),
        Destination::PageBlob { .. } => {
            match d.preflight(replica).map_err(Tcp).and_then(|()| d.probe_container().map_err(Probe)) {
                // No TCP answer at all says it fastest.
                Err(Tcp(e)) => Check::problem(
                    name,
                    format!("{e:#}"),
                    "check the destination's host name and this host's route and firewall to it",
                ),
                Ok(()) => Check::ok(name, format!("{} answers", d.display())),
                Err(Probe(e)) if create_container && format!("{e:#}").contains("ContainerNotFound") => {
                    Check::ok(name, format!("{} does not exist yet; runs create it (create_container)", d.display()))
                }
                // The worker writes with its own identity: that this
                // coordinator's credentials may not read the container says
                // nothing about the worker's.
                Err(Probe(e)) if !format!("{e:#}").contains("ContainerNotFound") && !transport(&e) => Check::unknown(
                    name,
                    format!(
                    "{}: this coordinator's credentials are refused ({e:#}); the worker's identity may still write it",
                    d.display()
                ),
                ),
                Err(Probe(e)) => Check::problem(
                    name,
                    format!("{}: {e:#}", d.display()),
                    "create the container, or give the coordinator's credentials (its environment: \
                 AZURE_STORAGE_CONNECTION_STRING, a SAS, or its managed identity) access to it",
                ),
            }
        }
        Destination::Relay { .. } => match d.preflight(replica) {
            Ok(()) => Check::ok(name, format!("{} listens", d.display())),
            Err(e) => Check::problem(
                name,
                format!("{e:#}"),
                "start `diskferry-agent receive` there, or open its port to this host",
            ),
        },
    }
}

/// Where a page blob destination's check failed.
enum Failed {
    /// No TCP connection to its host.
    Tcp(anyhow::Error),
    /// The container probe (Get Blob Properties).
    Probe(anyhow::Error),
}
use Failed::{Probe, Tcp};

/// Whether the storage error is of the network (no answer at all).
fn transport(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<diskferry_blob::StoreError>()
            .is_some_and(|s| s.last_kind() == diskferry_blob::ErrorKind::Transport)
    })
}

/// A folder this process may create files in (or whose parent it may
/// create it in), checked without creating anything.
fn writable(name: &str, dir: &Path) -> Check {
    let mut at = dir;
    while !at.exists() {
        match at.parent() {
            Some(p) => at = p,
            None => break,
        }
    }
    let c = std::ffi::CString::new(at.as_os_str().as_encoded_bytes()).unwrap_or_default();
    // SAFETY: access(2) reads the NUL-terminated path and nothing else.
    let ok = at.is_dir() && unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) } == 0;
    match ok {
        true => Check::ok(name, format!("{} is writable", dir.display())),
        false => Check::problem(
            name,
            format!(
                "{} cannot be written by this user ({} is the nearest existing folder)",
                dir.display(),
                at.display()
            ),
            "create the folder and give the coordinator's user write access",
        ),
    }
}

/// The problems, each with its fix, in one line (a run's error).
pub fn summary(checks: &[Check]) -> String {
    checks
        .iter()
        .filter(|c| c.verdict == Verdict::Problem)
        .map(|c| format!("{}: {} (fix: {})", c.name, c.detail, c.fix.as_deref().unwrap_or("-")))
        .collect::<Vec<_>>()
        .join("; ")
}
