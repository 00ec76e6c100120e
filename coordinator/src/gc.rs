//! `diskferry gc`: delete what runs left behind. Three passes:
//!
//! 1. runs marked running whose coordinator is dead become `interrupted`;
//! 2. every resource recorded in the store that is not retained is deleted
//!    when its run is over, or when its expiry has passed;
//! 3. whatever the provider can see that diskferry made (files, loop devices,
//!    processes; names and tags on Azure) and that belongs to no live run and
//!    is not a retained snapshot is deleted too: that catches a resource whose
//!    record was lost. A resource of a run the store does not know waits for
//!    its tagged expiry (another coordinator may own it); one tagged retained
//!    is kept, so `gc` on a coordinator that lost its database still keeps
//!    each replica's newest snapshot.
//!
//! Resources of a run whose coordinator is alive are never touched.

use std::collections::BTreeSet;

use anyhow::Result;

use crate::clock::now;
use crate::cloud::{Cloud, ResourceKind};
use crate::owner;
use crate::store::{resource_state, status, Store};

#[derive(Debug, Default, serde::Serialize)]
pub struct GcReport {
    /// Runs found dead and marked interrupted.
    pub interrupted_runs: Vec<String>,
    /// Resources deleted: (kind, name).
    pub deleted: Vec<(String, String)>,
    /// Deletions that failed: (kind, name, error). They are retried next time.
    pub failed: Vec<(String, String, String)>,
}

pub fn gc(cloud: &dyn Cloud, store: &Store) -> Result<GcReport> {
    let mut report = GcReport::default();
    let mut live_runs = BTreeSet::new();
    for run in store.runs_with_status(status::RUNNING)? {
        if owner::run_alive(store, &run)? {
            live_runs.insert(run.id.clone());
        } else {
            let why = format!("the coordinator died during phase {}", run.phase);
            store.finish_run(&run.id, status::INTERRUPTED, now(), None, Some(&why))?;
            report.interrupted_runs.push(run.id);
        }
    }
    let t = now();
    let mut retained = BTreeSet::new();
    // In teardown order (workers, temporary disks, snapshots).
    let mut resources = store.live_resources()?;
    resources.sort_by_key(|r| ResourceKind::parse(&r.kind).map_or(u8::MAX, ResourceKind::teardown_rank));
    for r in resources {
        if r.state == resource_state::RETAINED {
            retained.insert(r.name.clone());
            continue;
        }
        if live_runs.contains(&r.run_id) && r.expires_at > t {
            continue;
        }
        let Some(kind) = ResourceKind::parse(&r.kind) else { continue };
        match cloud.delete(kind, &r.name) {
            Ok(()) => {
                store.set_resource_state(&r.name, resource_state::DELETED, now())?;
                report.deleted.push((r.kind, r.name));
            }
            Err(e) => report.failed.push((r.kind, r.name, format!("{e:#}"))),
        }
    }
    let mut found = cloud.list_created()?;
    found.sort_by_key(|f| f.kind.teardown_rank());
    for f in found {
        if retained.contains(&f.name) || f.retained {
            continue;
        }
        if let Some(run) = &f.run_id {
            if live_runs.contains(run) {
                continue;
            }
        }
        // A run this store does not know (another coordinator's, or this
        // one's before its database was lost) keeps its resources until
        // their tagged expiry.
        let known = match &f.run_id {
            Some(run) => store.run(run).is_ok(),
            None => false,
        };
        if !known && f.expires_at.is_some_and(|e| e > t) {
            continue;
        }
        match cloud.delete(f.kind, &f.name) {
            Ok(()) => {
                if store.resource(&f.name)?.is_some() {
                    store.set_resource_state(&f.name, resource_state::DELETED, now())?;
                }
                report.deleted.push((f.kind.as_str().into(), f.name));
            }
            Err(e) => report.failed.push((f.kind.as_str().into(), f.name, format!("{e:#}"))),
        }
    }
    Ok(report)
}
