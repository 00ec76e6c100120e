//! The job spec: what the coordinator asks one agent run to do. Versioned
//! JSON, handed to `diskferry-agent run --job FILE` (a file on the local
//! provider, IMDS user data on Azure). It carries no secrets: the agent gets
//! storage credentials from its environment or its managed identity.
//!
//! ```json
//! {
//!   "version": 1,
//!   "run_id": "r-20261122-101500-3f2a",
//!   "chunk_size": 1048576,
//!   "concurrency": 16,
//!   "keep": 7,
//!   "disks": [
//!     { "name": "os", "source": "/dev/loop3", "source_id": "web1/os",
//!       "destinations": ["pageblob:https://acct.blob.core.windows.net/dr/web1/os.vhd"] }
//!   ]
//! }
//! ```
//!
//! Unknown fields are refused: a coordinator newer than the agent must not
//! have its intent silently dropped.

use serde::{Deserialize, Serialize};

use crate::geometry::ChunkSize;

/// The only version this agent reads.
pub const JOB_VERSION: u32 = 1;

/// One run of the agent over the disks of one VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    pub version: u32,
    /// The coordinator's run id; echoed in the status document.
    pub run_id: String,
    /// Chunk size in bytes (power of two, 64 KiB..4 MiB).
    #[serde(default = "default_chunk")]
    pub chunk_size: u64,
    /// Page blob requests in flight per disk.
    #[serde(default = "default_concurrency")]
    pub concurrency: u16,
    /// Recovery points kept per page blob destination.
    #[serde(default = "default_keep")]
    pub keep: u16,
    /// Reading and hashing threads [default: all CPUs].
    #[serde(default)]
    pub threads: Option<u16>,
    /// Storage service version to send (x-ms-version).
    #[serde(default)]
    pub api_version: Option<String>,
    /// Give up retrying one storage request after this many seconds.
    #[serde(default = "default_retry_for")]
    pub retry_for_secs: u64,
    /// Create the destination container when missing.
    #[serde(default)]
    pub create_container: bool,
    /// How often the agent rewrites its status document.
    #[serde(default = "default_status_interval")]
    pub status_interval_ms: u64,
    /// Also upload the status document to this block blob (a worker VM has
    /// no inbound port: this is how the coordinator watches it). An https
    /// URL without SAS; the agent's credentials apply.
    #[serde(default)]
    pub status_blob: Option<String>,
    /// Keep the state of every page blob destination (journal, manifests,
    /// recovery point index) in this container of a standard account
    /// (`https://ACCOUNT.blob.core.windows.net/CONTAINER[/PREFIX]`, no
    /// SAS; the agent's credentials apply): for premium page blob
    /// destinations, whose accounts hold page blobs only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_url: Option<String>,
    /// What the disks' snapshots hold together (`crash`, `application`,
    /// `filesystem`, `stopped`, `per-disk`): recorded in each recovery point
    /// the job makes, where it outlives the coordinator's database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistency: Option<String>,
    /// The run's fencing number: its coordinator's lease on the replica.
    /// Each destination records the highest it has seen and refuses a
    /// lower one, so the worker of a run whose lease was lost cannot
    /// publish after its successor started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fence: Option<u64>,
    pub disks: Vec<JobDisk>,
}

/// Whether `s` can label a recovery point's consistency: 1 to 32 lowercase
/// letters and dashes (it goes into blob metadata and status documents).
pub fn is_consistency_label(s: &str) -> bool {
    (1..=32).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_lowercase() || b == b'-')
}

/// One disk of the job: where to read it and where it goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobDisk {
    /// The disk's name in the VM (unique within the job).
    pub name: String,
    /// A block device or image file on the worker, or `lun:N`: the data disk
    /// attached at LUN N of an Azure worker, which the agent finds itself
    /// (the device links differ between SCSI and NVMe VM sizes), or
    /// `url-file:PATH`: a file (mode 600) holding the URL, SAS and all, of a
    /// page blob to read over HTTPS (a snapshot's export: the job itself
    /// holds no secret).
    pub source: String,
    /// Recorded in the manifest; stable across runs although the device
    /// path changes (each run reads a new temporary disk).
    pub source_id: String,
    /// `pageblob:URL` or `file:PATH.vhd`, one or more: the disk is read
    /// once and each destination keeps its own generation.
    pub destinations: Vec<String>,
    /// What changed since the source of the destinations' last generation
    /// (Azure's incremental-snapshot diff). Used only when every
    /// destination still holds exactly that generation; otherwise the agent
    /// reads everything and says why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<RangeHint>,
    /// Read this source at most this many bytes per second (a live disk's
    /// owner keeps the rest of its rate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_limit: Option<u64>,
}

