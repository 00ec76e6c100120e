#!/usr/bin/env bash
# The Debian package on this machine (issue 23): built from the test build's
# binaries (scripts/package.sh --profile dev), installed with dpkg -i; its
# systemd units pass `systemd-analyze verify`, its man pages render with
# `man -l`, bash loads its completions, the installed binaries run the
# local demo; then purged, leaving no file, folder or user behind.
# Usage: scripts/test-package.sh   (root, or sudo; scripts/test.sh runs it)
source "$(dirname "$0")/lib/common.sh"
apt_need dpkg-deb dpkg
apt_need systemd-analyze systemd
apt_need man man-db
apt_need adduser adduser
fail() { echo "test-package: $*" >&2; exit 1; }
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
DEB=$("$ROOT/scripts/package.sh" --profile dev | tail -1)
[ -f "$DEB" ] || fail "no package built"
say "installing $DEB"
$sudo dpkg -i "$DEB" >/dev/null
trap '$sudo dpkg -P diskferry >/dev/null 2>&1 || true' EXIT
dpkg-query -W -f='${Status}\n' diskferry | grep -q "install ok installed" || fail "not installed"
for f in /usr/bin/diskferry /usr/bin/diskferry-agent /lib/systemd/system/diskferry.service \
  /lib/systemd/system/diskferry-receive.service /etc/diskferry/config.toml /usr/share/man/man1/diskferry.1.gz \
  /usr/share/man/man1/diskferry-agent-receive.1.gz /usr/share/bash-completion/completions/diskferry; do
  [ -e "$f" ] || fail "$f is not installed"
done
getent passwd diskferry >/dev/null || fail "no diskferry user"
[ "$(stat -c '%U %a' /var/lib/diskferry)" = "diskferry 700" ] || fail "/var/lib/diskferry: $(stat -c '%U %a' /var/lib/diskferry)"

say "systemd-analyze verify"
# The receiver's unit needs its settings file to be verified as it will run.
for unit in diskferry.service diskferry-receive.service; do
  out=$(systemd-analyze verify "/lib/systemd/system/$unit" 2>&1) || fail "$unit: $out"
  # Warnings count too (a misspelt directive is only a warning).
  if [ -n "$(echo "$out" | grep -v -e '^$' -e 'Failed to connect' -e 'not running' || true)" ]; then
    fail "$unit: $out"
  fi
done

say "systemd-analyze security: exposure at most 3.0 (the worker unit's bar)"
for unit in diskferry.service diskferry-receive.service; do
  out=$(systemd-analyze security --offline=yes --threshold=30 "/lib/systemd/system/$unit" 2>&1) \
    || fail "$unit: $(echo "$out" | tail -1)"
  echo "  $(echo "$out" | tail -1)"
done

say "man pages render"
n=0
for page in /usr/share/man/man1/diskferry*.1.gz; do
  out=$(MANWIDTH=80 man --warnings -l "$page" 2>&1 >/dev/null) || fail "man -l $page failed"
  [ -z "$out" ] || fail "man -l $page: $out"
  n=$((n + 1))
done
[ "$n" -ge 20 ] || fail "only $n man pages"
MANWIDTH=80 man -l /usr/share/man/man1/diskferry-failover.1.gz | grep -q -- "--test" || fail "diskferry-failover(1) lacks --test"

say "bash completions load"
bash -c 'source /usr/share/bash-completion/completions/diskferry && complete -p diskferry' | grep -q diskferry \
  || fail "bash does not load the diskferry completions"
bash -c 'source /usr/share/bash-completion/completions/diskferry-agent && complete -p diskferry-agent' \
  | grep -q diskferry-agent || fail "bash does not load the diskferry-agent completions"
/usr/bin/diskferry --config /etc/diskferry/config.toml --state-dir "$(mktemp -d)" replica list >/dev/null \
  || fail "the packaged config does not load"

say "the installed binaries run the local demo"
DISKFERRY_BIN_DIR=/usr/bin "$ROOT/scripts/demo.sh" >/dev/null || fail "the demo failed with /usr/bin's binaries"

say "purge"
$sudo dpkg -P diskferry >/dev/null
trap - EXIT
for f in /usr/bin/diskferry /usr/bin/diskferry-agent /lib/systemd/system/diskferry.service /etc/diskferry \
  /etc/default/diskferry-receive /var/lib/diskferry /usr/share/man/man1/diskferry.1.gz; do
  [ ! -e "$f" ] || fail "$f is left after purge"
done
! getent passwd diskferry >/dev/null || fail "the diskferry user is left after purge"
say "package: ok"
