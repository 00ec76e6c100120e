//! Replays the committed fuzz corpus and every crash reproducer
//! (`fuzz/corpus/<target>/`, `fuzz/artifacts/<target>/`) through the same
//! checks as the fuzz targets, so a fixed crash stays fixed.

use std::path::PathBuf;

type Check = fn(&[u8]);

#[global_allocator]
static A: diskferry_testkit::alloc::Counting = diskferry_testkit::alloc::Counting;

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
                let before = diskferry_testkit::alloc::mark();
                check(&bytes);
                let peak = diskferry_testkit::alloc::peak_since(before);
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
