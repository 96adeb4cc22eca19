#!/usr/bin/env bash
# DERP relay benchmark: our embedded relay (headscale serve, release build) against Tailscale's
# derper, same load generator (bench/derp, real tailscale.com/derp/derphttp clients), same run.
#
#   bench/derp/run.sh                 full run: sizes 64 512 1200 8000, 1 and 4 pairs, 10 s each
#   DURATION=2 SIZES="1200" PAIRS=1 bench/derp/run.sh     a quick smoke run
#   bench/derp/run.sh --tls           the same over TLS (like production): a throwaway CA and a
#                                     server cert for 127.0.0.1/localhost made here; ours with
#                                     tls_cert_path/tls_key_path, derper with -certmode manual,
#                                     the load generator trusting the CA through SSL_CERT_FILE
#
# Env: RUNS (load generator client/load pairs, default "direct/flood direct/window
# derphttp/flood"; client: direct|derphttp, load: flood = open loop, window = at most $WINDOW
# (24) packets in flight per pair; see main.go -client and -window), HS_BIN (default build-derp-rel/headscale, built Release if missing), TS_VERSION
# (v1.102.3; derper from .cache/tailscale/<ver>/derper), DURATION, WARMUP, SIZES, PAIRS,
# OUT (results dir, default bench/results), TAG (file name suffix, default the date, plus -tls
# with --tls), TLS=1 (same as --tls).
# Everything runs inside a network namespace this script creates (loopback only) and deletes.
# Writes $OUT/derp-$TAG.md (table, ours vs derper with ratios) and $OUT/derp-$TAG.json.
set -euo pipefail

die() { echo "run.sh: $*" >&2; exit 1; }
TLS=${TLS:-0}
for arg in "$@"; do
    case $arg in
        --tls) TLS=1 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
        *) die "unknown argument $arg (see --help)" ;;
    esac
done

REPO=$(cd "$(dirname "$0")/../.." && pwd)
HERE=$REPO/bench/derp
TS_VERSION=${TS_VERSION:-v1.102.3}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-1}
SIZES=${SIZES:-"64 512 1200 8000"}
PAIRS=${PAIRS:-"1 4"}
RUNS=${RUNS:-"direct/flood direct/window derphttp/flood"}
WINDOW=${WINDOW:-24}
OUT=${OUT:-$REPO/bench/results}
if [ "$TLS" = 1 ]; then SCHEME=https; TAG=${TAG:-$(date +%Y-%m-%d)-tls}
else SCHEME=http; TAG=${TAG:-$(date +%Y-%m-%d)}; fi
HS_BIN=${HS_BIN:-$REPO/build-derp-rel/headscale}
DERPER=$REPO/.cache/tailscale/$TS_VERSION/derper
HS_PORT=18080
DERPER_PORT=13340

[ "$(id -u)" = 0 ] || die "needs root (ip netns)"
[ -x "$DERPER" ] || die "no derper at $DERPER (run tests/lib/install-tailscale.sh)"

# ---- (a) the load generator, in a cache dir keyed by Go version + source hash ----
SRC_HASH=$(cat "$HERE/go.mod" "$HERE/go.sum" "$HERE/main.go" | sha256sum | cut -c1-12)
GO_VER=$(go env GOVERSION)
LG_DIR=$REPO/.cache/bench-derp/$TS_VERSION-$GO_VER-$SRC_HASH
LG=$LG_DIR/derpload
if [ ! -x "$LG" ]; then
    echo "building load generator into $LG_DIR"
    mkdir -p "$LG_DIR"
    (cd "$HERE" && go build -trimpath -o "$LG.tmp" .) && mv "$LG.tmp" "$LG"
fi

if [ ! -x "$HS_BIN" ]; then
    echo "building release headscale into $REPO/build-derp-rel"
    cmake -S "$REPO" -B "$REPO/build-derp-rel" -DCMAKE_BUILD_TYPE=Release -DHS_TESTS=OFF >/dev/null
    cmake --build "$REPO/build-derp-rel" -j"$(nproc)" --target headscale >/dev/null
    HS_BIN=$REPO/build-derp-rel/headscale
