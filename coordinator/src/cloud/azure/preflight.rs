//! The Azure provider's preflight: read-only ARM and storage requests that
//! find what would fail a run, before a snapshot is taken or a VM made.
//!
//! - the credential: a token, and whom it names (the JWT's claims; never
//!   the token);
//! - permissions: `Microsoft.Authorization/permissions` (Permissions -
//!   List For Resource Group / List For Resource, api-version 2022-04-01)
//!   of the coordinator on the source VMs' groups, the work group, the
//!   subnet and the worker identity, against the actions of
//!   `docs/azure.md`'s roles table;
//! - quota: Compute usages (Usage - List) in each source region, for the
//!   worker size's family and the region's vCPUs; the size is offered
//!   there and takes the disks (Resource SKUs);
//! - network: the subnet (Subnets - Get) has explicit outbound: a NAT
//!   gateway, a route table with a default route (Route Tables - Get), or
//!   private endpoints;
//! - storage: the status container answers; the agent blob exists and its
//!   SHA-256 is the config's;
//! - the sources: each VM is read, its disks fit a page blob (8 TiB), it
//!   is not a confidential VM (whose guest state import needs), and
//!   application consistency has the VM agent it needs. (Ultra and Premium
//!   SSD v2 disks are snapshotted with instant access, always asked for.)

use anyhow::{anyhow, Result};
use serde_json::Value;

use super::names::{self, with_api, NETWORK_API, VM_API};
use super::provider::AzureCloud;
use crate::cloud::checks::{Check, Source};
use crate::cloud::{Cloud, Consistency};

/// Permissions - List For Resource Group / For Resource.
const AUTHZ_API: &str = "2022-04-01";
/// Usage - List (Microsoft.Compute).
const USAGE_API: &str = "2024-07-01";
/// A page blob holds at most 8 TiB (and a 512-byte footer).
const MAX_DISK: u64 = 8 << 40;

/// What the coordinator must be allowed, per scope (docs/azure.md, "Roles").
const WORK_ACTIONS: &[&str] = &[
    "Microsoft.Compute/snapshots/read",
    "Microsoft.Compute/snapshots/write",
    "Microsoft.Compute/snapshots/delete",
    "Microsoft.Compute/snapshots/beginGetAccess/action",
    "Microsoft.Compute/snapshots/endGetAccess/action",
    "Microsoft.Compute/disks/read",
    "Microsoft.Compute/disks/write",
    "Microsoft.Compute/disks/delete",
    "Microsoft.Compute/virtualMachines/read",
    "Microsoft.Compute/virtualMachines/write",
    "Microsoft.Compute/virtualMachines/delete",
    "Microsoft.Network/networkInterfaces/read",
    "Microsoft.Network/networkInterfaces/write",
    "Microsoft.Network/networkInterfaces/delete",
    "Microsoft.Compute/restorePointCollections/read",
    "Microsoft.Compute/restorePointCollections/write",
    "Microsoft.Compute/restorePointCollections/delete",
    "Microsoft.Compute/restorePointCollections/restorePoints/read",
    "Microsoft.Compute/restorePointCollections/restorePoints/write",
    "Microsoft.Compute/restorePointCollections/restorePoints/delete",
    "Microsoft.Compute/restorePointCollections/restorePoints/diskRestorePoints/read",
    "Microsoft.Compute/restorePointCollections/restorePoints/diskRestorePoints/beginGetAccess/action",
    "Microsoft.Compute/restorePointCollections/restorePoints/diskRestorePoints/endGetAccess/action",
];
const SOURCE_ACTIONS: &[&str] = &["Microsoft.Compute/virtualMachines/read", "Microsoft.Compute/disks/read"];
const STOP_ACTIONS: &[&str] =
    &["Microsoft.Compute/virtualMachines/deallocate/action", "Microsoft.Compute/virtualMachines/start/action"];
/// What reading a disk, snapshot or image source needs in its group.
const DISK_SOURCE_ACTIONS: &[&str] = &["Microsoft.Compute/disks/read"];
const SNAPSHOT_SOURCE_ACTIONS: &[&str] = &["Microsoft.Compute/snapshots/read"];
const IMAGE_SOURCE_ACTIONS: &[&str] =
    &["Microsoft.Compute/galleries/images/read", "Microsoft.Compute/galleries/images/versions/read"];
