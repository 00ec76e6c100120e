#!/usr/bin/env bash
# The agent alone, on one machine: make a 1 GiB sample
# disk (25% random, 10% text-like, the rest never written), scan it, sync it
# to a local VHD, change 2% of it, sync again, and check the VHD with qemu-img;
# then send it through the zstd relay to a local receiver (TLS, pinned).
# Usage: scripts/demo-agent.sh [--keep DIR]   (default: everything is removed at the end)
source "$(dirname "$0")/lib/common.sh"
KEEP=""
[ "${1:-}" = "--keep" ] && KEEP=${2:?--keep needs a folder}
apt_need qemu-img qemu-utils
build_release
if [ -n "$KEEP" ]; then mkdir -p "$KEEP"; W=$(cd "$KEEP" && pwd); else make_workdir; fi

say "1. a sample disk: 1 GiB, scattered 1 MiB extents"
"$MKIMAGE" new "$W/disk.img" --size-mib 1024 --random 25 --text 10 --seed 7

say "2. scan it"
"$AGENT" scan "$W/disk.img"

say "3. first sync to file:$W/disk.vhd"
"$AGENT" sync "$W/disk.img" --to "file:$W/disk.vhd" --json >"$W/run1.json"
"$AGENT" sync --help >/dev/null
qemu-img compare -f raw -F vpc "$W/disk.img" "$W/disk.vhd"

say "4. change 2% of the disk, zero some of it, sync again"
"$MKIMAGE" mutate "$W/disk.img" --percent 2 --seed 8
dd if=/dev/zero of="$W/disk.img" bs=1M seek=100 count=20 conv=notrunc status=none
"$AGENT" sync "$W/disk.img" --to "file:$W/disk.vhd" --json >"$W/run2.json"
qemu-img compare -f raw -F vpc "$W/disk.img" "$W/disk.vhd"
qemu-img info -f vpc "$W/disk.vhd" | sed -n 2,4p

say "5. the numbers"
python3 - "$W/run1.json" "$W/run2.json" <<'PY'
import json, sys
rows = [json.load(open(p)) for p in sys.argv[1:]]
mib = lambda b: f"{b / 2**20:8.1f} MiB"
print(f"{'gen':>3} {'kind':<12} {'read':>12} {'zero':>12} {'unchanged':>12} {'written':>12} {'cleared':>12} {'time':>8}")
for r in rows:
    kind = "full" if r["full_sync"] else "incremental"
    print(f"{r['generation']:>3} {kind:<12} {mib(r['bytes_read'])} {mib(r['bytes_zero'])} "
          f"{mib(r['bytes_unchanged'])} {mib(r['bytes_written'])} {mib(r['bytes_cleared'])} {r['seconds']:>7.2f}s")
PY

say "6. the same disk through the zstd relay: a receiver (TLS, self-signed, token), a sync pinned to its certificate"
apt_need openssl openssl
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 -subj /CN=demo \
  -addext "subjectAltName=IP:127.0.0.1" -keyout "$W/key.pem" -out "$W/cert.pem" 2>/dev/null
(umask 077; openssl rand -hex 32 >"$W/token")
mkdir -p "$W/region-b"
"$AGENT" receive --listen 127.0.0.1:0 --root "file:$W/region-b" --token-file "$W/token" \
  --tls-cert "$W/cert.pem" --tls-key "$W/key.pem" >"$W/rx.out" 2>"$W/rx.err" &
RX=$!
# shellcheck disable=SC2064
trap "kill $RX 2>/dev/null; [ -n '$KEEP' ] || rm -rf '$W'" EXIT
for _ in $(seq 1 50); do grep -q '^listening on' "$W/rx.out" && break; sleep 0.1; done
cat "$W/rx.out"
URL=$(awk '{print $3}' "$W/rx.out")
FP=$(awk '{print $NF}' "$W/rx.out")
"$AGENT" sync "$W/disk.img" --to "relay:$URL/disk" --tls-fingerprint "$FP" --relay-token-file "$W/token"
qemu-img compare -f raw -F vpc "$W/disk.img" "$W/region-b/disk.vhd"