fi

# ---- (b) namespace, our server, derper ----
NS=hsbench-$$-$(head -c4 /dev/urandom | od -An -tx1 | tr -d ' \n')
WORK=$(mktemp -d /tmp/derpbench-XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$p" 2>/dev/null || true
    done
    for p in $(ip netns pids "$NS" 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
    ip netns del "$NS" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
ip netns add "$NS"
ip -n "$NS" link set lo up

# TLS: a CA and one server certificate (ECDSA P-256, IP 127.0.0.1 + DNS localhost) for both
# servers; derper's manual cert mode wants <hostname>.crt/.key in its -certdir.
HS_TLS=""
DERPER_TLS=()
LG_ENV=()
CURL_TLS=()
if [ "$TLS" = 1 ]; then
    T=$WORK/tls
    mkdir -p "$T/derper"
    ossl() { openssl "$@" </dev/null >>"$T/openssl.log" 2>&1 || { cat "$T/openssl.log"; die "openssl $1 failed"; }; }
    ossl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$T/ca.key" \
        -out "$T/ca.pem" -days 2 -subj /CN=derp-bench-ca \
        -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
    ossl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$T/server.key" \
        -out "$T/server.csr" -subj /CN=127.0.0.1
    printf '%s\n' basicConstraints=CA:FALSE keyUsage=digitalSignature extendedKeyUsage=serverAuth \
        subjectAltName=IP:127.0.0.1,DNS:localhost >"$T/server.ext"
    ossl x509 -req -in "$T/server.csr" -CA "$T/ca.pem" -CAkey "$T/ca.key" -CAcreateserial \
        -out "$T/server.pem" -days 2 -extfile "$T/server.ext"
    cp "$T/server.pem" "$T/derper/127.0.0.1.crt"
    cp "$T/server.key" "$T/derper/127.0.0.1.key"
    HS_TLS="tls_cert_path: $T/server.pem
tls_key_path: $T/server.key"
    DERPER_TLS=(-certmode manual -certdir "$T/derper" -hostname 127.0.0.1)
    LG_ENV=(SSL_CERT_FILE="$T/ca.pem")
    CURL_TLS=(--cacert "$T/ca.pem")
fi

cat >"$WORK/config.yaml" <<YAML
server_url: $SCHEME://127.0.0.1:$HS_PORT
listen_addr: 127.0.0.1:$HS_PORT
$HS_TLS
metrics_listen_addr: 127.0.0.1:19090
unix_socket: $WORK/hs.sock
noise:
  private_key_path: $WORK/noise.key
prefixes:
  v4: 100.64.0.0/10
  v6: fd7a:115c:a1e0::/48
database:
  type: sqlite
  sqlite:
    path: $WORK/db.sqlite
dns:
  base_domain: example.com
  magic_dns: false
  nameservers:
    global: [1.1.1.1]
log:
  level: info
disable_check_updates: true
derp:
  urls: []
  paths: []
  auto_update_enabled: false
  server:
    enabled: true
    region_id: 999
    region_code: headscale
    region_name: Headscale Embedded DERP
    stun_listen_addr: 127.0.0.1:13478
    private_key_path: $WORK/derp.key
    verify_clients: false
YAML

ip netns exec "$NS" "$HS_BIN" -c "$WORK/config.yaml" serve >"$WORK/hs.log" 2>&1 &
HS_PID=$!
PIDS+=("$HS_PID")
ip netns exec "$NS" env HOME="$WORK" "$DERPER" -a "127.0.0.1:$DERPER_PORT" -http-port=-1 \
    -stun-port=13479 -c "$WORK/derper.json" "${DERPER_TLS[@]}" >"$WORK/derper.log" 2>&1 &
DERPER_PID=$!
PIDS+=("$DERPER_PID")

probe() {
    ip netns exec "$NS" curl -s "${CURL_TLS[@]}" -o /dev/null -w '%{http_code}' --max-time 2 "$1" || true
}
for what in "$SCHEME://127.0.0.1:$HS_PORT/derp/probe" "$SCHEME://127.0.0.1:$DERPER_PORT/derp/probe"; do
    ok=
    for _ in $(seq 100); do
        [ "$(probe "$what")" = 200 ] && { ok=1; break; }
        kill -0 "$HS_PID" 2>/dev/null || { cat "$WORK/hs.log"; die "headscale exited"; }
        kill -0 "$DERPER_PID" 2>/dev/null || { cat "$WORK/derper.log"; die "derper exited"; }
        sleep 0.1
    done
    [ -n "$ok" ] || die "$what not answering after 10 s"
done

# ---- (c) the scenarios, ours and derper back to back ----
RAW=$WORK/raw.jsonl
: >"$RAW"
for run in $RUNS; do
client=${run%/*}; load=${run#*/}
case $load in flood) window=0 ;; window) window=$WINDOW ;; *) die "bad load $load" ;; esac
for pairs in $PAIRS; do
    for size in $SIZES; do
        for target in ours derper; do
            if [ $target = ours ]; then url=$SCHEME://127.0.0.1:$HS_PORT/derp; pid=$HS_PID
            else url=$SCHEME://127.0.0.1:$DERPER_PORT/derp; pid=$DERPER_PID; fi
            line=$(timeout $((DURATION + WARMUP + 60)) ip netns exec "$NS" env "${LG_ENV[@]}" "$LG" -url "$url" \
                -pairs "$pairs" -size "$size" -duration "${DURATION}s" -warmup "${WARMUP}s" \
                -server-pid "$pid" -client "$client" -window "$window") ||
                die "load generator failed against $target ($client, $pairs x $size)"
            echo "{\"server\":\"$target\",\"load\":\"$load\",\"r\":$line}" >>"$RAW"
            echo "$target $client/$load pairs=$pairs size=$size: $line"
        done
    done
