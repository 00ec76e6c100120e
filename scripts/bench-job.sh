#!/usr/bin/env bash
# `diskferry-agent run --job` with several disks, to file: destinations:
#  - a job of 4 disks (mixed data, 25% random + 25% text, 256-1024 MiB) all at
#    once against the same four syncs one after another (CPU-bound here:
#    all-at-once must not be slower);
#  - the same job with each source capped (read_limit R): wall time against
#    the largest disk's data / R;
#  - peak RSS of a job of 1, 4 and 16 disks (256 MiB each);
#  - a job of 4 disks to page blobs on Azurite through the strict proxy,
#    capped at C MiB/s per blob (503 ServerBusy beyond it, as Azure does past
#    a blob's target): wall time against the limit (the largest disk's data
#    / C, target >= 0.9), side by side with AzCopy uploading the same four
#    images in one `azcopy copy` through the same proxy; each side's CPU.
# Usage: scripts/bench-job.sh [--rounds N] [--skip-pageblob | --pageblob-only]
source "$(dirname "$0")/lib/common.sh"
ROUNDS=3
PAGEBLOB=1
while [ $# -gt 0 ]; do
  case $1 in
    --rounds) ROUNDS=$2; shift 2 ;;
    --skip-pageblob) PAGEBLOB=0; shift ;;
    --pageblob-only) PAGEBLOB=2; shift ;;
    *) echo "usage: $0 [--rounds N] [--skip-pageblob | --pageblob-only]" >&2; exit 2 ;;
  esac
done
apt_need /usr/bin/time time
build_release
make_workdir
B="python3 $ROOT/scripts/lib/bench.py --rounds $ROUNDS"

# job FILE LIMIT SIZES...: a job of disks d0..dN-1 (one per size) to
# file:$W/out/dI.vhd, each source read at most LIMIT bytes/s (0: no limit);
# DEST_PREFIX, when set, sends disk I to pageblob:${DEST_PREFIX}dI.vhd instead.
job() {
  local out=$1 limit=$2; shift 2
  python3 - "$out" "$W" "$limit" "${DEST_PREFIX:-}" "$@" <<'PY'
import json, sys
out, w, limit, prefix, sizes = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5:]
disks = []
for i, _ in enumerate(sizes):
    dest = f"pageblob:{prefix}d{i}.vhd" if prefix else f"file:{w}/out/d{i}.vhd"
    d = {"name": f"d{i}", "source": f"{w}/d{i}.img", "source_id": f"vm/d{i}", "destinations": [dest]}
    if limit:
        d["read_limit"] = limit
    disks.append(d)
json.dump({"version": 1, "run_id": "bench", "disks": disks}, open(out, "w"))
PY
}

if [ "$PAGEBLOB" != 2 ]; then
SIZES=(1024 768 512 256)
for i in "${!SIZES[@]}"; do
  "$MKIMAGE" new "$W/d$i.img" --size-mib "${SIZES[$i]}" --random 25 --text 25 --seed $((30 + i)) >/dev/null
done
cat "$W"/d*.img >/dev/null
job "$W/job4.json" 0 "${SIZES[@]}"
serial=""
for i in "${!SIZES[@]}"; do
  serial="$serial $AGENT sync $W/d$i.img --to file:$W/out/d$i.vhd --source-id vm/d$i >/dev/null &&"
done
serial="${serial% &&}"
$B --title "a job of 4 disks (1 GiB, 768, 512, 256 MiB; mixed data), first sync to file:" --baseline one-by-one \
  --prep all-at-once "rm -rf $W/out && mkdir $W/out && sync" \
  --case all-at-once "$AGENT run --job $W/job4.json --status-file $W/status.json" \
  --prep one-by-one "rm -rf $W/out && mkdir $W/out && sync" \
  --case one-by-one "$serial"

R=$((64 << 20))
job "$W/job4r.json" "$R" "${SIZES[@]}"
# What the limit paces is what is read: the data, not the holes.
read0=$("$AGENT" scan "$W/d0.img" --json | python3 -c "import json,sys; print(json.load(sys.stdin)['bytes_read'])")
floor=$(python3 -c "print(($read0 - (32 << 20)) / $R)")
export BENCH_JSON="$W/bench.jsonl"
rm -f "$BENCH_JSON"
$B --title "the same job, each source at most $((R >> 20)) MiB/s" --baseline all-at-once \
  --prep all-at-once "rm -rf $W/out && mkdir $W/out && sync" \
  --case all-at-once "$AGENT run --job $W/job4r.json --status-file $W/status.json"
