#!/usr/bin/env bash
# Build the Debian package dist/diskferry_VERSION_ARCH.deb: both binaries, the
# systemd units for `diskferry daemon` and `diskferry-agent receive`, a default
# config, man pages and bash/zsh/fish completions generated from the CLIs
# (packaging/docgen), maintainer scripts (a `diskferry` system user).
# Usage: scripts/package.sh [--profile release|dev]   (default release;
# scripts/test-package.sh packages the test build's binaries with dev)
source "$(dirname "$0")/lib/common.sh"
PROFILE=release
[ "${1:-}" = "--profile" ] && PROFILE=${2:?--profile needs release or dev}
case $PROFILE in
  release) DIR=release; FLAG=--release ;;
  dev) DIR=debug; FLAG= ;;
  *) echo "--profile: release or dev" >&2; exit 2 ;;
esac
apt_need dpkg-deb dpkg
say "building the binaries ($PROFILE) and the docs generator"
# shellcheck disable=SC2086
(cd "$ROOT" && cargo build $FLAG --quiet -p diskferry -p diskferry-agent -p diskferry-docgen)
BIN="$ROOT/target/$DIR"
VERSION=$(cd "$ROOT" && cargo metadata --no-deps --format-version 1 \
  | python3 -c 'import json,sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"] == "diskferry"))')
ARCH=$(dpkg --print-architecture)
STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT
P="$STAGE/diskferry"
install -d "$P/DEBIAN" "$P/usr/bin" "$P/lib/systemd/system" "$P/etc/diskferry" "$P/etc/default" \
  "$P/usr/share/man/man1" "$P/usr/share/bash-completion/completions" "$P/usr/share/zsh/vendor-completions" \
  "$P/usr/share/fish/vendor_completions.d" "$P/usr/share/doc/diskferry"
install -m 0755 "$BIN/diskferry" "$BIN/diskferry-agent" "$P/usr/bin/"
D="$ROOT/packaging/debian"
install -m 0644 "$D/diskferry.service" "$D/diskferry-receive.service" "$P/lib/systemd/system/"
install -m 0644 "$D/config.toml" "$P/etc/diskferry/config.toml"
install -m 0644 "$D/default-diskferry" "$P/etc/default/diskferry"
install -m 0644 "$D/default-receive" "$P/etc/default/diskferry-receive"
install -m 0755 "$D/postinst" "$D/prerm" "$D/postrm" "$P/DEBIAN/"
GEN="$STAGE/gen"
"$BIN/diskferry-docgen" "$GEN"
for page in "$GEN"/man1/*.1; do gzip -9n -c "$page" >"$P/usr/share/man/man1/$(basename "$page").gz"; done
install -m 0644 "$GEN"/completions/bash/* "$P/usr/share/bash-completion/completions/"
install -m 0644 "$GEN"/completions/zsh/* "$P/usr/share/zsh/vendor-completions/"
install -m 0644 "$GEN"/completions/fish/* "$P/usr/share/fish/vendor_completions.d/"
install -m 0644 "$ROOT/README.md" "$ROOT/SECURITY.md" "$P/usr/share/doc/diskferry/"
printf '%s\n' /etc/diskferry/config.toml /etc/default/diskferry /etc/default/diskferry-receive >"$P/DEBIAN/conffiles"
SIZE=$(du -sk "$P" | cut -f1)
cat >"$P/DEBIAN/control" <<CONTROL
Package: diskferry
Version: $VERSION
Architecture: $ARCH
Maintainer: diskferry developers <diskferry@example.invalid>
Installed-Size: $SIZE
Depends: libc6 (>= 2.36), adduser
Recommends: qemu-utils
Section: admin
Priority: optional
Homepage: https://example.invalid/diskferry
Description: replicate VM disks across regions, block by block
 diskferry copies the managed disks of an Azure VM (or local disk images)
 to page blobs in another region, sending only the chunks that changed,
 and brings recovery points up as VMs. This package holds the coordinator
 (diskferry, with a systemd unit for its daemon) and the agent
 (diskferry-agent, with a unit for the relay receiver).
CONTROL
mkdir -p "$ROOT/dist"
OUT="$ROOT/dist/diskferry_${VERSION}_${ARCH}.deb"
dpkg-deb --root-owner-group -Zxz --build "$P" "$OUT" >/dev/null
echo "$OUT"
