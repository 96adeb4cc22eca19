#!/bin/bash
# Side-by-side scale benchmark: our server (SQLite, PostgreSQL) and headscale, one after the
# other on this machine, driven by bench/loadgen (N simulated Tailscale nodes).
#
#   bench/run.sh --nodes N [--servers ours-sqlite,ours-postgres,headscale] [--duration S]
#                [--scenarios storm,steady,propagation,policy,failover,kill,soak,restart] [--api-poll-ms MS]
#                [--concurrency C] [--ep-changes K] [--out-dir DIR] [--ours-bin PATH]
#                [--headscale-version vX.Y.Z] [--connect-timeout S] [--event-timeout S]
#                [--policy-timeout S] [--routers N] [--replicas K] [--keep]
#                [--soak-churn PER_MIN] [--soak-endpoints PER_MIN] [--soak-policy-every S]
#
# Writes DIR/<date>-<N>.md, .json, .raw.json and PNG plots (DIR defaults to bench/results).
# Builds the loadgen (cached under bench/.cache/) and headscale (tests/lib/install-headscale.sh,
# cached under .cache/headscale/); builds our server into
# build-bench/ unless --ours-bin (or $HS_BIN) names a binary. See bench/README.md.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
CACHE=${HS_BENCH_CACHE:-$HERE/.cache}
# Newest headscale release the Go module proxy serves (v0.29.4 and v0.30.0 are not served;
# v0.29.3's go.mod says go 1.26.5, which the local Go 1.26 builds).
HS_VERSION=${HS_BENCH_HEADSCALE_VERSION:-v0.29.3}

NODES=
SERVERS=ours-sqlite,ours-postgres,headscale
DURATION=60
OUT_DIR=$HERE/results
OURS_BIN=${HS_BIN:-}
PASS=()

usage() { sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-2}"; }

while [ $# -gt 0 ]; do
    case $1 in
        --nodes) NODES=$2; shift 2 ;;
        --servers) SERVERS=$2; shift 2 ;;
        --duration) DURATION=$2; shift 2 ;;
        --out-dir) OUT_DIR=$2; shift 2 ;;
        --ours-bin) OURS_BIN=$2; shift 2 ;;
        --headscale-version) HS_VERSION=$2; shift 2 ;;
        --concurrency|--ep-changes|--connect-timeout|--event-timeout|--settle|--scenarios|--api-poll-ms|--policy-timeout|--routers|--replicas|--soak-churn|--soak-endpoints|--soak-policy-every)
            PASS+=("$1" "$2"); shift 2 ;;
        --keep) PASS+=("$1"); shift ;;
        -h|--help) usage 0 ;;
        *) echo "run.sh: unknown argument $1" >&2; usage ;;
    esac
done
[ -n "$NODES" ] || usage

say() { echo "[run.sh $(date +%H:%M:%S)] $*" >&2; }

export GOTOOLCHAIN=local
export GOFLAGS=${GOFLAGS:-}

# ---- the load generator, cached by the hash of its sources
LG_HASH=$(cat "$HERE"/loadgen/go.mod "$HERE"/loadgen/go.sum "$HERE"/loadgen/*.go | sha256sum | cut -c1-16)
LOADGEN=$CACHE/loadgen/$LG_HASH/loadgen
if [ ! -x "$LOADGEN" ]; then
    say "building loadgen → $LOADGEN"
    mkdir -p "$(dirname "$LOADGEN")"
    (cd "$HERE/loadgen" && go build -trimpath -o "$LOADGEN.tmp" .)
    mv "$LOADGEN.tmp" "$LOADGEN"
fi

# ---- our server
OURS_VERSION=$(git -C "$REPO" describe --always --dirty 2>/dev/null || echo unknown)
if [ -n "$OURS_BIN" ]; then
    # a prebuilt binary may be older than the tree: say when it was built
    OURS_VERSION="$OURS_VERSION tree, binary $OURS_BIN built $(date -u -r "$OURS_BIN" +%FT%TZ 2>/dev/null)"
fi
if [[ ",$SERVERS," == *,ours-* ]] && [ -z "$OURS_BIN" ]; then
    say "building our server in build-bench/ (Release)"
    cmake -S "$REPO" -B "$REPO/build-bench" -DCMAKE_BUILD_TYPE=Release -DHS_TESTS=OFF >/dev/null
    cmake --build "$REPO/build-bench" -j2 --target headscale >/dev/null
    OURS_BIN=$REPO/build-bench/headscale
fi

# ---- headscale, cached per version (the same cache the tests compare against)
HS_BIN_PATH=
if [[ ",$SERVERS," == *,headscale,* ]]; then
    HS_BIN_PATH=$REPO/.cache/headscale/$HS_VERSION/headscale
    [ -x "$HS_BIN_PATH" ] || say "installing headscale $HS_VERSION (a few minutes the first time)"
    bash "$REPO/tests/lib/install-headscale.sh" "$HS_VERSION" >&2 || exit 1
fi

exec python3 "$HERE/lib/bench.py" --nodes "$NODES" --servers "$SERVERS" --duration "$DURATION" \
    --out-dir "$OUT_DIR" --loadgen "$LOADGEN" --ours-bin "${OURS_BIN:-/nonexistent}" \
    --ours-version "$OURS_VERSION" --headscale-bin "$HS_BIN_PATH" \
    --headscale-version "$HS_VERSION" ${PASS[@]+"${PASS[@]}"}