done
done
kill -0 "$HS_PID" 2>/dev/null || { tail -50 "$WORK/hs.log"; die "headscale died during the run"; }
RSS_OURS=$(awk '/VmHWM/{print $2}' /proc/$HS_PID/status)
RSS_DERPER=$(awk '/VmHWM/{print $2}' /proc/$DERPER_PID/status)

# ---- (d) report ----
mkdir -p "$OUT"
python3 - "$RAW" "$OUT/derp-$TAG" <<PY
import json, sys, platform, subprocess, os
raw, base = sys.argv[1], sys.argv[2]
rows = [json.loads(l) for l in open(raw)]
def rev():
    r = subprocess.run(["git", "-C", "$REPO", "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return r.stdout.strip()
cpu = next((l.split(":",1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
meta = {"date": "$TAG", "git": rev(), "headscale_bin": "$HS_BIN", "derper": "$DERPER ($TS_VERSION)",
        "loadgen": "bench/derp (tailscale.com/derp/derphttp $TS_VERSION, $GO_VER)",
        "cpus": os.cpu_count(), "cpu_model": cpu, "kernel": platform.release(),
        "duration_s": $DURATION, "warmup_s": $WARMUP,
        "peak_rss_kib": {"ours": int("$RSS_OURS" or 0), "derper": int("$RSS_DERPER" or 0)},
        "transport": ("DERP over TLS (ours: OpenSSL; derper: Go crypto/tls, -certmode manual; "
                      "ECDSA P-256 certificate from a throwaway CA)" if "$TLS" == "1" else
                      "plain HTTP DERP") + " over loopback in a private network namespace"}
by = {}
for r in rows:
    by.setdefault((r["r"]["client"] + "/" + r["load"], r["r"]["pairs"], r["r"]["size"]), {})[r["server"]] = r["r"]
table = []
order = {c: i for i, c in enumerate("$RUNS".split())}
for (client, pairs, size), d in sorted(by.items(), key=lambda kv: (order.get(kv[0][0], 9),) + kv[0][1:]):
    o, t = d.get("ours"), d.get("derper")
    if not o or not t:
        continue
    ratio = lambda a, b: (a / b) if b else None
    table.append({"client": client, "pairs": pairs, "size": size, "ours": o, "derper": t,
                  "ratio_pps": ratio(o["recv_pps"], t["recv_pps"]),
                  "ratio_cpu": ratio(o["server_cpu_pct"], t["server_cpu_pct"]),
                  "ratio_pkts_per_cpu": ratio(o["recv_pps"] / max(o["server_cpu_pct"], 1e-9),
                                              t["recv_pps"] / max(t["server_cpu_pct"], 1e-9))})
json.dump({"meta": meta, "results": table}, open(base + ".json", "w"), indent=2)
f = lambda x, n=0: "-" if x is None else f"{x:,.{n}f}"
md = [f"# DERP relay benchmark{' over TLS' if '$TLS' == '1' else ''}, {meta['date']}", "",
      f"Ours: embedded relay of \`headscale serve\` (git {meta['git']}, release build), "
      f"verify_clients false. Reference: Tailscale's derper {meta['derper']}. "
      f"Load: bench/derp/run.sh, {meta['loadgen']}; N sender/receiver pairs, each sender "
      f"sending as fast as it can (one write per packet, like tailscaled) for {meta['duration_s']} s "
      f"after {meta['warmup_s']} s warm-up. {meta['transport']}. Machine: {meta['cpus']} CPUs "
      f"({meta['cpu_model']}), kernel {meta['kernel']}; servers and load generator share them.", "",
      "recv = packets that reached the receivers; CPU = % of one core over the window "
      "(server from /proc/<pid>/stat, load generator from getrusage); ratio = ours/derper "
      "(> 1: ours relays more; for CPU < 1: ours uses less; pkts/CPU = relayed packets per "
      "CPU-second, > 1: ours is cheaper per packet).", "",
      "load = client/load: client \`direct\` = derp.NewClient over a conn it dials itself with a "
      "1 MiB read buffer (cheap receivers); \`derphttp\` = derphttp.Client exactly as tailscaled "
      "uses it (4 KiB read buffer, so receiving costs a read syscall every few packets). "
      "\`flood\` = open loop: senders write as fast as TCP lets them and the relay drops what "
      "a receiver's queue cannot hold (ours: 512 KiB per receiver; derper: 32 packets, drop "
      "oldest), so loss is expected and recv pkt/s shows delivery under overload. "
      f"\`window\` = closed loop, at most $WINDOW packets in flight per pair (below both "
      "relays' queue limits): the loss-free relay capacity.", "",
      "| load | pairs | size B | ours recv pkt/s | derper recv pkt/s | ratio | ours MB/s | derper MB/s "
      "| ours loss % | derper loss % | ours CPU % | derper CPU % | CPU ratio | pkts/CPU ratio "
      "| loadgen CPU % (ours/derper) |",
      "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
for r in table:
    o, t = r["ours"], r["derper"]
    md.append(f"| {r['client']} | {r['pairs']} | {r['size']} | {f(o['recv_pps'])} | {f(t['recv_pps'])} | "
              f"{f(r['ratio_pps'],2)} | {f(o['recv_MBps'],1)} | {f(t['recv_MBps'],1)} | "
              f"{f(o['loss_pct'],1)} | {f(t['loss_pct'],1)} | {f(o['server_cpu_pct'])} | "
              f"{f(t['server_cpu_pct'])} | {f(r['ratio_cpu'],2)} | {f(r['ratio_pkts_per_cpu'],2)} | "
              f"{f(o['loadgen_cpu_pct'])} / {f(t['loadgen_cpu_pct'])} |")
md += ["", f"Peak RSS over the whole run: ours {meta['peak_rss_kib']['ours']:,} KiB, "
       f"derper {meta['peak_rss_kib']['derper']:,} KiB.", ""]
open(base + ".md", "w").write("\n".join(md))
print("\n".join(md))
PY
echo "wrote $OUT/derp-$TAG.md and $OUT/derp-$TAG.json"
