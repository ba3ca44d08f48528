#!/usr/bin/env bash
# Measures csurelay's HTTP server: wrk with 100 keep-alive connections against /healthz on one loop.
# Usage: bench/wrk_healthz.sh [seconds] [connections]   (loopback only; stops by itself)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
conns=${2:-100}

bash scripts/deps.sh
cmake --preset release >/dev/null
cmake --build build -j"$(nproc)" --target csurelay >/dev/null

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
dir=$(mktemp -d)
printf 'state: {dir: %s}\nadmin: {listen: "127.0.0.1:%s"}\nlog: {level: warn}\n' "$dir" "$port" > "$dir/bench.yaml"
build/csurelay run -c "$dir/bench.yaml" &
pid=$!
trap 'kill -TERM $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; rm -rf "$dir"' EXIT
for _ in $(seq 50); do curl -fs "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break; sleep 0.1; done

echo "== wrk -t1 -c$conns -d${secs}s http://127.0.0.1:$port/healthz  ($(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs))"
wrk -t1 -c"$conns" -d"${secs}s" --latency "http://127.0.0.1:$port/healthz"
echo "== csurelay RSS after the run: $(awk '/VmRSS/ {print $2, $3}' /proc/$pid/status)"
