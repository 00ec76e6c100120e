#!/usr/bin/env bash
# PostgreSQL as a real test component: a private cluster, never the
# machine's own.
#   scripts/postgres.sh install        install Debian's postgresql when its server is missing
#   scripts/postgres.sh bindir         print the folder of initdb, pg_ctl and postgres
#   scripts/postgres.sh start [DIR [PORT]]  initdb a cluster in DIR (default: a new temporary
#                                     folder) and start it with pg_ctl on 127.0.0.1:PORT (default:
#                                     a free port), user `diskferry`, trust on loopback; prints
#                                     `PG_DIR=.. PG_URL=postgres://diskferry@127.0.0.1:PORT`
#   scripts/postgres.sh stop DIR       stop what start started, and remove DIR
# As root, the cluster runs as the `postgres` user (initdb refuses root).
source "$(dirname "$0")/lib/common.sh"
die() { say "$*"; exit 1; }

bindir() {
  local d
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    [ -x "$d/initdb" ] && { echo "$d"; return 0; }
  done
  command -v initdb >/dev/null 2>&1 && { dirname "$(readlink -f "$(command -v initdb)")"; return 0; }
  return 1
}

install() {
  bindir >/dev/null && return 0
  say "installing postgresql (a private cluster runs the coordinator's shared-state tests)"
  apt_install postgresql
  bindir >/dev/null || die "postgresql installed, but no initdb under /usr/lib/postgresql/*/bin"
}

as_pg() {
  if [ "$(id -u)" -eq 0 ]; then setpriv --reuid=postgres --regid=postgres --init-groups -- "$@"; else "$@"; fi
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

start() {
  install
  local bin dir=${1:-} port=${2:-}
  bin=$(bindir)
  [ -n "$dir" ] || dir=$(mktemp -d /tmp/diskferry-pg.XXXXXX)
  [ -n "$port" ] || port=$(free_port)
  mkdir -p "$dir"
  [ "$(id -u)" -eq 0 ] && chown postgres: "$dir"
  chmod 700 "$dir"
  as_pg "$bin/initdb" -D "$dir/data" -U diskferry -A trust -E UTF8 --locale=C --no-sync >"$dir/initdb.log" 2>&1 \
    || { cat "$dir/initdb.log" >&2; die "initdb failed"; }
  # A test cluster: durability is the tests' own business, not the disk's.
  as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
    -o "-h 127.0.0.1 -p $port -k $dir -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300" \
    start >/dev/null || { cat "$dir/server.log" >&2; die "pg_ctl start failed"; }
  echo "PG_DIR=$dir PG_URL=postgres://diskferry@127.0.0.1:$port"
}

stop() {
  local dir=$1
  [ -d "$dir/data" ] || die "no cluster in $dir"
  as_pg "$(bindir)/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null || true
  rm -rf "$dir"
}

case "${1:-}" in
  install) install ;;
  bindir) bindir ;;
  start) shift; start "$@" ;;
  stop) shift; stop "$@" ;;
  *) die "usage: scripts/postgres.sh install|bindir|start [DIR [PORT]]|stop DIR" ;;
esac
