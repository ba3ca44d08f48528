# shellcheck shell=bash disable=SC2154 # sourced by bench/run, which sets bin, csus, sinks, ...
# bench/run's process handling, sourced by bench/run: start csusim, mosquitto and the MQTT
# recorder, the subject (csurelay or the Node-RED peer), the sampler; one measured phase from
# start to report; stop everything. Loopback and ephemeral ports only. Every process started here
# is recorded in $procs and ended by stop_all (the EXIT trap), kill -9 for any that lingers.
#
# A phase's directory holds everything it measured: meta.json (the parameters and the instants),
# samples.jsonl (once a second), drain.json, the ledger's receipts (receipts_*.csv), diffs and
# counts, the relay's final /metrics, the MQTT recorder's lines, and every process's log.

procs=""

now_ms() { date +%s%3N; }

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# wait_for FILE PATTERN SECONDS: until a line of FILE matches PATTERN (grep -E); 1 on timeout.
wait_for() {
  local i
  for ((i = 0; i < $3 * 20; i++)); do
    grep -qE "$2" "$1" 2>/dev/null && return 0
    sleep 0.05
  done
  return 1
}

track() { procs="$procs $1"; }

# Forgets a pid that has ended, so a later stop_all never signals a process that reused it.
untrack() { procs=$(echo " $procs " | sed "s/ $1 / /g"); }