/// Byte ranges that may differ from a known earlier state of the disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RangeHint {
    /// Per destination, in order: the generation the earlier state became.
    pub base_generations: Vec<u64>,
    /// The disk's size then; a resized disk voids the hint.
    pub disk_size: u64,
    /// `[offset, length]`, ascending, not overlapping, 512-byte aligned.
    /// Everything outside them is the same as then.
    pub ranges: Vec<[u64; 2]>,
}

impl RangeHint {
    fn validate(&self, destinations: usize) -> Result<(), String> {
        if self.base_generations.len() != destinations {
            return Err(format!(
                "names {} base generations for {destinations} destinations",
                self.base_generations.len()
            ));
        }
        self.check()
    }

    /// Ranges ascending, disjoint, aligned and inside the disk.
    pub fn check(&self) -> Result<(), String> {
        let mut end = 0u64;
        for &[off, len] in &self.ranges {
            if len == 0 || off % 512 != 0 || len % 512 != 0 {
                return Err(format!("range [{off}, {len}] is empty or not 512-byte aligned"));
            }
            let stop = off.checked_add(len).filter(|&e| e <= self.disk_size);
            let Some(stop) = stop.filter(|_| off >= end) else {
                return Err(format!("range [{off}, {len}] overlaps, is out of order or past the disk's end"));
            };
            end = stop;
        }
        Ok(())
    }

    /// Ranges as a hint wants them from a raw list (a snapshot diff's page
    /// and clear ranges, inclusive or not, in any order): rounded out to
    /// `align` (a power of two, at least 512), clipped to the disk, sorted,
    /// merged. `None` when more than `max` ranges remain even at `coarse`
    /// alignment (the hint would be too big to carry).
    pub fn coalesce(raw: &[[u64; 2]], disk_size: u64, align: u64, coarse: u64, max: usize) -> Option<Vec<[u64; 2]>> {
        for a in [align, coarse] {
            let mut spans: Vec<(u64, u64)> = raw
                .iter()
                .filter(|r| r[1] > 0 && r[0] < disk_size)
                .map(|&[off, len]| {
                    let start = off / a * a;
                    let end = off.saturating_add(len).div_ceil(a).saturating_mul(a).min(disk_size);
                    (start, end)
                })
                .collect();
            spans.sort_unstable();
            let mut out: Vec<[u64; 2]> = Vec::new();
            for (start, end) in spans {
                match out.last_mut() {
                    Some(last) if start <= last[0] + last[1] => last[1] = last[1].max(end - last[0]),
                    _ => out.push([start, end - start]),
                }
            }
            if out.len() <= max {
                return Some(out);
            }
        }
        None
    }

    /// Does any range touch bytes `r`?
    pub fn touches(&self, r: std::ops::Range<u64>) -> bool {
        // Ranges are sorted: the first whose end is past r.start decides.
        let i = self.ranges.partition_point(|&[off, len]| off + len <= r.start);
        self.ranges.get(i).is_some_and(|&[off, _]| off < r.end)
    }
}

fn default_chunk() -> u64 {
    ChunkSize::default().get()
}
fn default_concurrency() -> u16 {
    16
}
fn default_keep() -> u16 {
    7
}
fn default_retry_for() -> u64 {
    120
}
fn default_status_interval() -> u64 {
    2000
}

/// Why a job spec was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JobError {
    #[error("job spec is not valid JSON for version {JOB_VERSION}: {0}")]
    Syntax(String),
    #[error("job spec version {0} is not supported (this agent reads version {JOB_VERSION})")]
    Version(u32),
    #[error("job spec field {field}: {problem}")]
    Invalid { field: &'static str, problem: String },
}

