//! `diskferry preflight` against the ARM simulator and Azurite: on the
//! healthy setup every check passes and nothing is created; each check,
//! broken alone, is named as the problem with its fix (exit 1); a
//! replica's first run runs it first and creates nothing when it fails.
#![allow(clippy::unwrap_used)]

mod common;

use common::armsim;
use common::azure::{subnet, Fixture};
use serde_json::Value;

/// preflight --json: (exit code, the report).
fn preflight(f: &Fixture, extra_env: &[(&str, &str)]) -> (Option<i32>, Value) {
    let mut cmd = f.coord.cmd();
    cmd.args(["preflight", "--json"]);
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("{e}: {}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    });
    assert!(!String::from_utf8_lossy(&out.stderr).contains("SECRET"), "a secret was printed");
    (out.status.code(), v)
}

/// The checks with verdict `problem`: (name, detail, fix).
fn problems(v: &Value) -> Vec<(String, String, String)> {
    v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["verdict"] == "problem")
        .map(|c| {
            let s = |k: &str| c[k].as_str().unwrap_or_default().to_owned();
            (s("name"), s("detail"), s("fix"))
        })
        .collect()
}

/// Exactly one problem, named `name`, its detail saying `says`, with a fix.
fn only_problem(f: &Fixture, env: &[(&str, &str)], name: &str, says: &str) {
    let (code, v) = preflight(f, env);
    let p = problems(&v);
    assert_eq!(code, Some(1), "{v}");
    assert_eq!(p.len(), 1, "one problem, {name}: {p:#?}");
    assert_eq!(p[0].0, name, "{p:#?}");
    assert!(p[0].1.contains(says), "{name}: {p:#?}");
    assert!(!p[0].2.is_empty(), "{name}: no fix");
    assert_eq!(v["ok"], false);
}

fn resources(f: &Fixture) -> Vec<String> {
    f.sim.with(|s| s.resources.keys().cloned().collect())
}

