//! An in-process ARM simulator (test code; the product never talks to it by
//! default). It follows the documented protocol: PUT answered 201 with
//! `Azure-AsyncOperation`, DELETE and POST actions answered 202 with
//! `Location`, operations that take several polls, 429 with `Retry-After`
//! on a share of requests, ARM error bodies, bearer auth, list pages with
//! `nextLink`.
//!
//! It models what the `azure` provider uses of Compute: VMs, managed disks
//! (copied, from gallery image versions, imported), gallery image versions
//! and incremental snapshots whose bytes are files here, NICs, tags. A
//! worker VM "boots" the way cloud-init would: the sim decodes its
//! `userData`, takes the job from `write_files`, links the disk created at
//! LUN N where Azure's udev rules would (`scsi1/lunN`; `data/by-lun/N` on
//! NVMe sizes, `*_v6`) under a folder it gives the agent as its
//! `/dev/disk/azure`, and starts a real `diskferry-agent run` with the
//! storage credentials in its environment (what the managed identity gives
//! a real worker).

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

mod compute;
mod dataplane;
mod gallery;
mod resources;
mod restore_points;
mod skus;
mod spec;
pub use dataplane::unb64;
pub use spec::{Refusal, Spec};

pub const TOKEN: &str = "sim-token-SECRET";
pub const SUB: &str = "s1";

/// What a pending operation ends as.
#[derive(Clone, Debug)]
enum Outcome {
    /// The resource at this key becomes Succeeded (and a VM boots).
    Provisioned(String),
    /// The resource ends Failed with (code, message).
    Failed(String, String, String),
    Deleted(Vec<String>),
    Output(Value),
    Done,
}

/// A request to fail: the first request whose method and path match fails,
/// its operation ending with `code` (or, for `sync`, answered at once).
#[derive(Clone, Debug)]
pub struct FailRule {
    pub method: &'static str,
    /// A substring of the path (case-insensitive).
    pub path: String,
    pub code: &'static str,
    /// Answer the request itself with this HTTP status instead of failing
    /// its operation later.
    pub sync_status: Option<u16>,
}

#[derive(Default)]
pub struct SimState {
    /// Lower-cased resource id -> resource JSON.
    pub resources: BTreeMap<String, Value>,
    /// Lower-cased disk or snapshot id -> its bytes.
    pub files: HashMap<String, PathBuf>,
    ops: HashMap<u64, (u32, Outcome)>,
    next_op: u64,
    pub requests: u64,
    pub throttled: u64,
    /// Answer every n-th request 429 (0 = never).
    pub throttle_every: u64,
    pub polls: u32,
    /// Retry-After on 429s.
    pub retry_after: u32,
    /// Retry-After on 201/202 replies and polls of running operations.
    pub poll_after: u32,
    pub fail: Vec<FailRule>,
    /// "METHOD path" of every request.
    pub log: Vec<String>,
    /// Bodies refused for not conforming to the SDK's models.
    pub refused: Vec<Refusal>,
    /// Every worker's decoded user data, by VM name.
    pub user_data: BTreeMap<String, String>,
    workers: HashMap<String, Child>,
    /// Page size of list answers (and of page range diffs).
    pub page: usize,
    /// Read access granted: SAS token -> snapshot key.
    pub grants: HashMap<String, String>,
    next_grant: u64,
    /// Page range diffs served.
    pub diffs: u64,
    /// Bytes of snapshot data served by ranged Get Blob (a run placed here).
    pub bytes_served: u64,
    /// Every PUT's body, by path: what the provider asked for.
    pub bodies: Vec<(String, Value)>,
    /// Honour `instantAccessDurationMinutes` (off: a region without
    /// instant access, where such snapshots stay Pending a while).
    pub instant_access: bool,
    /// A VM whose creation fails leaves its NIC behind, with no VM (what a
    /// half-created VM can leave).
    pub orphan_nic: bool,
    /// Sizes the subscription may not use (Resource SKUs restrictions).
    pub restricted_sizes: Vec<String>,
    /// Merged into every new snapshot's properties (what an Azure Policy
    /// that modifies snapshots would do: `dataAccessAuthMode`, ...).
    pub snapshot_defaults: Value,
    /// Snapshots still Pending: key -> GETs until Available.
    pub pending: HashMap<String, u32>,
    /// How many GETs a Premium SSD v2 or Ultra disk's snapshot stays
    /// Pending without instant access.
    pub pending_gets: u32,
    /// A page range diff over more bytes than this times out (HTTP 500
    /// OperationTimedOut), as one over a large fragmented snapshot does.
    pub diff_max_span: Option<u64>,
    /// Sent as `x-ms-ratelimit-remaining-subscription-writes` when set.
    pub writes_remaining: Option<u64>,
    /// Sent on Microsoft.Compute answers as Compute's named buckets, when
    /// set: `x-ms-ratelimit-remaining-resource:
    /// Microsoft.Compute/HighCostGet3Min;N,Microsoft.Compute/HighCostGet30Min;1299`.
    pub compute_remaining: Option<u64>,
    /// The source VMs report no VM agent: application-consistent restore
    /// points fail.
    pub no_vm_agent: bool,
    /// Least seconds between two restore points of one VM: [crash, application].
    pub restore_point_every: [u64; 2],
    /// Restore points taken: (VM key, Unix seconds, crash-consistent).
    pub restore_points_taken: Vec<(String, i64, bool)>,
    /// The guest writes to every disk of its VM between two per-disk
    /// snapshots ([`ArmSim::guest_writes`]).
    pub guest_writes: bool,
    /// The guest's last write (the value at offset 0 of each disk).
    pub guest_counter: u64,
    /// Actions the caller is not allowed: (scope prefix, lowercase; action),
    /// listed as `notActions` by Permissions - List for scopes under it
    /// (every other action is allowed: `actions: ["*"]`).
    pub denied: Vec<(String, String)>,
    /// Compute usages by `name.value`: (currentValue, limit); unlisted
    /// families and `cores` have 0 of 100 vCPUs used.
    pub usage: BTreeMap<String, (i64, i64)>,
}