impl JobSpec {
    /// Parse and validate a job document.
    pub fn parse(text: &str) -> Result<Self, JobError> {
        // Look at the version first, so a future format gets the right message.
        #[derive(Deserialize)]
        struct Versioned {
            version: u32,
        }
        let v: Versioned = serde_json::from_str(text).map_err(|e| JobError::Syntax(e.to_string()))?;
        if v.version != JOB_VERSION {
            return Err(JobError::Version(v.version));
        }
        let job: JobSpec = serde_json::from_str(text).map_err(|e| JobError::Syntax(e.to_string()))?;
        job.validate()?;
        Ok(job)
    }

    /// The document as written to the worker.
    pub fn to_json(&self) -> String {
        // A struct of strings and numbers always serializes.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    pub fn chunk(&self) -> Result<ChunkSize, JobError> {
        ChunkSize::new(self.chunk_size).map_err(|e| invalid("chunk_size", e.to_string()))
    }

    fn validate(&self) -> Result<(), JobError> {
        self.chunk()?;
        if self.run_id.is_empty() {
            return Err(invalid("run_id", "is empty".into()));
        }
        if self.disks.is_empty() {
            return Err(invalid("disks", "lists no disk".into()));
        }
        if self.concurrency == 0 {
            return Err(invalid("concurrency", "must be at least 1".into()));
        }
        if !(50..=600_000).contains(&self.status_interval_ms) {
            return Err(invalid("status_interval_ms", "must be between 50 and 600000".into()));
        }
        if self.keep == 0 {
            return Err(invalid("keep", "must be at least 1".into()));
        }
        if self.consistency.as_deref().is_some_and(|c| !is_consistency_label(c)) {
            return Err(invalid("consistency", "must be 1 to 32 lowercase letters and dashes".into()));
        }
        // A job is written to disk and into VM user data: it must carry no secret.
        if self.status_blob.as_deref().is_some_and(carries_sas) {
            return Err(invalid("status_blob", "carries a SAS; a job must hold no secret".into()));
        }
        if self.state_url.as_deref().is_some_and(carries_sas) {
            return Err(invalid("state_url", "carries a SAS; a job must hold no secret".into()));
        }
        if self.disks.iter().any(|d| carries_sas(&d.source)) {
            return Err(invalid("disks", "a source carries a SAS; name it by url-file:PATH".into()));
        }
        if self.disks.iter().flat_map(|d| &d.destinations).any(|d| carries_sas(d)) {
            return Err(invalid("disks", "a destination carries a SAS; a job must hold no secret".into()));
        }
        let mut names = std::collections::BTreeSet::new();
        for d in &self.disks {
            if d.name.is_empty() || d.source.is_empty() || d.source_id.is_empty() {
                return Err(invalid("disks", format!("disk {:?} has an empty name, source or source_id", d.name)));
            }
            if d.source.starts_with(LUN_PREFIX) && d.lun().is_none() {
                return Err(invalid(
                    "disks",
                    format!("disk {:?}: source {:?} is not lun:N with N from 0 to {MAX_LUN}", d.name, d.source),
                ));
            }
            if d.destinations.is_empty() || d.destinations.iter().any(String::is_empty) {
                return Err(invalid("disks", format!("disk {:?} needs at least one destination", d.name)));
            }
            if !names.insert(d.name.as_str()) {
                return Err(invalid("disks", format!("disk name {:?} appears twice", d.name)));
            }
            if let Some(h) = &d.hint {
                h.validate(d.destinations.len()).map_err(|e| invalid("hint", format!("disk {:?}: {e}", d.name)))?;
            }
        }
        Ok(())
    }
}

/// Does this URL (or `pageblob:URL`) carry a SAS signature in its query?
pub fn carries_sas(url: &str) -> bool {
    url.split_once('?').is_some_and(|(_, q)| q.split('&').any(|kv| kv.starts_with("sig=")))
}

