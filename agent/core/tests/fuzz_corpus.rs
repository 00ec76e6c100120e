//! Replays the committed fuzz corpus and every crash reproducer
//! (`fuzz/corpus/<target>/`, `fuzz/artifacts/<target>/`) through the same
//! checks as the fuzz targets, so a fixed crash stays fixed.

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

type Check = fn(&[u8]);

/// Counts bytes held and the most held since the last reset: the manifest
/// property includes bounded allocation.
struct Counting;

static HELD: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; the
// counters are only observed.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let now = HELD.fetch_add(l.size(), Ordering::Relaxed) + l.size();
        PEAK.fetch_max(now, Ordering::Relaxed);
        // SAFETY: same layout, forwarded.
        unsafe { System.alloc(l) }
    }

    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        HELD.fetch_sub(l.size(), Ordering::Relaxed);
        // SAFETY: p came from System.alloc with this layout.
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static A: Counting = Counting;

#[test]
fn committed_fuzz_inputs_pass() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let targets: [(&str, Check); 7] = [
        ("manifest", diskferry_core::fuzzing::manifest),
        ("vhd_footer", diskferry_core::fuzzing::vhd_footer),
        ("journal", diskferry_core::fuzzing::journal),
        ("relay_frame", diskferry_core::fuzzing::relay_frame),
        ("job_spec", diskferry_core::fuzzing::job_spec),
        ("relay_window", diskferry_core::fuzzing::relay_window),
        ("relay_prior", diskferry_core::fuzzing::relay_prior),
    ];
    let mut seen = 0;
    for (name, check) in targets {
        for kind in ["corpus", "artifacts"] {
            let Ok(dir) = std::fs::read_dir(root.join(kind).join(name)) else { continue };
            for entry in dir.flatten() {
                let bytes = std::fs::read(entry.path()).unwrap_or_default();
                let before = HELD.load(Ordering::Relaxed);
                PEAK.store(before, Ordering::Relaxed);
                check(&bytes);
                let peak = PEAK.load(Ordering::Relaxed) - before;
                if name == "manifest" {
                    let bound = diskferry_core::fuzzing::MANIFEST_ALLOC_BOUND + 2 * bytes.len();
                    assert!(peak <= bound, "{}: {peak} bytes allocated, over {bound}", entry.path().display());
                }
                seen += 1;
            }
        }
    }
    assert!(seen >= 5, "the seed corpus is missing ({seen} inputs found)");
}
