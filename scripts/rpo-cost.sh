#!/usr/bin/env bash
# RPO and cost per incremental run (issue 18, item 4): for a replica on the
# ARM simulator with a real agent on Azurite, runs after 0%, 0.1%, 2% and
# 20% of the disks changed, with [run] placement = "vm" and "auto": ARM
# write calls, resources created, worker VMs, bytes read and sent (all
# measured), and the wall time and worker-VM minutes the same run would take
# for disks 4096 times larger, by the latency model in
# coordinator/tests/rpo_cost.rs (`mod model`), whose figures and sources are
# listed in docs/azure.md ("What a run costs in time").
# Usage: scripts/rpo-cost.sh
source "$(dirname "$0")/lib/common.sh"
"$ROOT/scripts/azurite.sh" install
cd "$ROOT"
cargo build --quiet -p diskferry-agent
cargo test --quiet -p diskferry --test rpo_cost -- --ignored --nocapture 2>/dev/null | grep -E '^(\||##|Measured|Modelled|auto)'
