//! Criterion micro-benchmarks of the core's hot paths: zero check, chunk
//! digest, manifest encode/decode, diff. Run: `cargo bench -p diskferry-bench`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use diskferry_core::digest::Digest;
use diskferry_core::geometry::{ChunkSize, Geometry};
use diskferry_core::manifest::{ChunkState, Manifest};
use diskferry_core::plan;
use diskferry_core::zero::is_zero;

fn chunk_work(c: &mut Criterion) {
    let mut g = c.benchmark_group("chunk");
    let zeros = vec![0u8; 1 << 20];
    let mut random = vec![0u8; 1 << 20];
    diskferry_bench::Rng::new(1).fill(&mut random);
    g.throughput(Throughput::Bytes(1 << 20));
    g.bench_function("is_zero/zero-1MiB", |b| b.iter(|| is_zero(std::hint::black_box(&zeros))));
    g.bench_function("is_zero/random-1MiB", |b| b.iter(|| is_zero(std::hint::black_box(&random))));
    g.bench_function("blake3/1MiB", |b| b.iter(|| Digest::of(std::hint::black_box(&random))));
    g.bench_function("state_of/random-1MiB", |b| b.iter(|| ChunkState::of(std::hint::black_box(&random))));
    g.finish();
}

fn manifest(n: u64) -> Manifest {
    let geometry = Geometry::new(n << 20, ChunkSize::default()).unwrap_or_else(|e| panic!("{e}"));
    let chunks = (0..n)
        .map(|i| if i % 4 == 0 { ChunkState::Data(Digest::of(&i.to_le_bytes())) } else { ChunkState::Zero })
        .collect();
    Manifest { geometry, generation: 1, created_unix_ms: 0, source_id: "bench".into(), chunks }
}

fn manifests(c: &mut Criterion) {
    let mut g = c.benchmark_group("manifest");
    for n in [16_384u64, 262_144] {
        let m = manifest(n);
        let enc = m.encode().unwrap_or_default();
        g.throughput(Throughput::Elements(n));
        g.bench_with_input(BenchmarkId::new("encode", n), &m, |b, m| b.iter(|| m.encode()));
        g.bench_with_input(BenchmarkId::new("decode", n), &enc, |b, e| b.iter(|| Manifest::decode(e)));
        let mut cur: Vec<ChunkState> = m.chunks.iter().collect();
        for i in (0..cur.len()).step_by(50) {
            cur[i] = ChunkState::Data(Digest::of(&(i as u64 + 7).to_le_bytes()));
        }
        g.bench_with_input(BenchmarkId::new("diff", n), &cur, |b, cur| {
            b.iter(|| plan::diff(m.geometry, &m.chunks, m.geometry, cur))
        });
    }
    g.finish();
}

criterion_group!(benches, chunk_work, manifests);
criterion_main!(benches);
