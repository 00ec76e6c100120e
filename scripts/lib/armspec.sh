#!/usr/bin/env bash
# The request shapes the ARM simulator enforces, dumped from Microsoft's Python
# management SDK models (scripts/lib/armspec.py) into .cache/armspec/ once.
# Prints the file's path.
# Usage: scripts/lib/armspec.sh
source "$(dirname "$0")/common.sh"
PY=$("$ROOT/scripts/lib/pysdk.sh")
VERSION=$("$PY" -c "import importlib.metadata as m; print(m.version('azure-mgmt-compute'))")
# The bodies the azure provider sends: PUT and PATCH of a VM, a disk and a
# snapshot, POST beginGetAccess; PUT of a restore point collection and a restore
# point, PATCH of a collection; PUT of a gallery image version (publish).
ROOTS="VirtualMachine VirtualMachineUpdate Disk DiskUpdate Snapshot SnapshotUpdate GrantAccessData RestorePointCollection RestorePointCollectionUpdate RestorePoint GalleryImageVersion"
SUM=$(printf '%s %s' "$ROOTS" "$(cksum < "$ROOT/scripts/lib/armspec.py")" | cksum | cut -d' ' -f1)
OUT="$CACHE/armspec/azure-mgmt-compute-$VERSION-$SUM.json"
if [ ! -s "$OUT" ]; then
  mkdir -p "$CACHE/armspec"
  # shellcheck disable=SC2086
  "$PY" "$ROOT/scripts/lib/armspec.py" "$OUT.$$" $ROOTS
  mv "$OUT.$$" "$OUT"
fi
echo "$OUT"
