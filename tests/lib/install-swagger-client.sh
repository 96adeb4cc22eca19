#!/usr/bin/env bash
# Builds tests/clients/swagger/<version>/main.go (our scenario program for that headscale
# version) with tests/clients/swagger/common.go against a REST client that go-swagger
# generates from headscale's published OpenAPI document, the way headscale's Terraform
# provider makes its client (`swagger generate client -f <headscale swagger> -A headscale`).
# The generated code lives only in the cache:
#   .cache/go-swagger/<go-swagger version>/swagger                    the generator
#   .cache/swagger-client/<key>/hsclient                              the scenario binary
# where <key> names the headscale and go-swagger versions and a hash of the program and of
# this script, so an edit to either rebuilds. Prints the binary's path on its last line.
# Usage: install-swagger-client.sh [headscale version] [go-swagger version]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
HS_VERSION=${1:-v0.29.3}
SWAGGER_VERSION=${2:-v0.36.7}
export GOFLAGS=-mod=mod GOTOOLCHAIN=local
SRC=$ROOT/tests/clients/swagger
[ -f "$SRC/$HS_VERSION/main.go" ] || { echo "install-swagger-client: no $SRC/$HS_VERSION" >&2; exit 2; }

sum=$(cat "$SRC/common.go" "$SRC/$HS_VERSION/main.go" "$0" | sha256sum | cut -c1-12)
dest=$ROOT/.cache/swagger-client/$HS_VERSION-goswagger-$SWAGGER_VERSION-$sum
if [ -x "$dest/hsclient" ]; then
  echo "install-swagger-client: cached in $dest" >&2
  echo "$dest/hsclient"
  exit 0
fi

gen=$ROOT/.cache/go-swagger/$SWAGGER_VERSION
if [ ! -x "$gen/swagger" ]; then
  mkdir -p "$gen.tmp"
  GOBIN=$gen.tmp go install "github.com/go-swagger/go-swagger/cmd/swagger@$SWAGGER_VERSION" >&2
  rm -rf "$gen" && mv "$gen.tmp" "$gen"
fi

# The document headscale serves at /swagger/v1/openapiv2.json is this file of its module.
dir=$(go mod download -json "github.com/juanfont/headscale@$HS_VERSION" |
      sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
doc=$dir/gen/openapiv2/headscale/v1/headscale.swagger.json
[ -f "$doc" ] || { echo "install-swagger-client: no OpenAPI document in $dir" >&2; exit 1; }

work=$dest.tmp
rm -rf "$work" && mkdir -p "$work/internal/gen"
trap 'rm -rf "$work"' ERR  # a failed build leaves nothing half-made
# The go-openapi runtime the generated code needs, pinned so a later release cannot change
# what this builds; `go mod tidy` adds what they need in turn.
cat >"$work/go.mod" <<'EOF'
module hsclient

go 1.24

require (
	github.com/go-openapi/errors v0.22.9
	github.com/go-openapi/runtime v0.33.5
	github.com/go-openapi/strfmt v0.27.4
	github.com/go-openapi/swag/conv v0.29.2
	github.com/go-openapi/swag/jsonutils v0.29.2
	github.com/go-openapi/swag/typeutils v0.29.2
	github.com/go-openapi/validate v1.0.2
)
EOF
cp "$SRC/common.go" "$SRC/$HS_VERSION/main.go" "$work/"
(cd "$work" &&
  "$gen/swagger" generate client -q -f "$doc" -A headscale -t ./internal/gen >&2 &&
  go mod tidy >&2 &&
  go build -trimpath -o hsclient . >&2)
rm -rf "$dest" && mv "$work" "$dest"
echo "install-swagger-client: built into $dest" >&2
echo "$dest/hsclient"
