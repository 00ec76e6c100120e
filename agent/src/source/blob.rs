//! [`BlobSource`]: a disk held in a page blob, read over HTTPS — a managed
//! snapshot's or a disk restore point's export (a SAS URL from
//! `beginGetAccess`), or any page blob a SAS or a credential reaches.
//!
//! Design:
//! - **What was never written is not read.** Get Page Ranges is asked once,
//!   at open: pages outside every range read as zero, so the scan treats
//!   them as holes and a sparse disk costs what it holds, not its size.
//! - **The disk, not the VHD.** A page blob that ends in a fixed-VHD footer
//!   whose size is the blob's less 512 bytes (what Azure's managed disks
//!   and diskferry's own destinations hold) is a disk of that size; any
//!   other page blob is a raw disk of the blob's size.
//! - **Fetched ahead, in parallel, in pieces of at most 4 MiB.** The scan
//!   announces each window's reads ([`BlockSource::fetch`]) before its
//!   hashing threads ask for them; each piece becomes one ranged Get Blob
//!   on this source's own I/O thread, at most [`IN_FLIGHT`] at once, in the
//!   order announced. A hashing thread that asks for bytes waits only for
//!   the pieces that hold them.
//! - **Memory is bounded by the scan, not the disk.** A piece is dropped as
//!   soon as its last byte was copied out, or when the scan releases the
//!   window that holds it; the scan announces at most its windows in
//!   flight (three of 32 MiB).
//! - **Retries and throttling as for writes:** the store is the storage
//!   edge's [`diskferry_blob::retry::Retrying`] decorator; a piece that
//!   still fails is a read error at its offset. A piece whose answer is
//!   shorter or longer than asked is refused, never passed on.

use std::collections::BTreeMap;
use std::io;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex};

use bytes::Bytes;
use diskferry_blob::{PageStore, StoreError};
use diskferry_core::vhd::{Footer, FOOTER_LEN};

use super::{BlockSource, SourceError};

/// The most one read asks for: Put Page's limit, so a source and a
/// destination move the same pieces, and a failed piece costs little to
/// ask again (Get Blob itself has no limit).
pub const PIECE: u64 = 4 << 20;

/// Ranged reads in flight at once: 64 MiB, enough to keep a cross-region
/// link busy, as the page blob sink's default concurrency of 16 does.
pub const IN_FLIGHT: usize = 16;

/// A page blob read as a disk.
pub struct BlobSource<S: PageStore> {
    io: Arc<Io<S>>,
    /// Owned only to be shut down on drop; pieces run on it.
    runtime: Option<tokio::runtime::Runtime>,
    size: u64,
    /// Allocated ranges within the disk, sorted and merged.
    extents: Vec<Range<u64>>,
    /// Pieces fetched or being fetched, by first byte; none overlap.
    pieces: Mutex<BTreeMap<u64, Arc<Piece>>>,
}

struct Io<S> {
    store: S,
    blob: String,
    permits: tokio::sync::Semaphore,
    /// Bytes and requests of page data that came over the wire.
    fetched: AtomicU64,
    requests: AtomicU64,
}

/// One ranged read: its answer, once it came.
struct Piece {
    range: Range<u64>,
    answer: Mutex<Option<Result<Bytes, StoreError>>>,
    ready: Condvar,
    /// Bytes copied out so far; at `range`'s length the piece is dropped.
    taken: AtomicU64,
}

impl<S: PageStore> std::fmt::Debug for BlobSource<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobSource")
            .field("blob", &self.io.blob)
            .field("size", &self.size)
            .field("extents", &self.extents.len())
            .finish_non_exhaustive()
    }
}

