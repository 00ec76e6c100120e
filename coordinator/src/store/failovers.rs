//! Failovers and drills (`diskferry failover`): each one, and every resource
//! it makes, recorded before the resource is made, so a drill can be
//! cleaned completely and a failover that died half-way leaves a list.

use anyhow::{Context, Result};

use super::db::{args, Row};
use super::{rows, Store};

/// One failover or drill of a replica.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Failover {
    pub id: String,
    pub replica: String,
    /// A drill (`failover --test`): replication goes on; it is cleaned
    /// by `drill clean` or, after `expires_at`, by `gc`.
    pub drill: bool,
    /// Where it went: a folder, or `azure:RESOURCE_GROUP`.
    pub target: String,
    /// What it made, in order: resource ids (Azure) or folders (local).
    pub made: Vec<String>,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub cleaned_at: Option<i64>,
}

const SELECT: &str = "SELECT id, replica, drill, target, made, created_at, expires_at, cleaned_at FROM failovers";

fn row(r: &Row) -> Result<Failover> {
    let made: String = r.get(4)?;
    Ok(Failover {
        id: r.get(0)?,
        replica: r.get(1)?,
        drill: r.get(2)?,
        target: r.get(3)?,
        made: serde_json::from_str(&made).context("failovers.made")?,
        created_at: r.get(5)?,
        expires_at: r.get(6)?,
        cleaned_at: r.get(7)?,
    })
}

impl Store {
    pub fn insert_failover(&self, f: &Failover) -> Result<()> {
        self.c().execute(
            "INSERT INTO failovers (id, replica, drill, target, made, created_at, expires_at, cleaned_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            args![
                &f.id,
                &f.replica,
                f.drill,
                &f.target,
                serde_json::to_string(&f.made)?,
                f.created_at,
                f.expires_at,
                f.cleaned_at
            ],
        )?;
        Ok(())
    }

    /// Note that failover `id` is about to make `what`.
    pub fn failover_makes(&self, id: &str, what: &str) -> Result<()> {
        let mut f = self.failover(id)?.ok_or_else(|| anyhow::anyhow!("no failover {id}"))?;
        if !f.made.iter().any(|m| m == what) {
            f.made.push(what.to_owned());
        }
        self.c().execute("UPDATE failovers SET made = ?2 WHERE id = ?1", args![id, serde_json::to_string(&f.made)?])?;
        Ok(())
    }

    pub fn set_failover_cleaned(&self, id: &str, at: i64) -> Result<()> {
        self.c().execute("UPDATE failovers SET cleaned_at = ?2 WHERE id = ?1", args![id, at])?;
        Ok(())
    }

    pub fn failover(&self, id: &str) -> Result<Option<Failover>> {
        self.c().query_opt(&format!("{SELECT} WHERE id = ?1"), args![id])?.map(|r| row(&r)).transpose()
    }

    /// Drills not cleaned yet, oldest first.
    pub fn live_drills(&self) -> Result<Vec<Failover>> {
        rows(self.c().query(&format!("{SELECT} WHERE drill = 1 AND cleaned_at IS NULL ORDER BY created_at"), &[])?, row)
    }

    /// Mark a replica failed over: its schedule stops, its points stay.
    pub fn set_failed_over(&self, replica: &str, at: i64) -> Result<()> {
        self.c().execute("UPDATE replicas SET failed_over_at = ?2 WHERE name = ?1", args![replica, at])?;
        Ok(())
    }
}
