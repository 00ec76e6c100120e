#!/usr/bin/env bash
# Scan throughput of `diskferry-agent scan` side by side with b3sum, on the same
# cached files, with the same thread count, in one run:
#   (a) a 2 GiB file of random bytes, (b) a 4 GiB image with 75% zero chunks.
# Usage: scripts/bench-scan.sh [--rounds N] [--threads N]
source "$(dirname "$0")/lib/common.sh"
ROUNDS=7
THREADS=$(nproc)
while [ $# -gt 0 ]; do
  case $1 in
    --rounds) ROUNDS=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    *) echo "usage: $0 [--rounds N] [--threads N]" >&2; exit 2 ;;
  esac
done
command -v b3sum >/dev/null || { say "installing b3sum"; cargo install b3sum --locked --quiet --root "$TOOLS"; }
build_release
make_workdir
"$MKIMAGE" new "$W/random.img" --size-mib 2048 --random 100 --text 0 --seed 11 >/dev/null
"$MKIMAGE" new "$W/zero75.img" --size-mib 4096 --random 25 --text 0 --seed 12 >/dev/null
cat "$W/random.img" "$W/zero75.img" >/dev/null   # both cached, as the issue asks
say "b3sum $(b3sum --version | awk '{print $2}'), $THREADS threads, $(nproc) cores"
for img in random zero75; do
  size=$(stat -c %s "$W/$img.img")
  python3 "$ROOT/scripts/lib/bench.py" --rounds "$ROUNDS" --title "scan $img.img ($((size >> 20)) MiB, cached)" \
    --bytes "$size" --baseline b3sum \
    --case diskferry-agent "$AGENT scan $W/$img.img --threads $THREADS" \
    --case b3sum "b3sum --num-threads $THREADS $W/$img.img"
done