const SUBNET_ACTIONS: &[&str] = &["Microsoft.Network/virtualNetworks/subnets/join/action"];
const IDENTITY_ACTIONS: &[&str] = &["Microsoft.ManagedIdentity/userAssignedIdentities/assign/action"];

/// Does an Azure action pattern (`*`, `Microsoft.Compute/*`, `*/read`;
/// case-insensitive) cover `action`?
pub fn covers(pattern: &str, action: &str) -> bool {
    let (p, a) = (pattern.to_ascii_lowercase(), action.to_ascii_lowercase());
    let parts: Vec<&str> = p.split('*').collect();
    if parts.len() == 1 {
        return p == a;
    }
    let mut rest = a.as_str();
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            match rest.strip_prefix(part) {
                Some(r) => rest = r,
                None => return false,
            }
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            match rest.find(part) {
                Some(at) => rest = &rest[at + part.len()..],
                None => return false,
            }
        }
    }
    true
}

/// The actions of `wanted` that a Permissions list does not allow: allowed
/// is named by some entry's `actions` and not by that entry's `notActions`.
pub fn missing<'a>(permissions: &Value, wanted: &[&'a str]) -> Vec<&'a str> {
    let entries = permissions["value"].as_array().cloned().unwrap_or_default();
    let names = |e: &Value, k: &str| -> Vec<String> {
        e[k].as_array().into_iter().flatten().filter_map(|v| v.as_str().map(str::to_owned)).collect()
    };
    wanted
        .iter()
        .copied()
        .filter(|w| {
            !entries.iter().any(|e| {
                names(e, "actions").iter().any(|p| covers(p, w)) && !names(e, "notActions").iter().any(|p| covers(p, w))
            })
        })
        .collect()
}

/// The claims of a JWT that name whom it was issued to (never the token).
fn identity(token: &str) -> String {
    let claims = token.split('.').nth(1).and_then(base64_url).and_then(|b| serde_json::from_slice::<Value>(&b).ok());
    let Some(c) = claims else { return "a token that is not a JWT (whom it names is unknown)".into() };
    let mut who = Vec::new();
    for k in ["upn", "unique_name", "appid", "oid", "tid"] {
        if let Some(v) = c[k].as_str() {
            who.push(format!("{k} {v}"));
        }
    }
    if who.is_empty() {
        "a token without identity claims".into()
    } else {
        who.join(", ")
    }
}

