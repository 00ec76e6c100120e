//! Reading a page blob destination's state before a generation: take the
//! writer's lease first (a destination that does not exist yet is created,
//! empty, and leased), then, under it, the blob's metadata (the fence), the
//! published manifest and the journal chain of an interrupted generation.
//! The answer is the sink's [`Prior`]: fresh, previous (with what an
//! interrupted generation touched), partial, or untrusted (a full sync).

use std::collections::HashMap;

use anyhow::anyhow;
use diskferry_core::digest::Digest;
use diskferry_core::geometry::{round_up_mib, Geometry};
use diskferry_core::journal::{self, JournalHeader};
use diskferry_core::manifest::Manifest;
use diskferry_core::plan::Overrides;
use diskferry_core::vhd::FOOTER_LEN;

use super::journal_writer::{self, Segments};
use super::lease::META_WRITER;
use super::points::manifest_name;
use super::sink::{dest_err, PageBlobSink, META_BUILDING, META_DISK_SIZE, META_GENERATION, META_MANIFEST, META_STATE};
use crate::exit::Failure;
use crate::sink::Prior;
use diskferry_blob::{ErrorKind, PageStore};

impl<S: PageStore> PageBlobSink<S> {
    /// Take the writer's lease on the page blob (see `lease.rs`) and keep it
    /// renewed; the one-line "in use" error if another writer keeps it.
    pub(super) fn take_lease(&mut self) -> Result<(), Failure> {
        match self.rt.block_on(self.lease.acquire(self.store.as_ref(), &self.blob)) {
            Ok(()) => {}
            Err(e) if e.last_kind() == ErrorKind::Leased => {
                return Err(dest_err(super::lease::in_use(&self.describe, &e)));
            }
            Err(e) => return Err(e.into()),
        }
        self.lease.start_renewing(&self.rt, self.store.clone(), self.blob.clone(), self.flight.clone());
        Ok(())
    }

    /// A destination that does not exist yet: create it (all zero, of the
    /// size the disk needs, marked as generation 1 in progress) and take
    /// its lease before anything else is written. A writer that created
    /// it at the same time, and took the lease first, wins.
    fn create_fresh(&mut self, cur: Geometry) -> Result<Option<Prior>, Failure> {
        let total = round_up_mib(cur.disk_size()) + FOOTER_LEN as u64;
        let mut meta = HashMap::new();
        meta.insert(META_BUILDING.to_owned(), "1".to_owned());
        meta.insert(META_DISK_SIZE.to_owned(), cur.disk_size().to_string());
        meta.insert(META_WRITER.to_owned(), self.lease.id().as_str().to_owned());
        self.mark_kept(&mut meta);
        if !self.block_on(self.store.create_page_blob_if_absent(&self.blob, total, meta.clone()))? {
            // Another writer created it meanwhile: read it as it is.
            return Ok(None);
        }
        self.take_lease()?;
        self.created = true;
        self.prior_size = Some(total);
        self.metadata = meta;
        Ok(Some(Prior::Fresh { reason: "destination does not exist yet".into() }))
    }

