//! The documents the agent hands whoever runs it — the coordinator above
//! all — as versioned serde types, the counterpart of [`crate::job`] in the
//! other direction: the status document (written every few seconds and at
//! the end: `--status-file`, the job's status blob), the report of one sync
//! to one destination, and the `--json` outputs of `points`, `download` and
//! `promote`. Readers refuse unknown fields: a document from a newer agent
//! fails loudly instead of being half understood. Golden files in
//! `tests/golden/` pin the shape.

use serde::{Deserialize, Serialize};

/// The status document's version. 2: the counts' one vocabulary (zero,
/// unchanged, written, cleared) replaced v1's skipped/zero_chunks/data_chunks.
pub const STATUS_VERSION: u32 = 2;

/// What a sync (or a job) is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Starting,
    Syncing,
    Committing,
    Done,
    Failed,
}

impl Phase {
    /// Done or failed: nothing more will happen.
    pub fn finished(self) -> bool {
        matches!(self, Phase::Done | Phase::Failed)
    }
}

/// What went over the wire to a remote destination.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireStats {
    /// Bytes of page data sent (Put Page bodies, footer included; relay frames).
    pub bytes_sent: u64,
    /// The raw bytes those stand for: `bytes_sent / bytes_raw` is the
    /// compression ratio of a relay.
    pub bytes_raw: u64,
    pub requests_ok: u64,
    pub requests_failed: u64,
    pub retries: u64,
    pub clear_requests: u64,
    /// Attempts the service throttled or failed from overload (429, 503, 500, timeouts).
    pub throttled: u64,
    /// Requests the adaptive pacer allowed in flight at the end (0: none paced).
    pub concurrency: u64,
}

/// What one sync did at one destination (`sync --json`, and per destination
/// in a job's status).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncReport {
    pub destination: String,
    pub generation: u64,
    pub full_sync: bool,
    pub full_sync_reason: Option<String>,
    pub disk_size: u64,
    pub previous_disk_size: Option<u64>,
    pub chunk_size: u64,
    pub chunks: u64,
    /// Zero, and zero at the destination already: nothing done.
    pub chunks_zero: u64,
    /// Data the destination held already: nothing done.
    pub chunks_unchanged: u64,
    pub chunks_written: u64,
    /// Became zero: cleared.
    pub chunks_cleared: u64,
    /// Of written and cleared: chunks an interrupted earlier run touched,
    /// rewritten whatever they hold.
    pub chunks_suspect: u64,
    pub bytes_zero: u64,
    pub bytes_unchanged: u64,
    pub bytes_written: u64,
    pub bytes_cleared: u64,
    /// Bytes read from the source (zero chunks in holes and hinted chunks are not).
    pub bytes_read: u64,
    pub seconds: f64,
    /// Of `seconds`: time spent handing writes and clears to the destination.
    pub seconds_writing: f64,
    /// Of `seconds`: time spent making the generation durable and publishing it.
    pub seconds_committing: f64,
    pub read_bytes_per_second: f64,
    /// Traffic to a remote destination (page blob, relay).
    pub wire: Option<WireStats>,
    /// What became of a range hint: `used: ...` or `ignored: why`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// Of unchanged and zero: chunks the hint let the scan skip without reading.
    pub chunks_hinted: u64,
}

impl SyncReport {
    /// Bytes that crossed the wire: what the destination was sent, or for a
    /// local file what was written.
    pub fn bytes_sent(&self) -> u64 {
        self.wire.map_or(self.bytes_written, |w| w.bytes_sent)
    }
}

/// One destination of a job's disk, once that disk is finished.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationResult {
    /// As shown to people (no SAS).
    pub destination: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<SyncReport>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Requests to a remote destination, live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Requests {
    pub ok: u64,
    pub failed: u64,
    pub retries: u64,
    pub bytes_sent: u64,
    pub in_flight_bytes: u64,
}

