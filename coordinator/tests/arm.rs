//! The ARM client against the in-process ARM simulator (`common/armsim.rs`):
//! PUT answered 201 with `Azure-AsyncOperation`, DELETE and POST actions
//! answered 202 with `Location`, operations that take several polls, 429
//! with `Retry-After`, ARM error bodies, bearer auth.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::armsim::{self, ArmSim, FailRule, TOKEN};
use diskferry::cloud::azure::arm::{Arm, Limits, StaticToken};
use serde_json::{json, Value};

const SNAP: &str = "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.Compute/snapshots/snap1";
const API: &str = "?api-version=2025-01-02";

struct Sim {
    sim: Arc<ArmSim>,
    _dir: tempfile::TempDir,
}

impl Sim {
    fn start(polls: u32, retry_after: u32, throttle_every: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let disk = dir.path().join("os.img");
        std::fs::write(&disk, vec![7u8; 1 << 20]).unwrap();
        let sim = ArmSim::start(&dir.path().join("sim"), std::path::Path::new("/nonexistent"), vec![]);
        sim.add_vm("rg", "vm1", "westeurope", &disk, &[]);
        sim.with(|s| {
            s.polls = polls;
            s.retry_after = retry_after;
            s.poll_after = retry_after;
            s.throttle_every = throttle_every;
        });
        Self { sim, _dir: dir }
    }

    fn client(&self, token: &str) -> Arm {
        let mut a = Arm::new(&self.sim.base, Box::new(StaticToken(token.into()))).unwrap();
        a.limits = Limits {
            retry_for: Duration::from_secs(20),
            operation_deadline: Duration::from_secs(20),
            default_poll: Duration::from_millis(20),
            max_poll: Duration::from_secs(2),
        };
        a
    }
}

fn snapshot_body() -> Value {
    json!({"location": "westeurope", "tags": {"diskferry-run": "r1"}, "properties": {"incremental": true,
        "creationData": {"createOption": "Copy", "sourceResourceId": armsim::disk_id("rg", "vm1-os")}}})
}

#[test]
fn put_follows_the_async_operation_and_delete_follows_location() {
    let sim = Sim::start(3, 0, 0);
    let arm = sim.client(TOKEN);
    let v = arm.put(&format!("{SNAP}{API}"), &snapshot_body()).unwrap();
    assert_eq!(v["properties"]["provisioningState"], "Succeeded");
    assert_eq!(v["tags"]["diskferry-run"], "r1");
    assert!(arm.counters.polls.load(std::sync::atomic::Ordering::Relaxed) >= 4, "3 InProgress polls, then Succeeded");
    let access = arm
        .post(&format!("{SNAP}/beginGetAccess{API}"), Some(&json!({"access": "Read", "durationInSeconds": 3600})))
        .unwrap();
    assert!(access["accessSAS"].as_str().unwrap().contains("sig="), "{access}");
    arm.delete(&format!("{SNAP}{API}")).unwrap();
    assert_eq!(arm.get(&format!("{SNAP}{API}")).unwrap(), None, "deleted");
    arm.delete(&format!("{SNAP}{API}")).unwrap();
    let log = sim.sim.with(|s| s.log.clone());
    assert!(log.iter().any(|l| l.starts_with("GET /locs/")), "{log:?}");
}

#[test]
fn throttling_is_retried_after_retry_after() {
    let sim = Sim::start(0, 1, 2);
    let arm = sim.client(TOKEN);
    let t = Instant::now();
    let v = arm.put(&format!("{SNAP}{API}"), &snapshot_body()).unwrap();
    assert_eq!(v["properties"]["provisioningState"], "Succeeded");
    let throttled = arm.counters.throttled.load(std::sync::atomic::Ordering::Relaxed);
    assert!(throttled >= 1);
    assert!(t.elapsed() >= Duration::from_secs(throttled), "Retry-After: 1 was not honoured ({:?})", t.elapsed());
}

#[test]
fn failures_are_one_clear_line_without_the_token() {
    let sim = Sim::start(1, 0, 0);
    let arm = sim.client(TOKEN);
    sim.sim.with(|s| {
        s.fail = vec![FailRule {
            method: "PUT",
            path: "/snapshots/".into(),
            code: "InternalDiskManagementError",
            sync_status: None,
        }]
    });
    let e = format!("{:#}", arm.put(&format!("{SNAP}{API}"), &snapshot_body()).unwrap_err());
    assert!(e.contains("InternalDiskManagementError") && e.contains("injected by the simulator"), "{e}");
    assert!(e.starts_with("PUT /subscriptions/s1/") && e.contains("the operation ended Failed"), "{e}");

    let missing = format!("{:#}", arm.post(&format!("{SNAP}/unknownAction{API}"), None).unwrap_err());
    assert!(missing.contains("HTTP 400 InvalidRequest"), "{missing}");

    let wrong = sim.client("not-the-token");
    let e = format!("{:#}", wrong.get(&format!("{SNAP}{API}")).unwrap_err());
    assert!(e.contains("401 AuthenticationFailed"), "{e}");
    for text in [&e, &missing, &format!("{arm:?}")] {
        assert!(!text.contains("SECRET") && !text.contains("not-the-token"), "a token leaked: {text}");
    }
}

