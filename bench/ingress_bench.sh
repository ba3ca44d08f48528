#!/usr/bin/env bash
# The customer sync ingress (issue 6's bench): sustained upserts per second through csurelay's
# POST /v1/customers against csusim as Commerce, and the latency of each answer (the POST waits
# for its job: SearchByFields + POST Customers for a new email, one PATCH for a mapped one, plus
# the JOB and JOB_END records made durable, fsync=batch). wrk drives CONNS keep-alive connections
# with bench/ingress_bench.lua, cycling through DISTINCT emails, so the first pass creates them and
# every later pass updates them. Prints wrk's answers and latency percentiles, then csusim's ledger
# (customers created/updated, requests per endpoint) and the relay's CPU and RSS. Loopback only;
# stops by itself.
#
# Usage: bench/ingress_bench.sh [secs] [conns] [distinct]     (defaults 20 32 2000)
# Env: BUILD=dir (use that build directory as is; default: cmake --preset release into build/),
#      THREADS (wrk threads, default 1), SYNC_WAIT_MS (5000), FSYNC (batch), KEEP=1 keeps the work
#      dir.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-20}
conns=${2:-32}
distinct=${3:-2000}
threads=${THREADS:-1}
bash scripts/deps.sh >/dev/null
if [ -z "${BUILD:-}" ]; then
  cmake --preset release >/dev/null
  BUILD=build
fi
cmake --build "$BUILD" -j2 --target csusim csurelay >/dev/null
work=$(mktemp -d)
sim_pid=
relay_pid=
cleanup() {
  [ -n "$relay_pid" ] && kill -9 "$relay_pid" 2>/dev/null || true
  [ -n "$sim_pid" ] && kill -9 "$sim_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  [ "${KEEP:-0}" = 1 ] && echo "kept $work" || rm -rf "$work"
}
trap cleanup EXIT

"$BUILD/csusim" --listen 127.0.0.1:0 --csus 1 --rate 0 --seed 5 >"$work/sim.out" 2>"$work/sim.err" &
sim_pid=$!
for _ in $(seq 100); do grep -q 'listening on' "$work/sim.out" && break; sleep 0.05; done
base=$(sed -n "s/^csusim listening on //p" "$work/sim.out")
[ -n "$base" ] || { echo "csusim did not start:"; cat "$work/sim.err"; exit 1; }

# One CSU polled for nothing (csusim generates no events at --rate 0), no sink traffic: the relay's
# loop serves the ingress alone.
cat >"$work/relay.yaml" <<YAML
log: {level: info}
state: {dir: "$work/var", fsync: ${FSYNC:-batch}, fsync_interval_ms: 5}
admin: {listen: "127.0.0.1:0"}
limits: {max_live_events: 20000, http_timeout_ms: 10000}
retry: {base_ms: 200, cap_ms: 5000, max_attempts: 10}
identities:
  commerce: {authority: "$base", tenant: csusim.onmicrosoft.com, client_id: csurelay,
    client_secret_env: CSUSIM_CLIENT_SECRET, scope: "api://commerce/.default"}
csus:
  - {name: csu0, url: "$base/csu0/", oun: "128", identity: commerce, event_types: [Checkout],
     poll_interval_ms: 1000, start_from: -1s}
sinks:
  - {name: audit, type: webhook, url: "$base/hooks/audit"}
routes:
  - {event_type: Checkout, deliver: [{sink: audit}]}
ingress: {listen: "127.0.0.1:0", token_env: INGRESS_TOKEN, csu: csu0,
          sync_wait_ms: ${SYNC_WAIT_MS:-5000}}
YAML
export INGRESS_TOKEN=bench-ingress-token DISTINCT="$distinct"
CSUSIM_CLIENT_SECRET=csusim-secret "$BUILD/csurelay" run -c "$work/relay.yaml" >"$work/relay.log" 2>&1 &
relay_pid=$!
disown "$relay_pid" # killed at the end; no job-control message
port=
for _ in $(seq 100); do
  port=$(sed -n 's/.*"msg":"ingress listening".*"port":\([0-9]*\).*/\1/p' "$work/relay.log")
  [ -n "$port" ] && break
  sleep 0.05
done
[ -n "$port" ] || { echo "csurelay did not start:"; cat "$work/relay.log"; exit 1; }
admin=$(sed -n 's/.*"admin_port":\([0-9]*\).*/\1/p' "$work/relay.log")

echo "== wrk -t$threads -c$conns -d${secs}s, $distinct distinct emails ($(nproc) cores," \
  "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs))"
t0_cpu=$(awk '{print $14+$15}' "/proc/$relay_pid/stat")
wrk -t"$threads" -c"$conns" -d"${secs}s" --timeout 30s -s bench/ingress_bench.lua \
  "http://127.0.0.1:$port/v1/customers" | sed -n '/^answers/,$p'
cpu_ticks=$(($(awk '{print $14+$15}' "/proc/$relay_pid/stat") - t0_cpu))
rss=$(awk '/VmRSS/{print $2}' "/proc/$relay_pid/status")
curl -s "http://127.0.0.1:$admin/metrics" >"$work/metrics.txt"
curl -s "$base/ledger" | python3 -c '
import json, sys
d = json.load(sys.stdin)
c = d["customers"]
print("ledger   customers created %d updated %d emails %d" % (c["created"], c["updated"], c["emails"]))
print("         requests " + ", ".join("%s %s" % (k, v) for k, v in d["requests"].items()
                                      if k.startswith("customer_")))'
python3 - "$work/metrics.txt" "$cpu_ticks" "$(getconf CLK_TCK)" "$secs" "$rss" <<'PY'
import re, sys
path, ticks, hz, secs, rss = sys.argv[1:]
text = open(path).read()
def val(series):
    m = re.search("^" + re.escape(series) + r" (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0
n, total = val("csurelay_ingress_job_seconds_count"), val("csurelay_ingress_job_seconds_sum")
print("relay    CPU %.0f%% of one core, RSS %d MB; jobs %d (mean accept->end %.1f ms), retries %d"
      % (100.0 * int(ticks) / int(hz) / int(secs), int(rss) // 1024, n,
         1000 * total / n if n else 0, val("csurelay_ingress_retries_total")))
PY