    pub(super) fn read_prior(&mut self, source_id: &str, cur: Geometry) -> Result<Prior, Failure> {
        let need = round_up_mib(cur.disk_size()) + FOOTER_LEN as u64;
        if need > diskferry_blob::store::MAX_PAGE_BLOB {
            return Err(dest_err(anyhow!(
                "{}: a {}-byte disk needs a {need}-byte page blob; Azure's page blobs hold at most 8 TiB ({} bytes)",
                self.describe,
                cur.disk_size(),
                diskferry_blob::store::MAX_PAGE_BLOB
            )));
        }
        // A premium page blob account holds page blobs only: the journal,
        // the manifests and the index (block and append blobs) cannot live
        // there, but in a standard container (`--state-url`). Refused
        // before any write. (An account that does not answer Get Account
        // Information, e.g. under a token credential, is taken for a
        // standard one.)
        let rules = self.rt.block_on(self.store.rules()).unwrap_or_default();
        if rules.page_blobs_only {
            let whose = if self.opts.state.is_some() { "--state-url names a container in" } else { "it is in" };
            return Err(dest_err(anyhow!(
                "{}: {whose} a premium page blob account, which holds page blobs only: diskferry keeps the \
                 journal, manifests and recovery point index as block and append blobs; pass --state-url \
                 with a container of a standard (StorageV2) account",
                self.describe
            )));
        }
        self.snapshot_rules = rules.snapshots;
        if self.opts.create_container {
            self.block_on(self.store.create_container())?;
        }
        let want = need;
        let foreign = |p: &diskferry_blob::BlobProps| {
            !(p.metadata.contains_key(META_GENERATION) || p.metadata.contains_key(META_BUILDING))
        };
        let describe = self.describe.clone();
        let refuse_foreign =
            || dest_err(anyhow!("{describe} exists and was not written by diskferry; pass --force to overwrite it"));
        // Refuse a foreign blob before taking its lease; then take it, and
        // read the state again under it: what was read before may be
        // another writer's half-done work.
        let first = match self.block_on(self.store.properties(&self.blob))? {
            Some(p) => p,
            None => match self.create_fresh(cur)? {
                Some(fresh) => return Ok(fresh),
                None => self.block_on(self.store.properties(&self.blob))?.ok_or_else(|| {
                    dest_err(anyhow!("{} appeared and vanished while this sync began", self.describe))
                })?,
            },
        };
        if foreign(&first) && !self.opts.force {
            return Err(refuse_foreign());
        }
        self.take_lease()?;
        let Some(props) = self.block_on(self.store.properties(&self.blob))? else {
            return Err(dest_err(anyhow!("{} was deleted while this sync took its lease", self.describe)));
        };
        self.prior_size = Some(props.size);
        self.check_fence(&props.metadata)?;
        self.metadata = props.metadata.clone();
        let meta_u64 = |k: &str| props.metadata.get(k).and_then(|v| v.parse::<u64>().ok());
        let ours = !foreign(&props);
        if !ours && !self.opts.force {
            return Err(refuse_foreign());
        }
        if ours {
            self.check_state_place(&props.metadata)?;
            self.check_snapshot_rules()?;
        }
        if ours && props.size != want && !self.opts.force {
            return Err(dest_err(anyhow!(
                "{} holds a {}-byte disk, the source needs {want} bytes; pass --force to resize it",
                self.describe,
                props.size
            )));
        }
        let published = meta_u64(META_GENERATION).unwrap_or(0);
        let untrusted = |reason: String| Ok(Prior::Untrusted { reason, last_generation: Some(published) });
        if !ours {
            return untrusted("destination was not written by diskferry (--force)".into());
        }
        let building = meta_u64(META_BUILDING);
        // The journal (read only when a generation was left open: a clean
        // destination's journal is not looked at) and the published
        // manifest, in one round trip's time.
        let (store, jname, mname) = (self.store.clone(), self.journal_name(), manifest_name(&self.blob, published));
        let get_if = |wanted: bool, name: String| {
            let store = store.clone();
            async move {
                if wanted {
                    store.get(&name).await
                } else {
                    Ok(None)
                }
            }
        };
        let read_chain = |wanted: bool| {
            let (store, jname) = (store.clone(), jname.clone());
            async move {
                if wanted {
                    journal_writer::read_segments(store.as_ref(), &jname).await
                } else {
                    Ok(Vec::new())
                }
            }
        };
        let (journal, manifest_bytes) = self.block_on(async {
            let (j, m) = tokio::join!(read_chain(building.is_some() || published == 0), get_if(published > 0, mname));
            Ok((j?, m?))
        })?;
        self.segments_found = journal.len() as u64;
        let chain = journal::parse_segments(&journal).ok();
        if let Some(c) = &chain {
            // A resumed generation goes on in a new segment after the last
            // one read (a chain from before segments cannot be continued:
            // the generation starts over then).
            self.segments = c.id.map(|id| Segments {
                blob: self.blob.clone(),
                journal: self.journal_name(),
                chain: id,
                index: c.segments - 1,
                blocks: 0,
            });
        }
        let parsed = chain.filter(|c| c.id.is_some()).map(|c| (c.header, c.overrides));

        if published == 0 {
            // An interrupted first sync: resume from its journal.
            return match (building, parsed) {
                (Some(g), Some((h, mut o))) if h.generation == g && h.base == JournalHeader::EMPTY_BASE => {
                    if !journal::acks_hold(&h, cur.disk_size()) || props.size != want {
                        o.distrust_acks();
                    }
                    self.journal = Some(h);
                    Ok(Prior::Partial { generation: g, overrides: o })
                }
                _ => untrusted("an earlier first sync did not finish and left no usable journal".into()),
            };
        }
        let Some(mbytes) = manifest_bytes else {
            return untrusted(format!("manifest of generation {published} is missing"));
        };
        let digest = Digest::of(&mbytes);
        if props.metadata.get(META_MANIFEST) != Some(&digest.to_hex()) {
            return untrusted(format!("manifest of generation {published} does not match the blob's metadata"));
        }
        // At most four times the current disk's chunks (a disk that shrank
        // more reads whole): checked from the header before the body is
        // decompressed, so a hostile manifest costs no more than that.
        let manifest = match Manifest::decode_within(&mbytes, cur.chunk_count().saturating_mul(4) + 1024) {
            Ok(m) => m,
            Err(e) => return untrusted(format!("manifest of generation {published} is corrupt: {e}")),
        };
        if manifest.generation != published {
            return untrusted(format!("manifest says generation {}, the blob {published}", manifest.generation));
        }
        if manifest.geometry.chunk_size() != cur.chunk_size() {
            return untrusted(format!(
                "manifest chunk size {} differs from {}",
                manifest.geometry.chunk_size().get(),
                cur.chunk_size().get()
            ));
        }
        if manifest.source_id != source_id {
            return untrusted(format!("manifest is of source {:?}, not {:?}", manifest.source_id, source_id));
        }
        if props.size != round_up_mib(manifest.geometry.disk_size()) + FOOTER_LEN as u64 && building.is_none() {
            return untrusted(format!("blob is {} bytes, its manifest implies another size", props.size));
        }
        let mut overrides = Overrides::default();
        if let Some(g) = building {
            match parsed {
                Some((h, mut o)) if h.generation == g && g == published + 1 && h.base == digest => {
                    if !journal::acks_hold(&h, cur.disk_size()) || props.size != want {
                        o.distrust_acks();
                    }
                    self.journal = Some(h);
                    overrides = o;
                }
                _ => return untrusted(format!("generation {g} was interrupted and its journal is unusable")),
            }
        }
        Ok(Prior::Previous { manifest, overrides })
    }

