#!/usr/bin/env bash
# Builds pebble, Let's Encrypt's small test ACME server, and pebble-challtestsrv (its DNS
# server, which tells pebble where the hostname to validate lives), for the ACME system
# test, into .cache/pebble/<version>/ — a project-local cache keyed by version.
# Usage: install-pebble.sh v2.10.3
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
export GOFLAGS=-mod=mod GOTOOLCHAIN=local
for v in "$@"; do
  dest=$ROOT/.cache/pebble/$v
  if [ -x "$dest/pebble" ] && [ -x "$dest/pebble-challtestsrv" ] && [ -f "$dest/localhost.key" ]; then
    echo "install-pebble: $v cached in $dest"
    continue
  fi
  mkdir -p "$dest"
  # As install-headscale.sh: download the one version and build inside it, without asking the
  # proxy for the module's version list.
  dir=$(go mod download -json "github.com/letsencrypt/pebble/v2@$v" |
        sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  [ -n "$dir" ] || { echo "install-pebble: cannot download pebble $v" >&2; exit 1; }
  for cmd in pebble pebble-challtestsrv; do
    (cd "$dir" && go build -trimpath -o "$dest/$cmd.tmp" "./cmd/$cmd")
    mv "$dest/$cmd.tmp" "$dest/$cmd"
  done
  # The certificate of pebble's own listener (the directory's TLS: localhost, 127.0.0.1) and
  # the test CA that signed it, kept beside the binaries.
  install -m 0644 "$dir/test/certs/pebble.minica.pem" "$dest/pebble.minica.pem"
  install -m 0644 "$dir/test/certs/localhost/cert.pem" "$dest/localhost.pem"
  install -m 0600 "$dir/test/certs/localhost/key.pem" "$dest/localhost.key"
  echo "install-pebble: $v built into $dest"
done
