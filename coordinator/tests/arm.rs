//! The ARM client against an in-process ARM simulator that follows the
//! documented protocol: PUT answered 201 with `Azure-AsyncOperation`, DELETE
//! and POST actions answered 202 with `Location`, operations that take
//! several polls, 429 with `Retry-After`, ARM error bodies, bearer auth.
//! (Test code: the product never talks to it by default.)
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use diskferry::cloud::azure::arm::{Arm, Limits, StaticToken};
use serde_json::{json, Value};

const TOKEN: &str = "sim-token-SECRET";
const SNAP: &str = "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.Compute/snapshots/snap1";
const API: &str = "?api-version=2025-01-02";

/// What a pending operation ends as.
#[derive(Clone)]
enum Outcome {
    Provisioned(String),
    Deleted(String),
    Output(Value),
    Fail(&'static str, &'static str),
}

#[derive(Default)]
struct State {
    resources: HashMap<String, Value>,
    /// op id -> (polls left, outcome)
    ops: HashMap<u64, (u32, Outcome)>,
    next_op: u64,
    requests: u64,
    /// Answer every n-th request 429 (0 = never).
    throttle_every: u64,
    /// Polls an operation takes.
    polls: u32,
    /// Retry-After on 202/201 replies and on 429s.
    retry_after: u32,
    /// The next PUT's operation fails with this (code, message).
    fail_next_put: Option<(&'static str, &'static str)>,
    log: Vec<String>,
}

struct Sim {
    base: String,
    state: Arc<Mutex<State>>,
}

impl Sim {
    fn start(polls: u32, retry_after: u32, throttle_every: u64) -> Self {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", l.local_addr().unwrap());
        let state = Arc::new(Mutex::new(State { polls, retry_after, throttle_every, ..Default::default() }));
        let (st, b) = (state.clone(), base.clone());
        std::thread::spawn(move || {
            for c in l.incoming().flatten() {
                let (st, b) = (st.clone(), b.clone());
                std::thread::spawn(move || serve(c, &st, &b));
            }
        });
        Self { base, state }
    }

    fn client(&self, token: &str) -> Arm {
        let mut a = Arm::new(&self.base, Box::new(StaticToken(token.into()))).unwrap();
        a.limits = Limits {
            retry_for: Duration::from_secs(20),
            operation_deadline: Duration::from_secs(20),
            default_poll: Duration::from_millis(20),
            max_poll: Duration::from_secs(2),
        };
        a
    }
}

fn serve(c: TcpStream, st: &Mutex<State>, base: &str) {
    let mut r = BufReader::new(&c);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let (method, target) = (parts.next().unwrap_or("").to_owned(), parts.next().unwrap_or("").to_owned());
        let (mut len, mut auth) = (0usize, String::new());
        loop {
            let mut h = String::new();
            r.read_line(&mut h).unwrap();
            if h.trim().is_empty() {
                break;
            }
            let (k, v) = h.split_once(':').unwrap();
            match k.to_ascii_lowercase().as_str() {
                "content-length" => len = v.trim().parse().unwrap(),
                "authorization" => auth = v.trim().to_owned(),
                _ => {}
            }
        }
        let mut body = vec![0u8; len];
        r.read_exact(&mut body).unwrap();
        let (status, headers, reply) = handle(st, base, &method, &target, &auth, &body);
        let text = reply.to_string();
        let mut w = &c;
        let mut head =
            format!("HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n", text.len());
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        if w.write_all(head.as_bytes()).and_then(|_| w.write_all(text.as_bytes())).is_err() {
            return;
        }
    }
}

fn err(code: &str, message: &str) -> Value {
    json!({"error": {"code": code, "message": message}})
}