    /// The destination's state is where this sync looks for it: the page
    /// blob names the state container it was written with
    /// ([`META_STATE`]); a sync, or a reader, told another (or none) would
    /// not find its journal and recovery points.
    pub(super) fn check_state_place(&self, metadata: &HashMap<String, String>) -> Result<(), Failure> {
        let has = metadata.get(META_STATE).map(String::as_str);
        let want = self.state_place();
        let d = &self.describe;
        match (has, want.as_deref()) {
            (a, b) if a == b => Ok(()),
            (Some(a), None) => Err(dest_err(anyhow!(
                "{d} keeps its state (journal, manifests, recovery points) in {a}: pass --state-url {a}"
            ))),
            (None, Some(b)) => Err(dest_err(anyhow!(
                "{d} keeps its state beside it, not in {b}: leave out --state-url (a destination's state does not move)"
            ))),
            (Some(a), Some(b)) => {
                Err(dest_err(anyhow!("{d} keeps its state in {a}, not in {b}: pass --state-url {a}")))
            }
            (None, None) => Ok(()),
        }
    }

    /// On a premium page blob: the recovery points kept fit in its
    /// snapshot count, and the last one is old enough for another
    /// (Snapshot Blob refuses more: 409 `SnapshotCountExceeded`,
    /// `SnaphotOperationRateExceeded`). Checked before anything is written.
    fn check_snapshot_rules(&mut self) -> Result<(), Failure> {
        let Some(r) = self.snapshot_rules else { return Ok(()) };
        let d = self.describe.clone();
        // A commit takes the new snapshot before it drops the oldest.
        if self.opts.keep as u64 + 1 > u64::from(r.max) {
            return Err(dest_err(anyhow!(
                "{d}: a premium page blob holds at most {} snapshots, and keeping {} recovery points takes {}: \
                 keep at most {}",
                r.max,
                self.opts.keep,
                self.opts.keep + 1,
                r.max - 1
            )));
        }
        let points = self.parse_points(self.block_on(self.store.get(&self.points_name()))?)?;
        let Some(last) = points.iter().max_by_key(|p| p.created_unix_ms) else { return Ok(()) };
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |t| i64::try_from(t.as_millis()).unwrap_or(i64::MAX));
        let next_ms = last.created_unix_ms.saturating_add(i64::try_from(r.interval.as_millis()).unwrap_or(i64::MAX));
        if now_ms < next_ms {
            let wait = (next_ms - now_ms + 999) / 1000;
            return Err(dest_err(anyhow!(
                "{d}: a premium page blob takes one snapshot every {}, and recovery point {} was taken {} s ago: \
                 sync again in {wait} s",
                match r.interval.as_secs() {
                    s if s >= 60 && s % 60 == 0 => format!("{} minutes", s / 60),
                    s => format!("{s} s"),
                },
                last.generation,
                (now_ms - last.created_unix_ms) / 1000
            )));
        }
        Ok(())
    }
}
