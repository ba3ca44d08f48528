#!/usr/bin/env bash
# Installs every Debian package csurelay needs to build, test, bench and demo. Idempotent: packages that are
# already present are not fetched again, so a warm machine pays one dpkg query.
set -euo pipefail

PKGS=(build-essential cmake pkg-config
      libuv1-dev libcurl4-openssl-dev node-llhttp libpaho-mqtt-dev libcmocka-dev libyaml-dev
      libjansson-dev libcjson-dev libyajl-dev libjemalloc-dev
      mosquitto mosquitto-clients wrk curl python3)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
echo "deps: installing ${missing[*]}" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
