#!/usr/bin/env bash
# The official Python Azure Storage SDK (azure-storage-blob from PyPI) in a
# virtualenv under .cache/pyenv, installed when missing: a peer in the page
# blob benchmark and an oracle in the tests (a user delegation SAS signed by
# Microsoft's Python code, to check ours against). Prints the interpreter.
# Usage: scripts/lib/pysdk.sh
source "$(dirname "$0")/common.sh"
PY="$CACHE/pyenv/bin/python"
if ! "$PY" -c "import azure.storage.blob" 2>/dev/null; then
  apt_need python3 python3
  python3 -c "import venv, ensurepip" 2>/dev/null || apt_install python3-venv
  say "installing the Python azure-storage-blob SDK" >&2
  python3 -m venv "$CACHE/pyenv" >&2
  "$CACHE/pyenv/bin/pip" install -q azure-storage-blob >&2
fi
echo "$PY"
