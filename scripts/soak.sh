#!/usr/bin/env bash
# Soak: N incremental syncs of random changes to a page blob on Azurite,
# through an HTTP fault proxy (503 with/without Retry-After, 500, delays,
# resets mid-request, truncated responses, writes whose answer is dropped;
# a random rate per sync up to 12%), with random SIGKILLs of the agent.
# After every sync: verify against the source, recovery point G-1 unchanged.
# Prints a figures table; fails on any mismatch or leftover.
# SOAK_RELAY=1: the same through a relay receiver (faults between sender and
# receiver; the receiver also killed and restarted mid-sync).
# Usage: [SOAK_RELAY=1] scripts/soak.sh [SYNCS [SECONDS [SEED]]]   (defaults 100, 900, 7)
source "$(dirname "$0")/lib/common.sh"
apt_need qemu-img qemu-utils
"$ROOT/scripts/azurite.sh" install
cd "$ROOT"
SOAK_SYNCS=${1:-100} SOAK_SECONDS=${2:-900} SOAK_SEED=${3:-7} \
  cargo test --release -q -p diskferry-agent --test faults soak -- --ignored --nocapture --test-threads 1
