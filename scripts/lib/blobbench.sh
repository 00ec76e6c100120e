# What the page blob benchmarks share (sourced after common.sh, build_release
# and make_workdir): AzCopy from npm, and a fresh Azurite per run.
#   azcopy_install          sets AZC (and AzCopy's log folders under $W)
#   azurite_fresh CONTAINER writes $W/fresh.sh (stop the last Azurite, start a
#                           new one on $PORT with CONTAINER) and runs it; sets
#                           PORT, EP, SAS (the container's), PY; stops it on exit

azcopy_install() {
  ldconfig -p | grep -q libsecret-1.so.0 || apt_need libsecret-1.so.0 libsecret-1-0   # azcopy links it
  apt_need node nodejs
  apt_need npm npm
  AZC="$CACHE/azcopy/node_modules/@azure-tools/azcopy-linux/dist/bin/azcopy_linux_amd64"
  if [ ! -x "$AZC" ]; then
    say "installing AzCopy from npm"
    mkdir -p "$CACHE/azcopy"
    (cd "$CACHE/azcopy" && npm install --no-audit --no-fund --loglevel=error @azure-tools/azcopy-linux >/dev/null)
    chmod +x "$AZC"
  fi
  export AZCOPY_LOG_LOCATION="$W/azcopy-logs" AZCOPY_JOB_PLAN_LOCATION="$W/azcopy-plans" AZCOPY_DISABLE_SYSLOG=true
}

azurite_fresh() {
  local container=$1
  PY=$("$ROOT/scripts/lib/pysdk.sh")
  # Every run gets a fresh Azurite (untimed): a long-lived instance slows down
  # as its metadata grows, which would favour whoever runs first.
  PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  EP="http://127.0.0.1:$PORT"
  cat >"$W/fresh.sh" <<FRESH
#!/usr/bin/env bash
set -e
[ -f "$W/azurite.pid" ] && "$ROOT/scripts/azurite.sh" stop "\$(cat "$W/azurite.pid")"
rm -rf "$W/azurite"
eval "\$("$ROOT/scripts/azurite.sh" start "$W/azurite" $PORT)"
echo \$AZURITE_PID >"$W/azurite.pid"
"$PY" "$ROOT/scripts/lib/azblob.py" mkcontainer "$EP" $container
FRESH
  chmod +x "$W/fresh.sh"
  "$W/fresh.sh"
  trap '[ -f "$W/azurite.pid" ] && "$ROOT/scripts/azurite.sh" stop "$(cat "$W/azurite.pid")"; rm -rf "$W"' EXIT
  export AZURE_STORAGE_CONNECTION_STRING="AccountName=devstoreaccount1;AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;"
  SAS=$("$PY" "$ROOT/scripts/lib/azblob.py" sas "$EP" $container)
}
