#!/usr/bin/env bash
# Builds the real headscale server for one or more versions, for the tests that run it side by
# side with ours (REST differential, routes, migration from its databases), into
# .cache/headscale/<version>/headscale — a project-local cache keyed by version.
# Usage: install-headscale.sh v0.29.3 [v0.22.3 ...]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
export GOFLAGS=-mod=mod GOTOOLCHAIN=local
for v in "$@"; do
  dest=$ROOT/.cache/headscale/$v
  if [ -x "$dest/headscale" ]; then
    echo "install-headscale: $v cached in $dest"
    continue
  fi
  mkdir -p "$dest"
  # `go install pkg@version` also asks the proxy for the module's version list, which it may
  # refuse; building the downloaded module needs only the version itself.
  dir=$(go mod download -json "github.com/juanfont/headscale@$v" |
        sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  [ -n "$dir" ] || { echo "install-headscale: cannot download headscale $v" >&2; exit 1; }
  (cd "$dir" && go build -trimpath -o "$dest/headscale.tmp" ./cmd/headscale)
  mv "$dest/headscale.tmp" "$dest/headscale"
  echo "install-headscale: $v built into $dest"
done
