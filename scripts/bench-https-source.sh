#!/usr/bin/env bash
# A disk read over HTTPS from a page blob (a managed snapshot's export), side
# by side in one run with what users run today to get a snapshot's bytes out:
#   - AzCopy (npm @azure-tools/azcopy-linux), `azcopy copy URL FILE` (a
#     download; it asks Get Page Ranges and skips empty ranges too)
#   - the Python SDK, download_blob().readinto(FILE)
# The source: the 4 GiB benchmark image (25% random, 10% text-like, the rest
# never written) as a fixed VHD (qemu-img), written to Azurite by the Python
# SDK with only its data extents, as a snapshot holds only written pages;
# read through a blob SAS (sr=b, sp=r). diskferry syncs it to a local VHD
# (file:, durable); the peers download it whole. Prints wall time, CPU, peak
# RSS and Azurite's CPU per run (it is single-threaded Node and serves every
# byte), then an incremental sync after 2% of the chunks changed (a new blob,
# as the next snapshot is), with the bytes that crossed the wire.
# Usage: scripts/bench-https-source.sh [--rounds N]
source "$(dirname "$0")/lib/common.sh"
ROUNDS=3
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) ROUNDS=$2; shift 2 ;;
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
qemu-img convert -f raw -O vpc -o subformat=fixed,force_size=on "$W/disk.img" "$W/g1.vhd"
"$PY" "$ROOT/scripts/lib/azblob.py" pages "$EP" bench g1.vhd "$W/g1.vhd"
BSAS=$("$PY" "$ROOT/scripts/lib/azblob.py" blobsas "$EP" bench g1.vhd)
URL="$EP/devstoreaccount1/bench/g1.vhd?$BSAS"
SIZE=$(stat -c %s "$W/disk.img")
B="python3 $ROOT/scripts/lib/bench.py --rounds $ROUNDS --watch-pid-file $W/azurite.pid --bytes $SIZE"

$B --title "a 4 GiB snapshot (1.4 GiB written) read over HTTP from Azurite to a local file" --baseline azcopy \
  --prep diskferry "rm -f $W/d.vhd $W/d.vhd.manifest" \
  --case diskferry "$AGENT sync '$URL' --to file:$W/d.vhd --source-id bench" \
  --prep azcopy "rm -f $W/a.vhd" \
  --case azcopy "$AZC copy '$URL' $W/a.vhd --from-to BlobLocal --log-level ERROR --output-level quiet" \
  --prep python-sdk "rm -f $W/p.vhd" \
  --case python-sdk "$PY -c \"import sys; from azure.storage.blob import BlobClient; \
BlobClient.from_blob_url(sys.argv[1], api_version='2025-11-05').download_blob(max_concurrency=16).readinto(open(sys.argv[2], 'wb'))\" '$URL' $W/p.vhd"
qemu-img compare -f raw -F vpc "$W/disk.img" "$W/d.vhd" >&2
qemu-img compare -f vpc -F vpc "$W/g1.vhd" "$W/a.vhd" >&2

# The next snapshot: 2% of the chunks changed, a new blob; an incremental
# sync reads and hashes all of it again (no range hint here), and writes
# only what changed.
"$MKIMAGE" mutate "$W/disk.img" --percent 2 --seed 32 >/dev/null
qemu-img convert -f raw -O vpc -o subformat=fixed,force_size=on "$W/disk.img" "$W/g2.vhd"
"$PY" "$ROOT/scripts/lib/azblob.py" pages "$EP" bench g2.vhd "$W/g2.vhd"
BSAS2=$("$PY" "$ROOT/scripts/lib/azblob.py" blobsas "$EP" bench g2.vhd)
rm -f "$W/d.vhd" "$W/d.vhd.manifest"
"$AGENT" sync "$URL" --to "file:$W/d.vhd" --source-id bench >/dev/null
/usr/bin/time -f "%e s wall, %U s user, %S s system, %M KiB peak RSS" -o "$W/incr.time" \
  "$AGENT" sync "$EP/devstoreaccount1/bench/g2.vhd?$BSAS2" --to "file:$W/d.vhd" --source-id bench --json >"$W/incr.json"
python3 - "$W" <<'PY'
import json, sys
w = sys.argv[1]
r = json.load(open(f"{w}/incr.json"))
print(f"\n## incremental sync of the next snapshot (2% of chunks changed)")
print(f"read {r['bytes_read'] / 2**20:.0f} MiB of {r['disk_size'] / 2**20:.0f} MiB, "
      f"wrote {r['chunks_written']} chunks, cleared {r['chunks_cleared']}: {open(f'{w}/incr.time').read().strip()}")
PY
qemu-img compare -f raw -F vpc "$W/disk.img" "$W/d.vhd" >&2