/// One disk in a status document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskStatus {
    /// The job's name for the disk (a job's status only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub source: String,
    pub destination: String,
    pub phase: Phase,
    pub last_error: Option<String>,
    pub generation: u64,
    pub disk_size: u64,
    pub bytes_scanned: u64,
    pub bytes_read: u64,
    pub bytes_hashed: u64,
    /// Planned so far, summed over destinations: zero, unchanged, written, cleared.
    pub bytes_zero: u64,
    pub bytes_unchanged: u64,
    pub bytes_written: u64,
    pub bytes_cleared: u64,
    /// Bytes a remote destination has acknowledged (none for files).
    pub bytes_sent: Option<u64>,
    /// Once the disk is finished: one per destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub results: Option<Vec<DestinationResult>>,
    /// What stopped the disk before any destination (its source failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The status document, version [`STATUS_VERSION`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Status {
    pub version: u32,
    /// The job's run (a job's status only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    pub phase: Phase,
    pub updated_unix_ms: i64,
    /// Seconds since the sync started (a single sync's status only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    pub disks: Vec<DiskStatus>,
    /// A single sync's requests to a remote destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<Requests>,
}

/// A document that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("not a {what} document: {source}")]
    Malformed { what: &'static str, source: serde_json::Error },
    #[error("{what} document version {found}; this build reads version {STATUS_VERSION}")]
    Version { what: &'static str, found: u32 },
}

impl Status {
    /// Parse a status document, refusing other versions and unknown fields.
    pub fn parse(bytes: &[u8]) -> Result<Self, ReportError> {
        // The version first: another version's fields are not ours to judge.
        #[derive(Deserialize)]
        struct Versioned {
            version: u32,
        }
        let v: Versioned =
            serde_json::from_slice(bytes).map_err(|source| ReportError::Malformed { what: "status", source })?;
        if v.version != STATUS_VERSION {
            return Err(ReportError::Version { what: "status", found: v.version });
        }
        serde_json::from_slice(bytes).map_err(|source| ReportError::Malformed { what: "status", source })
    }
}

/// One recovery point of a page blob destination (`points --json` lists them,
/// oldest first).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecoveryPoint {
    pub generation: u64,
    /// The blob snapshot holding it.
    pub snapshot: String,
    pub created_unix_ms: i64,
    pub disk_size: u64,
    pub bytes_written: u64,
    pub bytes_cleared: u64,
    /// What the disks of the sync that made it held together (`crash`,
    /// `application`, `filesystem`, `stopped`, `per-disk`), when it said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistency: Option<String>,
}

/// What `download --json` fetched.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DownloadReport {
    pub generation: u64,
    pub bytes: u64,
    pub bytes_fetched: u64,
    pub ranges: usize,
    pub seconds: f64,
}

/// What `promote --json` made: a standalone blob of one recovery point.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromoteReport {
    pub generation: u64,
    pub disk_size: u64,
    /// Its URL, without credentials.
    pub blob: String,
}

/// Parse the `--json` output of an agent command.
pub fn parse_json<T: serde::de::DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T, ReportError> {
    serde_json::from_slice(bytes).map_err(|source| ReportError::Malformed { what, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_and_other_versions_are_refused() {
        let ok = br#"{"version":2,"phase":"done","updated_unix_ms":1,"disks":[]}"#;
        assert_eq!(Status::parse(ok).unwrap().phase, Phase::Done);
        // Another version is named as such, whatever fields it has.
        let newer = br#"{"version":3,"phase":"done","updated_unix_ms":1,"disks":[],"shiny":true}"#;
        assert!(matches!(Status::parse(newer), Err(ReportError::Version { found: 3, .. })));
        let older = br#"{"version":1,"phase":"done","updated_unix_ms":1,"disks":[{"bytes_skipped_zero":1}]}"#;
        assert!(matches!(Status::parse(older), Err(ReportError::Version { found: 1, .. })));
        let extra = br#"{"version":2,"phase":"done","updated_unix_ms":1,"disks":[],"surprise":1}"#;
        let e = Status::parse(extra).unwrap_err().to_string();
        assert!(e.contains("surprise"), "{e}");
        assert!(Status::parse(br#"{"version":2,"phase":"resting","updated_unix_ms":1,"disks":[]}"#).is_err());
    }
}
