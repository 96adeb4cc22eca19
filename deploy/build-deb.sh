#!/usr/bin/env bash
# Builds the Debian package headscale-c_<version>_<arch>.deb with dpkg-buildpackage (a
# Release build through the project's CMake), out of tree: the source goes to a temporary
# folder with deploy/debian/ as its debian/, so the repository never gets a debian/ folder.
# The package holds the binary, /etc/headscale/config.yaml (deploy/config-example.yaml),
# the systemd units, shell completions and a man page; deploy/debian/ says the rest.
# Usage: deploy/build-deb.sh [OUTDIR]   (default: build-deb/; prints the .deb's path last)
# Needs the packages deploy/install-deps.sh installs (debhelper, help2man, the -dev libraries).
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=$PWD
OUT=$(realpath -m "${1:-$SRC/build-deb}")
WORK=$(mktemp -d /tmp/hs-deb.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

version=$(sed -n 's/^project(headscale-c VERSION \([0-9.]*\).*/\1/p' CMakeLists.txt)
[ -n "$version" ] || { echo "build-deb: no project version in CMakeLists.txt" >&2; exit 1; }
export HS_BUILD_COMMIT=unknown HS_BUILD_DIRTY=false
tree=$WORK/headscale-c
mkdir -p "$tree"

if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  # What is in the working tree (tracked or new, not ignored), as it is now; the tests and
  # benchmarks are not part of a release build.
  git ls-files -z --cached --others --exclude-standard -- . ':!tests' ':!bench' |
    while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done |
    tar --null -T - -cf - | tar -xf - -C "$tree"
  HS_BUILD_COMMIT=$(git rev-parse HEAD)
  [ -z "$(git status --porcelain --untracked-files=no)" ] || HS_BUILD_DIRTY=true
  export SOURCE_DATE_EPOCH=$(git log -1 --format=%ct)
  # Later commits sort higher: <version>+git<commit date>.<short commit>
  version="$version+git$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y%m%d%H%M).${HS_BUILD_COMMIT:0:9}"
else
  cp -a CMakeLists.txt README.md cmake core sql templates static webadmin deploy "$tree/"
fi
cp -a deploy/debian "$tree/debian"

maintainer=$(sed -n 's/^Maintainer: //p' deploy/debian/control)
{
  echo "headscale-c ($version) unstable; urgency=medium"
  echo
  echo "  * Built from commit $HS_BUILD_COMMIT (uncommitted changes: $HS_BUILD_DIRTY)."
  echo
  echo " -- $maintainer  $(date -R ${SOURCE_DATE_EPOCH:+-d @$SOURCE_DATE_EPOCH})"
} > "$tree/debian/changelog"

export DEB_BUILD_OPTIONS="parallel=${HS_BUILD_JOBS:-2} ${DEB_BUILD_OPTIONS:-}"
(cd "$tree" && dpkg-buildpackage -b -us -uc)

mkdir -p "$OUT"
deb=$(ls "$WORK"/headscale-c_*.deb)
cp "$deb" "$WORK"/headscale-c_*.buildinfo "$WORK"/headscale-c_*.changes "$OUT/"
echo "$OUT/$(basename "$deb")"
