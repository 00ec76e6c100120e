#!/usr/bin/env bash
# `diskferry-agent sync --to file:` against what a user would run instead:
#  - first sync of a 4 GiB image (75% zero chunks) vs `qemu-img convert -O vpc -o subformat=fixed`,
#    durable: followed by `sync -d`, and with `-t none` (the target: >= 1.0x the faster)
#  - incremental sync after 2% of the chunks changed vs `rsync --inplace --no-whole-file`
#  - peak RSS of scan and sync on 4 GiB and 16 GiB sparse images
# Usage: scripts/bench-sync-local.sh [--rounds N] [--skip-16g]
source "$(dirname "$0")/lib/common.sh"
ROUNDS=5
BIG=1
while [ $# -gt 0 ]; do
  case $1 in
    --rounds) ROUNDS=$2; shift 2 ;;
    --skip-16g) BIG=0; shift ;;
    *) echo "usage: $0 [--rounds N] [--skip-16g]" >&2; exit 2 ;;
  esac
done
apt_need rsync rsync
apt_need qemu-img qemu-utils
apt_need /usr/bin/time time
build_release
make_workdir
B="python3 $ROOT/scripts/lib/bench.py --rounds $ROUNDS"

"$MKIMAGE" new "$W/v1.img" --size-mib 4096 --random 25 --text 0 --seed 21 >/dev/null
cat "$W/v1.img" >/dev/null
# Each run starts from a quiet disk (`sync` in the untimed prep), so one
# tool's leftover writeback does not land on the next. diskferry flushes
# (fdatasync) before it publishes the manifest; qemu-img convert does not
# flush at all, so it is shown a second time followed by `sync -d`.
# diskferry publishes only durable data: its peers are the durable copies,
# qemu-img convert then `sync -d`, and qemu-img convert -t none (O_DIRECT,
# flushed); the target is >= 1.0x the faster of the two. The unflushed
# convert is shown for scale.
export BENCH_JSON="$W/first.jsonl"
rm -f "$BENCH_JSON"
$B --title "first sync, 4 GiB image, 75% zero chunks" --baseline qemu-img-convert \
  --prep diskferry "rm -f $W/d.vhd $W/d.vhd.manifest && sync" \
  --case diskferry "$AGENT sync $W/v1.img --to file:$W/d.vhd" \
  --prep qemu-img-convert "rm -f $W/q.vhd && sync" \
  --case qemu-img-convert "qemu-img convert -f raw -O vpc -o subformat=fixed $W/v1.img $W/q.vhd" \
  --prep qemu-img-convert+sync "rm -f $W/q.vhd && sync" \
  --case qemu-img-convert+sync "qemu-img convert -f raw -O vpc -o subformat=fixed $W/v1.img $W/q.vhd && sync -d $W/q.vhd" \
  --prep qemu-img-convert-t-none "rm -f $W/q.vhd && sync" \
  --case qemu-img-convert-t-none "qemu-img convert -t none -f raw -O vpc -o subformat=fixed $W/v1.img $W/q.vhd"
python3 - "$BENCH_JSON" <<'PY'
import json, sys
t = {r["tool"]: r["median_s"] for r in map(json.loads, open(sys.argv[1]))}
peer = min(["qemu-img-convert+sync", "qemu-img-convert-t-none"], key=t.get)
r = t[peer] / t["diskferry"]
print(f"first sync against the faster durable copy ({peer}, {t[peer]:.3f} s): {r:.2f}x "
      f"(target >= 1.0: {'met' if r >= 1.0 else 'NOT met'})")
PY
unset BENCH_JSON
qemu-img compare -q -f raw -F vpc "$W/v1.img" "$W/d.vhd"
rm -f "$W/q.vhd"

# Incremental: both destinations hold v1; the source becomes v2 (2% of chunks).
"$AGENT" sync "$W/v1.img" --to "file:$W/d.vhd" --source-id bench >/dev/null
cp --sparse=always "$W/d.vhd" "$W/d1.vhd"; cp "$W/d.vhd.manifest" "$W/d1.manifest"
cp --sparse=always "$W/v1.img" "$W/r1.img"
cp --sparse=always "$W/v1.img" "$W/v2.img"
"$MKIMAGE" mutate "$W/v2.img" --percent 2 --seed 22 >&2
cat "$W/v2.img" "$W/d1.vhd" "$W/r1.img" >/dev/null
$B --title "incremental sync after 2% of chunks changed, 4 GiB" --baseline rsync \
  --prep diskferry "cp --sparse=always $W/d1.vhd $W/d.vhd && cp $W/d1.manifest $W/d.vhd.manifest && sync" \
  --case diskferry "$AGENT sync $W/v2.img --to file:$W/d.vhd --source-id bench" \
  --prep rsync "cp --sparse=always $W/r1.img $W/r.img && sync" \
  --case rsync "rsync --inplace --no-whole-file -I $W/v2.img $W/r.img"
qemu-img compare -q -f raw -F vpc "$W/v2.img" "$W/d.vhd"
cmp "$W/v2.img" "$W/r.img"
rm -f "$W"/d1.* "$W"/r*.img

say "peak RSS (memory stays bounded whatever the disk size)"
sizes="4096"
[ "$BIG" = 1 ] && sizes="4096 16384"
for mib in $sizes; do
  "$MKIMAGE" new "$W/s.img" --size-mib "$mib" --random 25 --text 10 --seed 23 >/dev/null
  rm -f "$W/s.vhd" "$W/s.vhd.manifest"
  scan=$( { /usr/bin/time -f %M "$AGENT" scan "$W/s.img" >/dev/null; } 2>&1 | tail -1)
  sync=$( { /usr/bin/time -f %M "$AGENT" sync "$W/s.img" --to "file:$W/s.vhd" >/dev/null; } 2>&1 | tail -1)
  printf '%6d MiB image: peak RSS scan %4d MiB, first sync %4d MiB\n' "$mib" $((scan / 1024)) $((sync / 1024))
  rm -f "$W"/s.*
done
