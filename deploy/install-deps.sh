#!/usr/bin/env bash
# Installs every build and test dependency with apt-get (Debian 12). Idempotent:
# packages already present are skipped, so a second run is quick and quiet.
set -euo pipefail

PKGS=(
  build-essential cmake pkg-config git ca-certificates
  libmicrohttpd-dev libpq-dev libssl-dev libsodium-dev libjansson-dev libyaml-dev
  libfcgi-dev libcriterion-dev libsqlite3-dev libcrypt-dev libnghttp2-dev libzstd-dev libcurl4-openssl-dev
  postgresql postgresql-client sqlite3 nginx iproute2 procps psmisc curl
  clang libclang-rt-14-dev
  python3 python3-pytest python3-yaml python3-requests
  debhelper help2man debootstrap systemd systemd-container strace
  libfaketime
  chromium chromium-driver
)

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "install-deps: all packages present"
fi

# Python test dependencies for whichever python3 is first on PATH (Debian's, or a pyenv one):
# pytest, and the pieces the protocol tests use (h2 and cryptography for a Noise/HTTP/2 client,
# PyNaCl for a DERP client, prometheus_client's parser for /metrics).
# Selenium drives Debian's chromium through chromium-driver in the web admin's tests.
python3 -c 'import pytest, yaml, requests, h2, cryptography, nacl, prometheus_client, selenium' \
  2>/dev/null ||
  python3 -m pip install -q pytest pyyaml requests h2 cryptography pynacl prometheus_client \
    selenium
