//! `diskferry daemon`: fires each replica's cron schedule, runs the syncs
//! (one at a time per replica, several replicas at once), and serves
//! Prometheus metrics. A trigger that finds the replica's previous run still
//! going is skipped and recorded (a `skipped` run and the missed-schedule
//! counter); fire times that passed while the daemon was busy or down count
//! as missed too.
//!
//! Several daemons may share one database (PostgreSQL): each fire time is
//! a slot that exactly one of them runs or skips (`runs.slot` is unique per
//! replica), and a run holds its replica's lease (`store/leases.rs`), so a
//! daemon that dies loses its runs to the others once the lease lapses.
//! SIGTERM/SIGINT stop new triggers and cancel the runs in progress: each
//! tears down what it made and gives its lease back at once.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use prometheus::{Encoder, GaugeVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};

use crate::clock::now;
use crate::env::Env;
use crate::execute::{self, Begun, Quiet};
use crate::owner;
use crate::schedule::Schedule;
use crate::store::{status, Location, Run, Store};

/// Shared between the scheduler loop, run threads and the metrics server.
#[derive(Debug, Default)]
struct Shared {
    active: Mutex<BTreeSet<String>>,
    missed: Mutex<BTreeMap<String, u64>>,
}

impl Shared {
    fn miss(&self, replica: &str, n: u64) {
        if let Ok(mut m) = self.missed.lock() {
            *m.entry(replica.to_owned()).or_default() += n;
        }
    }
}

pub fn run(env: &Env, metrics_addr: Option<SocketAddr>, tick: Duration) -> Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGTERM, stop.clone())?;
    signal_hook::flag::register(signal_hook::consts::SIGINT, stop.clone())?;
    // The same signals cancel the runs in progress (with their teardown).
    execute::cancel_on_signals()?;
    let shared = Arc::new(Shared::default());
    if let Some(addr) = metrics_addr {
        let bound = serve_metrics(addr, env.db.clone(), shared.clone())?;
        eprintln!("metrics at http://{bound}/metrics");
    }
    let mut next: BTreeMap<String, (String, DateTime<Utc>)> = BTreeMap::new();
    let mut threads = Vec::new();
    eprintln!("daemon {} started, state in {}", owner::identity(), env.db);
    // One connection for the scheduler loop (runs and scrapes open their own).
    let mut store = env.store()?;
    while !stop.load(Ordering::Acquire) {
        let t = Utc::now();
        for r in store.replicas()? {
            // A failed-over replica's schedule stops; its points stay.
            let Some(text) = r.schedule.as_ref().filter(|_| r.failed_over_at.is_none()) else { continue };
            let Ok(sched) = Schedule::parse(text) else { continue };
            // A new or re-scheduled replica starts from now.
            let due = match next.get(&r.name) {
                Some((s, due)) if s == text => *due,
                _ => match sched.next_after(t) {
                    Some(d) => {
                        next.insert(r.name.clone(), (text.clone(), d));
                        continue;
                    }
                    None => continue,
                },
            };
            if t < due {
                continue;
            }
            // Fire times between `due` and now that we slept through.
            let mut late = 0;
            let mut n = sched.next_after(due);
            while let Some(d) = n.filter(|d| *d <= t) {
                late += 1;
                n = sched.next_after(d);
            }
            if late > 0 {
                shared.miss(&r.name, late);
            }
            if let Some(d) = sched.next_after(t) {
                next.insert(r.name.clone(), (text.clone(), d));
            }
            threads.retain(|h: &std::thread::JoinHandle<()>| !h.is_finished());
            match trigger(env, &mut store, &r.name, due.timestamp(), &shared) {
                Ok(Some(h)) => threads.push(h),
                Ok(None) => {}
                Err(e) => eprintln!("replica {}: {e:#}", r.name),
            }
        }
        std::thread::sleep(tick);
    }
    let n = threads.iter().filter(|h| !h.is_finished()).count();
    eprintln!("daemon stopping: cancelling {n} running run(s); each tears down and gives its lease back");
    for h in threads {
        let _ = h.join();
    }
    Ok(())
}