#[test]
fn a_nearly_empty_rate_limit_bucket_slows_the_client() {
    let sim = Sim::start(0, 0, 0);
    let arm = sim.client(TOKEN);
    arm.put(&format!("{SNAP}{API}"), &snapshot_body()).unwrap();
    assert_eq!(arm.counters.paced.load(std::sync::atomic::Ordering::Relaxed), 0, "plenty left: no pause");
    sim.sim.with(|s| s.writes_remaining = Some(3));
    let t = Instant::now();
    arm.get(&format!("{SNAP}{API}")).unwrap();
    assert_eq!(arm.counters.paced.load(std::sync::atomic::Ordering::Relaxed), 1);
    assert!(t.elapsed() >= Duration::from_secs(1), "{:?}", t.elapsed());
    // Compute's buckets are named, several in one header: the emptiest counts.
    sim.sim.with(|s| {
        s.writes_remaining = None;
        s.compute_remaining = Some(3);
    });
    arm.get(&format!("{SNAP}{API}")).unwrap();
    assert_eq!(arm.counters.paced.load(std::sync::atomic::Ordering::Relaxed), 2, "Compute's header was not read");
}

#[test]
fn a_vm_whose_inline_nic_names_a_network_version_the_spec_does_not_allow_is_refused() {
    let sim = Sim::start(0, 0, 0);
    let arm = sim.client(TOKEN);
    let vm =
        "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/w1?api-version=2025-04-01";
    let body = |nv: &str| {
        json!({"location": "westeurope", "properties": {"networkProfile": {"networkApiVersion": nv,
            "networkInterfaceConfigurations": []}}})
    };
    // What the provider sent before (the Network RP's own version): ARM's
    // error body, the enum's values named.
    let e = format!("{:#}", arm.put(vm, &body("2025-03-01")).unwrap_err());
    assert!(e.contains("HTTP 400 InvalidParameter") && e.contains("networkApiVersion"), "{e}");
    assert!(e.contains("2020-11-01") && e.contains("2022-11-01"), "{e}");
    // What it sends now passes that check (and fails later, on the empty NIC list).
    let e = format!("{:#}", arm.put(vm, &body(diskferry::cloud::azure::names::INLINE_NIC_API)).unwrap_err());
    assert!(!e.contains("networkApiVersion"), "{e}");
}

#[test]
fn a_grant_access_result_is_read_at_its_location() {
    // Snapshots_GrantAccess is `final-state-via: location`: the SAS is in
    // the Location's final body, not in the Azure-AsyncOperation status.
    let sim = Sim::start(2, 0, 0);
    let arm = sim.client(TOKEN);
    arm.put(&format!("{SNAP}{API}"), &snapshot_body()).unwrap();
    let out = arm
        .post(&format!("{SNAP}/beginGetAccess{API}"), Some(&json!({"access": "Read", "durationInSeconds": 3600})))
        .unwrap();
    let sas = out["accessSAS"].as_str().unwrap_or_default();
    assert!(sas.contains("/sas/") && sas.contains("sig="), "{out}");
}

#[test]
fn an_operation_whose_location_answers_5xx_fails_at_once() {
    // A failed action's Location answers 500 with ARM's error body: that is
    // the operation's end, not a reason to retry for the whole budget.
    let sim = Sim::start(1, 0, 0);
    let mut arm = sim.client(TOKEN);
    arm.limits.retry_for = Duration::from_secs(120);
    let vm = format!("{}/deallocate?api-version=2025-04-01", armsim::vm_id("rg", "vm1"));
    sim.sim.with(|s| {
        s.fail = vec![FailRule {
            method: "POST",
            path: "deallocate".into(),
            code: "VMAgentStatusCommunicationError",
            sync_status: None,
        }]
    });
    let e = format!("{:#}", arm.post(&vm, None).unwrap_err());
    assert!(e.contains("HTTP 500 VMAgentStatusCommunicationError"), "{e}");
    assert_eq!(arm.counters.retries.load(std::sync::atomic::Ordering::Relaxed), 0, "the final 5xx was retried");
}
