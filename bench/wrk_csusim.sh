#!/usr/bin/env bash
# Measures csusim's request rate per endpoint with wrk (issue 3: the emulator must serve at least 3x
# what the relay needs in the bench). 16 CSUs, events generated for 5 s first, Dataverse limits
# lifted so 429s don't count as throughput, then the relay's mix. Loopback only; stops by itself.
# Usage: bench/wrk_csusim.sh [seconds] [connections]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-5}
conns=${2:-64}
bash scripts/deps.sh
cmake --preset release >/dev/null
cmake --build build -j"$(nproc)" --target csusim >/dev/null
work=$(mktemp -d)
cat >"$work/faults.yaml" <<'YAML'
dataverse: {max_requests: 100000000, window_s: 300, max_concurrent: 100000, require_known_contact: true}
YAML
build/csusim --listen 127.0.0.1:0 --csus 16 --rate 2000 --seed 3 --faults "$work/faults.yaml" >"$work/out" 2>"$work/err" &
pid=$!
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 100); do grep -q 'listening on' "$work/out" && break; sleep 0.05; done
base=$(sed -n "s/^csusim listening on //p" "$work/out")
[ -n "$base" ] || { echo "csusim did not start:"; cat "$work/err"; exit 1; }
token() { curl -s "$base/t/oauth2/v2.0/token" -d client_id=csurelay -d client_secret=csusim-secret \
  -d grant_type=client_credentials --data-urlencode "scope=$1" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])'; }