fn handle(
    st: &Mutex<State>,
    base: &str,
    method: &str,
    target: &str,
    auth: &str,
    body: &[u8],
) -> (u16, Vec<(String, String)>, Value) {
    let mut s = st.lock().unwrap();
    s.requests += 1;
    s.log.push(format!("{method} {target}"));
    if auth != format!("Bearer {TOKEN}") {
        return (401, vec![], err("AuthenticationFailed", "The access token is invalid."));
    }
    if s.throttle_every > 0 && s.requests.is_multiple_of(s.throttle_every) {
        let ra = s.retry_after.to_string();
        return (429, vec![("Retry-After".into(), ra)], err("TooManyRequests", "Rate limit exceeded."));
    }
    let path = target.split('?').next().unwrap().to_owned();
    let ra = ("Retry-After".to_owned(), s.retry_after.to_string());
    let new_op = |s: &mut State, outcome: Outcome| {
        s.next_op += 1;
        let id = s.next_op;
        let polls = s.polls;
        s.ops.insert(id, (polls, outcome));
        id
    };
    if let Some(id) = path.strip_prefix("/ops/").and_then(|i| i.parse::<u64>().ok()) {
        // Azure-AsyncOperation status
        let (left, outcome) = s.ops.get(&id).cloned().unwrap();
        if left > 0 {
            s.ops.insert(id, (left - 1, outcome));
            return (200, vec![ra], json!({"status": "InProgress"}));
        }
        return match outcome {
            Outcome::Provisioned(p) => {
                s.resources.get_mut(&p).unwrap()["properties"]["provisioningState"] = "Succeeded".into();
                (200, vec![], json!({"status": "Succeeded"}))
            }
            Outcome::Fail(code, message) => {
                (200, vec![], json!({"status": "Failed", "error": {"code": code, "message": message}}))
            }
            Outcome::Output(v) => (200, vec![], json!({"status": "Succeeded", "properties": {"output": v}})),
            Outcome::Deleted(p) => {
                s.resources.remove(&p);
                (200, vec![], json!({"status": "Succeeded"}))
            }
        };
    }
    if let Some(id) = path.strip_prefix("/locs/").and_then(|i| i.parse::<u64>().ok()) {
        let (left, outcome) = s.ops.get(&id).cloned().unwrap();
        if left > 0 {
            s.ops.insert(id, (left - 1, outcome));
            return (202, vec![ra, ("Location".into(), format!("{base}/locs/{id}"))], Value::Null);
        }
        return match outcome {
            Outcome::Deleted(p) => {
                s.resources.remove(&p);
                (200, vec![], Value::Null)
            }
            Outcome::Output(v) => (200, vec![], v),
            _ => (500, vec![], err("Internal", "unexpected")),
        };
    }
    match method {
        "GET" => match s.resources.get(&path) {
            Some(v) => (200, vec![], v.clone()),
            None => (404, vec![], err("ResourceNotFound", &format!("The Resource '{path}' was not found."))),
        },
        "PUT" => {
            let mut v: Value = serde_json::from_slice(body).unwrap();
            v["id"] = path.clone().into();
            v["properties"]["provisioningState"] = "Creating".into();
            s.resources.insert(path.clone(), v.clone());
            let outcome = match s.fail_next_put.take() {
                Some((c, m)) => Outcome::Fail(c, m),
                None => Outcome::Provisioned(path.clone()),
            };
            let id = new_op(&mut s, outcome);
            (201, vec![ra, ("Azure-AsyncOperation".into(), format!("{base}/ops/{id}?api-version=2025-01-02"))], v)
        }
        "DELETE" => {
            if !s.resources.contains_key(&path) {
                return (204, vec![], Value::Null);
            }
            let id = new_op(&mut s, Outcome::Deleted(path.clone()));
            (202, vec![ra, ("Location".into(), format!("{base}/locs/{id}?monitor=true"))], Value::Null)
        }
        "POST" if path.ends_with("/beginGetAccess") => {
            let sas = json!({"accessSAS": "https://md-x.blob.core.windows.net/abcd/abcd?sv=2018-03-28&sig=SASSECRET"});
            let id = new_op(&mut s, Outcome::Output(sas));
            (202, vec![ra, ("Location".into(), format!("{base}/locs/{id}"))], Value::Null)
        }
        _ => (400, vec![], err("InvalidRequest", "unsupported by the simulator")),
    }
}

fn snapshot_body() -> Value {
    json!({"location": "westeurope", "tags": {"diskferry-run": "r1"}, "properties": {"incremental": true,
        "creationData": {"createOption": "Copy", "sourceResourceId": "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.Compute/disks/os"}}})
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
    assert!(access["accessSAS"].as_str().unwrap().starts_with("https://"));
    arm.delete(&format!("{SNAP}{API}")).unwrap();
    assert_eq!(arm.get(&format!("{SNAP}{API}")).unwrap(), None, "deleted");
    arm.delete(&format!("{SNAP}{API}")).unwrap();
    let log = sim.state.lock().unwrap().log.clone();
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
    sim.state.lock().unwrap().fail_next_put = Some(("InternalDiskManagementError", "An internal error occurred."));
    let e = format!("{:#}", arm.put(&format!("{SNAP}{API}"), &snapshot_body()).unwrap_err());
    assert!(e.contains("InternalDiskManagementError") && e.contains("An internal error occurred."), "{e}");
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
