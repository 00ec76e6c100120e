#!/usr/bin/env bash
# Chaos: run every fault scenario of the test suite over and over for a
# bounded time (default 20 minutes): storage faults of every kind and the
# sweep (agent/tests/faults.rs), relay connection cuts, HTTP faults between
# sender and receiver, killed senders and receivers (agent/tests/relay.rs),
# killed agents mid-sync (agent/tests/pageblob.rs), killed coordinators at
# four phases (coordinator/tests/crash.rs). Timing differs run to run, so
# repetition finds what one run misses. Stops at the first failure.
# Usage: scripts/chaos.sh [SECONDS]
source "$(dirname "$0")/lib/common.sh"
SECS=${1:-1200}
apt_need qemu-img qemu-utils
"$ROOT/scripts/azurite.sh" install
cd "$ROOT"
cargo build --release -q -p diskferry-agent -p diskferry
end=$((SECONDS + SECS))
n=0
while [ $SECONDS -lt $end ]; do
  n=$((n + 1))
  say "chaos round $n"
  cargo test --release -q -p diskferry-agent --test faults --test relay --test pageblob -- --test-threads 2
  cargo test --release -q -p diskferry --test crash -- --test-threads 1
done
say "chaos: $n rounds, no failure"