ctok=$(token api://commerce/.default)
dtok=$(token api://dataverse/.default)
sleep 5
from=$(date -u -d '-1 hour' +%Y-%m-%dT%H:%M:%SZ); to=$(date -u +%Y-%m-%dT%H:%M:%SZ)
search="{\"commerceEventSearchCriteria\":{\"EventType\":\"Checkout\",\"EventDateTimeFrom\":\"$from\",\"EventDateTimeTo\":\"$to\"}}"
first=$(curl -s "$base/csu0/Commerce/CommerceEventsController/Search?\$top=1" -H 'OUN: 128' \
  -H "Authorization: Bearer $ctok" -H 'Content-Type: application/json' -d "$search")
cart=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["value"][0]["EventTransactionId"])' "$first")
cust=$(curl -s "$base/csu0/Commerce/CommerceEventsController/Search?\$top=50" -H 'OUN: 128' \
  -H "Authorization: Bearer $ctok" -H 'Content-Type: application/json' -d "$search" |
  python3 -c 'import json,sys; print([e["EventCustomerId"] for e in json.load(sys.stdin)["value"] if e["EventCustomerId"]][0])')
contact=$(curl -s "$base/dataverse/api/data/v9.2/contacts" -H "Authorization: Bearer $dtok" \
  -H 'Content-Type: application/json' -H 'Prefer: return=representation' \
  -d '{"firstname":"W","lastname":"Rk","emailaddress1":"wrk@example.com"}' |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["contactid"])')

lua() { # name method path body extra-header-lines...
  local f="$work/$1.lua"; shift
  printf 'wrk.method = "%s"\nwrk.path = [[%s]]\n' "$1" "$2" >"$f"
  [ -n "$3" ] && printf 'wrk.body = [[%s]]\nwrk.headers["Content-Type"] = "application/json"\n' "$3" >>"$f"
  shift 3
  for h in "$@"; do printf 'wrk.headers["%s"] = [[%s]]\n' "${h%%:*}" "${h#*: }" >>"$f"; done
}
lua order GET "/csu0/Commerce/SalesOrders/GetSalesOrderDetailsByTransactionId(transactionId=@p1,searchLocationValue=1)?@p1='$cart'&api-version=7.3" "" "OUN: 128" "Authorization: Bearer $ctok"
lua customer GET "/csu0/Commerce/Customers('$cust')?api-version=7.3" "" "OUN: 128" "Authorization: Bearer $ctok"
lua search POST "/csu0/Commerce/CommerceEventsController/Search?\$top=250&api-version=7.3" "$search" "OUN: 128" "Authorization: Bearer $ctok"
lua contact GET "/dataverse/api/data/v9.2/contacts?\$select=contactid&\$filter=emailaddress1%20eq%20'wrk%40example.com'&\$top=1" "" "Authorization: Bearer $dtok"
lua trigger POST "/dataverse/api/data/v9.2/msdynmkt_csucheckouteventtrigger_144841371" \
  "{\"msdynmkt_signaluserauthid\":\"$contact\",\"msdynmkt_profileid\":\"$contact\",\"msdynmkt_signaltimestamp\":\"$to\",\"msdynmkt_signalingestiontimestamp\":\"$to\",\"msdynmkt_name\":\"W\",\"msdynmkt_receiptemail\":\"wrk@example.com\",\"msdynmkt_salesid\":\"\",\"msdynmkt_channelreferenceid\":\"\",\"msdynmkt_createddatetime\":\"$to\",\"msdynmkt_currencycode\":\"USD\",\"msdynmkt_amountpaid\":184.2200000000000000,\"msdynmkt_bindingid\":\"x\"}" \
  "Authorization: Bearer $dtok"
lua webhook POST "/hooks/audit" "{\"EventId\":\"csu0|usrt|Checkout|X|2026-01-01T00:00:00Z\",\"EventDetails\":{},\"OrderDetails\":null,\"CustomerDetails\":null}" \
  "Idempotency-Key: csu0|usrt|Checkout|X|2026-01-01T00:00:00Z"

# The relay's mix at 10k events/s, per 100 requests: 58 webhook, 16 order, 16 trigger, 6 customer,
# 3 contact lookups, 1 Search page, interleaved by a fixed schedule.
{
  echo 'local build, reqs = {}, {}'
  for ep in webhook order trigger customer contact search; do
    echo "build['$ep'] = function() local w = {headers = {}}"
    sed 's/^wrk\./w./' "$work/$ep.lua"
    echo "return wrk.format(w.method, w.path, w.headers, w.body) end"
  done
  cat <<'LUA'
local plan = {}
for ep, n in pairs({webhook = 58, order = 16, trigger = 16, customer = 6, contact = 3, search = 1}) do
  for _ = 1, n do plan[#plan + 1] = ep end
end
init = function(args)
  for ep, f in pairs(build) do reqs[ep] = f() end
end
local i = 0
request = function()
  i = i % #plan + 1
  return reqs[plan[(i * 37) % #plan + 1]]
end
LUA
} >"$work/mixed.lua"

echo "== csusim at $base, 16 CSUs generating 2000 events/s; wrk -t1 -c$conns -d${secs}s per endpoint"
echo "   ($(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs))"
cpu_ms() { awk '{print ($14 + $15) * 1000 / '"$(getconf CLK_TCK)"'}' /proc/$pid/stat; }
printf '%-10s %12s %10s %8s %s\n' endpoint requests/s p99 non-2xx "requests per csusim CPU-second"
for ep in order customer search contact trigger webhook mixed; do
  c0=$(cpu_ms)
  out=$(wrk -t1 -c"$conns" -d"${secs}s" --latency -s "$work/$ep.lua" "$base")
  c1=$(cpu_ms)
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  bad=$(awk '/Non-2xx/ {print $5}' <<<"$out")
  total=$(awk '/requests in/ {print $1}' <<<"$out")
  per_cpu=$(awk -v n="$total" -v a="$c0" -v b="$c1" 'BEGIN {printf "%.0f", n * 1000 / (b - a)}')
  printf '%-10s %12s %10s %8s %s\n' "$ep" "$rps" "$p99" "${bad:-0}" "$per_cpu"
done
echo "== csusim RSS: $(awk '/VmRSS/ {print $2, $3}' /proc/$pid/status)"
