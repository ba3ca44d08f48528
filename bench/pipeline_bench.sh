#!/usr/bin/env bash
# The pipeline end to end (issue 4's bench): csusim with N CSUs generating mixed events at RATE/s,
# csurelay polling, admitting (AOF fsync=batch), enriching (order + customer) and delivering to
# the cij trigger and a webhook. Runs SECS seconds, then reads the ledger for every event generated
# before (end - GRACE s): missing and duplicated per sink, latency EventDateTime -> receipt
# (p50/p90/p99/max), plus the relay's CPU and peak RSS. Loopback only; stops by itself.
#
# Usage: bench/pipeline_bench.sh [rate] [secs] [csus]      (defaults 4000 40 16)
# Env: GRACE (s, default 8), POLL_MS (1000), OVERLAP_S (3), SETTLE_MS (0), SWEEP_S (60),
# MEMORY_MB (100), KEEP=1
# keeps the work dir. settle 0: the overlap re-reads catch late commits, so latency is the poll
# interval plus the pipeline, which is what the target measures.
set -euo pipefail
cd "$(dirname "$0")/.."
rate=${1:-4000}
secs=${2:-40}
csus=${3:-16}
grace=${GRACE:-8}
poll_ms=${POLL_MS:-1000}
overlap=${OVERLAP_S:-3}
memory_mb=${MEMORY_MB:-100}
bash scripts/deps.sh >/dev/null
cmake --preset release >/dev/null
cmake --build build -j"$(nproc)" --target csusim csurelay >/dev/null
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

cat >"$work/faults.yaml" <<'YAML'
dataverse: {max_requests: 100000000, window_s: 300, max_concurrent: 100000}
YAML
build/csusim --listen 127.0.0.1:0 --csus "$csus" --rate "$rate" --seed 11 \
  --faults "$work/faults.yaml" >"$work/sim.out" 2>"$work/sim.err" &
sim_pid=$!
for _ in $(seq 100); do grep -q 'listening on' "$work/sim.out" && break; sleep 0.05; done
base=$(sed -n "s/^csusim listening on //p" "$work/sim.out")
[ -n "$base" ] || { echo "csusim did not start:"; cat "$work/sim.err"; exit 1; }
hostport=${base#http://}

# The emulator's own config, tuned as an operator would for this load: Dataverse's per-sink limits
# lifted (csusim's are lifted above), a wider webhook window, a shorter overlap and no settle delay
# (the overlap re-reads catch late commits, the sweep later ones), a sweep of 60 s rather than 900
# (the dedupe set holds every id of the horizon: about 240 bytes x rate x max(overlap, sweep)), and
# the memory budget of the target.
CSUSIM_CLIENT_SECRET=csusim-secret build/csusim --listen "$hostport" --csus "$csus" --print-config \
  --state-dir "$work/var" --admin-listen 127.0.0.1:0 |
  sed -e 's/max_in_flight: 16, rate_per_s: 40/max_in_flight: 52, rate_per_s: 0/' \
    -e "s|/hooks/audit\"}|/hooks/audit\", max_in_flight: 128}|" \
    -e "s/overlap_s: 10, settle_ms: 2000/overlap_s: $overlap, settle_ms: ${SETTLE_MS:-0}/" \
    -e "s/poll_interval_ms: 1000/poll_interval_ms: $poll_ms/" \
    -e "s/sweep_s: 900, sweep_every_s: 300/sweep_s: ${SWEEP_S:-60}, sweep_every_s: 20/" \
    -e 's/start_from: -1h/start_from: -1s/' >"$work/relay.yaml"
printf 'limits: {max_live_events: 20000, memory_mb: %s, http_timeout_ms: 10000}\n' "$memory_mb" \
  >>"$work/relay.yaml"
CSUSIM_CLIENT_SECRET=csusim-secret build/csurelay run -c "$work/relay.yaml" >"$work/relay.log" 2>&1 &
relay_pid=$!

ledger() { curl -s "$base/ledger"; }
peak_rss=0
start=$(date +%s)
t0_cpu=$(awk '{print $14+$15}' "/proc/$relay_pid/stat")
while [ $(($(date +%s) - start)) -lt "$secs" ]; do
  sleep 5
  rss=$(awk '/VmRSS/{print $2}' "/proc/$relay_pid/status")
  [ "$rss" -gt "$peak_rss" ] && peak_rss=$rss
  ledger | python3 -c '
import json, sys
d = json.load(sys.stdin)
print("t=%3ss generated=%d trigger=%d webhook=%d rss=%s MB" % (sys.argv[1], d["generated"]["total"],
      d["trigger"]["received"], d["webhook"]["audit"]["received"], int(sys.argv[2]) // 1024))' \
    "$(($(date +%s) - start))" "$rss"
done
end_ms=$(($(date +%s%3N)))
cpu_ticks=$(($(awk '{print $14+$15}' "/proc/$relay_pid/stat") - t0_cpu))
hz=$(getconf CLK_TCK)
until_ms=$((end_ms - grace * 1000))
diff() { curl -s "$base/ledger/diff?sink=$1&until_ms=$until_ms"; }
diff trigger >"$work/trigger.json"
diff webhook:audit >"$work/webhook.json"
python3 - "$work" "$rate" "$secs" "$csus" "$peak_rss" "$cpu_ticks" "$hz" <<'PY'
import json, sys
work, rate, secs, csus, rss, ticks, hz = sys.argv[1:]
print("\nrate %s ev/s, %s CSUs, %s s; relay CPU %.0f%% of one core, peak RSS %d MB" %
      (rate, csus, secs, 100.0 * int(ticks) / int(hz) / int(secs), int(rss) // 1024))
for sink in ("trigger", "webhook"):
    d = json.load(open("%s/%s.json" % (work, sink)))
    lat = d["latency_ms"]
    print("%-8s expected %7d delivered %7d missing %5d duplicated %3d  latency ms p50 %d p90 %d p99 %d max %d"
          % (sink, d["expected"], d["delivered"], d["missing_count"], d["duplicated_count"],
             lat["p50"], lat["p90"], lat["p99"], lat["max"]))
PY