/// Start a run of `replica` for fire time `slot` on its own thread, or
/// record a skipped trigger; nothing if another daemon took the slot.
fn trigger(
    env: &Env,
    store: &mut Store,
    replica: &str,
    slot: i64,
    shared: &Arc<Shared>,
) -> Result<Option<std::thread::JoinHandle<()>>> {
    let already = shared.active.lock().map(|a| a.contains(replica)).unwrap_or(false);
    let begun = match already {
        true => None,
        false => Some(execute::begin(store, replica, "schedule", Some(slot), env.config.run.lease_secs)?),
    };
    let run = match begun {
        Some(Begun::Run(run)) => *run,
        Some(Begun::SlotTaken) => return Ok(None),
        None | Some(Begun::Busy(_)) => {
            let skipped = Run {
                status: status::SKIPPED.into(),
                phase: "done".into(),
                finished_at: Some(now()),
                duration_ms: Some(0),
                error: Some("the previous run was still going".into()),
                slot: Some(slot),
                ..execute::new_run(replica, "schedule")
            };
            // Another daemon may have recorded this slot's skip already.
            if store.insert_run(&skipped)? {
                shared.miss(replica, 1);
                eprintln!("replica {replica}: trigger skipped, the previous run is still going");
            }
            return Ok(None);
        }
    };
    if let Ok(mut a) = shared.active.lock() {
        a.insert(replica.to_owned());
    }
    let (env, shared, name) = (env.clone(), shared.clone(), replica.to_owned());
    let h = std::thread::Builder::new().name(format!("run-{name}")).spawn(move || {
        let r = (|| -> Result<Run> {
            let store = env.store()?;
            let replica = store.replica(&name)?;
            let cloud = env.cloud()?;
            execute::execute(cloud.as_ref(), &store, &replica, &run, &env.config, &mut Quiet)
        })();
        match r {
            Ok(done) => eprintln!("replica {name}: run {} {}", done.id, done.status),
            Err(e) => eprintln!("replica {name}: run {} could not be carried out: {e:#}", run.id),
        }
        if let Ok(mut a) = shared.active.lock() {
            a.remove(&name);
        }
    })?;
    Ok(Some(h))
}