pub struct ArmSim {
    pub base: String,
    pub state: Arc<Mutex<SimState>>,
    pub dir: PathBuf,
    agent: PathBuf,
    /// Environment of worker agents (storage credentials).
    worker_env: Vec<(String, String)>,
}

impl Drop for ArmSim {
    fn drop(&mut self) {
        if let Ok(mut s) = self.state.lock() {
            for (_, mut c) in s.workers.drain() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

fn key(path: &str) -> String {
    path.split('?').next().unwrap_or(path).trim_end_matches('/').to_ascii_lowercase()
}

/// A query value with `%XX` and `+` decoded.
fn url_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = (b[i] == b'%')
            .then(|| b.get(i + 1..i + 3))
            .flatten()
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b[i], hex) {
            (_, Some(v)) => {
                out.push(v);
                i += 3;
            }
            (b'+', None) => {
                out.push(b' ');
                i += 1;
            }
            (c, None) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The SDK model a request's body must conform to, by method and resource
/// type; POST actions other than beginGetAccess take no body.
fn conforms(method: &str, path: &str, body: &Value) -> Result<(), Refusal> {
    let lower = path.to_ascii_lowercase();
    let kind = ["virtualmachines", "disks", "snapshots", "restorepointcollections", "galleries"]
        .into_iter()
        .find(|t| lower.contains(&format!("/microsoft.compute/{t}/")));
    let point = lower.contains("/restorepoints/");
    let root = match (method, kind) {
        ("PUT", Some("restorepointcollections")) if point => "RestorePoint",
        ("PUT", Some("restorepointcollections")) => "RestorePointCollection",
        ("PUT", Some("galleries")) if lower.contains("/versions/") => "GalleryImageVersion",
        ("PATCH", Some("restorepointcollections")) if !point => "RestorePointCollectionUpdate",
        ("PUT", Some("virtualmachines")) => "VirtualMachine",
        ("PUT", Some("disks")) => "Disk",
        ("PUT", Some("snapshots")) => "Snapshot",
        ("PATCH", Some("virtualmachines")) => "VirtualMachineUpdate",
        ("PATCH", Some("disks")) => "DiskUpdate",
        ("PATCH", Some("snapshots")) => "SnapshotUpdate",
        ("POST", _) if lower.ends_with("/begingetaccess") => "GrantAccessData",
        _ if body.is_null() => return Ok(()),
        _ => {
            return Err(Refusal {
                code: "InvalidRequestContent",
                message: format!("{method} {path} takes no body"),
                target: String::new(),
            })
        }
    };
    Spec::get().check(root, body)
}

fn err(code: &str, message: &str) -> Value {
    json!({"error": {"code": code, "message": message}})
}

pub fn rg_path(rg: &str) -> String {
    format!("/subscriptions/{SUB}/resourceGroups/{rg}")
}

pub fn disk_id(rg: &str, name: &str) -> String {
    format!("{}/providers/Microsoft.Compute/disks/{name}", rg_path(rg))
}

pub fn vm_id(rg: &str, name: &str) -> String {
    format!("{}/providers/Microsoft.Compute/virtualMachines/{name}", rg_path(rg))
}

type Reply = (u16, Vec<(String, String)>, Value);

impl ArmSim {
    /// A simulator whose files live in `dir` and whose workers run `agent`.
    pub fn start(dir: &Path, agent: &Path, worker_env: Vec<(String, String)>) -> Arc<Self> {
        std::fs::create_dir_all(dir).unwrap();
        Spec::get(); // the models requests are checked against, dumped before the first
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", l.local_addr().unwrap());
        let state = Arc::new(Mutex::new(SimState {
            polls: 2,
            page: 2,
            instant_access: true,
            restore_point_every: [3600, 3 * 3600],
            ..Default::default()
        }));
        let sim = Arc::new(Self { base, state, dir: dir.to_owned(), agent: agent.to_owned(), worker_env });
        let s = Arc::downgrade(&sim);
        std::thread::spawn(move || {
            for c in l.incoming().flatten() {
                let Some(sim) = s.upgrade() else { return };
                std::thread::spawn(move || sim.serve(c));
            }
        });
        sim
    }

    pub fn with<T>(&self, f: impl FnOnce(&mut SimState) -> T) -> T {
        f(&mut self.state.lock().unwrap())
    }

    /// A source VM `rg/name` whose OS disk and data disks (LUN, file) are files.
    pub fn add_vm(&self, rg: &str, name: &str, location: &str, os: &Path, data: &[(u32, &Path)]) {
        let mut s = self.state.lock().unwrap();
        let vm = vm_id(rg, name);
        let mut add_disk = |disk: &str, file: &Path| -> String {
            let id = disk_id(rg, disk);
            let size = std::fs::metadata(file).unwrap().len();
            s.resources.insert(
                key(&id),
                json!({"id": id, "name": disk, "type": "Microsoft.Compute/disks", "location": location,
                       "managedBy": vm, "properties": {"diskSizeBytes": size, "diskSizeGB": size >> 30,
                       "provisioningState": "Succeeded", "diskState": "Attached", "uniqueId": format!("u-{disk}")}}),
            );
            s.files.insert(key(&id), file.to_owned());
            id
        };
        let os_id = add_disk(&format!("{name}-os"), os);
        let data: Vec<Value> = data
            .iter()
            .map(|(lun, f)| {
                let id = add_disk(&format!("{name}-data{lun}"), f);
                json!({"lun": lun, "createOption": "Attach", "managedDisk": {"id": id}})
            })
            .collect();
        s.resources.insert(
            key(&vm),
            json!({"id": vm, "name": name, "type": "Microsoft.Compute/virtualMachines", "location": location,
                   "properties": {"provisioningState": "Succeeded", "hardwareProfile": {"vmSize": "Standard_D4s_v5"},
                   "storageProfile": {
                       "osDisk": {"osType": "Linux", "createOption": "FromImage", "managedDisk": {"id": os_id}},
                       "dataDisks": data}}}),
        );
    }

    /// Resources whose id lives in `rg` and whose name starts with `prefix`.
    pub fn names(&self, rg: &str, prefix: &str) -> Vec<String> {
        let rg = rg_path(rg).to_ascii_lowercase();
        self.with(|s| {
            s.resources
                .iter()
                .filter(|(k, v)| k.starts_with(&rg) && v["name"].as_str().is_some_and(|n| n.starts_with(prefix)))
                .map(|(_, v)| format!("{}/{}", v["type"].as_str().unwrap_or("?"), v["name"].as_str().unwrap_or("?")))
                .collect()
        })
    }

    pub fn resource(&self, id: &str) -> Option<Value> {
        self.with(|s| s.resources.get(&key(id)).cloned())
    }

    pub fn running_workers(&self) -> usize {
        self.with(|s| {
            s.workers.values_mut().map(|c| c.try_wait().ok().flatten().is_none()).filter(|&alive| alive).count()
        })
    }

    fn serve(&self, c: TcpStream) {
        let mut r = BufReader::new(&c);
        loop {
            let mut line = String::new();
            if r.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let mut parts = line.split_whitespace();
            let (method, target) = (parts.next().unwrap_or("").to_owned(), parts.next().unwrap_or("").to_owned());
            let (mut len, mut auth, mut prev, mut range) = (0usize, String::new(), String::new(), String::new());
            loop {
                let mut h = String::new();
                if r.read_line(&mut h).unwrap_or(0) == 0 {
                    return;
                }
                if h.trim().is_empty() {
                    break;
                }
                let Some((k, v)) = h.split_once(':') else { continue };
                match k.to_ascii_lowercase().as_str() {
                    "content-length" => len = v.trim().parse().unwrap_or(0),
                    "authorization" => auth = v.trim().to_owned(),
                    "x-ms-previous-snapshot-url" => prev = v.trim().to_owned(),
                    "x-ms-range" => range = v.trim().to_owned(),
                    "range" if range.is_empty() => range = v.trim().to_owned(),
                    _ => {}
                }
            }
            let mut body = vec![0u8; len];
            if r.read_exact(&mut body).is_err() {
                return;
            }
            if target.starts_with("/sas/") && method == "GET" && !target.contains("comp=") {
                let (status, headers, bytes) = self.blob_read(&target, &range);
                let mut head = format!("HTTP/1.1 {status} X\r\nContent-Length: {}\r\n", bytes.len());
                for (k, v) in headers {
                    head.push_str(&format!("{k}: {v}\r\n"));
                }
                head.push_str("\r\n");
                let mut w = &c;
                if w.write_all(head.as_bytes()).and_then(|_| w.write_all(&bytes)).is_err() {
                    return;
                }
                continue;
            }
            let (status, mut headers, reply) = if target.starts_with("/sas/") && method == "HEAD" {
                self.blob_properties(&target)
            } else if target.starts_with("/sas/") && prev.is_empty() {
                self.page_list(&target, &range)
            } else if target.starts_with("/sas/") {
                self.page_diff(&target, &prev, &range)
            } else {
                self.handle(&method, &target, &auth, &body)
            };
            if let Some(n) = self.with(|s| s.writes_remaining) {
                headers.push(("x-ms-ratelimit-remaining-subscription-writes".into(), n.to_string()));
            }
            if let Some(n) = self.with(|s| s.compute_remaining).filter(|_| target.contains("/Microsoft.Compute/")) {
                headers.push((
                    "x-ms-ratelimit-remaining-resource".into(),
                    format!("Microsoft.Compute/HighCostGet3Min;{n},Microsoft.Compute/HighCostGet30Min;1299"),
                ));
            }
            let text = match reply {
                Value::Null => String::new(),
                Value::String(xml) => xml,
                v => v.to_string(),
            };
            // A HEAD's Content-Length is the blob's, and no body follows.
            let head_only = method == "HEAD";
            let mut head = format!("HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n");
            if !head_only {
                head.push_str(&format!("Content-Length: {}\r\n", text.len()));
            }
            for (k, v) in headers {
                head.push_str(&format!("{k}: {v}\r\n"));
            }
            head.push_str("\r\n");
            let mut w = &c;
            let body = if head_only { "" } else { text.as_str() };
            if w.write_all(head.as_bytes()).and_then(|_| w.write_all(body.as_bytes())).is_err() {
                return;
            }
        }
    }

    fn handle(&self, method: &str, target: &str, auth: &str, body: &[u8]) -> Reply {
        let mut s = self.state.lock().unwrap();
        s.requests += 1;
        s.log.push(format!("{method} {target}"));
        if auth != format!("Bearer {TOKEN}") {
            return (401, vec![], err("AuthenticationFailed", "The access token is invalid."));
        }
        if s.throttle_every > 0 && s.requests.is_multiple_of(s.throttle_every) {
            s.throttled += 1;
            let ra = s.retry_after.to_string();
            return (429, vec![("Retry-After".into(), ra)], err("TooManyRequests", "Rate limit exceeded."));
        }
        let path = target.split('?').next().unwrap_or("").to_owned();
        if let Some(id) = path.strip_prefix("/ops/").and_then(|i| i.parse::<u64>().ok()) {
            return self.poll(&mut s, id, true);
        }
        if let Some(id) = path.strip_prefix("/locs/").and_then(|i| i.parse::<u64>().ok()) {
            return self.poll(&mut s, id, false);
        }
        if !target.contains("api-version=") {
            return (400, vec![], err("MissingApiVersionParameter", "The api-version query parameter is required."));
        }
        let fail = s
            .fail
            .iter()
            .position(|f| f.method == method && path.to_ascii_lowercase().contains(&f.path.to_ascii_lowercase()));
        let fail = fail.map(|i| s.fail.remove(i));
        if let Some(FailRule { code, sync_status: Some(st), .. }) = &fail {
            return (*st, vec![], err(code, "injected by the simulator"));
        }
        let body: Value = if body.is_empty() {
            Value::Null
        } else {
            match serde_json::from_slice(body) {
                Ok(v) => v,
                Err(e) => {
                    return (
                        400,
                        vec![],
                        err("InvalidRequestContent", &format!("The request content is not JSON: {e}")),
                    )
                }
            }
        };
        if let Err(r) = conforms(method, &path, &body) {
            let reply = json!({"error": {"code": r.code, "message": r.message, "target": r.target}});
            s.refused.push(r);
            return (400, vec![], reply);
        }
        // Each answer follows the specs' examples (agent/testkit/specs/examples,
        // SOURCES.md): GET VirtualMachine_Get.json, Disk_Get.json,
        // Snapshot_GetIncrementalSnapshot.json, the lists
        // *_ListByResourceGroup.json / NetworkInterfaceList.json and
        // ListAvailableResourceSkusForARegion.json; PUT (put) and DELETE
        // (VirtualMachine_Delete_Force.json, Disk_Delete.json,
        // Snapshot_Delete.json, NetworkInterfaceDelete.json: 202 + Location);
        // POST actions (VirtualMachine_Deallocate_MaximumSet_Gen.json,
        // VirtualMachine_Start_MaximumSet_Gen.json, Snapshot_BeginGetAccess.json,
        // Snapshot_EndGetAccess.json: 202 + Location).
        match method {
            "GET" => self.get(&mut s, &path, target),
            "PUT" => {
                s.bodies.push((path.clone(), body.clone()));
                self.put(&mut s, &path, body, fail)
            }
            "PATCH" => match s.resources.get_mut(&key(&path)) {
                Some(r) => {
                    if let Some(t) = body["tags"].as_object() {
                        r["tags"] = Value::Object(t.clone());
                    }
                    (200, vec![], r.clone())
                }
                None => (404, vec![], err("ResourceNotFound", "not found")),
            },
            "DELETE" => self.delete(&mut s, &path),
            "POST" => {
                let (parent, action) = path.rsplit_once('/').unwrap_or(("", ""));
                if !s.resources.contains_key(&key(parent)) {
                    return (404, vec![], err("ResourceNotFound", "not found"));
                }
                let outcome = match fail {
                    Some(f) => Outcome::Failed(key(parent), f.code.into(), "injected by the simulator".into()),
                    None => match action {
                        "beginGetAccess" => {
                            // Pending and InstantAccess snapshots cannot be
                            // downloaded (SnapshotAccessState).
                            let state = s.resources[&key(parent)]["properties"]["snapshotAccessState"].clone();
                            if state == "Pending" || state == "InstantAccess" {
                                return (
                                    409,
                                    vec![],
                                    err(
                                        "OperationNotAllowed",
                                        &format!("The snapshot is {state}: it cannot be read yet."),
                                    ),
                                );
                            }
                            s.next_grant += 1;
                            let token = format!("g{}", s.next_grant);
                            s.grants.insert(token.clone(), key(parent));
                            // The shape of Snapshot_BeginGetAccess.json's accessSAS:
                            // a container and a blob (`.../xx3cqcx53f0v/abcd?...&sr=b&...&sp=r`).
                            let sas =
                                format!("{}/sas/{token}/abcd?sv=2018-03-28&sr=b&sig=SIMSAS-SECRET&sp=r", self.base);
                            Outcome::Output(json!({ "accessSAS": sas }))
                        }
                        "endGetAccess" => {
                            let k = key(parent);
                            s.grants.retain(|_, v| *v != k);
                            Outcome::Done
                        }
                        "deallocate" | "start" | "powerOff" => {
                            let state = if action == "start" { "running" } else { "deallocated" };
                            s.resources.get_mut(&key(parent)).unwrap()["powerState"] = state.into();
                            Outcome::Done
                        }
                        _ => return (400, vec![], err("InvalidRequest", "unsupported by the simulator")),
                    },
                };
                let grant = matches!(outcome, Outcome::Output(_));
                let id = self.new_op(&mut s, outcome);
                let mut headers =
                    vec![self.ra(&s), ("Location".into(), format!("{}/locs/{id}?monitor=true", self.base))];
                if grant {
                    // Snapshot_BeginGetAccess.json answers 202 with a
                    // Location and `final-state-via: location`; the service
                    // may name an Azure-AsyncOperation too, whose status body
                    // holds no result: only the Location's final GET has it.
                    headers.push((
                        "Azure-AsyncOperation".into(),
                        format!("{}/ops/{id}?api-version=2025-01-02", self.base),
                    ));
                }
                (202, headers, Value::Null)
            }
            _ => (405, vec![], err("MethodNotAllowed", "unsupported")),
        }
    }
}
