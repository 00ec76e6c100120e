#!/usr/bin/env bash
# First and incremental sync of a 4 GiB disk image (25% random, 10% text-like,
# the rest never written, in scattered 1 MiB extents) to a page blob on
# Azurite, side by side in one run with what users run today:
#   - AzCopy (npm @azure-tools/azcopy-linux), `azcopy copy --blob-type PageBlob`
#   - the Python SDK, upload_blob(blob_type="PageBlob", max_concurrency=16)
# Both skip all-zero 4 MiB pages; neither can sync incrementally. Also prints
# Azurite's own CPU time per run: it is single-threaded Node.
# Then one disk through the strict proxy capped at C MiB/s per blob (Azure's
# 60 MiB/s standard page blob target, scaled to what Azurite sustains here):
# goodput against C, and the share of requests answered 503 ServerBusy,
# diskferry's adaptive pacer side by side with AzCopy through the same cap.
# Usage: scripts/bench-pageblob.sh [--rounds N] [--throttled-only] [--without-peer]
# (--without-peer: diskferry alone through the cap, for tuning; the ratio
# needs both.)
source "$(dirname "$0")/lib/common.sh"
ROUNDS=3
THROTTLED_ONLY=0
THROTTLED_WHO="diskferry azcopy"
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) ROUNDS=$2; shift 2 ;;
    --throttled-only) THROTTLED_ONLY=1; shift ;;
    --without-peer) THROTTLED_WHO=diskferry; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
apt_need /usr/bin/time time
build_release
make_workdir
source "$ROOT/scripts/lib/blobbench.sh"
azcopy_install
azurite_fresh bench

"$MKIMAGE" new "$W/disk.img" --size-mib 4096 --random 25 --text 10 --seed 31 >/dev/null
cat "$W/disk.img" >/dev/null
SIZE=$(stat -c %s "$W/disk.img")
B="python3 $ROOT/scripts/lib/bench.py --rounds $ROUNDS --watch-pid-file $W/azurite.pid --bytes $SIZE"

# One disk through a per-blob cap of C MiB/s (the strict proxy answers 503
# ServerBusy beyond it, as Azure does past a blob's target).
throttled() {
  local C=32
  "$MKIMAGE" new "$W/t.img" --size-mib 2048 --random 60 --seed 41 >/dev/null
  cat "$W/t.img" >/dev/null
  echo
  echo "## one disk through a per-blob ingress cap of $C MiB/s (strict proxy, 503 beyond it)"
  for who in $THROTTLED_WHO; do
    "$W/fresh.sh"
    coproc PX { exec "$STRICT_PROXY" "$PORT" "$W/px-$who.json" "$C"; }
    read -r PXPORT <&"${PX[0]}"
    local start end
    start=$(date +%s.%N)
    if [ $who = diskferry ]; then
      "$AGENT" sync "$W/t.img" --to "pageblob:http://127.0.0.1:$PXPORT/devstoreaccount1/bench/t.vhd" --json >"$W/t.json"
      end=$(date +%s.%N)
      # Checked after the clock stops: the verify reads the whole blob back.
      "$AGENT" verify "$W/t.img" --against "pageblob:$EP/devstoreaccount1/bench/t.vhd" >/dev/null
    else
      "$AZC" copy "$W/t.img" "http://127.0.0.1:$PXPORT/devstoreaccount1/bench/a.vhd?$SAS" --blob-type PageBlob \
        --from-to LocalBlob --log-level ERROR --output-level quiet || echo "azcopy failed (exit $?)"
      end=$(date +%s.%N)
    fi
    sleep 0.6
    kill "$PX_PID" 2>/dev/null; wait "$PX_PID" 2>/dev/null || true
    python3 - "$W" "$who" "$start" "$end" "$C" <<'PY'
import json, os, sys
w, who, start, end, cap = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
px = json.load(open(f"{w}/px-{who}.json"))
secs = end - start
if who == "diskferry":
    r = json.load(open(f"{w}/t.json"))
    data = r["wire"]["bytes_sent"]
    extra = f", pacer at the end: {r['wire']['concurrency']} in flight"
else:
    # AzCopy skips all-zero 4 MiB pages: the data it sends is the image's
    # allocated data, as for diskferry (both read the same sparse image).
    data = json.load(open(f"{w}/t.json"))["wire"]["bytes_sent"] if os.path.exists(f"{w}/t.json") else 0
    extra = ""
mib = data / 2**20
good = mib / secs
print(f"{who:10s} {secs:6.1f} s  goodput {good:5.1f} MiB/s = {good / cap:.2f} C  "
      f"503s {px['busy']} of {px['requests']} requests ({100 * px['busy'] / max(px['requests'], 1):.1f}%), "
      f"{px['page_writes_busy']} of {px['page_writes']} Put Page ({100 * px['page_writes_busy'] / max(px['page_writes'], 1):.1f}%){extra}")
PY
  done
}
if [ "$THROTTLED_ONLY" = 1 ]; then
  throttled
  exit 0
fi