#[test]
fn each_check_fails_alone_and_preflight_creates_nothing() {
    let f = Fixture::new("preflight");
    f.create("web", &["--consistency", "application"]);
    let before = resources(&f);
    let bodies = f.sim.with(|s| s.bodies.len());
    let (code, v) = preflight(&f, &[]);
    assert_eq!(code, Some(0), "{v:#}");
    assert_eq!(v["ok"], true);
    let names: Vec<&str> = v["checks"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    for want in [
        "credential",
        "permissions: work group",
        "permissions: worker subnet",
        "permissions: worker identity",
        "permissions: source group of web",
        "status container",
        "agent blob",
        "worker subnet outbound",
        "source of web",
        "application consistency of web",
        "quota in westeurope",
        "destination 1 of web",
    ] {
        assert!(names.contains(&want), "no check {want}: {names:?}");
    }
    for c in v["checks"].as_array().unwrap() {
        assert_eq!(c["verdict"], "ok", "{c}");
    }
    assert_eq!(resources(&f), before, "preflight created or deleted something");
    assert_eq!(f.sim.with(|s| s.bodies.len()), bodies, "preflight sent a body (PUT/PATCH/POST)");

    // Each broken alone.
    only_problem(&f, &[("DISKFERRY_ARM_TOKEN", "a-wrong-token")], "credential", "401");
    let work = format!("/subscriptions/{}/resourcegroups/{}", armsim::SUB, common::azure::WORK);
    f.sim.with(|s| s.denied = vec![(work.clone(), "Microsoft.Compute/snapshots/write".into())]);
    only_problem(&f, &[], "permissions: work group", "Microsoft.Compute/snapshots/write");
    let subnet_scope = format!("/subscriptions/{}/resourcegroups/net/providers/microsoft.network", armsim::SUB);
    f.sim.with(|s| s.denied = vec![(subnet_scope, "Microsoft.Network/virtualNetworks/subnets/join/action".into())]);
    only_problem(&f, &[], "permissions: worker subnet", "subnets/join/action");
    f.sim.with(|s| s.denied.clear());
    f.sim.with(|s| s.usage.insert("standardDSv5Family".into(), (98, 100)));
    only_problem(&f, &[], "quota in westeurope", "2 of 100 vCPUs free");
    f.sim.with(|s| {
        s.usage.clear();
        s.usage.insert("PremiumDiskCount".into(), (49_999, 50_000));
    });
    only_problem(&f, &[], "quota in westeurope", "PremiumDiskCount: 1 of 50000 free, a run makes 2");
    f.sim.with(|s| {
        s.usage.clear();
        s.restricted_sizes =
            ["Standard_D4s_v5", "Standard_D8s_v5", "Standard_D16s_v5", "Standard_D32s_v5"].map(String::from).to_vec();
    });
    only_problem(&f, &[], "quota in westeurope", "restricted");
    f.sim.with(|s| s.restricted_sizes.clear());
    let subnet_id = format!(
        "/subscriptions/{}/resourceGroups/net/providers/Microsoft.Network/virtualNetworks/v/subnets/workers",
        armsim::SUB
    );
    f.sim.with(|s| s.resources.insert(subnet_id.to_ascii_lowercase(), subnet(&subnet_id, false)));
    only_problem(&f, &[], "worker subnet outbound", "no NAT gateway");
    // A route table with a default route to a firewall is explicit outbound too.
    let rt =
        format!("/subscriptions/{}/resourceGroups/net/providers/Microsoft.Network/routeTables/egress", armsim::SUB);
    f.sim.with(|s| {
        s.resources.insert(
            rt.to_ascii_lowercase(),
            serde_json::json!({"name": "egress", "id": rt, "type": "Microsoft.Network/routeTables",
                "properties": {"routes": [{"name": "default", "properties": {"addressPrefix": "0.0.0.0/0",
                "nextHopType": "VirtualAppliance", "nextHopIpAddress": "10.0.9.4"}}]}}),
        );
        let sn = s.resources.get_mut(&subnet_id.to_ascii_lowercase()).unwrap();
        sn["properties"]["routeTable"] = serde_json::json!({"id": rt});
    });
    assert_eq!(preflight(&f, &[]).0, Some(0));
    f.sim.with(|s| {
        s.resources.remove(&rt.to_ascii_lowercase());
        s.resources.insert(subnet_id.to_ascii_lowercase(), subnet(&subnet_id, true))
    });
    f.set("agent_sha256", &format!("\"{}\"", "00".repeat(32)));
    only_problem(&f, &[], "agent blob", "the config says 0000");
    let (url, sha) = common::azure::upload_agent("preflight2");
    f.set("agent_sha256", &format!("\"{sha}\""));
    f.set("agent_url", &format!("\"{url}-missing\""));
    only_problem(&f, &[], "agent blob", "does not exist");
    f.set("agent_url", &format!("\"{url}\""));
    f.set("create_status_container", "false");
    only_problem(&f, &[], "status container", "ContainerNotFound");
    f.set("create_status_container", "true");
    f.sim.with(|s| s.no_vm_agent = true);
    only_problem(&f, &[], "application consistency of web", "no VM agent");
    f.sim.with(|s| s.no_vm_agent = false);
    let os = common::armsim::disk_id("prod", "web1-os");
    f.edit(&os, |d| d["properties"]["diskSizeBytes"] = serde_json::json!(9u64 << 40));
    only_problem(&f, &[], "source of web", "8 TiB");
    f.edit(&os, |d| d["properties"]["diskSizeBytes"] = serde_json::json!(40u64 << 20));
    let vm = common::armsim::vm_id("prod", "web1");
    f.edit(&vm, |v| v["properties"]["securityProfile"] = serde_json::json!({"securityType": "ConfidentialVM"}));
    only_problem(&f, &[], "source of web", "confidential VM");
    f.edit(&vm, |v| {
        v["properties"].as_object_mut().unwrap().remove("securityProfile");
    });
    assert_eq!(preflight(&f, &[]).0, Some(0), "healthy again");
    assert_eq!(resources(&f), before, "preflight created or deleted something");

    // The first run checks first: a problem fails it before anything is made.
    f.set("agent_sha256", &format!("\"{}\"", "00".repeat(32)));
    let out = f.cmd(&["run", "web", "--json"]);
    let run: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let err = format!("{}{}", String::from_utf8_lossy(&out.stderr), run);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("preflight") && err.contains("agent blob"), "{err}");
    assert_eq!(resources(&f), before, "the failed first run made something");
    // Fixed, the run goes (its preflight passes).
    f.set("agent_sha256", &format!("\"{sha}\""));
    let done = f.json(&["run", "web", "--json"]);
    assert_eq!(done["run"]["status"], "succeeded", "{done}");
}