/// A source `lun:N` names the worker's data disk at LUN N.
pub const LUN_PREFIX: &str = "lun:";
/// A source `url-file:PATH` names a file holding a page blob's URL.
pub const URL_FILE_PREFIX: &str = "url-file:";
/// The highest LUN Azure attaches a data disk at.
pub const MAX_LUN: u8 = 63;

impl JobDisk {
    /// The LUN, when the source is `lun:N` with a valid N.
    /// The file holding the source's URL, when the source is `url-file:PATH`.
    pub fn url_file(&self) -> Option<&str> {
        self.source.strip_prefix(URL_FILE_PREFIX).filter(|p| !p.is_empty())
    }

    pub fn lun(&self) -> Option<u8> {
        let n = self.source.strip_prefix(LUN_PREFIX)?;
        if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) || n.len() > 2 {
            return None;
        }
        n.parse::<u8>().ok().filter(|&l| l <= MAX_LUN)
    }
}

fn invalid(field: &'static str, problem: String) -> JobError {
    JobError::Invalid { field, problem }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> JobSpec {
        JobSpec {
            version: 1,
            run_id: "r1".into(),
            chunk_size: 1 << 20,
            concurrency: 16,
            keep: 7,
            threads: None,
            api_version: None,
            retry_for_secs: 120,
            create_container: false,
            status_interval_ms: 2000,
            status_blob: None,
            state_url: None,
            consistency: None,
            fence: None,
            disks: vec![JobDisk {
                name: "os".into(),
                source: "/dev/loop0".into(),
                source_id: "vm/os".into(),
                destinations: vec!["file:/x/os.vhd".into()],
                hint: None,
                read_limit: None,
            }],
        }
    }

    #[test]
    fn a_lun_source_is_checked() {
        let mut j = sample();
        for (src, lun) in [("lun:0", Some(0)), ("lun:7", Some(7)), ("lun:63", Some(63)), ("/dev/sdc", None)] {
            j.disks[0].source = src.into();
            assert_eq!(j.disks[0].lun(), lun, "{src}");
            assert_eq!(JobSpec::parse(&j.to_json()), Ok(j.clone()), "{src}");
        }
        for bad in ["lun:", "lun:64", "lun:-1", "lun:+1", "lun:007", "lun:1a", "lun: 1"] {
            j.disks[0].source = bad.into();
            assert_eq!(j.disks[0].lun(), None, "{bad}");
            let e = JobSpec::parse(&j.to_json()).unwrap_err().to_string();
            assert!(e.contains("is not lun:N"), "{bad}: {e}");
        }
    }

    #[test]
    fn round_trip() {
        let mut j = sample();
        assert_eq!(JobSpec::parse(&j.to_json()), Ok(j.clone()));
        j.disks[0].hint =
            Some(RangeHint { base_generations: vec![3], disk_size: 8 << 20, ranges: vec![[0, 512], [1 << 20, 4096]] });
        assert_eq!(JobSpec::parse(&j.to_json()), Ok(j));
    }

    #[test]
    fn raw_ranges_coalesce_to_aligned_disjoint_ones() {
        let mib = 1 << 20;
        let raw = [[5 * mib + 10, 100], [0, 512], [511, 2], [5 * mib, 4096], [9 * mib - 512, 4096]];
        let r = RangeHint::coalesce(&raw, 9 * mib, 4096, mib, 10).unwrap();
        assert_eq!(r, vec![[0, 4096], [5 * mib, 4096], [9 * mib - 4096, 4096]]);
        // Too many at 4 KiB: whole chunks instead.
        let near = [[0, 512], [8192, 512]];
        assert_eq!(RangeHint::coalesce(&near, 9 * mib, 4096, mib, 1), Some(vec![[0, mib]]));
        assert_eq!(RangeHint::coalesce(&raw, 9 * mib, 4096, mib, 2), None, "3 chunks apart: cannot fit in 2");
        let h = RangeHint { base_generations: vec![1], disk_size: 9 * mib, ranges: r };
        assert_eq!(h.check(), Ok(()));
    }

    #[test]
    fn hints_answer_which_bytes_changed() {
        let h = RangeHint { base_generations: vec![1], disk_size: 8 << 20, ranges: vec![[4096, 4096], [1 << 20, 512]] };
        assert!(!h.touches(0..4096));
        assert!(h.touches(0..4097));
        assert!(h.touches(8000..9000));
        assert!(!h.touches(8192..(1 << 20)));
        assert!(h.touches((1 << 20)..(2 << 20)));
        assert!(!h.touches((1 << 20) + 512..(2 << 20)));
    }

    #[test]
    fn defaults_fill_optional_fields() {
        let j = JobSpec::parse(
            r#"{"version":1,"run_id":"r","disks":[{"name":"a","source":"/a","source_id":"v/a","destinations":["file:/b"]}]}"#,
        )
        .unwrap();
        assert_eq!((j.chunk_size, j.concurrency, j.keep, j.retry_for_secs), (1 << 20, 16, 7, 120));
    }

    #[test]
    fn refusals_are_precise() {
        assert_eq!(JobSpec::parse(r#"{"version":2,"anything":1}"#), Err(JobError::Version(2)));
        assert!(matches!(JobSpec::parse("{"), Err(JobError::Syntax(_))));
        let mut j = sample();
        j.chunk_size = 3000;
        assert!(matches!(JobSpec::parse(&j.to_json()), Err(JobError::Invalid { field: "chunk_size", .. })));
        let mut j = sample();
        j.disks.push(j.disks[0].clone());
        assert!(matches!(JobSpec::parse(&j.to_json()), Err(JobError::Invalid { field: "disks", .. })));
        let mut j = sample();
        j.disks.clear();
        assert!(matches!(JobSpec::parse(&j.to_json()), Err(JobError::Invalid { field: "disks", .. })));
        let mut j = sample();
        j.disks[0].destinations = vec!["pageblob:https://a.blob.core.windows.net/c/d.vhd?sv=1&sig=X".into()];
        assert!(matches!(JobSpec::parse(&j.to_json()), Err(JobError::Invalid { field: "disks", .. })));
        let mut j = sample();
        j.disks[0].source = "https://md-x.blob.core.windows.net/c/abcd?sv=1&sr=b&sig=X".into();
        assert!(matches!(JobSpec::parse(&j.to_json()), Err(JobError::Invalid { field: "disks", .. })));
        j.disks[0].source = "url-file:/run/diskferry/r1/os.url".into();
        assert_eq!(JobSpec::parse(&j.to_json()).unwrap().disks[0].url_file(), Some("/run/diskferry/r1/os.url"));
        let mut j = sample();
        j.status_blob = Some("https://a.blob.core.windows.net/c/s.json?sig=X".into());
        assert!(matches!(JobSpec::parse(&j.to_json()), Err(JobError::Invalid { field: "status_blob", .. })));
        let mut j = sample();
        j.disks[0].hint =
            Some(RangeHint { base_generations: vec![3], disk_size: 1 << 20, ranges: vec![[512, 1024], [1024, 512]] });
        assert!(matches!(JobSpec::parse(&j.to_json()), Err(JobError::Invalid { field: "hint", .. })), "overlap");
        j.disks[0].hint = Some(RangeHint { base_generations: vec![3, 4], disk_size: 1 << 20, ranges: vec![] });
        assert!(matches!(JobSpec::parse(&j.to_json()), Err(JobError::Invalid { field: "hint", .. })), "count");
        j.disks[0].hint = Some(RangeHint { base_generations: vec![3], disk_size: 1 << 20, ranges: vec![[0, 100]] });
        assert!(matches!(JobSpec::parse(&j.to_json()), Err(JobError::Invalid { field: "hint", .. })), "alignment");
        let mut j = sample();
        for (label, ok) in [("crash", true), ("per-disk", true), ("Crash", false), ("", false), ("a b", false)] {
            j.consistency = Some(label.into());
            let got = JobSpec::parse(&j.to_json());
            assert_eq!(got.is_ok(), ok, "{label:?}: {got:?}");
        }
        let unknown = sample().to_json().replacen("\"keep\"", "\"surprise\": 1, \"keep\"", 1);
        assert!(matches!(JobSpec::parse(&unknown), Err(JobError::Syntax(e)) if e.contains("surprise")));
    }
}