# stop PID [GRACE_S]: SIGTERM, then SIGKILL after the grace.
stop_pid() {
  local pid=$1 i
  untrack "$pid"
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < ${2:-3} * 20; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
  done
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

stop_all() {
  local p
  for p in $procs; do stop_pid "$p" 2; done
}

# The fault plan csusim starts with: Dataverse's service protection lifted (the relay and the peer
# are measured, not Microsoft's limits), then the user's --faults file (its own dataverse section
# wins; YAML keeps the last of a repeated key, so it is appended after ours only when it has none).
write_faults() {
  local dir=$1
  if [ -n "$faults_file" ] && grep -q '^dataverse:' "$faults_file"; then
    cp "$faults_file" "$dir/faults.yaml"
  else
    echo 'dataverse: {max_requests: 100000000, window_s: 300, max_concurrent: 100000}' >"$dir/faults.yaml"
    [ -z "$faults_file" ] || cat "$faults_file" >>"$dir/faults.yaml"
  fi
}

start_csusim() {
  local dir=$1 rate=$2
  write_faults "$dir"
  sim_t0=$(now_ms)
  "$bin/csusim" --listen 127.0.0.1:0 --csus "$csus" --rate "$rate" --seed "$seed" \
    --faults "$dir/faults.yaml" >"$dir/csusim.out" 2>"$dir/csusim.log" &
  sim_pid=$!
  track $sim_pid
  wait_for "$dir/csusim.out" 'listening on' 10 || die "csusim did not start: $(tail -3 "$dir/csusim.log")"
  base=$(sed -n 's/^csusim listening on //p' "$dir/csusim.out")
}

start_broker() {
  local dir=$1
  mqtt_port=$(free_port)
  printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 0\n' \
    "$mqtt_port" >"$dir/mosquitto.conf"
  /usr/sbin/mosquitto -c "$dir/mosquitto.conf" >"$dir/mosquitto.log" 2>&1 &
  broker_pid=$!
  track $broker_pid
  local i
  for ((i = 0; i < 100; i++)); do
    (exec 3<>"/dev/tcp/127.0.0.1/$mqtt_port") 2>/dev/null && break
    sleep 0.05
  done
  "$bin/bench/mqtt_recorder" "tcp://127.0.0.1:$mqtt_port" 'commerce/#' "$dir/mqtt.txt" \
    >"$dir/recorder.out" 2>"$dir/recorder.log" &
  recorder_pid=$!
  track $recorder_pid
  wait_for "$dir/recorder.out" subscribed 10 || die "the MQTT recorder did not subscribe: $(cat "$dir/recorder.log")"
}

# The relay's configuration for this phase (bench/lib/relay_config.py says why each value).
write_relay_config() {
  local dir=$1
  python3 "$here/lib/relay_config.py" --base "$base" --csus "$csus" \
    --state-dir "$dir/state" --sinks "$sinks" ${mqtt_port:+--mqtt "tcp://127.0.0.1:$mqtt_port"} \
    --fsync "$fsync" --poll-ms "$poll_ms" --start-from "$(date -u -d "@$(((sim_t0 - 1000) / 1000))" +%Y-%m-%dT%H:%M:%SZ)" \
    --memory-mb "$memory_mb" --retry-base-ms "$retry_base_ms" --retry-cap-ms "$retry_cap_ms" \
    --retry-max-attempts "$retry_max_attempts" >"$dir/relay.yaml"
}

# The relay on that configuration; its pid in $dir/subject.pid, its /metrics URL in
# $dir/metrics.url. Called again by the crash scenario on the same state directory.
start_relay() {
  local dir=$1
  local log=$dir/relay.log
  local mark=0
  [ ! -f "$log" ] || mark=$(wc -l <"$log")
  CSUSIM_CLIENT_SECRET=csusim-secret "$bin/csurelay" run -c "$dir/relay.yaml" >>"$log" 2>&1 &
  subject_pid=$!
  track $subject_pid
  echo $subject_pid >"$dir/subject.pid"
  local i port=""
  for ((i = 0; i < 200; i++)); do
    port=$(tail -n +"$((mark + 1))" "$log" | grep -o '"msg":"csurelay running".*"admin_port":[0-9]*' |
      grep -o '[0-9]*$' || true)
    [ -z "$port" ] || break
    sleep 0.05
  done
  [ -n "$port" ] || die "csurelay did not start: $(tail -3 "$log")"
  echo "http://127.0.0.1:$port/metrics" >"$dir/metrics.url"
}

start_nodered() {
  local dir=$1
  mkdir -p "$dir/nodered"
  BENCH_BASE=$base BENCH_CSUS=$csus BENCH_SINKS=$sinks BENCH_START_MS=$((sim_t0 - 1000)) \
    BENCH_OVERLAP_S=3 BENCH_MQTT_HOST=127.0.0.1 BENCH_MQTT_PORT=${mqtt_port:-1} \
    BENCH_POLL_CRON="*/$((poll_ms / 1000)) * * * * *" BENCH_CLIENT_SECRET=csusim-secret \
    BENCH_FLOW_FILE="$here/nodered/flows.json" BENCH_USER_DIR="$dir/nodered" \
    node "$here/nodered/node_modules/node-red/red.js" --settings "$here/nodered/settings.js" \
    >"$dir/nodered.log" 2>&1 &
  subject_pid=$!
  track $subject_pid
  echo $subject_pid >"$dir/subject.pid"
  wait_for "$dir/nodered.log" 'Started flows' 60 || die "Node-RED did not start: $(tail -5 "$dir/nodered.log")"
}

# Waits until the subject has searched csusim at least once (its first poll happened).
wait_first_search() {
  local i
  for ((i = 0; i < 300; i++)); do
    curl -s "$base/ledger" | grep -q '"search":{' && return 0
    sleep 0.1
  done
  die "the $1 never searched csusim within 30 s (see its log in $2)"
}

# The outage of the scenario: cij's Dataverse endpoints answer 503 from outage_at_s after the
# window starts, for outage_len_s (POST /sim/faults: rules replace rules; an empty plan heals).
outage_plan() {
  local ep rules=""
  for ep in contacts_get contacts_create trigger; do
    rules="$rules  $ep: {error_rate: 1, errors: [503], retry_after_s: 0}"$'\n'
  done
  printf 'endpoints:\n%s' "$rules"
}

run_outage() {
  local dir=$1
  sleep_until $((t_warm + outage_at_s * 1000))
  outage_down=$(now_ms)
  outage_plan | curl -sf -X POST --data-binary @- "$base/sim/faults" >/dev/null || die "POST /sim/faults failed"
  echo "  cij down (Dataverse answers 503) for ${outage_len_s} s" >&2
  sleep_until $((outage_down + outage_len_s * 1000))
  curl -sf -X POST --data-binary '' "$base/sim/faults" >/dev/null || die "POST /sim/faults failed"
  outage_up=$(now_ms)
  echo "  cij back" >&2
}

# kill -9 the relay every crash_every_s until the window ends, restart it at once on its state.
run_crashes() {
  local dir=$1
  crashes=0
  while [ $(($(now_ms) + crash_every_s * 1000)) -lt "$t_end" ]; do
    sleep "$crash_every_s"
    kill -9 "$subject_pid" 2>/dev/null || true
    wait "$subject_pid" 2>/dev/null || true
    untrack "$subject_pid"
    crashes=$((crashes + 1))
    start_relay "$dir"
  done
  echo "  $crashes kill -9 and restarts" >&2
}

sleep_until() {
  local left=$(($1 - $(now_ms)))
  [ "$left" -le 0 ] || sleep "$(printf '%d.%03d' $((left / 1000)) $((left % 1000)))"
}

# The ledger's view of the phase, read once the subject and the recorder have stopped (so every
# message the recorder has is of an event the ledger lists).
collect() {
  local dir=$1 s get=(curl -sf --retry 5 --retry-all-errors --retry-delay 1)
  "${get[@]}" "$base/ledger" >"$dir/ledger.json"
  for s in trigger webhook:audit webhook:__every_event__; do
    "${get[@]}" "$base/ledger/receipts?sink=$s" >"$dir/receipts_${s#webhook:}.csv"
    "${get[@]}" "$base/ledger/diff?sink=$s&until_ms=$t_end" >"$dir/diff_${s#webhook:}.json"
  done
}

write_meta() {
  local dir=$1 rate=$2
  python3 - "$dir/meta.json" <<PY
import json, sys
meta = dict(subject="$subject", scenario="$scenario", rate=float("$rate"), csus=$csus, secs=$secs,
            sinks="$sinks".split(","), fsync="$fsync", poll_ms=$poll_ms, memory_mb=$memory_mb,
            sim_t0_ms=$sim_t0, t_warm_ms=$t_warm, t_end_ms=$t_end, kind="$kind",
            outage_down_ms=${outage_down:-0}, outage_up_ms=${outage_up:-0}, crashes=${crashes:-0},
            hz=$(getconf CLK_TCK), nproc=$(nproc), seed=$seed)
json.dump(meta, open(sys.argv[1], "w"), indent=1)
PY
}

# run_phase SUBJECT RATE DIR: one measured run of csurelay or the Node-RED peer.
run_phase() {
  subject=$1
  local rate=$2 dir=$3
  rm -rf "$dir" # a phase directory is the harness's own: a rerun into the same --out replaces it
  mkdir -p "$dir"
  outage_down="" outage_up="" crashes="" mqtt_port=""
  echo "== $subject: $scenario, $csus CSUs, $rate events/s, ${secs} s measured, sinks $sinks -> $dir" >&2
  start_csusim "$dir" "$rate"
  [[ $sinks != *mqtt* ]] || start_broker "$dir"
  if [ "$subject" = relay ]; then
    write_relay_config "$dir"
    start_relay "$dir"
  else
    start_nodered "$dir"
  fi
  wait_first_search "$subject" "$dir"
  # The window starts once csusim's generator has reached its rate (carts open at the rate, their
  # events follow over ~10 s) and the subject has worked off the events of its own start-up (the
  # peer takes seconds to start): no event older than poll interval + 2 s is missing anywhere.
  sleep_until $((sim_t0 + warmup_s * 1000))
  python3 "$here/lib/drain.py" --catch-up --behind-ms $((poll_ms + 2000)) \
    --base "$base" --sinks "$sinks" ${mqtt_port:+--mqtt-file "$dir/mqtt.txt"} --max-s 20 ||
    echo "  $subject starts the window behind" >&2
  t_warm=$(now_ms)
  t_end=$((t_warm + secs * 1000))
  local metrics=()
  [ "$subject" != relay ] || metrics=(--metrics-file "$dir/metrics.url")
  python3 "$here/lib/sampler.py" --base "$base" --out "$dir/samples.jsonl" --pidfile "$dir/subject.pid" \
    ${mqtt_port:+--mqtt-file "$dir/mqtt.txt"} --t0-ms "$t_warm" --label "$subject" \
    --pids "csusim=$sim_pid" ${broker_pid:+"mosquitto=$broker_pid"} "${metrics[@]}" &
  local sampler=$!
  track $sampler
  case $kind in
    outage) run_outage "$dir" ;;
    crash) run_crashes "$dir" ;;
  esac
  sleep_until "$t_end"
  python3 "$here/lib/drain.py" --base "$base" --until-ms "$t_end" --sinks "$sinks" \
    --out "$dir/drain.json" ${mqtt_port:+--mqtt-file "$dir/mqtt.txt"} --max-s "$drain_s"
  [ "$subject" != relay ] || curl -s "$(cat "$dir/metrics.url")" >"$dir/metrics.txt" || true
  stop_pid $sampler 2
  stop_pid "$subject_pid" 5
  [ -z "$mqtt_port" ] || stop_pid "$recorder_pid" 2
  collect "$dir"
  write_meta "$dir" "$rate"
  stop_all
  broker_pid=""
  python3 "$here/lib/report.py" phase "$dir"
}