$B --title "first sync of the 4 GiB image to a page blob on Azurite" --baseline azcopy \
  --prep diskferry "$W/fresh.sh" \
  --case diskferry "$AGENT sync $W/disk.img --to pageblob:$EP/devstoreaccount1/bench/d.vhd --source-id bench" \
  --prep azcopy "$W/fresh.sh" \
  --case azcopy "$AZC copy $W/disk.img '$EP/devstoreaccount1/bench/a.vhd?$SAS' --blob-type PageBlob --from-to LocalBlob --log-level ERROR --output-level quiet" \
  --prep python-sdk "$W/fresh.sh" \
  --case python-sdk "$PY $ROOT/scripts/lib/azblob.py upload $EP bench p.vhd $W/disk.img"

# The incremental sync after 2% of the chunks changed, against the cost of
# reading the image (scan) and of the first sync.
"$W/fresh.sh"
/usr/bin/time -f "%U %S" -o "$W/first.cpu" \
  "$AGENT" sync "$W/disk.img" --to "pageblob:$EP/devstoreaccount1/bench/i.vhd" --source-id bench --json >"$W/first.json"
# ROUNDS incrementals, each after another 2% of the chunks changed, each
# next to a scan of the same bytes: their medians are compared (one run of
# each varies by +-0.1 s of CPU on this machine).
python3 - "$ROOT/scripts/lib" "$W" "$AGENT" "$MKIMAGE" "pageblob:$EP/devstoreaccount1/bench/i.vhd" "$ROUNDS" <<'PY'
import json, statistics, subprocess, sys
sys.path.insert(0, sys.argv[1])
from bench import cores, cpu_floor, cpu_seconds, run
w, agent, mkimage, dest, rounds = sys.argv[2:]
azurite = int(open(f"{w}/azurite.pid").read())

def timed(cmd, out):
    with open(out, "w") as f:
        _, _, cpu = run(cmd, stdout=f)
    return json.load(open(out)), cpu

first = json.load(open(f"{w}/first.json"))
rows = []
for r in range(int(rounds)):
    subprocess.run([mkimage, "mutate", f"{w}/disk.img", "--percent", "2", "--seed", str(32 + r)],
                   check=True, stdout=subprocess.DEVNULL)
    subprocess.run(f"cat {w}/disk.img >/dev/null; sync", shell=True, check=True)
    scan, scan_cpu = timed(f"{agent} scan {w}/disk.img --json", f"{w}/scan.json")
    before = cpu_seconds(azurite)
    incr, incr_cpu = timed(f"{agent} sync {w}/disk.img --to {dest} --source-id bench --json", f"{w}/incr.json")
    rows.append((scan, scan_cpu, incr, incr_cpu, cpu_seconds(azurite) - before))
med = lambda k: statistics.median(k(r) for r in rows)
scan_s, scan_cpu = med(lambda r: r[0]["seconds"]), med(lambda r: r[1])
incr_s, incr_cpu, azurite_cpu = med(lambda r: r[2]["seconds"]), med(lambda r: r[3]), med(lambda r: r[4])
incr = rows[-1][2]
budget = scan_s + 0.05 * first["seconds"]
print(f"\n## incremental sync after 2% of chunks changed (median of {rounds})")
print(f"first sync {first['seconds']:.2f} s, sent {first['wire']['bytes_sent'] / 2**20:.0f} MiB")
print(f"scan       {scan_s:.2f} s (CPU {scan_cpu:.2f} s; rounds {' '.join(f'{r[1]:.2f}' for r in rows)})")
print(f"incremental {incr_s:.2f} s (CPU {incr_cpu:.2f} s; rounds {' '.join(f'{r[3]:.2f}' for r in rows)}), "
      f"last sent {incr['wire']['bytes_sent'] / 2**20:.1f} MiB "
      f"({incr['chunks_written']} chunks written, {incr['chunks_cleared']} cleared)")
print(f"  CPU: agent {incr_cpu:.2f} s + Azurite {azurite_cpu:.2f} s on {cores()} cores: "
      f"no schedule of it finishes in under {cpu_floor(incr_cpu, azurite_cpu):.2f} s")
print(f"wall: incremental <= scan + 5% of first = {budget:.2f} s -> {'met' if incr_s <= budget else 'NOT met'}")
# The target as issue 21 states it: the agent's own CPU (Azurite's cores
# are not the product's cost), and Put Page bytes equal to the changed
# non-zero chunks' bytes (in every round).
first_cpu = sum(map(float, open(f"{w}/first.cpu").read().split()))
cpu_budget = scan_cpu + 0.05 * first_cpu
print(f"target: agent CPU {incr_cpu:.2f} s <= scan CPU {scan_cpu:.2f} s + 5% of the first sync's {first_cpu:.2f} s "
      f"= {cpu_budget:.2f} s -> {'met' if incr_cpu <= cpu_budget else 'NOT met'}")
for r in rows:
    sent, changed = r[2]["wire"]["bytes_sent"], r[2]["bytes_written"]
    print(f"target: Put Page bytes {sent} = changed non-zero chunk bytes {changed} -> "
          f"{'met' if sent == changed else f'NOT met ({sent - changed:+d})'}")
PY
"$AGENT" verify "$W/disk.img" --against "pageblob:$EP/devstoreaccount1/bench/i.vhd" >&2

throttled
