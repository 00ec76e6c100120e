#!/usr/bin/env bash
# The main job on the embedded default (`local` provider + Azurite), on one
# machine: a sample VM with two disks holding real ext4 filesystems, replicated
# to page blobs, changed, replicated again, the newest recovery point imported
# and compared with the snapshot it was taken from.
# Usage: scripts/demo.sh [--keep DIR]   (default: everything is removed at the end)
source "$(dirname "$0")/lib/common.sh"
KEEP=""
[ "${1:-}" = "--keep" ] && KEEP=${2:?--keep needs a folder}
apt_need qemu-img qemu-utils
apt_need mkfs.ext4 e2fsprogs
apt_need debugfs e2fsprogs
build_release
if [ -n "$KEEP" ]; then mkdir -p "$KEEP"; W=$(cd "$KEEP" && pwd); else make_workdir; fi

say "1. Azurite (the storage emulator) as the destination region"
eval "$("$ROOT/scripts/azurite.sh" start "$W/azurite")"
cleanup() {
  "$ROOT/scripts/azurite.sh" stop "$AZURITE_PID"
  [ -n "$KEEP" ] || rm -rf "$W"
}
trap cleanup EXIT
export AZURE_STORAGE_CONNECTION_STRING="DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;"
export DISKFERRY_STATE_DIR="$W/state" DISKFERRY_CONFIG="$W/diskferry.toml"
cat >"$DISKFERRY_CONFIG" <<EOF
[storage]
create_container = true
[run]
status_interval_ms = 500
EOF

say "2. a sample VM: disks os (512 MiB) and data (256 MiB), ext4 with files, made without mounting"
mkdir -p "$W/vm/files-os/etc" "$W/vm/files-os/app" "$W/vm/files-data/db"
python3 - "$W/vm" <<'PY'
import os, random, sys
root = sys.argv[1]
rnd = random.Random(7)
words = "disk block chunk page blob region replica snapshot worker agent manifest".split()
for i in range(200):
    with open(f"{root}/files-os/etc/conf{i}.txt", "w") as f:
        f.write("\n".join(" ".join(rnd.choice(words) for _ in range(12)) for _ in range(200)))
for i in range(6):
    with open(f"{root}/files-os/app/lib{i}.bin", "wb") as f:
        f.write(rnd.randbytes(8 << 20))
for i in range(4):
    with open(f"{root}/files-data/db/table{i}.dat", "wb") as f:
        f.write(rnd.randbytes(16 << 20))
PY
mkfs.ext4 -q -F -L os -d "$W/vm/files-os" "$W/vm/os.img" 512M
mkfs.ext4 -q -F -L data -d "$W/vm/files-data" "$W/vm/data.img" 256M
cat >"$W/vm/vm.toml" <<EOF
name = "web1"
os_type = "linux"
[[disks]]
name = "os"
path = "os.img"
[[disks]]
name = "data"
path = "data.img"
EOF

say "3. a replica of web1 to the container 'replicas', and its first run"
"$DISKFERRY" replica create web --vm "$W/vm" --to "pageblob:$AZURITE_ENDPOINT/replicas" --keep 3
"$DISKFERRY" run web

say "4. change some files inside the filesystems (debugfs), run again"
head -c $((4 << 20)) /dev/urandom >"$W/new.bin"
debugfs -w -R "write $W/new.bin /app/new.bin" "$W/vm/os.img" >/dev/null 2>&1
debugfs -w -R "rm /etc/conf17.txt" "$W/vm/os.img" >/dev/null 2>&1
debugfs -w -R "write $W/new.bin /db/table9.dat" "$W/vm/data.img" >/dev/null 2>&1
"$DISKFERRY" run web

say "5. recovery points, then import the newest as VHDs and compare with the snapshots they came from"
"$DISKFERRY" points web
mkdir -p "$W/import"
"$DISKFERRY" import web --to "$W/import"
"$DISKFERRY" replica show web --json | python3 -c '
import json, sys
for s in json.load(sys.stdin)["snapshots"]:
    print(s["disk"], s["name"])' | while read -r disk snap; do
  printf '%-5s ' "$disk"
  qemu-img compare -f raw -F vpc "$snap" "$W/import/$disk.vhd"
done
qemu-img convert -f vpc -O raw "$W/import/os.vhd" "$W/import/os.raw"
printf 'imported os disk, /app: '
debugfs -R "ls /app" "$W/import/os.raw" 2>/dev/null | tr -s ' \n' ' '
echo

say "6. the runs"
"$DISKFERRY" runs web --json >"$W/runs.json"
python3 - "$W/runs.json" <<'PY'
import json, sys
mib = lambda b: f"{b / 2**20:9.1f} MiB"
print(f"{'run':<27} {'disks':<26} {'read':>13} {'written':>13} {'unchanged':>13} {'zero':>13} {'time':>8}")
for r in reversed(json.load(open(sys.argv[1]))):
    run, disks = r["run"], r["disks"]
    kinds = ", ".join(f"{d['disk']} g{d['generation']} {'full' if d['full_sync'] else 'incr'}" for d in disks)
    print(f"{run['id']:<27} {kinds:<26} {mib(run['bytes_read'])} {mib(run['bytes_written'])} "
          f"{mib(run['bytes_unchanged'])} {mib(run['bytes_zero'])} {run['duration_ms'] / 1000:7.2f}s")
PY
"$DISKFERRY" gc >/dev/null
