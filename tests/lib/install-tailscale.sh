#!/usr/bin/env bash
# Builds the real Tailscale client (tailscale, tailscaled) and derper for one version with
# `go install`, into .cache/tailscale/<version>/ — a project-local cache keyed by version,
# reused by later runs. Usage: install-tailscale.sh v1.80.3 [v1.102.3 ...]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
export GOFLAGS=-mod=mod GOTOOLCHAIN=local
# Go's own module and build caches stay in $HOME, so a fresh clone relinks in seconds.
for v in "$@"; do
  dest=$ROOT/.cache/tailscale/$v
  if [ -x "$dest/tailscaled" ] && [ -x "$dest/tailscale" ] && [ -x "$dest/derper" ]; then
    echo "install-tailscale: $v cached in $dest"
    continue
  fi
  mkdir -p "$dest.tmp"
  GOBIN=$dest.tmp go install "tailscale.com/cmd/tailscale@$v" "tailscale.com/cmd/tailscaled@$v" \
    "tailscale.com/cmd/derper@$v"
  rm -rf "$dest" && mv "$dest.tmp" "$dest"
  echo "install-tailscale: $v built into $dest"
done
