#!/usr/bin/env bash
# The demo command (README). Today it builds csurelay and runs it with examples/csurelay.yaml,
# showing the admin API answering. The emulator (csusim) and the MQTT broker join this demo when the
# pipeline lands (issues #3-#5); until then no events flow, and this script says so.
# Runs for DEMO_SECONDS (default 20) and stops by itself; Ctrl-C stops it sooner.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/deps.sh
cmake --preset release >/dev/null
cmake --build build -j"$(nproc)" --target csurelay

export CSU_CLIENT_SECRET=demo-secret
export CSURELAY_ADMIN_LISTEN=127.0.0.1:${DEMO_ADMIN_PORT:-8686}
unset CSURELAY_ADMIN_TOKEN
admin="http://$CSURELAY_ADMIN_LISTEN"

echo "== csurelay check -c examples/csurelay.yaml"
build/csurelay check -c examples/csurelay.yaml

echo "== starting csurelay (admin API on $admin)"
echo "   note: the event pipeline, csusim and the MQTT broker are not part of this demo yet;"
echo "   this run shows the relay's server, config and admin surface only."
build/csurelay run -c examples/csurelay.yaml &
pid=$!
trap 'kill -TERM $pid 2>/dev/null; wait $pid 2>/dev/null || true' EXIT INT TERM
for _ in $(seq 50); do curl -fs "$admin/healthz" >/dev/null 2>&1 && break; sleep 0.1; done

echo "== GET /healthz";  curl -s "$admin/healthz"; echo
echo "== GET /readyz";   curl -s "$admin/readyz"; echo
echo "== GET /metrics";  curl -s "$admin/metrics"
echo "== running for ${DEMO_SECONDS:-20}s (Ctrl-C to stop)"
sleep "${DEMO_SECONDS:-20}"
kill -TERM $pid
wait $pid
trap - EXIT INT TERM
echo "== csurelay stopped (exit 0)"
