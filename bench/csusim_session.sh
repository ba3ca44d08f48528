#!/usr/bin/env bash
# A plain curl session against csusim (issue 3): get a token, Search with paging, fetch an order and
# a customer, create a contact, call the Journeys trigger, read the ledger. Prints every exchange,
# checks the shapes against the reference, and exits non-zero on any mismatch. Loopback only; stops
# by itself. Usage: bench/csusim_session.sh [BUILD_DIR]   (ctest runs it as test_csusim_session)
set -euo pipefail
build=${1:-build}
sim=$build/csusim
relay=$build/csurelay
work=$(mktemp -d)
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; rm -rf "$work"' EXIT

"$sim" --listen 127.0.0.1:0 --csus 2 --rate 200 --seed 7 --client-secret s3cret >"$work/out" 2>"$work/err" &
pid=$!
for _ in $(seq 100); do grep -q 'listening on' "$work/out" 2>/dev/null && break; sleep 0.05; done
base=$(sed -n 's/^csusim listening on //p' "$work/out")
[ -n "$base" ] || { echo "csusim did not start"; cat "$work/err"; exit 1; }
port=${base##*:}
echo "== csusim at $base"

show() { echo; echo "== $1"; }
json() { python3 -c "import json,sys; d=json.load(open('$1')); $2"; }

show "csusim --print-config | csurelay check"
"$sim" --listen "127.0.0.1:$port" --csus 2 --print-config >"$work/relay.yaml"
CSUSIM_CLIENT_SECRET=s3cret "$relay" check -c "$work/relay.yaml"

show "token (Entra client credentials)"
curl -s -o "$work/token" -w '%{http_code}\n' "$base/csusim.onmicrosoft.com/oauth2/v2.0/token" \
  -d client_id=csurelay -d client_secret=s3cret -d grant_type=client_credentials \
  --data-urlencode scope=api://commerce/.default
json "$work/token" "assert d['token_type']=='Bearer' and isinstance(d['expires_in'],int) and d['access_token']; print({k:(v if k!='access_token' else v[:12]+'...') for k,v in d.items()})"
tok=$(json "$work/token" "print(d['access_token'])")
curl -s "$base/csusim.onmicrosoft.com/oauth2/v2.0/token" -d client_id=csurelay -d client_secret=wrong \
  -d grant_type=client_credentials --data-urlencode scope=api://dataverse/.default >"$work/badtoken"
json "$work/badtoken" "assert d['error']=='invalid_client' and 'AADSTS7000215' in d['error_description']; print('wrong secret ->', d['error'], d['error_codes'])"
dvtok=$(curl -s "$base/csusim.onmicrosoft.com/oauth2/v2.0/token" -d client_id=csurelay -d client_secret=s3cret \
  -d grant_type=client_credentials --data-urlencode scope=api://dataverse/.default |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')

sleep 3 # let the generator commit some events
now=$(date -u +%Y-%m-%dT%H:%M:%SZ)
from=$(date -u -d '-1 hour' +%Y-%m-%dT%H:%M:%SZ)
csu=(-H "OUN: 128" -H "Authorization: Bearer $tok" -H "Content-Type: application/json")
for type in Checkout AddCartLines; do
  show "Search $type, pages of 5"
  for skip in 0 5; do
    curl -s "${csu[@]}" -o "$work/page$skip" \
      "$base/csu0/Commerce/CommerceEventsController/Search?\$top=5&\$skip=$skip&\$count=true&api-version=7.3" \
      -d "{\"commerceEventSearchCriteria\":{\"EventType\":\"$type\",\"EventDateTimeFrom\":\"$from\",\"EventDateTimeTo\":\"$now\"}}"
    json "$work/page$skip" "
v=d['value']; assert '@odata.context' in d and '@odata.count' in d and len(v)==5, d
keys={'EventTransactionId','EventDateTime','EventType','EventDataAreaId','EventData','EventChannelId','EventTerminalId','EventStaffId','EventCustomerId','ExtensionProperties'}
assert all(set(e)>=keys and e['EventType']=='$type' and isinstance(e['EventChannelId'],int) for e in v)
from datetime import datetime as D; t=[D.fromisoformat(e['EventDateTime'].replace('Z','+00:00')) for e in v]; assert t==sorted(t), t
print('skip $skip:', d['@odata.count'], 'in all;', [(e['EventTransactionId'], e['EventDateTime']) for e in v[:2]], '...')"
  done
  cmp -s "$work/page0" "$work/page5" && { echo "pages 0 and 5 are the same"; exit 1; }
done

show "order of the first Checkout"
cart=$(json "$work/page0" "print([e for e in d['value']][0]['EventTransactionId'])" 2>/dev/null || true)
curl -s "${csu[@]}" "$base/csu0/Commerce/CommerceEventsController/Search?\$top=1" -o "$work/one" \
  -d "{\"commerceEventSearchCriteria\":{\"EventType\":\"Checkout\",\"EventDateTimeFrom\":\"$from\",\"EventDateTimeTo\":\"$now\"}}"
cart=$(json "$work/one" "print(d['value'][0]['EventTransactionId'])")
cust=$(json "$work/one" "print(d['value'][0]['EventCustomerId'])")
curl -s "${csu[@]}" -o "$work/order" -G \
  "$base/csu0/Commerce/SalesOrders/GetSalesOrderDetailsByTransactionId(transactionId=@p1,searchLocationValue=1)" \
  --data-urlencode "@p1='$cart'" -d api-version=7.3
json "$work/order" "
for k in ['Id','ReceiptEmail','AmountPaid','CurrencyCode','CreatedDateTime','InternalTransactionId','SalesLines','TenderLines']: assert k in d, k
print({k:d[k] for k in ['Id','CustomerId','ReceiptEmail','AmountPaid','CurrencyCode','InternalTransactionId']}, len(d['SalesLines']), 'lines')"
grep -oE '"AmountPaid":[0-9.]+' "$work/order" | grep -qE '\.[0-9]{10,}' || { echo "AmountPaid is not high-scale decimal text"; exit 1; }
grep -oE '"AmountPaid":[0-9.]+' "$work/order"

if [ -n "$cust" ]; then
  show "customer $cust"
  curl -s "${csu[@]}" -o "$work/customer" "$base/csu0/Commerce/Customers('$cust')?api-version=7.3"
  json "$work/customer" "assert d['AccountNumber']=='$cust'; print({k:d.get(k) for k in ['AccountNumber','FirstName','LastName','Email']})"
fi

dv=(-H "Authorization: Bearer $dvtok" -H "Content-Type: application/json" -H "OData-Version: 4.0" -H "Accept: application/json")
email="session.$RANDOM@example.com"
show "contact lookup, create, lookup"
curl -s "${dv[@]}" -G -o "$work/c0" "$base/dataverse/api/data/v9.2/contacts" --data-urlencode '$select=contactid' \
  --data-urlencode "\$filter=emailaddress1 eq '$email'" --data-urlencode '$top=1'
json "$work/c0" "assert d['value']==[]; print('before:', d['value'])"
curl -s "${dv[@]}" -H "Prefer: return=representation" -o "$work/c1" -w '%{http_code}\n' \
  "$base/dataverse/api/data/v9.2/contacts" -d "{\"firstname\":\"Ses\",\"lastname\":\"Sion\",\"emailaddress1\":\"$email\",\"msdyn_contactnumber\":\"C1\"}"
contact=$(json "$work/c1" "print(d['contactid'])")
curl -s "${dv[@]}" -G -o "$work/c2" "$base/dataverse/api/data/v9.2/contacts" --data-urlencode '$select=contactid' \
  --data-urlencode "\$filter=emailaddress1 eq '$email'" --data-urlencode '$top=1'
json "$work/c2" "assert d['value'][0]['contactid']=='$contact'; print('after:', d['value'])"

show "Journeys custom trigger"
binding=$(json "$work/order" "print(d['InternalTransactionId'])")
amount=$(grep -oE '"AmountPaid":[0-9.]+' "$work/order" | cut -d: -f2)
created=$(json "$work/order" "print(d['CreatedDateTime'])")
evtime=$(json "$work/one" "print(d['value'][0]['EventDateTime'])")
cat >"$work/trigger.json" <<JSON
{"msdynmkt_signaluserauthid":"$contact","msdynmkt_profileid":"$contact","msdynmkt_signaltimestamp":"$evtime",
 "msdynmkt_signalingestiontimestamp":"$now","msdynmkt_name":"Session","msdynmkt_receiptemail":"$email",
 "msdynmkt_salesid":"","msdynmkt_channelreferenceid":"","msdynmkt_createddatetime":"$created",
 "msdynmkt_currencycode":"USD","msdynmkt_amountpaid":$amount,"msdynmkt_bindingid":"$binding"}
JSON
code=$(curl -s "${dv[@]}" -o "$work/t1" -w '%{http_code}' "$base/dataverse/api/data/v9.2/msdynmkt_csucheckouteventtrigger_144841371" --data @"$work/trigger.json")
echo "trigger -> $code"; [ "$code" = 204 ] || { cat "$work/t1"; exit 1; }
python3 - "$work/trigger.json" >"$work/bad.json" <<'PY'
import json,sys; d=json.load(open(sys.argv[1])); del d['msdynmkt_currencycode']; print(json.dumps(d))
PY
code=$(curl -s "${dv[@]}" -o "$work/t2" -w '%{http_code}' "$base/dataverse/api/data/v9.2/msdynmkt_csucheckouteventtrigger_144841371" --data @"$work/bad.json")
echo "trigger without msdynmkt_currencycode -> $code $(cat "$work/t2")"
[ "$code" = 400 ] && grep -q msdynmkt_currencycode "$work/t2"

show "ledger"
curl -s "$base/ledger" -o "$work/ledger"
json "$work/ledger" "assert d['generated']['total']>0 and d['trigger']['received']>=1 and d['contacts']['created']>=1; print(json.dumps({k:d[k] for k in ['generated','trigger','contacts']}))"
echo; echo "session: all responses shaped as in the reference"
