#!/usr/bin/env bash
# The whole test suite: installs dependencies, builds with ASan+UBSan, runs the Criterion unit
# tests and the pytest system tests on SQLite and on a throwaway PostgreSQL server.
# Exit status is the verdict; the last line printed is the summary.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BUILD=${HS_BUILD_DIR:-$ROOT/build-asan}
LOGDIR=$(mktemp -d /tmp/hs-tests.XXXXXX)
PGDIR=$LOGDIR/pg
status=0
summary=()

step() { echo "==> $*"; }

bash deploy/install-deps.sh || exit 1

step "build (ASan+UBSan) in $BUILD"
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Debug -DHS_SANITIZE=ON >/dev/null || exit 1
cmake --build "$BUILD" -j"$(nproc)" || exit 1

export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:strict_string_checks=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

step "real Tailscale clients (go install, cached in .cache/tailscale/<version>)"
TS_VERSIONS=${HS_TS_VERSIONS:-v1.102.3,v1.80.3}
export HS_TS_VERSIONS=$TS_VERSIONS
bash tests/lib/install-tailscale.sh ${TS_VERSIONS//,/ } || exit 1
# The same versions with Tailscale's ts_debug_websockets tag: DERP over WebSocket.
bash tests/lib/install-tailscale-ws.sh ${TS_VERSIONS//,/ } || exit 1

step "real headscale servers to compare with (cached in .cache/headscale/<version>)"
bash tests/lib/install-headscale.sh v0.29.3 v0.22.3 || exit 1
bash tests/lib/install-pebble.sh v2.10.3 || exit 1  # the ACME test's CA

step "the REST client go-swagger generates from headscale's OpenAPI document (as the Terraform provider's)"
bash tests/lib/install-swagger-client.sh v0.29.3 >/dev/null || exit 1
bash tests/lib/install-swagger-client.sh v0.22.3 >/dev/null || exit 1

step "start a throwaway PostgreSQL"
eval "$(bash tests/lib/pgtmp.sh start "$PGDIR")" || exit 1
trap 'bash tests/lib/pgtmp.sh stop "$PGDIR" >/dev/null 2>&1' EXIT
export HS_TEST_PG_HOST=$PGHOST HS_TEST_PG_PORT=$PGPORT HS_TEST_PG_USER=$PGUSER \
       HS_TEST_PG_DB=$PGDATABASE

step "unit tests"
if (cd "$BUILD" && ctest --output-on-failure -j2); then
  summary+=("unit: pass")
else
  summary+=("unit: FAIL"); status=1
fi

step "system tests (sqlite + postgres)"
export HS_BIN=$BUILD/headscale HS_PG_RUNNING_DIR=$PGDIR
if python3 -m pytest tests/system -q -p no:cacheprovider --db=both --durations=30; then
  summary+=("system: pass")
else
  summary+=("system: FAIL"); status=1
fi

step "fuzz (short runs)"
FUZZ_BUILD=${HS_FUZZ_BUILD_DIR:-$ROOT/build-fuzz}
FUZZ_SECONDS=${HS_FUZZ_SECONDS:-10}  # per target; long runs: bench/results/*-fuzz.md
FUZZ_TARGETS="policy policy_yaml policy_compile config config_records noise control api derp derp_mesh
  derp_stun derp_map net webadmin acme auth_jwt"
fuzz_ok=1
if CC=clang cmake -S . -B "$FUZZ_BUILD" -DCMAKE_BUILD_TYPE=Debug -DHS_FUZZ=ON -DHS_TESTS=OFF \
     >/dev/null && cmake --build "$FUZZ_BUILD" -j"$(nproc)" --target $(printf 'fuzz_%s ' $FUZZ_TARGETS); then
  for f in $FUZZ_TARGETS; do
    work=$LOGDIR/fuzz-$f
    mkdir -p "$work"
    cp tests/fuzz/corpus/$f/* "$work/"
    if ! "$FUZZ_BUILD/tests/fuzz/fuzz_$f" -max_total_time="$FUZZ_SECONDS" -max_len=65536 \
         -rss_limit_mb=2048 "$work" >"$LOGDIR/fuzz-$f.log" 2>&1; then
      echo "fuzz_$f failed:"; tail -40 "$LOGDIR/fuzz-$f.log"; fuzz_ok=0
    else
      grep -E '^(Done|#[0-9]+ +DONE)' "$LOGDIR/fuzz-$f.log" | tail -1
    fi
  done
else
  fuzz_ok=0
fi
if [ $fuzz_ok = 1 ]; then summary+=("fuzz: pass"); else summary+=("fuzz: FAIL"); status=1; fi

echo "SUMMARY: ${summary[*]} => $([ $status -eq 0 ] && echo PASS || echo FAIL)"
exit $status
