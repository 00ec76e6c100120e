# Shared by the scripts: paths, building, installing what a fresh machine lacks.
# shellcheck shell=bash
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CACHE="$ROOT/.cache"
TOOLS="$CACHE/tools"
export PATH="$TOOLS/bin:$PATH"

say() { printf '\033[1m%s\033[0m\n' "$*" >&2; }

# apt_need CMD PACKAGE: install PACKAGE with apt-get when CMD is missing.
apt_need() {
  local cmd=$1 pkg=$2
  command -v "$cmd" >/dev/null 2>&1 && return 0
  say "installing $pkg (for $cmd)"
  apt_install "$pkg"
}

# apt_install PACKAGE: install it with apt-get.
apt_install() {
  local pkg=$1
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  if [ -z "${APT_UPDATED:-}" ]; then
    $sudo apt-get update -qq >/dev/null
    APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$pkg" >/dev/null
}

# Build the release binaries once.
build_release() {
  if [ -n "${DISKFERRY_BIN_DIR:-}" ]; then
    # Installed binaries (the package test runs the demo with /usr/bin's).
    AGENT="$DISKFERRY_BIN_DIR/diskferry-agent"
    DISKFERRY="$DISKFERRY_BIN_DIR/diskferry"
    return
  fi
  say "building release binaries"
  (cd "$ROOT" && cargo build --release --quiet -p diskferry-agent -p diskferry -p diskferry-bench \
    && cargo build --release --quiet -p diskferry-testkit --bin strict-proxy)
  AGENT="$ROOT/target/release/diskferry-agent"
  DISKFERRY="$ROOT/target/release/diskferry"
  MKIMAGE="$ROOT/target/release/mkimage"
  STRICT_PROXY="$ROOT/target/release/strict-proxy"
}

# make_workdir: set W to a fresh work folder on the same filesystem as the
# repository (not tmpfs), removed when the script exits.
make_workdir() {
  mkdir -p "${DISKFERRY_WORK:-$CACHE}"
  W=$(mktemp -d "${DISKFERRY_WORK:-$CACHE}/work.XXXXXX")
  # shellcheck disable=SC2064
  trap "rm -rf '$W'" EXIT
}
