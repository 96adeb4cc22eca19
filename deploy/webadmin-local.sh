#!/usr/bin/env bash
# Starts the web admin locally in front of a running server (e.g. deploy/quickstart.sh's):
# headscale-webadmin on a unix socket and nginx with deploy/nginx-headscale.conf on
# https://127.0.0.1:$WEBADMIN_PORT/admin/ (a self-signed certificate made once in DIR; the
# session cookie is Secure, so the pages need HTTPS). Sign in with an API key from
# `build/headscale -c data/config.yaml apikeys create`.
#
#   deploy/webadmin-local.sh [--config-only] [DIR]     (DIR defaults to data/webadmin)
#
# --config-only writes DIR's certificate and nginx configuration and stops (the tests start
# the processes themselves). Environment: WEBADMIN_PORT (8443), HEADSCALE_URL (the server,
# http://127.0.0.1:8080), WEBADMIN_BIN (build/headscale-webadmin).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CONFIG_ONLY=0
if [ "${1:-}" = "--config-only" ]; then
  CONFIG_ONLY=1
  shift
fi
DIR=$(realpath -m "${1:-data/webadmin}")
PORT=${WEBADMIN_PORT:-8443}
UPSTREAM=${HEADSCALE_URL:-http://127.0.0.1:8080}
BIN=${WEBADMIN_BIN:-$ROOT/build/headscale-webadmin}
SOCK=$DIR/webadmin.sock
mkdir -p "$DIR"

if [ ! -f "$DIR/cert.pem" ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 365 \
    -subj /CN=localhost -keyout "$DIR/key.pem" -out "$DIR/cert.pem" 2>/dev/null
fi

# The deploy site with this machine's paths: a loopback port, the certificate above, this
# checkout's static/, the socket in DIR and the server's address.
sed -e "/listen \[::\]/d" \
    -e "s|listen 443 ssl;|listen 127.0.0.1:$PORT ssl;|" \
    -e "s|listen 80;|listen 127.0.0.1:$((PORT + 1));|" \
    -e "s|ssl_certificate .*;|ssl_certificate $DIR/cert.pem;|" \
    -e "s|ssl_certificate_key .*;|ssl_certificate_key $DIR/key.pem;|" \
    -e "s|include fastcgi_params;|include /etc/nginx/fastcgi_params;|" \
    -e "s|unix:/run/headscale-webadmin/webadmin.sock|unix:$SOCK|" \
    -e "s|/usr/share/headscale/static/|$ROOT/static/|" \
    -e "s|http://127.0.0.1:8080|$UPSTREAM|" \
    deploy/nginx-headscale.conf > "$DIR/site.conf"

# As root, nginx's workers would run as nobody and could not open the socket (0660).
USER_LINE=""
[ "$(id -u)" -eq 0 ] && USER_LINE="user root;"
{
  echo "daemon off;"
  echo "$USER_LINE"
  echo "worker_processes 1;"
  echo "pid $DIR/nginx.pid;"
  echo "error_log $DIR/error.log info;"
  echo "events { worker_connections 256; }"
  echo "http {"
  echo "    include /etc/nginx/mime.types;"
  echo "    access_log $DIR/access.log;"
  for t in client_body proxy fastcgi uwsgi scgi; do
    echo "    ${t}_temp_path $DIR/${t}_temp;"
  done
  echo "    include $DIR/site.conf;"
  echo "}"
} > "$DIR/nginx.conf"
[ $CONFIG_ONLY = 1 ] && exit 0

[ -x "$BIN" ] || cmake --build build -j"$(nproc)" --target headscale-webadmin

"$BIN" --server "$UPSTREAM" --templates "$ROOT/templates" --listen "$SOCK" \
  --sessions-file "$DIR/sessions" &
WA_PID=$!
trap 'kill $WA_PID 2>/dev/null' EXIT
echo "webadmin-local: https://127.0.0.1:$PORT/admin/ (Ctrl-C to stop)"
nginx -c "$DIR/nginx.conf" -p "$DIR"
