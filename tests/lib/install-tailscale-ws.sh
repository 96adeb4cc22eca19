#!/usr/bin/env bash
# Builds tailscaled with Tailscale's own `ts_debug_websockets` build tag (unmodified source; the
# tag compiles in derp/derphttp/websocket.go, so TS_DEBUG_DERP_WS_CLIENT=true makes the DERP
# client dial WebSocket) into .cache/tailscale/<version>-ws/. tailscale (CLI) and derper are
# symlinks to the plain build of the same version (built by install-tailscale.sh if missing).
# Used by tests/system/test_websocket.py. Usage: install-tailscale-ws.sh v1.102.3 [v1.80.3 ...]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
export GOFLAGS=-mod=mod GOTOOLCHAIN=local
for v in "$@"; do
  dest=$ROOT/.cache/tailscale/$v-ws
  if [ -x "$dest/tailscaled" ] && [ -x "$dest/tailscale" ] && [ -x "$dest/derper" ]; then
    echo "install-tailscale-ws: $v-ws cached in $dest"
    continue
  fi
  "$ROOT/tests/lib/install-tailscale.sh" "$v"
  rm -rf "$dest.tmp" && mkdir -p "$dest.tmp"
  GOBIN=$dest.tmp go install -tags ts_debug_websockets "tailscale.com/cmd/tailscaled@$v"
  # Relative links: a copy or move of .cache (or of the whole checkout) keeps them working.
  ln -s "../$v/tailscale" "$dest.tmp/tailscale"
  ln -s "../$v/derper" "$dest.tmp/derper"
  rm -rf "$dest" && mv "$dest.tmp" "$dest"
  echo "install-tailscale-ws: $v-ws built into $dest"
done