python3 - "$BENCH_JSON" "$floor" "$read0" <<'PY'
import json, sys
wall = json.loads(open(sys.argv[1]).readline())["median_s"]
floor, read = float(sys.argv[2]), int(sys.argv[3])
print(f"largest disk: {read >> 20} MiB of data; at the limit (its first 32 MiB window at once) {floor:.2f} s; "
      f"the job took {wall:.2f} s: {floor / wall:.2f} of the limit")
PY
unset BENCH_JSON

say "peak RSS of a job of 1, 4 and 16 disks (256 MiB each, mixed data)"
for i in $(seq 0 15); do
  "$MKIMAGE" new "$W/d$i.img" --size-mib 256 --random 25 --text 25 --seed $((50 + i)) >/dev/null
done
for n in 1 4 16; do
  sizes=(); for i in $(seq 1 "$n"); do sizes+=(256); done
  job "$W/jobn.json" 0 "${sizes[@]}"
  rm -rf "$W/out" && mkdir "$W/out" && sync
  /usr/bin/time -f "$n disk(s): %e s, peak RSS %M KiB" "$AGENT" run --job "$W/jobn.json" --status-file "$W/status.json" >/dev/null
done
fi

[ "$PAGEBLOB" != 0 ] || exit 0
C=16
source "$ROOT/scripts/lib/blobbench.sh"
azcopy_install
azurite_fresh bench
PSIZES=(512 256 192 128)
rm -f "$W"/d*.img
mkdir -p "$W/pb"
for i in "${!PSIZES[@]}"; do
  "$MKIMAGE" new "$W/d$i.img" --size-mib "${PSIZES[$i]}" --random 25 --text 25 --seed $((70 + i)) >/dev/null
  ln -f "$W/d$i.img" "$W/pb/d$i.img"
done
cat "$W"/d*.img >/dev/null
echo
echo "## a job of 4 disks (512, 256, 192, 128 MiB; mixed data) to page blobs through a per-blob cap of $C MiB/s"
for who in diskferry azcopy; do
  "$W/fresh.sh"
  coproc PX { exec "$STRICT_PROXY" "$PORT" "$W/px-$who.json" "$C"; }
  read -r PXPORT <&"${PX[0]}"
  if [ $who = diskferry ]; then
    DEST_PREFIX="http://127.0.0.1:$PXPORT/devstoreaccount1/bench/" job "$W/jobpb.json" 0 "${PSIZES[@]}"
    cmd="$AGENT run --job $W/jobpb.json --status-file $W/status.json --json"
  else
    cmd="$AZC copy '$W/pb/*' 'http://127.0.0.1:$PXPORT/devstoreaccount1/bench/azc?$SAS' --blob-type PageBlob --from-to LocalBlob --log-level ERROR --output-level quiet"
  fi
  python3 - "$ROOT/scripts/lib" "$cmd" "$W/pb-$who.json" <<'PY'
import json, sys
sys.path.insert(0, sys.argv[1])
from bench import run
with open(sys.argv[3] + ".out", "w") as out:
    wall, _, cpu = run(sys.argv[2], stdout=out)
json.dump({"wall": wall, "cpu": cpu}, open(sys.argv[3], "w"))
PY
  sleep 0.6
  kill "$PX_PID" 2>/dev/null; wait "$PX_PID" 2>/dev/null || true
  if [ $who = diskferry ]; then
    for i in "${!PSIZES[@]}"; do
      "$AGENT" verify "$W/d$i.img" --against "pageblob:$EP/devstoreaccount1/bench/d$i.vhd" >/dev/null
    done
  fi
done
read0=$("$AGENT" scan "$W/d0.img" --json | python3 -c "import json,sys; print(json.load(sys.stdin)['bytes_read'])")
python3 - "$W" "$C" "$read0" <<'PY'
import json, sys
w, cap, largest = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
limit = largest / 2**20 / cap
print(f"the limit: the largest disk's {largest >> 20} MiB of data at {cap:.0f} MiB/s = {limit:.1f} s")
for who in ["diskferry", "azcopy"]:
    r, px = json.load(open(f"{w}/pb-{who}.json")), json.load(open(f"{w}/px-{who}.json"))
    print(f"{who:10s} {r['wall']:6.1f} s = {limit / r['wall']:.2f} of the limit, CPU {r['cpu']:.2f} s, "
          f"503s {px['busy']} of {px['requests']} requests")
d, a = (json.load(open(f"{w}/pb-{x}.json"))["wall"] for x in ["diskferry", "azcopy"])
print(f"diskferry against AzCopy: {a / d:.2f}x")
PY
