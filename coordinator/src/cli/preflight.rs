//! `diskferry preflight [REPLICA]`: what would fail, found before anything
//! is created (`crate::preflight`). Exit 1 on any problem.

use crate::cli::{print_json, Env, Failure};
use crate::preflight::{self, Check, Verdict};

#[derive(Debug, clap::Args)]
pub struct PreflightArgs {
    /// Check this replica's source and destinations too [default: every replica].
    pub replica: Option<String>,
    /// Print JSON instead of text: {"ok": bool, "checks": [{name, verdict, detail, fix}]}.
    #[arg(long)]
    pub json: bool,
}

pub fn preflight(env: &Env, a: PreflightArgs) -> Result<(), Failure> {
    let store = env.store()?;
    let replicas = match &a.replica {
        Some(name) => vec![store.replica(name)?],
        None => store.replicas()?,
    };
    let cloud = env.cloud()?;
    let checks = preflight::run(cloud.as_ref(), &replicas, env.config.storage.create_container);
    let problems = checks.iter().filter(|c| c.verdict == Verdict::Problem).count();
    if a.json {
        print_json(&serde_json::json!({ "ok": problems == 0, "checks": checks }))?;
    } else {
        print_checks(&checks);
    }
    match problems {
        0 => Ok(()),
        n => Err(anyhow::anyhow!("preflight found {n} problem(s): {}", preflight::summary(&checks)).into()),
    }
}

fn print_checks(checks: &[Check]) {
    for c in checks {
        let v = match c.verdict {
            Verdict::Ok => "ok",
            Verdict::Problem => "PROBLEM",
            Verdict::CouldNotCheck => "could not check",
        };
        println!("{v:>15}  {}: {}", c.name, c.detail);
        if let Some(f) = &c.fix {
            println!("{:>15}  fix: {f}", "");
        }
    }
}