fn base64_url(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' | b'+' => 62,
            b'_' | b'/' => 63,
            b'=' => break,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

impl AzureCloud {
    pub(super) fn checks(&self, sources: &[Source]) -> Vec<Check> {
        let mut out = Vec::new();
        // The credential: a token, and ARM takes it.
        match self.arm.token() {
            Ok(t) => out.push(Check::ok("credential", format!("a token for {}", identity(&t)))),
            Err(e) => {
                out.push(Check::problem(
                    "credential",
                    format!("no ARM token: {e:#}"),
                    "fix [azure] credential and its environment (docs/azure.md, Configuration)",
                ));
                return out;
            }
        }
        let work = format!("/subscriptions/{}/resourceGroups/{}", self.s.subscription, self.s.resource_group);
        let mut scopes: Vec<(String, String, Vec<&str>)> = vec![
            ("work group".into(), work, WORK_ACTIONS.to_vec()),
            ("worker subnet".into(), self.s.subnet_id.clone(), SUBNET_ACTIONS.to_vec()),
            ("worker identity".into(), self.s.identity_id.clone(), IDENTITY_ACTIONS.to_vec()),
        ];
        for s in sources {
            let other = crate::cloud::SourceRef::parse(&s.vm).ok().filter(|r| r.kind != crate::cloud::SourceKind::Vm);
            if let Some(src) = other {
                let parts: Vec<&str> = src.id.trim_matches('/').split('/').collect();
                let group = match parts.as_slice() {
                    ["subscriptions", sub, _, rg, ..] => format!("/subscriptions/{sub}/resourceGroups/{rg}"),
                    [rg, _] => format!("/subscriptions/{}/resourceGroups/{rg}", self.s.subscription),
                    _ => continue,
                };
                let wanted = match src.kind {
                    crate::cloud::SourceKind::Disk => DISK_SOURCE_ACTIONS,
                    crate::cloud::SourceKind::Snapshot => SNAPSHOT_SOURCE_ACTIONS,
                    _ => IMAGE_SOURCE_ACTIONS,
                };
                scopes.push((format!("source group of {}", s.replica), group, wanted.to_vec()));
                continue;
            }
            if let Ok((scope, _)) = names::parse_vm(&s.vm, &self.s.subscription) {
                let group = format!("/subscriptions/{}/resourceGroups/{}", scope.subscription, scope.resource_group);
                let mut wanted = SOURCE_ACTIONS.to_vec();
                if s.stop_source {
                    wanted.extend_from_slice(STOP_ACTIONS);
                }
                scopes.push((format!("source group of {}", s.replica), group, wanted));
            }
        }
        for (what, scope, wanted) in scopes {
            out.push(self.permissions(&what, &scope, &wanted));
            if out.last().is_some_and(|c| c.detail.contains("401")) {
                return out;
            }
        }
        out.push(self.status_container());
        out.push(self.agent_blob());
        out.push(self.subnet());
        let mut regions = std::collections::BTreeMap::new();
        for s in sources {
            let name = format!("source of {}", s.replica);
            let vm = match crate::cloud::SourceRef::parse(&s.vm).and_then(|src| self.read_source(&src, None)) {
                Ok(vm) => vm,
                Err(e) => {
                    out.push(Check::problem(name, format!("{e:#}"), "name the VM as RESOURCE_GROUP/NAME or its id"));
                    continue;
                }
            };
            let too_big: Vec<String> = vm
                .disks
                .iter()
                .filter(|d| d.size > MAX_DISK)
                .map(|d| format!("{} ({} bytes)", d.name, d.size))
                .collect();
            if let Some(t) = vm.security_type.as_deref().filter(|t| t.starts_with("ConfidentialVM")) {
                out.push(Check::problem(
                    name.clone(),
                    format!(
                        "{} is a confidential VM ({t}): its OS disk needs its VM guest state (ImportSecure), which \
                         diskferry does not copy, so it could be replicated but never imported or failed over",
                        vm.name
                    ),
                    "replicate its data disks through a replica of another VM, or use Azure Site Recovery for it",
                ));
            } else if !too_big.is_empty() {
                out.push(Check::problem(
                    name.clone(),
                    format!("{} larger than a page blob holds (8 TiB): {}", vm.name, too_big.join(", ")),
                    "replicate only disks of at most 8 TiB",
                ));
            } else {
                out.push(Check::ok(name.clone(), format!("{}: {} disks in {}", vm.name, vm.disks.len(), vm.location)));
            }
            if s.consistency == Consistency::Application {
                out.push(self.vm_agent(&s.replica, &vm.id));
            }
            let n = regions.entry(vm.location.clone()).or_insert(0usize);
            *n = (*n).max(vm.disks.len());
        }
        for (region, disks) in regions {
            out.push(self.quota(&region, disks));
        }
        out
    }

    fn permissions(&self, what: &str, scope: &str, wanted: &[&str]) -> Check {
        let name = format!("permissions: {what}");
        let path = with_api(
            &format!("{}/providers/Microsoft.Authorization/permissions", scope.trim_end_matches('/')),
            AUTHZ_API,
        );
        match self.arm.get(&path) {
            Ok(Some(p)) => match missing(&p, wanted) {
                m if m.is_empty() => Check::ok(name, format!("{} actions allowed on {scope}", wanted.len())),
                m => Check::problem(
                    name,
                    format!("not allowed on {scope}: {}", m.join(", ")),
                    "assign the coordinator the roles of docs/azure.md's roles table on that scope",
                ),
            },
            Ok(None) => Check::problem(
                name,
                format!("{scope} does not exist"),
                "create it, or fix its id in the [azure] section",
            ),
            Err(e) if format!("{e:#}").contains("401") => Check::problem(
                "credential",
                format!("ARM refused the token (401): {e:#}"),
                "fix [azure] credential: the identity must belong to the subscription's tenant",
            ),
            Err(e) => Check::unknown(name, format!("{e:#}")),
        }
    }

    fn status_container(&self) -> Check {
        let name = "status container";
        let base = self.s.status_container.trim_end_matches('/');
        match crate::destination::probe(base, None) {
            Ok(()) => Check::ok(name, format!("{base} answers")),
            Err(_) if self.s.create_status_container => {
                Check::ok(name, format!("{base} does not answer yet; runs create it (create_status_container)"))
            }
            Err(e) => Check::problem(
                name,
                format!("{base}: {e:#}"),
                "create the container, or give the coordinator Storage Blob Data Reader on it",
            ),
        }
    }

    fn agent_blob(&self) -> Check {
        use sha2::{Digest, Sha256};
        let name = "agent blob";
        let url = self.s.agent_url.as_str();
        let got = (|| -> Result<Option<bytes::Bytes>> {
            let addr = diskferry_blob::address::BlobAddress::parse(url)?;
            let blob = addr.blob.clone();
            let store = diskferry_blob::connect_source(addr, None, Some(std::time::Duration::from_secs(10)))?;
            use diskferry_blob::PageStore;
            self.rt.block_on(store.get(&blob)).map_err(|e| anyhow!("{e}"))
        })();
        match got {
            Ok(Some(b)) => {
                let sum = hex(&Sha256::digest(&b));
                if sum.eq_ignore_ascii_case(&self.s.agent_sha256) {
                    Check::ok(name, format!("{url}: {} bytes, SHA-256 as configured", b.len()))
                } else {
                    Check::problem(
                        name,
                        format!("{url} has SHA-256 {sum}, the config says {}", self.s.agent_sha256),
                        "upload this diskferry's agent there, or set agent_sha256 to `sha256sum` of it",
                    )
                }
            }
            Ok(None) => Check::problem(name, format!("{url} does not exist"), "upload diskferry-agent there"),
            Err(e) => Check::problem(
                name,
                format!("{url}: {e:#}"),
                "check agent_url, and give the coordinator (and the worker identity) read access to it",
            ),
        }
    }

    fn subnet(&self) -> Check {
        let name = "worker subnet outbound";
        let subnet = match self.arm.get(&with_api(&self.s.subnet_id, NETWORK_API)) {
            Ok(Some(s)) => s,
            Ok(None) => {
                return Check::problem(name, format!("{} does not exist", self.s.subnet_id), "fix [azure] subnet_id")
            }
            Err(e) => return Check::unknown(name, format!("{e:#}")),
        };
        let p = &subnet["properties"];
        if let Some(nat) = p["natGateway"]["id"].as_str() {
            return Check::ok(name, format!("NAT gateway {}", nat.rsplit('/').next().unwrap_or(nat)));
        }
        if let Some(rt) = p["routeTable"]["id"].as_str() {
            match self.arm.get(&with_api(rt, NETWORK_API)) {
                Ok(Some(t)) => {
                    let default = t["properties"]["routes"].as_array().into_iter().flatten().find(|r| {
                        r["properties"]["addressPrefix"] == "0.0.0.0/0" && r["properties"]["nextHopType"] != "None"
                    });
                    if let Some(r) = default {
                        let hop = r["properties"]["nextHopType"].as_str().unwrap_or("?");
                        return Check::ok(name, format!("route table {}: 0.0.0.0/0 to {hop}", t["name"]));
                    }
                }
                Ok(None) => {}
                Err(e) => return Check::unknown(name, format!("route table {rt}: {e:#}")),
            }
        }
        let endpoints = p["privateEndpoints"].as_array().map_or(0, Vec::len);
        if endpoints > 0 {
            return Check::ok(name, format!("{endpoints} private endpoints in the subnet (storage through them)"));
        }
        Check::problem(
            name,
            format!(
                "{} has no NAT gateway, no default route and no private endpoint: the worker cannot reach storage{}",
                self.s.subnet_id.rsplit('/').next().unwrap_or_default(),
                if p["defaultOutboundAccess"] == false { " (default outbound access is off)" } else { "" }
            ),
            "attach a NAT gateway to the subnet, or a route table with 0.0.0.0/0 to a firewall, or private \
             endpoints for the storage accounts (docs/azure.md, Networking)",
        )
    }

    fn vm_agent(&self, replica: &str, vm_id: &str) -> Check {
        let name = format!("application consistency of {replica}");
        match self.arm.get(&with_api(&format!("{vm_id}/instanceView"), VM_API)) {
            Ok(Some(v)) if v["vmAgent"]["vmAgentVersion"].as_str().is_some_and(|s| !s.is_empty()) => {
                Check::ok(name, format!("VM agent {}", v["vmAgent"]["vmAgentVersion"].as_str().unwrap_or("")))
            }
            Ok(_) => Check::problem(
                name,
                "the VM reports no VM agent: an application-consistent restore point needs it (runs fall back to \
                 crash-consistent)"
                    .to_owned(),
                "install the Azure VM agent in the VM, or use --consistency crash",
            ),
            Err(e) => Check::unknown(name, format!("{e:#}")),
        }
    }

    fn quota(&self, region: &str, disks: usize) -> Check {
        let name = format!("quota in {region}");
        let size = match self.worker_size(region, disks) {
            Ok(s) => s,
            Err(e) => return Check::problem(name, format!("{e:#}"), "add a size offered there to [azure] vm_sizes"),
        };
        let path = with_api(
            &format!("/subscriptions/{}/providers/Microsoft.Compute/locations/{region}/usages", self.s.subscription),
            USAGE_API,
        );
        let usages = match self.list_all(&path) {
            Ok(u) => u,
            Err(e) => return Check::unknown(name, format!("{e:#}")),
        };
        let vcpus = size.vcpus.unwrap_or(0);
        let left = |n: &str| {
            usages.iter().find(|u| u["name"]["value"].as_str().is_some_and(|v| v.eq_ignore_ascii_case(n))).map(|u| {
                (
                    u["limit"].as_i64().unwrap_or(0) - u["currentValue"].as_i64().unwrap_or(0),
                    u["limit"].as_i64().unwrap_or(0),
                )
            })
        };
        let mut short = Vec::new();
        for q in [size.family.clone(), Some("cores".to_owned())].into_iter().flatten() {
            match left(&q) {
                Some((free, limit)) if free < vcpus as i64 => {
                    short.push(format!("{q}: {free} of {limit} vCPUs free, {} needs {vcpus}", size.name))
                }
                Some(_) => {}
                None => return Check::unknown(name, format!("Compute usages list no {q}")),
            }
        }
        // A run makes one snapshot and one temporary disk a source disk.
        // These counters are what the service lists (not a documented
        // contract): one that is not listed is not checked, and said.
        let mut unlisted = Vec::new();
        for q in [disk_counter(&self.s.temp_disk_sku), "StandardSnapshotCount"] {
            match left(q) {
                Some((free, limit)) if free < disks as i64 => {
                    short.push(format!("{q}: {free} of {limit} free, a run makes {disks}"))
                }
                Some(_) => {}
                None => unlisted.push(q),
            }
        }
        let unlisted = if unlisted.is_empty() {
            String::new()
        } else {
            format!(" ({} not listed, not checked)", unlisted.join(", "))
        };
        match short.is_empty() {
            true => Check::ok(name, format!("{} ({vcpus} vCPUs) and {disks} disks fit the quota{unlisted}", size.name)),
            false => Check::problem(
                name,
                short.join("; "),
                "request more quota for that family (vCPUs) or those disks in the region, or a smaller size first in \
                 [azure] vm_sizes",
            ),
        }
    }
}

/// The Compute usage that counts managed disks of `sku`, as the service
/// names it.
fn disk_counter(sku: &str) -> &'static str {
    match sku {
        "Premium_LRS" | "Premium_ZRS" => "PremiumDiskCount",
        "StandardSSD_LRS" | "StandardSSD_ZRS" => "StandardSSDDiskCount",
        "UltraSSD_LRS" => "UltraSSDDiskCount",
        _ => "StandardDiskCount",
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn action_patterns_and_not_actions() {
        assert!(covers("*", "Microsoft.Compute/disks/read"));
        assert!(covers("Microsoft.Compute/*", "microsoft.compute/disks/read"));
        assert!(covers("*/read", "Microsoft.Compute/disks/read"));
        assert!(!covers("*/read", "Microsoft.Compute/disks/write"));
        assert!(covers("Microsoft.Compute/*/read", "Microsoft.Compute/disks/read"));
        assert!(!covers("Microsoft.Network/*", "Microsoft.Compute/disks/read"));
        let p = json!({"value": [{"actions": ["Microsoft.Compute/*"], "notActions": ["Microsoft.Compute/disks/delete"]},
                                 {"actions": ["*/read"], "notActions": []}]});
        let wanted = ["Microsoft.Compute/disks/read", "Microsoft.Compute/disks/delete", "Microsoft.Network/x/write"];
        assert_eq!(missing(&p, &wanted), ["Microsoft.Compute/disks/delete", "Microsoft.Network/x/write"]);
    }

    #[test]
    fn a_tokens_identity_is_read_from_its_claims() {
        // {"oid":"o-1","appid":"a-2"}
        let t = "eyJhbGciOiJub25lIn0.eyJvaWQiOiJvLTEiLCJhcHBpZCI6ImEtMiJ9.sig";
        assert_eq!(identity(t), "appid a-2, oid o-1");
        assert!(identity("opaque").contains("not a JWT"));
    }
}
