#!/usr/bin/env bash
# Fuzz every target for a bounded time (default 60 s each) with cargo-fuzz
# (libFuzzer). Stable toolchain: RUSTC_BOOTSTRAP=1 unlocks the sanitizer flags.
# New corpus entries land in fuzz/corpus/<target>/ (minimize with
# `cargo fuzz cmin` before committing); crashes land in fuzz/artifacts/<target>/
# and `cargo test` replays them (agent/core/tests/fuzz_corpus.rs).
# Usage: scripts/fuzz.sh [SECONDS] [TARGET...]
source "$(dirname "$0")/lib/common.sh"
SECS=${1:-60}
shift || true
command -v cargo-fuzz >/dev/null || { say "installing cargo-fuzz"; cargo install cargo-fuzz --locked --quiet --root "$TOOLS"; }
cd "$ROOT/fuzz"
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(RUSTC_BOOTSTRAP=1 cargo fuzz list)
for t in "${targets[@]}"; do
  say "fuzzing $t for ${SECS}s"
  RUSTC_BOOTSTRAP=1 cargo fuzz run "$t" -- -max_total_time="$SECS" -print_final_stats=1 2>&1 \
    | grep -E "^(Done|stat::number_of_executed_units|==|SUMMARY)" || true
done
