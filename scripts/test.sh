#!/usr/bin/env bash
# Every check CI runs, on a fresh machine: installs what is missing, then
# format, lints and all tests (unit, property, golden, integration, fuzz
# regressions). Usage: scripts/test.sh
source "$(dirname "$0")/lib/common.sh"
apt_need qemu-img qemu-utils
apt_need losetup mount
apt_need flock util-linux
cd "$ROOT"
say "cargo fmt --check"
cargo fmt --all -- --check
say "cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
say "cargo test"
cargo test --workspace --all-targets
cargo test --workspace --doc
