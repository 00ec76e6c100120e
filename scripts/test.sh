#!/usr/bin/env bash
# Every check CI runs, on a fresh machine: installs what is missing (qemu-img,
# promtool, Azurite from npm, PostgreSQL), then format, lints and all tests (unit,
# property, golden, integration on image files, loop devices and Azurite,
# fuzz regressions). Each test binary starts and stops its own Azurite.
# Usage: scripts/test.sh
source "$(dirname "$0")/lib/common.sh"
apt_need qemu-img qemu-utils
apt_need losetup mount
apt_need flock util-linux
apt_need promtool prometheus      # judges the /metrics exposition
apt_need node nodejs              # Azurite, the storage emulator the page blob tests run against
apt_need npm npm
apt_need python3 python3          # the module-cycle check and the bench scripts
apt_need systemd-analyze systemd  # judges the worker's unit: valid, and its exposure score
"$ROOT/scripts/azurite.sh" install
"$ROOT/scripts/postgres.sh" install   # shared coordinator state: a private cluster, started below
cd "$ROOT"
# A run from a clean clone gains nothing from incremental caches, and they
# double the size of target/ (a CI machine's disk filled up once).
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
say "cargo fmt --check"
cargo fmt --all -- --check
say "no import cycle between the modules of a crate"
python3 scripts/lib/module_cycles.py agent/core/src agent/blob/src agent/http/src agent/src coordinator/src agent/testkit/src
say "cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
# One PostgreSQL cluster for the whole run (each test takes a database of
# its own), stopped however the run ends.
PG=$("$ROOT/scripts/postgres.sh" start)
eval "$PG"
trap '"$ROOT/scripts/postgres.sh" stop "$PG_DIR"' EXIT
export DISKFERRY_TEST_POSTGRES="$PG_URL"
say "cargo test"
cargo test --workspace --all-targets
cargo test --workspace --doc
say "the coordinator's tests again, with its state in PostgreSQL"
DISKFERRY_TEST_BACKEND=postgres cargo test -p diskferry --tests
say "the Debian package: installs, its units verify, pages render, completions load, the demo runs, it purges clean"
"$ROOT/scripts/test-package.sh"
