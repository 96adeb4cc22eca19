#!/usr/bin/env bash
# Prepares headplane's own API client and its API integration tests to run against our
# server, from a headplane source tree you provide (headplane is not published to the npm
# registry, so nothing here downloads it). Copies its app/server/headscale, app/utils,
# app/types and tests/integration/api into .cache/headplane-check/<commit>/, puts
# tests/clients/headplane/env.ts in place of its container harness, and installs the few npm
# packages the API layer needs, Node 22 among them (undici 8 needs it). Prints the directory.
# Usage: install-headplane-check.sh HEADPLANE_SRC   (a work tree or a git directory)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
SRC=${1:?usage: install-headplane-check.sh HEADPLANE_SRC}
OURS=$ROOT/tests/clients/headplane
PARTS="app/server/headscale app/utils app/types tests/integration/api"

if git -C "$SRC" rev-parse --verify -q HEAD >/dev/null; then
  rev=$(git -C "$SRC" rev-parse --short=12 HEAD)
else
  rev=tree-$(find "$SRC/app/server/headscale" -type f -exec cat {} + | sha256sum | cut -c1-12)
fi
sum=$(cat "$OURS"/* "$0" | sha256sum | cut -c1-8)
dest=$ROOT/.cache/headplane-check/$rev-$sum
if [ -d "$dest/node_modules" ]; then
  echo "install-headplane-check: cached in $dest" >&2
  echo "$dest"
  exit 0
fi

work=$dest.tmp
rm -rf "$work" && mkdir -p "$work"
if [ -f "$SRC/package.json" ]; then
  (cd "$SRC" && tar -cf - $PARTS) | tar -xf - -C "$work"
else
  # shellcheck disable=SC2086 # PARTS is a list of paths
  git -C "$SRC" archive HEAD $PARTS | tar -xf - -C "$work"
fi
mkdir -p "$work/tests/integration/setup"
cp "$OURS/env.ts" "$work/tests/integration/setup/env.ts"
cp "$OURS/vitest.config.ts" "$OURS/package.json" "$work/"
(cd "$work" && npm install --no-audit --no-fund --ignore-scripts >&2)
rm -rf "$dest" && mv "$work" "$dest"
echo "install-headplane-check: ready in $dest" >&2
echo "$dest"
