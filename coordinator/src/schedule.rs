//! Cron schedules (5 fields, or 6 with seconds first), via `croner`.

use std::str::FromStr;

use anyhow::{anyhow, Result};
use chrono::{DateTime, Utc};

#[derive(Debug, Clone)]
pub struct Schedule {
    cron: croner::Cron,
    text: String,
}

impl Schedule {
    pub fn parse(s: &str) -> Result<Self> {
        let cron = croner::Cron::from_str(s)
            .map_err(|e| anyhow!("schedule {s:?} is not a cron expression ({e}); e.g. \"0 */6 * * *\""))?;
        Ok(Self { cron, text: s.to_owned() })
    }

    /// The first fire time strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron.find_next_occurrence(&t, false).ok()
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn next_fire_times() {
        let t = Utc.with_ymd_and_hms(2026, 11, 22, 10, 7, 30).unwrap();
        let s = Schedule::parse("0 */6 * * *").unwrap();
        assert_eq!(s.next_after(t), Some(Utc.with_ymd_and_hms(2026, 11, 22, 12, 0, 0).unwrap()));
        let s = Schedule::parse("*/2 * * * * *").unwrap();
        assert_eq!(s.next_after(t), Some(Utc.with_ymd_and_hms(2026, 11, 22, 10, 7, 32).unwrap()));
        assert!(Schedule::parse("every tuesday").is_err());
        assert!(Schedule::parse("61 * * * *").is_err());
    }
}
