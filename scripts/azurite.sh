#!/usr/bin/env bash
# Azurite (the Azure Storage emulator) as a real test component.
#   scripts/azurite.sh install        install azurite@3.35.0 into .cache/azurite (npm, not global)
#   scripts/azurite.sh start [DIR [PORT]]  start the blob service on PORT (default: a free
#                                     loopback port) with its data in DIR (default: a new
#                                     temporary folder); prints
#                                     `AZURITE_PID=.. AZURITE_ENDPOINT=.. AZURITE_DIR=..`
#   scripts/azurite.sh stop PID       stop what start started
# 3.35.0 is the newest release that runs on Node 20 (3.37 is also ten times
# slower on page writes). The account is the well-known devstoreaccount1.
source "$(dirname "$0")/lib/common.sh"
VERSION=3.35.0
AZ="$CACHE/azurite"
MAIN="$AZ/node_modules/azurite/dist/src/blob/main.js"

install() {
  [ -f "$MAIN" ] && return 0
  apt_need node nodejs
  apt_need npm npm
  say "installing azurite@$VERSION into $AZ"
  mkdir -p "$AZ"
  (cd "$AZ" && npm install --no-audit --no-fund --loglevel=error "azurite@$VERSION" >/dev/null)
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

start() {
  install
  local dir=${1:-$(mktemp -d "${TMPDIR:-/tmp}/azurite.XXXXXX")}
  mkdir -p "$dir"
  local port=${2:-}
  [ -n "$port" ] || port=$(free_port)
  # --loose: no strict-mode 500s on headers Azurite does not implement;
  # --skipApiVersionCheck: the Rust SDK's x-ms-version is newer than 3.35's.
  # AZURITE_HOST=0.0.0.0 serves other hosts too (a benchmark's network namespace).
  local host=${AZURITE_HOST:-127.0.0.1}
  nohup node "$MAIN" --blobHost "$host" --blobPort "$port" --location "$dir" \
    --loose --skipApiVersionCheck --disableTelemetry --silent >"$dir/azurite.log" 2>&1 &
  local pid=$!
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "AZURITE_PID=$pid AZURITE_ENDPOINT=http://127.0.0.1:$port/devstoreaccount1 AZURITE_DIR=$dir"
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  cat "$dir/azurite.log" >&2
  kill "$pid" 2>/dev/null || true
  echo "azurite did not start" >&2
  return 1
}

stop() {
  local pid=${1:?usage: $0 stop PID}
  kill "$pid" 2>/dev/null || return 0
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
}

case ${1:-} in
  install) install ;;
  start) start "${2:-}" "${3:-}" ;;
  stop) stop "${2:-}" ;;
  *) echo "usage: $0 install | start [DIR] | stop PID" >&2; exit 2 ;;
esac