/// The metrics document, built from the store at scrape time.
fn render(db: &Location, shared: &Shared) -> Result<String> {
    let store = Store::connect(db)?;
    let reg = Registry::new();
    let rpo = GaugeVec::new(
        Opts::new("diskferry_replica_rpo_seconds", "Age of the replica's newest recovery point"),
        &["replica"],
    )?;
    let runs = IntCounterVec::new(
        Opts::new("diskferry_runs_total", "Finished runs by outcome (succeeded, failed, interrupted, skipped)"),
        &["replica", "outcome"],
    )?;
    let missed = IntCounterVec::new(
        Opts::new("diskferry_schedule_missed_total", "Scheduled triggers that did not start a run"),
        &["replica"],
    )?;
    let active = IntGauge::new("diskferry_runs_active", "Runs in progress in this daemon")?;
    let me = owner::identity();
    let info = IntGaugeVec::new(
        Opts::new("diskferry_daemon_info", "1, labelled with this daemon's identity (HOST:PID) and its state store"),
        &["daemon", "store"],
    )?;
    let leases = IntGauge::new(
        "diskferry_leases_held",
        "Replica leases this daemon holds now (one per run in progress; several daemons may share a database)",
    )?;
    let by_daemon = IntCounterVec::new(
        Opts::new("diskferry_daemon_runs_total", "Runs by the daemon that ran them (HOST:PID) and outcome"),
        &["daemon", "outcome"],
    )?;
    reg.register(Box::new(info.clone()))?;
    reg.register(Box::new(leases.clone()))?;
    reg.register(Box::new(by_daemon.clone()))?;
    info.with_label_values(&[&me, &db.to_string()]).set(1);
    leases.set(store.leases_held(now())?.iter().filter(|l| l.holder.as_deref() == Some(me.as_str())).count() as i64);
    for (daemon, outcome, n) in store.runs_by_daemon()? {
        by_daemon.with_label_values(&[&daemon, &outcome]).inc_by(n);
    }
    let placed = IntGaugeVec::new(
        Opts::new(
            "diskferry_replica_last_run_placement",
            "1 for where the replica's newest run put its agent: vm (a worker) or here (the coordinator's host)",
        ),
        &["replica", "placement"],
    )?;
    let consistent = IntGaugeVec::new(
        Opts::new(
            "diskferry_replica_last_run_consistency",
            "1 for what the replica's newest run's snapshots hold together: crash, application, filesystem \
             (one VM restore point), stopped (the source deallocated) or per-disk",
        ),
        &["replica", "consistency"],
    )?;
    let target = GaugeVec::new(
        Opts::new(
            "diskferry_replica_rpo_target_seconds",
            "The RPO a scheduled replica should keep: twice its schedule's period (one run may be missed)",
        ),
        &["replica"],
    )?;
    let in_a_row = IntGaugeVec::new(
        Opts::new(
            "diskferry_replica_failed_runs_in_a_row",
            "Runs that failed or were interrupted since the replica's last successful one",
        ),
        &["replica"],
    )?;
    let drills = GaugeVec::new(
        Opts::new("diskferry_drill_expires_timestamp_seconds", "When each failover drill not cleaned yet expires"),
        &["drill", "replica"],
    )?;
    for m in [&target, &drills] {
        reg.register(Box::new(m.clone()))?;
    }
    reg.register(Box::new(in_a_row.clone()))?;
    reg.register(Box::new(placed.clone()))?;
    reg.register(Box::new(consistent.clone()))?;
    reg.register(Box::new(rpo.clone()))?;
    reg.register(Box::new(runs.clone()))?;
    reg.register(Box::new(missed.clone()))?;
    reg.register(Box::new(active.clone()))?;
    let t = now();
    for (replica, finished) in store.newest_points()? {
        rpo.with_label_values(&[&replica]).set((t - finished).max(0) as f64);
    }
    for (replica, placement) in store.last_placements()? {
        placed.with_label_values(&[&replica, &placement]).set(1);
    }
    for (replica, consistency) in store.last_consistencies()? {
        consistent.with_label_values(&[&replica, &consistency]).set(1);
    }
    for (replica, outcome, n) in store.run_counts()? {
        runs.with_label_values(&[&replica, &outcome]).inc_by(n);
    }
    for r in store.replicas()? {
        missed.with_label_values(&[&r.name]).inc_by(0);
        in_a_row.with_label_values(&[&r.name]).set(0);
        // A failed-over replica keeps no RPO any more.
        let sched = r.schedule.as_deref().filter(|_| r.failed_over_at.is_none()).and_then(|s| Schedule::parse(s).ok());
        let next = sched.as_ref().and_then(|s| Some((s, s.next_after(Utc::now())?)));
        if let Some(after) = next.and_then(|(s, n)| Some((s.next_after(n)? - n).num_seconds())) {
            target.with_label_values(&[&r.name]).set((2 * after) as f64);
        }
    }
    for (replica, n) in store.failed_runs_in_a_row()? {
        in_a_row.with_label_values(&[&replica]).set(n as i64);
    }
    for d in store.live_drills()? {
        if let Some(e) = d.expires_at {
            drills.with_label_values(&[&d.id, &d.replica]).set(e as f64);
        }
    }
    if let Ok(m) = shared.missed.lock() {
        for (replica, n) in m.iter() {
            missed.with_label_values(&[replica]).inc_by(*n);
        }
    }
    active.set(shared.active.lock().map_or(0, |a| a.len() as i64));
    let mut out = Vec::new();
    TextEncoder::new().encode(&reg.gather(), &mut out)?;
    Ok(String::from_utf8(out)?)
}

fn serve_metrics(addr: SocketAddr, db: Location, shared: Arc<Shared>) -> Result<SocketAddr> {
    let render = move || render(&db, &shared).map_err(|e| format!("{e:#}"));
    diskferry_http::serve(addr, "metrics", Arc::new(render), diskferry_http::Limits::default())
        .with_context(|| format!("cannot serve metrics on {addr}"))
}
