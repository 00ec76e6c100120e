#!/usr/bin/env bash
# `diskferry-agent run --job` with several disks, to file: destinations:
#  - a job of 4 disks (mixed data, 25% random + 25% text, 256-1024 MiB) all at
#    once against the same four syncs one after another (CPU-bound here:
#    all-at-once must not be slower);
#  - the same job with each source capped (read_limit R): wall time against
#    the largest disk's data / R;
#  - peak RSS of a job of 1, 4 and 16 disks (256 MiB each).
# Usage: scripts/bench-job.sh [--rounds N]
source "$(dirname "$0")/lib/common.sh"
ROUNDS=3
while [ $# -gt 0 ]; do
  case $1 in
    --rounds) ROUNDS=$2; shift 2 ;;
    *) echo "usage: $0 [--rounds N]" >&2; exit 2 ;;
  esac
done
apt_need /usr/bin/time time
build_release
make_workdir
B="python3 $ROOT/scripts/lib/bench.py --rounds $ROUNDS"

# job FILE N SIZES... [read_limit]: a job of disks d0..dN-1 with those sizes (MiB).
job() {
  local out=$1 limit=$2; shift 2
  python3 - "$out" "$W" "$limit" "$@" <<'PY'
import json, sys
out, w, limit, sizes = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]
disks = []
for i, _ in enumerate(sizes):
    d = {"name": f"d{i}", "source": f"{w}/d{i}.img", "source_id": f"vm/d{i}",
         "destinations": [f"file:{w}/out/d{i}.vhd"]}
    if limit:
        d["read_limit"] = limit
    disks.append(d)
json.dump({"version": 1, "run_id": "bench", "disks": disks}, open(out, "w"))
PY
}

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
