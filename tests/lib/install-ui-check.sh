#!/usr/bin/env bash
# Prepares a web UI's own request code to run against our server, from a source tree you
# provide: headplane and headscale-ui are not published to the npm registry, so nothing here
# downloads them. Copies the parts of the tree that talk to the server into
# .cache/ui-check/<ui>-<commit>-<hash>/, lays tests/clients/<ui>/ (ours: the harness, the
# vitest config, pinned npm packages with Node 22) over them, and runs npm install.
#   headplane     its API client and its own API integration tests (tests/integration/api),
#                 with our env.ts in place of its container harness
#   headscale-ui  src/lib/common (apiFunctions.svelte and what it imports), with our
#                 check/api.test.ts calling those functions
# Prints the directory. Usage: install-ui-check.sh headplane|headscale-ui SRC
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
UI=${1:?usage: install-ui-check.sh headplane|headscale-ui SRC}
SRC=${2:?usage: install-ui-check.sh headplane|headscale-ui SRC}
case $UI in
  headplane) PARTS="app/server/headscale app/utils app/types tests/integration/api" ;;
  headscale-ui) PARTS="src/lib/common" ;;
  *) echo "install-ui-check: unknown UI $UI" >&2; exit 2 ;;
esac
OURS=$ROOT/tests/clients/$UI

if git -C "$SRC" rev-parse --verify -q HEAD >/dev/null; then
  rev=$(git -C "$SRC" rev-parse --short=12 HEAD)
else
  # shellcheck disable=SC2086 # PARTS is a list of paths
  rev=tree-$(cd "$SRC" && find $PARTS -type f -exec cat {} + | sha256sum | cut -c1-12)
fi
sum=$(find "$OURS" "$0" -type f -exec cat {} + | sha256sum | cut -c1-8)
dest=$ROOT/.cache/ui-check/$UI-$rev-$sum
if [ -d "$dest/node_modules" ]; then
  echo "install-ui-check: cached in $dest" >&2
  echo "$dest"
  exit 0
fi

work=$dest.tmp
rm -rf "$work" && mkdir -p "$work"
trap 'rm -rf "$work"' ERR  # a failed build leaves nothing half-made
# shellcheck disable=SC2086 # PARTS is a list of paths
if [ -d "$SRC/.git" ] || [ ! -d "$SRC/${PARTS%% *}" ]; then
  git -C "$SRC" archive HEAD $PARTS | tar -xf - -C "$work"
else
  (cd "$SRC" && tar -cf - $PARTS) | tar -xf - -C "$work"
fi
cp -r "$OURS/." "$work/"
(cd "$work" && npm install --no-audit --no-fund --ignore-scripts >&2)
rm -rf "$dest" && mv "$work" "$dest"
echo "install-ui-check: ready in $dest" >&2
echo "$dest"