impl<S: PageStore> BlobSource<S> {
    /// Open blob `blob` of `store`: its size, whether it ends in a VHD
    /// footer, and its allocated ranges. `what` names it in errors (no SAS).
    pub fn open(store: S, blob: &str, what: &str) -> Result<Self, SourceError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("diskferry-source-io")
            .enable_all()
            .build()
            .map_err(|e| SourceError::Open { path: what.into(), source: e })?;
        let failed = |source| SourceError::Blob { what: what.to_owned(), source };
        let not_a_disk = |why: String| SourceError::NotADisk { what: what.to_owned(), why };
        let props = runtime.block_on(store.properties(blob)).map_err(failed)?;
        let blob_size = props.ok_or_else(|| not_a_disk("no such blob".into()))?.size;
        let ranges = runtime.block_on(store.page_ranges(blob, None)).map_err(failed)?;
        let size = match blob_size.checked_sub(FOOTER_LEN as u64) {
            Some(at) if ranges.iter().any(|&(s, e)| s < blob_size && e > at) => {
                let tail = runtime.block_on(store.read(blob, None, at, FOOTER_LEN as u64)).map_err(failed)?;
                match Footer::parse(&tail) {
                    Ok(f) if f.size == at => at,
                    _ => blob_size,
                }
            }
            _ => blob_size,
        };
        if size == 0 || !size.is_multiple_of(512) {
            return Err(not_a_disk(format!("holds {size} bytes, not a disk (a positive multiple of 512)")));
        }
        let extents =
            ranges.into_iter().filter(|&(s, _)| s < size).map(|(s, e)| s..e.min(size)).filter(|r| !r.is_empty());
        let io = Io {
            store,
            blob: blob.to_owned(),
            permits: tokio::sync::Semaphore::new(IN_FLIGHT),
            fetched: AtomicU64::new(0),
            requests: AtomicU64::new(0),
        };
        Ok(Self {
            io: Arc::new(io),
            runtime: Some(runtime),
            size,
            extents: extents.collect(),
            pieces: Mutex::default(),
        })
    }

    /// Bytes of page data read over the wire so far, and in how many requests.
    #[cfg(test)]
    fn fetched(&self) -> (u64, u64) {
        (self.io.fetched.load(Relaxed), self.io.requests.load(Relaxed))
    }

    /// Allocated ranges within `range`.
    fn allocated_in(&self, range: Range<u64>) -> impl Iterator<Item = Range<u64>> + '_ {
        let first = self.extents.partition_point(|e| e.end <= range.start);
        self.extents[first..]
            .iter()
            .take_while(move |e| e.start < range.end)
            .map(move |e| e.start.max(range.start)..e.end.min(range.end))
    }

    /// Start reading whatever of `want` (allocated bytes) no piece holds
    /// yet: pieces of at most [`PIECE`], cut on its grid.
    fn start(&self, pieces: &mut BTreeMap<u64, Arc<Piece>>, want: Range<u64>) {
        let mut at = want.start;
        // A piece that starts before `want` may cover its beginning.
        if let Some((_, p)) = pieces.range(..=at).next_back() {
            at = at.max(p.range.end);
        }
        while at < want.end {
            let next_held = pieces.range(at..want.end).next().map(|(_, p)| p.range.clone());
            let gap_end = next_held.as_ref().map_or(want.end, |r| r.start);
            while at < gap_end {
                let end = gap_end.min((at / PIECE + 1) * PIECE);
                pieces.insert(at, self.spawn(at..end));
                at = end;
            }
            if let Some(r) = next_held {
                at = at.max(r.end);
            }
        }
    }

    fn spawn(&self, range: Range<u64>) -> Arc<Piece> {
        let piece = Arc::new(Piece {
            range: range.clone(),
            answer: Mutex::new(None),
            ready: Condvar::new(),
            taken: AtomicU64::new(0),
        });
        let (io, p) = (self.io.clone(), piece.clone());
        if let Some(rt) = &self.runtime {
            rt.spawn(async move {
                let len = range.end - range.start;
                let answer = match io.permits.acquire().await {
                    Ok(_permit) => io.store.read(&io.blob, None, range.start, len).await,
                    Err(_) => Err(StoreError::Invalid {
                        op: "read",
                        what: io.blob.clone(),
                        message: "the source was closed".into(),
                    }),
                };
                let answer = answer.and_then(|b| {
                    io.fetched.fetch_add(b.len() as u64, Relaxed);
                    io.requests.fetch_add(1, Relaxed);
                    if b.len() as u64 == len {
                        Ok(b)
                    } else {
                        Err(StoreError::Invalid {
                            op: "read",
                            what: io.blob.clone(),
                            message: format!("asked for {len} bytes at {}, got {}", range.start, b.len()),
                        })
                    }
                });
                *p.answer.lock().unwrap_or_else(|e| e.into_inner()) = Some(answer);
                p.ready.notify_all();
            });
        }
        piece
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<Piece>>> {
        self.pieces.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Piece {
    /// Wait for the answer; copy what overlaps `[offset, offset + buf.len())`
    /// into `buf`. Returns the bytes copied.
    fn copy_into(&self, offset: u64, buf: &mut [u8]) -> io::Result<u64> {
        let mut answer = self.answer.lock().unwrap_or_else(|e| e.into_inner());
        while answer.is_none() {
            answer = self.ready.wait(answer).unwrap_or_else(|e| e.into_inner());
        }
        let bytes = match answer.as_ref() {
            Some(Ok(b)) => b,
            Some(Err(e)) => return Err(io::Error::other(e.clone())),
            None => unreachable!("waited until answered"),
        };
        let start = self.range.start.max(offset);
        let end = self.range.end.min(offset + buf.len() as u64);
        let from = &bytes[(start - self.range.start) as usize..(end - self.range.start) as usize];
        buf[(start - offset) as usize..(end - offset) as usize].copy_from_slice(from);
        Ok(end - start)
    }
}

impl<S: PageStore> BlockSource for BlobSource<S> {
    fn size(&self) -> u64 {
        self.size
    }

    fn data_extents(&self, range: Range<u64>) -> io::Result<Vec<Range<u64>>> {
        Ok(self.allocated_in(range).collect())
    }

    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let end = offset + buf.len() as u64;
        if end > self.size {
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
        }
        let wanted: Vec<Arc<Piece>> = {
            let mut pieces = self.lock();
            for r in self.allocated_in(offset..end) {
                self.start(&mut pieces, r);
            }
            let from = pieces.range(..=offset).next_back().map_or(offset, |(&s, _)| s);
            pieces.range(from..end).map(|(_, p)| p.clone()).filter(|p| p.range.end > offset).collect()
        };
        // What no piece covers was never written.
        let mut at = offset;
        for p in &wanted {
            let gap = p.range.start.max(at);
            buf[(at - offset) as usize..(gap - offset) as usize].fill(0);
            let n = p.copy_into(offset, buf)?;
            at = p.range.end.min(end);
            if p.taken.fetch_add(n, Relaxed) + n >= p.range.end - p.range.start {
                let mut pieces = self.lock();
                if pieces.get(&p.range.start).is_some_and(|q| Arc::ptr_eq(q, p)) {
                    pieces.remove(&p.range.start);
                }
            }
        }
        buf[(at - offset) as usize..].fill(0);
        Ok(())
    }

    fn mapped(&self) -> Option<&[u8]> {
        None
    }

    fn fetch(&self, ranges: &[Range<u64>]) {
        let mut pieces = self.lock();
        for range in ranges {
            for r in self.allocated_in(range.clone()) {
                self.start(&mut pieces, r);
            }
        }
    }

    fn release(&self, range: Range<u64>) {
        // Pieces wholly before the end of a consumed window: never to be read.
        self.lock().retain(|_, p| p.range.end > range.end);
    }
}

impl<S: PageStore> Drop for BlobSource<S> {
    fn drop(&mut self) {
        // Reads still under way are of no use to anyone now.
        self.io.permits.close();
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use diskferry_blob::testing::MemStore;
    use std::collections::HashMap;

    const MIB: u64 = 1 << 20;

    /// A page blob of `size` bytes holding `data` at each offset.
    fn blob(size: u64, data: &[(u64, Vec<u8>)]) -> MemStore {
        let s = MemStore::new("c");
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async {
            s.create_container().await.unwrap();
            s.create_page_blob("d", size, HashMap::new(), None).await.unwrap();
            for (at, bytes) in data {
                for (k, piece) in bytes.chunks(PIECE as usize).enumerate() {
                    let to = at + k as u64 * PIECE;
                    s.put_pages("d", to, Bytes::copy_from_slice(piece), None).await.unwrap();
                }
            }
        });
        s
    }

    fn read(src: &dyn BlockSource, offset: u64, len: u64) -> Vec<u8> {
        let mut buf = vec![7u8; len as usize];
        src.read_exact_at(offset, &mut buf).unwrap();
        buf
    }

    #[test]
    fn reads_what_was_written_and_zeros_elsewhere_fetching_only_allocated_pages() {
        let a = vec![1u8; 3 * MIB as usize];
        let b = vec![2u8; 512];
        let store = blob(16 * MIB, &[(MIB, a.clone()), (9 * MIB + 512, b.clone())]);
        let src = BlobSource::open(store, "d", "test blob").unwrap();
        assert_eq!(src.size(), 16 * MIB, "no footer: the blob is the disk");
        assert_eq!(src.data_extents(0..16 * MIB).unwrap(), vec![MIB..4 * MIB, 9 * MIB + 512..9 * MIB + 1024]);
        assert_eq!(src.data_extents(0..16 * MIB).unwrap().iter().map(|r| r.end - r.start).sum::<u64>(), 3 * MIB + 512);
        // A read across data and a hole; one inside a never-written range.
        let got = read(&src, 0, 5 * MIB);
        assert!(got[..MIB as usize].iter().all(|&x| x == 0));
        assert_eq!(&got[MIB as usize..4 * MIB as usize], &a[..]);
        assert!(got[4 * MIB as usize..].iter().all(|&x| x == 0));
        assert!(read(&src, 12 * MIB, MIB).iter().all(|&x| x == 0));
        let got = read(&src, 9 * MIB, MIB);
        assert_eq!(&got[512..1024], &b[..]);
        assert!(got[..512].iter().chain(&got[1024..]).all(|&x| x == 0));
        // Only allocated bytes came over the wire, in pieces of at most 4 MiB
        // cut on the 4 MiB grid (1..4 MiB is one piece; the 512 bytes another).
        assert_eq!(src.fetched(), (3 * MIB + 512, 2));
        assert!(src.lock().is_empty(), "every piece read out is dropped");
    }

    #[test]
    fn a_blob_ending_in_a_vhd_footer_is_a_disk_of_its_size() {
        let disk = 8 * MIB;
        let footer = Footer::for_disk(disk, 1_700_000_000, b"x").encode().to_vec();
        let store = blob(disk + 512, &[(0, vec![3u8; 4096]), (disk, footer.clone())]);
        let src = BlobSource::open(store, "d", "test blob").unwrap();
        assert_eq!(src.size(), disk);
        assert_eq!(src.data_extents(0..disk).unwrap(), vec![0..4096]);
        // A footer of another size is data, and the blob a raw disk.
        let other = Footer::for_disk(4 * MIB, 1_700_000_000, b"x").encode().to_vec();
        let store = blob(disk + 512, &[(disk, other)]);
        assert_eq!(BlobSource::open(store, "d", "test blob").unwrap().size(), disk + 512);
    }

    #[test]
    fn announced_reads_are_fetched_ahead_and_released_windows_drop_their_pieces() {
        let data: Vec<u8> = (0..10 * MIB).map(|i| (i % 251) as u8).collect();
        let store = blob(16 * MIB, &[(0, data.clone())]);
        let src = BlobSource::open(store, "d", "test blob").unwrap();
        src.fetch(&[0..2 * MIB, 3 * MIB..10 * MIB]);
        {
            let p = src.lock();
            let cut: Vec<_> = p.values().map(|p| p.range.clone()).collect();
            assert_eq!(cut, vec![0..2 * MIB, 3 * MIB..4 * MIB, 4 * MIB..8 * MIB, 8 * MIB..10 * MIB]);
        }
        // Announcing again starts nothing new.
        src.fetch(std::slice::from_ref(&(MIB..9 * MIB)));
        assert_eq!(src.lock().len(), 5, "only the unannounced 2..3 MiB was added");
        assert_eq!(read(&src, 3 * MIB, MIB), &data[3 * MIB as usize..4 * MIB as usize]);
        assert_eq!(read(&src, 5 * MIB, MIB), &data[5 * MIB as usize..6 * MIB as usize]);
        src.release(0..8 * MIB);
        let left: Vec<_> = src.lock().values().map(|p| p.range.clone()).collect();
        assert_eq!(left, vec![8 * MIB..10 * MIB]);
        // A range read again after its piece was dropped is fetched again.
        assert_eq!(read(&src, 5 * MIB, MIB), &data[5 * MIB as usize..6 * MIB as usize]);
    }

    #[test]
    fn a_failed_read_is_an_error_at_its_offset_and_a_missing_blob_says_so() {
        let store = blob(8 * MIB, &[(0, vec![5u8; MIB as usize])]);
        let src = BlobSource::open(store.clone(), "d", "test blob").unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(store.delete("d", None, None)).unwrap();
        let mut buf = vec![0u8; MIB as usize];
        let e = src.read_exact_at(0, &mut buf).unwrap_err();
        assert!(e.to_string().contains("404"), "{e}");
        let e = BlobSource::open(store, "d", "test blob").unwrap_err();
        assert_eq!(e.to_string(), "source test blob: no such blob");
    }
}
