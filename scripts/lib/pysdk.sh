#!/usr/bin/env bash
# Microsoft's official Python Azure SDKs from PyPI in a virtualenv under
# .cache/pyenv, installed when missing:
# - azure-storage-blob: a peer in the page blob benchmark and an oracle in the
#   tests (a user delegation SAS signed by Microsoft's Python code);
# - azure-mgmt-compute, pinned to the release whose api-versions are the ones
#   the azure provider pins (VMs 2025-04-01, disks and snapshots 2025-01-02):
#   its models are what the ARM simulator checks requests against
#   (scripts/lib/armspec.sh).
# Prints the interpreter.
# Usage: scripts/lib/pysdk.sh
source "$(dirname "$0")/common.sh"
PY="$CACHE/pyenv/bin/python"
COMPUTE=37.0.0
if ! "$PY" -c "import azure.storage.blob, importlib.metadata as m; assert m.version('azure-mgmt-compute') == '$COMPUTE'" 2>/dev/null; then
  apt_need python3 python3
  python3 -c "import venv, ensurepip" 2>/dev/null || apt_install python3-venv
  say "installing the Python azure-storage-blob and azure-mgmt-compute $COMPUTE SDKs" >&2
  [ -x "$PY" ] || python3 -m venv "$CACHE/pyenv" >&2
  "$CACHE/pyenv/bin/pip" install -q azure-storage-blob "azure-mgmt-compute==$COMPUTE" >&2
fi
echo "$PY"
